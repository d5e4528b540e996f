"""Custom objects: the schema API (dated path), ``mappings check`` of roll-up files against it
and against Brevo's attributes (``--create-missing``), and a custom object's properties rolled
up onto its contacts' Brevo attributes, against the sandboxes."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.hubspot.schemas import find_schema, list_schemas
from connector.mapping_live import Missing, Report
from connector.objects.rollup_check import (
    check_rollups,
    live_check_rollups,
    resolve_custom_types,
)
from connector.objects.rollup_mapping import load_rollup_file, load_rollup_mappings
from connector.objects.rollup_sync import RollupSource
from connector.objects.rollups import ContactRollups
from connector.sandbox import hubspot_model
from connector.sandbox.hubspot_schemas import define_custom_object
from tests.sync_env import ROOT, SyncEnv, sync_env

EXAMPLE = ROOT / "mappings" / "rollups" / "examples" / "subscriptions.yaml"
PROPS = [
    {"name": "plan", "label": "Plan", "type": "string", "fieldType": "text"},
    {"name": "seats", "label": "Seats", "type": "number", "fieldType": "number"},
    {"name": "renewal_date", "label": "Renewal", "type": "date", "fieldType": "date"},
]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[SyncEnv]:
    async with sync_env(tmp_path) as e:
        yield e


def _define(env: SyncEnv) -> str:
    return define_custom_object(env.hs_state, "subscriptions", PROPS, label="Subscription")


async def test_schemas_on_the_dated_path(env: SyncEnv) -> None:
    type_id = _define(env)
    schemas = await list_schemas(env.hubspot)
    paths = [p for _, p, _ in env.hs_state.log.calls]
    assert any(p == f"/crm-object-schemas/{env.hubspot.paths.version}/schemas" for p in paths)
    s = find_schema(schemas, "subscriptions")
    assert s is not None and s.object_type_id == type_id
    assert find_schema(schemas, type_id) is s and find_schema(schemas, s.fully_qualified_name) is s
    assert s.associates_with_contacts
    assert {"plan", "seats", "renewal_date"} <= {p.name for p in s.properties}
    assert find_schema(schemas, "nothing") is None


async def test_mappings_check_of_a_custom_object_file(tmp_path: Path, env: SyncEnv) -> None:
    folder = tmp_path / "mappings" / "rollups"
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLE, folder / "subscriptions.yaml")
    report = await check_rollups(folder, Report([]), hubspot=env.hubspot, brevo=env.brevo)
    # no such custom object yet: one problem naming the file and the object's line
    errors = [p for p in report.problems if p.severity == "error"]
    assert any("no custom object 'subscriptions'" in str(p) for p in errors), errors
    _define(env)
    report = await check_rollups(folder, Report([]), hubspot=env.hubspot, brevo=env.brevo)
    missing = [p for p in report.problems if isinstance(p, Missing)]
    assert {p.name for p in missing} == {
        "SUBSCRIPTION_PLAN",
        "SUBSCRIPTION_SEATS",
        "SUBSCRIPTION_RENEWAL",
        "SUBSCRIPTIONS",
    }
    assert all(p.line and "--create-missing" in p.message for p in missing)
    report = await check_rollups(
        folder, Report([]), hubspot=env.hubspot, brevo=env.brevo, create=True
    )
    assert report.problems == [] and len(report.created) == 4
    types = {
        name: env.br_state.attributes[name].type
        for name in ("SUBSCRIPTION_SEATS", "SUBSCRIPTION_RENEWAL", "SUBSCRIPTION_PLAN")
    }
    assert types == {
        "SUBSCRIPTION_SEATS": "float",
        "SUBSCRIPTION_RENEWAL": "date",
        "SUBSCRIPTION_PLAN": "text",
    }
    # a property the object does not have, and a latest of a non-date
    text = (folder / "subscriptions.yaml").read_text()
    (folder / "subscriptions.yaml").write_text(
        text.replace("property: plan", "property: plann").replace(
            "property: renewal_date", "property: seats"
        )
    )
    report = await check_rollups(folder, Report([]), hubspot=env.hubspot, brevo=env.brevo)
    text_problems = [str(p) for p in report.problems]
    assert any("no property 'plann'" in t and "did you mean 'plan'" in t for t in text_problems)
    assert any("'seats' is a number property: latest needs a date" in t for t in text_problems)


async def test_shipped_files_check_and_create_missing(env: SyncEnv) -> None:
    mappings = load_rollup_mappings(ROOT / "mappings" / "rollups")
    problems = await live_check_rollups(mappings, env.hubspot, env.brevo)
    missing = {p.name for p in problems if isinstance(p, Missing)}
    assert {"OPEN_TICKETS", "HEALTH_SCORE", "LAST_MEETING_DATE", "LAST_NOTE_DATE"} <= missing
    assert [p for p in problems if not isinstance(p, Missing)] == []
    env.br_state.create_attribute("normal", "OPEN_TICKETS", {"type": "text"})
    problems = await live_check_rollups(mappings, env.hubspot, env.brevo)
    wrong = [str(p) for p in problems if "OPEN_TICKETS is text" in str(p)]
    assert len(wrong) == 1 and "tickets.yaml:" in wrong[0]


async def test_custom_object_rolls_up_onto_its_contacts(env: SyncEnv) -> None:
    type_id = _define(env)
    for name, kind in (
        ("SUBSCRIPTION_PLAN", "text"),
        ("SUBSCRIPTION_SEATS", "float"),
        ("SUBSCRIPTION_RENEWAL", "date"),
        ("SUBSCRIPTIONS", "float"),
    ):
        env.br_state.create_attribute("normal", name, {"type": kind})
    ana = env.hs_create(email="ana@example.com", firstname="Ana")
    await env.cycle(mode="resync")
    await env.br_state.wait_processes()
    hs = env.hs_state
    assoc = hubspot_model.DEFAULT_ASSOC[("subscriptions", "contacts")]
    old = hs.put_object(
        "subscriptions", {"plan": "Basic", "seats": "3", "renewal_date": "2026-06-01"}
    )
    hs.associate("subscriptions", int(old), "contacts", int(ana), assoc)
    env.clock.advance(60)
    new = hs.put_object(
        "subscriptions", {"plan": "Pro", "seats": "12", "renewal_date": "2026-09-01"}
    )
    hs.associate("subscriptions", int(new), "contacts", int(ana), assoc)

    [mapping] = await resolve_custom_types([load_rollup_file(EXAMPLE)], env.hubspot)
    assert mapping.object == type_id and {f.object for f in mapping.fields} == {type_id}
    rollups = ContactRollups(
        hubspot=env.hubspot,
        brevo=env.brevo,
        sessions=env.engine.sessions,
        mappings=[mapping],
        list_ids=[10],
        clock=env.clock.now,
    )
    source = RollupSource(type_id, rollups, clock=env.clock.now)
    out = await source.resync()
    assert out.counts["rollup_contacts"] == 1 and out.counts["brevo_updated"] == 1
    c = env.br_by_email("ana@example.com")
    assert c is not None
    a = c.attributes
    assert a["SUBSCRIPTION_PLAN"] == "Pro" and a["SUBSCRIPTION_SEATS"] == 12
    assert a["SUBSCRIPTION_RENEWAL"][:10] == "2026-09-01" and a["SUBSCRIPTIONS"] == 2
    # an object.propertyChange webhook on the custom object (objectTypeId) → that contact
    env.clock.advance(60)
    hs.put_object("subscriptions", {"plan": "Enterprise"}, new)
    await source.sync_ids(hubspot_ids=[new])
    c = env.br_by_email("ana@example.com")
    assert c is not None and c.attributes["SUBSCRIPTION_PLAN"] == "Enterprise"
    writes = env.br_state.calls.writes()
    await source.resync()
    assert env.br_state.calls.writes() == writes


# --- the command, end to end ------------------------------------------------------------------


async def test_cli_mappings_check_covers_the_rollup_files(tmp_path: Path) -> None:
    from connector.sandbox.server import SandboxServers
    from tests.test_mappings_check import config_for, run_cli

    folder = tmp_path / "mappings"
    (folder / "rollups").mkdir(parents=True)
    shutil.copy(ROOT / "mappings" / "contacts.yaml", folder / "contacts.yaml")
    shutil.copy(ROOT / "mappings" / "rollups" / "engagements.yaml", folder / "rollups")
    bad = folder / "rollups" / "tickets.yaml"
    bad.write_text("object: tickets\nrollup:\n  - brevo: OPEN_TICKETS\n    value: count_opne\n")
    async with SandboxServers() as servers:
        cfg = config_for(servers, tmp_path, folder)
        code, out, err = await run_cli("--config", str(cfg), "mappings", "check", "--offline")
        assert code == 1, out + err
        assert f"{bad}:4: error: OPEN_TICKETS: value 'count_opne' is not known" in out
        assert "did you mean 'count_open'" in out
        bad.write_text((ROOT / "mappings" / "rollups" / "tickets.yaml").read_text())
        code, out, err = await run_cli(
            "--config", str(cfg), "mappings", "check", "--create-missing"
        )
        assert code == 0, out + err
        assert "created Brevo attribute OPEN_TICKETS (float)" in out
        assert "created Brevo attribute LAST_MEETING_DATE (date)" in out
        assert servers.brevo.attributes["HEALTH_SCORE"].type == "float"
