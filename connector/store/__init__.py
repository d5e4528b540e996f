"""The state store: one SQL database (SQLite or PostgreSQL) whose schema Alembic owns.

``models`` holds the tables, ``db`` the URLs, engines, sessions and migrations, and one small
module per table family the queries (``tokens``, ``leases``, …). Functions taking a session run
in the caller's transaction; the caller commits.
"""

from connector.store.db import (
    DbStatus,
    alembic_config,
    check,
    create_engine,
    current_revision,
    downgrade,
    head_revision,
    migrations_dir,
    session_factory,
    to_async_url,
    to_sync_url,
    upgrade,
)
from connector.store.models import Base

__all__ = [
    "Base",
    "DbStatus",
    "alembic_config",
    "check",
    "create_engine",
    "current_revision",
    "downgrade",
    "head_revision",
    "migrations_dir",
    "session_factory",
    "to_async_url",
    "to_sync_url",
    "upgrade",
]
