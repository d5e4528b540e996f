"""The benchmarks' code paths at a tiny size, so the scripts keep working (issue 7).

No timing is asserted: only that each result has its keys and sane values — the calls counted
from the sandbox process's logs, the in-step resync writing nothing, every webhook event
stored, the CPU run linking every pair — and that ``bench/run.py`` writes the JSON and the
markdown rows. The soak, the latency run and the per-record baseline are too slow for the
suite; their helpers (the compare, the floors) are checked here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import floors, run  # noqa: E402
from bench.cpu import cpu_per_record  # noqa: E402
from bench.intake import webhook_intake  # noqa: E402
from bench.resync_bench import resync_benchmarks  # noqa: E402
from bench.soak import compare  # noqa: E402


def test_floors_follow_the_rolling_window() -> None:
    assert floors.window_floor(0, 190, 10) == 0
    assert floors.window_floor(190, 190, 10) == 0  # one window's worth goes at once
    assert floors.window_floor(191, 190, 10) == 10
    h2b = floors.resync_h2b(100_000)
    assert h2b["min_hubspot_calls"] == 1_000
    assert h2b["floor_s"] == 50.0  # 1,000 pages under 190 per 10 s
    # the list call, the upserts, and the read-back of the new records (calculated values)
    b2h = floors.resync_b2h(100_000)
    assert b2h["min_hubspot_calls"] == 2_001
    assert b2h["min_brevo_calls"] == 100 + 2 + 100  # listing, two 8 MB imports, read-back
    # at 10,000 no HubSpot window binds: Brevo's 10/s, then the import runs before its read-back
    assert floors.resync_h2b(10_000)["floor_s"] == 1.0 + floors.IMPORT_PROCESSING_S
    assert floors.per_record(10_000)["floor_s"] == 999.0  # Brevo: 10 per second


def test_compare_finds_lost_unequal_and_duplicates() -> None:
    hs = [
        {"id": "1", "email": "a@x.org", "firstname": "Ann", "lastname": "Lee"},
        {"id": "2", "email": "b@x.org", "firstname": "Bo", "lastname": "Kim"},
    ]
    br = [
        {"id": 1, "email": "a@x.org", "attributes": {"FIRSTNAME": "Ann", "LASTNAME": "Lee"}},
        {"id": 2, "email": "b@x.org", "attributes": {"FIRSTNAME": "Bob", "LASTNAME": "Kim"}},
        {"id": 3, "email": "c@x.org", "attributes": {}},
    ]
    result = compare(hs, br, {("a@x.org", "lastname"): "Lee", ("b@x.org", "firstname"): "Bo"})
    assert result == {"unpaired": 1, "unequal": 1, "lost": 1, "duplicate_emails": 0}


async def test_resync_and_instep_at_200_contacts() -> None:
    out = await resync_benchmarks(200, None, {"resync_h2b", "instep_resync"})
    h2b, instep = out["resync_h2b"], out["instep_resync"]
    assert h2b["contacts"] == 200
    assert h2b["by_endpoint"]["hubspot GET /crm/objects/2026-09/contacts"] == 2
    assert h2b["by_endpoint"]["brevo POST /v3/contacts/import"] >= 1
    assert h2b["calls"] >= h2b["min_calls"] > 0
    assert h2b["wall_s"] > 0 and 20 < h2b["peak_rss_mb"] < 2_000
    assert set(h2b["met"]) == {"wall", "calls", "rss", "rss_growth"}
    assert instep["write_calls"] == 0 and instep["met"]["write_calls"] is True
    assert instep["read_calls"] == instep["calls"] >= instep["min_calls"]


async def test_webhook_intake_on_sqlite(tmp_path: Path) -> None:
    result = await webhook_intake("sqlite", 300, tmp_path)
    assert result["requests"] == 3 and result["requests_2xx"] == 3
    assert result["stored"] == 300 and result["met"]["all_stored"] is True
    assert result["events_per_s"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0


async def test_cpu_per_record_links_every_pair() -> None:
    result = await cpu_per_record(1_000, None)
    assert result["records"] == 1_000 and result["linked"] == 1_000
    assert result["us_per_record"] > 0 and result["us_per_record_instep"] > 0
    assert result["top_functions"] and result["top_functions"][0]["self_s"] > 0


def test_run_writes_json_and_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    out = tmp_path / "bench.json"
    args = ["--quick", "--contacts", "500", "--only", "cpu_per_record_us", "--json", str(out)]
    code = run.main(args)
    assert code == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data) == {"cpu_per_record_us", "_meta"}
    assert data["_meta"]["cpus"] >= 1 and data["_meta"]["commit"]
    assert data["cpu_per_record_us"]["records"] == 500
    table = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert "| cpu_per_record_us |" in table and "--only cpu_per_record_us" in table
    assert (tmp_path / "cpu_profile.txt").exists()
