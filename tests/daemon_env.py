"""End-to-end test bed for the operator commands: both sandboxes on loopback ports (in this
process), the default mapping's custom fields created on both sides, a config file pointing at
them, and ``connector …`` run as a real process — one-off commands (:meth:`CliEnv.cli`) or
daemons (:meth:`CliEnv.daemon`: ``connector run`` with its JSON log in a file, to be killed
with SIGKILL or stopped with SIGTERM). The store is SQLite unless ``db_url`` names another
database (the PostgreSQL tests pass theirs); ``webhooks_port`` adds the ``server:`` and
``webhooks:`` sections (loopback, :data:`WEBHOOK_TOKEN`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from sync_env import ROOT, create_custom_fields

from connector.mapping import load_mapping
from connector.sandbox.brevo_state import BrevoState
from connector.sandbox.server import SandboxServers
from connector.store import db

WEBHOOK_TOKEN = "brevo-webhook-token-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], within: float = 20.0, what: str = "condition"
) -> None:
    """Poll ``check`` every 50 ms until true; fail after ``within`` seconds (a hang guard, not
    a timing assertion)."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        assert time.monotonic() < deadline, f"{what}: not met within {within:g} s"
        await asyncio.sleep(0.05)


@dataclass
class DaemonProc:
    """A ``connector run`` process; its JSON log lines go to ``log_path``."""

    proc: asyncio.subprocess.Process
    log_path: Path
    _seen: int = field(default=0, init=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """The parsed log lines (``event`` and the given fields equal), in order."""
        out: list[dict[str, Any]] = []
        for line in self.text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if event is not None and entry.get("event") != event:
                continue
            if all(entry.get(k) == v for k, v in match.items()):
                out.append(entry)
        return out

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is released."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 15.0) -> int:  # noqa: ASYNC109
        """SIGTERM and wait for the exit code (SIGKILL after ``timeout`` seconds)."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise


@dataclass
class CliEnv:
    servers: SandboxServers
    config: Path
    db_path: Path
    url: str | None = None
    port: int | None = None
    """the daemon's intake port (``webhooks_port``), if webhooks are configured"""
    daemons: list[DaemonProc] = field(default_factory=list)

    @property
    def db_url(self) -> str:
        return self.url or f"sqlite:///{self.db_path}"

    @property
    def base_url(self) -> str:
        """The daemon's intake, ``http://127.0.0.1:<port>``."""
        assert self.port is not None, "cli_env(webhooks_port=...) configures the intake"
        return f"http://127.0.0.1:{self.port}"

    def writes(self) -> tuple[int, int]:
        """State-changing calls each sandbox has answered so far (HubSpot, Brevo)."""
        return self.servers.hubspot.log.writes(), self.servers.brevo.calls.writes()

    async def cli(self, *args: str) -> tuple[int, str, str]:
        return await run_cli("--config", str(self.config), *args)

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``:name`` parameters) on the store, SQLite or PostgreSQL."""
        engine = sa.create_engine(db.to_sync_url(self.db_url), poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(sql), params)]
        finally:
            engine.dispose()

    async def daemon(self, name: str = "daemon") -> DaemonProc:
        """Start ``connector run`` (its log: ``<config dir>/<name>-<n>.log``)."""
        log_path = self.config.parent / f"{name}-{len(self.daemons)}.log"
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "connector",
                "--config",
                str(self.config),
                "run",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, "COLUMNS": "160"},
            )
        running = DaemonProc(proc, log_path)
        self.daemons.append(running)
        return running


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


def create_rollup_attributes(brevo: BrevoState) -> None:
    """The Brevo attributes the repository's roll-up files write (what ``connector mappings
    check --create-missing`` creates in a real account)."""
    from connector.objects.rollup_mapping import load_rollup_mappings

    for rollup in load_rollup_mappings(ROOT / "mappings" / "rollups"):
        for f in rollup.fields:
            with contextlib.suppress(Exception):  # already there in this account
                brevo.create_attribute("normal", f.brevo, {"type": f.brevo_type})


@asynccontextmanager
async def cli_env(
    tmp_path: Path,
    *,
    hubspot: int = 0,
    brevo: int = 0,
    db_url: str | None = None,
    webhooks_port: int | None = None,
    **sync: Any,
) -> AsyncIterator[CliEnv]:
    """Sandboxes seeded with ``hubspot`` and ``brevo`` contacts, and a config for them.

    Daemons started with :meth:`CliEnv.daemon` are killed when the block ends."""
    async with SandboxServers(rate_limits=False) as servers:
        mapping = load_mapping(ROOT / "mappings" / "contacts.yaml", default_region="US")
        create_custom_fields(servers.hubspot, servers.brevo, mapping)
        create_rollup_attributes(servers.brevo)
        if hubspot:
            servers.hubspot.seed_contacts(hubspot)
        if brevo:
            servers.brevo.seed_contacts(brevo, seed=1)
        db_path = tmp_path / "connector.db"
        config = tmp_path / "config.yaml"
        text = config_text(servers, db_url or f"sqlite:///{db_path}", **sync)
        if webhooks_port is not None:
            text += (
                f"server:\n  host: 127.0.0.1\n  port: {webhooks_port}\n"
                f'webhooks:\n  brevo_token: "{WEBHOOK_TOKEN}"\n  coalesce_seconds: 0.1\n'
            )
        config.write_text(text, encoding="utf-8")
        env = CliEnv(servers, config, db_path, db_url, webhooks_port)
        try:
            yield env
        finally:
            for running in env.daemons:
                await running.kill()
