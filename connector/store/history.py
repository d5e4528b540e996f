"""Sync history (table ``sync_history``): what travelled, which way, why, when — for ``explain``.

One row per field value the engine wrote: the link, the field key, the direction
(``to_brevo`` / ``to_hubspot``), the plan's ``rule_used`` and the times. No values: the store
is not a second CRM. Rows go with their link (``ON DELETE CASCADE``: a GDPR purge removes them).

Every function runs in the caller's transaction; :func:`record` is one statement per batch.
:func:`purge` deletes rows past ``sync.retention_days`` in bounded chunks
(:mod:`connector.retention` runs it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store.models import HistoryDirection, SyncHistory, System

#: Default and largest number of rows :func:`for_link` returns.
DEFAULT_LIMIT = 200


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One field that travelled. ``id`` is set on rows read back, ``None`` on new ones."""

    object_type: str
    link_id: int
    field: str
    direction: HistoryDirection
    decided_by: str
    synced_at: datetime
    origin_modified_at: datetime | None = None
    id: int | None = None


class WriteAction(Protocol):
    """What :func:`from_actions` reads of a plan's field action (``plan.FieldAction``)."""

    @property
    def field(self) -> str: ...

    @property
    def target(self) -> System | None: ...

    @property
    def rule_used(self) -> str | None: ...


def from_actions(
    object_type: str,
    link_id: int,
    actions: Iterable[WriteAction],
    synced_at: datetime,
    *,
    hubspot_modified: datetime | None = None,
    brevo_modified: datetime | None = None,
) -> list[HistoryEntry]:
    """The entries of one pair's writes: every action with a target, none for skips/no-ops.

    ``*_modified`` are the sides' modification times; a value going to Brevo came from
    HubSpot, so its ``origin_modified_at`` is ``hubspot_modified``, and vice versa.
    """
    entries: list[HistoryEntry] = []
    for a in actions:
        if a.target is None:
            continue
        origin = hubspot_modified if a.target == "brevo" else brevo_modified
        entries.append(
            HistoryEntry(
                object_type=object_type,
                link_id=link_id,
                field=a.field,
                direction="to_brevo" if a.target == "brevo" else "to_hubspot",
                decided_by=a.rule_used or "create",
                synced_at=synced_at,
                origin_modified_at=origin,
            )
        )
    return entries


async def record(session: AsyncSession, entries: Sequence[HistoryEntry]) -> None:
    """Insert the entries (one executemany statement); nothing for an empty list."""
    if not entries:
        return
    rows = [
        {
            "object_type": e.object_type,
            "link_id": e.link_id,
            "field": e.field,
            "direction": e.direction,
            "decided_by": e.decided_by,
            "origin_modified_at": e.origin_modified_at,
            "synced_at": e.synced_at,
        }
        for e in entries
    ]
    # the table, not the ORM entity: a Core executemany, no ORM bookkeeping per row
    await session.execute(sa.insert(cast(sa.Table, SyncHistory.__table__)), rows)


async def for_link(
    session: AsyncSession, link_id: int, limit: int = DEFAULT_LIMIT
) -> list[HistoryEntry]:
    """The link's history, newest first (at most ``limit`` rows)."""
    stmt = (
        sa.select(
            SyncHistory.id,
            SyncHistory.object_type,
            SyncHistory.link_id,
            SyncHistory.field,
            SyncHistory.direction,
            SyncHistory.decided_by,
            SyncHistory.synced_at,
            SyncHistory.origin_modified_at,
        )
        .where(SyncHistory.link_id == link_id)
        .order_by(SyncHistory.synced_at.desc(), SyncHistory.id.desc())
        .limit(limit)
    )
    return [
        HistoryEntry(
            object_type=r.object_type,
            link_id=r.link_id,
            field=r.field,
            direction=r.direction,
            decided_by=r.decided_by,
            synced_at=r.synced_at,
            origin_modified_at=r.origin_modified_at,
            id=r.id,
        )
        for r in await session.execute(stmt)
    ]


async def purge(session: AsyncSession, before: datetime, *, limit: int | None = None) -> int:
    """Delete history rows synced before ``before``; how many.

    With ``limit``, at most that many, the oldest ids first (a scan in id order that stops
    early, since old rows have the low ids): call it in a loop, one transaction per chunk.
    """
    where: sa.ColumnElement[bool] = SyncHistory.synced_at < before
    if limit is not None:
        chunk = sa.select(SyncHistory.id).where(where).order_by(SyncHistory.id).limit(limit)
        where = SyncHistory.id.in_(chunk.scalar_subquery())
    stmt = sa.delete(SyncHistory).where(where).execution_options(synchronize_session=False)
    return cast(sa.CursorResult[Any], await session.execute(stmt)).rowcount


__all__ = [
    "DEFAULT_LIMIT",
    "HistoryEntry",
    "WriteAction",
    "for_link",
    "from_actions",
    "purge",
    "record",
]
