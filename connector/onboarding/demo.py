"""The onboarding part of ``connector demo``: its config, and what it shows.

The demo creates a contact in the HubSpot sandbox after the daemon has started (so after the
hook was enabled); the next cycle syncs it, enrolls it, and the hook runner onboards it. This
module then prints what was done — the owner, the booked call (a HubSpot meeting record), the
welcome e-mail as Brevo's transactional outbox captured it, rendered to a file it names, and
the timeline note — or, if a step failed, which one and why.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.onboarding.enroll import ONBOARDING
from connector.store import jobs

DEMO_OWNERS = ("71011001", "71011002", "71011003")
TIMEZONE = "Europe/Oslo"


def config_yaml(workdir: Path, mappings_dir: Path) -> str:
    """The ``onboarding:`` section of the demo's config (appended to the sandbox config)."""
    template = mappings_dir / "templates" / "welcome.html.j2"
    owners = ", ".join(f'"{o}"' for o in DEMO_OWNERS)
    return f"""\
onboarding:
  enabled: true
  enroll: new_only
  sender: {{email: success@demo.example, name: "Ada Lovelace"}}
  company: {{name: "Example Ltd", description: "We make examples."}}
  owners: {{strategy: round_robin, owner_ids: [{owners}]}}
  calendar:
    provider: hubspot_meetings
    timezone: {TIMEZONE}
    working_hours: {{days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}}
    min_notice_hours: 24
  email:
    template: {template}
    output_dir: {workdir / "emails"}
"""


def _when(start: str | None, end: str | None) -> str:
    if not start or not end:
        return "?"
    tz = ZoneInfo(TIMEZONE)
    a = datetime.fromisoformat(start).astimezone(tz)
    b = datetime.fromisoformat(end).astimezone(tz)
    return f"{a:%a %d %b %Y %H:%M}–{b:%H:%M} {TIMEZONE}"


def _keep(path: str | None) -> Path | None:
    """A copy of the rendered e-mail that outlives the demo's temporary folder."""
    if not path or not Path(path).is_file():
        return None
    kept = Path(tempfile.gettempdir()) / "connector-demo-welcome.html"
    shutil.copyfile(path, kept)
    return kept


async def show(sessions: async_sessionmaker[AsyncSession], email: str) -> bool:
    """Print what onboarding did for the demo's new contact; whether it completed."""
    async with sessions() as s:
        listed = [
            j for j in await jobs.list_jobs(s, hook=ONBOARDING, limit=1000) if j.enrollment_id
        ]
    click.secho(f"\nOnboarding of the new HubSpot contact {email}:", bold=True)
    if not listed:
        click.secho("  not enrolled (was it created after the daemon started?)", fg="red")
        return False
    newest = max(j.enrollment_id or 0 for j in listed)
    steps = {j.step: j for j in listed if j.enrollment_id == newest}
    results = {step: j.result or {} for step, j in steps.items() if j.status == "succeeded"}
    owner = results.get("assign_owner", {})
    if owner:
        how = "assigned round-robin" if owner.get("assigned") else "kept"
        click.echo(f"  owner           {owner.get('owner_id')} ({how})")
    call = results.get("book_call", {})
    if call:
        who = call.get("owner") or {}
        name = " ".join(p for p in (who.get("first_name"), who.get("last_name")) if p)
        click.echo(
            f"  call booked     {_when(call.get('start'), call.get('end'))} with {name or '?'} "
            f"({call.get('provider')} event {call.get('event_id')})"
        )
    sent = results.get("send_email", {})
    composed = results.get("compose_email", {})
    if sent:
        click.echo(
            f"  welcome e-mail  “{sent.get('subject')}” sent through Brevo "
            f"(message id {sent.get('message_id')}, {composed.get('source', '?')})"
        )
    kept = _keep(composed.get("file"))
    if kept is not None:
        click.echo(f"  rendered to     {kept}   (open it in a browser)")
    note = results.get("log_note", {})
    if note:
        click.echo(f"  timeline note   logged on the HubSpot contact (note {note.get('note_id')})")
    unfinished = [j for j in steps.values() if j.status != "succeeded"]
    for j in unfinished:
        click.secho(
            f"  {j.step}: {j.status} after {j.attempts} attempt(s) — {j.last_error or ''}",
            fg="yellow",
        )
    return not unfinished and "log_note" in results


__all__ = ["config_yaml", "show"]
