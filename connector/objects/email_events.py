"""Brevo e-mail events → the HubSpot contact: a timeline note per kind and campaign, properties.

Brevo's marketing and transactional webhooks report what happened to an e-mail: ``delivered``,
``opened`` / ``uniqueOpened``, ``click``, ``hardBounce``, ``unsubscribed``. The intake gives
the first four their own object type, :data:`EMAIL_EVENTS`; an ``unsubscribed`` or
``hardBounce`` is first the contacts' opt-out (:mod:`connector.events`) and the worker then
copies it here (:func:`follow_up`). :meth:`EmailEventsSync.handle` takes a batch of them:

1. **Count** — each event names its contact by e-mail (or Brevo ``contact_id``): the link
   table gives the HubSpot id, else one batch read by e-mail per 100; an event whose contact is
   not in HubSpot is counted as ``skipped_no_contact`` and dropped (the contact sync links the
   person later; their next events count). The events are added, in ONE transaction, to their
   entry per (contact, kind, campaign) in :mod:`connector.store.email_events`, their dedup keys
   recorded with them, so an event processed again (a Brevo retry is already one inbox row; a
   crash before the worker settled it) is never counted twice.
2. **Timeline** (``sync.email_events.timeline: note``) — an entry without a note gets one,
   through ``notes/batch/create`` (100 per call, associated with the contact in the same
   input). The entry is marked ``creating`` and committed BEFORE the call, and the note carries
   a marker (``brevo-event-ref: …``, a hash of contact, kind and campaign): an entry found
   ``creating`` — a crash between the call and the record — is first looked for among the
   contact's notes (associations and notes read in batches) and only created when absent. A
   note whose count is behind is updated (``notes/batch/update``, 100 per call).
3. **Properties** — the contacts touched get ``sync.email_events.properties`` (last open,
   click and delivery dates, opens, clicks, hard-bounced), computed from all their entries and
   written absolute (a replay writes the same values) with ``contacts/batch/update``, 100 per
   call; the properties are created on first use when missing.

A burst of n events therefore costs about 3·n/100 HubSpot calls, not one per event.
"""

from __future__ import annotations

import hashlib
import html
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.brevo.webhooks import EMAIL_EVENT_NAMES, EMAIL_EVENTS_TYPE, event_name
from connector.errors import scrub
from connector.store import email_events as store
from connector.store import links as ledger
from connector.store.email_events import Entry, EventDelta
from connector.store.inbox import InboxInput, InboxItem
from connector.store.models import utcnow
from connector.transforms import normalise_email

if TYPE_CHECKING:
    from connector.config import EmailEventsSettings, Settings
    from connector.hubspot.client import HubSpotClient

log = structlog.get_logger(__name__)

#: The inbox object type of Brevo e-mail events.
EMAIL_EVENTS = EMAIL_EVENTS_TYPE
#: Brevo event (camelCase, :func:`~connector.brevo.webhooks.event_name`) → the kind it counts as.
EVENT_KINDS: dict[str, str] = {
    "delivered": "delivered",
    "opened": "opened",
    "uniqueOpened": "opened",
    "click": "clicked",
    "hardBounce": "hard_bounce",
    "unsubscribed": "unsubscribed",
}
#: Events the intake files under :data:`EMAIL_EVENTS` (nothing in the contact changed).
ROUTED_EVENTS = EMAIL_EVENT_NAMES
#: Events that are the contacts' opt-outs first, copied here by the worker (:func:`follow_up`).
FOLLOW_UP_EVENTS = frozenset({"unsubscribed", "hardBounce"})

KIND_LABELS = {
    "delivered": "Delivered",
    "opened": "Opened",
    "clicked": "Clicked",
    "hard_bounce": "Hard bounce",
    "unsubscribed": "Unsubscribed",
}
MARKER = "brevo-event-ref: "
BATCH = 100
#: A note HubSpot refused this many times is given up (the properties are still kept).
MAX_NOTE_ATTEMPTS = 5
_PAGE = 500


def follow_up(item: InboxItem) -> InboxInput | None:
    """The :data:`EMAIL_EVENTS` copy of a contacts-side Brevo ``unsubscribed``/``hardBounce``
    (written by the worker in the transaction that completes the original), else ``None``."""
    if item.source != "brevo" or event_name(item.event_type) not in FOLLOW_UP_EVENTS:
        return None
    return InboxInput(
        source="brevo",
        dedup_key=f"ee:{item.dedup_key}",
        object_type=EMAIL_EVENTS,
        object_id=item.object_id,
        event_type=item.event_type,
        payload=item.payload,
    )


