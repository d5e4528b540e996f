"""Webhook intake end to end: ``httpx.ASGITransport`` → the app → a migrated SQLite/PostgreSQL.

Every request is one transaction: all its events are in the inbox before the 200, or none
(400 malformed, 401 unauthenticated, 413 oversized, 429 database unavailable). Redeliveries
are stored once. A Hypothesis fuzz sends arbitrary bodies and headers, signed and unsigned, and
checks that the answer is never a 5xx and that a request stores its whole batch or nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from store_fixtures import (  # noqa: F401 - fixtures
    fixture_db_url,
    fixture_engine,
    fixture_migrated_url,
    fixture_pg_server,
    fixture_pg_url,
    fixture_sessions,
    fixture_sqlite_url,
)

from connector.brevo.webhooks import parse_brevo
from connector.config import ServerSettings, WebhookSettings
from connector.hubspot.webhooks import PayloadError, parse_hubspot, v3_signature
from connector.log import configure
from connector.store import db, inbox
from connector.store.models import InboxItem as InboxRow
from connector.web import GroupWriter, create_web_app

_SERVER_KEYS = frozenset(ServerSettings.model_fields)


def _split(options: dict[str, Any]) -> tuple[WebhookSettings, ServerSettings]:
    """``WebhookSettings`` and ``ServerSettings`` from one set of keyword overrides."""
    server = {k: v for k, v in options.items() if k in _SERVER_KEYS}
    hooks = {k: v for k, v in options.items() if k not in _SERVER_KEYS}
    return WebhookSettings(**hooks), ServerSettings(**server)


SECRET = "hubspot-client-secret-0123"
TOKEN = "brevo-webhook-token-0123"
NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
NOW_MS = str(int(NOW.timestamp() * 1000))
HUBSPOT_URL = "http://testserver/webhooks/hubspot"


def hs_event(i: int, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "objectId": 1000 + i,
        "propertyName": "lifecyclestage",
        "propertyValue": "customer",
        "changeSource": "CRM_UI",
        "sourceId": "userId:45678",
        "eventId": 3_816_279_340 + i,
        "subscriptionId": 25,
        "portalId": 33,
        "appId": 1_160_452,
        "occurredAt": 1_790_000_000_000 + i,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
    }
    event.update(fields)
    return event


def br_event(i: int, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "unsubscribed",
        "email": f"User{i}@Example.COM",
        "id": 77,
        "date": "2026-11-20 13:00:00",
        "ts": 1_790_000_000 + i,
        "ts_event": 1_790_000_000 + i,
        "camp_id": 12,
        "campaign name": "November news",
        "tag": "",
        "api_key_name": "",
    }
    event.update(fields)
    return event


def signed(body: bytes, ts: str = NOW_MS) -> dict[str, str]:
    return {
        "X-HubSpot-Signature-v3": v3_signature(SECRET, "POST", HUBSPOT_URL, body, ts),
        "X-HubSpot-Request-Timestamp": ts,
        "Content-Type": "application/json",
    }


BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def encode(data: Any) -> bytes:
    return data if isinstance(data, bytes) else json.dumps(data).encode()


class Intake:
    """The app over ASGITransport, plus a look into the inbox table."""

    def __init__(self, client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]):
        self.client = client
        self.sessions = sessions

    async def hubspot(self, data: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        body = encode(data)
        return await self.client.post(
            "/webhooks/hubspot", content=body, headers=signed(body) if headers is None else headers
        )

    async def brevo(self, data: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        body = encode(data)
        return await self.client.post(
            "/webhooks/brevo", content=body, headers=BEARER if headers is None else headers
        )

    async def rows(self) -> list[InboxRow]:
        async with self.sessions() as s:
            return list((await s.scalars(sa.select(InboxRow).order_by(InboxRow.id))).all())

    async def keys(self) -> set[str]:
        async with self.sessions() as s:
            return set((await s.scalars(sa.select(InboxRow.dedup_key))).all())

    async def count(self) -> int:
        async with self.sessions() as s:
            return int(await s.scalar(sa.select(sa.func.count()).select_from(InboxRow)) or 0)


@asynccontextmanager
async def open_intake(
    sessions: async_sessionmaker[AsyncSession], **options: Any
) -> AsyncIterator[Intake]:
    log_webhooks = options.pop("log_webhooks", False)
    app = create_web_app(
        sessions=sessions,
        hubspot_secret=SECRET,
        brevo_token=TOKEN,
        settings=_split(options)[0],
        server=_split(options)[1],
        clock=lambda: NOW,
        log_webhooks=log_webhooks,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Intake(client, sessions)


@pytest.fixture
async def intake(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Intake]:
    async with open_intake(sessions) as i:
        yield i


# --- parsing (no database) ---------------------------------------------------------------------


def test_hubspot_event_becomes_an_inbox_item() -> None:
    event = hs_event(0)
    [item] = parse_hubspot(encode([event]))
    assert item.source == "hubspot"
    assert item.object_type == "contacts"
    assert item.object_id == "1000"
    assert item.event_type == "contact.propertyChange"
    assert item.dedup_key == "hs:25:3816279340:1000:1790000000000"
    assert item.payload == event  # changeSource and sourceId travel as echo hints


def test_hubspot_event_type_fallback_and_object_types() -> None:
    legacy = {k: v for k, v in hs_event(1).items() if k != "subscriptionType"}
    legacy["eventType"] = "company.creation"
    generic = hs_event(2, subscriptionType="object.propertyChange", objectTypeId="0-3")
    custom = hs_event(3, subscriptionType="object.creation", objectTypeId="2-123456")
    items = parse_hubspot(encode([legacy, generic, custom]))
    assert [(i.object_type, i.event_type) for i in items] == [
        ("companies", "company.creation"),
        ("deals", "object.propertyChange"),
        ("2-123456", "object.creation"),
    ]


def test_hubspot_merge_association_and_privacy_events() -> None:
    merge = hs_event(
        0,
        subscriptionType="contact.merge",
        primaryObjectId=1000,
        mergedObjectIds=[2000, 2001],
        newObjectId=3000,
        numberOfPropertiesMoved=4,
    )
    no_object = {k: v for k, v in merge.items() if k != "objectId"}
    association = {
        k: v for k, v in hs_event(1, subscriptionType="contact.associationChange").items()
    }
    del association["objectId"]
    association.update(
        associationType="COMPANY_TO_CONTACT",
        fromObjectId=55,
        toObjectId=1001,
        associationRemoved=False,
        isPrimaryAssociation=True,
    )
    generic_assoc = hs_event(2, subscriptionType="object.associationChange")
    del generic_assoc["objectId"]
    generic_assoc.update(fromObjectTypeId="0-3", toObjectTypeId="0-1", fromObjectId=7, toObjectId=8)
    privacy = hs_event(3, subscriptionType="contact.privacyDeletion", subscriptionId=26)
    deletion = hs_event(3, subscriptionType="contact.deletion", subscriptionId=27)
    items = parse_hubspot(encode([merge, no_object, association, generic_assoc, privacy, deletion]))
    summary = [(i.object_type, i.object_id, i.event_type) for i in items]
    assert summary == [
        ("contacts", "1000", "contact.merge"),
        ("contacts", "1000", "contact.merge"),
        ("companies", "55", "contact.associationChange"),
        ("deals", "7", "object.associationChange"),
        ("contacts", "1003", "contact.privacyDeletion"),
        ("contacts", "1003", "contact.deletion"),
    ]
    assert items[0].payload["mergedObjectIds"] == [2000, 2001]
    assert items[2].dedup_key == "hs:25:3816279341:55-1001:1790000000001"
    assert len({i.dedup_key for i in items[4:]}) == 2  # both are kept, matched later by objectId


@pytest.mark.parametrize(
    "bad",
    [
        {"mergedObjectIds": "2000"},
        {"mergedObjectIds": [True]},
        {"primaryObjectId": -1},
    ],
)
def test_hubspot_merge_with_bad_ids_is_malformed(bad: dict[str, Any]) -> None:
    with pytest.raises(PayloadError):
        parse_hubspot(encode([hs_event(0, subscriptionType="contact.merge", **bad)]))


def test_brevo_events_single_and_batched() -> None:
    one = br_event(0, event="contactUpdated", api_key_name="hubspot-sync")
    [item] = parse_brevo(encode(one))
    assert (item.source, item.object_type, item.object_id) == (
        "brevo",
        "contacts",
        "user0@example.com",
    )
    assert item.event_type == "contactUpdated"
    assert item.payload["api_key_name"] == "hubspot-sync"
    by_id = {"event": "contactDeleted", "contact_id": 42, "id": 9, "ts_event": 1}
    batch = parse_brevo(encode([br_event(1), by_id]))
    assert [i.object_id for i in batch] == ["user1@example.com", "42"]  # `id` is the webhook's


def test_brevo_dedup_key_is_stable() -> None:
    event = br_event(0, list_id=[3, 4])
    reordered = dict(reversed(list(event.items())))
    shouted = {**event, "email": "  USER0@EXAMPLE.COM "}
    keys = {parse_brevo(encode(e))[0].dedup_key for e in (event, reordered, shouted)}
    assert len(keys) == 1
    assert parse_brevo(encode({**event, "ts_event": 5}))[0].dedup_key not in keys
    assert parse_brevo(encode({**event, "camp_id": 13}))[0].dedup_key not in keys


# --- storing -----------------------------------------------------------------------------------


async def test_hubspot_batch_of_100_is_stored_once(intake: Intake) -> None:
    events = [hs_event(i) for i in range(100)]
    r = await intake.hubspot(events)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 100, "stored": 100, "duplicates": 0}
    rows = await intake.rows()
    assert len(rows) == 100
    first = rows[0]
    assert (first.source, first.object_type, first.object_id) == ("hubspot", "contacts", "1000")
    assert first.event_type == "contact.propertyChange"
    assert first.status == "pending"
    assert first.payload == events[0]
    assert first.dedup_key == "hs:25:3816279340:1000:1790000000000"

    replay = [dict(e, attemptNumber=1) for e in events]  # HubSpot's retry of the same batch
    again = await intake.hubspot(replay)
    assert again.json() == {"received": 100, "stored": 0, "duplicates": 100}
    assert await intake.count() == 100


async def test_hubspot_event_id_alone_does_not_deduplicate(intake: Intake) -> None:
    base = hs_event(0)
    events = [
        base,
        dict(base, objectId=2),
        dict(base, subscriptionId=26),
        dict(base, occurredAt=base["occurredAt"] + 1),
        dict(base, attemptNumber=3),  # the same event again
    ]
    r = await intake.hubspot(events)
    assert r.json() == {"received": 5, "stored": 4, "duplicates": 1}
    assert await intake.count() == 4


async def test_brevo_batch_of_100_is_stored_once(intake: Intake) -> None:
    events = [br_event(i) for i in range(100)]
    r = await intake.brevo(events)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 100, "stored": 100, "duplicates": 0}
    rows = await intake.rows()
    assert [row.object_id for row in rows[:2]] == ["user0@example.com", "user1@example.com"]
    assert {row.event_type for row in rows} == {"unsubscribed"}
    assert rows[0].payload == events[0]
    again = await intake.brevo(events)
    assert again.json() == {"received": 100, "stored": 0, "duplicates": 100}
    single = await intake.brevo(events[7])  # a non-batched webhook delivering one of them
    assert single.json() == {"received": 1, "stored": 0, "duplicates": 1}
    assert await intake.count() == 100


NOT_JSON: list[bytes] = [
    b"",
    b"{",
    b"[1,]",
    b"\xff\xfe[]",
    b"[NaN]",
    b"[1e400]",
    b'["\\ud800"]',
    b'["a\\u0000b"]',
    b"[" * 50 + b"]" * 50,
]
HUBSPOT_BAD: list[Any] = [
    {"not": "an array"},
    ["event"],
    [hs_event(0, objectId=True)],
    [hs_event(0, objectId=-5)],
    [hs_event(0, objectId="1 OR 1=1")],
    [hs_event(0, occurredAt="yesterday")],
    [hs_event(0, occurredAt=1.5)],
    [hs_event(0, subscriptionType="nonsense")],
    [hs_event(0, subscriptionType="object.creation")],  # no objectTypeId
    [{k: v for k, v in hs_event(0).items() if k != "eventId"}],
    [{k: v for k, v in hs_event(0).items() if k != "objectId"}],
    [hs_event(i) for i in range(99)] + [hs_event(99, subscriptionId=None)],
]
BREVO_BAD: list[Any] = [
    "unsubscribed",
    [1, 2],
    [br_event(0, event="")],
    [br_event(0, event=None)],
    [br_event(0, email=42)],
    [br_event(0, email="not an email")],
    [{k: v for k, v in br_event(0).items() if k != "email"}],  # no contact at all
    [br_event(0, email=None, contact_id="x")],
    [br_event(i) for i in range(99)] + [br_event(99, email="a b@c")],
]


async def test_malformed_bodies_are_400_and_store_nothing(intake: Intake) -> None:
    for body in NOT_JSON + [encode(b) for b in HUBSPOT_BAD]:
        r = await intake.hubspot(body)
        assert r.status_code == 400, (body[:80], r.text)
        assert r.json()["error"] == "malformed request"
    for body in NOT_JSON + [encode(b) for b in BREVO_BAD]:
        r = await intake.brevo(body)
        assert r.status_code == 400, (body[:80], r.text)
    assert await intake.count() == 0


async def test_unauthenticated_bodies_are_never_parsed_or_stored(intake: Intake) -> None:
    r = await intake.hubspot([hs_event(0)], headers=signed(b"[]"))
    assert r.status_code == 401
    r = await intake.brevo(b"{", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401  # 401 before 400: nothing is said about the body
    assert await intake.count() == 0


async def test_oversized_bodies_are_413_and_store_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with open_intake(sessions, max_body_bytes=4096) as small:
        hs_body = encode([hs_event(i) for i in range(40)])
        br_body = encode([br_event(i) for i in range(40)])
        assert len(hs_body) > 4096 and len(br_body) > 4096
        assert (await small.hubspot(hs_body)).status_code == 413
        assert (await small.brevo(br_body)).status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for start in range(0, len(br_body), 1000):
                yield br_body[start : start + 1000]

        r = await small.client.post("/webhooks/brevo", content=chunks(), headers=BEARER)
        assert r.status_code == 413
        assert "content-length" not in r.request.headers
        assert await small.count() == 0
        fits = await small.brevo([br_event(i) for i in range(5)])
        assert fits.status_code == 200


async def test_database_failure_mid_batch_is_429_and_stores_nothing(
    intake: Intake, engine: AsyncEngine
) -> None:
    events = [br_event(i) for i in range(600)]  # two INSERT statements: 500 + 100 rows
    inserts = 0

    def fail_second_insert(*args: Any) -> None:
        nonlocal inserts
        statement = str(args[2])
        if statement.lstrip().upper().startswith("INSERT INTO INBOX"):
            inserts += 1
            if inserts == 2:
                raise OperationalError(statement, None, ConnectionError("server closed"))

    event.listen(engine.sync_engine, "before_cursor_execute", fail_second_insert)
    try:
        r = await intake.brevo(events)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", fail_second_insert)
    assert inserts == 2
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "60"
    assert await intake.count() == 0  # the first 500 were rolled back with the rest

    retried = await intake.brevo(events)
    assert retried.json() == {"received": 600, "stored": 600, "duplicates": 0}


async def test_group_commit_stores_concurrent_requests_and_isolates_a_bad_one(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests arriving together share a transaction; one whose insert fails does not take
    the others down: they are written again on their own, and only it gets the error."""
    real_enqueue = inbox.enqueue
    transactions: list[int] = []

    async def enqueue(session: AsyncSession, items: Any, **kwargs: Any) -> int:
        if any(i.dedup_key.endswith(":poison") for i in items):
            raise OperationalError("INSERT INTO inbox", None, ConnectionError("bad row"))
        transactions.append(id(session))
        return await real_enqueue(session, items, **kwargs)

    monkeypatch.setattr(inbox, "enqueue", enqueue)
    writer = GroupWriter(sessions, lambda: NOW)

    def batch(tag: str, n: int = 3) -> list[inbox.InboxInput]:
        return [
            inbox.InboxInput("hubspot", f"k{tag}{i}", "contacts", str(i), "contact.creation")
            for i in range(n)
        ]

    poison = [*batch("p", 1), inbox.InboxInput("hubspot", "x:poison", "contacts", "9", "x")]
    results = await asyncio.gather(
        writer.write(batch("a")),
        writer.write(batch("b")),
        writer.write(poison),
        writer.write(batch("a")),  # a redelivery in the same group: stored once
        return_exceptions=True,
    )
    assert results[0] == 3 and results[1] == 3 and results[3] == 0
    assert isinstance(results[2], OperationalError)
    async with sessions() as s:
        keys = set((await s.execute(sa.text("SELECT dedup_key FROM inbox"))).scalars())
    assert keys == {"ka0", "ka1", "ka2", "kb0", "kb1", "kb2"}  # nothing of the bad request

    transactions.clear()
    together = await asyncio.gather(writer.write(batch("c")), writer.write(batch("d")))
    assert together == [3, 3]
    assert len(set(transactions)) == 1  # both requests in one transaction


