"""Google Calendar API simulator: enough of it for the onboarding call's ``google`` provider.

``create_calendar_app(state)`` serves, as Google does:

* ``POST /token`` — OAuth 2.0 refresh-token grant (form body) → a bearer access token that
  expires after ``state.token_ttl`` seconds; a wrong client or refresh token → 400/401 with
  Google's ``{"error": "invalid_grant" | "invalid_client"}`` body.
* ``POST /calendar/v3/freeBusy`` — busy intervals per calendar within ``[timeMin, timeMax)``
  (events that are not cancelled or ``transparent``, plus blocks seeded with
  :meth:`CalendarState.add_busy`); an unknown calendar → a ``notFound`` error in its entry.
* ``POST /calendar/v3/calendars/{calendarId}/events`` — insert; a client-chosen ``id`` must be
  base32hex (``a-v``, ``0-9``), 5–1024 characters; a repeated id answers 409 ``duplicate``
  (this is what makes the connector's insert idempotent). ``sendUpdates=all`` records an
  invitation per attendee in ``state.invitations``; ``conferenceData.createRequest`` (with
  ``conferenceDataVersion=1``) adds a Meet link.
* ``GET /calendar/v3/calendars/{calendarId}/events/{eventId}`` and ``…/events`` (list).

Every API call needs ``Authorization: Bearer <access token>`` (401 ``authError`` otherwise).
Faults and the call log come from :mod:`connector.sandbox.common`; ``drop_next_insert_answers``
applies an insert and then answers 503, as a lost answer looks to the client.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from connector.sandbox.common import CallLog, FaultMiddleware, Faults

DEFAULT_CLIENT_ID = "sandbox-calendar-client.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "sandbox-calendar-secret"
DEFAULT_REFRESH_TOKEN = "sandbox-calendar-refresh-token"
EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")


class CalendarApiError(Exception):
    """An error Google would answer with its ``{"error": {...}}`` body."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "errors": [{"domain": "global", "reason": self.reason, "message": self.message}],
                "code": self.status,
                "message": self.message,
            }
        }
        return JSONResponse(body, status_code=self.status)


