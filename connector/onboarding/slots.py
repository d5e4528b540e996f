"""The onboarding call's slot: the owner's earliest free time in working hours (pure, no I/O).

Rules, in the order :func:`find_slot` applies them:

* **Grid.** A slot starts on the hour or the half hour *of the local wall clock* of
  ``timezone`` (09:00, 09:30 …; with working hours from 09:15 the first start is 09:30). That is
  what a person expects to be offered, also in zones whose UTC offset is not whole hours.
* **Working hours** are wall-clock times on a working day, built per local date: 09:00–17:00
  means 09:00–17:00 local even on a DST change day (the day is then 7 or 9 hours long in
  elapsed time). Every instant of the slot must have a local wall time inside
  ``[start, end]`` on that same date; a slot may end exactly at ``end``. The slot itself lasts
  ``duration`` of elapsed time.
* **DST, explicitly.** A grid time that does not exist that day (inside a spring-forward gap)
  is not offered. A grid time that exists twice (inside a fall-back fold) is offered twice, as
  its two instants, the earlier first. A slot that spans a transition is checked piece by
  piece, so it never runs outside working hours on the wall clock.
* **Notice and horizon.** The slot starts at or after ``now + min_notice`` and ends at or
  before ``now + horizon``.
* **Busy intervals** are half-open ``[start, end)``; they may be unsorted, overlapping, or span
  days. A slot may start exactly when a busy block ends (back-to-back) and end exactly when
  one starts.

The earliest slot (in absolute time) satisfying all of these is returned; none →
:class:`NoFreeSlot`, whose message says what was searched so the user can widen it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from connector.errors import ConnectorError
from connector.onboarding.settings import WEEKDAYS, WorkingHours

Interval = tuple[datetime, datetime]
"""Aware datetimes, ``start < end``; half-open."""

GRID = timedelta(minutes=30)
_TICK = timedelta(seconds=1)
_MAX_TRANSITIONS = 4


class NoFreeSlot(ConnectorError):
    """Nothing free within the horizon; the message says what was searched and how to widen it."""


def find_slot(
    busy: Sequence[Interval],
    *,
    now: datetime,
    timezone: str,
    hours: WorkingHours,
    min_notice: timedelta,
    horizon: timedelta,
    duration: timedelta,
) -> Interval:
    """The earliest free slot of ``duration`` (see the module docstring for the rules)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if duration <= timedelta(0):
        raise ValueError("duration must be positive")
    if min_notice < timedelta(0) or horizon <= timedelta(0):
        raise ValueError("min_notice must be ≥ 0 and horizon > 0")
    tz = ZoneInfo(timezone)
    earliest = now.astimezone(UTC) + min_notice
    latest_end = now.astimezone(UTC) + horizon
    merged = merge_intervals(busy)
    busy_starts = [a for a, _ in merged]
    workdays = {WEEKDAYS.index(d) for d in hours.days}

    candidates: list[tuple[datetime, date]] = []
    day = earliest.astimezone(tz).date() - timedelta(days=1)
    last_day = latest_end.astimezone(tz).date()
    while day <= last_day:
        if day.weekday() in workdays:
            candidates.extend((s, day) for s in _day_starts(day, tz, hours))
        day += timedelta(days=1)
    candidates.sort()

    for start, on in candidates:
        end = start + duration
        if start < earliest or end > latest_end:
            continue
        if not _inside_hours(start, end, on, tz, hours):
            continue
        i = bisect.bisect_left(busy_starts, end) - 1
        if i >= 0 and merged[i][1] > start:
            continue  # the busy block starting last before our end still runs into the slot
        return start, end
    raise NoFreeSlot(_why_none(now, tz, hours, min_notice, horizon, duration, len(merged)))


def merge_intervals(busy: Sequence[Interval]) -> list[Interval]:
    """Busy intervals in UTC, sorted, with overlapping and touching ones merged."""
    out: list[Interval] = []
    for a, b in sorted((_utc(a, "busy start"), _utc(b, "busy end")) for a, b in busy):
        if b < a:
            raise ValueError(
                f"busy interval ends before it starts: {a.isoformat()} > {b.isoformat()}"
            )
        if a == b:
            continue
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, not {value.isoformat()}")
    return value.astimezone(UTC)


