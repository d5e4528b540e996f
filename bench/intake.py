"""Webhook intake: HubSpot's delivery pattern against a running ``connector run``.

HubSpot sends up to 10 concurrent requests of up to 100 events each, signed (v3). This drives
that pattern at a real daemon (``connector run`` with a ``server:``/``webhooks:`` section) on
SQLite or on a fresh PostgreSQL database, with every request pre-signed (HubSpot's work, not
ours). ``events_per_s`` counts the events stored durably — the rows in the ``inbox`` table after
the last 2xx — over the time from the first request to the last answer; ``p99_ms`` is the
99th percentile of the response times. The daemon's inbox worker runs as it would in
production (the events name contacts the sandbox does not have: its reads are cheap).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.harness import HUBSPOT_SECRET, Proc, Sandboxes, config_text, free_port
from connector.hubspot.webhooks import v3_signature

EVENTS_PER_REQUEST = 100
WARMUP_EVENTS = 1_000
"""sent first and not measured: a daemon that has been running is warm"""
CONCURRENCY = 10
TARGET_EVENTS_PER_S = {"sqlite": 2_000.0}
TARGET_P99_MS = 200.0
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _event(i: int) -> dict[str, Any]:
    return {
        "objectId": 5_000_000 + i % 5_000,
        "propertyName": "lastname",
        "propertyValue": f"v{i}",
        "changeSource": "CRM_UI",
        "sourceId": "userId:45678",
        "eventId": 9_000_000_000 + i,
        "subscriptionId": 25,
        "portalId": 2_440_001,
        "appId": 3_100_001,
        "occurredAt": int(time.time() * 1000) + i,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
    }


def requests(url: str, events: int, first: int = 0) -> list[tuple[bytes, dict[str, str]]]:
    """Signed request bodies of 100 events each (event numbers from ``first`` on)."""
    out = []
    for start in range(first, first + events, EVENTS_PER_REQUEST):
        body = json.dumps(
            [_event(i) for i in range(start, min(start + EVENTS_PER_REQUEST, first + events))]
        ).encode()
        ts = str(int(time.time() * 1000))
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": v3_signature(HUBSPOT_SECRET, "POST", url, body, ts),
            "X-HubSpot-Request-Timestamp": ts,
        }
        out.append((body, headers))
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _wait_listening(url: str, proc: Proc, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise RuntimeError(f"connector run exited:\n{proc.tail()}")
            try:
                await client.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"connector run did not listen within {within} s:\n{proc.tail()}")


def _count_inbox(url: str) -> int:
    engine = sa.create_engine(url.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM inbox")).scalar_one())
    finally:
        engine.dispose()


def create_pg_database(name: str) -> str:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


async def drive(
    url: str, batches: list[tuple[bytes, dict[str, str]]], concurrency: int = CONCURRENCY
) -> tuple[list[float], list[int], float]:
    """Send every batch, ``concurrency`` in flight; (latencies ms, statuses, seconds)."""
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in batches:
        queue.put_nowait(item)
    latencies: list[float] = []
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                body, headers = queue.get_nowait()
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses.append(r.status_code)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return latencies, statuses, seconds


async def webhook_intake(db: str, events: int, workdir: Path | None = None) -> dict[str, Any]:
    """One intake run on ``db`` (``sqlite`` or ``postgresql``)."""
    tmp = Path(workdir or tempfile.mkdtemp(prefix=f"bench-intake-{db}-"))
    pg_name = f"bench_{os.getpid()}"
    db_url = f"sqlite:///{tmp / 'state.db'}" if db == "sqlite" else create_pg_database(pg_name)
    try:
        async with Sandboxes() as sb:
            port = free_port()
            config = tmp / "config.yaml"
            config.write_text(config_text(sb, db_url, webhook_port=port), encoding="utf-8")
            upgrade = Proc(config, ["db", "upgrade"], tmp / "upgrade.log").start()
            if await upgrade.wait(120) != 0:
                raise RuntimeError(f"connector db upgrade failed:\n{upgrade.tail()}")
            daemon = Proc(config, ["run"], tmp / "daemon.log").start()
            try:
                url = f"http://127.0.0.1:{port}/webhooks/hubspot"
                await _wait_listening(f"http://127.0.0.1:{port}/healthz", daemon)
                # a warm-up round (connections, statement caches), as a running daemon has
                await drive(url, requests(url, WARMUP_EVENTS, first=events))
                warm = await asyncio.to_thread(_count_inbox, db_url)
                batches = requests(url, events)
                latencies, statuses, seconds = await drive(url, batches)
                stored = await asyncio.to_thread(_count_inbox, db_url) - warm
            finally:
                await daemon.stop()
    finally:
        if db != "sqlite":
            await asyncio.to_thread(drop_pg_database, pg_name)
    ok = sum(1 for s in statuses if 200 <= s < 300)
    eps = stored / seconds if seconds else 0.0
    p99 = percentile(latencies, 99)
    target_eps = TARGET_EVENTS_PER_S.get(db)
    return {
        "db": db,
        "events_sent": events,
        "requests": len(batches),
        "requests_2xx": ok,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "stored": stored,
        "seconds": round(seconds, 3),
        "events_per_s": round(eps, 1),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(p99, 1),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "concurrency": CONCURRENCY,
        "warmup_events": WARMUP_EVENTS,
        "daemon_peak_rss_mb": daemon.peak_rss_mb,
        "targets": {
            "events_per_s": f">= {target_eps}" if target_eps else "(reported)",
            "p99_ms": f"< {TARGET_P99_MS}",
        },
        "met": {
            "events_per_s": eps >= target_eps if target_eps else None,
            "p99_ms": p99 < TARGET_P99_MS,
            "all_stored": stored == events,
        },
    }
