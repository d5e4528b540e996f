"""The daemon: one cycle end to end, SIGTERM, and (in process, with fake pulls) scheduling,
leases shared by several daemons, run records, failures and graceful stops."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from daemon_env import cli_env
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
    SyncSettings,
)
from connector.daemon import Daemon, JobResult, JobSpec, lease_name
from connector.engine import Outcome
from connector.runtime import Runtime
from connector.store import leases, runs
from connector.store.models import Lease, Run, System

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

# --- end to end: real processes against the sandboxes -------------------------------------


async def test_run_once_syncs_both_ways_records_runs_then_writes_nothing(tmp_path: Path) -> None:
    async with cli_env(tmp_path, hubspot=12, brevo=6) as env:
        code, out, err = await env.cli("run", "--once")
        assert code == 0, out + err
        assert "pull hubspot contacts: ok" in out and "pull brevo contacts: ok" in out
        hs_live = env.servers.hubspot.stores["contacts"].live
        brevo_emails = {c.email for c in env.servers.brevo.contacts.values()}
        assert len(hs_live) == 18 and len(brevo_emails) == 18
        assert {o.props["email"] for o in hs_live.values()} == brevo_emails
        rows = env.query("SELECT kind, system, status FROM runs ORDER BY id")
        assert rows[:2] == [("pull", "hubspot", "ok"), ("pull", "brevo", "ok")]
        assert env.query("SELECT count(*) FROM links") == [(18,)]
        assert env.query("SELECT count(*) FROM leases") == [(0,)]  # released
        for line in err.splitlines():  # JSON logs, one line per job, no secrets
            assert "sandbox-token" not in line and "sandbox-brevo-key" not in line
        assert sum('"event": "job.done"' in line for line in err.splitlines()) == len(rows)

        before = env.writes()
        code, out, err = await env.cli("run", "--once")
        assert code == 0, out + err
        assert env.writes() == before  # in step: the second cycle sends no write
        assert "reconcile" not in out  # not due again for a day


async def test_sigterm_finishes_and_exits_0_within_10_s(tmp_path: Path) -> None:
    async with cli_env(tmp_path, hubspot=4, poll_interval=0.2) as env:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "connector",
            "--config",
            str(env.config),
            "run",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(30):
                while sum('"job.done"' in line for line in seen) < 3:
                    line = (await proc.stderr.readline()).decode()
                    assert line, "the daemon ended early:\n" + "".join(seen)
                    seen.append(line)
        except BaseException:
            proc.kill()
            raise
        env.servers.hubspot.faults.latency = 0.3  # a pull is likely in flight at the signal
        env.servers.brevo.faults.latency = 0.3
        await asyncio.sleep(0.25)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=15)
        elapsed = time.monotonic() - started
        assert proc.returncode == 0, "".join(seen) + err.decode()
        assert elapsed < 10
        assert '"daemon.stopped"' in err.decode()
        assert env.query("SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]
        assert env.query("SELECT count(*) FROM leases") == [(0,)]


# --- in process: scheduling, leases and run records with fake pulls -------------------------


def make_settings(url: str, **sync: float) -> Settings:
    return Settings(
        connectors=Connectors(
            hubspot=HubSpotSettings(base_url="http://127.0.0.1:9", access_token="test-token"),
            brevo=BrevoSettings(base_url="http://127.0.0.1:9/v3", api_key="test-brevo-key"),
        ),
        database=DatabaseSettings(url=url),
        sync=SyncSettings(**sync),
    )


class FakeWork:
    """Fake pulls and reconciliations that record who ran what, and how many at once."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[tuple[str, str]] = []
        self.active: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.fail: set[str] = set()

    async def _work(self, object_type: str, what: str) -> Outcome:
        self.active[object_type] += 1
        self.most[object_type] = max(self.most[object_type], self.active[object_type])
        self.calls.append((object_type, what))
        try:
            await asyncio.sleep(self.seconds)
            if what in self.fail:
                raise RuntimeError(f"{what} broke (token test-token)")
            return Outcome(counts=Counter({f"{what}_read": 2, "linked": 1}))
        finally:
            self.active[object_type] -= 1

    async def pull(self, object_type: str, system: System, stop: Callable[[], bool]) -> Outcome:
        return await self._work(object_type, system)

    async def reconcile(self, object_type: str) -> Outcome:
        return await self._work(object_type, "reconcile")


