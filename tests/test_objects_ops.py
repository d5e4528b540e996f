"""The operator commands for companies, deals and roll-up sources: ``dlq retry`` of a deal
Brevo refused, the resync run records ``status`` shows, and ``status``'s per-object lines."""

from __future__ import annotations

from pathlib import Path

from crm_env import crm_env

from connector.dlq import retry
from connector.engine import SyncEngine


async def test_dlq_retry_resolves_a_deal_once_its_cause_is_fixed(tmp_path: Path) -> None:
    async with crm_env(tmp_path, ("deals",)) as bed:
        crm = bed.env.br_state.crm
        gone = crm.stages.pop()  # the stage "closedlost" maps to is gone: Brevo refuses
        hid = bed.hs_create("deals", dealname="D", pipeline="default", dealstage="closedlost")
        bed.env.clock.advance(60)
        await bed.deals.resync()
        letters = await bed.env.dead_letters()
        assert [(d.object_type, d.object_id) for d in letters] == [("deals", hid)]
        engines: dict[str, SyncEngine] = {}

        # not fixed yet: the retry fails again, the same letter counts one more attempt
        results = await retry(bed.env.engine.sessions, engines, letters, objects=bed.syncs)
        assert [(r.resolved, r.attempts) for r in results] == [(False, 2)]
        assert [d.id for d in await bed.env.dead_letters()] == [letters[0].id]
        assert not crm.deals

        # without the deals sync the letter stays open, saying what to enable
        results = await retry(bed.env.engine.sessions, engines, letters)
        assert not results[0].resolved and "connectors.hubspot.sync" in (results[0].error or "")

        crm.stages.append(gone)  # the cause fixed
        results = await retry(bed.env.engine.sessions, engines, letters, objects=bed.syncs)
        assert [r.resolved for r in results] == [True]
        assert await bed.env.dead_letters() == []
        bid = await bed.brevo_id("deals", hid)
        rec = bed.br_get("deals", bid)
        assert rec is not None and rec.attributes["deal_stage"] == gone["id"]
        await bed.assert_quiet("deals")
