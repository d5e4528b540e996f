"""Every Prometheus metric of the daemon, in one registry per process (:class:`Metrics`).

The web app serves them on ``GET /metrics``; the API clients, the engines and the intake feed
them. Three kinds:

- **counted as it happens** (in-process counters, reset when the process restarts):
  webhook intake (:class:`WebMetrics`), API calls and 429s (:class:`ApiMetrics`, fed by the one
  place each client sends every request through), records synced (:class:`SyncMetrics`, fed
  by every engine pass of the process: pulls, reconciliations, the inbox worker);
- **the daily API budget** (:class:`ApiMetrics`, read at scrape time): HubSpot's
  ``X-HubSpot-RateLimit-Daily``/``-Daily-Remaining`` of the last answer that carried them;
  without them (OAuth-authorised calls, search answers) the limiter's rolling 24 h window —
  the tier's daily cap from :mod:`connector.ratelimit` and the calls this process made;
- **read from the store at scrape time** (:class:`StoreCollector`): inbox depth, dead inbox
  events, open dead letters, and per side and object type the start of the last successful
  pull and the sync lag (now minus that start: every change older than the lag has been read).
  The ``/metrics`` handler reads them in one short read-only transaction under
  ``webhooks.db_timeout_seconds`` (:func:`read_snapshot`) before rendering; if the store does
  not answer in time, ``connector_store_up`` is 0 and those gauges are left out, rather than
  shown stale. The intake never waits for a scrape (SQLite: a deferred read transaction beside
  the writer; PostgreSQL: ``statement_timeout`` on top of the client-side timeout).

Names, labels and meaning are listed in the README ("Health and metrics").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.ratelimit import Limiter
from connector.store import deadletters, inbox, runs
from connector.store.models import System

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SIDES: tuple[System, ...] = ("hubspot", "brevo")


# --- webhook intake --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebMetrics:
    """The intake's metrics (one set per registry)."""

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


# --- API calls and the daily budget ---------------------------------------------------------


@dataclass
class _DailyBudget:
    """What is known of one API's daily budget: the headers, else a limiter's daily window."""

    limiter: Limiter | None = None
    window: str = "daily"
    header_limit: int | None = None
    header_remaining: int | None = None

    def read(self) -> tuple[int, int] | None:
        """``(limit, remaining)``, or ``None`` when nothing is known."""
        if self.header_limit is not None and self.header_remaining is not None:
            return self.header_limit, max(self.header_remaining, 0)
        if self.limiter is not None:
            usage = self.limiter.usage(self.window)
            if usage is not None:
                used, limit = usage
                return limit, max(limit - used, 0)
        return None


class _BudgetCollector(Collector):
    """``connector_api_daily_budget_{limit,used,remaining}``, computed at scrape time."""

    def __init__(self, budgets: Mapping[str, _DailyBudget]) -> None:
        self._budgets = budgets

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families(read=True)

    def _families(self, *, read: bool = False) -> list[Metric]:
        limit = GaugeMetricFamily(
            "connector_api_daily_budget_limit",
            "The API's daily request allowance (HubSpot: the header, else the tier's cap)",
            labels=["api"],
        )
        used = GaugeMetricFamily(
            "connector_api_daily_budget_used",
            "Requests of the daily allowance spent (by the account if the API says, else by "
            "this process in the last 24 h)",
            labels=["api"],
        )
        left = GaugeMetricFamily(
            "connector_api_daily_budget_remaining",
            "Requests left of the daily allowance",
            labels=["api"],
        )
        if read:
            for api, budget in sorted(self._budgets.items()):
                known = budget.read()
                if known is None:
                    continue
                total, remaining = known
                limit.add_metric([api], total)
                used.add_metric([api], max(total - remaining, 0))
                left.add_metric([api], remaining)
        return [limit, used, left]


class ApiMetrics:
    """Calls per API and answer status, 429s, and the daily budget.

    The clients call :meth:`observe` once per HTTP attempt (a retry is another call: each
    counts against the rate limits) — HubSpot from ``HubSpotClient._send``, Brevo from the
    response hook of its ``httpx`` client, the two places every request goes through.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "connector_api_calls",
            "HTTP calls to the APIs, by answer status (error: no answer: timeout, connection)",
            ["api", "status"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "connector_api_rate_limited",
            "Answers 429 Too Many Requests",
            ["api"],
            registry=registry,
        )
        self._budgets: dict[str, _DailyBudget] = {}
        registry.register(_BudgetCollector(self._budgets))

    def observe(self, api: str, status: int | None) -> None:
        """One call and its answer's status (``None``: no answer at all)."""
        self.calls.labels(api, "error" if status is None else str(status)).inc()
        if status == 429:
            self.rate_limited.labels(api).inc()

    def track_daily(self, api: str, limiter: Limiter, window: str = "daily") -> None:
        """Use ``limiter``'s ``window`` for the budget while the API sends no daily headers."""
        budget = self._budgets.setdefault(api, _DailyBudget())
        budget.limiter, budget.window = limiter, window

    def observe_daily(self, api: str, limit: int | None, remaining: int | None) -> None:
        """The API's own daily figures (HubSpot headers); ignored unless both are given."""
        if limit is None or remaining is None:
            return
        budget = self._budgets.setdefault(api, _DailyBudget())
        budget.header_limit, budget.header_remaining = limit, remaining


# --- records synced ---------------------------------------------------------------------------

#: Engine outcome counters that are records written: count name → (side written, operation).
WRITE_COUNTS: dict[str, tuple[System, str]] = {
    "hubspot_created": ("hubspot", "created"),
    "hubspot_updated": ("hubspot", "updated"),
    "brevo_created": ("brevo", "created"),
    "brevo_updated": ("brevo", "updated"),
    "brevo_imported": ("brevo", "imported"),
}


