"""Event semantics (DESIGN §5): deletions, merges, privacy deletions, restores and opt-outs.

Most events only mark a record dirty and the engine reads it (DESIGN §2). The events here mean
more than "read me", and :class:`EventSemantics` carries them out before the worker's engine
pass (:meth:`EventSemantics.apply`), or at the end of a pull or resync for the linked records
that vanished without an event (:meth:`EventSemantics.settle_gone`):

===========================  ==================================================================
HubSpot ``contact.deletion``  confirmed in HubSpot's archive first (a merged-away or GDPR-deleted
                              record is not there; its own event handles it), then, per
                              ``sync.on_hubspot_delete``: ``delete`` the Brevo contact (the link
                              is dropped: nothing is left to recreate), ``blocklist`` it
                              (``emailBlacklisted``) or ``ignore`` — for these two the link is
                              kept with a ``@deleted`` marker, so the engine never recreates the
                              HubSpot contact from Brevo (it skips the pair: ``deleted_kept``)
``contact.restore``           the marker is removed, the Brevo contact un-blocklisted if *we*
                              blocklisted it (never if the person opted out), and it is synced
``contact.merge``             the link moves to the surviving id; if both were linked, the
                              duplicate Brevo contact is merged into the survivor's (the
                              survivor's values win, its blanks are filled, the list memberships
                              and a blocklisting are kept) and deleted; the survivor is synced
``contact.privacyDeletion``   the Brevo contact deleted (by the link, else by ``EXT_ID``), the
                              person purged from every table at once (:mod:`connector.store.purge`);
                              nothing logged names the e-mail
Brevo ``contactDeleted``      confirmed absent, then per ``sync.on_brevo_delete``: ``archive`` the
                              HubSpot contact (batch archive) or ``ignore``; the link is dropped
Brevo ``unsubscribed``,       the HubSpot contact gets ``sync.optout.property`` = true, the
``hardBounce``, ``spam``      reason (``unsubscribed`` | ``hard_bounce`` | ``spam``) and the date
                              (the properties are created when missing). Never synced back over:
                              nothing un-blocklists an opted-out contact; a resubscription in Brevo
                              clears the HubSpot mark only with ``optout: {resubscribe: true}``
===========================  ==================================================================

**Mass-delete guard.** Before anything is deleted, blocklisted or archived, the deletions of the
pass are counted against the links (:func:`connector.plan.guard_deletions`,
``sync.max_delete_share``, from :data:`GUARD_MIN_COUNT` deletions on): over the share, nothing is
deleted, the refusal is logged and returned (the worker fails those events for a retry and
records it on its run; a pull or resync adds a failure and a dead letter per record), and
``--force`` (:attr:`EventSemantics.force`) lets it through.

**Echo hints.** A HubSpot ``propertyChange`` whose ``changeSource`` is ``INTEGRATION`` with a
``sourceId`` that is our app (or none), or a Brevo ``contactUpdated`` whose ``api_key_name`` is
our key's (``connectors.brevo.api_key_name``), is completed without a read — but only when every
value it carries hashes to what the ledger says the connector wrote there. The hint alone never
decides (DESIGN §5): without a match the record is read and the ledger judges.

Markers: the ledger rows ``@deleted`` and ``@hs:<property>`` (see
:data:`connector.store.links.MARKER_PREFIX`) record what was done, so a retry, a restore and the
echo check know it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog

from connector import plan as planner
from connector.brevo.models import BrevoContact
from connector.brevo.webhooks import event_name
from connector.engine import GoneLink, Outcome, SyncEngine
from connector.errors import scrub
from connector.store import deadletters, purge
from connector.store import links as ledger
from connector.store.inbox import InboxItem
from connector.transforms import normalise_email

if TYPE_CHECKING:
    from connector.config import Settings, SyncSettings

log = structlog.get_logger(__name__)

EventKind = Literal["change", "merge", "delete", "privacy", "restore", "optout", "none"]
"""What an event means for its record: read it (``change``, ``merge``, ``restore``,
``optout``: after their semantics), deletion semantics (``delete``, ``privacy``: no read), or
nothing to read (``none``)."""

#: HubSpot event actions (``contact.<action>``) that are not a plain change.
HUBSPOT_KINDS: dict[str, EventKind] = {
    "deletion": "delete",
    "privacyDeletion": "privacy",
    "merge": "merge",
    "restore": "restore",
}
#: Brevo events (camelCase) that are not a plain change of the contact.
BREVO_KINDS: dict[str, EventKind] = {
    "contactDeleted": "delete",
    "unsubscribed": "optout",
    "hardBounce": "optout",
    "spam": "optout",
    # campaign engagement: nothing in the contact changed
    "delivered": "none",
    "opened": "none",
    "uniqueOpened": "none",
    "proxyOpen": "none",
    "click": "none",
    "softBounce": "none",
    "deferred": "none",
    "request": "none",
}
#: Brevo opt-out event → the reason written to HubSpot.
OPTOUT_REASONS = {"unsubscribed": "unsubscribed", "hardBounce": "hard_bounce", "spam": "spam"}

#: Fewer deletions than this in one pass are never refused by the guard (a handful of
#: deletions in a small account is a person's work, not an outage).
GUARD_MIN_COUNT = 5
#: How a guard refusal's error text starts (``inbox.retry_now`` finds the held events by it).
GUARD_PREFIX = "mass-delete guard: "

#: Marker of a value the connector wrote to a HubSpot property outside the mapping.
HS_MARKER = "@hs:"
#: Brevo contact fields the connector writes outside the mapping (our own, in an echo).
_BREVO_OWN_FIELDS = frozenset({"emailblacklisted", "smsblacklisted", "ext_id"})


def event_kind(item: InboxItem) -> EventKind:
    """What one inbox item means for its record (see :data:`EventKind`)."""
    if item.source == "hubspot":
        action = item.event_type.partition(".")[2]
        return HUBSPOT_KINDS.get(action, "change")
    if item.source == "brevo":
        # the intake stores camelCase; older rows may hold Brevo's snake_case spelling
        return BREVO_KINDS.get(event_name(item.event_type), "change")
    return "change"  # a pull's dirty key


def _int_id(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return str(int(value))
    return None


def merge_ids(item: InboxItem) -> tuple[str, list[str]]:
    """(surviving id, merged-away ids) of a ``*.merge`` event: ``newObjectId`` (HubSpot may
    create a new record), else ``primaryObjectId``, else ``objectId``."""
    p = item.payload
    survivor = (
        _int_id(p.get("newObjectId"))
        or _int_id(p.get("primaryObjectId"))
        or _int_id(item.object_id)
        or item.object_id
    )
    merged = [i for m in p.get("mergedObjectIds") or [] if (i := _int_id(m))]
    for extra in (_int_id(p.get("primaryObjectId")), _int_id(item.object_id)):
        if extra and extra not in merged:
            merged.append(extra)
    return survivor, [i for i in dict.fromkeys(merged) if i != survivor]


def brevo_contact_id(item: InboxItem) -> str | None:
    """The Brevo contact id an event names (``contact_id``, or a numeric object id)."""
    return _int_id(item.payload.get("contact_id")) or _int_id(item.object_id)


def brevo_email(item: InboxItem) -> str | None:
    """The normalised e-mail a Brevo event names, if any."""
    raw = item.payload.get("email")
    return normalise_email(raw if isinstance(raw, str) else item.object_id)


def _marker(
    value: str, origin: planner.Side, written_to: planner.Side | None, at: datetime
) -> ledger.BaseEntry:
    return ledger.BaseEntry(planner.value_hash(value), origin, written_to, at)


@dataclass
class EventsResult:
    """What :meth:`EventSemantics.apply` did with one object type's claimed events."""

    counts: Counter[str] = field(default_factory=Counter)
    echoes: set[int] = field(default_factory=set)
    """events completed without a read: our own writes coming back"""
    done: set[int] = field(default_factory=set)
    """events fully handled here (deletions, privacy): no read"""
    held: dict[int, str] = field(default_factory=dict)
    """events refused by the mass-delete guard: failed, to be retried (or forced)"""
    failed: dict[int, str] = field(default_factory=dict)
    """events whose semantics raised: failed, to be retried"""
    read_hubspot: list[str] = field(default_factory=list)
    """HubSpot records to read beside the events' own (a deletion found live again)"""
    refused: str | None = None
    """the guard's refusal, if it refused"""

    def settled(self) -> set[int]:
        """Events the engine pass must not read."""
        return self.echoes | self.done | set(self.held) | set(self.failed)


