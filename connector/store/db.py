"""Database URLs, engines, sessions and the Alembic commands behind ``connector db …``.

SQLite (``sqlite:///state.db``) is the default; PostgreSQL (``postgresql://…``, driven by
psycopg 3) is for production and for several daemons sharing one database. The daemon uses
async engines; Alembic runs on a sync engine, so the functions that migrate are synchronous
(the daemon calls them through ``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import NullPool

from connector.errors import StoreError, scrub

_ACCEPTED = "sqlite:///path/to/state.db or postgresql://user:password@host:5432/dbname"
_SQLITE = frozenset({"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"})
_POSTGRES = frozenset({"postgresql", "postgresql+psycopg"})


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"database.url is not a database URL; use {_ACCEPTED}") from None
    if parsed.drivername not in _SQLITE | _POSTGRES:
        raise StoreError(
            f"database.url: unsupported database {parsed.drivername!r}; use {_ACCEPTED}"
        )
    return parsed


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    """Whether ``url`` (any accepted form) names a SQLite database."""
    return _parse(url).drivername in _SQLITE


def to_async_url(url: str) -> str:
    """The async-driver form of ``url``: ``sqlite+aiosqlite://…`` or ``postgresql+psycopg://…``.

    Raises :class:`StoreError` for any other database.
    """
    parsed = _parse(url)
    driver = "sqlite+aiosqlite" if parsed.drivername in _SQLITE else "postgresql+psycopg"
    return _render(parsed.set(drivername=driver))


def to_sync_url(url: str) -> str:
    """The sync-driver form of ``url``: ``sqlite://…`` or ``postgresql+psycopg://…``.

    psycopg 3 is both sync and async, so PostgreSQL URLs keep the same driver.
    Raises :class:`StoreError` for any other database.
    """
    parsed = _parse(url)
    driver = "sqlite" if parsed.drivername in _SQLITE else "postgresql+psycopg"
    return _render(parsed.set(drivername=driver))


# --- migrations ----------------------------------------------------------------------------


def migrations_dir() -> Path:
    """The Alembic script directory.

    In a source checkout that is the top-level ``migrations/``; an installed wheel ships the
    same folder as ``connector/_migrations``.
    """
    package = Path(__file__).resolve().parents[1]
    root = package.parent
    source = root / "migrations"
    if (root / "pyproject.toml").is_file() and (source / "env.py").is_file():
        return source
    return package / "_migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config built in code (no ``alembic.ini``): works from any directory.

    ``url`` (any accepted form) is handed to ``migrations/env.py`` as ``attributes['url']``.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.attributes["url"] = to_sync_url(url)
    return cfg


def _run_command(url: str, action: str, fn: Any, *args: Any) -> None:
    try:
        fn(alembic_config(url), *args)
    except CommandError as exc:
        raise StoreError(f"database {action} failed: {exc}") from exc
    except DBAPIError as exc:
        raise StoreError(f"database {action} failed: {_describe(exc)}") from exc


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the newest)."""
    _run_command(url, "upgrade", command.upgrade, revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops every table)."""
    _run_command(url, "downgrade", command.downgrade, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at; ``None`` if it was never migrated."""
    engine = sa.create_engine(to_sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return _current(connection)
    except DBAPIError as exc:
        raise StoreError(
            f"database.url: cannot read the schema revision: {_describe(exc)}"
        ) from exc
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision this version of the connector ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise StoreError(f"no migrations found in {migrations_dir()}")
    return head


# --- engines and sessions ------------------------------------------------------------------


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, decide where transactions begin (see create_engine).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "busy_timeout=5000",
        ):
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


SqliteBegin = Literal["IMMEDIATE", "DEFERRED"]


def create_engine(
    url: str, *, sqlite_begin: SqliteBegin = "IMMEDIATE", **kwargs: Any
) -> AsyncEngine:
    """An async engine for ``url`` (any accepted form); ``kwargs`` go to ``create_async_engine``.

    On SQLite every connection gets ``journal_mode=WAL``, ``synchronous=NORMAL``,
    ``foreign_keys=ON`` and ``busy_timeout=5000``, and each transaction starts with
    ``BEGIN IMMEDIATE``: transactions are serialized (SQLite has one writer anyway), so a
    read-then-write unit such as claiming inbox rows is safe without ``FOR UPDATE``. Keep
    transactions short: a waiting one fails with "database is locked" after 5 s. A read-only
    tool may pass ``sqlite_begin="DEFERRED"`` to read beside a running daemon.
    """
    async_url = to_async_url(url)
    kwargs.setdefault("pool_pre_ping", True)
    engine = _create_async_engine(async_url, **kwargs)
    if async_url.startswith("sqlite"):
        begin = f"BEGIN {sqlite_begin}"

        def on_begin(connection: Connection) -> None:
            # The sqlite3 driver would BEGIN only before the first INSERT/UPDATE/DELETE,
            # leaving earlier reads outside the transaction; we begin it ourselves.
            connection.exec_driver_sql(begin)

        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", on_begin)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine``; objects stay readable after commit (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def dialect_insert(session: AsyncSession, model: type[Any]) -> postgresql.Insert | sqlite.Insert:
    """``INSERT`` for ``model`` in the session's dialect, so ``on_conflict_do_*`` is available.

    Both dialects spell upserts the same way: ``index_elements=``, ``set_=``, ``where=`` and
    ``stmt.excluded``.
    """
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise StoreError(f"database.url: unsupported database {name!r}; use {_ACCEPTED}")


