"""Stored OAuth tokens and leases, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from store_fixtures import (  # noqa: F401 - pytest fixtures
    fixture_db_url,
    fixture_engine,
    fixture_migrated_url,
    fixture_pg_server,
    fixture_pg_url,
    fixture_sessions,
    fixture_sqlite_url,
)

from connector.errors import scrub
from connector.store import leases
from connector.store.tokens import StoredToken, load_refresh_token, save_tokens

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)
HOUR = timedelta(hours=1)


# --- tokens --------------------------------------------------------------------------------


async def test_tokens_round_trip_and_upsert(sessions: Sessions) -> None:
    async with sessions() as s:
        assert await load_refresh_token(s, "hubspot") is None

    async with sessions() as s, s.begin():
        await save_tokens(s, "hubspot", "refresh-one", "access-one", T0 + TTL, now=T0)
    async with sessions() as s:
        token = await load_refresh_token(s, "hubspot")
    assert token == StoredToken("hubspot", "refresh-one", "access-one", T0 + TTL, T0)

    later = T0 + timedelta(hours=1)
    async with sessions() as s, s.begin():
        await save_tokens(s, "hubspot", "refresh-two", None, None, now=later)
        # Read back inside the same session: the upsert is visible, not a stale identity.
        again = await load_refresh_token(s, "hubspot")
    assert again == StoredToken("hubspot", "refresh-two", None, None, later)


async def test_stored_token_hides_and_scrubs_secrets(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        await save_tokens(s, "hubspot", "refresh-xyz-123", "access-xyz-456", T0 + HOUR)
        token = await load_refresh_token(s, "hubspot")
    assert token is not None
    assert "xyz" not in repr(token)
    assert "xyz" not in scrub("refresh-xyz-123 / access-xyz-456")
    assert token.access_token_usable(T0)
    assert not token.access_token_usable(T0 + HOUR - timedelta(seconds=59))  # 60 s leeway
    assert token.access_token_usable(T0 + HOUR - timedelta(seconds=1), leeway=timedelta(0))
    assert not token.access_token_usable(T0 + HOUR, leeway=timedelta(0))


# --- leases --------------------------------------------------------------------------------


async def _acquire(sessions: Sessions, holder: str, now: datetime, name: str = "hs:1") -> bool:
    async with sessions() as s, s.begin():
        return await leases.acquire(s, name, holder, TTL, now)


async def _holder(sessions: Sessions, now: datetime, name: str = "hs:1") -> str | None:
    async with sessions() as s:
        return await leases.current_holder(s, name, now)


async def test_two_holders(sessions: Sessions) -> None:
    assert await _acquire(sessions, "a", T0)
    assert not await _acquire(sessions, "b", T0 + timedelta(seconds=5))
    assert await _acquire(sessions, "a", T0 + timedelta(seconds=10))  # ours: extended
    assert not await _acquire(sessions, "b", T0 + TTL)  # extension still runs
    assert await _holder(sessions, T0 + TTL) == "a"
    assert await _acquire(sessions, "b", T0, name="hs:2")  # other names are independent


async def test_expiry_takeover(sessions: Sessions) -> None:
    assert await _acquire(sessions, "a", T0)
    assert await _holder(sessions, T0 + TTL) is None  # expired at expires_at
    assert await _acquire(sessions, "b", T0 + TTL)
    assert await _holder(sessions, T0 + TTL) == "b"
    async with sessions() as s, s.begin():
        assert not await leases.renew(s, "hs:1", "a", TTL, T0 + TTL)
        assert not await leases.release(s, "hs:1", "a")
    assert await _holder(sessions, T0 + TTL) == "b"


async def test_renew(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        assert not await leases.renew(s, "hs:1", "a", TTL, T0)  # nothing to renew
    assert await _acquire(sessions, "a", T0)
    async with sessions() as s, s.begin():
        assert await leases.renew(s, "hs:1", "a", TTL, T0 + timedelta(seconds=20))
    assert not await _acquire(sessions, "b", T0 + timedelta(seconds=45))
    assert await _acquire(sessions, "b", T0 + timedelta(seconds=50))


async def test_release(sessions: Sessions) -> None:
    assert await _acquire(sessions, "a", T0)
    async with sessions() as s, s.begin():
        assert not await leases.release(s, "hs:1", "b")  # not b's to give up
    assert await _holder(sessions, T0) == "a"
    async with sessions() as s, s.begin():
        assert await leases.release(s, "hs:1", "a")
        assert not await leases.release(s, "hs:1", "a")
    assert await _holder(sessions, T0) is None
    assert await _acquire(sessions, "b", T0 + timedelta(seconds=1))


async def test_concurrent_acquire_has_one_winner(sessions: Sessions) -> None:
    holders = [f"replica-{i}" for i in range(6)]
    won = await asyncio.gather(*(_acquire(sessions, h, T0) for h in holders))
    assert sum(won) == 1
    assert await _holder(sessions, T0) == holders[won.index(True)]
