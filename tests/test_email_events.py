"""Brevo e-mail events on the HubSpot contact: timeline notes and properties.

End to end through the sandboxes: the Brevo sandbox sends its marketing webhooks (delivered,
opened, click, hard bounce, unsubscribe) to the intake app in process, the worker hands them to
:class:`~connector.objects.email_events.EmailEventsSync`, which writes notes and properties to
the HubSpot sandbox. Replays, repeated opens, a crash between the note's creation and its
record, unknown e-mails, and the HubSpot calls a burst of 5,000 events costs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from store_fixtures import (  # noqa: F401 - fixtures
    fixture_db_url,
    fixture_engine,
    fixture_migrated_url,
    fixture_pg_server,
    fixture_pg_url,
    fixture_sessions,
    fixture_sqlite_url,
)
from test_event_semantics import events_env, hs_email, hs_live, settle
from test_worker import APP_URL, TOKEN, Env

from connector.brevo.webhooks import parse_brevo, parse_event
from connector.objects.email_events import (
    MARKER,
    EmailEventsSync,
    campaign_of,
    event_time,
    follow_up,
    note_ref,
    parse_item,
)
from connector.sandbox.server import BREVO_WEBHOOK_EVENTS
from connector.store import email_events as store
from connector.store import inbox
from connector.store.email_events import EventDelta
from connector.store.inbox import InboxItem

EVENTS = (*BREVO_WEBHOOK_EVENTS, "delivered", "opened", "click")
BREVO_HOOK = f"{APP_URL}/webhooks/brevo"


def subscribe(env: Env) -> None:
    """A second Brevo marketing webhook, for the e-mail events (as ``webhooks register``
    subscribes them when engagements sync)."""
    env.cli.servers.brevo.add_webhook(
        BREVO_HOOK, ("delivered", "opened", "click"), token=TOKEN, description="e-mail events"
    )


def notes_of(env: Env, hubspot_id: int) -> list[str]:
    """The bodies of the notes associated with a HubSpot contact."""
    hs = env.cli.servers.hubspot
    out = []
    for note_id, _types in hs.associations_of("contacts", hubspot_id, "notes"):
        note = hs.get_object("notes", note_id)
        assert note is not None
        out.append(str(note["hs_note_body"]))
    return out


def all_notes(env: Env) -> int:
    return len(env.cli.servers.hubspot.stores["notes"].live)


def contact(env: Env, hubspot_id: int) -> dict[str, Any]:
    props = env.cli.servers.hubspot.get_object("contacts", hubspot_id)
    assert props is not None
    return dict(props)


def handler(env: Env) -> EmailEventsSync:
    assert env.rt.email_events is not None
    return env.rt.email_events


def as_items(events: Sequence[dict[str, Any]], start: int = 1) -> list[InboxItem]:
    """Webhook events as claimed inbox items (what the worker hands the handler)."""
    now = datetime.now(UTC)
    out = []
    for n, event in enumerate(events):
        i = parse_event(event, n)
        out.append(
            InboxItem(
                start + n,
                "brevo",
                i.dedup_key,
                i.object_type,
                i.object_id,
                i.event_type,
                dict(i.payload),
                1,
                now,
                None,
            )
        )
    return out


def opened(email: str, ts: int, camp_id: int = 7, **more: Any) -> dict[str, Any]:
    return {
        "event": "opened",
        "email": email,
        "id": 1,
        "camp_id": camp_id,
        "campaign name": f"News {camp_id}",
        "ts_event": ts,
        "ts": ts,
        "tag": "",
        **more,
    }


# --- end to end ----------------------------------------------------------------------------


async def test_open_and_click_reach_the_contact_timeline_and_properties(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        subscribe(env)
        brevo = env.cli.servers.brevo
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        other = max(hs_live(env))
        brevo.simulate_delivered(email, camp_id=12, campaign_name="November news")
        brevo.simulate_open(email, camp_id=12, campaign_name="November news")
        brevo.simulate_click(
            email, camp_id=12, campaign_name="November news", url="https://example.com/x?a=1&b=2"
        )
        results = await settle(env)
        assert not any(r.failed for r in results), results

        notes = notes_of(env, hid)
        assert len(notes) == 3  # one per event kind of the campaign
        assert notes_of(env, other) == []
        joined = "\n".join(notes)
        for label in ("Delivered", "Opened", "Clicked"):
            assert f"Brevo e-mail: {label}" in joined
        assert "“November news” (campaign 12)" in joined
        assert "https://example.com/x?a=1&amp;b=2" in joined  # escaped
        assert email not in joined  # the note does not carry the address
        for kind in ("delivered", "opened", "clicked"):
            assert MARKER + note_ref(str(hid), kind, "campaign:12") in joined

        props = contact(env, hid)
        assert props["brevo_email_opens"] == "1"
        assert props["brevo_email_clicks"] == "1"
        for name in ("brevo_last_open_date", "brevo_last_click_date", "brevo_last_delivered_date"):
            assert props[name], name
        defs = env.cli.servers.hubspot.properties["contacts"]
        assert (defs["brevo_email_opens"].type, defs["brevo_last_open_date"].type) == (
            "number",
            "datetime",
        )
        assert "brevo_hard_bounced" in defs and props.get("brevo_hard_bounced") in (None, "")

        # Brevo retries the open (same content): stored once, nothing changes
        async with env.rt.sessions() as s:
            first = (
                await s.execute(sa.text("SELECT payload FROM inbox WHERE event_type = 'opened'"))
            ).scalar_one()
        payload = json.loads(first) if isinstance(first, str) else first
        retried = dict(payload)
        r = await env.client.post(
            "/webhooks/brevo", json=retried, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.json()["duplicates"] == 1
        await settle(env)
        assert len(notes_of(env, hid)) == 3
        assert contact(env, hid)["brevo_email_opens"] == "1"


async def test_unsubscribe_and_hard_bounce_keep_the_optout_and_get_a_note(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        subscribe(env)
        brevo = env.cli.servers.brevo
        first, second = sorted(hs_live(env))[:2]
        brevo.simulate_unsubscribe(hs_email(env, first), camp_id=3, campaign_name="Promo")
        brevo.simulate_hard_bounce(hs_email(env, second), camp_id=3, campaign_name="Promo")
        results = await settle(env)
        assert sum(r.counts["hubspot_opted_out"] for r in results) == 2  # connector.events
        assert contact(env, first)["brevo_optout_reason"] == "unsubscribed"
        assert contact(env, second)["brevo_optout_reason"] == "hard_bounce"
        [unsub] = notes_of(env, first)
        [bounce] = notes_of(env, second)
        assert "Brevo e-mail: Unsubscribed" in unsub and "“Promo” (campaign 3)" in unsub
        assert "Brevo e-mail: Hard bounce" in bounce and "Reason: 550 5.1.1" in bounce
        assert contact(env, second)["brevo_hard_bounced"] == "true"
        assert contact(env, first).get("brevo_hard_bounced") in (None, "")
        # nothing left over in the inbox: the copies were handled too
        async with env.rt.sessions() as s:
            assert await inbox.pending_count(s) == 0


async def test_three_opens_of_one_campaign_make_one_note_and_count_three(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        subscribe(env)
        brevo = env.cli.servers.brevo
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        start = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
        for n in range(3):
            brevo.webhook_events.engagement(
                email, "opened", camp_id=5, at=start + timedelta(hours=n)
            )
            await settle(env)  # one pass each: the note is made, then updated
        [note] = notes_of(env, hid)
        assert "3 times" in note
        assert "first 2026-11-20 09:00 UTC, last 2026-11-20 11:00 UTC" in note
        props = contact(env, hid)
        assert props["brevo_email_opens"] == "3"
        assert props["brevo_last_open_date"].startswith("2026-11-20T11:00:00")
        # another campaign: a second note, the counts add up
        brevo.webhook_events.engagement(email, "opened", camp_id=6, at=start + timedelta(days=1))
        await settle(env)
        assert len(notes_of(env, hid)) == 2
        assert contact(env, hid)["brevo_email_opens"] == "4"


async def test_transactional_opens_and_click_reach_the_timeline(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        brevo = env.cli.servers.brevo
        brevo.add_webhook(
            BREVO_HOOK,
            ("delivered", "opened", "uniqueOpened", "click"),
            token=TOKEN,
            type_="transactional",
            description="transactional e-mail events",
        )
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        message_id = await env.rt.brevo.send_email(
            sender="team@example.com",
            to=[email],
            subject="Your invoice",
            html="<p>Hello</p>",
            tags=["invoices"],
            idempotency_key="invoice-1",
        )
        hooks = brevo.webhook_events
        start = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
        assert hooks.transactional(message_id, "uniqueOpened", at=start) == 1
        hooks.transactional(message_id, "opened", at=start)
        hooks.transactional(message_id, "opened", at=start + timedelta(minutes=5))
        hooks.transactional(message_id, "click", link="https://example.com/pay", at=start)
        results = await settle(env)
        assert not any(r.failed for r in results)
        notes = notes_of(env, hid)
        assert len(notes) == 2  # opened and clicked, for the "invoices" tag
        opened_note = next(n for n in notes if "Brevo e-mail: Opened" in n)
        assert "“Your invoice” (tag invoices)" in opened_note and "2 times" in opened_note
        assert any("Link: https://example.com/pay" in n for n in notes)
        props = contact(env, hid)
        assert props["brevo_email_opens"] == "2"  # the first open is also a uniqueOpened
        assert props["brevo_email_clicks"] == "1"


# --- the handler, driven directly ----------------------------------------------------------


async def test_replayed_items_are_counted_once(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        hid = min(hs_live(env))
        email = hs_email(env, hid)
        items = as_items([opened(email, 1_790_000_000 + n) for n in range(3)])
        h = handler(env)
        first = await h.handle(items)
        assert first.counts["counted_opened"] == 3 and first.counts["notes_created"] == 1
        # the worker crashed before settling the items: they come again
        again = await h.handle(items)
        assert again.counts["replayed"] == 3 and not again.counts["counted_opened"]
        assert len(notes_of(env, hid)) == 1
        assert contact(env, hid)["brevo_email_opens"] == "3"


async def test_crash_between_note_create_and_record_makes_no_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with events_env(tmp_path) as env:
        ids = sorted(hs_live(env))
        events = [opened(hs_email(env, i), 1_790_000_000, camp_id=9) for i in ids]
        events.append({**opened(hs_email(env, ids[0]), 1_790_000_005, camp_id=9), "event": "click"})
        h = handler(env)
        hs_log = env.cli.servers.hubspot.log
        real = EmailEventsSync._record_created

        async def crash(self: EmailEventsSync, *args: Any, **kw: Any) -> None:
            raise RuntimeError("killed after the HubSpot call")

        monkeypatch.setattr(EmailEventsSync, "_record_created", crash)
        with pytest.raises(RuntimeError):
            await h.handle(as_items(events))
        assert all_notes(env) == len(ids) + 1  # HubSpot has them; the store does not know
        async with env.rt.sessions() as s:
            states = (
                await s.execute(sa.text("SELECT note_state FROM email_event_entries"))
            ).scalars()
            assert set(states) == {"creating"}

        monkeypatch.setattr(EmailEventsSync, "_record_created", real)
        creates = hs_log.count(contains="/notes/batch/create")
        retried = await h.handle(as_items(events))  # the worker's retry of the same items
        assert retried.counts["replayed"] == len(events)  # counted the first time
        assert retried.counts["notes_recovered"] == len(ids) + 1
        assert hs_log.count(contains="/notes/batch/create") == creates  # none made again
        assert all_notes(env) == len(ids) + 1
        for i in ids:
            assert len(notes_of(env, i)) == (2 if i == ids[0] else 1)
        async with env.rt.sessions() as s:
            rows = (
                await s.execute(sa.text("SELECT note_state, note_id FROM email_event_entries"))
            ).all()
        assert {r[0] for r in rows} == {"created"} and all(r[1] for r in rows)


async def test_crash_before_the_create_call_creates_the_note_on_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with events_env(tmp_path) as env:
        hid = min(hs_live(env))
        h = handler(env)

        async def down(*args: Any, **kw: Any) -> Any:
            raise ConnectionError("HubSpot unreachable")

        monkeypatch.setattr(h.hubspot, "batch_create_notes", down)
        items = as_items([opened(hs_email(env, hid), 1_790_000_000)])
        with pytest.raises(ConnectionError):
            await h.handle(items)
        monkeypatch.undo()
        result = await h.handle(items)
        assert result.counts["notes_recovered"] == 0 and result.counts["notes_created"] == 1
        assert len(notes_of(env, hid)) == 1


async def test_unknown_email_is_counted_not_an_error(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        hid = min(hs_live(env))
        items = as_items(
            [opened("nobody@example.org", 1_790_000_000), opened(hs_email(env, hid), 1_790_000_001)]
        )
        result = await handler(env).handle(items)
        assert result.counts["skipped_no_contact"] == 1
        assert result.counts["counted_opened"] == 1
        assert all_notes(env) == 1


async def test_timeline_none_writes_properties_only(tmp_path: Path) -> None:
    async with events_env(tmp_path) as env:
        hid = min(hs_live(env))
        settings_ = env.settings.model_copy(
            update={
                "sync": env.settings.sync.model_copy(
                    update={
                        "email_events": env.settings.sync.email_events.model_copy(
                            update={"timeline": "none"}
                        )
                    }
                )
            }
        )
        h = EmailEventsSync(settings_, env.rt.hubspot, env.rt.sessions)
        await h.handle(as_items([opened(hs_email(env, hid), 1_790_000_000)]))
        assert all_notes(env) == 0
        assert contact(env, hid)["brevo_email_opens"] == "1"


async def test_5000_open_events_cost_a_few_calls_per_hundred(tmp_path: Path) -> None:
    contacts, campaigns = 250, 20
    async with events_env(tmp_path, hubspot=contacts) as env:
        ids = sorted(hs_live(env))
        assert len(ids) == contacts
        emails = {i: hs_email(env, i) for i in ids}
        events = [
            opened(emails[i], 1_790_000_000 + c, camp_id=100 + c)
            for c in range(campaigns)
            for i in ids
        ]
        assert len(events) == 5000
        async with env.rt.sessions() as s, s.begin():
            stored = await inbox.enqueue(s, [parse_event(e, n) for n, e in enumerate(events)])
        assert stored == 5000
        # HubSpot's webhooks off: the sandbox would report our property writes back (a real
        # app subscribes only to the mapped properties), and their reads are the contact sync's
        env.cli.servers.hubspot.webhook_target_url = None
        hs_log = env.cli.servers.hubspot.log
        hs_log.clear()
        while True:
            result = await env.daemon.drain_inbox()
            if not result.claimed:
                break
            assert not result.failed, result
        calls = len(hs_log.calls)
        k = 2
        assert calls <= math.ceil(5000 / 100) * k, calls
        assert hs_log.count(contains="/notes/batch/create") == 50  # 5,000 notes, 100 a call
        assert all_notes(env) == 5000
        assert contact(env, ids[0])["brevo_email_opens"] == str(campaigns)
        print(f"5,000 open events: {calls} HubSpot calls")


# --- pure parts ------------------------------------------------------------------------------


def test_transactional_and_marketing_shapes() -> None:
    marketing = parse_brevo(
        json.dumps(
            [
                opened("A@X.io", 1_790_000_000),
                {"event": "unsubscribed", "email": "a@x.io", "camp_id": 7, "ts_event": 1},
            ]
        ).encode()
    )
    assert [i.object_type for i in marketing] == ["email_events", "contacts"]
    transactional = {
        "event": "unique_opened",
        "email": "a@x.io",
        "id": 3,
        "message-id": "<m1@smtp-relay.mailin.fr>",
        "subject": "Your invoice",
        "template_id": 42,
        "ts_epoch": 1_790_000_000_123,
        "tag": "",
    }
    [item] = as_items([transactional])
    assert item.object_type == "email_events"
    ev = parse_item(item)
    assert ev is not None
    assert (ev.kind, ev.unique, ev.campaign, ev.campaign_name) == (
        "opened",
        True,
        "template:42",
        "Your invoice",
    )
    assert ev.at == datetime.fromtimestamp(1_790_000_000.123, UTC)
    click = {"event": "click", "email": "a@x.io", "link": "https://e.x/1", "tags": ["welcome"]}
    ev2 = parse_item(as_items([click])[0])
    assert ev2 is not None and (ev2.kind, ev2.campaign, ev2.detail) == (
        "clicked",
        "tag:welcome",
        "https://e.x/1",
    )
    assert campaign_of({}) == ("transactional", None)
    fallback = datetime(2026, 1, 1, tzinfo=UTC)
    assert event_time({"ts_event": "x"}, fallback) == fallback
    # only settled opt-outs are copied to the e-mail events handler
    [unsub] = as_items([{"event": "hard_bounce", "email": "a@x.io", "camp_id": 1, "ts": 5}])
    copy = follow_up(unsub)
    assert copy is not None and copy.object_type == "email_events"
    assert copy.dedup_key == "ee:" + unsub.dedup_key
    assert follow_up(as_items([{"event": "contactUpdated", "email": "a@x.io"}])[0]) is None


_T0 = datetime(2026, 11, 1, tzinfo=UTC)


@st.composite
def _deltas(draw: st.DrawFn) -> list[EventDelta]:
    n = draw(st.integers(1, 12))
    out = []
    for _ in range(n):
        at = _T0 + timedelta(minutes=draw(st.integers(0, 1000)))
        unique = draw(st.booleans())
        out.append(
            EventDelta(
                hubspot_id=draw(st.sampled_from(["1", "2"])),
                kind=draw(st.sampled_from(["opened", "clicked"])),
                campaign=draw(st.sampled_from(["campaign:1", "campaign:2"])),
                campaign_name=None,
                count=0 if unique else 1,
                uniques=1 if unique else 0,
                first_at=at,
                last_at=at,
            )
        )
    return out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(deltas=_deltas(), cut=st.integers(0, 12), seed=st.randoms(use_true_random=False))
async def test_counts_do_not_depend_on_order_or_batching(
    sessions: async_sessionmaker[AsyncSession], deltas: list[EventDelta], cut: int, seed: Any
) -> None:
    """However the events are split into batches and ordered, the entries come out alike."""

    async def run(batches: list[list[EventDelta]]) -> set[tuple[Any, ...]]:
        async with sessions() as s, s.begin():
            await s.execute(sa.text("DELETE FROM email_event_entries"))
        for batch in batches:
            async with sessions() as s, s.begin():
                await store.apply_deltas(s, batch, note_wanted={"opened": True}, now=_T0)
        async with sessions() as s:
            rows = await store.entries_of(s, ["1", "2"])
        return {
            (e.hubspot_id, e.kind, e.campaign, e.count, e.uniques, e.first_at, e.last_at)
            for e in rows
        }

    shuffled = list(deltas)
    seed.shuffle(shuffled)
    one = await run([deltas])
    split = await run([shuffled[:cut], shuffled[cut:]])
    assert one == split
    for key in {(d.hubspot_id, d.kind, d.campaign) for d in deltas}:
        mine = [d for d in deltas if (d.hubspot_id, d.kind, d.campaign) == key]
        assert (
            key[0],
            key[1],
            key[2],
            sum(d.count for d in mine),
            sum(d.uniques for d in mine),
            min(d.first_at for d in mine),
            max(d.last_at for d in mine),
        ) in one


async def test_store_note_states_and_pending_contacts(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The store's queries on both databases: notes none → creating → created, stale counts,
    pending contacts cleared only when unchanged since they were read, seen keys."""
    t1 = _T0 + timedelta(hours=1)

    def delta(hs: str, kind: str, n: int = 1, unique: bool = False) -> EventDelta:
        return EventDelta(
            hs, kind, "campaign:1", "News", 0 if unique else n, n if unique else 0, _T0, t1
        )

    async with sessions() as s, s.begin():
        assert await store.unseen(s, ["a", "b", "a"]) == ["a", "b"]
        await store.mark_seen(s, ["a"], _T0)
        assert await store.unseen(s, ["a", "b"]) == ["b"]
        created, updated = await store.apply_deltas(
            s,
            [delta("1", "opened"), delta("1", "opened", unique=True), delta("2", "delivered")],
            note_wanted={"opened": True},
            now=_T0,
        )
        assert (created, updated) == (2, 0)
    async with sessions() as s, s.begin():
        none = await store.with_note_state(s, "none", max_attempts=5, limit=10)
        assert [(e.hubspot_id, e.kind, e.count, e.uniques, e.shown_count) for e in none] == [
            ("1", "opened", 1, 1, 1)
        ]
        off = await store.with_note_state(s, "off", max_attempts=5, limit=10)
        assert [e.kind for e in off] == ["delivered"]
        await store.set_note_state(s, [none[0].id], "creating", _T0)
        await store.record_notes(s, {none[0].id: ("900", 1)}, _T0)
        assert await store.stale_notes(s, limit=10) == []
        await store.apply_deltas(s, [delta("1", "opened", 2)], note_wanted={}, now=t1)
        [stale] = await store.stale_notes(s, limit=10)
        assert (stale.note_id, stale.shown_count, stale.note_count) == ("900", 3, 1)
        await store.set_note_counts(s, {stale.id: 3}, t1)
        assert await store.stale_notes(s, limit=10) == []
        await store.note_failed(s, [off[0].id], t1)
        assert sorted(await store.pending_contacts(s, limit=10)) == ["1", "2"]
        await store.clear_pending(s, ["1", "2"], read_at=_T0)  # "1" changed since: kept
        assert await store.pending_contacts(s, limit=10) == ["1"]
        await store.clear_pending(s, ["1"], read_at=t1)
        assert await store.pending_contacts(s, limit=10) == []
        assert await store.purge_seen(s, t1) == 1
