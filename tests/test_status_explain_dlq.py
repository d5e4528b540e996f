"""The operator commands after real syncs: ``status`` (table and JSON), ``explain EMAIL``,
``dlq list`` / ``dlq retry`` with a record Brevo refuses until its cause is fixed."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from daemon_env import cli_env, run_cli

import connector.engine
from connector.cli import cli
from connector.dlq import retry
from connector.engine import Outcome
from connector.sandbox.server import HUBSPOT_TOKEN
from connector.store import db, deadletters, history, links

STATUS_KEYS = {
    "version",
    "generated_at",
    "ok",
    "connections",
    "database",
    "syncs",
    "records_synced",
    "pending_dirty_keys",
    "brevo_crm_budget",
    "dead_inbox_events",
    "skipped_no_email",
    "skipped",
    "dead_letters_open",
    "last_error",
    "objects",
}
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def test_status_and_dlq_after_real_syncs(tmp_path: Path) -> None:
    async with cli_env(tmp_path, hubspot=8, brevo=4) as env:
        code, out, _ = await env.cli("status", "--json")
        report = json.loads(out)
        assert code == 1 and report["ok"] is False  # connected, but never migrated
        assert report["connections"]["hubspot"]["connected"] is True
        assert report["database"]["migrated"] is False
        assert "connector db upgrade" in report["database"]["error"]

        code, out, err = await env.cli("run", "--once")
        assert code == 0, out + err

        code, out, err = await env.cli("status")
        assert code == 0, out + err
        assert out.count("✓ connected") == 2 and "portal 2440001" in out
        for text in ("pull HubSpot", "pull Brevo", "contacts: 12", "0 open", "Last error"):
            assert text in out, out

        code, out, _ = await env.cli("status", "--json")
        report = json.loads(out)
        assert code == 0 and report["ok"] is True and set(report) == STATUS_KEYS
        assert report["records_synced"] == {"contacts": 12, "companies": 0, "deals": 0}
        assert report["dead_letters_open"] == 0 and report["pending_dirty_keys"] == 0
        assert report["skipped_no_email"] == 0 and report["last_error"] is None
        pulls = {
            s["system"]: s
            for s in report["syncs"]
            if s["kind"] == "pull" and s["object_type"] == "contacts"
        }
        assert pulls["hubspot"]["last_status"] == "ok" and pulls["hubspot"]["last_success_at"]
        assert pulls["brevo"]["last_success_counts"]["linked"] > 0

        # A: its HubSpot phone becomes B's number, which Brevo keeps on one contact only: the
        # rest of A syncs, its phone is left out, and A's letter says why.
        br = env.servers.brevo
        linked = [c for c in br.contacts.values() if c.ext_id]
        b = next(c for c in linked if c.sms)
        a = next(c for c in linked if c is not b)
        hs = env.servers.hubspot
        a_hs = hs.find("contacts", a.ext_id or "")
        assert a_hs is not None
        taken = f"+{b.sms}"  # Brevo keeps SMS numbers without the +
        hs.update("contacts", a_hs, {"phone": taken}, source="CRM_UI")
        code, out, err = await env.cli("run", "--once")
        assert code == 0, out + err  # a record failing is a dead letter, not a failed job

        code, out, _ = await env.cli("dlq", "list")
        assert code == 0 and str(a_hs.id) in out and "update" in out, out
        # one open letter for the record, however many passes of that cycle failed it (the
        # Brevo pull's lookback may read the record again and count another attempt)
        ((letter_id, before),) = env.query("SELECT id, attempts FROM dead_letters")

        code, out, _ = await env.cli("dlq", "retry", str(letter_id))
        assert code == 1 and f"✗ {letter_id} still failing (attempt {before + 1})" in out, out
        assert env.query("SELECT attempts, resolved_at FROM dead_letters") == [(before + 1, None)]

        br.edit_contact(b.email or "", {"SMS": "+14155550123"})  # the cause goes away
        code, out, _ = await env.cli("dlq", "retry", "--all")
        assert code == 0 and f"✓ {letter_id} resolved" in out, out
        assert br.contacts[a.id].sms == taken.lstrip("+")  # A's number reached Brevo
        assert env.query("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL") == [(0,)]
        code, out, _ = await env.cli("status", "--json")
        assert json.loads(out)["dead_letters_open"] == 0

        hs.revoke(HUBSPOT_TOKEN)
        code, out, err = await env.cli("status")
        assert code == 1 and "✗ not connected" in out and "401" in out, out
        assert HUBSPOT_TOKEN not in out + err


@pytest.mark.skipif(
    not hasattr(connector.engine, "history"), reason="the engine does not record history yet"
)
async def test_explain_shows_each_change_its_direction_and_rule(tmp_path: Path) -> None:
    async with cli_env(tmp_path, hubspot=3) as env:
        code, out, err = await env.cli("run", "--once")
        assert code == 0, out + err
        obj = next(iter(env.servers.hubspot.stores["contacts"].live.values()))
        email = obj.props["email"] or ""
        env.servers.hubspot.update("contacts", obj, {"firstname": "Renamed"}, source="CRM_UI")
        code, out, err = await env.cli("run", "--once")
        assert code == 0, out + err
        env.servers.brevo.edit_contact(email, {"LASTNAME": "Brevo-Side"})
        code, out, err = await env.cli("run", "--once")
        assert code == 0, out + err

        code, out, err = await env.cli("explain", f"  {email.upper()} ")
        assert code == 0, out + err
        assert email in out and f"HubSpot id  {obj.id}" in out
        rows = [line for line in out.splitlines() if "│" in line and "When" not in line]
        assert "lastname" in rows[0] and "→ HubSpot" in rows[0] and "brevo_changed" in rows[0]
        assert "firstname" in rows[1] and "→ Brevo" in rows[1] and "hubspot_changed" in rows[1]
        assert any("create" in r for r in rows[2:])


async def test_explain_reads_the_history_newest_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "connectors:\n  hubspot:\n    access_token: some-token\n  brevo:\n    api_key: some-key\n"
        f"database:\n  url: {url}\n"
    )
    await asyncio.to_thread(db.upgrade, url)
    engine = db.create_engine(url)
    try:
        async with db.session_factory(engine)() as s, s.begin():
            link_id = await links.upsert_link(
                s, "contacts", hubspot_id="101", brevo_id="7", identity_key="ann@example.com"
            )
            await history.record(
                s,
                [
                    history.HistoryEntry("contacts", link_id, "email", "to_brevo", "create", T0),
                    history.HistoryEntry(
                        "contacts",
                        link_id,
                        "lifecyclestage",
                        "to_brevo",
                        "hubspot_wins",
                        T0 + timedelta(hours=1),
                        origin_modified_at=T0,
                    ),
                ],
            )
    finally:
        await engine.dispose()
    code, out, err = await run_cli("--config", str(cfg), "explain", "Ann@Example.com")
    assert code == 0, out + err
    assert "ann@example.com" in out and "HubSpot id  101" in out and "Brevo id    7" in out
    assert out.index("lifecyclestage") < out.index("email ") or "hubspot_wins" in out
    assert "2026-01-01 13:00:00" in out and "hubspot_wins (conflict: HubSpot wins" in out

    code, out, err = await run_cli("--config", str(cfg), "explain", "nobody@example.com")
    assert code == 1 and "No synced contact has the email nobody@example.com" in err


class FakeEngine:
    """Fails the ids in ``failing`` the way the engine does: a new dead letter each time."""

    object_type = "contacts"

    def __init__(self, sessions: object, failing: set[str]) -> None:
        self.sessions = sessions
        self.failing = failing
        self.calls: list[tuple[list[str], list[str], str]] = []

    async def sync(
        self, *, hubspot_ids: Sequence[str] = (), brevo_ids: Sequence[str] = (), mode: str = ""
    ) -> Outcome:
        self.calls.append((list(hubspot_ids), list(brevo_ids), mode))
        async with self.sessions() as s, s.begin():  # type: ignore[operator]
            for hid in hubspot_ids:
                if hid in self.failing:
                    await _letter(s, hid, "still refused")
        return Outcome(counts=Counter({"failed": len(self.failing)}))


async def _letter(session: object, hubspot_id: str, error: str) -> int:
    return await deadletters.add(
        session,  # type: ignore[arg-type]
        system="hubspot",
        object_type="contacts",
        object_id=hubspot_id,
        identity_key=f"c{hubspot_id}@example.com",
        operation="update",
        payload={"hubspot_id": hubspot_id, "brevo_id": f"9{hubspot_id}"},
        error=error,
        attempts=1,
        now=T0,
    )


async def test_retry_folds_a_new_failure_into_the_letter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    await asyncio.to_thread(db.upgrade, url)
    engine = db.create_engine(url)
    sessions = db.session_factory(engine)
    try:
        async with sessions() as s, s.begin():
            first = await _letter(s, "1", "refused")
            second = await _letter(s, "2", "refused")
        fake = FakeEngine(sessions, failing={"2"})
        async with sessions() as s:
            letters = await deadletters.list_open(s)
        results = await retry(sessions, {"contacts": fake}, letters)  # type: ignore[dict-item]
        assert fake.calls == [(["1", "2"], ["91", "92"], "retry")]  # one batched pass
        assert [(r.letter.id, r.resolved, r.attempts) for r in results] == [
            (first, True, 1),
            (second, False, 2),
        ]
        assert results[1].error == "still refused"
        async with sessions() as s:
            still = await deadletters.list_open(s)
        assert [(d.id, d.attempts, d.error) for d in still] == [(second, 2, "still refused")]
        results = await retry(sessions, {}, still)
        assert results[0].error and "not synced" in results[0].error
    finally:
        await engine.dispose()


def test_dlq_retry_needs_ids_or_all() -> None:
    result = CliRunner().invoke(cli, ["dlq", "retry"])
    assert result.exit_code == 2 and "give dead-letter IDs or --all" in result.output
    result = CliRunner().invoke(cli, ["dlq", "retry", "3", "--all"])
    assert result.exit_code == 2
