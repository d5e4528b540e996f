"""Deletions of companies and deals: a vanished linked record, carried to the other side.

The policies are the contacts' (``sync.on_hubspot_delete``, ``sync.on_brevo_delete``), read for
CRM records: a HubSpot deletion ``delete``\\ s the Brevo record; ``blocklist`` (Brevo has no
blocklist for companies or deals) keeps it but unlinks it from its contacts, companies and
deals; ``ignore`` keeps it as it is. A Brevo deletion ``archive``\\ s the HubSpot record (batch
archive, restorable 90 days) or is ignored. Either way the link stays with a ``@deleted``
marker, so the record left is never recreated on the side it was deleted from; a record gone
from both sides loses its link.

The mass-delete guard of :mod:`connector.events` holds: deleting more than
``max_delete_share`` of the links in one pass is refused (and retried by the next pass)
unless forced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from connector import plan as planner
from connector.brevo.crm_budget import LinkChange
from connector.engine import GoneLink, Outcome
from connector.errors import ApiError
from connector.events import GUARD_MIN_COUNT
from connector.store import associations as assoc_store
from connector.store import links as ledger
from connector.store.models import System

if TYPE_CHECKING:
    from connector.objects.crm_sync import CrmObjectSync

log = structlog.get_logger(__name__)


async def settle(sync: CrmObjectSync, out: Outcome, *, dry_run: bool = False) -> None:
    """Apply the deletion policies to ``out.gone`` (emptied), under the mass-delete guard."""
    gone, out.gone = list(out.gone), []
    from_hubspot = [g for g in gone if g.side == "hubspot"]
    from_brevo = [g for g in gone if g.side == "brevo"]
    both = [g for g in gone if g.side == "both"]
    deletions = (len(from_hubspot) if sync.on_hubspot_delete == "delete" else 0) + (
        len(from_brevo) if sync.on_brevo_delete == "archive" else 0
    )
    async with sync.sessions() as s:
        linked = await ledger.count_links(s, sync.object_type)
    why = planner.guard_deletions(
        deletions, linked, sync.max_delete_share, min_count=GUARD_MIN_COUNT
    )
    if why is not None and not sync.force:
        log.warning("crm_sync.deletions_refused", object_type=sync.object_type, reason=why)
        out.failures.append(why)
        out.counts["deletions_refused"] += len(from_hubspot) + len(from_brevo)
        from_hubspot, from_brevo = [], []
    if dry_run:
        out.counts["deletions_planned"] += len(from_hubspot) + len(from_brevo) + len(both)
        return
    done: list[tuple[GoneLink, str | None]] = []
    kind = sync.spec.brevo_kind
    # HubSpot record deleted → the Brevo one
    unlink: list[LinkChange] = []
    for g in from_hubspot:
        rid = g.link.brevo_id
        assert rid is not None
        if sync.on_hubspot_delete == "delete":
            try:
                await sync.crm.delete(kind, rid)
            except ApiError as e:
                out.failures.append(f"brevo delete {kind} {rid}: {e}")
                continue
            out.counts["brevo_deleted"] += 1
            done.append((g, "brevo"))
            continue
        if sync.on_hubspot_delete == "blocklist":
            unlink += await _unlink_all(sync, rid)
        done.append((g, None))
    if unlink:
        try:
            result = await sync.crm.apply_links(unlink)
            out.counts["brevo_link_calls"] += result.calls
        except ApiError as e:
            out.failures.append(f"brevo unlink: {e}")
    # Brevo record deleted → the HubSpot one
    archive = [g for g in from_brevo if sync.on_brevo_delete == "archive"]
    if archive:
        ids = [g.link.hubspot_id for g in archive if g.link.hubspot_id]
        try:
            await sync.hubspot.archive(sync.object_type, ids)
            out.counts["hubspot_archived"] += len(ids)
            done += [(g, "hubspot") for g in archive]
        except ApiError as e:
            out.failures.append(f"hubspot archive {sync.object_type}: {e}")
    done += [(g, None) for g in from_brevo if sync.on_brevo_delete != "archive"]
    now = sync.clock()
    async with sync.sessions() as s, s.begin():
        for g, written_to in done:
            origin: System = "hubspot" if g.side == "hubspot" else "brevo"
            entry = ledger.BaseEntry(
                planner.value_hash("deleted"),
                origin,
                "brevo" if written_to == "brevo" else "hubspot" if written_to else None,
                now,
            )
            await ledger.record_bases(s, g.link.id, {ledger.DELETED_MARKER: entry})
        for g in both:
            await ledger.delete_link(s, g.link.id)
        gone_ids = [g.link.hubspot_id for g, _ in done if g.link.hubspot_id]
        gone_ids += [g.link.hubspot_id for g in both if g.link.hubspot_id]
        await assoc_store.forget(s, sync.object_type, gone_ids)
    out.counts["deletions_handled"] += len(done) + len(both)


async def _unlink_all(sync: CrmObjectSync, brevo_id: str) -> list[LinkChange]:
    """Link removals that detach one Brevo company or deal from everything it links to."""
    kind = sync.spec.brevo_kind
    record = (
        await sync.crm.get_company(brevo_id)
        if kind == "company"
        else await sync.crm.get_deal(brevo_id)
    )
    if record is None:
        return []
    changes: list[LinkChange] = []
    for contact in record.linked_contact_ids:
        if kind == "company":
            changes.append(LinkChange(company=brevo_id, contact=contact, add=False))
        else:
            changes.append(LinkChange(deal=brevo_id, contact=contact, add=False))
    others = getattr(record, "linked_deal_ids", None) or getattr(record, "linked_company_ids", [])
    for other in others:
        if kind == "company":
            changes.append(LinkChange(company=brevo_id, deal=other, add=False))
        else:
            changes.append(LinkChange(company=other, deal=brevo_id, add=False))
    return changes


__all__ = ["settle"]
