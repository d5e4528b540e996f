"""The client-side limiter: rolling windows, header tightening, 429 blocking (fake clock)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from connector.ratelimit import (
    Limiter,
    Window,
    brevo_family,
    brevo_limiters,
    hubspot_limiters,
    observe_brevo_headers,
    observe_hubspot_headers,
)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def make(windows: list[Window]) -> tuple[Limiter, FakeTime]:
    t = FakeTime()
    return Limiter("t", windows, clock=t.clock, sleep=t.sleep), t


async def test_window_allows_limit_then_waits_for_oldest() -> None:
    limiter, t = make([Window(10, 10.0)])
    for _ in range(10):
        await limiter.acquire()
    assert t.slept == []
    await limiter.acquire()
    assert 9.9 <= sum(t.slept) <= 10.2


@settings(max_examples=50, deadline=None)
@given(
    limit=st.integers(1, 20),
    period=st.sampled_from([1.0, 10.0]),
    gaps=st.lists(st.floats(0, 3), min_size=1, max_size=80),
)
def test_never_more_than_limit_in_any_period(limit: int, period: float, gaps: list[float]) -> None:
    limiter, t = make([Window(limit, period)])
    stamps: list[float] = []

    async def run() -> None:
        for gap in gaps:
            t.now += gap
            await limiter.acquire()
            stamps.append(t.now)

    asyncio.run(run())
    for i, start in enumerate(stamps):
        in_window = [s for s in stamps[i:] if s < start + period - 1e-9]
        assert len(in_window) <= limit


async def test_headers_tighten_and_block() -> None:
    limiter, t = make([Window(190, 10.0)])
    observe_hubspot_headers(
        limiter,
        {
            "X-HubSpot-RateLimit-Max".lower(): "100",
            "x-hubspot-ratelimit-remaining": "0",
            "x-hubspot-ratelimit-interval-milliseconds": "10000",
        },
    )
    assert limiter.windows[0].limit == 100
    await limiter.acquire()
    assert sum(t.slept) >= 10.0


async def test_brevo_reset_is_a_delta_in_seconds() -> None:
    limiter, t = make([Window(10, 1.0)])
    observe_brevo_headers(limiter, {"x-sib-ratelimit-remaining": "0", "x-sib-ratelimit-reset": "7"})
    await limiter.acquire()
    assert 7.0 <= sum(t.slept) < 7.1


async def test_block_for_holds_concurrent_callers() -> None:
    limiter, t = make([Window(100, 10.0)])
    limiter.block_for(3.0)
    await asyncio.gather(*(limiter.acquire() for _ in range(5)))
    assert 3.0 <= sum(t.slept) < 3.1


def test_families_and_tiers() -> None:
    assert brevo_family("/v3/contacts/import") == "contacts"
    assert brevo_family("/v3/contacts/lists/10/contacts/add") == "contacts"
    assert brevo_family("/v3/events") == "events"
    assert brevo_family("/v3/smtp/email") == "smtp_email"
    assert brevo_family("/v3/processes/5") == "other"
    assert brevo_family("/v3/crm/deals") == "other"
    hs = hubspot_limiters("professional")
    assert [w.limit for w in hs["general"].windows] == [190, 625_000]
    assert hs["search"].windows[0].limit == 5
    assert hubspot_limiters("starter", limit_increase=True)["general"].windows[0].limit == 250
    br = brevo_limiters("general")
    assert [w.limit for w in br["contacts"].windows] == [10, 36_000]
    assert [w.limit for w in br["other"].windows] == [100]
