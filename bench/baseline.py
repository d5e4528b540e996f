"""The per-record baseline: the same HubSpot → Brevo sync done one API call per record.

This is how per-item workflow tools do it: a trigger lists the new HubSpot contacts (100 per
page) and an action runs once per contact — here ``POST /v3/contacts`` with
``updateEnabled: true`` (create or update), one call each, with a naive retry on 429 that
waits for ``x-sib-ratelimit-reset``. It runs against the same sandbox process and limits as
the connector, and is compared with the connector's own resync of the same contacts (calls and
wall time). With ``sample`` set (``--quick``), only that many records are sent one by one and
the time for all is extrapolated from the measured per-record rate (the Brevo contacts limit of
10 per second makes it linear); the result says so.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import floors
from bench.harness import BREVO_API_KEY, HUBSPOT_TOKEN, Sandboxes, delta
from bench.resync_bench import run_resync

CONTACTS = 10_000
QUICK_SAMPLE = 300


async def naive_sync(sb: Sandboxes, limit: int | None) -> tuple[int, float, int]:
    """List HubSpot, then one Brevo write per contact; (records sent, seconds, 429s seen)."""
    hs_headers = {"Authorization": f"Bearer {HUBSPOT_TOKEN}"}
    br_headers = {"api-key": BREVO_API_KEY, "Content-Type": "application/json"}
    sent = throttled = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:
        after: str | None = None
        while True:
            params = {"limit": "100", "properties": "email,firstname,lastname"}
            if after:
                params["after"] = after
            r = await client.get(
                f"{sb.hubspot_url}/crm/objects/2026-09/contacts", params=params, headers=hs_headers
            )
            if r.status_code == 429:
                throttled += 1
                await asyncio.sleep(1.0)
                continue
            r.raise_for_status()
            page = r.json()
            for obj in page.get("results", []):
                if limit is not None and sent >= limit:
                    return sent, time.perf_counter() - started, throttled
                props = obj["properties"]
                body = {
                    "email": props.get("email"),
                    "ext_id": obj["id"],
                    "attributes": {
                        "FIRSTNAME": props.get("firstname"),
                        "LASTNAME": props.get("lastname"),
                    },
                    "updateEnabled": True,
                }
                while True:
                    w = await client.post(f"{sb.brevo_url}/contacts", json=body, headers=br_headers)
                    if w.status_code != 429:
                        break
                    throttled += 1
                    await asyncio.sleep(float(w.headers.get("x-sib-ratelimit-reset", "1")) or 0.1)
                sent += 1
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return sent, time.perf_counter() - started, throttled


async def per_record_baseline(
    n: int, ours: dict[str, Any] | None, *, sample: int | None = None
) -> dict[str, Any]:
    if ours is None or "calls" not in ours:
        async with Sandboxes(hubspot=n) as sb:
            ours = await run_resync(sb, Path(tempfile.mkdtemp(prefix="bench-ours-")), "ours")
    async with Sandboxes(hubspot=n) as sb:
        hs0, br0 = await sb.calls()
        sent, seconds, throttled = await naive_sync(sb, sample)
        hs1, br1 = await sb.calls()
    calls = sum(delta(hs1, hs0).values()) + sum(delta(br1, br0).values())
    successful = sent
    if sample is not None and sent < n:
        per_record = seconds / max(sent, 1)
        baseline_s = per_record * n
        baseline_calls = floors.per_record(n)["min_calls"] + round(throttled * n / max(sent, 1))
    else:
        baseline_s, baseline_calls = seconds, calls
    return {
        "contacts": n,
        "baseline_calls": int(baseline_calls),
        "baseline_s": round(baseline_s, 1),
        "baseline_measured_records": successful,
        "baseline_measured_s": round(seconds, 1),
        "baseline_429s": throttled,
        "extrapolated": sample is not None and sent < n,
        "ours_calls": ours["calls"],
        "ours_s": ours["wall_s"],
        "calls_ratio": round(baseline_calls / ours["calls"], 1),
        "time_ratio": round(baseline_s / ours["wall_s"], 1),
        "floor_s_baseline": floors.per_record(n)["floor_s"],
    }
