"""Full resync both ways, and the in-step resync: ``connector resync`` as a real process.

``resync_h2b``: N HubSpot contacts into an empty Brevo; ``resync_b2h``: N Brevo contacts into an
empty HubSpot; ``instep_resync``: the same command again once both sides agree (after h2b), which
must make read calls only. Each runs against a fresh sandbox process and a fresh SQLite store;
calls are the sandboxes' own logs (the difference before/after), memory the peak RSS of the
connector's process tree, time the command's wall clock (start-up included). The peak RSS is
also taken at a smaller size, to show how memory grows with N (it should not: a resync
streams a page at a time).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from bench import floors
from bench.harness import Proc, Sandboxes, config_text, delta

WALL_TARGET = 1.10
CALLS_TARGET = 1.02
RSS_TARGET_MB = 200.0
RSS_GROWTH_TOLERANCE_MB = 10.0
"""Growth from the small to the large size counted as "no growth" (allocator noise)."""


def _writes(counter: dict[str, int]) -> int:
    return sum(
        n
        for ep, n in counter.items()
        if ep.split(" ", 1)[0] in ("POST", "PUT", "PATCH", "DELETE")
        and not ep.endswith(("/search", "/batch/read"))
    )


async def run_resync(sb: Sandboxes, workdir: Path, tag: str) -> dict[str, Any]:
    """One ``connector resync --objects contacts --yes`` against ``sb``; its figures."""
    config = workdir / "config.yaml"
    if not config.exists():
        config.write_text(config_text(sb, f"sqlite:///{workdir / 'state.db'}"), encoding="utf-8")
    hs0, br0 = await sb.calls()
    proc = Proc(config, ["resync", "--objects", "contacts", "--yes"], workdir / f"{tag}.log")
    code = await proc.start().wait(within=3600)
    hs1, br1 = await sb.calls()
    if code != 0:
        raise RuntimeError(f"connector resync exited {code}:\n{proc.tail()}")
    hs, br = delta(hs1, hs0), delta(br1, br0)
    found = re.search(r"Resync of contacts: ([\d.]+) s", proc.log.read_text(encoding="utf-8"))
    return {
        "wall_s": round(proc.wall_s, 2),
        "resync_s": float(found.group(1)) if found else None,
        "calls": sum(hs.values()) + sum(br.values()),
        "hubspot_calls": sum(hs.values()),
        "brevo_calls": sum(br.values()),
        "write_calls": _writes(hs) + _writes(br),
        "read_calls": sum(hs.values()) + sum(br.values()) - _writes(hs) - _writes(br),
        "by_endpoint": dict(
            sorted(
                {
                    **{f"hubspot {k}": v for k, v in hs.items()},
                    **{f"brevo {k}": v for k, v in br.items()},
                }.items()
            )
        ),
        "peak_rss_mb": proc.peak_rss_mb,
    }


async def _one_way(direction: str, n: int) -> tuple[dict[str, Any], Sandboxes, Path]:
    seeds = {"hubspot": n} if direction == "h2b" else {"brevo": n}
    sb = Sandboxes(**seeds)
    await sb.__aenter__()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-resync-{direction}-"))
    result = await run_resync(sb, workdir, direction)
    return result, sb, workdir


def _judge(result: dict[str, Any], floor: dict[str, float | int]) -> None:
    result["floor_s"] = floor["floor_s"]
    result["min_calls"] = floor["min_calls"]
    result["wall_ratio"] = round(result["wall_s"] / max(float(floor["floor_s"]), 1e-9), 2)
    result["calls_ratio"] = round(result["calls"] / int(floor["min_calls"]), 3)
    result["targets"] = {
        "wall_ratio": f"<= {WALL_TARGET}",
        "calls_ratio": f"<= {CALLS_TARGET}",
        "peak_rss_mb": f"< {RSS_TARGET_MB}",
        "rss_growth_mb": f"<= {RSS_GROWTH_TOLERANCE_MB}",
    }
    growth = result.get("rss_growth_mb")
    result["met"] = {
        "wall": result["wall_ratio"] <= WALL_TARGET,
        "calls": result["calls_ratio"] <= CALLS_TARGET,
        "rss": result["peak_rss_mb"] < RSS_TARGET_MB,
        "rss_growth": growth is None or growth <= RSS_GROWTH_TOLERANCE_MB,
    }


async def resync_benchmarks(
    n: int, small: int | None, wanted: set[str]
) -> dict[str, dict[str, Any]]:
    """``resync_h2b``, ``instep_resync`` and ``resync_b2h`` as asked (``small``: the RSS check)."""
    out: dict[str, dict[str, Any]] = {}
    small_rss: dict[str, float] = {}
    if small:
        for direction in ("h2b", "b2h"):
            if f"resync_{direction}" in wanted:
                res, sb, _ = await _one_way(direction, small)
                await sb.__aexit__(None, None, None)
                small_rss[direction] = res["peak_rss_mb"]
    if wanted & {"resync_h2b", "instep_resync"}:
        res, sb, workdir = await _one_way("h2b", n)
        try:
            if "resync_h2b" in wanted:
                res["contacts"] = n
                if "h2b" in small_rss:
                    res["peak_rss_mb_small"] = small_rss["h2b"]
                    res["small_contacts"] = small
                    res["rss_growth_mb"] = round(res["peak_rss_mb"] - small_rss["h2b"], 1)
                _judge(res, floors.resync_h2b(n))
                out["resync_h2b"] = res
            if "instep_resync" in wanted:
                again = await run_resync(sb, workdir, "instep")
                floor = floors.instep(n)
                again["contacts"] = n
                again["min_calls"] = floor["min_calls"]
                again["floor_s"] = floor["floor_s"]
                again["calls_ratio"] = round(again["calls"] / int(floor["min_calls"]), 3)
                again["targets"] = {"write_calls": "== 0"}
                again["met"] = {"write_calls": again["write_calls"] == 0}
                out["instep_resync"] = again
        finally:
            await sb.__aexit__(None, None, None)
    if "resync_b2h" in wanted:
        res, sb, _ = await _one_way("b2h", n)
        await sb.__aexit__(None, None, None)
        res["contacts"] = n
        if "b2h" in small_rss:
            res["peak_rss_mb_small"] = small_rss["b2h"]
            res["small_contacts"] = small
            res["rss_growth_mb"] = round(res["peak_rss_mb"] - small_rss["b2h"], 1)
        _judge(res, floors.resync_b2h(n))
        out["resync_b2h"] = res
    return out
