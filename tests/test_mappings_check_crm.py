"""``connector mappings check`` for companies and deals: Brevo CRM attributes, and a deals
mapping's pipeline and stage value maps against both sides' pipelines (live over ASGI against
the sandboxes; the pipeline rules also as properties of :func:`check_pipelines`)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.brevo.client import BrevoClient
from connector.brevo.crm_models import BrevoPipeline, BrevoStage
from connector.config import BrevoSettings, HubSpotSettings
from connector.hubspot.client import HubSpotClient
from connector.hubspot.crm import Pipeline, PipelineStage
from connector.mapping import (
    CompiledField,
    Problem,
    Severity,
    check_mapping_text,
    load_mapping,
)
from connector.mapping_crm import CrmSide, check_pipelines
from connector.mapping_live import check_directory, live_check
from connector.sandbox.brevo import BrevoState, create_brevo_app
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "mappings_crm"
ROOT = HERE.parent
HS_TOKEN = "crm-check-token"
BR_KEY = "crm-check-key"
PIPELINE = "65f0a1b2c3d4e5f600000001"
STAGES = {
    "New": "65f0a1b2c3d4e5f600000002",
    "Qualified": "65f0a1b2c3d4e5f600000003",
    "Proposal": "65f0a1b2c3d4e5f600000004",
    "Negotiation": "65f0a1b2c3d4e5f600000005",
    "Won": "65f0a1b2c3d4e5f600000006",
    "Lost": "65f0a1b2c3d4e5f600000007",
}
HS_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)


@dataclass
class Accounts:
    hs: HubSpotState
    br: BrevoState
    hubspot: HubSpotClient
    brevo: BrevoClient

    def brevo_paths(self) -> list[str]:
        return [path for _, path, _ in self.br.calls.calls]


@pytest.fixture
async def accounts() -> AsyncIterator[Accounts]:
    hs = HubSpotState(rate_limits=False)
    br = BrevoState(rate_limits=False)
    hs.add_token(HS_TOKEN)
    br.add_api_key(BR_KEY, name="connector")
    # the ids the fixture mapping names
    br.crm.pipeline_id = PIPELINE
    br.crm.stages = [{"id": sid, "name": name} for name, sid in STAGES.items()]
    hubspot = HubSpotClient(
        HubSpotSettings(base_url="http://hubspot.test", access_token=HS_TOKEN),
        transport=httpx.ASGITransport(create_hubspot_app(hs)),
    )
    brevo = BrevoClient(
        BrevoSettings(base_url="http://brevo.test/v3", api_key=BR_KEY),
        transport=httpx.ASGITransport(create_brevo_app(br)),
    )
    try:
        yield Accounts(hs, br, hubspot, brevo)
    finally:
        await hubspot.aclose()
        await brevo.aclose()


def fixture_copy(tmp_path: Path, name: str, edit: dict[str, str] | None = None) -> Path:
    """The fixture mapping ``name`` copied to ``tmp_path``, with text replacements."""
    text = (FIXTURES / name).read_text()
    for old, new in (edit or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def line_with(path: Path, text: str) -> int:
    return next(i + 1 for i, line in enumerate(path.read_text().splitlines()) if text in line)


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# --- the fixtures are right ----------------------------------------------------------------


async def test_deals_fixture_checks_clean(accounts: Accounts) -> None:
    mapping = load_mapping(FIXTURES / "deals.yaml")
    problems = await live_check(mapping, accounts.hubspot, accounts.brevo)
    assert errors(problems) == []
    paths = accounts.brevo_paths()
    # CRM attributes and pipelines, one call each; no contact attribute read
    assert sorted(p for p in paths if "/crm/" in p) == [
        "/v3/crm/attributes/deals",
        "/v3/crm/pipeline/details/all",
    ]
    assert not any(p.startswith("/v3/contacts") for p in paths)


async def test_companies_fixture_checks_clean(accounts: Accounts) -> None:
    mapping = load_mapping(FIXTURES / "companies.yaml")
    problems = await live_check(mapping, accounts.hubspot, accounts.brevo)
    assert problems == []
    assert [p for p in accounts.brevo_paths() if "attributes" in p] == [
        "/v3/crm/attributes/companies"
    ]


async def test_check_directory_runs_the_crm_checks(tmp_path: Path, accounts: Accounts) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    shutil.copy(FIXTURES / "deals.yaml", folder)
    shutil.copy(FIXTURES / "companies.yaml", folder)
    report = await check_directory(folder, hubspot=accounts.hubspot, brevo=accounts.brevo)
    assert report.errors == 0
    assert sorted(Path(p).name for p in report.live) == ["companies.yaml", "deals.yaml"]


# --- stages ---------------------------------------------------------------------------------


async def test_stage_map_errors_name_line_field_and_valid_ids(
    tmp_path: Path, accounts: Accounts
) -> None:
    path = fixture_copy(
        tmp_path,
        "deals.yaml",
        {
            "        closedlost: 65f0a1b2c3d4e5f600000007\n": "",
            "qualifiedtobuy: 65f0a1b2c3d4e5f600000003": "qualifiedtobuy: 65f0a1b2c3d4e5f6000000ff",
            "        closedwon: 65f0a1b2c3d4e5f600000006\n": (
                "        closedwon: 65f0a1b2c3d4e5f600000006\n"
                "        closed_won: 65f0a1b2c3d4e5f600000006\n"
            ),
        },
    )
    problems = errors(await live_check(load_mapping(path), accounts.hubspot, accounts.brevo))
    lines = path.read_text().splitlines()
    stage_entry = lines.index("  - hubspot: dealstage") + 1
    transform_line = next(
        i + 1 for i, line in enumerate(lines) if i >= stage_entry and "transform:" in line
    )
    assert {(p.line, p.field) for p in problems} == {(transform_line, "dealstage")}
    text = "\n".join(p.message for p in problems)
    assert "stage value map keys that are not HubSpot deal stage ids: closed_won" in text
    assert (
        "HubSpot deal stages missing from the stage value map: "
        "closedlost (Sales Pipeline / Closedlost)" in text
    )
    assert "not Brevo deal stage ids: 65f0a1b2c3d4e5f6000000ff" in text
    # valid ids with their labels, both sides
    assert "appointmentscheduled (Appointmentscheduled)" in text
    assert f"{STAGES['Won']} (Won)" in text


async def test_stage_into_another_brevo_pipeline(tmp_path: Path, accounts: Accounts) -> None:
    other: dict[str, Any] = {
        "pipeline": "65f0a1b2c3d4e5f6000000a0",
        "pipeline_name": "Renewals",
        "stages": [{"id": "65f0a1b2c3d4e5f6000000a1", "name": "Up for renewal"}],
    }
    default = accounts.br.crm.pipelines()
    accounts.br.crm.pipelines = lambda: [*default, other]  # type: ignore[method-assign]
    path = fixture_copy(
        tmp_path,
        "deals.yaml",
        {"closedlost: 65f0a1b2c3d4e5f600000007": "closedlost: 65f0a1b2c3d4e5f6000000a1"},
    )
    problems = errors(await live_check(load_mapping(path), accounts.hubspot, accounts.brevo))
    assert len(problems) == 1
    assert problems[0].field == "dealstage"
    assert (
        "closedlost → 65f0a1b2c3d4e5f6000000a1 (in Renewals, not Sales pipeline)"
        in problems[0].message
    )


# --- pipelines ------------------------------------------------------------------------------


async def test_pipeline_map_errors(tmp_path: Path, accounts: Accounts) -> None:
    accounts.hs.properties["deals"]["pipeline"].options.append(
        {"label": "Renewals", "value": "renewals", "displayOrder": 1, "hidden": False}
    )
    path = fixture_copy(
        tmp_path,
        "deals.yaml",
        {"        default: 65f0a1b2c3d4e5f600000001\n": "        defualt: 123\n"},
    )
    problems = errors(await live_check(load_mapping(path), accounts.hubspot, accounts.brevo))
    pipeline = [p for p in problems if p.field == "pipeline"]
    text = "\n".join(p.message for p in pipeline)
    assert "not HubSpot deal pipeline ids: defualt (HubSpot's pipelines: default (Sales" in text
    assert f"not Brevo pipeline ids: 123 (Brevo's pipelines: {PIPELINE} (Sales pipeline))" in text
    assert "missing from the pipeline value map" in text
    assert "default (Sales Pipeline), renewals (Renewals)" in text
    assert {p.line for p in pipeline} == {line_with(path, "defualt") - 2}


async def test_pipeline_field_without_value_map(tmp_path: Path, accounts: Accounts) -> None:
    path = fixture_copy(
        tmp_path,
        "deals.yaml",
        {
            "    type: enumeration\n    transform:\n      value_map:\n"
            "        default: 65f0a1b2c3d4e5f600000001\n": ""
        },
    )
    problems = errors(await live_check(load_mapping(path), accounts.hubspot, accounts.brevo))
    assert [p.field for p in problems] == ["pipeline"]
    assert "holds pipeline ids, which differ from HubSpot's: add a value_map" in (
        problems[0].message
    )


# --- attributes -----------------------------------------------------------------------------


async def test_missing_and_mistyped_crm_attributes(tmp_path: Path, accounts: Accounts) -> None:
    path = fixture_copy(
        tmp_path,
        "companies.yaml",
        {
            "    brevo: industry\n": "    brevo: sector\n",
            "  - hubspot: domain\n    brevo: domain\n": (
                "  - hubspot: domain\n    brevo: domain\n"
                "  - hubspot: annualrevenue\n    brevo: created_at\n    type: number\n"
                "    transform: number\n"
                "  - hubspot: city\n    brevo: revenue\n"
            ),
        },
    )
    problems = await live_check(load_mapping(path), accounts.hubspot, accounts.brevo)
    by_field = {p.field: p for p in errors(problems)}
    assert set(by_field) == {"industry", "annualrevenue", "city"}
    missing = by_field["industry"]
    assert missing.line == line_with(path, "brevo: sector")
    assert "Brevo companies attribute 'sector' does not exist" in missing.message
    assert "CRM → Settings → Company attributes" in missing.message
    assert "industry (text)" in missing.message  # what exists
    assert "Brevo sets created_at itself: set direction: brevo_to_hubspot" in (
        by_field["annualrevenue"].message
    )
    assert "revenue is number, the mapping treats it as text" in by_field["city"].message


# --- the rules, as properties ---------------------------------------------------------------

BREVO = [
    BrevoPipeline(PIPELINE, "Sales pipeline", tuple(BrevoStage(i, n) for n, i in STAGES.items()))
]
HUBSPOT = [
    Pipeline(
        "default",
        "Sales Pipeline",
        stages=tuple(PipelineStage(s, s.title(), i) for i, s in enumerate(HS_STAGES)),
    )
]


def _deals_mapping(stage_map: dict[str, str]) -> Any:
    entries = "\n".join(f"        {k}: '{v}'" for k, v in stage_map.items())
    text = (
        "object: deals\nfields:\n"
        f"  - hubspot: pipeline\n    brevo: pipeline\n    transform:\n      value_map:\n"
        f"        default: '{PIPELINE}'\n"
        "  - hubspot: dealstage\n    brevo: deal_stage\n    direction: hubspot_to_brevo\n"
        f"    transform:\n      value_map:\n{entries}\n"
    )
    mapping, problems = check_mapping_text(text)
    assert mapping is not None, problems
    return mapping


@settings(max_examples=60, deadline=None)
@given(
    kept=st.lists(st.sampled_from(HS_STAGES), unique=True, min_size=1),
    targets=st.lists(st.sampled_from([*STAGES.values(), "nope"]), min_size=7, max_size=7),
)
def test_every_stage_and_value_is_checked(kept: list[str], targets: list[str]) -> None:
    """The missing stages are exactly those left out; the bad values exactly those invented."""
    stage_map = {s: targets[HS_STAGES.index(s)] for s in kept}
    found: list[tuple[str, str]] = []

    def add(f: CompiledField, key: str, message: str, severity: Severity) -> None:
        found.append((f.key, message))

    check_pipelines(_deals_mapping(stage_map), CrmSide({}, HUBSPOT, BREVO), add)
    missing = [s for s in HS_STAGES if s not in kept]
    missing_msgs = [m for _, m in found if "missing from the stage value map" in m]
    bad_msgs = [m for _, m in found if "not Brevo deal stage ids" in m]
    if missing:
        assert len(missing_msgs) == 1
        listed = missing_msgs[0].split(": ", 1)[1].split(" — ")[0]
        assert [part.split(" ")[0] for part in listed.split(", ")] == missing
    else:
        assert missing_msgs == []
    assert bool(bad_msgs) == ("nope" in stage_map.values())
    assert len(found) == len(missing_msgs) + len(bad_msgs)


async def test_upper_case_crm_name_names_the_real_one(tmp_path: Path, accounts: Accounts) -> None:
    path = fixture_copy(tmp_path, "deals.yaml", {"    brevo: amount\n": "    brevo: AMOUNT\n"})
    problems = await live_check(load_mapping(path), accounts.hubspot, accounts.brevo)
    (error,) = errors(problems)
    assert (error.line, error.field) == (line_with(path, "brevo: AMOUNT"), "amount")
    assert "its internal name is 'amount': write brevo: amount" in error.message
