"""Booking the onboarding call as a HubSpot meeting record (provider ``hubspot_meetings``).

Busy time is the owner's meeting records in the window (a CRM search); a booking is a meeting
associated to the contact, created in one call with its association. HubSpot has no
idempotency key for creates, so the booking key is written into a meeting property we control
(``hs_meeting_external_url`` by default, as ``urn:…:onboarding:{key}``; the property is a
constructor argument, e.g. for a custom one) and searched for before creating.

The residual window: search is backed by an index that lags writes by a few seconds, so a
create whose answer was lost can be invisible to the next search for that long. An answer lost
in *this* call is handled here (the search is repeated ``confirm_attempts`` times,
``confirm_delay`` apart, before the error is raised). What remains is a process killed right
after sending the create and a retry sooner than the index lag: the runner's backoff (tens of
seconds) is far longer, and two concurrent runs of one job are what the runner's lease forbids.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog

from connector.errors import ApiError, ServerError, TransportError
from connector.hubspot.client import HubSpotClient
from connector.hubspot.models import HubSpotObject, parse_datetime
from connector.onboarding.booking import (
    BookedCall,
    BookingRequest,
    Interval,
    Sleep,
    body_html,
    epoch_ms,
    iso_utc,
)
from connector.onboarding.crm import create_with_associations, default_type_id, search_all
from connector.onboarding.owners import OwnerInfo

log = structlog.get_logger(__name__)

MEETING_TO_CONTACT_FALLBACK = 200  # [UNVERIFIED] API_NOTES_HUBSPOT §8; used if labels fail
KEY_MARKER = "urn:hubspot-brevo-connector:onboarding:"
MEETING_PROPERTIES = (
    "hs_meeting_title",
    "hs_meeting_start_time",
    "hs_meeting_end_time",
    "hs_meeting_location",
    "hs_meeting_outcome",
    "hubspot_owner_id",
)
MEETING_WITHOUT_END = timedelta(hours=1)
"""A meeting logged without an end time is taken to last this long."""


class HubSpotMeetings:
    """Meeting records in HubSpot as the owner's calendar (see the module docstring)."""

    name = "hubspot_meetings"

    def __init__(
        self,
        hubspot: HubSpotClient,
        *,
        key_property: str = "hs_meeting_external_url",
        confirm_attempts: int = 3,
        confirm_delay: float = 2.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.hubspot = hubspot
        self.key_property = key_property
        self.confirm_attempts = confirm_attempts
        self.confirm_delay = confirm_delay
        self._sleep = sleep
        self._type_id: int | None = None

    async def busy(self, owner: OwnerInfo, start: datetime, end: datetime) -> list[Interval]:
        """The owner's meetings overlapping ``[start, end)``, cancelled ones left out."""
        who = {"propertyName": "hubspot_owner_id", "operator": "EQ", "value": owner.id}
        starts_before_end = {
            "propertyName": "hs_meeting_start_time",
            "operator": "LT",
            "value": epoch_ms(end),
        }
        groups = [
            [
                who,
                starts_before_end,
                {"propertyName": "hs_meeting_end_time", "operator": "GT", "value": epoch_ms(start)},
            ],
            [  # logged without an end time: taken as MEETING_WITHOUT_END long
                who,
                starts_before_end,
                {
                    "propertyName": "hs_meeting_start_time",
                    "operator": "GT",
                    "value": epoch_ms(start - MEETING_WITHOUT_END),
                },
                {"propertyName": "hs_meeting_end_time", "operator": "NOT_HAS_PROPERTY"},
            ],
        ]
        meetings = await search_all(self.hubspot, "meetings", groups, MEETING_PROPERTIES)
        out: list[Interval] = []
        for m in meetings:
            if (m.properties.get("hs_meeting_outcome") or "").upper() in ("CANCELED", "CANCELLED"):
                continue
            a = parse_datetime(m.properties.get("hs_meeting_start_time"))
            b = parse_datetime(m.properties.get("hs_meeting_end_time"))
            if a is None:
                continue
            b = b if b is not None and b > a else a + MEETING_WITHOUT_END
            out.append((a, b))
        return sorted(out)

    def marker(self, key: str) -> str:
        return KEY_MARKER + key

    async def book(self, request: BookingRequest) -> BookedCall:
        """The meeting for ``request.key``: the existing one if any, else a new one."""
        marker = self.marker(request.key)
        found = await self._find(marker)
        if found is not None:
            log.info("onboarding.meeting_exists", meeting_id=found.id, owner_id=request.owner.id)
            await self._ensure_association(found.id, request.contact_id)
            return self._call(found, request)
        props = {
            "hs_meeting_title": request.title,
            "hs_meeting_body": body_html(request),
            "hs_internal_meeting_notes": f"Booked by the onboarding hook (key {request.key}).",
            "hs_meeting_start_time": iso_utc(request.start),
            "hs_meeting_end_time": iso_utc(request.end),
            "hs_timestamp": iso_utc(request.start),
            "hs_meeting_outcome": "SCHEDULED",
            "hubspot_owner_id": request.owner.id,
            self.key_property: marker,
        }
        if request.video_link:
            props["hs_meeting_location"] = request.video_link
        type_id = await self._meeting_to_contact()
        try:
            created = await create_with_associations(
                self.hubspot, "meetings", props, [(request.contact_id, type_id)]
            )
        except (TransportError, ServerError) as exc:
            # the create may have been applied: look for it before giving up
            for _ in range(self.confirm_attempts):
                await self._sleep(self.confirm_delay)
                found = await self._find(marker)
                if found is not None:
                    log.info("onboarding.meeting_found_after_error", meeting_id=found.id)
                    await self._ensure_association(found.id, request.contact_id)
                    return self._call(found, request)
            raise exc
        log.info("onboarding.meeting_created", meeting_id=created.id, owner_id=request.owner.id)
        return self._call(created, request)

    async def _find(self, marker: str) -> HubSpotObject | None:
        groups = [[{"propertyName": self.key_property, "operator": "EQ", "value": marker}]]
        props = [*MEETING_PROPERTIES, self.key_property]
        found = await search_all(self.hubspot, "meetings", groups, props)
        # search's EQ ignores case; keys are compared exactly. Oldest first, should there be two.
        exact = [m for m in found if m.properties.get(self.key_property) == marker]
        return min(exact, key=lambda m: int(m.id) if m.id.isdigit() else 0, default=None)

    async def _meeting_to_contact(self) -> int:
        if self._type_id is None:
            self._type_id = await default_type_id(
                self.hubspot, "meetings", "contacts", MEETING_TO_CONTACT_FALLBACK
            )
        return self._type_id

    async def _ensure_association(self, meeting_id: str, contact_id: str) -> None:
        result = await self.hubspot.create_default_associations(
            "meetings", "contacts", [(meeting_id, contact_id)]
        )
        if result.errors:
            e = result.errors[0]
            raise ApiError(
                f"could not associate meeting {meeting_id} to contact {contact_id}: {e.message}",
                system="hubspot",
                endpoint="POST /crm/associations/{ver}/meetings/contacts/batch/associate/default",
                status=e.status,
                category=e.category,
            )

    @staticmethod
    def _call(meeting: HubSpotObject, request: BookingRequest) -> BookedCall:
        p = meeting.properties
        start = parse_datetime(p.get("hs_meeting_start_time")) or request.start
        end = parse_datetime(p.get("hs_meeting_end_time")) or request.end
        return BookedCall(
            provider="hubspot_meetings",
            event_id=meeting.id,
            start=start,
            end=end,
            link=p.get("hs_meeting_location") or request.video_link,
        )


__all__ = ["KEY_MARKER", "HubSpotMeetings"]
