"""A CLI command's pass recorded as a run (table ``runs``), as the daemon records its jobs.

``connector resync`` of each object type goes through :func:`recorded`: the run is started
(``running``) before the work and finished after it — ``ok`` with the outcome's counts (the
records that failed are in the counts and the dead letters, as for the daemon's runs),
``failed`` with the error if the pass raised, ``interrupted`` if it was stopped — so
``connector status`` shows the resync of every object type beside the daemon's pulls.
A dry run writes nothing, not even its run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.engine import Outcome
from connector.errors import scrub
from connector.store import runs
from connector.store.models import RunKind, RunStatus, utcnow

#: Failure lines kept in a run's error text.
FAILURES_SHOWN = 5


def _failures(out: Outcome) -> str | None:
    if not out.failures:
        return None
    return scrub("; ".join(out.failures[:FAILURES_SHOWN]))


async def recorded(
    sessions: async_sessionmaker[AsyncSession],
    object_type: str,
    work: Callable[[], Awaitable[Outcome]],
    *,
    kind: RunKind = "resync",
    dry_run: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> Outcome:
    """Run ``work`` as one run of ``kind`` for ``object_type`` (both sides); its outcome."""
    if dry_run:
        return await work()
    async with sessions() as s, s.begin():
        run_id = await runs.start_run(s, kind, None, object_type, clock())

    async def finish(status: RunStatus, counts: dict[str, int], error: str | None) -> None:
        async with sessions() as s, s.begin():
            await runs.finish_run(s, run_id, status, counts, error, clock())

    try:
        out = await work()
    except (KeyboardInterrupt, asyncio.CancelledError):
        with contextlib.suppress(Exception):  # the next daemon start closes it otherwise
            await finish("interrupted", {}, "stopped")
        raise
    except Exception as e:
        await finish("failed", {}, f"{type(e).__name__}: {e}")
        raise
    await finish("ok", {k: int(v) for k, v in out.counts.items()}, _failures(out))
    return out


__all__ = ["FAILURES_SHOWN", "recorded"]
