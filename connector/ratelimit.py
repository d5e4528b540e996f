"""Client-side rate limiting: one limiter per account and API family, shared by every call.

A :class:`Limiter` holds one or more rolling windows (say 190 requests per 10 s and 625,000 per
day). ``await limiter.acquire()`` returns when a request may be sent without exceeding any of
them. After each response, :meth:`Limiter.observe` tightens the limiter from the API's own
headers (HubSpot ``X-HubSpot-RateLimit-*``, Brevo ``x-sib-ratelimit-*``): a lower limit than
configured lowers ours, and "0 remaining" blocks until the window resets. After a 429,
:meth:`Limiter.block_for` holds every caller back for the time the API asked.

The windows are bucketed (a hundred buckets per window), so a daily window of a million
requests costs a hundred counters, not a million timestamps.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_BUCKETS = 100


@dataclass
class Window:
    """At most ``limit`` requests in any ``period`` seconds (counted in buckets)."""

    limit: int
    period: float
    name: str = ""
    _buckets: deque[list[float]] = field(default_factory=deque)  # [start, count]
    _count: int = 0

    @property
    def width(self) -> float:
        return self.period / _BUCKETS

    def _expire(self, now: float) -> None:
        # a bucket still counts while any part of it lies inside the last `period` seconds
        while self._buckets and self._buckets[0][0] + self.width <= now - self.period:
            _, n = self._buckets.popleft()
            self._count -= int(n)

    def wait_time(self, now: float) -> float:
        """Seconds until one more request fits (0 when it fits now)."""
        self._expire(now)
        if self._count < self.limit:
            return 0.0
        excess = self._count - self.limit + 1
        freed = 0
        for start, n in self._buckets:
            freed += int(n)
            if freed >= excess:
                return max(start + self.width + self.period - now, 0.0)
        return self.period  # not reachable: the deque holds every counted request

    def record(self, now: float) -> None:
        start = now - (now % self.width)
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([start, 1])
        self._count += 1

    @property
    def used(self) -> int:
        return self._count


class Limiter:
    """Rolling-window limiter for one account and API family; safe for many concurrent tasks."""

    def __init__(
        self,
        name: str,
        windows: list[Window],
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self.windows = windows
        self._clock = clock
        self._sleep = sleep
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()
        self.waited_seconds = 0.0

    async def acquire(self) -> None:
        """Wait until a request may go out, then count it against every window."""
        async with self._lock:
            while True:
                now = self._clock()
                wait = max([self._blocked_until - now] + [w.wait_time(now) for w in self.windows])
                if wait <= 0:
                    for w in self.windows:
                        w.record(now)
                    return
                self.waited_seconds += wait
                await self._sleep(wait)

    def block_for(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (after a 429, or "0 remaining")."""
        self._blocked_until = max(self._blocked_until, self._clock() + max(seconds, 0.0))

    def observe(
        self,
        *,
        limit: int | None = None,
        remaining: int | None = None,
        reset_seconds: float | None = None,
        period: float | None = None,
    ) -> None:
        """Tighten from the API's headers: its limit for the window, what is left, the reset."""
        if limit is not None and limit > 0:
            for w in self.windows:
                if (period is None or abs(w.period - period) < 1e-6) and limit < w.limit:
                    w.limit = limit
        if remaining is not None and remaining <= 0:
            wait = reset_seconds if reset_seconds is not None else (period or 1.0)
            self.block_for(wait)

    def usage(self, window: str) -> tuple[int, int] | None:
        """``(used, limit)`` of the window named ``window`` right now (requests this limiter
        counted in its rolling period); ``None`` if it has no such window. For ``/metrics``."""
        for w in self.windows:
            if w.name == window:
                w.wait_time(self._clock())  # drops the buckets that left the period
                return w.used, w.limit
        return None

    def __repr__(self) -> str:
        ws = ", ".join(f"{w.limit}/{w.period:g}s" for w in self.windows)
        return f"Limiter({self.name}: {ws})"


# --- the accounts' limits -----------------------------------------------------------------

HUBSPOT_TEN_SECOND = {"free": 100, "starter": 100, "professional": 190, "enterprise": 190}
HUBSPOT_DAILY = {
    "free": 250_000,
    "starter": 250_000,
    "professional": 625_000,
    "enterprise": 1_000_000,
}
HUBSPOT_SEARCH_PER_SECOND = 5
HUBSPOT_LIMIT_INCREASE_TEN_SECOND = 250
HUBSPOT_LIMIT_INCREASE_DAILY = 1_000_000


