"""The Brevo CRM budget planner: packing, the fewest link calls, and the rolling-window schedule.

Property tests (hypothesis) against brute force: the schedule never breaks the window and never
waits longer than it must; the link plan applies every change and is as small as the best
choice of sides; packing stays within the bounds the planner reports.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.brevo.crm_budget import (
    Budget,
    CrmWork,
    ImportQueue,
    LinkCall,
    LinkChange,
    budget_from_limiter,
    hourly_limit,
    import_calls,
    import_calls_at_least,
    iter_call_times,
    min_vertex_cover,
    pack,
    plan,
    plan_link_calls,
    read_calls,
    read_strategy,
    scan_pages,
)
from connector.ratelimit import brevo_limiters

EPS = 1e-6

# --- packing --------------------------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=400), max_size=200),
    capacity=st.integers(min_value=400, max_value=3000),
)
def test_pack_keeps_order_fits_and_stays_within_the_planned_bounds(
    sizes: list[int], capacity: int
) -> None:
    groups = pack(sizes, capacity)
    assert [i for g in groups for i in g] == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in g) <= capacity for g in groups)
    for before, after in itertools.pairwise(groups):  # next-fit: a group closes only when full
        assert sum(sizes[i] for i in before) + sizes[after[0]] > capacity
    queue = ImportQueue.of(sizes, header_bytes=0)
    assert import_calls_at_least(queue, capacity) <= len(groups) <= import_calls(queue, capacity)


@given(
    size=st.integers(min_value=1, max_value=500),
    rows=st.integers(min_value=1, max_value=300),
    header=st.integers(min_value=0, max_value=200),
    capacity=st.integers(min_value=500, max_value=5000),
)
def test_rows_of_one_size_are_planned_exactly(
    size: int, rows: int, header: int, capacity: int
) -> None:
    queue = ImportQueue.of([size] * rows, header_bytes=header)
    chunk = capacity + header
    per_request = capacity // size
    assert len(pack([size] * rows, capacity)) == -(-rows // per_request)
    assert import_calls(queue, chunk) >= -(-rows // per_request)


def test_a_thousand_small_rows_are_one_request_and_an_oversized_row_is_refused() -> None:
    queue = ImportQueue.of([120] * 1000, header_bytes=40)
    assert import_calls(queue) == import_calls_at_least(queue) == 1
    with pytest.raises(ValueError, match="more than"):
        pack([10, 5000], 1000)
    assert import_calls(ImportQueue()) == 0


# --- pages and reads ------------------------------------------------------------------------


@given(
    ids=st.integers(min_value=0, max_value=5000),
    total=st.one_of(st.none(), st.integers(min_value=0, max_value=100_000)),
    page=st.integers(min_value=1, max_value=1000),
)
def test_reads_take_the_cheaper_way(ids: int, total: int | None, page: int) -> None:
    calls = read_calls(ids, total, page)
    assert calls <= ids
    if ids and total is not None:
        assert calls == min(ids, scan_pages(total, page))
    assert (read_strategy(ids, total, page) == "scan") == (
        total is not None and scan_pages(total, page) < ids
    )


def test_scan_pages_end_on_a_short_page() -> None:
    assert [scan_pages(n, 1000) for n in (0, 999, 1000, 2500)] == [1, 1, 2, 3]


# --- the schedule ---------------------------------------------------------------------------

history_st = st.lists(
    st.tuples(st.floats(min_value=-4000, max_value=40, allow_nan=False), st.integers(1, 5)),
    max_size=30,
)


def _in_window(times: Sequence[float], x: float, period: float) -> int:
    return sum(1 for t in times if t > x - period + EPS)


@settings(max_examples=200)
@given(
    limit=st.integers(min_value=1, max_value=12),
    period=st.sampled_from([60.0, 3600.0]),
    history=history_st,
    calls=st.integers(min_value=0, max_value=60),
    blocked=st.floats(min_value=0, max_value=500, allow_nan=False),
    bucket=st.sampled_from([0.0, 0.6, 36.0]),
)
def test_schedule_keeps_the_window_and_sends_each_call_as_early_as_it_can(
    limit: int,
    period: float,
    history: list[tuple[float, int]],
    calls: int,
    blocked: float,
    bucket: float,
) -> None:
    now = 0.0
    budget = Budget(limit, period, tuple(history), blocked, bucket)
    times = list(iter_call_times(calls, budget, now))
    assert len(times) == calls
    assert times == sorted(times) and all(t >= max(now, blocked) for t in times)
    past = [t for t, n in history for _ in range(n) if t + period > now]
    start = max(now, blocked)
    for i, x in enumerate(times):
        earlier = past + [budget.leaves_at(t) for t in times[:i]]
        # the window holds at most `limit` calls, this one included
        assert _in_window(earlier, x, period) < limit
        # and a moment sooner it could not have gone out (or it goes at the earliest moment)
        if x > start + EPS and (i == 0 or x > times[i - 1] + EPS):
            assert _in_window(earlier, x - 10 * EPS, period) >= limit
    if not blocked and calls <= budget.available(now):
        assert all(t == now for t in times)


@given(
    history=history_st,
    a=st.integers(min_value=0, max_value=300),
    b=st.integers(min_value=0, max_value=300),
)
def test_more_work_is_never_done_sooner(history: list[tuple[float, int]], a: int, b: int) -> None:
    budget = Budget(100, 3600.0, tuple(history))
    small, big = sorted((a, b))
    first = plan(CrmWork(link_calls=small), budget, 0.0)
    second = plan(CrmWork(link_calls=big), budget, 0.0)
    assert first.done_at <= second.done_at
    assert second.total == big
    # each full hour of work beyond what is left now takes (about) an hour more
    left = budget.available(0.0)
    if big > left:
        assert second.wait_seconds >= (big - left - 1) // 100 * 3600


def test_plan_counts_each_kind_and_reads_a_fresh_limiter() -> None:
    limiters = brevo_limiters("advanced")
    assert hourly_limit("advanced") == 200 and hourly_limit() == 100
    budget = budget_from_limiter(limiters["other"], now=0.0)
    assert budget.limit == 200 and budget.available(0.0) == 200
    work = CrmWork(
        company_imports=ImportQueue.of([100] * 1000, 50),
        deal_imports=ImportQueue.of([80] * 10, 30),
        polls_per_import=2,
        link_calls=7,
        reads=((3, None), (50, 1200)),
        scans=(2500, 0),
        other_calls=1,
    )
    p = plan(work, budget, now=5.0)
    assert (p.imports, p.polls, p.links, p.reads, p.pages, p.other) == (2, 4, 7, 5, 4, 1)
    assert p.total == 23 and p.fits_now and p.done_at == 5.0
    assert p.summary().startswith("23 Brevo CRM call(s) (2 import, 4 poll, 7 link")


async def test_budget_from_a_used_limiter() -> None:
    now = [100.0]
    limiter = brevo_limiters(clock=lambda: now[0])["other"]
    for _ in range(60):
        await limiter.acquire()
    budget = budget_from_limiter(limiter, now[0])
    assert budget.available(now[0]) == 40
    p = plan(CrmWork(link_calls=50), budget, now[0])
    # the 60 calls, and the 40 sent now, leave the window when their 36-second bucket does
    assert p.done_at == pytest.approx(72.0 + 36.0 + 3600.0)
    for _ in range(40):
        await limiter.acquire()
    assert limiter.windows[0].wait_time(now[0]) == pytest.approx(p.done_at - now[0])
    limiter.block_for(30.0)
    assert budget_from_limiter(limiter, now[0]).available(now[0]) == 0


# --- links ----------------------------------------------------------------------------------

COMPANIES = ["c0", "c1", "c2", "c3"]
DEALS = ["d0", "d1", "d2", "d3"]
change_st = st.one_of(
    st.builds(
        LinkChange,
        company=st.sampled_from(COMPANIES),
        contact=st.integers(1, 4),
        add=st.booleans(),
    ),
    st.builds(
        LinkChange, deal=st.sampled_from(DEALS), contact=st.integers(1, 4), add=st.booleans()
    ),
    st.builds(
        LinkChange,
        company=st.sampled_from(COMPANIES),
        deal=st.sampled_from(DEALS),
        add=st.booleans(),
    ),
)


def _final(changes: Sequence[LinkChange]) -> dict[tuple[str, str], bool]:
    """The last intent per linked pair (``company|deal`` id, other id)."""
    out: dict[tuple[str, str], bool] = {}
    for ch in changes:
        if ch.contact is not None:
            rid = ch.company if ch.company is not None else ch.deal
            assert rid is not None
            out[(rid, f"contact:{ch.contact}")] = ch.add
        else:
            assert ch.company is not None and ch.deal is not None
            out[(ch.company, ch.deal)] = ch.add
    return out


def _applied(calls: Sequence[LinkCall]) -> dict[tuple[str, str], bool]:
    out: dict[tuple[str, str], bool] = {}
    for call in calls:
        for contact in call.link_contacts:
            out[(call.id, f"contact:{contact}")] = True
        for contact in call.unlink_contacts:
            out[(call.id, f"contact:{contact}")] = False
        for other in call.link_others:
            key = (call.id, other) if call.kind == "company" else (other, call.id)
            assert key not in out, "a company-deal link was written twice"
            out[key] = True
        for other in call.unlink_others:
            key = (call.id, other) if call.kind == "company" else (other, call.id)
            assert key not in out, "a company-deal link was written twice"
            out[key] = False
    return out


def _brute_force_calls(changes: Sequence[LinkChange]) -> int:
    final = _final(changes)
    forced = {rid for rid, other in final if other.startswith("contact:")}
    pairs = [(c, d) for c, d in final if not d.startswith("contact:")]
    free = sorted({v for p in pairs for v in p} - forced)
    for size in range(len(free) + 1):
        for extra in itertools.combinations(free, size):
            chosen = forced | set(extra)
            if all(c in chosen or d in chosen for c, d in pairs):
                return len(forced) + size
    raise AssertionError("unreachable: choosing every vertex covers every pair")


@settings(max_examples=300)
@given(changes=st.lists(change_st, max_size=25))
def test_link_plan_applies_the_last_intent_in_the_fewest_calls(
    changes: list[LinkChange],
) -> None:
    calls = plan_link_calls(changes)
    assert _applied(calls) == _final(changes)
    assert len({(c.kind, c.id) for c in calls}) == len(calls)  # one call per record
    assert len(calls) == _brute_force_calls(changes)


@given(
    edges=st.lists(
        st.tuples(st.sampled_from("abcdef"), st.sampled_from("uvwxyz")), max_size=20, unique=True
    )
)
def test_min_vertex_cover_is_minimum(edges: list[tuple[str, str]]) -> None:
    left, right = min_vertex_cover(edges)
    assert all(a in left or b in right for a, b in edges)
    vertices = sorted({("L", a) for a, _ in edges} | {("R", b) for _, b in edges})
    best = next(
        size
        for size in range(len(vertices) + 1)
        for pick in itertools.combinations(vertices, size)
        if all(("L", a) in pick or ("R", b) in pick for a, b in edges)
    )
    assert len(left) + len(right) == best


def test_a_long_alternating_chain_does_not_overflow() -> None:
    n = 5000  # a path c0-d0-c1-d1-…: deep augmenting paths
    edges = [(f"c{i}", f"d{i}") for i in range(n)] + [(f"c{i + 1}", f"d{i}") for i in range(n - 1)]
    left, right = min_vertex_cover(edges)
    assert len(left) + len(right) == n
    assert all(a in left or b in right for a, b in edges)


def test_link_calls_split_past_the_id_limit() -> None:
    changes = [LinkChange(company="c", contact=i) for i in range(25)]
    calls = plan_link_calls(changes, max_ids_per_call=10)
    assert [c.size for c in calls] == [10, 10, 5]
    assert sorted(i for c in calls for i in c.link_contacts) == list(range(25))
    with pytest.raises(ValueError, match="exactly two"):
        LinkChange(company="c", deal="d", contact=1)
