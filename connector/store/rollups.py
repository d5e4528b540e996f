"""Roll-up state (tables ``rollup_values`` and ``rollup_members``).

``rollup_values`` holds, per HubSpot contact and Brevo attribute, the hash of the value last
written to Brevo: a refresh writes only the attributes whose hash changed. ``rollup_members``
holds which records (tickets, meetings…) counted for which contact at the last refresh, so a
deleted record — which HubSpot no longer associates with anyone — still names its contacts.

Every function runs in the caller's transaction; reads and deletes go in chunks of
:data:`CHUNK` keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store.db import dialect_insert, rowcount
from connector.store.models import RollupMember, RollupValue, utcnow

CHUNK = 500


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def value_hash(canonical: str) -> str:
    """The stored form of a value: hex SHA-256 of its canonical text."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def load_values(
    session: AsyncSession, contact_ids: Iterable[str]
) -> dict[tuple[str, str], str]:
    """``{(contact id, attribute): hash}`` of the values last written for these contacts."""
    ids = list(dict.fromkeys(contact_ids))
    out: dict[tuple[str, str], str] = {}
    for chunk in _chunks(ids):
        stmt = sa.select(RollupValue.hubspot_id, RollupValue.attribute, RollupValue.value_hash)
        for row in await session.execute(stmt.where(RollupValue.hubspot_id.in_(chunk))):
            out[(row.hubspot_id, row.attribute)] = row.value_hash
    return out


async def values_of(session: AsyncSession, contact_id: str) -> list[tuple[str, str, datetime]]:
    """``(attribute, hash, written at)`` of one contact's last written roll-ups, by name."""
    stmt = (
        sa.select(RollupValue.attribute, RollupValue.value_hash, RollupValue.written_at)
        .where(RollupValue.hubspot_id == contact_id)
        .order_by(RollupValue.attribute)
    )
    return [(str(a), str(h), w) for a, h, w in await session.execute(stmt)]


async def save_values(
    session: AsyncSession,
    hashes: Mapping[tuple[str, str], str],
    *,
    now: datetime | None = None,
) -> None:
    """Insert or replace ``{(contact id, attribute): hash}``: one statement."""
    if not hashes:
        return
    at = now or utcnow()
    rows = [
        {"hubspot_id": cid, "attribute": attr, "value_hash": h, "written_at": at}
        for (cid, attr), h in hashes.items()
    ]
    stmt = dialect_insert(session, RollupValue)
    stmt = stmt.on_conflict_do_update(
        index_elements=[RollupValue.hubspot_id, RollupValue.attribute],
        set_={"value_hash": stmt.excluded.value_hash, "written_at": stmt.excluded.written_at},
    )
    await session.execute(stmt, rows)


async def contacts_of(
    session: AsyncSession, object_type: str, record_ids: Iterable[str]
) -> dict[str, set[str]]:
    """``{record id: contact ids}`` as the last refresh saw them."""
    ids = list(dict.fromkeys(record_ids))
    out: dict[str, set[str]] = {}
    for chunk in _chunks(ids):
        stmt = sa.select(RollupMember.record_id, RollupMember.contact_id).where(
            RollupMember.object_type == object_type, RollupMember.record_id.in_(chunk)
        )
        for row in await session.execute(stmt):
            out.setdefault(row.record_id, set()).add(row.contact_id)
    return out


async def replace_members(
    session: AsyncSession, object_type: str, members: Mapping[str, Iterable[str]]
) -> None:
    """Set the records of each contact named in ``members`` (``{contact id: record ids}``)."""
    contacts = list(members)
    for chunk in _chunks(contacts):
        await session.execute(
            sa.delete(RollupMember).where(
                RollupMember.object_type == object_type, RollupMember.contact_id.in_(chunk)
            )
        )
    rows = [
        {"object_type": object_type, "record_id": rid, "contact_id": cid}
        for cid, records in members.items()
        for rid in dict.fromkeys(records)
    ]
    if rows:  # a concurrent refresh of the same contact may have inserted them already
        stmt = dialect_insert(session, RollupMember).on_conflict_do_nothing()
        await session.execute(stmt, rows)


async def forget_contacts(session: AsyncSession, contact_ids: Iterable[str]) -> int:
    """Delete everything kept about these HubSpot contacts (a privacy purge, a deletion);
    how many rows went."""
    ids = list(dict.fromkeys(contact_ids))
    gone = 0
    for chunk in _chunks(ids):
        for stmt in (
            sa.delete(RollupValue).where(RollupValue.hubspot_id.in_(chunk)),
            sa.delete(RollupMember).where(RollupMember.contact_id.in_(chunk)),
        ):
            gone += rowcount(await session.execute(stmt))
    return gone


__all__ = [
    "contacts_of",
    "forget_contacts",
    "load_values",
    "replace_members",
    "save_values",
    "value_hash",
    "values_of",
]
