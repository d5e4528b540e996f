"""The last-synced association sets (table ``association_state``): the merge base of links.

One row per record (by HubSpot id), object type and associated type: the HubSpot ids of the
records it was associated with when both sides last agreed. Every function runs in the
caller's transaction; reads go in chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store.db import dialect_insert
from connector.store.models import AssociationState, utcnow

CHUNK = 500


async def load(
    session: AsyncSession, object_type: str, to_type: str, hubspot_ids: Iterable[str]
) -> dict[str, frozenset[str]]:
    """The stored sets of these records (records never synced are absent)."""
    ids = list(dict.fromkeys(hubspot_ids))
    out: dict[str, frozenset[str]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        stmt = sa.select(AssociationState.hubspot_id, AssociationState.to_hubspot_ids).where(
            AssociationState.object_type == object_type,
            AssociationState.to_type == to_type,
            AssociationState.hubspot_id.in_(chunk),
        )
        for hid, to_ids in (await session.execute(stmt)).all():
            out[str(hid)] = frozenset(str(i) for i in to_ids or [])
    return out


async def save(
    session: AsyncSession,
    object_type: str,
    to_type: str,
    sets: Mapping[str, Iterable[str]],
    *,
    now: datetime | None = None,
) -> None:
    """Insert or replace the sets of these records: one statement."""
    if not sets:
        return
    stamp = now or utcnow()
    rows = [
        {
            "object_type": object_type,
            "hubspot_id": hid,
            "to_type": to_type,
            "to_hubspot_ids": sorted(set(ids)),
            "updated_at": stamp,
        }
        for hid, ids in sets.items()
    ]
    stmt = dialect_insert(session, AssociationState)
    stmt = stmt.on_conflict_do_update(
        index_elements=[
            AssociationState.object_type,
            AssociationState.hubspot_id,
            AssociationState.to_type,
        ],
        set_={
            "to_hubspot_ids": stmt.excluded.to_hubspot_ids,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    await session.execute(stmt, rows)


async def for_record(
    session: AsyncSession, object_type: str, hubspot_id: str
) -> list[tuple[str, list[str], datetime]]:
    """``(associated type, HubSpot ids, when)`` of every stored set of one record, by type."""
    stmt = (
        sa.select(
            AssociationState.to_type,
            AssociationState.to_hubspot_ids,
            AssociationState.updated_at,
        )
        .where(
            AssociationState.object_type == object_type,
            AssociationState.hubspot_id == hubspot_id,
        )
        .order_by(AssociationState.to_type)
    )
    return [(str(t), [str(i) for i in ids or []], at) for t, ids, at in await session.execute(stmt)]


async def forget(session: AsyncSession, object_type: str, hubspot_ids: Iterable[str]) -> None:
    """Drop every set of these records (they were deleted)."""
    ids = list(dict.fromkeys(hubspot_ids))
    for start in range(0, len(ids), CHUNK):
        await session.execute(
            sa.delete(AssociationState).where(
                AssociationState.object_type == object_type,
                AssociationState.hubspot_id.in_(ids[start : start + CHUNK]),
            )
        )


__all__ = ["for_record", "forget", "load", "save"]
