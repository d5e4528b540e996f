"""Deals ⇄ Brevo deals end to end: name, amount, pipeline and stage (value maps), close date."""

from __future__ import annotations

import math
from pathlib import Path

from crm_env import HS_STAGES, CrmEnv, crm_env


def stage_id(bed: CrmEnv, hs_stage: str) -> str:
    return str(bed.env.br_state.crm.stages[HS_STAGES.index(hs_stage)]["id"])


async def test_hubspot_deal_reaches_brevo_with_mapped_stage(tmp_path: Path) -> None:
    async with crm_env(tmp_path, ("deals",)) as bed:
        hid = bed.hs_create(
            "deals",
            dealname="Big deal",
            amount="1500.5",
            pipeline="default",
            dealstage="contractsent",
            closedate="2026-04-30T00:00:00Z",
        )
        await bed.cycle("deals")
        rec = bed.br_get("deals", await bed.brevo_id("deals", hid))
        assert rec is not None
        assert rec.attributes["deal_name"] == "Big deal"
        assert rec.attributes["amount"] == 1500.5
        assert rec.attributes["pipeline"] == bed.env.br_state.crm.pipeline_id
        assert rec.attributes["deal_stage"] == stage_id(bed, "contractsent")
        assert rec.attributes["close_date"] == "2026-04-30"
        await bed.assert_quiet("deals")


async def test_brevo_deal_reaches_hubspot_and_stage_moves_back(tmp_path: Path) -> None:
    async with crm_env(tmp_path, ("deals",)) as bed:
        bid = bed.br_create(
            "deals", "Small", amount=200, deal_stage=stage_id(bed, "qualifiedtobuy")
        )
        await bed.cycle("deals")
        hid = await bed.hubspot_id("deals", bid)
        props = bed.hs_get("deals", hid)
        assert props is not None
        assert props["dealname"] == "Small" and props["amount"] == "200"
        assert props["dealstage"] == "qualifiedtobuy" and props["pipeline"] == "default"
        bed.hs_edit("deals", hid, dealstage="closedwon")
        bed.events.clear()
        await bed.cycle("deals")
        assert bed.br_get("deals", bid).attributes["deal_stage"] == stage_id(bed, "closedwon")  # type: ignore[union-attr]
        assert [(e.field, e.old, e.new) for e in bed.events] == [
            ("dealstage", stage_id(bed, "qualifiedtobuy"), stage_id(bed, "closedwon"))
        ]
        await bed.assert_quiet("deals")


async def test_stage_conflict_hubspot_wins(tmp_path: Path) -> None:
    async with crm_env(tmp_path, ("deals",)) as bed:
        hid = bed.hs_create("deals", dealname="D", pipeline="default", dealstage="qualifiedtobuy")
        await bed.cycle("deals")
        bid = await bed.brevo_id("deals", hid)
        bed.hs_edit("deals", hid, dealstage="contractsent")
        bed.br_edit("deals", bid, deal_stage=stage_id(bed, "closedlost"))  # later, but loses
        await bed.cycle("deals")
        assert bed.hs_get("deals", hid)["dealstage"] == "contractsent"  # type: ignore[index]
        assert bed.br_get("deals", bid).attributes["deal_stage"] == stage_id(bed, "contractsent")  # type: ignore[union-attr]
        await bed.assert_quiet("deals")


async def test_unmapped_stage_is_skipped_not_failed(tmp_path: Path) -> None:
    async with crm_env(tmp_path, ("deals",)) as bed:
        hid = bed.hs_create(
            "deals", dealname="D", pipeline="default", dealstage="decisionmakerboughtin"
        )
        out = await bed.cycle("deals")
        assert out.counts["invalid_fields"] >= 1
        rec = bed.br_get("deals", await bed.brevo_id("deals", hid))
        assert rec is not None and rec.attributes["deal_name"] == "D"


async def test_resync_of_1000_deals_is_batched(tmp_path: Path) -> None:
    n = 1000
    async with crm_env(tmp_path, ("deals",)) as bed:
        for i in range(n):
            bed.env.hs_state.put_object(
                "deals",
                {
                    "dealname": f"D{i}",
                    "amount": str(i),
                    "pipeline": "default",
                    "dealstage": "qualifiedtobuy",
                },
            )
        bed.env.br_state.calls.clear()
        bed.env.hs_state.log.clear()
        out = await bed.cycle("deals")
        assert out.counts["brevo_created"] == n
        br = bed.env.br_state.calls.by_endpoint()
        hs = bed.env.hs_state.log.by_endpoint()
        assert sum(v for k, v in br.items() if "/crm/deals/import" in k) == 1
        print("\nBrevo → create 1000 deals:", dict(br), "\nHubSpot:", dict(hs))
        crm = bed.env.br_state.crm
        for i in range(n):
            crm.create("deal", f"B{i}", {"amount": i})
        bed.env.br_state.calls.clear()
        bed.env.hs_state.log.clear()
        out = await bed.cycle("deals")
        assert out.counts["hubspot_created"] == n
        hs = bed.env.hs_state.log.by_endpoint()
        assert sum(v for k, v in hs.items() if k.endswith("/batch/create")) == math.ceil(n / 100)
        print(
            "\nHubSpot ← create 1000 deals:",
            dict(hs),
            "\nBrevo:",
            dict(bed.env.br_state.calls.by_endpoint()),
        )
        await bed.assert_quiet("deals")


async def test_deal_brevo_refuses_goes_to_dead_letters(tmp_path: Path) -> None:
    async with crm_env(tmp_path, ("deals",)) as bed:
        bed.env.br_state.crm.stages.pop()  # the stage "closedlost" maps to is gone
        hid = bed.hs_create("deals", dealname="D", pipeline="default", dealstage="closedlost")
        bed.env.clock.advance(60)
        out = await bed.deals.resync()
        assert out.counts["dead_lettered"] == 1 and out.counts["failed"] == 1
        letters = await bed.env.dead_letters()
        assert [(d.object_type, d.object_id) for d in letters] == [("deals", hid)]
        assert "mappings check" in letters[0].error
        assert not bed.env.br_state.crm.deals
        assert not await bed.links("deals")


async def test_deal_deleted_in_hubspot_is_deleted_in_brevo(tmp_path: Path) -> None:
    async with crm_env(tmp_path, ("deals",)) as bed:
        bed.deals.on_hubspot_delete = "delete"
        hid = bed.hs_create("deals", dealname="D", pipeline="default", dealstage="qualifiedtobuy")
        await bed.cycle("deals")
        bid = await bed.brevo_id("deals", hid)
        state = bed.env.hs_state
        state.archive("deals", state.stores["deals"].get(int(hid)))
        await bed.deals.sync_ids(hubspot_ids=[hid])  # the deal.deletion webhook
        assert bed.br_get("deals", bid) is None
        await bed.assert_quiet("deals")
