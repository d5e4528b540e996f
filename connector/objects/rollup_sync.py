"""The roll-up sources: one :class:`~connector.objects.base.ObjectSync` per HubSpot object type
whose records roll up into Brevo contact attributes (tickets; meetings, calls and notes; deals;
each custom object of a roll-up file).

A source never writes HubSpot and pulls HubSpot only (``pull_systems = ("hubspot",)``):

* :meth:`RollupSource.pull` reads the records modified since its cursor (``hs_lastmodifieddate``
  with the configured lookback, the cursor ``rollups:{type}`` saved after each batch), finds
  their contacts (associations, 1,000 records per call, plus the contacts they counted for at
  the last refresh) and refreshes those contacts. A first pull is a resync.
* :meth:`RollupSource.resync` refreshes every linked contact, 1,000 at a time, comparing with
  the Brevo contacts' current values (listed once, 1,000 per call) so a resync of an account in
  step writes nothing and an attribute edited in Brevo is put back.
* :meth:`RollupSource.sync_ids` refreshes the contacts of records named by webhooks
  (``ticket.*``, ``object.*``, ``deal.*``); a deleted record's contacts come from
  ``rollup_members``. :meth:`RollupSource.after_pass` is the same for the deals sync's hook.

:func:`build_rollups` makes the sources the configuration enables.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.brevo.client import BrevoClient
from connector.config import Settings
from connector.engine import Mode, Outcome, hubspot_modified
from connector.hubspot.client import HubSpotClient
from connector.hubspot.crm import HubSpotCrm
from connector.objects.base import ObjectResyncMode, ObjectSync, StopCheck, System
from connector.objects.rollup_mapping import (
    ENGAGEMENT_TYPES,
    RollupMapping,
    load_rollup_mappings,
    rollup_dir,
)
from connector.objects.rollups import ContactRollups
from connector.store import cursors
from connector.store import rollups as state
from connector.store.models import Link, utcnow

log = structlog.get_logger(__name__)

RESYNC_BATCH = 1000
"""Contacts refreshed together in a resync (one association read per object type)."""
PULL_BATCH = 1000
"""Changed records whose contacts are refreshed together in a pull."""
CURSOR_PREFIX = "rollups:"
LINKS_CURSOR_PREFIX = "rollups-links:"


def epoch_ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


class RollupSource:
    """The roll-up sync of one HubSpot object type (an :class:`ObjectSync`)."""

    pull_systems: tuple[System, ...] = ("hubspot",)

    def __init__(
        self,
        object_type: str,
        rollups: ContactRollups,
        *,
        lookback: timedelta = timedelta(seconds=120),
        clock: Callable[[], datetime] = utcnow,
        pull_batch: int = PULL_BATCH,
        resync_batch: int = RESYNC_BATCH,
    ) -> None:
        self.object_type = object_type
        self.rollups = rollups
        self.sessions: async_sessionmaker[AsyncSession] = rollups.sessions
        self.on_pass_counts: Callable[[str, dict[str, int]], None] | None = None
        self.lookback = lookback
        self.clock = clock
        self.pull_batch = max(1, pull_batch)
        self.resync_batch = max(1, resync_batch)

    @property
    def cursor_name(self) -> str:
        return CURSOR_PREFIX + self.object_type

    @property
    def crm(self) -> HubSpotCrm:
        return self.rollups.crm

    def _report(self, out: Outcome) -> Outcome:
        wrote = out.counts["brevo_updated"] + out.counts["brevo_imported"]
        if wrote and self.on_pass_counts is not None:
            self.on_pass_counts(self.object_type, dict(out.counts))
        return out

    # --- webhooks and hooks -----------------------------------------------------------------

    async def contacts_of(self, record_ids: Iterable[str]) -> list[str]:
        """The contacts associated with these records now, and those they counted for at the
        last refresh (a deleted record, or an association removed)."""
        ids = [str(i) for i in dict.fromkeys(record_ids)]
        if not ids:
            return []
        assoc = await self.crm.read_associations(self.object_type, "contacts", ids)
        self.rollups.calls["hubspot_associations"] += assoc.calls
        found = {a.to_id for links in assoc.links.values() for a in links}
        async with self.sessions() as session:
            before = await state.contacts_of(session, self.object_type, ids)
        for contacts in before.values():
            found |= contacts
        return sorted(found, key=cursors.id_order)

    async def sync_ids(
        self,
        *,
        hubspot_ids: Sequence[str] = (),
        brevo_ids: Sequence[str] = (),
        mode: Mode = "incremental",
        out: Outcome | None = None,
    ) -> Outcome:
        """Refresh the contacts of the records named (``brevo_ids`` are not used: one way)."""
        out = out or Outcome()
        contacts = await self.contacts_of(hubspot_ids)
        await self.rollups.refresh(contacts, object_types={self.object_type}, out=out)
        return self._report(out)

    async def after_pass(self, object_type: str, hubspot_ids: list[str]) -> None:
        """The deals sync's ``after_pass`` hook: refresh the contacts of the deals it changed."""
        if object_type == self.object_type and hubspot_ids:
            await self.sync_ids(hubspot_ids=hubspot_ids)

    async def settle_gone(self, out: Outcome, *, dry_run: bool = False) -> None:
        """Nothing to carry: a vanished record only changes its contacts' roll-ups."""
        out.gone.clear()

    # --- pulls ------------------------------------------------------------------------------

    async def pull(self, system: System, *, stop: StopCheck | None = None) -> Outcome:
        """Refresh the contacts of the records modified since the cursor (HubSpot only)."""
        if system != "hubspot":
            return Outcome()
        run_start = self.clock()
        async with self.sessions() as s:
            cursor = await cursors.get_cursor(s, "hubspot", self.cursor_name)
        if cursor.last_value is None:
            out = await self.resync(mode="initial")
            async with self.sessions() as s, s.begin():
                await cursors.save_cursor(
                    s, cursors.Cursor("hubspot", self.cursor_name, run_start, None, [])
                )
            return out
        since, until = cursors.window(cursor, self.lookback, run_start)
        out = Outcome()
        batch: list[str] = []
        seen: list[tuple[datetime, str]] = []

        async def flush() -> None:
            nonlocal cursor
            if batch:
                contacts = await self.contacts_of(batch)
                await self.rollups.refresh(contacts, object_types={self.object_type}, out=out)
            moved = cursors.advance(cursor, seen, until)
            if moved != cursor:
                async with self.sessions() as s, s.begin():
                    await cursors.save_cursor(s, moved)
                cursor = moved
            batch.clear()
            seen.clear()

        stream = self.rollups.hubspot.search_modified(
            self.object_type, epoch_ms(since), epoch_ms(until), ["hs_object_id"]
        )
        async for obj in stream:
            modified = hubspot_modified(obj, "hs_lastmodifieddate")
            out.counts["read"] += 1
            if cursors.is_seen_at_boundary(cursor, modified, obj.id):
                out.counts["boundary_dropped"] += 1
                continue
            batch.append(obj.id)
            seen.append((modified, obj.id))
            if len(batch) >= self.pull_batch:
                await flush()
                if stop is not None and stop():
                    return self._report(out)
        await flush()
        await self._refresh_newly_linked(out)
        return self._report(out)

    @property
    def links_cursor_name(self) -> str:
        return LINKS_CURSOR_PREFIX + self.object_type

    async def _linked_since(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    sa.select(Link.id, Link.hubspot_id)
                    .where(
                        Link.object_type == "contacts",
                        Link.id > after_id,
                        Link.hubspot_id.is_not(None),
                        Link.brevo_id.is_not(None),
                    )
                    .order_by(Link.id)
                    .limit(limit)
                )
            ).all()
        return [(int(r.id), str(r.hubspot_id)) for r in rows]

    async def _save_links_cursor(self, last_id: int) -> None:
        async with self.sessions() as s, s.begin():
            await cursors.save_cursor(
                s,
                cursors.Cursor("hubspot", self.links_cursor_name, self.clock(), str(last_id), []),
            )

    async def _refresh_newly_linked(self, out: Outcome) -> None:
        """Contacts linked since the last pass (link ids above the ``rollups-links:`` cursor)
        get their roll-ups now, not at the next change of one of their records: they were
        skipped while unlinked. Ids, not times: no clock is compared."""
        async with self.sessions() as s:
            cursor = await cursors.get_cursor(s, "hubspot", self.links_cursor_name)
        last = int(cursor.last_id) if cursor.last_id and cursor.last_id.isdigit() else 0
        while rows := await self._linked_since(last, self.resync_batch):
            last = rows[-1][0]
            out.counts["newly_linked"] += len(rows)
            await self.rollups.refresh(
                [h for _, h in rows], object_types={self.object_type}, out=out
            )
            await self._save_links_cursor(last)

    # --- resync -----------------------------------------------------------------------------

    async def resync(self, *, mode: ObjectResyncMode = "resync", dry_run: bool = False) -> Outcome:
        """Refresh every linked contact against the Brevo contacts' current values."""
        out = Outcome()
        brevo_values = await self.rollups.brevo_snapshot()
        last = 0
        while rows := await self._linked_since(last, self.resync_batch):
            last = rows[-1][0]
            await self.rollups.refresh(
                [h for _, h in rows],
                object_types={self.object_type},
                dry_run=dry_run,
                baseline="brevo",
                brevo_values=brevo_values,
                out=out,
            )
        if not dry_run and last:
            await self._save_links_cursor(last)
        return self._report(out)


