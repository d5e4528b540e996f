"""Webhook delivery for the sandboxes: HubSpot's signed batches and Brevo's marketing events.

:class:`WebhookSender` is the shared machinery, one per sandbox: a background asyncio task
drains a queue of events, groups them per target into batches (HubSpot: JSON arrays of up to
100 after a short linger; Brevo: one object per POST, or arrays of up to 500 per window for a
``batched`` webhook), POSTs them with at most ``max_in_flight`` requests at a time and retries
failures with the real policy (API_NOTES_HUBSPOT §3.1, API_NOTES_BREVO §3) on a shrunken time
scale (``retry_scale``). Every attempt lands in :class:`DeliveryLog` (``sent``, ``retried``,
``dropped``); ``await sender.drain()`` waits until nothing is queued, lingering, in flight or
waiting for a retry.

:class:`HubSpotWebhooks` turns the HubSpot state's change hook into payload elements and signs
each POST (v3 by default, v1/v2 on request); :class:`BrevoWebhooks` turns the Brevo state's
contact events and the unsubscribe/bounce/spam simulations into the events the account's
marketing webhooks subscribe to, sent with their auth. The states own them (``webhooks`` /
``webhook_events``) and expose their configuration; this module holds the behaviour.

Delivery happens on the event loop that is running when events are queued (the one serving
the sandboxes); a queue filled outside any loop is delivered by the next ``drain()``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import random
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from connector.sandbox.brevo_model import Contact, ContactEvent, Webhook
from connector.sandbox.hubspot_model import ASSOC_TYPES, ENGAGEMENTS, SINGULAR, TYPE_IDS

if TYPE_CHECKING:
    from connector.sandbox.brevo_state import BrevoState
    from connector.sandbox.hubspot_state import HubSpotState

JSONDict = dict[str, Any]
HeadersFn = Callable[[str, bytes], Mapping[str, str]]
"""Called with (url, raw body) just before each POST; returns the headers to add."""

Outcome = Literal["sent", "retried", "dropped"]

# ----------------------------------------------------------------------------- retry policies


def _any_failure(status: int) -> bool:
    return not 200 <= status < 300


def _only_429(status: int) -> bool:
    return status == 429


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed POST is tried again (delays in real seconds)."""

    name: str
    delays: tuple[float, ...]
    retry_status: Callable[[int], bool]
    jitter: float = 0.0


# "Up to 10 times, spread out over the next 24 hours, with varying delays ... some
# randomization" (API_NOTES_HUBSPOT §3.1). The individual delays are not published: this
# schedule (about 23.9 h in all) is the sandbox's choice [UNVERIFIED]. Retried on connection
# failure, on a response slower than the timeout and on any non-2xx status.
HUBSPOT_RETRY = RetryPolicy(
    "hubspot",
    (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 14400.0, 21600.0, 25200.0),
    _any_failure,
    jitter=0.1,
)
# 4 retries at +10 min, +1 h, +2 h, +8 h; only timeouts, connection errors and 429 are retried,
# any other 4xx and every 5xx discards the event (API_NOTES_BREVO §3).
BREVO_RETRY = RetryPolicy("brevo", (600.0, 3600.0, 7200.0, 28800.0), _only_429)

# ------------------------------------------------------------------------------ delivery log


@dataclass
class Attempt:
    """One POST: where, which attempt (0 = first), how many events, and what came of it."""

    url: str
    key: str
    attempt: int
    events: int
    status: int | None
    error: str | None
    outcome: Outcome
    at: float
    seconds: float


@dataclass
class DeliveryLog:
    """The attempts, by outcome (the most recent ``limit`` of each), and running counts."""

    limit: int = 10_000
    sent: deque[Attempt] = field(default_factory=deque)
    retried: deque[Attempt] = field(default_factory=deque)
    dropped: deque[Attempt] = field(default_factory=deque)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, attempt: Attempt) -> None:
        bucket: deque[Attempt] = getattr(self, attempt.outcome)
        bucket.append(attempt)
        while len(bucket) > self.limit:
            bucket.popleft()
        self.counts[f"{attempt.outcome}_requests"] += 1
        self.counts[f"{attempt.outcome}_events"] += attempt.events
        if attempt.status is not None:
            self.counts[f"status_{attempt.status}"] += 1
        elif attempt.error is not None:
            self.counts[attempt.error.split(":", 1)[0]] += 1

    def clear(self) -> None:
        self.sent.clear()
        self.retried.clear()
        self.dropped.clear()
        self.counts.clear()

    def to_json(self, last: int = 50) -> JSONDict:
        return {
            "counts": dict(self.counts),
            **{
                name: [asdict(a) for a in list(getattr(self, name))[-last:]]
                for name in ("sent", "retried", "dropped")
            },
        }