@asynccontextmanager
async def daemon(
    url: str,
    work: FakeWork,
    *,
    worker: str = "test-worker",
    pull: Callable[[str, System, Callable[[], bool]], Awaitable[Outcome]] | None = None,
    sync: dict[str, float] | None = None,
    **kw: object,
) -> AsyncIterator[Daemon]:
    settings = make_settings(url, **(sync or {}))
    kw.setdefault("lease_wait", 0.0)  # skip at once when another daemon holds the lease
    async with Runtime.open(settings, load_engines=False) as rt:
        yield Daemon(
            rt,
            worker_id=worker,
            objects=["contacts"],
            pull=pull or work.pull,
            reconcile=work.reconcile,
            **kw,  # type: ignore[arg-type]
        )


async def all_runs(d: Daemon) -> list[tuple[str, str | None, str, str | None]]:
    async with d.sessions() as s:
        rows = await s.execute(sa.select(Run.kind, Run.system, Run.status, Run.error))
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_run_once_order_failure_recorded_and_isolated(migrated_url: str) -> None:
    work = FakeWork()
    work.fail.add("hubspot")
    async with daemon(migrated_url, work) as d:
        results = await d.run_once()
        assert [(r.job.name, r.status) for r in results] == [
            ("pull:hubspot:contacts", "failed"),
            ("pull:brevo:contacts", "ok"),
        ]  # the first pull is a full compare: no reconciliation before an interval
        assert results[1].counts == {"brevo_read": 2, "linked": 1}
        recorded = await all_runs(d)
        assert recorded[0][:3] == ("pull", "hubspot", "failed")
        assert "RuntimeError: hubspot broke" in (recorded[0][3] or "")
        assert "test-token" not in (recorded[0][3] or "")  # scrubbed
        assert recorded[1] == ("pull", "brevo", "ok", None)

        results = await d.run_once(reconcile=True)
        assert [r.job.kind for r in results] == ["pull", "pull", "reconcile"]
        assert work.calls[-1] == ("contacts", "reconcile")


async def test_reconcile_due(migrated_url: str) -> None:
    now = [T0]
    work = FakeWork()
    hour = timedelta(hours=1)
    async with daemon(
        migrated_url, work, sync={"reconcile_interval": 3600}, clock=lambda: now[0]
    ) as d:
        assert await d.reconcile_due_at("contacts") == T0 + hour  # never pulled
        assert [r.job.kind for r in await d.run_once()] == ["pull", "pull"]
        now[0] = T0 + timedelta(minutes=30)
        # the first pull was a full compare: the reconciliation follows an interval later
        assert await d.reconcile_due_at("contacts") == T0 + hour
        assert [r.job.kind for r in await d.run_once()] == ["pull", "pull"]
        now[0] = T0 + 2 * hour
        assert [r.job.kind for r in await d.run_once()][-1] == "reconcile"
        assert await d.reconcile_due_at("contacts") == T0 + 3 * hour


async def test_two_daemons_never_run_one_object_at_once(migrated_url: str) -> None:
    work = FakeWork(seconds=0.03)
    async with (
        daemon(migrated_url, work, worker="a") as a,
        daemon(migrated_url, work, worker="b") as b,
    ):

        async def cycles(d: Daemon) -> list[str]:
            statuses: list[str] = []
            for _ in range(6):
                statuses += [r.status for r in await d.run_once()]
            return statuses

        got_a, got_b = await asyncio.gather(cycles(a), cycles(b))
        assert work.most["contacts"] == 1
        assert set(got_a + got_b) <= {"ok", "skipped"}
        assert "skipped" in got_a + got_b
        assert got_a.count("ok") + got_b.count("ok") == len(work.calls)

        # A long pull by a: b's pull of the same object is skipped, not run alongside.
        slow = FakeWork(seconds=0.3)
        a._pull = slow.pull
        first = asyncio.create_task(a.run_job(JobSpec("pull", "contacts", "hubspot")))
        await asyncio.sleep(0.1)
        second = await b.run_job(JobSpec("pull", "contacts", "brevo"))
        assert second.status == "skipped" and (await first).status == "ok"


async def test_dead_holders_lease_is_taken_over_after_expiry(migrated_url: str) -> None:
    now = [T0]
    work = FakeWork()
    async with daemon(migrated_url, work, clock=lambda: now[0]) as d:
        async with d.sessions() as s, s.begin():
            await leases.acquire(s, lease_name("contacts"), "dead", timedelta(seconds=60), T0)
            await runs.start_run(s, "pull", "hubspot", "contacts", T0)  # the dead one's run
        now[0] = T0 + timedelta(seconds=30)
        job = JobSpec("pull", "contacts", "hubspot")
        assert (await d.run_job(job)).status == "skipped"
        assert work.calls == []
        now[0] = T0 + timedelta(seconds=61)
        assert (await d.run_job(job)).status == "ok"
        statuses = [r[2] for r in await all_runs(d)]
        assert statuses == ["interrupted", "ok"]


