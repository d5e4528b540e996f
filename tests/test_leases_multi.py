"""Several daemons on one PostgreSQL: each pull runs in exactly one of them, a dead daemon's
pull lease is taken over, inbox events are claimed by one worker only — even when an engine
pass outlasts the claim — and a dead worker's claims are claimed again after their lease."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa
from daemon_env import cli_env, eventually
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from store_fixtures import (  # noqa: F401 - pytest fixtures
    fixture_db_url,
    fixture_migrated_url,
    fixture_pg_server,
    fixture_pg_url,
    fixture_sqlite_url,
)

from connector.config import (
    BrevoSettings,
    Connectors,
    DatabaseSettings,
    HubSpotSettings,
    Settings,
)
from connector.daemon import Daemon, JobSpec, pull_lease_name
from connector.engine import Outcome, SyncEngine
from connector.runtime import Runtime
from connector.store import db, inbox
from connector.store.models import InboxItem, Lease, Run, System
from connector.worker import InboxWorker

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def settings_for(url: str) -> Settings:
    return Settings(
        connectors=Connectors(
            hubspot=HubSpotSettings(base_url="http://127.0.0.1:9", access_token="test-token"),
            brevo=BrevoSettings(base_url="http://127.0.0.1:9/v3", api_key="test-brevo-key"),
        ),
        database=DatabaseSettings(url=url),
    )


# --- pulls: two real daemon processes on PostgreSQL ----------------------------------------


def holders(env: Any) -> dict[str, str]:
    rows = env.query("SELECT name, holder FROM leases WHERE name LIKE 'pull%contacts'")
    return {name: holder for name, holder in rows}


def pid_of(holder: str) -> int:
    return int(holder.split(":")[1])


@pytest.mark.postgres
async def test_each_pull_runs_in_one_daemon_and_a_killed_ones_is_taken_over(
    tmp_path: Path, pg_url: str
) -> None:
    await asyncio.to_thread(db.upgrade, pg_url)  # before two daemons race to migrate
    async with cli_env(tmp_path, hubspot=6, brevo=3, db_url=pg_url, poll_interval=0.3) as env:
        a = await env.daemon("a")
        pulls = {pull_lease_name(s, "contacts") for s in ("hubspot", "brevo")}
        await eventually(
            lambda: set(holders(env)) == pulls and len(a.events("job.done")) >= 2,
            what="daemon a owns both pulls",
        )
        b = await env.daemon("b")
        await eventually(lambda: bool(b.events("daemon.started")), what="daemon b started")

        def contacts_pulls_done(d: Any) -> int:
            return sum(1 for e in d.events("job.done") if e["job"] in pulls)

        done_a = contacts_pulls_done(a)
        # a few intervals with both running: b skips every pull, a runs them
        await eventually(
            lambda: (
                contacts_pulls_done(a) >= done_a + 6
                and {e["job"] for e in b.events("job.skipped")} >= {f"{p}" for p in pulls}
            ),
            what="both daemons ran a few intervals",
        )
        assert {pid_of(h) for h in holders(env).values()} == {a.pid}
        assert b.events("job.done") == []  # b ran no pull at all
        assert {e["reason"] for e in b.events("job.skipped")} == {"pull run by another daemon"}

        await a.kill()  # SIGKILL: its leases stay in the table until taken over
        assert {pid_of(h) for h in holders(env).values()} == {a.pid}
        await eventually(
            lambda: {e["job"] for e in b.events("job.done")} >= pulls,
            what="b took the pulls over",
        )
        assert {pid_of(h) for h in holders(env).values()} == {b.pid}
        taken = {e["lease"] for e in b.events("lease.taken")}
        assert {t for t in taken if t.endswith(":contacts")} == pulls

        assert await b.terminate() == 0
        assert env.query("SELECT count(*) FROM leases") == [(0,)]  # released on stop
        # never two runs of one pull at once: each started after the one before it ended
        for system in ("hubspot", "brevo"):
            rows = env.query(
                "SELECT started_at, finished_at, status FROM runs "
                "WHERE kind = 'pull' AND system = :system AND object_type = 'contacts' "
                "ORDER BY started_at",
                system=system,
            )
            assert len(rows) >= 4
            for (_, ended, _), (started, _, _) in itertools.pairwise(rows):
                assert ended is not None and ended <= started
            assert {r[2] for r in rows} <= {"ok", "interrupted"}


# --- pulls in process: expiry of another host's lease (a fake clock) -------------------------


class FakePulls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def for_daemon(self, who: str) -> Any:
        async def pull(object_type: str, system: System, stop: Any) -> Outcome:
            self.calls.append((who, system))
            return Outcome()

        return pull


@asynccontextmanager
async def two_daemons(url: str, clock: Any, pulls: FakePulls) -> AsyncIterator[list[Daemon]]:
    async with (
        Runtime.open(settings_for(url), load_engines=False) as rt_a,
        Runtime.open(settings_for(url), load_engines=False) as rt_b,
    ):
        made = [
            Daemon(
                rt,
                worker_id=f"host-{who}:1:{who}",  # other hosts: no local liveness check
                objects=["contacts"],
                pull=pulls.for_daemon(who),
                lease_wait=0.0,
                clock=clock,
            )
            for rt, who in ((rt_a, "a"), (rt_b, "b"))
        ]
        for d in made:
            d.keep_pull_leases = True  # as under run()
        yield made


async def test_pull_lease_is_sticky_and_expires_with_its_dead_owner(migrated_url: str) -> None:
    now = [T0]
    pulls = FakePulls()
    async with two_daemons(migrated_url, lambda: now[0], pulls) as (a, b):
        job = JobSpec("pull", "contacts", "hubspot")
        assert (await a.run_job(job)).status == "ok"
        assert a.owned == {"pull:hubspot:contacts"}  # kept between runs
        for minutes in (0, 0.5):  # a is alive (renewing): b never runs a's pull
            now[0] = T0 + timedelta(minutes=minutes)
            assert (await b.run_job(job)).status == "skipped"
            assert (await a.run_job(job)).status == "ok"  # renews it
        # a dies at T0 + 30 s: its lease runs until T0 + 90 s
        now[0] = T0 + timedelta(seconds=89)
        assert (await b.run_job(job)).status == "skipped"
        now[0] = T0 + timedelta(seconds=91)
        assert (await b.run_job(job)).status == "ok"
        assert pulls.calls == [("a", "hubspot")] * 3 + [("b", "hubspot")]
        async with b.sessions() as s:
            rows = (await s.execute(sa.select(Lease.name, Lease.holder))).all()
            assert [tuple(r) for r in rows] == [("pull:hubspot:contacts", "host-b:1:b")]
            assert await s.scalar(sa.select(sa.func.count()).select_from(Run)) == 4
        # the Brevo pull is another lease: a may own it while b owns HubSpot's
        assert (await a.run_job(JobSpec("pull", "contacts", "brevo"))).status == "ok"
        async with b.sessions() as s:
            rows = (await s.execute(sa.select(Lease.name, Lease.holder).order_by(Lease.name))).all()
        assert [tuple(r) for r in rows] == [
            ("pull:brevo:contacts", "host-a:1:a"),
            ("pull:hubspot:contacts", "host-b:1:b"),
        ]


# --- inbox claims -------------------------------------------------------------------------


class RecordingEngine:
    """Stands in for a SyncEngine: records the records of each pass, who held their inbox
    rows meanwhile, and takes ``seconds`` (longer than the claim lease in the test)."""

    def __init__(
        self, who: str, sessions: async_sessionmaker[AsyncSession], seconds: float
    ) -> None:
        self.who = who
        self.sessions = sessions
        self.seconds = seconds
        # what the worker's event semantics read off an engine (plain changes only here)
        self.object_type = "contacts"
        self.mapping = None
        self.deletions = None
        self.clock = lambda: datetime.now(UTC)
        self.seen: list[str] = []
        self.holders: Counter[str | None] = Counter()

    async def sync(self, *, hubspot_ids: Sequence[str] = (), **_: Any) -> Outcome:
        self.seen += hubspot_ids
        await asyncio.sleep(self.seconds)
        async with self.sessions() as s:  # still ours after the lease's length: renewed
            rows = await s.execute(
                sa.select(InboxItem.claimed_by).where(InboxItem.object_id.in_(list(hubspot_ids)))
            )
            self.holders.update(r[0] for r in rows)
        return Outcome()

    async def settle_gone(self, out: Outcome, *, dry_run: bool = False) -> None:
        """Nothing vanishes here."""


def worker_on(
    sessions: async_sessionmaker[AsyncSession], engine: RecordingEngine, **kw: Any
) -> InboxWorker:
    runtime = cast(
        Runtime,
        SimpleNamespace(
            sessions=sessions,
            engines={},
            objects={},
            settings=settings_for("sqlite:///unused.db"),
        ),
    )
    return InboxWorker(
        runtime,
        worker_id=engine.who,
        engines={"contacts": cast(SyncEngine, engine)},
        record_runs=False,
        **kw,
    )


async def enqueue_events(
    sessions: async_sessionmaker[AsyncSession], n: int, now: datetime | None = None
) -> None:
    items = [
        inbox.InboxInput("hubspot", f"e{i}", "contacts", str(1000 + i), "contact.propertyChange")
        for i in range(n)
    ]
    async with sessions() as s, s.begin():
        assert await inbox.enqueue(s, items, now=now) == n


@pytest.mark.postgres
async def test_two_workers_on_postgres_process_every_event_exactly_once(pg_url: str) -> None:
    db.upgrade(pg_url)
    engines = [db.create_engine(pg_url), db.create_engine(pg_url)]  # two pools: two "daemons"
    try:
        sessions = [db.session_factory(e) for e in engines]
        await enqueue_events(sessions[0], 400)
        lease = timedelta(seconds=0.6)
        recorders = [RecordingEngine(who, sessions[i], 1.0) for i, who in enumerate("ab")]
        workers = [worker_on(sessions[i], recorders[i], batch=40, lease=lease) for i in range(2)]
        stop = asyncio.Event()
        loops = [asyncio.create_task(w.run(stop, idle_wait=0.05, busy_wait=0.05)) for w in workers]

        async def drained() -> bool:
            async with sessions[0]() as s:
                return await inbox.pending_count(s) == 0

        try:
            await eventually(drained, within=60, what="inbox drained")
        finally:
            stop.set()
            await asyncio.gather(*loops)

        seen = Counter(recorders[0].seen + recorders[1].seen)
        assert len(seen) == 400 and set(seen.values()) == {1}  # no event handed over twice
        assert recorders[0].seen and recorders[1].seen  # both worked, side by side
        for r in recorders:  # during each pass, every row was still claimed by its worker
            assert set(r.holders) == {r.who}
        async with sessions[0]() as s:
            rows = (await s.execute(sa.select(InboxItem.status, InboxItem.attempts))).all()
        assert Counter(tuple(r) for r in rows) == {("done", 1): 400}  # each claimed once
    finally:
        for e in engines:
            await e.dispose()


@pytest.mark.postgres
async def test_claim_skips_rows_another_transaction_holds(pg_url: str) -> None:
    """SKIP LOCKED: a claim does not wait for, nor take, rows another claim is taking."""
    db.upgrade(pg_url)
    engine = db.create_engine(pg_url)
    try:
        sessions = db.session_factory(engine)
        await enqueue_events(sessions, 10)
        lease, now = timedelta(minutes=1), datetime.now(UTC)
        async with sessions() as first, first.begin():
            mine = await inbox.claim(first, worker="a", limit=6, lease=lease, now=now)
            async with sessions() as second, second.begin():
                # without SKIP LOCKED this would wait for `first` and fail after 2 s
                await second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
                theirs = await inbox.claim(second, worker="b", limit=10, lease=lease, now=now)
        assert len(mine) == 6 and len(theirs) == 4
        assert not {i.id for i in mine} & {i.id for i in theirs}
    finally:
        await engine.dispose()


async def test_dead_workers_claims_are_claimed_again_after_their_lease(
    migrated_url: str,
) -> None:
    engine = db.create_engine(migrated_url)
    try:
        sessions = db.session_factory(engine)
        await enqueue_events(sessions, 3, now=T0)
        async with sessions() as s, s.begin():  # a worker of another host claims, then dies
            got = await inbox.claim(
                s, worker="host-x:7:dead", limit=10, lease=timedelta(seconds=60), now=T0
            )
            assert len(got) == 3
        now = [T0 + timedelta(seconds=59)]
        recorder = RecordingEngine("w", sessions, 0.0)
        worker = worker_on(sessions, recorder, clock=lambda: now[0])
        assert (await worker.run_once()).claimed == 0  # its claim still runs
        now[0] = T0 + timedelta(seconds=61)
        result = await worker.run_once()
        assert (result.claimed, result.completed) == (3, 3)
        async with sessions() as s:
            rows = (await s.execute(sa.select(InboxItem.status, InboxItem.attempts))).all()
        assert sorted(tuple(r) for r in rows) == [("done", 2)] * 3  # the dead try counted
    finally:
        await engine.dispose()


async def test_a_dead_local_workers_claims_are_freed_at_once(migrated_url: str) -> None:
    host = socket.gethostname()
    dead = f"{host}:{dead_pid()}:gone"
    alive = f"{host}:{os.getpid()}:other"  # ourselves: never reaped
    async with Runtime.open(settings_for(migrated_url), load_engines=False) as rt:
        await enqueue_events(rt.sessions, 4)
        now = datetime.now(UTC)
        async with rt.sessions() as s, s.begin():
            for who in (dead, alive):
                got = await inbox.claim(s, worker=who, limit=2, lease=timedelta(hours=1), now=now)
                assert len(got) == 2
            assert await inbox.claim_holders(s, now) == sorted([dead, alive])
        daemon = Daemon(rt, objects=["contacts"])
        assert await daemon.reap_dead_claims() == 2
        later = datetime.now(UTC)
        async with rt.sessions() as s, s.begin():
            again = await inbox.claim(
                s, worker=daemon.worker_id, limit=10, lease=timedelta(minutes=1), now=later
            )
            assert await inbox.claim_holders(s, later) == sorted([alive, daemon.worker_id])
        assert len(again) == 2 and {i.attempts for i in again} == {2}
