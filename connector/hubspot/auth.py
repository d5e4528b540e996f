"""HubSpot credentials as httpx auth flows: a static bearer token, or OAuth 2.0 with refresh.

- :class:`StaticTokenAuth`: a Service Key, a project-based app's static token or a legacy
  private-app token — one ``Authorization: Bearer …`` header, never refreshed.
- :class:`OAuthAuth`: an access token refreshed *ahead of* ``expires_in`` (HubSpot: a 401 "is
  not a valid indicator that a new access token must be retrieved", API_NOTES_HUBSPOT §7), once
  for all concurrent requests. A rotated refresh token is saved through a :class:`TokenStore`;
  at start a stored refresh token wins over the one in the config.

Every token is registered with :func:`connector.errors.register_secret` as soon as it is seen,
so no error message or log line can carry it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import structlog

from connector.config import OAuthSettings
from connector.errors import (
    ApiError,
    AuthError,
    RateLimitedError,
    ServerError,
    TransportError,
    register_secret,
)
from connector.hubspot.models import ErrorBody
from connector.retry import Action, classify, classify_exception, retrying

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

REAUTHORISE_HINT = (
    "re-authorise the HubSpot app (install it again) and put the new refresh token in "
    "hubspot.oauth.refresh_token"
)


@dataclass(frozen=True, slots=True)
class StoredTokens:
    """Tokens kept across restarts; the repr never shows them."""

    refresh_token: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None


class TokenStore(Protocol):
    """Where OAuth tokens survive restarts (the state database, or a fake in tests)."""

    async def load(self) -> StoredTokens | None: ...

    async def save(
        self, refresh_token: str, access_token: str | None, expires_at: datetime | None
    ) -> None: ...


class DbTokenStore:
    """:class:`TokenStore` on the ``oauth_tokens`` table (``connector.store.tokens``)."""

    def __init__(
        self, session_factory: Callable[[], AsyncSession], provider: str = "hubspot"
    ) -> None:
        self._factory = session_factory
        self._provider = provider

    async def load(self) -> StoredTokens | None:
        from connector.store.tokens import load_refresh_token  # the store is optional here

        async with self._factory() as session:
            row = await load_refresh_token(session, self._provider)
        if row is None:
            return None
        return StoredTokens(row.refresh_token, row.access_token, row.expires_at)

    async def save(
        self, refresh_token: str, access_token: str | None, expires_at: datetime | None
    ) -> None:
        from connector.store.tokens import save_tokens

        async with self._factory() as session, session.begin():
            await save_tokens(session, self._provider, refresh_token, access_token, expires_at)


class StaticTokenAuth(httpx.Auth):
    """A bearer token that does not expire: Service Key, static app token, private-app token."""

    kind = "static"

    def __init__(self, token: str) -> None:
        register_secret(token)
        self._token = token

    @property
    def token(self) -> str:
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "StaticTokenAuth(***)"


class OAuthAuth(httpx.Auth):
    """OAuth 2.0 access tokens, refreshed ahead of expiry; async clients only.

    ``http`` is a plain client (no auth) on HubSpot's base URL that sends the refresh call to
    ``settings.token_path``; ``clock`` is wall-clock seconds (``time.time``).
    """

    kind = "oauth"

    def __init__(
        self,
        settings: OAuthSettings,
        *,
        http: httpx.AsyncClient,
        token_store: TokenStore | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        max_retries: int = 6,
        calls: Counter[str] | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self._store = token_store
        self._clock = clock
        self._sleep = sleep
        self._max_retries = max_retries
        self._calls = calls if calls is not None else Counter()
        self._config_refresh = settings.refresh_token.get_secret_value()
        register_secret(settings.client_secret.get_secret_value())
        register_secret(self._config_refresh)
        self._refresh_token = self._config_refresh
        self._access: str | None = None
        self._expires_at = 0.0
        self._loaded = token_store is None
        self._lock = asyncio.Lock()
        self.refreshes = 0

    @property
    def token(self) -> str | None:
        """The current access token (``None`` before the first request)."""
        return self._access

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("OAuthAuth refreshes asynchronously: use it with httpx.AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self.access_token()}"
        yield request

    def _fresh(self) -> bool:
        margin = self._settings.refresh_margin_seconds
        return self._access is not None and self._clock() < self._expires_at - margin

    async def access_token(self) -> str:
        """A valid access token, refreshed first if it expires within the margin."""
        if not self._fresh():
            async with self._lock:  # concurrent requests wait here; one of them refreshes
                if not self._loaded:
                    await self._load()
                if not self._fresh():
                    await self._refresh()
        assert self._access is not None
        return self._access

    async def _load(self) -> None:
        assert self._store is not None
        stored = await self._store.load()
        self._loaded = True
        if stored is None:
            return
        register_secret(stored.refresh_token)
        register_secret(stored.access_token)
        self._refresh_token = stored.refresh_token
        if stored.access_token and stored.expires_at is not None:
            self._access = stored.access_token
            self._expires_at = stored.expires_at.timestamp()
        log.info("hubspot.oauth.tokens_loaded", access_token_usable=self._fresh())

    async def _refresh(self) -> None:
        candidates = [self._refresh_token]
        if self._config_refresh != self._refresh_token:
            candidates.append(self._config_refresh)  # the stored one was revoked: a re-install?
        for n, refresh_token in enumerate(candidates, start=1):
            try:
                data = await retrying(
                    functools.partial(self._post, refresh_token),
                    max_retries=self._max_retries,
                    idempotent=True,
                    sleep=self._sleep,
                )
            except AuthError:
                if n == len(candidates):
                    raise
                log.warning("hubspot.oauth.stored_refresh_token_refused", fallback="config")
                continue
            await self._accept(data, refresh_token)
            return

    async def _accept(self, data: dict[str, Any], used: str) -> None:
        access = data.get("access_token") or data.get("accessToken")
        refresh = data.get("refresh_token") or data.get("refreshToken") or used
        expires_in = data.get("expires_in", data.get("expiresIn"))
        if not isinstance(access, str) or not access:
            raise AuthError(
                "the token endpoint answered without an access token",
                system="hubspot",
                endpoint=f"POST {self._settings.token_path}",
            )
        register_secret(access)
        register_secret(str(refresh))
        try:
            lifetime = float(expires_in) if expires_in is not None else 1800.0
        except (TypeError, ValueError):
            lifetime = 1800.0  # HubSpot's documented 30 minutes, if the answer has no number
        rotated = str(refresh) != self._refresh_token
        self._access = access
        self._refresh_token = str(refresh)
        self._expires_at = self._clock() + lifetime
        self.refreshes += 1
        log.info("hubspot.oauth.refreshed", expires_in=lifetime, rotated=rotated)
        if self._store is not None:
            expires = datetime.fromtimestamp(self._expires_at, tz=UTC)
            try:
                await self._store.save(self._refresh_token, access, expires)
            except Exception as exc:  # the request can go on; the next refresh saves again
                log.error("hubspot.oauth.save_failed", error=type(exc).__name__)

    async def _post(self, refresh_token: str) -> dict[str, Any]:
        path = self._settings.token_path
        endpoint = f"POST {path}"
        form = {
            "grant_type": "refresh_token",
            "client_id": self._settings.client_id,
            "client_secret": self._settings.client_secret.get_secret_value(),
            "refresh_token": refresh_token,
        }
        self._calls[endpoint] += 1
        try:
            resp = await self._http.post(path, data=form, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            cls = TransportError if classify_exception(exc) is Action.RETRY else ApiError
            raise cls(f"{type(exc).__name__}: {exc}", system="hubspot", endpoint=endpoint) from exc
        action = classify(resp.status_code)
        if action is Action.OK:
            try:
                data = resp.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise ServerError(
                    "the token endpoint answered with a non-JSON body",
                    system="hubspot",
                    endpoint=endpoint,
                    status=resp.status_code,
                )
            return data
        body = ErrorBody.parse(resp.content, resp.headers)
        kw: dict[str, Any] = {
            "system": "hubspot",
            "endpoint": endpoint,
            "status": resp.status_code,
            "category": body.category,
            "correlation_id": body.correlation_id,
        }
        if action is Action.RATE_LIMITED:
            raise RateLimitedError(body.message, **kw)
        if action is Action.RETRY:
            raise ServerError(body.message, **kw)
        if resp.status_code in (400, 401, 403):
            raise AuthError(
                f"HubSpot refused the OAuth refresh ({body.message}) — {REAUTHORISE_HINT}", **kw
            )
        raise ApiError(body.message, **kw)

    def __repr__(self) -> str:
        return f"OAuthAuth(client_id={self._settings.client_id!r})"
