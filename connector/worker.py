"""The inbox worker: webhook events (and dirty keys) → one engine pass per object type.

Webhooks only mark records dirty (DESIGN §2): :meth:`InboxWorker.run_once` claims up to
``batch`` due inbox items (:func:`connector.store.inbox.claim`), groups them per object type,
coalesces them per record — a hundred events for one contact make one read — and, per object
type, first carries out the events that mean more than "read me"
(:meth:`connector.events.EventSemantics.apply`: deletions, merges, privacy deletions, restores,
opt-outs, and our own writes recognised by their echo hints), then hands the records left to
ONE :meth:`SyncEngine.sync` (``mode="incremental"``), which reads the current state of both
sides in batches. What the items name:

========================  ==============================================================
HubSpot event             ``object_id`` → ``hubspot_ids`` (a merge: its surviving id; a
                          deletion or privacy deletion: no read)
Brevo event               ``object_id`` (e-mail) → ``brevo_emails``; a numeric one → ``brevo_ids``
                          (``contactDeleted``: no read; campaign engagement: nothing)
pull dirty key            ``object_id`` → the ids of ``payload["system"]``
========================  ==============================================================

Outcomes per object type: the pass ran (its per-record failures are the engine's dead letters)
→ the items are ``done``; an event whose semantics failed, or that the mass-delete guard held
back (``sync.max_delete_share``; the refusal is logged and recorded as a failed ``worker``
run), is retried with backoff — :attr:`InboxWorker.force` (``run --once --force``) lets held
deletions through and makes them due at once; the pass raised → each item is retried with
exponential backoff and ends ``dead`` after ``max_attempts`` (visible in the ``runs`` record of
the pass and in the ``inbox`` table); the object type is busy — a job of the same daemon holds
its lock: the guard waits for it, the claims renewed meanwhile; another daemon holds its
lease: the items are released untried and claimed again later; no engine for the object type →
``done``, counted as ignored. Linked records the pass finds vanished are handed to the same
semantics at its end (:meth:`SyncEngine.settle_gone`). Events about a person purged for GDPR
(the privacy tombstones of :mod:`connector.store.purge`) are deleted at claim time, unread.

:meth:`InboxWorker.run` loops until its stop event; when a pass found nothing it sleeps
``idle_wait`` seconds, which is the coalescing window: events for one record that arrive
within it are read once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeVar

import structlog

from connector import events
from connector.engine import Outcome, SyncEngine
from connector.errors import ConnectorError, scrub
from connector.events import BREVO_KINDS, HUBSPOT_KINDS, EventKind, EventsResult, event_kind
from connector.objects.base import ObjectSync
from connector.objects.email_events import EMAIL_EVENTS, EmailEventsSync, follow_up
from connector.store import inbox, purge, runs
from connector.store.inbox import InboxInput, InboxItem
from connector.store.models import utcnow

if TYPE_CHECKING:
    from connector.runtime import Runtime

log = structlog.get_logger(__name__)

_R = TypeVar("_R")

LeaseGuard = Callable[[str], AbstractAsyncContextManager[None]]
"""``guard(object_type)``: held around each engine pass; raises :class:`ObjectBusy` when the
object type's lease is taken (the daemon passes its ``sync:{object_type}`` lease)."""

#: Kinds whose record is read by the engine pass (after their semantics).
READ_KINDS: frozenset[EventKind] = frozenset({"change", "merge", "restore", "optout"})


def exponential_backoff(
    base: timedelta = timedelta(seconds=30), cap: timedelta = timedelta(hours=1)
) -> Callable[[int], timedelta]:
    """``attempts -> delay``: ``base``, twice that, four times … at most ``cap``."""

    def delay(attempts: int) -> timedelta:
        return min(base * (1 << min(max(attempts - 1, 0), 30)), cap)

    return delay


class ObjectBusy(ConnectorError):
    """The object type's lease is held elsewhere: its items are released and tried later."""


