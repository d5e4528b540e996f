"""Named, expiring leases (table ``leases``): one holder at a time per name (DESIGN §8).

A daemon takes the lease of an account before pulling it, renews it while working and releases
it when done; if it dies, the lease expires and another replica takes over. Every function is a
single atomic statement in the caller's transaction: commit right after it, or other holders
do not see the change (and, on SQLite, wait for the write lock).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store.db import dialect_insert
from connector.store.models import Lease


async def acquire(
    session: AsyncSession, name: str, holder: str, ttl: timedelta, now: datetime
) -> bool:
    """Take lease ``name`` for ``holder`` until ``now + ttl``; ``True`` if ``holder`` has it.

    Succeeds if the lease is free, expired (``expires_at <= now``) or already ``holder``'s
    (then it is extended); fails while another holder's lease runs.
    """
    stmt = dialect_insert(session, Lease).values(name=name, holder=holder, expires_at=now + ttl)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Lease.name],
        set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
        where=sa.or_(Lease.expires_at <= now, Lease.holder == holder),
    )
    result = await session.execute(stmt.returning(Lease.holder))
    return result.scalar_one_or_none() == holder


async def take_over(
    session: AsyncSession, name: str, holder: str, dead: str, ttl: timedelta, now: datetime
) -> bool:
    """Take lease ``name`` from ``dead`` (a holder known to have died) before it expires.

    Atomic: it succeeds only while ``dead`` still holds the lease.
    """
    stmt = (
        sa.update(Lease)
        .where(Lease.name == name, Lease.holder == dead)
        .values(holder=holder, expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(await session.execute(stmt)) > 0


async def renew(
    session: AsyncSession, name: str, holder: str, ttl: timedelta, now: datetime
) -> bool:
    """Extend ``holder``'s lease to ``now + ttl``; ``False`` if it is no longer ``holder``'s."""
    stmt = (
        sa.update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(await session.execute(stmt)) > 0


async def release(session: AsyncSession, name: str, holder: str) -> bool:
    """Give lease ``name`` up; ``False`` if ``holder`` did not hold it (nothing changes)."""
    stmt = (
        sa.delete(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(await session.execute(stmt)) > 0


async def current_holder(session: AsyncSession, name: str, now: datetime) -> str | None:
    """Who holds lease ``name`` at ``now``; ``None`` if it is free or expired."""
    stmt = sa.select(Lease.holder).where(Lease.name == name, Lease.expires_at > now)
    return (await session.execute(stmt)).scalar_one_or_none()


async def holders(session: AsyncSession) -> list[tuple[str, str]]:
    """Every lease's ``(name, holder)``, expired or not, by name."""
    rows = await session.execute(sa.select(Lease.name, Lease.holder).order_by(Lease.name))
    return [(name, holder) for name, holder in rows]


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


__all__ = ["acquire", "current_holder", "holders", "release", "renew", "take_over"]
