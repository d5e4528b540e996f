"""``connector webhooks register`` and the "Brevo webhook registered" check, as a real process
against the sandboxes."""

from __future__ import annotations

import shutil
from pathlib import Path

from daemon_env import CliEnv, cli_env

from connector.config import Settings, load_config
from connector.webhook_setup import (
    BREVO_EMAIL_EVENTS,
    BREVO_EVENTS,
    HUBSPOT_OBJECT_EVENTS,
    hubspot_subscriptions,
    subscription_notes,
)

PUBLIC_URL = "https://sync.example.com"
TOKEN = "register-test-token-0123456789"
BREVO_URL = PUBLIC_URL + "/webhooks/brevo"


def add_webhooks(env: CliEnv, *, public_url: bool = True) -> None:
    with env.config.open("a", encoding="utf-8") as f:
        if public_url:
            f.write(f"server:\n  public_url: {PUBLIC_URL}\n")
        f.write("webhooks:\n")
        f.write(f'  brevo_token: "{TOKEN}"\n')


def marketing_hooks(env: CliEnv) -> list[tuple[str, list[str], dict[str, str] | None]]:
    return [
        (w.url, list(w.events), w.auth)
        for w in env.servers.brevo.webhooks.values()
        if w.type == "marketing"
    ]


async def test_register_creates_once_and_prints_hubspot_settings(tmp_path: Path) -> None:
    async with cli_env(tmp_path) as env:
        add_webhooks(env)
        code, out, err = await env.cli("webhooks", "register")
        assert code == 0, err
        hooks = marketing_hooks(env)
        assert len(hooks) == 1
        url, events, auth = hooks[0]
        assert url == BREVO_URL
        # the sandbox config syncs engagements: the e-mail events are subscribed too
        assert sorted(events) == sorted((*BREVO_EVENTS, *BREVO_EMAIL_EVENTS))
        assert auth == {"type": "bearer", "token": TOKEN}
        assert "created marketing webhook" in out
        assert TOKEN not in out + err
        assert PUBLIC_URL + "/webhooks/hubspot" in out
        for sub in ("contact.creation", "contact.privacyDeletion", "contact.restore"):
            assert sub in out
        assert "contact.propertyChange: email" in out
        assert "contact.propertyChange: firstname" in out
        assert "Max concurrent requests  10" in out
        assert "Service Key cannot receive webhooks" in out

        code, out, err = await env.cli("webhooks", "register")
        assert code == 0, err
        assert len(marketing_hooks(env)) == 1
        assert "already points at" in out


async def test_dry_run_creates_nothing(tmp_path: Path) -> None:
    async with cli_env(tmp_path) as env:
        add_webhooks(env)
        code, out, err = await env.cli("webhooks", "register", "--dry-run")
        assert code == 0, err
        assert marketing_hooks(env) == []
        assert "would create" in out


async def test_missing_public_url_exits_2(tmp_path: Path) -> None:
    async with cli_env(tmp_path) as env:
        add_webhooks(env, public_url=False)
        code, _, err = await env.cli("webhooks", "register")
        assert code == 2
        assert "server.public_url" in err
        assert marketing_hooks(env) == []


async def test_connector_test_shows_the_check(tmp_path: Path) -> None:
    async with cli_env(tmp_path) as env:
        code, out, _ = await env.cli("test")
        assert "Brevo webhook registered" not in out

        add_webhooks(env)
        _, out, _ = await env.cli("test")
        assert "✗ Brevo webhook registered" in out
        assert "run: connector webhooks register" in out

        code, _, err = await env.cli("webhooks", "register")
        assert code == 0, err
        _, out, _ = await env.cli("test")
        assert "✓ Brevo webhook registered" in out


# --- the subscriptions per enabled object type (no process, no API) ------------------------


def _settings_for(tmp_path: Path, sync: str, mappings: list[Path]) -> Settings:
    folder = tmp_path / "mappings"
    folder.mkdir(parents=True, exist_ok=True)
    for m in mappings:
        shutil.copy(m, folder)
    config = tmp_path / "config.yaml"
    config.write_text(
        "connectors:\n  hubspot:\n    access_token: t\n"
        f"    sync: {sync}\n"
        "  brevo:\n    api_key: k\n"
        f"database:\n  url: sqlite:///{tmp_path / 'c.db'}\n"
        f"sync:\n  mappings_dir: {folder}\n"
    )
    return load_config(config, env={})


CONTACTS = Path(__file__).resolve().parents[1] / "mappings" / "contacts.yaml"
CRM = Path(__file__).resolve().parent / "mappings_crm"


def test_contacts_only_keeps_the_contact_subscriptions(tmp_path: Path) -> None:
    settings = _settings_for(tmp_path, "{contacts: true}", [CONTACTS])
    subs = hubspot_subscriptions(settings)
    assert subs[:5] == list(HUBSPOT_OBJECT_EVENTS)
    assert all(s.startswith("contact.") for s in subs)
    assert "contact.associationChange" not in subs
    assert subscription_notes(settings) == []


def test_companies_deals_engagements_subscriptions(tmp_path: Path) -> None:
    settings = _settings_for(
        tmp_path,
        "{contacts: true, companies: true, deals: true, tickets: true, engagements: true}",
        [CONTACTS, CRM / "deals.yaml", CRM / "companies.yaml"],
    )
    subs = hubspot_subscriptions(settings)
    contact_only = hubspot_subscriptions(_settings_for(tmp_path / "x", "{}", [CONTACTS]))
    assert subs[: len(contact_only)] == contact_only  # the contact output as it was
    for prefix in ("company", "deal", "ticket"):
        for event in ("creation", "deletion", "merge", "restore", "associationChange"):
            assert f"{prefix}.{event}" in subs
    assert "contact.associationChange" in subs
    assert "deal.propertyChange: dealstage" in subs
    assert "deal.propertyChange: amount" in subs
    assert "company.propertyChange: numberofemployees" in subs
    assert not any(s.startswith("ticket.propertyChange") for s in subs)  # no tickets.yaml
    for type_id in ("0-46", "0-47", "0-48"):
        assert f"object.creation (objectTypeId {type_id}" in "\n".join(subs)
    assert len(subs) == len(set(subs))
    notes = subscription_notes(settings)
    assert len(notes) == 1 and "sync.tickets is on" in notes[0]