@dataclass
class ObjectBatch:
    """The claimed items of one object type, coalesced per record."""

    object_type: str
    items: list[InboxItem] = field(default_factory=list)
    hubspot_ids: dict[str, None] = field(default_factory=dict)
    brevo_ids: dict[str, None] = field(default_factory=dict)
    brevo_emails: dict[str, None] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def ids(self) -> list[int]:
        return [i.id for i in self.items]

    @property
    def records(self) -> int:
        """Distinct records to read."""
        return len(self.hubspot_ids) + len(self.brevo_ids) + len(self.brevo_emails)

    def brevo_changed_since(self, slack: timedelta = timedelta(minutes=2)) -> datetime | None:
        """The earliest Brevo change these items could report: the first Brevo event's
        arrival less ``slack`` (Brevo sends within seconds; a contact changed earlier that is
        not listed is read by id anyway)."""
        times = [i.received_at for i in self.items if i.system == "brevo" and i.source == "brevo"]
        return min(times) - slack if times else None

    def add(self, item: InboxItem) -> None:
        """Take one item: remember its record unless the event needs no read."""
        self.items.append(item)
        kind = event_kind(item)
        self.kinds[kind] += 1
        if kind not in READ_KINDS:
            return
        if item.system == "hubspot":
            if kind == "merge":  # the merged-away ids are gone: read the survivor
                self.hubspot_ids[events.merge_ids(item)[0]] = None
            else:
                self.hubspot_ids[item.object_id] = None
        elif "@" in item.object_id:
            self.brevo_emails[item.object_id.strip().lower()] = None
        else:
            self.brevo_ids[item.object_id] = None


def coalesce(items: Iterable[InboxItem]) -> dict[str, ObjectBatch]:
    """Claimed items per object type, each record once (first-seen order)."""
    batches: dict[str, ObjectBatch] = {}
    for item in items:
        batch = batches.get(item.object_type)
        if batch is None:
            batch = batches[item.object_type] = ObjectBatch(item.object_type)
        batch.add(item)
    return batches


@dataclass
class WorkerResult:
    """What one :meth:`InboxWorker.run_once` did, in events unless said otherwise."""

    claimed: int = 0
    forgotten: int = 0
    """events about a person purged for GDPR: deleted on sight"""
    records: int = 0
    """distinct records handed to the engine"""
    passes: int = 0
    """engine passes run (one per object type with records)"""
    completed: int = 0
    ignored: int = 0
    """completed without a read: no engine for their object type, or nothing to read"""
    deletions: int = 0
    """deletion / privacy events handled without a read (:mod:`connector.events`)"""
    echoes: int = 0
    """events completed without a read: our own writes, by their echo hints and the ledger"""
    held: int = 0
    """deletion events the mass-delete guard held back (failed, to be retried or forced)"""
    released: int = 0
    """handed back untried (lease busy, stopping)"""
    retried: int = 0
    dead: int = 0
    busy: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    """the engine passes' counts, summed"""
    error: str | None = None
    """why the whole pass broke (the inbox could not be read or settled), if it did"""
    refused: list[str] = field(default_factory=list)
    """the mass-delete guard's refusals"""

    @property
    def failed(self) -> bool:
        """Whether something raised or was refused: an engine pass or an event's semantics
        (its events wait for a retry, or are dead) or the worker itself (:attr:`error`)."""
        return bool(self.retried or self.dead or self.error or self.held)

    def summary(self) -> dict[str, int]:
        """The worker's own counters (the engine's are in :attr:`counts`)."""
        return {
            "claimed": self.claimed,
            "forgotten": self.forgotten,
            "records": self.records,
            "passes": self.passes,
            "completed": self.completed,
            "ignored": self.ignored,
            "deletions": self.deletions,
            "echoes": self.echoes,
            "held": self.held,
            "released": self.released,
            "retried": self.retried,
            "dead": self.dead,
        }


