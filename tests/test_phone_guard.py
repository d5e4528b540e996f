"""A phone two contacts share: Brevo keeps an SMS number on one contact only.

Brevo (and the sandbox, like it) matches an import row, or an ``updateEnabled`` create, to the
contact that holds the row's SMS number when its e-mail is new: without the guard a second
HubSpot contact with the same phone would overwrite the first person's Brevo contact. The
guard (``connector.phone_guard``) leaves such a phone out of the write, with the reason; the
links table never moves a link to another person's record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sync_env import SyncEnv, sync_env

from connector import phone_guard
from connector import plan as planner
from connector.resync import resync
from connector.store import links as ledger

SHARED = "06 12 34 56 78"  # national FR (the test mapping's region): +33612345678
SHARED_KEY = "33612345678"


def _link(link_id: int, hubspot_id: str, brevo_id: str) -> ledger.LinkRecord:
    return ledger.LinkRecord(link_id, "contacts", hubspot_id, brevo_id, None)


async def _refused(
    writes: Sequence[phone_guard.PhoneWrite],
    in_ledger: dict[str, list[ledger.LinkRecord]] | None = None,
    in_brevo: dict[str, str] | None = None,
    lookup_max: int | None = None,
    current: bool = False,
) -> tuple[dict[int, str], list[list[str]]]:
    asked: list[list[str]] = []

    async def by_hash(hashes: Sequence[str]) -> dict[str, list[ledger.LinkRecord]]:
        return {h: v for h, v in (in_ledger or {}).items() if h in hashes}

    async def by_key(keys: Sequence[str]) -> dict[str, str]:
        asked.append(list(keys))
        return {k: v for k, v in (in_brevo or {}).items() if k in keys}

    refused = await phone_guard.phones_in_use(
        writes,
        in_ledger=by_hash,
        in_brevo=by_key,
        brevo_is_current=current,
        brevo_lookup_max=lookup_max,
    )
    return refused, asked


async def test_a_phone_a_linked_pair_holds_is_refused_to_everyone_else() -> None:
    held = {planner.value_hash("+33612345678"): [_link(7, "h7", "70")]}
    writes = [
        phone_guard.PhoneWrite(0, "+33612345678", None, "h1", None),  # new contact
        phone_guard.PhoneWrite(1, "+33612345678", 7, "h7", "70"),  # the holder itself
        phone_guard.PhoneWrite(2, "+33699999999", None, "h2", None),  # free
    ]
    refused, asked = await _refused(writes, held)
    assert set(refused) == {0}
    assert "Brevo contact 70" in refused[0] and "HubSpot h7" in refused[0]
    assert asked == [["33699999999"]]  # only the phone no link holds is looked up in Brevo


async def test_a_phone_an_unlinked_brevo_contact_holds_and_the_same_pass_twice() -> None:
    writes = [
        phone_guard.PhoneWrite(0, "+33611111111", None, "h1", None),
        phone_guard.PhoneWrite(1, "+33611111111", None, "h2", None),  # same pass, second
        phone_guard.PhoneWrite(2, "+33622222222", None, "h3", None),  # an unlinked holder
        phone_guard.PhoneWrite(3, "+33633333333", 4, "h4", "40"),  # its own contact holds it
    ]
    refused, _ = await _refused(writes, in_brevo={"33622222222": "99", "33633333333": "40"})
    assert set(refused) == {1, 2}
    assert "HubSpot h1" in refused[1] and "same pass" in refused[1]
    assert "Brevo contact 99 (not linked)" in refused[2]


async def test_brevo_as_it_is_now_overrules_a_stale_ledger() -> None:
    # the ledger still says h7 holds the number; Brevo (the API) says nobody does any more
    held = {planner.value_hash("+33612345678"): [_link(7, "h7", "70")]}
    writes = [phone_guard.PhoneWrite(0, "+33612345678", None, "h1", None)]
    refused, asked = await _refused(writes, held, current=True)
    assert refused == {} and asked == [["33612345678"]]
    # ... and when Brevo confirms the holder, it is refused with both ids
    refused, _ = await _refused(writes, held, in_brevo={"33612345678": "70"}, current=True)
    assert "Brevo contact 70 (linked to HubSpot h7)" in refused[0]


async def test_beyond_the_lookup_budget_the_ledger_alone_decides() -> None:
    held = {planner.value_hash("+33600000004"): [_link(9, "h9", "90")]}
    writes = [
        phone_guard.PhoneWrite(i, f"+336000000{i:02d}", None, f"h{i}", None) for i in range(5)
    ]
    refused, asked = await _refused(writes, held, lookup_max=3, current=True)
    assert [len(a) for a in asked] == [3]
    assert set(refused) == {4} and "HubSpot h9" in refused[4]


# --- end to end, over both sandboxes ------------------------------------------------------------


def _sms_of(env: SyncEnv, email: str) -> str | None:
    c = env.br_by_email(email)
    assert c is not None, f"no Brevo contact {email}"
    return c.sms


async def test_two_hubspot_contacts_sharing_a_phone_in_one_import(tmp_path: Path) -> None:
    async with sync_env(tmp_path, import_threshold=2) as env:
        a = env.hs_create(email="ann@example.com", firstname="Ann", phone=SHARED)
        b = env.hs_create(email="bob@example.com", firstname="Bob", phone=SHARED)
        env.clock.advance(60)
        out = await env.cycle()
        assert out.counts["failed"] == 0 and out.counts["dead_lettered"] == 0, out.failures
        assert out.counts["phone_in_use"] == 1
        assert out.counts["brevo_imported"] == 2
        links = {lk.hubspot_id: lk.brevo_id for lk in await env.links()}
        assert set(links) == {a, b} and len(set(links.values())) == 2
        assert _sms_of(env, "ann@example.com") == SHARED_KEY  # the first keeps it
        assert _sms_of(env, "bob@example.com") is None
        # Bob's record keeps an open letter saying why (dlq list / retry), not a failure
        (letter,) = await env.dead_letters()
        assert letter.object_id == b and letter.error.startswith("SMS not written: phone also")
        # the next cycle writes nothing: Bob's phone is left out again, not sent
        before = env.writes()
        again = await env.cycle()
        assert env.writes() == before and again.counts["phone_in_use"] == 1
        assert [lt.attempts for lt in await env.dead_letters()] == [2]
        # Ann takes another number: Bob's goes through with his next change, the letter closes
        env.clock.advance(60)
        env.hs_edit(a, phone="06 99 99 99 99")
        await env.cycle()
        env.clock.advance(60)
        env.hs_edit(b, firstname="Robert")
        out = await env.cycle()
        assert out.counts["phone_in_use"] == 0
        assert _sms_of(env, "bob@example.com") == SHARED_KEY
        assert await env.dead_letters() == []


async def test_a_phone_already_linked_is_left_out_of_a_later_create(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:  # one at a time: POST /contacts with updateEnabled
        a = env.hs_create(email="ann@example.com", firstname="Ann", phone=SHARED)
        env.clock.advance(60)
        assert (await env.cycle()).counts["failed"] == 0
        b = env.hs_create(email="bob@example.com", firstname="Bob", phone=SHARED)
        env.clock.advance(60)
        out = await env.cycle()
        assert out.counts["failed"] == 0 and out.counts["phone_in_use"] == 1, out.failures
        ann, bob = env.br_by_email("ann@example.com"), env.br_by_email("bob@example.com")
        assert ann is not None and bob is not None and ann.id != bob.id
        assert ann.sms == SHARED_KEY and bob.sms is None and bob.attributes["FIRSTNAME"] == "Bob"
        links = {lk.hubspot_id: lk.brevo_id for lk in await env.links()}
        assert links == {a: str(ann.id), b: str(bob.id)}


async def test_a_phone_an_unlinked_brevo_contact_holds_is_looked_up_by_sms(
    tmp_path: Path,
) -> None:
    async with sync_env(tmp_path) as env:
        env.br_create("carol@example.com", FIRSTNAME="Carol", SMS="+33612345678")
        b = env.hs_create(email="bob@example.com", firstname="Bob", phone=SHARED)
        env.clock.advance(60)
        record = env.hs_state.get_object("contacts", b)
        hs = [o async for o in env.hubspot.iter_objects("contacts", env.engine.hs_props)]
        assert record is not None and len(hs) == 1
        out = await env.engine.sync(hubspot=hs)  # Carol is not in this pass: not linked
        assert out.counts["failed"] == 0 and out.counts["phone_in_use"] == 1, out.failures
        assert env.br_state.calls.count(contains=f"/contacts/+{SHARED_KEY}") == 1
        carol = env.br_by_email("carol@example.com")
        assert carol is not None and carol.sms == SHARED_KEY
        assert carol.attributes.get("FIRSTNAME") == "Carol"  # not overwritten by Bob
        assert _sms_of(env, "bob@example.com") is None


async def test_a_resync_checks_phones_against_the_staged_brevo_contacts(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        carol_id = env.br_create("carol@example.com", FIRSTNAME="Carol", SMS="+33612345678")
        env.hs_create(email="bob@example.com", firstname="Bob", phone=SHARED)
        env.hs_create(email="dan@example.com", firstname="Dan", phone=SHARED)
        env.clock.advance(60)
        out = await resync(env.engine)
        assert out.counts["failed"] == 0 and out.counts["dead_lettered"] == 0, out.failures
        assert out.counts["phone_in_use"] == 2
        assert not env.br_state.calls.count(contains="/contacts/+")  # the stage, not the API
        carol = env.br_get(carol_id)
        assert carol is not None and carol.email == "carol@example.com"
        assert carol.sms == SHARED_KEY
        assert _sms_of(env, "bob@example.com") is None and _sms_of(env, "dan@example.com") is None
        assert len(await env.links()) == 3  # Carol was created in HubSpot and linked


async def test_a_create_brevo_matched_to_a_linked_contact_never_moves_its_link(
    tmp_path: Path,
) -> None:
    async with sync_env(tmp_path) as env:
        a = env.hs_create(email="ann@example.com", firstname="Ann", phone=SHARED)
        env.clock.advance(60)
        assert (await env.cycle()).counts["failed"] == 0
        ann_id = (await env.links())[0].brevo_id
        env.engine.sms_field = None  # no guard: Brevo matches Bob's create to Ann by SMS
        b = env.hs_create(email="bob@example.com", firstname="Bob", phone=SHARED)
        env.clock.advance(60)
        out = await env.cycle()
        assert out.counts["dead_lettered"] == 1
        links = {lk.hubspot_id: lk.brevo_id for lk in await env.links()}
        assert links == {a: ann_id}  # Ann keeps her link; Bob is not linked to her contact
        (dead,) = await env.dead_letters()
        assert dead.object_id == b and "were not merged" in dead.error
        assert f"linked to HubSpot {a}" in dead.error
