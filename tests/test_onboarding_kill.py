"""Exactly once under SIGKILL: ``connector run --once`` (a real process) is killed between and
inside every onboarding step, then run again, until the contact is onboarded. At the end the
contact has one owner write, one meeting, one welcome e-mail and one timeline note.

The kill comes from the sandbox itself: a small ASGI wrapper SIGKILLs the connector process
when a chosen request arrives — *before* the sandbox handles it (the step's external call has
not happened), or *after* the sandbox handled it but before the answer leaves (the call
happened and the process never learnt it: the idempotency keys must make the repeat
harmless). The kill is therefore at an exact point, not at a time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from daemon_env import config_text
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from sync_env import ROOT, create_custom_fields
from test_onboarding_runner import onboarding_yaml

from connector.mapping import load_mapping
from connector.sandbox.brevo import create_brevo_app
from connector.sandbox.hubspot import create_hubspot_app
from connector.sandbox.server import SandboxServers, _start

PROC = Path(__file__).resolve().parent / "onboarding_proc.py"
When = Literal["before", "after"]


@dataclass
class KillSwitch:
    """SIGKILLs ``pid`` at the first request matching the armed rule (then disarms)."""

    pid: int | None = None
    rule: tuple[str, str, When] | None = None
    fired: list[tuple[str, str, When]] = field(default_factory=list)

    def arm(self, pid: int, method: str, contains: str, when: When) -> None:
        self.pid, self.rule = pid, (method, contains, when)

    def _kill(self) -> None:
        assert self.pid is not None and self.rule is not None
        os.kill(self.pid, signal.SIGKILL)
        self.fired.append(self.rule)
        self.rule = None

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            rule = self.rule
            if (
                scope["type"] != "http"
                or rule is None
                or scope["method"] != rule[0]
                or rule[1] not in scope["path"]
            ):
                await app(scope, receive, send)
                return
            if rule[2] == "before":
                self._kill()  # the call never happens
                return

            async def swallow(message: Message) -> None:
                return None  # the answer never leaves

            await app(scope, receive, swallow)
            self._kill()

        return guarded


@dataclass
class KillableServers(SandboxServers):
    switch: KillSwitch = field(default_factory=KillSwitch)

    async def start(self) -> None:
        hubspot = self.switch.wrap(create_hubspot_app(self.hubspot))
        brevo = self.switch.wrap(create_brevo_app(self.brevo))
        self._running.append(await _start(hubspot, self.host, self.hubspot_port))
        self._running.append(await _start(brevo, self.host, self.brevo_port))


@dataclass
class KillEnv:
    servers: KillableServers
    config: Path
    db_path: Path

    async def run(self, kill: tuple[str, str, When] | None = None) -> int:
        """``connector run --once``; with ``kill``, SIGKILLed at that request."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROC),
            "--config",
            str(self.config),
            "run",
            "--once",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "160"},
        )
        if kill is not None:
            self.servers.switch.arm(proc.pid, *kill)
        _, err = await proc.communicate()
        assert proc.returncode is not None
        if kill is not None:
            assert self.servers.switch.fired[-1:] == [kill], (
                f"the process ended before reaching {kill}: {err.decode()[-2000:]}"
            )
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 0, err.decode()[-3000:]
        return proc.returncode

    def query(self, sql: str) -> list[tuple[object, ...]]:
        engine = sa.create_engine(f"sqlite:///{self.db_path}")
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(sql))]
        finally:
            engine.dispose()


@asynccontextmanager
async def kill_env(tmp_path: Path) -> AsyncIterator[KillEnv]:
    async with KillableServers(rate_limits=False) as servers:
        mapping = load_mapping(ROOT / "mappings" / "contacts.yaml", default_region="US")
        create_custom_fields(servers.hubspot, servers.brevo, mapping)
        servers.hubspot.seed_contacts(3)
        db_path = tmp_path / "connector.db"
        config = tmp_path / "config.yaml"
        text = config_text(servers, f"sqlite:///{db_path}") + onboarding_yaml()
        config.write_text(text, encoding="utf-8")
        yield KillEnv(servers, config, db_path)


#: Every step, killed before its external call and after it (answer lost); and between steps.
KILLS: list[tuple[str, str, When]] = [
    ("POST", "/contacts/batch/update", "before"),  # assign_owner, before the owner write
    ("POST", "/contacts/batch/update", "after"),  # … after it
    ("GET", "/crm/owners/", "before"),  # between assign_owner and book_call
    ("POST", "/crm/objects/2026-09/meetings", "before"),  # book_call, before the booking
    ("POST", "/crm/objects/2026-09/meetings", "after"),  # … after it
    ("POST", "/smtp/email", "before"),  # send_email (compose done), before the send
    ("POST", "/smtp/email", "after"),  # … after it: the e-mail is in the outbox
    ("GET", "/notes/contacts/labels", "before"),  # log_note, before the note
    ("POST", "/crm/objects/2026-09/notes", "before"),  # … at its create
    ("POST", "/crm/objects/2026-09/notes", "after"),  # … after it
]


async def test_killed_between_and_inside_every_step_onboards_exactly_once(
    tmp_path: Path,
) -> None:
    async with kill_env(tmp_path) as env:
        await env.run()  # the initial sync (the seeded base is not enrolled)
        hs, br = env.servers.hubspot, env.servers.brevo
        hid = hs.put_object(
            "contacts", {"email": "ada@example.com", "firstname": "Ada", "lastname": "Byron"}
        )
        for kill in KILLS:
            await env.run(kill)
        await env.run()
        assert env.servers.switch.fired == KILLS

        statuses = env.query(
            f"SELECT step, status FROM jobs WHERE hubspot_id = '{hid}' AND hook = 'onboarding' "
            "ORDER BY id"
        )
        assert statuses == [
            ("assign_owner", "succeeded"),
            ("book_call", "succeeded"),
            ("compose_email", "succeeded"),
            ("send_email", "succeeded"),
            ("log_note", "succeeded"),
        ]
        assert env.query("SELECT status FROM enrollments") == [("done",)]

        # one welcome e-mail in the transactional outbox, and nothing for the seeded base
        mails = [m for m in br.outbox]
        assert [m.to for m in mails] == [["ada@example.com"]]
        assert mails[0].payload["headers"] == {"IdempotencyKey": f"onboarding:{hid}:send_email"}
        # one meeting (booked once, whatever the crashes), associated to the contact
        meetings = list(hs.stores["meetings"].live.values())
        assert len(meetings) == 1
        assert [t for t, _ in hs.associations_of("contacts", int(hid), "meetings")] == [
            meetings[0].id
        ]
        # one note on the contact's timeline
        notes = [t for t, _ in hs.associations_of("contacts", int(hid), "notes")]
        assert len(notes) == 1 and len(hs.stores["notes"].live) == 1
        body = (hs.get_object("notes", notes[0]) or {}).get("hs_note_body") or ""
        assert f"onboarding:{hid}:log_note" in body
        # the owner: written once (the first attempt was killed before the write)
        owner = (hs.get_object("contacts", hid) or {}).get("hubspot_owner_id")
        assert owner == "71011001"
        updates = [
            c for c in hs.log.calls if c[0] == "POST" and c[1].endswith("/contacts/batch/update")
        ]
        assert len(updates) == 1

        # and a later run does nothing more
        await env.run()
        assert len(br.outbox) == 1 and len(hs.stores["notes"].live) == 1
        assert len(hs.stores["meetings"].live) == 1
