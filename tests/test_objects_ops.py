"""The operator commands for companies, deals and roll-up sources: ``dlq retry`` of a deal
Brevo refused, the resync run records ``status`` shows, and ``status``'s per-object lines."""

from __future__ import annotations

import json
from pathlib import Path

from crm_env import crm_env
from daemon_env import cli_env

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


async def test_resync_runs_every_object_type_in_order_and_records_each(tmp_path: Path) -> None:
    async with cli_env(tmp_path, hubspot=3) as env:
        brevo = env.servers.brevo  # the roll-ups' attributes exist (cli_env creates them)
        code, out, err = await env.cli("resync", "--yes")
        assert code == 0, out + err
        order = ["contacts", "companies", "deals", "meetings", "calls", "notes", "tickets"]
        at = [out.index(f"Resync of {o}") for o in order]
        assert at == sorted(at), out
        assert "rollup contacts" in out  # a roll-up source's own counts are in its summary

        code, out, err = await env.cli("status", "--json")
        assert code == 0, out + err
        resyncs = {s["object_type"]: s for s in json.loads(out)["syncs"] if s["kind"] == "resync"}
        assert sorted(resyncs) == sorted(order)
        assert all(s["last_status"] == "ok" for s in resyncs.values())
        assert resyncs["contacts"]["last_success_counts"]["brevo_imported"] == 3
        assert resyncs["tickets"]["last_success_counts"]["brevo_updated"] == 3
        code, out, err = await env.cli("status")
        assert "resync both" in out and "tickets" in out

        # an attribute edited in Brevo: a dry run counts it, writes nothing and records no run
        email = next(c.email for c in brevo.contacts.values() if c.ext_id)
        brevo.edit_contact(email, {"HEALTH_SCORE": 5})

        def health() -> object:
            contact = brevo.get(email)
            assert contact is not None
            return contact.attributes.get("HEALTH_SCORE")

        code, out, err = await env.cli("resync", "--object", "tickets", "--dry-run")
        assert code == 0, out + err
        assert "Dry run of tickets" in out and "would write" in out, out
        assert health() == 5
        runs_of = "SELECT count(*) FROM runs WHERE kind = 'resync' AND object_type = 'tickets'"
        assert env.query(runs_of) == [(1,)]

        code, out, err = await env.cli("resync", "--object", "tickets", "--yes")
        assert code == 0, out + err
        assert health() == 100
        assert env.query(runs_of) == [(2,)]

        # status: per object type, its links (or roll-up records) and each side's last pull
        code, out, err = await env.cli("status", "--json")
        objects = json.loads(out)["objects"]
        assert list(objects) == order
        assert objects["contacts"]["links"] == 3 and objects["companies"]["links"] == 0
        assert objects["tickets"] == {
            "links": None,
            "rollup_records": 0,
            "last_pull": {"hubspot": None},
        }
        code, out, err = await env.cli("run", "--once")
        assert code == 0, out + err
        code, out, err = await env.cli("status", "--json")
        objects = json.loads(out)["objects"]
        for object_type in ("contacts", "companies", "deals"):
            assert set(objects[object_type]["last_pull"]) == {"hubspot", "brevo"}
            assert all(objects[object_type]["last_pull"].values()), objects
        assert objects["tickets"]["last_pull"]["hubspot"] is not None
        code, out, err = await env.cli("status")
        line = next(ln for ln in out.splitlines() if ln.strip().startswith("tickets "))
        assert "roll-up of 0 record(s)" in line and "HubSpot pulled" in line, out
        line = next(ln for ln in out.splitlines() if ln.strip().startswith("companies "))
        assert "0 linked" in line and "Brevo pulled" in line, out
