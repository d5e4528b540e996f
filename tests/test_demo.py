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
    first = out.split("$ connector run --once   (first cycle", 1)[1].split("\n\n", 1)[0]
    # the pulls of HubSpot's side, where the first cycle writes both ways
    counts = {
        line.split()[1]: line
        for line in first.splitlines()
        if line.startswith("  pull ") and line.split()[2] == "hubspot"
    }
    # the seeded companies and deals travel both ways, the roll-ups reach Brevo
    for object_type in ("companies", "deals"):
        assert "brevo_created=" in counts[object_type], first
        assert "hubspot_created=" in counts[object_type], first
    assert "company_name_writes=" in counts["companies"], first
    for object_type in ("meetings", "calls", "notes", "tickets"):
        assert re.search(r"records_read=[1-9]", counts[object_type]), first
    timed = re.findall(
        r"^  (HubSpot → Brevo|Brevo → HubSpot) +(\d+\.\d\d) s  (\S+?):? (.+)$", out, re.M
    )
    assert [(way, who, what) for way, _, who, what in timed] == [
        ("HubSpot → Brevo", "yasmine.o-brien1@example.com", "lifecycle stage → customer"),
        ("HubSpot → Brevo", "nicolas.haddad2@example.org", "lifecycle stage → customer"),
        ("HubSpot → Brevo", "grace.hopper@demo.example", "new contact"),
        ("Brevo → HubSpot", "lea.colombo@example.org", "LASTNAME 'Colombo' → 'Lovelace-Byron'"),
        (
            "Brevo → HubSpot",
            "arthur.fernandez@example.com",
            "LASTNAME 'Fernández' → 'Lovelace-Byron'",
        ),
        (
            "HubSpot → Brevo",
            "company",
            "'Acme Corporation' renamed 'Acme Industries' (and the COMPANY_NAME of its 7 contacts)",
        ),
        (
            "Brevo → HubSpot",
            "deal",
            "'Vandelay Industries — annual plan': stage 'Qualified' → 'Won'  "
            "(pull: Brevo sends no CRM webhooks)",
        ),
        (
            "Brevo → HubSpot",
            "lea.colombo@example.org",
            "opened the campaign “December newsletter” → a note on the HubSpot timeline, "
            "brevo_email_opens",
        ),
    ]
    assert "not arrived" not in out
    # the stage change reached Brevo's automations as an event, for the deal's contact
    events = out.split("Brevo events for automations (deal_stage_changed):\n", 1)[1]
    assert re.match(
        r"  \S+@\S+: deal 'Vandelay Industries — annual plan' qualifiedtobuy → closedwon  "
        r"\(Brevo stages 'Qualified' → 'Won', changed in brevo, amount \d+\.0\)\n",
        events,
    ), events
    assert "(catching up)" in out
    assert out.rstrip().endswith("API writes: HubSpot 0, Brevo 0")  # in step afterwards


@pytest.mark.parametrize(
    ("p", "expected"), [(50, 5.0), (99, 10.0), (100, 10.0), (10, 1.0), (1, 1.0)]
)
def test_percentile_is_nearest_rank(p: float, expected: float) -> None:
    values = [float(v) for v in (7, 3, 1, 10, 5, 2, 9, 4, 8, 6)]
    assert percentile(values, p) == expected