# --- the events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmailEvent:
    """One Brevo e-mail event, as counted."""

    key: str
    kind: str
    unique: bool
    email: str | None
    contact_id: str | None
    campaign: str
    campaign_name: str | None
    at: datetime
    detail: str | None


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        text = str(value).strip()
        return text or None
    return None


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    seconds = value / 1000 if value > 100_000_000_000 else value  # ts_epoch is in ms
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def event_time(p: Mapping[str, Any], fallback: datetime) -> datetime:
    """When the event happened: ``ts_event`` (UTC epoch seconds), ``ts_epoch`` (ms, in
    transactional events), ``ts``; else ``fallback`` (the arrival)."""
    for name in ("ts_event", "ts_epoch", "ts"):
        at = _epoch(p.get(name))
        if at is not None:
            return at
    return fallback


def campaign_of(p: Mapping[str, Any]) -> tuple[str, str | None]:
    """(key, name) of the send an event belongs to: a marketing campaign (``camp_id``), else a
    transactional template (``template_id``), else a tag, else ``transactional``."""
    subject = _text(p.get("subject"))
    camp = _text(p.get("camp_id"))
    if camp is not None:
        return f"campaign:{camp}", _text(p.get("campaign name")) or subject
    template = _text(p.get("template_id"))
    if template is not None:
        return f"template:{template}", subject
    tags = p.get("tags")
    tag = _text(p.get("tag")) or (_text(tags[0]) if isinstance(tags, list) and tags else None)
    if tag is not None:
        return f"tag:{tag[:200]}", subject or tag
    return "transactional", subject


def parse_item(item: InboxItem) -> EmailEvent | None:
    """One inbox item → an :class:`EmailEvent`, or ``None`` if it is not one."""
    name = event_name(item.event_type)
    kind = EVENT_KINDS.get(name)
    if kind is None:
        return None
    p = item.payload
    raw_email = p.get("email")
    email = normalise_email(raw_email) if isinstance(raw_email, str) else None
    if email is None and "@" in item.object_id:
        email = normalise_email(item.object_id)
    contact_id = _text(p.get("contact_id"))
    if contact_id == "0":  # a transactional event's "no such contact"
        contact_id = None
    if contact_id is None and item.object_id.isdigit():
        contact_id = item.object_id
    campaign, campaign_name = campaign_of(p)
    detail = None
    if kind == "clicked":
        detail = _text(p.get("URL")) or _text(p.get("link"))
    elif kind == "hard_bounce":
        detail = _text(p.get("reason"))
    return EmailEvent(
        key=item.dedup_key,
        kind=kind,
        unique=name == "uniqueOpened",
        email=email or None,
        # a transactional event names no contact with contact_id 0
        contact_id=contact_id
        if contact_id and contact_id.isdigit() and contact_id != "0"
        else None,
        campaign=campaign,
        campaign_name=campaign_name,
        at=event_time(p, item.received_at),
        detail=detail[:2000] if detail else None,
    )


def note_ref(hubspot_id: str, kind: str, campaign: str) -> str:
    """The marker of one entry's note: a hash of contact, kind and campaign."""
    digest = hashlib.sha256(f"{hubspot_id}|{kind}|{campaign}".encode()).hexdigest()
    return digest[:24]


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def note_body(entry: Entry) -> str:
    """The timeline note of an entry: what happened, for which send, how often, when."""
    esc = html.escape
    label = KIND_LABELS.get(entry.kind, entry.kind)
    kind, _, ident = entry.campaign.partition(":")
    what = {"campaign": "campaign", "template": "template", "tag": "tag"}.get(kind)
    send = f"“{esc(entry.campaign_name)}”" if entry.campaign_name else ""
    if what is not None:
        send = f"{send} ({what} {esc(ident)})".strip()
    elif not send:
        send = "a transactional e-mail"
    n = entry.shown_count
    times = "once" if n == 1 else f"{n} times"
    when = (
        f"on {_when(entry.first_at)}"
        if n == 1 or entry.first_at == entry.last_at
        else f"first {_when(entry.first_at)}, last {_when(entry.last_at)}"
    )
    parts = [
        f"<p><strong>Brevo e-mail: {esc(label)}</strong> — {send}</p>",
        f"<p>{times}, {when}</p>",
    ]
    if entry.detail:
        name = "Link" if entry.kind == "clicked" else "Reason"
        parts.append(f"<p>{name}: {esc(entry.detail)}</p>")
    ref = note_ref(entry.hubspot_id, entry.kind, entry.campaign)
    parts.append(f"<p><small>{MARKER}{ref}</small></p>")
    return "".join(parts)


