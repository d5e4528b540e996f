"""Skipped records (table ``skipped_records``): records deliberately not synced, with why.

A HubSpot contact without an email, for instance, is not synced — but it is counted and listed
(``connector status``), never silently dropped. :func:`record_skipped` keeps the first time it
was seen and bumps the last; :func:`clear_skipped` forgets it once it becomes syncable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store.db import dialect_insert
from connector.store.models import SkippedRecord, System

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class SkippedItem:
    """One skipped record."""

    system: System
    object_type: str
    object_id: str
    reason: str
    first_seen: datetime
    last_seen: datetime


async def record_skipped(
    session: AsyncSession,
    system: System,
    object_type: str,
    items: Sequence[tuple[str, str]],
    now: datetime,
) -> None:
    """Upsert ``(object_id, reason)`` pairs: ``first_seen`` kept, reason and ``last_seen`` set."""
    latest = {object_id: reason for object_id, reason in items}
    if not latest:
        return
    rows = [
        {
            "system": system,
            "object_type": object_type,
            "object_id": object_id,
            "reason": reason,
            "first_seen": now,
            "last_seen": now,
        }
        for object_id, reason in latest.items()
    ]
    stmt = dialect_insert(session, SkippedRecord)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SkippedRecord.system, SkippedRecord.object_type, SkippedRecord.object_id],
        set_={"reason": stmt.excluded.reason, "last_seen": stmt.excluded.last_seen},
    )
    await session.execute(stmt, rows)


async def clear_skipped(
    session: AsyncSession, system: System, object_type: str, object_ids: Iterable[str]
) -> int:
    """Forget skipped records that became syncable (or were deleted); how many were listed."""
    ids = list(dict.fromkeys(object_ids))
    cleared = 0
    for start in range(0, len(ids), _CHUNK):
        stmt = (
            sa.delete(SkippedRecord)
            .where(
                SkippedRecord.system == system,
                SkippedRecord.object_type == object_type,
                SkippedRecord.object_id.in_(ids[start : start + _CHUNK]),
            )
            .execution_options(synchronize_session=False)
        )
        cleared += cast(sa.CursorResult[Any], await session.execute(stmt)).rowcount
    return cleared


async def list_skipped(
    session: AsyncSession,
    system: System | None = None,
    object_type: str | None = None,
    limit: int = 100,
) -> list[SkippedItem]:
    """Skipped records, most recently seen first, optionally of one system / object type."""
    stmt = sa.select(
        SkippedRecord.system,
        SkippedRecord.object_type,
        SkippedRecord.object_id,
        SkippedRecord.reason,
        SkippedRecord.first_seen,
        SkippedRecord.last_seen,
    )
    if system is not None:
        stmt = stmt.where(SkippedRecord.system == system)
    if object_type is not None:
        stmt = stmt.where(SkippedRecord.object_type == object_type)
    stmt = stmt.order_by(SkippedRecord.last_seen.desc(), SkippedRecord.object_id).limit(limit)
    return [
        SkippedItem(r.system, r.object_type, r.object_id, r.reason, r.first_seen, r.last_seen)
        for r in await session.execute(stmt)
    ]


async def count_skipped(session: AsyncSession) -> dict[tuple[str, str, str], int]:
    """How many records are skipped per ``(system, object_type, reason)``."""
    stmt = sa.select(
        SkippedRecord.system, SkippedRecord.object_type, SkippedRecord.reason, sa.func.count()
    ).group_by(SkippedRecord.system, SkippedRecord.object_type, SkippedRecord.reason)
    return {(s, o, r): int(n) for s, o, r, n in await session.execute(stmt)}


__all__ = ["SkippedItem", "clear_skipped", "count_skipped", "list_skipped", "record_skipped"]
