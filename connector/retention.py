"""Retention: delete what is past ``sync.retention_days``, in short chunks.

Purged, oldest first, each in chunks of :data:`CHUNK` rows, one short transaction per chunk
(SQLite has one writer and the webhook intake must never wait long for it; PostgreSQL row
locks stay few):

- processed inbox events (``done``) last touched before the cutoff;
- sync history (the fields that travelled, for ``connector explain``) synced before it;
- finished runs started before it — but per job the newest run and the newest successful one
  stay, whatever their age (``connector status``, ``/healthz`` and the reconciliation
  schedule read them);
- dead letters resolved before it;
- privacy tombstones (hashes of purged people's ids and e-mails) older than it.

Kept whatever their age: dead inbox events and open dead letters (an operator has to look at
them), pending or failed events, running runs, links and the field ledger.

The daemon runs :func:`purge_expired` once at start and then daily
(:meth:`connector.daemon.Daemon.schedule_retention`). Several daemons on one database may
purge at once: a chunk the other already deleted simply deletes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.errors import scrub
from connector.store import deadletters, history, inbox, purge, runs

log = structlog.get_logger(__name__)

#: Rows deleted per transaction.
CHUNK = 1000

Purge = Callable[..., Awaitable[int]]
"""``(session, before, *, limit) -> deleted``: one chunk of one table."""

#: What is purged, in order: (name in the result, the store function).
STEPS: tuple[tuple[str, Purge], ...] = (
    ("inbox_done", inbox.purge_done),
    ("sync_history", history.purge),
    ("runs", runs.purge_finished),
    ("dead_letters_resolved", deadletters.purge_resolved),
    ("privacy_tombstones", purge.purge_tombstones),
)


@dataclass
class RetentionResult:
    """What one purge deleted, per step, and whether a stop cut it short."""

    before: datetime
    deleted: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    stopped: bool = False

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


async def purge_expired(
    sessions: async_sessionmaker[AsyncSession],
    *,
    retention_days: int,
    now: datetime,
    chunk: int = CHUNK,
    stop: Callable[[], bool] | None = None,
    pause: float = 0.0,
) -> RetentionResult:
    """Delete everything older than ``now - retention_days`` (see the module docstring).

    ``stop`` is checked between chunks (a daemon stopping ends the purge there; the next run
    goes on). ``pause`` seconds between chunks leave room to other writers.
    """
    if retention_days < 1 or chunk < 1:
        raise ValueError("retention_days and chunk must be at least 1")
    result = RetentionResult(before=now - timedelta(days=retention_days))
    for name, purge_step in STEPS:
        deleted = 0
        while True:
            if stop is not None and stop():
                result.stopped = True
                result.deleted[name] = deleted
                return result
            async with sessions() as s, s.begin():
                n = int(await purge_step(s, result.before, limit=chunk))
            deleted += n
            result.chunks += 1
            if n < chunk:
                break
            await asyncio.sleep(pause)  # let the intake and the worker in between chunks
        result.deleted[name] = deleted
    return result


def _describe(exc: BaseException) -> str:
    """One scrubbed line: the first line only (SQLAlchemy appends the SQL and parameters)."""
    lines = str(exc).strip().splitlines()
    return scrub(f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)


async def run_retention(
    sessions: async_sessionmaker[AsyncSession],
    *,
    retention_days: int,
    now: datetime,
    stop: Callable[[], bool] | None = None,
) -> RetentionResult | None:
    """:func:`purge_expired` for the daemon: logs one line, never raises (``None`` if it
    failed; the next daily run tries again)."""
    started = time.monotonic()
    try:
        result = await purge_expired(sessions, retention_days=retention_days, now=now, stop=stop)
    except Exception as exc:
        log.warning(
            "retention.failed",
            error=_describe(exc),
            hint="the next daily run tries again; check the database",
        )
        return None
    log.info(
        "retention.purged",
        before=result.before.isoformat(),
        retention_days=retention_days,
        deleted=result.deleted,
        chunks=result.chunks,
        stopped=result.stopped,
        seconds=round(time.monotonic() - started, 3),
    )
    return result


__all__ = ["CHUNK", "STEPS", "RetentionResult", "purge_expired", "run_retention"]