def local_instants(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """The UTC instants whose wall time in ``tz`` is ``wall`` (naive): none in a DST gap, two in
    a fold (earlier first), else one."""
    out: list[datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == wall and instant not in out:
            out.append(instant)
    return sorted(out)


def _day_starts(day: date, tz: ZoneInfo, hours: WorkingHours) -> Iterator[datetime]:
    """Every instant on ``day`` whose wall time is on the grid within working hours."""
    first = datetime.combine(day, hours.start)
    minutes = first.hour * 60 + first.minute
    grid = int(GRID.total_seconds() // 60)
    wall = datetime.combine(day, time()) + timedelta(minutes=-(-minutes // grid) * grid)
    end = datetime.combine(day, hours.end)
    while wall < end:
        yield from local_instants(wall, tz)
        wall += GRID


def _inside_hours(
    start: datetime, end: datetime, day: date, tz: ZoneInfo, hours: WorkingHours
) -> bool:
    """Whether every instant of ``[start, end)`` reads, on the wall clock, as a time on ``day``
    within ``[hours.start, hours.end]``.

    Between two offset changes the wall clock runs linearly, so each such piece is checked by
    its two ends: its first instant's wall time ≥ the day's start, and its last (left limit)
    ≤ the day's end.
    """
    day_start = datetime.combine(day, hours.start)
    day_end = datetime.combine(day, hours.end)
    cuts = [start, *_offset_changes(start, end, tz), end]
    for a, b in itertools.pairwise(cuts):
        offset = a.astimezone(tz).utcoffset()
        assert offset is not None
        wall_a = (a + offset).replace(tzinfo=None)
        wall_b = (b + offset).replace(tzinfo=None)
        if wall_a < day_start or wall_b > day_end:
            return False
    return True


def _offset_changes(start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """The instants in ``(start, end)`` where ``tz``'s UTC offset changes (to the second).

    Found by bisection between instants of different offsets; assumes the offset does not change
    and change back within one span, which no zone does within a working day.
    """
    out: list[datetime] = []
    a = start
    last = end - _TICK
    while a < last and len(out) < _MAX_TRANSITIONS:
        off_a = a.astimezone(tz).utcoffset()
        if last.astimezone(tz).utcoffset() == off_a:
            break
        lo, hi = a, last  # offset(lo) == off_a != offset(hi)
        while hi - lo > _TICK:
            mid = lo + (hi - lo) / 2
            mid = mid.replace(microsecond=0)
            if mid <= lo:
                mid = lo + _TICK
            if mid.astimezone(tz).utcoffset() == off_a:
                lo = mid
            else:
                hi = mid
        out.append(hi)
        a = hi
    return out


def _why_none(
    now: datetime,
    tz: ZoneInfo,
    hours: WorkingHours,
    min_notice: timedelta,
    horizon: timedelta,
    duration: timedelta,
    busy_count: int,
) -> str:
    days = ", ".join(hours.days)
    span = f"{hours.start:%H:%M}–{hours.end:%H:%M}"
    utc_now = now.astimezone(UTC)
    window_hours = datetime.combine(date.min, hours.end) - datetime.combine(date.min, hours.start)
    if window_hours < duration:
        hint = (
            f"working hours {span} are shorter than the call ({_minutes(duration)}): widen "
            "onboarding.calendar.working_hours or shorten duration_minutes"
        )
    else:
        hint = (
            "every candidate was busy or outside the window: widen onboarding.calendar."
            "horizon_days or working_hours, or lower min_notice_hours"
        )
    return (
        f"no free {_minutes(duration)} slot between "
        f"{(utc_now + min_notice).astimezone(tz):%Y-%m-%d %H:%M} and "
        f"{(utc_now + horizon).astimezone(tz):%Y-%m-%d %H:%M} {tz.key} "
        f"(working days {days}, {span}; "
        f"{busy_count} busy interval(s)) — {hint}; no event was created"
    )


def _minutes(d: timedelta) -> str:
    return f"{int(d.total_seconds() // 60)}-minute"


__all__ = ["GRID", "Interval", "NoFreeSlot", "find_slot", "local_instants", "merge_intervals"]
