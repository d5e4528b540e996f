"""Roll-up state (``rollup_values``, ``rollup_members``) on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from store_fixtures import (  # noqa: F401 - fixtures
    fixture_db_url,
    fixture_engine,
    fixture_migrated_url,
    fixture_pg_server,
    fixture_pg_url,
    fixture_sessions,
    fixture_sqlite_url,
)

from connector.store import rollups as state

Sessions = async_sessionmaker[AsyncSession]


async def test_values_are_hashes_replaced_per_attribute(sessions: Sessions) -> None:
    a, b = state.value_hash("3.0"), state.value_hash("2026-03-01")
    async with sessions() as s, s.begin():
        await state.save_values(s, {("1", "OPEN_TICKETS"): a, ("1", "LAST_TICKET_DATE"): b})
        await state.save_values(s, {("2", "OPEN_TICKETS"): b})
    async with sessions() as s, s.begin():
        await state.save_values(s, {("1", "OPEN_TICKETS"): b})  # replaced, others kept
    async with sessions() as s:
        got = await state.load_values(s, ["1", "2", "3"])
    assert got == {("1", "OPEN_TICKETS"): b, ("1", "LAST_TICKET_DATE"): b, ("2", "OPEN_TICKETS"): b}
    assert a != b


async def test_members_are_replaced_per_contact_and_type(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        await state.replace_members(s, "tickets", {"1": ["10", "11"], "2": ["11"]})
        await state.replace_members(s, "meetings", {"1": ["10"]})
    async with sessions() as s, s.begin():
        await state.replace_members(s, "tickets", {"1": ["12"], "3": []})
        await state.replace_members(s, "tickets", {"1": ["12"]})  # again: no duplicate
    async with sessions() as s:
        tickets = await state.contacts_of(s, "tickets", ["10", "11", "12", "13"])
        meetings = await state.contacts_of(s, "meetings", ["10"])
    assert tickets == {"11": {"2"}, "12": {"1"}}
    assert meetings == {"10": {"1"}}


async def test_many_keys_go_in_chunks(sessions: Sessions) -> None:
    n = state.CHUNK * 2 + 7
    values = {(str(i), "X"): state.value_hash(str(i)) for i in range(n)}
    async with sessions() as s, s.begin():
        await state.save_values(s, values)
        await state.replace_members(s, "calls", {str(i): [str(i + 100_000)] for i in range(n)})
    async with sessions() as s:
        assert await state.load_values(s, [str(i) for i in range(n)]) == values
        found = await state.contacts_of(s, "calls", [str(i + 100_000) for i in range(n)])
    assert len(found) == n


async def test_forget_contacts(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        await state.save_values(
            s, {("1", "X"): state.value_hash("1"), ("2", "X"): state.value_hash("2")}
        )
        await state.replace_members(s, "tickets", {"1": ["10"], "2": ["10"]})
    async with sessions() as s, s.begin():
        assert await state.forget_contacts(s, ["1"]) == 2
    async with sessions() as s:
        assert await state.load_values(s, ["1", "2"]) == {("2", "X"): state.value_hash("2")}
        assert await state.contacts_of(s, "tickets", ["10"]) == {"10": {"2"}}