class SyncMetrics:
    """Records the engine wrote, per side written to, object type and operation."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "connector_records_synced",
            "Records written by the sync, by the side written to (created, updated, imported)",
            ["side", "object_type", "operation"],
            registry=registry,
        )
        self.failed = Counter(
            "connector_records_failed",
            "Records whose write failed in a sync pass (they go to the dead letters)",
            ["object_type"],
            registry=registry,
        )

    def prepare(self, object_types: Iterable[str]) -> None:
        """Create the series at 0, so that ``rate()`` sees the first increase."""
        for object_type in object_types:
            for side, operation in WRITE_COUNTS.values():
                self.records.labels(side, object_type, operation)
            self.failed.labels(object_type)

    def count(self, object_type: str, counts: Mapping[str, int]) -> None:
        """Add one engine pass's outcome counts."""
        for name, (side, operation) in WRITE_COUNTS.items():
            n = int(counts.get(name, 0))
            if n > 0:
                self.records.labels(side, object_type, operation).inc(n)
        failed = int(counts.get("failed", 0))
        if failed > 0:
            self.failed.labels(object_type).inc(failed)


# --- read from the store at scrape time -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """The store's figures for ``/metrics`` and ``/healthz``, read in one transaction."""

    at: datetime
    inbox_open: int
    inbox_dead: int
    dead_letters_open: int
    last_pulls: dict[tuple[System, str], datetime] = field(default_factory=dict)
    """(side, object type) → start of the newest successful pull"""


async def read_snapshot(
    sessions: async_sessionmaker[AsyncSession], *, within: float, now: datetime
) -> StoreSnapshot:
    """Read the figures, or raise (``TimeoutError`` after ``within`` seconds, or the
    database's error). Three small indexed queries in one read transaction."""
    async with asyncio.timeout(within), sessions() as s, s.begin():
        if s.get_bind().dialect.name == "postgresql":
            # bound the server side too: a cancelled client leaves no query running
            ms = str(max(int(within * 1000), 1))
            await s.execute(sa.select(sa.func.set_config("statement_timeout", ms, True)))
        depth = await inbox.depth(s)
        dead_letters = await deadletters.count_open(s)
        pulls = await runs.last_ok_pulls(s)
    return StoreSnapshot(
        at=now,
        inbox_open=depth.open,
        inbox_dead=depth.dead,
        dead_letters_open=dead_letters,
        last_pulls=pulls,
    )


class StoreCollector(Collector):
    """The store gauges, from the snapshot the ``/metrics`` handler just read
    (:meth:`update`); none but ``connector_store_up 0`` when that read failed."""

    def __init__(self) -> None:
        self._snapshot: StoreSnapshot | None = None

    def update(self, snapshot: StoreSnapshot | None) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._snapshot, up=True))

    @staticmethod
    def _families(snap: StoreSnapshot | None, *, up: bool = False) -> Iterator[Metric]:
        store_up = GaugeMetricFamily(
            "connector_store_up",
            "1 if this scrape read the database in time (webhooks.db_timeout_seconds), else 0",
        )
        depth = GaugeMetricFamily(
            "connector_inbox_depth",
            "Inbox events still to process (pending, waiting for a retry, or claimed)",
        )
        dead = GaugeMetricFamily(
            "connector_inbox_dead_events",
            "Inbox events that kept failing and were given up (see connector webhooks status)",
        )
        letters = GaugeMetricFamily(
            "connector_dead_letters_open",
            "Records whose sync kept failing and that wait for connector dlq retry",
        )
        last_pull = GaugeMetricFamily(
            "connector_sync_last_pull_timestamp_seconds",
            "Start of the newest successful incremental pull (Unix time)",
            labels=["side", "object_type"],
        )
        lag = GaugeMetricFamily(
            "connector_sync_lag_seconds",
            "Now minus the start of the newest successful pull: changes older than this are synced",
            labels=["side", "object_type"],
        )
        if up:
            store_up.add_metric([], 0 if snap is None else 1)
        yield store_up
        if snap is None:
            if not up:  # describe(): name every family the collector may yield
                yield from (depth, dead, letters, last_pull, lag)
            return
        depth.add_metric([], snap.inbox_open)
        dead.add_metric([], snap.inbox_dead)
        letters.add_metric([], snap.dead_letters_open)
        for (side, object_type), started in sorted(snap.last_pulls.items()):
            last_pull.add_metric([side, object_type], started.timestamp())
            lag.add_metric([side, object_type], max((snap.at - started).total_seconds(), 0.0))
        yield from (depth, dead, letters, last_pull, lag)


# --- the bundle --------------------------------------------------------------------------------


class Metrics:
    """One registry and every metric in it: create one per daemon process and hand it to the
    web app (:func:`connector.web.create_web_app`), the clients (``attach_metrics``) and the
    engines."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.web = WebMetrics.create(self.registry)
        self.api = ApiMetrics(self.registry)
        self.sync = SyncMetrics(self.registry)
        self.store = StoreCollector()
        self.registry.register(self.store)

    def prepare(self, object_types: Sequence[str]) -> None:
        """Create the labelled series known in advance at 0."""
        self.sync.prepare(object_types)
        for api in SIDES:
            self.api.rate_limited.labels(api)


__all__ = [
    "SIDES",
    "WRITE_COUNTS",
    "ApiMetrics",
    "Metrics",
    "StoreCollector",
    "StoreSnapshot",
    "SyncMetrics",
    "WebMetrics",
    "read_snapshot",
]
