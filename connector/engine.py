"""The sync pipeline for one object type: records → pairs → plan → writes → ledger → events.

:meth:`SyncEngine.sync` takes what changed — records already read (a pull's page) and/or dirty
ids (webhooks, the dead-letter retry) from either side — and does, in order:

1. **fetch** the records named only by id, in batches (HubSpot ``batch/read``, 100 per call;
   Brevo ``GET /contacts?ids=``, 20 per call), and the Brevo contacts named by email (webhooks:
   through the Brevo source, one call each from the API);
2. **pair** them: by the link table (both ids), else by normalised email; a record's missing
   counterpart is read in batches too (HubSpot by id or by email; Brevo by id, or through the
   ``brevo_lookup`` strategy by email — one call each by default, a staged table in a resync);
3. **map** both sides through the mapping and **plan** each pair (:mod:`connector.plan`, pure);
4. **apply** the plans in batches: HubSpot ``batch/update`` by id and ``batch/upsert`` by email;
   Brevo single writes for a few changes, ``/contacts/import`` for many (then read back,
   because Brevo silently drops values of the wrong type and unknown attributes);
5. **record** in one transaction: links with both ids, the new ledger bases of the writes that
   succeeded, contacts skipped for having no email, and dead letters for records that failed;
6. **emit** sync events (``created``, ``changed``) for the post-sync hooks — only for real
   changes, never for an echo or a no-op.

A crash between 4 and 5 loses nothing: the next pass finds both sides equal and adopts the
values into the ledger without writing (plan rule ``h == b``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector import phone_guard
from connector import plan as planner
from connector.brevo.client import BrevoClient, FieldValidationError
from connector.brevo.models import BrevoContact, ImportRow
from connector.errors import ApiError, ConflictError, ValidationError
from connector.hubspot.client import HubSpotClient, last_modified_property
from connector.hubspot.models import HubSpotObject, RecordError
from connector.mapping import MappedRecord, Mapping
from connector.store import deadletters, history, skipped
from connector.store import links as ledger
from connector.store.models import System, utcnow
from connector.transforms import normalise_email

log = structlog.get_logger(__name__)

Mode = Literal["incremental", "resync", "reconcile", "retry"]

_SKEW = timedelta(seconds=5)
_MS = timedelta(milliseconds=1)

IMPORT_TIMEOUT = 900.0
"""Seconds an import may take before its records count as failed (they go to the DLQ)."""

LIST_READ_FROM = 60
"""From this many Brevo contacts named by e-mail in one pass, list what changed since the
earliest event (1,000 per call) before reading the rest by id (20 per call)."""

CONFIRM_BY_EMAIL_MAX = 50
"""Imported contacts the read-back listings did not show are read by e-mail (one call each)
before they count as lost — up to this many per import."""

IMPORT_FIRST_POLL = 0.3
"""Seconds from an import's answer to its first read-back (at most ``import_poll_every``);
the waits then double up to ``import_poll_every`` and grow by half from there. A small import
is often through within a second; a read-back too early costs one listing call."""

IMPORT_THRESHOLD = 50
"""From this many Brevo writes in one batch on, they go through ``/contacts/import``."""


class BrevoSource(Protocol):
    """Where the engine reads Brevo contacts it was not given: the API, or a resync's stage."""

    async def by_ids(self, ids: Sequence[int]) -> dict[str, BrevoContact]:
        """Contacts by Brevo id (as strings); absent ids are left out."""

    async def by_emails(self, emails: Sequence[str]) -> dict[str, BrevoContact]:
        """Contacts by normalised email; absent emails are left out."""

    async def by_sms(self, keys: Sequence[str]) -> dict[str, str]:
        """The ids of the contacts holding these SMS numbers (as
        :func:`~connector.transforms.phone_key`), by key; absent ones are left out."""


