"""Run the benchmarks: ``python bench/run.py [--quick] [--only NAME,…] --json PATH``.

Writes one JSON object keyed by benchmark name (each with its figures, the floor or target
beside them and whether the target is met) and appends one markdown row per benchmark to
``bench/results/RESULTS.md``, with the machine, the git commit, the command and the date.
``--quick``: 10,000 contacts and a 1-minute soak (the full run: 100,000 and 10 minutes).
The sandboxes always run in a process of their own (:mod:`bench.sandboxes`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``connector`` importable
    sys.path.insert(0, str(ROOT))

from bench import baseline, cpu, intake, latency, resync_bench, soak  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NAMES = (
    "resync_h2b",
    "instep_resync",
    "resync_b2h",
    "per_record_baseline",
    "webhook_intake",
    "latency",
    "cpu_per_record_us",
    "soak",
)


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            # the results a run writes (RESULTS.md, the profile) do not make the code dirty
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        commit, dirty = "unknown", ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "commit": commit + ("+dirty" if dirty else ""),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


SUMMARY_KEYS: dict[str, tuple[str, ...]] = {
    "resync_h2b": (
        "contacts",
        "wall_s",
        "floor_s",
        "wall_ratio",
        "calls",
        "min_calls",
        "calls_ratio",
        "peak_rss_mb",
        "rss_growth_mb",
    ),
    "resync_b2h": (
        "contacts",
        "wall_s",
        "floor_s",
        "wall_ratio",
        "calls",
        "min_calls",
        "calls_ratio",
        "peak_rss_mb",
        "rss_growth_mb",
    ),
    "instep_resync": ("contacts", "wall_s", "write_calls", "read_calls", "min_calls"),
    "per_record_baseline": (
        "contacts",
        "baseline_calls",
        "ours_calls",
        "calls_ratio",
        "baseline_s",
        "ours_s",
        "time_ratio",
    ),
    "webhook_intake": ("events_per_s", "p99_ms"),
    "latency": ("webhooks", "pull_only"),
    "cpu_per_record_us": ("records", "us_per_record", "us_per_record_instep"),
    "soak": (
        "seconds",
        "changes",
        "converged",
        "lost",
        "duplicates",
        "dead_letters",
        "restarts",
    ),
}


def summary(name: str, result: dict[str, Any]) -> str:
    """The figures of one result as ``key value`` pairs for the markdown table."""
    if "error" in result:
        return f"error: {result['error']}"
    if name == "webhook_intake":
        parts = []
        for db, r in result.items():
            if isinstance(r, dict) and "events_per_s" in r:
                parts.append(f"{db}: {_fmt(r['events_per_s'])} ev/s, p99 {_fmt(r['p99_ms'])} ms")
        return "; ".join(parts)
    if name == "latency":
        parts = []
        for mode in ("webhooks", "pull_only"):
            r = result.get(mode)
            if isinstance(r, dict):
                parts.append(f"{mode}: p50 {_fmt(r['p50_s'])} s, p99 {_fmt(r['p99_s'])} s")
        return "; ".join(parts)
    keys = SUMMARY_KEYS.get(name, ())
    return ", ".join(f"{k} {_fmt(result[k])}" for k in keys if result.get(k) is not None)


def met(result: dict[str, Any]) -> str:
    flags: dict[str, Any] = {}
    stack = [result]
    while stack:
        r = stack.pop()
        for k, v in r.items():
            if k == "met" and isinstance(v, dict):
                flags.update({f"{key}": val for key, val in v.items() if val is not None})
            elif isinstance(v, dict):
                stack.append(v)
    if not flags:
        return "—"
    missed = sorted(k for k, v in flags.items() if not v)
    return "yes" if not missed else "missed: " + ", ".join(missed)


def append_markdown(results: dict[str, Any], info: dict[str, Any], command: str) -> Path:
    path = RESULTS / "RESULTS.md"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\nOne row per benchmark per run (newest last); "
            "the JSON of each run has every figure.\n\n"
            "| date (UTC) | commit | machine | command | benchmark | figures | target met |\n"
            "|---|---|---|---|---|---|---|\n",
            encoding="utf-8",
        )
    where = f"{info['cpus']} × {info['cpu_model']}, Python {info['python']}"
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    rows = []
    for name, result in results.items():
        if name.startswith("_"):
            continue
        cells = [date, info["commit"], where, f"`{command}`", name, summary(name, result)]
        cells.append(met(result))
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |\n")
    with path.open("a", encoding="utf-8") as out:
        out.writelines(rows)
    return path


async def run(names: list[str], quick: bool, contacts: int | None = None) -> dict[str, Any]:
    n = contacts or (10_000 if quick else 100_000)
    small = n // 5 if contacts else (2_000 if quick else 10_000)
    out: dict[str, Any] = {}

    def note(name: str, started: float) -> None:
        print(f"[bench] {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    async def guarded(name: str, coro: Any) -> None:
        started = time.monotonic()
        try:
            out[name] = await coro
        except Exception as exc:  # one benchmark failing must not lose the others' figures
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        note(name, started)

    wanted = set(names)
    resync_names = wanted & {"resync_h2b", "instep_resync", "resync_b2h"}
    if resync_names:
        started = time.monotonic()
        try:
            out.update(await resync_bench.resync_benchmarks(n, small, resync_names))
        except Exception as exc:
            for name in resync_names:
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        note("resync", started)
    if "per_record_baseline" in wanted:
        ours = out.get("resync_h2b") if n == baseline.CONTACTS else None
        await guarded(
            "per_record_baseline",
            baseline.per_record_baseline(
                baseline.CONTACTS, ours, sample=baseline.QUICK_SAMPLE if quick else None
            ),
        )
    if "webhook_intake" in wanted:
        events = 20_000 if quick else 50_000

        async def both() -> dict[str, Any]:
            return {
                "sqlite": await intake.webhook_intake("sqlite", events),
                "postgresql": await intake.webhook_intake("postgresql", events),
            }

        await guarded("webhook_intake", both())
    if "latency" in wanted:
        await guarded("latency", latency.latency(quick))
    if "cpu_per_record_us" in wanted:
        await guarded("cpu_per_record_us", cpu.cpu_per_record(n, RESULTS))
    if "soak" in wanted:
        await guarded("soak", soak.soak(60.0 if quick else 600.0))
    return {k: out[k] for k in NAMES if k in out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks of the connector (issue 7).")
    parser.add_argument("--quick", action="store_true", help="10,000 contacts, 1-minute soak.")
    parser.add_argument("--only", default="", help=f"Comma-separated: {', '.join(NAMES)}.")
    parser.add_argument("--json", required=True, help="Where to write the results (JSON).")
    parser.add_argument(
        "--contacts", type=int, default=None, help="Override the number of contacts (tests)."
    )
    parser.add_argument("--no-markdown", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(NAMES)
    unknown = [s for s in names if s not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; one of {', '.join(NAMES)}")
    command = "python bench/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    info = machine()
    results = asyncio.run(run(names, args.quick, args.contacts))
    document = {
        **results,
        "_meta": {
            **info,
            "command": command,
            "quick": args.quick,
            "date": dt.datetime.now(dt.UTC).isoformat(),
        },
    }
    Path(args.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if not args.no_markdown:
        append_markdown(results, info, command)
    failed = [k for k, v in results.items() if "error" in v]
    for name in failed:
        print(f"[bench] {name} failed: {results[name]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
