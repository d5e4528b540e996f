"""What booking the onboarding call takes and gives, whichever the calendar provider.

:class:`CalendarProvider` is the protocol both providers (HubSpot meetings, Google Calendar)
implement; :mod:`connector.onboarding.calendar` picks one from the config.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from connector.onboarding.owners import OwnerInfo
from connector.onboarding.slots import Interval

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class BookingRequest:
    key: str
    """idempotency key: the same key always yields the same booking"""
    owner: OwnerInfo
    contact_id: str
    contact_email: str
    contact_name: str
    start: datetime
    end: datetime
    title: str
    description: str
    """plain text: purpose and agenda (see :func:`call_text`)"""
    video_link: str | None


@dataclass(frozen=True)
class BookedCall:
    provider: str
    event_id: str
    start: datetime
    end: datetime
    link: str | None
    """the video link (a configured room, or the Meet link Google made), if any"""


class CalendarProvider(Protocol):
    async def busy(self, owner: OwnerInfo, start: datetime, end: datetime) -> list[Interval]: ...

    async def book(self, request: BookingRequest) -> BookedCall: ...

    """Book the call; idempotent on ``request.key``: a repeat (after a crash, a lost answer)
    returns the SAME booking, never a second event."""


def iso_utc(d: datetime) -> str:
    return d.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(d: datetime) -> str:
    return str(int(d.astimezone(UTC).timestamp() * 1000))


def body_html(request: BookingRequest) -> str:
    paras = [p for p in request.description.split("\n\n") if p.strip()]
    out = ["<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paras]
    if request.video_link:
        link = html.escape(request.video_link, quote=True)
        out.append(f'<p>Video link: <a href="{link}">{link}</a></p>')
    return "".join(out)


def body_text(request: BookingRequest) -> str:
    text = request.description
    if request.video_link:
        text += f"\n\nVideo link: {request.video_link}"
    return text


__all__ = [
    "BookedCall",
    "BookingRequest",
    "CalendarProvider",
    "Interval",
    "Sleep",
    "body_html",
    "body_text",
    "epoch_ms",
    "iso_utc",
]
