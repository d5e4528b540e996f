"""Runs (table ``runs``): each pull, resync, worker or reconcile pass, for ``connector status``.

A run is started (``running``) and finished (``ok`` / ``failed``) in separate, short
transactions. A process that dies leaves ``running`` rows behind; :func:`mark_interrupted`
closes them when the daemon starts again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.errors import StoreError, scrub
from connector.store.models import Run, RunKind, RunStatus, System

if TYPE_CHECKING:
    _Row = sa.Row[*tuple[Any, ...]]

#: Longest error text kept per run.
MAX_ERROR_LEN = 2000
INTERRUPTED_ERROR = "the process ended before the run finished"


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run. From :func:`last_runs`, ``last_ok`` is the newest ``ok`` run of its group."""

    id: int
    kind: RunKind
    system: System | None
    object_type: str | None
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    last_ok: RunSummary | None = None

    @property
    def duration(self) -> timedelta | None:
        """How long the run took; ``None`` while it runs."""
        return None if self.finished_at is None else self.finished_at - self.started_at


_COLUMNS = (
    Run.id,
    Run.kind,
    Run.system,
    Run.object_type,
    Run.status,
    Run.started_at,
    Run.finished_at,
    Run.counts,
    Run.error,
)


def _summary(row: _Row, last_ok: RunSummary | None = None) -> RunSummary:
    return RunSummary(
        id=row.id,
        kind=row.kind,
        system=row.system,
        object_type=row.object_type,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        counts=dict(row.counts or {}),
        error=row.error,
        last_ok=last_ok,
    )


def _clip(error: str | None) -> str | None:
    if error is None:
        return None
    text = scrub(error)
    return text if len(text) <= MAX_ERROR_LEN else text[: MAX_ERROR_LEN - 1] + "…"


async def start_run(
    session: AsyncSession,
    kind: RunKind,
    system: System | None,
    object_type: str | None,
    now: datetime,
) -> int:
    """Record a run that starts now; its id."""
    stmt = (
        sa.insert(Run)
        .values(kind=kind, system=system, object_type=object_type, started_at=now, counts={})
        .returning(Run.id)
    )
    return int((await session.execute(stmt)).scalar_one())


