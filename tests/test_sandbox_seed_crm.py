"""The sandboxes' CRM seed (companies, deals, tickets, engagements; Brevo's own companies and
deal) and ``connector sandbox``, whose printed config passes ``mappings check``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path

from daemon_env import run_cli

from connector.sandbox.hubspot_model import DEAL_STAGES
from connector.sandbox.seed_crm import BREVO_COMPANIES, HUBSPOT_COMPANIES
from connector.sandbox.server import SandboxServers


def _snapshot(servers: SandboxServers) -> object:
    hs = servers.hubspot
    records = {
        t: sorted((o.id, sorted(o.props.items())) for o in hs.stores[t].live.values())
        for t in ("contacts", "companies", "deals", "tickets", "meetings", "calls", "notes")
    }
    links = sorted((k, sorted((kk, sorted(v)) for kk, v in d.items())) for k, d in hs.assoc.items())
    brevo = sorted(
        (r.attributes["name"], r.linked_contacts) for r in servers.brevo.crm.companies.values()
    )
    return records, links, brevo


def test_crm_seed_is_off_by_default() -> None:
    servers = SandboxServers(seed_contacts=20)
    assert not servers.hubspot.stores["companies"].live
    assert not servers.hubspot.stores["deals"].live
    assert not servers.brevo.crm.companies and not servers.brevo.crm.deals


def test_hubspot_crm_seed_links_companies_deals_tickets_and_engagements() -> None:
    servers = SandboxServers(seed_contacts=40, seed_crm=True)
    hs = servers.hubspot
    contacts = hs.stores["contacts"].live
    companies = {o.props["domain"]: o for o in hs.stores["companies"].live.values()}
    assert sorted(companies) == sorted(c.domain for c in HUBSPOT_COMPANIES)
    with_contacts = 0
    for domain, company in companies.items():
        linked = [cid for cid, _ in hs.associations_of("companies", company.id, "contacts")]
        staff = [cid for cid, c in contacts.items() if c.props["email"].endswith("@" + domain)]
        assert sorted(linked) == sorted(staff)  # every contact of the domain, no other
        for cid in staff:
            assert contacts[cid].props["company"] == company.props["name"]
            [(_, types)] = hs.associations_of("contacts", cid, "companies")
            assert any(t.primary for t in types)
        with_contacts += bool(staff)
    assert with_contacts >= 3
    deals = list(hs.stores["deals"].live.values())
    assert len(deals) == 4
    for deal in deals:
        assert deal.props["pipeline"] == "default" and deal.props["dealstage"] in DEAL_STAGES
        assert float(deal.props["amount"]) > 0 and deal.props["closedate"]
        assert len(hs.associations_of("deals", deal.id, "contacts")) == 1
        [(company_id, types)] = hs.associations_of("deals", deal.id, "companies")
        assert any(t.primary for t in types)
        assert hs.associations_of("companies", company_id, "contacts")  # a company with people
    stages = {t.props["hs_pipeline_stage"] for t in hs.stores["tickets"].live.values()}
    assert "4" in stages and stages - {"4"}  # closed and open ones
    for object_type in ("tickets", "meetings", "calls", "notes"):
        records = hs.stores[object_type].live
        assert records
        for object_id in records:
            assert len(hs.associations_of(object_type, object_id, "contacts")) == 1


def test_brevo_crm_seed_has_its_own_companies_and_a_deal() -> None:
    servers = SandboxServers(seed_contacts=40, seed_crm=True)
    crm, contacts = servers.brevo.crm, servers.brevo.contacts
    names = sorted(c.attributes["name"] for c in crm.companies.values())
    assert names == sorted(c.name for c in BREVO_COMPANIES)
    hubspot_domains = {c.domain for c in HUBSPOT_COMPANIES}
    for company in crm.companies.values():
        assert company.attributes["domain"] not in hubspot_domains
        assert company.linked_contacts and all(c in contacts for c in company.linked_contacts)
    [deal] = crm.deals.values()
    crm.check_stage(deal.attributes)  # a stage of the pipeline
    assert deal.linked_contacts and deal.linked_other
    assert all(deal.id in crm.companies[c].linked_other for c in deal.linked_other)


def test_crm_seed_is_deterministic() -> None:
    one = SandboxServers(seed_contacts=30, seed_crm=True)
    two = SandboxServers(seed_contacts=30, seed_crm=True)
    assert _snapshot(one) == _snapshot(two)


async def test_sandbox_command_prints_a_config_whose_mappings_check_passes(
    tmp_path: Path,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        "sandbox",
        "--seed-contacts",
        "10",
        "--hubspot-port",
        "0",
        "--brevo-port",
        "0",
        "--dir",
        str(tmp_path / "sbx"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("  mappings_dir: "):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "connector sandbox stopped: " + "".join(lines)
            lines.append(line.decode())
        text = "".join(lines)
        config = text[text.index("# Written by the connector") :]
        mappings = Path(re.findall(r"^  mappings_dir: (.+)$", config, re.M)[0])
        assert mappings == (tmp_path / "sbx" / "mappings").resolve()
        deals = (mappings / "deals.yaml").read_text(encoding="utf-8")
        assert "REPLACE-WITH" not in deals
        path = tmp_path / "config.yaml"
        path.write_text(config, encoding="utf-8")
        code, out, err = await run_cli("--config", str(path), "mappings", "check")
        assert code == 1 and "does not exist" in out  # the custom fields are not created yet
        assert "deals.yaml" not in out  # but the pipeline and its stages are known
        code, out, err = await run_cli(
            "--config", str(path), "mappings", "check", "--create-missing"
        )
        assert code == 0, out + err
        code, out, err = await run_cli("--config", str(path), "mappings", "check")
        assert code == 0, out + err
        assert "0 errors, 0 warnings" in out
    finally:
        proc.terminate()
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
