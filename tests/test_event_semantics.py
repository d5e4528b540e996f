"""Event semantics (DESIGN §5) end to end: both sandboxes send their real webhooks to the intake
app (in process), the inbox worker carries them out against the sandboxes' APIs.

Merges, deletions (each ``sync.on_hubspot_delete`` policy) and restores, the GDPR privacy
deletion (both sides, and the store purged: no row of any table names the person), Brevo
unsubscribes / hard bounces / spam complaints (HubSpot marked, never synced back over, a
resubscription only with the mapping's flag), Brevo deletions, echo hints, and the mass-delete
guard (refusal, then ``--force``) in the worker and in ``connector resync``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from daemon_env import cli_env
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from store_fixtures import BACKENDS, PgServer, fixture_pg_server  # noqa: F401 - fixture
from structlog.testing import capture_logs
from test_worker import APP_URL, TOKEN, Env, worker_env

from connector.events import GUARD_PREFIX
from connector.store import associations as assoc_store
from connector.store import db, deadletters, inbox, jobs, purge, runs, skipped
from connector.store import links as ledger
from connector.store import rollups as rollup_store
from connector.store.models import Base, Cursor, Job, ResyncStage, SyncHistory
from connector.worker import WorkerResult

ROOT = Path(__file__).resolve().parents[1]


# --- the bed -----------------------------------------------------------------------------------


@asynccontextmanager
async def events_env(tmp_path: Path, hubspot: int = 3, **sync: Any) -> AsyncIterator[Env]:
    """``worker_env`` with both sandboxes linked by a first cycle and their webhooks wired to
    the intake app in process."""
    async with worker_env(tmp_path, hubspot=hubspot, **sync) as env:
        await env.daemon.run_once(inbox=False)  # the first pulls link both sides
        servers = env.cli.servers
        for sender in (servers.hubspot.webhook_sender, servers.brevo.webhook_sender):
            sender.transport = httpx.ASGITransport(app=env.app)
        servers.hubspot.webhook_sender.linger = 0.0
        servers.point_webhooks_at(f"{APP_URL}/webhooks/hubspot", f"{APP_URL}/webhooks/brevo", TOKEN)
        yield env


async def deliver(env: Env) -> WorkerResult:
    """Both sandboxes' queued webhooks into the inbox, then one worker pass."""
    servers = env.cli.servers
    await servers.hubspot.webhook_sender.drain(10)
    await servers.brevo.webhook_sender.drain(10)
    return await env.daemon.drain_inbox()


async def settle(env: Env, rounds: int = 4) -> list[WorkerResult]:
    """Deliver and drain until no webhook is left (our own writes fire webhooks too)."""
    results = []
    for _ in range(rounds):
        result = await deliver(env)
        results.append(result)
        if not result.claimed:
            break
    return results


def hs_live(env: Env) -> dict[int, Any]:
    return env.cli.servers.hubspot.stores["contacts"].live


def hs_email(env: Env, hubspot_id: int) -> str:
    email = env.cli.servers.hubspot.get_object("contacts", hubspot_id)["email"]  # type: ignore[index]
    assert email
    return str(email)


async def links(env: Env) -> list[ledger.LinkRecord]:
    out: list[ledger.LinkRecord] = []
    async with env.rt.sessions() as s:
        async for batch in ledger.iter_links(s, "contacts"):
            out += batch
    return out


async def link_of(env: Env, hubspot_id: int | str) -> ledger.LinkRecord | None:
    async with env.rt.sessions() as s:
        found = await ledger.load_links(s, "contacts", hubspot_ids=[str(hubspot_id)])
    return found[0] if found else None


def archive(env: Env, hubspot_id: int) -> None:
    """A user deletes the contact in HubSpot (to the recycle bin)."""
    state = env.cli.servers.hubspot
    state.archive("contacts", state.stores["contacts"].live[hubspot_id], source="CRM_UI")