# --- the sync ---------------------------------------------------------------------------------


@dataclass
class EmailEventsResult:
    """What one :meth:`EmailEventsSync.handle` did."""

    counts: Counter[str] = field(default_factory=Counter)


class EmailEventsSync:
    """Brevo e-mail events onto HubSpot contacts; see the module docstring.

    The worker calls :meth:`handle` with the claimed :data:`EMAIL_EVENTS` items; an exception
    means none of them is settled (they are retried; what was counted stays counted once).
    """

    object_type = EMAIL_EVENTS

    def __init__(
        self,
        settings: Settings,
        hubspot: HubSpotClient,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.cfg: EmailEventsSettings = settings.sync.email_events
        self.hubspot = hubspot
        self.sessions = sessions
        self.clock = clock
        self._properties_ready = False
        self._purged_at: datetime | None = None
        self.log = log.bind(object_type=EMAIL_EVENTS)

    # --- entry point --------------------------------------------------------------------------

    async def handle(self, items: Sequence[InboxItem]) -> EmailEventsResult:
        """Count ``items``, then bring the notes and properties on HubSpot up to date."""
        result = EmailEventsResult()
        events = []
        for item in items:
            ev = parse_item(item)
            if ev is None:
                result.counts["ignored"] += 1
            else:
                events.append(ev)
        if events:
            await self._count(events, result)
        await self.flush(result)
        await self._purge_seen()
        self.log.info(
            "email_events.batch",
            events=len(items),
            counts={k: int(v) for k, v in sorted(result.counts.items()) if v},
        )
        return result

    async def _count(self, events: Sequence[EmailEvent], result: EmailEventsResult) -> None:
        async with self.sessions() as s:
            fresh = set(await store.unseen(s, [e.key for e in events]))
        result.counts["replayed"] += sum(1 for e in events if e.key not in fresh)
        events = [e for e in events if e.key in fresh]
        if not events:
            return
        contacts = await self._resolve(events)
        deltas: list[EventDelta] = []
        for ev in events:
            hs_id = contacts.get(ev.email or "") or contacts.get(f"#{ev.contact_id}")
            if hs_id is None:
                result.counts["skipped_no_contact"] += 1
                continue
            deltas.append(
                EventDelta(
                    hubspot_id=hs_id,
                    kind=ev.kind,
                    campaign=ev.campaign,
                    campaign_name=ev.campaign_name,
                    count=0 if ev.unique else 1,
                    uniques=1 if ev.unique else 0,
                    first_at=ev.at,
                    last_at=ev.at,
                    detail=ev.detail,
                )
            )
            result.counts[f"counted_{ev.kind}"] += 1
        notes = self.cfg.timeline == "note"
        wanted = {k: notes and k in self.cfg.timeline_kinds for k in KIND_LABELS}
        now = self.clock()
        async with self.sessions() as s, s.begin():
            await store.mark_seen(s, [e.key for e in events], now)
            created, _ = await store.apply_deltas(s, deltas, note_wanted=wanted, now=now)
        result.counts["entries_created"] += created

    async def _resolve(self, events: Sequence[EmailEvent]) -> dict[str, str]:
        """``{email or "#<brevo id>": hubspot id}``: the links first, then HubSpot by e-mail."""
        emails = list(dict.fromkeys(e.email for e in events if e.email))
        brevo_ids = list(dict.fromkeys(e.contact_id for e in events if e.contact_id))
        async with self.sessions() as s:
            links = await ledger.load_links(
                s, "contacts", identity_keys=emails, brevo_ids=brevo_ids
            )
        out: dict[str, str] = {}
        for lk in links:
            if not lk.hubspot_id:
                continue
            if lk.identity_key:
                out.setdefault(lk.identity_key, lk.hubspot_id)
            if lk.brevo_id:
                out.setdefault(f"#{lk.brevo_id}", lk.hubspot_id)
        missing = [e for e in emails if e not in out]
        if missing:
            found = await self.hubspot.batch_read(
                "contacts", missing, ["email"], id_property="email"
            )
            for r in found.results:
                key = normalise_email(r.properties.get("email"))
                if key in missing and not r.archived:
                    out[key] = r.id
        return out

    # --- HubSpot: notes and properties ------------------------------------------------------

    async def flush(self, result: EmailEventsResult | None = None) -> EmailEventsResult:
        """Create the missing notes, update the stale ones, write the pending properties."""
        result = result or EmailEventsResult()
        if self.cfg.timeline == "note":
            await self._recover_notes(result)
            await self._create_notes(result)
            await self._update_notes(result)
        await self._write_properties(result)
        return result

    async def _recover_notes(self, result: EmailEventsResult) -> None:
        """Entries left ``creating`` by a crash: their note is looked for by its marker."""
        while True:
            async with self.sessions() as s:
                entries = await store.with_note_state(
                    s, "creating", max_attempts=MAX_NOTE_ATTEMPTS, limit=_PAGE
                )
            if not entries:
                return
            found = await self._find_notes(entries)
            now = self.clock()
            async with self.sessions() as s, s.begin():
                # a found note shows an unknown count: 0 makes the next step refresh it
                await store.record_notes(s, {i: (nid, 0) for i, nid in found.items()}, now)
                lost = [e.id for e in entries if e.id not in found]
                await store.set_note_state(s, lost, "none", now)
            result.counts["notes_recovered"] += len(found)

    async def _find_notes(self, entries: Sequence[Entry]) -> dict[int, str]:
        """``{entry id: note id}`` for the entries whose marked note exists on their contact."""
        by_ref = {note_ref(e.hubspot_id, e.kind, e.campaign): e.id for e in entries}
        contacts = list(dict.fromkeys(e.hubspot_id for e in entries))
        linked = await self.hubspot.read_associations("contacts", "notes", contacts)
        note_ids = list(dict.fromkeys(a.to_id for lst in linked.values() for a in lst))
        found: dict[int, str] = {}
        if not note_ids:
            return found
        read = await self.hubspot.batch_read("notes", note_ids, ["hs_note_body"])
        for note in read.results:
            body = note.properties.get("hs_note_body") or ""
            at = body.find(MARKER)
            if at < 0:
                continue
            ref = body[at + len(MARKER) : at + len(MARKER) + 24]
            entry_id = by_ref.get(ref)
            if entry_id is not None:
                found.setdefault(entry_id, note.id)
        return found

    async def _create_notes(self, result: EmailEventsResult) -> None:
        while True:
            async with self.sessions() as s:
                entries = await store.with_note_state(
                    s, "none", max_attempts=MAX_NOTE_ATTEMPTS, limit=_PAGE
                )
            if not entries:
                return
            async with self.sessions() as s, s.begin():  # BEFORE the call
                await store.set_note_state(s, [e.id for e in entries], "creating", self.clock())
            made = await self.hubspot.batch_create_notes(
                [(note_body(e), e.first_at, e.hubspot_id) for e in entries]
            )
            created: dict[int, tuple[str, int]] = {}
            for obj in made.results:
                if obj.input_index is not None and obj.id:
                    e = entries[obj.input_index]
                    created[e.id] = (obj.id, e.shown_count)
            refused = [e.id for e in entries if e.id not in created]
            await self._record_created(created, refused)
            result.counts["notes_created"] += len(created)
            if refused:
                result.counts["notes_refused"] += len(refused)
                self.log.warning(
                    "email_events.notes_refused",
                    refused=len(refused),
                    errors=[scrub(f"{e.category or ''} {e.message}") for e in made.errors[:3]],
                )
                return  # tried again with the next batch (up to MAX_NOTE_ATTEMPTS times)

    async def _record_created(
        self, created: Mapping[int, tuple[str, int]], refused: Sequence[int]
    ) -> None:
        """AFTER the call: the notes made, and the refused ones back to ``none``."""
        now = self.clock()
        async with self.sessions() as s, s.begin():
            await store.record_notes(s, created, now)
            await store.note_failed(s, refused, now)

    async def _update_notes(self, result: EmailEventsResult) -> None:
        seen: set[int] = set()
        while True:
            async with self.sessions() as s:
                entries = [e for e in await store.stale_notes(s, limit=_PAGE) if e.id not in seen]
            if not entries:
                return
            seen.update(e.id for e in entries)
            by_note = {e.note_id: e for e in entries if e.note_id}
            written = await self.hubspot.batch_update(
                "notes", {nid: {"hs_note_body": note_body(e)} for nid, e in by_note.items()}
            )
            if written.errors:  # a note deleted in HubSpot: not made again, not retried
                self.log.info("email_events.notes_not_updated", refused=len(written.errors))
            async with self.sessions() as s, s.begin():
                await store.set_note_counts(s, {e.id: e.shown_count for e in entries}, self.clock())
            result.counts["notes_updated"] += len(written.results)

    # --- properties ---------------------------------------------------------------------------

    def property_specs(self) -> list[dict[str, Any]]:
        """The HubSpot contact properties this writes (named in the config), as created."""
        p = self.cfg.properties
        group = self.cfg.property_group
        out: list[dict[str, Any]] = []

        def add(name: str | None, label: str, type_: str, field_type: str, desc: str) -> None:
            if name:
                spec: dict[str, Any] = {
                    "name": name,
                    "label": label,
                    "type": type_,
                    "fieldType": field_type,
                    "groupName": group,
                    "description": f"{desc} (set by the Brevo sync)",
                }
                if type_ == "bool":
                    spec["options"] = [
                        {"label": "Yes", "value": "true", "displayOrder": 0},
                        {"label": "No", "value": "false", "displayOrder": 1},
                    ]
                out.append(spec)

        add(p.last_open_date, "Brevo last open", "datetime", "date", "Last e-mail opened in Brevo")
        add(p.last_click_date, "Brevo last click", "datetime", "date", "Last link clicked")
        add(p.last_delivered_date, "Brevo last delivery", "datetime", "date", "Last delivered")
        add(p.opens, "Brevo e-mail opens", "number", "number", "E-mail opens counted")
        add(p.clicks, "Brevo e-mail clicks", "number", "number", "E-mail clicks counted")
        add(p.hard_bounced, "Brevo hard bounce", "bool", "booleancheckbox", "A hard bounce")
        return out

    async def _ensure_properties(self) -> None:
        if self._properties_ready:
            return
        specs = self.property_specs()
        if specs:
            have = {p.name for p in await self.hubspot.list_properties("contacts")}
            for spec in specs:
                if spec["name"] not in have:
                    await self.hubspot.create_property("contacts", spec)
                    self.log.info("email_events.property_created", property=spec["name"])
        self._properties_ready = True

    def contact_values(self, entries: Iterable[Entry]) -> dict[str, str]:
        """A contact's property values from all its entries (absolute: replays write alike)."""
        p = self.cfg.properties
        last: dict[str, datetime] = {}
        total: Counter[str] = Counter()
        for e in entries:
            if e.kind not in last or e.last_at > last[e.kind]:
                last[e.kind] = e.last_at
            total[e.kind] += e.shown_count
        out: dict[str, str] = {}

        def stamp(at: datetime) -> str:
            return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

        for name, kind in (
            (p.last_open_date, "opened"),
            (p.last_click_date, "clicked"),
            (p.last_delivered_date, "delivered"),
        ):
            if name and kind in last:
                out[name] = stamp(last[kind])
        if p.opens and "opened" in last:
            out[p.opens] = str(total["opened"])
        if p.clicks and "clicked" in last:
            out[p.clicks] = str(total["clicked"])
        if p.hard_bounced and "hard_bounce" in last:
            out[p.hard_bounced] = "true"
        return out

    async def _write_properties(self, result: EmailEventsResult) -> None:
        if not self.property_specs():
            async with self.sessions() as s, s.begin():
                ids = await store.pending_contacts(s, limit=10**9)
                await store.clear_pending(s, ids, read_at=self.clock())
            return
        await self._ensure_properties()
        done: set[str] = set()
        while True:
            read_at = self.clock()
            async with self.sessions() as s:
                ids = [i for i in await store.pending_contacts(s, limit=_PAGE) if i not in done]
                entries = await store.entries_of(s, ids) if ids else []
            if not ids:
                return
            done.update(ids)
            per: dict[str, list[Entry]] = {}
            for e in entries:
                per.setdefault(e.hubspot_id, []).append(e)
            values = {hs: v for hs, es in per.items() if (v := self.contact_values(es))}
            written = await self.hubspot.batch_update("contacts", values) if values else None
            if written is not None and written.errors:  # a contact deleted meanwhile
                result.counts["properties_refused"] += len(written.errors)
                self.log.info("email_events.properties_refused", refused=len(written.errors))
            async with self.sessions() as s, s.begin():
                await store.clear_pending(s, ids, read_at=read_at)
            result.counts["contacts_updated"] += len(written.results) if written else 0

    async def _purge_seen(self) -> None:
        """Forget counted-event keys past ``sync.retention_days`` (at most once an hour)."""
        now = self.clock()
        if self._purged_at is not None and now - self._purged_at < timedelta(hours=1):
            return
        before = now - timedelta(days=self.settings.sync.retention_days)
        async with self.sessions() as s, s.begin():
            await store.purge_seen(s, before)
        self._purged_at = now


__all__ = [
    "EMAIL_EVENTS",
    "EVENT_KINDS",
    "FOLLOW_UP_EVENTS",
    "MARKER",
    "ROUTED_EVENTS",
    "EmailEvent",
    "EmailEventsResult",
    "EmailEventsSync",
    "campaign_of",
    "event_time",
    "follow_up",
    "note_body",
    "note_ref",
    "parse_item",
]