async def test_lost_lease_cancels_the_job(migrated_url: str) -> None:
    work = FakeWork(seconds=2.0)
    async with daemon(migrated_url, work, lease_ttl=timedelta(seconds=0.3)) as d:
        task = asyncio.create_task(d.run_job(JobSpec("pull", "contacts", "hubspot")))
        await asyncio.sleep(0.15)
        async with d.sessions() as s, s.begin():
            await s.execute(sa.update(Lease).values(holder="thief"))
        result = await asyncio.wait_for(task, timeout=2)
        assert result.status == "failed" and result.error == "lease lost to another daemon"
        assert (await all_runs(d))[0][2] == "failed"


async def test_scheduler_repeats_and_stops_after_the_batch(sqlite_url: str) -> None:
    from connector.store import db

    db.upgrade(sqlite_url)
    batches: list[int] = []
    long_pull = asyncio.Event()

    async def careful(object_type: str, system: System, stop: Callable[[], bool]) -> Outcome:
        limit = 5 if len(batches) < 3 else 1000
        if limit > 5:
            long_pull.set()
        n = 0
        while not stop() and n < limit:  # checks stop between batches
            await asyncio.sleep(0.01)
            n += 1
        batches.append(n)
        return Outcome(counts=Counter({"batches": n}))

    work = FakeWork()
    async with daemon(sqlite_url, work, pull=careful, sync={"poll_interval": 0.05}) as d:
        runner = asyncio.create_task(d.run())
        await asyncio.wait_for(long_pull.wait(), timeout=3)  # scheduled again and again
        d.stop()
        await asyncio.wait_for(runner, timeout=3)
        assert d.scheduler is not None and not d.scheduler.running
        statuses = [r[2] for r in await all_runs(d)]
        assert len(statuses) >= 4 and set(statuses) == {"ok"}  # the one in flight ended well
        assert batches[-1] < 1000


async def test_stop_cancels_a_job_that_ignores_it_after_the_grace(sqlite_url: str) -> None:
    from connector.store import db

    db.upgrade(sqlite_url)
    started_work = asyncio.Event()

    async def stubborn(object_type: str, system: System, stop: Callable[[], bool]) -> Outcome:
        started_work.set()
        await asyncio.sleep(60)
        return Outcome()

    async with daemon(sqlite_url, FakeWork(), pull=stubborn, stop_grace=0.2) as d:
        runner = asyncio.create_task(d.run())
        await asyncio.wait_for(started_work.wait(), timeout=3)
        started = time.monotonic()
        d.stop()
        await asyncio.wait_for(runner, timeout=3)
        assert time.monotonic() - started < 2
        assert [r[2] for r in await all_runs(d)] == ["interrupted"]
        async with d.sessions() as s:
            assert await s.scalar(sa.select(sa.func.count()).select_from(Lease)) == 0


@pytest.mark.parametrize("kind", ["pull", "reconcile"])
def test_job_names(kind: str) -> None:
    spec = JobSpec(kind, "contacts", "brevo" if kind == "pull" else None)  # type: ignore[arg-type]
    assert spec.name == ("pull:brevo:contacts" if kind == "pull" else "reconcile:contacts")


async def test_stop_during_run_once_interrupts_and_returns(migrated_url: str) -> None:
    started_work = asyncio.Event()

    async def stubborn(object_type: str, system: System, stop: Callable[[], bool]) -> Outcome:
        started_work.set()
        await asyncio.sleep(60)
        return Outcome()

    async with daemon(migrated_url, FakeWork(), pull=stubborn, stop_grace=0.2) as d:
        cycle = asyncio.create_task(d.run_once())
        await asyncio.wait_for(started_work.wait(), timeout=3)
        d.stop()
        results = await asyncio.wait_for(cycle, timeout=3)
        assert [(r.job.name, r.status) for r in results] == [
            ("pull:hubspot:contacts", "interrupted")
        ]  # and the Brevo pull never started
        assert [r[2] for r in await all_runs(d)] == ["interrupted"]


