"""The sync engine end to end, over HTTP against both sandboxes (in process, over ASGI).

A *cycle* is one :meth:`SyncEngine.sync` over the full listing of both sides
(:meth:`SyncEnv.cycle`). Edits are made the way a person makes them in each tool's UI
(``put_object`` in HubSpot, ``edit_contact`` in Brevo), at times the tests choose on the shared
simulated calendar (:class:`WallClock`). "Writes nothing" is counted at the sandboxes: the
state-changing calls they answered (:meth:`SyncEnv.writes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sync_env import SyncEnv, sync_env

from connector.engine import Outcome

ANN: dict[str, str | None] = {
    "email": "Ann.Lee@Example.com",
    "firstname": "Ann",
    "lastname": "Lee",
    "phone": "06 12 34 56 78",  # national (FR, the mapping's default region)
    "company": "Acme",
    "lifecyclestage": "customer",
    "hs_lead_status": "OPEN",
    "preferred_channel": "sms",
    "customer_segment": "smb",
}
BOB: dict[str, object] = {
    "FIRSTNAME": "Bob",
    "LASTNAME": "Stone",
    "SMS": "+33698765432",
    "COMPANY_NAME": "Globex",
    "LIFECYCLE_STAGE": 2,  # lead
    "LEAD_STATUS": "NEW",
    "PREFERRED_CHANNEL": "email",
    "SEGMENT": "enterprise",
}


async def clean_cycle(env: SyncEnv) -> Outcome:
    """A cycle that must not fail anywhere."""
    out = await env.cycle()
    assert out.counts["failed"] == 0, out.failures
    assert out.counts["dead_lettered"] == 0
    return out


async def assert_quiet(env: SyncEnv) -> Outcome:
    """The next cycle sends no write to either side (no echo, no no-op write)."""
    before = env.writes()
    out = await clean_cycle(env)
    assert env.writes() == before, out.summary.sample_diffs()
    assert not out.summary.field_writes
    assert not out.events
    return out


def assert_in_step(env: SyncEnv, hubspot_id: str, brevo_id: str | int) -> None:
    """Both sides of a pair hold the same canonical value in every field valid on both."""
    c = env.br_get(brevo_id)
    assert c is not None, f"no Brevo contact {brevo_id}"
    hs, br = env.hs_values(hubspot_id), env.br_values(c)
    assert {k: hs[k] for k in hs.keys() & br.keys()} == {k: br[k] for k in hs.keys() & br.keys()}


async def linked(env: SyncEnv, hubspot_id: str) -> str:
    """The Brevo id linked to a HubSpot id (the link must exist)."""
    found = [lk.brevo_id for lk in await env.links() if lk.hubspot_id == hubspot_id]
    assert len(found) == 1 and found[0] is not None, f"no link for HubSpot {hubspot_id}"
    return found[0]


async def pair_of_ann(env: SyncEnv) -> tuple[str, int]:
    """Ann created in HubSpot and synced: (HubSpot id, Brevo id)."""
    hid = env.hs_create(**ANN)
    env.clock.advance(60)
    await clean_cycle(env)
    return hid, int(await linked(env, hid))


# --- (1) creates ---------------------------------------------------------------------------------


async def test_hubspot_create_reaches_brevo_with_every_mapped_attribute(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hid = env.hs_create(**ANN)
        env.clock.advance(60)
        out = await clean_cycle(env)

        assert out.counts["brevo_created"] == 1
        assert out.summary.creates == {"brevo": 1}
        c = env.br_by_email("ann.lee@example.com")
        assert c is not None
        assert c.email == "ann.lee@example.com"  # identity normalised
        assert c.ext_id == hid  # EXT_ID carries the HubSpot id
        assert c.sms == "33612345678"  # Brevo's storage of +33612345678
        assert env.br_values(c)["phone"] == "+33612345678"  # E.164
        assert c.attributes == {
            "FIRSTNAME": "Ann",
            "LASTNAME": "Lee",
            "COMPANY_NAME": "Acme",
            "LIFECYCLE_STAGE": 6,  # the category value of "customer"
            "LEAD_STATUS": "OPEN",
            "PREFERRED_CHANNEL": "sms",
            "SEGMENT": "smb",
            "DEAL_VALUE": 0,  # computed by HubSpot, one way to Brevo
            "DEAL_COUNT": 0,
        }
        assert c.list_ids == {10}  # the configured import list
        assert await linked(env, hid) == str(c.id)
        created = [e for e in out.events if e.kind == "created"]
        assert [(e.origin, e.hubspot_id, e.brevo_id) for e in created] == [
            ("hubspot", hid, str(c.id))
        ]
        # HubSpot's own record is untouched: nothing is written back to the source
        assert env.hs_get(hid) is not None
        assert env.hs_state.log.count(contains="batch/update") == 0
        assert env.hs_state.log.count(contains="batch/upsert") == 0
        await assert_quiet(env)


async def test_brevo_create_reaches_hubspot(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        bid = env.br_create("Bob.Stone@Example.org", **BOB)
        env.clock.advance(60)
        out = await clean_cycle(env)

        assert out.counts["hubspot_created"] == 1
        assert out.summary.creates == {"hubspot": 1}
        found = env.hs_by_email("bob.stone@example.org")
        assert found is not None
        hid, props = found
        assert {k: props.get(k) for k in ANN} == {
            "email": "bob.stone@example.org",
            "firstname": "Bob",
            "lastname": "Stone",
            "phone": "+33698765432",
            "company": "Globex",
            "lifecyclestage": "lead",  # category value 2 mapped back
            "hs_lead_status": "NEW",
            "preferred_channel": "email",
            "customer_segment": "enterprise",
        }
        c = env.br_get(bid)
        assert c is not None
        assert c.ext_id == hid  # the new HubSpot id is written back as EXT_ID
        # HubSpot's computed values reach Brevo in the same cycle (one way)
        assert c.attributes["DEAL_VALUE"] == 0 and c.attributes["DEAL_COUNT"] == 0
        assert await linked(env, hid) == str(bid)
        created = [e for e in out.events if e.kind == "created"]
        assert [(e.origin, e.hubspot_id) for e in created] == [("brevo", hid)]
        await assert_quiet(env)


async def test_ext_id_is_written_even_when_no_value_differs(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        # the same person already in both accounts, with the same values (an initial sync)
        hid = env.hs_create(email="same@example.com", firstname="Same")
        same = env.br_create("same@example.com", FIRSTNAME="Same", DEAL_VALUE=0, DEAL_COUNT=0)
        # a Brevo contact whose HubSpot values (deal count and value) it already holds
        only = env.br_create("only@example.com", FIRSTNAME="Only", DEAL_VALUE=0, DEAL_COUNT=0)
        env.clock.advance(60)
        await clean_cycle(env)

        c_same, c_only = env.br_get(same), env.br_get(only)
        found = env.hs_by_email("only@example.com")
        assert c_same is not None and c_only is not None and found is not None
        assert c_same.ext_id == hid
        assert c_only.ext_id == found[0]
        await assert_quiet(env)


async def test_an_edit_during_the_import_is_not_taken_for_a_dropped_value(
    tmp_path: Path,
) -> None:
    """A Brevo user edits an imported field before the read-back: the import is through (no
    wait for ``/processes``, no failure), and the user's value then travels to HubSpot."""
    async with sync_env(tmp_path, import_threshold=5) as env:
        ids = env.hs_state.seed_contacts(8, seed=5)
        env.clock.advance(60)
        await clean_cycle(env)
        env.clock.advance(60)
        for hid in ids:
            env.hs_edit(hid, firstname="Imported")
        victim = env.hs_values(ids[0])["email"]
        assert victim is not None
        real_read = env.brevo.iter_contacts
        edited: list[str] = []

        def edit_then_read(*args: Any, **kwargs: Any) -> Any:
            # the import's read-back (modified_since): a user edits the contact in Brevo
            # after the import applied and before the connector reads it back
            if kwargs.get("modified_since") is not None and not edited:
                contact = env.br_by_email(victim)
                assert contact is not None and contact.attributes.get("FIRSTNAME") == "Imported"
                env.br_edit(victim, FIRSTNAME="Edited-meanwhile")
                edited.append(victim)
            return real_read(*args, **kwargs)

        env.brevo.iter_contacts = edit_then_read  # type: ignore[method-assign]
        out = await env.cycle()
        env.brevo.iter_contacts = real_read  # type: ignore[method-assign]
        assert edited == [victim]
        assert out.counts["failed"] == 0, out.failures
        assert out.counts["brevo_imported"] == len(ids)
        assert env.br_state.calls.count(contains="/processes") == 0
        env.clock.advance(60)
        out = await env.cycle()
        assert out.counts["failed"] == 0, out.failures
        assert env.hs_values(ids[0])["firstname"] == "Edited-meanwhile"
        await assert_quiet(env)