class ApiBrevoSource:
    """Brevo itself: 20 ids per call; by email one call each (Brevo has no batch read)."""

    def __init__(self, brevo: BrevoClient) -> None:
        self.brevo = brevo

    async def by_ids(self, ids: Sequence[int]) -> dict[str, BrevoContact]:
        return {str(c.id): c for c in await self.brevo.get_contacts_by_ids(ids)}

    async def by_emails(self, emails: Sequence[str]) -> dict[str, BrevoContact]:
        found: dict[str, BrevoContact] = {}
        for email in emails:
            contact = await self.brevo.get_contact(email, "email")
            if contact is not None:
                found[email] = contact
        return found

    async def by_sms(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for key in keys:
            contact = await self.brevo.get_contact("+" + key, "phone")
            if contact is not None:
                found[key] = str(contact.id)
        return found


@dataclass(frozen=True)
class SyncEvent:
    """A real change the hooks may act on."""

    kind: Literal["created", "changed"]
    object_type: str
    origin: planner.Side
    hubspot_id: str | None
    brevo_id: str | None
    identity: str | None
    field: str | None = None
    old: str | None = None
    new: str | None = None


@dataclass(frozen=True)
class GoneLink:
    """A linked pair one of whose records vanished (``side``: ``hubspot``, ``brevo``, ``both``).

    The engine only collects them: what a vanished record means (a deletion to carry to the
    other side, under the mass-delete guard) is :mod:`connector.events`' job, run once per pass
    through :meth:`SyncEngine.settle_gone`.
    """

    link: ledger.LinkRecord
    side: Literal["hubspot", "brevo", "both"]


@dataclass
class Outcome:
    """What one pass did: counters, the plans (for a dry run), the events, the failures."""

    counts: Counter[str] = field(default_factory=Counter)
    summary: planner.PlanSummary = field(default_factory=planner.PlanSummary)
    events: list[SyncEvent] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    gone: list[GoneLink] = field(default_factory=list)
    """linked pairs whose record vanished, not handled yet (see :class:`GoneLink`)"""


class GoneHandler(Protocol):
    """What carries vanished linked records to the other side (:mod:`connector.events`)."""

    async def settle_gone(self, out: Outcome, *, dry_run: bool = False) -> None:
        """Handle ``out.gone`` (and empty it), under the mass-delete guard."""


@dataclass
class _Pair:
    """One record pair under construction."""

    link: ledger.LinkRecord | None = None
    hubspot: HubSpotObject | None = None
    brevo: BrevoContact | None = None
    key: str | None = None  # normalised email
    plan: planner.PairPlan | None = None
    hs_mapped: MappedRecord | None = None
    br_mapped: MappedRecord | None = None
    failed: bool = False
    error: str = ""
    failed_on: set[str] = field(default_factory=set)
    brevo_readback: BrevoContact | None = None
    #: fields whose write-ahead row matched the target's value: that value is their base
    adopted: dict[str, ledger.BaseEntry] = field(default_factory=dict)
    #: why a value was left out of the write (a phone another contact holds): the pair
    #: syncs, and keeps an open dead letter with this reason until the value goes through
    left_out: str = ""

    def fail(self, side: planner.Side, error: str) -> None:
        """A write to ``side`` failed: the pair goes to the dead letters, with this error."""
        self.failed, self.error = True, error
        self.failed_on.add(side)

    @property
    def hubspot_id(self) -> str | None:
        if self.hubspot is not None:
            return self.hubspot.id
        return self.link.hubspot_id if self.link else None

    @property
    def brevo_id(self) -> str | None:
        if self.brevo is not None:
            return str(self.brevo.id)
        return self.link.brevo_id if self.link else None


def hubspot_modified(obj: HubSpotObject, prop: str) -> datetime:
    raw = obj.properties.get(prop)
    if raw:
        try:
            if raw.isdigit():
                return datetime.fromtimestamp(int(raw) / 1000, UTC)
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            pass
    return obj.updated_at or obj.created_at or datetime.now(UTC)


def _brevo_view(contact: BrevoContact) -> dict[str, Any]:
    return {**contact.attributes, "email": contact.email}


def _to_plan_bases(link: ledger.LinkRecord | None) -> dict[str, planner.BaseEntry] | None:
    if link is None:
        return None
    return {
        name: planner.BaseEntry(b.value_hash, b.origin, b.synced_at)
        for name, b in link.bases.items()
    }


EventsCallback = Callable[[AsyncSession, Sequence[SyncEvent], Mode], Awaitable[None]]
"""``on_events(session, events, mode)``: called inside the transaction that records a pass's
links, with that pass's events, so whatever it writes (the post-sync hooks' jobs) commits
atomically with them: a crash can neither lose the events nor record them twice."""


class SyncEngine:
    """Keeps one object type in step (generic: contacts today, companies and deals later)."""

    def __init__(
        self,
        *,
        mapping: Mapping,
        hubspot: HubSpotClient,
        brevo: BrevoClient,
        sessions: async_sessionmaker[AsyncSession],
        direction: planner.RunDirection = "bidirectional",
        import_list_ids: Sequence[int] = (),
        import_threshold: int = IMPORT_THRESHOLD,
        import_poll_every: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        on_events: EventsCallback | None = None,
    ) -> None:
        self.mapping = mapping
        self.on_events = on_events
        #: ``(object_type, counts)`` after each pass that could write (not a dry run; the
        #: follow-up pass counted with its caller), with the counts that pass added — the
        #: daemon's ``connector_records_synced`` metric.
        self.on_pass_counts: Callable[[str, dict[str, int]], None] | None = None
        self.object_type = mapping.object
        self.hubspot = hubspot
        self.brevo = brevo
        self.sessions = sessions
        self.direction = direction
        self.import_list_ids = list(import_list_ids)
        self.import_threshold = import_threshold
        self.import_poll_every = import_poll_every
        self.clock = clock
        self.rules = mapping.rules()
        self.identity = mapping.identity_field
        self.hs_props = [*mapping.hubspot_properties(), last_modified_property(self.object_type)]
        self.modified_prop = last_modified_property(self.object_type)
        self.api_source = ApiBrevoSource(brevo)
        #: the field written to Brevo's SMS, unique per Brevo contact (see phone_guard)
        self.sms_field = next(
            (f.key for f in mapping.fields if f.brevo == "SMS" and f.flows_to("brevo")), None
        )
        #: the HubSpot properties whose values may travel to Brevo (see _hubspot_may_fill)
        self._to_brevo_properties = [
            f.hubspot for f in mapping.fields if f.flows_to("brevo") and f.key != self.identity
        ]
        if direction == "brevo_to_hubspot":
            self._to_brevo_properties = []
        #: (latest Brevo ``modifiedAt`` seen by an import read-back, our clock when that
        #: listing ended): the next read-back lists from there (see _confirm_import)
        self._readback_mark: tuple[datetime, datetime] | None = None
        #: Handles the pairs whose linked record vanished (set by the runtime); without one
        #: they are only skipped and counted (``linked_record_gone``).
        self.deletions: GoneHandler | None = None

    async def settle_gone(self, out: Outcome, *, dry_run: bool = False) -> None:
        """End of a pass (a pull, a resync, a worker batch): hand the vanished linked records
        collected in ``out.gone`` to :attr:`deletions`, which applies the deletion policy
        under the mass-delete guard over the whole pass."""
        if self.deletions is not None and out.gone:
            await self.deletions.settle_gone(out, dry_run=dry_run)

    # --- the pass ----------------------------------------------------------------------------

    async def sync(
        self,
        *,
        hubspot: Sequence[HubSpotObject] = (),
        brevo: Sequence[BrevoContact] = (),
        hubspot_ids: Sequence[str] = (),
        brevo_ids: Sequence[str] = (),
        brevo_emails: Sequence[str] = (),
        brevo_changed_since: datetime | None = None,
        mode: Mode = "incremental",
        dry_run: bool = False,
        brevo_source: BrevoSource | None = None,
        out: Outcome | None = None,
        follow_up: bool = False,
        hubspot_listed: bool = False,
        read_at: datetime | None = None,
    ) -> Outcome:
        """One pass over what changed; see the module docstring for the steps.

        ``brevo_emails`` names Brevo contacts by email (webhooks): they are read through the
        Brevo source's ``by_emails`` and then treated like given records; absent ones are left
        out. ``brevo_changed_since`` (when they changed at the earliest) lets a burst of them
        be read by listing the contacts modified since then — one call per 1,000 — instead of
        by id (20 per call) or by e-mail (one each). Pass ``out`` to add this pass's counts,
        plans and events to a running total.

        ``hubspot_listed``: every HubSpot record has already been offered to this run (a full
        resync's phase 3, after its listing of HubSpot claimed each record's Brevo contact by
        email): an unpaired email with no link is known to be absent from HubSpot, so it is
        not read by email first (the creation is an upsert keyed on email all the same, so a
        record created meanwhile is updated, not duplicated). Emails the ledger knows are
        still read, to keep the "held by another linked record" check.

        ``read_at``: when the given ``hubspot`` / ``brevo`` records were read (at the latest).
        A pair the ledger shows synced after that — another pass ran in between, a webhook's
        while a pull let it in — is planned on its records read again, not on the given
        copies, which may predate what that pass wrote (planned on them, the old value would
        look like a change and be written back).
        """
        before = dict(out.counts) if out is not None else {}
        out = out if out is not None else Outcome()
        hs_records = {r.id: r for r in hubspot}
        br_records = {str(c.id): c for c in brevo}
        missing_hs = [i for i in dict.fromkeys(hubspot_ids) if i not in hs_records]
        missing_br = [i for i in dict.fromkeys(brevo_ids) if i not in br_records]
        if missing_hs:
            for r in await self._read_hubspot(missing_hs, by_email=False):
                hs_records[r.id] = r
        source = brevo_source or self.api_source
        if missing_br:
            br_records.update(await source.by_ids([int(i) for i in missing_br]))
        if brevo_emails:
            await self._read_brevo_by_email(brevo_emails, br_records, source, brevo_changed_since)

        pairs, no_email = await self._pair(hs_records, br_records, source, out, hubspot_listed)
        if read_at is not None:
            given_hs = {r.id for r in hubspot}
            given_br = {str(c.id) for c in brevo}
            await self._reread_synced_since(pairs, read_at, given_hs, given_br, source, out)
        await self._plan(pairs, out)
        await self._keep_phones_unique(pairs, source, out)
        for p in pairs:
            if p.plan is not None:
                out.summary.add(p.plan)
        if dry_run:
            out.counts["dry_run"] += 1
            return out
        await self._write_ahead(pairs)
        await self._apply(pairs, mode, out)
        await self._record(pairs, no_email, out, mode)
        created = [
            p.hubspot_id
            for p in pairs
            if p.plan is not None
            and p.plan.kind == "create_in_hubspot"
            and not p.failed
            and self._hubspot_may_fill(p)
        ]
        if created and not follow_up:
            # HubSpot fills calculated properties (deal counts, …) and defaults on a new
            # record: read the new records back once so those values reach Brevo in this same
            # cycle (only those whose upsert answer lacks a value HubSpot may have set).
            await self.sync(
                hubspot_ids=[i for i in created if i],
                mode=mode,
                out=out,
                follow_up=True,
                brevo_source=brevo_source,
            )
        if self.on_pass_counts is not None and not follow_up:
            self.on_pass_counts(
                self.object_type, {k: v - before.get(k, 0) for k, v in out.counts.items()}
            )
        return out

    async def _reread_synced_since(
        self,
        pairs: list[_Pair],
        read_at: datetime,
        given_hs: set[str],
        given_br: set[str],
        source: BrevoSource,
        out: Outcome,
    ) -> None:
        """Read again the given records of the pairs synced after ``read_at`` (see sync)."""
        stale = [
            p
            for p in pairs
            if p.plan is None
            and p.link is not None
            and any(b.synced_at > read_at for b in p.link.bases.values())
        ]
        hs = [p for p in stale if p.hubspot is not None and p.hubspot.id in given_hs]
        br = [p for p in stale if p.brevo is not None and str(p.brevo.id) in given_br]
        if not (hs or br):
            return
        out.counts["reread_synced_meanwhile"] += len(hs) + len(br)
        if hs:
            got = {
                r.id: r
                for r in await self._read_hubspot([p.hubspot_id or "" for p in hs], by_email=False)
            }
            for p in hs:
                assert p.hubspot is not None
                p.hubspot = got.get(p.hubspot.id)
        if br:
            got_br = await source.by_ids([int(str(p.brevo.id)) for p in br if p.brevo is not None])
            for p in br:
                assert p.brevo is not None
                p.brevo = got_br.get(str(p.brevo.id))
        for p in hs + br:
            if p.hubspot is None or p.brevo is None:  # gone meanwhile: the next pass sees it
                p.plan = planner.PairPlan(
                    kind="skip",
                    hubspot_id=p.hubspot_id,
                    brevo_id=p.brevo_id,
                    reason="changed by another pass and now gone: left to the next pass",
                )

    def _hubspot_may_fill(self, p: _Pair) -> bool:
        """Whether a record just created in HubSpot may hold values the upsert's answer does
        not show: a mapped property that may travel to Brevo is missing from the answer (it
        was not sent — empty in Brevo, or read-only — so HubSpot may have set it itself: a
        default, a calculated property). An answer holding every such value (or no such
        field) needs no read-back."""
        if p.hubspot is None:
            return True
        props = p.hubspot.properties
        return any(props.get(name) in (None, "") for name in self._to_brevo_properties)

    async def _read_brevo_by_email(
        self,
        emails: Sequence[str],
        found: dict[str, BrevoContact],
        source: BrevoSource,
        changed_since: datetime | None = None,
    ) -> None:
        """Add the Brevo contacts named by e-mail (webhooks) to ``found``.

        Brevo reads by e-mail one call each, by id 20 per call, and lists what changed since a
        time 1,000 per call. A burst (:data:`LIST_READ_FROM` or more, with ``changed_since``)
        is read from that listing; then the linked ones left are read by their linked id (a
        burst for 500 linked contacts: 25 calls, not 500); the rest — new contacts, or an
        e-mail changed in Brevo — one by one.
        """
        have = {normalise_email(c.email) for c in found.values()}
        wanted = [
            e for e in dict.fromkeys(normalise_email(x) for x in emails) if e and e not in have
        ]
        if not wanted:
            return
        if changed_since is not None and len(wanted) >= LIST_READ_FROM:
            keys = set(wanted)
            async for c in self.brevo.iter_contacts(modified_since=changed_since - _SKEW):
                if normalise_email(c.email) in keys:
                    found[str(c.id)] = c
            listed = {normalise_email(c.email) for c in found.values()}
            wanted = [e for e in wanted if e not in listed]
            if not wanted:
                return
        async with self.sessions() as s:
            linked = await ledger.load_links(s, self.object_type, identity_keys=wanted)
        ids = [
            int(lk.brevo_id)
            for lk in linked
            if lk.brevo_id and lk.brevo_id.isdigit() and lk.brevo_id not in found
        ]
        if ids:
            found.update(await source.by_ids(ids))
        known = {normalise_email(c.email) for c in found.values()}
        rest = [e for e in wanted if e not in known]
        if rest:
            for c in (await source.by_emails(rest)).values():
                found.setdefault(str(c.id), c)

    # --- pairing -----------------------------------------------------------------------------

    async def _read_hubspot(self, ids: Sequence[str], *, by_email: bool) -> list[HubSpotObject]:
        result = await self.hubspot.batch_read(
            self.object_type, list(ids), self.hs_props, id_property="email" if by_email else None
        )
        return [r for r in result.results if not r.archived]

    async def _pair(
        self,
        hs_records: dict[str, HubSpotObject],
        br_records: dict[str, BrevoContact],
        source: BrevoSource,
        out: Outcome,
        hubspot_listed: bool = False,
    ) -> tuple[list[_Pair], list[tuple[str, str]]]:
        """Group records into pairs by link, then by email; read the missing counterparts."""
        no_email: list[tuple[str, str]] = []
        hs_key: dict[str, str] = {}
        for hid, r in list(hs_records.items()):
            key = normalise_email(r.properties.get("email"))
            if key is None:
                reason = "no email" if not r.properties.get("email") else "invalid email"
                no_email.append((hid, reason))
                del hs_records[hid]
            else:
                hs_key[hid] = key
        br_key: dict[str, str] = {}
        for bid, c in list(br_records.items()):
            key = normalise_email(c.email)
            if key is None:
                out.counts["brevo_without_email"] += 1
                del br_records[bid]
            else:
                br_key[bid] = key
        out.counts["hubspot_without_email"] += len(no_email)

        async with self.sessions() as s:
            links = await ledger.load_links(
                s,
                self.object_type,
                hubspot_ids=list(hs_records),
                brevo_ids=list(br_records),
                identity_keys=sorted(set(hs_key.values()) | set(br_key.values())),
            )
        by_hs = {lk.hubspot_id: lk for lk in links if lk.hubspot_id}
        by_br = {lk.brevo_id: lk for lk in links if lk.brevo_id}
        by_key = {lk.identity_key: lk for lk in links if lk.identity_key}

        pairs: dict[str, _Pair] = {}

        def slot(link: ledger.LinkRecord | None, key: str) -> _Pair:
            name = f"link:{link.id}" if link else f"key:{key}"
            if name not in pairs:
                pairs[name] = _Pair(link=link, key=key)
            return pairs[name]

        for hid, r in hs_records.items():
            link = by_hs.get(hid)
            if link is None:
                candidate = by_key.get(hs_key[hid])
                if candidate is not None and candidate.hubspot_id in (None, hid):
                    link = candidate
            slot(link, hs_key[hid]).hubspot = r
        for bid, c in br_records.items():
            link = by_br.get(bid)
            if link is None:
                candidate = by_key.get(br_key[bid])
                if candidate is not None and candidate.brevo_id in (None, bid):
                    link = candidate
            p = slot(link, br_key[bid])
            if p.brevo is not None and str(p.brevo.id) != bid:
                out.counts["identity_conflicts"] += 1
                continue
            p.brevo = c

        # with ``hubspot_listed``, an email the ledger does not know is not in HubSpot
        read_by_email = set(by_key) if hubspot_listed else None
        await self._complete(list(pairs.values()), source, out, no_email, read_by_email)
        return list(pairs.values()), no_email

    async def _complete(
        self,
        pairs: list[_Pair],
        source: BrevoSource,
        out: Outcome,
        no_email: list[tuple[str, str]],
        hubspot_by_email: set[str] | None = None,
    ) -> None:
        """Read each pair's missing side: by linked id where known, else by email (HubSpot:
        only the emails in ``hubspot_by_email`` when it is given, the others being known
        absent)."""
        hs_by_id = [p for p in pairs if p.hubspot is None and p.link and p.link.hubspot_id]
        hs_by_email = [p for p in pairs if p.hubspot is None and not (p.link and p.link.hubspot_id)]
        br_by_id = [p for p in pairs if p.brevo is None and p.link and p.link.brevo_id]
        br_by_email = [p for p in pairs if p.brevo is None and not (p.link and p.link.brevo_id)]

        if hs_by_id:
            ids = [p.link.hubspot_id for p in hs_by_id if p.link and p.link.hubspot_id]
            got = {r.id: r for r in await self._read_hubspot(ids, by_email=False)}
            for p in hs_by_id:
                assert p.link is not None and p.link.hubspot_id is not None
                p.hubspot = got.get(p.link.hubspot_id)
                if p.hubspot is not None and not normalise_email(p.hubspot.properties.get("email")):
                    # its email was removed in HubSpot: not synced (the removal stands), listed
                    p.plan = planner.PairPlan(
                        kind="skip",
                        hubspot_id=p.hubspot.id,
                        brevo_id=p.link.brevo_id,
                        reason="no email in HubSpot: not synced",
                    )
                    if all(object_id != p.hubspot.id for object_id, _ in no_email):
                        no_email.append((p.hubspot.id, "no email"))
                        out.counts["hubspot_without_email"] += 1
        found_hs: dict[str, HubSpotObject] = {}
        if hs_by_email:
            emails = [
                p.key
                for p in hs_by_email
                if p.key and (hubspot_by_email is None or p.key in hubspot_by_email)
            ]
            found = await self._read_hubspot(emails, by_email=True) if emails else []
            found_hs = {k: r for r in found if (k := normalise_email(r.properties.get("email")))}
        if br_by_id:
            br_ids = [int(p.link.brevo_id) for p in br_by_id if p.link and p.link.brevo_id]
            got_br = await source.by_ids(br_ids)
            for p in br_by_id:
                assert p.link is not None and p.link.brevo_id is not None
                p.brevo = got_br.get(p.link.brevo_id)
        found_br: dict[str, BrevoContact] = {}
        if br_by_email:
            emails = [p.key for p in br_by_email if p.key]
            found_br = await source.by_emails(emails) if emails else {}
        await self._claim_found(pairs, hs_by_email, found_hs, br_by_email, found_br, out)
        # A record found by email may already be linked to something else: leave such pairs.
        for p in pairs:
            if p.link is None:
                continue
            gone = [
                side
                for side, rec, linked in (
                    ("HubSpot", p.hubspot, p.link.hubspot_id),
                    ("Brevo", p.brevo, p.link.brevo_id),
                )
                if rec is None and linked
            ]
            if not gone:
                continue
            handled = p.link.marker(ledger.DELETED_MARKER)
            if handled is not None:
                # a deletion already carried over (or ignored) by the event semantics: the
                # link stays so that the pair is never recreated from the side that is left
                side = "HubSpot" if handled.origin == "hubspot" else "Brevo"
                reason = f"deleted in {side}: not synced (the deletion was handled)"
                out.counts["deleted_kept"] += 1
            else:
                reason = f"linked record no longer in {' and '.join(gone)} (deleted or merged)"
                out.counts["linked_record_gone"] += 1
                which: Literal["hubspot", "brevo", "both"] = (
                    "both" if len(gone) == 2 else "hubspot" if gone[0] == "HubSpot" else "brevo"
                )
                out.gone.append(GoneLink(p.link, which))
            p.plan = planner.PairPlan(
                kind="skip",
                hubspot_id=p.link.hubspot_id,
                brevo_id=p.link.brevo_id,
                reason=reason,
            )

    async def _claim_found(
        self,
        pairs: list[_Pair],
        hs_by_email: list[_Pair],
        found_hs: dict[str, HubSpotObject],
        br_by_email: list[_Pair],
        found_br: dict[str, BrevoContact],
        out: Outcome,
    ) -> None:
        """Give each pair the counterpart found by its email — unless that record is linked
        to another one, or already belongs to another pair of this pass.

        That happens when an email moved: a contact took a new address and someone else now
        holds the old one (or the new one was held already). Pairing them would mix two
        people; the pair waits instead (skipped this pass, retried by the next one, by when the
        rename has gone through) and nothing is written for it.
        """
        if not (found_hs or found_br):
            return
        async with self.sessions() as s:
            linked = await ledger.load_links(
                s,
                self.object_type,
                hubspot_ids=[r.id for r in found_hs.values()],
                brevo_ids=[str(c.id) for c in found_br.values()],
            )
        linked_hs = {lk.hubspot_id for lk in linked if lk.hubspot_id}
        linked_br = {lk.brevo_id for lk in linked if lk.brevo_id}
        taken_hs = {p.hubspot.id for p in pairs if p.hubspot is not None}
        taken_br = {str(p.brevo.id) for p in pairs if p.brevo is not None}

        def wait(p: _Pair, holder: str) -> None:
            p.plan = planner.PairPlan(
                kind="skip",
                hubspot_id=p.hubspot_id,
                brevo_id=p.brevo_id,
                reason=f"{p.key} is held by a {holder} contact linked to another record "
                "(an email moved): retried next pass",
            )
            out.counts["email_in_use_elsewhere"] += 1

        for p in hs_by_email:
            hs = found_hs.get(p.key or "")
            if hs is None:
                continue
            if hs.id in linked_hs or hs.id in taken_hs:
                wait(p, "HubSpot")
                continue
            p.hubspot = hs
            taken_hs.add(hs.id)
        for p in br_by_email:
            if p.plan is not None:
                continue
            br = found_br.get(p.key or "")
            if br is None:
                continue
            if str(br.id) in linked_br or str(br.id) in taken_br:
                wait(p, "Brevo")
                continue
            p.brevo = br
            taken_br.add(str(br.id))

    # --- planning ----------------------------------------------------------------------------

    async def _plan(self, pairs: Iterable[_Pair], out: Outcome) -> None:
        now = self.clock()
        pairs = list(pairs)
        linked = [p.link.id for p in pairs if p.plan is None and p.link is not None]
        pending: dict[int, dict[str, ledger.Pending]] = {}
        if linked:
            async with self.sessions() as s:
                pending = await ledger.load_pending(s, linked)
        for p in pairs:
            if p.plan is not None:
                continue
            hs_side = br_side = None
            if p.hubspot is not None:
                p.hs_mapped = self.mapping.to_brevo(p.hubspot.properties)
                hs_side = p.hs_mapped.side_record(
                    p.hubspot.id, hubspot_modified(p.hubspot, self.modified_prop)
                )
            if p.brevo is not None:
                p.br_mapped = self.mapping.to_hubspot(_brevo_view(p.brevo))
                br_side = p.br_mapped.side_record(str(p.brevo.id), p.brevo.modified_at)
            bases = _to_plan_bases(p.link)
            if p.link is not None and p.link.id in pending and bases is not None:
                self._adopt_pending(p, pending[p.link.id], bases, hs_side, br_side, out)
            state = planner.PairState(hs_side, br_side, bases)
            p.plan = planner.plan_pair(
                state, self.rules, self.direction, identity=self.identity, now=now
            )
            if p.plan.kind == "skip":
                out.counts["skipped"] += 1
            invalid = [a for a in p.plan.actions if a.kind == "skip_invalid"]
            out.counts["invalid_fields"] += len(invalid)
            change = p.plan.email_change
            blocked = p.brevo is not None and p.brevo.email_blacklisted
            if change is not None and change.target == "brevo" and blocked:
                # Changing EMAIL un-blocklists a Brevo contact (it would resubscribe it).
                p.plan = _without_field(p.plan, self.identity, "Brevo contact is blocklisted")
                out.counts["blocklisted_email_kept"] += 1

    async def _keep_phones_unique(
        self, pairs: Sequence[_Pair], source: BrevoSource, out: Outcome
    ) -> None:
        """Leave out of the Brevo writes the phones another contact holds (see
        :mod:`connector.phone_guard`): the record syncs without it, the reason logged."""
        name = self.sms_field
        if name is None or self.direction == "brevo_to_hubspot":
            return
        writes: list[phone_guard.PhoneWrite] = []
        for i, p in enumerate(pairs):
            value = p.plan.writes("brevo").get(name) if p.plan is not None else None
            if value is not None:
                writes.append(
                    phone_guard.PhoneWrite(
                        i, value, p.link.id if p.link else None, p.hubspot_id, p.brevo_id
                    )
                )
        if not writes:
            return

        async def in_ledger(hashes: Sequence[str]) -> dict[str, list[ledger.LinkRecord]]:
            async with self.sessions() as s:
                return await ledger.holders_of_values(s, self.object_type, name, hashes)

        refused = await phone_guard.phones_in_use(
            writes,
            in_ledger=in_ledger,
            in_brevo=source.by_sms,
            brevo_is_current=isinstance(source, ApiBrevoSource),
            brevo_lookup_max=phone_guard.LOOKUP_MAX if isinstance(source, ApiBrevoSource) else None,
        )
        for i, why in refused.items():
            p = pairs[i]
            assert p.plan is not None
            p.plan = _without_field(p.plan, name, why)
            p.left_out = f"SMS not written: {why}"
            out.counts["phone_in_use"] += 1
            log.warning(
                "sync.phone_left_out",
                object=self.object_type,
                hubspot_id=p.hubspot_id,
                brevo_id=p.brevo_id,
                reason=why,
            )

    def _adopt_pending(
        self,
        p: _Pair,
        pending: dict[str, ledger.Pending],
        bases: dict[str, planner.BaseEntry],
        hs_side: planner.SideRecord | None,
        br_side: planner.SideRecord | None,
        out: Outcome,
    ) -> None:
        """A write whose outcome was never recorded (the process died, or its answer was lost)
        that did land: its value is the field's base — not a person's change on the target
        side, which ``latest_wins`` could otherwise carry back over a later edit of the source.
        """
        for name, row in pending.items():
            target = hs_side if row.target == "hubspot" else br_side
            if target is None or name in target.invalid:
                continue
            if planner.value_hash(target.values.get(name)) != row.value_hash:
                continue  # the write did not land, or was changed since: the base stands
            base = bases.get(name)
            if base is not None and base.value_hash == row.value_hash:
                continue
            origin: planner.Side = "brevo" if row.target == "hubspot" else "hubspot"
            bases[name] = planner.BaseEntry(row.value_hash, origin, row.created_at)
            p.adopted[name] = ledger.BaseEntry(row.value_hash, origin, row.target, row.created_at)
            out.counts["pending_writes_landed"] += 1

    async def _write_ahead(self, pairs: Sequence[_Pair]) -> None:
        """Before the writes: the value each linked pair's field is about to get (see
        :class:`~connector.store.models.PendingWrite`), in one transaction."""
        rows: list[tuple[int, str, System, str]] = []
        for p in pairs:
            plan = p.plan
            if p.link is None or plan is None or plan.kind in ("skip", "nothing"):
                continue
            for a in plan.actions:
                if a.target is not None:
                    rows.append((p.link.id, a.field, a.target, planner.value_hash(a.value)))
        if rows:
            async with self.sessions() as s, s.begin():
                await ledger.record_pending(s, rows, self.clock())

    # --- applying ----------------------------------------------------------------------------

    async def _apply(self, pairs: list[_Pair], mode: Mode, out: Outcome) -> None:
        to_hs_update: list[_Pair] = []
        to_hs_create: list[_Pair] = []
        to_br: list[_Pair] = []
        for p in pairs:
            plan = p.plan
            if plan is None or plan.kind == "skip":
                continue
            if plan.kind == "create_in_hubspot":
                to_hs_create.append(p)
            elif plan.kind == "create_in_brevo":
                to_br.append(p)
            else:
                if plan.writes("hubspot"):
                    to_hs_update.append(p)
                if plan.writes("brevo") or self._needs_ext_id(p):
                    to_br.append(p)
        await asyncio.gather(
            self._write_hubspot(to_hs_update, to_hs_create, out),
            self._write_brevo(to_br, mode, out),
        )
        # A new HubSpot record's id goes to Brevo as EXT_ID: by the follow-up pass when the
        # record is read back (see sync), else here, straight away.
        ext_ids = [
            p
            for p in to_hs_create
            if p.hubspot is not None
            and not p.failed
            and not self._hubspot_may_fill(p)
            and self._needs_ext_id(p)
        ]
        for p in ext_ids:
            assert p.hubspot is not None
            p.hs_mapped = self.mapping.to_brevo(p.hubspot.properties)
        await self._write_brevo(ext_ids, mode, out)

    def _needs_ext_id(self, p: _Pair) -> bool:
        """A linked Brevo contact whose EXT_ID does not hold its HubSpot id yet."""
        return (
            p.brevo is not None
            and p.hubspot is not None
            and p.brevo.ext_id != p.hubspot.id
            and self.direction != "brevo_to_hubspot"
        )

    def _hubspot_payload(self, p: _Pair) -> dict[str, str | None]:
        assert p.plan is not None and p.br_mapped is not None
        return p.br_mapped.payload(p.plan.writes("hubspot"))

    async def _write_hubspot(
        self, updates: list[_Pair], creates: list[_Pair], out: Outcome
    ) -> None:
        if updates:
            inputs = {p.hubspot_id: self._hubspot_payload(p) for p in updates if p.hubspot_id}
            result = await self._guarded(
                out,
                updates,
                "hubspot batch/update",
                self.hubspot.batch_update(self.object_type, inputs),
            )
            if result is not None:
                self._mark_errors(updates, result.errors, out, "hubspot update")
                out.counts["hubspot_updated"] += len(result.results)
        if creates:
            payloads = [self._hubspot_payload(p) for p in creates]
            result = await self._guarded(
                out,
                creates,
                "hubspot batch/upsert",
                self.hubspot.batch_upsert(self.object_type, payloads, id_property="email"),
            )
            if result is not None:
                for obj in result.results:
                    if obj.input_index is not None:
                        p = creates[obj.input_index]
                        p.hubspot = obj
                self._mark_errors(creates, result.errors, out, "hubspot create")
                out.counts["hubspot_created"] += sum(
                    1 for p in creates if p.hubspot and not p.failed
                )

    async def _guarded(
        self, out: Outcome, pairs: list[_Pair], what: str, call: Awaitable[Any]
    ) -> Any:
        """Run a HubSpot batch write; if the whole call fails, every pair of it failed."""
        try:
            return await call
        except ApiError as e:
            for p in pairs:
                p.fail("hubspot", str(e))
            out.failures.append(f"{what}: {e}")
            out.counts["failed"] += len(pairs)
            log.warning("sync.batch_failed", what=what, error=str(e), records=len(pairs))
            return None

    def _mark_errors(
        self, pairs: list[_Pair], errors: Sequence[RecordError], out: Outcome, what: str
    ) -> None:
        for err in errors:
            if err.index is None or not 0 <= err.index < len(pairs):
                continue
            p = pairs[err.index]
            p.fail("hubspot", f"{what}: {err.category or err.code or ''} {err.message}")
            out.counts["failed"] += 1

    async def _write_brevo(self, pairs: list[_Pair], mode: Mode, out: Outcome) -> None:
        if not pairs:
            return
        if self.import_list_ids and (mode == "resync" or len(pairs) >= self.import_threshold):
            await self._import_brevo(pairs, out)
            return
        for p in pairs:
            await self._write_brevo_one(p, out)

    def _brevo_payload(self, p: _Pair) -> tuple[str | None, dict[str, Any]]:
        """(email to set, attributes) for one pair's Brevo write."""
        assert p.plan is not None and p.hs_mapped is not None
        writes = p.plan.writes("brevo")
        attrs = p.hs_mapped.payload(writes)
        email = None
        identity_target = self.mapping.field_by_key(self.identity).brevo if self.identity else None
        if identity_target is not None and identity_target in attrs:
            email = attrs.pop(identity_target)
        return email, attrs

    async def _write_brevo_one(self, p: _Pair, out: Outcome) -> None:
        assert p.plan is not None
        email, attrs = self._brevo_payload(p)
        try:
            if p.plan.kind == "create_in_brevo":
                new_id = await self.brevo.create_contact(
                    email or p.key or "",
                    attrs,
                    ext_id=p.hubspot_id,
                    list_ids=self.import_list_ids,
                    update_enabled=True,
                )
                if new_id is None:  # 204: it existed (created meanwhile): read its id
                    found = await self.brevo.get_contact(email or p.key or "", "email")
                    new_id = found.id if found else None
                if new_id is not None:
                    p.brevo = _stub_contact(new_id, email or p.key)
                out.counts["brevo_created"] += 1
            else:
                assert p.brevo is not None
                if email is not None:
                    attrs["EMAIL"] = email
                await self.brevo.update_contact(
                    p.brevo.id,
                    "id",
                    attributes=attrs,
                    ext_id=p.hubspot_id if p.brevo.ext_id != p.hubspot_id else None,
                    known_blocklisted=p.brevo.email_blacklisted,
                )
                out.counts["brevo_updated"] += 1
        except (ValidationError, ConflictError) as e:
            p.fail("brevo", f"brevo write: {e}")
            out.counts["failed"] += 1
            if isinstance(e, FieldValidationError):
                out.counts["invalid_fields"] += 1
        except ApiError as e:
            p.fail("brevo", f"brevo write: {e}")
            out.counts["failed"] += 1
            out.failures.append(str(e))

    async def _import_brevo(self, pairs: list[_Pair], out: Outcome) -> None:
        """Many Brevo writes as one import, then read back to confirm what Brevo kept."""
        rows: list[ImportRow] = []
        imported: list[_Pair] = []
        for p in pairs:
            email, attrs = self._brevo_payload(p)
            if p.brevo is not None and email is not None:
                # an import keys on email, so an email change goes as a single update
                await self._write_brevo_one(p, out)
                continue
            target = email or (p.brevo.email if p.brevo else None) or p.key
            rows.append(ImportRow(email=target or "", attributes=attrs, ext_id=p.hubspot_id))
            imported.append(p)
        if not rows:
            return
        started = self.clock()
        # Rows that only set EXT_ID on a known contact are not read back: EXT_ID is not an
        # attribute Brevo could drop, and one it did not set is sent again by the next pass
        # that sees the pair (``_needs_ext_id``).
        confirm = [p for p in imported if p.brevo is None or (p.plan and p.plan.writes("brevo"))]
        try:
            process_ids = await self.brevo.import_contacts(rows, list_ids=self.import_list_ids)
            missing = (
                await self._confirm_import(confirm, started, process_ids, out) if confirm else 0
            )
        except ApiError as e:
            for p in imported:
                p.fail("brevo", f"brevo import: {e}")
            out.counts["failed"] += len(imported)
            out.failures.append(str(e))
            return
        out.counts["brevo_imported"] += len(rows) - missing

    async def _confirm_import(
        self, pairs: list[_Pair], since: datetime, process_ids: Sequence[int], out: Outcome
    ) -> int:
        """Read the imported contacts back until all are there; fail values Brevo dropped.

        Completion is seen by reading the contacts (the contacts budget is 36,000/h), not by
        polling ``/processes`` (100/h): that is asked only once the read-backs stop making
        progress, to tell "still running" from "finished without these contacts". A field
        that holds neither our value nor its value from before the import was changed again
        by someone else meanwhile: the import is through, and that newer change travels as
        its own change (:meth:`_lost`). Returns how many records failed.
        """
        wanted = {p.key: p for p in pairs if p.key}
        seen: dict[str, BrevoContact] = {}
        # List from ``since`` less a clock-skew margin — or, when an earlier read-back's
        # listing ended before this import was sent, from just after the latest
        # ``modifiedAt`` that listing saw (Brevo's own clock: this import's contacts were
        # processed after that listing, a pass and several round trips later), so the
        # contacts of the previous imports are not listed again. Only with times to the
        # millisecond (``modifiedSince`` includes its own millisecond; the spec's examples
        # are to the second, where "just after" could skip this import's first contacts).
        list_from = since - _SKEW
        mark = self._readback_mark
        if mark is not None and mark[1] < since and mark[0] + _MS > list_from:
            list_from = mark[0] + _MS
        every = self.import_poll_every
        wait = min(IMPORT_FIRST_POLL, every)
        waited = 0.0
        checked_process = False
        rounds = 0
        while True:
            await asyncio.sleep(wait)
            waited += wait
            rounds += 1
            latest: datetime | None = None
            precise = False
            # pages end to end: a contact missed by a shift is looked for in the next round
            async for c in self.brevo.iter_contacts(modified_since=list_from, overlap=False):
                if latest is None or c.modified_at > latest:
                    latest = c.modified_at
                precise = precise or c.modified_at.microsecond != 0
                key = normalise_email(c.email)
                if key in wanted and self._kept_all(wanted[key], c):
                    seen[key] = c
            if latest is not None:
                self._readback_mark = (latest, self.clock()) if precise else None
            if rounds > 1:
                # Brevo does not touch a contact whose values the import left as they were
                # (someone set them meanwhile): look at the existing ones not seen yet by id
                await self._confirm_unmodified(wanted, seen)
            if len(seen) == len(wanted) or waited >= IMPORT_TIMEOUT:
                break
            if not checked_process and waited >= 8 * self.import_poll_every:
                checked_process = True
                procs = [await self.brevo.get_process(pid) for pid in process_ids]
                if all(pr.done for pr in procs):
                    break  # finished: what is missing now, Brevo did not keep
            wait = min(wait * 2, every) if wait < every else min(wait * 1.5, 15.0)
        unseen = [key for key in wanted if key not in seen]
        if 0 < len(unseen) <= CONFIRM_BY_EMAIL_MAX:
            # a listing can miss a contact (its page shifted under it, a modification time at
            # the boundary of the previous read-back): a few are read by e-mail before they
            # are declared lost
            for key, read in (await self.api_source.by_emails(unseen)).items():
                if self._kept_all(wanted[key], read):
                    seen[key] = read
                    out.counts["import_confirmed_by_email"] += 1
        failed = 0
        for key, p in wanted.items():
            contact = seen.get(key)
            if contact is not None:
                p.brevo = contact
                continue
            fields = ", ".join(self.mapping.field_by_key(f).brevo for f in self._lost(p))
            p.fail(
                "brevo",
                f"Brevo did not keep {fields or 'the contact'} after the import (wrong attribute "
                "type, or the attribute does not exist: run connector mappings check)",
            )
            failed += 1
        out.counts["failed"] += failed
        return failed

    async def _confirm_unmodified(
        self, wanted: dict[str, _Pair], seen: dict[str, BrevoContact]
    ) -> None:
        """Read the imported contacts that existed before and were not seen modified: those
        already holding the values (the import changed nothing) are confirmed."""
        by_id = {
            int(p.brevo.id): key
            for key, p in wanted.items()
            if key not in seen and p.brevo is not None and str(p.brevo.id).isdigit()
        }
        if not by_id:
            return
        for c in await self.brevo.get_contacts_by_ids(list(by_id)):
            key = by_id.get(int(c.id))
            if key is not None and self._kept_all(wanted[key], c):
                seen[key] = c

    def _kept_all(self, p: _Pair, contact: BrevoContact) -> bool:
        p.brevo_readback = contact
        return not self._lost(p)

    def _lost(self, p: _Pair) -> list[str]:
        """The fields of the plan that the read-back Brevo contact shows were not written.

        A field still holding its value from before the write (``p.brevo``, read before the
        import; nothing for a new contact) was not written (yet), or Brevo dropped it. A field
        holding a third value — neither ours nor the old one — was written and then changed
        again by someone else: not lost (that change comes back as a change of its own).
        """
        assert p.plan is not None
        contact = p.brevo_readback
        if contact is None:
            return [f for f in p.plan.writes("brevo") if f != self.identity]
        kept = self.mapping.to_hubspot(_brevo_view(contact)).values
        before = self.mapping.to_hubspot(_brevo_view(p.brevo)).values if p.brevo else {}
        return [
            f
            for f, v in p.plan.writes("brevo").items()
            if f != self.identity and kept.get(f) != v and kept.get(f) == before.get(f)
        ]

    # --- recording ---------------------------------------------------------------------------

    async def _record(
        self, pairs: list[_Pair], no_email: list[tuple[str, str]], out: Outcome, mode: Mode
    ) -> None:
        now = self.clock()
        first_event = len(out.events)
        await self._refuse_taken_ids(pairs, out)
        writes: list[ledger.PairWrite] = []
        synced: list[_Pair] = []
        dead: list[_Pair] = []
        settled: list[tuple[int, str]] = []  # write-ahead rows the ledger now records
        for p in pairs:
            plan = p.plan
            if plan is None or plan.kind == "skip":
                continue
            if p.failed:
                dead.append(p)
            if p.hubspot_id is None or p.brevo_id is None:
                continue
            # A write that failed leaves its field's base as it was; the writes beside it that
            # succeeded are recorded, so they are recognised as ours when they come back.
            written = {a.field: a.target for a in plan.actions if a.target is not None}
            bases = {
                name: ledger.BaseEntry(b.value_hash, b.origin, written.get(name), b.synced_at)
                for name, b in plan.ledger_updates.items()
                if written.get(name) not in p.failed_on
            }
            for name, adopted in p.adopted.items():  # a landed write nobody recorded
                bases.setdefault(name, adopted)
            if p.link is not None:
                settled += [(p.link.id, name) for name in bases]
            if p.failed and not bases:
                continue
            writes.append(
                ledger.PairWrite(
                    hubspot_id=p.hubspot_id,
                    brevo_id=p.brevo_id,
                    identity_key=self._identity_after(p),
                    bases=bases,
                    link_id=p.link.id if p.link else None,
                )
            )
            synced.append(p)
            if not p.failed:
                self._events(p, out)
        async with self.sessions() as s, s.begin():
            if settled:
                await ledger.clear_pending(s, settled)
            if writes:
                link_ids = await ledger.save_pairs(s, self.object_type, writes, now=now)
                await history.record(s, self._history(synced, link_ids, now))
            if no_email:
                await skipped.record_skipped(s, "hubspot", self.object_type, no_email, now)
            synced_hs = [p.hubspot_id for p in synced if p.hubspot_id and not p.failed]
            if synced_hs:
                await skipped.clear_skipped(s, "hubspot", self.object_type, synced_hs)
            # a value left out keeps the record's letter open (dlq list, retry) until it
            # goes through; the rest of the record synced (not a failure)
            left_out = [p for p in synced if p.left_out and not p.failed]
            for p in left_out:
                p.error = p.left_out
            clean = [p for p in synced if not p.left_out]
            await pass_dead_letters(s, self.object_type, clean, dead + left_out, now, out)
            if self.on_events is not None and len(out.events) > first_event:
                await self.on_events(s, out.events[first_event:], mode)
        out.counts["linked"] += len(writes)
        out.counts["dead_lettered"] += len(dead)

    async def _refuse_taken_ids(self, pairs: Sequence[_Pair], out: Outcome) -> None:
        """A new pair whose written record turned out to be one another link holds (Brevo
        matched the create to an existing contact, say by an identifier the checks before
        the write did not know of) fails, dead-lettered with both records named, instead of
        moving that link to it: two people's records are never silently merged."""
        new = [
            p
            for p in pairs
            if p.link is None and p.plan is not None and p.hubspot_id and p.brevo_id
        ]
        if not new:
            return
        async with self.sessions() as s:
            held = await ledger.load_links(
                s,
                self.object_type,
                hubspot_ids=[p.hubspot_id for p in new if p.hubspot_id],
                brevo_ids=[p.brevo_id for p in new if p.brevo_id],
            )
        by_hs = {lk.hubspot_id: lk for lk in held if lk.hubspot_id}
        by_br = {lk.brevo_id: lk for lk in held if lk.brevo_id}
        for p in new:
            other = by_br.get(p.brevo_id or "")
            if other is not None and other.hubspot_id not in (None, p.hubspot_id):
                p.fail(
                    "brevo",
                    f"Brevo wrote HubSpot {p.hubspot_id} onto contact {p.brevo_id}, which is "
                    f"linked to HubSpot {other.hubspot_id}: the two were not merged; look at "
                    "both records (a shared phone number or e-mail?) and run connector dlq "
                    "retry once they differ",
                )
                out.counts["failed"] += 1
                p.brevo = None
                continue
            other = by_hs.get(p.hubspot_id or "")
            if other is not None and other.brevo_id not in (None, p.brevo_id):
                p.fail(
                    "hubspot",
                    f"HubSpot {p.hubspot_id} is linked to Brevo {other.brevo_id} already, not "
                    f"{p.brevo_id}: the link was kept",
                )
                out.counts["failed"] += 1
                p.brevo = None

    def _identity_after(self, p: _Pair) -> str | None:
        """The pair's email once this pass's writes are done (an email change moves it)."""
        change = p.plan.email_change if p.plan is not None else None
        if change is not None and change.target not in p.failed_on and change.new:
            return normalise_email(change.new) or p.key
        return p.key

    def _history(
        self, pairs: Sequence[_Pair], link_ids: Sequence[int], now: datetime
    ) -> list[history.HistoryEntry]:
        return pass_history(self.object_type, self.modified_prop, pairs, link_ids, now)

    def _events(self, p: _Pair, out: Outcome) -> None:
        out.events += pair_events(self.object_type, p)


class _Modified(Protocol):
    @property
    def modified_at(self) -> datetime: ...


class PlannedPair(Protocol):
    """What :func:`pass_history` and :func:`pair_events` read of a planned record pair (the
    contact engine's and the CRM object syncs' pairs)."""

    @property
    def plan(self) -> planner.PairPlan | None: ...
    @property
    def failed_on(self) -> set[str]: ...
    @property
    def hubspot(self) -> HubSpotObject | None: ...
    @property
    def brevo(self) -> _Modified | None: ...
    @property
    def hubspot_id(self) -> str | None: ...
    @property
    def brevo_id(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def failed(self) -> bool: ...
    @property
    def error(self) -> str: ...


async def pass_dead_letters(
    s: AsyncSession,
    object_type: str,
    synced: Sequence[PlannedPair],
    dead: Sequence[PlannedPair],
    now: datetime,
    out: Outcome,
) -> None:
    """In a pass's recording transaction: the dead letters of the records that synced cleanly
    are resolved, and the pairs that failed get one each (with the error and both ids)."""
    done: list[tuple[Literal["hubspot", "brevo"], str]] = []
    for p in synced:
        if not p.failed:
            done += [("hubspot", p.hubspot_id)] if p.hubspot_id else []
            done += [("brevo", p.brevo_id)] if p.brevo_id else []
    if done:
        out.counts["dead_letters_resolved"] += await deadletters.resolve_records(
            s, object_type, done, now
        )
    for p in dead:
        await deadletters.add(
            s,
            system="hubspot" if p.hubspot is not None else "brevo",
            object_type=object_type,
            object_id=p.hubspot_id or p.brevo_id,
            identity_key=p.key,
            # "nothing": every write of it was left out (see SyncEngine._keep_phones_unique)
            operation=("update" if p.plan.kind == "nothing" else p.plan.kind) if p.plan else "sync",
            payload={"hubspot_id": p.hubspot_id, "brevo_id": p.brevo_id},
            error=p.error,
            attempts=1,
            now=now,
        )


def pass_history(
    object_type: str,
    modified_prop: str,
    pairs: Sequence[PlannedPair],
    link_ids: Sequence[int],
    now: datetime,
) -> list[history.HistoryEntry]:
    """What travelled, for ``connector explain``: one entry per field written."""
    entries: list[history.HistoryEntry] = []
    for p, link_id in zip(pairs, link_ids, strict=True):
        assert p.plan is not None
        actions = [a for a in p.plan.actions if a.target not in p.failed_on]
        entries += history.from_actions(
            object_type,
            link_id,
            actions,
            now,
            hubspot_modified=hubspot_modified(p.hubspot, modified_prop)
            if p.hubspot is not None
            else None,
            brevo_modified=p.brevo.modified_at if p.brevo is not None else None,
        )
    return entries


def pair_events(object_type: str, p: PlannedPair) -> list[SyncEvent]:
    """The sync events of one recorded pair: ``created``, or one ``changed`` per field written."""
    plan = p.plan
    assert plan is not None
    if plan.kind in ("create_in_brevo", "create_in_hubspot"):
        origin: planner.Side = "hubspot" if plan.kind == "create_in_brevo" else "brevo"
        return [SyncEvent("created", object_type, origin, p.hubspot_id, p.brevo_id, p.key)]
    return [
        SyncEvent(
            "changed",
            object_type,
            planner.other(a.target),
            p.hubspot_id,
            p.brevo_id,
            p.key,
            a.field,
            a.previous,
            a.value,
        )
        for a in plan.actions
        if a.target is not None
    ]


def _stub_contact(contact_id: int, email: str | None) -> BrevoContact:
    now = datetime.now(UTC)
    return BrevoContact(contact_id, email, None, {}, [], False, False, now, now)


def _without_field(plan: planner.PairPlan, name: str | None, why: str) -> planner.PairPlan:
    """The plan with one field's write turned into a skip (its base untouched)."""
    actions = tuple(
        planner.FieldAction(a.field, "skip_direction", a.value, a.previous, reason=why)
        if a.field == name and a.target is not None
        else a
        for a in plan.actions
    )
    writes = any(a.target is not None for a in actions)
    kind: planner.PlanKind = plan.kind if writes or plan.kind != "update" else "nothing"
    return planner.PairPlan(kind, actions, plan.hubspot_id, plan.brevo_id, plan.reason, None)
