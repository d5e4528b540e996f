"""Booking the onboarding call in Google Calendar (provider ``google``).

OAuth 2.0 refresh-token flow (``calendar.google``: client id and secret, refresh token; the
access token is cached until a minute before it expires, and a 401 refreshes it once);
``POST /freeBusy`` for the owner's busy time; ``POST /calendars/{id}/events?sendUpdates=all``
to book, so the contact receives the invitation. The event ``id`` is ours, derived from the
booking key (Google accepts client ids of base32hex characters, 5–1024 long): an insert
repeated after a crash or a lost answer gets 409 and the existing event is read back — one
event, with no window. Because of that, every call here is safe to repeat, and 429, 5xx and
timeouts are retried with backoff (:func:`connector.retry.retrying`); a 403
``rateLimitExceeded`` counts as a rate limit, as Google documents. Errors name the endpoint,
the status and the config key to fix.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from connector.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
    register_secret,
)
from connector.hubspot.models import parse_datetime
from connector.onboarding.booking import (
    BookedCall,
    BookingRequest,
    Interval,
    Sleep,
    body_text,
    iso_utc,
)
from connector.onboarding.owners import OwnerInfo
from connector.onboarding.settings import GoogleCredentials
from connector.retry import Action, classify_exception, retrying

log = structlog.get_logger(__name__)

TOKEN_MARGIN_SECONDS = 60.0
GOOGLE = "google_calendar"


def event_id_for(key: str) -> str:
    """A Google event id for ``key``: base32hex (``0-9a-v``) of its SHA-256, 52 characters."""
    digest = hashlib.sha256(key.encode()).digest()
    return base64.b32hexencode(digest).decode().rstrip("=").lower()


class GoogleCalendar:
    """Google Calendar API v3 with an OAuth 2.0 refresh token (see the module docstring)."""

    name = "google"

    def __init__(
        self,
        credentials: GoogleCredentials,
        *,
        timezone: str = "UTC",
        http: httpx.AsyncClient | None = None,
        max_retries: int = 4,
        timeout_seconds: float = 20.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        google_meet: bool = False,
    ) -> None:
        self.credentials = credentials
        self.timezone = timezone
        self.base_url = credentials.base_url.rstrip("/")
        self.max_retries = max_retries
        self.timeout = timeout_seconds
        self.google_meet = google_meet
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds))
        self._sleep = sleep
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.token_refreshes = 0
        register_secret(credentials.client_secret.get_secret_value())
        register_secret(credentials.refresh_token.get_secret_value())

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    def calendar_id(self, owner: OwnerInfo) -> str:
        """``calendar.google.calendars[owner id]``, else the owner's e-mail address."""
        cid = self.credentials.calendars.get(owner.id) or owner.email
        if not cid:
            raise ConfigError(
                f"no Google calendar for owner {owner.id} (the owner has no e-mail address): "
                f"set onboarding.calendar.google.calendars.{owner.id}",
                key="onboarding.calendar.google.calendars",
            )
        return cid

    # --- OAuth ------------------------------------------------------------------------------

    async def access_token(self, *, force: bool = False) -> str:
        """The cached access token, refreshed when it is within a minute of expiry."""
        async with self._lock:
            if not force and self._token and self._clock() < self._expires - TOKEN_MARGIN_SECONDS:
                return self._token
            data = await retrying(
                self._refresh, max_retries=self.max_retries, idempotent=True, sleep=self._sleep
            )
            token = data.get("access_token")
            if not isinstance(token, str) or not token:
                raise AuthError(
                    "the token answer has no access_token",
                    system=GOOGLE,
                    endpoint="POST token_url",
                    status=200,
                )
            register_secret(token)
            expires_in = data.get("expires_in")
            ttl = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
            self._token, self._expires = token, self._clock() + ttl
            self.token_refreshes += 1
            return token

    async def _refresh(self) -> dict[str, Any]:
        c = self.credentials
        form = {
            "grant_type": "refresh_token",
            "client_id": c.client_id,
            "client_secret": c.client_secret.get_secret_value(),
            "refresh_token": c.refresh_token.get_secret_value(),
        }
        endpoint = "POST token_url"
        resp = await self._send(endpoint, "POST", c.token_url, data=form)
        if resp.status_code == 200:
            body = self._json(resp, endpoint)
            return body if isinstance(body, dict) else {}
        err = self._json_or_none(resp) or {}
        code = str(err.get("error", "")) if isinstance(err, dict) else ""
        if resp.status_code in (400, 401) and code in ("invalid_grant", "invalid_client", ""):
            what = (
                "the refresh token was revoked or has expired: authorise again and update "
                "onboarding.calendar.google.refresh_token"
                if code == "invalid_grant"
                else "the OAuth client was refused: check onboarding.calendar.google.client_id "
                "and client_secret"
            )
            raise AuthError(
                what,
                system=GOOGLE,
                endpoint=endpoint,
                status=resp.status_code,
                category=code or None,
            )
        raise self._error(endpoint, resp)

    # --- calls ------------------------------------------------------------------------------

    async def _send(self, endpoint: str, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._http.request(method, url, **kw)
        except TimeoutError:
            raise TransportError(
                f"no complete answer within {self.timeout:g} s", system=GOOGLE, endpoint=endpoint
            ) from httpx.ReadTimeout("timeout")
        except httpx.TransportError as exc:
            cls = TransportError if classify_exception(exc) is Action.RETRY else ApiError
            raise cls(f"{type(exc).__name__}: {exc}", system=GOOGLE, endpoint=endpoint) from exc

    async def _call(
        self,
        method: str,
        template: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One API call (retried on 429/5xx/timeouts); a 401 refreshes the token once."""
        endpoint = f"{method} {template}"

        async def once() -> Any:
            for attempt in (1, 2):
                token = await self.access_token(force=attempt == 2)
                resp = await self._send(
                    endpoint,
                    method,
                    f"{self.base_url}{path}",
                    json=json,
                    params=dict(params or {}),
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                )
                if resp.status_code == 401 and attempt == 1:
                    log.info("google_calendar.token_refused_refreshing", endpoint=endpoint)
                    continue
                if 200 <= resp.status_code < 300:
                    return self._json(resp, endpoint)
                raise self._error(endpoint, resp)
            raise AssertionError("unreachable")  # pragma: no cover

        return await retrying(
            once, max_retries=self.max_retries, idempotent=True, sleep=self._sleep
        )

    @staticmethod
    def _json_or_none(resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            return None

    def _json(self, resp: httpx.Response, endpoint: str) -> Any:
        if not resp.content:
            return {}
        body = self._json_or_none(resp)
        if body is None:
            raise ServerError(
                "a success status with a body that is not JSON",
                system=GOOGLE,
                endpoint=endpoint,
                status=resp.status_code,
            )
        return body

    def _error(self, endpoint: str, resp: httpx.Response) -> ApiError:
        status = resp.status_code
        body = self._json_or_none(resp)
        err = body.get("error") if isinstance(body, dict) else None
        message, reason = resp.reason_phrase or "error", None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            reasons = [e.get("reason") for e in err.get("errors") or [] if isinstance(e, dict)]
            reason = next((str(r) for r in reasons if r), None)
        elif isinstance(err, str):
            reason = err
        kw: dict[str, Any] = {
            "system": GOOGLE,
            "endpoint": endpoint,
            "status": status,
            "category": reason,
            "body": body,
        }
        if status == 429 or (
            status == 403 and reason in ("rateLimitExceeded", "userRateLimitExceeded")
        ):
            raw = resp.headers.get("retry-after")
            retry_after = float(raw) if raw and raw.replace(".", "", 1).isdigit() else None
            return RateLimitedError(message, retry_after=retry_after, **kw)
        if status >= 500 or status == 408:
            return ServerError(message, **kw)
        if status == 401:
            return AuthError(
                f"{message} — the access token was refused right after a refresh: check the "
                "OAuth client's scopes (https://www.googleapis.com/auth/calendar)",
                **kw,
            )
        if status == 403:
            return ForbiddenError(
                f"{message} — the credential may not use this calendar: share it with the "
                "account that authorised the connector, or fix "
                "onboarding.calendar.google.calendars",
                **kw,
            )
        if status == 404:
            return NotFoundError(message, **kw)
        if status == 409:
            return ConflictError(message, **kw)
        if status in (400, 422):
            return ValidationError(message, **kw)
        return ApiError(message, **kw)

    # --- the provider -----------------------------------------------------------------------

    async def busy(self, owner: OwnerInfo, start: datetime, end: datetime) -> list[Interval]:
        """``POST /freeBusy`` for the owner's calendar."""
        cid = self.calendar_id(owner)
        body = {
            "timeMin": iso_utc(start),
            "timeMax": iso_utc(end),
            "timeZone": "UTC",
            "items": [{"id": cid}],
        }
        data = await self._call("POST", "/freeBusy", "/freeBusy", json=body)
        entry = ((data or {}).get("calendars") or {}).get(cid)
        if not isinstance(entry, dict):
            raise ApiError(
                f"the freeBusy answer has no entry for calendar {cid}",
                system=GOOGLE,
                endpoint="POST /freeBusy",
                status=200,
            )
        errors = [e.get("reason") for e in entry.get("errors") or [] if isinstance(e, dict)]
        if errors:
            raise NotFoundError(
                f"calendar {cid} of owner {owner.id} cannot be read "
                f"({', '.join(map(str, errors))}): share it with the authorising account or set "
                f"onboarding.calendar.google.calendars.{owner.id}",
                system=GOOGLE,
                endpoint="POST /freeBusy",
                status=200,
                category=str(errors[0]),
            )
        out: list[Interval] = []
        for b in entry.get("busy") or []:
            a, z = parse_datetime(b.get("start")), parse_datetime(b.get("end"))
            if a is not None and z is not None and z > a:
                out.append((a, z))
        return sorted(out)

    async def book(self, request: BookingRequest) -> BookedCall:
        """``events.insert`` with the id derived from the key; on 409, the existing event."""
        cid = self.calendar_id(request.owner)
        event_id = event_id_for(request.key)
        path_cal = f"/calendars/{quote(cid, safe='')}/events"
        event: dict[str, Any] = {
            "id": event_id,
            "summary": request.title,
            "description": body_text(request),
            "start": {
                "dateTime": request.start.astimezone(UTC).isoformat(),
                "timeZone": self.timezone,
            },
            "end": {"dateTime": request.end.astimezone(UTC).isoformat(), "timeZone": self.timezone},
            "attendees": [{"email": request.contact_email, "displayName": request.contact_name}],
            "reminders": {"useDefault": True},
            "extendedProperties": {"private": {"onboarding_key": request.key}},
        }
        params = {"sendUpdates": "all"}
        if request.video_link:
            event["location"] = request.video_link
        elif self.google_meet:
            event["conferenceData"] = {
                "createRequest": {
                    "requestId": event_id,
                    "conferenceSolutionKey": {"type": "hangoutsMeet"},
                }
            }
            params["conferenceDataVersion"] = "1"
        template = "/calendars/{calendarId}/events"
        try:
            data = await self._call("POST", template, path_cal, json=event, params=params)
            log.info("google_calendar.event_created", event_id=event_id, owner_id=request.owner.id)
        except ConflictError:
            data = await self._call("GET", template + "/{eventId}", f"{path_cal}/{event_id}")
            log.info("google_calendar.event_exists", event_id=event_id, owner_id=request.owner.id)
            if (data or {}).get("status") == "cancelled":
                log.warning("google_calendar.event_cancelled", event_id=event_id)
        return self._booked(data or {}, request)

    @staticmethod
    def _booked(event: Mapping[str, Any], request: BookingRequest) -> BookedCall:
        start = parse_datetime((event.get("start") or {}).get("dateTime")) or request.start
        end = parse_datetime((event.get("end") or {}).get("dateTime")) or request.end
        link = event.get("hangoutLink") or request.video_link
        return BookedCall(
            provider="google",
            event_id=str(event.get("id") or event_id_for(request.key)),
            start=start,
            end=end,
            link=str(link) if link else None,
        )


__all__ = ["GoogleCalendar", "event_id_for"]
