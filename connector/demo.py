"""``connector demo``: the whole connector against the built-in sandboxes, no accounts needed.

It starts both sandboxes on loopback with seeded contacts, writes a throw-away config and
SQLite database, runs the connection test and the mapping check (creating the mapped custom
fields), then the daemon: a first cycle links both accounts (an initial full sync), a few
records are edited and created on each side as a person would in the UIs, the next cycle
carries them across — printed field by field with the rule that decided — and a last cycle
shows the sides in step (no write at all).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import click

from connector.config import Settings, load_config
from connector.daemon import Daemon, JobResult
from connector.engine import SyncEvent
from connector.mapping_live import create_missing, live_check
from connector.onboarding import demo as onboarding_demo
from connector.runtime import Runtime
from connector.sandbox.server import SandboxServers
from connector.store import db

SEED_HUBSPOT = 40


def default_mappings_dir() -> Path:
    """The project's ``mappings/`` (a source checkout), else the copy shipped in the wheel."""
    source = Path(__file__).resolve().parents[1] / "mappings"
    return source if source.is_dir() else Path(__file__).resolve().parent / "_mappings"


def _writes(servers: SandboxServers) -> tuple[int, int]:
    return servers.hubspot.log.writes(), servers.brevo.calls.writes()


def _events(results: list[JobResult]) -> list[SyncEvent]:
    return [e for r in results if r.outcome is not None for e in r.outcome.events]


def _print_cycle(title: str, results: list[JobResult], writes: tuple[int, int]) -> None:
    click.secho(title, bold=True)
    for r in results:
        counts = {k: v for k, v in sorted(r.counts.items()) if v and k != "read"}
        shown = ", ".join(f"{k}={v}" for k, v in counts.items()) or "nothing to do"
        target = f"{r.job.kind} {r.job.system or ''}".strip()
        click.echo(f"  {target:<14} {r.status:<8} {shown}")
    click.echo(f"  API writes: HubSpot {writes[0]}, Brevo {writes[1]}")


_LABEL = {"hubspot": "HubSpot", "brevo": "Brevo"}


def _describe(event: SyncEvent) -> str:
    origin = _LABEL[event.origin]
    to = "Brevo" if event.origin == "hubspot" else "HubSpot"
    who = event.identity or event.hubspot_id or event.brevo_id
    if event.kind == "created":
        return f"  + {who}: new in {origin}, created in {to}"
    return f"  ~ {who}: {event.field} {event.old!r} → {event.new!r}  ({origin} → {to})"


def _edit_both_sides(servers: SandboxServers) -> list[str]:
    """A marketer's and a sales rep's edits, as made in the two UIs."""
    done: list[str] = []
    hs = servers.hubspot
    contacts = sorted(hs.stores["contacts"].live.items())
    for object_id, obj in contacts[:2]:
        hs.put_object("contacts", {"lifecyclestage": "customer"}, object_id)
        done.append(f"HubSpot: {obj.props.get('email')} lifecycle stage → customer")
    hs.put_object(
        "contacts",
        {"email": "grace.hopper@demo.example", "firstname": "Grace", "lastname": "Hopper"},
    )
    done.append("HubSpot: new contact grace.hopper@demo.example")
    br = servers.brevo
    for contact in list(br.contacts.values())[:2]:
        if contact.email:
            br.edit_contact(contact.email, {"LASTNAME": "Lovelace-Byron"})
            done.append(f"Brevo:   {contact.email} LASTNAME → Lovelace-Byron")
    return done


async def _run(settings: Settings, servers: SandboxServers) -> int:
    async with Runtime.open(settings) as rt:
        mapping = rt.mappings["contacts"]
        problems = await live_check(mapping, rt.hubspot, rt.brevo)
        created = await create_missing(mapping, problems, rt.hubspot, rt.brevo)
        click.secho("$ connector mappings check --create-missing", bold=True)
        for line in created:
            click.echo(f"  {line}")
        click.echo("  mapping OK\n")

        daemon = Daemon(rt)
        await daemon.prepare()
        results = await daemon.run_once(reconcile=False)
        _print_cycle(
            "$ connector run --once   (first cycle: initial full sync)", results, _writes(servers)
        )
        failed = [r for r in results if r.status != "ok"]

        click.secho("\nEditing a few records in the two UIs:", bold=True)
        for line in _edit_both_sides(servers):
            click.echo(f"  {line}")
        before = _writes(servers)
        await asyncio.sleep(0.01)
        results = await daemon.run_once(reconcile=False)
        after = _writes(servers)
        _print_cycle(
            "\n$ connector run --once   (carries the edits across)",
            results,
            (after[0] - before[0], after[1] - before[1]),
        )
        failed += [r for r in results if r.status != "ok"]
        click.secho("What synced:", bold=True)
        for event in _events(results):
            click.echo(_describe(event))
        await onboarding_demo.show(rt.sessions, "grace.hopper@demo.example")

        before = _writes(servers)
        results = await daemon.run_once(reconcile=False)
        after = _writes(servers)
        delta = (after[0] - before[0], after[1] - before[1])
        _print_cycle("\n$ connector run --once   (in step: nothing to write)", results, delta)
        failed += [r for r in results if r.status != "ok"]
        if delta != (0, 0):
            click.secho("  unexpected writes: the sides did not settle", fg="red")
            return 1
    return 1 if failed else 0


async def run_demo(workdir: Path, run_checks: Callable[[Settings], Awaitable[int]]) -> int:
    """The demo in ``workdir`` (config and database go there).

    ``run_checks(settings)`` is the CLI's connection test.
    """
    async with SandboxServers(seed_contacts=SEED_HUBSPOT) as servers:
        click.secho("Sandboxes up (loopback only, no accounts needed):", bold=True)
        click.echo(f"  HubSpot  {servers.hubspot_url}   ({SEED_HUBSPOT} seeded contacts)")
        click.echo(f"  Brevo    {servers.brevo_url}   ({SEED_HUBSPOT // 2} seeded contacts)")
        config_path = workdir / "config.yaml"
        db_url = f"sqlite:///{workdir / 'connector.db'}"
        text = servers.config_yaml(db_url)
        text += f"sync:\n  mappings_dir: {default_mappings_dir()}\n  default_region: FR\n"
        text += onboarding_demo.config_yaml(workdir, default_mappings_dir())
        config_path.write_text(text, encoding="utf-8")
        click.echo(f"  config   {config_path}")
        settings = load_config(config_path)
        await asyncio.to_thread(db.upgrade, db_url, "head")
        click.echo(f"  database {db_url} (migrated)\n")
        click.secho("$ connector test", bold=True)
        code = await run_checks(settings)
        if code:
            return code
        click.echo()
        return await _run(settings, servers)
