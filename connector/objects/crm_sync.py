"""Companies and deals, two-way: one :class:`CrmObjectSync` per object type.

A pass takes records of either side (a pull's batch, a resync's full listings, ids named by
webhooks) and does what the contact engine does, with Brevo's CRM endpoints:

1. **pair** them by the links table, else by identity when the mapping has one (companies:
   HubSpot ``domain`` ⇄ the Brevo company's ``domain``, normalised); read the missing
   counterparts in batches (HubSpot ``batch/read``; Brevo by id, or one list scan when that
   costs fewer of its 100 CRM calls an hour);
2. **plan** each pair with :func:`connector.plan.plan_pair` (per-field direction, conflict
   rule, ledger base);
3. **write** HubSpot through ``batch/create`` and ``batch/update`` (100 per call) and Brevo
   through ``/companies/import`` or ``/crm/deals/import`` (one call for a thousand records),
   then list what changed since the import to learn the new ids and confirm what Brevo kept;
4. **record** links, ledger bases, history and dead letters in one transaction, with the sync
   events handed to ``on_events`` inside it;
5. **associations** both ways (:mod:`connector.objects.crm_links`), and for companies the
   ``COMPANY_NAME`` of the contacts whose primary company it is.

Deletions collected in ``Outcome.gone`` are settled by :meth:`CrmObjectSync.settle_gone` under
the mass-delete guard (:mod:`connector.objects.crm_gone`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector import plan as planner
from connector.brevo.client import BrevoClient
from connector.brevo.crm import BrevoCrm
from connector.brevo.crm_models import BrevoCompany, BrevoDeal, CrmImportRow, CrmKind
from connector.engine import (
    EventsCallback,
    GoneLink,
    Mode,
    Outcome,
    hubspot_modified,
    pair_events,
    pass_dead_letters,
    pass_history,
)
from connector.errors import ApiError
from connector.hubspot.client import HubSpotClient, last_modified_property
from connector.hubspot.crm import HubSpotCrm
from connector.hubspot.models import HubSpotObject
from connector.mapping import MappedRecord, Mapping
from connector.objects.base import ObjectResyncMode, StopCheck, System
from connector.store import cursors, history
from connector.store import links as ledger
from connector.store.models import utcnow
from connector.transforms import text_of

log = structlog.get_logger(__name__)

BrevoRecord = BrevoCompany | BrevoDeal
AfterPass = Callable[[str, list[str]], Awaitable[None]]

SKEW = timedelta(seconds=60)
"""Brevo's list is read from this long before a scan or an import started (clock skew)."""
HUBSPOT_BATCH = 100
BREVO_BATCH = 1000
SEARCH_IN_MAX = 100
"""Values per ``IN`` filter of a HubSpot search (identity look-ups)."""
READBACK_ROUNDS = 4


@dataclass(frozen=True)
class CrmKindSpec:
    """How one object type looks on each side."""

    object_type: str
    brevo_kind: CrmKind
    #: the Brevo attribute a new record must have (its name)
    name_attribute: str
    #: HubSpot object types whose associations are synced with Brevo links
    associated: tuple[str, ...]


KINDS: dict[str, CrmKindSpec] = {
    "companies": CrmKindSpec("companies", "company", "name", ("contacts",)),
    "deals": CrmKindSpec("deals", "deal", "deal_name", ("contacts", "companies")),
}


def normalise_domain(value: Any) -> str | None:
    """A company domain as an identity key: lower case, no scheme, ``www.``, path or port."""
    text = text_of(value)
    if text is None:
        return None
    s = text.strip().lower()
    for prefix in ("https://", "http://", "//"):
        if s.startswith(prefix):
            s = s[len(prefix) :]
    s = s.split("/", 1)[0].split("?", 1)[0].split(":", 1)[0].rstrip(".")
    s = s.removeprefix("www.")
    return s or None


@dataclass
class CrmPair:
    """One record pair under construction."""

    link: ledger.LinkRecord | None = None
    hubspot: HubSpotObject | None = None
    brevo: BrevoRecord | None = None
    key: str | None = None
    plan: planner.PairPlan | None = None
    hs_mapped: MappedRecord | None = None
    br_mapped: MappedRecord | None = None
    failed: bool = False
    error: str = ""
    failed_on: set[str] = field(default_factory=set)

    def fail(self, side: planner.Side, error: str) -> None:
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
            return self.brevo.id
        return self.link.brevo_id if self.link else None


