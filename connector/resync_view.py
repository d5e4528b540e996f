"""What ``connector resync`` shows: rich progress bars while it runs, a summary table after.

The dry run prints the plan instead: creates / updates / conflicts / skips per side, which rule
decided, and a few sample field diffs.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from connector.engine import Outcome


class RateColumn(TextColumn):
    """Records per second of the current phase."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task: Any) -> Any:
        speed = task.finished_speed or task.speed
        return super().render(task) if speed is None else f"{speed:,.0f}/s"


class RichResyncProgress:
    """The :class:`~connector.resync.ResyncProgress` sink drawn with rich."""

    def __init__(self, console: Console, object_type: str) -> None:
        self.console = console
        self.object_type = object_type
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self.started = time.monotonic()

    def __enter__(self) -> RichResyncProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self.progress.update(self._task, total=self.progress.tasks[-1].completed)
        self.progress.stop()

    def phase(self, name: str, total: int | None) -> None:
        if self._task is not None:
            done = self.progress.tasks[-1].completed
            self.progress.update(self._task, total=done, completed=done)
        self._task = self.progress.add_task(f"{self.object_type}: {name}", total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self.progress.advance(self._task, n)


SUMMARY_ROWS = (
    ("HubSpot records read", "hubspot_read"),
    ("Brevo contacts read", "brevo_read"),
    ("Created in Brevo", "brevo_created"),
    ("Written to Brevo by import", "brevo_imported"),
    ("Updated in Brevo", "brevo_updated"),
    ("Created in HubSpot", "hubspot_created"),
    ("Updated in HubSpot", "hubspot_updated"),
    ("Pairs linked", "linked"),
    ("HubSpot contacts without email (not synced)", "hubspot_without_email"),
    ("Fields skipped for an invalid value", "invalid_fields"),
    ("Phones left out: another Brevo contact has them (log: sync.phone_left_out)", "phone_in_use"),
    ("Linked record gone on one side", "linked_record_gone"),
    ("Failed (see connector dlq list)", "failed"),
)


def summary_table(object_type: str, out: Outcome, seconds: float) -> Table:
    title = f"Resync of {object_type}: {seconds:,.1f} s"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("")
    table.add_column("records", justify="right")
    for label, key in SUMMARY_ROWS:
        if out.counts.get(key):
            table.add_row(label, f"{out.counts[key]:,}")
    plan = out.summary.as_dict()
    for rule, n in sorted(plan.get("decided_by", {}).items()):
        table.add_row(f"Field values decided by {rule}", f"{n:,}")
    for key, n in other_counts(out):
        table.add_row(key.replace("_", " "), f"{n:,}")
    return table


def other_counts(out: Outcome) -> list[tuple[str, int]]:
    """The outcome's non-zero counts the tables have no row of (an object type's own, such as
    a roll-up's ``rollup_contacts`` or ``would_write``), by name."""
    known = {key for _, key in SUMMARY_ROWS} | {"hubspot_without_email"}
    return [(k, int(n)) for k, n in sorted(out.counts.items()) if n and k not in known]


def plan_table(object_type: str, out: Outcome) -> Table:
    plan = out.summary.as_dict()
    table = Table(title=f"Dry run of {object_type}: nothing was written", title_justify="left")
    table.add_column("")
    table.add_column("to Brevo", justify="right")
    table.add_column("to HubSpot", justify="right")

    def pair(key: str) -> tuple[str, str]:
        d = plan.get(key, {}) or {}
        return f"{d.get('brevo', 0):,}", f"{d.get('hubspot', 0):,}"

    table.add_row("Records to create", *pair("creates"))
    table.add_row("Records to update", *pair("updates"))
    table.add_row("Field values to write", *pair("field_writes"))
    table.add_row("of which decided by a conflict rule", *pair("conflict_writes"))
    table.add_row("Blocked by a direction", *pair("blocked"))
    skipped = sum((plan.get("records_skipped") or {}).values())
    table.add_row("Records skipped", f"{skipped:,}", "")
    table.add_row("Records already in step", f"{plan.get('noop_records', 0):,}", "")
    if out.counts.get("hubspot_without_email"):
        table.add_row(
            "HubSpot contacts without email", f"{out.counts['hubspot_without_email']:,}", ""
        )
    for key, n in other_counts(out):
        table.add_row(key.replace("_", " "), f"{n:,}", "")
    return table


def print_samples(console: Console, out: Outcome, n: int = 8) -> None:
    samples = out.summary.sample_diffs(n)
    if samples:
        console.print("[bold]Sample changes[/bold]")
        for line in samples:
            console.print(f"  {line}", markup=False, highlight=False)
