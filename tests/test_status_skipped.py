"""Contacts without an email are never dropped silently: counted, and listed by id."""

from __future__ import annotations

import json
from pathlib import Path

from daemon_env import cli_env


async def test_contact_without_email_is_counted_and_listed(tmp_path: Path) -> None:
    async with cli_env(tmp_path, hubspot=5) as env:
        no_email = env.servers.hubspot.put_object("contacts", {"firstname": "Nomail"})
        code, out, err = await env.cli("run", "--once")
        assert code == 0, out + err
        code, out, _ = await env.cli("status", "--json")
        assert json.loads(out)["skipped_no_email"] == 1
        code, out, err = await env.cli("status", "--skipped")
        assert code == 0, err
        assert no_email in out and "no email" in out
        assert len(env.servers.brevo.contacts) == 5  # the other five went through
