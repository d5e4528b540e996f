"""The daemon: scheduled incremental pulls and reconciliations, leased, recorded, stoppable.

:class:`Daemon` runs, per enabled object type, three jobs: the incremental pull of HubSpot and
of Brevo every ``sync.poll_interval`` seconds, and a full reconciliation every
``sync.reconcile_interval`` (APScheduler 3, ``max_instances=1``, ``coalesce=True``).

Two kinds of database lease make several daemons on one PostgreSQL safe (DESIGN §8):

- **The pull lease** ``pull:{side}:{object_type}`` (:func:`pull_lease_name`) says *which daemon
  runs that pull*. Under :meth:`Daemon.run` it is sticky: the first daemon to take it keeps it
  for as long as it lives, renewed by a heartbeat every third of ``lease_ttl`` between runs and
  during them, and gives it up only when it stops; the other daemons skip that pull. So each
  pull runs in exactly one daemon, once per interval (not once per daemon). A daemon killed
  with SIGKILL stops renewing: its pull leases expire after ``lease_ttl`` and the next daemon
  whose pull comes due takes them over (at once when the dead holder was a process of this
  host, :func:`holder_is_dead`). ``run --once`` takes the pull lease for the run only.
- **The engine lease** ``sync:{object_type}`` (:func:`lease_name`) is the engine-pass lock:
  whatever writes one object type — a pull, the reconciliation, an inbox-worker pass,
  ``resync``, ``dlq retry`` — holds it, because those passes share links, field state, cursors
  and the resync stage table, and two passes creating the same new contact at once would
  create it twice. A pull holds its pull lease *and* the engine lease while it runs; it waits
  up to ``lease_wait`` seconds for the engine lease (an inbox pass of another daemon usually
  holds it for a moment) before skipping the run. The pull lease alone cannot be the lock:
  the HubSpot and Brevo pulls of one object type, owned by two daemons, would run at once.

Every job run:

1. waits for its object type's in-process lock (the jobs of one object type never overlap);
2. takes its pull lease (pulls only; held elsewhere → the run is skipped), then the engine
   lease (see above). Both are renewed every third of ``lease_ttl`` while the job runs; if
   either is lost (the database said another holder has it) the job is cancelled;
3. closes the ``running`` runs of a dead holder of that lease (``interrupted``), then records
   its own run (``start_run`` … ``finish_run`` with the outcome's counts, ``ok`` or ``failed``
   and the error) and logs one line with the counts.

A failing job is logged and recorded; it never stops the daemon. :meth:`Daemon.stop` (SIGTERM,
SIGINT) lets the batch in flight finish (the pull checks ``stop`` between batches), waits at
most ``stop_grace`` seconds, cancels what is left (its run is recorded ``interrupted``; the
cursors were committed batch by batch, so nothing is lost), releases its leases — and those a
dead process of this host left behind (:meth:`Daemon.release_dead_leases`) — and returns.

Webhooks (``webhooks:`` in the config): :meth:`Daemon.run` also serves the intake app
(:mod:`connector.web`) on ``server.host:server.port`` and runs the inbox worker loop
(:class:`~connector.worker.InboxWorker`), whose engine passes hold the same per-object lock and
engine lease as the jobs (:meth:`Daemon.inbox_lease`); a pass that comes while a pull runs
gets a turn between the pull's batches (:meth:`Daemon.let_worker_in`). The worker's claims on
inbox rows last ``lease_ttl`` and are renewed while a pass runs; the claims of a dead worker
become claimable again when they expire, or at once when the heartbeat finds their holder was a
process of this host that died (:meth:`Daemon.reap_dead_claims`, also run at start). On stop
the web server stops accepting first, then the worker finishes its batch; the inbox is
durable, so whatever arrived is processed after the restart. :meth:`Daemon.run_once` drains
the inbox once after the pulls.

Operations: the daemon owns the process's one Prometheus registry (:attr:`Daemon.metrics`,
:mod:`connector.metrics`), shared by the web app's ``/metrics``, both API clients and the
engines; and :meth:`Daemon.run` purges what is past ``sync.retention_days`` once at start and
then daily (:mod:`connector.retention`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.config import ServerSettings
from connector.engine import Outcome
from connector.errors import ConnectorError, scrub
from connector.metrics import Metrics
from connector.onboarding.runner import HookRunner, RunnerResult
from connector.retention import RetentionResult, run_retention
from connector.runtime import Runtime
from connector.store import db, inbox, leases, runs
from connector.store.models import Run, System, utcnow
from connector.worker import InboxWorker, ObjectBusy, WorkerResult

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from connector.config import WebhookSettings
    from connector.web import WebServer

log = structlog.get_logger(__name__)

JobKind = Literal["pull", "reconcile"]
JobStatus = Literal["ok", "failed", "skipped", "interrupted"]
StopCheck = Callable[[], bool]
PullFn = Callable[[str, System, StopCheck], Awaitable[Outcome]]
"""``(object_type, system, stop) -> Outcome``: one incremental pull."""
ReconcileFn = Callable[[str], Awaitable[Outcome]]
"""``(object_type) -> Outcome``: one full reconciliation."""

SYSTEMS: tuple[System, ...] = ("hubspot", "brevo")
#: Default lease time to live; renewed every third of it while a job runs.
LEASE_TTL = timedelta(seconds=60)
#: Seconds a stop waits for the job in flight before cancelling it (systemd waits 15).
STOP_GRACE = 6.0
#: Seconds a job that may run waits for the engine lease held by another daemon.
LEASE_WAIT = 5.0
#: Most failure texts joined into a run's error.
_MAX_FAILURES_SHOWN = 5


def default_worker_id() -> str:
    """``host:pid:random``: unique per process, readable in the ``leases`` table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def holder_is_dead(holder: str) -> bool:
    """Whether a lease holder is a process of this host that no longer runs.

    Holders are ``host:pid:random`` (:func:`default_worker_id`). A process killed with
    SIGKILL cannot release its lease; on its own host it is known dead at once, so a restart
    need not wait for the lease to expire. Holders on other hosts wait for expiry.
    """
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


