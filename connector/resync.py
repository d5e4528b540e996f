"""Full resync (and the scheduled reconciliation): both sides compared in full, streaming.

Three phases, each resumable (``resync_checkpoints``):

1. **stage** — stream every Brevo contact (``GET /contacts``, pages of 1,000) into the
   ``resync_stage`` table;
2. **hubspot** — stream every HubSpot record (the list API, pages of 100; ``--since``: the
   search API) and hand each page to the engine, which pairs it with the staged Brevo contacts
   by link and email in SQL, plans, and writes (Brevo through ``/contacts/import``);
   the page token is the checkpoint;
3. **brevo** — the staged Brevo contacts no HubSpot page claimed, in batches: created in
   HubSpot, or paired with HubSpot records by email.

Memory stays flat: a page at a time, the rest in the database. Ctrl-C or a crash leaves the
checkpoint; the next run of the same mode resumes there (a page done twice writes nothing the
second time: no-op writes are never sent). ``dry_run`` plans without writing to either API or
the ledger and always starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import structlog

from connector.brevo.models import BrevoContact
from connector.engine import Mode, Outcome, SyncEngine
from connector.pull import epoch_ms
from connector.store import stage
from connector.transforms import normalise_email

log = structlog.get_logger(__name__)

ResyncMode = Literal["resync", "reconcile", "initial"]
STAGE_BATCH = 1_000
HUBSPOT_PAGE = 100
"""Records per HubSpot list page (the list API's largest ``limit``)."""
SYNC_BATCH = 2_000
"""HubSpot records per engine pass in a resync: each pass sends at most one Brevo import.

Larger passes mean larger imports (fewer calls: Brevo takes 8 MB, some 26,000 rows) but hold
more records in memory at once; 2,000 keeps the peak RSS flat and well under 200 MB."""
EVENTS_KEPT = 1_000
"""Sync events a resync's outcome keeps. Every event is handed to the engine's ``on_events``
(the post-sync hooks) in the transaction of its pass; the outcome keeps the first ones for the
caller to show, not all of them (100,000 new contacts would hold 100,000 events in memory)."""


class ResyncProgress(Protocol):
    """What a resync reports as it goes (the CLI draws rich progress bars from it)."""

    def phase(self, name: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...


def contact_payload(c: BrevoContact) -> dict[str, Any]:
    """A contact as Brevo's JSON (what ``BrevoContact.from_api`` reads back)."""
    return {
        "id": c.id,
        "email": c.email,
        "ext_id": c.ext_id,
        "attributes": c.attributes,
        "listIds": c.list_ids,
        "emailBlacklisted": c.email_blacklisted,
        "smsBlacklisted": c.sms_blacklisted,
        "createdAt": c.created_at.isoformat(),
        "modifiedAt": c.modified_at.isoformat(),
    }


class StagedBrevo:
    """The engine's Brevo source during a resync: the stage table, not the API."""

    def __init__(self, engine: SyncEngine) -> None:
        self.engine = engine
        self.claimed: set[str] = set()

    async def by_ids(self, ids: Sequence[int]) -> dict[str, BrevoContact]:
        async with self.engine.sessions() as s:
            rows = await stage.by_brevo_ids(s, self.engine.object_type, [str(i) for i in ids])
        self.claimed.update(r.brevo_id for r in rows)
        return {r.brevo_id: BrevoContact.from_api(r.payload) for r in rows}

    async def by_emails(self, emails: Sequence[str]) -> dict[str, BrevoContact]:
        async with self.engine.sessions() as s:
            rows = await stage.by_identity_keys(s, self.engine.object_type, list(emails))
        self.claimed.update(r.brevo_id for r in rows)
        return {r.identity_key: BrevoContact.from_api(r.payload) for r in rows if r.identity_key}

    async def by_sms(self, keys: Sequence[str]) -> dict[str, str]:
        async with self.engine.sessions() as s:
            return await stage.by_sms(s, self.engine.object_type, list(keys))


async def resync(
    engine: SyncEngine,
    *,
    mode: ResyncMode = "resync",
    since: datetime | None = None,
    dry_run: bool = False,
    progress: ResyncProgress | None = None,
) -> Outcome:
    """Compare both sides in full and write only the differences; see the module docstring."""
    out = Outcome()
    obj = engine.object_type
    engine_mode: Mode = "resync" if mode != "reconcile" else "reconcile"
    resuming = False
    async with engine.sessions() as s, s.begin():
        cp = await stage.load_checkpoint(s, obj)
        if cp is None or cp.mode != mode or dry_run or since is not None:
            await stage.clear(s, obj)
            cp = stage.Checkpoint(obj, mode)
            await stage.save_checkpoint(s, cp)
        else:
            log.info("resync.resume", object_type=obj, phase=cp.phase)
            out.counts["resumed"] += 1
            resuming = cp.phase != "stage"
    source = StagedBrevo(engine)

    if cp.phase == "stage" or resuming:
        # A resumed run stages Brevo again (one call per 1,000 contacts): what the interrupted
        # run wrote before it died must be seen as there, not written a second time.
        await _stage_brevo(engine, cp, since, progress, out, keep_phase=resuming)
    if cp.phase == "hubspot":
        await _hubspot_pages(engine, cp, since, source, engine_mode, dry_run, progress, out)
    if cp.phase == "brevo":
        # Every HubSpot record was offered to phase 2 in this run (not resumed past it, not
        # --since): the staged contacts left unclaimed are known to have no HubSpot record
        # with their email, and phase 3 does not read HubSpot by email for them.
        listed = since is None and not resuming
        await _brevo_rest(engine, cp, source, engine_mode, dry_run, progress, out, listed)
    # linked records that vanished: carried over once for the whole resync, so the mass-delete
    # guard weighs them all together (a dry run only counts them: ``deletions_planned``)
    await engine.settle_gone(out, dry_run=dry_run)
    async with engine.sessions() as s, s.begin():
        await stage.clear(s, obj)
    return out


def _trim_events(out: Outcome) -> None:
    """Keep the outcome's first :data:`EVENTS_KEPT` events (counted: ``events_not_kept``)."""
    extra = len(out.events) - EVENTS_KEPT
    if extra > 0:
        del out.events[EVENTS_KEPT:]
        out.counts["events_not_kept"] += extra


async def _save(engine: SyncEngine, cp: stage.Checkpoint) -> None:
    async with engine.sessions() as s, s.begin():
        await stage.save_checkpoint(s, cp)


async def _stage_brevo(
    engine: SyncEngine,
    cp: stage.Checkpoint,
    since: datetime | None,
    progress: ResyncProgress | None,
    out: Outcome,
    *,
    keep_phase: bool = False,
) -> None:
    async with engine.sessions() as s, s.begin():
        await stage.clear_rows(s, engine.object_type)
    stream = engine.brevo.iter_contacts(modified_since=since)
    if progress:
        progress.phase("Reading Brevo", None)
    rows: list[stage.StagedRow] = []

    async def flush() -> None:
        async with engine.sessions() as s, s.begin():
            await stage.add_rows(s, engine.object_type, rows)
        if progress:
            progress.advance(len(rows))
        out.counts["brevo_read"] += len(rows)
        rows.clear()

    async for c in stream:
        rows.append(stage.StagedRow(0, str(c.id), normalise_email(c.email), contact_payload(c)))
        if len(rows) >= STAGE_BATCH:
            await flush()
    await flush()
    if keep_phase:
        cp.last_stage_id = 0  # the staged rows are new: phase 3 starts over (no-ops are cheap)
    else:
        cp.phase, cp.after = "hubspot", None
    await _save(engine, cp)


async def _hubspot_pages(
    engine: SyncEngine,
    cp: stage.Checkpoint,
    since: datetime | None,
    source: StagedBrevo,
    mode: Mode,
    dry_run: bool,
    progress: ResyncProgress | None,
    out: Outcome,
) -> None:
    if progress:
        progress.phase("Syncing HubSpot records", None)

    async def one_batch(page: list[Any]) -> None:
        source.claimed.clear()
        await engine.sync(hubspot=page, mode=mode, dry_run=dry_run, brevo_source=source, out=out)
        _trim_events(out)
        async with engine.sessions() as s, s.begin():
            await stage.mark_matched(s, engine.object_type, sorted(source.claimed))
        out.counts["hubspot_read"] += len(page)
        if progress:
            progress.advance(len(page))

    if since is not None:  # only what changed since a date: the search API, not resumable
        now = datetime.now(UTC)
        batch: list[Any] = []
        async for o in engine.hubspot.search_modified(
            engine.object_type, epoch_ms(since), epoch_ms(now), engine.hs_props
        ):
            batch.append(o)
            if len(batch) >= SYNC_BATCH:
                await one_batch(batch)
                batch = []
        if batch:
            await one_batch(batch)
    else:
        pages = _PageReader(engine, cp.after)
        pending: list[Any] = []
        try:
            while True:
                page, after = await pages.get()
                pending += page
                if len(pending) >= SYNC_BATCH or after is None:
                    # many pages per engine pass: one Brevo import per SYNC_BATCH records
                    if pending:
                        await one_batch(pending)
                        pending = []
                    cp.after = after  # the checkpoint: the pages processed, not those read
                    if after is None:
                        break
                    await _save(engine, cp)
        finally:
            await pages.close()
    cp.phase, cp.after = "brevo", None
    await _save(engine, cp)


class _PageReader:
    """HubSpot's list pages read ahead of the engine, at most one pass's worth: the next
    pass's pages arrive while this pass plans, writes and waits for its import (the HubSpot
    server's answer time overlaps our work instead of adding to it). ``get`` re-raises a
    failed read."""

    def __init__(self, engine: SyncEngine, after: str | None) -> None:
        self._queue: asyncio.Queue[tuple[list[Any], str | None] | BaseException] = asyncio.Queue(
            maxsize=max(1, SYNC_BATCH // HUBSPOT_PAGE)
        )
        self._task = asyncio.create_task(self._read(engine, after), name="resync pages")

    async def _read(self, engine: SyncEngine, after: str | None) -> None:
        try:
            while True:
                page, after = await engine.hubspot.list_page(
                    engine.object_type, engine.hs_props, after=after
                )
                await self._queue.put((page, after))
                if after is None:
                    return
        except Exception as e:  # handed to the consumer, raised there
            await self._queue.put(e)

    async def get(self) -> tuple[list[Any], str | None]:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _brevo_rest(
    engine: SyncEngine,
    cp: stage.Checkpoint,
    source: StagedBrevo,
    mode: Mode,
    dry_run: bool,
    progress: ResyncProgress | None,
    out: Outcome,
    hubspot_listed: bool = False,
) -> None:
    async with engine.sessions() as s:
        total = await stage.count(s, engine.object_type, unmatched=True)
    if progress:
        progress.phase("Syncing Brevo-only contacts", total)
    while True:
        async with engine.sessions() as s:
            rows = await stage.unmatched_after(s, engine.object_type, cp.last_stage_id, SYNC_BATCH)
        if not rows:
            break
        contacts = [BrevoContact.from_api(r.payload) for r in rows]
        await engine.sync(
            brevo=contacts,
            mode=mode,
            dry_run=dry_run,
            brevo_source=source,
            out=out,
            hubspot_listed=hubspot_listed,
        )
        _trim_events(out)
        cp.last_stage_id = rows[-1].id
        await _save(engine, cp)
        if progress:
            progress.advance(len(rows))
    cp.phase = "done"
    await _save(engine, cp)
