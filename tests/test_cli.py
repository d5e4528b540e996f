"""The command line, end to end: real processes against the sandboxes on loopback ports."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from connector.sandbox.server import HUBSPOT_TOKEN, SandboxServers
from connector.store import db


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_connection_test_passes_against_sandboxes(tmp_path: Path) -> None:
    async with SandboxServers(seed_contacts=5) as servers:
        url = f"sqlite:///{tmp_path / 'c.db'}"
        cfg = tmp_path / "config.yaml"
        cfg.write_text(servers.config_yaml(url))
        code, out, err = await run_cli("--config", str(cfg), "test")
        assert code == 1, out + err  # not migrated yet
        assert "✗ Database reachable and migrated" in out and "connector db upgrade" in out
        await asyncio.to_thread(db.upgrade, url, "head")
        code, out, err = await run_cli("--config", str(cfg), "test")
        assert code == 0, out + err
        for check in (
            "✓ HubSpot reachable, token valid",
            "✓ HubSpot contacts readable",
            "✓ HubSpot companies readable",
            "✓ HubSpot deals readable",
            "✓ HubSpot write scope",
            "✓ Brevo API key valid",
            "✓ Brevo lists exist",
            "✓ Database reachable and migrated",
        ):
            assert check in out, out


async def test_revoked_token_fails_with_hint_and_no_secret(tmp_path: Path) -> None:
    async with SandboxServers() as servers:
        servers.hubspot.revoke(HUBSPOT_TOKEN)
        cfg = tmp_path / "config.yaml"
        cfg.write_text(servers.config_yaml(f"sqlite:///{tmp_path / 'c.db'}"))
        code, out, err = await run_cli("--config", str(cfg), "test")
        assert code == 1
        assert "✗ HubSpot reachable, token valid" in out
        assert "HTTP 401" in out and "Service Key" in out
        assert HUBSPOT_TOKEN not in out + err


async def test_missing_list_and_scope(tmp_path: Path) -> None:
    async with SandboxServers() as servers:
        read_only = "read-only-token-123"
        servers.hubspot.add_token(
            read_only,
            scopes=[
                "crm.objects.contacts.read",
                "crm.objects.companies.read",
                "crm.objects.deals.read",
            ],
        )
        cfg = tmp_path / "config.yaml"
        text = servers.config_yaml(f"sqlite:///{tmp_path / 'c.db'}")
        text = text.replace(HUBSPOT_TOKEN, read_only).replace("customers: 12", "customers: 99")
        cfg.write_text(text)
        code, out, _ = await run_cli("--config", str(cfg), "test")
        assert code == 1
        assert "✗ HubSpot write scope: missing crm.objects.contacts.write" in out
        assert "✗ Brevo lists exist: not found: customers=99" in out
        assert read_only not in out


async def test_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "connectors:\n  hubspot:\n    access_token: x\n    teir: pro\n  brevo:\n    api_key: y\n"
    )
    code, _out, err = await run_cli("--config", str(cfg), "test")
    assert code == 2
    assert "connectors.hubspot.teir: unknown key" in err
    assert "Traceback" not in err


async def test_db_upgrade_and_current(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cfg.write_text(
        "connectors:\n  hubspot:\n    access_token: x\n  brevo:\n    api_key: y\n"
        f"database:\n  url: {url}\n"
    )
    code, out, err = await run_cli("--config", str(cfg), "db", "upgrade")
    assert code == 0, err
    code, out, _ = await run_cli("--config", str(cfg), "db", "current")
    assert "up to date" in out