async def acquire_lease(
    session: AsyncSession, name: str, holder: str, ttl: timedelta, now: datetime
) -> bool:
    """Take a lease: free, expired, ours, or held by a dead process of this host."""
    if await leases.acquire(session, name, holder, ttl, now):
        return True
    current = await leases.current_holder(session, name, now)
    if current is not None and holder_is_dead(current):
        log.warning("lease.taken_from_dead_process", lease=name, dead=current)
        return await leases.take_over(session, name, holder, current, ttl, now)
    return False


def lease_name(object_type: str) -> str:
    """The database lease every job of ``object_type`` holds while it runs.

    ``connector resync`` should hold it too, so that it never overlaps a daemon's job.
    """
    return f"sync:{object_type}"


def pull_lease_name(system: System, object_type: str) -> str:
    """The database lease that says which daemon runs the pull of ``system``'s
    ``object_type`` (sticky under :meth:`Daemon.run`; see the module docstring)."""
    return f"pull:{system}:{object_type}"


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: a pull of one side, or the reconciliation, of one object type."""

    kind: JobKind
    object_type: str
    system: System | None = None

    @property
    def name(self) -> str:
        if self.kind == "pull":
            return f"pull:{self.system}:{self.object_type}"
        return f"reconcile:{self.object_type}"


@dataclass
class JobResult:
    """What one job run did; ``outcome`` is ``None`` unless the job ran to its end."""

    job: JobSpec
    status: JobStatus
    outcome: Outcome | None = None
    error: str | None = None
    run_id: int | None = None
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


class LeaseBusy(ObjectBusy):
    """A daemon kept the object type's lease longer than a command would wait."""


@asynccontextmanager
async def holding_lease(
    sessions: async_sessionmaker[AsyncSession],
    object_type: str,
    holder: str,
    *,
    ttl: timedelta = LEASE_TTL,
    wait: float = 60.0,
    poll: float = 0.5,
) -> AsyncIterator[None]:
    """Hold ``object_type``'s lease around a one-off command (``dlq retry``, ``resync``).

    Waits up to ``wait`` seconds for a daemon's job to finish with it, renews it while the
    command runs and releases it after; raises :class:`LeaseBusy` if it stays taken.
    """
    name = lease_name(object_type)
    deadline = time.monotonic() + wait
    while True:
        async with sessions() as s, s.begin():
            if await acquire_lease(s, name, holder, ttl, utcnow()):
                break
        if time.monotonic() >= deadline:
            raise LeaseBusy(
                f"a daemon is syncing {object_type} and kept it for {wait:g} s; try again"
            )
        await asyncio.sleep(poll)

    async def renew() -> None:
        while True:
            await asyncio.sleep(ttl.total_seconds() / 3)
            with contextlib.suppress(Exception):
                async with sessions() as s, s.begin():
                    await leases.renew(s, name, holder, ttl, utcnow())

    keeper = asyncio.create_task(renew())
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        async with sessions() as s, s.begin():
            await leases.release(s, name, holder)


