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
from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool
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
from connector.metrics import SIDES, Metrics, StoreSnapshot, WebMetrics, read_snapshot
from connector.store import db, inbox
from connector.store.inbox import InboxInput
from connector.store.models import System, utcnow

log = structlog.get_logger(__name__)

Source = Literal["hubspot", "brevo"]
Clock = Callable[[], datetime]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    403: "forbidden",
    413: "request body too large",
    429: "temporarily unavailable, retry later",
}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parsed networks (the config already normalised them: ``10.0.0.0/8``, ``::1/128``)."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def parse_address(text: str) -> IPAddress | None:
    """An address as peers and proxies write it: ``203.0.113.7``, ``203.0.113.7:5123``,
    ``2001:db8::1``, ``[2001:db8::1]:443``; IPv4-mapped IPv6 becomes IPv4. ``None`` if it is
    none of those (``unknown``, an obfuscated ``_hidden`` name, garbage)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has two colons or more
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: IPAddress, nets: Sequence[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in nets)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> IPAddress | None:
    """The address a request came from, for the allow-list.

    The socket peer, unless it is one of ``trusted`` proxies: then ``X-Forwarded-For``
    (every header, in order, joined) is walked **from the right**, skipping the trusted
    proxies; the first address that is not one is the client — whatever a client wrote
    further left is its own claim and is ignored. A peer that is not trusted is the client
    whatever its headers say (a spoofed ``X-Forwarded-For`` changes nothing). ``None`` when
    the address cannot be known: no peer, or an unparseable hop before an untrusted one.
    If every hop is a trusted proxy, the left-most is the client.
    """
    address = parse_address(peer) if peer else None
    if address is None or not _within(address, trusted):
        return address
    hops = [h for header in forwarded_for for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        hop_address = parse_address(hop)
        if hop_address is None:
            return None  # our trusted proxy wrote something we cannot check: no client known
        address = hop_address
        if not _within(address, trusted):
            return address
    return address


def from_trusted_proxy(request: Request, server: ServerSettings) -> bool:
    """Whether the peer is one of ``server.trusted_proxies`` (its forwarding headers count)."""
    if not server.trusted_proxies:
        return False
    client = request.scope.get("client")
    peer = parse_address(str(client[0])) if client else None
    return peer is not None and _within(peer, networks(server.trusted_proxies))


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


class GroupWriter:
    """Group commit for the intake: the events of requests that arrive while a transaction
    is being written go into the next one, together.

    One transaction (and, on SQLite, one turn of its single writer) per group instead of one
    per request: under HubSpot's ten concurrent deliveries that halves the time each waits.
    Each request's events are still inserted by their own statement, so each learns how many
    of its events were new, and a request is stored whole or not at all. If a group's
    transaction fails, its requests are written again one by one, so one bad request cannot
    fail the others; only its own caller gets the error.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self.sessions = sessions
        self.clock = clock
        self._pending: list[tuple[Sequence[InboxInput], asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, items: Sequence[InboxInput]) -> int:
        """Store ``items`` (in a group transaction); how many were new."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="inbox group writer")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            group = [(items, f) for items, f in group if not f.done()]  # cancelled callers
            if not group:
                continue
            try:
                counts = await self._insert([items for items, _ in group])
            except Exception as exc:
                if len(group) == 1:
                    if not group[0][1].done():
                        group[0][1].set_exception(exc)
                else:  # one bad request must not fail the others: each on its own
                    for items, future in group:
                        await self._alone(items, future)
                continue
            for (_, future), stored in zip(group, counts, strict=True):
                if not future.done():
                    future.set_result(stored)

    async def _alone(self, items: Sequence[InboxInput], future: asyncio.Future[int]) -> None:
        try:
            [stored] = await self._insert([items])
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(stored)

    async def _insert(self, requests: Sequence[Sequence[InboxInput]]) -> list[int]:
        async with self.sessions() as session, session.begin():
            now = self.clock()
            return [await inbox.enqueue(session, items, now=now) for items in requests]


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
        self._writer = GroupWriter(sessions, clock)
        self._trusted = networks(server.trusted_proxies)
        self._allowed: dict[Source, tuple[IPNetwork, ...]] = {
            "hubspot": networks(settings.allowed_ips.hubspot),
            "brevo": networks(settings.allowed_ips.brevo),
        }

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

    def _check_source(self, request: Request, source: Source) -> None:
        """403 unless the client is in ``webhooks.allowed_ips.<source>`` (empty: anyone)."""
        allowed = self._allowed[source]
        if not allowed:
            return
        client = request.scope.get("client")
        peer = str(client[0]) if client else None
        address = client_address(peer, request.headers.getlist("x-forwarded-for"), self._trusted)
        if address is None or not _within(address, allowed):
            raise _Reject(
                403,
                "ip_not_allowed",
                f"{address or 'an unknown address'} is not in webhooks.allowed_ips.{source}",
            )

    async def _accept(self, request: Request, source: Source) -> Response:
        started = time.perf_counter()
        limit = self.server.max_body_bytes
        self._check_source(request, source)  # before the body is read
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
                # shielded: a timed-out request gets its 429 while its group finishes (its
                # events then are stored whole, and HubSpot's retry is a duplicate)
                return await asyncio.shield(self._writer.write(items))
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


# --- health and metrics ------------------------------------------------------------------------

HealthStatus = Literal["ok", "starting", "stale", "disabled"]
_RANK: dict[HealthStatus, int] = {"disabled": 0, "ok": 1, "starting": 2, "stale": 3}


@dataclass(frozen=True, slots=True)
class PullHealth:
    """One side's pulls of one object type, as ``/healthz`` judges them."""

    status: HealthStatus
    last_pull_at: datetime | None
    age_seconds: float | None


@dataclass(frozen=True, slots=True)
class SideHealth:
    """One side: the worst of its object types (their oldest last pull)."""

    side: System
    enabled: bool
    status: HealthStatus
    age_seconds: float | None
    objects: dict[str, PullHealth]


def assess_pull(
    last_pull_at: datetime | None, *, now: datetime, started_at: datetime, stale_after: float
) -> PullHealth:
    """``ok`` when the last successful pull started at most ``stale_after`` seconds ago.

    Otherwise ``starting`` while this process is younger than ``stale_after`` (it has not had
    the time to pull yet: a restart after a long stop, or a first start), else ``stale``.
    The age is always the truth, whatever the status.
    """
    age = None if last_pull_at is None else max((now - last_pull_at).total_seconds(), 0.0)
    if age is not None and age <= stale_after:
        status: HealthStatus = "ok"
    elif (now - started_at).total_seconds() <= stale_after:
        status = "starting"
    else:
        status = "stale"
    return PullHealth(status, last_pull_at, age)


def assess_side(
    side: System,
    *,
    enabled: bool,
    objects: Sequence[str] | None,
    last_pulls: dict[tuple[System, str], datetime],
    now: datetime,
    started_at: datetime,
    stale_after: float,
) -> SideHealth:
    """Judge one side (see :func:`assess_pull`). A disabled side is never stale. ``objects``
    ``None`` means "whatever this side has pulled" (and if nothing, one that never pulled)."""
    names = list(objects) if objects is not None else sorted(o for s, o in last_pulls if s == side)
    judged = {
        o: assess_pull(
            last_pulls.get((side, o)), now=now, started_at=started_at, stale_after=stale_after
        )
        for o in names
    }
    if objects is None and not judged:
        never = assess_pull(None, now=now, started_at=started_at, stale_after=stale_after)
        status, age = never.status, None
    else:
        status = max((p.status for p in judged.values()), key=_RANK.__getitem__, default="ok")
        ages = [p.age_seconds for p in judged.values() if p.age_seconds is not None]
        # the side is as old as its oldest object; unknown if one never pulled (or none)
        age = max(ages) if ages and len(ages) == len(judged) else None
    if not enabled:
        status = "disabled"
    return SideHealth(side, enabled, status, age, judged)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def health_body(
    sides: Sequence[SideHealth], snap: StoreSnapshot, stale_after: float
) -> tuple[int, dict[str, Any]]:
    """The ``/healthz`` answer: 503 if a side is stale, else 200."""
    worst = max((s.status for s in sides), key=_RANK.__getitem__, default="ok")
    overall = "ok" if worst == "disabled" else worst
    body: dict[str, Any] = {
        "status": overall,
        "database": "up",
        "stale_after_seconds": stale_after,
        "sides": {
            s.side: {
                "status": s.status,
                "enabled": s.enabled,
                "last_pull_age_seconds": _seconds(s.age_seconds),
                "objects": {
                    o: {
                        "status": p.status,
                        "last_pull_at": _iso(p.last_pull_at),
                        "last_pull_age_seconds": _seconds(p.age_seconds),
                    }
                    for o, p in s.objects.items()
                },
            }
            for s in sides
        },
        "inbox": {"depth": snap.inbox_open, "dead": snap.inbox_dead},
        "dead_letters_open": snap.dead_letters_open,
    }
    return (503 if overall == "stale" else 200), body


def read_only_sessions(
    sessions: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    """Sessions for the scrape-time reads. On SQLite a separate engine whose transactions
    begin ``DEFERRED`` (the daemon's begin ``IMMEDIATE``, i.e. take the write lock): a read in
    WAL mode then never waits for, nor holds up, the intake's writes. Elsewhere ``sessions``."""
    options = getattr(sessions, "kw", None)  # any callable giving sessions will do
    bind = options.get("bind") if isinstance(options, dict) else None
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return sessions
    url = bind.url.render_as_string(hide_password=False)
    return db.session_factory(db.create_engine(url, sqlite_begin="DEFERRED", poolclass=NullPool))


class _Ops:
    """``/healthz`` and ``/metrics``: the store read at request time, under a short timeout."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        timeout: float,
        stale_after: float,
        clock: Clock,
        started_at: datetime,
        objects: Sequence[str] | AbcMapping[str, Sequence[str]] | None,
        enabled_sides: Collection[System],
    ) -> None:
        self.sessions = read_only_sessions(sessions)
        self.metrics = metrics
        self.timeout = timeout
        self.stale_after = stale_after
        self.clock = clock
        self.started_at = started_at
        self.objects = objects
        self.enabled_sides = enabled_sides

    async def snapshot(self, purpose: str) -> StoreSnapshot | None:
        """The store's figures, or ``None`` (logged) if the database did not answer in time."""
        try:
            return await read_snapshot(self.sessions, within=self.timeout, now=self.clock())
        except Exception as exc:
            error = "no answer in time" if isinstance(exc, TimeoutError) else _describe(exc)
            log.warning(f"{purpose}.database_unavailable", error=error)
            return None

    async def healthz(self, request: Request) -> Response:
        """Database reachable and every enabled side pulled recently: see the README."""
        snap = await self.snapshot("healthz")
        if snap is None:
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        sides = [
            assess_side(
                side,
                enabled=side in self.enabled_sides,
                objects=self.objects.get(side, [])
                if isinstance(self.objects, AbcMapping)
                else self.objects,
                last_pulls=snap.last_pulls,
                now=snap.at,
                started_at=self.started_at,
                stale_after=self.stale_after,
            )
            for side in SIDES
        ]
        status, body = health_body(sides, snap, self.stale_after)
        return JSONResponse(body, status_code=status)

    async def scrape(self, request: Request) -> Response:
        """The Prometheus exposition, store gauges read just now."""
        self.metrics.store.update(await self.snapshot("metrics"))
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


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
    metrics: Metrics | None = None,
    objects: Sequence[str] | AbcMapping[str, Sequence[str]] | None = None,
    enabled_sides: Collection[System] = SIDES,
    started_at: datetime | None = None,
) -> Starlette:
    """The ASGI app: webhook endpoints, ``/healthz`` and ``/metrics``.

    ``hubspot_secret`` is the app's client secret (``None``: every HubSpot request gets 401);
    ``brevo_token`` the Brevo webhooks' secret (``None``: every Brevo request gets 401).
    ``metrics`` is the process's :class:`~connector.metrics.Metrics` (the daemon shares it
    with the clients and engines); without it a new one is made on ``registry`` (default: a
    new registry, so apps never clash). ``objects`` are the object types whose pulls
    ``/healthz`` expects, for both sides or per side (``None``: whatever the runs table
    shows), ``enabled_sides`` the sides that are not ``enabled: false``, ``started_at`` when
    the daemon started (default: now) — see :func:`assess_pull`.
    """
    register_secret(hubspot_secret)
    register_secret(brevo_token)
    if metrics is None:
        metrics = Metrics(registry)
    elif registry is not None and registry is not metrics.registry:
        raise ValueError("give metrics or registry, not two different registries")
    listen = server if server is not None else ServerSettings()
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
        server=listen,
        clock=clock,
        metrics=metrics.web,
        log_webhooks=log_webhooks,
    )
    ops = _Ops(
        sessions=sessions,
        metrics=metrics,
        timeout=settings.db_timeout_seconds,
        stale_after=listen.stale_after_seconds,
        clock=clock,
        started_at=started_at if started_at is not None else clock(),
        objects=objects,
        enabled_sides=frozenset(enabled_sides),
    )
    app = Starlette(
        routes=[
            Route(settings.hubspot_path, intake.hubspot, methods=["POST"]),
            Route(settings.brevo_path, intake.brevo, methods=["POST"]),
            Route("/healthz", ops.healthz, methods=["GET"]),
            Route("/metrics", ops.scrape, methods=["GET"]),
        ]
    )
    app.state.registry = metrics.registry
    app.state.metrics = metrics
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
    "HealthStatus",
    "PullHealth",
    "SideHealth",
    "WebMetrics",
    "WebServer",
    "WebhookSettings",
    "assess_pull",
    "assess_side",
    "build_server",
    "client_address",
    "create_web_app",
    "health_body",
    "parse_address",
    "read_body",
    "request_uri",
    "utcnow",
]
