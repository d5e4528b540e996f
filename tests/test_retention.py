"""Retention on SQLite and PostgreSQL: what is past ``sync.retention_days`` goes, in chunks;
dead inbox events, open dead letters, pending work and the newest run of each job stay.
Then the daemon: it purges once at start (and schedules the daily run)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
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

from connector.config import (
    BrevoSettings,
    Connectors,
    DatabaseSettings,
    HubSpotSettings,
    Settings,
    SyncSettings,
)
from connector.daemon import Daemon
from connector.engine import Outcome
from connector.retention import STEPS, purge_expired
from connector.runtime import Runtime
from connector.store import db, deadletters, history, inbox, links, runs
from connector.store.inbox import InboxInput
from connector.store.models import (
    DeadLetter,
    InboxItem,
    PurgedIdentity,
    Run,
    SyncHistory,
    System,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=31)  # past the default 30 days
RECENT = NOW - timedelta(days=29)
BACKOFF: dict[str, Any] = {"backoff": lambda n: timedelta(seconds=n)}


def item(key: str) -> InboxInput:
    return InboxInput("hubspot", key, "contacts", key, "contact.propertyChange")


async def seed_inbox(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Old: 5 done, 1 dead, 1 failed (retry due), 1 claimed. Recent: 1 done."""
    async with sessions() as s, s.begin():
        await inbox.enqueue(s, [item(f"old{i}") for i in range(8)], now=OLD)
        await inbox.enqueue(s, [item("recent")], now=RECENT)
    async with sessions() as s, s.begin():
        old = await inbox.claim(s, worker="w", limit=8, lease=timedelta(days=9), now=OLD)
        recent = await inbox.claim(s, worker="w", limit=1, lease=timedelta(minutes=5), now=RECENT)
    assert len(old) == 8 and [i.dedup_key for i in recent] == ["recent"]
    async with sessions() as s, s.begin():
        await inbox.complete(s, [i.id for i in old[:5]], now=OLD)
        await inbox.complete(s, [recent[0].id], now=RECENT)
        assert await inbox.fail(s, old[5].id, "x", now=OLD, max_attempts=1, **BACKOFF) == "dead"
        assert await inbox.fail(s, old[6].id, "x", now=OLD, max_attempts=9, **BACKOFF) == "retry"


async def seed_history(sessions: async_sessionmaker[AsyncSession]) -> None:
    """7 old rows and 2 recent ones, on one link."""
    async with sessions() as s, s.begin():
        link = await links.upsert_link(
            s, "contacts", hubspot_id="1", brevo_id="2", identity_key="a@example.com", now=OLD
        )
        entries = [
            history.HistoryEntry("contacts", link, f"f{i}", "to_brevo", "create", at)
            for i, at in enumerate([OLD] * 7 + [RECENT] * 2)
        ]
        await history.record(s, entries)


async def add_run(
    sessions: async_sessionmaker[AsyncSession],
    kind: str,
    system: System | None,
    started: datetime,
    status: str,
) -> int:
    async with sessions() as s, s.begin():
        run_id = await runs.start_run(s, kind, system, "contacts", started)  # type: ignore[arg-type]
        if status != "running":
            await runs.finish_run(s, run_id, status, {}, None, started)  # type: ignore[arg-type]
    return run_id


