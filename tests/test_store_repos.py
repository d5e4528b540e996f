"""The store's table-family modules: links + ledger, cursors, inbox, runs, dead letters, skipped.

Database tests run on SQLite and PostgreSQL; the cursor rules are pure and property-tested.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from store_fixtures import BACKENDS, PgServer, fixture_pg_server  # noqa: F401 - fixture

from connector.errors import StoreError, register_secret
from connector.store import db, deadletters, inbox, runs, skipped
from connector.store.cursors import (
    Cursor,
    advance,
    get_cursor,
    id_order,
    is_seen_at_boundary,
    save_cursor,
    window,
)
from connector.store.links import (
    BaseEntry,
    LinkConflict,
    LinkRecord,
    MoveResult,
    PairWrite,
    count_links,
    delete_bases,
    delete_link,
    iter_links,
    load_links,
    move_hubspot_id,
    record_bases,
    save_pairs,
    upsert_link,
)
from connector.store.models import Base, FieldState

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


# One migrated database per backend for the whole module (migrating per test would cost more
# than the tests); every test starts from empty tables.


@pytest.fixture(scope="module", params=BACKENDS, name="repo_db_url")
def fixture_repo_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('repos') / 'state.db'}"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.create_database()
    db.upgrade(url)
    yield url
    if request.param != "sqlite":
        server.drop_database(url)


@pytest.fixture(name="engine")
async def fixture_engine(repo_db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = db.create_engine(repo_db_url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with eng.begin() as conn:
        if eng.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        else:
            for table in tables:
                await conn.exec_driver_sql(f"DELETE FROM {table}")
    yield eng
    await eng.dispose()


@pytest.fixture(name="sessions")
def fixture_sessions(engine: AsyncEngine) -> Sessions:
    return db.session_factory(engine)


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def entry(value: str, origin: Any = "hubspot", written_to: Any = "brevo") -> BaseEntry:
    return BaseEntry(h(value), origin, written_to, T0)


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement sent to the database meanwhile (transaction control left out)."""
    sent: list[str] = []

    def listener(*args: Any) -> None:
        statement: str = args[2]
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)


# --- links and the ledger ------------------------------------------------------------------


