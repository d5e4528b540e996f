"""Calendar providers against the sandboxes: busy time, and booking exactly once.

HubSpot meetings run against the HubSpot sandbox, Google Calendar against the calendar sandbox,
both over ``httpx.ASGITransport`` (one test also over real loopback HTTP with SandboxServers).
A "lost answer" is simulated by a transport that lets the request reach the sandbox and then
raises a timeout, or by the sandbox applying an insert and answering 503; in every case the
provider must come back with the one booking, never a second one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from connector.config import HubSpotSettings
from connector.errors import AuthError, ConfigError, NotFoundError, TransportError
from connector.hubspot import HubSpotClient
from connector.onboarding.calendar import (
    BookingRequest,
    GoogleCalendar,
    HubSpotMeetings,
    call_text,
    close_provider,
    event_id_for,
    make_provider,
)
from connector.onboarding.owners import OwnerInfo
from connector.onboarding.settings import CalendarSettings, GoogleCredentials, OnboardingSettings
from connector.onboarding.slots import find_slot
from connector.sandbox.calendar import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    CalendarState,
    create_calendar_app,
)
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.sandbox.server import SandboxServers

OWNER = OwnerInfo("71011001", "alice.martin@sandbox-crm.test", "Alice", "Martin")
T0 = datetime(2030, 6, 3, 7, 0, tzinfo=UTC)  # a Monday, 09:00 in Oslo


class Sleeps:
    """A sleep that only records, and moves a millisecond clock other parts may read."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.now_ms = 1_900_000_000_000

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now_ms += int(seconds * 1000)


def request(key: str = "onb-1", **kw: Any) -> BookingRequest:
    base: dict[str, Any] = {
        "key": key,
        "owner": OWNER,
        "contact_id": "0",
        "contact_email": "kari@customer.test",
        "contact_name": "Kari Nordmann",
        "start": T0 + timedelta(hours=1),
        "end": T0 + timedelta(hours=2),
        "title": "Onboarding call: Kari Nordmann × Example Ltd",
        "description": "Purpose: get started.\n\nAgenda:\n1. Goals\n2. Set-up",
        "video_link": "https://meet.example.test/room-1",
    }
    base.update(kw)
    return BookingRequest(**base)


# --- HubSpot meetings --------------------------------------------------------------------------