async def test_slow_database_is_429_in_time(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hang(*args: Any, **kwargs: Any) -> int:
        await asyncio.sleep(30)
        return 0

    monkeypatch.setattr(inbox, "enqueue", hang)
    async with open_intake(sessions, db_timeout_seconds=0.05, retry_after_seconds=7) as slow:
        r = await slow.hubspot([hs_event(0)])
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "7"


async def test_an_unexpected_error_is_429_not_500(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: bytes) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr("connector.web.parse_brevo", broken)
    r = await intake.brevo([br_event(0)])
    assert r.status_code == 429  # Brevo would drop the event on a 5xx
    assert "Retry-After" in r.headers
    assert await intake.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}/no/such/dir/state.db",
        "postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=1",
    ],
    ids=["sqlite", "postgres"],
)
async def test_unreachable_database_is_429_and_unhealthy(url: str, tmp_path: Path) -> None:
    engine = db.create_engine(url.format(tmp=tmp_path))
    try:
        async with open_intake(db.session_factory(engine)) as down:
            r = await down.hubspot([hs_event(0)])
            assert r.status_code == 429, r.text
            assert r.headers["Retry-After"] == "60"
            r = await down.brevo([br_event(0)])
            assert r.status_code == 429
            health = await down.client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "unavailable"
    finally:
        await engine.dispose()
        # aiosqlite's worker thread of a failed connect reports back to the loop a moment
        # later; let it, before the test's loop closes.
        for _ in range(100):
            if not any("_connection_worker" in t.name for t in threading.enumerate()):
                break
            await asyncio.sleep(0.01)


