"""``connector explain``: one synced record — its link, its history, what the store keeps.

A contact is found by its e-mail (the link's normalised identity key); any record — contact,
company or deal — by its HubSpot id or Brevo id, and a company by its domain (normalised as the
companies sync does). For each record: the link, then ``sync_history`` (each field that
travelled: when, which way, and the rule that decided it), newest first. A company or a deal
also shows its ledger bases per field (hash, origin, when), its dead letters and the
association sets last synced; a contact its association sets, its roll-up attributes (which
were last written, when) and its Brevo e-mail event entries, after the contact lines as they
always were. The store keeps no values, so neither does this; the operator asked about this
record, so its e-mail is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from connector.mapping import Mapping
from connector.store import associations, deadletters, email_events, history, links, rollups
from connector.store.deadletters import DeadLetterRecord
from connector.transforms import normalise_email

#: The object types ``explain`` looks in, in this order.
OBJECT_TYPES = ("contacts", "companies", "deals")

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
    """One record's link and its history (newest first); :func:`explain_record` fills the rest.

    ``email`` is the link's identity key (a contact's e-mail, a company's domain, or ``""``).
    """

    email: str
    link: links.LinkRecord
    entries: list[history.HistoryEntry] = field(default_factory=list)
    #: dead letters of the record, open or resolved, newest first
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    #: ``(associated type, HubSpot ids, when)`` of each association set last synced
    associations: list[tuple[str, list[str], datetime]] = field(default_factory=list)
    #: a contact's roll-up attributes: ``(attribute, value hash, written at)``
    rollups: list[tuple[str, str, datetime]] = field(default_factory=list)
    #: a contact's Brevo e-mail event entries
    email_events: list[email_events.Entry] = field(default_factory=list)
    #: whether this came from :func:`explain_record` (the ledger and the rest are shown)
    detailed: bool = False


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


def _domain(value: str) -> str | None:
    from connector.objects.crm_sync import normalise_domain

    return normalise_domain(value)


async def explain_record(
    session: AsyncSession,
    query: str,
    *,
    object_types: Sequence[str] = OBJECT_TYPES,
    limit: int = history.DEFAULT_LIMIT,
) -> list[Explanation]:
    """Every record of ``object_types`` whose HubSpot id, Brevo id or identity key (a
    contact's e-mail, a company's domain) is ``query``, with everything the store keeps."""
    text = query.strip()
    found: list[Explanation] = []
    for object_type in object_types:
        keys: list[str] = []
        if object_type == "contacts":
            keys = [k for k in (normalise_email(text),) if k]
        elif object_type == "companies":
            keys = [k for k in (_domain(text),) if k]
        ids = [] if "@" in text else [text]
        for link in await links.load_links(
            session, object_type, hubspot_ids=ids, brevo_ids=ids, identity_keys=keys
        ):
            found.append(await _details(session, link, limit))
    return found


async def _details(session: AsyncSession, link: links.LinkRecord, limit: int) -> Explanation:
    expl = Explanation(
        link.identity_key or "",
        link,
        await history.for_link(session, link.id, limit),
        detailed=True,
    )
    expl.dead_letters = await deadletters.for_record(
        session,
        link.object_type,
        hubspot_id=link.hubspot_id,
        brevo_id=link.brevo_id,
        identity_key=link.identity_key,
    )
    if link.hubspot_id:
        expl.associations = await associations.for_record(
            session, link.object_type, link.hubspot_id
        )
        if link.object_type == "contacts":
            expl.rollups = await rollups.values_of(session, link.hubspot_id)
            expl.email_events = await email_events.entries_of(session, [link.hubspot_id])
    return expl


def _field_label(name: str, mapping: Mapping | None) -> str:
    if mapping is None:
        return name
    try:
        f = mapping.field_by_key(name)
    except KeyError:
        return name
    return name if f.brevo == name else f"{name} ⇄ {f.brevo}"


def _at(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def render(expl: Explanation, console: Console, mapping: Mapping | None = None) -> None:
    """The link, then a table of the history rows, then what else the store keeps."""
    _render_history(expl, console, mapping)
    if expl.detailed:
        _render_details(expl, console, mapping)


def _render_history(expl: Explanation, console: Console, mapping: Mapping | None) -> None:
    link = expl.link
    title = expl.email or f"{link.object_type} {link.hubspot_id or link.brevo_id}"
    console.print(f"[bold]{title}[/] ({link.object_type})")
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


def _render_details(expl: Explanation, console: Console, mapping: Mapping | None) -> None:
    """Ledger bases (companies, deals), association sets, dead letters, roll-ups, e-mail
    events: each table only when the store has rows for it (a contact's lines stay as they
    were when it has none)."""
    bases = {k: b for k, b in expl.link.bases.items() if not k.startswith(links.MARKER_PREFIX)}
    if bases and expl.link.object_type != "contacts":
        table = Table(title=f"Ledger bases ({len(bases)})", title_justify="left")
        for name in ("Field", "Value hash", "Origin", "Written to", "Synced (UTC)"):
            table.add_column(name)
        for name, b in sorted(bases.items()):
            table.add_row(
                _field_label(name, mapping),
                b.value_hash[:12],
                b.origin,
                b.written_to or "—",
                _at(b.synced_at),
            )
        console.print(table)
    if expl.associations:
        table = Table(title="Associations last synced", title_justify="left")
        for name in ("With", "HubSpot ids", "Synced (UTC)"):
            table.add_column(name)
        for to_type, ids, at in expl.associations:
            table.add_row(to_type, ", ".join(ids) or "none", _at(at))
        console.print(table)
    if expl.dead_letters:
        table = Table(title=f"Dead letters ({len(expl.dead_letters)})", title_justify="left")
        for name in ("ID", "When (UTC)", "System", "Operation", "Tries", "State", "Error"):
            table.add_column(name)
        for lt in expl.dead_letters:
            state = "open" if lt.resolved_at is None else f"resolved {_at(lt.resolved_at)}"
            table.add_row(
                str(lt.id),
                _at(lt.created_at),
                lt.system,
                lt.operation,
                str(lt.attempts),
                state,
                lt.error,
            )
        console.print(table)
    if expl.rollups:
        table = Table(title="Roll-up attributes last written", title_justify="left")
        for name in ("Brevo attribute", "Value hash", "Written (UTC)"):
            table.add_column(name)
        for attribute, value_hash, at in expl.rollups:
            table.add_row(attribute, value_hash[:12], _at(at))
        console.print(table)
    if expl.email_events:
        table = Table(title="Brevo e-mail events", title_justify="left")
        for name in ("Event", "Campaign", "Count", "First (UTC)", "Last (UTC)", "Note"):
            table.add_column(name)
        for e in expl.email_events:
            table.add_row(
                e.kind,
                e.campaign_name or e.campaign,
                str(e.shown_count),
                _at(e.first_at),
                _at(e.last_at),
                e.note_state,
            )
        console.print(table)


__all__ = ["OBJECT_TYPES", "RULES", "Explanation", "explain", "explain_record", "render"]
