"""``connector mappings check``: live checks against the sandboxes (in process over ASGI) and the
command end to end (real processes against the sandboxes on loopback ports)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from connector.brevo.client import BrevoClient
from connector.config import BrevoSettings, HubSpotSettings
from connector.hubspot.client import HubSpotClient
from connector.mapping import Problem, load_mapping
from connector.mapping_live import Missing, create_missing, live_check
from connector.sandbox.brevo import BrevoState, create_brevo_app
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.sandbox.server import HUBSPOT_TOKEN, SandboxServers

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MAPPING = ROOT / "mappings" / "contacts.yaml"
HS_TOKEN = "mapping-check-token"
BR_KEY = "mapping-check-key"
MISSING_BREVO = (
    "COMPANY_NAME",
    "LIFECYCLE_STAGE",
    "LEAD_STATUS",
    "DEAL_VALUE",
    "DEAL_COUNT",
    "PREFERRED_CHANNEL",
    "SEGMENT",
)


def line_with(path: Path, text: str, after: str | None = None) -> int:
    """The 1-based line of the first line holding ``text`` (after the line holding ``after``)."""
    lines = path.read_text().splitlines()
    start = 0 if after is None else line_with(path, after)
    return next(i + 1 for i, line in enumerate(lines) if i >= start and text in line)


@dataclass
class Accounts:
    hs: HubSpotState
    br: BrevoState
    hubspot: HubSpotClient
    brevo: BrevoClient

    def calls(self) -> tuple[int, int]:
        return len(self.hs.log.calls), len(self.br.calls.calls)


@pytest.fixture
async def accounts() -> AsyncIterator[Accounts]:
    hs = HubSpotState(rate_limits=False)
    br = BrevoState(rate_limits=False)
    hs.add_token(HS_TOKEN)
    br.add_api_key(BR_KEY, name="connector")
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


def write_mapping(tmp_path: Path, fields: str, name: str = "contacts.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"object: contacts\nfields:\n{fields}")
    return path


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# --- live checks over ASGI ------------------------------------------------------------------


async def test_fresh_account_lacks_custom_fields(tmp_path: Path, accounts: Accounts) -> None:
    path = tmp_path / "contacts.yaml"
    shutil.copy(DEFAULT_MAPPING, path)
    mapping = load_mapping(path)
    problems = await live_check(mapping, accounts.hubspot, accounts.brevo)
    assert accounts.calls() == (1, 1)  # one properties call, one attributes call
    assert all(isinstance(p, Missing) and p.severity == "error" for p in problems), problems
    assert all(p.file == str(path) for p in problems)
    hubspot = {p.name: p for p in problems if isinstance(p, Missing) and p.system == "hubspot"}
    brevo = {p.name: p for p in problems if isinstance(p, Missing) and p.system == "brevo"}
    assert set(hubspot) == {"preferred_channel", "customer_segment"}
    assert set(brevo) == set(MISSING_BREVO)
    assert hubspot["preferred_channel"].line == line_with(path, "hubspot: preferred_channel")
    assert brevo["PREFERRED_CHANNEL"].line == line_with(path, "brevo: PREFERRED_CHANNEL")
    assert brevo["DEAL_VALUE"].field == "hs_total_deal_value"
    assert "does not exist on contacts" in hubspot["customer_segment"].message
    assert "category attribute (1 subscriber, 2 lead" in brevo["LIFECYCLE_STAGE"].message


async def test_create_missing_with_the_right_types(tmp_path: Path, accounts: Accounts) -> None:
    mapping = load_mapping(DEFAULT_MAPPING)
    problems = await live_check(mapping, accounts.hubspot, accounts.brevo)
    created = await create_missing(mapping, problems, accounts.hubspot, accounts.brevo)
    assert len(created) == 9
    assert "HubSpot property contacts.preferred_channel (string, text)" in created
    props = accounts.hs.properties["contacts"]
    assert (props["customer_segment"].type, props["customer_segment"].field_type) == (
        "string",
        "text",
    )
    attrs = accounts.br.attributes
    assert attrs["DEAL_VALUE"].type == "float" and attrs["DEAL_COUNT"].type == "float"
    assert attrs["SEGMENT"].type == "text" and attrs["COMPANY_NAME"].type == "text"
    stage = attrs["LIFECYCLE_STAGE"]
    assert stage.category == "category"
    assert [(e["value"], e["label"]) for e in stage.enumeration or []][:2] == [
        (1, "Subscriber"),  # the HubSpot option's label
        (2, "Lead"),
    ]
    assert await live_check(mapping, accounts.hubspot, accounts.brevo) == []


async def test_typed_properties_are_created_typed(tmp_path: Path, accounts: Accounts) -> None:
    path = write_mapping(
        tmp_path,
        "  - {hubspot: renewal_date, brevo: RENEWAL, type: date, transform: date}\n"
        "  - {hubspot: seats, brevo: SEATS, type: number, transform: number}\n"
        "  - {hubspot: vip, brevo: VIP, type: boolean, transform: boolean}\n"
        "  - hubspot: plan\n    brevo: PLAN\n    type: enumeration\n"
        "    transform: {value_map: {basic: 1, pro: 2}}\n",
    )
    mapping = load_mapping(path)
    problems = await live_check(mapping, accounts.hubspot, accounts.brevo)
    await create_missing(mapping, problems, accounts.hubspot, accounts.brevo)
    props = accounts.hs.properties["contacts"]
    assert (props["renewal_date"].type, props["renewal_date"].field_type) == ("date", "date")
    assert (props["seats"].type, props["seats"].field_type) == ("number", "number")
    assert (props["vip"].type, props["vip"].field_type) == ("bool", "booleancheckbox")
    assert props["vip"].option_values() == {"true", "false"}
    assert (props["plan"].type, props["plan"].field_type) == ("enumeration", "select")
    assert props["plan"].option_values() == {"basic", "pro"}
    attrs = accounts.br.attributes
    assert [attrs[n].type for n in ("RENEWAL", "SEATS", "VIP", "PLAN")] == [
        "date",
        "float",
        "boolean",
        "category",
    ]
    assert await live_check(mapping, accounts.hubspot, accounts.brevo) == []


async def test_type_mismatches(tmp_path: Path, accounts: Accounts) -> None:
    accounts.br.create_attribute("normal", "DEAL_VALUE", {"type": "text"})
    accounts.hs.create_property(
        "contacts", {"name": "preferred_channel", "type": "number", "fieldType": "number"}
    )
    path = write_mapping(
        tmp_path,
        "  - hubspot: hs_total_deal_value\n    brevo: DEAL_VALUE\n    type: number\n"
        "    direction: hubspot_to_brevo\n    transform: number\n"
        "  - hubspot: preferred_channel\n    brevo: FIRSTNAME\n    type: text\n"
        "  - hubspot: firstname\n    brevo: OPT_IN\n    type: text\n",
    )
    mapping = load_mapping(path)
    problems = await live_check(mapping, accounts.hubspot, accounts.brevo)
    found = {p.field: p for p in errors(problems)}
    assert set(found) == {"hs_total_deal_value", "preferred_channel", "firstname"}, problems
    deal = found["hs_total_deal_value"]
    assert deal.line == line_with(path, "brevo: DEAL_VALUE")
    assert "Brevo attribute DEAL_VALUE is text, the mapping sends numbers" in deal.message
    assert "re-create it in Brevo as a float attribute" in deal.message
    channel = found["preferred_channel"]
    assert channel.line == line_with(path, "type: text", after="hubspot: preferred_channel")
    assert "HubSpot property 'preferred_channel' (contacts) is number" in channel.message
    assert "treats it as text" in channel.message and "transform: number" in channel.message
    assert "OPT_IN is boolean, the mapping sends text" in found["firstname"].message
    # a wrong type is not "missing": --create-missing leaves it alone
    assert await create_missing(mapping, problems, accounts.hubspot, accounts.brevo) == []


async def test_value_maps_against_options(tmp_path: Path, accounts: Accounts) -> None:
    accounts.br.create_attribute(
        "category",
        "STAGE",
        {"enumeration": [{"value": 1, "label": "Lead"}, {"value": 2, "label": "Customer"}]},
    )
    path = write_mapping(
        tmp_path,
        "  - hubspot: lifecyclestage\n    brevo: STAGE\n    type: enumeration\n"
        "    transform:\n      value_map: {lead: 1, customer: 2, client: 3}\n",
    )
    mapping = load_mapping(path)
    problems = await live_check(mapping, accounts.hubspot, accounts.brevo)
    line = line_with(path, "transform:")
    messages = [(p.line, p.severity, p.message) for p in problems]
    assert (line, "error") == messages[0][:2]
    assert any(
        "not options of HubSpot property 'lifecyclestage': client" in m for _, _, m in messages
    )
    assert any("not options of Brevo category STAGE: 3" in m for _, _, m in messages)
    assert any(s == "warning" and "missing from the value map" in m for _, s, m in messages)


async def test_read_only_in_the_live_schema(tmp_path: Path, accounts: Accounts) -> None:
    accounts.hs.properties["contacts"]["company"].calculated = True  # computed in this account
    path = write_mapping(
        tmp_path,
        "  - hubspot: company\n    brevo: FIRSTNAME\n    direction: both\n"
        "  - hubspot: firstname\n    brevo: LASTNAME\n    direction: both\n",
    )
    problems = await live_check(load_mapping(path), accounts.hubspot, accounts.brevo)
    assert [(p.line, p.field, p.message) for p in problems] == [
        (
            line_with(path, "direction: both"),
            "company",
            "company is read-only in HubSpot: set direction: hubspot_to_brevo",
        )
    ]


async def test_unknown_object_type(tmp_path: Path, accounts: Accounts) -> None:
    path = tmp_path / "things.yaml"
    path.write_text("object: widgets\nfields:\n  - {hubspot: name, brevo: NAME}\n")
    problems = await live_check(load_mapping(path), accounts.hubspot, accounts.brevo)
    assert [(p.line, p.field) for p in problems] == [(1, "object")]
    assert "HubSpot has no object type 'widgets'" in problems[0].message


# --- the command, end to end ----------------------------------------------------------------


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config_for(servers: SandboxServers, tmp_path: Path, folder: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    text = servers.config_yaml(f"sqlite:///{tmp_path / 'c.db'}")
    cfg.write_text(text + f"sync:\n  mappings_dir: {folder}\n")
    return cfg


def mappings_dir(tmp_path: Path, text: str | None = None) -> tuple[Path, Path]:
    folder = tmp_path / "mappings"
    folder.mkdir()
    path = folder / "contacts.yaml"
    if text is None:
        shutil.copy(DEFAULT_MAPPING, path)
    else:
        path.write_text(text)
    return folder, path


def api_calls(servers: SandboxServers) -> int:
    return len(servers.hubspot.log.calls) + len(servers.brevo.calls.calls)


async def test_cli_fresh_account_then_create_missing(tmp_path: Path) -> None:
    folder, path = mappings_dir(tmp_path)
    async with SandboxServers() as servers:
        cfg = config_for(servers, tmp_path, folder)
        code, out, err = await run_cli("--config", str(cfg), "mappings", "check")
        assert code == 1, out + err
        hs_line = line_with(path, "hubspot: preferred_channel")
        assert (
            f"{path}:{hs_line}: error: preferred_channel: HubSpot property 'preferred_channel' "
            "does not exist on contacts" in out
        )
        br_line = line_with(path, "brevo: LIFECYCLE_STAGE")
        assert f"{path}:{br_line}: error: lifecyclestage: Brevo attribute LIFECYCLE_STAGE" in out
        assert "\n9 errors, 0 warnings (1 mapping file checked" in out
        assert "preferred_channel" not in servers.hubspot.properties["contacts"]

        code, out, err = await run_cli(
            "--config", str(cfg), "mappings", "check", "--create-missing"
        )
        assert code == 0, out + err
        assert "created HubSpot property contacts.preferred_channel (string, text)" in out
        assert "created HubSpot property contacts.customer_segment (string, text)" in out
        assert "created Brevo attribute DEAL_VALUE (float)" in out
        assert "created Brevo attribute LIFECYCLE_STAGE (category: 1 = Subscriber" in out
        assert "0 errors, 0 warnings" in out
        assert servers.brevo.attributes["DEAL_COUNT"].type == "float"

        writes = servers.hubspot.log.writes() + servers.brevo.calls.writes()
        code, out, err = await run_cli(
            "--config", str(cfg), "mappings", "check", "--create-missing"
        )
        assert code == 0, out + err
        assert out.strip() == (
            "0 errors, 0 warnings (1 mapping file checked against HubSpot and Brevo)"
        )
        assert servers.hubspot.log.writes() + servers.brevo.calls.writes() == writes


async def test_cli_type_mismatch(tmp_path: Path) -> None:
    folder, path = mappings_dir(tmp_path)
    async with SandboxServers() as servers:
        servers.brevo.create_attribute("normal", "DEAL_COUNT", {"type": "text"})
        cfg = config_for(servers, tmp_path, folder)
        code, out, err = await run_cli(
            "--config", str(cfg), "mappings", "check", "--create-missing"
        )
        assert code == 1, out + err
        line = line_with(path, "brevo: DEAL_COUNT")
        assert (
            f"{path}:{line}: error: num_associated_deals: type mismatch: Brevo attribute "
            "DEAL_COUNT is text, the mapping sends numbers (transform: number)" in out
        )
        assert "created Brevo attribute DEAL_VALUE (float)" in out
        assert out.rstrip().endswith(
            "1 error, 0 warnings (1 mapping file checked against HubSpot and Brevo)"
        )


async def test_cli_static_errors_make_no_api_call(tmp_path: Path) -> None:
    folder, path = mappings_dir(tmp_path)
    text = path.read_text().replace(
        "    direction: hubspot_to_brevo\n    transform: number\n\n  - hubspot: num_",
        "    direction: both\n    transform: number\n\n  - hubspot: num_",
    )
    path.write_text(text)
    (folder / "broken.yaml").write_text("object: contacts\nfields:\n  - hubspot: a\n   brevo: B\n")
    async with SandboxServers() as servers:
        cfg = config_for(servers, tmp_path, folder)
        code, out, err = await run_cli("--config", str(cfg), "mappings", "check")
        assert code == 1, out + err
        assert f"{folder / 'broken.yaml'}:4: error: not valid YAML" in out
        line = line_with(path, "direction: both", after="hubspot: hs_total_deal_value")
        assert (
            f"{path}:{line}: error: hs_total_deal_value: hs_total_deal_value is read-only in "
            "HubSpot: set direction: hubspot_to_brevo" in out
        )
        assert "live checks skipped: fix the errors first" in out
        assert api_calls(servers) == 0


async def test_cli_offline_makes_no_api_call(tmp_path: Path) -> None:
    folder, _ = mappings_dir(tmp_path)
    async with SandboxServers() as servers:
        cfg = config_for(servers, tmp_path, folder)
        code, out, err = await run_cli("--config", str(cfg), "mappings", "check", "--offline")
        assert code == 0, out + err
        assert out.strip() == "0 errors, 0 warnings (offline: live checks skipped)"
        assert api_calls(servers) == 0
        code, _, err = await run_cli(
            "--config", str(cfg), "mappings", "check", "--offline", "--create-missing"
        )
        assert code == 2 and "drop --offline" in err


async def test_cli_api_error_is_scrubbed(tmp_path: Path) -> None:
    folder, _ = mappings_dir(tmp_path)
    async with SandboxServers() as servers:
        servers.hubspot.revoke(HUBSPOT_TOKEN)
        cfg = config_for(servers, tmp_path, folder)
        code, out, err = await run_cli("--config", str(cfg), "mappings", "check")
        assert code == 1
        assert "HTTP 401" in err and "Traceback" not in err
        assert HUBSPOT_TOKEN not in out + err


async def test_cli_config_error_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("connectors:\n  hubspot:\n    access_token: x\nsync:\n  mappings_dri: m\n")
    code, _, err = await run_cli("--config", str(cfg), "mappings", "check", "--offline")
    assert code == 2 and "mappings_dri" in err
