"""``connector demo``: the sandboxes, the checks, a first full sync, then the daemon in real
time — webhooks from both sandboxes to its intake — with each change timed to the other side,
and a last cycle with nothing to write."""

from __future__ import annotations

import re

import pytest
from daemon_env import run_cli

from connector.demo import percentile


async def test_demo_runs_in_real_time() -> None:
    code, out, err = await run_cli("demo")
    assert code == 0, out + err
    assert "All 9 checks passed." in out  # the Brevo webhook points at the daemon's intake
    assert "Brevo: marketing webhook → http://127.0.0.1:" in out
    assert "brevo_imported=" in out and "hubspot_created=" in out  # the first full sync
    timed = re.findall(r"^  (HubSpot → Brevo|Brevo → HubSpot) +(\d+\.\d\d) s  (.+)$", out, re.M)
    assert [(way, what.split(":")[1].strip()) for way, _, what in timed] == [
        ("HubSpot → Brevo", "lifecycle stage → customer"),
        ("HubSpot → Brevo", "lifecycle stage → customer"),
        ("HubSpot → Brevo", "new contact"),
        ("Brevo → HubSpot", "LASTNAME 'Colombo' → 'Lovelace-Byron'"),
        ("Brevo → HubSpot", "LASTNAME 'Fernández' → 'Lovelace-Byron'"),
    ]
    assert "not arrived" not in out
    assert out.rstrip().endswith("API writes: HubSpot 0, Brevo 0")  # in step afterwards


@pytest.mark.parametrize(
    ("p", "expected"), [(50, 5.0), (99, 10.0), (100, 10.0), (10, 1.0), (1, 1.0)]
)
def test_percentile_is_nearest_rank(p: float, expected: float) -> None:
    values = [float(v) for v in (7, 3, 1, 10, 5, 2, 9, 4, 8, 6)]
    assert percentile(values, p) == expected
