"""``connector explain EMAIL``: the sync history of one contact, newest first.

Finds the link by the normalised email and lists, from ``sync_history``, each field that
travelled: when, which way, and the rule that decided it. The store keeps no values, so neither
does this; the operator asked about this contact, so its email is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC

from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from connector.mapping import Mapping
from connector.store import history, links
from connector.transforms import normalise_email

#: What each ``decided_by`` means, for the table.
RULES = {
    "hubspot_changed": "changed in HubSpot only",
    "brevo_changed": "changed in Brevo only",
    "hubspot_wins": "conflict: HubSpot wins (field rule)",
    "brevo_wins": "conflict: Brevo wins (field rule)",
    "latest_wins": "conflict: the later change wins",
    "source_wins": "one-way field: its source wins",
    "fill_empty": "first sync: filled the empty side",
    "create": "new record",
}


@dataclass
class Explanation:
    """One contact's link and its history (newest first)."""

    email: str
    link: links.LinkRecord
    entries: list[history.HistoryEntry] = field(default_factory=list)


async def explain(
    session: AsyncSession,
    email: str,
    *,
    object_type: str = "contacts",
    limit: int = history.DEFAULT_LIMIT,
) -> Explanation | None:
    """The contact's link and history; ``None`` if no link has this email."""
    key = normalise_email(email)
    if key is None:
        return None
    found = await links.load_links(session, object_type, identity_keys=[key])
    link = next((lk for lk in found if lk.identity_key == key), None)
    if link is None:
        return None
    return Explanation(key, link, await history.for_link(session, link.id, limit))


def _field_label(name: str, mapping: Mapping | None) -> str:
    if mapping is None:
        return name
    try:
        f = mapping.field_by_key(name)
    except KeyError:
        return name
    return name if f.brevo == name else f"{name} ⇄ {f.brevo}"


def render(expl: Explanation, console: Console, mapping: Mapping | None = None) -> None:
    """The link, then a table of the history rows."""
    link = expl.link
    console.print(f"[bold]{expl.email}[/] ({link.object_type})")
    console.print(f"  HubSpot id  {link.hubspot_id or '—'}")
    console.print(f"  Brevo id    {link.brevo_id or '—'}")
    if not expl.entries:
        console.print("\nNo field has travelled yet (the sides were already equal).")
        return
    table = Table(title=f"Sync history, newest first ({len(expl.entries)})", title_justify="left")
    for name in ("When (UTC)", "Field", "Direction", "Decided by"):
        table.add_column(name)
    for e in expl.entries:
        arrow = "→ Brevo" if e.direction == "to_brevo" else "→ HubSpot"
        rule = RULES.get(e.decided_by)
        table.add_row(
            f"{e.synced_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
            _field_label(e.field, mapping),
            arrow,
            f"{e.decided_by} ({rule})" if rule else e.decided_by,
        )
    console.print(table)


__all__ = ["RULES", "Explanation", "explain", "render"]
