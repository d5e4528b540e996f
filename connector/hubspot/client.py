"""Async client for HubSpot's date-versioned CRM API (``/crm/objects/2026-09/…``).

Every call goes the same way (:meth:`HubSpotClient._request`): wait for the account's limiter
(``general``, plus ``search`` for search calls) → send → tighten the limiter from the
``X-HubSpot-RateLimit-*`` headers → let :func:`connector.retry.classify` say what the status
means → raise a typed :class:`~connector.errors.ApiError` — all under
:func:`connector.retry.retrying`, which retries 429s, 5xx and timeouts with backoff (and never
repeats a non-idempotent call after a 5xx or a timeout). Batch writes go in chunks of 100 and
come back split per record (:class:`~connector.hubspot.models.BatchResult`): a 207's errors, and
the inputs of a batch refused as a whole, each become a :class:`RecordError` while the good
inputs are written. :meth:`HubSpotClient.search_modified` walks past the search API's
10,000-result cap.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
import structlog

from connector.config import HubSpotSettings
from connector.errors import (
    ApiError,
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
)
from connector.hubspot.auth import REAUTHORISE_HINT, OAuthAuth, StaticTokenAuth, TokenStore
from connector.hubspot.models import (
    AccountDetails,
    Association,
    AssociationLabel,
    AssociationWriteResult,
    BatchResult,
    ErrorBody,
    HubSpotObject,
    Owner,
    PropertyDef,
    RecordError,
    TokenInfo,
    to_epoch_ms,
)
from connector.hubspot.paths import Paths, Route
from connector.ratelimit import (
    Limiter,
    hubspot_daily_headers,
    hubspot_limiters,
    observe_hubspot_headers,
)
from connector.retry import Action, classify, classify_exception, retrying

if TYPE_CHECKING:
    from connector.metrics import ApiMetrics

log = structlog.get_logger(__name__)

SYSTEM = "hubspot"
_T = TypeVar("_T")
BATCH_LIMIT = 100
"""Inputs per batch call (API_NOTES_HUBSPOT §1.5: no maxItems in the spec; 100 everywhere)."""
SEARCH_CAP = 10_000
"""A search query returns at most 10,000 results; paging further answers 400 (§1.4)."""
SEARCH_PAGE_MAX = 200
LIST_PAGE_MAX = 100
DAILY_BLOCK_SECONDS = 60.0
NOTE_TO_CONTACT_FALLBACK = 202  # [3P] in API_NOTES §8; used only if the labels call fails

Sleep = Callable[[float], Awaitable[None]]
RouteFor = Route | Callable[[bool], Route]
"""A fixed route, or a builder ``legacy -> Route`` for the families with a legacy fallback."""

_CATEGORY_STATUS = {
    "VALIDATION_ERROR": 400,
    "INVALID_EMAIL": 400,
    "OBJECT_NOT_FOUND": 404,
    "CONFLICT": 409,
    "RATE_LIMITS": 429,
}


class _GiveUp(Exception):
    """Carries an ApiError out of ``retrying`` unretried (tenacity retries ApiErrors only)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(slots=True)
class _Input:
    """One batch input: its place in the caller's list, its keys, and the JSON to send."""

    index: int
    payload: dict[str, Any]
    id: str | None = None
    email: str | None = None
    trace_id: str | None = None

    def keys(self) -> set[str]:
        return {_norm(k) for k in (self.id, self.email, self.trace_id) if k}


def _norm(key: str) -> str:
    """Emails compare trimmed and lower-cased (as ``ErrorBody.named`` gives them)."""
    return key.strip().lower() if "@" in key else key


@dataclass(slots=True)
class _Window:
    """What one search query saw: whether it stopped at the 10,000 cap."""

    capped: bool = False
    read: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    at_last_ts: set[str] = field(default_factory=set)


