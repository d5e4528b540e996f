"""Run the HubSpot, Brevo and Google Calendar sandboxes on loopback HTTP ports (uvicorn).

``async with SandboxServers(seed_contacts=50) as s:`` starts them (``seed_crm=True`` adds
companies, deals, tickets and engagements to the seeded contacts), each on its own free port
of 127.0.0.1, and gives ``s.hubspot_url``, ``s.brevo_url``, ``s.calendar_token_url`` and
``s.calendar_base_url``, and the credentials they accept. The calendar sandbox has a calendar
for each HubSpot sandbox owner, named by the owner's e-mail (the google provider's default).
``connector sandbox``, ``connector demo``, the end-to-end tests and the benchmarks use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn

from connector.sandbox import calendar as calendar_sandbox
from connector.sandbox.brevo import BrevoState, create_brevo_app
from connector.sandbox.calendar import CalendarState, create_calendar_app
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.sandbox.seed_crm import seed_brevo_crm, seed_hubspot_crm

HUBSPOT_TOKEN = "sandbox-token"
BREVO_API_KEY = "sandbox-brevo-key"
HUBSPOT_CLIENT_SECRET = "sandbox-client-secret"
BREVO_WEBHOOK_EVENTS = (
    "contactUpdated",
    "contactDeleted",
    "listAddition",
    "unsubscribed",
    "hardBounce",
    "spam",
)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@dataclass
class _Running:
    server: uvicorn.Server
    task: asyncio.Task[None]
    sock: socket.socket

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port


async def _start(app: Any, host: str, port: int) -> _Running:
    sock = _bind(host, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # re-raise the start-up error
        await asyncio.sleep(0.01)
    return _Running(server, task, sock)


@dataclass
class SandboxServers:
    """The sandboxes on loopback ports (0 = any free port)."""

    seed_contacts: int = 0
    seed_crm: bool = False
    """with the seeded contacts, also companies, deals, tickets and engagements
    (:mod:`connector.sandbox.seed_crm`)"""
    host: str = "127.0.0.1"
    hubspot_port: int = 0
    brevo_port: int = 0
    calendar_port: int = 0
    rate_limits: bool = True
    hubspot: HubSpotState = field(init=False)
    brevo: BrevoState = field(init=False)
    calendar: CalendarState = field(init=False)
    _running: list[_Running] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.hubspot = HubSpotState(rate_limits=self.rate_limits)
        self.brevo = BrevoState(rate_limits=self.rate_limits)
        self.hubspot.add_token(HUBSPOT_TOKEN)
        self.brevo.add_api_key(BREVO_API_KEY, name="connector")
        self.calendar = CalendarState()
        for owner in self.hubspot.owners.values():
            self.calendar.add_calendar(owner.email)
        if self.seed_contacts:
            self.hubspot.seed_contacts(self.seed_contacts)
            self.brevo.seed_contacts(self.seed_contacts // 2, seed=1)
        if self.seed_crm:
            seed_hubspot_crm(self.hubspot)
            seed_brevo_crm(self.brevo)

    @property
    def hubspot_url(self) -> str:
        return f"http://{self.host}:{self._running[0].port}"

    @property
    def brevo_url(self) -> str:
        return f"http://{self.host}:{self._running[1].port}/v3"

    @property
    def calendar_url(self) -> str:
        return f"http://{self.host}:{self._running[2].port}"

    @property
    def calendar_token_url(self) -> str:
        """``onboarding.calendar.google.token_url`` for the calendar sandbox."""
        return f"{self.calendar_url}/token"

    @property
    def calendar_base_url(self) -> str:
        """``onboarding.calendar.google.base_url`` for the calendar sandbox."""
        return f"{self.calendar_url}/calendar/v3"

    def calendar_google_settings(self) -> dict[str, str]:
        """The ``onboarding.calendar.google`` mapping that points at the calendar sandbox."""
        return {
            "client_id": calendar_sandbox.DEFAULT_CLIENT_ID,
            "client_secret": calendar_sandbox.DEFAULT_CLIENT_SECRET,
            "refresh_token": calendar_sandbox.DEFAULT_REFRESH_TOKEN,
            "token_url": self.calendar_token_url,
            "base_url": self.calendar_base_url,
        }

    async def start(self) -> None:
        self._running.append(
            await _start(create_hubspot_app(self.hubspot), self.host, self.hubspot_port)
        )
        self._running.append(await _start(create_brevo_app(self.brevo), self.host, self.brevo_port))
        self._running.append(
            await _start(create_calendar_app(self.calendar), self.host, self.calendar_port)
        )

    def point_webhooks_at(
        self,
        hubspot_url: str | None,
        brevo_url: str | None = None,
        brevo_token: str | None = None,
        *,
        brevo_events: tuple[str, ...] = BREVO_WEBHOOK_EVENTS,
        brevo_batched: bool = False,
    ) -> None:
        """Send HubSpot's webhooks to ``hubspot_url`` and register a Brevo marketing webhook
        for ``brevo_url`` (bearer ``brevo_token``); None leaves that side as it is."""
        if hubspot_url is not None:
            self.hubspot.webhook_target_url = hubspot_url
        if brevo_url is not None:
            self.brevo.add_webhook(
                brevo_url,
                brevo_events,
                token=brevo_token,
                batched=brevo_batched,
                description="connector daemon",
            )

    async def stop(self) -> None:
        await self.hubspot.webhook_sender.aclose()
        await self.brevo.webhook_sender.aclose()
        for running in self._running:
            running.server.should_exit = True
        for running in self._running:
            with contextlib.suppress(asyncio.CancelledError):
                await running.task
            running.sock.close()
        self._running.clear()

    async def __aenter__(self) -> SandboxServers:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def config_yaml(self, database_url: str) -> str:
        """A complete config file pointing the connector at these sandboxes."""
        return f"""\
# Written by the connector for its sandboxes (loopback only; these are not real credentials).
connectors:
  hubspot:
    enabled: true
    base_url: {self.hubspot_url}
    api_version: "2026-09"
    access_token: "{HUBSPOT_TOKEN}"
    app_client_secret: "{HUBSPOT_CLIENT_SECRET}"
    tier: professional
    sync: {{contacts: true, companies: true, deals: true, tickets: true, engagements: true}}
    direction: bidirectional
    lists: {{all_contacts: 10, qualified_leads: 11, customers: 12}}
  brevo:
    base_url: {self.brevo_url}
    api_key: "{BREVO_API_KEY}"
    api_key_name: connector
database:
  url: {database_url}
"""