async def finish_run(
    session: AsyncSession,
    run_id: int,
    status: RunStatus,
    counts: dict[str, int],
    error: str | None,
    now: datetime,
) -> None:
    """Close a run with its outcome, counts and (scrubbed) error."""
    if status == "running":
        raise ValueError("a finished run cannot be 'running'")
    stmt = (
        sa.update(Run)
        .where(Run.id == run_id)
        .values(status=status, counts=dict(counts), error=_clip(error), finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if cast(sa.CursorResult[Any], await session.execute(stmt)).rowcount == 0:
        raise StoreError(f"run {run_id} does not exist")


def _newest(where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """The newest run per (kind, system, object_type) among those matching ``where``."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=(Run.kind, Run.system, Run.object_type),
            order_by=(Run.started_at.desc(), Run.id.desc()),
        )
        .label("rank")
    )
    ranked = sa.select(*_COLUMNS, rank).where(where).subquery()
    return sa.select(ranked).where(ranked.c.rank == 1)


def _group(row: _Row) -> tuple[str, str, str]:
    return (row.kind, row.system or "", row.object_type or "")


async def last_runs(session: AsyncSession) -> list[RunSummary]:
    """Per (kind, system, object_type): the newest finished run, with ``last_ok`` set.

    Sorted by kind, system and object type. Runs still going are not included.
    """
    finished = (await session.execute(_newest(Run.status != "running"))).all()
    ok = {_group(r): _summary(r) for r in await session.execute(_newest(Run.status == "ok"))}
    return [_summary(r, ok.get(_group(r))) for r in sorted(finished, key=_group)]


async def running_runs(session: AsyncSession) -> list[RunSummary]:
    """Runs that are still going, oldest first."""
    stmt = sa.select(*_COLUMNS).where(Run.status == "running").order_by(Run.started_at, Run.id)
    return [_summary(r) for r in await session.execute(stmt)]


async def last_error(session: AsyncSession) -> RunSummary | None:
    """The newest run that failed or recorded an error, if any."""
    stmt = (
        sa.select(*_COLUMNS)
        .where(sa.or_(Run.status == "failed", Run.error.is_not(None)))
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(1)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else _summary(row)


async def mark_interrupted(
    session: AsyncSession,
    now: datetime,
    *,
    kind: RunKind | None = None,
    system: System | None = None,
    object_type: str | None = None,
) -> int:
    """Close the ``running`` runs of a dead process as ``interrupted``; how many.

    Called on start. Daemons sharing a database must scope it (``kind``/``system``/
    ``object_type``) to the work whose lease they just took, or they close each other's runs.
    """
    where = [Run.status == "running"]
    if kind is not None:
        where.append(Run.kind == kind)
    if system is not None:
        where.append(Run.system == system)
    if object_type is not None:
        where.append(Run.object_type == object_type)
    stmt = (
        sa.update(Run)
        .where(*where)
        .values(
            status="interrupted",
            finished_at=now,
            error=sa.func.coalesce(Run.error, INTERRUPTED_ERROR),
        )
        .execution_options(synchronize_session=False)
    )
    return cast(sa.CursorResult[Any], await session.execute(stmt)).rowcount


async def last_ok_pulls(session: AsyncSession) -> dict[tuple[System, str], datetime]:
    """Per (system, object type): when its newest successful pull **started**.

    The start, not the end: a pull reads up to its start, so every change made before that
    moment has been read — "now minus this" is the sync lag. One grouped query on the
    ``(kind, system, object_type, started_at)`` index.
    """
    stmt = (
        sa.select(Run.system, Run.object_type, sa.func.max(Run.started_at))
        .where(Run.kind == "pull", Run.status == "ok")
        .group_by(Run.system, Run.object_type)
    )
    found: dict[tuple[System, str], datetime] = {}
    for system, object_type, started in await session.execute(stmt):
        if system is not None and object_type is not None and started is not None:
            # max() of the UTC column comes back naive on SQLite: it is UTC.
            found[(system, object_type)] = (
                started if started.tzinfo is not None else started.replace(tzinfo=UTC)
            )
    return found


async def purge_finished(
    session: AsyncSession, before: datetime, *, limit: int | None = None
) -> int:
    """Delete finished runs started before ``before``; how many (``limit``: at most that many,
    oldest ids first — call it in a loop, one transaction per chunk).

    Kept whatever their age: runs still ``running``, and per (kind, system, object type) the
    newest finished run and the newest ``ok`` one — what ``connector status`` and ``/healthz``
    show, and what :meth:`Daemon.reconcile_due_at` reads.
    """
    groups = (Run.kind, Run.system, Run.object_type)
    newest_ok = sa.select(sa.func.max(Run.id)).where(Run.status == "ok").group_by(*groups)
    newest = sa.select(sa.func.max(Run.id)).where(Run.status != "running").group_by(*groups)
    where = sa.and_(
        Run.status != "running",
        Run.started_at < before,
        Run.id.not_in(newest_ok.scalar_subquery()),
        Run.id.not_in(newest.scalar_subquery()),
    )
    if limit is not None:
        chunk = sa.select(Run.id).where(where).order_by(Run.id).limit(limit)
        where = Run.id.in_(chunk.scalar_subquery())
    stmt = sa.delete(Run).where(where).execution_options(synchronize_session=False)
    return cast(sa.CursorResult[Any], await session.execute(stmt)).rowcount


__all__ = [
    "INTERRUPTED_ERROR",
    "MAX_ERROR_LEN",
    "RunSummary",
    "finish_run",
    "last_error",
    "last_ok_pulls",
    "last_runs",
    "mark_interrupted",
    "purge_finished",
    "running_runs",
    "start_run",
]
