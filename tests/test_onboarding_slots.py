"""The slot finder: properties against a brute-force oracle, and DST transitions by hand.

The oracle knows nothing of the implementation: it walks every UTC minute from the notice on,
and takes the first one whose wall time is on the :00/:30 grid of a working day, whose every
minute reads (on the wall clock) inside working hours on that date, and which no busy interval
touches. :func:`find_slot` must return exactly that slot, or raise NoFreeSlot when there is none.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.onboarding.settings import WEEKDAYS, WorkingHours
from connector.onboarding.slots import Interval, NoFreeSlot, find_slot, local_instants

ZONES = [
    "Europe/Oslo",
    "America/New_York",
    "UTC",
    "Asia/Kolkata",  # +05:30: local :00 is UTC :30
    "Asia/Kathmandu",  # +05:45
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/St_Johns",  # -03:30 / -02:30
]
MINUTE = timedelta(minutes=1)

# Instants near DST changes in the zones above, so that they come up often.
TRANSITIONS = [
    datetime(2025, 3, 30, 1, 0, tzinfo=UTC),  # Europe: spring forward
    datetime(2025, 10, 26, 1, 0, tzinfo=UTC),  # Europe: fall back
    datetime(2025, 3, 9, 7, 0, tzinfo=UTC),  # US: spring forward
    datetime(2025, 11, 2, 6, 0, tzinfo=UTC),  # US: fall back
    datetime(2025, 4, 5, 15, 0, tzinfo=UTC),  # Lord Howe: back 30 min
    datetime(2025, 10, 4, 15, 30, tzinfo=UTC),  # Lord Howe: forward 30 min
]


def oracle(
    busy: list[Interval],
    *,
    now: datetime,
    timezone: str,
    hours: WorkingHours,
    min_notice: timedelta,
    horizon: timedelta,
    duration: timedelta,
) -> Interval | None:
    tz = ZoneInfo(timezone)
    days = {WEEKDAYS.index(d) for d in hours.days}
    t = (now + min_notice).astimezone(UTC)
    if t.second or t.microsecond:
        t = t.replace(second=0, microsecond=0) + MINUTE
    limit = now + horizon
    while t + duration <= limit:
        local = t.astimezone(tz)
        if local.second == 0 and local.minute % 30 == 0 and local.weekday() in days:
            day = local.date()
            lo, hi = datetime.combine(day, hours.start), datetime.combine(day, hours.end)
            m, ok = t, True
            while ok and m < t + duration:
                wall = m.astimezone(tz).replace(tzinfo=None)
                ok = lo <= wall and wall + MINUTE <= hi
                m += MINUTE
            if ok and not any(a < t + duration and t < b for a, b in busy):
                return t, t + duration
        t += MINUTE
    return None


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    timezone = draw(st.sampled_from(ZONES))
    base = draw(
        st.one_of(
            st.sampled_from(TRANSITIONS),
            st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31)).map(
                lambda d: d.replace(tzinfo=UTC)
            ),
        )
    )
    now = base - timedelta(minutes=draw(st.integers(0, 36 * 60)), seconds=draw(st.integers(0, 59)))
    start_min = draw(st.integers(0, 22 * 60).map(lambda m: m - m % 15))
    end_min = draw(st.integers(start_min + 15, 23 * 60 + 59))
    hours = WorkingHours(
        days=draw(st.lists(st.sampled_from(WEEKDAYS), min_size=2, max_size=7, unique=True)),
        start=time(start_min // 60, start_min % 60),
        end=time(end_min // 60, end_min % 60),
    )
    horizon = timedelta(hours=draw(st.integers(12, 120)))
    busy: list[Interval] = []
    for _ in range(draw(st.integers(0, 14))):
        a = now + timedelta(minutes=draw(st.integers(-600, int(horizon.total_seconds() // 60))))
        b = a + timedelta(minutes=draw(st.integers(1, 900)))
        zone = draw(st.sampled_from([UTC, ZoneInfo(timezone)]))  # any aware zone is fine
        busy.append((a.astimezone(zone), b.astimezone(zone)))
    return {
        "busy": busy,
        "now": now,
        "timezone": timezone,
        "hours": hours,
        "min_notice": timedelta(minutes=draw(st.integers(0, 24 * 60))),
        "horizon": horizon,
        "duration": timedelta(minutes=draw(st.sampled_from([15, 30, 45, 60, 90, 120]))),
    }


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_the_slot_is_the_earliest_free_one_in_working_hours(case: dict[str, object]) -> None:
    expected = oracle(**case)  # type: ignore[arg-type]
    if expected is None:
        with pytest.raises(NoFreeSlot):
            find_slot(**case)  # type: ignore[arg-type]
        return
    start, end = find_slot(**case)  # type: ignore[arg-type]
    assert (start, end) == expected

    # and, spelled out, what the oracle checks:
    now, tz = case["now"], ZoneInfo(str(case["timezone"]))
    hours = case["hours"]
    assert isinstance(now, datetime) and isinstance(hours, WorkingHours)
    local = start.astimezone(tz)
    assert WEEKDAYS[local.weekday()] in hours.days
    assert local.minute in (0, 30) and local.second == 0
    assert local.time() >= hours.start
    assert (end - MINUTE).astimezone(tz).time() < hours.end
    assert (end - MINUTE).astimezone(tz).date() == local.date()
    assert start >= now + case["min_notice"]  # type: ignore[operator]
    assert end <= now + case["horizon"]  # type: ignore[operator]
    assert end - start == case["duration"]
    busy = case["busy"]
    assert isinstance(busy, list)
    assert not any(a < end and start < b for a, b in busy)


# --- by hand ----------------------------------------------------------------------------------

NINE_TO_FIVE = WorkingHours()
EVERY_DAY = list(WEEKDAYS)


def _find(busy: list[Interval], now: datetime, tz: str, **kw: object) -> Interval:
    args: dict[str, object] = {
        "hours": NINE_TO_FIVE,
        "min_notice": timedelta(0),
        "horizon": timedelta(days=14),
        "duration": timedelta(hours=1),
    }
    args.update(kw)
    return find_slot(busy, now=now, timezone=tz, **args)  # type: ignore[arg-type]


def oslo(*a: int, fold: int = 0) -> datetime:
    return datetime(*a, tzinfo=ZoneInfo("Europe/Oslo"), fold=fold)  # type: ignore[misc]


def ny(*a: int, fold: int = 0) -> datetime:
    return datetime(*a, tzinfo=ZoneInfo("America/New_York"), fold=fold)  # type: ignore[misc]


def test_back_to_back_overlapping_unsorted_busy_blocks_are_skipped() -> None:
    now = oslo(2025, 6, 2, 8, 0)  # a Monday
    busy = [
        (oslo(2025, 6, 2, 10, 0), oslo(2025, 6, 2, 11, 0)),
        (oslo(2025, 6, 2, 9, 0), oslo(2025, 6, 2, 10, 0)),
        (oslo(2025, 6, 2, 10, 30), oslo(2025, 6, 2, 11, 15)),
    ]
    start, end = _find(busy, now, "Europe/Oslo")
    assert start == oslo(2025, 6, 2, 11, 30)  # 11:15 is off the grid: the next half hour
    assert end == oslo(2025, 6, 2, 12, 30)
    # a slot may start exactly where a block ends
    start, _ = _find([(oslo(2025, 6, 2, 9, 0), oslo(2025, 6, 2, 10, 0))], now, "Europe/Oslo")
    assert start == oslo(2025, 6, 2, 10, 0)


def test_a_block_spanning_days_and_a_weekend() -> None:
    now = oslo(2025, 6, 5, 8, 0)  # Thursday
    busy = [(oslo(2025, 6, 5, 12, 0), oslo(2025, 6, 9, 13, 10))]
    blocked_morning = [(oslo(2025, 6, 5, 8, 0), oslo(2025, 6, 5, 12, 0)), *busy]
    assert _find(blocked_morning, now, "Europe/Oslo")[0] == oslo(2025, 6, 9, 13, 30)


def test_notice_and_the_end_of_the_day() -> None:
    now = oslo(2025, 6, 2, 15, 50)
    # 16:00–17:00 fits (ends exactly at 17:00); with 30 minutes' notice it does not, so Tuesday
    assert _find([], now, "Europe/Oslo")[0] == oslo(2025, 6, 2, 16, 0)
    start = _find([], now, "Europe/Oslo", min_notice=timedelta(minutes=30))[0]
    assert start == oslo(2025, 6, 3, 9, 0)


def test_fully_busy_within_the_horizon_is_a_clear_failure() -> None:
    now = oslo(2025, 6, 2, 8, 0)
    busy = [(oslo(2025, 6, 1, 0, 0), oslo(2025, 6, 20, 0, 0))]
    with pytest.raises(NoFreeSlot) as err:
        _find(busy, now, "Europe/Oslo")
    msg = str(err.value)
    assert "no free 60-minute slot" in msg and "Europe/Oslo" in msg and "1 busy" in msg
    assert "horizon_days" in msg and "no event was created" in msg


def test_working_hours_shorter_than_the_call() -> None:
    hours = WorkingHours(start=time(9, 0), end=time(9, 45))
    with pytest.raises(NoFreeSlot, match="shorter than the call"):
        _find([], oslo(2025, 6, 2, 8, 0), "Europe/Oslo", hours=hours)


def test_the_slot_must_end_within_the_horizon() -> None:
    now = oslo(2025, 6, 2, 15, 0)
    assert _find([], now, "Europe/Oslo", horizon=timedelta(hours=2))[0] == oslo(2025, 6, 2, 15, 0)
    with pytest.raises(NoFreeSlot):
        _find([], now, "Europe/Oslo", horizon=timedelta(minutes=59))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _find([], datetime(2025, 6, 2, 8, 0), "Europe/Oslo")
    with pytest.raises(ValueError, match="busy start"):
        _find([(datetime(2025, 6, 2), datetime(2025, 6, 3))], oslo(2025, 6, 2, 8, 0), "UTC")


# --- DST ----------------------------------------------------------------------------------------


def test_oslo_working_day_is_local_wall_time_across_the_change() -> None:
    # Friday 28 March 2025 (CET, +01) → Monday 31 March (CEST, +02)
    friday = _find([], oslo(2025, 3, 28, 8, 0), "Europe/Oslo")[0]
    assert friday.astimezone(UTC) == datetime(2025, 3, 28, 8, 0, tzinfo=UTC)
    monday = _find([], oslo(2025, 3, 28, 18, 0), "Europe/Oslo")[0]
    assert monday == oslo(2025, 3, 31, 9, 0)
    assert monday.astimezone(UTC) == datetime(2025, 3, 31, 7, 0, tzinfo=UTC)


def test_oslo_spring_forward_gap_is_never_offered() -> None:
    hours = WorkingHours(days=EVERY_DAY, start=time(1, 0), end=time(5, 0))
    now = oslo(2025, 3, 30, 0, 0)
    # 01:00 CET + 1 h of elapsed time ends at 03:00 CEST: inside 01:00–05:00 on the wall clock
    start, end = _find([], now, "Europe/Oslo", hours=hours)
    assert (start, end) == (oslo(2025, 3, 30, 1, 0), oslo(2025, 3, 30, 3, 0))
    # busy until 01:00 UTC (= 03:00 CEST): 02:00 and 02:30 do not exist, so 03:00 is next
    busy = [(datetime(2025, 3, 30, 0, 0, tzinfo=UTC), datetime(2025, 3, 30, 0, 45, tzinfo=UTC))]
    start, _ = _find(busy, now, "Europe/Oslo", hours=hours, duration=timedelta(minutes=30))
    assert start.astimezone(UTC) == datetime(2025, 3, 30, 1, 0, tzinfo=UTC)
    assert start.astimezone(ZoneInfo("Europe/Oslo")).strftime("%H:%M %Z") == "03:00 CEST"
    assert local_instants(datetime(2025, 3, 30, 2, 30), ZoneInfo("Europe/Oslo")) == []


def test_oslo_fall_back_fold_offers_both_instants_in_order() -> None:
    hours = WorkingHours(days=EVERY_DAY, start=time(1, 0), end=time(4, 0))
    now = oslo(2025, 10, 26, 0, 0)
    half = timedelta(minutes=30)
    # busy until 00:30 UTC = 02:30 CEST (the first 02:30): that first 02:30 is free
    busy = [(oslo(2025, 10, 26, 0, 0), datetime(2025, 10, 26, 0, 30, tzinfo=UTC))]
    start, _ = _find(busy, now, "Europe/Oslo", hours=hours, duration=half)
    assert start == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)
    # busy until 01:00 UTC = 02:00 CET (the second 02:00): the repeated 02:00 is offered
    busy = [(oslo(2025, 10, 26, 0, 0), datetime(2025, 10, 26, 1, 0, tzinfo=UTC))]
    start, _ = _find(busy, now, "Europe/Oslo", hours=hours, duration=half)
    assert start == datetime(2025, 10, 26, 1, 0, tzinfo=UTC)
    assert start.astimezone(ZoneInfo("Europe/Oslo")).strftime("%H:%M %Z") == "02:00 CET"
    assert len(local_instants(datetime(2025, 10, 26, 2, 0), ZoneInfo("Europe/Oslo"))) == 2


def test_a_slot_may_not_run_past_working_hours_through_the_fold() -> None:
    # 01:00–02:30 on the fall-back day. 02:00 CEST + 1 h ends at 02:00 CET — its end reads
    # earlier than 02:30 — but on the way the wall clock read 02:30…02:59 CEST, past the end of
    # working hours, so it is refused (as is 02:00 CET, ending 03:00): the next day's 01:00.
    hours = WorkingHours(days=EVERY_DAY, start=time(1, 0), end=time(2, 30))
    busy = [(oslo(2025, 10, 26, 0, 0), oslo(2025, 10, 26, 2, 0))]
    start, _ = _find(busy, oslo(2025, 10, 26, 0, 0), "Europe/Oslo", hours=hours)
    assert start == oslo(2025, 10, 27, 1, 0)


def test_new_york_spring_forward_and_fall_back_weeks() -> None:
    # Friday 7 March 2025 (EST, -05) → Monday 10 March (EDT, -04)
    start = _find([], ny(2025, 3, 7, 17, 0), "America/New_York")[0]
    assert start.astimezone(UTC) == datetime(2025, 3, 10, 13, 0, tzinfo=UTC)
    # Friday 31 October 2025 (EDT) → Monday 3 November (EST)
    start = _find([], ny(2025, 10, 31, 17, 0), "America/New_York")[0]
    assert start.astimezone(UTC) == datetime(2025, 11, 3, 14, 0, tzinfo=UTC)
    # Sunday 2 November, all day: 01:30 EDT + 1 h is 01:30 EST — allowed, one elapsed hour
    hours = WorkingHours(days=["sun"], start=time(0, 0), end=time(23, 59))
    busy = [(ny(2025, 11, 2, 0, 0), ny(2025, 11, 2, 1, 30))]
    start, end = _find(busy, ny(2025, 11, 1, 12, 0), "America/New_York", hours=hours)
    assert start == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)
    assert end == datetime(2025, 11, 2, 6, 30, tzinfo=UTC)


def test_new_york_change_day_is_nine_to_five_local() -> None:
    hours = WorkingHours(days=["sun"], start=time(9, 0), end=time(17, 0))
    # 9 March 2025 is 8 h on the wall clock but 8 h elapsed too (the gap is at 02:00)
    busy = [(ny(2025, 3, 9, 0, 0), ny(2025, 3, 9, 16, 0))]
    start, end = _find(busy, ny(2025, 3, 8, 12, 0), "America/New_York", hours=hours)
    assert (start, end) == (ny(2025, 3, 9, 16, 0), ny(2025, 3, 9, 17, 0))
    with pytest.raises(NoFreeSlot):
        busy = [(ny(2025, 3, 9, 0, 0), ny(2025, 3, 9, 16, 30))]
        _find(
            busy, ny(2025, 3, 8, 12, 0), "America/New_York", hours=hours, horizon=timedelta(days=2)
        )