def parse_rfc3339(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise CalendarApiError(400, "invalid", f"Missing or invalid {what}.")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CalendarApiError(400, "invalid", f"Invalid {what}: {value}") from None
    if parsed.tzinfo is None:
        raise CalendarApiError(400, "invalid", f"{what} needs a time zone offset: {value}")
    return parsed.astimezone(UTC)


def _rfc3339(d: datetime) -> str:
    return d.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _event_times(event: dict[str, Any]) -> tuple[datetime, datetime]:
    def one(key: str) -> datetime:
        part = event.get(key) or {}
        if "dateTime" in part:
            return parse_rfc3339(part["dateTime"], f"{key}.dateTime")
        if "date" in part:  # all-day: taken as whole UTC days
            return datetime.fromisoformat(str(part["date"])).replace(tzinfo=UTC)
        raise CalendarApiError(400, "required", f"Missing {key} time.")

    start, end = one("start"), one("end")
    if end < start:
        raise CalendarApiError(400, "timeRangeEmpty", "The specified time range is empty.")
    return start, end


@dataclass
class Invitation:
    calendar_id: str
    event_id: str
    attendee: str


@dataclass
class CalendarState:
    """Calendars, their events and seeded busy blocks, OAuth clients and issued tokens."""

    token_ttl: float = 3599.0
    clock: Callable[[], float] = time.monotonic
    faults: Faults = field(default_factory=Faults)
    log: CallLog = field(default_factory=CallLog)
    clients: dict[str, str] = field(default_factory=dict)
    refresh_tokens: set[str] = field(default_factory=set)
    access_tokens: dict[str, float] = field(default_factory=dict)
    """access token → expiry (``clock()`` time)"""
    calendars: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    busy_blocks: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    invitations: list[Invitation] = field(default_factory=list)
    drop_next_insert_answers: int = 0
    token_grants: int = 0

    def __post_init__(self) -> None:
        self.clients.setdefault(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        self.refresh_tokens.add(DEFAULT_REFRESH_TOKEN)

    # --- set-up, for tests and the demo ---------------------------------------------------

    def add_calendar(self, calendar_id: str) -> None:
        self.calendars.setdefault(calendar_id, {})
        self.busy_blocks.setdefault(calendar_id, [])

    def add_busy(self, calendar_id: str, start: datetime, end: datetime) -> None:
        """A busy block (as if from another event source) on ``calendar_id``."""
        self.add_calendar(calendar_id)
        self.busy_blocks[calendar_id].append((start.astimezone(UTC), end.astimezone(UTC)))

    def events(self, calendar_id: str) -> list[dict[str, Any]]:
        return list(self.calendars.get(calendar_id, {}).values())

    def expire_tokens(self) -> None:
        """Make every issued access token expired (the next call answers 401)."""
        for token in self.access_tokens:
            self.access_tokens[token] = 0.0

    # --- the API ---------------------------------------------------------------------------

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "refresh_token":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "Invalid grant_type",
            }
        cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        if self.clients.get(cid) != secret or not cid:
            return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
        if form.get("refresh_token") not in self.refresh_tokens:
            return 400, {
                "error": "invalid_grant",
                "error_description": "Token has been expired or revoked.",
            }
        token = "ya29.sandbox-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = self.clock() + self.token_ttl
        self.token_grants += 1
        return 200, {
            "access_token": token,
            "expires_in": int(self.token_ttl),
            "scope": "https://www.googleapis.com/auth/calendar",
            "token_type": "Bearer",
        }

    def check_token(self, header: str | None) -> None:
        token = (header or "")[7:] if (header or "").lower().startswith("bearer ") else ""
        expiry = self.access_tokens.get(token)
        if expiry is None or expiry <= self.clock():
            raise CalendarApiError(401, "authError", "Invalid Credentials")

    def _calendar(self, calendar_id: str) -> dict[str, dict[str, Any]]:
        if calendar_id not in self.calendars:
            raise CalendarApiError(404, "notFound", "Not Found")
        return self.calendars[calendar_id]

    def free_busy(self, body: dict[str, Any]) -> dict[str, Any]:
        lo = parse_rfc3339(body.get("timeMin"), "timeMin")
        hi = parse_rfc3339(body.get("timeMax"), "timeMax")
        if hi <= lo:
            raise CalendarApiError(400, "timeRangeEmpty", "The specified time range is empty.")
        out: dict[str, Any] = {}
        for item in body.get("items") or []:
            cid = str((item or {}).get("id", ""))
            if cid not in self.calendars:
                out[cid] = {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}
                continue
            spans = list(self.busy_blocks.get(cid, []))
            for ev in self.calendars[cid].values():
                if ev.get("status") == "cancelled" or ev.get("transparency") == "transparent":
                    continue
                spans.append(_event_times(ev))
            busy = sorted((max(a, lo), min(b, hi)) for a, b in spans if a < hi and b > lo)
            merged: list[tuple[datetime, datetime]] = []
            for a, b in busy:
                if merged and a <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
                else:
                    merged.append((a, b))
            out[cid] = {"busy": [{"start": _rfc3339(a), "end": _rfc3339(b)} for a, b in merged]}
        return {
            "kind": "calendar#freeBusy",
            "timeMin": _rfc3339(lo),
            "timeMax": _rfc3339(hi),
            "calendars": out,
        }

    def insert(
        self, calendar_id: str, body: dict[str, Any], *, send_updates: str, conference: bool
    ) -> dict[str, Any]:
        events = self._calendar(calendar_id)
        event_id = body.get("id")
        if event_id is None:
            event_id = secrets.token_hex(13)
        elif not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
            raise CalendarApiError(400, "invalid", "Invalid resource id value.")
        if event_id in events:
            raise CalendarApiError(409, "duplicate", "The requested identifier already exists.")
        _event_times(body)
        now = _rfc3339(datetime.now(UTC))
        event: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": f'"{secrets.randbits(48)}"',
            "id": event_id,
            "status": "confirmed",
            "htmlLink": f"https://calendar.sandbox.test/event?eid={event_id}",
            "created": now,
            "updated": now,
            "creator": {"email": calendar_id, "self": True},
            "organizer": {"email": calendar_id, "self": True},
            "iCalUID": f"{event_id}@google.com",
            "sequence": 0,
            "reminders": {"useDefault": True},
            "eventType": "default",
        }
        for key in ("summary", "description", "location", "start", "end", "transparency"):
            if key in body:
                event[key] = body[key]
        attendees = [
            {"email": str(a.get("email")), "responseStatus": "needsAction"}
            | ({"displayName": a["displayName"]} if a.get("displayName") else {})
            for a in body.get("attendees") or []
            if isinstance(a, dict) and a.get("email")
        ]
        if attendees:
            event["attendees"] = attendees
        create = ((body.get("conferenceData") or {}).get("createRequest")) or None
        if create and conference:
            code = f"{event_id[:3]}-{event_id[3:7]}-{event_id[7:10]}"
            uri = f"https://meet.sandbox.test/{code}"
            event["hangoutLink"] = uri
            event["conferenceData"] = {
                "createRequest": {
                    "requestId": create.get("requestId"),
                    "conferenceSolutionKey": create.get("conferenceSolutionKey"),
                    "status": {"statusCode": "success"},
                },
                "entryPoints": [{"entryPointType": "video", "uri": uri, "label": uri[8:]}],
                "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"},
                "conferenceId": code,
            }
        events[event_id] = event
        if send_updates in ("all", "externalOnly"):
            self.invitations.extend(
                Invitation(calendar_id, event_id, a["email"]) for a in attendees
            )
        return event

    def get(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        event = self._calendar(calendar_id).get(event_id)
        if event is None:
            raise CalendarApiError(404, "notFound", "Not Found")
        return event

    def list(self, calendar_id: str, time_min: str | None, time_max: str | None) -> dict[str, Any]:
        items = list(self._calendar(calendar_id).values())
        lo = parse_rfc3339(time_min, "timeMin") if time_min else None
        hi = parse_rfc3339(time_max, "timeMax") if time_max else None
        out = []
        for ev in items:
            a, b = _event_times(ev)
            if (lo is None or b > lo) and (hi is None or a < hi):
                out.append(ev)
        return {"kind": "calendar#events", "summary": calendar_id, "items": out}


def create_calendar_app(state: CalendarState | None = None) -> Starlette:
    """The Google Calendar sandbox as an ASGI app; its state is ``app.state.calendar``."""
    st = CalendarState() if state is None else state

    async def token(request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        status, body = st.grant(form)
        return JSONResponse(body, status_code=status)

    def api(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            try:
                st.check_token(request.headers.get("authorization"))
                result = await fn(request)
            except CalendarApiError as err:
                return err.response()
            return result if isinstance(result, Response) else JSONResponse(result)

        return handler

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise CalendarApiError(400, "parseError", "Parse Error") from None
        if not isinstance(data, dict):
            raise CalendarApiError(400, "parseError", "Parse Error")
        return data

    async def free_busy(request: Request) -> Any:
        return st.free_busy(await body_of(request))

    async def insert(request: Request) -> Any:
        q = request.query_params
        event = st.insert(
            request.path_params["calendar_id"],
            await body_of(request),
            send_updates=q.get("sendUpdates", "none"),
            conference=q.get("conferenceDataVersion") == "1",
        )
        if st.drop_next_insert_answers > 0:
            st.drop_next_insert_answers -= 1
            return JSONResponse({"error": {"code": 503, "message": "Backend Error"}}, 503)
        return event

    async def get_event(request: Request) -> Any:
        return st.get(request.path_params["calendar_id"], request.path_params["event_id"])

    async def list_events(request: Request) -> Any:
        q = request.query_params
        return st.list(request.path_params["calendar_id"], q.get("timeMin"), q.get("timeMax"))

    def too_many() -> Response:
        return CalendarApiError(429, "rateLimitExceeded", "Rate Limit Exceeded").response()

    def server_error(status: int) -> Response:
        return CalendarApiError(status, "backendError", "Backend Error").response()

    api_routes = [
        Route("/freeBusy", api(free_busy), methods=["POST"]),
        Route("/calendars/{calendar_id}/events", api(insert), methods=["POST"]),
        Route("/calendars/{calendar_id}/events", api(list_events), methods=["GET"]),
        Route("/calendars/{calendar_id}/events/{event_id}", api(get_event), methods=["GET"]),
    ]
    app = Starlette(
        routes=[Route("/token", token, methods=["POST"]), Mount("/calendar/v3", routes=api_routes)],
        middleware=[
            Middleware(
                FaultMiddleware,
                faults=st.faults,
                log=st.log,
                too_many=too_many,
                server_error=server_error,
            )
        ],
    )
    app.state.calendar = st
    return app


__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REFRESH_TOKEN",
    "CalendarApiError",
    "CalendarState",
    "Invitation",
    "create_calendar_app",
]
