"""Incremental-pull cursors (table ``cursors``) and the pure rules that move them (DESIGN §5).

A pull reads the closed range ``[last_value - lookback, run_start]`` in ascending
``(modified_at, id)`` order (:func:`window`), drops the records it already processed at the
boundary (:func:`is_seen_at_boundary`), writes the rest, then moves the cursor with
:func:`advance` and saves it in the same transaction as its last writes
(:func:`save_cursor`): a crash re-reads, it never skips.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store.db import dialect_insert
from connector.store.models import Cursor as CursorRow
from connector.store.models import System, utcnow


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the incremental pull of one system and object type stands.

    ``last_value`` is the newest modification time processed (``None``: never pulled),
    ``boundary_ids`` the ids processed at exactly that time, ``last_id`` the greatest of them
    (the ``hs_object_id`` tie-breaker a long walk resumes after).
    """

    system: System
    object_type: str
    last_value: datetime | None = None
    last_id: str | None = None
    boundary_ids: list[str] = field(default_factory=list)


def id_order(record_id: str) -> tuple[int, int, str]:
    """Sort key of record ids: numeric ids (``hs_object_id``) by value, then the others."""
    if record_id.isdigit():
        return (0, len(record_id.lstrip("0")), record_id.lstrip("0"))
    return (1, 0, record_id)


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    return sorted(set(ids), key=id_order)


def advance(cursor: Cursor, seen: Iterable[tuple[datetime, str]], run_start: datetime) -> Cursor:
    """The cursor after processing ``seen`` (``(modified_at, id)`` pairs) in a pull.

    - Records modified after ``run_start`` are ignored (the range is ``<= run_start``); the
      next pull reads them.
    - The cursor never moves back: records older than ``last_value`` (lookback re-reads)
      change nothing.
    - At a newer maximum, ``boundary_ids`` are the ids seen at it; at the same maximum they
      are added to the old ones.
    """
    newest: datetime | None = None
    at_newest: list[str] = []
    for modified_at, record_id in seen:
        if modified_at > run_start:
            continue
        if newest is None or modified_at > newest:
            newest, at_newest = modified_at, [record_id]
        elif modified_at == newest:
            at_newest.append(record_id)
    if newest is None or (cursor.last_value is not None and newest < cursor.last_value):
        return cursor
    if newest == cursor.last_value:
        ids = _sorted_ids([*cursor.boundary_ids, *at_newest])
    else:
        ids = _sorted_ids(at_newest)
    return Cursor(cursor.system, cursor.object_type, newest, ids[-1], ids)


def window(
    cursor: Cursor, lookback: timedelta, run_start: datetime
) -> tuple[datetime | None, datetime]:
    """The closed range ``(since, until)`` to pull; ``since`` is ``None`` for a first pull."""
    if cursor.last_value is None:
        return None, run_start
    return min(cursor.last_value - lookback, run_start), run_start


def is_seen_at_boundary(cursor: Cursor, modified_at: datetime, record_id: str) -> bool:
    """Whether this record version was already processed at the cursor's boundary (drop it)."""
    return (
        cursor.last_value is not None
        and modified_at == cursor.last_value
        and record_id in cursor.boundary_ids
    )


async def get_cursor(session: AsyncSession, system: System, object_type: str) -> Cursor:
    """The stored cursor, or an empty one (never pulled)."""
    stmt = sa.select(CursorRow.last_value, CursorRow.last_id, CursorRow.boundary_ids).where(
        CursorRow.system == system, CursorRow.object_type == object_type
    )
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        return Cursor(system, object_type)
    return Cursor(system, object_type, row.last_value, row.last_id, list(row.boundary_ids or []))


async def save_cursor(
    session: AsyncSession, cursor: Cursor, *, now: datetime | None = None
) -> None:
    """Insert or replace the cursor: one upsert, in the transaction of the records' writes."""
    stmt = dialect_insert(session, CursorRow).values(
        system=cursor.system,
        object_type=cursor.object_type,
        last_value=cursor.last_value,
        last_id=cursor.last_id,
        boundary_ids=list(cursor.boundary_ids),
        updated_at=now or utcnow(),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[CursorRow.system, CursorRow.object_type],
        set_={
            "last_value": stmt.excluded.last_value,
            "last_id": stmt.excluded.last_id,
            "boundary_ids": stmt.excluded.boundary_ids,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    await session.execute(stmt)


__all__ = [
    "Cursor",
    "advance",
    "get_cursor",
    "id_order",
    "is_seen_at_boundary",
    "save_cursor",
    "window",
]