def last_modified_property(object_type: str) -> str:
    """``lastmodifieddate`` for contacts, ``hs_lastmodifieddate`` for every other type (§2.1)."""
    return (
        "lastmodifieddate"
        if object_type in ("contacts", "contact", "0-1")
        else "hs_lastmodifieddate"
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` as seconds (a number or an HTTP date); UNVERIFIED on HubSpot's 429s."""
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _route_unknown(exc: NotFoundError) -> bool:
    """Whether a 404 says the route (not a CRM record) is unknown.

    A CRM "object not found" has category ``OBJECT_NOT_FOUND``; a gateway's unknown-route 404
    has another category, none, or a non-JSON body — or a message about the route or version.
    """
    if exc.category != "OBJECT_NOT_FOUND":
        return True
    msg = exc.raw_message.lower()
    return any(word in msg for word in ("route", "path", "api version", "endpoint"))


def _next_after(data: Mapping[str, Any]) -> str | None:
    after = ((data.get("paging") or {}).get("next") or {}).get("after")
    return str(after) if after not in (None, "") else None


def _chunks(items: Sequence[_Input], size: int) -> list[list[_Input]]:
    """Chunks of ≤ ``size``; an input whose key repeats goes to a later chunk than the first.

    HubSpot answers 409 to a batch holding the same email twice (API_NOTES §6), so each chunk
    holds each key once, and the later input is written after the earlier one.
    """
    chunks: list[list[_Input]] = []
    chunk_keys: list[set[str]] = []
    last_chunk: dict[str, int] = {}
    first_open = 0
    for item in items:
        key = (item.id or "").strip().lower() if item.id else None
        start = max(first_open, last_chunk.get(key, -1) + 1) if key else first_open
        j = start
        while j < len(chunks) and (len(chunks[j]) >= size or (key and key in chunk_keys[j])):
            j += 1
        if j == len(chunks):
            chunks.append([])
            chunk_keys.append(set())
        chunks[j].append(item)
        if key:
            chunk_keys[j].add(key)
            last_chunk[key] = j
        while first_open < len(chunks) and len(chunks[first_open]) >= size:
            first_open += 1
    return chunks


BATCH_IN_FLIGHT = 2
"""Chunks of one batch read, update or upsert in flight at once (their keys all distinct): the
next chunk goes while HubSpot answers one and we read the answer of another, instead of the
three taking turns. Creates (not idempotent) and calls whose keys repeat go one at a time."""


def _distinct_keys(items: Sequence[_Input]) -> bool:
    keys = [(i.id or "").strip().lower() for i in items if i.id]
    return len(set(keys)) == len(keys)


async def _in_order(calls: Sequence[Callable[[], Awaitable[_T]]], limit: int) -> list[_T]:
    """The calls' results in order, at most ``limit`` running at once, started in order.

    After a failure no further call starts; those already running finish (their writes are
    not cut off halfway), then the first failure is raised — as one at a time, where the
    calls after a failure are not sent.
    """
    if limit <= 1 or len(calls) <= 1:
        return [await c() for c in calls]
    gate = asyncio.Semaphore(limit)
    failed: list[BaseException] = []

    async def run(call: Callable[[], Awaitable[_T]]) -> _T | None:
        async with gate:
            if failed:
                return None
            try:
                return await call()
            except BaseException as e:
                failed.append(e)
                raise

    outcomes = await asyncio.gather(*(run(c) for c in calls), return_exceptions=True)
    if failed:
        raise failed[0]
    results: list[_T] = []
    for o in outcomes:
        if isinstance(o, BaseException):  # pragma: no cover - recorded in failed first
            raise o
        assert o is not None
        results.append(o)
    return results


def _record_error(item: _Input | None, body: ErrorBody, status: int | None) -> RecordError:
    return RecordError(
        index=item.index if item else None,
        id=item.id if item else None,
        email=item.email if item else None,
        trace_id=item.trace_id if item else None,
        status=status,
        category=body.category,
        code=body.code,
        message=body.message,
        existing_id=body.existing_id,
    )


def _split_errors(data: Mapping[str, Any], chunk: Sequence[_Input]) -> list[RecordError]:
    """A 207's ``errors[]`` as one RecordError per input each error names (or one unnamed)."""
    out: list[RecordError] = []
    for raw in data.get("errors") or []:
        if not isinstance(raw, Mapping):
            continue
        body = ErrorBody.from_mapping(raw)
        named = body.named()
        status_raw = raw.get("status")
        status = (
            int(status_raw)
            if isinstance(status_raw, int) or (isinstance(status_raw, str) and status_raw.isdigit())
            else _CATEGORY_STATUS.get(body.category or "")
        )
        hits = [item for item in chunk if item.keys() & named]
        out.extend(_record_error(item, body, status) for item in hits)
        if not hits:
            out.append(_record_error(None, body, status))
    return out


class HubSpotClient:
    """HubSpot CRM calls for the sync engine; one instance per account, shared by all tasks.

    ``transport`` lets tests pass ``httpx.ASGITransport(create_hubspot_app(...))``; ``sleep``
    and ``clock`` drive the backoff and the default limiters (tests pass fakes); ``wall_clock``
    times OAuth expiry. ``calls`` counts every HTTP attempt as ``"METHOD /path-template"``.
    """

    def __init__(
        self,
        settings: HubSpotSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        token_store: TokenStore | None = None,
        limiters: dict[str, Limiter] | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.paths = Paths(settings.api_version)
        self.calls: Counter[str] = Counter()
        self._sleep = sleep
        self._limiters = limiters or hubspot_limiters(
            settings.tier, limit_increase=settings.api_limit_increase, clock=clock, sleep=sleep
        )
        self._metrics: ApiMetrics | None = None
        self._legacy: set[str] = set()
        self._type_ids: dict[tuple[str, str], int] = {}
        timeout = httpx.Timeout(settings.timeout_seconds)
        common: dict[str, Any] = {
            "base_url": settings.base_url,
            "timeout": timeout,
            "headers": {"User-Agent": "hubspot-brevo-connector", "Accept": "application/json"},
        }
        if transport is not None:
            common["transport"] = transport
        self._auth_http: httpx.AsyncClient | None = None
        self.auth: StaticTokenAuth | OAuthAuth
        if settings.oauth is not None:
            self._auth_http = httpx.AsyncClient(**common)
            self.auth = OAuthAuth(
                settings.oauth,
                http=self._auth_http,
                token_store=token_store,
                clock=wall_clock,
                sleep=sleep,
                max_retries=settings.max_retries,
                calls=self.calls,
            )
        elif settings.access_token is not None:
            self.auth = StaticTokenAuth(settings.access_token.get_secret_value())
        else:
            raise ValueError("HubSpotSettings has neither access_token nor oauth")
        self._http = httpx.AsyncClient(auth=self.auth, **common)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def attach_metrics(self, metrics: ApiMetrics) -> None:
        """Count every call in ``metrics`` (the daemon's registry) from now on, and report the
        daily budget: the headers when HubSpot sends them, else the ``general`` limiter's
        daily window."""
        self._metrics = metrics
        metrics.track_daily(SYSTEM, self._limiters["general"], "daily")

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._auth_http is not None:
            await self._auth_http.aclose()

    # --- the one way every call goes ---------------------------------------------------------

    async def request(
        self,
        method: str,
        route: RouteFor,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        search: bool = False,
    ) -> Any:
        """One API call under the limiters, the retry policy, metrics and error mapping; the
        parsed JSON (or None). Public for the modules that build on the client (onboarding,
        CRM objects); the client's own methods call it as ``_request``."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        if not callable(route):
            return await self._with_retries(method, route, json, params, idempotent, search)
        dated = route(False)
        if dated.family in self._legacy:
            return await self._with_retries(method, route(True), json, params, idempotent, search)
        try:
            return await self._with_retries(method, dated, json, params, idempotent, search)
        except NotFoundError as exc:
            # The dated paths of owners, properties, associations and account info are
            # UNVERIFIED (API_NOTES_HUBSPOT §0). A 404 that is not a CRM "object not found"
            # means the route itself is unknown: fall back to the legacy numbered path once,
            # and keep using it for this session.
            if dated.family is None or not _route_unknown(exc):
                raise
            legacy = route(True)
            self._legacy.add(dated.family)
            log.warning(
                "hubspot.legacy_path_fallback",
                family=dated.family,
                dated=dated.template,
                legacy=legacy.template,
            )
            return await self._with_retries(method, legacy, json, params, idempotent, search)

    _request = request

    async def _with_retries(
        self,
        method: str,
        route: Route,
        json: Any,
        params: Mapping[str, Any] | None,
        idempotent: bool,
        search: bool,
    ) -> Any:
        async def once() -> Any:
            return await self._send(method, route, json, params, search)

        try:
            return await retrying(
                once,
                max_retries=self.settings.max_retries,
                idempotent=idempotent,
                sleep=self._sleep,
            )
        except _GiveUp as stop:
            raise stop.error from None

    async def _send(
        self,
        method: str,
        route: Route,
        json: Any,
        params: Mapping[str, Any] | None,
        search: bool,
    ) -> Any:
        endpoint = f"{method} {route.template}"
        if isinstance(self.auth, OAuthAuth):
            try:  # refresh (with its own retries) before the clock of this call starts
                await self.auth.access_token()
            except ApiError as exc:
                raise _GiveUp(exc) from exc
        general = self._limiters["general"]
        await general.acquire()
        if search:
            await self._limiters["search"].acquire()
        self.calls[endpoint] += 1
        started = time.perf_counter()
        timeout = self.settings.timeout_seconds
        try:
            # httpx bounds each phase; this bounds the whole call (and works on ASGITransport)
            async with asyncio.timeout(timeout):
                resp = await self._http.request(method, route.path, json=json, params=params)
        except TimeoutError:
            self._observe(None)
            cause = httpx.ReadTimeout(f"no complete answer within {timeout:g} s")
            raise TransportError(
                f"no complete answer within {timeout:g} s", system=SYSTEM, endpoint=endpoint
            ) from cause
        except httpx.TransportError as exc:
            self._observe(None)
            cls = TransportError if classify_exception(exc) is Action.RETRY else ApiError
            raise cls(f"{type(exc).__name__}: {exc}", system=SYSTEM, endpoint=endpoint) from exc
        except ApiError as exc:  # from the OAuth refresh, already retried there
            raise _GiveUp(exc) from exc
        observe_hubspot_headers(general, resp.headers)
        self._observe(resp)
        log.debug(
            "hubspot.call",
            endpoint=endpoint,
            status=resp.status_code,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if classify(resp.status_code) is Action.OK:
            return self._json(resp, endpoint)
        raise self._error(endpoint, resp, search)

    def _observe(self, resp: httpx.Response | None) -> None:
        """Count one call (``None``: it got no answer) in the attached metrics, if any."""
        if self._metrics is None:
            return
        self._metrics.observe(SYSTEM, None if resp is None else resp.status_code)
        if resp is not None:
            self._metrics.observe_daily(SYSTEM, *hubspot_daily_headers(resp.headers))

    @staticmethod
    def _json(resp: httpx.Response, endpoint: str) -> Any:
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise ServerError(
                "a success status with a body that is not JSON",
                system=SYSTEM,
                endpoint=endpoint,
                status=resp.status_code,
            ) from None

    def _error(self, endpoint: str, resp: httpx.Response, search: bool) -> Exception:
        """The typed error for a failed response (``_GiveUp`` for what must not be retried)."""
        status = resp.status_code
        body = ErrorBody.parse(resp.content, resp.headers)
        kw: dict[str, Any] = {
            "system": SYSTEM,
            "endpoint": endpoint,
            "status": status,
            "category": body.category,
            "correlation_id": body.correlation_id,
            "body": body,
        }
        action = classify(status)
        if action is Action.RATE_LIMITED:
            return self._rate_limited(body, resp.headers, search, kw)
        if status == 423:  # locked by a concurrent write: not applied, so safe to send again
            kw["category"] = body.category or "LOCKED"
            return RateLimitedError(body.message, retry_after=2.0, **kw)
        if action is Action.RETRY:
            return ServerError(body.message, **kw)
        if status == 401:
            if isinstance(self.auth, OAuthAuth):
                hint = (
                    "the OAuth token was refused although it is refreshed ahead of expiry: "
                    f"the app was uninstalled or the token revoked — {REAUTHORISE_HINT}"
                )
            else:
                hint = (
                    "the token is invalid, expired or revoked — check hubspot.access_token "
                    "(a Service Key, a project app's static token or a legacy private-app token)"
                )
            return AuthError(f"{body.message} — {hint}", **kw)
        if status == 403:
            return ForbiddenError(
                f"{body.message} — the credential lacks a scope or permission for this call",
                **kw,
            )
        if status == 404:
            return NotFoundError(body.message, **kw)
        if status == 409:
            return ConflictError(body.message, existing_id=body.existing_id, **kw)
        if status in (400, 422):
            return ValidationError(body.message, **kw)
        return ApiError(body.message, **kw)

    def _rate_limited(
        self, body: ErrorBody, headers: Mapping[str, str], search: bool, kw: dict[str, Any]
    ) -> Exception:
        policy = (body.policy_name or "").upper()
        retry_after = _retry_after(headers)  # UNVERIFIED on HubSpot (§1.3): honoured if sent
        general = self._limiters["general"]
        if policy == "DAILY":
            general.block_for(retry_after or DAILY_BLOCK_SECONDS)
            kw["category"] = "DAILY"
            log.error("hubspot.daily_limit_reached", endpoint=kw["endpoint"])
            return _GiveUp(
                RateLimitedError(
                    f"{body.message} — HubSpot's daily API cap is spent until midnight in the "
                    "account's time zone; calls resume then (not retried)",
                    retry_after=retry_after,
                    **kw,
                )
            )
        secondly = "secondly limit" in body.message.lower() or policy == "SECONDLY"
        if retry_after is None:
            if policy.startswith("TEN_SECONDLY"):
                retry_after = 10.0
            elif secondly or search:
                retry_after = 1.0
        limiter = self._limiters["search"] if search and not policy.startswith("TEN") else general
        if retry_after is not None:
            limiter.block_for(retry_after)  # every concurrent caller backs off, not just this one
        kw["category"] = policy or body.category
        log.warning(
            "hubspot.rate_limited", endpoint=kw["endpoint"], policy=policy, retry_after=retry_after
        )
        return RateLimitedError(body.message, retry_after=retry_after, **kw)

    # --- objects: list, get, batch -----------------------------------------------------------

    async def iter_objects(
        self,
        object_type: str,
        properties: Sequence[str],
        *,
        archived: bool = False,
        page_size: int = LIST_PAGE_MAX,
    ) -> AsyncIterator[HubSpotObject]:
        """Every record of a type, page by page (``archived=True``: only archived ones)."""
        seen: set[str] = set()
        after: str | None = None
        while True:
            page, after = await self.list_page(
                object_type, properties, after=after, archived=archived, page_size=page_size
            )
            for item in page:
                yield item
            if after is None:
                return
            if after in seen:
                raise ApiError(
                    f"paging loop: HubSpot returned the page token {after!r} twice",
                    system=SYSTEM,
                    endpoint=f"GET {self.paths.objects(object_type).template}",
                    category="PAGING_LOOP",
                )
            seen.add(after)

    async def list_page(
        self,
        object_type: str,
        properties: Sequence[str],
        *,
        after: str | None = None,
        archived: bool = False,
        page_size: int = LIST_PAGE_MAX,
    ) -> tuple[list[HubSpotObject], str | None]:
        """One page of the list API and the token of the next (``None`` after the last page).

        A resync keeps the token as its checkpoint, so an interrupted run resumes there.
        """
        route = self.paths.objects(object_type)
        params: dict[str, Any] = {
            "limit": min(page_size, LIST_PAGE_MAX),
            "archived": "true" if archived else "false",
        }
        if properties:
            params["properties"] = ",".join(properties)
        if after is not None:
            params["after"] = after
        data = await self._request("GET", route, params=params)
        return [HubSpotObject.from_api(item) for item in data.get("results") or []], _next_after(
            data
        )

    async def get_object(
        self,
        object_type: str,
        object_id: str,
        properties: Sequence[str],
        id_property: str | None = None,
    ) -> HubSpotObject | None:
        """One record by id (or by ``id_property``, e.g. email); ``None`` if there is none."""
        params: dict[str, Any] = {}
        if properties:
            params["properties"] = ",".join(properties)
        if id_property:
            params["idProperty"] = id_property
        try:
            data = await self._request(
                "GET", self.paths.object(object_type, object_id), params=params
            )
        except NotFoundError:
            return None
        return HubSpotObject.from_api(data)

    async def create_object(self, object_type: str, properties: Mapping[str, Any]) -> HubSpotObject:
        """Create one record (not retried after a 5xx); a duplicate raises ConflictError."""
        data = await self._request(
            "POST",
            self.paths.objects(object_type),
            json={"properties": dict(properties)},
            idempotent=False,
        )
        return HubSpotObject.from_api(data)

    async def batch_read(
        self,
        object_type: str,
        ids: Iterable[str],
        properties: Sequence[str],
        id_property: str | None = None,
        *,
        archived: bool = False,
    ) -> BatchResult:
        """Read records in batches of 100; ids HubSpot cannot find come back as errors.

        ``archived=True`` reads only archived (deleted, restorable) records: how a deletion is
        told from a merge or a GDPR deletion, whose records are not in the archive."""
        items = [
            _Input(i, {"id": str(v)}, id=str(v), email=str(v) if "@" in str(v) else None)
            for i, v in enumerate(ids)
        ]
        route = self.paths.batch(object_type, "read")
        params = {"archived": "true"} if archived else None

        def read(chunk: list[_Input]) -> Callable[[], Awaitable[BatchResult]]:
            async def call() -> BatchResult:
                body: dict[str, Any] = {
                    "inputs": [c.payload for c in chunk],
                    "properties": list(properties),
                    "propertiesWithHistory": [],
                }
                if id_property:
                    body["idProperty"] = id_property
                data = await self._request("POST", route, json=body, params=params, idempotent=True)
                return self._batch_result(data or {}, chunk, id_property=id_property)

            return call

        result = BatchResult()
        for part in await _in_order(
            [read(c) for c in _chunks(items, BATCH_LIMIT)], BATCH_IN_FLIGHT
        ):
            result.extend(part)
        return result

    async def batch_create(
        self, object_type: str, inputs: Sequence[Mapping[str, Any]]
    ) -> BatchResult:
        """Create records (each input is a properties mapping); not retried after a 5xx."""
        items = [
            self._write_input(i, {"properties": dict(props)}, None, props)
            for i, props in enumerate(inputs)
        ]
        return await self._batch_write(object_type, "create", items, idempotent=False)

    async def batch_update(
        self, object_type: str, inputs: Mapping[str, Mapping[str, Any]]
    ) -> BatchResult:
        """Update records by id (``{id: properties}``; ``index`` is the position in it)."""
        items = [
            self._write_input(i, {"id": str(rid), "properties": dict(props)}, str(rid), props)
            for i, (rid, props) in enumerate(inputs.items())
        ]
        return await self._batch_write(object_type, "update", items, idempotent=True)

    async def batch_upsert(
        self,
        object_type: str,
        inputs: Sequence[Mapping[str, Any]],
        id_property: str = "email",
    ) -> BatchResult:
        """Create or update records keyed by ``id_property``, which each input must hold."""
        items = []
        for i, props in enumerate(inputs):
            key = props.get(id_property)
            if key is None or str(key).strip() == "":
                raise ValueError(f"upsert input {i} has no {id_property!r} value")
            payload = {"id": str(key), "idProperty": id_property, "properties": dict(props)}
            items.append(self._write_input(i, payload, str(key), props))
        return await self._batch_write(object_type, "upsert", items, idempotent=True)

    async def archive(self, object_type: str, ids: Iterable[str]) -> None:
        """Archive (delete, restorable for 90 days) records in batches of 100."""
        items = [_Input(i, {"id": str(v)}, id=str(v)) for i, v in enumerate(ids)]
        route = self.paths.batch(object_type, "archive")
        for chunk in _chunks(items, BATCH_LIMIT):
            body = {"inputs": [c.payload for c in chunk]}
            await self._request("POST", route, json=body, idempotent=True)

    @staticmethod
    def _write_input(
        index: int, payload: dict[str, Any], rid: str | None, props: Mapping[str, Any]
    ) -> _Input:
        trace = uuid.uuid4().hex
        payload["objectWriteTraceId"] = trace  # so a 207's errors name their input
        email = props.get("email")
        if email is None and rid and "@" in rid:
            email = rid
        return _Input(index, payload, id=rid, email=str(email) if email else None, trace_id=trace)

    async def _batch_write(
        self, object_type: str, action: str, items: list[_Input], *, idempotent: bool
    ) -> BatchResult:
        route = self.paths.batch(object_type, action)
        limit = BATCH_IN_FLIGHT if idempotent and _distinct_keys(items) else 1

        def write(chunk: list[_Input]) -> Callable[[], Awaitable[BatchResult]]:
            return lambda: self._write_chunk(route, chunk, idempotent=idempotent)

        result = BatchResult()
        for part in await _in_order([write(c) for c in _chunks(items, BATCH_LIMIT)], limit):
            result.extend(part)
        if result.errors:
            log.info(
                "hubspot.batch_partial",
                endpoint=f"POST {route.template}",
                written=len(result.results),
                refused=len(result.errors),
            )
        return result

    async def _write_chunk(
        self, route: Route, chunk: list[_Input], *, idempotent: bool
    ) -> BatchResult:
        """Write one chunk; if HubSpot refuses it whole, isolate the bad inputs and write the rest.

        A 400/409 for the whole batch means nothing was written. If the error names inputs
        (trace ids, ids, emails in its context) those become RecordErrors and the rest is sent
        again; if it names none, the chunk is split in two and each half tried, down to single
        inputs — so each bad record ends up as its own RecordError and the good ones are written.
        """
        try:
            data = await self._request(
                "POST", route, json={"inputs": [c.payload for c in chunk]}, idempotent=idempotent
            )
        except (ValidationError, ConflictError) as exc:
            body = exc.body if isinstance(exc.body, ErrorBody) else ErrorBody(exc.raw_message)
            if len(chunk) == 1:
                return BatchResult(errors=[_record_error(chunk[0], body, exc.status)])
            named = body.named()
            bad = [c for c in chunk if c.keys() & named]
            if bad:
                result = BatchResult(errors=[_record_error(c, body, exc.status) for c in bad])
                rest = [c for c in chunk if not (c.keys() & named)]
                if rest:
                    result.extend(await self._write_chunk(route, rest, idempotent=idempotent))
                return result
            log.info(
                "hubspot.batch_bisect",
                endpoint=f"POST {route.template}",
                size=len(chunk),
                category=exc.category,
            )
            mid = len(chunk) // 2
            result = await self._write_chunk(route, chunk[:mid], idempotent=idempotent)
            result.extend(await self._write_chunk(route, chunk[mid:], idempotent=idempotent))
            return result
        return self._batch_result(data or {}, chunk)

    @staticmethod
    def _batch_result(
        data: Mapping[str, Any], chunk: Sequence[_Input], *, id_property: str | None = None
    ) -> BatchResult:
        by_trace = {c.trace_id: c for c in chunk if c.trace_id}
        by_key = {_norm(k): c for c in chunk for k in (c.id, c.email) if k}
        results = []
        for raw in data.get("results") or []:
            item = by_trace.get(raw.get("objectWriteTraceId"))
            if item is None:
                props = raw.get("properties") or {}
                for key in (raw.get("id"), props.get(id_property or ""), props.get("email")):
                    if key is not None and (item := by_key.get(_norm(str(key)))) is not None:
                        break
            results.append(HubSpotObject.from_api(raw, input_index=item.index if item else None))
        return BatchResult(results=results, errors=_split_errors(data, chunk))

    # --- search: incremental pulls past the 10,000 cap ----------------------------------------

    async def search_modified(
        self,
        object_type: str,
        since_ms: int,
        until_ms: int,
        properties: Sequence[str],
        *,
        page_size: int = SEARCH_PAGE_MAX,
    ) -> AsyncIterator[HubSpotObject]:
        """Records modified in ``[since_ms, until_ms]``, each once, in non-decreasing time order.

        Sorted ascending by the last-modified property (API_NOTES §2). Before a query's paging
        would reach the 10,000 cap (§1.4), a new query starts at the last timestamp seen (GTE),
        dropping the ids already yielded at that timestamp. If a whole query shared one
        timestamp T (a bulk job stamps thousands of records alike, §9.1), T is read on its own
        — ``prop EQ T`` sorted by ``hs_object_id`` and paged by ``hs_object_id GT last id`` —
        and the walk then goes on from ``prop GT T``.
        """
        prop = last_modified_property(object_type)
        props = list(dict.fromkeys([*properties, prop]))
        page_size = max(1, min(page_size, SEARCH_PAGE_MAX))
        lower, op = since_ms, "GTE"
        seen: set[str] = set()  # ids yielded whose timestamp is `lower`
        while True:
            filters = [
                {"propertyName": prop, "operator": op, "value": str(lower)},
                {"propertyName": prop, "operator": "LTE", "value": str(until_ms)},
            ]
            win = _Window()
            async for obj in self._search_query(object_type, filters, prop, props, page_size, win):
                ts = self._modified_ms(obj, prop, lower)
                if win.first_ts is None:
                    win.first_ts = ts
                if ts != win.last_ts:
                    win.last_ts, win.at_last_ts = ts, set()
                win.at_last_ts.add(obj.id)
                if ts == lower and obj.id in seen:
                    continue
                yield obj
            if not win.capped or win.last_ts is None:
                return
            t = win.last_ts
            done_at_t = win.at_last_ts | (seen if t == lower else set())
            if win.first_ts == t:  # the whole query was one timestamp: a restart cannot move on
                log.info("hubspot.search_tie_break", object_type=object_type, timestamp=t)
                async for obj in self._tie_break(object_type, prop, t, props, page_size, done_at_t):
                    yield obj
                lower, op, seen = t, "GT", set()
            else:
                lower, op, seen = t, "GTE", done_at_t

    async def _tie_break(
        self,
        object_type: str,
        prop: str,
        t: int,
        props: list[str],
        page_size: int,
        skip: set[str],
    ) -> AsyncIterator[HubSpotObject]:
        """Every record stamped exactly ``t``, by ``hs_object_id``, minus the ``skip`` ids."""
        last_id: str | None = None
        while True:
            filters = [{"propertyName": prop, "operator": "EQ", "value": str(t)}]
            if last_id is not None:
                filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": last_id})
            win = _Window()
            async for obj in self._search_query(
                object_type, filters, "hs_object_id", props, page_size, win
            ):
                last_id = obj.id
                if obj.id not in skip:
                    yield obj
            if not win.capped:
                return

    async def _search_query(
        self,
        object_type: str,
        filters: list[dict[str, str]],
        sort_by: str,
        props: list[str],
        page_size: int,
        win: _Window,
    ) -> AsyncIterator[HubSpotObject]:
        """One search query, paged with ``after``; stops (``win.capped``) before the cap."""
        route = self.paths.search(object_type)
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort_by, "direction": "ASCENDING"}],
            "properties": props,
            "limit": page_size,
        }
        while True:
            data = await self._request("POST", route, json=body, idempotent=True, search=True)
            results = data.get("results") or []
            win.read += len(results)
            for item in results:
                yield HubSpotObject.from_api(item)
            after = _next_after(data)
            if after is None or not results:
                return
            if win.read + page_size > SEARCH_CAP:
                win.capped = True
                return
            body["after"] = after

    @staticmethod
    def _modified_ms(obj: HubSpotObject, prop: str, default: int) -> int:
        ts = to_epoch_ms(obj.properties.get(prop))
        if ts is None and obj.updated_at is not None:
            ts = int(obj.updated_at.timestamp() * 1000)
        return default if ts is None else ts

    # --- properties, owners, account ---------------------------------------------------------

    async def list_properties(self, object_type: str) -> list[PropertyDef]:
        """Every property defined on a type."""
        data = await self._request(
            "GET", lambda legacy: self.paths.properties(object_type, legacy=legacy)
        )
        return [PropertyDef.from_api(p) for p in (data or {}).get("results") or []]

    async def create_property(self, object_type: str, spec: Mapping[str, Any]) -> PropertyDef:
        """Create a property (``name``, ``label``, ``type``, ``fieldType``, ``groupName`` …)."""
        data = await self._request(
            "POST",
            lambda legacy: self.paths.properties(object_type, legacy=legacy),
            json=dict(spec),
            idempotent=False,
        )
        return PropertyDef.from_api(data or {})

    async def iter_owners(self, *, archived: bool = False) -> AsyncIterator[Owner]:
        """Every owner (user who can own records), page by page."""
        params: dict[str, Any] = {"limit": LIST_PAGE_MAX, "archived": str(archived).lower()}
        seen: set[str] = set()
        while True:
            data = await self._request(
                "GET", lambda legacy: self.paths.owners(legacy=legacy), params=params
            )
            for item in (data or {}).get("results") or []:
                yield Owner.from_api(item)
            after = _next_after(data or {})
            if after is None or after in seen:
                return
            seen.add(after)
            params["after"] = after

    async def account_details(self) -> AccountDetails:
        """The portal id, time zone (the daily cap resets at its midnight) and currency."""
        data = await self._request("GET", lambda legacy: self.paths.account_details(legacy=legacy))
        return AccountDetails.from_api(data or {})

    async def token_info(self) -> TokenInfo | None:
        """The credential's scopes; ``None`` when HubSpot will not say (probe calls instead)."""
        try:
            if isinstance(self.auth, OAuthAuth):
                token = await self.auth.access_token()
                data = await self._request("GET", self.paths.oauth_access_token(token))
                return TokenInfo.from_api("oauth", data or {})
            data = await self._request(
                "POST",
                self.paths.private_app_token_info(),
                json={"tokenKey": self.auth.token},
                idempotent=True,
            )
            return TokenInfo.from_api("static", data or {})
        except (NotFoundError, ValidationError, ForbiddenError):
            return None  # e.g. a Service Key: introspection is UNVERIFIED (API_NOTES §0)

    async def probe_write_scope(self, object_type: str) -> bool:
        """Whether the credential may write ``object_type``, asked without changing anything.

        An empty ``batch/update`` is refused with 403 when the write scope is missing, and
        otherwise accepted (or refused as invalid input); for when :meth:`token_info` is None.
        """
        try:
            await self._request(
                "POST",
                self.paths.batch(object_type, "update"),
                json={"inputs": []},
                idempotent=True,
            )
        except ForbiddenError:
            return False
        except ValidationError:
            return True
        return True

    # --- associations and notes --------------------------------------------------------------

    async def association_labels(self, from_type: str, to_type: str) -> list[AssociationLabel]:
        """The association types between two object types (use these, never hardcoded ids)."""
        data = await self._request(
            "GET",
            lambda legacy: self.paths.associations(from_type, to_type, "labels", legacy=legacy),
        )
        return [AssociationLabel.from_api(r) for r in (data or {}).get("results") or []]

    async def read_associations(
        self, from_type: str, to_type: str, ids: Iterable[str]
    ) -> dict[str, list[Association]]:
        """Associated ids per record, in batches; ids HubSpot could not read are absent."""
        out: dict[str, list[Association]] = {}
        pending: list[dict[str, str]] = [{"id": str(v)} for v in dict.fromkeys(ids)]
        while pending:
            chunk, pending = pending[:BATCH_LIMIT], pending[BATCH_LIMIT:]
            data = await self._request(
                "POST",
                lambda legacy: self.paths.associations(
                    from_type, to_type, "batch/read", legacy=legacy
                ),
                json={"inputs": chunk},
                idempotent=True,
            )
            for res in (data or {}).get("results") or []:
                from_id = str((res.get("from") or {}).get("id", ""))
                bucket = out.setdefault(from_id, [])
                for to in res.get("to") or []:
                    types = tuple(
                        AssociationLabel.from_api(t) for t in to.get("associationTypes") or []
                    )
                    bucket.append(Association(str(to.get("toObjectId", "")), types))
                after = _next_after(res)
                if after is not None:
                    pending.append({"id": from_id, "after": after})
            if (data or {}).get("errors"):
                log.info(
                    "hubspot.associations_unread",
                    from_type=from_type,
                    to_type=to_type,
                    errors=len(data["errors"]),
                )
        return out

    async def create_default_associations(
        self, from_type: str, to_type: str, pairs: Sequence[tuple[str, str]]
    ) -> AssociationWriteResult:
        """Link ``(from_id, to_id)`` pairs with the default (unlabelled) association type."""
        result = AssociationWriteResult()
        items = [
            _Input(i, {"from": {"id": str(a)}, "to": {"id": str(b)}}, id=str(a), trace_id=None)
            for i, (a, b) in enumerate(pairs)
        ]
        for start in range(0, len(items), BATCH_LIMIT):
            chunk = items[start : start + BATCH_LIMIT]
            data = await self._request(
                "POST",
                lambda legacy: self.paths.associations(
                    from_type, to_type, "batch/associate/default", legacy=legacy
                ),
                json={"inputs": [c.payload for c in chunk]},
                idempotent=True,
            )
            errors = _split_errors(data or {}, chunk)
            result.errors.extend(errors)
            failed = {e.index for e in errors if e.index is not None}
            result.done += len(chunk) - len(failed)
        return result

    async def create_note(
        self,
        body_html: str,
        timestamp: datetime,
        contact_id: str,
        owner_id: str | None = None,
    ) -> HubSpotObject:
        """Log a note on a contact's timeline (not retried after a 5xx: it would log twice)."""
        if timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        type_id = await self._default_type_id("notes", "contacts", NOTE_TO_CONTACT_FALLBACK)
        stamp = timestamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        props: dict[str, str] = {"hs_timestamp": stamp, "hs_note_body": body_html}
        if owner_id:
            props["hubspot_owner_id"] = str(owner_id)
        body = {
            "properties": props,
            "associations": [
                {
                    "to": {"id": str(contact_id)},
                    "types": [
                        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
                    ],
                }
            ],
        }
        data = await self._request("POST", self.paths.objects("notes"), json=body, idempotent=False)
        return HubSpotObject.from_api(data or {})

    async def batch_create_notes(self, notes: Sequence[tuple[str, datetime, str]]) -> BatchResult:
        """Log notes ``(body_html, timestamp, contact_id)`` on contacts' timelines, 100 per
        call (``notes/batch/create``, each input with its note→contact association);
        ``index`` of a result or error is the position in ``notes``. Not retried after a 5xx:
        callers find a note made before a crash by a marker in its body."""
        type_id = await self._default_type_id("notes", "contacts", NOTE_TO_CONTACT_FALLBACK)
        items = []
        for i, (body_html, timestamp, contact_id) in enumerate(notes):
            if timestamp.tzinfo is None:
                raise ValueError("timestamp must be timezone-aware")
            stamp = (
                timestamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            )
            props = {"hs_timestamp": stamp, "hs_note_body": body_html}
            payload: dict[str, Any] = {
                "properties": props,
                "associations": [
                    {
                        "to": {"id": str(contact_id)},
                        "types": [
                            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
                        ],
                    }
                ],
            }
            items.append(self._write_input(i, payload, None, props))
        return await self._batch_write("notes", "create", items, idempotent=False)

    async def _default_type_id(self, from_type: str, to_type: str, fallback: int) -> int:
        """The HUBSPOT_DEFINED unlabelled association type id, fetched once per session."""
        key = (from_type, to_type)
        if key not in self._type_ids:
            try:
                labels = await self.association_labels(from_type, to_type)
            except (NotFoundError, ForbiddenError) as exc:
                log.warning(
                    "hubspot.association_labels_unavailable",
                    pair=f"{from_type}->{to_type}",
                    status=exc.status,
                    fallback=fallback,
                )
                labels = []
            found = [
                lb.type_id for lb in labels if lb.category == "HUBSPOT_DEFINED" and not lb.label
            ]
            self._type_ids[key] = found[0] if found else fallback
        return self._type_ids[key]


__all__ = ["HubSpotClient", "last_modified_property"]