# --- deletions and restores ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["delete", "blocklist", "ignore"])
async def test_hubspot_deletion_per_policy_is_never_recreated(tmp_path: Path, policy: str) -> None:
    async with events_env(tmp_path, on_hubspot_delete=policy) as env:
        brevo = env.cli.servers.brevo
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        link = await link_of(env, hid)
        assert link is not None and link.brevo_id is not None
        archive(env, hid)

        results = await settle(env)
        first = results[0]
        assert first.deletions == 1 and not first.failed
        contact = brevo.contacts.get(int(link.brevo_id))
        after = await link_of(env, hid)
        if policy == "delete":
            assert contact is None and after is None
            assert first.counts["brevo_deleted"] == 1
        else:
            assert contact is not None and contact.email_blacklisted is (policy == "blocklist")
            assert after is not None and after.marker(ledger.DELETED_MARKER) is not None
            brevo.edit_contact(email, {"FIRSTNAME": "Still-here"})  # a Brevo edit later
            await settle(env)

        # a full cycle (pulls and reconciliation) recreates nothing in HubSpot
        results_cycle = await env.daemon.run_once(reconcile=True)
        assert all(r.status == "ok" for r in results_cycle), [r.error for r in results_cycle]
        assert hid not in hs_live(env) and len(hs_live(env)) == 2
        assert all(
            (o.props.get("email") or "") != email for o in hs_live(env).values()
        )  # not re-created under a new id either
        assert len(brevo.contacts) == (2 if policy == "delete" else 3)