class Daemon:
    """The scheduler of one process; see the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        worker_id: str | None = None,
        objects: Sequence[str] | None = None,
        pull: PullFn | None = None,
        reconcile: ReconcileFn | None = None,
        lease_ttl: timedelta = LEASE_TTL,
        lease_wait: float = LEASE_WAIT,
        stop_grace: float = STOP_GRACE,
        clock: Callable[[], datetime] = utcnow,
        worker: InboxWorker | None = None,
        inbox_idle_wait: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.sessions = runtime.sessions
        self.worker_id = worker_id or default_worker_id()
        self.objects = list(
            objects if objects is not None else [*runtime.engines, *runtime.objects]
        )
        self._pull = pull or self._default_pull
        self._reconcile = reconcile or self._default_reconcile
        self.lease_ttl = lease_ttl
        self.lease_wait = lease_wait
        self.stop_grace = stop_grace
        self.clock = clock
        self._stopping = asyncio.Event()
        self._locks = {o: asyncio.Lock() for o in self.objects}
        #: per object type whose pull runs now, the inbox passes waiting for a turn in it
        #: (see _let_worker_in)
        self._guests: dict[str, list[tuple[asyncio.Future[bool], asyncio.Future[None]]]] = {}
        #: per object type, resolved when a pull of it next starts taking guests (a future,
        #: not an event: a waiter not yet scheduled when it is resolved still sees it)
        self._hosting_started: dict[str, asyncio.Future[None]] = {}
        self._running: set[asyncio.Task[JobResult]] = set()
        self._pullers: dict[str, object] = {}
        self.scheduler: AsyncIOScheduler | None = None
        self.log = log.bind(worker=self.worker_id)
        self.worker = worker or InboxWorker(
            runtime, worker_id=self.worker_id, guard=self.inbox_lease, lease=lease_ttl
        )
        #: The pull leases this daemon holds (kept between runs while :attr:`keep_pull_leases`).
        self.owned: set[str] = set()
        #: Sticky pull leases: keep a pull lease after its run (set by :meth:`run`).
        self.keep_pull_leases = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        hooks = self.settings.webhooks
        #: the coalescing window (``webhooks.coalesce_seconds``), at least 50 ms between polls
        self.inbox_idle_wait = (
            inbox_idle_wait
            if inbox_idle_wait is not None
            else max(0.05, hooks.coalesce_seconds if hooks is not None else 1.0)
        )
        #: What the last :meth:`drain_inbox` did (``run --once`` prints it).
        self.last_inbox: WorkerResult | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._server: WebServer | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._listener: socket.socket | None = None
        #: the process's Prometheus metrics, shared by the web app, the clients and engines
        self.metrics = self._instrument()

    # --- jobs -------------------------------------------------------------------------------

    def jobs(self) -> list[JobSpec]:
        """Every job, in cycle order: per object, pull HubSpot, pull Brevo, reconcile."""
        specs: list[JobSpec] = []
        for object_type in self.objects:
            obj = self.runtime.objects.get(object_type)
            systems = obj.pull_systems if obj is not None else SYSTEMS
            specs += [JobSpec("pull", object_type, system) for system in systems]
            specs.append(JobSpec("reconcile", object_type))
        return specs

    def pulled_objects(self) -> dict[str, list[str]]:
        """Per side, the object types this daemon pulls there (what ``/healthz`` judges)."""
        pulled: dict[str, list[str]] = {system: [] for system in SYSTEMS}
        for spec in self.jobs():
            if spec.kind == "pull" and spec.system is not None:
                pulled[spec.system].append(spec.object_type)
        return pulled

    async def _default_pull(self, object_type: str, system: System, stop: StopCheck) -> Outcome:
        from connector.pull import Puller

        if object_type in self.runtime.objects:
            return await self.runtime.objects[object_type].pull(system, stop=stop)
        puller = self._pullers.get(object_type)
        if not isinstance(puller, Puller):
            lookback = timedelta(seconds=self.settings.sync.lookback_seconds)
            puller = Puller(self.runtime.engines[object_type], lookback=lookback)
            self._pullers[object_type] = puller
        return await puller.pull(
            system, stop=stop, between=functools.partial(self.let_worker_in, object_type)
        )

    @asynccontextmanager
    async def _hosting(self, spec: JobSpec) -> AsyncIterator[None]:
        """While a pull runs (its lock held): inbox passes that come for its object type
        queue for a turn in it (:meth:`let_worker_in`) instead of waiting for the lock."""
        if spec.kind != "pull":
            yield
            return
        self._guests[spec.object_type] = []
        started = self._hosting_started.pop(spec.object_type, None)
        if started is not None and not started.done():
            started.set_result(None)  # wakes the waiters of now only
        try:
            yield
        finally:
            for granted, _ in self._guests.pop(spec.object_type, []):
                if not granted.done():
                    granted.set_result(False)  # no turn: wait for the lock as usual

    async def let_worker_in(self, object_type: str) -> None:
        """Between two batches of a pull: the inbox passes waiting for ``object_type`` run
        now, one after the other, inside the pull's turn — under its lock and its engine
        lease — instead of after the whole pull (webhooks stay fast while a long pull runs).
        The pull's next batches are safe from them: records synced meanwhile are read again
        (the engine's ``read_at``)."""
        guests = self._guests.get(object_type, [])
        while guests and not self._stopping.is_set():
            granted, done = guests.pop(0)
            if granted.done():  # the waiting pass was cancelled
                continue
            granted.set_result(True)
            cancelled = False
            while not done.done():  # even if cancelled: the guest runs under our lease
                try:
                    await asyncio.shield(done)
                except asyncio.CancelledError:
                    cancelled = True
            if cancelled:
                raise asyncio.CancelledError

    async def _default_reconcile(self, object_type: str) -> Outcome:
        from connector.resync import resync

        if object_type in self.runtime.objects:
            return await self.runtime.objects[object_type].resync(mode="reconcile")
        return await resync(self.runtime.engines[object_type], mode="reconcile")

    async def _call(self, spec: JobSpec) -> Outcome:
        if spec.kind == "pull":
            assert spec.system is not None
            return await self._pull(spec.object_type, spec.system, self._stopping.is_set)
        return await self._reconcile(spec.object_type)

    # --- one job run ------------------------------------------------------------------------

    async def run_job(self, spec: JobSpec) -> JobResult:
        """Run one job now: lock, lease, run record, the work, log line. Never raises
        (except ``CancelledError``, after recording the run as ``interrupted``)."""
        async with self._locks[spec.object_type]:
            if self._stopping.is_set():
                return JobResult(spec, "skipped", error="stopping")
            pull = self._pull_lease(spec)
            if pull is not None and not await self._take(pull):
                self.log.info("job.skipped", job=spec.name, reason="pull run by another daemon")
                return JobResult(spec, "skipped", error="pull run by another daemon")
            try:
                if not await self._acquire(spec):
                    self.log.info(
                        "job.skipped", job=spec.name, reason="lease held by another daemon"
                    )
                    return JobResult(spec, "skipped", error="lease held by another daemon")
                try:
                    async with self._hosting(spec):
                        return await self._leased(spec)
                finally:
                    await self._release(lease_name(spec.object_type))
            finally:
                if pull is not None and not self.keep_pull_leases:
                    await self._release(pull)

    def _pull_lease(self, spec: JobSpec) -> str | None:
        if spec.kind != "pull" or spec.system is None:
            return None
        return pull_lease_name(spec.system, spec.object_type)

    async def _take(self, name: str) -> bool:
        """Take (or keep) lease ``name``; remember it as owned."""
        async with self.sessions() as s, s.begin():
            took = await acquire_lease(s, name, self.worker_id, self.lease_ttl, self.clock())
        if took and name not in self.owned:
            self.owned.add(name)
            self.log.info("lease.taken", lease=name)
        return took

    async def _acquire(self, spec: JobSpec) -> bool:
        """Take the engine lease, waiting up to ``lease_wait`` seconds for another daemon."""
        name = lease_name(spec.object_type)
        deadline = time.monotonic() + self.lease_wait
        while True:
            now = self.clock()
            async with self.sessions() as s, s.begin():
                if await acquire_lease(s, name, self.worker_id, self.lease_ttl, now):
                    # We hold the lease: a run of this job still "running" belongs to a dead
                    # holder.
                    closed = await runs.mark_interrupted(
                        s, now, kind=spec.kind, system=spec.system, object_type=spec.object_type
                    )
                    break
            if time.monotonic() >= deadline or self._stopping.is_set():
                return False
            await asyncio.sleep(min(0.2, max(self.lease_wait / 10, 0.01)))
        if closed:
            self.log.warning("job.interrupted_runs_closed", job=spec.name, runs=closed)
        return True

    async def _release(self, name: str) -> None:
        self.owned.discard(name)
        with contextlib.suppress(Exception):
            async with self.sessions() as s, s.begin():
                await leases.release(s, name, self.worker_id)

    async def _renew(self, names: Sequence[str]) -> list[str]:
        """Renew ``names``; the ones another holder has now (lost). Raises on a DB error."""
        lost: list[str] = []
        async with self.sessions() as s, s.begin():
            for name in names:
                if not await leases.renew(s, name, self.worker_id, self.lease_ttl, self.clock()):
                    lost.append(name)
        for name in lost:
            self.owned.discard(name)
        return lost

    async def _keep_lease(
        self, spec: JobSpec, work: asyncio.Task[Outcome], lost: asyncio.Event
    ) -> None:
        """Renew the job's leases every third of their TTL; cancel ``work`` if one was lost."""
        every = self.lease_ttl.total_seconds() / 3
        names = [lease_name(spec.object_type)]
        pull = self._pull_lease(spec)
        if pull is not None:
            names.append(pull)
        while True:
            await asyncio.sleep(every)
            try:
                gone = await self._renew(names)
            except Exception as e:  # the database hiccuped: try again next time
                self.log.warning("lease.renew_failed", job=spec.name, error=str(e))
                continue
            if gone:
                self.log.error("lease.lost", job=spec.name, leases=gone)
                lost.set()
                work.cancel()
                return

    async def _heartbeat(self) -> None:
        """While :meth:`run` runs: renew the owned pull leases between their runs, and free
        the inbox claims of dead local workers, every third of ``lease_ttl``."""
        every = self.lease_ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                gone = await self._renew(sorted(self.owned))
                await self.reap_dead_claims()
            except Exception as e:  # the database hiccuped: try again next time
                self.log.warning("lease.heartbeat_failed", error=scrub(str(e)))
                continue
            for name in gone:
                self.log.warning("lease.lost", lease=name)

    async def reap_dead_claims(self) -> int:
        """Make the inbox rows claimed by dead processes of this host claimable now.

        A worker killed with SIGKILL leaves its rows ``processing`` until their claim expires
        (``lease_ttl``); on its own host it is known dead at once (:func:`holder_is_dead`), so
        a restart picks its work up without waiting. Claims of other hosts wait for expiry.
        """
        now = self.clock()
        async with self.sessions() as s, s.begin():
            holders = await inbox.claim_holders(s, now)
            dead = [h for h in holders if h != self.worker_id and holder_is_dead(h)]
            freed = 0
            for holder in dead:
                freed += await inbox.expire_claims(s, holder, now)
        if freed:
            self.log.warning("worker.dead_claims_freed", holders=dead, events=freed)
        return freed

    async def release_dead_leases(self) -> list[str]:
        """Free the leases still held by dead processes of this host; their names.

        A daemon killed with SIGKILL leaves its leases behind; the next one takes each over
        when the job that needs it runs. One that stops before that job ran (a stop while the
        job waited for its object type's lock) frees them on its way out, so that a stopped
        daemon leaves no lease of this host behind. A dead holder's ``running`` runs are
        closed by the next holder of the engine lease, as after an expiry.
        """
        freed: list[str] = []
        try:
            async with self.sessions() as s, s.begin():
                for name, holder in await leases.holders(s):
                    if holder_is_dead(holder) and await leases.release(s, name, holder):
                        freed.append(name)
        except Exception as e:  # they expire anyway
            self.log.warning("lease.dead_release_failed", error=scrub(str(e)))
            return []
        if freed:
            self.log.warning("lease.dead_released", leases=freed)
        return freed

    async def _leased(self, spec: JobSpec) -> JobResult:
        started = time.monotonic()
        async with self.sessions() as s, s.begin():
            run_id = await runs.start_run(s, spec.kind, spec.system, spec.object_type, self.clock())
        lost = asyncio.Event()
        work = asyncio.create_task(self._call(spec), name=spec.name)
        keeper = asyncio.create_task(self._keep_lease(spec, work, lost))
        result: JobResult
        try:
            outcome = await work
        except asyncio.CancelledError:
            if not lost.is_set() or _current_task_cancelling():
                # stopped: the work is cancelled with us; record it and go on cancelling
                await self._finish(run_id, spec, "interrupted", {}, "stopped", started)
                raise
            result = JobResult(spec, "failed", error="lease lost to another daemon")
        except Exception as e:
            self.log.exception("job.failed", job=spec.name, error=str(e))
            result = JobResult(spec, "failed", error=f"{type(e).__name__}: {e}")
        else:
            counts = {k: int(v) for k, v in outcome.counts.items()}
            result = JobResult(spec, "ok", outcome, _failures_text(outcome.failures), counts=counts)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        result.run_id = run_id
        final: Literal["ok", "failed"] = "ok" if result.status == "ok" else "failed"
        await self._finish(run_id, spec, final, result.counts, result.error, started)
        result.seconds = time.monotonic() - started
        return result

    async def _finish(
        self,
        run_id: int,
        spec: JobSpec,
        status: Literal["ok", "failed", "interrupted"],
        counts: dict[str, int],
        error: str | None,
        started: float,
    ) -> None:
        try:
            async with self.sessions() as s, s.begin():
                await runs.finish_run(s, run_id, status, counts, error, self.clock())
        except Exception as e:  # the next start closes it as interrupted
            self.log.error("run.record_failed", job=spec.name, run=run_id, error=str(e))
        seconds = round(time.monotonic() - started, 3)
        level = "info" if status == "ok" else "warning"
        getattr(self.log, level)(
            "job.done",
            job=spec.name,
            status=status,
            seconds=seconds,
            counts=counts,
            **({"error": scrub(error)} if error else {}),
        )

    # --- the inbox worker and the web app ---------------------------------------------------

    @asynccontextmanager
    async def inbox_lease(self, object_type: str) -> AsyncIterator[None]:
        """The worker's guard: ``object_type``'s in-process lock and database lease, as a job
        holds them. A job of this daemon is waited for (the claimed events stay claimed, their
        claims renewed, and go through the moment the job ends: no busy pause) — a pull's
        only until its next batch boundary, where the pass runs inside the pull's turn
        (:meth:`let_worker_in`); another daemon's lease is :class:`LeaseBusy` at once (the
        events are handed back)."""
        lock = self._locks.setdefault(object_type, asyncio.Lock())
        if self._stopping.is_set():
            raise LeaseBusy("the daemon is stopping")
        while not await self._lock_or_turn(object_type, lock):
            # a pull of this daemon runs: wait for a turn between its batches
            guests = self._guests.get(object_type)
            if guests is None:  # it ended already
                continue
            loop = asyncio.get_running_loop()
            granted: asyncio.Future[bool] = loop.create_future()
            done: asyncio.Future[None] = loop.create_future()
            guests.append((granted, done))
            try:
                if await granted:  # under the pull's lease: a worker run "running" is dead
                    await self._close_dead_worker_runs(object_type)
                    yield
                    return
            finally:
                if not done.done():
                    done.set_result(None)
                if not granted.done():
                    granted.cancel()
            # that pull ended without a turn for us: the lock, or the next pull's turn
        try:
            if self._stopping.is_set():
                raise LeaseBusy("the daemon is stopping")
            async with holding_lease(
                self.sessions, object_type, self.worker_id, ttl=self.lease_ttl, wait=0
            ):
                await self._close_dead_worker_runs(object_type)
                yield
        finally:
            lock.release()

    async def _close_dead_worker_runs(self, object_type: str) -> None:
        """With the engine lease held: a worker run of ``object_type`` still "running"
        belongs to a process that died; record it ``interrupted``."""
        async with self.sessions() as s, s.begin():
            closed = await runs.mark_interrupted(
                s, self.clock(), kind="worker", object_type=object_type
            )
        if closed:
            self.log.warning("worker.interrupted_runs_closed", object=object_type, runs=closed)

    async def _lock_or_turn(self, object_type: str, lock: asyncio.Lock) -> bool:
        """``True`` once the worker holds ``lock``; ``False`` when a pull of this daemon holds
        it and takes guests (:meth:`let_worker_in`): the worker queues for a turn in it
        instead, even if that pull started while the worker was waiting for the lock."""
        if object_type in self._guests and lock.locked():
            return False
        host = self._hosting_started.get(object_type)
        if host is None or host.done():
            host = self._hosting_started[object_type] = asyncio.get_running_loop().create_future()
        acquire = asyncio.ensure_future(lock.acquire())
        either: set[asyncio.Future[Any]] = {acquire, host}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if acquire.done() and not acquire.cancelled():
                lock.release()
            else:
                acquire.cancel()
            raise
        if acquire.done():
            return True
        acquire.cancel()  # a cancelled acquire never ends holding the lock
        return False

    async def drain_inbox(self) -> WorkerResult:
        """One pass of the inbox worker; never raises (a broken pass says why in ``error``).

        Cancelled with the jobs once a stop's grace is over."""
        task = asyncio.create_task(self.worker.run_once(self._stopping), name="inbox pass")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            result = await task
        except Exception as e:
            error = scrub(f"{type(e).__name__}: {e}")
            self.log.error("worker.error", error=error)
            result = WorkerResult(error=error)
        self.last_inbox = result
        return result

    def web_app(self, hooks: WebhookSettings) -> Starlette:
        """The intake app as :meth:`start_web` serves it, on this daemon's metrics."""
        from connector.web import create_web_app

        hs = self.settings.connectors.hubspot
        secret = hs.app_client_secret.get_secret_value() if hs.app_client_secret else None
        token = hooks.brevo_token.get_secret_value() if hooks.brevo_token else None
        if secret is None:
            self.log.warning(
                "web.hubspot_webhooks_refused",
                reason="no connectors.hubspot.app_client_secret: every HubSpot request gets 401",
            )
        if token is None:
            self.log.warning(
                "web.brevo_webhooks_refused",
                reason="no webhooks.brevo_token: every Brevo request gets 401",
            )
        return create_web_app(
            sessions=self.sessions,
            hubspot_secret=secret,
            brevo_token=token,
            settings=hooks,
            server=self.settings.server or ServerSettings(),
            log_webhooks=hs.log_webhooks,
            metrics=self.metrics,
            objects=self.pulled_objects(),
            enabled_sides=[s for s in SYSTEMS if getattr(self.settings.connectors, s).enabled],
            started_at=self.clock(),
        )

    async def start_web(self, hooks: WebhookSettings) -> None:
        """Serve the webhook intake on ``server.host:server.port``; :class:`ConnectorError`
        if the address cannot be bound."""
        from connector.web import build_server

        listen = self.settings.server or ServerSettings()
        app = self.web_app(hooks)
        try:
            self._listener = _listen(listen.host, listen.port)
        except OSError as e:
            raise ConnectorError(
                f"server: cannot listen on {listen.host}:{listen.port} "
                f"({e.strerror or e}); change server.port or stop what uses it"
            ) from None
        server = build_server(app, listen)
        task = asyncio.create_task(server.serve(sockets=[self._listener]), name="web")
        self._server, self._server_task = server, task
        while not server.started:
            if task.done():
                task.result()  # re-raise the start-up error
                raise ConnectorError("webhooks: the web server stopped while starting")
            await asyncio.sleep(0.01)
        host, port = self._listener.getsockname()[:2]
        self.log.info(
            "web.listening",
            address=f"{host}:{port}",
            hubspot_path=hooks.hubspot_path,
            brevo_path=hooks.brevo_path,
        )

    @property
    def listening(self) -> bool:
        """Whether the webhook intake serves requests (after :meth:`start_web`)."""
        return self._server is not None and bool(self._server.started)

    def start_worker(self) -> None:
        """Run the inbox worker loop until :meth:`stop`."""
        self._worker_task = asyncio.create_task(
            self.worker.run(self._stopping, idle_wait=self.inbox_idle_wait), name="inbox worker"
        )
        self._background.add(self._worker_task)
        self._worker_task.add_done_callback(self._background.discard)

    # --- metrics and retention ---------------------------------------------------------------

    def _instrument(self) -> Metrics:
        """The process's one registry: the clients count their calls in it, and every engine
        pass (pull, reconciliation, inbox worker) counts the records it wrote."""
        metrics = Metrics()
        metrics.prepare(self.objects)
        self.runtime.hubspot.attach_metrics(metrics.api)
        self.runtime.brevo.attach_metrics(metrics.api)
        for engine in self.runtime.engines.values():
            engine.on_pass_counts = metrics.sync.count
        for obj in self.runtime.objects.values():
            obj.on_pass_counts = metrics.sync.count
        return metrics

    def schedule_retention(self) -> None:
        """Purge what is past ``sync.retention_days`` (:mod:`connector.retention`): once at
        start, then daily."""
        assert self.scheduler is not None
        self.scheduler.add_job(
            self.purge_retention,
            IntervalTrigger(days=1, timezone=UTC),
            id="retention",
            name="retention",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=self.clock(),
        )

    async def purge_retention(self) -> RetentionResult | None:
        """One purge, stopped between chunks by :meth:`stop`; never raises."""
        task = asyncio.create_task(
            run_retention(
                self.sessions,
                retention_days=self.settings.sync.retention_days,
                now=self.clock(),
                stop=self._stopping.is_set,
            ),
            name="retention",
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        try:
            return await task
        except asyncio.CancelledError:  # cancelled by a stop: the next start goes on
            if _current_task_cancelling():
                raise
            return None

    # --- post-sync hooks (onboarding, lifecycle triggers) ----------------------------------

    @functools.cached_property
    def hook_runner(self) -> HookRunner:
        """The hook runner of this daemon (its claims carry the daemon's worker id)."""
        rt = self.runtime
        return HookRunner(
            self.settings,
            hubspot=rt.hubspot,
            brevo=rt.brevo,
            sessions=self.sessions,
            worker_id=self.worker_id,
            is_dead=holder_is_dead,
        )

    async def drain_hooks(self) -> RunnerResult:
        """Run every hook job due now; never raises (a broken round is logged)."""
        try:
            result = await self.hook_runner.run_once(self._stopping)
        except Exception as e:
            error = scrub(f"{type(e).__name__}: {e}")
            self.log.error("hooks.error", error=error)
            return RunnerResult(errors=[error])
        if result.claimed:
            self.log.info("hooks.done", **result.summary())
        return result

    def start_hooks(self) -> None:
        """Run the hook runner until :meth:`stop` (one task beside the inbox worker)."""
        task = asyncio.create_task(self.hook_runner.run(self._stopping), name="hook runner")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- start, cycles, scheduler ----------------------------------------------------------

    async def prepare(self) -> None:
        """Bring the database to the newest schema (the daemon migrates on start)."""
        await asyncio.to_thread(db.upgrade, self.settings.database.url, "head")
        await self.hook_runner.prepare()

    async def run_once(
        self, *, reconcile: bool | None = None, inbox: bool = True
    ) -> list[JobResult]:
        """One cycle: per object, pull HubSpot, pull Brevo, then reconcile if due; then, with
        ``inbox``, one pass of the inbox worker (:attr:`last_inbox`).

        ``reconcile``: ``None`` reconciles the objects whose reconciliation is due
        (:meth:`reconcile_due_at`), ``True`` all, ``False`` none.
        """
        now = self.clock()
        due = {
            spec.object_type: reconcile is True
            or (reconcile is None and await self.reconcile_due_at(spec.object_type) <= now)
            for spec in self.jobs()
            if spec.kind == "reconcile"
        }
        results: list[JobResult] = []
        for spec in self.jobs():
            if self._stopping.is_set():
                break
            if spec.kind == "reconcile" and not due[spec.object_type]:
                continue
            results.append(await self._tracked(spec))
        if inbox and not self._stopping.is_set():
            try:
                await self.reap_dead_claims()
                await self.drain_inbox()
            except asyncio.CancelledError:  # the pass, cancelled by a stop: not us
                if _current_task_cancelling():
                    raise
        if not self._stopping.is_set():
            await self.drain_hooks()
        return results

    async def reconcile_due_at(self, object_type: str) -> datetime:
        """When the reconciliation of ``object_type`` is next due: ``reconcile_interval`` after
        the last full compare — the last successful reconciliation, else the first successful
        pull (a first pull is a full resync) — or after now if there was neither."""
        interval = timedelta(seconds=self.settings.sync.reconcile_interval)
        async with self.sessions() as s:
            last = [
                r
                for r in await runs.last_runs(s)
                if r.kind == "reconcile" and r.object_type == object_type
            ]
            if last and last[0].last_ok is not None:
                return last[0].last_ok.started_at + interval
            first_pull = await s.scalar(
                sa.select(sa.func.min(Run.started_at)).where(
                    Run.kind == "pull", Run.object_type == object_type, Run.status == "ok"
                )
            )
        return (first_pull or self.clock()) + interval

    async def _tracked(self, spec: JobSpec) -> JobResult:
        """Run a job as a task :meth:`stop` can cancel once its grace is over."""
        task = asyncio.create_task(self.run_job(spec), name=f"job {spec.name}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            return await task
        except asyncio.CancelledError:
            if _current_task_cancelling():
                raise
            return JobResult(spec, "interrupted", error="stopped")

    async def _scheduled(self, spec: JobSpec) -> None:
        """The coroutine APScheduler runs: one job run, its errors already handled."""
        if self._stopping.is_set():
            return
        with contextlib.suppress(asyncio.CancelledError):
            await self._tracked(spec)

    async def run(self) -> None:
        """Schedule every job (with ``webhooks:`` configured, also serve the intake and run
        the inbox worker) and run until :meth:`stop`; then stop gracefully."""
        hooks = self.settings.webhooks
        self.keep_pull_leases = True
        if hooks is not None:
            if not self.listening:  # ``connector demo`` starts the intake first
                await self.start_web(hooks)
            await self.reap_dead_claims()
            self.start_worker()
        self.start_hooks()
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="lease heartbeat")
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        now = self.clock()
        for spec in self.jobs():
            if spec.kind == "pull":
                seconds = self.settings.sync.poll_interval
                first = now
            else:
                seconds = self.settings.sync.reconcile_interval
                first = max(now, await self.reconcile_due_at(spec.object_type))
            self.scheduler.add_job(
                self._scheduled,
                IntervalTrigger(seconds=seconds, timezone=UTC),
                args=[spec],
                id=spec.name,
                name=spec.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=first,
            )
        self.schedule_retention()
        self.scheduler.start()
        self.log.info(
            "daemon.started",
            objects=self.objects,
            poll_interval=self.settings.sync.poll_interval,
            reconcile_interval=self.settings.sync.reconcile_interval,
            webhooks=hooks is not None,
        )
        await self._stopping.wait()
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop accepting webhooks, then let the jobs and the worker finish their batch."""
        if self._server is not None:
            self._server.should_exit = True  # closes the listener on its next tick
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()
        pending: set[asyncio.Task[Any]] = {*self._running, *self._background}
        if self._server_task is not None:
            pending.add(self._server_task)
        if pending:
            self.log.info("daemon.stopping", tasks=sorted(t.get_name() for t in pending))
            await asyncio.wait(pending, timeout=self.stop_grace + 2.0)
        if self._server_task is not None and not self._server_task.done():
            self._server_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._server_task
        if self._listener is not None:
            self._listener.close()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        for name in sorted(self.owned):  # the next daemon need not wait for them to expire
            await self._release(name)
        await self.release_dead_leases()
        self.log.info("daemon.stopped")

    async def close(self) -> None:
        """Stop, and close what :meth:`start_web` opened when :meth:`run` was never called."""
        self.stop()
        await self._shutdown()

    def stop(self) -> None:
        """Ask the daemon to stop: no new job starts; the job in flight ends its batch, or is
        cancelled after ``stop_grace`` seconds (its run is then recorded ``interrupted``)."""
        if self._stopping.is_set():
            return
        self.log.info("daemon.stop_requested")
        self._stopping.set()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to cancel
            asyncio.get_running_loop().call_later(self.stop_grace, self._cancel_running)

    def _cancel_running(self) -> None:
        for task in [*self._running, *self._background]:
            task.cancel()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT call :meth:`stop`."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 if ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _failures_text(failures: Sequence[str]) -> str | None:
    if not failures:
        return None
    shown = "; ".join(failures[:_MAX_FAILURES_SHOWN])
    more = len(failures) - _MAX_FAILURES_SHOWN
    return shown + (f" (+{more} more)" if more > 0 else "")


__all__ = [
    "LEASE_TTL",
    "LEASE_WAIT",
    "STOP_GRACE",
    "Daemon",
    "JobResult",
    "JobSpec",
    "LeaseBusy",
    "PullFn",
    "ReconcileFn",
    "default_worker_id",
    "holding_lease",
    "lease_name",
    "pull_lease_name",
]