def hubspot_limiters(
    tier: str,
    *,
    limit_increase: bool = False,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Limiter]:
    """``general`` (per app, 10-second rolling + daily) and ``search`` (5/s per account).

    Search calls count against both: the general budget and their own.
    """
    per10 = HUBSPOT_LIMIT_INCREASE_TEN_SECOND if limit_increase else HUBSPOT_TEN_SECOND[tier]
    daily = HUBSPOT_DAILY[tier] + (HUBSPOT_LIMIT_INCREASE_DAILY if limit_increase else 0)
    return {
        "general": Limiter(
            "hubspot",
            [Window(per10, 10.0, "ten_secondly"), Window(daily, 86_400.0, "daily")],
            clock=clock,
            sleep=sleep,
        ),
        "search": Limiter(
            "hubspot-search",
            [Window(HUBSPOT_SEARCH_PER_SECOND, 1.0, "secondly")],
            clock=clock,
            sleep=sleep,
        ),
    }


# Brevo's per-endpoint families (API_NOTES_BREVO.md §2): (per second, per hour) by plan.
BREVO_FAMILIES: dict[str, dict[str, tuple[int | None, int]]] = {
    "general": {
        "contacts": (10, 36_000),
        "events": (10, 36_000),
        "smtp_email": (1_000, 3_600_000),
        "smtp_other": (None, 300),
        "other": (None, 100),
    },
    "advanced": {
        "contacts": (20, 72_000),
        "events": (20, 72_000),
        "smtp_email": (2_000, 7_200_000),
        "smtp_other": (None, 600),
        "other": (None, 200),
    },
}


def brevo_family(path: str) -> str:
    """The rate-limit family of a Brevo path (with or without the ``/v3`` prefix)."""
    p = path.split("?", 1)[0]
    if "/v3/" in p:
        p = p.split("/v3/", 1)[1]
    p = p.strip("/")
    if p.startswith("contacts"):
        return "contacts"
    if p.startswith("events"):
        return "events"
    if p == "smtp/email" or p.startswith("smtp/blockedContacts"):
        return "smtp_email"
    if p.startswith("smtp/"):
        return "smtp_other"
    return "other"


def brevo_limiters(
    plan: str = "general", *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
) -> dict[str, Limiter]:
    out: dict[str, Limiter] = {}
    for family, (per_second, per_hour) in BREVO_FAMILIES[plan].items():
        windows = [Window(per_hour, 3_600.0, "hourly")]
        if per_second is not None:
            windows.insert(0, Window(per_second, 1.0, "secondly"))
        out[family] = Limiter(f"brevo-{family}", windows, clock=clock, sleep=sleep)
    return out


def _int(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


def observe_hubspot_headers(limiter: Limiter, headers: Mapping[str, str]) -> None:
    """Read ``X-HubSpot-RateLimit-*`` (absent on search and sometimes elsewhere: then no-op)."""
    interval_ms = _int(headers, "x-hubspot-ratelimit-interval-milliseconds")
    period = interval_ms / 1000 if interval_ms else None
    limiter.observe(
        limit=_int(headers, "x-hubspot-ratelimit-max"),
        remaining=_int(headers, "x-hubspot-ratelimit-remaining"),
        reset_seconds=period,
        period=period,
    )
    daily_remaining = _int(headers, "x-hubspot-ratelimit-daily-remaining")
    if daily_remaining is not None and daily_remaining <= 0:
        limiter.block_for(
            60.0
        )  # the daily cap resets at the account's midnight; re-check each minute


def hubspot_daily_headers(headers: Mapping[str, str]) -> tuple[int | None, int | None]:
    """``(X-HubSpot-RateLimit-Daily, X-HubSpot-RateLimit-Daily-Remaining)``, each ``None`` when
    absent (search answers and OAuth-authorised calls carry neither). For ``/metrics``."""
    return (
        _int(headers, "x-hubspot-ratelimit-daily"),
        _int(headers, "x-hubspot-ratelimit-daily-remaining"),
    )


def observe_brevo_headers(limiter: Limiter, headers: Mapping[str, str]) -> None:
    """Read ``x-sib-ratelimit-*``; reset is a delta in seconds (API_NOTES_BREVO.md §2)."""
    reset = _int(headers, "x-sib-ratelimit-reset")
    limiter.observe(
        limit=None,  # the header's limit belongs to an unnamed window; only "remaining" tightens
        remaining=_int(headers, "x-sib-ratelimit-remaining"),
        reset_seconds=float(min(reset, 3_600)) if reset is not None else None,
    )
