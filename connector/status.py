"""``connector status``: gather what the operator wants to see, render it as a table or JSON.

:func:`gather` asks each API one cheap question (HubSpot ``account_details``, Brevo
``get_account``; one retry, at most :data:`API_TIMEOUT` seconds each, both at once) and reads
the store with deferred transactions, so it never blocks a running daemon. Nothing here
raises for an unreachable API or database: that is what the report says.

``--json`` prints :meth:`StatusReport.to_json` — stable keys, documented there.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector import __version__
from connector.brevo.crm_budget import CRM_FAMILY, hourly_limit
from connector.config import BrevoSettings, HubSpotSettings, Settings
from connector.errors import scrub
from connector.log import mask_email
from connector.runtime import enabled_objects
from connector.store import db, deadletters, inbox, links, runs, skipped

#: Seconds each API check may take.
API_TIMEOUT = 10.0
#: What an operator does about dead inbox events (``status`` and ``webhooks status``).
DEAD_EVENTS_HINT = (
    "their processing failed on every retry; they are kept (never purged) until you look. "
    "Field changes still travel with the periodic pulls, but a deletion, merge or unsubscribe "
    "in a dead event was not applied: fix the cause (the last error, the logs), then repeat "
    "that change on its side, or run connector resync for the fields"
)
#: Skip reasons that mean "this contact has no usable email".
NO_EMAIL_REASONS = ("no email", "invalid email")


@dataclass(frozen=True)
class Connection:
    """One API: reachable with the configured credential, or why not."""

    system: str
    connected: bool
    account: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SyncLine:
    """The newest finished run of one job (kind, system, object type) and its last success."""

    kind: str
    system: str | None
    object_type: str | None
    last_status: str
    last_started_at: datetime
    last_finished_at: datetime | None
    last_error: str | None
    last_success_at: datetime | None
    last_success_counts: dict[str, int]


@dataclass(frozen=True)
class SkippedCount:
    system: str
    object_type: str
    reason: str
    count: int


@dataclass(frozen=True)
class ObjectLine:
    """One synced object type: its links (``None`` for a roll-up source, which links nothing:
    ``rollup_records`` counts the records that counted for a contact at the last refresh) and
    the last successful pull of each side it pulls (``None``: never)."""

    object_type: str
    links: int | None
    rollup_records: int | None
    last_pull: dict[str, datetime | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "links": self.links,
            "rollup_records": self.rollup_records,
            "last_pull": {side: _iso(at) for side, at in self.last_pull.items()},
        }


#: object types written through Brevo's CRM endpoints (the 100-calls-per-hour budget)
CRM_OBJECTS = ("companies", "deals")
#: CSV bytes of one company or deal row, to estimate the imports of queued keys
CRM_ROW_BYTES = 200


@dataclass(frozen=True)
class CrmBudget:
    """Brevo's CRM hourly budget (``x-sib-ratelimit-*`` of status's own ``GET /account``, an
    endpoint of the same 100-per-hour family), the CRM work queued in the inbox, and when it
    can be done.

    ``limit``/``used``/``resets_in`` are None when Brevo sent no rate-limit headers (then the
    plan's limit is the configured plan's). ``queued`` counts open dirty keys per object type
    and side; ``calls`` is the estimate of the calls they take (a Brevo-side key: one read;
    HubSpot-side keys: the imports that carry them, and one status poll per import — link
    calls are not known before the records are read); ``done_at`` is when the last of those
    can go out at the current budget (:func:`connector.brevo.crm_budget.iter_call_times`).
    """

    plan_limit: int
    limit: int | None
    used: int | None
    resets_in: int | None
    queued: dict[str, int]
    calls: int
    done_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": self.limit if self.limit is not None else self.plan_limit,
            "used_last_hour": self.used,
            "remaining": None
            if self.used is None or self.limit is None
            else self.limit - self.used,
            "resets_in_seconds": self.resets_in,
            "queued_keys": self.queued,
            "queued_calls": self.calls,
            "done_at": _iso(self.done_at),
        }


def crm_budget(
    headers: tuple[int | None, int | None, int | None] | None,
    queued: dict[str, int],
    *,
    plan_limit: int,
    now: datetime,
) -> CrmBudget:
    """The :class:`CrmBudget` from Brevo's headers (or None) and the queued keys
    (``"companies:hubspot"`` → count). Pure: no I/O."""
    from connector.brevo.crm_budget import HOUR, Budget, CrmWork, ImportQueue, plan

    limit = used = resets_in = None
    if headers is not None and headers[1] is not None:
        limit = headers[0] if headers[0] else plan_limit
        used = max(limit - headers[1], 0)
        resets_in = headers[2]
    budget_limit = limit or plan_limit
    leave = float(resets_in if resets_in is not None else HOUR)
    # the calls in the window leave it when Brevo's window resets
    window = ((leave - HOUR, used),) if used else ()
    budget = Budget(budget_limit, HOUR, window)

    def rows(n: int) -> ImportQueue:
        return ImportQueue.of([CRM_ROW_BYTES] * n, 64) if n else ImportQueue()

    work = CrmWork(
        company_imports=rows(queued.get("companies:hubspot", 0)),
        deal_imports=rows(queued.get("deals:hubspot", 0)),
        polls_per_import=1,
        reads=tuple((n, None) for key, n in sorted(queued.items()) if key.endswith(":brevo") and n),
    )
    calls = plan(work, budget, 0.0)
    return CrmBudget(
        plan_limit,
        limit,
        used,
        resets_in,
        dict(queued),
        calls.total,
        now + timedelta(seconds=calls.wait_seconds),
    )


async def _crm_queue(session: AsyncSession) -> dict[str, int]:
    """Open inbox keys of companies and deals, as ``"object_type:side"`` → count."""
    from connector.store.inbox import OPEN_STATUSES
    from connector.store.models import InboxItem

    side = sa.case(
        (InboxItem.source != "pull", InboxItem.source),
        (InboxItem.dedup_key.like("pull:brevo:%"), "brevo"),
        else_="hubspot",
    )
    stmt = (
        sa.select(InboxItem.object_type, side, sa.func.count())
        .where(InboxItem.status.in_(OPEN_STATUSES), InboxItem.object_type.in_(CRM_OBJECTS))
        .group_by(InboxItem.object_type, side)
    )
    return {f"{o}:{system}": int(n) for o, system, n in await session.execute(stmt)}


@dataclass
class StatusReport:
    """Everything ``connector status`` shows."""

    generated_at: datetime
    hubspot: Connection
    brevo: Connection
    database_reachable: bool
    database_revision: str | None
    database_head: str
    database_error: str | None = None
    syncs: list[SyncLine] = field(default_factory=list)
    records_synced: dict[str, int] = field(default_factory=dict)
    pending_dirty_keys: int | None = None
    dead_inbox_events: int | None = None
    skipped: list[SkippedCount] = field(default_factory=list)
    dead_letters_open: int | None = None
    last_error: runs.RunSummary | None = None
    crm: CrmBudget | None = None
    objects: list[ObjectLine] = field(default_factory=list)

    @property
    def database_migrated(self) -> bool:
        return self.database_reachable and self.database_revision == self.database_head

    @property
    def ok(self) -> bool:
        """Both APIs connected and the database reachable and migrated."""
        return self.hubspot.connected and self.brevo.connected and self.database_migrated

    @property
    def skipped_no_email(self) -> int:
        return sum(s.count for s in self.skipped if s.reason in NO_EMAIL_REASONS)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document. Times are ISO 8601 UTC; a count is ``null`` when the
        database could not be read.

        Keys: ``version``, ``generated_at``, ``ok``, ``connections`` (``hubspot`` / ``brevo``:
        ``connected``, ``account``, ``error``), ``database`` (``reachable``, ``migrated``,
        ``revision``, ``head``, ``error``), ``syncs`` (list: ``kind``, ``system``,
        ``object_type``, ``last_status``, ``last_started_at``, ``last_finished_at``,
        ``last_error``, ``last_success_at``, ``last_success_counts``), ``records_synced``
        (object type → links), ``pending_dirty_keys``, ``dead_inbox_events`` (webhook events
        given up after their retries), ``skipped_no_email``, ``skipped``
        (list: ``system``, ``object_type``, ``reason``, ``count``), ``dead_letters_open``,
        ``last_error`` (``null`` or ``at``, ``kind``, ``system``, ``object_type``,
        ``status``, ``error``), ``brevo_crm_budget`` (``null`` unless companies or deals
        sync: ``limit``, ``used_last_hour``, ``remaining``, ``resets_in_seconds``,
        ``queued_keys``, ``queued_calls``, ``done_at``), ``objects`` (object type →
        ``links`` (``null`` for a roll-up source), ``rollup_records`` (``null`` unless a
        roll-up source), ``last_pull`` (side → the last successful pull, ``null``: never)).
        """
        store_read = self.database_migrated
        last = self.last_error
        return {
            "version": __version__,
            "generated_at": _iso(self.generated_at),
            "ok": self.ok,
            "connections": {
                c.system: {"connected": c.connected, "account": c.account, "error": c.error}
                for c in (self.hubspot, self.brevo)
            },
            "database": {
                "reachable": self.database_reachable,
                "migrated": self.database_migrated,
                "revision": self.database_revision,
                "head": self.database_head,
                "error": self.database_error,
            },
            "syncs": [
                {
                    "kind": s.kind,
                    "system": s.system,
                    "object_type": s.object_type,
                    "last_status": s.last_status,
                    "last_started_at": _iso(s.last_started_at),
                    "last_finished_at": _iso(s.last_finished_at),
                    "last_error": s.last_error,
                    "last_success_at": _iso(s.last_success_at),
                    "last_success_counts": s.last_success_counts,
                }
                for s in self.syncs
            ],
            "records_synced": self.records_synced,
            "pending_dirty_keys": self.pending_dirty_keys,
            "dead_inbox_events": self.dead_inbox_events,
            "skipped_no_email": self.skipped_no_email if store_read else None,
            "skipped": [
                {
                    "system": s.system,
                    "object_type": s.object_type,
                    "reason": s.reason,
                    "count": s.count,
                }
                for s in self.skipped
            ],
            "dead_letters_open": self.dead_letters_open,
            "last_error": None
            if last is None
            else {
                "at": _iso(last.finished_at or last.started_at),
                "kind": last.kind,
                "system": last.system,
                "object_type": last.object_type,
                "status": last.status,
                "error": last.error,
            },
            "brevo_crm_budget": self.crm.to_json() if self.crm is not None else None,
            "objects": {o.object_type: o.to_json() for o in self.objects},
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


# --- gathering -----------------------------------------------------------------------------


def _quiet(settings: Settings) -> tuple[HubSpotSettings, BrevoSettings]:
    """The API settings with one retry and a short timeout: status answers quickly."""
    hs = settings.connectors.hubspot
    br = settings.connectors.brevo
    hs = hs.model_copy(update={"max_retries": 1, "timeout_seconds": min(hs.timeout_seconds, 8)})
    br = br.model_copy(update={"max_retries": 1, "timeout_seconds": min(br.timeout_seconds, 8)})
    return hs, br


async def _check(system: str, call: Callable[[], Awaitable[str | None]]) -> Connection:
    try:
        async with asyncio.timeout(API_TIMEOUT):
            account = await call()
    except TimeoutError:
        return Connection(system, False, error=f"no answer within {API_TIMEOUT:g} s")
    except Exception as e:
        return Connection(system, False, error=scrub(str(e)) or type(e).__name__)
    return Connection(system, True, account=account)


async def _connections(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    rate: dict[str, tuple[int | None, int | None, int | None]] | None = None,
) -> tuple[Connection, Connection]:
    """Both connection checks; ``rate`` receives Brevo's rate-limit headers per family."""
    from connector.brevo.client import BrevoClient
    from connector.hubspot.auth import DbTokenStore
    from connector.hubspot.client import HubSpotClient

    hs_cfg, br_cfg = _quiet(settings)
    hubspot = brevo = None
    try:
        if hs_cfg.enabled:
            store = DbTokenStore(sessions) if hs_cfg.oauth else None
            hubspot = HubSpotClient(hs_cfg, token_store=store)
        if br_cfg.enabled:
            brevo = BrevoClient(br_cfg)

        async def hubspot_account() -> str | None:
            assert hubspot is not None
            details = await hubspot.account_details()
            return f"portal {details.portal_id}" if details.portal_id else None

        async def brevo_account() -> str | None:
            assert brevo is not None
            account = await brevo.get_account()
            return account.company_name

        disabled = "disabled in the config (enabled: false)"
        hs_check = _check("hubspot", hubspot_account) if hubspot else _off("hubspot", disabled)
        br_check = _check("brevo", brevo_account) if brevo else _off("brevo", disabled)
        hs, br = await asyncio.gather(hs_check, br_check)
        if brevo is not None and rate is not None:
            rate.update(brevo.rate_headers)
        return hs, br
    finally:
        if hubspot is not None:
            await hubspot.aclose()
        if brevo is not None:
            await brevo.aclose()


async def _off(system: str, why: str) -> Connection:
    return Connection(system, False, error=why)


def _sync_line(r: runs.RunSummary) -> SyncLine:
    ok = r.last_ok
    return SyncLine(
        kind=r.kind,
        system=r.system,
        object_type=r.object_type,
        last_status=r.status,
        last_started_at=r.started_at,
        last_finished_at=r.finished_at,
        last_error=r.error,
        last_success_at=(ok.finished_at or ok.started_at) if ok else None,
        last_success_counts=dict(ok.counts) if ok else {},
    )


def _switched_on(settings: Settings) -> list[str]:
    """The object types the config's ``sync:`` switches on (supported yet or not)."""
    switches = settings.connectors.hubspot.sync.model_dump()
    return [o for o, on in switches.items() if on]


def _rollup_types(settings: Settings) -> list[str]:
    """The roll-up sources the config enables (by the files of ``mappings/rollups/``; a file
    that does not load shows nothing here — ``connector mappings check`` says why)."""
    from connector.errors import ConnectorError
    from connector.objects.rollup_mapping import load_rollup_mappings, rollup_dir
    from connector.objects.rollup_sync import enabled_types

    try:
        mappings = load_rollup_mappings(rollup_dir(settings.sync.mappings_dir))
    except (ConnectorError, OSError):
        return []
    enabled = enabled_types(settings, mappings)
    return list(dict.fromkeys(t for m in mappings for t in m.objects if t in enabled))


async def _object_lines(
    session: AsyncSession, settings: Settings, syncs: list[SyncLine]
) -> list[ObjectLine]:
    """One :class:`ObjectLine` per synced object type: the linked ones (contacts, companies,
    deals) in their order, then the roll-up sources (one way, HubSpot pulls only)."""
    from connector.store.models import RollupMember

    pulled: dict[tuple[str, str], datetime | None] = {
        (s.object_type, s.system): s.last_success_at
        for s in syncs
        if s.kind == "pull" and s.object_type and s.system
    }
    lines: list[ObjectLine] = []
    linked = enabled_objects(settings)
    for object_type in linked:
        sides = {side: pulled.get((object_type, side)) for side in ("hubspot", "brevo")}
        lines.append(
            ObjectLine(object_type, await links.count_links(session, object_type), None, sides)
        )
    for object_type in _rollup_types(settings):
        if object_type in linked:  # the deals sync runs the deal roll-ups on its passes
            continue
        stmt = (
            sa.select(sa.func.count())
            .select_from(RollupMember)
            .where(RollupMember.object_type == object_type)
        )
        records = int(await session.scalar(stmt) or 0)
        sides = {"hubspot": pulled.get((object_type, "hubspot"))}
        lines.append(ObjectLine(object_type, None, records, sides))
    return lines


async def gather(settings: Settings, *, now: datetime | None = None) -> StatusReport:
    """Check both APIs and read the store; never raises for an unreachable one."""
    engine = db.create_engine(settings.database.url, sqlite_begin="DEFERRED")
    sessions = db.session_factory(engine)
    try:
        rate: dict[str, tuple[int | None, int | None, int | None]] = {}
        (hs, br), health = await asyncio.gather(
            _connections(settings, sessions, rate), db.check(engine)
        )
        report = StatusReport(
            generated_at=now or datetime.now(UTC),
            hubspot=hs,
            brevo=br,
            database_reachable=health.reachable,
            database_revision=health.current,
            database_head=health.head,
            database_error=health.error,
        )
        if not health.reachable:
            return report
        if not report.database_migrated:
            report.database_error = (
                f"schema at {health.current or 'nothing'}, newest is {health.head}: "
                "run connector db upgrade (the daemon does it on start)"
            )
            return report
        async with sessions() as s:
            report.syncs = [_sync_line(r) for r in await runs.last_runs(s)]
            for object_type in enabled_objects(settings):
                report.records_synced[object_type] = await links.count_links(s, object_type)
            depth = await inbox.depth(s)
            report.pending_dirty_keys = depth.open
            report.dead_inbox_events = depth.dead
            report.skipped = [
                SkippedCount(system, object_type, reason, n)
                for (system, object_type, reason), n in sorted(
                    (await skipped.count_skipped(s)).items()
                )
            ]
            report.dead_letters_open = await deadletters.count_open(s)
            report.last_error = await runs.last_error(s)
            report.objects = await _object_lines(s, settings, report.syncs)
            if any(o in CRM_OBJECTS for o in _switched_on(settings)):
                report.crm = crm_budget(
                    rate.get(CRM_FAMILY),
                    await _crm_queue(s),
                    plan_limit=hourly_limit(settings.connectors.brevo.plan),
                    now=report.generated_at,
                )
        return report
    finally:
        await engine.dispose()


# --- rendering -----------------------------------------------------------------------------

_LABEL = {"hubspot": "HubSpot", "brevo": "Brevo", None: "both"}


def _when(value: datetime | None, now: datetime) -> str:
    """How long ago, in words; the date itself when it is more than a day ago."""
    if value is None:
        return "never"
    seconds = int((now - value).total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86_400:
        return f"{seconds // 3600} h ago"
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M}Z"


def _counts(counts: dict[str, int]) -> str:
    shown = [f"{k}={v}" for k, v in sorted(counts.items()) if v]
    return " ".join(shown) or "nothing to do"


def render(report: StatusReport, console: Console, *, show_emails: bool = False) -> None:
    """The human form: connections, then a table of the syncs, then the counters."""
    now = report.generated_at
    text = (lambda s: s) if show_emails else mask_email

    def connection_line(c: Connection) -> str:
        if c.connected:
            return "[green]✓ connected[/]" + (f" ({c.account})" if c.account else "")
        return f"[red]✗ not connected[/]: {text(c.error or '')}"

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("HubSpot", connection_line(report.hubspot))
    head.add_row("Brevo", connection_line(report.brevo))
    if report.database_migrated:
        db_line = f"[green]✓[/] schema {report.database_revision} (up to date)"
    else:
        db_line = f"[red]✗[/] {report.database_error or 'not reachable'}"
    head.add_row("Database", db_line)
    console.print(head)
    if not report.database_migrated:
        return

    table = Table(title="Syncs", title_justify="left")
    for name in ("Job", "Object", "Last run", "Status", "Last success"):
        table.add_column(name)
    table.add_column("Counts of the last success", overflow="fold")
    for s in report.syncs:
        status = {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(
            s.last_status, f"[yellow]{s.last_status}[/]"
        )
        if s.last_error:
            status += f"\n{text(s.last_error)[:200]}"
        table.add_row(
            f"{s.kind} {_LABEL.get(s.system, s.system or '')}",
            s.object_type or "",
            _when(s.last_started_at, now),
            status,
            _when(s.last_success_at, now),
            _counts(s.last_success_counts) if s.last_success_at else "",
        )
    if not report.syncs:
        table.add_row("—", "", "never", "no sync has run yet: start connector run", "", "")
    console.print(table)

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    synced = ", ".join(f"{o}: {n}" for o, n in report.records_synced.items()) or "—"
    facts.add_row("Records synced", synced)
    for line in report.objects:
        facts.add_row(f"  {line.object_type}", object_line(line, now))
    facts.add_row("Pending dirty keys", str(report.pending_dirty_keys))
    dead_events = report.dead_inbox_events or 0
    facts.add_row(
        "Dead webhook events",
        f"[red]{dead_events}[/] → connector webhooks status (why, and what to do)"
        if dead_events
        else "0",
    )
    detail = ", ".join(
        f"{_LABEL.get(s.system, s.system)} {s.object_type} {s.reason}: {s.count}"
        for s in report.skipped
    )
    facts.add_row(
        "Skipped (no email)", f"{report.skipped_no_email}" + (f"  ({detail})" if detail else "")
    )
    open_dl = report.dead_letters_open or 0
    facts.add_row(
        "Dead letters",
        f"[red]{open_dl} open[/] → connector dlq list" if open_dl else "0 open",
    )
    if report.crm is not None:
        facts.add_row("Brevo CRM budget", crm_line(report.crm, now))
    last = report.last_error
    if last is None:
        facts.add_row("Last error", "none")
    else:
        where = " ".join(p for p in (last.kind, last.system, last.object_type) if p)
        at = _when(last.finished_at or last.started_at, now)
        facts.add_row("Last error", f"{at} {where}: {text(last.error or last.status)}")
    console.print(facts)


def object_line(line: ObjectLine, now: datetime) -> str:
    """One object type's line: links (or roll-up records) and the last pull of each side."""
    if line.links is not None:
        head = f"{line.links} linked"
    else:
        head = f"roll-up of {line.rollup_records} record(s)"
    pulls = ", ".join(
        f"{_LABEL.get(side, side)} pulled {_when(at, now)}" for side, at in line.last_pull.items()
    )
    return f"{head}; {pulls}"


def crm_line(crm: CrmBudget, now: datetime) -> str:
    """``Brevo CRM budget``: used of the hour, what is queued, and when it is done."""
    if crm.used is None or crm.limit is None:
        used = f"? of {crm.plan_limit}/h used (Brevo sent no rate-limit headers)"
    else:
        resets = f", resets in {_minutes(crm.resets_in)}" if crm.resets_in else ""
        used = f"{crm.used} of {crm.limit}/h used{resets}"
    keys = sum(crm.queued.values())
    if not keys:
        return f"{used}; nothing queued"
    seconds = (crm.done_at - now).total_seconds()
    when = "now" if seconds <= 0 else f"in {_minutes(seconds)}"
    detail = ", ".join(f"{k.replace(':', ' from ')}: {n}" for k, n in sorted(crm.queued.items()))
    return f"{used}; queued {keys} key(s) ({detail}) ≈ {crm.calls} call(s), done {when}"


def _minutes(seconds: float | None) -> str:
    minutes = math.ceil((seconds or 0) / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


__all__ = [
    "API_TIMEOUT",
    "DEAD_EVENTS_HINT",
    "Connection",
    "CrmBudget",
    "ObjectLine",
    "SkippedCount",
    "StatusReport",
    "SyncLine",
    "crm_budget",
    "crm_line",
    "gather",
    "object_line",
    "render",
]
