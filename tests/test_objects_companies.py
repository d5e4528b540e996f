"""Companies ⇄ Brevo companies end to end, over HTTP against both sandboxes.

A *cycle* is a full reconcile (:meth:`CrmObjectSync.resync`); incremental pulls and webhook
ids are exercised too. "Writes nothing" is counted at the sandboxes (state-changing calls).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from crm_env import CrmEnv, crm_env

from connector.objects.crm_sync import normalise_domain


async def acme(bed: CrmEnv) -> tuple[str, str]:
    """Acme created in HubSpot and synced: (HubSpot id, Brevo id)."""
    hid = bed.hs_create("companies", name="Acme", domain="acme.com", industry="Tools")
    await bed.cycle("companies")
    return hid, await bed.brevo_id("companies", hid)


async def test_hubspot_company_reaches_brevo_and_no_echo(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        _hid, bid = await acme(bed)
        rec = bed.br_get("companies", bid)
        assert rec is not None
        assert rec.attributes["name"] == "Acme"
        assert rec.attributes["domain"] == "acme.com"
        assert rec.attributes["industry"] == "Tools"
        assert [e.kind for e in bed.events] == ["created"]
        await bed.assert_quiet("companies")


async def test_brevo_company_reaches_hubspot(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        bid = bed.br_create("companies", "Globex", domain="globex.io", number_of_employees=40)
        out = await bed.cycle("companies")
        assert out.counts["hubspot_created"] == 1
        hid = await bed.hubspot_id("companies", bid)
        props = bed.hs_get("companies", hid)
        assert props is not None
        assert props["name"] == "Globex"
        assert props["domain"] == "globex.io"
        assert props["numberofemployees"] == "40"
        await bed.assert_quiet("companies")


async def test_updates_travel_both_ways(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        hid, bid = await acme(bed)
        bed.hs_edit("companies", hid, industry="Hardware")
        await bed.cycle("companies")
        assert bed.br_get("companies", bid).attributes["industry"] == "Hardware"  # type: ignore[union-attr]
        bed.br_edit("companies", bid, name="Acme Corp")
        bed.events.clear()
        await bed.cycle("companies")
        assert bed.hs_get("companies", hid)["name"] == "Acme Corp"  # type: ignore[index]
        assert [(e.kind, e.field, e.old, e.new) for e in bed.events] == [
            ("changed", "name", "Acme", "Acme Corp")
        ]
        await bed.assert_quiet("companies")


async def test_cleared_value_is_cleared_in_brevo(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        hid, bid = await acme(bed)
        bed.hs_edit("companies", hid, industry="")
        await bed.cycle("companies")
        rec = bed.br_get("companies", bid)
        assert rec is not None and not rec.attributes.get("industry")
        assert rec.attributes["name"] == "Acme"
        await bed.assert_quiet("companies")


async def test_conflict_latest_wins(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        hid, bid = await acme(bed)
        bed.hs_edit("companies", hid, industry="HubSpot side")
        bed.br_edit("companies", bid, industry="Brevo side")  # later
        await bed.cycle("companies")
        assert bed.hs_get("companies", hid)["industry"] == "Brevo side"  # type: ignore[index]
        assert bed.br_get("companies", bid).attributes["industry"] == "Brevo side"  # type: ignore[union-attr]
        await bed.assert_quiet("companies")


async def test_identity_pairs_existing_companies_by_domain(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        hid = bed.hs_create("companies", name="Initech", domain="https://www.Initech.com/")
        bid = bed.br_create("companies", "Initech", domain="initech.com")
        out = await bed.cycle("companies")
        assert out.counts["hubspot_created"] == 0 and out.counts["brevo_created"] == 0
        assert await bed.brevo_id("companies", hid) == bid
        assert len(bed.br_store("companies")) == 1


def test_normalise_domain() -> None:
    assert normalise_domain(" HTTPS://www.Example.COM:443/path?q=1 ") == "example.com"
    assert normalise_domain("example.com.") == "example.com"
    assert normalise_domain("") is None
    assert normalise_domain(None) is None


async def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        bed.hs_create("companies", name="Acme", domain="acme.com")
        bed.br_create("companies", "Globex", domain="globex.io")
        before = bed.writes()
        out = await bed.cycle("companies", dry_run=True)
        assert bed.writes() == before
        assert out.summary.creates == {"brevo": 1, "hubspot": 1}
        assert not await bed.links("companies")


async def test_incremental_pulls_and_webhook_ids(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        sync = bed.companies
        hid, bid = await acme(bed)
        # the first pull is a full resync that starts both cursors
        await sync.pull("hubspot")
        bed.env.br_state.calls.clear()
        await sync.pull("brevo")
        assert bed.env.br_state.calls.count(contains="/companies") == 1  # one page, not a resync
        bed.env.clock.advance(300)
        bed.hs_edit("companies", hid, industry="Pulled")
        bed.env.clock.advance(10)
        out = await sync.pull("hubspot")
        assert out.counts["failed"] == 0
        assert bed.br_get("companies", bid).attributes["industry"] == "Pulled"  # type: ignore[union-attr]
        bed.env.clock.advance(300)
        bed.br_edit("companies", bid, industry="From Brevo")
        bed.env.clock.advance(10)
        await sync.pull("brevo")
        assert bed.hs_get("companies", hid)["industry"] == "From Brevo"  # type: ignore[index]
        # a pull after those reads them again (lookback) and writes nothing
        before = bed.writes()
        bed.env.clock.advance(10)
        await sync.pull("hubspot")
        await sync.pull("brevo")
        assert bed.writes() == before
        # webhook ids: a new HubSpot company
        new = bed.hs_create("companies", name="Hooli", domain="hooli.xyz")
        await sync.sync_ids(hubspot_ids=[new])
        assert await bed.brevo_id("companies", new)
        # a Brevo company named by a webhook pairs with the HubSpot one of its domain
        umbrella = bed.hs_create("companies", name="Umbrella", domain="umbrella.com")
        other = bed.br_create("companies", "Umbrella Corp", domain="www.umbrella.com")
        out = await sync.sync_ids(brevo_ids=[other])
        assert out.counts["hubspot_created"] == 0 and out.counts["brevo_created"] == 0
        assert await bed.hubspot_id("companies", other) == umbrella
        assert len(bed.hs_ids("companies")) == 3


async def test_resync_of_1000_companies_is_batched(tmp_path: Path) -> None:
    n = 1000
    async with crm_env(tmp_path) as bed:
        for i in range(n):
            bed.env.hs_state.put_object("companies", {"name": f"Co {i}", "domain": f"co{i}.com"})
        bed.env.br_state.calls.clear()
        bed.env.hs_state.log.clear()
        out = await bed.cycle("companies")
        assert out.counts["brevo_created"] == n
        br = bed.env.br_state.calls.by_endpoint()
        hs = bed.env.hs_state.log.by_endpoint()
        imports = sum(v for k, v in br.items() if "/companies/import" in k)
        assert imports == 1
        hs_batch = sum(v for k, v in hs.items() if "/batch/" in k and "/associations/" not in k)
        assert hs_batch <= math.ceil(n / 100)
        print("\nBrevo → create 1000 companies:", dict(br), "\nHubSpot:", dict(hs))
        # and the other way
        for i in range(n):
            bed.env.br_state.crm.create("company", f"Br {i}", {"domain": f"br{i}.org"})
        bed.env.br_state.calls.clear()
        bed.env.hs_state.log.clear()
        out = await bed.cycle("companies")
        assert out.counts["hubspot_created"] == n
        hs = bed.env.hs_state.log.by_endpoint()
        br = bed.env.br_state.calls.by_endpoint()
        creates = sum(v for k, v in hs.items() if k.endswith("/batch/create"))
        assert creates == math.ceil(n / 100)
        print("\nHubSpot ← create 1000 companies:", dict(hs), "\nBrevo:", dict(br))
        bed.env.br_state.calls.clear()
        bed.env.hs_state.log.clear()
        await bed.assert_quiet("companies")
        print(
            "\nin-step resync of 2000:",
            dict(bed.env.hs_state.log.by_endpoint()),
            dict(bed.env.br_state.calls.by_endpoint()),
        )


@pytest.mark.parametrize("policy", ["delete", "blocklist", "ignore"])
async def test_hubspot_deletion_policies(tmp_path: Path, policy: str) -> None:
    async with crm_env(tmp_path) as bed:
        sync = bed.companies
        sync.on_hubspot_delete = policy  # type: ignore[assignment]
        hid, bid = await acme(bed)
        bed.env.hs_state.archive("companies", bed.env.hs_state.stores["companies"].get(int(hid)))
        out = await bed.cycle("companies")
        assert out.counts["deletions_handled"] == 1
        exists = bed.br_get("companies", bid) is not None
        assert exists == (policy != "delete")
        # never recreated in HubSpot, and quiet afterwards
        await bed.assert_quiet("companies")
        assert hid not in bed.hs_ids("companies") and len(bed.hs_ids("companies")) == 0


@pytest.mark.parametrize("policy", ["archive", "ignore"])
async def test_brevo_deletion_policies(tmp_path: Path, policy: str) -> None:
    async with crm_env(tmp_path) as bed:
        bed.companies.on_brevo_delete = policy  # type: ignore[assignment]
        hid, bid = await acme(bed)
        del bed.env.br_state.crm.companies[bid]
        await bed.cycle("companies")
        assert (hid in bed.hs_ids("companies")) == (policy == "ignore")
        await bed.assert_quiet("companies")
        assert not bed.env.br_state.crm.companies


async def test_mass_delete_guard(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        bed.companies.on_brevo_delete = "archive"
        for i in range(10):
            bed.hs_create("companies", name=f"Co {i}", domain=f"co{i}.com")
        await bed.cycle("companies")
        bed.env.br_state.crm.companies.clear()
        out = await bed.companies.resync()
        assert out.counts["deletions_refused"] == 10
        assert len(bed.hs_ids("companies")) == 10
        bed.companies.force = True
        await bed.companies.resync()
        assert bed.hs_ids("companies") == []


# --- wiring: runtime, daemon, worker, CLI ------------------------------------------------------


async def test_runtime_daemon_worker_and_cli_drive_companies(tmp_path: Path) -> None:
    from test_worker import hs_event, worker_env

    from connector.objects.crm_sync import CrmObjectSync

    async with worker_env(tmp_path, hubspot=2) as env:
        assert isinstance(env.rt.objects["companies"], CrmObjectSync)
        assert isinstance(env.rt.objects["deals"], CrmObjectSync)
        jobs = [(j.kind, j.object_type, j.system) for j in env.daemon.jobs()]
        for object_type in ("companies", "deals"):
            assert ("pull", object_type, "hubspot") in jobs
            assert ("pull", object_type, "brevo") in jobs
            assert ("reconcile", object_type, None) in jobs
        # run --once: first pulls (full resyncs) of every object type
        results = await env.daemon.run_once(reconcile=False)
        assert all(r.status == "ok" for r in results), [r.error for r in results]
        hs, br = env.cli.servers.hubspot, env.cli.servers.brevo
        # a company.creation webhook reaches Brevo through the worker
        cid = hs.put_object("companies", {"name": "Webhooked", "domain": "hook.io"})
        await env.post_hubspot([hs_event(cid, 1, subscriptionType="company.creation")])
        drained = await env.daemon.drain_inbox()
        assert drained.passes == 1 and not drained.failures
        assert [r.attributes["name"] for r in br.crm.companies.values()] == ["Webhooked"]
        # resync --object companies --dry-run plans nothing more; a Brevo-only one is planned
        br.crm.create("company", "Brevo only", {"domain": "brevo-only.io"})
        code, out, err = await env.cli.cli("resync", "--object", "companies", "--dry-run")
        assert code == 0, out + err
        assert "companies" in out
        assert len(hs.stores["companies"].live) == 1  # a dry run writes nothing
        code, out, err = await env.cli.cli("resync", "--object", "companies", "--yes")
        assert code == 0, out + err
        assert len(hs.stores["companies"].live) == 2
