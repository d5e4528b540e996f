"""``connector demo``: the whole connector against the built-in sandboxes, no accounts needed.

It starts both sandboxes on loopback with seeded contacts and CRM records (HubSpot companies,
deals, tickets, meetings, calls and notes; Brevo companies and a deal: ``seed_crm``), writes a
throw-away config (with ``server:`` and ``webhooks:`` on loopback) and SQLite database, runs the
connection test and the mapping check (creating the mapped custom fields), then the daemon: a
first cycle links both accounts (an initial full sync of contacts, companies and deals, and the
roll-ups to Brevo). Then the daemon runs for real — web intake, inbox worker, hook runner,
scheduled pulls — with both sandboxes' webhooks pointed at its intake (HubSpot's signed v3
with the app secret, Brevo's with the bearer token): records are edited and created on each
side as a person would in the UIs, one at a time, and each change is timed until it shows on
the other side — contacts, a company renamed in HubSpot (and its contacts' ``COMPANY_NAME``),
a deal stage moved in Brevo (Brevo sends no CRM webhooks: the daemon's next pull of Brevo's
deals, brought forward, carries it; printed as "pull"), a campaign e-mail opened in Brevo (a
note on the HubSpot timeline, ``brevo_email_opens``). ``measure=N`` then times N more changes
each way and prints the p50/p99 delays. After the onboarding, the ``deal_stage_changed``
events Brevo received are shown; a "catching up" cycle writes what the onboarding did, and a
last cycle shows the sides in step (no write at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import click
import sqlalchemy as sa

from connector import webhook_setup
from connector.config import Settings, load_config
from connector.daemon import Daemon, JobResult
from connector.engine import SyncEvent
from connector.mapping_live import check_directory
from connector.objects.deal_events import DEAL_STAGE_EVENT
from connector.objects.rollup_check import check_rollups
from connector.objects.rollup_mapping import rollup_dir
from connector.onboarding import demo as onboarding_demo
from connector.runtime import Runtime
from connector.sandbox.server import SandboxServers
from connector.store import db, links
from connector.store.models import Run

SEED_HUBSPOT = 40
#: The worker's coalescing window in the demo (``webhooks.coalesce_seconds``; default 1 s).
COALESCE_SECONDS = 0.25
#: Seconds the demo waits for one change to reach the other side before calling it lost.
ARRIVAL_TIMEOUT = 30.0
#: The seeded HubSpot company the demo renames, and its new name
DEMO_COMPANY_DOMAIN = "acme.test"
DEMO_COMPANY_NAME = "Acme Industries"
#: The Brevo campaign whose e-mail a contact opens in the demo
DEMO_CAMPAIGN = "December newsletter"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
        target = f"{r.job.kind} {r.job.object_type} {r.job.system or ''}".strip()
        click.echo(f"  {target:<24} {r.status:<8} {shown}")
    click.echo(f"  API writes: HubSpot {writes[0]}, Brevo {writes[1]}")


_LABEL = {"hubspot": "HubSpot", "brevo": "Brevo"}


def _describe(event: SyncEvent) -> str:
    origin = _LABEL[event.origin]
    to = "Brevo" if event.origin == "hubspot" else "HubSpot"
    who = event.identity or event.hubspot_id or event.brevo_id
    if event.kind == "created":
        return f"  + {who}: new in {origin}, created in {to}"
    return f"  ~ {who}: {event.field} {event.old!r} → {event.new!r}  ({origin} → {to})"


@dataclass
class Change:
    """One edit made in a UI and how to see it on the other side."""

    origin: str
    """``hubspot`` or ``brevo``"""
    text: str
    make: Callable[[], object]
    arrived: Callable[[], bool]
    via: str = "webhook"
    """``webhook``, or ``pull`` where the other side sends none (Brevo's CRM records): the
    daemon's next poll, brought forward, carries it"""


def _brevo_attr(servers: SandboxServers, email: str, name: str) -> object:
    contact = servers.brevo.get(email)
    return None if contact is None else contact.attributes.get(name)


def _hubspot_prop(servers: SandboxServers, email: str, name: str) -> object:
    object_id = servers.hubspot.stores["contacts"].by_email.get(email.lower())
    if object_id is None:
        return None
    props = servers.hubspot.get_object("contacts", object_id)
    return None if props is None else props.get(name)


def _brevo_is(servers: SandboxServers, email: str, name: str, value: object) -> bool:
    return _brevo_attr(servers, email, name) == value


def _brevo_moved(servers: SandboxServers, email: str, name: str, before: object) -> bool:
    return _brevo_attr(servers, email, name) != before


def _brevo_has(servers: SandboxServers, email: str) -> bool:
    return servers.brevo.get(email) is not None


def _hubspot_is(servers: SandboxServers, email: str, name: str, value: object) -> bool:
    return _hubspot_prop(servers, email, name) == value


def _hubspot_company(servers: SandboxServers, domain: str) -> tuple[str, list[str]] | None:
    """The HubSpot company with this domain: its id and its contacts' e-mails."""
    hs = servers.hubspot
    for object_id, obj in sorted(hs.stores["companies"].live.items()):
        if obj.props.get("domain") == domain:
            emails = [
                str(c.props.get("email"))
                for cid, _ in hs.associations_of("companies", object_id, "contacts")
                if (c := hs.stores["contacts"].live.get(cid)) is not None and c.props.get("email")
            ]
            return str(object_id), emails
    return None


def _company_renamed(servers: SandboxServers, domain: str, name: str, emails: list[str]) -> bool:
    """The Brevo company with ``domain`` is called ``name``, and so is the COMPANY_NAME of
    every contact in ``emails``."""
    company = next(
        (c for c in servers.brevo.crm.companies.values() if c.attributes.get("domain") == domain),
        None,
    )
    return (
        company is not None
        and company.attributes.get("name") == name
        and all(_brevo_attr(servers, e, "COMPANY_NAME") == name for e in emails)
    )


def _brevo_stage_name(servers: SandboxServers, stage_id: object) -> str:
    return next(
        (str(s["name"]) for s in servers.brevo.crm.stages if s["id"] == stage_id), str(stage_id)
    )


def _move_brevo_deal(servers: SandboxServers, deal_id: str, stage_id: str) -> None:
    """A salesperson drags a deal to another stage in Brevo's pipeline view."""
    crm = servers.brevo.crm
    deal = crm.deals[deal_id]
    deal.attributes["deal_stage"] = stage_id
    crm.touch(deal)


def _poll_now(daemon: Daemon, object_type: str, system: str) -> None:
    """Bring the daemon's next scheduled pull of ``object_type`` on ``system`` forward to now
    (what the poll interval does a minute later)."""
    assert daemon.scheduler is not None
    name = f"pull:{system}:{object_type}"
    daemon.scheduler.modify_job(name, next_run_time=datetime.now(UTC))


def _hubspot_deal_is(servers: SandboxServers, hubspot_id: str, stage: str) -> bool:
    props = servers.hubspot.get_object("deals", hubspot_id)
    return props is not None and props.get("dealstage") == stage


def _opened_on_timeline(servers: SandboxServers, email: str) -> bool:
    """The HubSpot contact has ``brevo_email_opens`` and a Brevo "Opened" note on its
    timeline."""
    hs = servers.hubspot
    object_id = hs.stores["contacts"].by_email.get(email.lower())
    if object_id is None or not _hubspot_prop(servers, email, "brevo_email_opens"):
        return False
    notes = hs.stores["notes"].live
    return any(
        "Brevo e-mail: Opened" in str(getattr(notes.get(nid), "props", {}).get("hs_note_body"))
        for nid, _ in hs.associations_of("contacts", object_id, "notes")
    )


def _crm_changes(servers: SandboxServers, daemon: Daemon, ledger: dict[str, str]) -> list[Change]:
    """A company renamed in HubSpot, a deal moved to another stage in Brevo, and a campaign
    e-mail opened in Brevo. ``ledger`` maps Brevo deal ids to HubSpot ones (the links)."""
    hs, br = servers.hubspot, servers.brevo
    changes: list[Change] = []
    found = _hubspot_company(servers, DEMO_COMPANY_DOMAIN)
    if found is not None:
        company_id, emails = found
        old = hs.stores["companies"].live[int(company_id)].props.get("name")
        changes.append(
            Change(
                "hubspot",
                f"company {old!r} renamed {DEMO_COMPANY_NAME!r} "
                f"(and the COMPANY_NAME of its {len(emails)} contacts)",
                partial(hs.put_object, "companies", {"name": DEMO_COMPANY_NAME}, company_id),
                partial(_company_renamed, servers, DEMO_COMPANY_DOMAIN, DEMO_COMPANY_NAME, emails),
            )
        )
    won = br.crm.stages[HUBSPOT_DEAL_STAGES.index("closedwon")]["id"]
    movable = [
        (bid, rec)
        for bid, rec in sorted(br.crm.deals.items())
        if bid in ledger and rec.attributes.get("deal_stage") != won and rec.linked_contacts
    ]
    if movable:
        deal_id, deal = movable[0]
        before = _brevo_stage_name(servers, deal.attributes.get("deal_stage"))

        def move(deal_id: str = deal_id) -> None:
            _move_brevo_deal(servers, deal_id, won)
            _poll_now(daemon, "deals", "brevo")

        changes.append(
            Change(
                "brevo",
                f"deal {deal.attributes.get('deal_name')!r}: stage "
                f"{before!r} → {_brevo_stage_name(servers, won)!r}",
                move,
                partial(_hubspot_deal_is, servers, ledger[deal_id], "closedwon"),
                via="pull",
            )
        )
    reader = next((c.email for c in br.contacts.values() if c.email), None)
    if reader is not None:
        changes.append(
            Change(
                "brevo",
                f"{reader}: opened the campaign “{DEMO_CAMPAIGN}” → a note on the HubSpot "
                "timeline, brevo_email_opens",
                partial(br.simulate_open, reader, camp_id=7, campaign_name=DEMO_CAMPAIGN),
                partial(_opened_on_timeline, servers, reader),
            )
        )
    return changes


def _demo_changes(servers: SandboxServers) -> list[Change]:
    """A sales rep's edits in HubSpot and a marketer's in Brevo, as made in the two UIs."""
    hs, br = servers.hubspot, servers.brevo
    changes: list[Change] = []
    for object_id, obj in sorted(hs.stores["contacts"].live.items())[:2]:
        email = str(obj.props.get("email"))
        before = _brevo_attr(servers, email, "LIFECYCLE_STAGE")
        changes.append(
            Change(
                "hubspot",
                f"{email}: lifecycle stage → customer",
                partial(hs.put_object, "contacts", {"lifecyclestage": "customer"}, object_id),
                partial(_brevo_moved, servers, email, "LIFECYCLE_STAGE", before),
            )
        )
    grace = "grace.hopper@demo.example"
    changes.append(
        Change(
            "hubspot",
            f"{grace}: new contact",
            partial(
                hs.put_object,
                "contacts",
                {"email": grace, "firstname": "Grace", "lastname": "Hopper"},
            ),
            partial(_brevo_has, servers, grace),
        )
    )
    for contact in [c for c in br.contacts.values() if c.email][:2]:
        email = str(contact.email)
        changes.append(
            Change(
                "brevo",
                f"{email}: LASTNAME {contact.attributes.get('LASTNAME')!r} → 'Lovelace-Byron'",
                partial(br.edit_contact, email, {"LASTNAME": "Lovelace-Byron"}),
                partial(_hubspot_is, servers, email, "lastname", "Lovelace-Byron"),
            )
        )
    return changes


async def _timed(change: Change, limit: float = ARRIVAL_TIMEOUT) -> float | None:
    """Make ``change`` and poll the other side every 5 ms: seconds until it showed, or None."""
    change.make()
    started = time.perf_counter()
    while not change.arrived():
        if time.perf_counter() - started > limit:
            return None
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


def _latency_changes(servers: SandboxServers, n: int) -> list[Change]:
    """``n`` first-name edits in HubSpot and ``n`` last-name edits in Brevo, on linked contacts,
    alternating sides."""
    hs, br = servers.hubspot, servers.brevo
    linked = [
        e
        for e in (c.email for c in br.contacts.values())
        if e and _hubspot_prop(servers, e, "email")
    ][:10]
    changes: list[Change] = []
    for k in range(n):
        email = linked[k % len(linked)]
        first, last = f"Speedy{k}", f"Swift{k}"
        object_id = hs.stores["contacts"].by_email[email.lower()]
        changes.append(
            Change(
                "hubspot",
                email,
                partial(hs.put_object, "contacts", {"firstname": first}, object_id),
                partial(_brevo_is, servers, email, "FIRSTNAME", first),
            )
        )
        changes.append(
            Change(
                "brevo",
                email,
                partial(br.edit_contact, email, {"LASTNAME": last}),
                partial(_hubspot_is, servers, email, "lastname", last),
            )
        )
    return changes


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


async def _measure(servers: SandboxServers, n: int) -> bool:
    """Time ``n`` changes each way, one after the other; print p50/p99 per direction."""
    click.secho(f"\nTiming {n} more changes each way (one at a time):", bold=True)
    delays: dict[str, list[float]] = {"hubspot": [], "brevo": []}
    lost = 0
    for change in _latency_changes(servers, n):
        delay = await _timed(change)
        if delay is None:
            lost += 1
        else:
            delays[change.origin].append(delay)
    for origin, values in delays.items():
        if values:
            click.echo(
                f"  {_ARROW[origin]}  n={len(values)}  p50={percentile(values, 50):.2f} s  "
                f"p99={percentile(values, 99):.2f} s  max={max(values):.2f} s"
            )
    if lost:
        click.secho(f"  {lost} change(s) did not arrive within {ARRIVAL_TIMEOUT:g} s", fg="red")
    return not lost


_ARROW = {"hubspot": "HubSpot → Brevo", "brevo": "Brevo → HubSpot"}


async def _real_time(daemon: Daemon, servers: SandboxServers, measure: int) -> bool:
    """``daemon`` for real (its intake already listening), changes timed; False if one got
    lost."""
    pulls_before = await _pulls_done(daemon)
    runner = asyncio.create_task(daemon.run(), name="demo daemon")
    try:
        # the scheduler pulls every object on both sides at start: let those finish, so the
        # changes below travel by webhook (and a pull brought forward is not already running)
        starting = sum(1 for spec in daemon.jobs() if spec.kind == "pull")
        while await _pulls_done(daemon) < pulls_before + starting:
            if runner.done():
                runner.result()
            await asyncio.sleep(0.02)
        click.secho(
            "\n$ connector run   (webhooks in, pulls every minute as a safety net)", bold=True
        )
        click.echo("  Editing records in the two UIs, one at a time, each timed until it shows")
        click.echo("  on the other side:")
        ok = True
        async with daemon.sessions() as s:
            deal_links = {
                lk.brevo_id: lk.hubspot_id
                for lk in await links.load_links(s, "deals", brevo_ids=servers.brevo.crm.deals)
                if lk.brevo_id and lk.hubspot_id
            }
        for change in [*_demo_changes(servers), *_crm_changes(servers, daemon, deal_links)]:
            if runner.done():
                runner.result()  # the daemon broke: say why
            delay = await _timed(change)
            shown = f"{delay:5.2f} s" if delay is not None else "  not arrived"
            ok = ok and delay is not None
            via = "  (pull: Brevo sends no CRM webhooks)" if change.via == "pull" else ""
            click.echo(f"  {_ARROW[change.origin]}  {shown}  {change.text}{via}")
        if measure:
            ok = await _measure(servers, measure) and ok
    finally:
        servers.hubspot.webhook_target_url = None  # the daemon stops: webhooks off
        servers.brevo.webhooks.clear()
        daemon.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    return ok


def _show_deal_events(servers: SandboxServers) -> bool:
    """Print the ``deal_stage_changed`` events Brevo received (its events log, what its
    automations start from); False if there is none."""
    received = [e for e in servers.brevo.events if e.event_name == DEAL_STAGE_EVENT]
    click.secho(f"\nBrevo events for automations ({DEAL_STAGE_EVENT}):", bold=True)
    for event in received:
        p = event.event_properties
        who = event.identifiers.get("email_id") or event.contact_id
        click.echo(
            f"  {who}: deal {p.get('deal_name')!r} "
            f"{p.get('old_stage_id')} → {p.get('new_stage_id')}"
            f"  (Brevo stages {p.get('old_brevo_stage')!r} → {p.get('new_brevo_stage')!r}, "
            f"changed in {p.get('changed_in')}, amount {p.get('amount')})"
        )
    if not received:
        click.secho("  none received", fg="red")
    return bool(received)


async def _pulls_done(daemon: Daemon) -> int:
    async with daemon.sessions() as s:
        count = await s.scalar(
            sa.select(sa.func.count()).where(Run.kind == "pull", Run.status != "running")
        )
    return int(count or 0)


async def _listen(daemon: Daemon, settings: Settings, servers: SandboxServers) -> None:
    """Start the daemon's intake and point both sandboxes' webhooks at it, as
    ``connector webhooks register`` and the HubSpot app's settings would."""
    hooks, server = settings.webhooks, settings.server
    assert hooks is not None and server is not None
    await daemon.start_web(hooks)
    base = server.public_url or f"http://{server.host}:{server.port}"
    token = hooks.brevo_token.get_secret_value() if hooks.brevo_token else None
    servers.point_webhooks_at(
        base + hooks.hubspot_path,
        base + hooks.brevo_path,
        token,
        brevo_events=webhook_setup.brevo_events(settings),  # e-mail events too
    )
    click.secho("$ connector webhooks register", bold=True)
    click.echo(
        f"  Brevo: marketing webhook → {base}{hooks.brevo_path} (bearer token; contact and "
        "e-mail events)"
    )
    click.echo(f"  HubSpot: app subscriptions → {base}{hooks.hubspot_path} (signed v3)\n")


async def _run(
    settings: Settings,
    servers: SandboxServers,
    run_checks: Callable[[Settings], Awaitable[int]],
    measure: int,
) -> int:
    async with Runtime.open(settings) as rt:
        daemon = Daemon(rt, stop_grace=3.0)
        await _listen(daemon, settings, servers)
        click.secho("$ connector test", bold=True)
        code = await run_checks(settings)
        if code:
            await daemon.close()
            return code
        click.echo()

        click.secho("$ connector mappings check --create-missing", bold=True)
        report = await check_directory(
            settings.sync.mappings_dir,
            default_region=settings.sync.default_region,
            hubspot=rt.hubspot,
            brevo=rt.brevo,
            create=True,
        )
        folder = rollup_dir(settings.sync.mappings_dir)
        await check_rollups(folder, report, hubspot=rt.hubspot, brevo=rt.brevo, create=True)
        for line in report.created:
            click.echo(f"  created {line}")
        for problem in report.problems:
            colour = "red" if problem.severity == "error" else "yellow"
            click.secho(f"  {problem}", fg=colour)
        click.echo(f"  {len(report.live)} mapping files OK\n" if not report.errors else "")
        if report.errors:
            await daemon.close()
            return 1

        results = await daemon.run_once(reconcile=False)
        _print_cycle(
            "$ connector run --once   (first cycle: initial full sync)", results, _writes(servers)
        )
        failed = [r for r in results if r.status != "ok"]
        arrived = await _real_time(daemon, servers, measure)

        daemon = Daemon(rt)
        # the onboarding steps the stopped daemon had not finished yet (each runs once)
        for _ in range(20):
            if not (await daemon.drain_hooks()).claimed:
                break
        onboarded = await onboarding_demo.show(rt.sessions, "grace.hopper@demo.example")
        evented = _show_deal_events(servers)
        # the onboarding booked a call and logged a note: their roll-ups (LAST_MEETING_DATE,
        # LAST_NOTE_DATE, …) reach Brevo at the next pull of meetings and notes
        before = _writes(servers)
        results = await daemon.run_once(reconcile=False)
        after = _writes(servers)
        delta = (after[0] - before[0], after[1] - before[1])
        _print_cycle("\n$ connector run --once   (catching up)", results, delta)
        failed += [r for r in results if r.status != "ok"]
        before = _writes(servers)
        results = await daemon.run_once(reconcile=False)
        after = _writes(servers)
        delta = (after[0] - before[0], after[1] - before[1])
        _print_cycle("\n$ connector run --once   (in step: nothing to write)", results, delta)
        failed += [r for r in results if r.status != "ok"]
        if delta != (0, 0):
            click.secho("  unexpected writes: the sides did not settle", fg="red")
            return 1
    return 1 if failed or not arrived or not onboarded or not evented else 0


#: HubSpot's default deal stages, in pipeline order (the sandbox's, as a new portal has them)
HUBSPOT_DEAL_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)


