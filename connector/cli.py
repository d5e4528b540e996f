"""The ``connector`` command line.

    connector [--config PATH] test          the connection test (✓/✗ per check)
    connector [--config PATH] db upgrade    bring the state database to the newest schema
    connector [--config PATH] db current    show the schema revision
    connector [--config PATH] run [--once]  the daemon (pulls, reconciliation, webhooks)
    connector [--config PATH] status [--json]   connections, last syncs, counts, last error
    connector [--config PATH] explain EMAIL     one contact's sync history
    connector [--config PATH] dlq list|retry    dead letters: records that kept failing
    connector [--config PATH] webhooks status   webhook URLs to register, the inbox
    connector [--config PATH] hooks list|retry|enroll   post-sync hook jobs (onboarding)
    connector sandbox [--seed-contacts N]   run the HubSpot and Brevo sandboxes on loopback
    connector demo                          everything against the sandboxes, no accounts

A bad configuration exits with status 2 and a message naming the key and the fix; a failed
check exits 1; success exits 0. No command prints a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from connector import __version__
from connector.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    ServerSettings,
    Settings,
    load_config,
)
from connector.errors import ConfigError, ConnectorError, scrub
from connector.log import configure as configure_logging

EXIT_CONFIG = 2


def _fail(message: str, code: int) -> NoReturn:
    click.secho(scrub(message), fg="red", err=True)
    sys.exit(code)


def _settings(ctx: click.Context) -> Settings:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = load_config(obj.get("config_path"))
        except ConfigError as e:
            _fail(f"Configuration error:\n{e}", EXIT_CONFIG)
        settings: Settings = obj["settings"]
        configure_logging(
            level=settings.logging.level,
            fmt="console" if settings.logging.format == "auto" else settings.logging.format,
            log_emails=settings.logging.log_emails,
        )
    result: Settings = obj["settings"]
    return result


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Config file (default: ${CONFIG_ENV_VAR} or ./{DEFAULT_CONFIG_PATH}).",
)
@click.version_option(__version__, prog_name="connector")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Keep HubSpot and Brevo in step, both ways."""
    ctx.ensure_object(dict)["config_path"] = config_path


# --- test --------------------------------------------------------------------------------


async def _run_test(settings: Settings) -> int:
    from connector.brevo.client import BrevoClient
    from connector.checks import run_checks
    from connector.hubspot.client import HubSpotClient

    hs_cfg, br_cfg = settings.connectors.hubspot, settings.connectors.brevo
    hubspot = HubSpotClient(hs_cfg) if hs_cfg.enabled else None
    brevo = BrevoClient(br_cfg) if br_cfg.enabled else None
    try:
        results = await run_checks(settings, hubspot, brevo)
    finally:
        if hubspot is not None:
            await hubspot.aclose()
        if brevo is not None:
            await brevo.aclose()
    for result in results:
        click.echo(scrub(result.line()))
    failed = sum(1 for r in results if not r.ok)
    click.echo(
        f"\n{len(results) - failed} passed, {failed} failed"
        if failed
        else f"\nAll {len(results)} checks passed."
    )
    return 1 if failed else 0


@cli.command("test")
@click.pass_context
def test_cmd(ctx: click.Context) -> None:
    """Check the connections: HubSpot, Brevo, lists, database. Exit 0 only if all pass."""
    settings = _settings(ctx)
    sys.exit(asyncio.run(_run_test(settings)))


# --- db ----------------------------------------------------------------------------------


@cli.group("db")
def db_group() -> None:
    """The state database (SQLite or PostgreSQL)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply the schema migrations."""
    from connector.store import db

    settings = _settings(ctx)
    try:
        db.upgrade(settings.database.url, revision)
        current = db.current_revision(settings.database.url)
    except ConnectorError as e:
        _fail(str(e), 1)
    click.echo(f"Database at revision {current}.")


@db_group.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """Show the schema revision of the database, and the newest one."""
    from connector.store import db

    settings = _settings(ctx)
    try:
        current = db.current_revision(settings.database.url)
    except ConnectorError as e:
        _fail(str(e), 1)
    head = db.head_revision()
    state = "up to date" if current == head else "run: connector db upgrade"
    click.echo(f"current: {current or 'none'}  head: {head}  ({state})")


# --- mappings ----------------------------------------------------------------------------


