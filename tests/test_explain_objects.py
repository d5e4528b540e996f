"""``connector explain`` beyond contacts: a company by domain or Brevo id, a deal by HubSpot id
(ledger bases, history, dead letters, association sets), and a contact's roll-ups and e-mail
events after its unchanged lines."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from crm_env import crm_env
from daemon_env import cli_env
from rich.console import Console

from connector.explain import Explanation, explain_record, render
from connector.mapping import Mapping
from connector.store import email_events, rollups
from connector.store import links as ledger

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _text(expl: Explanation, mapping: Mapping | None) -> str:
    console = Console(record=True, width=200, highlight=False)
    render(expl, console, mapping)
    return console.export_text()


async def test_deal_by_hubspot_id_with_bases_history_dead_letters_and_associations(
    tmp_path: Path,
) -> None:
    async with crm_env(tmp_path, ("deals",)) as bed:
        await bed.contacts_cycle()
        bed.contact("buyer@example.org")
        await bed.contacts_cycle()
        buyer = next(lk.hubspot_id for lk in await bed.links("contacts") if lk.hubspot_id)
        assert buyer is not None
        hid = bed.hs_create("deals", dealname="D", pipeline="default", dealstage="qualifiedtobuy")
        bed.hs_associate("deals", hid, "contacts", buyer)
        await bed.cycle("deals")
        bid = await bed.brevo_id("deals", hid)
        gone = bed.env.br_state.crm.stages.pop()  # the stage "closedlost" maps to
        bed.hs_edit("deals", hid, dealstage="closedlost")
        bed.env.clock.advance(60)
        await bed.deals.resync()  # Brevo refuses the stage: a dead letter
        assert len(await bed.env.dead_letters()) == 1

        async with bed.env.engine.sessions() as s:
            by_hs = await explain_record(s, hid, object_types=("deals",))
            by_br = await explain_record(s, bid, object_types=("deals",))
            nothing = await explain_record(s, "no-such-id", object_types=("deals",))
        assert nothing == []
        assert [e.link.id for e in by_br] == [e.link.id for e in by_hs]
        (expl,) = by_hs
        assert expl.link.hubspot_id == hid and expl.link.brevo_id == bid
        assert {"dealname", "pipeline"} <= set(expl.link.bases)
        assert expl.entries and {e.field for e in expl.entries} >= {"dealname"}
        assert [(d.object_id, d.resolved_at) for d in expl.dead_letters] == [(hid, None)]
        assert ("contacts", [buyer]) in [(t, ids) for t, ids, _ in expl.associations]

        out = _text(expl, bed.deals.mapping)
        assert f"HubSpot id  {hid}" in out and f"Brevo id    {bid}" in out
        for title in ("Sync history", "Ledger bases", "Dead letters (1)", "Associations"):
            assert title in out, out
        prefix = expl.link.bases["dealname"].value_hash[:12]
        assert [ln for ln in out.splitlines() if "dealname" in ln and prefix in ln], out
        assert "open" in out and "mappings check" in out

        bed.env.br_state.crm.stages.append(gone)
        await bed.deals.sync_ids(hubspot_ids=[hid])  # fixed: the letter resolves
        async with bed.env.engine.sessions() as s:
            (expl,) = await explain_record(s, hid, object_types=("deals",))
        assert expl.dead_letters[0].resolved_at is not None
        assert "resolved" in _text(expl, None)


async def test_explain_company_by_domain_and_contact_extras_from_the_cli(tmp_path: Path) -> None:
    async with cli_env(tmp_path, hubspot=2) as env:
        hs = env.servers.hubspot
        cid = hs.put_object("companies", {"name": "Acme", "domain": "https://www.Acme.io/"})
        code, out, err = await env.cli("resync", "--yes", "--object", "contacts")
        assert code == 0, out + err
        code, out, err = await env.cli("resync", "--yes", "--object", "companies")
        assert code == 0, out + err
        bid = next(iter(env.servers.brevo.crm.companies))

        code, out, err = await env.cli("explain", "ACME.io")
        assert code == 0, out + err
        assert "acme.io (companies)" in out and f"HubSpot id  {cid}" in out
        assert "Ledger bases" in out and "name" in out and "Sync history" in out
        code, out, err = await env.cli("explain", "--object", "companies", bid)
        assert code == 0, out + err
        assert f"HubSpot id  {cid}" in out
        code, out, err = await env.cli("explain", "--object", "deals", bid)
        assert code == 1 and "No synced deals" in err

        # a contact: the lines it always had, then its roll-ups and e-mail events
        contact = next(iter(hs.stores["contacts"].live.values()))
        email = str(contact.props["email"])
        code, before, err = await env.cli("explain", email)
        assert code == 0, before + err
        assert "Roll-up" not in before and "Ledger bases" not in before
        url = env.db_url
        from connector.store import db

        engine = db.create_engine(url)
        try:
            async with db.session_factory(engine)() as s, s.begin():
                await rollups.save_values(s, {(str(contact.id), "OPEN_TICKETS"): "ab" * 32}, now=T0)
                await email_events.apply_deltas(
                    s,
                    [
                        email_events.EventDelta(
                            str(contact.id), "opened", "7", "Spring news", 3, 2, T0, T0
                        )
                    ],
                    note_wanted={"opened": False},
                    now=T0,
                )
                links = await ledger.load_links(s, "contacts", hubspot_ids=[str(contact.id)])
                assert len(links) == 1
        finally:
            await engine.dispose()
        code, after, err = await env.cli("explain", email)
        assert code == 0, after + err
        assert after.startswith(before.rstrip("\n"))
        extra = after[len(before.rstrip("\n")) :]
        assert "Roll-up attributes last written" in extra and "OPEN_TICKETS" in extra
        assert "2026-03-01 09:30:00" in extra and "abababababab" in extra
        assert "Brevo e-mail events" in extra and "Spring news" in extra and "opened" in extra