def enabled_types(settings: Settings, mappings: Sequence[RollupMapping]) -> set[str]:
    """The object types whose roll-ups run: tickets, engagements and deals by their switches
    (``connectors.hubspot.sync``), custom objects by the presence of their file."""
    switches = settings.connectors.hubspot.sync
    enabled: set[str] = set()
    for m in mappings:
        for t in m.objects:
            if t == "tickets":
                if switches.tickets:
                    enabled.add(t)
            elif t in ENGAGEMENT_TYPES:
                if switches.engagements:
                    enabled.add(t)
            elif t == "deals":
                if switches.deals:
                    enabled.add(t)
            elif t != "companies":
                enabled.add(t)
    return enabled


def build_rollups(
    settings: Settings,
    *,
    hubspot: HubSpotClient,
    brevo: BrevoClient,
    sessions: async_sessionmaker[AsyncSession],
    mappings: Sequence[RollupMapping] | None = None,
    exclude: Collection[str] = (),
) -> dict[str, RollupSource]:
    """One source per enabled object type (empty when there are no roll-up files);
    ``mappings`` default to the files of ``mappings/rollups/``."""
    if mappings is None:
        mappings = load_rollup_mappings(rollup_dir(settings.sync.mappings_dir))
    enabled = enabled_types(settings, mappings) - set(exclude)
    if not enabled:
        return {}
    kept = []
    for m in mappings:
        fields = tuple(f for f in m.fields if f.object in enabled)
        if fields:
            kept.append(RollupMapping(m.object, fields, m.health, m.source))
    all_contacts = settings.connectors.hubspot.lists.all_contacts
    rollups = ContactRollups(
        hubspot=hubspot,
        brevo=brevo,
        sessions=sessions,
        mappings=kept,
        list_ids=[all_contacts] if all_contacts else [],
    )
    lookback = timedelta(seconds=settings.sync.lookback_seconds)
    sources = {t: RollupSource(t, rollups, lookback=lookback) for t in rollups.object_types}
    log.info("rollups.enabled", object_types=sorted(sources))
    return sources


__all__ = ["RollupSource", "build_rollups", "enabled_types"]


if TYPE_CHECKING:  # a RollupSource is an ObjectSync (checked by mypy, not at run time)

    def _is_object_sync(source: RollupSource) -> ObjectSync:
        return source