async def test_healthz_and_metrics(intake: Intake) -> None:
    health = await intake.client.get("/healthz")
    assert health.status_code == 200
    # no pull yet, but the app has just started: not stale (tests/test_web_ops.py has more)
    assert health.json()["status"] == "starting" and health.json()["database"] == "up"
    await intake.hubspot([hs_event(i) for i in range(3)])
    await intake.hubspot([hs_event(0)])
    await intake.brevo([br_event(0)], headers={"Authorization": "Bearer nope"})
    await intake.brevo(b"{")
    text = (await intake.client.get("/metrics")).text
    for line in (
        'connector_webhook_events_received_total{source="hubspot"} 4.0',
        'connector_webhook_events_stored_total{source="hubspot"} 3.0',
        'connector_webhook_events_duplicate_total{source="hubspot"} 1.0',
        'connector_webhook_requests_rejected_total{reason="auth_mismatch",source="brevo"} 1.0',
        'connector_webhook_requests_rejected_total{reason="malformed",source="brevo"} 1.0',
        'connector_webhook_request_duration_seconds_count{source="hubspot"} 2.0',
    ):
        assert line in text, line
    assert 'connector_webhook_last_event_timestamp_seconds{source="hubspot"}' in text


async def test_logs_hold_no_secrets_and_payloads_only_when_asked(
    sqlite_url: str,
) -> None:
    db.upgrade(sqlite_url)
    engine = db.create_engine(sqlite_url)
    out = io.StringIO()
    configure(fmt="json", stream=out)
    try:
        sessions = db.session_factory(engine)
        async with open_intake(sessions) as quiet:
            await quiet.brevo([br_event(0)])
            await quiet.hubspot([hs_event(0)], headers={"X-HubSpot-Signature-v3": SECRET})
        assert '"webhook.accepted"' in out.getvalue()
        assert '"webhook.payload"' not in out.getvalue()
        async with open_intake(sessions, log_webhooks=True) as loud:
            await loud.brevo([br_event(1)])
        logged = out.getvalue()
        assert '"webhook.payload"' in logged
        assert "U***@Example.COM" in logged  # masked: logging.log_emails is off
        assert "user1@example.com" not in logged.lower()
        assert SECRET not in logged and TOKEN not in logged
    finally:
        structlog.reset_defaults()
        await engine.dispose()


