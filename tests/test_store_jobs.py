"""Hook jobs, enrollments and hook state (connector/store/jobs.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
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

from connector.store import jobs

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def _backoff(n: int) -> timedelta:
    return timedelta(seconds=10 * 2 ** (n - 1))


async def _enroll(sessions: Sessions, hid: str, email: str | None = None) -> int | None:
    async with sessions() as s, s.begin():
        return await jobs.enroll(
            s,
            "onboarding",
            hid,
            first_step="assign_owner",
            source="new",
            now=T0,
            identity=jobs.identity_hash(email),
        )


async def test_enrollment_is_once_per_contact_and_queues_the_first_step(
    sessions: Sessions,
) -> None:
    first = await _enroll(sessions, "101", "Ada@Example.com ")
    assert first is not None
    assert await _enroll(sessions, "101", "ada@example.com") is None  # once, whatever happens
    async with sessions() as s:
        listed = await jobs.list_jobs(s)
        found = await jobs.find_enrollment(s, "onboarding", "101")
        assert await jobs.identity_enrolled(
            s, "onboarding", jobs.identity_hash("ada@example.com") or ""
        )
    assert [(j.key, j.status, j.enrollment_id) for j in listed] == [
        ("onboarding:101:assign_owner", "pending", first)
    ]
    assert found is not None and found.identity_hash == jobs.identity_hash("ada@example.com")
    assert found.identity_hash is not None and "ada" not in found.identity_hash


async def test_claim_succeed_and_chain_never_repeats_a_succeeded_step(sessions: Sessions) -> None:
    eid = await _enroll(sessions, "7")
    async with sessions() as s, s.begin():
        claimed = await jobs.claim(s, worker="w1", limit=10, lease=LEASE, now=T0)
    assert [(j.step, j.attempts, j.resumed) for j in claimed] == [("assign_owner", 1, False)]
    job = claimed[0]
    async with sessions() as s, s.begin():
        assert await jobs.save_state(s, job.id, {"owner_id": "101"}, worker="w1")
        assert await jobs.succeed(s, job.id, {"owner_id": "101"}, now=T0, worker="w1")
        nxt = await jobs.add(
            s,
            jobs.JobInput(
                "onboarding:7:book_call", "onboarding", "book_call", "7", enrollment_id=eid
            ),
            now=T0,
            claimed_by="w1",
            lease=LEASE,
        )
    assert nxt is not None
    async with sessions() as s, s.begin():
        # nothing is due: the first step succeeded, the second is claimed by w1
        assert await jobs.claim(s, worker="w2", limit=10, lease=LEASE, now=T0 + LEASE / 2) == []
        assert not await jobs.succeed(s, nxt, {}, now=T0, worker="w2")  # not w2's claim
        assert eid is not None
        assert await jobs.results(s, eid) == {"assign_owner": {"owner_id": "101"}}
        again = await jobs.get(s, job.id)
    assert again is not None and again.status == "succeeded" and again.state == {"owner_id": "101"}


async def test_an_expired_or_dead_holders_claim_is_taken_over_and_marked_resumed(
    sessions: Sessions,
) -> None:
    await _enroll(sessions, "1")
    await _enroll(sessions, "2")
    async with sessions() as s, s.begin():
        got = await jobs.claim(s, worker="dead:1", limit=1, lease=LEASE, now=T0)
        got += await jobs.claim(s, worker="slow:2", limit=1, lease=LEASE, now=T0)
    assert len(got) == 2
    soon = T0 + timedelta(seconds=5)
    async with sessions() as s, s.begin():
        assert sorted(await jobs.live_holders(s, soon)) == ["dead:1", "slow:2"]
        taken = await jobs.claim(
            s, worker="w", limit=10, lease=LEASE, now=soon, dead_holders=["dead:1"]
        )
    assert [(j.hubspot_id, j.attempts, j.resumed) for j in taken] == [("1", 2, True)]
    async with sessions() as s, s.begin():
        late = await jobs.claim(s, worker="w", limit=10, lease=LEASE, now=T0 + LEASE)
    assert [(j.hubspot_id, j.resumed) for j in late] == [("2", True)]


async def test_failures_back_off_then_die_and_retry_revives(sessions: Sessions) -> None:
    await _enroll(sessions, "9")
    now = T0
    outcomes = []
    for _ in range(3):
        async with sessions() as s, s.begin():
            (job,) = await jobs.claim(s, worker="w", limit=1, lease=LEASE, now=now)
            outcomes.append(
                await jobs.fail(s, job.id, "boom", now=now, max_attempts=3, backoff=_backoff)
            )
        async with sessions() as s:
            row = await jobs.get(s, job.id)
        assert row is not None
        if outcomes[-1] == "retry":
            assert row.next_attempt_at == now + _backoff(row.attempts)
            async with sessions() as s, s.begin():  # not due before its time
                assert await jobs.claim(s, worker="w", limit=1, lease=LEASE, now=now) == []
            now = row.next_attempt_at
    assert outcomes == ["retry", "retry", "dead"]
    async with sessions() as s:
        assert [j.id for j in await jobs.list_jobs(s, failed_only=True)] == [job.id]
    async with sessions() as s, s.begin():
        revived = await jobs.retry(s, job.id, now=now)
        assert await jobs.retry(s, job.id, now=now) is None  # pending now, not failed
    assert revived is not None and revived.status == "pending" and revived.attempts == 0
    async with sessions() as s, s.begin():
        (job,) = await jobs.claim(s, worker="w", limit=1, lease=LEASE, now=now)
        assert (
            await jobs.fail(
                s, job.id, "no", now=now, max_attempts=3, backoff=_backoff, permanent=True
            )
            == "dead"
        )


async def test_defer_does_not_count_the_attempt(sessions: Sessions) -> None:
    await _enroll(sessions, "5")
    async with sessions() as s, s.begin():
        (job,) = await jobs.claim(s, worker="w", limit=1, lease=LEASE, now=T0)
        await jobs.defer(s, job.id, T0 + timedelta(hours=10), "quiet hours", now=T0)
    async with sessions() as s, s.begin():
        assert (
            await jobs.claim(s, worker="w", limit=1, lease=LEASE, now=T0 + timedelta(hours=9)) == []
        )
        (job,) = await jobs.claim(s, worker="w", limit=1, lease=LEASE, now=T0 + timedelta(hours=10))
    assert job.attempts == 1


async def test_hook_state_enabled_at_and_round_robin_sequence(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        assert await jobs.enabled_at(s, "onboarding") is None
        assert await jobs.set_enabled(s, "onboarding", True, now=T0) == T0
    async with sessions() as s, s.begin():  # enabled again later: the first time stands
        assert await jobs.set_enabled(s, "onboarding", True, now=T0 + LEASE) == T0
    async with sessions() as s, s.begin():
        assert await jobs.set_enabled(s, "onboarding", False, now=T0 + LEASE) is None
        assert await jobs.set_enabled(s, "onboarding", True, now=T0 + 2 * LEASE) == T0 + 2 * LEASE

    async def take() -> int:
        async with sessions() as s, s.begin():
            return await jobs.next_sequence(s, "onboarding", now=T0)

    taken = [await take() for _ in range(3)]
    taken += await asyncio.gather(*(take() for _ in range(5)))
    assert sorted(taken) == list(range(8))  # never the same position twice


@pytest.mark.parametrize("workers", [4])
async def test_concurrent_claims_never_hand_one_job_to_two_workers(
    sessions: Sessions, workers: int
) -> None:
    for i in range(20):
        await _enroll(sessions, str(i))

    async def worker(name: str) -> list[int]:
        mine: list[int] = []
        while True:
            async with sessions() as s, s.begin():
                got = await jobs.claim(s, worker=name, limit=3, lease=LEASE, now=T0)
            if not got:
                return mine
            mine += [j.id for j in got]

    claimed = await asyncio.gather(*(worker(f"w{i}") for i in range(workers)))
    every = [i for ids in claimed for i in ids]
    assert len(every) == len(set(every)) == 20


async def test_reopen_skipped_and_send_count_by_person(sessions: Sessions) -> None:
    eid = await _enroll(sessions, "40", "grace@example.com")
    assert eid is not None
    async with sessions() as s, s.begin():
        (job,) = await jobs.claim(s, worker="w", limit=1, lease=LEASE, now=T0)
        await jobs.succeed(s, job.id, {"skipped": "old"}, now=T0)
        await jobs.set_enrollment(s, eid, "skipped", "created before", now=T0)
    async with sessions() as s, s.begin():
        assert not await jobs.identity_enrolled(
            s, "onboarding", jobs.identity_hash("grace@example.com") or ""
        )
        assert await jobs.reopen_skipped(s, "onboarding", "40", first_step="assign_owner", now=T0)
        assert not await jobs.reopen_skipped(
            s, "onboarding", "40", first_step="assign_owner", now=T0
        )
        found = await jobs.find_enrollment(s, "onboarding", "40")
        (job,) = await jobs.claim(s, worker="w", limit=1, lease=LEASE, now=T0)
    assert found is not None and (found.source, found.status) == ("existing", "active")
    async with sessions() as s, s.begin():
        send = await jobs.add(
            s,
            jobs.JobInput(
                "onboarding:40:send_email", "onboarding", "send_email", "40", enrollment_id=eid
            ),
            now=T0,
            claimed_by="w",
            lease=LEASE,
        )
        assert send is not None
        await jobs.succeed(s, send, {"message_id": "m"}, now=T0)
        # the same person under a new HubSpot id counts, another person does not
        ident = jobs.identity_hash("GRACE@example.com")
        assert await jobs.count_succeeded(s, "onboarding", "send_email", ident, "99") == 1
        other = jobs.identity_hash("x@example.com")
        assert await jobs.count_succeeded(s, "onboarding", "send_email", other, "99") == 0
