"""PLACEHOLDER (engineer A implements this module; the lead takes A's file at merge).

Only the interface the runner calls, so that imports work on this branch before the merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from connector.errors import ConnectorError
from connector.onboarding.settings import WorkingHours

Interval = tuple[datetime, datetime]


class NoFreeSlot(ConnectorError):
    """Nothing free within the horizon (the message says why)."""


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
    raise NotImplementedError("connector.onboarding.slots comes from the steps branch")