async def test_restore_syncs_again_and_unblocklists_what_we_blocklisted(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:  # on_hubspot_delete: blocklist (the default)
        hubspot, brevo = env.cli.servers.hubspot, env.cli.servers.brevo
        mine, theirs = sorted(hs_live(env))[:2]
        links_before = {lk.hubspot_id: lk for lk in await links(env)}
        # one contact was blocklisted by the person before (not by us)
        theirs_email = hs_email(env, theirs)
        brevo.edit_contact(theirs_email, {}, email_blacklisted=True)
        await settle(env)
        archive(env, mine)
        archive(env, theirs)
        await settle(env)
        for hid in (mine, theirs):
            c = brevo.contacts[int(links_before[str(hid)].brevo_id or 0)]
            assert c.email_blacklisted

        hubspot.restore("contacts", mine)
        hubspot.restore("contacts", theirs)
        results = await settle(env)
        assert results[0].counts["restored"] == 2
        assert results[0].counts["brevo_unblocklisted"] == 1
        assert not brevo.contacts[int(links_before[str(mine)].brevo_id or 0)].email_blacklisted
        assert brevo.contacts[int(links_before[str(theirs)].brevo_id or 0)].email_blacklisted
        for hid in (mine, theirs):
            link = await link_of(env, hid)
            assert link is not None and link.marker(ledger.DELETED_MARKER) is None

        hubspot.put_object("contacts", {"firstname": "Back"}, mine)  # synced again
        await settle(env)
        assert brevo.contacts[int(links_before[str(mine)].brevo_id or 0)].attributes[
            "FIRSTNAME"
        ] == ("Back")


async def test_restore_after_delete_policy_creates_the_brevo_contact_again(tmp_path: Path) -> None:
    async with events_env(tmp_path, on_hubspot_delete="delete") as env:
        brevo = env.cli.servers.brevo
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        archive(env, hid)
        await settle(env)
        assert brevo.get(email) is None
        env.cli.servers.hubspot.restore("contacts", hid)
        await settle(env)
        again = brevo.get(email)
        assert again is not None and again.ext_id == str(hid)
        link = await link_of(env, hid)
        assert link is not None and link.brevo_id == str(again.id)


@pytest.mark.parametrize("policy", ["archive", "ignore"])
async def test_brevo_contact_deleted_per_policy(tmp_path: Path, policy: str) -> None:
    async with events_env(tmp_path, on_brevo_delete=policy) as env:
        brevo = env.cli.servers.brevo
        hid = min(hs_live(env))
        link = await link_of(env, hid)
        assert link is not None and link.brevo_id is not None
        brevo.delete_contact(brevo.contacts[int(link.brevo_id)], "")  # deleted in Brevo's UI
        results = await settle(env)
        assert results[0].deletions == 1 and not results[0].failed
        assert await link_of(env, hid) is None  # the link is dropped either way
        archived = env.cli.servers.hubspot.stores["contacts"].archived
        assert (hid in archived) is (policy == "archive")
        assert (hid in hs_live(env)) is (policy == "ignore")


# --- merges -----------------------------------------------------------------------------------


async def test_merge_moves_the_link_and_merges_the_brevo_duplicate_away(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        hubspot, brevo = env.cli.servers.hubspot, env.cli.servers.brevo
        primary_id, loser_id = sorted(hs_live(env))[:2]
        primary_link, loser_link = await link_of(env, primary_id), await link_of(env, loser_id)
        assert primary_link and loser_link and primary_link.brevo_id and loser_link.brevo_id
        survivor_br = brevo.contacts[int(primary_link.brevo_id)]
        duplicate_br = brevo.contacts[int(loser_link.brevo_id)]
        survivor_first = survivor_br.attributes.get("FIRSTNAME")
        # Brevo-only facts on the duplicate: a list, and an attribute the survivor lacks
        assert survivor_br.email is not None and duplicate_br.email is not None
        brevo.edit_contact(survivor_br.email, {"PREFERRED_CHANNEL": None})
        brevo.edit_contact(duplicate_br.email, {"PREFERRED_CHANNEL": "sms"}, list_ids=[12])
        await settle(env)

        store = hubspot.stores["contacts"]
        hubspot.merge("contacts", store.live[primary_id], store.live[loser_id])
        results = await settle(env)
        first = results[0]
        assert not first.failed, first.failures
        assert first.counts["links_moved"] == 1 and first.counts["brevo_duplicates_merged"] == 1

        assert int(loser_link.brevo_id) not in brevo.contacts  # the duplicate is gone
        kept = brevo.contacts[int(primary_link.brevo_id)]
        assert 12 in kept.list_ids  # its list membership moved over
        assert kept.attributes.get("PREFERRED_CHANNEL") == "sms"  # a blank filled
        assert kept.attributes.get("FIRSTNAME") == survivor_first  # the survivor's value won
        assert await link_of(env, loser_id) is None
        moved = await link_of(env, primary_id)
        assert moved is not None and moved.brevo_id == primary_link.brevo_id
        assert loser_link.brevo_id not in {lk.brevo_id for lk in await links(env)}
        # the survivor keeps syncing
        hubspot.put_object("contacts", {"lastname": "Merged"}, primary_id)
        await settle(env)
        assert brevo.contacts[int(primary_link.brevo_id)].attributes["LASTNAME"] == "Merged"


async def test_merge_of_a_linked_into_an_unlinked_contact_moves_the_link(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        hubspot, brevo = env.cli.servers.hubspot, env.cli.servers.brevo
        loser_id = min(hs_live(env))
        loser_link = await link_of(env, loser_id)
        assert loser_link is not None
        hubspot.webhook_target_url = None  # created without a webhook: never synced
        new_id = int(hubspot.put_object("contacts", {"email": "fresh.person@example.org"}))
        hubspot.webhook_target_url = f"{APP_URL}/webhooks/hubspot"
        store = hubspot.stores["contacts"]
        hubspot.merge("contacts", store.live[new_id], store.live[loser_id])
        await settle(env)
        moved = await link_of(env, new_id)
        assert moved is not None and moved.brevo_id == loser_link.brevo_id
        assert await link_of(env, loser_id) is None
        contact = brevo.contacts[int(loser_link.brevo_id or 0)]
        assert contact.email == "fresh.person@example.org"  # the survivor's email travelled
        assert brevo.get("fresh.person@example.org") is contact  # no second contact


# --- privacy deletion -----------------------------------------------------------------------


def _mentions(value: Any, needles: set[str]) -> bool:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return any(n in text.lower() for n in needles)


async def _rows_naming(
    sessions: async_sessionmaker[AsyncSession], ids: set[str], emails: set[str]
) -> list[str]:
    """Every row of every table holding one of the ids (as a whole value) or e-mails."""
    found: list[str] = []
    async with sessions() as s:
        for table in Base.metadata.sorted_tables:
            for row in (await s.execute(sa.select(table))).mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    if str(value) in ids and column not in ("id", "attempts", "link_id"):
                        found.append(f"{table.name}.{column}={value}")
                    elif isinstance(value, list) and any(str(v) in ids for v in value):
                        found.append(f"{table.name}.{column} holds an id")
                    elif _mentions(value, emails):
                        found.append(f"{table.name}.{column} mentions the e-mail")
    return found


async def test_privacy_deletion_deletes_both_sides_and_purges_every_table(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        hubspot, brevo = env.cli.servers.hubspot, env.cli.servers.brevo
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        link = await link_of(env, hid)
        assert link is not None and link.brevo_id is not None
        brevo_id = link.brevo_id
        # traces of the person all over the store
        hubspot.put_object("contacts", {"firstname": "Traced"}, hid)
        brevo.edit_contact(email, {"LASTNAME": "Traced"})
        await settle(env)
        now = datetime.now(UTC)
        async with env.rt.sessions() as s, s.begin():
            await deadletters.add(
                s,
                system="hubspot",
                object_type="contacts",
                object_id=str(hid),
                identity_key=email,
                operation="update",
                payload={"hubspot_id": str(hid), "brevo_id": brevo_id},
                error=f"brevo write: invalid value for {email}",
                attempts=3,
                now=now,
            )
            await skipped.record_skipped(s, "hubspot", "contacts", [(str(hid), "no email")], now)
            run_id = await runs.start_run(s, "pull", "brevo", "contacts", now)
            await runs.finish_run(s, run_id, "failed", {}, f"could not write {email.upper()}", now)
            s.add(
                Job(
                    idempotency_key=f"welcome:{hid}",
                    hook="onboarding",
                    step="email",
                    subject=str(hid),
                    result={"to": email},
                )
            )
            s.add(
                ResyncStage(
                    object_type="contacts",
                    brevo_id=brevo_id,
                    identity_key=email,
                    payload={"email": email},
                )
            )
            await s.execute(
                sa.update(Cursor)
                .where(Cursor.system == "brevo", Cursor.object_type == "contacts")
                .values(boundary_ids=[brevo_id, "999999"])
            )
            # roll-ups counted for them, their associations and a company's set naming them
            await rollup_store.save_values(s, {(str(hid), "OPEN_TICKETS"): "f" * 64}, now=now)
            await rollup_store.replace_members(s, "tickets", {str(hid): ["987001"]})
            await assoc_store.save(s, "contacts", "companies", {str(hid): ["987002"]}, now=now)
            await assoc_store.save(
                s, "companies", "contacts", {"987002": [str(hid), "987003"]}, now=now
            )
        async with env.rt.sessions() as s:
            assert await ledger.count_links(s, "contacts") == 3
        assert await _rows_naming(env.rt.sessions, {str(hid), brevo_id}, {email})

        with capture_logs() as logs:
            assert hubspot.gdpr_delete(str(hid))
            results = await settle(env)
        assert not results[0].failed and results[0].counts["privacy_purged"] == 1
        assert hubspot.get_object("contacts", hid) is None
        assert hid not in hubspot.stores["contacts"].archived
        assert int(brevo_id) not in brevo.contacts and brevo.get(email) is None
        assert await _rows_naming(env.rt.sessions, {str(hid), brevo_id}, {email}) == []
        assert not [e for e in logs if _mentions(e, {email})]
        async with env.rt.sessions() as s:
            assert await ledger.count_links(s, "contacts") == 2  # the others stay
            kept = await s.scalar(
                sa.select(Cursor.boundary_ids).where(
                    Cursor.system == "brevo", Cursor.object_type == "contacts"
                )
            )
            assert kept == ["999999"]
            others = await assoc_store.load(s, "companies", "contacts", ["987002"])
            assert others == {"987002": frozenset({"987003"})}  # the company keeps the others
        # nothing brings them back
        await env.daemon.run_once(reconcile=True)
        assert brevo.get(email) is None and len(hs_live(env)) == 2


@pytest.fixture(params=BACKENDS, name="purge_db")
async def fixture_purge_db(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'purge.db'}"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.create_database()
    db.upgrade(url)
    engine = db.create_engine(url)
    try:
        yield db.session_factory(engine)
    finally:
        await engine.dispose()
        if request.param != "sqlite":
            server.drop_database(url)


async def test_purge_person_removes_every_row_in_one_transaction(
    purge_db: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    email, other = "gdpr_me@example.org", "gdprxme@example.org"  # "_" is no wildcard here
    base = ledger.BaseEntry("a" * 64, "hubspot", "brevo", now)
    async with purge_db() as s, s.begin():
        ids = await ledger.save_pairs(
            s,
            "contacts",
            [
                ledger.PairWrite("101", "201", email, {"firstname": base}),
                ledger.PairWrite("102", "202", other, {"firstname": base}),
            ],
            now=now,
        )
        for link_id in ids:
            s.add(
                SyncHistory(
                    object_type="contacts",
                    link_id=link_id,
                    field="firstname",
                    direction="to_brevo",
                    decided_by="create",
                    synced_at=now,
                )
            )
        await inbox.enqueue(
            s,
            [
                inbox.InboxInput("hubspot", "k1", "contacts", "101", "contact.propertyChange"),
                inbox.InboxInput(
                    "hubspot",
                    "k2",
                    "contacts",
                    "555",
                    "contact.propertyChange",
                    {"propertyName": "email", "propertyValue": email.upper()},
                ),
                inbox.InboxInput("brevo", "k3", "contacts", email, "contactUpdated"),
                inbox.InboxInput("brevo", "k4", "contacts", other, "contactUpdated"),
            ],
            now=now,
        )
        await deadletters.add(
            s,
            system="brevo",
            object_type="contacts",
            object_id="201",
            identity_key=email,
            operation="update",
            payload={},
            error="x",
            attempts=1,
            now=now,
        )
        await skipped.record_skipped(s, "hubspot", "contacts", [("101", "no email")], now)
        for hubspot_id, address in (("101", email), ("102", other)):
            await jobs.enroll(
                s,
                "onboarding",
                hubspot_id,
                first_step="assign_owner",
                source="new",
                now=now,
                identity=jobs.identity_hash(address),
            )
        for contact in ("101", "102"):
            await rollup_store.save_values(s, {(contact, "MEETINGS_COUNT"): "e" * 64}, now=now)
            await rollup_store.replace_members(s, "meetings", {contact: [f"9{contact}"]})
            await assoc_store.save(s, "contacts", "companies", {contact: ["701"]}, now=now)
        await assoc_store.save(s, "companies", "contacts", {"701": ["101", "102"]}, now=now)
        await assoc_store.save(s, "deals", "contacts", {"801": ["1010", "102"]}, now=now)
    async with purge_db() as s, s.begin():
        counts = await purge.purge_person(s, purge.Person("contacts", hubspot_ids=("101",)))
    assert counts == {
        "links": 1,
        "field_state": 1,
        "sync_history": 1,
        "inbox": 3,
        "dead_letters": 1,
        "skipped_records": 1,
        "jobs": 1,
        "enrollments": 1,
        "rollups": 2,
        "association_state": 2,  # its own set deleted, the company's set without it
        "tombstones": 3,
    }
    async with purge_db() as s:
        left = await ledger.load_links(s, "contacts", hubspot_ids=["101", "102"])
        assert [lk.identity_key for lk in left] == [other]
        rows = (await s.execute(sa.text("SELECT object_id FROM inbox"))).scalars().all()
        assert rows == [other]
        history = (await s.execute(sa.text("SELECT count(*) FROM sync_history"))).scalar_one()
        assert history == 1
        enrolled = (await s.execute(sa.text("SELECT hubspot_id FROM enrollments"))).scalars()
        assert enrolled.all() == ["102"]
        steps = (await s.execute(sa.text("SELECT hubspot_id FROM jobs"))).scalars()
        assert steps.all() == ["102"]
        assert await rollup_store.load_values(s, ["101", "102"]) == {
            ("102", "MEETINGS_COUNT"): "e" * 64
        }
        assert await rollup_store.contacts_of(s, "meetings", ["9101", "9102"]) == {"9102": {"102"}}
        assert await assoc_store.load(s, "contacts", "companies", ["101", "102"]) == {
            "102": frozenset({"701"})
        }
        assert await assoc_store.load(s, "companies", "contacts", ["701"]) == {
            "701": frozenset({"102"})
        }
        # "1010" only contains the purged id's digits: kept
        assert await assoc_store.load(s, "deals", "contacts", ["801"]) == {
            "801": frozenset({"1010", "102"})
        }

    # one transaction: a failure half-way leaves every row in place
    async with purge_db() as s:
        with pytest.raises(RuntimeError):
            async with s.begin():
                await purge.purge_person(s, purge.Person("contacts", brevo_ids=("202",)))
                raise RuntimeError("crash before commit")
    async with purge_db() as s:
        assert len(await ledger.load_links(s, "contacts", brevo_ids=["202"])) == 1


# --- opt-outs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("simulate", "reason"),
    [
        ("simulate_unsubscribe", "unsubscribed"),
        ("simulate_hard_bounce", "hard_bounce"),
        ("simulate_spam", "spam"),
    ],
)
async def test_optout_marks_hubspot_and_is_never_synced_back_over(
    tmp_path: Path, simulate: str, reason: str
) -> None:
    async with events_env(tmp_path) as env:
        hubspot, brevo = env.cli.servers.hubspot, env.cli.servers.brevo
        assert "brevo_email_optout" not in hubspot.properties["contacts"]
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        getattr(brevo, simulate)(email)
        results = await settle(env)
        assert results[0].counts["hubspot_opted_out"] == 1 and not results[0].failed
        props = hubspot.get_object("contacts", hid)
        assert props is not None
        assert props["brevo_email_optout"] == "true"
        assert props["brevo_optout_reason"] == reason
        assert props["brevo_optout_date"] == datetime.now(UTC).date().isoformat()
        for name, kind in (
            ("brevo_email_optout", "bool"),
            ("brevo_optout_reason", "string"),
            ("brevo_optout_date", "date"),
        ):
            d = hubspot.properties["contacts"][name]
            assert (d.type, d.group_name) == (kind, "contactinformation")
        # our own three writes came back as webhooks: completed without a read
        echoes = sum(r.echoes for r in results)
        assert echoes == 3 and sum(r.counts["echo_hint_skipped"] for r in results) == 3

        # a HubSpot user clears the mark and edits the name: the name travels, the block stays
        hubspot.put_object("contacts", {"brevo_email_optout": "false", "firstname": "Una"}, hid)
        await settle(env)
        await env.daemon.run_once(reconcile=True)
        contact = brevo.get(email)
        assert contact is not None and contact.email_blacklisted
        assert contact.attributes["FIRSTNAME"] == "Una"

        # the person resubscribes in Brevo: without the mapping's flag HubSpot is not told
        brevo.edit_contact(email, {}, email_blacklisted=False)
        results = await settle(env)
        assert results[0].counts["resubscription_not_synced"] == 1
        assert hubspot.get_object("contacts", hid)["brevo_optout_reason"] == reason  # type: ignore[index]


async def test_resubscription_travels_only_with_the_mapping_flag(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)  # companies, deals, roll-ups as they are
    text = (ROOT / "mappings" / "contacts.yaml").read_text(encoding="utf-8")
    assert "  resubscribe: false" in text
    (mappings / "contacts.yaml").write_text(
        text.replace("  resubscribe: false", "  resubscribe: true"), encoding="utf-8"
    )
    async with events_env(tmp_path, mappings_dir=mappings) as env:
        code, out, err = await env.cli.cli("mappings", "check", "--offline")
        assert code == 0, out + err
        hubspot, brevo = env.cli.servers.hubspot, env.cli.servers.brevo
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        brevo.simulate_unsubscribe(email)
        await settle(env)
        assert hubspot.get_object("contacts", hid)["brevo_email_optout"] == "true"  # type: ignore[index]
        brevo.edit_contact(email, {}, email_blacklisted=False)
        results = await settle(env)
        assert results[0].counts["hubspot_resubscribed"] == 1
        props = hubspot.get_object("contacts", hid)
        assert props is not None and props["brevo_email_optout"] == "false"
        assert not props.get("brevo_optout_reason")


async def test_mappings_check_refuses_a_bad_resubscribe_value(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    path = mappings / "contacts.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("resubscribe: false", "resubscribe: sometimes"),
        encoding="utf-8",
    )
    async with cli_env(tmp_path, mappings_dir=mappings) as env:
        code, out, _ = await env.cli("mappings", "check", "--offline")
        assert code == 1
        assert "contacts.yaml" in out and "resubscribe" in out


# --- echo hints -------------------------------------------------------------------------------


async def test_echo_hints_complete_our_own_writes_without_a_read(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        hubspot, brevo = env.cli.servers.hubspot, env.cli.servers.brevo
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        hubspot.put_object("contacts", {"firstname": "Echo"}, hid)
        first = await deliver(env)  # the HubSpot edit: read, written to Brevo
        assert first.counts["brevo_updated"] == 1
        hubspot.log.clear()
        brevo.calls.clear()
        second = await deliver(env)  # Brevo's contactUpdated of our write, our key's name
        assert (second.claimed, second.echoes, second.records) == (1, 1, 0)
        assert brevo.calls.count(method="GET") == 0
        assert hubspot.log.count(contains="/batch/read") == 0

        brevo.edit_contact(email, {"LASTNAME": "Backwards"})  # a person, in Brevo's UI
        third = await deliver(env)
        assert third.echoes == 0 and third.counts["hubspot_updated"] == 1
        fourth = await deliver(env)  # HubSpot's propertyChange of our write (INTEGRATION)
        assert (fourth.echoes, fourth.records) == (1, 0)

        # the hint alone never decides: "ours" by changeSource, but not what the ledger holds
        await env.post_hubspot(
            [
                {
                    "objectId": hid,
                    "propertyName": "lastname",
                    "propertyValue": "Someone Else",
                    "changeSource": "INTEGRATION",
                    "sourceId": str(hubspot.app_id),
                    "eventId": 99,
                    "subscriptionId": 1,
                    "portalId": hubspot.portal_id,
                    "appId": hubspot.app_id,
                    "occurredAt": int(datetime.now(UTC).timestamp() * 1000),
                    "subscriptionType": "contact.propertyChange",
                    "attemptNumber": 0,
                }
            ]
        )
        fifth = await env.daemon.drain_inbox()
        assert (fifth.echoes, fifth.records) == (0, 1)
        assert fifth.counts["echo_hint_unconfirmed"] == 1


# --- the mass-delete guard --------------------------------------------------------------------


async def test_mass_delete_guard_holds_worker_deletions_until_forced(tmp_path: Path) -> None:
    async with events_env(
        tmp_path, hubspot=10, on_hubspot_delete="delete", max_delete_share=0.2
    ) as env:
        brevo = env.cli.servers.brevo
        doomed = sorted(hs_live(env))[:6]
        for hid in doomed:
            archive(env, hid)
        held = await deliver(env)
        assert held.held == 6 and held.failed and held.deletions == 0
        assert held.refused and "refusing to delete 6 of 10 linked records" in held.refused[0]
        assert len(brevo.contacts) == 10  # nothing deleted
        assert len(await links(env)) == 10
        rows = env.inbox_rows()
        assert {(r[3], r[5].startswith(GUARD_PREFIX)) for r in rows} == {("failed", True)}
        refusals = env.cli.query(
            "SELECT status, error FROM runs WHERE kind = 'worker' AND status = 'failed'"
        )
        assert len(refusals) == 1 and "--force" in refusals[0][1]

        code, out, err = await env.cli.cli("run", "--once", "--force")
        assert code == 0, out + err
        # the pulls of the cycle may carry some of them (a Brevo contact listed again whose
        # HubSpot side is gone), the inbox pass the rest: six in all, once each
        assert "inbox: ok" in out and "brevo_deleted=" in out
        assert len(brevo.contacts) == 4 and len(await links(env)) == 4
        # the held events are done (our own Brevo deletions' webhooks may have come in since)
        assert {r[3] for r in env.inbox_rows() if r[2] == "contact.deletion"} == {"done"}


async def test_mass_delete_guard_in_resync_refuses_then_force(tmp_path: Path) -> None:
    async with worker_env(
        tmp_path, hubspot=10, on_hubspot_delete="delete", max_delete_share=0.2
    ) as env:
        await env.daemon.run_once(inbox=False)
        brevo = env.cli.servers.brevo
        for hid in sorted(hs_live(env))[:6]:  # deleted while no webhook was listening
            archive(env, hid)
        code, out, err = await env.cli.cli("resync", "--yes")
        assert code == 1, out + err
        assert "refusing to delete 6 of 10" in out and "--force" in out
        assert len(brevo.contacts) == 10
        letters = env.cli.query(
            "SELECT operation, error FROM dead_letters WHERE resolved_at IS NULL"
        )
        assert len(letters) == 6 and all(op == "delete" for op, _ in letters)

        code, out, err = await env.cli.cli("resync", "--yes", "--dry-run")
        assert code == 0, out + err
        assert len(brevo.contacts) == 10

        code, out, err = await env.cli.cli("resync", "--yes", "--force")
        assert code == 0, out + err
        assert len(brevo.contacts) == 4
        assert env.cli.query("SELECT count(*) FROM links") == [(4,)]


async def test_a_few_deletions_pass_the_guard_and_pulls_carry_lost_ones(tmp_path: Path) -> None:
    async with worker_env(tmp_path, hubspot=10, on_hubspot_delete="delete") as env:
        await env.daemon.run_once(inbox=False)
        brevo = env.cli.servers.brevo
        hid = min(hs_live(env))
        link = await link_of(env, hid)
        assert link is not None and link.brevo_id
        archive(env, hid)  # no webhook: the reconciliation finds it
        results = await env.daemon.run_once(reconcile=True, inbox=False)
        assert all(r.status == "ok" for r in results), [r.error for r in results]
        assert int(link.brevo_id) not in brevo.contacts
        assert await link_of(env, hid) is None
        assert len(brevo.contacts) == 9 and len(hs_live(env)) == 9