async def _mappings_check(settings: Settings, create_missing: bool, offline: bool) -> int:
    from connector.mapping_live import CreateMissingError, Report, check_directory
    from connector.objects.rollup_check import check_rollups
    from connector.objects.rollup_mapping import rollup_dir
    from connector.runtime import Runtime

    folder, region = settings.sync.mappings_dir, settings.sync.default_region
    try:
        if offline:
            report: Report = await check_directory(folder, default_region=region)
            await check_rollups(rollup_dir(folder), report)
        else:
            async with Runtime.open(settings, load_engines=False) as rt:
                report = await check_directory(
                    folder,
                    default_region=region,
                    hubspot=rt.hubspot,
                    brevo=rt.brevo,
                    create=create_missing,
                )
                await check_rollups(
                    rollup_dir(folder),
                    report,
                    hubspot=rt.hubspot,
                    brevo=rt.brevo,
                    create=create_missing,
                )
    except CreateMissingError as e:
        for item in e.created:
            click.echo(f"created {item}")
        click.secho(scrub(str(e)), fg="red", err=True)
        return 1
    except ConfigError:
        raise
    except ConnectorError as e:  # an API error (401, network…): its message is scrubbed
        click.secho(scrub(str(e)), fg="red", err=True)
        return 1
    for problem in report.problems:
        click.secho(scrub(str(problem)), fg="red" if problem.severity == "error" else "yellow")
    for item in report.created:
        click.echo(f"created {item}")
    errors, warnings = report.errors, report.warnings
    summary = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    if offline:
        summary += " (offline: live checks skipped)"
    elif not report.live:
        summary += " (live checks skipped: fix the errors first)"
    else:
        files = len(report.live)
        summary += f" ({files} mapping file{'s' * (files != 1)} checked against HubSpot and Brevo)"
    click.echo(summary)
    return 1 if errors else 0


@cli.group("mappings")
def mappings_group() -> None:
    """Field mappings (sync.mappings_dir, *.yaml)."""


@mappings_group.command("check")
@click.option(
    "--create-missing",
    is_flag=True,
    help="Create the missing Brevo attributes and HubSpot properties, then check again.",
)
@click.option("--offline", is_flag=True, help="Static checks only: no API call.")
@click.pass_context
def mappings_check(ctx: click.Context, create_missing: bool, offline: bool) -> None:
    """Check every mapping file, then against HubSpot and Brevo. Exit 1 on any error."""
    if create_missing and offline:
        raise click.UsageError("--create-missing needs the APIs: drop --offline")
    settings = _settings(ctx)
    sys.exit(asyncio.run(_mappings_check(settings, create_missing, offline)))


# --- resync ------------------------------------------------------------------------------


_FORCE_HELP = (
    "Carry out deletions even past the mass-delete guard (more than sync.max_delete_share of "
    "the linked records deleted in one pass)."
)


def _force_deletions(engine: Any, rt: Any, force: bool) -> None:
    """``--force``: let this engine's deletions past the mass-delete guard."""
    from connector.events import attach

    attach(engine, rt.settings).force = force


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS", param_hint="--since"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _resync(
    settings: Settings,
    objects: list[str],
    direction: str | None,
    since: datetime | None,
    dry_run: bool,
    force: bool = False,
) -> int:
    from rich.console import Console

    from connector.daemon import LeaseBusy, default_worker_id, holding_lease
    from connector.resync import resync
    from connector.resync_view import (
        RichResyncProgress,
        plan_table,
        print_samples,
        summary_table,
    )
    from connector.run_record import recorded
    from connector.runtime import Runtime
    from connector.store import db

    console = Console()
    await asyncio.to_thread(db.upgrade, settings.database.url, "head")
    failed = 0
    async with Runtime.open(settings) as rt:
        synced = [*rt.engines, *rt.objects]
        unknown = [o for o in objects if o not in synced]
        if unknown:
            _fail(
                f"not synced: {', '.join(unknown)} — enable it under connectors.hubspot.sync "
                f"(synced now: {', '.join(synced) or 'nothing'})",
                2,
            )
        for object_type in objects or synced:
            if object_type in rt.objects:
                failed += await _resync_object(rt, console, object_type, direction, dry_run, force)
                continue
            engine = rt.engines[object_type]
            _force_deletions(engine, rt, force)
            if direction:
                engine.direction = direction  # type: ignore[assignment]
            started = time.monotonic()
            try:
                async with holding_lease(rt.sessions, object_type, default_worker_id()):
                    with RichResyncProgress(console, object_type) as progress:
                        out = await recorded(
                            rt.sessions,
                            object_type,
                            functools.partial(
                                resync, engine, since=since, dry_run=dry_run, progress=progress
                            ),
                            dry_run=dry_run,
                        )
            except LeaseBusy as e:
                _fail(str(e), 1)
            except (KeyboardInterrupt, asyncio.CancelledError):
                console.print("Interrupted: the next resync resumes where this one stopped.")
                return 130
            seconds = time.monotonic() - started
            if dry_run:
                console.print(plan_table(object_type, out))
                print_samples(console, out)
            else:
                console.print(summary_table(object_type, out, seconds))
            failed += out.counts.get("failed", 0)
            for line in out.failures[:5]:
                console.print(f"[red]{scrub(line)}[/red]", highlight=False)
    return 1 if failed else 0


