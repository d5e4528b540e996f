"""The Brevo API client: a thin async wrapper over ``brevo-python`` 5.x (``AsyncBrevo``).

Every call goes through :meth:`BrevoClient._call`, which runs the SDK coroutine under
:func:`connector.retry.retrying` and turns the SDK's ``ApiError`` and httpx transport errors
into the connector's typed errors (:mod:`connector.errors`). The SDK's own retries are off
(``max_retries=0``): it ignores ``x-sib-ratelimit-reset`` and retries non-idempotent POSTs.
``client_id``/``client_secret`` are passed as ``None`` so that stray ``BREVO_CLIENT_*``
environment variables cannot switch the SDK to OAuth.

One ``httpx.AsyncClient`` carries two event hooks: before each request it waits on the
limiter of the path's endpoint family (:func:`connector.ratelimit.brevo_family`); after each
response it reads the ``x-sib-ratelimit-*`` headers and counts the call in :attr:`calls`.

Responses are read through the SDK's ``with_raw_response`` and parsed here into the
dataclasses of :mod:`connector.brevo.models`. ``POST /contacts/batch`` (deprecated on
2026-10-30) is never used: bulk writes go through ``POST /contacts/import``.

Nothing here logs the API key or an email address.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import functools
import json
import re
from array import array
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import quote

import httpx
import structlog
from brevo import AsyncBrevo
from brevo.contacts.types import (
    AddContactToListRequestBodyEmails,
    AddContactToListRequestBodyIds,
    CreateAttributeRequestEnumerationItem,
    RemoveContactFromListRequestBodyEmails,
    RemoveContactFromListRequestBodyIds,
)
from brevo.core.api_error import ApiError as SdkApiError
from brevo.core.http_response import AsyncHttpResponse
from brevo.event.types import CreateEventRequestIdentifiers
from brevo.transactional_emails.types import (
    SendTransacEmailRequestSender,
    SendTransacEmailRequestToItem,
)
from brevo.webhooks.types import CreateWebhookRequestAuth

from connector.config import BrevoSettings
from connector.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ConflictError,
    ConnectorError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
    register_secret,
)
from connector.ratelimit import Limiter, brevo_family, brevo_limiters, observe_brevo_headers
from connector.retry import Action, classify, retrying

if TYPE_CHECKING:
    from connector.metrics import ApiMetrics

from .models import (
    AttributeCategory,
    AttributeType,
    BrevoAccount,
    BrevoAttribute,
    BrevoContact,
    BrevoList,
    BrevoProcess,
    BrevoWebhook,
    EmailAddress,
    IdentifierKind,
    ImportRow,
    ListMembershipResult,
    WebhookType,
)

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]

SYSTEM = "brevo"
MAX_PAGE_SIZE = 1000
FALLBACK_PAGE_SIZE = 500
LIST_CHUNK = 150
IMPORT_CHUNK_BYTES = 8_000_000
RATE_LIMIT_WAIT_CAP = 3_600.0
CATCH_UP_SKEW = timedelta(seconds=60)

_IDENTIFIER_TYPES: dict[str, str] = {
    "email": "email_id",
    "id": "contact_id",
    "ext_id": "ext_id",
    "phone": "phone_id",
}
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
# Brevo's correlation id header is not documented [UNVERIFIED]: take the first one present.
_CORRELATION_HEADERS = ("x-sib-request-id", "x-request-id", "x-correlation-id", "cf-ray")
_AUTH_HINT = (
    "Brevo refused the API key: create a new key in Brevo under SMTP & API → API keys and put "
    "it in connectors.brevo.api_key (if the message names an IP address, authorise this "
    "machine's IP in Brevo's security settings instead)"
)

# The endpoint template ("METHOD /v3/path") of the call in flight, read by the response hook.
_ENDPOINT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "brevo_endpoint", default=None
)


class ResubscribeRefusedError(ConnectorError):
    """Changing EMAIL of a blocklisted contact would un-blocklist it: refused by default."""


class FieldValidationError(ValidationError):
    """A 400 on a contact write that names one field (``field``: ``SMS``, ``EMAIL``, …).

    Lets callers act on it, e.g. write the contact again without an SMS Brevo refuses.
    """

    def __init__(self, message: str, *, field: str, **kw: Any) -> None:
        self.field = field
        super().__init__(message, **kw)


class EmailAlreadySentError(ConflictError):
    """Brevo already processed a send with this idempotency key: the email went out before.

    Raised by :meth:`BrevoClient.send_email`, typically when a retry follows an attempt whose
    answer was lost. Treat it as success; the first send's message id is not returned again.
    """


class ImportBudgetExhaustedError(ConnectorError):
    """``wait_for_import`` spent its polling budget before every import finished."""

    def __init__(self, message: str, *, pending: Sequence[int]) -> None:
        super().__init__(message)
        self.pending = list(pending)


class ImportFailedError(ConnectorError):
    """A contact import process ended as failed or cancelled."""

    def __init__(self, message: str, *, process: BrevoProcess) -> None:
        super().__init__(message)
        self.process = process


def brevo_time(value: datetime) -> str:
    """A datetime as Brevo's query format ``YYYY-MM-DDTHH:mm:ss.SSSZ`` (naive = UTC)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    utc = aware.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _json_text(value: Any) -> str:
    """``value`` as httpx serialises a JSON body (compact; UTF-8 once encoded)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _json_size(value: Any) -> int:
    """Bytes of ``value`` as httpx serialises a JSON body (compact, UTF-8)."""
    return len(_json_text(value).encode("utf-8"))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _as_dict(body: Any) -> dict[str, Any] | None:
    """An SDK error body (dict, pydantic model, JSON text) as a dict, or None."""
    if isinstance(body, dict):
        return body
    dump = getattr(body, "model_dump", None)
    if callable(dump):
        dumped = dump(by_alias=True)
        return dumped if isinstance(dumped, dict) else None
    if isinstance(body, str | bytes):
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _is_duplicate(body: Mapping[str, Any] | None) -> bool:
    """Brevo's duplicate 400: ``metadata.duplicate_identifiers`` (whatever the code, which may
    be ``invalid_parameter``), ``duplicate_parameter``, or an idempotency key seen before."""
    if not body:
        return False
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("duplicate_identifiers"):
        return True
    return body.get("code") in ("duplicate_parameter", "duplicate_request")


# (word in Brevo's message, attribute) — the first whose attribute was sent wins
_FIELD_HINTS = (
    ("whatsapp", "WHATSAPP"),
    ("landline", "LANDLINE_NUMBER"),
    ("phone", "SMS"),
    ("sms", "SMS"),
    ("ext_id", "EXT_ID"),
    ("email", "EMAIL"),
)


def _name_field(error: ValidationError, sent: set[str]) -> ValidationError:
    """The error as a :class:`FieldValidationError` when its message points at a sent field."""
    text = error.raw_message.lower()
    for word, field in _FIELD_HINTS:
        if word in text and field in sent:
            return FieldValidationError(
                f"{error.raw_message} (contact attribute {field})",
                field=field,
                system=error.system,
                endpoint=error.endpoint,
                status=error.status,
                category=error.category,
                correlation_id=error.correlation_id,
                body=error.body,
            )
    return error


def _sent_fields(
    attributes: Mapping[str, Any] | None, *, email: str | None = None, ext_id: str | None = None
) -> set[str]:
    sent = {k.upper() for k in attributes or {}}
    if email is not None:
        sent.add("EMAIL")
    if ext_id is not None:
        sent.add("EXT_ID")
    return sent


def _reset_seconds(headers: httpx.Headers) -> float | None:
    raw = headers.get("x-sib-ratelimit-reset")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if value <= 0:
        return None
    return min(value, RATE_LIMIT_WAIT_CAP)


def _json_body(response: httpx.Response) -> Any:
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError:
        return None


IDS_PER_CALL = 20
"""``GET /contacts?ids=`` takes at most 20 ids (SDK 5.1.0 get_contacts docstring)."""


class SeenIds:
    """The contact ids a listing has yielded, compactly: ``GET /contacts?sort=asc`` lists by
    creation, so ids mostly arrive in increasing order and are kept in a sorted ``array`` of
    8 bytes each (100,000 ids: 0.8 MB, against some 7 MB as a ``set`` of ``int``); the few
    that arrive out of order (a shifted page read again) go to a small set."""

    def __init__(self) -> None:
        self._ascending = array("q")
        self._others: set[int] = set()

    def __contains__(self, contact_id: int) -> bool:
        if contact_id in self._others:
            return True
        k = bisect.bisect_left(self._ascending, contact_id)
        return k < len(self._ascending) and self._ascending[k] == contact_id

    def __len__(self) -> int:
        return len(self._ascending) + len(self._others)

    def add(self, contact_id: int) -> bool:
        """Remember ``contact_id``; whether it was new."""
        ascending = not self._ascending or contact_id > self._ascending[-1]
        if ascending and -(2**63) <= contact_id < 2**63:
            self._ascending.append(contact_id)
            return True
        if contact_id in self:
            return False
        self._others.add(contact_id)
        return True


class ContactStream:
    """Contacts listed by ``GET /contacts`` (``sort=asc``, offset paging), as an async iterator.

    Brevo sorts by creation, not modification, and a contact can shift between pages while
    paging. Each page overlaps the previous one by one contact (the *anchor*): if the anchor
    moved right, contacts entered the result set behind us and a catch-up pass with
    ``modifiedSince`` = the scan's start (less a clock-skew margin) picks them up; if it moved
    left (deletions), the page before is read again. Contacts are de-duplicated by id.
    :attr:`high_water_mark` is the largest ``modifiedAt`` seen.

    ``overlap=False`` reads the pages end to end (``n`` contacts in ``ceil(n / page_size)``
    calls, not one more per page): for a listing that may miss a contact deleted behind it
    while paging, such as an import's read-back, which reads again what it did not see.
    """

    def __init__(
        self,
        client: BrevoClient,
        *,
        modified_since: datetime | None,
        page_size: int,
        overlap: bool = True,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        self._client = client
        self.modified_since = modified_since
        self.page_size = page_size
        self.overlap = overlap
        self.high_water_mark: datetime | None = None
        self.pages = 0
        self.shifts = 0
        self._seen = SeenIds()
        self._missed_inserts = False
        self._gen = self._run()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BrevoContact:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def _run(self) -> AsyncGenerator[BrevoContact, None]:
        started = datetime.now(UTC)
        async for contact in self._scan(self.modified_since):
            yield contact
        if self._missed_inserts:
            since = started - CATCH_UP_SKEW
            if self.modified_since is not None:
                since = max(since, self.modified_since)
            log.info("brevo_contacts_catch_up", since=brevo_time(since), shifts=self.shifts)
            async for contact in self._scan(since):
                yield contact

    async def _fetch(self, since: datetime | None, start: int) -> tuple[list[BrevoContact], int]:
        while True:
            limit = self.page_size
            try:
                response = await self._client._call(
                    "get_contacts",
                    "GET /v3/contacts",
                    self._client._list_contacts(
                        limit=limit,
                        offset=start,
                        sort="asc",
                        modifiedSince=brevo_time(since) if since is not None else None,
                    ),
                    idempotent=True,
                )
            except ValidationError as e:
                if e.category == "out_of_range" and self.page_size > FALLBACK_PAGE_SIZE:
                    log.warning("brevo_page_size_fallback", tried=limit, now=FALLBACK_PAGE_SIZE)
                    self.page_size = FALLBACK_PAGE_SIZE
                    continue
                raise
            self.pages += 1
            data = _json_body(response) or {}
            contacts = [BrevoContact.from_api(c) for c in data.get("contacts") or []]
            for c in contacts:
                if self.high_water_mark is None or c.modified_at > self.high_water_mark:
                    self.high_water_mark = c.modified_at
            total = data.get("count")
            return contacts, int(total) if isinstance(total, int | float) else -1

    def _fresh(self, contacts: list[BrevoContact]) -> list[BrevoContact]:
        out = []
        for c in contacts:
            if self._seen.add(c.id):
                out.append(c)
        return out

    async def _scan(self, since: datetime | None) -> AsyncGenerator[BrevoContact, None]:
        offset = 0
        anchor: int | None = None
        while True:
            start = offset - 1 if anchor is not None else offset
            page, total = await self._fetch(since, start)
            ids = [c.id for c in page]
            for c in self._fresh(page):
                yield c
            if anchor is not None and (not ids or ids[0] != anchor):
                self.shifts += 1
                if anchor in ids:
                    self._missed_inserts = True  # contacts entered the set before our offset
                else:  # contacts left the set before our offset: read the page before again
                    back, _ = await self._fetch(since, max(0, start - self.page_size))
                    for c in self._fresh(back):
                        yield c
            offset = start + len(page)
            if not page or len(page) < self.page_size or (0 <= total <= offset):
                return
            anchor = ids[-1] if self.overlap else None


class BrevoClient:
    """Async Brevo API client for one account (see the module docstring).

    ``limiters`` default to :func:`~connector.ratelimit.brevo_limiters` for the settings' plan
    (share one dict between clients of the same account); ``sleep`` is the wait used between
    retries and import polls (tests pass a fake one, with limiters on a matching fake clock).
    :attr:`calls` counts requests by ``"METHOD /v3/path-template"``.
    """

    def __init__(
        self,
        settings: BrevoSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiters: dict[str, Limiter] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if settings.api_key is None:
            raise ConfigError(
                "connectors.brevo.api_key is not set: create a key in Brevo under "
                "SMTP & API → API keys",
                key="connectors.brevo.api_key",
            )
        api_key = settings.api_key.get_secret_value()
        register_secret(api_key)
        self.settings = settings
        self.limiters = limiters if limiters is not None else brevo_limiters(settings.plan)
        self.calls: Counter[str] = Counter()
        #: per rate family, the last ``x-sib-ratelimit-(limit, remaining, reset)`` Brevo sent
        #: (account-wide, so they count other processes' calls too: ``connector status``)
        self.rate_headers: dict[str, tuple[int | None, int | None, int | None]] = {}
        self._metrics: ApiMetrics | None = None
        self.import_chunk_bytes = IMPORT_CHUNK_BYTES
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=settings.timeout_seconds,
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )
        self.sdk = AsyncBrevo(
            api_key=api_key,
            base_url=settings.base_url,
            httpx_client=self._http,
            max_retries=0,
            client_id=None,
            client_secret=None,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plumbing -------------------------------------------------------------------------

    def attach_metrics(self, metrics: ApiMetrics) -> None:
        """Count every call (each attempt, by answer status) in ``metrics`` from now on."""
        self._metrics = metrics

    def limiter_for(self, path: str) -> Limiter:
        family = brevo_family(path)
        return self.limiters.get(family) or self.limiters["other"]

    async def _on_request(self, request: httpx.Request) -> None:
        await self.limiter_for(request.url.path).acquire()

    async def _on_response(self, response: httpx.Response) -> None:
        request = response.request
        observe_brevo_headers(self.limiter_for(request.url.path), response.headers)
        if "x-sib-ratelimit-remaining" in response.headers:
            self.rate_headers[brevo_family(request.url.path)] = tuple(  # type: ignore[assignment]
                _header_int(response.headers, f"x-sib-ratelimit-{k}")
                for k in ("limit", "remaining", "reset")
            )
        if self._metrics is not None:
            self._metrics.observe(SYSTEM, response.status_code)
        self.calls[_ENDPOINT.get() or f"{request.method} {request.url.path}"] += 1

    async def _call(
        self,
        name: str,
        endpoint: str,
        coro_factory: Callable[[], Awaitable[AsyncHttpResponse[Any]]],
        idempotent: bool,
        *,
        max_retries: int | None = None,
    ) -> httpx.Response:
        """Run one SDK call under the retry policy; return its 2xx ``httpx.Response``.

        ``endpoint`` is the template ``"METHOD /v3/path"``: errors carry it, :attr:`calls`
        counts by it.
        """

        async def attempt() -> httpx.Response:
            token = _ENDPOINT.set(endpoint)
            try:
                raw = await coro_factory()
            except SdkApiError as e:
                headers = httpx.Headers(e.headers or {})
                raise self._error(name, endpoint, e.status_code, headers, e.body) from e
            except httpx.RequestError as e:
                if self._metrics is not None:  # no answer: the response hook did not run
                    self._metrics.observe(SYSTEM, None)
                log.info(
                    "brevo_transport_error", call=name, endpoint=endpoint, error=type(e).__name__
                )
                detail = str(e)
                # a contact's email can sit in the URL path: keep it out of the message
                suffix = f" ({detail})" if detail and "@" not in detail else ""
                raise TransportError(
                    f"{type(e).__name__}: no usable answer from Brevo{suffix}",
                    system=SYSTEM,
                    endpoint=endpoint,
                ) from e
            finally:
                _ENDPOINT.reset(token)
            response = raw.response
            if not 200 <= response.status_code < 300:
                # The SDK treats some empty-bodied answers as success whatever the status.
                raise self._error(
                    name, endpoint, response.status_code, response.headers, _json_body(response)
                )
            return response

        return await retrying(
            attempt,
            max_retries=self.settings.max_retries if max_retries is None else max_retries,
            idempotent=idempotent,
            sleep=self._sleep,
        )

    def _list_contacts(self, **params: Any) -> Callable[[], Awaitable[AsyncHttpResponse[None]]]:
        """``GET /contacts`` (query ``params`` in Brevo's names) sent as the SDK's
        ``get_contacts`` sends it — through its HTTP client: the same base URL, headers, query
        encoding and timeout — but not decoded by it. The SDK turns each answer into pydantic
        models that nothing reads (the contacts are read from the JSON, :func:`_json_body`),
        and for a page of 1,000 contacts that costs more than the JSON itself. A non-2xx answer
        comes back as it is and :meth:`_call` raises it, as for the SDK's own calls."""
        http = self.sdk._client_wrapper.httpx_client

        async def send() -> AsyncHttpResponse[None]:
            response = await http.request("contacts", method="GET", params=params)
            return AsyncHttpResponse(response=response, data=None)

        return send

    def _error(
        self, name: str, endpoint: str, status: int | None, headers: httpx.Headers, body: Any
    ) -> ApiError:
        """Map one failed answer to the connector's typed error (one place, one table)."""
        data = _as_dict(body)
        code = data.get("code") if data else None
        message = data.get("message") if data else None
        if not message:
            text = body.strip() if isinstance(body, str) else ""
            message = text[:300] if text else f"HTTP {status}"
        correlation = next((headers[h] for h in _CORRELATION_HEADERS if h in headers), None)
        kw: dict[str, Any] = {
            "system": SYSTEM,
            "endpoint": endpoint,
            "status": status,
            "category": str(code) if code else None,
            "correlation_id": correlation,
            "body": data if data is not None else body,
        }
        action = classify(status) if status is not None else Action.FAIL
        # a 404 is an ordinary answer to a lookup ("no such contact"): keep it quiet
        log_at = log.debug if status == 404 else log.info
        log_at(
            "brevo_call_failed",
            call=name,
            endpoint=endpoint,
            status=status,
            category=kw["category"],
            action=action.value,
        )
        if action is Action.RATE_LIMITED:
            wait = _reset_seconds(headers)
            if wait is not None:
                self.limiter_for(endpoint.split(" ", 1)[-1]).block_for(wait)
            return RateLimitedError(str(message), retry_after=wait, **kw)
        if status == 401:
            return AuthError(f"{message} — {_AUTH_HINT}", **kw)
        if status == 403:
            return ForbiddenError(str(message), **kw)
        if status == 404:
            return NotFoundError(str(message), **kw)
        if status in (400, 409, 422) and (status == 409 or _is_duplicate(data)):
            return ConflictError(str(message), **kw)
        if action is Action.RETRY:  # 5xx, 408, 425 (contact still being processed)
            return ServerError(str(message), **kw)
        if status in (400, 422):
            return ValidationError(str(message), **kw)
        return ApiError(str(message), **kw)

    @staticmethod
    def _identifier(identifier: str | int, by: IdentifierKind) -> tuple[str | int, str]:
        if by not in _IDENTIFIER_TYPES:
            raise ValueError(f"by must be one of {sorted(_IDENTIFIER_TYPES)}, not {by!r}")
        if by == "id":
            return int(identifier), _IDENTIFIER_TYPES[by]
        # the SDK does not percent-encode path segments: '+', '/', '?', '#' would break the URL
        return quote(str(identifier), safe="@"), _IDENTIFIER_TYPES[by]

    # --- account --------------------------------------------------------------------------

    async def get_account(self) -> BrevoAccount:
        """The account behind the key (``GET /account``); also the cheapest credential check."""
        response = await self._call(
            "get_account",
            "GET /v3/account",
            lambda: self.sdk.account.with_raw_response.get_account(),
            idempotent=True,
        )
        return BrevoAccount.from_api(_json_body(response) or {})

    # --- contacts -------------------------------------------------------------------------

    def iter_contacts(
        self,
        *,
        modified_since: datetime | None = None,
        page_size: int = MAX_PAGE_SIZE,
        overlap: bool = True,
    ) -> ContactStream:
        """Every contact (modified since a time), oldest-created first, each once.

        The returned stream is an async iterator; read ``.high_water_mark`` after it.
        ``overlap=False``: pages end to end, see :class:`ContactStream`.
        """
        return ContactStream(
            self, modified_since=modified_since, page_size=page_size, overlap=overlap
        )

    async def get_contacts_by_ids(self, ids: Sequence[int]) -> list[BrevoContact]:
        """Contacts by Brevo id, 20 per call (``GET /contacts?ids=``); absent ids are left out."""
        found: list[BrevoContact] = []
        for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids)), IDS_PER_CALL):
            response = await self._call(
                "get_contacts",
                "GET /v3/contacts",
                self._list_contacts(ids=list(chunk), limit=len(chunk)),
                idempotent=True,
            )
            data = _json_body(response) or {}
            found += [BrevoContact.from_api(c) for c in data.get("contacts") or []]
        return found

    async def get_contact(
        self, identifier: str | int, by: IdentifierKind = "email"
    ) -> BrevoContact | None:
        """One contact by email, Brevo id, ``EXT_ID`` or SMS number; None when absent."""
        ident, kind = self._identifier(identifier, by)
        try:
            response = await self._call(
                "get_contact",
                "GET /v3/contacts/{identifier}",
                lambda: self.sdk.contacts.with_raw_response.get_contact_info(
                    ident, identifier_type=kind
                ),
                idempotent=True,
            )
        except NotFoundError:
            return None
        return BrevoContact.from_api(_json_body(response) or {})

    async def create_contact(
        self,
        email: str | None,
        attributes: Mapping[str, Any],
        *,
        ext_id: str | None = None,
        list_ids: Sequence[int] = (),
        update_enabled: bool = True,
    ) -> int | None:
        """Create (or, with ``update_enabled``, upsert) a contact: its id, or None when updated.

        Without ``update_enabled`` a duplicate raises :class:`ConflictError`, and the call is
        not retried after a 5xx or timeout (it may have been applied).
        """
        kwargs: dict[str, Any] = {"update_enabled": update_enabled}
        if email is not None:
            kwargs["email"] = email
        if attributes:
            kwargs["attributes"] = dict(attributes)
        if ext_id is not None:
            kwargs["ext_id"] = ext_id
        if list_ids:
            kwargs["list_ids"] = list(list_ids)
        try:
            response = await self._call(
                "create_contact",
                "POST /v3/contacts",
                lambda: self.sdk.contacts.with_raw_response.create_contact(**kwargs),
                idempotent=update_enabled,
            )
        except ValidationError as e:
            raise _name_field(e, _sent_fields(attributes, email=email, ext_id=ext_id)) from e
        data = _json_body(response)
        if response.status_code == 204 or not isinstance(data, dict) or "id" not in data:
            return None
        return int(data["id"])

    async def update_contact(
        self,
        identifier: str | int,
        by: IdentifierKind = "email",
        *,
        attributes: Mapping[str, Any] | None = None,
        ext_id: str | None = None,
        list_ids: Sequence[int] = (),
        unlink_list_ids: Sequence[int] = (),
        email_blacklisted: bool | None = None,
        sms_blacklisted: bool | None = None,
        allow_resubscribe: bool = False,
        known_blocklisted: bool | None = None,
    ) -> None:
        """Update one contact (``PUT /contacts/{identifier}``).

        Changing ``attributes["EMAIL"]`` of a blocklisted contact un-blocklists it (Brevo's
        rule), so it is refused with :class:`ResubscribeRefusedError` unless
        ``allow_resubscribe`` (or ``email_blacklisted=True`` keeps the block). Pass
        ``known_blocklisted`` when you know; otherwise the contact is read first.
        """
        ident, kind = self._identifier(identifier, by)
        changes_email = attributes is not None and any(k.upper() == "EMAIL" for k in attributes)
        if changes_email and not allow_resubscribe and email_blacklisted is not True:
            blocked = known_blocklisted
            if blocked is None:
                current = await self.get_contact(identifier, by)
                blocked = current is not None and current.email_blacklisted
            if blocked:
                raise ResubscribeRefusedError(
                    f"refusing to change EMAIL of Brevo contact ({by}) that is blocklisted: "
                    "Brevo would un-blocklist (resubscribe) it. Pass allow_resubscribe=True "
                    "only if the contact asked to be resubscribed."
                )
        kwargs: dict[str, Any] = {"identifier_type": kind}
        if attributes:
            kwargs["attributes"] = dict(attributes)
        if ext_id is not None:
            kwargs["ext_id"] = ext_id
        if list_ids:
            kwargs["list_ids"] = list(list_ids)
        if unlink_list_ids:
            kwargs["unlink_list_ids"] = list(unlink_list_ids)
        if email_blacklisted is not None:
            kwargs["email_blacklisted"] = email_blacklisted
        if sms_blacklisted is not None:
            kwargs["sms_blacklisted"] = sms_blacklisted
        try:
            await self._call(
                "update_contact",
                "PUT /v3/contacts/{identifier}",
                lambda: self.sdk.contacts.with_raw_response.update_contact(ident, **kwargs),
                idempotent=True,
            )
        except ValidationError as e:
            raise _name_field(e, _sent_fields(attributes, ext_id=ext_id)) from e

    async def delete_contact(self, identifier: str | int, by: IdentifierKind = "email") -> bool:
        """Delete one contact: True if deleted, False if it did not exist."""
        ident, kind = self._identifier(identifier, by)
        try:
            await self._call(
                "delete_contact",
                "DELETE /v3/contacts/{identifier}",
                lambda: self.sdk.contacts.with_raw_response.delete_contact(
                    ident, identifier_type=kind
                ),
                idempotent=True,
            )
        except NotFoundError:
            return False
        return True

    # --- import ---------------------------------------------------------------------------

    def _import_chunks(
        self, rows: Sequence[ImportRow], envelope: dict[str, Any]
    ) -> list[tuple[bytes, int]]:
        """The request bodies (``envelope`` with rows as ``jsonBody``) and their row counts,
        split so each body stays within ``import_chunk_bytes``. Each row is serialised once,
        for its size and for the body (the SDK would encode it again, at ten times the cost)."""
        base = _json_size({**envelope, "jsonBody": []})
        head = _json_text(envelope).encode("utf-8")[:-1] + b',"jsonBody":['
        chunks: list[list[bytes]] = []
        current: list[bytes] = []
        size = base
        for row in rows:
            item = _json_text(row.to_json()).encode("utf-8")
            item_size = len(item)
            if base + item_size > self.import_chunk_bytes:
                raise ValueError(
                    f"one import row serialises to {item_size} bytes, more than the "
                    f"{self.import_chunk_bytes}-byte request limit"
                )
            extra = item_size + (1 if current else 0)  # the comma between items
            if current and size + extra > self.import_chunk_bytes:
                chunks.append(current)
                current, size, extra = [], base, item_size
            current.append(item)
            size += extra
        if current:
            chunks.append(current)
        return [(head + b",".join(c) + b"]}", len(c)) for c in chunks]

    async def import_contacts(
        self,
        rows: Sequence[ImportRow],
        *,
        list_ids: Sequence[int],
        update_existing: bool = True,
        empty_attributes: bool = False,
        notify_url: str | None = None,
    ) -> list[int]:
        """Bulk create/update through ``POST /contacts/import`` (``jsonBody``); process ids.

        Rows are sent in chunks whose JSON body stays within 8 MB. Brevo applies the import
        asynchronously: wait with ``notify_url`` or :meth:`wait_for_import`. Attributes the
        account does not define are silently ignored by Brevo.
        """
        if not list_ids:
            raise ValueError("Brevo's import needs at least one list id (list_ids)")
        if empty_attributes and not update_existing:
            raise ValueError("empty_attributes needs update_existing=True")
        envelope: dict[str, Any] = {
            "listIds": list(list_ids),
            "updateExistingContacts": update_existing,
            "emptyContactsAttributes": empty_attributes,
        }
        if notify_url is not None:
            envelope["notifyUrl"] = notify_url
        process_ids: list[int] = []
        http = self.sdk._client_wrapper.httpx_client
        for body, count in self._import_chunks(rows, envelope):

            async def send(body: bytes = body) -> AsyncHttpResponse[None]:
                # as the SDK's import_contacts sends it (its client: base URL, headers,
                # timeout), with the body already serialised
                response = await http.request(
                    "contacts/import",
                    method="POST",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                return AsyncHttpResponse(response=response, data=None)

            response = await self._call(
                "import_contacts",
                "POST /v3/contacts/import",
                send,
                idempotent=True,  # an import is safe to repeat
            )
            data = _json_body(response) or {}
            process_ids.append(int(data["processId"]))
            log.info("brevo_import_started", process_id=process_ids[-1], rows=count)
        return process_ids

    async def get_process(self, process_id: int, *, max_retries: int | None = None) -> BrevoProcess:
        """One background process (``GET /processes/{id}``: 100 requests/hour on most plans)."""
        response = await self._call(
            "get_process",
            "GET /v3/processes/{processId}",
            lambda: self.sdk.process.with_raw_response.get_process(process_id),
            idempotent=True,
            max_retries=max_retries,
        )
        return BrevoProcess.from_api(_json_body(response) or {})

    async def wait_for_import(
        self, process_ids: Sequence[int], *, poll_every: float, budget: int
    ) -> dict[int, BrevoProcess]:
        """Poll until every import process is done, spending at most ``budget`` GET calls.

        Sleeps ``poll_every`` seconds before each round. A failed or cancelled process raises
        :class:`ImportFailedError`; a spent budget raises :class:`ImportBudgetExhaustedError`.
        A poll that fails transiently is counted against the budget and tried next round.
        """
        pending = list(dict.fromkeys(process_ids))
        done: dict[int, BrevoProcess] = {}
        spent = 0
        while pending:
            await self._sleep(poll_every)
            for pid in list(pending):
                if spent >= budget:
                    raise ImportBudgetExhaustedError(
                        f"polling budget of {budget} GET /processes calls spent with "
                        f"{len(pending)} import(s) unfinished ({pending}); Brevo allows only "
                        "100 /processes calls per hour — poll less often, raise the budget, or "
                        "pass notify_url to import_contacts",
                        pending=pending,
                    )
                spent += 1
                try:
                    process = await self.get_process(pid, max_retries=0)
                except (ServerError, TransportError, RateLimitedError) as e:
                    log.info("brevo_process_poll_failed", process_id=pid, status=e.status)
                    continue
                if not process.done:
                    continue
                if process.status != "completed":
                    raise ImportFailedError(
                        f"Brevo import process {pid} ended as {process.status}", process=process
                    )
                done[pid] = process
                pending.remove(pid)
        return done

    # --- attributes -----------------------------------------------------------------------

    async def list_attributes(self) -> list[BrevoAttribute]:
        """Every contact attribute the account defines."""
        response = await self._call(
            "list_attributes",
            "GET /v3/contacts/attributes",
            lambda: self.sdk.contacts.with_raw_response.get_attributes(),
            idempotent=True,
        )
        data = _json_body(response) or {}
        return [BrevoAttribute.from_api(a) for a in data.get("attributes") or []]

    async def create_attribute(
        self,
        name: str,
        type: AttributeType,
        *,
        category: AttributeCategory = "normal",
        enumeration: Mapping[int, str] | None = None,
    ) -> None:
        """Define a contact attribute (names are upper-cased, as Brevo requires)."""
        kwargs: dict[str, Any] = {}
        if category != "category":
            kwargs["type"] = type
        if enumeration:
            kwargs["enumeration"] = [
                CreateAttributeRequestEnumerationItem(value=v, label=label)
                for v, label in enumeration.items()
            ]
        upper = name.upper()
        await self._call(
            "create_attribute",
            "POST /v3/contacts/attributes/{attributeCategory}/{attributeName}",
            lambda: self.sdk.contacts.with_raw_response.create_attribute(category, upper, **kwargs),
            idempotent=False,
        )

    # --- lists ----------------------------------------------------------------------------

    async def get_list(self, list_id: int) -> BrevoList | None:
        """One contact list; None when it does not exist."""
        try:
            response = await self._call(
                "get_list",
                "GET /v3/contacts/lists/{listId}",
                lambda: self.sdk.contacts.with_raw_response.get_list(list_id),
                idempotent=True,
            )
        except NotFoundError:
            return None
        return BrevoList.from_api(_json_body(response) or {})

    async def _membership(
        self,
        action: Literal["add", "remove"],
        list_id: int,
        emails: Sequence[str],
        ids: Sequence[int],
    ) -> ListMembershipResult:
        result = ListMembershipResult()
        endpoint = f"POST /v3/contacts/lists/{{listId}}/contacts/{action}"
        batches: list[Any] = []
        for chunk in _chunks(list(emails), LIST_CHUNK):
            batches.append(
                AddContactToListRequestBodyEmails(emails=list(chunk))
                if action == "add"
                else RemoveContactFromListRequestBodyEmails(emails=list(chunk))
            )
        for chunk in _chunks(list(ids), LIST_CHUNK):
            batches.append(
                AddContactToListRequestBodyIds(ids=list(chunk))
                if action == "add"
                else RemoveContactFromListRequestBodyIds(ids=list(chunk))
            )
        for body in batches:
            sent: list[str | int] = list(getattr(body, "emails", None) or body.ids or [])
            if action == "add":
                call = self.sdk.contacts.with_raw_response.add_contact_to_list
            else:
                call = self.sdk.contacts.with_raw_response.remove_contact_from_list
            try:
                response = await self._call(
                    f"{action}_to_list" if action == "add" else "remove_from_list",
                    endpoint,
                    functools.partial(call, list_id, request=body),
                    idempotent=True,  # list membership is a set: repeating changes nothing
                )
            except ValidationError as e:
                # Brevo answers 400 when no contact of the chunk could be added or removed
                # ("Contact already in list and/or does not exist") [UNVERIFIED wording].
                log.info("brevo_list_chunk_refused", list_id=list_id, category=e.category)
                result.failure.update(sent)
                continue
            contacts = (_json_body(response) or {}).get("contacts") or {}
            result.success.update(contacts.get("success") or [])
            result.failure.update(contacts.get("failure") or [])
            if contacts.get("processId") is not None:
                result.process_ids.append(int(contacts["processId"]))
        return result

    async def add_to_list(
        self, list_id: int, *, emails: Sequence[str] = (), ids: Sequence[int] = ()
    ) -> ListMembershipResult:
        """Add contacts to a list, 150 per call; which were added and which were not."""
        return await self._membership("add", list_id, emails, ids)

    async def remove_from_list(
        self, list_id: int, *, emails: Sequence[str] = (), ids: Sequence[int] = ()
    ) -> ListMembershipResult:
        """Remove contacts from a list, 150 per call; which were removed and which were not."""
        return await self._membership("remove", list_id, emails, ids)

    # --- events ---------------------------------------------------------------------------

    async def track_event(
        self,
        event_name: str,
        *,
        email: str | None = None,
        ext_id: str | None = None,
        contact_id: int | None = None,
        properties: Mapping[str, Any] | None = None,
        contact_properties: Mapping[str, Any] | None = None,
        event_date: datetime | None = None,
    ) -> None:
        """Send a custom event (``POST /events``) that can start Brevo automations.

        Not retried after a 5xx or timeout: Brevo has no idempotency key for events, and a
        repeated event would start an automation twice.
        """
        if not _EVENT_NAME.match(event_name):
            raise ValueError(
                "event_name must be 1-255 characters of letters, digits, '-' and '_' "
                f"(got {event_name!r})"
            )
        if email is None and ext_id is None and contact_id is None:
            raise ValueError("track_event needs email, ext_id or contact_id")
        given = {"email_id": email, "ext_id": ext_id, "contact_id": contact_id}
        # only the identifiers given: a null one would be sent as null
        identifiers = CreateEventRequestIdentifiers(
            **{k: v for k, v in given.items() if v is not None}
        )
        kwargs: dict[str, Any] = {"event_name": event_name, "identifiers": identifiers}
        if properties:
            kwargs["event_properties"] = dict(properties)
        if contact_properties:
            kwargs["contact_properties"] = dict(contact_properties)
        if event_date is not None:
            kwargs["event_date"] = (
                event_date if event_date.tzinfo is not None else event_date.replace(tzinfo=UTC)
            )
        await self._call(
            "track_event",
            "POST /v3/events",
            lambda: self.sdk.event.with_raw_response.create_event(**kwargs),
            idempotent=False,
        )

    # --- transactional email --------------------------------------------------------------

    async def send_email(
        self,
        *,
        sender: EmailAddress | str,
        to: Sequence[EmailAddress | str],
        subject: str,
        html: str,
        tags: Sequence[str] = (),
        idempotency_key: str,
    ) -> str:
        """Send one transactional email; its ``messageId``.

        ``idempotency_key`` travels as the ``IdempotencyKey`` header inside the body's
        ``headers`` object, so a retried send is not delivered twice: Brevo answers a repeat
        with ``duplicate_request``, raised as :class:`EmailAlreadySentError`.
        """
        if not idempotency_key:
            raise ValueError("send_email needs an idempotency_key (e.g. the hook job's key)")
        if not to:
            raise ValueError("send_email needs at least one recipient")

        def addr(a: EmailAddress | str) -> EmailAddress:
            return a if isinstance(a, EmailAddress) else EmailAddress(a)

        s = addr(sender)
        kwargs: dict[str, Any] = {
            "sender": SendTransacEmailRequestSender(email=s.email, name=s.name),
            "to": [
                SendTransacEmailRequestToItem(email=r.email, name=r.name) for r in map(addr, to)
            ],
            "subject": subject,
            "html_content": html,
            "headers": {"IdempotencyKey": idempotency_key},
        }
        if tags:
            kwargs["tags"] = list(tags)
        try:
            response = await self._call(
                "send_email",
                "POST /v3/smtp/email",
                lambda: self.sdk.transactional_emails.with_raw_response.send_transac_email(
                    **kwargs
                ),
                idempotent=True,  # with the idempotency key
            )
        except ConflictError as e:
            if e.category != "duplicate_request":
                raise
            raise EmailAlreadySentError(
                f"{e.raw_message}: an email with this idempotency key was already sent",
                system=SYSTEM,
                endpoint=e.endpoint,
                status=e.status,
                category=e.category,
                correlation_id=e.correlation_id,
                body=e.body,
            ) from e
        data = _json_body(response) or {}
        message_id = data.get("messageId") or next(iter(data.get("messageIds") or []), None)
        if not message_id:
            raise ApiError(
                "Brevo accepted the email but returned no messageId",
                system=SYSTEM,
                endpoint="POST /v3/smtp/email",
                status=response.status_code,
            )
        return str(message_id)

    # --- webhooks -------------------------------------------------------------------------

    async def create_webhook(
        self,
        url: str,
        events: Sequence[str],
        *,
        type: WebhookType = "marketing",
        auth_token: str | None = None,
        description: str | None = None,
        batched: bool = False,
    ) -> int:
        """Register a webhook; its id. ``auth_token`` is sent back by Brevo as a bearer token."""
        kwargs: dict[str, Any] = {
            "url": url,
            "events": list(events),
            "type": type,
            "batched": batched,
        }
        if auth_token is not None:
            register_secret(auth_token)
            kwargs["auth"] = CreateWebhookRequestAuth(type="bearer", token=auth_token)
        if description is not None:
            kwargs["description"] = description
        response = await self._call(
            "create_webhook",
            "POST /v3/webhooks",
            lambda: self.sdk.webhooks.with_raw_response.create_webhook(**kwargs),
            idempotent=False,
        )
        return int((_json_body(response) or {})["id"])

    async def list_webhooks(self, type: WebhookType | None = None) -> list[BrevoWebhook]:
        """The account's webhooks of one type, or of all three types when ``type`` is None.

        Brevo's own default is ``transactional`` only, so None costs three calls (the webhooks
        family allows 100 per hour on standard plans).
        """
        kinds: list[WebhookType] = (
            [type] if type is not None else ["transactional", "marketing", "inbound"]
        )
        found: list[BrevoWebhook] = []
        for kind in kinds:
            response = await self._call(
                "list_webhooks",
                "GET /v3/webhooks",
                functools.partial(self.sdk.webhooks.with_raw_response.get_webhooks, type=kind),
                idempotent=True,
            )
            data = _json_body(response) or {}
            found.extend(BrevoWebhook.from_api(w) for w in data.get("webhooks") or [])
        return found


def _header_int(headers: httpx.Headers, name: str) -> int | None:
    raw = headers.get(name)
    try:
        return int(float(raw)) if raw is not None else None
    except ValueError:
        return None
