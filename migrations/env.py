"""Alembic environment of the connector's state database.

Configured in code by ``connector.store.db.alembic_config``: the database URL comes from
``config.attributes['url']`` (or the ``sqlalchemy.url`` option); an open sync connection may be
passed as ``config.attributes['connection']``. Async driver URLs are translated to sync ones.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection, make_url

from connector.store.db import to_sync_url
from connector.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set config.attributes['url'] or sqlalchemy.url")
    return to_sync_url(url)


def _configure(dialect: str, **kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        compare_server_default=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit the SQL script instead of running it (``--sql``)."""
    url = _url()
    _configure(
        make_url(url).get_backend_name(),
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    _configure(connection.dialect.name, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a fresh sync engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