async def test_an_inbox_pass_runs_between_a_pulls_batches(migrated_url: str) -> None:
    """A webhook pass that comes while a pull runs gets a turn at the pull's next batch
    boundary (under its lock and lease), not after the whole pull; the pull waits for it."""
    order: list[str] = []
    entered = asyncio.Event()
    d_ref: list[Daemon] = []

    async def pull(object_type: str, system: System, stop: Callable[[], bool]) -> Outcome:
        order.append(f"{system} batch 1")
        entered.set()
        await asyncio.sleep(0.05)  # the webhook pass arrives and waits meanwhile
        await d_ref[0].let_worker_in(object_type)
        order.append(f"{system} batch 2")
        return Outcome()

    async def webhook_pass(d: Daemon) -> None:
        await entered.wait()
        async with d.inbox_lease("contacts"):
            order.append("webhook pass")
            async with d.sessions() as s:  # the pull's engine lease covers it
                holder = await s.scalar(
                    sa.select(Lease.holder).where(Lease.name == lease_name("contacts"))
                )
            assert holder == d.worker_id

    async with daemon(migrated_url, FakeWork(), pull=pull) as d:
        d_ref.append(d)
        results, _ = await asyncio.gather(
            d.run_job(JobSpec("pull", "contacts", "hubspot")), webhook_pass(d)
        )
        assert results.status == "ok"
        assert order == ["hubspot batch 1", "webhook pass", "hubspot batch 2"]
        # no pull running: the pass takes the lock and the lease itself, as before
        async with d.inbox_lease("contacts"):
            order.append("alone")
        assert order[-1] == "alone"


async def test_an_inbox_pass_waiting_for_the_lock_takes_the_turn_of_the_pull_that_gets_it(
    migrated_url: str,
) -> None:
    """The pass was already waiting (behind a reconciliation) when the pull took the lock:
    it still runs at the pull's first batch boundary, not after the pull."""
    order: list[str] = []
    d_ref: list[Daemon] = []

    async def pull(object_type: str, system: System, stop: Callable[[], bool]) -> Outcome:
        order.append("pull batch 1")
        await asyncio.sleep(0.05)
        await d_ref[0].let_worker_in(object_type)
        order.append("pull batch 2")
        return Outcome()

    async def webhook_pass(d: Daemon) -> None:
        await asyncio.sleep(0.02)  # the reconciliation holds the lock, the pull waits for it
        async with d.inbox_lease("contacts"):
            order.append("webhook pass")

    async def pull_job(d: Daemon) -> JobResult:
        await asyncio.sleep(0.01)
        return await d.run_job(JobSpec("pull", "contacts", "hubspot"))

    async with daemon(migrated_url, FakeWork(seconds=0.1), pull=pull) as d:
        d_ref.append(d)
        first, second, _ = await asyncio.gather(
            d.run_job(JobSpec("reconcile", "contacts")), pull_job(d), webhook_pass(d)
        )
        assert (first.status, second.status) == ("ok", "ok")
        assert order == ["pull batch 1", "webhook pass", "pull batch 2"]


async def test_an_inbox_pass_sees_a_pull_that_takes_guests_in_the_step_it_began_to_wait(
    migrated_url: str,
) -> None:
    """The pull (holding the lock) starts taking guests before the waiting pass was even
    scheduled again: the pass still gets its turn at the pull's next batch boundary, not after
    the pull."""
    order: list[str] = []
    async with daemon(migrated_url, FakeWork()) as d:
        lock = d._locks["contacts"]
        await lock.acquire()  # the pull's job took the lock; it takes its leases meanwhile

        async def webhook_pass() -> None:
            async with d.inbox_lease("contacts"):
                order.append("webhook pass")

        waiting = asyncio.create_task(webhook_pass())
        await asyncio.sleep(0)  # the pass waits for the lock (or a turn) now
        async with d._hosting(JobSpec("pull", "contacts", "hubspot")):  # no await before
            await asyncio.sleep(0.05)
            await d.let_worker_in("contacts")
            order.append("pull batch 2")
        lock.release()
        await waiting
    assert order == ["webhook pass", "pull batch 2"]


async def test_a_stop_frees_the_leases_of_dead_processes_of_this_host(migrated_url: str) -> None:
    """A daemon killed with SIGKILL left its leases; its successor stops before the jobs that
    would have taken them over ran (they waited for the lock): the stop frees them. A live
    process's lease and another host's stay."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    host = socket.gethostname()
    dead = f"{host}:{proc.pid}:dead00"
    alive = f"{host}:{os.getpid()}:other0"  # this process: alive
    remote = "elsewhere:1:abcdef"
    held = {
        "pull:hubspot:contacts": dead,
        lease_name("contacts"): dead,
        "pull:brevo:contacts": remote,
        "pull:hubspot:deals": alive,
    }
    async with daemon(migrated_url, FakeWork()) as d:
        async with d.sessions() as s, s.begin():
            for name, holder in held.items():
                assert await leases.acquire(s, name, holder, timedelta(seconds=60), d.clock())
        await d.close()
        async with d.sessions() as s:
            left = await leases.holders(s)
    assert left == [("pull:brevo:contacts", remote), ("pull:hubspot:deals", alive)]