async def _resync_object(
    rt: Any, console: Any, object_type: str, direction: str | None, dry_run: bool, force: bool
) -> int:
    """``resync`` of an object type synced by an ObjectSync (companies, deals, …)."""
    from connector.daemon import LeaseBusy, default_worker_id, holding_lease
    from connector.resync_view import plan_table, print_samples, summary_table
    from connector.run_record import recorded

    obj = rt.objects[object_type]
    if force and hasattr(obj, "force"):
        obj.force = True
    if direction and hasattr(obj, "direction"):
        obj.direction = direction
    started = time.monotonic()
    try:
        async with holding_lease(rt.sessions, object_type, default_worker_id()):
            with console.status(f"[bold]{object_type}[/]: resync…"):
                out = await recorded(
                    rt.sessions,
                    object_type,
                    lambda: obj.resync(mode="resync", dry_run=dry_run),
                    dry_run=dry_run,
                )
    except LeaseBusy as e:
        _fail(str(e), 1)
    if dry_run:
        console.print(plan_table(object_type, out))
        print_samples(console, out)
    else:
        console.print(summary_table(object_type, out, time.monotonic() - started))
    for line in out.failures[:5]:
        console.print(f"[red]{scrub(line)}[/red]", highlight=False)
    return int(out.counts.get("failed", 0))


@cli.command("resync")
@click.option("--objects", default="", help="Comma-separated object types (default: all synced).")
@click.option("--object", "object_", default="", help="One object type (e.g. companies).")
@click.option(
    "--direction",
    type=click.Choice(["bidirectional", "hubspot_to_brevo", "brevo_to_hubspot"]),
    default=None,
    help="Override connectors.hubspot.direction for this run.",
)
@click.option("--since", default=None, help="Only records modified since this date (UTC).")
@click.option("--dry-run", is_flag=True, help="Show the plan; write nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@click.pass_context
def resync_cmd(
    ctx: click.Context,
    objects: str,
    object_: str,
    direction: str | None,
    since: str | None,
    dry_run: bool,
    yes: bool,
    force: bool,
) -> None:
    """Full sync: stream every record of both sides, write only the differences."""
    settings = _settings(ctx)
    wanted = [o.strip() for o in f"{objects},{object_}".split(",") if o.strip()]
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            _fail("resync writes to both accounts: add --yes (or try --dry-run first)", 2)
        click.confirm("Resync writes to both HubSpot and Brevo. Continue?", abort=True)
    sys.exit(asyncio.run(_resync(settings, wanted, direction, _parse_since(since), dry_run, force)))


# --- run (the daemon) --------------------------------------------------------------------


def _job_line(result: Any) -> str:
    spec = result.job
    where = " ".join(p for p in (spec.kind, spec.system, spec.object_type) if p)
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items()) if v)
    text = f"{where}: {result.status} in {result.seconds:.1f} s"
    if counts:
        text += f" — {counts}"
    if result.error:
        text += f" — {result.error}"
    return scrub(text)


async def _run_daemon(settings: Settings, once: bool, force: bool = False) -> int:
    from connector.daemon import Daemon
    from connector.runtime import Runtime

    async with Runtime.open(settings) as rt:
        daemon = Daemon(rt)
        if force:  # pulls, reconciliation and the inbox worker alike
            for engine in rt.engines.values():
                _force_deletions(engine, rt, True)
            for obj in rt.objects.values():
                if hasattr(obj, "force"):
                    obj.force = True
            daemon.worker.force = True
        daemon.install_signal_handlers()
        try:
            await daemon.prepare()
        except ConnectorError as e:
            _fail(str(e), 1)
        if not rt.engines and not rt.objects:
            _fail("nothing to sync: enable an object under connectors.hubspot.sync", EXIT_CONFIG)
        if not once:
            try:
                await daemon.run()
            except ConnectorError as e:
                _fail(str(e), 1)
            return 0
        results = await daemon.run_once()
        for result in results:
            click.echo(_job_line(result))
        inbox = daemon.last_inbox
        if inbox is not None and (inbox.claimed or inbox.error):
            click.echo(_inbox_line(inbox))
        failed = any(r.status == "failed" for r in results) or (inbox is not None and inbox.failed)
        return 1 if failed else 0