@dataclass
class _Deletion:
    """One deletion to carry over, with the events that asked for it."""

    kind: Literal["hubspot", "brevo", "privacy", "drop"]
    link: ledger.LinkRecord | None
    items: list[int] = field(default_factory=list)
    hubspot_id: str | None = None

    def describe(self) -> str:
        if self.link is not None:
            return f"link {self.link.id}"
        return f"hubspot {self.hubspot_id}"


class EventSemantics:
    """The semantics of one object type's events; one per :class:`SyncEngine` (its
    :attr:`~connector.engine.SyncEngine.deletions`, see :func:`attach`)."""

    def __init__(
        self,
        engine: SyncEngine,
        sync: SyncSettings,
        *,
        brevo_key_name: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.sync = sync
        self.brevo_key_name = brevo_key_name or None
        self.clock = clock or engine.clock
        self.object_type = engine.object_type
        self.mapping = engine.mapping
        #: ``--force``: let deletions past the mass-delete guard
        self.force = False
        self._optout_ready = False
        self.log = log.bind(object_type=self.object_type)

    # --- the guard --------------------------------------------------------------------------

    def _is_destructive(self, d: _Deletion) -> bool:
        if d.kind == "privacy":
            return True
        if d.kind == "hubspot":
            return self.sync.on_hubspot_delete != "ignore"
        if d.kind == "brevo":
            return self.sync.on_brevo_delete == "archive"
        return False

    async def _guard(self, deletions: Sequence[_Deletion]) -> str | None:
        """The guard's refusal for these deletions, or ``None`` (always ``None`` with force)."""
        n = sum(1 for d in deletions if self._is_destructive(d))
        if n == 0:
            return None
        async with self.engine.sessions() as s:
            linked = await ledger.count_links(s, self.object_type)
        why = planner.guard_deletions(
            n, linked, self.sync.max_delete_share, min_count=GUARD_MIN_COUNT
        )
        if why is None:
            return None
        if self.force:
            self.log.warning("events.guard_forced", deletions=n, linked=linked)
            return None
        message = f"{GUARD_PREFIX}{self.object_type}: {why} (sync.max_delete_share)"
        self.log.error("events.guard_refused", deletions=n, linked=linked, reason=message)
        return message

    # --- the worker's entry -------------------------------------------------------------------

    async def apply(self, items: Sequence[InboxItem]) -> EventsResult:
        """Carry out the semantics of one object type's claimed events (see the module
        docstring); the engine pass that follows reads what is not :meth:`EventsResult.settled`.
        """
        result = EventsResult()
        by_kind: dict[EventKind, list[InboxItem]] = {}
        for item in items:
            by_kind.setdefault(event_kind(item), []).append(item)
        changes = by_kind.get("change", [])
        if changes:
            await self._echoes(changes, result)

        deletions: list[_Deletion] = []
        await self._plan_privacy(by_kind.get("privacy", []), deletions, result)
        await self._plan_hubspot(
            by_kind.get("delete", []) + by_kind.get("restore", []), deletions, result
        )
        await self._plan_brevo_deleted(by_kind.get("delete", []), deletions, result)
        refused = await self._guard(deletions)
        if refused is not None:
            result.refused = refused
            for d in deletions:
                for i in d.items:
                    result.held[i] = refused
            result.counts["deletions_refused"] += sum(
                1 for d in deletions if self._is_destructive(d)
            )
        else:
            await self._carry(deletions, result)

        for item in by_kind.get("merge", []):
            try:
                await self._merge(item, result)
            except Exception as e:  # the event is retried; the others go on
                result.failed[item.id] = scrub(f"merge: {type(e).__name__}: {e}")
        optouts = by_kind.get("optout", [])
        if optouts:
            await self._optouts(optouts, result)
        if changes:
            await self._resubscriptions(changes, result)
        return result

    # --- echoes -------------------------------------------------------------------------------

    def _ours_hubspot(self, p: Mapping[str, Any]) -> bool:
        if p.get("changeSource") != "INTEGRATION":
            return False
        source, app = p.get("sourceId"), p.get("appId")
        return source is None or app is None or str(source) == str(app)

    def _ours_brevo(self, p: Mapping[str, Any]) -> bool:
        name = p.get("api_key_name")
        return (
            self.brevo_key_name is not None
            and isinstance(name, str)
            and name == (self.brevo_key_name)
        )

    async def _echoes(self, items: Sequence[InboxItem], result: EventsResult) -> None:
        """Complete without a read the events the hints and the ledger both call ours."""
        hinted = [
            i
            for i in items
            if (
                i.source == "hubspot"
                and i.event_type.endswith(".propertyChange")
                and self._ours_hubspot(i.payload)
            )
            or (
                i.source == "brevo"
                and event_name(i.event_type) == "contactUpdated"
                and self._ours_brevo(i.payload)
            )
        ]
        if not hinted:
            return
        async with self.engine.sessions() as s:
            links = await ledger.load_links(
                s,
                self.object_type,
                hubspot_ids=[i.object_id for i in hinted if i.source == "hubspot"],
                brevo_ids=[b for i in hinted if i.source == "brevo" if (b := brevo_contact_id(i))],
                identity_keys=[e for i in hinted if i.source == "brevo" if (e := brevo_email(i))],
            )
        by_hs = {lk.hubspot_id: lk for lk in links if lk.hubspot_id}
        by_br = {lk.brevo_id: lk for lk in links if lk.brevo_id}
        by_key = {lk.identity_key: lk for lk in links if lk.identity_key}
        for item in hinted:
            if item.source == "hubspot":
                link = by_hs.get(item.object_id)
                echo = link is not None and self._hubspot_echo(item.payload, link)
            else:
                bid, email = brevo_contact_id(item), brevo_email(item)
                link = (by_br.get(bid) if bid else None) or (by_key.get(email) if email else None)
                echo = link is not None and self._brevo_echo(item.payload, link)
            if echo:
                result.echoes.add(item.id)
                result.counts["echo_hint_skipped"] += 1
            else:
                result.counts["echo_hint_unconfirmed"] += 1

    def _hubspot_echo(self, p: Mapping[str, Any], link: ledger.LinkRecord) -> bool:
        prop, value = p.get("propertyName"), p.get("propertyValue")
        if not isinstance(prop, str) or not isinstance(value, str):
            return False
        marker = link.marker(HS_MARKER + prop)
        if marker is not None:
            return marker.value_hash == planner.value_hash(value)
        fields = [f for f in self.mapping.fields if f.hubspot == prop]
        if not fields:
            return False
        mapped = self.mapping.to_brevo({prop: value})
        return all(self._matches(link, f.key, mapped.values, "hubspot") for f in fields)

    def _brevo_echo(self, p: Mapping[str, Any], link: ledger.LinkRecord) -> bool:
        content = p.get("content")
        changed: dict[str, Any] = {}
        for part in content if isinstance(content, list) else [content]:
            if not isinstance(part, dict):
                return False
            changed.update(part)
        if not changed:
            return False
        mapped = self.mapping.to_hubspot(changed)
        for name in changed:
            if name.lower() in _BREVO_OWN_FIELDS:
                continue
            fields = [f for f in self.mapping.fields if f.brevo.upper() == name.upper()]
            if not fields or not all(
                self._matches(link, f.key, mapped.values, "brevo") for f in fields
            ):
                return False
        return True

    @staticmethod
    def _matches(
        link: ledger.LinkRecord,
        key: str,
        values: Mapping[str, str | None],
        written_to: planner.Side,
    ) -> bool:
        base = link.bases.get(key)
        if base is None or base.written_to != written_to or key not in values:
            return False
        return base.value_hash == planner.value_hash(values[key])

    # --- deletions: planning (reads only) -----------------------------------------------------

    async def _plan_privacy(
        self, items: Sequence[InboxItem], out: list[_Deletion], result: EventsResult
    ) -> None:
        by_id: dict[str, list[int]] = {}
        for item in items:
            by_id.setdefault(item.object_id, []).append(item.id)
        if not by_id:
            return
        async with self.engine.sessions() as s:
            links = await ledger.load_links(s, self.object_type, hubspot_ids=list(by_id))
        linked = {lk.hubspot_id: lk for lk in links}
        for hs_id, ids in by_id.items():
            result.done.update(ids)
            out.append(_Deletion("privacy", linked.get(hs_id), ids, hs_id))

    async def _plan_hubspot(
        self, items: Sequence[InboxItem], out: list[_Deletion], result: EventsResult
    ) -> None:
        """Deletions and restores, judged by HubSpot's state now (events are not ordered)."""
        wanted = [i for i in items if i.source == "hubspot"]
        if not wanted:
            return
        purged = {d.hubspot_id for d in out if d.kind == "privacy"}
        by_id: dict[str, list[InboxItem]] = {}
        for item in wanted:
            if item.object_id in purged:  # privacyDeletion also fires deletion
                result.done.add(item.id)
                continue
            by_id.setdefault(item.object_id, []).append(item)
        if not by_id:
            return
        live, archived = await self._hubspot_state(list(by_id))
        async with self.engine.sessions() as s:
            links = await ledger.load_links(s, self.object_type, hubspot_ids=list(by_id))
        linked = {lk.hubspot_id: lk for lk in links}
        for hs_id, events in by_id.items():
            ids = [e.id for e in events]
            link = linked.get(hs_id)
            if hs_id in live:  # restored (or a stale deletion): sync it again
                if link is not None and link.marker(ledger.DELETED_MARKER) is not None:
                    try:
                        await self._restore(link, result)
                    except Exception as e:
                        for i in ids:
                            result.failed[i] = scrub(f"restore: {type(e).__name__}: {e}")
                        continue
                if hs_id not in result.read_hubspot:
                    result.read_hubspot.append(hs_id)
                if any(event_kind(e) == "delete" for e in events):
                    result.counts["deletion_found_live"] += 1
                continue
            result.done.update(ids)
            if any(event_kind(e) == "restore" for e in events) and hs_id not in archived:
                result.counts["restore_not_found"] += 1
            if hs_id not in archived:
                # merged away or GDPR-deleted: the merge / privacyDeletion event handles it
                result.counts["deletion_not_archived"] += 1
            elif link is None:
                result.counts["deletion_unlinked"] += 1
            elif link.marker(ledger.DELETED_MARKER) is not None:
                result.counts["deletion_already_handled"] += 1
            else:
                out.append(_Deletion("hubspot", link, ids, hs_id))

    async def _hubspot_state(self, ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """(live ids, archived ids) among ``ids``: a merged-away id reads as its survivor,
        whose id differs, so it is in neither."""
        hs = self.engine.hubspot
        read = await hs.batch_read(self.object_type, ids, ["email"])
        live = {r.id for r in read.results if not r.archived} & set(ids)
        rest = [i for i in ids if i not in live]
        archived: set[str] = set()
        if rest:
            old = await hs.batch_read(self.object_type, rest, ["email"], archived=True)
            archived = {r.id for r in old.results} & set(rest)
        return live, archived

    async def _plan_brevo_deleted(
        self, items: Sequence[InboxItem], out: list[_Deletion], result: EventsResult
    ) -> None:
        wanted = [i for i in items if i.source == "brevo"]
        if not wanted:
            return
        for item in wanted:
            result.done.add(item.id)
        async with self.engine.sessions() as s:
            links = await ledger.load_links(
                s,
                self.object_type,
                brevo_ids=[b for i in wanted if (b := brevo_contact_id(i))],
                identity_keys=[e for i in wanted if (e := brevo_email(i))],
            )
        by_br = {lk.brevo_id: lk for lk in links if lk.brevo_id}
        by_key = {lk.identity_key: lk for lk in links if lk.identity_key}
        chosen: dict[int, _Deletion] = {}
        for item in wanted:
            bid, email = brevo_contact_id(item), brevo_email(item)
            link = (by_br.get(bid) if bid else None) or (by_key.get(email) if email else None)
            if link is None or link.brevo_id is None:
                result.counts["deletion_unlinked"] += 1
                continue
            d = chosen.setdefault(link.id, _Deletion("brevo", link, [], link.hubspot_id))
            d.items.append(item.id)
        if not chosen:
            return
        ids = [int(d.link.brevo_id) for d in chosen.values() if d.link and d.link.brevo_id]
        still = {str(c.id) for c in await self.engine.brevo.get_contacts_by_ids(ids)}
        for d in chosen.values():
            assert d.link is not None
            if d.link.brevo_id in still:  # the e-mail's old contact: the linked one lives on
                result.counts["deletion_found_live"] += 1
                continue
            out.append(d)

    # --- deletions: carrying them out ---------------------------------------------------------

    async def _carry(self, deletions: Sequence[_Deletion], result: EventsResult) -> None:
        to_archive: list[_Deletion] = []
        for d in deletions:
            try:
                if d.kind == "privacy":
                    await self._privacy(d, result)
                elif d.kind == "hubspot":
                    await self._hubspot_deleted(d, result)
                elif d.kind == "brevo":
                    if self.sync.on_brevo_delete == "archive" and d.hubspot_id:
                        to_archive.append(d)
                    else:
                        await self._drop(d)
                        result.counts["brevo_deletion_ignored"] += 1
                else:
                    await self._drop(d)
                    result.counts["links_dropped"] += 1
            except Exception as e:
                for i in d.items:
                    result.failed[i] = scrub(f"{d.kind} deletion: {type(e).__name__}: {e}")
                self.log.warning("events.deletion_failed", what=d.describe(), error=scrub(str(e)))
        if to_archive:
            try:
                await self.engine.hubspot.archive(
                    self.object_type, [d.hubspot_id for d in to_archive if d.hubspot_id]
                )
            except Exception as e:
                for d in to_archive:
                    for i in d.items:
                        result.failed[i] = scrub(f"hubspot archive: {type(e).__name__}: {e}")
                return
            for d in to_archive:
                await self._drop(d)
            result.counts["hubspot_archived"] += len(to_archive)

    async def _drop(self, d: _Deletion) -> None:
        if d.link is None:
            return
        async with self.engine.sessions() as s, s.begin():
            await ledger.delete_link(s, d.link.id)

    async def _mark_deleted(
        self, link: ledger.LinkRecord, policy: str, written_to: planner.Side | None
    ) -> None:
        entry = _marker(f"deleted:{policy}", "hubspot", written_to, self.clock())
        async with self.engine.sessions() as s, s.begin():
            await ledger.record_bases(s, link.id, {ledger.DELETED_MARKER: entry})

    async def _hubspot_deleted(self, d: _Deletion, result: EventsResult) -> None:
        """Carry a confirmed HubSpot deletion to Brevo, per ``sync.on_hubspot_delete``."""
        link = d.link
        assert link is not None
        policy = self.sync.on_hubspot_delete
        brevo = self.engine.brevo
        contact = None
        if link.brevo_id is not None:
            found = await brevo.get_contacts_by_ids([int(link.brevo_id)])
            contact = found[0] if found else None
        if contact is None:  # nothing left on either side: the link has no use
            await self._drop(d)
            result.counts["links_dropped"] += 1
            return
        if policy == "delete":
            await brevo.delete_contact(contact.id, "id")
            await self._drop(d)
            result.counts["brevo_deleted"] += 1
        elif policy == "blocklist":
            ours = not contact.email_blacklisted
            if ours:
                await brevo.update_contact(contact.id, "id", email_blacklisted=True)
            await self._mark_deleted(link, policy, "brevo" if ours else None)
            result.counts["brevo_blocklisted"] += 1
        else:
            await self._mark_deleted(link, policy, None)
            result.counts["hubspot_deletion_ignored"] += 1
        self.log.info("events.hubspot_deleted", link=link.id, policy=policy)

    async def _restore(self, link: ledger.LinkRecord, result: EventsResult) -> None:
        """A restored HubSpot record: un-blocklist what we blocklisted, drop the marker."""
        marker = link.marker(ledger.DELETED_MARKER)
        if marker is None:
            return
        if marker.written_to == "brevo" and link.brevo_id and not self._opted_out(link):
            await self.engine.brevo.update_contact(
                int(link.brevo_id), "id", email_blacklisted=False
            )
            result.counts["brevo_unblocklisted"] += 1
        async with self.engine.sessions() as s, s.begin():
            await ledger.delete_bases(s, link.id, [ledger.DELETED_MARKER])
        result.counts["restored"] += 1
        self.log.info("events.restored", link=link.id)

    def _opted_out(self, link: ledger.LinkRecord) -> bool:
        marker = link.marker(HS_MARKER + self.sync.optout.property)
        return marker is not None and marker.value_hash == planner.value_hash("true")

    async def _privacy(self, d: _Deletion, result: EventsResult) -> None:
        """GDPR: the Brevo contact deleted, the person purged from every table at once."""
        brevo = self.engine.brevo
        contact: BrevoContact | None = None
        if d.link is not None and d.link.brevo_id is not None:
            found = await brevo.get_contacts_by_ids([int(d.link.brevo_id)])
            contact = found[0] if found else None
        if contact is None and d.hubspot_id:
            contact = await brevo.get_contact(d.hubspot_id, "ext_id")
        if contact is not None:
            await brevo.delete_contact(contact.id, "id")
            result.counts["brevo_deleted"] += 1
        emails = [e for e in (normalise_email(contact.email) if contact else None,) if e]
        person = purge.Person(
            self.object_type,
            hubspot_ids=tuple(i for i in (d.hubspot_id,) if i),
            brevo_ids=(str(contact.id),) if contact is not None else (),
            emails=tuple(emails),
        )
        async with self.engine.sessions() as s, s.begin():
            rows = await purge.purge_person(s, person)
        result.counts["privacy_purged"] += 1
        # never the e-mail: the link id and how many rows went
        self.log.info(
            "events.privacy_purged",
            link=d.link.id if d.link else None,
            brevo_deleted=contact is not None,
            rows=sum(rows.values()),
        )

    # --- engine passes: linked records that vanished ------------------------------------------

    async def settle_gone(self, out: Outcome, *, dry_run: bool = False) -> None:
        """The linked records a pull, resync or worker pass found gone, carried over like
        their events would be (confirmed first, under the guard over the whole pass)."""
        seen: dict[int, GoneLink] = {}
        for g in out.gone:
            seen.setdefault(g.link.id, g)
        out.gone.clear()
        deletions: list[_Deletion] = []
        hs_gone = [g for g in seen.values() if g.side == "hubspot" and g.link.hubspot_id]
        if hs_gone:
            ids = [g.link.hubspot_id for g in hs_gone if g.link.hubspot_id]
            _, archived = await self._hubspot_state(ids)
            for g in hs_gone:
                if g.link.hubspot_id in archived:
                    deletions.append(_Deletion("hubspot", g.link, [], g.link.hubspot_id))
                else:
                    out.counts["gone_unconfirmed"] += 1
        br_gone = [g for g in seen.values() if g.side == "brevo" and g.link.brevo_id]
        if br_gone:
            ids_br = [int(g.link.brevo_id) for g in br_gone if g.link.brevo_id]
            still = {str(c.id) for c in await self.engine.brevo.get_contacts_by_ids(ids_br)}
            for g in br_gone:
                if g.link.brevo_id in still:
                    out.counts["gone_unconfirmed"] += 1
                else:
                    deletions.append(_Deletion("brevo", g.link, [], g.link.hubspot_id))
        for g in seen.values():
            if g.side == "both":
                deletions.append(_Deletion("drop", g.link, [], g.link.hubspot_id))
        if not deletions:
            return
        destructive = [d for d in deletions if self._is_destructive(d)]
        if dry_run:
            out.counts["deletions_planned"] += len(destructive)
            return
        refused = await self._guard(deletions)
        if refused is not None:
            await self._hold(destructive, refused, out)
            deletions = [d for d in deletions if not self._is_destructive(d)]
        result = EventsResult()
        await self._carry(deletions, result)
        out.counts.update(result.counts)
        for error in dict.fromkeys(result.failed.values()):
            out.failures.append(error)

    async def _hold(self, refused: Sequence[_Deletion], why: str, out: Outcome) -> None:
        """A refused pass: a failure on the pass and one dead letter per record, for a retry."""
        out.failures.append(why)
        out.counts["deletions_refused"] += len(refused)
        out.counts["failed"] += len(refused)
        now = self.clock()
        async with self.engine.sessions() as s, s.begin():
            for d in refused:
                link = d.link
                assert link is not None
                await deadletters.add(
                    s,
                    system="hubspot" if d.kind == "hubspot" else "brevo",
                    object_type=self.object_type,
                    object_id=link.hubspot_id if d.kind == "hubspot" else link.brevo_id,
                    identity_key=link.identity_key,
                    operation="delete",
                    payload={"hubspot_id": link.hubspot_id, "brevo_id": link.brevo_id},
                    error=why,
                    attempts=1,
                    now=now,
                )

    # --- merges -------------------------------------------------------------------------------

    async def _merge(self, item: InboxItem, result: EventsResult) -> None:
        """The link moves to the survivor; a second linked Brevo contact is merged away.

        Brevo first, the store last: a retry after a crash finds the duplicate gone (reads
        and a 404 on delete) and moves the link then.
        """
        survivor, losers = merge_ids(item)
        for loser in losers:
            async with self.engine.sessions() as s:
                found = await ledger.load_links(s, self.object_type, hubspot_ids=[loser, survivor])
            old = next((lk for lk in found if lk.hubspot_id == loser), None)
            new = next((lk for lk in found if lk.hubspot_id == survivor), None)
            if old is None:
                continue
            if new is not None and old.brevo_id and new.brevo_id and old.brevo_id != new.brevo_id:
                await self._merge_brevo(int(old.brevo_id), int(new.brevo_id), result)
            async with self.engine.sessions() as s, s.begin():
                await ledger.move_hubspot_id(s, self.object_type, loser, survivor, now=self.clock())
            result.counts["links_moved"] += 1
            self.log.info("events.merged", link=(new or old).id, dropped=old.id if new else None)

    async def _merge_brevo(self, duplicate: int, survivor: int, result: EventsResult) -> None:
        """Fold the duplicate Brevo contact into the survivor's, then delete it."""
        brevo = self.engine.brevo
        found = {c.id: c for c in await brevo.get_contacts_by_ids([duplicate, survivor])}
        dup, keep = found.get(duplicate), found.get(survivor)
        if dup is None:
            return  # merged away already (a retry)
        if keep is None:
            result.counts["merge_duplicate_kept"] += 1  # nothing to fold into: keep it
            return
        fill = {
            name: value
            for name, value in dup.attributes.items()
            if name.upper() not in ("EMAIL", "EXT_ID")
            and value not in (None, "")
            and keep.attributes.get(name) in (None, "")
        }
        lists = [i for i in dup.list_ids if i not in keep.list_ids]
        blocklist = dup.email_blacklisted and not keep.email_blacklisted
        if fill or lists or blocklist:
            await brevo.update_contact(
                keep.id,
                "id",
                attributes=fill or None,
                list_ids=lists,
                email_blacklisted=True if blocklist else None,
            )
        await brevo.delete_contact(dup.id, "id")
        result.counts["brevo_duplicates_merged"] += 1

    # --- opt-outs -----------------------------------------------------------------------------

    async def _ensure_optout_properties(self) -> None:
        """Create the ``sync.optout`` HubSpot properties that are missing (once per run)."""
        if self._optout_ready:
            return
        hs = self.engine.hubspot
        have = {p.name for p in await hs.list_properties(self.object_type)}
        o = self.sync.optout
        group = "contactinformation"
        specs: list[dict[str, Any]] = [
            {
                "name": o.property,
                "label": "Opted out in Brevo",
                "type": "bool",
                "fieldType": "booleancheckbox",
                "groupName": group,
                "options": [
                    {"label": "Yes", "value": "true", "displayOrder": 0},
                    {"label": "No", "value": "false", "displayOrder": 1},
                ],
                "description": "Set by the Brevo sync: unsubscribed, hard bounce or spam.",
            },
            {
                "name": o.reason_property,
                "label": "Brevo opt-out reason",
                "type": "string",
                "fieldType": "text",
                "groupName": group,
                "description": "unsubscribed, hard_bounce or spam (set by the Brevo sync)",
            },
            {
                "name": o.date_property,
                "label": "Brevo opt-out date",
                "type": "date",
                "fieldType": "date",
                "groupName": group,
                "description": "When Brevo recorded the opt-out (set by the Brevo sync)",
            },
        ]
        for spec in specs:
            if spec["name"] not in have:
                await hs.create_property(self.object_type, spec)
                self.log.info("events.optout_property_created", property=spec["name"])
        self._optout_ready = True

    @staticmethod
    def _event_date(p: Mapping[str, Any], fallback: datetime) -> str:
        ts = p.get("ts_event") or p.get("ts")
        if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > 0:
            return datetime.fromtimestamp(ts, UTC).date().isoformat()
        return fallback.astimezone(UTC).date().isoformat()

    async def _optouts(self, items: Sequence[InboxItem], result: EventsResult) -> None:
        """Mark the HubSpot contacts of Brevo unsubscribes, hard bounces and spam complaints."""
        if self.object_type != "contacts":
            return
        latest: dict[str, InboxItem] = {}
        for item in items:
            email = brevo_email(item)
            if email is not None:
                latest[email] = item  # claimed in order: the last one wins
        if not latest:
            return
        try:
            await self._ensure_optout_properties()
            async with self.engine.sessions() as s:
                links = await ledger.load_links(s, self.object_type, identity_keys=list(latest))
            by_key = {lk.identity_key: lk for lk in links if lk.identity_key and lk.hubspot_id}
            unlinked = [e for e in latest if e not in by_key]
            hs_ids: dict[str, str] = {e: lk.hubspot_id for e, lk in by_key.items() if lk.hubspot_id}
            if unlinked:
                found = await self.engine.hubspot.batch_read(
                    self.object_type, unlinked, ["email"], id_property="email"
                )
                for r in found.results:
                    key = normalise_email(r.properties.get("email"))
                    if key in latest and not r.archived:
                        hs_ids[key] = r.id
            o = self.sync.optout
            values: dict[str, dict[str, str]] = {}
            for email, hs_id in hs_ids.items():
                item = latest[email]
                reason = OPTOUT_REASONS[event_name(item.event_type)]
                values[hs_id] = {
                    o.property: "true",
                    o.reason_property: reason,
                    o.date_property: self._event_date(item.payload, self.clock()),
                }
            linked = {lk.hubspot_id: lk for lk in by_key.values() if lk.hubspot_id}
            await self._write_hubspot_marks(values, linked)
        except Exception as e:
            for item in items:
                result.failed[item.id] = scrub(f"opt-out: {type(e).__name__}: {e}")
            return
        result.counts["hubspot_opted_out"] += len(values)
        result.counts["optout_unmatched"] += len(latest) - len(values)

    async def _write_hubspot_marks(
        self,
        values: Mapping[str, Mapping[str, str]],
        links: Mapping[str, ledger.LinkRecord],
    ) -> None:
        """Write properties outside the mapping, with their markers (echo check, restores)."""
        if not values:
            return
        written = await self.engine.hubspot.batch_update(self.object_type, values)
        if written.errors:
            raise RuntimeError("; ".join(f"{e.category or ''} {e.message}" for e in written.errors))
        now = self.clock()
        async with self.engine.sessions() as s, s.begin():
            for hs_id, props in values.items():
                link = links.get(hs_id)
                if link is None:
                    continue
                await ledger.record_bases(
                    s,
                    link.id,
                    {HS_MARKER + k: _marker(v, "brevo", "hubspot", now) for k, v in props.items()},
                )

    async def _resubscriptions(self, items: Sequence[InboxItem], result: EventsResult) -> None:
        """A Brevo contact no longer blocklisted (not by us): clear the HubSpot opt-out only
        with the mapping's ``optout: {resubscribe: true}``."""
        wanted = [
            i
            for i in items
            if i.source == "brevo"
            and event_name(i.event_type) == "contactUpdated"
            and not self._ours_brevo(i.payload)
            and _unblocklisted(i.payload)
        ]
        if not wanted or self.object_type != "contacts":
            return
        async with self.engine.sessions() as s:
            links = await ledger.load_links(
                s,
                self.object_type,
                brevo_ids=[b for i in wanted if (b := brevo_contact_id(i))],
                identity_keys=[e for i in wanted if (e := brevo_email(i))],
            )
        marked = {lk.hubspot_id: lk for lk in links if lk.hubspot_id and self._opted_out(lk)}
        if not marked:
            return
        if not self.mapping.resubscribe:
            result.counts["resubscription_not_synced"] += len(marked)
            return
        o = self.sync.optout
        today = self.clock().astimezone(UTC).date().isoformat()
        values = {
            hs_id: {o.property: "false", o.reason_property: "", o.date_property: today}
            for hs_id in marked
        }
        try:
            await self._ensure_optout_properties()
            await self._write_hubspot_marks(values, marked)
        except Exception as e:
            for item in wanted:
                result.failed[item.id] = scrub(f"resubscription: {type(e).__name__}: {e}")
            return
        result.counts["hubspot_resubscribed"] += len(values)


def _unblocklisted(payload: Mapping[str, Any]) -> bool:
    """Whether a ``contactUpdated`` says the contact is no longer blocklisted."""
    content = payload.get("content")
    for part in content if isinstance(content, list) else [content]:
        if isinstance(part, dict):
            for k, v in part.items():
                if k.lower() == "emailblacklisted" and v is False:
                    return True
    return False


def attach(engine: SyncEngine, settings: Settings) -> EventSemantics:
    """The engine's :class:`EventSemantics` (created and set as its ``deletions`` once)."""
    if isinstance(engine.deletions, EventSemantics):
        return engine.deletions
    semantics = EventSemantics(
        engine, settings.sync, brevo_key_name=settings.connectors.brevo.api_key_name
    )
    engine.deletions = semantics
    return semantics


__all__ = [
    "BREVO_KINDS",
    "GUARD_MIN_COUNT",
    "GUARD_PREFIX",
    "HS_MARKER",
    "HUBSPOT_KINDS",
    "OPTOUT_REASONS",
    "EventKind",
    "EventSemantics",
    "EventsResult",
    "attach",
    "brevo_contact_id",
    "brevo_email",
    "event_kind",
    "merge_ids",
]
