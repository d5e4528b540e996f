"""Stand-ins for the onboarding step functions (slots, owners, calendar, compose) with the
signatures of ``connector/onboarding/{slots,owners,calendar,compose}.py``, so that the hook
runner is tested on its own: durability, ordering, retries, exactly once.

The calendar stand-in books a real HubSpot meeting record in the sandbox, associated to the
contact and carrying the booking key, and returns the existing one for a key it has booked —
the provider contract (idempotent on ``request.key``) — so the tests count meetings in the
sandbox. :func:`install` makes :func:`connector.onboarding.runner.default_kit` return this kit
(the kill test's subprocess calls it before running the CLI).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from connector.hubspot.client import HubSpotClient
from connector.onboarding import runner
from connector.onboarding.calendar import BookedCall, BookingRequest, CalendarProvider
from connector.onboarding.compose import WelcomeContext, WelcomeEmail
from connector.onboarding.owners import OwnerInfo
from connector.onboarding.settings import (
    CalendarSettings,
    OnboardingSettings,
    OwnerSettings,
    WorkingHours,
)

Interval = tuple[datetime, datetime]


def find_slot(
    busy: Sequence[Interval],
    *,
    now: datetime,
    timezone: str,
    hours: WorkingHours,
    min_notice: timedelta,
    horizon: timedelta,
    duration: timedelta,
) -> Interval:
    """The first whole hour after the notice that no busy interval overlaps."""
    start = (now + min_notice).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while start < now + horizon:
        end = start + duration
        if not any(b0 < end and start < b1 for b0, b1 in busy):
            return start, end
        start += timedelta(hours=1)
    raise RuntimeError("no free slot")


def pick_owner(
    settings: OwnerSettings,
    contact: Mapping[str, str | None],
    *,
    sequence: int,
    loads: Mapping[str, int] | None = None,
    candidates: Sequence[str] | None = None,
) -> str:
    pool = list(candidates or settings.owner_ids)
    return pool[sequence % len(pool)]


async def owner_loads(hubspot: HubSpotClient, owner_ids: Sequence[str]) -> dict[str, int]:
    return dict.fromkeys(owner_ids, 0)


async def team_members(hubspot: HubSpotClient, team_id: str) -> list[str]:
    return []


async def owner_info(hubspot: HubSpotClient, owner_id: str) -> OwnerInfo:
    async for o in hubspot.iter_owners():
        if str(o.id) == str(owner_id):
            return OwnerInfo(str(o.id), o.email, o.first_name, o.last_name)
    return OwnerInfo(str(owner_id), None, None, None)


@dataclass
class MeetingsProvider:
    """HubSpot meeting records, idempotent on the booking key (kept in the meeting body)."""

    hubspot: HubSpotClient
    booked: list[str] = field(default_factory=list)

    async def busy(self, owner: OwnerInfo, start: datetime, end: datetime) -> list[Interval]:
        return []

    async def book(self, request: BookingRequest) -> BookedCall:
        """Find the meeting carrying the key (a repeat), else create it; then associate it
        (associating twice changes nothing), so a crash between the two calls heals."""
        found = None
        async for m in self.hubspot.iter_objects("meetings", ["hs_meeting_body"]):
            if request.key in (m.properties.get("hs_meeting_body") or ""):
                found = m.id
        if found is None:
            stamp = request.start.astimezone(UTC).isoformat().replace("+00:00", "Z")
            meeting = await self.hubspot.create_object(
                "meetings",
                {
                    "hs_timestamp": stamp,
                    "hs_meeting_title": request.title,
                    "hs_meeting_body": f"{html.escape(request.description)}<br>key {request.key}",
                    "hs_meeting_start_time": stamp,
                    "hs_meeting_end_time": request.end.astimezone(UTC).isoformat(),
                },
            )
            found = meeting.id
            self.booked.append(found)
        await self.hubspot.create_default_associations(
            "meetings", "contacts", [(found, request.contact_id)]
        )
        return self._call(found, request)

    @staticmethod
    def _call(event_id: str, request: BookingRequest) -> BookedCall:
        return BookedCall("hubspot_meetings", event_id, request.start, request.end, None)


def make_provider(
    settings: CalendarSettings, *, hubspot: HubSpotClient, http: httpx.AsyncClient | None = None
) -> CalendarProvider:
    return MeetingsProvider(hubspot)


@dataclass
class Composer:
    """The welcome e-mail from a fixed template; ``fail_first`` failures first (retries)."""

    fail_first: int = 0
    calls: int = 0

    async def __call__(
        self,
        settings: OnboardingSettings,
        ctx: WelcomeContext,
        *,
        base_dir: Path,
        http: httpx.AsyncClient | None = None,
    ) -> WelcomeEmail:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError(f"composer down (call {self.calls}) for {ctx.email}")
        first = ctx.first_name or "there"
        subject = f"Welcome to {settings.company.name}, {first}"
        when = f"{ctx.call.start:%Y-%m-%d %H:%M} UTC" if ctx.call else "soon"
        owner = ctx.owner.name if ctx.owner else "our team"
        body = (
            f"<h1>{html.escape(subject)}</h1><p>{html.escape(owner)} will call you on "
            f"{html.escape(when)}.</p>"
        )
        return WelcomeEmail(subject, body, "template", None)


def kit(composer: Composer | None = None) -> runner.StepKit:
    return runner.StepKit(
        find_slot=find_slot,
        pick_owner=pick_owner,
        owner_loads=owner_loads,
        team_members=team_members,
        owner_info=owner_info,
        make_provider=make_provider,
        compose_welcome=composer or Composer(),
        owner_cls=OwnerInfo,
        booking_cls=BookingRequest,
        call_cls=BookedCall,
        context_cls=WelcomeContext,
    )


def install(composer: Composer | None = None) -> runner.StepKit:
    """Make every runner built from now on (in this process) use the stand-ins."""
    built = kit(composer)
    runner.default_kit = lambda: built
    return built