class InboxWorker:
    """Drains the inbox into the engines of ``runtime``; see the module docstring.

    ``guard`` is held around each engine pass (default: none; the daemon passes its per-object
    lease). ``lease`` is how long claimed items stay ours; ``backoff(attempts)`` the wait
    before a failed item is tried again; ``record_runs`` writes a ``worker`` run per pass.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        worker_id: str,
        batch: int = 500,
        lease: timedelta = timedelta(minutes=5),
        max_attempts: int = 8,
        backoff: Callable[[int], timedelta] | None = None,
        guard: LeaseGuard | None = None,
        engines: Mapping[str, SyncEngine] | None = None,
        record_runs: bool = True,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if batch < 1 or max_attempts < 1:
            raise ValueError("batch and max_attempts must be at least 1")
        self.sessions = runtime.sessions
        self.engines = engines if engines is not None else runtime.engines
        #: object types synced by an ObjectSync (companies, deals, …): handed the ids named
        self.objects: Mapping[str, ObjectSync] = runtime.objects
        self.worker_id = worker_id
        self.batch = batch
        self.lease = lease
        self.max_attempts = max_attempts
        self.backoff = backoff or exponential_backoff()
        self.guard = guard
        self.record_runs = record_runs
        self.clock = clock
        self.settings = runtime.settings
        #: ``--force``: deletions past the mass-delete guard (``sync.max_delete_share``)
        self.force = False
        #: Brevo e-mail events → HubSpot (``Runtime.email_events``; None: they are ignored)
        self.email_events: EmailEventsSync | None = getattr(runtime, "email_events", None)
        self.log = log.bind(worker=worker_id)

    # --- one pass ---------------------------------------------------------------------------

    async def run_once(self, stop: asyncio.Event | None = None) -> WorkerResult:
        """Claim a batch, run one engine pass per object type, settle every claimed item.

        With ``stop`` set, object types not started yet are released. Items still claimed
        when this is cancelled are released too (their attempt not counted).
        """
        started = time.perf_counter()
        if self.force:  # the events the guard held back are due now
            async with self.sessions() as s, s.begin():
                await inbox.retry_now(s, error_prefix=events.GUARD_PREFIX, now=self.clock())
        async with self.sessions() as s, s.begin():
            items = await inbox.claim(
                s, worker=self.worker_id, limit=self.batch, lease=self.lease, now=self.clock()
            )
            # events about a person purged for GDPR (e.g. the echo of our own deletion of
            # their Brevo contact) are deleted, not processed or kept
            forgotten = set(await purge.purged_items(s, items))
            await purge.drop_inbox_rows(s, sorted(forgotten))
        items = [i for i in items if i.id not in forgotten]
        result = WorkerResult(claimed=len(items), forgotten=len(forgotten))
        if not items:
            return result
        open_ids = {i.id for i in items}
        try:
            async with self._keeping_claims(open_ids):
                for batch in coalesce(items).values():
                    if stop is not None and stop.is_set():
                        break
                    await self._process(batch, result)
                    open_ids.difference_update(batch.ids)
        finally:
            if open_ids:
                result.released += len(open_ids)
                await asyncio.shield(self._release(sorted(open_ids)))
        self.log.info(
            "worker.batch",
            ms=round((time.perf_counter() - started) * 1000, 1),
            busy=result.busy,
            counts={k: int(v) for k, v in sorted(result.counts.items()) if v},
            **result.summary(),
        )
        return result

    @contextlib.asynccontextmanager
    async def _keeping_claims(self, ids: set[int]) -> AsyncIterator[None]:
        """Renew the claim on ``ids`` (the live set: settled items leave it) every third of
        the lease while the pass runs, so an engine pass longer than the lease keeps its items
        and no other worker claims them meanwhile; a dead worker stops renewing."""
        keeper = asyncio.create_task(self._renew_claims(ids), name="inbox claims")
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _renew_claims(self, ids: set[int]) -> None:
        every = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            held = sorted(ids)
            if not held:
                continue
            try:
                async with self.sessions() as s, s.begin():
                    kept = await inbox.renew_claims(
                        s, held, worker=self.worker_id, lease=self.lease, now=self.clock()
                    )
            except Exception as exc:  # the database hiccuped: try again next time
                self.log.warning("worker.claims_renew_failed", error=scrub(str(exc)))
                continue
            if kept < len(held):
                self.log.warning("worker.claims_lost", held=len(held), kept=kept)

    async def _process(self, batch: ObjectBatch, result: WorkerResult) -> None:
        if batch.object_type == EMAIL_EVENTS and self.email_events is not None:
            await self._process_email_events(self.email_events, batch, result)
            return
        obj = self.objects.get(batch.object_type)
        if obj is not None and batch.object_type not in self.engines:
            await self._process_object(obj, batch, result)
            return
        engine = self.engines.get(batch.object_type)
        ids = batch.ids
        if engine is None:
            result.ignored += len(ids)
            await self._complete(ids, result)
            return
        try:
            if self.guard is None:
                handled, rest, outcome = await self._handle(engine, batch)
            else:
                async with self.guard(batch.object_type):
                    handled, rest, outcome = await self._handle(engine, batch)
        except ObjectBusy as busy:
            self.log.info("worker.busy", object_type=batch.object_type, reason=str(busy))
            result.busy.append(batch.object_type)
            result.released += len(ids)
            await self._release(ids)
            return
        except Exception as exc:
            error = scrub(f"{type(exc).__name__}: {exc}")
            result.failures.append(f"{batch.object_type}: {error}")
            await self._fail(batch.items, error, result)
            return
        result.counts.update(handled.counts)
        result.echoes += len(handled.echoes)
        result.held += len(handled.held)
        if handled.refused:
            result.refused.append(handled.refused)
        retry = {**handled.failed, **handled.held}
        deletions = [i for i in batch.items if event_kind(i) in ("delete", "privacy")]
        result.deletions += sum(1 for i in deletions if i.id not in retry)
        result.ignored += batch.kinds["none"]
        if outcome is not None:
            result.passes += 1
            result.records += rest.records
            result.counts.update(outcome.counts)
            result.failures += outcome.failures
        by_error: dict[str, list[InboxItem]] = {}
        for item in batch.items:
            if item.id in retry:
                by_error.setdefault(retry[item.id], []).append(item)
        for error, items in by_error.items():
            await self._fail(items, error, result)
        done = [i for i in batch.items if i.id not in retry]
        await self._complete([i.id for i in done], result, follow=self._follow_ups(done))

    def _follow_ups(self, items: Sequence[InboxItem]) -> list[InboxInput]:
        """Opt-out events settled for the contacts, copied for the e-mail events handler."""
        if self.email_events is None:
            return []
        return [f for i in items if (f := follow_up(i)) is not None]

    async def _guarded_pass(
        self,
        batch: ObjectBatch,
        result: WorkerResult,
        run: Callable[[], Awaitable[_R]],
    ) -> _R | None:
        """``run()`` under the object type's guard; ``None`` when the type is busy (the items
        are released for later) or the pass failed (the items are failed, retried later)."""
        try:
            if self.guard is None:
                return await run()
            async with self.guard(batch.object_type):
                return await run()
        except ObjectBusy as busy:
            self.log.info("worker.busy", object_type=batch.object_type, reason=str(busy))
            result.busy.append(batch.object_type)
            result.released += len(batch.items)
            await self._release(batch.ids)
        except Exception as exc:
            error = scrub(f"{type(exc).__name__}: {exc}")
            result.failures.append(f"{batch.object_type}: {error}")
            await self._fail(batch.items, error, result)
        return None

    async def _process_email_events(
        self, handler: EmailEventsSync, batch: ObjectBatch, result: WorkerResult
    ) -> None:
        """Brevo e-mail events: counted and put on HubSpot by their handler, all or none."""
        out = await self._guarded_pass(batch, result, lambda: handler.handle(batch.items))
        if out is not None:
            result.counts.update(out.counts)
            await self._complete(batch.ids, result)

    async def _process_object(
        self, obj: ObjectSync, batch: ObjectBatch, result: WorkerResult
    ) -> None:
        """An ObjectSync's batch: every record an event names (created, changed, deleted,
        associations changed) synced by id in one pass; deletions settle in it."""
        hubspot_ids = list(dict.fromkeys(i.object_id for i in batch.items if i.system == "hubspot"))
        brevo_ids = list(
            dict.fromkeys(
                i.object_id for i in batch.items if i.system == "brevo" and "@" not in i.object_id
            )
        )
        out = await self._guarded_pass(
            batch, result, lambda: obj.sync_ids(hubspot_ids=hubspot_ids, brevo_ids=brevo_ids)
        )
        if out is None:
            return
        result.passes += 1
        result.records += len(hubspot_ids) + len(brevo_ids)
        result.counts.update(out.counts)
        result.failures += out.failures
        await self._complete(batch.ids, result)

    async def _handle(
        self, engine: SyncEngine, batch: ObjectBatch
    ) -> tuple[EventsResult, ObjectBatch, Outcome | None]:
        """The events' semantics, then one engine pass over the records left to read."""
        semantics = events.attach(engine, self.settings)
        semantics.force = self.force
        handled = await semantics.apply(batch.items)
        if handled.refused is not None and self.record_runs:
            await self._record_refusal(batch, handled)
        settled = handled.settled()
        rest = ObjectBatch(batch.object_type)
        for item in batch.items:
            if item.id not in settled:
                rest.add(item)
        for hubspot_id in handled.read_hubspot:
            rest.hubspot_ids[hubspot_id] = None
        outcome = await self._pass(engine, rest) if rest.records else None
        return handled, rest, outcome

    async def _record_refusal(self, batch: ObjectBatch, handled: EventsResult) -> None:
        """The guard refused this batch's deletions: a failed ``worker`` run says so."""
        counts = {"events": len(batch.items), "held": len(handled.held)}
        async with self.sessions() as s, s.begin():
            run_id = await runs.start_run(s, "worker", None, batch.object_type, self.clock())
        await self._finish(run_id, "failed", counts, handled.refused)

    async def _pass(self, engine: SyncEngine, batch: ObjectBatch) -> Outcome:
        """The engine pass of one object type, recorded as a ``worker`` run."""
        run_id = None
        if self.record_runs:
            async with self.sessions() as s, s.begin():
                run_id = await runs.start_run(s, "worker", None, batch.object_type, self.clock())
        try:
            out = await engine.sync(
                hubspot_ids=list(batch.hubspot_ids),
                brevo_ids=list(batch.brevo_ids),
                brevo_emails=list(batch.brevo_emails),
                brevo_changed_since=batch.brevo_changed_since(),
                mode="incremental",
            )
            await engine.settle_gone(out)
        except BaseException as exc:
            if run_id is not None:
                status: Literal["failed", "interrupted"] = (
                    "failed" if isinstance(exc, Exception) else "interrupted"
                )
                counts = {"events": len(batch.items), "records": batch.records}
                await self._finish(run_id, status, counts, f"{type(exc).__name__}: {exc}")
            raise
        if run_id is not None:
            counts = {
                "events": len(batch.items),
                "records": batch.records,
                **{k: int(v) for k, v in out.counts.items()},
            }
            await self._finish(run_id, "ok", counts, "; ".join(out.failures[:5]) or None)
        return out

    async def _finish(
        self,
        run_id: int,
        status: Literal["ok", "failed", "interrupted"],
        counts: dict[str, int],
        error: str | None,
    ) -> None:
        try:
            async with self.sessions() as s, s.begin():
                await runs.finish_run(s, run_id, status, counts, error, self.clock())
        except Exception as exc:  # the next lease holder closes it as interrupted
            self.log.error("worker.run_record_failed", run=run_id, error=scrub(str(exc)))

    # --- settling items ---------------------------------------------------------------------

    async def _complete(
        self, ids: Sequence[int], result: WorkerResult, follow: Sequence[InboxInput] = ()
    ) -> None:
        async with self.sessions() as s, s.begin():
            result.completed += await inbox.complete(s, ids, worker=self.worker_id)
            if follow:  # in the same transaction: settled and handed on, or neither
                await inbox.enqueue(s, follow, now=self.clock())

    async def _release(self, ids: Sequence[int]) -> None:
        async with self.sessions() as s, s.begin():
            await inbox.release(s, ids, now=self.clock(), worker=self.worker_id)

    async def _fail(self, items: Sequence[InboxItem], error: str, result: WorkerResult) -> None:
        now = self.clock()
        outcomes: Counter[str] = Counter()
        async with self.sessions() as s, s.begin():
            for item in items:
                outcomes[
                    await inbox.fail(
                        s,
                        item.id,
                        error,
                        now=now,
                        max_attempts=self.max_attempts,
                        backoff=self.backoff,
                    )
                ] += 1
        result.retried += outcomes["retry"]
        result.dead += outcomes["dead"]
        self.log.warning(
            "worker.pass_failed",
            object_type=items[0].object_type if items else None,
            events=len(items),
            retried=outcomes["retry"],
            dead=outcomes["dead"],
            error=error,
        )

    # --- the loop ---------------------------------------------------------------------------

    async def run(
        self, stop: asyncio.Event, idle_wait: float = 1.0, busy_wait: float = 2.0
    ) -> None:
        """:meth:`run_once` until ``stop`` is set; ``idle_wait`` seconds between passes that
        found nothing (the coalescing window), ``busy_wait`` when every object was busy."""
        self.log.info("worker.started", batch=self.batch, idle_wait=idle_wait)
        while not stop.is_set():
            wait: float = 0.0
            try:
                result = await self.run_once(stop)
            except Exception as exc:  # the database hiccuped: try again after a pause
                self.log.error("worker.error", error=scrub(f"{type(exc).__name__}: {exc}"))
                wait = max(idle_wait, busy_wait)
            else:
                if not result.claimed:
                    wait = idle_wait
                elif result.released and not result.completed and not result.failed:
                    wait = busy_wait
            if wait > 0 and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        self.log.info("worker.stopped")


__all__ = [
    "BREVO_KINDS",
    "HUBSPOT_KINDS",
    "READ_KINDS",
    "EventKind",
    "InboxWorker",
    "LeaseGuard",
    "ObjectBatch",
    "ObjectBusy",
    "WorkerResult",
    "coalesce",
    "event_kind",
    "exponential_backoff",
]