def demo_mappings(workdir: Path, servers: SandboxServers) -> Path:
    """The project's mappings, copied into ``workdir`` with the deal pipeline and stage maps
    filled in with the Brevo sandbox's ids (a user does that by hand: ``deals.yaml``'s
    comments say how). The sandbox's pipeline gets a stage per HubSpot stage, so the maps are
    one-to-one and deal stages travel both ways."""
    folder = workdir / "mappings"
    shutil.copytree(default_mappings_dir(), folder, dirs_exist_ok=True)
    crm = servers.brevo.crm
    if len(crm.stages) < len(HUBSPOT_DEAL_STAGES):  # "Contract sent" before "Won"
        crm.stages.insert(4, {"id": crm.new_id(), "name": "Contract sent"})
    deals = folder / "deals.yaml"
    text = deals.read_text(encoding="utf-8")
    text = text.replace("REPLACE-WITH-BREVO-PIPELINE-ID", str(crm.pipeline_id))
    for i in range(len(HUBSPOT_DEAL_STAGES), 0, -1):  # 7 before 1: no prefix clash
        text = text.replace(f"REPLACE-WITH-BREVO-STAGE-ID-{i}", str(crm.stages[i - 1]["id"]))
    deals.write_text(text, encoding="utf-8")
    return folder


