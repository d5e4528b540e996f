"""End-to-end test bed for the operator commands: both sandboxes on loopback ports (in this
process), the default mapping's custom fields created on both sides, a config file pointing at
them, and ``connector …`` run as a real process."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync_env import ROOT, create_custom_fields

from connector.mapping import load_mapping
from connector.sandbox.server import SandboxServers


@dataclass
class CliEnv:
    servers: SandboxServers
    config: Path
    db_path: Path

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    def writes(self) -> tuple[int, int]:
        """State-changing calls each sandbox has answered so far (HubSpot, Brevo)."""
        return self.servers.hubspot.log.writes(), self.servers.brevo.calls.writes()

    async def cli(self, *args: str) -> tuple[int, str, str]:
        return await run_cli("--config", str(self.config), *args)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, params).fetchall()


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config_text(servers: SandboxServers, db_url: str, **sync: Any) -> str:
    """The sandbox config with the repository's mappings and the given ``sync:`` settings."""
    lines = [f"  mappings_dir: {ROOT / 'mappings'}"]
    lines += [f"  {key}: {value}" for key, value in sync.items()]
    return servers.config_yaml(db_url) + "sync:\n" + "\n".join(lines) + "\n"


@asynccontextmanager
async def cli_env(
    tmp_path: Path, *, hubspot: int = 0, brevo: int = 0, **sync: Any
) -> AsyncIterator[CliEnv]:
    """Sandboxes seeded with ``hubspot`` and ``brevo`` contacts, and a config for them."""
    async with SandboxServers(rate_limits=False) as servers:
        mapping = load_mapping(ROOT / "mappings" / "contacts.yaml", default_region="US")
        create_custom_fields(servers.hubspot, servers.brevo, mapping)
        if hubspot:
            servers.hubspot.seed_contacts(hubspot)
        if brevo:
            servers.brevo.seed_contacts(brevo, seed=1)
        db_path = tmp_path / "connector.db"
        config = tmp_path / "config.yaml"
        config.write_text(config_text(servers, f"sqlite:///{db_path}", **sync), encoding="utf-8")
        yield CliEnv(servers, config, db_path)