def _inbox_line(result: Any) -> str:
    counts = {**result.summary(), **result.counts}
    shown = ", ".join(f"{k}={v}" for k, v in counts.items() if v)
    text = f"inbox: {'failed' if result.failed else 'ok'} — {shown or 'nothing to do'}"
    if result.error or result.failures:
        text += f" — {result.error or '; '.join(result.failures[:5])}"
    return scrub(text)


@cli.command("run")
@click.option(
    "--once", is_flag=True, help="Run one cycle of every job and one inbox pass, then exit."
)
@click.option("--force", is_flag=True, help=_FORCE_HELP + " Only with --once.")
@click.pass_context
def run_cmd(ctx: click.Context, once: bool, force: bool) -> None:
    """The daemon: incremental pulls every poll_interval, reconciliation every
    reconcile_interval and, with a webhooks: section, the webhook intake and its inbox
    worker, until SIGTERM (which finishes the batch in flight and exits 0)."""
    if force and not once:
        raise click.UsageError("--force is for one supervised cycle: use it with --once")
    settings = _settings(ctx)
    fmt = settings.logging.format
    configure_logging(
        level=settings.logging.level,
        fmt="json" if fmt == "auto" else fmt,
        log_emails=settings.logging.log_emails,
    )
    sys.exit(asyncio.run(_run_daemon(settings, once, force)))


# --- status, explain ---------------------------------------------------------------------


async def _status(settings: Settings, as_json: bool) -> int:
    import json

    from rich.console import Console

    from connector.status import gather, render

    report = await gather(settings)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        render(report, Console(highlight=False), show_emails=settings.logging.log_emails)
    return 0 if report.ok else 1


async def _list_skipped(settings: Settings, limit: int) -> int:
    from rich.console import Console
    from rich.table import Table

    from connector.store import db, skipped

    engine = db.create_engine(settings.database.url, sqlite_begin="DEFERRED")
    try:
        await _store_ready(engine)
        async with db.session_factory(engine)() as s:
            items = await skipped.list_skipped(s, limit=limit)
    finally:
        await engine.dispose()
    table = Table(title="Records not synced, and why (most recently seen first)")
    for column in ("system", "object", "id", "reason", "first seen", "last seen"):
        table.add_column(column)
    for item in items:
        table.add_row(
            item.system,
            item.object_type,
            item.object_id,
            item.reason,
            item.first_seen.strftime("%Y-%m-%d %H:%M"),
            item.last_seen.strftime("%Y-%m-%d %H:%M"),
        )
    Console(highlight=False).print(table)
    return 0


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (stable keys).")
@click.option(
    "--skipped", "show_skipped", is_flag=True, help="List the records not synced (no email …)."
)
@click.option("--limit", default=100, show_default=True, help="Rows for --skipped.")
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool, show_skipped: bool, limit: int) -> None:
    """Connections, last syncs, counts, dead letters, last error. Exit 1 if not connected."""
    settings = _settings(ctx)
    if show_skipped:
        sys.exit(asyncio.run(_list_skipped(settings, limit)))
    sys.exit(asyncio.run(_status(settings, as_json)))


async def _store_ready(engine: Any) -> None:
    """Exit 1 with the fix unless the database is reachable and migrated."""
    from connector.store import db

    health = await db.check(engine)
    if not health.migrated:
        _fail(f"The database is not ready: {health.error or 'run connector db upgrade'}", 1)


async def _explain(settings: Settings, query: str, limit: int, object_type: str | None) -> int:
    from rich.console import Console

    from connector.explain import OBJECT_TYPES, explain_record, render
    from connector.mapping import Mapping, load_mapping
    from connector.runtime import mapping_path
    from connector.store import db

    types = (object_type,) if object_type else OBJECT_TYPES
    engine = db.create_engine(settings.database.url, sqlite_begin="DEFERRED")
    try:
        await _store_ready(engine)
        async with db.session_factory(engine)() as s:
            found = await explain_record(s, query, object_types=types, limit=limit)
    finally:
        await engine.dispose()
    if not found:
        if "@" in query and types == OBJECT_TYPES:
            click.echo(f"No synced contact has the email {query.strip()}.", err=True)
        else:
            what = object_type or "record"
            click.echo(
                f"No synced {what} has the HubSpot id, Brevo id, e-mail or domain "
                f"{query.strip()} (see connector status for what is synced).",
                err=True,
            )
        return 1
    mappings: dict[str, Mapping | None] = {}
    console = Console(highlight=False)
    for n, expl in enumerate(found):
        ot = expl.link.object_type
        if ot not in mappings:
            try:
                mappings[ot] = load_mapping(
                    mapping_path(settings, ot), default_region=settings.sync.default_region
                )
            except ConnectorError:
                mappings[ot] = None
        if n:
            console.print()
        render(expl, console, mappings[ot])
    return 0


