"""The ASGI app inside ``connector run``: webhook intake, ``/healthz`` and ``/metrics``.

``POST {hubspot_path}`` (default ``/webhooks/hubspot``) checks HubSpot's request signature
(v3, v1/v2 as fallback: :mod:`connector.hubspot.webhooks`); ``POST {brevo_path}`` checks the
Brevo webhook's bearer token or basic auth (:mod:`connector.brevo.webhooks`). Then the body is
parsed and every event stored in the inbox in **one transaction** before the answer goes out:

====================================  =================================================
200 ``{"received", "stored",          every event is in the inbox (a redelivered one is
"duplicates"}``                       counted as a duplicate and stored once)
401                                   bad or missing signature / token
400                                   malformed body or any malformed event: nothing stored
413                                   body larger than ``server.max_body_bytes``: nothing stored
429 + ``Retry-After``                 database unavailable or too slow: nothing stored
====================================  =================================================

429, not 5xx, when the database fails: Brevo discards an event on any 5xx or any 4xx but 429
(API_NOTES_BREVO §3), HubSpot retries both. The app never answers 500.

The v3 signature covers the URL HubSpot called. Behind a reverse proxy set ``public_url``
(the external base URL, its path prefix included if the proxy strips one), or
``server.trusted_proxies`` to rebuild scheme and host from ``X-Forwarded-Proto``/``-Host``.

Logs never carry secrets, headers or e-mail addresses unless ``logging.log_emails`` allows
(the structlog processors of :mod:`connector.log` see to that); payloads are logged only with
``log_webhooks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import sqlalchemy as sa
import structlog
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector.brevo.webhooks import BrevoAuthError, check_brevo_auth, parse_brevo
from connector.brevo.webhooks import PayloadError as BrevoPayloadError
from connector.config import ServerSettings, WebhookSettings
from connector.errors import StoreError, register_secret, scrub
from connector.hubspot.webhooks import HubSpotSignature, SignatureError, parse_hubspot
from connector.hubspot.webhooks import PayloadError as HubSpotPayloadError
from connector.store import inbox
from connector.store.inbox import InboxInput
from connector.store.models import utcnow

log = structlog.get_logger(__name__)

Source = Literal["hubspot", "brevo"]
Clock = Callable[[], datetime]


# --- metrics -----------------------------------------------------------------------------------

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class WebMetrics:
    """The intake's Prometheus metrics (one set per registry)."""

    received: Counter
    stored: Counter
    duplicates: Counter
    rejected: Counter
    latency: Histogram
    last_event: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WebMetrics:
        """Register the metrics in ``registry``."""
        ns = "connector_webhook"
        return cls(
            received=Counter(
                f"{ns}_events_received", "Webhook events received", ["source"], registry=registry
            ),
            stored=Counter(
                f"{ns}_events_stored", "Webhook events newly stored", ["source"], registry=registry
            ),
            duplicates=Counter(
                f"{ns}_events_duplicate",
                "Webhook events already in the inbox (redeliveries)",
                ["source"],
                registry=registry,
            ),
            rejected=Counter(
                f"{ns}_requests_rejected",
                "Webhook requests refused, by reason",
                ["source", "reason"],
                registry=registry,
            ),
            latency=Histogram(
                f"{ns}_request_duration_seconds",
                "Time to answer a webhook request",
                ["source"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            last_event=Gauge(
                f"{ns}_last_event_timestamp_seconds",
                "When the last webhook event was stored or recognised (alert on silence)",
                ["source"],
                registry=registry,
            ),
        )


# --- requests ----------------------------------------------------------------------------------


class _Reject(Exception):
    """An answer other than 200, with a bounded ``reason`` for metrics and logs."""

    def __init__(self, status: int, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail


_MESSAGES = {
    400: "malformed request",
    401: "unauthorized",
    413: "request body too large",
    429: "temporarily unavailable, retry later",
}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def from_trusted_proxy(request: Request, server: ServerSettings) -> bool:
    """Whether the peer is one of ``server.trusted_proxies`` (its forwarding headers count)."""
    if not server.trusted_proxies:
        return False
    client = request.scope.get("client")
    if not client:
        return False
    try:
        peer = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(n) for n in server.trusted_proxies)


def request_uri(request: Request, server: ServerSettings) -> str:
    """The URL the sender called, as HubSpot signs it: ``scheme://host/path?query``.

    ``public_url`` wins; else, from a trusted proxy, ``X-Forwarded-Proto``/``-Host`` (first
    hop); else the request's own scheme and ``Host``. The path and query are the raw ones.
    """
    scope = request.scope
    raw_path: bytes | None = scope.get("raw_path")
    if raw_path is None:
        raw_path = quote(scope.get("path", "/")).encode("ascii")
    path = _text(raw_path.split(b"?", 1)[0])  # some servers leave the query on raw_path
    query_string: bytes = scope.get("query_string", b"")
    query = f"?{_text(query_string)}" if query_string else ""
    if server.public_url is not None:
        return f"{server.public_url}{path}{query}"
    headers = request.headers
    scheme = str(scope.get("scheme", "http"))
    host = headers.get("host")
    if from_trusted_proxy(request, server):
        proto = headers.get("x-forwarded-proto")
        forwarded_host = headers.get("x-forwarded-host")
        if proto and proto.split(",")[0].strip():
            scheme = proto.split(",")[0].strip().lower()
        if forwarded_host and forwarded_host.split(",")[0].strip():
            host = forwarded_host.split(",")[0].strip()
    if not host:
        bound = scope.get("server")
        host = f"{bound[0]}:{bound[1]}" if bound else "localhost"
    return f"{scheme}://{host}{path}{query}"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it is larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not re.fullmatch(r"[0-9]{1,19}", declared.strip(), re.ASCII):
            raise _Reject(400, "bad_content_length")
        if int(declared) > limit:
            raise _Reject(413, "too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Reject(413, "too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise _Reject(400, "disconnected") from None
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    """A one-line, scrubbed description: no SQL parameters, no secrets."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    elif isinstance(exc, SQLAlchemyError):
        return type(exc).__name__
    lines = str(exc).strip().splitlines()
    first = lines[0][:200] if lines else ""
    return scrub(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


class _Intake:
    """The request handlers, sharing settings, store and metrics."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        signature: HubSpotSignature | None,
        brevo_token: str | None,
        settings: WebhookSettings,
        server: ServerSettings,
        clock: Clock,
        metrics: WebMetrics,
        log_webhooks: bool,
    ) -> None:
        self.sessions = sessions
        self.signature = signature
        self.brevo_token = brevo_token
        self.settings = settings
        self.server = server
        self.clock = clock
        self.metrics = metrics
        self.log_webhooks = log_webhooks
        self._sqlite_writer = asyncio.Lock()

    async def hubspot(self, request: Request) -> Response:
        """``POST`` from HubSpot."""
        return await self._handle(request, "hubspot")

    async def brevo(self, request: Request) -> Response:
        """``POST`` from Brevo."""
        return await self._handle(request, "brevo")

    async def _handle(self, request: Request, source: Source) -> Response:
        started = time.perf_counter()
        try:
            return await self._accept(request, source)
        except _Reject as rejected:
            return self._refuse(source, rejected)
        except Exception as exc:  # a bug: still never a 5xx, which Brevo would not retry
            log.error(
                "webhook.internal_error",
                source=source,
                error=_describe(exc),
                exc_info=self.log_webhooks,
            )
            return self._refuse(source, _Reject(429, "internal_error"))
        finally:
            self.metrics.latency.labels(source).observe(time.perf_counter() - started)

    def _refuse(self, source: Source, rejected: _Reject) -> Response:
        self.metrics.rejected.labels(source, rejected.reason).inc()
        fields: dict[str, Any] = {
            "source": source,
            "status": rejected.status,
            "reason": rejected.reason,
        }
        if rejected.detail:
            fields["detail"] = rejected.detail
        log.warning("webhook.rejected", **fields)
        body: dict[str, Any] = {"error": _MESSAGES.get(rejected.status, "refused")}
        if rejected.status == 400 and rejected.detail:
            body["detail"] = rejected.detail  # names a field, never a value
        headers = None
        if rejected.status == 429:
            headers = {"Retry-After": str(self.settings.retry_after_seconds)}
        return JSONResponse(body, status_code=rejected.status, headers=headers)

    async def _accept(self, request: Request, source: Source) -> Response:
        started = time.perf_counter()
        limit = self.server.max_body_bytes
        if source == "hubspot":
            if self.signature is None:
                raise _Reject(401, "not_configured")
            body = await read_body(request, limit)
            try:
                self.signature.verify(
                    request.method,
                    request_uri(request, self.server),
                    body,
                    request.headers,
                    self.clock(),
                )
            except SignatureError as exc:
                raise _Reject(401, f"signature_{exc.reason}") from None
            items = self._parse(parse_hubspot, body)
        else:
            try:
                check_brevo_auth(request.headers, self.brevo_token)
            except BrevoAuthError as exc:
                raise _Reject(401, f"auth_{exc.reason}") from None
            body = await read_body(request, limit)
            items = self._parse(parse_brevo, body)
        stored = await self._store(items) if items else 0
        received = len(items)
        self._count(source, received, stored)
        log.info(
            "webhook.accepted",
            source=source,
            events=received,
            stored=stored,
            duplicates=received - stored,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        if self.log_webhooks:
            log.info("webhook.payload", source=source, events=[dict(i.payload) for i in items])
        return JSONResponse(
            {"received": received, "stored": stored, "duplicates": received - stored}
        )

    @staticmethod
    def _parse(parse: Callable[[bytes], list[InboxInput]], body: bytes) -> list[InboxInput]:
        try:
            return parse(body)
        except (HubSpotPayloadError, BrevoPayloadError) as exc:
            raise _Reject(400, "malformed", str(exc)) from None

    async def _store(self, items: Sequence[InboxInput]) -> int:
        """All of ``items`` in one transaction, or none (429)."""
        try:
            async with asyncio.timeout(self.settings.db_timeout_seconds):
                async with self.sessions() as session:
                    if session.get_bind().dialect.name != "sqlite":
                        async with session.begin():
                            return await inbox.enqueue(session, items, now=self.clock())
                    # SQLite has one writer: queue here rather than in its busy-wait backoff.
                    async with self._sqlite_writer, session.begin():
                        return await inbox.enqueue(session, items, now=self.clock())
        except TimeoutError:
            raise _Reject(429, "unavailable", "the database did not answer in time") from None
        except (SQLAlchemyError, OSError, StoreError) as exc:
            raise _Reject(429, "unavailable", _describe(exc)) from None

    def _count(self, source: Source, received: int, stored: int) -> None:
        m = self.metrics
        m.received.labels(source).inc(received)
        m.stored.labels(source).inc(stored)
        m.duplicates.labels(source).inc(received - stored)
        if received:
            m.last_event.labels(source).set(time.time())

    async def healthz(self, request: Request) -> Response:
        """200 when the database answers ``SELECT 1`` in time, else 503."""
        try:
            async with asyncio.timeout(self.settings.db_timeout_seconds):
                async with self.sessions() as session:
                    await session.execute(sa.text("SELECT 1"))
        except Exception as exc:
            log.warning("healthz.database_unavailable", error=_describe(exc))
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "up"})


def create_web_app(
    *,
    sessions: async_sessionmaker[AsyncSession],
    hubspot_secret: str | None,
    brevo_token: str | None,
    settings: WebhookSettings,
    server: ServerSettings | None = None,
    clock: Clock = utcnow,
    log_webhooks: bool = False,
    registry: CollectorRegistry | None = None,
) -> Starlette:
    """The ASGI app: webhook endpoints, ``/healthz`` and ``/metrics``.

    ``hubspot_secret`` is the app's client secret (``None``: every HubSpot request gets 401);
    ``brevo_token`` the Brevo webhooks' secret (``None``: every Brevo request gets 401).
    ``registry`` defaults to a new one (``app.state.registry``), so apps never clash.
    """
    register_secret(hubspot_secret)
    register_secret(brevo_token)
    registry = registry if registry is not None else CollectorRegistry()
    signature = (
        HubSpotSignature(
            hubspot_secret,
            max_age_seconds=settings.max_age_seconds,
            max_skew_seconds=settings.max_skew_seconds,
            accept_legacy=settings.accept_legacy_signatures,
        )
        if hubspot_secret
        else None
    )
    intake = _Intake(
        sessions=sessions,
        signature=signature,
        brevo_token=brevo_token or None,
        settings=settings,
        server=server if server is not None else ServerSettings(),
        clock=clock,
        metrics=WebMetrics.create(registry),
        log_webhooks=log_webhooks,
    )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route(settings.hubspot_path, intake.hubspot, methods=["POST"]),
            Route(settings.brevo_path, intake.brevo, methods=["POST"]),
            Route("/healthz", intake.healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
    app.state.registry = registry
    app.state.metrics = intake.metrics
    return app


class WebServer(uvicorn.Server):
    """uvicorn that leaves SIGTERM/SIGINT to the daemon: stop it with ``should_exit = True``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def build_server(app: Starlette, server: ServerSettings) -> WebServer:
    """A uvicorn server for ``app`` on ``server.host:server.port``; run ``await .serve()``."""
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        lifespan="off",
        access_log=False,
        log_config=None,
        proxy_headers=False,  # scheme and host for signatures: request_uri() decides
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return WebServer(config)


__all__ = [
    "WebMetrics",
    "WebServer",
    "WebhookSettings",
    "build_server",
    "create_web_app",
    "read_body",
    "request_uri",
    "utcnow",
]