class CrmObjectSync:
    """Companies or deals kept in step both ways (an :class:`~connector.objects.base.ObjectSync`).

    ``lookback``: how far before its cursor an incremental HubSpot pull reads again.
    ``import_list_ids``: the Brevo list the contacts import (``COMPANY_NAME``) puts contacts
    in (Brevo requires one). ``on_events``: the contact engine's callback type, called inside
    the transaction that records a pass; ``after_pass(object_type, hubspot_ids)`` runs after
    each pass that wrote (the roll-ups hang on it).
    """

    pull_systems: tuple[System, ...] = ("hubspot", "brevo")

    def __init__(
        self,
        *,
        mapping: Mapping,
        hubspot: HubSpotClient,
        brevo: BrevoClient,
        sessions: async_sessionmaker[AsyncSession],
        crm: BrevoCrm | None = None,
        hubspot_crm: HubSpotCrm | None = None,
        direction: planner.RunDirection = "bidirectional",
        lookback: timedelta = timedelta(seconds=120),
        on_hubspot_delete: Literal["delete", "blocklist", "ignore"] = "blocklist",
        on_brevo_delete: Literal["archive", "ignore"] = "ignore",
        max_delete_share: float = 0.2,
        import_list_ids: Sequence[int] = (),
        import_poll_every: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_events: EventsCallback | None = None,
        company_name_attribute: str | None = "COMPANY_NAME",
    ) -> None:
        if mapping.object not in KINDS:
            raise ValueError(f"CrmObjectSync handles {', '.join(KINDS)}, not {mapping.object}")
        self.spec = KINDS[mapping.object]
        self.object_type = mapping.object
        self.mapping = mapping
        self.hubspot = hubspot
        self.brevo = brevo
        self.crm = crm or BrevoCrm(brevo)
        self.hubspot_crm = hubspot_crm or HubSpotCrm(hubspot)
        self.sessions = sessions
        self.direction = direction
        self.lookback = lookback
        self.on_hubspot_delete = on_hubspot_delete
        self.on_brevo_delete = on_brevo_delete
        self.max_delete_share = max_delete_share
        self.import_list_ids = list(import_list_ids)
        self.import_poll_every = import_poll_every
        self.clock = clock
        self.sleep = sleep
        self.on_events = on_events
        self.company_name_attribute = (
            company_name_attribute if self.object_type == "companies" else None
        )
        self.on_pass_counts: Callable[[str, dict[str, int]], None] | None = None
        self.after_pass: AfterPass | None = None
        #: ``--force``: let deletions past the mass-delete guard
        self.force = False
        self.rules = mapping.rules()
        self.modified_prop = last_modified_property(self.object_type)
        self.hs_props = list(dict.fromkeys([*mapping.hubspot_properties(), self.modified_prop]))
        ident = mapping.identity
        self.identity_hubspot = ident.hubspot if ident is not None else None
        self.identity_brevo = ident.brevo if ident is not None else None
        self.name_key = next(
            (f.key for f in mapping.fields if f.brevo == self.spec.name_attribute), None
        )
        self.brevo_total: int | None = None

    # --- the protocol --------------------------------------------------------------------------

    async def pull(self, system: System, *, stop: StopCheck | None = None) -> Outcome:
        """One incremental pull of ``system``; a first pull is a full resync."""
        async with self.sessions() as s:
            cursor = await cursors.get_cursor(s, system, self.object_type)
        if cursor.last_value is None:
            # a full resync reads both sides: it starts every cursor not started yet, so the
            # other side's first pull is incremental (no second full read)
            started = self.clock()
            out = await self.resync(mode="initial")
            async with self.sessions() as s, s.begin():
                for side in self.pull_systems:
                    current = await cursors.get_cursor(s, side, self.object_type)
                    if current.last_value is None:
                        mark = started - SKEW if side == "brevo" else started
                        await cursors.save_cursor(s, cursors.Cursor(side, self.object_type, mark))
            return out
        if system == "hubspot":
            return await self._pull_hubspot(cursor, stop)
        return await self._pull_brevo(cursor, stop)

    async def _pull_hubspot(self, cursor: cursors.Cursor, stop: StopCheck | None) -> Outcome:
        out = Outcome()
        run_start = self.clock()
        since, until = cursors.window(cursor, self.lookback, run_start)
        assert since is not None
        batch: list[tuple[datetime, HubSpotObject]] = []

        async def flush() -> None:
            nonlocal cursor
            if not batch:
                return
            records = {o.id: o for _, o in batch}
            await self._pass(records, {}, mode="incremental", out=out, complete=False)
            cursor = cursors.advance(cursor, [(m, o.id) for m, o in batch], run_start)
            async with self.sessions() as s, s.begin():
                await cursors.save_cursor(s, cursor)
            batch.clear()

        stream = self.hubspot.search_modified(
            self.object_type, _ms(since), _ms(until), self.hs_props
        )
        async for obj in stream:
            modified = hubspot_modified(obj, self.modified_prop)
            if cursors.is_seen_at_boundary(cursor, modified, obj.id):
                continue
            batch.append((modified, obj))
            if len(batch) >= HUBSPOT_BATCH:
                await flush()
                if stop is not None and stop():
                    break
        await flush()
        await self.settle_gone(out)
        return out

    async def _pull_brevo(self, cursor: cursors.Cursor, stop: StopCheck | None) -> Outcome:
        """Brevo lists by creation, not modification: the cursor moves only when the window
        was read to its end (to the scan's start, less a clock-skew margin)."""
        out = Outcome()
        run_start = self.clock()
        stream = self._brevo_stream(cursor.last_value)
        batch: dict[str, BrevoRecord] = {}
        stopped = False
        async for record in stream:
            batch[record.id] = record
            if len(batch) >= BREVO_BATCH:
                await self._pass({}, batch, mode="incremental", out=out, complete=False)
                batch = {}
                if stop is not None and stop():
                    stopped = True
                    break
        if batch:
            await self._pass({}, batch, mode="incremental", out=out, complete=False)
        if not stopped:
            moved = cursors.Cursor("brevo", self.object_type, run_start - SKEW)
            async with self.sessions() as s, s.begin():
                await cursors.save_cursor(s, moved)
        await self.settle_gone(out)
        return out

    async def resync(self, *, mode: ObjectResyncMode = "resync", dry_run: bool = False) -> Outcome:
        """Read both sides in full (HubSpot pages of 100, Brevo pages of 1,000), pair, plan
        and write the differences (``dry_run``: plan only)."""
        hs = {o.id: o async for o in self.hubspot.iter_objects(self.object_type, self.hs_props)}
        br = {r.id: r async for r in self._brevo_stream(None)}
        self.brevo_total = len(br)
        out = Outcome()
        pass_mode: Mode = "reconcile" if mode == "reconcile" else "resync"
        await self._pass(hs, br, mode=pass_mode, out=out, complete=True, dry_run=dry_run)
        await self.settle_gone(out, dry_run=dry_run)
        return out

    async def sync_ids(
        self,
        *,
        hubspot_ids: Sequence[str] = (),
        brevo_ids: Sequence[str] = (),
        mode: Mode = "incremental",
        out: Outcome | None = None,
    ) -> Outcome:
        """Sync the records named by id (webhooks, association changes, dead-letter retries)."""
        out = out if out is not None else Outcome()
        hs: dict[str, HubSpotObject] = {}
        br: dict[str, BrevoRecord] = {}
        if hubspot_ids:
            hs = {o.id: o for o in await self._read_hubspot(list(dict.fromkeys(hubspot_ids)))}
            # deleted ones: their links find the pair, and the pass sees the record gone
            missing = [i for i in hubspot_ids if i not in hs]
        else:
            missing = []
        if brevo_ids:
            br = {r.id: r for r in await self._read_brevo(list(dict.fromkeys(brevo_ids)))}
        extra_links: list[ledger.LinkRecord] = []
        gone_br = [i for i in brevo_ids if i not in br]
        if missing or gone_br:
            async with self.sessions() as s:
                extra_links = await ledger.load_links(
                    s, self.object_type, hubspot_ids=missing, brevo_ids=gone_br
                )
        await self._pass(hs, br, mode=mode, out=out, complete=False, extra_links=extra_links)
        await self.settle_gone(out)
        return out

    async def settle_gone(self, out: Outcome, *, dry_run: bool = False) -> None:
        """Carry the vanished linked records in ``out.gone`` over, under the guard."""
        if not out.gone:
            return
        from connector.objects.crm_gone import settle  # the policies, on this sync's clients

        await settle(self, out, dry_run=dry_run)

    # --- reads ---------------------------------------------------------------------------------

    def _brevo_stream(self, since: datetime | None) -> Any:
        if self.spec.brevo_kind == "company":
            return self.crm.iter_companies(modified_since=since)
        return self.crm.iter_deals(modified_since=since)

    async def _read_hubspot(self, ids: Sequence[str]) -> list[HubSpotObject]:
        if not ids:
            return []
        result = await self.hubspot.batch_read(self.object_type, ids, self.hs_props)
        return list(result.results)

    async def _read_brevo(self, ids: Sequence[str]) -> list[BrevoRecord]:
        if not ids:
            return []
        total = self.brevo_total
        if total is None:
            async with self.sessions() as s:
                total = await ledger.count_links(s, self.object_type)
        if self.spec.brevo_kind == "company":
            return list(await self.crm.get_companies(ids, records_total=total))
        return list(await self.crm.get_deals(ids, records_total=total))

    # --- the pass ------------------------------------------------------------------------------

    async def _pass(
        self,
        hs: AbcMapping[str, HubSpotObject],
        br: AbcMapping[str, BrevoRecord],
        *,
        mode: Mode,
        out: Outcome,
        complete: bool,
        dry_run: bool = False,
        extra_links: Sequence[ledger.LinkRecord] = (),
    ) -> None:
        before = dict(out.counts)
        pairs = await self._pair(dict(hs), dict(br), out, complete, extra_links)
        self._plan(pairs, out)
        for p in pairs:
            if p.plan is not None:
                out.summary.add(p.plan)
        from connector.objects.crm_links import sync_associations  # associations, names

        if dry_run:
            out.counts["dry_run"] += 1
            await sync_associations(self, pairs, out, dry_run=True)
            return
        await self._apply(pairs, out)
        await self._record(pairs, out, mode)
        await sync_associations(self, pairs, out, dry_run=False)
        counts = {k: v - before.get(k, 0) for k, v in out.counts.items()}
        if self.on_pass_counts is not None:
            self.on_pass_counts(self.object_type, counts)
        changed = [
            p.hubspot_id
            for p in pairs
            if p.hubspot_id
            and p.plan is not None
            and not planner.is_noop(p.plan)
            and p.plan.kind != "skip"
            and not p.failed
        ]
        if self.after_pass is not None and changed:
            await self.after_pass(self.object_type, changed)

    def _hs_key(self, obj: HubSpotObject) -> str | None:
        if self.identity_hubspot is None:
            return None
        return normalise_domain(obj.properties.get(self.identity_hubspot))

    def _br_key(self, rec: BrevoRecord) -> str | None:
        if self.identity_brevo is None:
            return None
        return normalise_domain(rec.attributes.get(self.identity_brevo))

    async def _pair(
        self,
        hs: dict[str, HubSpotObject],
        br: dict[str, BrevoRecord],
        out: Outcome,
        complete: bool,
        extra_links: Sequence[ledger.LinkRecord] = (),
    ) -> list[CrmPair]:
        """Group by link, then by identity; read the missing counterparts."""
        hs_key = {i: k for i, o in hs.items() if (k := self._hs_key(o))}
        br_key = {i: k for i, r in br.items() if (k := self._br_key(r))}
        async with self.sessions() as s:
            links = await ledger.load_links(
                s,
                self.object_type,
                hubspot_ids=list(hs),
                brevo_ids=list(br),
                identity_keys=sorted(set(hs_key.values()) | set(br_key.values())),
            )
        links = list({lk.id: lk for lk in [*links, *extra_links]}.values())
        by_hs = {lk.hubspot_id: lk for lk in links if lk.hubspot_id}
        by_br = {lk.brevo_id: lk for lk in links if lk.brevo_id}
        pairs: dict[str, CrmPair] = {}
        for lk in extra_links:
            pairs[f"link:{lk.id}"] = CrmPair(link=lk, key=lk.identity_key)
        for hid, o in hs.items():
            hlk = by_hs.get(hid)
            name = f"link:{hlk.id}" if hlk else f"hs:{hid}"
            pairs.setdefault(name, CrmPair(link=hlk, key=hs_key.get(hid))).hubspot = o
        unlinked_hs_by_key: dict[str, CrmPair] = {}
        for name, p in pairs.items():
            if p.link is None and p.key and name.startswith("hs:"):
                unlinked_hs_by_key.setdefault(p.key, p)
        for bid, r in br.items():
            blk = by_br.get(bid)
            if blk is not None:
                pairs.setdefault(
                    f"link:{blk.id}", CrmPair(link=blk, key=blk.identity_key)
                ).brevo = r
                continue
            key = br_key.get(bid)
            match = unlinked_hs_by_key.pop(key, None) if key else None
            if match is not None:
                match.brevo = r
            else:
                pairs[f"br:{bid}"] = CrmPair(key=key, brevo=r)
        result = list(pairs.values())
        await self._complete(result, out, complete)
        return result

    async def _complete(self, pairs: list[CrmPair], out: Outcome, complete: bool) -> None:
        """Read each linked pair's missing side by id; find unlinked ones' counterparts by
        identity (unless the listings were complete); collect the vanished."""
        if not complete:
            want_hs = [p for p in pairs if p.hubspot is None and p.link and p.link.hubspot_id]
            want_br = [p for p in pairs if p.brevo is None and p.link and p.link.brevo_id]
            got_hs = {
                o.id: o
                for o in await self._read_hubspot(
                    [p.link.hubspot_id for p in want_hs if p.link and p.link.hubspot_id]
                )
            }
            got_br = {
                r.id: r
                for r in await self._read_brevo(
                    [p.link.brevo_id for p in want_br if p.link and p.link.brevo_id]
                )
            }
            for p in want_hs:
                assert p.link is not None and p.link.hubspot_id is not None
                p.hubspot = got_hs.get(p.link.hubspot_id)
            for p in want_br:
                assert p.link is not None and p.link.brevo_id is not None
                p.brevo = got_br.get(p.link.brevo_id)
            await self._find_by_identity(pairs, out)
        for p in pairs:
            if p.link is None:
                continue
            gone = [
                side
                for side, rec, linked in (
                    ("hubspot", p.hubspot, p.link.hubspot_id),
                    ("brevo", p.brevo, p.link.brevo_id),
                )
                if rec is None and linked
            ]
            if not gone:
                continue
            handled = p.link.marker(ledger.DELETED_MARKER)
            if handled is not None:
                reason = f"deleted in {handled.origin}: not synced (the deletion was handled)"
                out.counts["deleted_kept"] += 1
            else:
                reason = f"linked record no longer in {' and '.join(gone)}"
                out.counts["linked_record_gone"] += 1
                which: Literal["hubspot", "brevo", "both"] = (
                    "both" if len(gone) == 2 else "hubspot" if gone[0] == "hubspot" else "brevo"
                )
                out.gone.append(GoneLink(p.link, which))
            p.plan = planner.PairPlan(
                kind="skip", hubspot_id=p.link.hubspot_id, brevo_id=p.link.brevo_id, reason=reason
            )

    async def _find_by_identity(self, pairs: list[CrmPair], out: Outcome) -> None:
        """Unlinked records with an identity key: look for the other side's record with it
        (HubSpot: a search, 100 keys per call; Brevo: one list scan). A record found already
        linked to another is left alone."""
        lone_hs = [p for p in pairs if p.link is None and p.brevo is None and p.key]
        lone_br = [p for p in pairs if p.link is None and p.hubspot is None and p.key]
        if not (lone_hs or lone_br) or self.identity_hubspot is None:
            return
        found_br: dict[str, BrevoRecord] = {}
        if lone_hs:
            async for r in self._brevo_stream(None):
                k = self._br_key(r)
                if k is not None:
                    found_br.setdefault(k, r)
        found_hs: dict[str, HubSpotObject] = {}
        keys = sorted({p.key for p in lone_br if p.key})
        for start in range(0, len(keys), SEARCH_IN_MAX):
            for o in await self._search_identity(keys[start : start + SEARCH_IN_MAX]):
                k = self._hs_key(o)
                if k is not None:
                    found_hs.setdefault(k, o)
        async with self.sessions() as s:
            linked = await ledger.load_links(
                s,
                self.object_type,
                hubspot_ids=[o.id for o in found_hs.values()],
                brevo_ids=[r.id for r in found_br.values()],
            )
        taken_hs = {lk.hubspot_id for lk in linked} | {p.hubspot.id for p in pairs if p.hubspot}
        taken_br = {lk.brevo_id for lk in linked} | {p.brevo.id for p in pairs if p.brevo}
        for p in lone_hs:
            r = found_br.get(p.key or "")
            if r is not None and r.id not in taken_br:
                p.brevo = r
                taken_br.add(r.id)
        for p in lone_br:
            found = found_hs.get(p.key or "")
            if found is not None and found.id not in taken_hs:
                p.hubspot = found
                taken_hs.add(found.id)
        out.counts["identity_lookups"] += len(lone_hs) + len(lone_br)

    async def _search_identity(self, keys: Sequence[str]) -> list[HubSpotObject]:
        assert self.identity_hubspot is not None
        body = {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": self.identity_hubspot, "operator": "IN", "values": keys}
                    ]
                }
            ],
            "properties": self.hs_props,
            "limit": 200,
        }
        data = await self.hubspot.request(
            "POST",
            self.hubspot.paths.search(self.object_type),
            json=body,
            idempotent=True,
            search=True,
        )
        return [HubSpotObject.from_api(i) for i in (data or {}).get("results") or []]

    # --- planning ------------------------------------------------------------------------------

    def _plan(self, pairs: Sequence[CrmPair], out: Outcome) -> None:
        now = self.clock()
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
                p.br_mapped = self.mapping.to_hubspot(p.brevo.attributes)
                br_side = p.br_mapped.side_record(p.brevo.id, p.brevo.modified_at)
            state = planner.PairState(hs_side, br_side, _plan_bases(p.link))
            plan = planner.plan_pair(state, self.rules, self.direction, now=now)
            if (
                plan.kind == "create_in_brevo"
                and self.name_key is not None
                and plan.writes("brevo").get(self.name_key) is None
            ):
                plan = planner.PairPlan(
                    kind="skip",
                    hubspot_id=plan.hubspot_id,
                    reason=f"no {self.name_key} in HubSpot: Brevo needs a name",
                )
                out.counts["skipped_without_name"] += 1
            p.plan = plan
            if plan.kind == "skip":
                out.counts["skipped"] += 1
            out.counts["invalid_fields"] += sum(1 for a in plan.actions if a.kind == "skip_invalid")

    # --- writes --------------------------------------------------------------------------------

    async def _apply(self, pairs: Sequence[CrmPair], out: Outcome) -> None:
        hs_update: list[CrmPair] = []
        hs_create: list[CrmPair] = []
        to_brevo: list[CrmPair] = []
        for p in pairs:
            plan = p.plan
            if plan is None or plan.kind in ("skip", "nothing"):
                continue
            if plan.kind == "create_in_hubspot":
                hs_create.append(p)
            elif plan.kind == "create_in_brevo":
                to_brevo.append(p)
            else:
                if plan.writes("hubspot"):
                    hs_update.append(p)
                if plan.writes("brevo"):
                    to_brevo.append(p)
        await asyncio.gather(
            self._write_hubspot(hs_update, hs_create, out), self._write_brevo(to_brevo, out)
        )

    def _hubspot_payload(self, p: CrmPair) -> dict[str, Any]:
        assert p.plan is not None and p.br_mapped is not None
        return p.br_mapped.payload(p.plan.writes("hubspot"))

    def _brevo_payload(self, p: CrmPair) -> dict[str, Any]:
        assert p.plan is not None and p.hs_mapped is not None
        return p.hs_mapped.payload(p.plan.writes("brevo"))

    async def _write_hubspot(
        self, updates: list[CrmPair], creates: list[CrmPair], out: Outcome
    ) -> None:
        if updates:
            inputs = {p.hubspot_id: self._hubspot_payload(p) for p in updates if p.hubspot_id}
            try:
                result = await self.hubspot.batch_update(self.object_type, inputs)
            except ApiError as e:
                self._fail_all(updates, "hubspot", f"hubspot batch/update: {e}", out)
            else:
                self._mark_errors(updates, result.errors, out, "hubspot update")
                out.counts["hubspot_updated"] += len(result.results)
        if creates:
            payloads = [self._hubspot_payload(p) for p in creates]
            try:
                result = await self.hubspot.batch_create(self.object_type, payloads)
            except ApiError as e:
                self._fail_all(creates, "hubspot", f"hubspot batch/create: {e}", out)
                return
            for obj in result.results:
                if obj.input_index is not None:
                    creates[obj.input_index].hubspot = obj
            self._mark_errors(creates, result.errors, out, "hubspot create")
            for p in creates:
                if p.hubspot is None and not p.failed:
                    p.fail("hubspot", "HubSpot did not return the created record")
                    out.counts["failed"] += 1
            out.counts["hubspot_created"] += sum(1 for p in creates if p.hubspot and not p.failed)

    def _fail_all(
        self, pairs: Sequence[CrmPair], side: planner.Side, why: str, out: Outcome
    ) -> None:
        for p in pairs:
            p.fail(side, why)
        out.failures.append(why)
        out.counts["failed"] += len(pairs)
        log.warning("crm_sync.batch_failed", object_type=self.object_type, error=why)

    def _mark_errors(
        self, pairs: Sequence[CrmPair], errors: Sequence[Any], out: Outcome, what: str
    ) -> None:
        for err in errors:
            if err.index is None or not 0 <= err.index < len(pairs):
                continue
            pairs[err.index].fail(
                "hubspot", f"{what}: {err.category or err.code or ''} {err.message}"
            )
            out.counts["failed"] += 1

    async def _write_brevo(self, pairs: list[CrmPair], out: Outcome) -> None:
        """All Brevo writes of the pass as imports: rows that clear a value go in an import
        that unsets empty cells, grouped by their columns so no other value is cleared."""
        if not pairs:
            return
        groups: dict[frozenset[str] | None, list[tuple[CrmPair, CrmImportRow]]] = {}
        for p in pairs:
            attrs = self._brevo_payload(p)
            row = CrmImportRow(attributes=attrs, id=p.brevo_id if p.brevo is not None else None)
            clears = any(v is None or v == "" for v in attrs.values()) and row.id is not None
            groups.setdefault(frozenset(attrs) if clears else None, []).append((p, row))
        started = self.clock()
        process_ids: list[int | None] = []
        sent: list[CrmPair] = []
        for columns, items in groups.items():
            rows = [r for _, r in items]
            batch = [p for p, _ in items]
            try:
                if self.spec.brevo_kind == "company":
                    pids = await self.crm.import_companies(rows, unset_empty=columns is not None)
                else:
                    pids = await self.crm.import_deals(rows, unset_empty=columns is not None)
            except (ApiError, ValueError) as e:
                self._fail_all(batch, "brevo", f"brevo import: {e}", out)
                continue
            process_ids.extend(pids)
            sent.extend(batch)
        if sent:
            await self._confirm_import(sent, started, process_ids, out)

    async def _confirm_import(
        self,
        pairs: list[CrmPair],
        since: datetime,
        process_ids: Sequence[int | None],
        out: Outcome,
    ) -> None:
        """List what changed since the import (1,000 a call) until every row is seen:
        updates by id, new records by their values in creation order (an import answers no
        ids). Values Brevo did not keep fail the pair (dead letter)."""
        updates = {p.brevo_id: p for p in pairs if p.brevo is not None and p.brevo_id}
        creates = [p for p in pairs if p.brevo is None]
        expected = {id(p): self._expected(p) for p in pairs}
        confirmed: set[int] = set()
        polled = False
        for round_ in range(READBACK_ROUNDS):
            if round_:
                await self.sleep(self.import_poll_every * round_)
            known = await self._known_brevo_ids()
            async for rec in self._brevo_stream(since - SKEW):
                p = updates.get(rec.id)
                if p is not None:
                    if id(p) not in confirmed and self._kept(rec, expected[id(p)]):
                        p.brevo = rec
                        confirmed.add(id(p))
                    continue
                if rec.id in known or rec.created_at < since - SKEW:
                    continue
                for c in creates:
                    if id(c) not in confirmed and self._kept(rec, expected[id(c)]):
                        c.brevo = rec
                        confirmed.add(id(c))
                        known.add(rec.id)
                        break
            if len(confirmed) == len(pairs):
                break
            if not polled and any(pid is not None for pid in process_ids):
                polled = True
                try:
                    await self.crm.wait_for_imports(
                        process_ids, poll_every=self.import_poll_every, budget=10
                    )
                except ApiError as e:
                    log.warning("crm_sync.import_poll_failed", error=str(e))
        lost = 0
        for p in pairs:
            if id(p) in confirmed:
                continue
            p.fail(
                "brevo",
                f"Brevo did not keep the {self.spec.brevo_kind} after the import (a wrong value "
                "type, an unknown attribute or stage: run connector mappings check)",
            )
            lost += 1
        out.counts["failed"] += lost
        out.counts["brevo_imported"] += len(pairs) - lost
        out.counts["brevo_created"] += sum(1 for c in creates if id(c) in confirmed)

    def _expected(self, p: CrmPair) -> dict[str, str | None]:
        assert p.plan is not None
        return p.plan.writes("brevo")

    def _kept(self, rec: BrevoRecord, expected: AbcMapping[str, str | None]) -> bool:
        values = self.mapping.to_hubspot(rec.attributes).values
        return all(values.get(k) == v for k, v in expected.items())

    async def _known_brevo_ids(self) -> set[str]:
        """Brevo ids already linked (a new record is none of them)."""
        ids: set[str] = set()
        async with self.sessions() as s:
            async for batch in ledger.iter_links(s, self.object_type):
                ids.update(lk.brevo_id for lk in batch if lk.brevo_id)
        return ids

    # --- recording -----------------------------------------------------------------------------

    async def _record(self, pairs: Sequence[CrmPair], out: Outcome, mode: Mode) -> None:
        now = self.clock()
        first_event = len(out.events)
        writes: list[ledger.PairWrite] = []
        synced: list[CrmPair] = []
        dead: list[CrmPair] = []
        for p in pairs:
            plan = p.plan
            if plan is None or plan.kind == "skip":
                continue
            if p.failed:
                dead.append(p)
            if p.hubspot_id is None or p.brevo_id is None:
                continue
            written = {a.field: a.target for a in plan.actions if a.target is not None}
            bases = {
                name: ledger.BaseEntry(b.value_hash, b.origin, written.get(name), b.synced_at)
                for name, b in plan.ledger_updates.items()
                if written.get(name) not in p.failed_on
            }
            if p.failed and not bases:
                continue
            writes.append(
                ledger.PairWrite(
                    hubspot_id=p.hubspot_id,
                    brevo_id=p.brevo_id,
                    identity_key=p.key,
                    bases=bases,
                    link_id=p.link.id if p.link else None,
                )
            )
            synced.append(p)
            if not p.failed:
                self._events(p, out)
        async with self.sessions() as s, s.begin():
            if writes:
                link_ids = await ledger.save_pairs(s, self.object_type, writes, now=now)
                await history.record(s, self._history(synced, link_ids, now))
                fresh = {p.hubspot_id: i for p, i in zip(synced, link_ids, strict=True)}
                for p in synced:
                    if p.link is None and p.hubspot_id in fresh:
                        p.link = ledger.LinkRecord(
                            fresh[p.hubspot_id], self.object_type, p.hubspot_id, p.brevo_id, p.key
                        )
            await pass_dead_letters(s, self.object_type, synced, dead, now, out)
            if self.on_events is not None and len(out.events) > first_event:
                await self.on_events(s, out.events[first_event:], mode)
        out.counts["linked"] += len(writes)
        out.counts["dead_lettered"] += len(dead)

    def _history(
        self, pairs: Sequence[CrmPair], link_ids: Sequence[int], now: datetime
    ) -> list[history.HistoryEntry]:
        return pass_history(self.object_type, self.modified_prop, pairs, link_ids, now)

    def _events(self, p: CrmPair, out: Outcome) -> None:
        out.events += pair_events(self.object_type, p)


def _plan_bases(link: ledger.LinkRecord | None) -> dict[str, planner.BaseEntry] | None:
    if link is None:
        return None
    return {
        name: planner.BaseEntry(b.value_hash, b.origin, b.synced_at)
        for name, b in link.bases.items()
        if not name.startswith(ledger.MARKER_PREFIX)
    }


def _ms(at: datetime) -> int:
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


__all__ = ["KINDS", "CrmKindSpec", "CrmObjectSync", "CrmPair", "normalise_domain"]
