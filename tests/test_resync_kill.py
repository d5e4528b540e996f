"""A resync process killed (SIGKILL) in the middle, then run again: nothing lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from daemon_env import cli_env


def emails_hubspot(env: object) -> list[str]:
    store = env.servers.hubspot.stores["contacts"]  # type: ignore[attr-defined]
    return [o.props["email"].lower() for o in store.live.values() if o.props.get("email")]


def emails_brevo(env: object) -> list[str]:
    return [c.email.lower() for c in env.servers.brevo.contacts.values() if c.email]  # type: ignore[attr-defined]


async def test_killed_resync_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    async with cli_env(tmp_path, hubspot=2_200, brevo=300) as env:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "connector",
            "--config",
            str(env.config),
            "resync",
            "--yes",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "160"},
        )
        # kill it once it has written part of the way (imports are 1,000 rows each)
        for _ in range(3_000):
            if (
                env.servers.brevo.calls.count(contains="/contacts/import") >= 1
                or proc.returncode is not None
            ):
                break
            await asyncio.sleep(0.01)
        assert proc.returncode is None, "the resync ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        partial = len(emails_brevo(env))
        assert 300 <= partial < 2_500

        code, out, err = await env.cli("resync", "--yes")
        assert code == 0, out + err
        hs, br = emails_hubspot(env), emails_brevo(env)
        assert len(hs) == len(set(hs)) == 2_500  # nothing doubled in HubSpot
        assert len(br) == len(set(br)) == 2_500  # nor in Brevo
        assert set(hs) == set(br)  # nothing lost
        rows = env.query("select count(*) from links where object_type = 'contacts'")
        assert rows[0][0] == 2_500
        before = env.writes()
        code, _, _ = await env.cli("resync", "--yes")
        assert code == 0 and env.writes() == before  # in step: no write at all
