"""PLACEHOLDER (engineer A implements this module; the lead takes A's file at merge).

Only the interface the runner calls, so that imports work on this branch before the merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import httpx

from connector.hubspot.client import HubSpotClient
from connector.onboarding.owners import OwnerInfo
from connector.onboarding.settings import CalendarSettings
from connector.onboarding.slots import Interval


@dataclass(frozen=True)
class BookingRequest:
    key: str
    owner: OwnerInfo
    contact_id: str
    contact_email: str
    contact_name: str
    start: datetime
    end: datetime
    title: str
    description: str
    video_link: str | None


@dataclass(frozen=True)
class BookedCall:
    provider: str
    event_id: str
    start: datetime
    end: datetime
    link: str | None


class CalendarProvider(Protocol):
    async def busy(self, owner: OwnerInfo, start: datetime, end: datetime) -> list[Interval]: ...

    async def book(self, request: BookingRequest) -> BookedCall: ...


def make_provider(
    settings: CalendarSettings, *, hubspot: HubSpotClient, http: httpx.AsyncClient | None = None
) -> CalendarProvider:
    raise NotImplementedError("connector.onboarding.calendar comes from the steps branch")