async def seed_runs(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    ids = {}
    for n in range(3):  # old ok pulls of HubSpot: only the newest stays (the last success)
        ids[f"hs_ok{n}"] = await add_run(
            sessions, "pull", "hubspot", OLD - timedelta(hours=3 - n), "ok"
        )
    ids["hs_failed"] = await add_run(sessions, "pull", "hubspot", OLD, "failed")  # newest
    ids["br_ok_old"] = await add_run(sessions, "pull", "brevo", OLD - timedelta(days=5), "ok")
    ids["br_ok_recent"] = await add_run(sessions, "pull", "brevo", RECENT, "ok")
    ids["running"] = await add_run(sessions, "worker", None, OLD, "running")
    ids["reconcile"] = await add_run(sessions, "reconcile", None, OLD, "ok")  # its only run
    return ids


async def seed_dead_letters(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Resolved long ago: 3; resolved lately: 1; open (old): 1."""
    async with sessions() as s, s.begin():
        for n in range(5):
            letter = await deadletters.add(
                s,
                system="brevo",
                object_type="contacts",
                object_id=str(n),
                identity_key=None,
                operation="update",
                payload={},
                error="refused",
                attempts=3,
                now=OLD - timedelta(days=1),
            )
            if n < 3:
                await deadletters.resolve(s, letter, OLD)
            elif n == 3:
                await deadletters.resolve(s, letter, RECENT)


async def column(sessions: async_sessionmaker[AsyncSession], stmt: Any) -> list[Any]:
    async with sessions() as s:
        return list((await s.execute(stmt)).scalars())


async def test_purge_removes_what_is_past_retention_in_chunks_and_keeps_the_rest(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed_inbox(sessions)
    await seed_history(sessions)
    ids = await seed_runs(sessions)
    await seed_dead_letters(sessions)
    async with sessions() as s, s.begin():
        for n, age in enumerate((40, 31, 2)):
            s.add(PurgedIdentity(hash=f"h{n}", purged_at=NOW - timedelta(days=age)))

    result = await purge_expired(sessions, retention_days=30, now=NOW, chunk=2)

    assert result.before == NOW - timedelta(days=30)
    assert result.deleted == {
        "inbox_done": 5,
        "sync_history": 7,
        "runs": 3,
        "dead_letters_resolved": 3,
        "privacy_tombstones": 2,
    }
    # chunks of 2: inbox 3 (2+2+1), history 4 (2+2+2+1), runs 2 (2+1), letters 2 (2+1),
    # tombstones 2 (2+0)
    assert result.chunks == 13 and not result.stopped
    async with sessions() as s:
        kept = (await s.execute(sa.select(PurgedIdentity.hash))).scalars().all()
    assert kept == ["h2"]
    statuses = await column(sessions, sa.select(InboxItem.status).order_by(InboxItem.id))
    assert sorted(statuses) == ["dead", "done", "failed", "processing"]  # done: the recent one
    synced = await column(sessions, sa.select(SyncHistory.synced_at))
    assert synced == [RECENT, RECENT]
    kept = set(await column(sessions, sa.select(Run.id)))
    assert kept == {
        ids["hs_ok2"],  # the newest success of HubSpot's pulls …
        ids["hs_failed"],  # … and its newest run
        ids["br_ok_recent"],
        ids["running"],
        ids["reconcile"],
    }
    letters = await column(sessions, sa.select(DeadLetter.resolved_at).order_by(DeadLetter.id))
    assert letters == [RECENT, None]

    again = await purge_expired(sessions, retention_days=30, now=NOW, chunk=2)
    assert again.total == 0 and again.chunks == len(STEPS)  # one empty chunk per step


async def test_purge_stops_between_chunks(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed_inbox(sessions)
    checks = 0

    def stop() -> bool:
        nonlocal checks
        checks += 1
        return checks > 1  # one chunk, then stop

    result = await purge_expired(sessions, retention_days=30, now=NOW, chunk=2, stop=stop)
    assert result.stopped and result.deleted == {"inbox_done": 2} and result.chunks == 1


async def test_a_longer_retention_keeps_everything(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed_inbox(sessions)
    await seed_history(sessions)
    result = await purge_expired(sessions, retention_days=60, now=NOW)
    assert result.total == 0


# --- the daemon ------------------------------------------------------------------------------


async def test_the_daemon_purges_once_at_start_and_schedules_a_daily_run(
    migrated_url: str,
) -> None:
    engine = db.create_engine(migrated_url)
    sessions = db.session_factory(engine)
    try:
        await seed_inbox(sessions)
    finally:
        await engine.dispose()
    settings = Settings(
        connectors=Connectors(
            hubspot=HubSpotSettings(base_url="http://127.0.0.1:9", access_token="test-token"),
            brevo=BrevoSettings(base_url="http://127.0.0.1:9/v3", api_key="test-brevo-key"),
        ),
        database=DatabaseSettings(url=migrated_url),
        sync=SyncSettings(poll_interval=3600, retention_days=30),
    )

    async def pull(object_type: str, system: System, stop: Any) -> Outcome:
        return Outcome()

    async def reconcile(object_type: str) -> Outcome:
        return Outcome()

    async with Runtime.open(settings, load_engines=False) as rt:
        daemon = Daemon(rt, objects=["contacts"], pull=pull, reconcile=reconcile, clock=lambda: NOW)
        task = asyncio.create_task(daemon.run())
        try:
            deadline = time.monotonic() + 10
            while True:
                done = await column(
                    rt.sessions, sa.select(sa.func.count()).where(InboxItem.status == "done")
                )
                if done == [1] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            assert done == [1]  # the five old ones went; the recent one stays
            assert daemon.scheduler is not None
            job = daemon.scheduler.get_job("retention")
            assert job is not None and job.trigger.interval == timedelta(days=1)
        finally:
            daemon.stop()
            await asyncio.wait_for(task, timeout=10)
