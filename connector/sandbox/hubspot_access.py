"""Tokens, OAuth and rate limits of the HubSpot sandbox (a base of :class:`HubSpotState`).

Static tokens (private apps, service keys) and OAuth access tokens with an expiry; refresh with
optional rotation; the per-app rolling 10-second window and the per-account daily counter by
tier, with the ``X-HubSpot-RateLimit-*`` headers; and the search API's own 5-per-second window.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from connector.sandbox.common import RollingWindow
from connector.sandbox.hubspot_model import ApiError, iso_ms

ChangeListener = Callable[[str, str, str, str | None, str | None, str], None]
"""Called as (event_type, object_type, object_id, property, value, change_source)."""

ALL_SCOPES: frozenset[str] = frozenset(
    {
        *(
            f"crm.objects.{t}.{rw}"
            for t in ("contacts", "companies", "deals")
            for rw in ("read", "write")
        ),
        *(
            f"crm.schemas.{t}.{rw}"
            for t in ("contacts", "companies", "deals")
            for rw in ("read", "write")
        ),
        "crm.objects.owners.read",
        "tickets",
        "oauth",
        "crm.objects.custom.read",
        "crm.objects.custom.write",
        "crm.schemas.custom.read",
    }
)

# tier → (requests per 10 s per app, requests per day per account)
TIERS: dict[str, tuple[int, int]] = {
    "free": (100, 250_000),
    "starter": (100, 250_000),
    "professional": (190, 625_000),
    "enterprise": (190, 1_000_000),
}
SEARCH_PER_SECOND = 5
DEFAULT_TOKEN = "sandbox-token"
DEFAULT_CLIENT_ID = "sandbox-client-id"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"
DEFAULT_REFRESH_TOKEN = "sandbox-refresh-token"
STATIC_APP_ID = 3_100_001
OAUTH_APP_ID = 3_100_002


@dataclass
class Token:
    """An access token the sandbox accepts: static (private app / service key) or OAuth."""

    value: str
    scopes: frozenset[str]
    kind: str = "static"  # "static" | "oauth"
    app_id: int = STATIC_APP_ID
    expires_ms: int | None = None
    client_id: str | None = None
    user: str = "sandbox-admin@example.com"
    user_id: int = 9_000_001


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    app_id: int = OAUTH_APP_ID


@dataclass
class RefreshToken:
    value: str
    client_id: str
    scopes: frozenset[str]


@dataclass
class Owner:
    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int
    created_ms: int
    archived: bool = False
    teams: tuple[tuple[str, str], ...] = (("501", "Customer Success"),)
    """(team id, team name); the first is the owner's primary team"""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "type": "PERSON",
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": self.user_id,
            "userIdIncludingInactive": self.user_id,
            "createdAt": iso_ms(self.created_ms),
            "updatedAt": iso_ms(self.created_ms),
            "archived": self.archived,
            "teams": [
                {"id": tid, "name": name, "primary": i == 0}
                for i, (tid, name) in enumerate(self.teams)
            ],
        }


@dataclass
class RateDecision:
    """The outcome of counting one request against the limits, and the headers to send."""

    allowed: bool
    policy: str | None = None  # "TEN_SECONDLY_ROLLING" | "DAILY" | "SECONDLY" when refused
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: float = 0.0


class StateBase:
    """The clock and the change listeners every part of the state shares."""

    clock: Callable[[], float]
    listeners: list[ChangeListener]

    def now_ms(self) -> int:
        """The state's clock in epoch ms (tests inject a fixed or stepping clock)."""
        return int(self.clock())

    def _emit(
        self,
        event: str,
        object_type: str,
        object_id: int,
        prop: str | None,
        value: str | None,
        source: str,
    ) -> None:
        for listener in list(self.listeners):
            listener(event, object_type, str(object_id), prop, value, source)


