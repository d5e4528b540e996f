"""Roll-ups against the sandboxes: tickets → OPEN_TICKETS / LAST_TICKET_DATE / HEALTH_SCORE,
meetings, calls and notes → dates and counts, won deals → DEAL_VALUE / DEAL_COUNT; a second
pass writes nothing; pulls, webhook ids and deletions; and the calls a 500-contact resync costs
(counted on the sandboxes, never timed)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connector.objects.rollup_mapping import load_rollup_file, load_rollup_mappings
from connector.objects.rollup_sync import RollupSource
from connector.objects.rollups import ContactRollups
from connector.sandbox.brevo_model import Contact
from tests.sync_env import ROOT, SyncEnv, sync_env

ATTRIBUTES = {
    "OPEN_TICKETS": "float",
    "LAST_TICKET_DATE": "date",
    "HEALTH_SCORE": "float",
    "LAST_MEETING_DATE": "date",
    "MEETINGS_COUNT": "float",
    "LAST_CALL_DATE": "date",
    "LAST_NOTE_DATE": "date",
    "DEAL_VALUE": "float",
    "DEAL_COUNT": "float",
}
EXAMPLES = ROOT / "mappings" / "rollups" / "examples"
TICKET_TO_CONTACT, MEETING, CALL, NOTE, DEAL = 16, 200, 194, 202, 3


class Bed:
    """The sync test bed plus roll-ups: linked contacts and a source per object type."""

    def __init__(self, env: SyncEnv, import_threshold: int = 20) -> None:
        self.env = env
        self.rollups = ContactRollups(
            hubspot=env.hubspot,
            brevo=env.brevo,
            sessions=env.engine.sessions,
            mappings=[
                *load_rollup_mappings(ROOT / "mappings" / "rollups"),
                load_rollup_file(EXAMPLES / "deals.yaml"),
            ],
            list_ids=[10],
            import_threshold=import_threshold,
            clock=env.clock.now,
        )
        self.sources = {
            t: RollupSource(t, self.rollups, clock=env.clock.now) for t in self.rollups.object_types
        }

    def add(self, object_type: str, contact: str, type_id: int, **props: Any) -> str:
        hs = self.env.hs_state
        rid = hs.put_object(object_type, props)
        hs.associate(object_type, int(rid), "contacts", int(contact), type_id)
        return rid

    async def brevo(self, email: str) -> Contact:
        await self.env.br_state.wait_processes()
        c = self.env.br_by_email(email)
        assert c is not None
        return c

    def brevo_writes(self) -> int:
        return self.env.br_state.calls.writes()


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    async with sync_env(tmp_path) as env:
        for name, kind in ATTRIBUTES.items():
            if name not in env.br_state.attributes:  # DEAL_VALUE is a default one
                env.br_state.create_attribute("normal", name, {"type": kind})
        yield Bed(env)


async def _linked(bed: Bed, n: int) -> list[tuple[str, str]]:
    """``n`` HubSpot contacts synced to Brevo: (HubSpot id, email)."""
    people = []
    for i in range(n):
        email = f"person{i}@example.com"
        people.append((bed.env.hs_create(email=email, firstname=f"P{i}"), email))
    await bed.env.cycle(mode="resync")
    await bed.env.br_state.wait_processes()
    return people


async def test_tickets_roll_up_into_health_attributes(bed: Bed) -> None:
    (ana, ana_mail), (_bo, bo_mail) = await _linked(bed, 2)
    now = bed.env.clock.now()
    bed.add(
        "tickets",
        ana,
        TICKET_TO_CONTACT,
        subject="a",
        hs_pipeline="0",
        hs_pipeline_stage="1",
        hs_ticket_priority="URGENT",
    )
    bed.add("tickets", ana, TICKET_TO_CONTACT, subject="b", hs_pipeline="0", hs_pipeline_stage="4")
    bed.add("tickets", ana, TICKET_TO_CONTACT, subject="c", hs_pipeline="0", hs_pipeline_stage="2")
    out = await bed.sources["tickets"].resync()
    assert out.counts["rollup_contacts"] == 2
    a = (await bed.brevo(ana_mail)).attributes
    # two open (-30), one urgent (-10), three created in the last 30 days (-15)
    assert a["OPEN_TICKETS"] == 2
    assert a["LAST_TICKET_DATE"][:10] == now.date().isoformat()
    assert a["HEALTH_SCORE"] == 45
    b = (await bed.brevo(bo_mail)).attributes
    assert b["OPEN_TICKETS"] == 0 and b["HEALTH_SCORE"] == 100
    assert "LAST_TICKET_DATE" not in b or b["LAST_TICKET_DATE"] in (None, "")

    writes = bed.brevo_writes()
    again = await bed.sources["tickets"].resync()
    assert bed.brevo_writes() == writes  # in step: reads only
    assert again.counts["unchanged"] == 2
    again = await bed.sources["tickets"].sync_ids(hubspot_ids=[])
    assert bed.brevo_writes() == writes


async def test_a_pull_refreshes_the_contacts_of_changed_tickets(bed: Bed) -> None:
    (ana, ana_mail), (bo, _) = await _linked(bed, 2)
    source = bed.sources["tickets"]
    first = await source.pull("hubspot")  # never pulled: a resync
    assert first.counts["rollup_contacts"] == 2
    bed.env.clock.advance(300)
    t = bed.add(
        "tickets", ana, TICKET_TO_CONTACT, subject="new", hs_pipeline="0", hs_pipeline_stage="1"
    )
    bed.env.clock.advance(1)
    out = await source.pull("hubspot")
    assert out.counts["rollup_contacts"] == 1 and out.counts["brevo_updated"] == 1
    assert (await bed.brevo(ana_mail)).attributes["OPEN_TICKETS"] == 1
    # the ticket closed: the next pull sees it (hs_lastmodifieddate moved)
    bed.env.clock.advance(5)
    bed.env.hs_state.put_object("tickets", {"hs_pipeline_stage": "4"}, t)
    bed.env.clock.advance(1)
    await source.pull("hubspot")
    assert (await bed.brevo(ana_mail)).attributes["OPEN_TICKETS"] == 0
    bed.env.clock.advance(2)
    bed.add("tickets", bo, TICKET_TO_CONTACT, subject="b", hs_pipeline="0", hs_pipeline_stage="4")
    bed.env.clock.advance(1)
    await source.pull("hubspot")  # the cursor moves past the first ticket
    writes = bed.brevo_writes()
    bed.env.clock.advance(5)
    again = await source.pull("hubspot")  # the lookback re-reads the first ticket
    assert again.counts["rollup_contacts"] == 1 and again.counts["unchanged"] == 1
    assert bed.brevo_writes() == writes  # nothing changed, nothing sent


async def test_a_deleted_ticket_refreshes_its_contacts(bed: Bed) -> None:
    (ana, ana_mail), _ = await _linked(bed, 2)
    t1 = bed.add(
        "tickets", ana, TICKET_TO_CONTACT, subject="x", hs_pipeline="0", hs_pipeline_stage="1"
    )
    bed.add("tickets", ana, TICKET_TO_CONTACT, subject="y", hs_pipeline="0", hs_pipeline_stage="1")
    await bed.sources["tickets"].resync()
    assert (await bed.brevo(ana_mail)).attributes["OPEN_TICKETS"] == 2
    hs = bed.env.hs_state
    hs.archive("tickets", hs.stores["tickets"].live[int(t1)])
    out = await bed.sources["tickets"].sync_ids(hubspot_ids=[t1])  # the ticket.deletion webhook
    assert out.counts["rollup_contacts"] == 1
    assert (await bed.brevo(ana_mail)).attributes["OPEN_TICKETS"] == 1


async def test_meetings_calls_and_notes(bed: Bed) -> None:
    (ana, ana_mail), _ = await _linked(bed, 2)
    bed.add("meetings", ana, MEETING, hs_timestamp="2026-02-10T10:00:00Z", hs_meeting_title="m1")
    bed.add("meetings", ana, MEETING, hs_timestamp="2026-02-20T10:00:00Z", hs_meeting_title="m2")
    bed.add("calls", ana, CALL, hs_timestamp="2026-01-05T08:00:00Z", hs_call_title="c")
    note = bed.add("notes", ana, NOTE, hs_timestamp="2026-02-01T08:00:00Z", hs_note_body="n")
    for t in ("meetings", "calls", "notes"):
        await bed.sources[t].resync()
    a = (await bed.brevo(ana_mail)).attributes
    assert a["LAST_MEETING_DATE"][:10] == "2026-02-20"
    assert a["MEETINGS_COUNT"] == 2
    assert a["LAST_CALL_DATE"][:10] == "2026-01-05"
    assert a["LAST_NOTE_DATE"][:10] == "2026-02-01"
    # a newer note through the webhook path
    later = bed.add("notes", ana, NOTE, hs_timestamp="2026-03-01T08:00:00Z", hs_note_body="n2")
    await bed.sources["notes"].sync_ids(hubspot_ids=[later])
    assert (await bed.brevo(ana_mail)).attributes["LAST_NOTE_DATE"][:10] == "2026-03-01"
    assert note


async def test_won_deals_fill_deal_value_and_count(bed: Bed) -> None:
    (ana, ana_mail), (bo, bo_mail) = await _linked(bed, 2)
    d1 = bed.add(
        "deals", ana, DEAL, dealname="A", amount="1000", pipeline="default", dealstage="closedwon"
    )
    bed.add(
        "deals",
        ana,
        DEAL,
        dealname="B",
        amount="250.5",
        pipeline="default",
        dealstage="contractsent",
    )
    d3 = bed.add(
        "deals", bo, DEAL, dealname="C", amount="300", pipeline="default", dealstage="closedwon"
    )
    deals = bed.sources["deals"]
    await deals.after_pass("deals", [d1, d3])  # the deals sync's hook after its pass
    a, b = (await bed.brevo(ana_mail)).attributes, (await bed.brevo(bo_mail)).attributes
    assert (a["DEAL_VALUE"], a["DEAL_COUNT"]) == (1000, 1)
    assert (b["DEAL_VALUE"], b["DEAL_COUNT"]) == (300, 1)
    bed.env.hs_state.put_object("deals", {"dealstage": "closedlost"}, d3)
    await deals.after_pass("deals", [d3])
    b = (await bed.brevo(bo_mail)).attributes
    assert (b["DEAL_VALUE"], b["DEAL_COUNT"]) == (0, 0)
    writes = bed.brevo_writes()
    await deals.after_pass("deals", [d1, d3])
    await deals.after_pass("companies", [d1])  # another object type's pass: not ours
    assert bed.brevo_writes() == writes


async def test_unlinked_contacts_are_skipped_and_counted(bed: Bed) -> None:
    (_ana, _), _ = await _linked(bed, 2)
    stranger = bed.env.hs_create(email="stranger@example.com")  # not synced yet
    t = bed.add(
        "tickets", stranger, TICKET_TO_CONTACT, subject="s", hs_pipeline="0", hs_pipeline_stage="1"
    )
    out = await bed.sources["tickets"].sync_ids(hubspot_ids=[t])
    assert out.counts["skipped_unlinked"] == 1 and out.counts["rollup_contacts"] == 0


async def test_dry_run_writes_nothing(bed: Bed) -> None:
    (ana, _), _ = await _linked(bed, 2)
    bed.add("tickets", ana, TICKET_TO_CONTACT, subject="x", hs_pipeline="0", hs_pipeline_stage="1")
    writes = bed.brevo_writes()
    out = await bed.sources["tickets"].resync(dry_run=True)
    assert out.counts["would_write"] == 2 and bed.brevo_writes() == writes


async def test_500_contacts_cost_batched_calls(bed: Bed) -> None:
    n = 500
    people = await _linked(bed, n)
    for i, (cid, _) in enumerate(people):
        stage = "1" if i % 3 else "4"
        bed.add(
            "tickets",
            cid,
            TICKET_TO_CONTACT,
            subject=f"t{i}",
            hs_pipeline="0",
            hs_pipeline_stage=stage,
        )
    hs_log, br_log = bed.env.hs_state.log, bed.env.br_state.calls
    hs_before, br_before = len(hs_log.calls), len(br_log.calls)
    out = await bed.sources["tickets"].resync()
    await bed.env.br_state.wait_processes()
    hs_calls = hs_log.calls[hs_before:]
    br_calls = br_log.calls[br_before:]
    assert out.counts["rollup_contacts"] == n
    # associations: 1 call per 1,000 contacts; tickets: 100 per batch read; pipelines: 1
    assert len(hs_calls) <= math.ceil(n / 1000) + math.ceil(n / 100) + 1, hs_calls
    br_writes = [c for c in br_calls if c[0] != "GET"]
    assert len(br_writes) <= 1, br_writes  # one import (its chunk holds 500 rows)
    br_reads = [c for c in br_calls if c[0] == "GET"]
    assert len(br_reads) <= math.ceil(n / 1000) + 1  # the listing of the current values
    ok = [p for p in people if (await bed.brevo(p[1])).attributes.get("OPEN_TICKETS") is not None]
    assert len(ok) == n
    # the same through the webhook path (ids): calls stay per batch, not per record
    hs_before = len(hs_log.calls)
    ticket_ids = [str(t) for t in sorted(bed.env.hs_state.stores["tickets"].live)]
    await bed.sources["tickets"].sync_ids(hubspot_ids=ticket_ids)
    assert len(hs_log.calls) - hs_before <= 2 * math.ceil(n / 1000) + math.ceil(n / 100) + 1


# --- wiring ------------------------------------------------------------------------------------


class FakeDealsSync:
    """Stands in for the deals two-way sync: an ObjectSync with an ``after_pass`` hook."""

    object_type = "deals"

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str]]] = []
        self.after_pass = self.record

    async def record(self, object_type: str, ids: list[str]) -> None:
        self.seen.append((object_type, ids))


async def test_runtime_registers_the_enabled_sources(tmp_path: Path) -> None:
    from connector.config import (
        BrevoSettings,
        Connectors,
        DatabaseSettings,
        HubSpotSettings,
        HubSpotSyncSwitches,
        Settings,
        SyncSettings,
    )
    from connector.runtime import Runtime

    folder = tmp_path / "mappings"
    (folder / "rollups").mkdir(parents=True)
    (folder / "contacts.yaml").write_text(
        "object: contacts\nidentity: {hubspot: email, brevo: email}\n"
        "fields:\n  - {hubspot: email, brevo: email, transform: email}\n"
    )
    for name in ("tickets.yaml", "engagements.yaml"):
        (folder / "rollups" / name).write_text((ROOT / "mappings" / "rollups" / name).read_text())
    (folder / "rollups" / "deals.yaml").write_text((EXAMPLES / "deals.yaml").read_text())

    def settings(**switches: bool) -> Settings:
        return Settings(
            connectors=Connectors(
                hubspot=HubSpotSettings(
                    base_url="http://127.0.0.1:9",
                    access_token="test-token",
                    sync=HubSpotSyncSwitches(**switches),
                ),
                brevo=BrevoSettings(base_url="http://127.0.0.1:9/v3", api_key="test-brevo-key"),
            ),
            database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'rt.db'}"),
            sync=SyncSettings(mappings_dir=str(folder)),
        )

    async with Runtime.open(settings()) as rt:
        assert rt.objects == {}  # every switch off
    async with Runtime.open(settings(tickets=True, engagements=True)) as rt:
        assert set(rt.objects) == {"tickets", "meetings", "calls", "notes"}
        assert all(o.pull_systems == ("hubspot",) for o in rt.objects.values())
    # the deals switch turns on the two-way deals sync: its roll-ups hang on its after_pass
    (folder / "deals.yaml").write_text((ROOT / "mappings" / "deals.yaml").read_text())
    async with Runtime.open(settings(tickets=True, deals=True)) as rt:
        from connector.objects.crm_sync import CrmObjectSync

        assert set(rt.objects) == {"tickets", "deals"}
        deals = rt.objects["deals"]
        assert isinstance(deals, CrmObjectSync) and deals.after_pass is not None
        assert deals.pull_systems == ("hubspot", "brevo")
        # with the deals two-way sync registered, deal roll-ups hang on its after_pass hook
        host = FakeDealsSync()
        rt.objects = {"deals": host}  # type: ignore[dict-item]
        added = await rt.add_rollups()
        assert "deals" not in added and rt.objects["deals"] is host
        await host.after_pass("companies", ["1"])  # chained: the host's own hook still runs
        assert host.seen == [("companies", ["1"])]


async def test_a_contact_linked_later_gets_its_rollups_at_the_next_pull(bed: Bed) -> None:
    await _linked(bed, 1)
    late = bed.env.hs_create(email="late@example.com")
    bed.add("tickets", late, TICKET_TO_CONTACT, subject="s", hs_pipeline="0", hs_pipeline_stage="1")
    source = bed.sources["tickets"]
    first = await source.pull("hubspot")  # initial resync: "late" has no Brevo contact yet
    assert first.counts["rollup_contacts"] == 1
    bed.env.clock.advance(300)
    await bed.env.cycle()  # the contact sync links it now
    await bed.env.br_state.wait_processes()
    bed.env.clock.advance(1)
    out = await source.pull("hubspot")  # no ticket changed since: found as newly linked
    assert out.counts["newly_linked"] >= 1
    assert (await bed.brevo("late@example.com")).attributes["OPEN_TICKETS"] == 1


async def test_a_resync_puts_back_a_value_edited_in_brevo(bed: Bed) -> None:
    (ana, ana_mail), _ = await _linked(bed, 2)
    bed.add("meetings", ana, MEETING, hs_timestamp="2026-02-10T10:00:00Z")
    for t in ("meetings", "calls"):  # two sources, one listing of Brevo between them
        await bed.sources[t].resync()
    assert bed.rollups.calls["brevo_list"] == 1
    assert (await bed.brevo(ana_mail)).attributes["MEETINGS_COUNT"] == 1
    bed.env.br_edit(ana_mail, MEETINGS_COUNT=7)  # someone edits it by hand in Brevo
    await bed.sources["meetings"].pull("hubspot")  # nothing changed in HubSpot: not seen
    assert (await bed.brevo(ana_mail)).attributes["MEETINGS_COUNT"] == 7
    bed.env.clock.advance(bed.rollups.snapshot_ttl.total_seconds() + 1)
    out = await bed.sources["meetings"].resync()  # compares with Brevo's values: put back
    assert out.counts["brevo_updated"] == 1 and bed.rollups.calls["brevo_list"] == 2
    assert (await bed.brevo(ana_mail)).attributes["MEETINGS_COUNT"] == 1