async def test_ledger_round_trip(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        link_id = await upsert_link(
            s, "contact", hubspot_id="101", brevo_id="9", identity_key="ann@example.com"
        )
        await record_bases(s, link_id, {"email": entry("ann@example.com"), "city": entry("Oslo")})
        assert await count_links(s, "contact") == 1
        assert await count_links(s, "company") == 0

    expected = LinkRecord(
        link_id,
        "contact",
        "101",
        "9",
        "ann@example.com",
        {"email": entry("ann@example.com"), "city": entry("Oslo")},
    )
    async with sessions() as s:
        assert await load_links(s, "contact", hubspot_ids=["101"]) == [expected]
        assert await load_links(s, "contact", brevo_ids=["9"]) == [expected]
        assert await load_links(s, "contact", identity_keys=["ann@example.com"]) == [expected]
        both = await load_links(s, "contact", hubspot_ids=["101", "nope"], brevo_ids=["9"])
        assert both == [expected]  # one link, however many keys match it
        assert await load_links(s, "company", hubspot_ids=["101"]) == []
        assert await load_links(s, "contact") == []

    # An echo comes back: the base moves to the other side, the other field keeps its row.
    later = BaseEntry(h("Bergen"), "brevo", "hubspot", T0 + MIN)
    async with sessions() as s, s.begin():
        await record_bases(s, link_id, {"city": later})
        await record_bases(s, link_id, {})
        assert await delete_bases(s, link_id, ["nope"]) == 0
    async with sessions() as s:
        [record] = await load_links(s, "contact", hubspot_ids=["101"])
    assert record.bases == {"email": entry("ann@example.com"), "city": later}

    async with sessions() as s, s.begin():
        assert await delete_bases(s, link_id, ["city"]) == 1
        assert await delete_link(s, link_id)
        assert not await delete_link(s, link_id)
    async with sessions() as s:
        assert await load_links(s, "contact", hubspot_ids=["101"]) == []
        assert await s.scalar(sa.select(sa.func.count()).select_from(FieldState)) == 0


def test_base_entry_refuses_clear_values() -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        BaseEntry("ann@example.com", "hubspot", None, T0)
    with pytest.raises(ValueError, match="SHA-256"):
        BaseEntry(h("x").upper(), "hubspot", None, T0)
    with pytest.raises(ValueError, match="system"):
        BaseEntry(h("x"), "salesforce", None, T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware"):
        BaseEntry(h("x"), "hubspot", None, datetime(2025, 1, 1))


def _pairs(n: int, fields: int = 5, start: int = 0) -> list[PairWrite]:
    return [
        PairWrite(
            hubspot_id=str(i),
            brevo_id=f"b{i}",
            identity_key=f"user{i}@example.com",
            bases={f"f{k}": entry(f"{i}-{k}") for k in range(fields)},
        )
        for i in range(start, start + n)
    ]


async def test_save_pairs_in_few_statements(engine: AsyncEngine, sessions: Sessions) -> None:
    pairs = _pairs(2000)
    with statements(engine) as sent:
        async with sessions() as s, s.begin():
            ids = await save_pairs(s, "contact", pairs, now=T0)
    # 4,000 keys looked up (8 chunks of 500), 2 INSERT pages of 1,000, 1 bases upsert.
    assert len(sent) <= 12, sent
    assert len(ids) == len(set(ids)) == 2000

    async with sessions() as s:
        assert await count_links(s, "contact") == 2000
        assert await s.scalar(sa.select(sa.func.count()).select_from(FieldState)) == 10_000
        some = await load_links(s, "contact", hubspot_ids=["0", "1999"])
    assert [r.id for r in some] == [ids[0], ids[1999]]
    assert some[1].brevo_id == "b1999" and some[1].bases["f4"] == entry("1999-4")

    # Second pass: known link ids, 100 emails changed, a base replaced on every link.
    second = [
        PairWrite(
            p.hubspot_id,
            p.brevo_id,
            f"new{i}@example.com" if i < 100 else p.identity_key,
            {"f0": entry(f"v2-{i}", "brevo", "hubspot")},
            link_id=ids[i],
        )
        for i, p in enumerate(pairs)
    ]
    with statements(engine) as sent:
        async with sessions() as s, s.begin():
            again = await save_pairs(s, "contact", second, now=T0 + MIN)
    assert again == ids
    assert len(sent) == 4 + 1 + 1, sent  # lookups by link id, one UPDATE, one bases upsert
    assert sum(1 for q in sent if q.lstrip().upper().startswith("UPDATE")) == 1
    assert not any(q.lstrip().upper().startswith("INSERT INTO LINKS") for q in sent)

    async with sessions() as s:
        [first, last] = await load_links(s, "contact", hubspot_ids=["0", "1999"])
    assert first.identity_key == "new0@example.com" and last.identity_key == "user1999@example.com"
    assert first.bases["f0"] == entry("v2-0", "brevo", "hubspot")
    assert first.bases["f1"] == entry("0-1")

    # A no-op pass (nothing changed) writes no link row.
    with statements(engine) as sent:
        async with sessions() as s, s.begin():
            await save_pairs(
                s,
                "contact",
                [PairWrite(p.hubspot_id, p.brevo_id, p.identity_key) for p in second[100:200]],
            )
    assert all(q.lstrip().upper().startswith("SELECT") for q in sent)


async def test_load_links_chunks_without_n_plus_one(
    engine: AsyncEngine, sessions: Sessions
) -> None:
    async with sessions() as s, s.begin():
        await save_pairs(s, "contact", _pairs(1200, fields=3))
        await save_pairs(s, "company", _pairs(10, fields=1))
    with statements(engine) as sent:
        async with sessions() as s:
            found = await load_links(s, "contact", hubspot_ids=[str(i) for i in range(1200)])
    assert len(found) == 1200 and all(len(r.bases) == 3 for r in found)
    assert [r.id for r in found] == sorted(r.id for r in found)
    assert len(sent) == 2 * 3  # links + field_state, per chunk of 500 keys

    with statements(engine) as sent:
        async with sessions() as s:
            mixed = await load_links(
                s,
                "contact",
                hubspot_ids=["1", "2"],
                brevo_ids=["b2", "b3"],
                identity_keys=["user4@example.com", "nobody@example.com"],
            )
    assert [r.hubspot_id for r in mixed] == ["1", "2", "3", "4"]
    assert len(sent) == 2


async def test_upsert_link_matching_and_conflicts(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        a = await upsert_link(s, "contact", hubspot_id="1", brevo_id=None, identity_key="a@x.io")
        # Same HubSpot id: the Brevo side is filled in on the same link.
        assert a == await upsert_link(
            s, "contact", hubspot_id="1", brevo_id="b1", identity_key="a@x.io"
        )
        # Found by Brevo id; an email change is the same link.
        assert a == await upsert_link(
            s, "contact", hubspot_id="1", brevo_id="b1", identity_key="new@x.io"
        )
        b = await upsert_link(s, "contact", hubspot_id="2", brevo_id="b2", identity_key="b@x.io")
        assert a != b
        # By link id the ids are written as given: None clears one.
        assert b == await upsert_link(
            s, "contact", hubspot_id="2", brevo_id=None, identity_key="b@x.io", link_id=b
        )
    async with sessions() as s:
        [ra, rb] = await load_links(s, "contact", hubspot_ids=["1", "2"])
    assert (ra.hubspot_id, ra.brevo_id, ra.identity_key) == ("1", "b1", "new@x.io")
    assert (rb.hubspot_id, rb.brevo_id) == ("2", None)

    async with sessions() as s, s.begin():
        with pytest.raises(LinkConflict, match="merge"):  # HubSpot 2's link, Brevo b1's link
            await upsert_link(s, "contact", hubspot_id="2", brevo_id="b1", identity_key=None)
        with pytest.raises(LinkConflict, match="merge"):  # by link id: b1 is a's
            await upsert_link(
                s, "contact", hubspot_id="2", brevo_id="b1", identity_key=None, link_id=b
            )
        with pytest.raises(LinkConflict, match="no longer exists"):
            await upsert_link(
                s, "contact", hubspot_id="9", brevo_id=None, identity_key=None, link_id=10**6
            )
        with pytest.raises(ValueError, match="twice"):
            await save_pairs(s, "contact", [PairWrite("7", None, None), PairWrite("7", "b", None)])
        with pytest.raises(ValueError, match="twice"):  # both pairs resolve to link a
            await save_pairs(
                s, "contact", [PairWrite("1", "b9", None, link_id=a), PairWrite(None, "b1", None)]
            )
        with pytest.raises(ValueError, match="needs"):
            await upsert_link(s, "contact", hubspot_id=None, brevo_id=None, identity_key="x@y.z")
        assert await save_pairs(s, "contact", []) == []


async def test_move_hubspot_id(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        a = await upsert_link(s, "contact", hubspot_id="1", brevo_id="b1", identity_key="a@x.io")
        await record_bases(s, a, {"email": entry("a@x.io")})
        b = await upsert_link(s, "contact", hubspot_id="2", brevo_id="b2", identity_key="b@x.io")

        moved = await move_hubspot_id(s, "contact", "1", "3")  # 3 had no link: the link moves
        assert (moved.link_id, moved.dropped) == (a, None)
        assert await move_hubspot_id(s, "contact", "404", "405") == MoveResult(None)
        assert (await move_hubspot_id(s, "contact", "2", "2")).link_id == b

        merged = await move_hubspot_id(s, "contact", "3", "2")  # both linked: 3's link goes
        assert merged.link_id == b
        assert merged.dropped is not None and merged.dropped.brevo_id == "b1"
        assert merged.dropped.bases == {"email": entry("a@x.io")}
    async with sessions() as s:
        links = await load_links(s, "contact", hubspot_ids=["1", "2", "3"])
    assert [(r.id, r.hubspot_id, r.brevo_id) for r in links] == [(b, "2", "b2")]


async def test_iter_links_keyset(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        await save_pairs(s, "contact", _pairs(1250, fields=1))
        await save_pairs(s, "company", _pairs(300, fields=2, start=5000))
        await save_pairs(s, "contact", _pairs(1250, fields=1, start=10_000))
    sizes: list[int] = []
    seen: list[int] = []
    async with sessions() as s:
        assert await count_links(s, "contact") == 2500
        async for batch in iter_links(s, "contact", batch=1000):
            sizes.append(len(batch))
            seen.extend(r.id for r in batch)
            assert all(r.object_type == "contact" and len(r.bases) == 1 for r in batch)
    assert sizes == [1000, 1000, 500]
    assert seen == sorted(set(seen))


# --- cursors -------------------------------------------------------------------------------


async def test_cursor_round_trip(sessions: Sessions) -> None:
    async with sessions() as s:
        assert await get_cursor(s, "hubspot", "contact") == Cursor("hubspot", "contact")
    cursor = Cursor("hubspot", "contact", T0, "12", ["3", "12"])
    async with sessions() as s, s.begin():
        await save_cursor(s, cursor)
        await save_cursor(s, Cursor("brevo", "contact", T0 - MIN))
    async with sessions() as s:
        assert await get_cursor(s, "hubspot", "contact") == cursor
    moved = advance(cursor, [(T0 + MIN, "1")], T0 + 2 * MIN)
    async with sessions() as s, s.begin():
        await save_cursor(s, moved)
    async with sessions() as s:
        assert await get_cursor(s, "hubspot", "contact") == Cursor(
            "hubspot", "contact", T0 + MIN, "1", ["1"]
        )
        assert (await get_cursor(s, "brevo", "contact")).last_value == T0 - MIN


def test_cursor_rules_by_example() -> None:
    empty = Cursor("hubspot", "contact")
    assert window(empty, 5 * MIN, T0) == (None, T0)
    assert advance(empty, [], T0) == empty

    first = advance(empty, [(T0 - 2 * MIN, "5"), (T0 - MIN, "10"), (T0 - MIN, "9")], T0)
    assert first == Cursor("hubspot", "contact", T0 - MIN, "10", ["9", "10"])
    assert window(first, 5 * MIN, T0 + MIN) == (T0 - 6 * MIN, T0 + MIN)

    # Pull 2 re-reads the boundary: 9 and 10 are dropped, 11 at the same instant is new.
    assert is_seen_at_boundary(first, T0 - MIN, "9")
    assert not is_seen_at_boundary(first, T0 - MIN, "11")
    assert not is_seen_at_boundary(first, T0, "9")  # a newer version of 9
    second = advance(first, [(T0 - MIN, "11"), (T0 + 5 * MIN, "12")], T0 + MIN)
    assert second == Cursor("hubspot", "contact", T0 - MIN, "11", ["9", "10", "11"])

    # Pull 3 moves on: the boundary is only what was seen at the new maximum.
    third = advance(second, [(T0 - 3 * MIN, "1"), (T0 + 5 * MIN, "12")], T0 + 10 * MIN)
    assert third == Cursor("hubspot", "contact", T0 + 5 * MIN, "12", ["12"])
    assert not is_seen_at_boundary(third, T0 - MIN, "9")
    assert sorted(["10", "9", "x", "100", "010"], key=id_order) == ["9", "10", "010", "100", "x"]


_IDS = st.sampled_from([str(i) for i in (1, 2, 3, 10, 11, 100)])
_SEEN = st.lists(st.tuples(st.integers(0, 30), _IDS), max_size=12)


@st.composite
def cursors(draw: st.DrawFn) -> Cursor:
    if draw(st.booleans()):
        return Cursor("hubspot", "contact")
    ids = sorted(draw(st.sets(_IDS, min_size=1, max_size=3)), key=id_order)
    return Cursor("hubspot", "contact", T0 + draw(st.integers(0, 20)) * MIN, ids[-1], ids)


@settings(max_examples=300, deadline=None)
@given(cursor=cursors(), seen=_SEEN, run_start=st.integers(0, 30))
def test_advance_is_monotonic_and_never_past_run_start(
    cursor: Cursor, seen: list[tuple[int, str]], run_start: int
) -> None:
    start = T0 + run_start * MIN
    records = [(T0 + m * MIN, i) for m, i in seen]
    after = advance(cursor, records, start)
    if cursor.last_value is not None:  # never back
        assert after.last_value is not None and after.last_value >= cursor.last_value
        if after.last_value == cursor.last_value:
            assert set(after.boundary_ids) >= set(cursor.boundary_ids)
    if after != cursor:  # moved: by the records of the range, never past its end
        assert after.last_value is not None and after.last_value <= start
        at_max = {i for t, i in records if t == after.last_value}
        assert at_max <= set(after.boundary_ids)
        assert after.last_id == max(after.boundary_ids, key=id_order)
        # Every record it now claims as seen at the boundary was in this pull or the last.
        assert set(after.boundary_ids) <= at_max | set(cursor.boundary_ids)
    # Order of the input does not matter.
    assert advance(cursor, list(reversed(records)), start) == after


# A pull simulation: record versions (id, modified minute, indexing lag), pulls at run starts,
# pages committed one by one, some pulls dying after their first page.
_VERSIONS = st.lists(
    st.tuples(_IDS, st.integers(0, 20), st.integers(0, 3)),
    max_size=25,
    unique_by=lambda v: (v[0], v[1]),
)


def _pull(
    cursor: Cursor,
    versions: list[tuple[str, int, int]],
    run_start: int,
    lookback: int,
    page: int,
    crash: bool,
    processed: list[tuple[str, int]],
    dropped: list[tuple[str, int]],
) -> Cursor:
    visible: dict[str, int] = {}
    for rid, minute, lag in versions:  # what the search index shows at run start
        if minute + lag <= run_start and minute > visible.get(rid, -1):
            visible[rid] = minute
    since, until = window(cursor, lookback * MIN, T0 + run_start * MIN)
    rows = sorted(
        ((T0 + m * MIN, rid) for rid, m in visible.items()),
        key=lambda r: (r[0], id_order(r[1])),
    )
    rows = [r for r in rows if (since is None or r[0] >= since) and r[0] <= until]
    for start in range(0, len(rows), page):
        chunk = rows[start : start + page]
        for modified_at, rid in chunk:
            minute = int((modified_at - T0) / MIN)
            if is_seen_at_boundary(cursor, modified_at, rid):
                dropped.append((rid, minute))
            else:
                processed.append((rid, minute))
        cursor = advance(cursor, chunk, T0 + run_start * MIN)  # committed with the page
        if crash:
            break
    return cursor


@settings(max_examples=300, deadline=None)
@given(
    versions=_VERSIONS,
    run_starts=st.lists(st.integers(0, 25), min_size=1, max_size=6, unique=True),
    page=st.integers(1, 4),
    crashes=st.sets(st.integers(0, 5)),
    lookback=st.integers(0, 4),
)
def test_pulls_lose_nothing_and_drop_only_what_was_processed(
    versions: list[tuple[str, int, int]],
    run_starts: list[int],
    page: int,
    crashes: set[int],
    lookback: int,
) -> None:
    exact = lookback == 0
    if exact:  # no lookback, no indexing lag: exactly once is the claim
        versions = [(rid, minute, 0) for rid, minute, _ in versions]
    else:  # a lookback covering the indexing lag: at least once is the claim
        lookback = max(lookback, *(lag for _, _, lag in versions), 0)

    cursor = Cursor("hubspot", "contact")
    processed: list[tuple[str, int]] = []
    dropped: list[tuple[str, int]] = []
    final = max((m + lag for _, m, lag in versions), default=0) + 1
    for k, run_start in enumerate([*sorted(run_starts), max(final, *run_starts)]):
        crash = k in crashes and k < len(run_starts)
        before = cursor
        cursor = _pull(cursor, versions, run_start, lookback, page, crash, processed, dropped)
        assert before.last_value is None or (
            cursor.last_value is not None and cursor.last_value >= before.last_value
        )

    latest: dict[str, int] = {}
    for rid, minute, _ in versions:
        latest[rid] = max(minute, latest.get(rid, -1))
    assert set(latest.items()) <= set(processed)  # nothing lost: every latest version arrived
    assert set(dropped) <= set(processed)  # only versions processed before are dropped
    if exact:
        counts = Counter(processed)
        assert all(n == 1 for n in counts.values()), counts  # exactly once


def test_boundary_record_is_reread_and_dropped_once() -> None:
    cursor = Cursor("hubspot", "contact")
    processed: list[tuple[str, int]] = []
    dropped: list[tuple[str, int]] = []
    records = [("1", 5, 0), ("2", 5, 0)]
    cursor = _pull(cursor, records, 6, 0, 10, False, processed, dropped)
    assert (processed, dropped) == ([("1", 5), ("2", 5)], [])
    records.append(("3", 8, 0))
    cursor = _pull(cursor, records, 9, 0, 10, False, processed, dropped)
    assert dropped == [("1", 5), ("2", 5)] and processed[-1] == ("3", 8)
    cursor = _pull(cursor, records, 12, 0, 10, False, processed, dropped)
    assert dropped == [("1", 5), ("2", 5), ("3", 8)]  # once each: the cursor moved past 5
    assert Counter(processed) == Counter({("1", 5): 1, ("2", 5): 1, ("3", 8): 1})


# --- inbox ---------------------------------------------------------------------------------


def _event(n: int, **kw: Any) -> inbox.InboxInput:
    return inbox.InboxInput("hubspot", f"hs:{n}", "contact", str(n), "contact.propertyChange", kw)


async def _claim(sessions: Sessions, worker: str, now: datetime, limit: int = 10) -> list[int]:
    async with sessions() as s, s.begin():
        items = await inbox.claim(s, worker=worker, limit=limit, lease=5 * MIN, now=now)
    return [i.id for i in items]


async def test_inbox_enqueue_deduplicates(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        assert await inbox.enqueue(s, [_event(1), _event(2), _event(1)], now=T0) == 2
        assert await inbox.enqueue(s, [_event(2), _event(3)], now=T0) == 1
        assert await inbox.enqueue(s, []) == 0
        pulled = inbox.dirty_key("brevo", "contact", "a@x.io", T0)
        assert await inbox.enqueue(s, [pulled], now=T0) == 1
        again = inbox.dirty_key("brevo", "contact", "a@x.io", T0)
        assert await inbox.enqueue(s, [again], now=T0) == 0
        # A later change of the same record is a new version: enqueued again.
        later = inbox.dirty_key("brevo", "contact", "a@x.io", T0 + MIN)
        assert await inbox.enqueue(s, [later], now=T0 + MIN) == 1
        many = [_event(n) for n in range(100, 1300)]
        assert await inbox.enqueue(s, many, now=T0) == 1200
    async with sessions() as s:
        assert await inbox.pending_count(s) == 1205
        counts = await inbox.counts_by_status(s)
    assert counts == {"pending": 1205, "processing": 0, "done": 0, "failed": 0, "dead": 0}

    async with sessions() as s, s.begin():
        claimed = await inbox.claim(s, worker="w", limit=5, lease=MIN, now=T0 + 2 * MIN)
    # Oldest due first: webhook events and the pull's dirty key in arrival order.
    assert [i.object_id for i in claimed] == ["1", "2", "3", "a@x.io", "100"]
    assert claimed[0].system == "hubspot" and claimed[0].attempts == 1
    assert (claimed[3].source, claimed[3].system, claimed[3].event_type) == (
        "pull",
        "brevo",
        "dirty",
    )
    assert claimed[3].payload == {"system": "brevo", "modified_at": T0.isoformat()}
    async with sessions() as s, s.begin():
        rest = await inbox.claim(s, worker="w", limit=2000, lease=MIN, now=T0 + 2 * MIN)
    assert len(rest) == 1200 and rest[-1].dedup_key == later.dedup_key


async def test_inbox_claim_lease_complete(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        await inbox.enqueue(s, [_event(n) for n in range(5)], now=T0)
        await inbox.enqueue(s, [_event(9)], now=T0 + 10 * MIN)  # not due yet at T0 + 1 min
    a = await _claim(sessions, "a", T0 + MIN, limit=3)
    b = await _claim(sessions, "b", T0 + MIN)
    assert len(a) == 3 and len(b) == 2 and not set(a) & set(b)
    assert await _claim(sessions, "c", T0 + 2 * MIN) == []

    async with sessions() as s, s.begin():
        assert await inbox.complete(s, a[:2], worker="b") == 0  # not b's
        assert await inbox.complete(s, a[:2], worker="a", now=T0 + MIN) == 2
        assert await inbox.complete(s, [a[0]]) == 0  # already done
        assert await inbox.pending_count(s) == 4

    # a dies: its lease runs out and c takes its last item over (attempt 2).
    async with sessions() as s, s.begin():
        taken = await inbox.claim(s, worker="c", limit=10, lease=HOUR, now=T0 + 7 * MIN)
    assert [i.id for i in taken] == [a[2], *b]
    assert [i.attempts for i in taken] == [2, 2, 2]
    async with sessions() as s, s.begin():
        assert await inbox.complete(s, [a[2]], worker="a") == 0  # a lost it
        assert await inbox.release(s, b, now=T0 + 8 * MIN, worker="c") == 2
        counts = await inbox.counts_by_status(s)
        assert counts["processing"] == 1 and counts["done"] == 2 and counts["failed"] == 2
        assert await inbox.purge_done(s, T0) == 0
        assert await inbox.purge_done(s, T0 + 10 * MIN) == 2
    # Released items are due again at once, their attempt not counted.
    async with sessions() as s, s.begin():
        again = await inbox.claim(s, worker="d", limit=10, lease=MIN, now=T0 + 10 * MIN)
    assert {i.id: i.attempts for i in again} == {b[0]: 2, b[1]: 2, again[-1].id: 1}


async def test_inbox_retry_backoff_then_dead(sessions: Sessions) -> None:
    register_secret("pat-secret-123456")
    async with sessions() as s, s.begin():
        await inbox.enqueue(s, [_event(1)], now=T0)

    def backoff(attempts: int) -> timedelta:
        return MIN * (1 << attempts)

    now = T0
    outcomes = []
    for expected_wait in (2, 4, None):
        [item] = await _claim(sessions, "w", now)
        async with sessions() as s, s.begin():
            outcome = await inbox.fail(
                s,
                item,
                "HTTP 500 with pat-secret-123456",
                now=now,
                max_attempts=3,
                backoff=backoff,
            )
        outcomes.append(outcome)
        if expected_wait is not None:
            assert await _claim(sessions, "w", now + (expected_wait * MIN) - MIN) == []
            now += expected_wait * MIN
    assert outcomes == ["retry", "retry", "dead"]
    assert await _claim(sessions, "w", now + timedelta(days=1)) == []
    async with sessions() as s:
        assert (await inbox.counts_by_status(s))["dead"] == 1
        assert await inbox.pending_count(s) == 0
        error = await s.scalar(sa.text("SELECT last_error FROM inbox"))
    assert error == "HTTP 500 with ***"
    async with sessions() as s, s.begin():
        with pytest.raises(StoreError, match="does not exist"):
            await inbox.fail(s, 999, "x", now=now, max_attempts=3, backoff=backoff)


async def test_inbox_concurrent_claims_are_disjoint(
    engine: AsyncEngine, sessions: Sessions
) -> None:
    async with sessions() as s, s.begin():
        await inbox.enqueue(s, [_event(n) for n in range(10)], now=T0)
    postgres = engine.dialect.name == "postgresql"
    a_claimed, b_done = asyncio.Event(), asyncio.Event()

    async def worker_a() -> list[int]:
        async with sessions() as s, s.begin():
            items = await inbox.claim(s, worker="a", limit=6, lease=MIN, now=T0 + MIN)
            a_claimed.set()
            if postgres:  # B must get through while A still holds its row locks
                await asyncio.wait_for(b_done.wait(), timeout=5)
            else:  # SQLite: B waits for A's BEGIN IMMEDIATE transaction
                await asyncio.sleep(0.1)
            return [i.id for i in items]

    async def worker_b() -> list[int]:
        await a_claimed.wait()
        async with sessions() as s, s.begin():
            items = await inbox.claim(s, worker="b", limit=6, lease=MIN, now=T0 + MIN)
        b_done.set()
        return [i.id for i in items]

    a, b = await asyncio.gather(worker_a(), worker_b())
    assert len(a) == 6 and not set(a) & set(b)
    assert len(b) == 4 and len(set(a) | set(b)) == 10


# --- runs ----------------------------------------------------------------------------------


async def test_runs(sessions: Sessions) -> None:
    register_secret("run-secret-987654")
    async with sessions() as s, s.begin():
        r1 = await runs.start_run(s, "pull", "hubspot", "contact", T0)
        await runs.finish_run(s, r1, "ok", {"read": 10, "written": 2}, None, T0 + MIN)
        r2 = await runs.start_run(s, "pull", "hubspot", "contact", T0 + 2 * MIN)
        await runs.finish_run(s, r2, "failed", {"read": 3}, "boom run-secret-987654", T0 + 3 * MIN)
        r3 = await runs.start_run(s, "pull", "brevo", "contact", T0 + 2 * MIN)
        await runs.finish_run(s, r3, "ok", {}, None, T0 + 4 * MIN)
        r4 = await runs.start_run(s, "resync", None, None, T0 + 5 * MIN)
        await runs.finish_run(s, r4, "ok", {"compared": 5}, None, T0 + 6 * MIN)
        running = await runs.start_run(s, "pull", "hubspot", "contact", T0 + 7 * MIN)
        other = await runs.start_run(s, "worker", None, None, T0 + 7 * MIN)
        with pytest.raises(StoreError, match="does not exist"):
            await runs.finish_run(s, 10**6, "ok", {}, None, T0)
        with pytest.raises(ValueError):
            await runs.finish_run(s, r1, "running", {}, None, T0)

    async with sessions() as s:
        summary = await runs.last_runs(s)
        error = await runs.last_error(s)
        assert [r.id for r in await runs.running_runs(s)] == [running, other]
    assert [(r.kind, r.system, r.id) for r in summary] == [
        ("pull", "brevo", r3),
        ("pull", "hubspot", r2),
        ("resync", None, r4),
    ]
    hs = summary[1]
    assert hs.status == "failed" and hs.error == "boom ***" and hs.counts == {"read": 3}
    assert hs.last_ok is not None and hs.last_ok.id == r1 and hs.last_ok.counts["read"] == 10
    assert summary[0].last_ok is not None and summary[0].last_ok.id == r3
    assert hs.duration == MIN and summary[2].counts == {"compared": 5}
    assert error is not None and error.id == r2

    # Restart after a crash: scoped first (a shared database), then everything left.
    async with sessions() as s, s.begin():
        assert await runs.mark_interrupted(s, T0 + 9 * MIN, kind="worker") == 1
        assert await runs.mark_interrupted(s, T0 + 9 * MIN) == 1
        assert await runs.mark_interrupted(s, T0 + 9 * MIN) == 0
    async with sessions() as s:
        summary = await runs.last_runs(s)
        error = await runs.last_error(s)
    hs = next(r for r in summary if r.kind == "pull" and r.system == "hubspot")
    assert hs.id == running and hs.status == "interrupted" and hs.finished_at == T0 + 9 * MIN
    assert hs.error == runs.INTERRUPTED_ERROR and hs.last_ok is not None and hs.last_ok.id == r1
    assert error is not None and error.status == "interrupted"


async def test_runs_empty(sessions: Sessions) -> None:
    async with sessions() as s:
        assert await runs.last_runs(s) == []
        assert await runs.last_error(s) is None


# --- dead letters --------------------------------------------------------------------------


async def test_dead_letters(sessions: Sessions) -> None:
    register_secret("dlq-secret-24680")
    async with sessions() as s, s.begin():
        first = await deadletters.add(
            s,
            system="brevo",
            object_type="contact",
            object_id="42",
            identity_key="ann@example.com",
            operation="update",
            payload={"fields": ["city"]},
            error="400 invalid phone (key dlq-secret-24680)",
            attempts=5,
            now=T0,
        )
        second = await deadletters.add(
            s,
            system="hubspot",
            object_type="contact",
            object_id=None,
            identity_key=None,
            operation="create",
            payload={},
            error="x" * 5000,
            attempts=1,
            now=T0 + MIN,
        )
    async with sessions() as s:
        assert await deadletters.count_open(s) == 2
        listed = await deadletters.list_open(s)
        one = await deadletters.get(s, first)
        assert await deadletters.get(s, 10**6) is None
    assert [d.id for d in listed] == [first, second]
    assert one is not None and one.error == "400 invalid phone (key ***)"
    assert one.payload == {"fields": ["city"]} and one.attempts == 5 and one.resolved_at is None
    assert len(listed[1].error) == deadletters.MAX_ERROR_LEN

    async with sessions() as s, s.begin():
        assert await deadletters.resolve(s, first, T0 + 2 * MIN)
        assert not await deadletters.resolve(s, first, T0 + 3 * MIN)
        assert not await deadletters.resolve(s, 10**6, T0)
    async with sessions() as s:
        assert await deadletters.count_open(s) == 1
        assert [d.id for d in await deadletters.list_open(s, limit=10)] == [second]
        resolved = await deadletters.get(s, first)
    assert resolved is not None and resolved.resolved_at == T0 + 2 * MIN


# --- skipped records -----------------------------------------------------------------------


async def test_skipped_records(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        await skipped.record_skipped(
            s, "hubspot", "contact", [("1", "no email"), ("2", "no email"), ("3", "bad")], T0
        )
        await skipped.record_skipped(s, "brevo", "contact", [("x", "blocklisted")], T0)
        await skipped.record_skipped(s, "hubspot", "contact", [], T0)
    async with sessions() as s, s.begin():  # seen again: first_seen kept, last_seen bumped
        await skipped.record_skipped(
            s, "hubspot", "contact", [("1", "no email"), ("3", "no email")], T0 + MIN
        )
    async with sessions() as s:
        counts = await skipped.count_skipped(s)
        hubspot = await skipped.list_skipped(s, "hubspot", "contact")
        everything = await skipped.list_skipped(s)
        assert await skipped.list_skipped(s, object_type="company") == []
        assert len(await skipped.list_skipped(s, limit=2)) == 2
    assert counts == {
        ("hubspot", "contact", "no email"): 3,
        ("brevo", "contact", "blocklisted"): 1,
    }
    assert [(i.object_id, i.first_seen, i.last_seen) for i in hubspot] == [
        ("1", T0, T0 + MIN),
        ("3", T0, T0 + MIN),
        ("2", T0, T0),
    ]
    assert len(everything) == 4

    async with sessions() as s, s.begin():  # 1 got an email
        assert await skipped.clear_skipped(s, "hubspot", "contact", ["1", "1", "nope"]) == 1
        assert await skipped.clear_skipped(s, "brevo", "contact", ["1"]) == 0
    async with sessions() as s:
        assert await skipped.count_skipped(s) == {
            ("hubspot", "contact", "no email"): 2,
            ("brevo", "contact", "blocklisted"): 1,
        }
