"""Schema tests: URLs, every migration up and down, models == migrations, check(), types."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import OperationalError, StatementError
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

from connector.errors import StoreError
from connector.store import db
from connector.store.db import SqliteBegin
from connector.store.models import Base, FieldState, Job, Lease, Link

TABLES = {
    "links",
    "field_state",
    "cursors",
    "inbox",
    "jobs",
    "runs",
    "dead_letters",
    "skipped_records",
    "oauth_tokens",
    "leases",
    "sync_history",
}


def _tables(url: str) -> set[str]:
    eng = sa.create_engine(db.to_sync_url(url))
    try:
        with eng.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        eng.dispose()


def _diff(url: str, metadata: sa.MetaData) -> list[Any]:
    eng = sa.create_engine(db.to_sync_url(url))
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(ctx, metadata))
    finally:
        eng.dispose()


# --- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "async_url", "sync_url"),
    [
        ("sqlite:///state.db", "sqlite+aiosqlite:///state.db", "sqlite:///state.db"),
        ("sqlite+aiosqlite:////var/x.db", "sqlite+aiosqlite:////var/x.db", "sqlite:////var/x.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db", "sqlite:///x.db"),
        (
            "postgresql://u:p%40ss@h:5432/d?sslmode=require",
            "postgresql+psycopg://u:p%40ss@h:5432/d?sslmode=require",
            "postgresql+psycopg://u:p%40ss@h:5432/d?sslmode=require",
        ),
        ("postgresql+psycopg://h/d", "postgresql+psycopg://h/d", "postgresql+psycopg://h/d"),
    ],
)
def test_url_translation(url: str, async_url: str, sync_url: str) -> None:
    assert db.to_async_url(url) == async_url
    assert db.to_sync_url(url) == sync_url
    assert db.to_sync_url(db.to_async_url(url)) == sync_url


@pytest.mark.parametrize(
    "url", ["mysql://u:s3cret@h/d", "postgresql+asyncpg://u:s3cret@h/d", "not a url"]
)
def test_unsupported_url_is_refused(url: str) -> None:
    with pytest.raises(StoreError) as info:
        db.to_async_url(url)
    message = str(info.value)
    assert "database.url" in message
    assert "sqlite:///" in message and "postgresql://" in message
    assert "s3cret" not in message
    with pytest.raises(StoreError):
        db.create_engine(url)


# --- migrations ----------------------------------------------------------------------------


def test_migrations_are_found_and_have_one_head() -> None:
    directory = db.migrations_dir()
    assert (directory / "env.py").is_file()
    assert (directory / "versions" / "0001_initial.py").is_file()
    assert (directory / "versions" / "0002_sync_history.py").is_file()
    script = ScriptDirectory.from_config(db.alembic_config())
    assert len(script.get_heads()) == 1
    newest = max(p.name.split("_")[0] for p in (directory / "versions").glob("[0-9]*.py"))
    assert db.head_revision() == script.get_current_head() == newest


def test_every_migration_up_and_down(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # no alembic.ini needed, from any working directory
    script = ScriptDirectory.from_config(db.alembic_config())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert db.current_revision(db_url) is None

    for revision in revisions:  # one step up at a time
        db.upgrade(db_url, revision)
        assert db.current_revision(db_url) == revision
    assert _tables(db_url) >= TABLES

    for expected in [*reversed(revisions[:-1]), None]:  # one step down at a time
        db.downgrade(db_url, "-1")
        assert db.current_revision(db_url) == expected
    assert _tables(db_url) & TABLES == set()

    db.upgrade(db_url)
    assert db.current_revision(db_url) == db.head_revision()
    db.downgrade(db_url, "base")
    db.upgrade(db_url, "head")
    assert _tables(db_url) >= TABLES


def test_models_match_migrations(migrated_url: str) -> None:
    assert _diff(migrated_url, Base.metadata) == []
    # The comparison is not vacuous: a model change the migrations lack is reported.
    changed = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    sa.Table("links", changed, sa.Column("extra", sa.String()), extend_existing=True)
    sa.Index("ix_inbox_extra", changed.tables["inbox"].c.object_id)
    kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in _diff(migrated_url, changed)}
    assert kinds == {"add_column", "add_index"}


def test_async_driver_url_migrates(sqlite_url: str) -> None:
    url = db.to_async_url(sqlite_url)
    db.upgrade(url)
    assert db.current_revision(url) == db.head_revision()


def test_bad_revision_is_a_store_error(sqlite_url: str) -> None:
    with pytest.raises(StoreError, match="upgrade failed"):
        db.upgrade(sqlite_url, "nope")


# --- check() -------------------------------------------------------------------------------


async def test_check_reports_migration_state(db_url: str) -> None:
    eng = db.create_engine(db_url)
    try:
        before = await db.check(eng)
        assert before.reachable and before.current is None and not before.migrated
        assert before.head == db.head_revision() and before.error is None

        await asyncio.to_thread(db.upgrade, db_url)
        after = await db.check(eng)
        assert after.reachable and after.migrated and after.current == after.head
    finally:
        await eng.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-dir/for/sure/state.db",
        "postgresql://postgres:s3cret-pw@127.0.0.1:1/nothing",
    ],
    ids=["sqlite", "postgres"],
)
async def test_check_reports_unreachable(url: str) -> None:
    eng = db.create_engine(url)
    try:
        status = await db.check(eng)
    finally:
        await eng.dispose()
    assert not status.reachable and not status.migrated
    assert status.error and "s3cret-pw" not in status.error


# --- engine and column types ---------------------------------------------------------------


async def test_sqlite_pragmas(sqlite_url: str) -> None:
    eng = db.create_engine(sqlite_url)
    try:
        async with eng.connect() as conn:
            values = {
                p: (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar()
                for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await eng.dispose()
    assert values == {
        "journal_mode": "wal",
        "synchronous": 1,
        "foreign_keys": 1,
        "busy_timeout": 5000,
    }


async def test_timestamps_are_aware_utc(sessions: async_sessionmaker[AsyncSession]) -> None:
    paris = timezone(timedelta(hours=2))
    local = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=paris)
    async with sessions() as s, s.begin():
        s.add(Link(object_type="contact", hubspot_id="1", created_at=local, updated_at=local))
    async with sessions() as s:
        link = (await s.execute(sa.select(Link))).scalar_one()
        assert link.created_at == local and link.created_at.tzinfo is UTC
        assert link.created_at.hour == 12
        # SQL comparisons see the same instant, whatever zone the bound value is in.
        found = await s.scalar(
            sa.select(sa.func.count()).where(
                Link.created_at < local.astimezone(UTC) + timedelta(microseconds=1)
            )
        )
        assert found == 1

    with pytest.raises(StatementError, match="naive datetime"):
        async with sessions() as s, s.begin():
            s.add(Link(object_type="contact", created_at=datetime(2025, 1, 1), updated_at=local))


async def test_defaults_cascade_and_json_null(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        link = Link(object_type="contact", hubspot_id="1", brevo_id="a@b.c")
        s.add(link)
        await s.flush()
        s.add(FieldState(link_id=link.id, field="email", value_hash="ab" * 32, origin="hubspot"))
        s.add(Job(idempotency_key="k", hook="onboarding", step="email", subject="1"))
    async with sessions() as s:
        job = (await s.execute(sa.select(Job))).scalar_one()
        assert (job.status, job.attempts, job.result) == ("pending", 0, None)
        assert await s.scalar(sa.select(sa.func.count()).where(Job.result.is_(None))) == 1
    async with sessions() as s, s.begin():
        await s.execute(sa.delete(Link))
    async with sessions() as s:
        assert await s.scalar(sa.select(sa.func.count()).select_from(FieldState)) == 0


@pytest.mark.parametrize("begin", ["IMMEDIATE", "DEFERRED"])
async def test_sqlite_read_then_write_is_serialized(sqlite_url: str, begin: SqliteBegin) -> None:
    db.upgrade(sqlite_url)
    eng = db.create_engine(sqlite_url, sqlite_begin=begin)
    sessions = db.session_factory(eng)

    async def take_next() -> str:
        # Read, think, write: the shape of claiming work from a table.
        async with sessions() as s, s.begin():
            n = await s.scalar(sa.select(sa.func.count()).select_from(Lease))
            await asyncio.sleep(0.05)
            s.add(Lease(name=f"slot-{n}", holder="x", expires_at=datetime.now(UTC)))
            return f"slot-{n}"

    try:
        results = await asyncio.gather(take_next(), take_next(), return_exceptions=True)
    finally:
        await eng.dispose()
    if begin == "IMMEDIATE":
        assert sorted(results) == ["slot-0", "slot-1"]  # type: ignore[type-var]
    else:  # the second writer's snapshot is stale: it fails instead of double-claiming
        assert "slot-0" in results
        assert any(isinstance(r, OperationalError) for r in results)
