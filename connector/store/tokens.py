"""Stored OAuth tokens (table ``oauth_tokens``): the refresh token must survive restarts.

The functions run in the caller's transaction; the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.errors import register_secret
from connector.store.db import dialect_insert
from connector.store.models import OAuthToken, utcnow


@dataclass(frozen=True, slots=True)
class StoredToken:
    """One provider's tokens; the repr never shows them."""

    provider: str
    refresh_token: str = field(repr=False)
    access_token: str | None = field(repr=False)
    expires_at: datetime | None
    updated_at: datetime

    def access_token_usable(self, now: datetime, leeway: timedelta = timedelta(seconds=60)) -> bool:
        """Whether the access token exists and is still valid ``leeway`` from ``now``."""
        if self.access_token is None or self.expires_at is None:
            return False
        return self.expires_at - leeway > now


async def load_refresh_token(session: AsyncSession, provider: str) -> StoredToken | None:
    """The stored tokens of ``provider`` (e.g. ``"hubspot"``), or ``None`` if there are none."""
    stmt = (
        sa.select(OAuthToken)
        .where(OAuthToken.provider == provider)
        .execution_options(populate_existing=True)
    )
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        return None
    register_secret(row.refresh_token)
    register_secret(row.access_token)
    return StoredToken(
        provider=row.provider,
        refresh_token=row.refresh_token,
        access_token=row.access_token,
        expires_at=row.expires_at,
        updated_at=row.updated_at,
    )


async def save_tokens(
    session: AsyncSession,
    provider: str,
    refresh_token: str,
    access_token: str | None,
    expires_at: datetime | None,
    *,
    now: datetime | None = None,
) -> None:
    """Insert or replace the tokens of ``provider`` in one atomic upsert."""
    register_secret(refresh_token)
    register_secret(access_token)
    stmt = dialect_insert(session, OAuthToken).values(
        provider=provider,
        refresh_token=refresh_token,
        access_token=access_token,
        expires_at=expires_at,
        updated_at=now or utcnow(),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[OAuthToken.provider],
        set_={
            "refresh_token": stmt.excluded.refresh_token,
            "access_token": stmt.excluded.access_token,
            "expires_at": stmt.excluded.expires_at,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    await session.execute(stmt)


__all__ = ["StoredToken", "load_refresh_token", "save_tokens"]
