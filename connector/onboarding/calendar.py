"""Step 2 of onboarding: the owner's busy time and the booked call, through one provider.

``onboarding.calendar.provider`` picks it: ``hubspot_meetings``
(:class:`~connector.onboarding.meetings.HubSpotMeetings`, a meeting record associated to the
contact) or ``google`` (:class:`~connector.onboarding.google_calendar.GoogleCalendar`, an event
with the contact invited). Both implement :class:`CalendarProvider`: ``busy`` for the slot
finder, and ``book``, idempotent on the booking key — see each module for how, and for what
window remains. :func:`call_text` writes the event's title and its purpose and agenda.
"""

from __future__ import annotations

import asyncio

import httpx

from connector.errors import ConfigError
from connector.hubspot.client import HubSpotClient
from connector.onboarding.booking import BookedCall, BookingRequest, CalendarProvider, Sleep
from connector.onboarding.google_calendar import GoogleCalendar, event_id_for
from connector.onboarding.meetings import HubSpotMeetings
from connector.onboarding.owners import OwnerInfo
from connector.onboarding.settings import CalendarSettings, OnboardingSettings


def make_provider(
    settings: CalendarSettings,
    *,
    hubspot: HubSpotClient,
    http: httpx.AsyncClient | None = None,
    sleep: Sleep = asyncio.sleep,
    google_meet: bool = False,
) -> CalendarProvider:
    """The provider ``settings.provider`` names.

    ``http`` is the client for Google's API (pass one you own; if none is given the provider
    makes one, released by :func:`close_provider`). ``google_meet`` asks Google to create a
    Meet link for each event when no ``calendar.video_link`` is configured.
    """
    if settings.provider == "google":
        if settings.google is None:  # the settings validator already refuses this
            raise ConfigError("calendar.google is required", key="onboarding.calendar.google")
        return GoogleCalendar(
            settings.google,
            timezone=settings.timezone,
            http=http,
            sleep=sleep,
            google_meet=google_meet and not settings.video_link,
        )
    return HubSpotMeetings(hubspot, sleep=sleep)


async def close_provider(provider: CalendarProvider) -> None:
    """Release what the provider opened itself (the Google HTTP client); safe for any provider."""
    if isinstance(provider, GoogleCalendar):
        await provider.aclose()


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def call_text(
    settings: OnboardingSettings, *, contact_name: str, owner: OwnerInfo
) -> tuple[str, str]:
    """The event's title (``calendar.title``) and a plain-text description (purpose, agenda)."""
    company = settings.company.name
    values = {"contact_name": contact_name, "company_name": company, "owner_name": owner.name}
    try:
        title = settings.calendar.title.format_map(_Missing(values))
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(
            f"onboarding.calendar.title has an unknown placeholder {exc}: use "
            "{contact_name}, {company_name} or {owner_name}",
            key="onboarding.calendar.title",
        ) from None
    minutes = settings.calendar.duration_minutes
    description = (
        f"Welcome to {company}! A {minutes}-minute onboarding call between {contact_name} and "
        f"{owner.name}, your contact person at {company}.\n\n"
        "Purpose: get you set up and make sure you get value quickly.\n\n"
        "Agenda:\n"
        "1. Introductions and your goals\n"
        f"2. A walk through getting started with {company}\n"
        "3. Your questions, and agreeing the next steps"
    )
    return title, description


__all__ = [
    "BookedCall",
    "BookingRequest",
    "CalendarProvider",
    "GoogleCalendar",
    "HubSpotMeetings",
    "call_text",
    "close_provider",
    "event_id_for",
    "make_provider",
]
