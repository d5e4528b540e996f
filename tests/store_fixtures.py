"""Database fixtures for the store tests: a fresh SQLite file or a fresh PostgreSQL database.

Import the fixtures you use explicitly: each is defined as ``fixture_<name>`` and registered
under ``<name>`` (``from store_fixtures import fixture_db_url`` provides ``db_url``), so the
test parameters do not shadow the imports.

PostgreSQL: ``CONNECTOR_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
names the server; every test gets its own ``connector_test_<run>_<n>`` database, created through
the ``postgres`` maintenance database and dropped afterwards, so parallel runs never clash.
If the server cannot be reached the tests are skipped — or fail when ``CI=true``.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from connector.store import db

PG_DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_SKIP_REASON = (
    "PostgreSQL not reachable at 127.0.0.1:5432 (set CONNECTOR_TEST_PG_URL to point elsewhere)"
)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@dataclass
class PgServer:
    """A reachable PostgreSQL server and a way to make throw-away databases on it."""

    url: URL
    admin: dict[str, Any]
    prefix: str
    counter: Iterator[int]

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(**self.admin, autocommit=True, connect_timeout=3)

    def create_database(self) -> str:
        name = f"{self.prefix}_{next(self.counter)}"
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_leftovers(self) -> None:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (self.prefix + "_%",)
            ).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _connect_args(url: URL, database: str | None) -> dict[str, Any]:
    args: dict[str, Any] = url.translate_connect_args(username="user", database="dbname")
    args.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    if database is not None:
        args["dbname"] = database
    return args


@pytest.fixture(scope="session", name="pg_server")
def fixture_pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server under test; skips (or fails on CI) when it is unreachable."""
    override = os.environ.get("CONNECTOR_TEST_PG_URL")
    url = make_url(override or PG_DEFAULT_URL)
    errors: list[str] = []
    admin: dict[str, Any] | None = None
    # CREATE DATABASE goes through the maintenance database; fall back to the named one.
    for database in ("postgres", url.database):
        args = _connect_args(url, database)
        try:
            with psycopg.connect(**args, autocommit=True, connect_timeout=3):
                admin = args
                break
        except psycopg.Error as exc:
            errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
    if admin is None:
        where = f"{url.host}:{url.port or 5432}"
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"CI requires PostgreSQL on {where} (CONNECTOR_TEST_PG_URL overrides the "
                f"default {PG_DEFAULT_URL}); connecting failed: {errors[-1]}",
                pytrace=False,
            )
        reason = PG_SKIP_REASON if not override else f"PostgreSQL not reachable at {where}"
        pytest.skip(reason)
    server = PgServer(
        url=url,
        admin=admin,
        prefix=f"connector_test_{uuid.uuid4().hex[:10]}",
        counter=itertools.count(1),
    )
    yield server
    server.drop_leftovers()


@pytest.fixture(name="pg_url")
def fixture_pg_url(pg_server: PgServer) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(name="sqlite_url")
def fixture_sqlite_url(tmp_path: Path) -> str:
    """URL of a new, empty SQLite database file."""
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture(params=BACKENDS, name="db_url")
def fixture_db_url(request: pytest.FixtureRequest) -> str:
    """URL of a new, empty database: once on SQLite, once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(name="migrated_url")
def fixture_migrated_url(db_url: str) -> str:
    """``db_url`` upgraded to the newest revision."""
    db.upgrade(db_url)
    return db_url


@pytest.fixture(name="engine")
async def fixture_engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on a migrated database."""
    eng = db.create_engine(migrated_url)
    yield eng
    await eng.dispose()


@pytest.fixture(name="sessions")
def fixture_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory on ``engine``."""
    return db.session_factory(engine)