class LoseAnswer(httpx.AsyncBaseTransport):
    """Passes requests on; for the first ``n`` creates of meetings, drops the answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport, n: int = 1) -> None:
        self.inner, self.n = inner, n

    async def handle_async_request(self, req: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(req)
        if req.method == "POST" and req.url.path.endswith("/meetings") and self.n > 0:
            self.n -= 1
            await resp.aread()
            raise httpx.ReadTimeout("answer lost", request=req)
        return resp


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def hs_state(sleeps: Sleeps) -> HubSpotState:
    return HubSpotState(rate_limits=False, clock=lambda: sleeps.now_ms)


def hubspot_client(state: HubSpotState, *, lose: int = 0) -> HubSpotClient:
    settings = HubSpotSettings(
        base_url="http://hubspot.sandbox", access_token=SecretStr("sandbox-token"), max_retries=2
    )
    transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=create_hubspot_app(state))
    if lose:
        transport = LoseAnswer(transport, lose)
    return HubSpotClient(settings, transport=transport)


@pytest.fixture
async def hubspot(hs_state: HubSpotState) -> AsyncIterator[HubSpotClient]:
    async with hubspot_client(hs_state) as client:
        yield client


def contact(state: HubSpotState) -> str:
    return state.put_object("contacts", {"email": "kari@customer.test", "firstname": "Kari"})


def meeting(state: HubSpotState, start: datetime, end: datetime | None, **props: str) -> str:
    p = {"hs_meeting_start_time": start.isoformat(), "hs_timestamp": start.isoformat()}
    if end is not None:
        p["hs_meeting_end_time"] = end.isoformat()
    p.setdefault("hubspot_owner_id", OWNER.id)
    p.update(props)
    return state.put_object("meetings", p)


def meetings_of(state: HubSpotState) -> list[dict[str, Any]]:
    store = state.store("meetings")
    return [state.get_object("meetings", i) or {} for i in store.live]


async def test_busy_is_the_owners_meetings_in_the_window(
    hubspot: HubSpotClient, hs_state: HubSpotState
) -> None:
    h = timedelta(hours=1)
    meeting(hs_state, T0 + h, T0 + 2 * h)
    meeting(hs_state, T0 - 2 * h, T0 + h / 2)  # started before the window
    meeting(hs_state, T0 + 3 * h, None)  # no end time: taken as one hour
    meeting(hs_state, T0 + 4 * h, T0 + 5 * h, hs_meeting_outcome="CANCELED")
    meeting(hs_state, T0 + 5 * h, T0 + 6 * h, hubspot_owner_id="71011002")  # someone else
    meeting(hs_state, T0 + 30 * h, T0 + 31 * h)  # after the window
    busy = await HubSpotMeetings(hubspot).busy(OWNER, T0, T0 + 24 * h)
    assert busy == [
        (T0 - 2 * h, T0 + h / 2),
        (T0 + h, T0 + 2 * h),
        (T0 + 3 * h, T0 + 4 * h),
    ]


async def test_book_creates_one_associated_meeting_and_a_repeat_returns_it(
    hubspot: HubSpotClient, hs_state: HubSpotState
) -> None:
    cid = contact(hs_state)
    provider = HubSpotMeetings(hubspot)
    first = await provider.book(request(contact_id=cid))
    again = await provider.book(request(contact_id=cid))
    assert again == first
    assert first.provider == "hubspot_meetings" and first.link == "https://meet.example.test/room-1"
    assert (first.start, first.end) == (T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    [m] = meetings_of(hs_state)
    assert m["hs_meeting_title"] == "Onboarding call: Kari Nordmann × Example Ltd"
    assert "<p>Purpose: get started.</p>" in m["hs_meeting_body"]
    assert 'href="https://meet.example.test/room-1"' in m["hs_meeting_body"]
    assert m["hubspot_owner_id"] == OWNER.id and m["hs_meeting_outcome"] == "SCHEDULED"
    assert m["hs_meeting_location"] == "https://meet.example.test/room-1"
    assert m["hs_meeting_external_url"].endswith(":onboarding:onb-1")
    [(to_id, types)] = hs_state.associations_of("meetings", int(first.event_id), "contacts")
    assert str(to_id) == cid and [t.type_id for t in types] == [200]
    # the booked meeting now makes the owner busy
    assert await provider.busy(OWNER, T0, T0 + timedelta(days=1)) == [(first.start, first.end)]
    # another key is another meeting
    other = await provider.book(request("onb-2", contact_id=cid))
    assert other.event_id != first.event_id and len(meetings_of(hs_state)) == 2


async def test_a_lost_create_answer_is_found_by_search_not_created_again(
    hs_state: HubSpotState, sleeps: Sleeps
) -> None:
    hs_state.index_lag_ms = 3_000  # the new meeting reaches search 3 s after it is created
    cid = contact(hs_state)
    async with hubspot_client(hs_state, lose=1) as client:
        provider = HubSpotMeetings(client, confirm_delay=2.0, sleep=sleeps)
        call = await provider.book(request(contact_id=cid))
    assert len(meetings_of(hs_state)) == 1
    assert sleeps.waits == [2.0, 2.0]  # not found after 2 s (index lag), found after 4 s
    assert call.event_id == str(next(iter(hs_state.store("meetings").live)))


async def test_a_lost_answer_never_found_raises_and_the_retry_still_books_once(
    hs_state: HubSpotState, sleeps: Sleeps
) -> None:
    hs_state.index_lag_ms = 60_000
    cid = contact(hs_state)
    async with hubspot_client(hs_state, lose=1) as client:
        provider = HubSpotMeetings(client, confirm_attempts=2, sleep=sleeps)
        with pytest.raises(TransportError, match="POST /crm/objects/2026-09/meetings"):
            await provider.book(request(contact_id=cid))
        sleeps.now_ms += 60_000  # the runner's backoff: the index has caught up
        call = await provider.book(request(contact_id=cid))
    assert len(meetings_of(hs_state)) == 1
    assert call.event_id == str(next(iter(hs_state.store("meetings").live)))


async def test_slot_then_book_then_the_next_slot_skips_it(
    hubspot: HubSpotClient, hs_state: HubSpotState
) -> None:
    settings = CalendarSettings(timezone="Europe/Oslo", min_notice_hours=0)
    provider = make_provider(settings, hubspot=hubspot)
    cid = contact(hs_state)
    horizon = timedelta(days=settings.horizon_days)
    meeting(hs_state, T0, T0 + timedelta(hours=1, minutes=15))  # 09:00–10:15 Oslo

    async def next_slot() -> tuple[datetime, datetime]:
        busy = await provider.busy(OWNER, T0, T0 + horizon)
        return find_slot(
            busy,
            now=T0,
            timezone=settings.timezone,
            hours=settings.working_hours,
            min_notice=timedelta(hours=settings.min_notice_hours),
            horizon=horizon,
            duration=timedelta(minutes=settings.duration_minutes),
        )

    start, end = await next_slot()
    assert start == T0 + timedelta(hours=1, minutes=30)  # 10:30 Oslo
    await provider.book(request(contact_id=cid, start=start, end=end))
    assert (await next_slot())[0] == end


def test_call_text_fills_the_title_and_describes_the_call() -> None:
    s = OnboardingSettings(
        sender={"email": "ada@example.test", "name": "Ada"},
        company={"name": "Example Ltd"},
        owners={"owner_ids": ["1"]},
    )
    title, description = call_text(s, contact_name="Kari Nordmann", owner=OWNER)
    assert title == "Onboarding call: Kari Nordmann × Example Ltd"
    assert "Alice Martin" in description and "Agenda:" in description
    bad = s.model_copy(update={"calendar": CalendarSettings(title="Call {nope}")})
    with pytest.raises(ConfigError, match=r"onboarding\.calendar\.title"):
        call_text(bad, contact_name="K", owner=OWNER)


# --- Google Calendar ---------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=300))
def test_event_ids_are_valid_google_ids_and_deterministic(key: str) -> None:
    eid = event_id_for(key)
    assert re.fullmatch(r"[a-v0-9]{5,1024}", eid)
    assert eid == event_id_for(key) and eid != event_id_for(key + "x")


def creds(**kw: Any) -> GoogleCredentials:
    base: dict[str, Any] = {
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "refresh_token": DEFAULT_REFRESH_TOKEN,
        "token_url": "http://calendar.sandbox/token",
        "base_url": "http://calendar.sandbox/calendar/v3",
    }
    base.update(kw)
    return GoogleCredentials(**base)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cal_state() -> CalendarState:
    clock = Clock()
    state = CalendarState(clock=clock)
    state.add_calendar(OWNER.email or "")
    return state


@pytest.fixture
async def google(cal_state: CalendarState, sleeps: Sleeps) -> AsyncIterator[GoogleCalendar]:
    transport = httpx.ASGITransport(app=create_calendar_app(cal_state))
    async with httpx.AsyncClient(transport=transport) as http:
        g = GoogleCalendar(
            creds(), timezone="Europe/Oslo", http=http, sleep=sleeps, clock=cal_state.clock
        )
        yield g


async def test_free_busy_and_the_token_is_cached(
    google: GoogleCalendar, cal_state: CalendarState
) -> None:
    h = timedelta(hours=1)
    cal_state.add_busy(OWNER.email or "", T0 + h, T0 + 2 * h)
    cal_state.add_busy(OWNER.email or "", T0 + 90 * h, T0 + 91 * h)
    assert await google.busy(OWNER, T0, T0 + 24 * h) == [(T0 + h, T0 + 2 * h)]
    await google.book(request(start=T0 + 3 * h, end=T0 + 4 * h))
    busy = await google.busy(OWNER, T0, T0 + 24 * h)
    assert busy == [(T0 + h, T0 + 2 * h), (T0 + 3 * h, T0 + 4 * h)]
    assert cal_state.token_grants == 1  # one token for three calls


async def test_an_expired_or_refused_token_is_refreshed(
    google: GoogleCalendar, cal_state: CalendarState
) -> None:
    await google.busy(OWNER, T0, T0 + timedelta(hours=1))
    clock = cal_state.clock
    assert isinstance(clock, Clock)
    clock.now += 3599 - 30  # within the minute before expiry: refreshed before the call
    await google.busy(OWNER, T0, T0 + timedelta(hours=1))
    assert cal_state.token_grants == 2
    cal_state.expire_tokens()  # revoked server-side: 401, refresh, the call again
    await google.busy(OWNER, T0, T0 + timedelta(hours=1))
    assert cal_state.token_grants == 3
    assert cal_state.log.count(method="POST", contains="/freeBusy") == 4


async def test_book_inserts_once_with_the_contact_invited(
    google: GoogleCalendar, cal_state: CalendarState
) -> None:
    first = await google.book(request())
    again = await google.book(request())
    assert again == first
    assert first.provider == "google" and first.event_id == event_id_for("onb-1")
    [event] = cal_state.events(OWNER.email or "")
    assert event["summary"] == "Onboarding call: Kari Nordmann × Example Ltd"
    assert event["attendees"][0]["email"] == "kari@customer.test"
    assert event["location"] == "https://meet.example.test/room-1"
    assert "Video link: https://meet.example.test/room-1" in event["description"]
    assert event["start"]["timeZone"] == "Europe/Oslo"
    assert [i.attendee for i in cal_state.invitations] == ["kari@customer.test"]
    assert cal_state.log.count(method="POST", contains="/events") == 2  # the 2nd got 409
    assert cal_state.log.count(method="GET", contains="/events/") == 1


async def test_a_lost_insert_answer_is_retried_into_409_and_read_back(
    google: GoogleCalendar, cal_state: CalendarState, sleeps: Sleeps
) -> None:
    cal_state.drop_next_insert_answers = 1  # applied, then 503
    call = await google.book(request())
    assert len(cal_state.events(OWNER.email or "")) == 1
    assert call.event_id == event_id_for("onb-1")
    assert len(sleeps.waits) == 1  # one backoff before the retry
    assert len(cal_state.invitations) == 1


async def test_rate_limits_and_server_errors_are_retried_with_backoff(
    google: GoogleCalendar, cal_state: CalendarState, sleeps: Sleeps
) -> None:
    cal_state.faults.fail_next, cal_state.faults.fail_status = 2, 429
    await google.busy(OWNER, T0, T0 + timedelta(hours=1))
    cal_state.faults.fail_next, cal_state.faults.fail_status = 1, 503
    await google.book(request())
    assert len(sleeps.waits) == 3 and len(cal_state.events(OWNER.email or "")) == 1


async def test_google_meet_link_when_asked_and_no_room_is_configured(
    cal_state: CalendarState, sleeps: Sleeps
) -> None:
    transport = httpx.ASGITransport(app=create_calendar_app(cal_state))
    settings = CalendarSettings(provider="google", google=creds())
    async with (
        httpx.AsyncClient(transport=transport) as http,
        HubSpotClient(HubSpotSettings(access_token=SecretStr("x")), transport=transport) as hs,
    ):
        provider = make_provider(settings, hubspot=hs, http=http, sleep=sleeps, google_meet=True)
        assert isinstance(provider, GoogleCalendar)
        call = await provider.book(request(video_link=None))
    assert call.link is not None and call.link.startswith("https://meet.sandbox.test/")


async def test_errors_name_the_endpoint_the_status_and_the_fix(
    cal_state: CalendarState, sleeps: Sleeps
) -> None:
    transport = httpx.ASGITransport(app=create_calendar_app(cal_state))
    async with httpx.AsyncClient(transport=transport) as http:
        revoked = GoogleCalendar(creds(refresh_token="rt-no-longer-valid"), http=http, sleep=sleeps)
        with pytest.raises(AuthError) as err:
            await revoked.busy(OWNER, T0, T0 + timedelta(hours=1))
        assert "HTTP 400" in str(err.value) and "refresh_token" in str(err.value)
        assert "rt-no-longer-valid" not in str(err.value)

        other = OwnerInfo("9", "nobody@sandbox-crm.test", None, None)
        good = GoogleCalendar(creds(), http=http, sleep=sleeps)
        with pytest.raises(NotFoundError) as nf:
            await good.busy(other, T0, T0 + timedelta(hours=1))
        assert "POST /freeBusy" in str(nf.value) and "calendars.9" in str(nf.value)
        with pytest.raises(NotFoundError, match=r"POST /calendars/\{calendarId\}/events.*404"):
            await good.book(request(owner=other))

        mapped = GoogleCalendar(creds(calendars={"9": OWNER.email or ""}), http=http, sleep=sleeps)
        assert (await mapped.book(request(owner=other))).event_id == event_id_for("onb-1")


async def test_google_provider_over_loopback_with_the_sandbox_servers() -> None:
    async with SandboxServers(rate_limits=False) as servers:
        settings = CalendarSettings(
            provider="google",
            timezone="Europe/Oslo",
            google=GoogleCredentials(**servers.calendar_google_settings()),  # type: ignore[arg-type]
        )
        async with HubSpotClient(
            HubSpotSettings(base_url=servers.hubspot_url, access_token=SecretStr("sandbox-token"))
        ) as hs:
            provider = make_provider(settings, hubspot=hs)
            assert isinstance(provider, GoogleCalendar)
            try:
                call = await provider.book(request())
                assert await provider.busy(OWNER, T0, T0 + timedelta(days=1)) == [
                    (call.start, call.end)
                ]
            finally:
                await close_provider(provider)
        assert servers.calendar.events(OWNER.email or "")[0]["id"] == call.event_id