@cli.command("explain")
@click.argument("query", metavar="EMAIL|ID|DOMAIN")
@click.option("--limit", default=200, show_default=True, help="Most history rows to show.")
@click.option(
    "--object",
    "object_type",
    type=click.Choice(["contacts", "companies", "deals"]),
    default=None,
    help="Look only in this object type (default: contacts, companies and deals).",
)
@click.pass_context
def explain_cmd(ctx: click.Context, query: str, limit: int, object_type: str | None) -> None:
    """One synced record — a contact by e-mail, any record by HubSpot or Brevo id, a company
    by domain: each field change, its direction, its rule, when; and the ledger, dead
    letters, associations, roll-ups and e-mail events the store keeps for it."""
    settings = _settings(ctx)
    sys.exit(asyncio.run(_explain(settings, query, limit, object_type)))


# --- dlq ---------------------------------------------------------------------------------


@cli.group("dlq")
def dlq_group() -> None:
    """Dead letters: records that kept failing."""


async def _dlq_list(settings: Settings, limit: int, as_json: bool) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from connector.dlq import summary_row
    from connector.log import mask_email
    from connector.store import db, deadletters

    engine = db.create_engine(settings.database.url, sqlite_begin="DEFERRED")
    try:
        await _store_ready(engine)
        async with db.session_factory(engine)() as s:
            letters = await deadletters.list_open(s, limit=limit)
    finally:
        await engine.dispose()
    text = (lambda v: v) if settings.logging.log_emails else mask_email
    rows = [summary_row(lt) for lt in letters]
    if as_json:
        for row in rows:
            row["error"] = text(row["error"])
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        click.echo("No open dead letters.")
        return 0
    table = Table(title=f"Open dead letters ({len(rows)})", title_justify="left")
    columns = ("ID", "When (UTC)", "System", "Object", "Record id", "Operation", "Error", "Tries")
    for name in columns:
        table.add_column(name)
    for lt in letters:
        table.add_row(
            str(lt.id),
            f"{lt.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            lt.system,
            lt.object_type,
            lt.object_id or "—",
            lt.operation,
            text(lt.error),
            str(lt.attempts),
        )
    Console(highlight=False).print(table)
    click.echo("Retry with: connector dlq retry ID (or --all)")
    return 0


@dlq_group.command("list")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
@click.pass_context
def dlq_list(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The open dead letters, oldest first."""
    settings = _settings(ctx)
    sys.exit(asyncio.run(_dlq_list(settings, limit, as_json)))


async def _dlq_retry(settings: Settings, ids: list[int] | None) -> int:
    from connector import dlq
    from connector.daemon import LeaseBusy, default_worker_id, holding_lease
    from connector.log import mask_email
    from connector.runtime import Runtime

    text = (lambda v: v) if settings.logging.log_emails else mask_email
    async with Runtime.open(settings) as rt:
        await _store_ready(rt.db_engine)
        async with rt.sessions() as s:
            letters, problems = await dlq.open_letters(s, ids)
        for problem in problems:
            click.echo(problem, err=True)
        if not letters:
            if not problems:
                click.echo("No open dead letters.")
            return 1 if problems else 0
        results: list[dlq.RetryResult] = []
        holder = f"dlq-retry:{default_worker_id()}"
        for object_type in dict.fromkeys(lt.object_type for lt in letters):
            mine = [lt for lt in letters if lt.object_type == object_type]
            try:
                async with holding_lease(rt.sessions, object_type, holder):
                    results += await dlq.retry(rt.sessions, rt.engines, mine, objects=rt.objects)
            except LeaseBusy as e:
                _fail(str(e), 1)
    for r in results:
        if r.resolved:
            click.echo(f"✓ {r.letter.id} resolved ({r.letter.object_type} {r.letter.object_id})")
        else:
            why = text(r.error or "")
            click.echo(scrub(f"✗ {r.letter.id} still failing (attempt {r.attempts}): {why}"))
    resolved = sum(1 for r in results if r.resolved)
    click.echo(f"\n{resolved} resolved, {len(results) - resolved} still open.")
    return 0 if resolved == len(results) and not problems else 1


@dlq_group.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Retry every open dead letter.")
@click.pass_context
def dlq_retry(ctx: click.Context, ids: tuple[int, ...], retry_all: bool) -> None:
    """Sync the dead letters' records again; resolve the ones that now go through."""
    if bool(ids) == retry_all:
        raise click.UsageError("give dead-letter IDs or --all (see connector dlq list)")
    settings = _settings(ctx)
    sys.exit(asyncio.run(_dlq_retry(settings, None if retry_all else list(ids))))


# --- hooks -------------------------------------------------------------------------------


@cli.group("hooks")
def hooks_group() -> None:
    """Post-sync hooks (onboarding, lifecycle triggers): their jobs, retries, enrollment."""


async def _hooks_list(settings: Settings, failed: bool, limit: int, as_json: bool) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from connector.log import mask_email
    from connector.store import db, jobs

    engine = db.create_engine(settings.database.url, sqlite_begin="DEFERRED")
    try:
        await _store_ready(engine)
        async with db.session_factory(engine)() as s:
            listed = await jobs.list_jobs(s, failed_only=failed, limit=limit)
    finally:
        await engine.dispose()
    text = (lambda v: v) if settings.logging.log_emails else mask_email

    def when(value: datetime | None) -> str:
        return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if value is not None else "—"

    rows = [
        {
            "id": j.id,
            "hook": j.hook,
            "contact": j.hubspot_id or j.subject,
            "step": j.step,
            "status": j.status,
            "attempts": j.attempts,
            "next_attempt": when(j.next_attempt_at) if j.status in ("pending", "failed") else None,
            "last_error": text(j.last_error) if j.last_error else None,
        }
        for j in listed
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        click.echo("No failed hook jobs." if failed else "No hook jobs.")
        return 0
    title = f"{'Failed hook jobs' if failed else 'Hook jobs'} ({len(rows)}, newest first)"
    table = Table(title=title, title_justify="left")
    for name in ("ID", "Contact", "Hook", "Step", "Status", "Tries", "Next attempt (UTC)"):
        table.add_column(name)
    table.add_column("Last error", overflow="fold")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["contact"]),
            str(r["hook"]),
            str(r["step"]),
            str(r["status"]),
            str(r["attempts"]),
            str(r["next_attempt"] or "—"),
            scrub(str(r["last_error"] or "")),
        )
    Console(highlight=False).print(table)
    if any(r["status"] in ("failed", "dead") for r in rows):
        click.echo("Run a failed or dead job again with: connector hooks retry ID")
    return 0