# --- fuzz --------------------------------------------------------------------------------------

_ids = st.one_of(
    st.integers(0, 2**63 - 1),
    st.integers(0, 10**6),
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    st.none(),
    st.booleans(),
    st.integers(-5, -1),
    st.text(max_size=4),
)
_types = st.one_of(
    st.sampled_from(
        [
            "contact.creation",
            "contact.propertyChange",
            "contact.merge",
            "contact.associationChange",
            "contact.privacyDeletion",
            "object.creation",
            "object.associationChange",
            "deal.deletion",
        ]
    ),
    st.text(max_size=12),
)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def _hubspot_event(draw: st.DrawFn) -> Any:
    event: dict[str, Any] = {
        "eventId": draw(_ids),
        "subscriptionId": draw(_ids),
        "occurredAt": draw(_ids),
        "subscriptionType": draw(_types),
    }
    for key in ("objectId", "fromObjectId", "toObjectId", "primaryObjectId"):
        if draw(st.booleans()):
            event[key] = draw(_ids)
    for key in ("objectTypeId", "fromObjectTypeId"):
        if draw(st.booleans()):
            event[key] = draw(st.sampled_from(["0-1", "0-2", "2-99", "x", ""]))
    if draw(st.booleans()):
        event["mergedObjectIds"] = draw(st.lists(_ids, max_size=3))
    if draw(st.booleans()):
        event["extra"] = draw(_json)
    return event


