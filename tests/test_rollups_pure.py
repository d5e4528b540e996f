"""Roll-ups, the pure part: counts, latest dates, open/closed/won by stage metadata, sums, the
health score, the canonical form; and the roll-up file loader's problems (file, line, fix)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.hubspot.crm import Pipeline
from connector.mapping import MappingError
from connector.objects.rollup_mapping import (
    HealthScore,
    RollupField,
    check_rollup_dir,
    check_rollup_text,
    load_rollup_mappings,
)
from connector.objects.rollups import (
    Record,
    Stage,
    canonical,
    compute,
    compute_field,
    health_score,
    record_stage,
    stage_table,
)

ROOT = Path(__file__).resolve().parents[1]
TODAY = date(2026, 3, 10)

DEAL_PIPELINES = [
    Pipeline.from_api(
        {
            "id": "default",
            "label": "Sales",
            "stages": [
                {
                    "id": "open1",
                    "label": "Open",
                    "metadata": {"probability": "0.2", "isClosed": "false"},
                },
                {
                    "id": "won1",
                    "label": "Won",
                    "metadata": {"probability": "1.0", "isClosed": "true"},
                },
                {
                    "id": "lost1",
                    "label": "Lost",
                    "metadata": {"probability": "0.0", "isClosed": "true"},
                },
            ],
        }
    ),
    Pipeline.from_api(
        {
            "id": "renewals",
            "label": "Renewals",
            "stages": [
                {
                    "id": "r_open",
                    "label": "Open",
                    "metadata": {"probability": "0.5", "isClosed": "false"},
                },
                {
                    "id": "r_won",
                    "label": "Won",
                    "metadata": {"probability": "1.0", "isClosed": "true"},
                },
            ],
        }
    ),
]
TICKET_PIPELINES = [
    Pipeline.from_api(
        {
            "id": "0",
            "label": "Support",
            "stages": [
                {"id": "1", "label": "New", "metadata": {"ticketState": "OPEN"}},
                {"id": "2", "label": "Waiting", "metadata": {"ticketState": "OPEN"}},
                {"id": "4", "label": "Closed", "metadata": {"ticketState": "CLOSED"}},
            ],
        }
    )
]
DEALS = stage_table(DEAL_PIPELINES)
TICKETS = stage_table(TICKET_PIPELINES)
DEAL_STAGES = [
    ("default", "open1"),
    ("default", "won1"),
    ("default", "lost1"),
    ("renewals", "r_open"),
    ("renewals", "r_won"),
]
WON = {"won1", "r_won"}
CLOSED = {"won1", "lost1", "r_won"}

times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


def _stamp(dt: datetime, as_ms: bool) -> str:
    if as_ms:
        return str(int(dt.timestamp() * 1000))
    return dt.isoformat().replace("+00:00", "Z")


deal = st.builds(
    lambda i, stage, amount, closed, ms: (
        Record(
            str(i),
            {
                "pipeline": stage[0],
                "dealstage": stage[1],
                "amount": None if amount is None else f"{amount:.2f}",
                "createdate": _stamp(closed, ms),
            },
        ),
        stage[1],
        amount or 0.0,
    ),
    st.integers(1, 10**9),
    st.sampled_from(DEAL_STAGES),
    st.none() | st.floats(0, 1_000_000, allow_nan=False),
    times,
    st.booleans(),
)


@settings(max_examples=200)
@given(st.lists(deal, max_size=30))
def test_deal_sums_and_counts_follow_the_stage_metadata(
    items: list[tuple[Record, str, float]],
) -> None:
    records = [r for r, _, _ in items]
    value = RollupField("DEAL_VALUE", "deals", "sum", prop="amount", filter="won")
    count = RollupField("DEAL_COUNT", "deals", "count", filter="won")
    open_value = RollupField("OPEN_VALUE", "deals", "sum", prop="amount", filter="open")
    pipeline = RollupField("PIPE", "deals", "sum", prop="amount", filter="won_or_open")
    out = compute(
        [value, count, open_value, pipeline],
        {"deals": records},
        {"deals": DEALS},
        HealthScore(),
        TODAY,
    )
    won = [round(a, 2) for _, s, a in items if s in WON]
    opened = [round(a, 2) for _, s, a in items if s not in CLOSED]
    assert out["DEAL_COUNT"] == len(won)
    assert out["DEAL_VALUE"] == pytest.approx(sum(won), abs=0.01)
    assert out["OPEN_VALUE"] == pytest.approx(sum(opened), abs=0.01)
    assert out["PIPE"] == pytest.approx(sum(won) + sum(opened), abs=0.02)


ticket = st.builds(
    lambda i, stage, priority, created, ms: Record(
        str(i),
        {
            "hs_pipeline": "0",
            "hs_pipeline_stage": stage,
            "hs_ticket_priority": priority,
            "createdate": _stamp(created, ms),
        },
    ),
    st.integers(1, 10**9),
    st.sampled_from(["1", "2", "4"]),
    st.sampled_from([None, "LOW", "MEDIUM", "HIGH", "URGENT"]),
    times,
    st.booleans(),
)


@settings(max_examples=200)
@given(st.lists(ticket, max_size=25))
def test_ticket_counts_and_latest_date(records: list[Record]) -> None:
    fields = [
        RollupField("OPEN_TICKETS", "tickets", "count_open"),
        RollupField("CLOSED_TICKETS", "tickets", "count_closed"),
        RollupField("TICKETS", "tickets", "count"),
        RollupField("LAST_TICKET_DATE", "tickets", "latest"),
    ]
    out = compute(fields, {"tickets": records}, {"tickets": TICKETS}, HealthScore(), TODAY)
    opened = [r for r in records if r.properties["hs_pipeline_stage"] != "4"]
    assert out["OPEN_TICKETS"] == len(opened)
    assert out["OPEN_TICKETS"] + out["CLOSED_TICKETS"] == out["TICKETS"] == len(records)  # type: ignore[operator]
    if records:
        newest = max(
            datetime.fromtimestamp(int(v) / 1000, UTC) if v.isdigit() else datetime.fromisoformat(v)
            for r in records
            if (v := r.properties["createdate"]) is not None
        )
        assert out["LAST_TICKET_DATE"] == newest.date().isoformat()
    else:
        assert out["LAST_TICKET_DATE"] is None


weights = st.floats(-40, 0, allow_nan=False)


@settings(max_examples=200)
@given(st.lists(ticket, max_size=20), ticket, weights, weights, weights, st.integers(1, 365))
def test_health_score_stays_in_bounds_and_an_open_ticket_never_raises_it(
    records: list[Record], extra: Record, w_open: float, w_urgent: float, w_recent: float, days: int
) -> None:
    health = HealthScore(100, w_open, w_urgent, w_recent, days, 0, 100)
    score = health_score(records, TICKETS, health, TODAY)
    assert 0 <= score <= 100
    more = health_score([*records, extra], TICKETS, health, TODAY)
    assert more <= score


def test_health_score_formula() -> None:
    health = HealthScore(
        start=100,
        per_open_ticket=-15,
        per_urgent_open_ticket=-10,
        per_recent_ticket=-5,
        recent_days=30,
    )
    recent = (TODAY - timedelta(days=3)).isoformat()
    old = "2025-01-01"
    tickets = [
        Record(
            "1",
            {
                "hs_pipeline": "0",
                "hs_pipeline_stage": "1",
                "hs_ticket_priority": "URGENT",
                "createdate": recent,
            },
        ),
        Record(
            "2",
            {
                "hs_pipeline": "0",
                "hs_pipeline_stage": "2",
                "hs_ticket_priority": "LOW",
                "createdate": old,
            },
        ),
        Record(
            "3",
            {
                "hs_pipeline": "0",
                "hs_pipeline_stage": "4",
                "hs_ticket_priority": "HIGH",
                "createdate": recent,
            },
        ),
    ]
    # two open (-30), one of them urgent (-10), two recent (-10)
    assert health_score(tickets, TICKETS, health, TODAY) == 50
    assert health_score([], TICKETS, health, TODAY) == 100
    many = tickets * 5
    assert health_score(many, TICKETS, health, TODAY) == 0  # clamped


def test_stage_fallbacks() -> None:
    assert record_stage({"dealstage": "closedwon"}, "deals", {}) == Stage(True, True)
    assert record_stage({"dealstage": "closedlost"}, "deals", {}) == Stage(True, False)
    assert record_stage({"dealstage": "whatever"}, "deals", {}) == Stage()
    # a stage id known in another pipeline (a deal moved between pipelines)
    assert record_stage({"pipeline": "default", "dealstage": "r_won"}, "deals", DEALS) == Stage(
        True, True
    )


@given(st.integers(-(10**6), 10**6))
def test_canonical_numbers_compare_by_value(n: int) -> None:
    assert canonical(n) == canonical(float(n))
    assert canonical(None) == canonical(None) != canonical(0)


def test_property_of_the_newest_record() -> None:
    f = RollupField("PLAN", "2-1234", "property", prop="plan_name")
    records = [
        Record("5", {"plan_name": "Basic", "hs_lastmodifieddate": "2026-01-01T00:00:00Z"}),
        Record("6", {"plan_name": "Pro", "hs_lastmodifieddate": "2026-02-01T00:00:00Z"}),
    ]
    assert compute_field(f, records, {}, HealthScore(), TODAY) == "Pro"
    n = RollupField("SEATS", "2-1234", "property", prop="seats", type="float")
    assert (
        compute_field(
            n, [Record("1", {"seats": "12", "hs_lastmodifieddate": "1"})], {}, HealthScore(), TODAY
        )
        == 12
    )
    assert compute_field(f, [], {}, HealthScore(), TODAY) is None


@settings(max_examples=100)
@given(st.lists(times, min_size=1, max_size=10), st.sampled_from(["meetings", "calls", "notes"]))
def test_engagement_latest_reads_hs_timestamp(stamps: list[datetime], kind: str) -> None:
    records = [
        Record(str(i), {"hs_timestamp": _stamp(t, i % 2 == 0)}) for i, t in enumerate(stamps)
    ]
    f = RollupField("LAST", kind, "latest")
    c = RollupField("COUNT", kind, "count")
    out = compute([f, c], {kind: records}, {}, HealthScore(), TODAY)
    assert out == {"LAST": max(stamps).date().isoformat(), "COUNT": len(stamps)}


# --- the loader -------------------------------------------------------------------------------


def test_shipped_rollup_files_load() -> None:
    mappings = load_rollup_mappings(ROOT / "mappings" / "rollups")
    names = {f.brevo for m in mappings for f in m.fields}
    assert {"OPEN_TICKETS", "LAST_TICKET_DATE", "HEALTH_SCORE"} <= names
    assert {"LAST_MEETING_DATE", "MEETINGS_COUNT", "LAST_CALL_DATE", "LAST_NOTE_DATE"} <= names
    examples, problems = check_rollup_dir(ROOT / "mappings" / "rollups" / "examples")
    assert [p for p in problems if p.severity == "error"] == []
    assert {"DEAL_VALUE", "DEAL_COUNT"} <= {f.brevo for m in examples for f in m.fields}


def test_an_attribute_the_contact_mapping_writes_is_refused(tmp_path: Path) -> None:
    rollups = tmp_path / "rollups"
    rollups.mkdir()
    (tmp_path / "contacts.yaml").write_text(
        (ROOT / "mappings" / "contacts.yaml").read_text(encoding="utf-8")
    )
    deals = (ROOT / "mappings" / "rollups" / "examples" / "deals.yaml").read_text()
    (rollups / "deals.yaml").write_text(deals)
    _, problems = check_rollup_dir(rollups)
    text = [str(p) for p in problems if p.severity == "error"]
    assert len(text) == 2 and all("contacts.yaml" in t for t in text), text


BAD = """\
object: tickets
rollup:
  - brevo: OPEN_TICKETS
    value: count_opne
  - brevo: last_ticket
    value: latest
  - brevo: TOTAL
    value: sum
  - brevo: WON
    value: count
    filter: won
health_score:
  start: 100
  per_open_tiket: -3
"""


def test_bad_file_reports_file_line_and_fix() -> None:
    mapping, problems = check_rollup_text(BAD, "tickets.yaml")
    assert mapping is None
    text = [str(p) for p in problems]
    assert any("tickets.yaml:4" in t and "count_open" in t for t in text), text
    assert any("tickets.yaml:5" in t and "LAST_TICKET" in t for t in text), text
    assert any("tickets.yaml:7" in t and "needs 'property:'" in t for t in text), text
    assert any("tickets.yaml:11" in t and "object: deals" in t for t in text), text
    assert any("tickets.yaml:14" in t and "per_open_ticket" in t for t in text), text


def test_one_attribute_written_by_two_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("object: tickets\nrollup:\n  - {brevo: X, value: count}\n")
    (tmp_path / "b.yaml").write_text("object: calls\nrollup:\n  - {brevo: X, value: count}\n")
    with pytest.raises(MappingError, match="also written by"):
        load_rollup_mappings(tmp_path)
    assert load_rollup_mappings(tmp_path / "none") == []