class AccessMixin(StateBase):
    """Tokens, OAuth clients and the rate-limit counters."""

    portal_id: int
    time_zone: str
    tokens: dict[str, Token]
    clients: dict[str, OAuthClient]
    refresh_tokens: dict[str, RefreshToken]
    auth_codes: dict[str, frozenset[str]]
    rotate_refresh_tokens: bool
    access_token_ttl: int
    rate_limits: bool
    api_limit_increases: int
    retry_after_header: bool
    search_window: RollingWindow
    _tier: str | None
    _windows: dict[int, RollingWindow]
    _daily: dict[str, int]

    def _init_access(self, tier: str | None, rate_limits: bool, seed_token: bool) -> None:
        self.rate_limits = rate_limits
        self.api_limit_increases = 0
        self.retry_after_header = False
        self.rotate_refresh_tokens = False
        self.access_token_ttl = 1800
        self.tokens = {}
        self.clients = {DEFAULT_CLIENT_ID: OAuthClient(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)}
        self.refresh_tokens = {
            DEFAULT_REFRESH_TOKEN: RefreshToken(
                DEFAULT_REFRESH_TOKEN, DEFAULT_CLIENT_ID, ALL_SCOPES
            )
        }
        self.auth_codes = {}
        self._windows = {}
        self._daily = {}
        self._tier = None
        self.tier = tier
        self.search_window = RollingWindow(SEARCH_PER_SECOND, 1.0)
        if seed_token:
            self.add_token(DEFAULT_TOKEN)

    def set_daily_usage(self, used: int) -> None:
        """Pretend ``used`` calls were already made today (to reach the daily limit in tests)."""
        self._daily = {self._day(): used}

    def reset_limits(self) -> None:
        """Empty the rate-limit windows and the daily counter."""
        self._windows.clear()
        self._daily.clear()
        self.search_window.reset()

    @property
    def tier(self) -> str | None:
        return self._tier

    @tier.setter
    def tier(self, value: str | None) -> None:
        if value is not None and value not in TIERS:
            raise ValueError(f"unknown tier {value!r}; one of {sorted(TIERS)}")
        self._tier = value
        self._windows.clear()

    # ------------------------------------------------------------------------- tokens

    def add_token(
        self,
        token: str,
        scopes: Iterable[str] | None = None,
        *,
        kind: str = "static",
        expires_in: int | None = None,
        app_id: int | None = None,
    ) -> Token:
        """Accept ``token`` (all scopes unless given); ``expires_in`` seconds for OAuth ones."""
        t = Token(
            token,
            frozenset(ALL_SCOPES if scopes is None else scopes),
            kind=kind,
            app_id=app_id or (OAUTH_APP_ID if kind == "oauth" else STATIC_APP_ID),
            expires_ms=None if expires_in is None else self.now_ms() + expires_in * 1000,
        )
        self.tokens[token] = t
        return t

    def set_tokens(
        self,
        tokens: Mapping[str, Iterable[str]] | Iterable[str] = (),
        *,
        clients: Mapping[str, str] | None = None,
        refresh_tokens: Mapping[str, str] | None = None,
        rotate_refresh_tokens: bool | None = None,
        access_token_ttl: int | None = None,
    ) -> None:
        """Replace the static tokens (a list, or a mapping token → scopes), and optionally the
        OAuth clients (id → secret), refresh tokens (token → client id) and OAuth knobs."""
        self.tokens = {k: v for k, v in self.tokens.items() if v.kind == "oauth"}
        if isinstance(tokens, Mapping):
            for tok, scopes in tokens.items():
                self.add_token(tok, scopes)
        else:
            for tok in tokens:
                self.add_token(tok)
        if clients is not None:
            self.clients = {cid: OAuthClient(cid, secret) for cid, secret in clients.items()}
        if refresh_tokens is not None:
            self.refresh_tokens = {
                rt: RefreshToken(rt, cid, ALL_SCOPES) for rt, cid in refresh_tokens.items()
            }
        if rotate_refresh_tokens is not None:
            self.rotate_refresh_tokens = rotate_refresh_tokens
        if access_token_ttl is not None:
            self.access_token_ttl = access_token_ttl

    def revoke(self, token: str) -> bool:
        """Invalidate an access token or a refresh token (as an uninstall would)."""
        found = self.tokens.pop(token, None) is not None
        return self.refresh_tokens.pop(token, None) is not None or found

    def refresh(self, client_id: str, client_secret: str, refresh_token: str) -> dict[str, Any]:
        """``grant_type=refresh_token``: a new access token (and maybe a rotated refresh)."""
        client = self.clients.get(client_id)
        if client is None:
            raise ApiError(400, "BAD_CLIENT_ID", "missing or unknown client id")
        if not secrets.compare_digest(client.client_secret, client_secret):
            raise ApiError(400, "BAD_CLIENT_SECRET", "missing or invalid client secret")
        rt = self.refresh_tokens.get(refresh_token)
        if rt is None or rt.client_id != client_id:
            raise ApiError(400, "BAD_REFRESH_TOKEN", "missing or unknown refresh token")
        if self.rotate_refresh_tokens:
            del self.refresh_tokens[refresh_token]
            rt = RefreshToken(f"rt-{secrets.token_hex(16)}", client_id, rt.scopes)
            self.refresh_tokens[rt.value] = rt
        return self._issue(client, rt)

    def exchange_code(self, client_id: str, client_secret: str, code: str) -> dict[str, Any]:
        """``grant_type=authorization_code`` for codes put in :attr:`auth_codes`."""
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, client_secret):
            raise ApiError(400, "BAD_CLIENT_ID", "missing or unknown client id")
        scopes = self.auth_codes.pop(code, None)
        if scopes is None:
            raise ApiError(400, "BAD_AUTH_CODE", "missing or unknown auth code")
        rt = RefreshToken(f"rt-{secrets.token_hex(16)}", client_id, scopes)
        self.refresh_tokens[rt.value] = rt
        return self._issue(client, rt)

    def _issue(self, client: OAuthClient, rt: RefreshToken) -> dict[str, Any]:
        access = f"at-{secrets.token_hex(24)}"
        tok = self.add_token(
            access, rt.scopes, kind="oauth", expires_in=self.access_token_ttl, app_id=client.app_id
        )
        tok.client_id = client.client_id
        return {
            "token_type": "bearer",
            "refresh_token": rt.value,
            "access_token": access,
            "expires_in": self.access_token_ttl,
        }

    # ---------------------------------------------------------------------- rate limits

    @property
    def ten_second_limit(self) -> int:
        if self._tier is None:
            return 0
        return 250 if self.api_limit_increases else TIERS[self._tier][0]

    @property
    def daily_limit(self) -> int:
        if self._tier is None:
            return 0
        return TIERS[self._tier][1] + 1_000_000 * self.api_limit_increases

    @property
    def limits_on(self) -> bool:
        return self.rate_limits and self._tier is not None

    def _day(self) -> str:
        try:
            tz = ZoneInfo(self.time_zone)
        except Exception:  # no tz database: count days in UTC
            tz = ZoneInfo("UTC")
        return datetime.fromtimestamp(self.now_ms() / 1000, tz).date().isoformat()

    def take_rate(self, token: Token) -> RateDecision:
        """Count one CRM request (not search) against the 10-second and daily limits."""
        if not self.limits_on:
            return RateDecision(True)
        window = self._windows.get(token.app_id)
        if window is None:
            window = self._windows[token.app_id] = RollingWindow(self.ten_second_limit, 10.0)
        day = self._day()
        used = self._daily.get(day, 0)
        daily = self.daily_limit
        if used >= daily:
            return RateDecision(
                False, "DAILY", self._headers(token, window.limit, 0, daily, 0), 60.0
            )
        ok, remaining, reset = window.take(self.now_ms() / 1000)
        if not ok:
            headers = self._headers(token, window.limit, 0, daily, daily - used)
            return RateDecision(False, "TEN_SECONDLY_ROLLING", headers, reset)
        used += 1
        self._daily = {day: used}
        return RateDecision(
            True, None, self._headers(token, window.limit, remaining, daily, daily - used)
        )

    @staticmethod
    def _headers(token: Token, mx: int, rem: int, daily: int, daily_rem: int) -> dict[str, str]:
        h = {
            "X-HubSpot-RateLimit-Max": str(mx),
            "X-HubSpot-RateLimit-Remaining": str(rem),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
        }
        if token.kind != "oauth":  # the daily headers are not sent on OAuth-authorised calls
            h["X-HubSpot-RateLimit-Daily"] = str(daily)
            h["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(daily_rem, 0))
        return h

    def take_search(self) -> RateDecision:
        """Count one search request against the account's 5-per-second search limit."""
        if not self.limits_on:
            return RateDecision(True)
        ok, _, reset = self.search_window.take(self.now_ms() / 1000)
        return RateDecision(ok, None if ok else "SECONDLY", {}, reset)

    def daily_usage(self) -> tuple[int, int]:
        """(calls counted today, daily limit)."""
        return self._daily.get(self._day(), 0), self.daily_limit