# --- shared by the queue tables (inbox, jobs) -------------------------------------------------

#: Longest error text kept per row.
MAX_ERROR_LEN = 2000


def rowcount(result: Any) -> int:
    """The rows an ``UPDATE``/``DELETE``/``INSERT`` result touched."""
    return cast(sa.CursorResult[Any], result).rowcount


def clip_error(error: str) -> str:
    """``error`` scrubbed of secrets and cut to :data:`MAX_ERROR_LEN` characters."""
    text = scrub(error)
    return text if len(text) <= MAX_ERROR_LEN else text[: MAX_ERROR_LEN - 1] + "…"


async def record_failure(
    session: AsyncSession,
    table: Any,
    row_id: int,
    error: str,
    *,
    now: datetime,
    max_attempts: int,
    backoff: Callable[[int], timedelta],
    permanent: bool = False,
) -> Literal["retry", "dead"]:
    """One failed attempt of a queue row (``table`` has ``attempts``, ``status``, the claim
    columns, ``last_error``, ``next_attempt_at``): ``failed`` until ``now +
    backoff(attempts)``, or ``dead`` at ``max_attempts`` (at once if ``permanent``).
    ``backoff`` gets the attempts made so far (1 after the first failure)."""
    attempts = await session.scalar(sa.select(table.attempts).where(table.id == row_id))
    if attempts is None:
        raise StoreError(f"{table.__tablename__} row {row_id} does not exist")
    attempts = max(attempts, 1)
    outcome: Literal["retry", "dead"] = "dead" if permanent or attempts >= max_attempts else "retry"
    values: dict[str, Any] = {
        "status": "dead" if outcome == "dead" else "failed",
        "attempts": attempts,
        "claimed_by": None,
        "claimed_until": None,
        "last_error": clip_error(error),
        "updated_at": now,
    }
    if outcome == "retry":
        values["next_attempt_at"] = now + backoff(attempts)
    await session.execute(
        sa.update(table)
        .where(table.id == row_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return outcome


# --- health check --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DbStatus:
    """What ``connector test`` reports about the database."""

    reachable: bool
    current: str | None
    head: str
    error: str | None = None

    @property
    def migrated(self) -> bool:
        """Reachable and at the newest revision."""
        return self.reachable and self.current == self.head


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).strip().splitlines()
    return scrub(text[0] if text else type(exc).__name__)


def _missing_sqlite_dir(url: URL) -> Path | None:
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:") or url.query.get("uri"):
        return None  # an sqlite URI filename: let the driver judge it
    parent = Path(database).expanduser().resolve().parent
    return None if parent.is_dir() else parent


#: Seconds :func:`check` waits for the database before reporting it unreachable.
CHECK_TIMEOUT = 10.0


async def check(engine: AsyncEngine) -> DbStatus:
    """Connect and read the schema revision; never raises for an unusable database."""
    head = head_revision()
    missing = _missing_sqlite_dir(engine.url)
    if missing is not None:
        error = f"the directory of the SQLite file does not exist: {missing}"
        return DbStatus(reachable=False, current=None, head=head, error=error)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), engine.connect() as connection:
            current = await connection.run_sync(_current)
    except TimeoutError:
        error = f"no answer within {CHECK_TIMEOUT:g} s"
        return DbStatus(reachable=False, current=None, head=head, error=error)
    except (SQLAlchemyError, OSError) as exc:
        return DbStatus(reachable=False, current=None, head=head, error=_describe(exc))
    return DbStatus(reachable=True, current=current, head=head)


__all__ = [
    "CHECK_TIMEOUT",
    "MAX_ERROR_LEN",
    "DbStatus",
    "SqliteBegin",
    "alembic_config",
    "check",
    "clip_error",
    "create_engine",
    "current_revision",
    "dialect_insert",
    "downgrade",
    "head_revision",
    "is_sqlite",
    "migrations_dir",
    "record_failure",
    "rowcount",
    "session_factory",
    "to_async_url",
    "to_sync_url",
    "upgrade",
]
