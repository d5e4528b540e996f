"""Dead letters (table ``dead_letters``): records that kept failing, for ``connector dlq``.

A dead letter never blocks the other records; it stays open until an operator retries it
(``dlq retry`` re-enqueues the record, then :func:`resolve`). Keep ``payload`` to what a retry
needs (ids, operation, field names): the store is not a second CRM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.errors import scrub
from connector.store.models import DeadLetter, System

if TYPE_CHECKING:
    _Row = sa.Row[*tuple[Any, ...]]

#: Longest error text kept per dead letter.
MAX_ERROR_LEN = 2000


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One dead letter; ``resolved_at`` is ``None`` while it is open."""

    id: int
    system: System
    object_type: str
    object_id: str | None
    identity_key: str | None
    operation: str
    error: str
    attempts: int
    created_at: datetime
    resolved_at: datetime | None = None
    payload: dict[str, Any] = field(default_factory=dict)


_COLUMNS = (
    DeadLetter.id,
    DeadLetter.system,
    DeadLetter.object_type,
    DeadLetter.object_id,
    DeadLetter.identity_key,
    DeadLetter.operation,
    DeadLetter.error,
    DeadLetter.attempts,
    DeadLetter.created_at,
    DeadLetter.resolved_at,
    DeadLetter.payload,
)


def _record(row: _Row) -> DeadLetterRecord:
    return DeadLetterRecord(
        id=row.id,
        system=row.system,
        object_type=row.object_type,
        object_id=row.object_id,
        identity_key=row.identity_key,
        operation=row.operation,
        error=row.error,
        attempts=row.attempts,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
        payload=dict(row.payload or {}),
    )


async def add(
    session: AsyncSession,
    *,
    system: System,
    object_type: str,
    object_id: str | None,
    identity_key: str | None,
    operation: str,
    payload: Mapping[str, Any],
    error: str,
    attempts: int,
    now: datetime,
) -> int:
    """Record a record that kept failing; its id. The error is scrubbed of secrets.

    One failing record keeps one open letter: if it already has one (same object type,
    system and id), that letter gets the new error and one more attempt instead.
    """
    text = scrub(error)
    if len(text) > MAX_ERROR_LEN:
        text = text[: MAX_ERROR_LEN - 1] + "…"
    if object_id is not None:
        existing = await session.scalar(
            sa.select(DeadLetter.id)
            .where(
                DeadLetter.object_type == object_type,
                DeadLetter.system == system,
                DeadLetter.object_id == object_id,
                DeadLetter.resolved_at.is_(None),
            )
            .order_by(DeadLetter.id)
            .limit(1)
        )
        if existing is not None:
            await session.execute(
                sa.update(DeadLetter)
                .where(DeadLetter.id == existing)
                .values(
                    error=text,
                    operation=operation,
                    payload=dict(payload),
                    attempts=DeadLetter.attempts + attempts,
                )
                .execution_options(synchronize_session=False)
            )
            return int(existing)
    stmt = (
        sa.insert(DeadLetter)
        .values(
            system=system,
            object_type=object_type,
            object_id=object_id,
            identity_key=identity_key,
            operation=operation,
            payload=dict(payload),
            error=text,
            attempts=attempts,
            created_at=now,
        )
        .returning(DeadLetter.id)
    )
    return int((await session.execute(stmt)).scalar_one())


async def resolve_records(
    session: AsyncSession,
    object_type: str,
    records: Sequence[tuple[System, str]],
    now: datetime,
) -> int:
    """Resolve the open letters of records that have now synced; how many were resolved."""
    resolved = 0
    by_system: dict[System, list[str]] = {}
    for system, object_id in records:
        by_system.setdefault(system, []).append(object_id)
    for sys_name, ids in by_system.items():
        for i in range(0, len(ids), 500):
            result = await session.execute(
                sa.update(DeadLetter)
                .where(
                    DeadLetter.object_type == object_type,
                    DeadLetter.system == sys_name,
                    DeadLetter.object_id.in_(ids[i : i + 500]),
                    DeadLetter.resolved_at.is_(None),
                )
                .values(resolved_at=now)
                .execution_options(synchronize_session=False)
            )
            resolved += int(getattr(result, "rowcount", 0) or 0)
    return resolved


async def list_open(session: AsyncSession, limit: int = 100) -> list[DeadLetterRecord]:
    """Open dead letters, oldest first."""
    stmt = (
        sa.select(*_COLUMNS)
        .where(DeadLetter.resolved_at.is_(None))
        .order_by(DeadLetter.created_at, DeadLetter.id)
        .limit(limit)
    )
    return [_record(r) for r in await session.execute(stmt)]


async def for_record(
    session: AsyncSession,
    object_type: str,
    *,
    hubspot_id: str | None = None,
    brevo_id: str | None = None,
    identity_key: str | None = None,
    limit: int = 20,
) -> list[DeadLetterRecord]:
    """The dead letters, open or resolved, of one record (by either id or its identity key),
    newest first (for ``connector explain``)."""
    match = [
        c
        for c in (
            sa.and_(DeadLetter.system == "hubspot", DeadLetter.object_id == hubspot_id)
            if hubspot_id
            else None,
            sa.and_(DeadLetter.system == "brevo", DeadLetter.object_id == brevo_id)
            if brevo_id
            else None,
            DeadLetter.identity_key == identity_key if identity_key else None,
        )
        if c is not None
    ]
    if not match:
        return []
    stmt = (
        sa.select(*_COLUMNS)
        .where(DeadLetter.object_type == object_type, sa.or_(*match))
        .order_by(DeadLetter.created_at.desc(), DeadLetter.id.desc())
        .limit(limit)
    )
    return [_record(r) for r in await session.execute(stmt)]


async def get(session: AsyncSession, id: int) -> DeadLetterRecord | None:
    """One dead letter, open or resolved; ``None`` if there is no such id."""
    row = (await session.execute(sa.select(*_COLUMNS).where(DeadLetter.id == id))).one_or_none()
    return None if row is None else _record(row)


async def resolve(session: AsyncSession, id: int, now: datetime) -> bool:
    """Close an open dead letter; ``False`` if it does not exist or was already resolved."""
    stmt = (
        sa.update(DeadLetter)
        .where(DeadLetter.id == id, DeadLetter.resolved_at.is_(None))
        .values(resolved_at=now)
        .execution_options(synchronize_session=False)
    )
    return cast(sa.CursorResult[Any], await session.execute(stmt)).rowcount > 0


async def count_open(session: AsyncSession) -> int:
    """How many dead letters are open."""
    stmt = sa.select(sa.func.count()).where(DeadLetter.resolved_at.is_(None))
    return int(await session.scalar(stmt) or 0)


async def purge_resolved(
    session: AsyncSession, before: datetime, *, limit: int | None = None
) -> int:
    """Delete dead letters resolved before ``before``; open ones are never touched. How many
    (``limit``: at most that many, oldest ids first — one transaction per chunk)."""
    where = sa.and_(DeadLetter.resolved_at.is_not(None), DeadLetter.resolved_at < before)
    if limit is not None:
        chunk = sa.select(DeadLetter.id).where(where).order_by(DeadLetter.id).limit(limit)
        where = DeadLetter.id.in_(chunk.scalar_subquery())
    stmt = sa.delete(DeadLetter).where(where).execution_options(synchronize_session=False)
    return cast(sa.CursorResult[Any], await session.execute(stmt)).rowcount


__all__ = [
    "MAX_ERROR_LEN",
    "DeadLetterRecord",
    "add",
    "count_open",
    "for_record",
    "get",
    "list_open",
    "purge_resolved",
    "resolve",
]