@st.composite
def _brevo_event(draw: st.DrawFn) -> Any:
    event: dict[str, Any] = {
        "event": draw(st.sampled_from(["unsubscribed", "hardBounce", "listAddition", "", "x y"])),
    }
    if draw(st.booleans()):
        event["email"] = draw(
            st.one_of(
                st.emails(), st.sampled_from(["A@B.C", "no-at", ""]), st.none(), st.integers()
            )
        )
    if draw(st.booleans()):
        event["contact_id"] = draw(_ids)
    for key in ("ts_event", "camp_id", "list_id", "message-id", "api_key_name"):
        if draw(st.booleans()):
            event[key] = draw(_json)
    return event


_bodies = st.one_of(
    st.binary(max_size=64),
    _json.map(lambda v: json.dumps(v).encode()),
    st.lists(_hubspot_event(), max_size=4).map(lambda v: json.dumps(v).encode()),
    st.lists(_brevo_event(), max_size=4).map(lambda v: json.dumps(v).encode()),
    _brevo_event().map(lambda v: json.dumps(v).encode()),
    st.integers(4000, 6000).map(lambda n: b"[" + b" " * n + b"]"),
    st.lists(st.integers(0, 50).map(hs_event), max_size=5).map(encode),
    st.lists(st.integers(0, 50).map(br_event), max_size=5).map(encode),
)
_header_names = st.one_of(
    st.sampled_from(
        [
            "authorization",
            "x-hubspot-signature",
            "x-hubspot-signature-version",
            "x-hubspot-signature-v3",
            "x-hubspot-request-timestamp",
            "x-forwarded-host",
            "x-forwarded-proto",
            "content-type",
        ]
    ),
    st.from_regex(r"x-[a-z]{1,10}", fullmatch=True),
)
_header_values = st.one_of(
    st.sampled_from(["v1", "v2", "v3", NOW_MS, "Bearer " + TOKEN, "Basic Og==", ""]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    source = draw(st.sampled_from(["hubspot", "brevo"]))
    body = draw(_bodies)
    headers = draw(st.dictionaries(_header_names, _header_values, max_size=4))
    auth = draw(st.sampled_from(["valid", "valid", "none"]))
    if auth == "valid":
        headers.update(signed(body) if source == "hubspot" else BEARER)
    return source, body, headers


def test_fuzz_never_5xx_and_all_or_nothing(migrated_url: str) -> None:
    with asyncio.Runner() as runner:
        engine = db.create_engine(migrated_url)
        sessions = db.session_factory(engine)
        opened = open_intake(sessions, max_body_bytes=4096)
        intake = runner.run(opened.__aenter__())
        parsers: dict[str, Callable[[bytes], Any]] = {
            "hubspot": parse_hubspot,
            "brevo": parse_brevo,
        }
        seen: Counter[int] = Counter()

        async def one(source: str, body: bytes, headers: dict[str, str]) -> None:
            before = await intake.keys()
            r = await intake.client.post(f"/webhooks/{source}", content=body, headers=headers)
            after = await intake.keys()
            assert r.status_code in (200, 400, 401, 413), (r.status_code, r.text)
            seen[r.status_code] += 1
            if r.status_code != 200:
                assert after == before
                return
            expected = {item.dedup_key for item in parsers[source](body)}
            assert after - before == expected - before
            assert after >= before
            assert r.json()["stored"] == len(expected - before)
            seen[-1] += len(expected - before)

        @settings(
            max_examples=400,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=_requests())
        def check(case: tuple[str, bytes, dict[str, str]]) -> None:
            runner.run(one(*case))

        try:
            check()
            assert seen[200] and seen[400] and seen[401] and seen[-1], seen  # every path taken
        finally:
            runner.run(opened.__aexit__(None, None, None))
            runner.run(engine.dispose())
