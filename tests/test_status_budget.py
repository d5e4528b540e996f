"""``connector status``: the Brevo CRM hourly budget — calls used in the hour (Brevo's own
``x-sib-ratelimit-*`` headers), the companies/deals keys queued, the calls they take and when
they are done at the current budget; plain text and ``--json``."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from connector.config import load_config
from connector.sandbox.server import SandboxServers
from connector.status import crm_budget, crm_line, gather, render
from connector.store import db, inbox

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_fits_in_what_is_left_of_the_hour() -> None:
    queued = {"deals:hubspot": 5, "companies:brevo": 3}
    b = crm_budget((100, 40, 1800), queued, plan_limit=100, now=NOW)
    assert (b.limit, b.used, b.resets_in) == (100, 60, 1800)
    # one deal import + its status poll + three company reads by id
    assert b.calls == 5
    assert b.done_at == NOW
    assert "60 of 100/h used, resets in 30 min; queued 8 key(s)" in crm_line(b, NOW)
    assert "done now" in crm_line(b, NOW)


def test_waits_for_the_window_to_reset() -> None:
    b = crm_budget((100, 2, 1800), {"companies:brevo": 5}, plan_limit=100, now=NOW)
    assert (b.used, b.calls) == (98, 5)
    # two calls go now, the other three when Brevo's window resets
    assert b.done_at == NOW + timedelta(seconds=1800)
    assert "done in 30 min" in crm_line(b, NOW)
    full = crm_budget((100, 0, 600), {"deals:brevo": 1}, plan_limit=100, now=NOW)
    assert full.done_at == NOW + timedelta(seconds=600)


def test_without_headers_the_plan_limit_is_shown() -> None:
    b = crm_budget(None, {}, plan_limit=200, now=NOW)
    assert (b.limit, b.used, b.calls, b.done_at) == (None, None, 0, NOW)
    assert crm_line(b, NOW) == "? of 200/h used (Brevo sent no rate-limit headers); nothing queued"
    assert b.to_json()["limit"] == 200


async def test_status_shows_the_budget_against_the_sandboxes(tmp_path: Path) -> None:
    async with SandboxServers() as servers:
        url = f"sqlite:///{tmp_path / 'c.db'}"
        config = tmp_path / "config.yaml"
        config.write_text(servers.config_yaml(url))  # companies and deals switched on
        settings = load_config(config)
        db.upgrade(url)
        engine = db.create_engine(url)
        try:
            async with db.session_factory(engine)() as s, s.begin():
                await inbox.enqueue(
                    s,
                    [
                        inbox.dirty_key("hubspot", "deals", "1", NOW),
                        inbox.dirty_key("hubspot", "deals", "2", NOW),
                        inbox.dirty_key("brevo", "companies", "abc", NOW),
                        inbox.dirty_key("hubspot", "contacts", "9", NOW),
                    ],
                )
        finally:
            await engine.dispose()
        report = await gather(settings)
        assert report.crm is not None
        assert report.crm.queued == {"deals:hubspot": 2, "companies:brevo": 1}
        assert report.crm.limit == 100
        assert report.crm.used is not None and report.crm.used >= 1  # status's own GET /account
        doc = report.to_json()["brevo_crm_budget"]
        assert doc["queued_keys"] == {"deals:hubspot": 2, "companies:brevo": 1}
        assert doc["queued_calls"] == 3  # one deal import, its poll, one company read
        assert doc["remaining"] == 100 - doc["used_last_hour"]
        json.dumps(doc)
        out = io.StringIO()
        render(report, Console(file=out, width=200, highlight=False))
        text = out.getvalue()
        assert "Brevo CRM budget" in text
        assert "queued 3 key(s) (companies from brevo: 1, deals from hubspot: 2)" in text
