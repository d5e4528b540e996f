"""What both sandboxes share: rolling-window rate limits, fault knobs and the call log.

The sandboxes stand in for HubSpot and Brevo on loopback. They are stateful, in-memory ASGI
apps; this module holds the parts that behave the same way for both: a server-side rolling
window that answers 429 like the real API does, injectable faults (latency, 5xx, timeouts,
429 storms) and a log of every call, which the tests and benchmarks read to count API calls
and, above all, write calls.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class RollingWindow:
    """At most ``limit`` requests in any ``period`` seconds (a sliding log, as HubSpot's is)."""

    limit: int
    period: float
    _stamps: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, now: float | None = None) -> tuple[bool, int, float]:
        """Take one slot: (allowed, remaining after this call, seconds until a slot frees)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._stamps and now - self._stamps[0] >= self.period:
                self._stamps.popleft()
            if len(self._stamps) >= self.limit:
                reset = self.period - (now - self._stamps[0])
                return False, 0, max(reset, 0.0)
            self._stamps.append(now)
            reset = self.period - (now - self._stamps[0])
            return True, self.limit - len(self._stamps), max(reset, 0.0)

    def reset(self) -> None:
        with self._lock:
            self._stamps.clear()


@dataclass
class Faults:
    """Fault knobs, changed at run time by tests, benchmarks and the ``/_sandbox/faults`` route.

    ``error_rate`` and ``timeout_rate`` are probabilities per request; ``storm_until`` (a
    ``time.monotonic()`` value) answers every request with 429 until then; ``fail_next`` makes
    the next N requests answer ``fail_status``.
    """

    latency: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    storm_until: float = 0.0
    fail_next: int = 0
    fail_status: int = 500
    seed: int | None = None
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self._rng.seed(self.seed)

    def roll(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    def storm(self, seconds: float) -> None:
        self.storm_until = time.monotonic() + seconds

    def clear(self) -> None:
        self.latency = self.error_rate = self.timeout_rate = 0.0
        self.storm_until = 0.0
        self.fail_next = 0


@dataclass
class CallLog:
    """Every request a sandbox answered: method, path and status, counted."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.calls.append((method, path, status))

    def count(
        self, *, method: str | None = None, contains: str | None = None, writes: bool = False
    ) -> int:
        with self._lock:
            return sum(
                1
                for m, p, _ in self.calls
                if (method is None or m == method)
                and (contains is None or contains in p)
                and (not writes or m in WRITE_METHODS)
            )

    def writes(self) -> int:
        """Calls that change state (search and batch/read are POSTs that only read)."""
        with self._lock:
            return sum(1 for m, p, _ in self.calls if is_write(m, p))

    def by_endpoint(self) -> Counter[str]:
        with self._lock:
            return Counter(f"{m} {p}" for m, p, _ in self.calls)

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


def is_write(method: str, path: str) -> bool:
    """True for a state-changing call: POSTs that only read (search, batch/read) are not."""
    if method not in WRITE_METHODS:
        return False
    return not (path.endswith("/search") or path.endswith("/batch/read"))


FaultResponder = Callable[[Request], Awaitable[Response | None]]


class FaultMiddleware:
    """ASGI middleware: applies :class:`Faults`, then logs the call in :class:`CallLog`.

    ``too_many`` builds the system's own 429 body for a storm; ``server_error`` its 5xx body.
    Paths under ``/_sandbox/`` (the control routes) are never faulted nor logged.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        faults: Faults,
        log: CallLog,
        too_many: Callable[[], Response],
        server_error: Callable[[int], Response],
    ) -> None:
        self.app = app
        self.faults = faults
        self.log = log
        self.too_many = too_many
        self.server_error = server_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox/"):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        f = self.faults
        if f.latency > 0:
            await asyncio.sleep(f.latency)
        fault: Response | None = None
        if f.storm_until and time.monotonic() < f.storm_until:
            fault = self.too_many()
        elif f.fail_next > 0:
            f.fail_next -= 1
            fault = self.server_error(f.fail_status)
        elif f.roll(f.timeout_rate):
            await asyncio.sleep(f.timeout_seconds)
            fault = self.server_error(504)
        elif f.roll(f.error_rate):
            fault = self.server_error(f._rng.choice((500, 502, 503)))
        if fault is not None:
            self.log.record(method, path, fault.status_code)
            await fault(scope, receive, send)
            return

        status_holder: dict[str, int] = {}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, send_wrapper)
        self.log.record(method, path, status_holder.get("status", 0))


def json_error(
    status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)
