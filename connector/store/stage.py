"""A resync's staging area (tables ``resync_stage`` and ``resync_checkpoints``).

Brevo cannot read contacts by email in batches; a resync therefore streams Brevo once into
``resync_stage`` and pairs HubSpot's pages against it by SQL. ``resync_checkpoints`` remembers
the phase and the HubSpot page token, so an interrupted resync resumes where it stopped.
Functions never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store.db import dialect_insert
from connector.store.models import ResyncCheckpoint, ResyncStage, utcnow
from connector.transforms import phone_key

CHUNK = 500


@dataclass
class Checkpoint:
    object_type: str
    mode: str
    phase: str = "stage"
    after: str | None = None
    last_stage_id: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StagedRow:
    id: int
    brevo_id: str
    identity_key: str | None
    payload: dict[str, Any]


async def load_checkpoint(session: AsyncSession, object_type: str) -> Checkpoint | None:
    row = await session.get(ResyncCheckpoint, object_type)
    if row is None:
        return None
    return Checkpoint(
        row.object_type, row.mode, row.phase, row.after, row.last_stage_id, dict(row.counts or {})
    )


async def save_checkpoint(
    session: AsyncSession, cp: Checkpoint, *, now: datetime | None = None
) -> None:
    now = now or utcnow()
    stmt = dialect_insert(session, ResyncCheckpoint).values(
        object_type=cp.object_type,
        mode=cp.mode,
        phase=cp.phase,
        after=cp.after,
        last_stage_id=cp.last_stage_id,
        counts=dict(cp.counts),
        started_at=now,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[ResyncCheckpoint.object_type],
        set_={
            "mode": stmt.excluded.mode,
            "phase": stmt.excluded.phase,
            "after": stmt.excluded.after,
            "last_stage_id": stmt.excluded.last_stage_id,
            "counts": stmt.excluded.counts,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    await session.execute(stmt)


async def clear(session: AsyncSession, object_type: str) -> None:
    """Forget a resync: its staged rows and its checkpoint."""
    await clear_rows(session, object_type)
    await session.execute(
        sa.delete(ResyncCheckpoint).where(ResyncCheckpoint.object_type == object_type)
    )


async def clear_rows(session: AsyncSession, object_type: str) -> None:
    """Drop the staged rows only (a resumed resync stages again), keeping the checkpoint."""
    await session.execute(sa.delete(ResyncStage).where(ResyncStage.object_type == object_type))


async def add_rows(session: AsyncSession, object_type: str, rows: Sequence[StagedRow]) -> None:
    if rows:
        await session.execute(
            sa.insert(_STAGE),  # Core executemany: no ORM objects per row
            [
                {
                    "object_type": object_type,
                    "brevo_id": r.brevo_id,
                    "identity_key": r.identity_key,
                    "payload": r.payload,
                    "sms": phone_key((r.payload.get("attributes") or {}).get("SMS")),
                    "matched": False,
                }
                for r in rows
            ],
        )


_STAGE = cast(sa.Table, ResyncStage.__table__)
_STAGE_COLUMNS = (
    ResyncStage.id,
    ResyncStage.brevo_id,
    ResyncStage.identity_key,
    ResyncStage.payload,
)


def _rows(result: Sequence[Any]) -> list[StagedRow]:
    return [StagedRow(r.id, r.brevo_id, r.identity_key, dict(r.payload)) for r in result]


async def by_brevo_ids(
    session: AsyncSession, object_type: str, ids: Sequence[str]
) -> list[StagedRow]:
    out: list[StagedRow] = []
    for i in range(0, len(ids), CHUNK):
        stmt = sa.select(*_STAGE_COLUMNS).where(
            ResyncStage.object_type == object_type, ResyncStage.brevo_id.in_(ids[i : i + CHUNK])
        )
        out += _rows((await session.execute(stmt)).all())
    return out


async def by_identity_keys(
    session: AsyncSession, object_type: str, keys: Sequence[str]
) -> list[StagedRow]:
    out: list[StagedRow] = []
    for i in range(0, len(keys), CHUNK):
        stmt = sa.select(*_STAGE_COLUMNS).where(
            ResyncStage.object_type == object_type,
            ResyncStage.identity_key.in_(keys[i : i + CHUNK]),
        )
        out += _rows((await session.execute(stmt)).all())
    return out


async def by_sms(session: AsyncSession, object_type: str, keys: Sequence[str]) -> dict[str, str]:
    """The staged Brevo contacts holding these SMS numbers (:func:`phone_key`): key → id."""
    found: dict[str, str] = {}
    for i in range(0, len(keys), CHUNK):
        stmt = sa.select(ResyncStage.sms, ResyncStage.brevo_id).where(
            ResyncStage.object_type == object_type, ResyncStage.sms.in_(keys[i : i + CHUNK])
        )
        for sms, brevo_id in (await session.execute(stmt)).all():
            if sms is not None:
                found[sms] = brevo_id
    return found


async def mark_matched(session: AsyncSession, object_type: str, brevo_ids: Sequence[str]) -> None:
    for i in range(0, len(brevo_ids), CHUNK):
        await session.execute(
            sa.update(ResyncStage)
            .where(
                ResyncStage.object_type == object_type,
                ResyncStage.brevo_id.in_(brevo_ids[i : i + CHUNK]),
            )
            .values(matched=True)
        )


async def unmatched_after(
    session: AsyncSession, object_type: str, after_id: int, limit: int
) -> list[StagedRow]:
    stmt = (
        sa.select(*_STAGE_COLUMNS)
        .where(
            ResyncStage.object_type == object_type,
            ResyncStage.matched.is_(False),
            ResyncStage.id > after_id,
        )
        .order_by(ResyncStage.id)
        .limit(limit)
    )
    return _rows((await session.execute(stmt)).all())


async def count(session: AsyncSession, object_type: str, *, unmatched: bool = False) -> int:
    stmt = sa.select(sa.func.count()).where(ResyncStage.object_type == object_type)
    if unmatched:
        stmt = stmt.where(ResyncStage.matched.is_(False))
    return int((await session.execute(stmt)).scalar_one())