@hooks_group.command("list")
@click.option("--failed", is_flag=True, help="Only jobs waiting for a retry, and dead ones.")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
@click.pass_context
def hooks_list(ctx: click.Context, failed: bool, limit: int, as_json: bool) -> None:
    """The hook jobs (one per step and contact): status, attempts, next attempt, last error."""
    settings = _settings(ctx)
    sys.exit(asyncio.run(_hooks_list(settings, failed, limit, as_json)))


async def _hooks_retry(settings: Settings, ids: Sequence[int]) -> int:
    from connector.onboarding.runner import retry_job
    from connector.store import db

    engine = db.create_engine(settings.database.url)
    missing = 0
    try:
        await _store_ready(engine)
        sessions = db.session_factory(engine)
        for job_id in ids:
            job = await retry_job(sessions, job_id)
            if job is None:
                click.echo(f"✗ {job_id}: no failed or dead hook job with this id", err=True)
                missing += 1
            else:
                click.echo(
                    f"✓ {job_id} queued again ({job.hook} {job.step}, contact {job.hubspot_id})"
                )
    finally:
        await engine.dispose()
    if len(ids) > missing:
        click.echo("The running daemon (connector run) picks them up within seconds.")
    return 1 if missing else 0


@hooks_group.command("retry")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.pass_context
def hooks_retry(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Queue failed or dead hook jobs again, with a fresh attempt budget."""
    settings = _settings(ctx)
    sys.exit(asyncio.run(_hooks_retry(settings, list(ids))))


async def _hooks_enroll(settings: Settings, dry_run: bool, yes: bool) -> int:
    from connector.onboarding.enroll import enroll_existing, plan_existing
    from connector.store import db

    cfg = settings.onboarding
    if cfg is None or not cfg.enabled:
        _fail("onboarding is not enabled: set onboarding.enabled: true first", EXIT_CONFIG)
    engine = db.create_engine(settings.database.url)
    try:
        await _store_ready(engine)
        sessions = db.session_factory(engine)
        async with sessions() as s:
            plan = await plan_existing(s)
        click.echo(
            f"{plan.count} existing contact(s) would be enrolled in onboarding "
            f"({len(plan.candidates)} never enrolled, {len(plan.reopen)} skipped before as "
            "created before the hook was enabled): each gets an owner, a call and a welcome "
            "e-mail."
        )
        if dry_run or plan.count == 0:
            return 0
        if cfg.enroll != "existing_too":
            _fail(
                "onboarding.enroll is new_only: set onboarding.enroll: existing_too to enroll "
                "the existing contacts (run with --dry-run first to see how many)",
                EXIT_CONFIG,
            )
        if not yes and not click.confirm(f"Enroll these {plan.count} contact(s)?", default=False):
            click.echo("Nothing enrolled.")
            return 1
        async with sessions() as s, s.begin():
            done = await enroll_existing(s, plan, reenroll=cfg.reenroll)
    finally:
        await engine.dispose()
    click.echo(f"{done} contact(s) enrolled; the running daemon onboards them.")
    return 0


@hooks_group.command("enroll")
@click.option("--dry-run", is_flag=True, help="Only count the contacts that would be enrolled.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def hooks_enroll(ctx: click.Context, dry_run: bool, yes: bool) -> None:
    """Enroll the existing contacts in onboarding (needs onboarding.enroll: existing_too)."""
    settings = _settings(ctx)
    sys.exit(asyncio.run(_hooks_enroll(settings, dry_run, yes)))


# --- sandbox and demo --------------------------------------------------------------------


# --- webhooks ----------------------------------------------------------------------------


@cli.group("webhooks")
def webhooks_group() -> None:
    """Webhook intake: the URLs to register with HubSpot and Brevo, and the inbox."""


async def _webhooks_status(settings: Settings, as_json: bool) -> int:
    import json

    from connector.log import mask_email
    from connector.status import DEAD_EVENTS_HINT
    from connector.store import db, inbox

    hooks = settings.webhooks
    if hooks is None:
        _fail(
            "Webhooks are not configured: add a webhooks: section (brevo_token) and a "
            "server: section (host, port, public_url) to the config.",
            1,
        )
    server = settings.server or ServerSettings()
    base = server.public_url or f"http://{server.host}:{server.port}"
    engine = db.create_engine(settings.database.url, sqlite_begin="DEFERRED")
    try:
        await _store_ready(engine)
        async with db.session_factory(engine)() as s:
            counts = await inbox.counts_by_status(s)
            dead = await inbox.list_dead(s, limit=5) if counts.get("dead") else []
    finally:
        await engine.dispose()
    shown = (lambda t: t) if settings.logging.log_emails else mask_email
    report: dict[str, Any] = {
        "listen": f"{server.host}:{server.port}",
        "public_url": server.public_url,
        "hubspot_url": base + hooks.hubspot_path,
        "brevo_url": base + hooks.brevo_path,
        "hubspot_secret_set": settings.connectors.hubspot.app_client_secret is not None,
        "brevo_token_set": hooks.brevo_token is not None,
        "allowed_ips": {
            "hubspot": list(hooks.allowed_ips.hubspot),
            "brevo": list(hooks.allowed_ips.brevo),
        },
        "inbox": counts,
        "dead_events": [
            {
                "id": d.id,
                "source": d.source,
                "object_type": d.object_type,
                "object_id": shown(d.object_id),
                "event_type": d.event_type,
                "attempts": d.attempts,
                "last_error": shown(d.last_error or ""),
                "received_at": d.received_at.isoformat(),
                "given_up_at": d.updated_at.isoformat(),
            }
            for d in dead
        ],
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0

    def mark(ok: bool, missing: str) -> str:
        return "✓ set" if ok else f"✗ missing ({missing}): every request gets 401"

    def sources(cidrs: list[str]) -> str:
        return ", ".join(cidrs) if cidrs else "anyone (webhooks.allowed_ips not set)"

    click.echo(f"Listening on       {report['listen']}")
    click.echo(f"HubSpot target URL {report['hubspot_url']}")
    click.echo(
        "  signature secret "
        + mark(report["hubspot_secret_set"], "connectors.hubspot.app_client_secret")
    )
    click.echo("  accepted from    " + sources(report["allowed_ips"]["hubspot"]))
    click.echo(f"Brevo webhook URL  {report['brevo_url']}")
    click.echo("  bearer token     " + mark(report["brevo_token_set"], "webhooks.brevo_token"))
    click.echo("  accepted from    " + sources(report["allowed_ips"]["brevo"]))
    if server.public_url is None:
        click.echo("  (set server.public_url to the address HubSpot and Brevo can reach)")
    click.echo("Inbox              " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if counts.get("dead"):
        click.echo(f"  {counts['dead']} event(s) dead: {DEAD_EVENTS_HINT}.")
        click.echo(f"  Newest {len(dead)}:")
        for d in report["dead_events"]:
            click.echo(
                f"    #{d['id']} {d['source']} {d['event_type']} {d['object_type']} "
                f"{d['object_id']} — {d['attempts']} attempts, gave up {d['given_up_at']}: "
                f"{d['last_error'] or 'no error recorded'}"
            )
    return 0


@webhooks_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def webhooks_status(ctx: click.Context, as_json: bool) -> None:
    """The URLs to register, whether their secrets are set, and the inbox per status."""
    settings = _settings(ctx)
    sys.exit(asyncio.run(_webhooks_status(settings, as_json)))


async def _webhooks_register(settings: Settings, dry_run: bool) -> int:
    from connector.runtime import Runtime
    from connector.webhook_setup import (
        brevo_events,
        ensure_brevo_webhook,
        hubspot_instructions,
        hubspot_subscriptions,
        subscription_notes,
        targets,
    )

    try:
        target = targets(settings)
        subscriptions = hubspot_subscriptions(settings)
    except ConfigError as e:
        _fail(f"Configuration error:\n{e}", EXIT_CONFIG)
    async with Runtime.open(settings, load_engines=False) as rt:
        try:
            created, hook_id = await ensure_brevo_webhook(
                rt.brevo, target, dry_run=dry_run, events=brevo_events(rt.settings)
            )
        except ConnectorError as e:
            _fail(f"Brevo webhook: {e}", 1)
    if created:
        click.echo(f"Brevo: created marketing webhook {hook_id} → {target.brevo_url}")
    elif hook_id is not None:
        click.echo(f"Brevo: webhook {hook_id} already points at {target.brevo_url}; unchanged")
    else:
        click.echo(f"Brevo: would create a marketing webhook → {target.brevo_url} (dry run)")
    click.echo("")
    for line in hubspot_instructions(target, subscriptions):
        click.echo(line)
    for note in subscription_notes(settings):
        click.echo(f"  Note: {note}")
    return 0


@webhooks_group.command("register")
@click.option("--dry-run", is_flag=True, help="Show what would be done; create nothing.")
@click.pass_context
def webhooks_register(ctx: click.Context, dry_run: bool) -> None:
    """Create Brevo's marketing webhook (once) and print HubSpot's webhook settings."""
    settings = _settings(ctx)
    sys.exit(asyncio.run(_webhooks_register(settings, dry_run)))


async def _serve_sandbox(
    seed: int, hubspot_port: int, brevo_port: int, rate_limits: bool, workdir: Path
) -> None:
    from connector.demo import demo_mappings
    from connector.sandbox.server import SandboxServers

    async with SandboxServers(
        seed_contacts=seed,
        seed_crm=seed > 0,
        hubspot_port=hubspot_port,
        brevo_port=brevo_port,
        rate_limits=rate_limits,
    ) as servers:
        click.echo(f"HubSpot sandbox: {servers.hubspot_url}")
        click.echo(f"Brevo sandbox:   {servers.brevo_url}")
        click.echo(f"Calendar sandbox (Google Calendar API): {servers.calendar_base_url}")
        mappings = await asyncio.to_thread(lambda: demo_mappings(workdir, servers).resolve())
        click.echo(
            f"Mappings (deal pipeline and stages filled in with this Brevo's ids): {mappings}"
        )
        click.echo("\nA config that points at them:\n")
        click.echo(servers.config_yaml("sqlite:///connector-sandbox.db"))
        click.echo(f"sync:\n  mappings_dir: {mappings}\n")
        click.echo("Ctrl-C stops them.", err=True)
        stop = asyncio.Event()
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()


@cli.command("sandbox")
@click.option("--seed-contacts", default=100, show_default=True, help="Contacts to seed.")
@click.option("--hubspot-port", default=8801, show_default=True)
@click.option("--brevo-port", default=8802, show_default=True)
@click.option("--no-rate-limits", is_flag=True, help="Answer without the APIs' rate limits.")
@click.option(
    "--dir",
    "workdir",
    default="connector-sandbox",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the mappings for these sandboxes are written (DIR/mappings).",
)
def sandbox_cmd(
    seed_contacts: int, hubspot_port: int, brevo_port: int, no_rate_limits: bool, workdir: Path
) -> None:
    """Run the HubSpot and Brevo sandboxes on 127.0.0.1 until Ctrl-C (seeded contacts, with
    companies, deals, tickets and engagements), and print a config that points at them."""
    configure_logging(fmt="console")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            _serve_sandbox(seed_contacts, hubspot_port, brevo_port, not no_rate_limits, workdir)
        )


async def _demo(workdir: Path) -> int:
    from connector.demo import run_demo

    return await run_demo(workdir, _run_test)


@cli.command("demo")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the demo's config and database (default: a temporary folder).",
)
def demo_cmd(workdir: Path | None) -> None:
    """Run the connector against built-in HubSpot and Brevo sandboxes (no accounts needed)."""
    configure_logging(fmt="console", level="warning")
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        sys.exit(asyncio.run(_demo(workdir)))
    with tempfile.TemporaryDirectory(prefix="connector-demo-") as tmp:
        code = asyncio.run(_demo(Path(tmp)))
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="connector")
    except ConfigError as e:
        _fail(f"Configuration error:\n{e}", EXIT_CONFIG)