async def test_an_import_brevo_does_not_list_as_modified_is_confirmed_by_id(
    tmp_path: Path,
) -> None:
    """Brevo leaves a contact's modifiedAt alone when an import sets values it already holds
    (someone set them meanwhile): the read-back finds it by id instead of waiting for
    ``/processes`` and failing it."""
    async with sync_env(tmp_path, import_threshold=5) as env:
        ids = env.hs_state.seed_contacts(8, seed=7)
        env.clock.advance(60)
        await clean_cycle(env)
        env.clock.advance(60)
        for hid in ids:
            env.hs_edit(hid, firstname="Unchanged-in-Brevo")
        real_read = env.brevo.iter_contacts

        class Nothing:
            def __aiter__(self) -> Nothing:
                return self

            async def __anext__(self) -> Any:
                raise StopAsyncIteration

        def listing_without_changes(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("modified_since") is not None:
                return Nothing()  # the read-back's listing shows nothing modified
            return real_read(*args, **kwargs)

        env.brevo.iter_contacts = listing_without_changes  # type: ignore[method-assign]
        out = await env.cycle()
        env.brevo.iter_contacts = real_read  # type: ignore[method-assign]
        assert out.counts["failed"] == 0, out.failures
        assert out.counts["brevo_imported"] == len(ids)
        assert env.br_state.calls.count(contains="/processes") == 0
        await assert_quiet(env)


async def test_webhooks_naming_linked_contacts_by_email_read_them_by_id_in_batches(
    tmp_path: Path,
) -> None:
    """Brevo's webhooks name contacts by e-mail, and Brevo reads by e-mail one call each: the
    linked ones are read by id, 20 per call; only an unlinked one costs a call of its own."""
    async with sync_env(tmp_path) as env:
        ids = env.hs_state.seed_contacts(45, seed=9)
        env.clock.advance(60)
        await clean_cycle(env)
        env.clock.advance(60)
        emails = [env.hs_values(h)["email"] or "" for h in ids]
        for email in emails:
            env.br_edit(email, LASTNAME="Batched")
        env.br_create("stranger@example.org", FIRSTNAME="New")

        def listings() -> int:  # GET /v3/contacts (?ids=…): the batch read
            return sum(
                1 for m, p, _ in env.br_state.calls.calls if (m, p) == ("GET", "/v3/contacts")
            )

        by_email_before = env.br_state.calls.count(method="GET", contains="@")
        by_ids_before = listings()
        out = await env.engine.sync(brevo_emails=[*emails, "stranger@example.org"])
        assert out.counts["failed"] == 0, out.failures
        assert env.br_state.calls.count(method="GET", contains="@") - by_email_before == 1
        # 45 linked contacts, 20 per call: 3 (and 1 for the new HubSpot contact's follow-up)
        assert listings() - by_ids_before == 4
        for hid in ids:
            assert env.hs_values(hid)["lastname"] == "Batched"
        assert env.hs_by_email("stranger@example.org") is not None


async def test_a_burst_of_brevo_webhooks_is_read_by_listing_what_changed(
    tmp_path: Path,
) -> None:
    """70 contacts named by e-mail, changed after a known time: one listing of what changed
    since then (1,000 per call) instead of 4 calls by id or 70 by e-mail."""
    async with sync_env(tmp_path) as env:
        ids = env.hs_state.seed_contacts(80, seed=11)
        env.clock.advance(60)
        await clean_cycle(env)
        env.clock.advance(60)
        since = env.clock.now()
        env.clock.advance(5)
        emails = [env.hs_values(h)["email"] or "" for h in ids[:70]]
        for email in emails:
            env.br_edit(email, LASTNAME="Listed")
        before = list(env.br_state.calls.calls)
        out = await env.engine.sync(brevo_emails=emails, brevo_changed_since=since)
        assert out.counts["failed"] == 0, out.failures
        new_calls = env.br_state.calls.calls[len(before) :]
        reads = [(m, p) for m, p, _ in new_calls if m == "GET"]
        assert not [p for _, p in reads if "@" in p]  # no read by e-mail
        assert reads.count(("GET", "/v3/contacts")) == 1  # the one listing
        for hid in ids[:70]:
            assert env.hs_values(hid)["lastname"] == "Listed"


async def test_many_creates_go_through_the_brevo_import_and_converge(tmp_path: Path) -> None:
    async with sync_env(tmp_path, import_threshold=5) as env:
        ids = env.hs_state.seed_contacts(12, seed=3)
        env.clock.advance(60)
        out = await clean_cycle(env)
        assert out.counts["brevo_imported"] == 12
        assert env.br_state.calls.count(contains="/contacts/import") == 1
        for hid in ids:
            bid = await linked(env, hid)
            assert_in_step(env, hid, bid)
            c = env.br_get(bid)
            assert c is not None and c.ext_id == hid
        await assert_quiet(env)

        # a resync sends its Brevo updates as an import too; an email change goes on its own
        env.clock.advance(60)
        for hid in ids[:6]:
            env.hs_edit(hid, firstname="Renamed", company="NewCo")
        env.hs_edit(ids[7], email="moved@example.com")
        out = await env.cycle(mode="resync")
        assert out.counts["failed"] == 0, out.failures
        assert out.counts["brevo_imported"] == 6 and out.counts["brevo_updated"] == 1
        for hid in ids:
            assert_in_step(env, hid, await linked(env, hid))
        moved = env.br_by_email("moved@example.com")
        assert moved is not None and moved.ext_id == ids[7]
        await assert_quiet(env)


# --- (2) edits ------------------------------------------------------------------------------------


async def test_edits_on_each_side_propagate_then_nothing_is_written(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hid, bid = await pair_of_ann(env)
        email = "ann.lee@example.com"

        # the same contact, a different field on each side, in the same interval
        env.clock.advance(60)
        env.hs_edit(hid, lastname="Lee-Martin", lifecyclestage="opportunity")
        env.clock.advance(60)
        env.br_edit(email, COMPANY_NAME="Acme Europe", SMS="+33 7 55 66 77 88")
        before = env.writes()
        out = await clean_cycle(env)

        props = env.hs_get(hid)
        c = env.br_get(bid)
        assert props is not None and c is not None
        assert c.attributes["LASTNAME"] == "Lee-Martin"
        assert c.attributes["LIFECYCLE_STAGE"] == 5
        assert props["company"] == "Acme Europe"
        assert props["phone"] == "+33755667788"
        assert props["lastname"] == "Lee-Martin" and c.attributes["COMPANY_NAME"] == "Acme Europe"
        # one batch update in HubSpot, one contact update in Brevo
        assert (env.writes()[0] - before[0], env.writes()[1] - before[1]) == (1, 1)
        assert out.summary.decided_by == {"hubspot_changed": 2, "brevo_changed": 2}
        changed = {(e.field, e.origin, e.old, e.new) for e in out.events if e.kind == "changed"}
        assert changed == {
            ("lastname", "hubspot", "Lee", "Lee-Martin"),
            ("lifecyclestage", "hubspot", "6", "5"),
            ("company", "brevo", "Acme", "Acme Europe"),
            ("phone", "brevo", "+33612345678", "+33755667788"),
        }
        await assert_quiet(env)
        # a save in Brevo's UI that changes nothing bumps modifiedAt only: still nothing to write
        env.clock.advance(60)
        env.br_edit(email, COMPANY_NAME="Acme Europe")
        await assert_quiet(env)


# --- (3) conflicts --------------------------------------------------------------------------------


async def test_conflicting_edits_resolve_per_rule(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        h1 = env.hs_create(email="first@example.com", firstname="Ann", lifecyclestage="lead")
        h2 = env.hs_create(email="second@example.com", firstname="Bea", lifecyclestage="lead")
        env.clock.advance(60)
        await clean_cycle(env)
        b1, b2 = int(await linked(env, h1)), int(await linked(env, h2))

        # contact 1: HubSpot edited first, Brevo a minute later
        env.clock.advance(60)
        env.hs_edit(h1, firstname="Annie", lifecyclestage="customer")
        env.clock.advance(60)
        env.br_edit("first@example.com", FIRSTNAME="Anna", LIFECYCLE_STAGE=3)
        # contact 2: Brevo edited first, HubSpot a minute later
        env.clock.advance(60)
        env.br_edit("second@example.com", FIRSTNAME="Beatrix", LIFECYCLE_STAGE=3)
        env.clock.advance(60)
        env.hs_edit(h2, firstname="Bettina", lifecyclestage="customer")
        env.clock.advance(60)
        out = await clean_cycle(env)

        c1, c2 = env.br_get(b1), env.br_get(b2)
        p1, p2 = env.hs_get(h1), env.hs_get(h2)
        assert c1 is not None and c2 is not None and p1 is not None and p2 is not None
        # firstname is latest_wins: the side changed last wins
        assert p1["firstname"] == "Anna" and c1.attributes["FIRSTNAME"] == "Anna"
        assert p2["firstname"] == "Bettina" and c2.attributes["FIRSTNAME"] == "Bettina"
        # lifecyclestage is hubspot_wins, even where Brevo changed last
        assert p1["lifecyclestage"] == "customer" and c1.attributes["LIFECYCLE_STAGE"] == 6
        assert p2["lifecyclestage"] == "customer" and c2.attributes["LIFECYCLE_STAGE"] == 6

        # the summary names the rule of every conflict
        assert out.summary.conflicts == {"latest_wins": 2, "hubspot_wins": 2}
        assert out.summary.decided_by == {"latest_wins": 2, "hubspot_wins": 2}
        assert out.summary.conflict_writes == {"hubspot": 1, "brevo": 3}
        lines = out.summary.sample_diffs()
        assert len(lines) == 4
        assert sum("firstname" in line and "latest_wins" in line for line in lines) == 2
        assert sum("lifecyclestage" in line and "hubspot_wins" in line for line in lines) == 2
        assert any("'Anna'" in line and "to HubSpot" in line for line in lines)
        await assert_quiet(env)


# --- (4) email changes ----------------------------------------------------------------------------


async def test_email_change_in_hubspot_updates_the_linked_brevo_contact(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hid, bid = await pair_of_ann(env)
        env.clock.advance(60)
        env.hs_edit(hid, email="ann@newjob.example")
        out = await clean_cycle(env)

        assert out.summary.email_changes == {"brevo": 1}
        assert out.counts["brevo_created"] == out.counts["hubspot_created"] == 0
        c = env.br_get(bid)
        assert c is not None and c.email == "ann@newjob.example"  # same contact, new address
        assert env.br_by_email("ann.lee@example.com") is None
        assert len(env.br_state.contacts) == 1 and len(env.hs_ids()) == 1
        assert c.attributes["FIRSTNAME"] == "Ann"  # nothing else moved
        [link] = await env.links()
        assert (link.hubspot_id, link.brevo_id, link.identity_key) == (
            hid,
            str(bid),
            "ann@newjob.example",
        )
        await assert_quiet(env)


async def test_email_change_in_brevo_updates_the_linked_hubspot_contact(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hid, bid = await pair_of_ann(env)
        env.clock.advance(60)
        env.br_edit("ann.lee@example.com", EMAIL="Ann@NewJob.example")
        out = await clean_cycle(env)

        assert out.summary.email_changes == {"hubspot": 1}
        props = env.hs_get(hid)
        assert props is not None and props["email"] == "ann@newjob.example"
        assert len(env.hs_ids()) == 1 and len(env.br_state.contacts) == 1
        c = env.br_get(bid)
        assert c is not None and c.email == "ann@newjob.example"
        await assert_quiet(env)
        [link] = await env.links()
        assert (link.hubspot_id, link.brevo_id, link.identity_key) == (
            hid,
            str(bid),
            "ann@newjob.example",
        )


async def test_blocklisted_brevo_contact_keeps_its_email(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hid, bid = await pair_of_ann(env)
        env.clock.advance(60)
        env.br_state.edit_contact("ann.lee@example.com", {}, email_blacklisted=True)
        env.clock.advance(60)
        env.hs_edit(hid, email="ann@newjob.example", firstname="Annie")
        out = await clean_cycle(env)

        c = env.br_get(bid)
        assert c is not None
        assert c.email == "ann.lee@example.com"  # not changed: it would un-blocklist
        assert c.email_blacklisted
        assert c.attributes["FIRSTNAME"] == "Annie"  # the rest of the contact still syncs
        assert out.counts["blocklisted_email_kept"] == 1
        props = env.hs_get(hid)
        assert props is not None and props["email"] == "ann@newjob.example"  # not reverted
        out2 = await assert_quiet(env)
        assert out2.counts["blocklisted_email_kept"] == 1


# --- (5) no email ---------------------------------------------------------------------------------


async def test_hubspot_contact_without_email_is_counted_and_listed(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        nameless = env.hs_create(firstname="Nomail", lastname="Person", company="Acme")
        hid = env.hs_create(**ANN)
        env.clock.advance(60)
        out = await clean_cycle(env)

        assert out.counts["hubspot_without_email"] == 1
        assert out.counts["brevo_created"] == 1  # the others sync
        assert len(env.br_state.contacts) == 1
        assert [lk.hubspot_id for lk in await env.links()] == [hid]
        listed = await env.skipped()
        assert [(s.system, s.object_type, s.object_id, s.reason) for s in listed] == [
            ("hubspot", "contacts", nameless, "no email")
        ]
        out2 = await assert_quiet(env)
        assert out2.counts["hubspot_without_email"] == 1
        assert len(await env.skipped()) == 1  # listed once, not once per cycle

        # once it has an address it syncs, and leaves the list
        env.clock.advance(60)
        env.hs_edit(nameless, email="nomail.person@example.com")
        out3 = await clean_cycle(env)
        assert out3.counts["hubspot_without_email"] == 0
        assert out3.counts["brevo_created"] == 1
        c = env.br_by_email("nomail.person@example.com")
        assert c is not None and c.attributes["FIRSTNAME"] == "Nomail"
        assert await env.skipped() == []
        await assert_quiet(env)


# --- (6) invalid phone ----------------------------------------------------------------------------


async def test_invalid_hubspot_phone_syncs_the_contact_without_sms(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hid = env.hs_create(**{**ANN, "phone": "call me maybe"})
        env.clock.advance(60)
        out = await clean_cycle(env)

        assert out.counts["invalid_fields"] == 1
        assert out.summary.skips["skip_invalid"] == 1
        c = env.br_by_email("ann.lee@example.com")
        assert c is not None
        assert c.sms is None and "SMS" not in c.all_attributes()
        assert c.ext_id == hid
        assert c.attributes == {
            "FIRSTNAME": "Ann",
            "LASTNAME": "Lee",
            "COMPANY_NAME": "Acme",
            "LIFECYCLE_STAGE": 6,
            "LEAD_STATUS": "OPEN",
            "PREFERRED_CHANNEL": "sms",
            "SEGMENT": "smb",
            "DEAL_VALUE": 0,
            "DEAL_COUNT": 0,
        }
        props = env.hs_get(hid)
        assert props is not None and props["phone"] == "call me maybe"  # HubSpot keeps it
        out2 = await assert_quiet(env)
        assert out2.counts["invalid_fields"] == 1


async def test_phone_turning_invalid_in_hubspot_loses_nothing(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hid, bid = await pair_of_ann(env)
        env.clock.advance(60)
        env.hs_edit(hid, phone="12", firstname="Annie")
        out = await clean_cycle(env)

        assert out.counts["invalid_fields"] == 1
        c = env.br_get(bid)
        assert c is not None
        assert c.sms == "33612345678"  # the last good number is not erased
        assert c.attributes["FIRSTNAME"] == "Annie"  # the other field still travels
        props = env.hs_get(hid)
        assert props is not None and props["phone"] == "12"  # and is not overwritten back
        await assert_quiet(env)

        # fixed in HubSpot: the new number travels
        env.clock.advance(60)
        env.hs_edit(hid, phone="+33 6 99 88 77 66")
        await clean_cycle(env)
        c = env.br_get(bid)
        assert c is not None and c.sms == "33699887766"
        await assert_quiet(env)


# --- (7) 207 partial failures ---------------------------------------------------------------------


async def test_partial_failure_on_create_dead_letters_only_the_bad_record(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        env.hs_state.required_properties["contacts"] = {"company"}
        good1 = env.br_create("good1@example.com", FIRSTNAME="Good", COMPANY_NAME="Acme")
        bad = env.br_create("bad@example.com", FIRSTNAME="Bad")  # no company
        good2 = env.br_create("good2@example.com", FIRSTNAME="Fine", COMPANY_NAME="Hooli")
        env.clock.advance(60)
        out = await env.cycle()

        assert ("POST", "/crm/objects/2026-09/contacts/batch/upsert", 207) in (
            env.hs_state.log.calls
        )
        assert out.counts["hubspot_created"] == 2
        assert out.counts["failed"] == 1 and out.counts["dead_lettered"] == 1
        assert env.hs_by_email("good1@example.com") is not None
        assert env.hs_by_email("good2@example.com") is not None
        assert env.hs_by_email("bad@example.com") is None
        [dead] = await env.dead_letters()
        assert dead.identity_key == "bad@example.com"
        assert dead.payload["brevo_id"] == str(bad)
        assert dead.operation == "create_in_hubspot"
        assert "REQUIRED" in dead.error and "company" in dead.error
        links = {lk.brevo_id: lk for lk in await env.links()}
        assert set(links) == {str(good1), str(good2)}  # no ledger entry for the bad one
        assert [e.brevo_id for e in out.events if e.kind == "created"] == [str(good1), str(good2)]

        # failing again: still one open letter for the record, one more attempt
        env.clock.advance(60)
        again = await env.cycle()
        assert again.counts["failed"] == 1 and again.counts["hubspot_created"] == 0
        [dead_again] = await env.dead_letters()
        assert (dead_again.id, dead_again.attempts) == (dead.id, dead.attempts + 1)

        # fixed at the source, the record goes through and its letter is resolved
        env.clock.advance(60)
        env.br_edit("bad@example.com", COMPANY_NAME="Initech")
        fixed = await clean_cycle(env)
        assert fixed.counts["dead_letters_resolved"] == 1
        assert await env.dead_letters() == []
        assert env.hs_by_email("bad@example.com") is not None
        await assert_quiet(env)


async def test_value_hubspot_refuses_fails_only_its_record(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hx = env.hs_create(email="x@example.com", firstname="X", hs_lead_status="NEW")
        hy = env.hs_create(email="y@example.com", firstname="Y", hs_lead_status="NEW")
        env.clock.advance(60)
        await clean_cycle(env)
        bases_before = {lk.hubspot_id: lk.bases for lk in await env.links()}

        env.clock.advance(60)
        env.br_edit("x@example.com", LEAD_STATUS="SOMEDAY", FIRSTNAME="Xavier")  # no such option
        env.br_edit("y@example.com", FIRSTNAME="Yolanda")
        out = await env.cycle()

        assert ("POST", "/crm/objects/2026-09/contacts/batch/update", 207) in (
            env.hs_state.log.calls
        )
        assert out.counts["hubspot_updated"] == 1 and out.counts["failed"] == 1
        px, py = env.hs_get(hx), env.hs_get(hy)
        assert px is not None and py is not None
        assert py["firstname"] == "Yolanda"  # the good record of the batch is written
        assert px["hs_lead_status"] == "NEW" and px["firstname"] == "X"
        [dead] = await env.dead_letters()
        assert dead.object_id == hx
        assert "SOMEDAY" in dead.error
        bases_after = {lk.hubspot_id: lk.bases for lk in await env.links()}
        assert bases_after[hx] == bases_before[hx]  # the ledger did not move for it
        assert bases_after[hy]["firstname"] != bases_before[hy]["firstname"]
        assert [e.hubspot_id for e in out.events] == [hy]

        # a valid status in Brevo: the record syncs, Xavier included, and the letter closes
        env.clock.advance(60)
        env.br_edit("x@example.com", LEAD_STATUS="OPEN")
        await clean_cycle(env)
        px = env.hs_get(hx)
        assert px is not None and (px["hs_lead_status"], px["firstname"]) == ("OPEN", "Xavier")
        assert await env.dead_letters() == []
        await assert_quiet(env)


# --- (8) faults -----------------------------------------------------------------------------------


async def test_a_429_storm_and_5xx_faults_still_converge(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hs_ids = env.hs_state.seed_contacts(6, seed=11)
        env.br_state.seed_contacts(6, seed=12)
        env.clock.advance(60)
        await clean_cycle(env)
        env.clock.advance(60)
        env.hs_edit(hs_ids[0], firstname="Stormy")
        env.hs_create(email="new.in.hubspot@example.com", firstname="Newcomer")
        br_first = next(iter(env.br_state.contacts.values()))
        assert br_first.email is not None
        env.br_edit(br_first.email, COMPANY_NAME="Rainy Days")
        env.br_create("new.in.brevo@example.com", FIRSTNAME="Fresh")

        env.storm(30)  # every call answered 429 for 30 (simulated) seconds…
        for faults in (env.hs_state.faults, env.br_state.faults):
            faults.fail_next, faults.fail_status = 2, 503  # …then two 503s on each side
        out = await clean_cycle(env)

        statuses = [s for _, _, s in env.hs_state.log.calls + env.br_state.calls.calls]
        assert 429 in statuses and 503 in statuses
        assert env.fake.slept >= 30  # the clients waited, on the fake clock
        assert env.hs_state.faults.fail_next == env.br_state.faults.fail_next == 0
        assert out.counts["hubspot_created"] == 1 and out.counts["brevo_created"] == 1
        for hid in env.hs_ids():
            assert_in_step(env, hid, await linked(env, hid))
        assert len(env.hs_ids()) == len(env.br_state.contacts) == 14
        await assert_quiet(env)


# --- (9) dry run ----------------------------------------------------------------------------------


async def test_dry_run_writes_nothing_and_counts_what_a_real_run_does(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        h1 = env.hs_create(email="one@example.com", firstname="One")
        env.hs_create(email="two@example.com", firstname="Two")
        env.br_create("three@example.com", FIRSTNAME="Three")
        env.clock.advance(60)
        await clean_cycle(env)
        env.clock.advance(60)
        env.hs_edit(h1, firstname="Uno")
        env.br_edit("two@example.com", LASTNAME="Deux")
        env.br_edit("three@example.com", COMPANY_NAME="Tres")
        env.hs_create(email="four@example.com", firstname="Four")
        env.br_create("five@example.com", FIRSTNAME="Five")
        env.clock.advance(60)

        links_before = await env.links()
        before = env.writes()
        dry = await env.cycle(dry_run=True)
        assert env.writes() == before
        assert await env.links() == links_before
        assert await env.dead_letters() == []
        assert dry.counts["dry_run"] == 1
        assert not dry.events
        assert dry.summary.creates == {"brevo": 1, "hubspot": 1}
        assert dry.summary.updates == {"brevo": 1, "hubspot": 2}
        assert len(dry.summary.sample_diffs(100)) == sum(dry.summary.field_writes.values())

        real = await clean_cycle(env)
        assert dry.summary.creates == {
            "brevo": real.counts["brevo_created"],
            "hubspot": real.counts["hubspot_created"],
        }
        assert dry.summary.updates["hubspot"] == real.counts["hubspot_updated"]
        assert dry.summary.field_writes["hubspot"] == real.summary.field_writes["hubspot"]
        # One thing a dry run cannot know: the values HubSpot computes on a record it creates
        # (deal count and value), which the real run reads back and sends to Brevo.
        computed = [f.key for f in env.mapping.fields if f.spec.direction == "hubspot_to_brevo"]
        assert real.counts["brevo_updated"] == dry.summary.updates["brevo"] + 1
        assert real.summary.field_writes["brevo"] == (
            dry.summary.field_writes["brevo"] + len(computed)
        )
        await assert_quiet(env)


# --- identity collisions (bugs found by these tests) ----------------------------------------------


async def test_old_email_taken_by_a_new_hubspot_contact(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        h1 = env.hs_create(email="first@example.com", firstname="One", lastname="Original")
        env.clock.advance(60)
        await clean_cycle(env)
        b1 = int(await linked(env, h1))
        env.clock.advance(60)
        env.hs_edit(h1, email="moved@example.com")  # One moves to a new address…
        env.clock.advance(60)
        h3 = env.hs_create(email="first@example.com", firstname="Three")  # …a newcomer takes it
        env.clock.advance(60)

        await env.cycle()  # must not raise
        await env.cycle()

        c1 = env.br_get(b1)
        assert c1 is not None
        assert c1.email == "moved@example.com" and c1.ext_id == h1
        assert c1.attributes.get("FIRSTNAME") == "One"  # not the newcomer's name
        p3 = env.hs_get(h3)
        assert p3 is not None and p3.get("lastname") is None  # not One's last name
        c3 = env.br_by_email("first@example.com")
        assert c3 is not None and c3.ext_id == h3 and c3.attributes["FIRSTNAME"] == "Three"
        await assert_quiet(env)


async def test_old_email_taken_by_a_new_brevo_contact(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        h1 = env.hs_create(email="first@example.com", firstname="One", lastname="Original")
        env.clock.advance(60)
        await clean_cycle(env)
        env.clock.advance(60)
        env.br_edit("first@example.com", EMAIL="moved@example.com")
        env.clock.advance(60)
        b3 = env.br_create("first@example.com", FIRSTNAME="Three")
        env.clock.advance(60)

        await env.cycle()  # must not raise
        await env.cycle()

        p1 = env.hs_get(h1)
        assert p1 is not None
        assert p1["email"] == "moved@example.com" and p1["firstname"] == "One"
        c3 = env.br_get(b3)
        assert c3 is not None and c3.attributes.get("LASTNAME") is None
        found = env.hs_by_email("first@example.com")
        assert found is not None and found[1]["firstname"] == "Three"
        assert await linked(env, found[0]) == str(b3)
        await assert_quiet(env)


async def test_email_change_onto_an_address_another_brevo_contact_has(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        h1 = env.hs_create(email="first@example.com", firstname="One")
        env.clock.advance(60)
        await clean_cycle(env)
        env.clock.advance(60)
        env.hs_edit(h1, email="taken@example.com")
        b2 = env.br_create("taken@example.com", FIRSTNAME="Two")
        env.clock.advance(60)

        out = await env.cycle()
        # Brevo cannot give B1 an address B2 holds: one record fails, reported once, and the
        # unrelated contact B2 is neither paired with H1 nor written to.
        assert out.counts["dead_lettered"] == 1
        c2 = env.br_get(b2)
        assert c2 is not None and c2.attributes == {"FIRSTNAME": "Two"} and c2.ext_id is None


async def test_removing_the_email_of_a_linked_hubspot_contact(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        hid, bid = await pair_of_ann(env)
        env.clock.advance(60)
        env.hs_edit(hid, email=None)
        out = await env.cycle()
        assert out.counts["hubspot_without_email"] == 1
        env.clock.advance(60)
        await env.cycle()

        props = env.hs_get(hid)
        assert props is not None and props.get("email") is None  # the user's removal stands
        c = env.br_get(bid)
        assert c is not None and c.email == "ann.lee@example.com"  # Brevo keeps its address
        listed = await env.skipped()
        assert [(s.object_id, s.reason) for s in listed] == [(hid, "no email")]


async def test_a_write_that_succeeded_beside_a_failed_one_is_not_a_change(
    tmp_path: Path,
) -> None:
    async with sync_env(tmp_path) as env:
        hid = env.hs_create(email="one@example.com", firstname="One", lifecyclestage="lead")
        env.clock.advance(60)
        await clean_cycle(env)
        bid = await linked(env, hid)

        env.clock.advance(60)
        env.hs_edit(hid, lifecyclestage="customer")  # travels to Brevo: succeeds
        env.br_edit("one@example.com", FIRSTNAME="Uno")  # travels to HubSpot: HubSpot is down
        env.fail_writes("hubspot", 7)  # more than the client's retries
        out = await env.cycle()
        assert out.counts["dead_lettered"] == 1
        c = env.br_get(bid)
        assert c is not None and c.attributes["LIFECYCLE_STAGE"] == 6

        # then a marketer moves the stage in Brevo: the only change since our own write
        env.clock.advance(60)
        env.br_edit("one@example.com", LIFECYCLE_STAGE=7)
        out = await clean_cycle(env)

        assert not out.summary.conflicts, out.summary.sample_diffs()
        props = env.hs_get(hid)
        assert props is not None and props["lifecyclestage"] == "evangelist"
        assert props["firstname"] == "Uno"


async def test_link_identity_key_follows_a_brevo_email_change_at_once(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        await pair_of_ann(env)
        env.clock.advance(60)
        env.br_edit("ann.lee@example.com", EMAIL="ann@newjob.example")
        await clean_cycle(env)
        [link] = await env.links()
        assert link.identity_key == "ann@newjob.example"