# ---------------------------------------------------------------------------------- sender


@dataclass
class _Delivery:
    url: str
    key: str
    events: list[JSONDict]
    headers_fn: HeadersFn
    array: bool
    batch_size: int
    linger: float


@dataclass
class _Bucket:
    url: str
    headers_fn: HeadersFn
    array: bool
    batch_size: int
    events: list[JSONDict] = field(default_factory=list)
    deadline: float | None = None


@dataclass(eq=False)
class _Batch:
    url: str
    key: str
    events: list[JSONDict]
    headers_fn: HeadersFn
    array: bool
    attempt: int = 0


class WebhookSender:
    """Queues, batches, POSTs and retries webhook events for one sandbox (one account).

    Knobs (attributes, changeable at run time): ``batch_size`` and ``linger`` (seconds a
    partial batch waits for more events), ``max_in_flight`` (concurrent POSTs), ``timeout``
    (seconds before a POST counts as failed), ``retry_scale`` (multiplies the policy's real
    delays: 0.001 turns HubSpot's first one-minute retry into 60 ms), ``attempt_field`` (a
    payload field set to the attempt number before each POST), ``transport`` (an httpx
    transport, e.g. ``httpx.ASGITransport(app)`` to deliver in process).
    """

    def __init__(
        self,
        *,
        name: str,
        policy: RetryPolicy,
        batch_size: int = 100,
        linger: float = 0.2,
        max_in_flight: int = 10,
        timeout: float = 5.0,
        retry_scale: float = 0.001,
        attempt_field: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "connector-sandbox-webhooks",
        seed: int | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.batch_size = batch_size
        self.linger = linger
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.retry_scale = retry_scale
        self.attempt_field = attempt_field
        self.transport = transport
        self.user_agent = user_agent
        self.log = DeliveryLog()
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self._rng = random.Random(seed)
        self._pending: deque[_Delivery] = deque()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._batches: set[_Batch] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Condition | None = None
        self._client: httpx.AsyncClient | None = None
        self._client_transport: httpx.AsyncBaseTransport | None = None

    # --- queueing ---------------------------------------------------------------------------

    def deliver(
        self,
        url: str,
        events: Iterable[JSONDict],
        headers_fn: HeadersFn,
        *,
        key: str | None = None,
        array: bool = True,
        batch_size: int | None = None,
        linger: float | None = None,
    ) -> None:
        """Queue ``events`` for ``url`` (synchronous; safe to call from a change listener).

        Events sharing (``url``, ``key``) are batched together: with ``array`` the body is a
        JSON array of up to ``batch_size`` events sent ``linger`` seconds after the first one
        came (or at once when full); without, each event is POSTed alone as an object.
        """
        items = list(events)
        if not items:
            return
        size = max(batch_size or self.batch_size, 1) if array else 1
        wait = (self.linger if linger is None else linger) if array else 0.0
        self._pending.append(
            _Delivery(url, key or url, items, headers_fn, array, size, max(wait, 0.0))
        )
        self._kick()

    def queued(self) -> int:
        """Events not yet settled: queued, lingering, in flight or waiting for a retry."""
        return (
            sum(len(d.events) for d in self._pending)
            + sum(len(b.events) for b in self._buckets.values())
            + sum(len(b.events) for b in self._batches)
        )

    def idle(self) -> bool:
        return not (self._pending or self._buckets or self._batches)

    async def drain(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (the API asked for)
        """Wait until every queued event was delivered or dropped; TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        self._kick()
        deadline = loop.time() + timeout
        while not self.idle():
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"{self.name} webhooks: {self.queued()} event(s) still queued after "
                    f"{timeout:g} s"
                )
            if self._worker is None or self._worker.done():
                self._kick()
            await asyncio.sleep(0.005)

    async def aclose(self) -> None:
        """Stop the worker, abandon what is queued and close the HTTP client."""
        current = asyncio.get_running_loop()
        mine = [
            t
            for t in (self._worker, *self._tasks)
            if t is not None and not t.done() and t.get_loop() is current
        ]
        for task in mine:
            task.cancel()
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)
        if self._client is not None and self._loop is current:
            await self._client.aclose()
        self._client = None
        self._worker = None
        self._loop = None
        self._tasks.clear()
        self._pending.clear()
        self._buckets.clear()
        self._batches.clear()
        self.in_flight = 0

    def snapshot(self, last: int = 50) -> JSONDict:
        """The knobs, the queue and the delivery log (the ``/_sandbox/webhooks`` answer)."""
        return {
            "name": self.name,
            "policy": self.policy.name,
            "batch_size": self.batch_size,
            "linger": self.linger,
            "max_in_flight": self.max_in_flight,
            "timeout": self.timeout,
            "retry_scale": self.retry_scale,
            "queued": self.queued(),
            "in_flight": self.in_flight,
            "max_in_flight_seen": self.max_in_flight_seen,
            **self.log.to_json(last),
        }

    def configure(self, knobs: Mapping[str, Any]) -> None:
        """Set the numeric knobs present in ``knobs`` (from a control route)."""
        for name, kind in (
            ("batch_size", int),
            ("linger", float),
            ("max_in_flight", int),
            ("timeout", float),
            ("retry_scale", float),
        ):
            if name in knobs:
                setattr(self, name, kind(knobs[name]))
        if knobs.get("clear_log"):
            self.log.clear()
            self.max_in_flight_seen = 0

    # --- the worker -------------------------------------------------------------------------

    def _kick(self) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop
        alive = (
            self._worker is not None
            and not self._worker.done()
            and loop is not None
            and not loop.is_closed()
        )
        if alive and loop is not None and self._wake is not None:
            if running is loop:
                self._wake.set()
            else:
                loop.call_soon_threadsafe(self._wake.set)
        elif running is not None:
            self._start(running)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            # a new loop (another test, the demo): what belonged to the old one is gone
            self._loop = loop
            self._slots = asyncio.Condition()
            self._client = None
            self._tasks = set()
            self._batches.clear()
            self.in_flight = 0
        self._wake = asyncio.Event()
        self._worker = loop.create_task(self._run(), name=f"{self.name}-webhooks")

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        loop = asyncio.get_running_loop()
        while True:
            wake.clear()
            now = loop.time()
            while self._pending:
                self._absorb(self._pending.popleft(), now)
            next_due: float | None = None
            for k, bucket in list(self._buckets.items()):
                if bucket.deadline is not None and bucket.deadline <= now:
                    del self._buckets[k]
                    self._spawn(bucket.url, k[1], bucket.events, bucket)
                elif bucket.deadline is not None:
                    next_due = (
                        bucket.deadline if next_due is None else min(next_due, bucket.deadline)
                    )
            if not self._pending and not self._buckets:
                return  # idle: the next deliver() starts a new worker
            wait = None if next_due is None else max(next_due - now, 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)

    def _absorb(self, d: _Delivery, now: float) -> None:
        k = (d.url, d.key)
        bucket = self._buckets.get(k)
        if bucket is None:
            bucket = self._buckets[k] = _Bucket(d.url, d.headers_fn, d.array, d.batch_size)
        bucket.headers_fn, bucket.array, bucket.batch_size = d.headers_fn, d.array, d.batch_size
        bucket.events.extend(d.events)
        while len(bucket.events) >= bucket.batch_size:
            chunk = bucket.events[: bucket.batch_size]
            del bucket.events[: bucket.batch_size]
            self._spawn(d.url, d.key, chunk, bucket)
        if not bucket.events:
            del self._buckets[k]
        elif bucket.deadline is None:
            bucket.deadline = now + d.linger

    def _spawn(self, url: str, key: str, events: list[JSONDict], bucket: _Bucket) -> None:
        batch = _Batch(url, key, events, bucket.headers_fn, bucket.array)
        self._batches.add(batch)
        assert self._loop is not None
        task = self._loop.create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: _Batch) -> None:
        try:
            while True:
                started = time.monotonic()
                status, error = await self._post(batch)
                ok = status is not None and 200 <= status < 300
                retryable = not ok and (error is not None or self.policy.retry_status(status or 0))
                more = batch.attempt < len(self.policy.delays)
                outcome: Outcome = (
                    "sent" if ok else ("retried" if retryable and more else "dropped")
                )
                self.log.add(
                    Attempt(
                        url=batch.url,
                        key=batch.key,
                        attempt=batch.attempt,
                        events=len(batch.events),
                        status=status,
                        error=error,
                        outcome=outcome,
                        at=time.time(),
                        seconds=round(time.monotonic() - started, 4),
                    )
                )
                if outcome != "retried":
                    return
                delay = self.policy.delays[batch.attempt] * self.retry_scale
                if self.policy.jitter:
                    delay *= 1 + self._rng.uniform(-self.policy.jitter, self.policy.jitter)
                batch.attempt += 1
                await asyncio.sleep(delay)
        finally:
            self._batches.discard(batch)

    async def _post(self, batch: _Batch) -> tuple[int | None, str | None]:
        if self.attempt_field is not None:
            for event in batch.events:
                event[self.attempt_field] = batch.attempt
        payload: Any = batch.events if batch.array else batch.events[0]
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        slots = self._slots
        assert slots is not None
        async with slots:
            await slots.wait_for(lambda: self.in_flight < max(self.max_in_flight, 1))
            self.in_flight += 1
            self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
        try:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": self.user_agent,
                **batch.headers_fn(batch.url, body),
            }
            client = self._http()
            response = await asyncio.wait_for(
                client.post(batch.url, content=body, headers=headers), self.timeout
            )
            return response.status_code, None
        except (TimeoutError, httpx.TimeoutException):
            return None, "timeout"
        except httpx.TransportError as exc:
            return None, f"connection: {type(exc).__name__}"
        except Exception as exc:  # an in-process receiver that crashed: a dropped connection
            return None, f"connection: {type(exc).__name__}"
        finally:
            async with slots:
                self.in_flight -= 1
                slots.notify_all()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client_transport is not self.transport:
            # an old client is left to the garbage collector (its loop may be gone)
            self._client = httpx.AsyncClient(
                transport=self.transport, timeout=self.timeout, follow_redirects=False
            )
            self._client_transport = self.transport
        return self._client


# ----------------------------------------------------------------------------------- HubSpot

#: Object types with their own legacy subscription types (``contact.creation`` …); the
#: engagements only have the generic ``object.*`` ones (with ``objectTypeId``).
HUBSPOT_EVENT_TYPES = (
    "creation",
    "deletion",
    "merge",
    "propertyChange",
    "restore",
    "associationChange",
)
DEFAULT_SUBSCRIPTIONS: frozenset[str] = frozenset(
    {f"{o}.{e}" for o in ("contact", "company", "deal") for e in HUBSPOT_EVENT_TYPES}
    | {"contact.privacyDeletion"}
)
SANDBOX_USER_ID = 9_000_001

# The v3 URI decoding table (API_NOTES_HUBSPOT §3.4): HubSpot hashes the decoded URI.
_V3_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def v3_uri(uri: str) -> str:
    """``uri`` with the percent-escapes of the v3 table decoded (any hex case)."""
    out, i = [], 0
    while i < len(uri):
        chunk = uri[i : i + 3].upper()
        if uri[i] == "%" and chunk in _V3_DECODE:
            out.append(_V3_DECODE[chunk])
            i += 3
        else:
            out.append(uri[i])
            i += 1
    return "".join(out)


def hubspot_signature_headers(
    secret: str, url: str, body: bytes, version: str = "v3", now_ms: int | None = None
) -> dict[str, str]:
    """The signature headers HubSpot puts on a webhook POST to ``url`` (§3.4)."""
    if version == "v1":
        digest = hashlib.sha256(secret.encode() + body).hexdigest()
        return {"X-HubSpot-Signature": digest, "X-HubSpot-Signature-Version": "v1"}
    if version == "v2":
        digest = hashlib.sha256(secret.encode() + b"POST" + url.encode() + body).hexdigest()
        return {"X-HubSpot-Signature": digest, "X-HubSpot-Signature-Version": "v2"}
    timestamp = str(int(time.time() * 1000) if now_ms is None else now_ms)
    message = b"POST" + v3_uri(url).encode() + body + timestamp.encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(mac).decode(),
        "X-HubSpot-Request-Timestamp": timestamp,
        "X-HubSpot-Signature-Version": "v3",
    }


def subscription_id(key: str) -> int:
    """A stable id for a subscription (``contact.propertyChange:email`` …)."""
    return 100_000 + zlib.crc32(key.encode()) % 900_000


class HubSpotWebhooks:
    """The HubSpot sandbox's change listener: payload elements, signed, to the target URL.

    Configuration lives on the state (``webhook_target_url``, ``app_id``, ``client_secret``,
    ``webhook_subscriptions``, ``webhook_signature_version``); the delivery knobs on
    ``sender``. Subscriptions are event types (``contact.creation``); ``…propertyChange``
    covers every property, ``contact.propertyChange:email`` one property (as HubSpot's
    one-subscription-per-property). Engagements fire ``object.*`` events (with
    ``objectTypeId``) when those are subscribed.
    """

    def __init__(self, state: HubSpotState, sender: WebhookSender) -> None:
        self.state = state
        self.sender = sender
        self._event_ids = itertools.count(1_000_001)

    def __call__(
        self,
        event: str,
        object_type: str,
        object_id: str,
        prop: str | None,
        value: str | None,
        source: str,
    ) -> None:
        """The ``listeners`` hook: build, filter and queue this change's payload elements."""
        url = self.state.webhook_target_url
        if not url:
            return
        elements = self._elements(event, object_type, object_id, prop, value, source)
        if elements:
            self.sender.deliver(url, elements, self._headers)

    def _headers(self, url: str, body: bytes) -> dict[str, str]:
        return hubspot_signature_headers(
            self.state.client_secret, url, body, self.state.webhook_signature_version
        )

    def _elements(
        self,
        event: str,
        object_type: str,
        object_id: str,
        prop: str | None,
        value: str | None,
        source: str,
    ) -> list[JSONDict]:
        if event == "associationChange" and prop:
            return self._association(object_type, int(object_id), prop, value, source)
        element = self._element(object_type, event, prop, source)
        if element is None:
            return []
        element["objectId"] = int(object_id)
        if event == "propertyChange" and prop is not None:
            element["propertyName"] = prop
            element["propertyValue"] = "" if value is None else str(value)
        elif event == "merge":
            primary = int(object_id)
            element["primaryObjectId"] = primary
            element["mergedObjectIds"] = [int(value)] if value and value.isdigit() else []
            element["newObjectId"] = primary  # the sandbox never creates a new record
            # the change hook does not report how many properties moved [sandbox limitation]
            element["numberOfPropertiesMoved"] = 0
        return [element]

    def _element(
        self, object_type: str, event: str, prop: str | None, source: str
    ) -> JSONDict | None:
        generic = object_type in ENGAGEMENTS
        prefix = "object" if generic else SINGULAR.get(object_type)
        if prefix is None:
            return None
        sub_type = f"{prefix}.{event}"
        subs = self.state.webhook_subscriptions
        if event == "propertyChange" and f"{sub_type}:{prop}" in subs:
            key = f"{sub_type}:{prop}"
        elif sub_type in subs:
            key = sub_type
        else:
            return None
        element: JSONDict = {
            "eventId": next(self._event_ids),
            "subscriptionId": subscription_id(f"{key}/{object_type}" if generic else key),
            "portalId": self.state.portal_id,
            "appId": self.state.app_id,
            "occurredAt": self.state.now_ms(),
            "subscriptionType": sub_type,
            "attemptNumber": 0,
            "changeSource": source,
        }
        source_id = self._source_id(source)
        if source_id is not None:
            element["sourceId"] = source_id
        if generic:
            element["objectTypeId"] = TYPE_IDS[object_type]
        return element

    def _source_id(self, source: str) -> str | None:
        # API writes: the app's id [UNVERIFIED, §4]; a person's edits: "userId:…" (§3.3)
        if source == "INTEGRATION":
            return str(self.state.app_id)
        if source in ("CRM_UI", "IMPORT", "MERGE", "GDPR"):
            return f"userId:{SANDBOX_USER_ID}"
        return None

    def _association(
        self, from_type: str, from_id: int, assoc_type: str, value: str | None, source: str
    ) -> list[JSONDict]:
        """Both directions fire (CONTACT_TO_COMPANY and COMPANY_TO_CONTACT) [3P, UNVERIFIED].

        ``associationRemoved`` is true when no association of any type is left between the
        two records; ``isPrimaryAssociation`` when one left is primary (best effort: the hook
        does not say which association type changed).
        """
        to_singular = assoc_type.split("_TO_", 1)[-1].lower()
        to_type = next((t for t, s in SINGULAR.items() if s == to_singular), None)
        if to_type is None or value is None or not value.isdigit():
            return []
        to_id = int(value)
        out: list[JSONDict] = []
        for a_type, a_id, b_type, b_id in (
            (from_type, from_id, to_type, to_id),
            (to_type, to_id, from_type, from_id),
        ):
            if a_type in ENGAGEMENTS:
                continue  # legacy associationChange types exist for CRM objects only
            element = self._element(a_type, "associationChange", None, source)
            if element is None:
                continue
            left = self.state.assoc.get((a_type, a_id), {}).get((b_type, b_id), set())
            element.update(
                objectId=a_id,
                associationType=f"{SINGULAR[a_type].upper()}_TO_{SINGULAR[b_type].upper()}",
                fromObjectId=a_id,
                toObjectId=b_id,
                associationRemoved=not left,
                isPrimaryAssociation=any(ASSOC_TYPES[t].primary for t in left if t in ASSOC_TYPES),
            )
            out.append(element)
        return out


# ------------------------------------------------------------------------------------- Brevo

#: The contact events of the state's hook that a marketing webhook can subscribe to.
_CONTACT_EVENTS = frozenset({"contactUpdated", "listAddition", "contactDeleted"})
#: Events carrying ``api_key_name`` (Brevo changelog 2026-11-01, API_NOTES_BREVO §3).
_KEY_NAME_EVENTS = frozenset({"contactUpdated", "listAddition"})
#: Registered (camelCase) name → the ``event`` value in the payload. Brevo's marketing payloads
#: have used snake_case names (``list_addition``, ``contact_updated``, ``hard_bounce``) in the
#: samples found [3P transcription of the docs, UNVERIFIED]; ``webhook_event_style="camel"``
#: sends the registered names instead.
SNAKE_EVENT_NAMES = {
    "contactUpdated": "contact_updated",
    "contactDeleted": "contact_deleted",
    "listAddition": "list_addition",
    "hardBounce": "hard_bounce",
    "softBounce": "soft_bounce",
    "unsubscribed": "unsubscribed",
    "spam": "spam",
    "delivered": "delivered",
    "opened": "opened",
    "click": "click",
}
_REASONS = {
    "hardBounce": "550 5.1.1 The email account that you tried to reach does not exist",
    "spam": "undesired",
}
SIMULATED_EVENTS = frozenset({"unsubscribed", "hardBounce", "spam"})
#: Campaign engagement events the sandbox can emit (nothing in the contact changes).
ENGAGEMENT_EVENTS = frozenset({"delivered", "opened", "click"})
#: Transactional e-mail events the sandbox can emit for a captured e-mail → the ``event`` value
#: of the payload (the transactional-webhooks page: ``click``, ``unique_opened``, ``hard_bounce``).
TRANSACTIONAL_EVENT_NAMES = {
    "delivered": "delivered",
    "opened": "opened",
    "uniqueOpened": "unique_opened",
    "click": "click",
    "hardBounce": "hard_bounce",
    "unsubscribed": "unsubscribed",
}


def _paris() -> tzinfo:
    try:
        return ZoneInfo("Europe/Paris")
    except ZoneInfoNotFoundError:  # pragma: no cover - no tz database
        return UTC


_CET = _paris()


def brevo_auth_headers(hook: Webhook) -> tuple[str, dict[str, str]]:
    """The URL to POST to and the headers a webhook's auth and custom headers give.

    ``auth {type: bearer, token}`` → ``Authorization: Bearer``; ``auth {type: basic,
    username, password}`` or a ``https://user:pass@host/…`` URL → ``Authorization: Basic``
    (the userinfo is removed from the URL); ``headers [{key, value}]`` are added as they are.
    """
    parts = urlsplit(hook.url)
    url = hook.url
    headers: dict[str, str] = {}
    if "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    auth = hook.auth or {}
    if auth.get("type") == "bearer" and auth.get("token") is not None:
        headers["Authorization"] = f"Bearer {auth['token']}"
    elif auth.get("type") == "basic" and auth.get("username") is not None:
        pair = f"{auth['username']}:{auth.get('password', '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    for h in hook.headers or ():
        headers[str(h["key"])] = str(h.get("value", ""))
    return url, headers


class BrevoWebhooks:
    """The Brevo sandbox's marketing webhooks: contact events and simulated campaign events.

    Payloads (API_NOTES_BREVO §3): ``event``, ``email``, ``id`` (the webhook's id),
    ``date_event`` (the account's time zone), ``ts_event`` and ``ts`` (epoch seconds);
    campaign events add ``camp_id``, ``"campaign name"``, ``date_sent``, ``ts_sent``, ``tag``
    and ``reason`` (hard bounce, spam). Contact events add ``date`` (CET/CEST) and
    ``contact_id``; ``contactUpdated`` and ``listAddition`` carry ``api_key_name`` ("" for UI
    edits). ``listAddition`` has ``list_id``: the list ids joined, as an array.

    ``contactUpdated``'s ``content`` shape is UNVERIFIED (the page was not found; a
    third-party copy of older docs shows ``"content": [{…changed fields…}]``): the sandbox
    sends a one-element array whose object maps each changed field — attribute names as the
    API spells them (``FIRSTNAME``, ``EMAIL``, ``SMS``, ``EXT_ID``) plus ``emailBlacklisted``
    / ``smsBlacklisted`` — to its new value (``null`` = cleared).
    """

    def __init__(self, state: BrevoState, sender: WebhookSender) -> None:
        self.state = state
        self.sender = sender
        self._muted = False

    def listen(self) -> None:
        """Join the state's change listeners (once); called when a webhook is registered."""
        if self not in self.state.listeners:
            self.state.listeners.append(self)

    def __call__(self, event: ContactEvent, contact: Contact, api_key_name: str) -> None:
        """The state's ``listeners`` hook: contact events to the subscribed webhooks."""
        if self._muted or event.name not in _CONTACT_EVENTS:
            return
        hooks = self._hooks(event.name)
        if not hooks:
            return
        at = event.at
        payload: JSONDict = {
            "email": contact.email,
            "contact_id": contact.id,
            "date": self._date(at, _CET),
            "date_event": self._date(at, self.state.tz),
            "ts_event": int(at.timestamp()),
            "ts": int(self.state.clock().timestamp()),
        }
        if event.name == "contactUpdated":
            payload["content"] = [dict(event.changed)]
        elif event.name == "listAddition":
            payload["list_id"] = list(event.list_ids)
        if event.name in _KEY_NAME_EVENTS:
            payload["api_key_name"] = api_key_name
        self._send(event.name, payload, hooks)

    def simulate(
        self,
        email: str,
        event: str,
        *,
        camp_id: int = 1,
        campaign_name: str = "Sandbox newsletter",
        reason: str | None = None,
    ) -> Contact:
        """A campaign recipient unsubscribes, hard-bounces or reports spam.

        The contact is blocklisted (``emailBlacklisted``; modifiedAt bumps, other listeners
        see a ``contactUpdated``), and only the marketing event goes to the webhooks — whether
        Brevo also sends ``contactUpdated`` then is UNVERIFIED. KeyError for an unknown e-mail.
        """
        if event not in SIMULATED_EVENTS:
            raise ValueError(f"event must be one of {sorted(SIMULATED_EVENTS)}")
        state = self.state
        contact = state.get(email)
        if contact is None:
            raise KeyError(email)
        patch = state.make_patch({})
        patch.email_blacklisted = True
        self._muted = True
        try:
            state.apply(contact, patch, "")
        finally:
            self._muted = False
        hooks = self._hooks(event)
        if not hooks:
            return contact
        now = state.clock()
        payload: JSONDict = {
            "camp_id": camp_id,
            "email": contact.email,
            "campaign name": campaign_name,
            "date_sent": self._date(now, state.tz),
            "date_event": self._date(now, state.tz),
            "tag": "",
            "ts_sent": int(now.timestamp()),
            "ts_event": int(now.timestamp()),
            "ts": int(now.timestamp()),
        }
        if event == "unsubscribed":
            payload["list_id"] = sorted(contact.list_ids)
        else:
            payload["reason"] = reason or _REASONS[event]
        self._send(event, payload, hooks)
        return contact

    def engagement(
        self,
        email: str,
        event: str,
        *,
        camp_id: int = 1,
        campaign_name: str = "Sandbox newsletter",
        url: str = "https://example.com/offer",
        at: datetime | None = None,
    ) -> Contact:
        """A campaign e-mail is delivered to, opened or clicked by a contact: the marketing
        event goes to the webhooks subscribed to it (API_NOTES_BREVO §3 fields; ``URL`` on a
        click). The contact is unchanged. KeyError for an unknown e-mail."""
        if event not in ENGAGEMENT_EVENTS:
            raise ValueError(f"event must be one of {sorted(ENGAGEMENT_EVENTS)}")
        state = self.state
        contact = state.get(email)
        if contact is None:
            raise KeyError(email)
        hooks = self._hooks(event)
        if not hooks:
            return contact
        now = at or state.clock()
        payload: JSONDict = {
            "camp_id": camp_id,
            "email": contact.email,
            "campaign name": campaign_name,
            "date_sent": self._date(now, state.tz),
            "date_event": self._date(now, state.tz),
            "tag": "",
            "ts_sent": int(now.timestamp()),
            "ts_event": int(now.timestamp()),
            "ts": int(now.timestamp()),
        }
        if event == "click":
            payload["URL"] = url
        self._send(event, payload, hooks)
        return contact

    def transactional(
        self,
        message_id: str,
        event: str,
        *,
        link: str = "https://example.com/offer",
        reason: str | None = None,
        at: datetime | None = None,
    ) -> int:
        """An event about a transactional e-mail in the outbox, for each recipient, to the
        transactional webhooks subscribed to it (the transactional-webhooks page's fields:
        ``message-id``, ``subject``, ``template_id``, ``tags``, ``ts_epoch`` in ms, ``contact_id``
        — 0 when the address is no contact —, ``link`` on a click). How many were sent.
        KeyError for an unknown message id."""
        if event not in TRANSACTIONAL_EVENT_NAMES:
            raise ValueError(f"event must be one of {sorted(TRANSACTIONAL_EVENT_NAMES)}")
        state = self.state
        sent = next((m for m in state.outbox if m.message_id == message_id), None)
        if sent is None:
            raise KeyError(message_id)
        hooks = [
            w
            for w in state.webhooks.values()
            if w.type == "transactional" and w.channel == "email" and event in w.events
        ]
        now = at or state.clock()
        n = 0
        for email in sent.to:
            contact = state.get(email)
            payload: JSONDict = {
                "email": email,
                "date": self._date(now, _CET),
                "ts": int(now.timestamp()),
                "message-id": message_id,
                "ts_event": int(now.timestamp()),
                "subject": sent.subject or "",
                "sending_ip": "185.41.28.109",
                "ts_epoch": int(now.timestamp() * 1000),
                "contact_id": contact.id if contact is not None else 0,
                "tags": list(sent.payload.get("tags") or []),
            }
            if isinstance(sent.payload.get("templateId"), int):
                payload["template_id"] = sent.payload["templateId"]
            if event == "click":
                payload["link"] = link
            if event == "hardBounce":
                payload["reason"] = reason or _REASONS["hardBounce"]
            for hook in hooks:
                url, headers = brevo_auth_headers(hook)
                body = {"event": TRANSACTIONAL_EVENT_NAMES[event], "id": hook.id, **payload}

                def headers_fn(
                    _url: str, _body: bytes, h: dict[str, str] = headers
                ) -> dict[str, str]:
                    return h

                self.sender.deliver(
                    url,
                    [body],
                    headers_fn,
                    key=f"webhook-{hook.id}",
                    array=hook.batched,
                    batch_size=500,
                    linger=state.webhook_batch_window,
                )
                n += 1
        return n

    def _hooks(self, name: str) -> list[Webhook]:
        return [
            w
            for w in self.state.webhooks.values()
            if w.type == "marketing" and w.channel == "email" and name in w.events
        ]

    @staticmethod
    def _date(at: datetime, tz: tzinfo) -> str:
        return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    def _send(self, name: str, fields: JSONDict, hooks: list[Webhook]) -> None:
        shown = name if self.state.webhook_event_style == "camel" else SNAKE_EVENT_NAMES[name]
        for hook in hooks:
            url, headers = brevo_auth_headers(hook)
            payload = {"event": shown, "id": hook.id, **fields}

            def headers_fn(_url: str, _body: bytes, h: dict[str, str] = headers) -> dict[str, str]:
                return h

            self.sender.deliver(
                url,
                [payload],
                headers_fn,
                key=f"webhook-{hook.id}",
                array=hook.batched,
                batch_size=500,
                linger=self.state.webhook_batch_window,
            )


__all__ = [
    "BREVO_RETRY",
    "DEFAULT_SUBSCRIPTIONS",
    "ENGAGEMENT_EVENTS",
    "HUBSPOT_RETRY",
    "SIMULATED_EVENTS",
    "TRANSACTIONAL_EVENT_NAMES",
    "Attempt",
    "BrevoWebhooks",
    "DeliveryLog",
    "HeadersFn",
    "HubSpotWebhooks",
    "RetryPolicy",
    "WebhookSender",
    "brevo_auth_headers",
    "hubspot_signature_headers",
    "subscription_id",
    "v3_uri",
]