async def run_demo(
    workdir: Path, run_checks: Callable[[Settings], Awaitable[int]], *, measure: int = 0
) -> int:
    """The demo in ``workdir`` (config and database go there).

    ``run_checks(settings)`` is the CLI's connection test; ``measure`` > 0 times that many
    more changes each way and prints the p50/p99 change-to-other-side delays.
    """
    async with SandboxServers(seed_contacts=SEED_HUBSPOT, seed_crm=True) as servers:
        click.secho("Sandboxes up (loopback only, no accounts needed):", bold=True)
        click.echo(f"  HubSpot  {servers.hubspot_url}   ({SEED_HUBSPOT} seeded contacts)")
        click.echo(f"  Brevo    {servers.brevo_url}   ({SEED_HUBSPOT // 2} seeded contacts)")
        config_path = workdir / "config.yaml"
        db_url = f"sqlite:///{workdir / 'connector.db'}"
        text = servers.config_yaml(db_url)
        port = _free_port()
        mappings = demo_mappings(workdir, servers)
        text += (
            f"sync:\n  mappings_dir: {mappings}\n  default_region: FR\n"
            "  poll_interval: 60\n"
            f"server:\n  host: 127.0.0.1\n  port: {port}\n"
            f"  public_url: http://127.0.0.1:{port}\n"
            f'webhooks:\n  brevo_token: "{secrets.token_urlsafe(18)}"\n'
            f"  coalesce_seconds: {COALESCE_SECONDS}\n"
        )
        text += onboarding_demo.config_yaml(workdir, mappings)
        config_path.write_text(text, encoding="utf-8")
        click.echo(f"  config   {config_path}")
        settings = load_config(config_path)
        await asyncio.to_thread(db.upgrade, db_url, "head")
        click.echo(f"  database {db_url} (migrated)\n")
        return await _run(settings, servers, run_checks, measure)
