"""Incremental pulls: what changed on one side since the cursor, through the engine.

One :meth:`Puller.pull` reads the closed window ``[cursor - lookback, run start]`` of one side
(DESIGN §5) and hands the records to :meth:`SyncEngine.sync` in batches. The records come
straight from the read, so they are current: the engine reads only their counterparts on the
other side.

- **HubSpot**: ``search`` on ``lastmodifieddate`` (``hs_lastmodifieddate`` for other objects),
  ascending, walking past the 10,000-result cap with the ``hs_object_id`` tie-breaker (the
  client does that). The order lets the cursor move after every batch: a crash re-reads at
  most one batch.
- **Brevo**: ``GET /contacts?modifiedSince=`` sorted by creation, not modification, so the
  cursor (the high-water mark of ``modifiedAt``) moves only when the whole window is done.
  Brevo bumps ``modifiedAt`` on list changes alone; the engine compares values, never times.

Records at the cursor's boundary that were already processed are dropped; lookback re-reads are
cheap because no-op writes are never sent. The cursor never passes the run's start, and it is
saved only after its records are written. A side that was never pulled starts with a full
:func:`~connector.resync.resync` (streaming, batched), then both cursors start at that run's
start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal

import structlog

from connector.brevo.models import BrevoContact
from connector.engine import Outcome, SyncEngine, hubspot_modified
from connector.hubspot.models import HubSpotObject
from connector.store import cursors
from connector.store.models import utcnow

log = structlog.get_logger(__name__)

System = Literal["hubspot", "brevo"]


def epoch_ms(value: datetime | None) -> int:
    """A time as HubSpot's search filters want it: epoch milliseconds (0 for "never")."""
    return int(value.timestamp() * 1000) if value is not None else 0


class Puller:
    """Incremental pulls of one engine's object type, one side at a time."""

    def __init__(
        self,
        engine: SyncEngine,
        *,
        lookback: timedelta = timedelta(seconds=120),
        clock: Callable[[], datetime] = utcnow,
        batch_size: int = 100,
    ) -> None:
        self.engine = engine
        self.lookback = lookback
        self.clock = clock
        self.batch_size = batch_size
        self._between: Callable[[], Awaitable[None]] | None = None
        self._read_at: datetime | None = None

    async def pull(
        self,
        system: System,
        *,
        stop: Callable[[], bool] | None = None,
        between: Callable[[], Awaitable[None]] | None = None,
    ) -> Outcome:
        """One incremental pass of ``system``; ``stop()`` true ends it after the current batch.

        ``between()`` is awaited after each batch: the daemon lets the webhook worker's
        waiting pass run there, so a long pull does not hold webhooks back. A pair another
        pass synced meanwhile is planned on its records read again (the engine's
        ``read_at``: the records of a batch may have been read before that pass ran).
        """
        run_start = self.clock()
        self._between = between
        self._read_at = run_start if between is not None else None
        async with self.engine.sessions() as s:
            cursor = await cursors.get_cursor(s, system, self.engine.object_type)
        if cursor.last_value is None:
            return await self._initial(run_start)
        since, until = cursors.window(cursor, self.lookback, run_start)
        if system == "hubspot":
            out = await self._pull_hubspot(cursor, since, until, stop)
        else:
            out = await self._pull_brevo(cursor, since, until, stop)
        # linked records found vanished: carried over once per pull, under the delete guard
        await self.engine.settle_gone(out)
        return out

    async def _let_others_in(self) -> None:
        if self._between is not None:
            await self._between()

    async def _initial(self, run_start: datetime) -> Outcome:
        """Never pulled: a full resync, then both cursors start at its start."""
        from connector.resync import resync  # imported here: resync imports this module

        log.info("pull.initial_resync", object_type=self.engine.object_type)
        out = await resync(self.engine, mode="initial")
        async with self.engine.sessions() as s, s.begin():
            for system in ("hubspot", "brevo"):
                await cursors.save_cursor(
                    s, cursors.Cursor(system, self.engine.object_type, run_start, None, [])
                )
        return out

    async def _pull_hubspot(
        self,
        cursor: cursors.Cursor,
        since: datetime | None,
        until: datetime,
        stop: Callable[[], bool] | None,
    ) -> Outcome:
        out = Outcome()
        engine = self.engine
        batch: list[HubSpotObject] = []
        seen: list[tuple[datetime, str]] = []

        async def flush() -> None:
            nonlocal cursor
            if batch:
                await engine.sync(
                    hubspot=list(batch), mode="incremental", out=out, read_at=self._read_at
                )
            moved = cursors.advance(cursor, seen, until)
            if moved != cursor:
                async with engine.sessions() as s, s.begin():
                    await cursors.save_cursor(s, moved)
                cursor = moved
            batch.clear()
            seen.clear()

        stream = engine.hubspot.search_modified(
            engine.object_type, epoch_ms(since), epoch_ms(until), engine.hs_props
        )
        async for obj in stream:
            modified = hubspot_modified(obj, engine.modified_prop)
            out.counts["read"] += 1
            if cursors.is_seen_at_boundary(cursor, modified, obj.id):
                out.counts["boundary_dropped"] += 1
                continue
            batch.append(obj)
            seen.append((modified, obj.id))
            if len(batch) >= self.batch_size:
                await flush()
                if stop is not None and stop():
                    break
                await self._let_others_in()
        await flush()
        return out

    async def _pull_brevo(
        self,
        cursor: cursors.Cursor,
        since: datetime | None,
        until: datetime,
        stop: Callable[[], bool] | None,
    ) -> Outcome:
        out = Outcome()
        engine = self.engine
        batch: list[BrevoContact] = []
        seen: list[tuple[datetime, str]] = []
        stopped = False
        stream = engine.brevo.iter_contacts(modified_since=since)
        async for contact in stream:
            out.counts["read"] += 1
            cid = str(contact.id)
            if cursors.is_seen_at_boundary(cursor, contact.modified_at, cid):
                out.counts["boundary_dropped"] += 1
                continue
            batch.append(contact)
            seen.append((contact.modified_at, cid))
            if len(batch) >= self.batch_size:
                await engine.sync(
                    brevo=list(batch), mode="incremental", out=out, read_at=self._read_at
                )
                batch.clear()
                if stop is not None and stop():
                    stopped = True
                    break
                await self._let_others_in()
        if batch:
            await engine.sync(brevo=list(batch), mode="incremental", out=out, read_at=self._read_at)
        if not stopped:  # creation order: the window counts as done only when read to the end
            moved = cursors.advance(cursor, seen, until)
            if moved != cursor:
                async with engine.sessions() as s, s.begin():
                    await cursors.save_cursor(s, moved)
        return out


async def pull_all(
    pullers: Sequence[Puller], *, stop: Callable[[], bool] | None = None
) -> list[Outcome]:
    """HubSpot then Brevo for every puller, in order (one cycle of ``run --once``)."""
    outcomes = []
    for puller in pullers:
        for system in ("hubspot", "brevo"):
            outcomes.append(await puller.pull(system, stop=stop))
    return outcomes
