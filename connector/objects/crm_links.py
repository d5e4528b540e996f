"""Associations of companies and deals, both ways, and the contacts' ``COMPANY_NAME``.

For the pairs of a pass (both records known), per associated type: HubSpot's associations v4
read in batches of 1,000 ids, Brevo's links from the records already read, both translated to
HubSpot ids through the associated type's links table, merged against the last synced set
(:func:`~connector.objects.assoc_merge.merge_sets`, table ``association_state``), then written:
HubSpot ``batch/associate/default`` and ``batch/archive`` (100 per call), Brevo link-unlink in
the fewest calls (:func:`~connector.brevo.crm_budget.plan_link_calls`). Associated records
not linked yet are left out until they are.

Companies then fill ``COMPANY_NAME`` on the Brevo contacts whose primary company they are,
through one contacts import, only where the name differs from the last one written (a
``@company_name`` marker in the contact's ledger).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from connector import plan as planner
from connector.brevo.crm_budget import LinkChange
from connector.brevo.crm_models import BrevoCompany, BrevoDeal
from connector.brevo.models import ImportRow
from connector.engine import Outcome
from connector.errors import ApiError
from connector.objects.assoc_merge import SetPlan, merge_sets
from connector.store import associations as assoc_store
from connector.store import links as ledger

if TYPE_CHECKING:
    from connector.objects.crm_sync import CrmObjectSync, CrmPair

log = structlog.get_logger(__name__)

COMPANY_NAME_MARKER = "@company_name"
ARCHIVE_BATCH = 100


def brevo_linked(record: BrevoCompany | BrevoDeal, to_type: str) -> list[str]:
    """The Brevo ids a company or deal is linked to, of one HubSpot object type."""
    if to_type == "contacts":
        return [str(i) for i in record.linked_contact_ids]
    if to_type == "companies" and isinstance(record, BrevoDeal):
        return list(record.linked_company_ids)
    if to_type == "deals" and isinstance(record, BrevoCompany):
        return list(record.linked_deal_ids)
    return []


def _is_primary(types: Sequence[Any]) -> bool:
    return any((t.label or "").lower() == "primary" for t in types)


async def sync_associations(
    sync: CrmObjectSync, pairs: Sequence[CrmPair], out: Outcome, *, dry_run: bool
) -> None:
    """Bring the associations of these pairs in step (see the module docstring)."""
    ready = [
        p
        for p in pairs
        if p.hubspot is not None
        and p.brevo is not None
        and p.plan is not None
        and p.plan.kind != "skip"
        and not p.failed
    ]
    if not ready:
        return
    hs_ids = [p.hubspot.id for p in ready if p.hubspot is not None]
    primaries: dict[str, list[str]] = {}
    for to_type in sync.spec.associated:
        try:
            read = await sync.hubspot_crm.read_associations(sync.object_type, to_type, hs_ids)
        except ApiError as e:
            out.failures.append(f"hubspot associations {sync.object_type}→{to_type}: {e}")
            out.counts["association_read_failed"] += len(hs_ids)
            continue
        br_to = {b for p in ready if p.brevo is not None for b in brevo_linked(p.brevo, to_type)}
        hs_to = {a.to_id for links in read.links.values() for a in links}
        async with sync.sessions() as s:
            base = await assoc_store.load(s, sync.object_type, to_type, hs_ids)
            to_links = await ledger.load_links(
                s, to_type, hubspot_ids=sorted(hs_to), brevo_ids=sorted(br_to)
            )
        hs2br = {lk.hubspot_id: lk.brevo_id for lk in to_links if lk.hubspot_id and lk.brevo_id}
        br2hs = {b: h for h, b in hs2br.items()}
        plans: dict[str, tuple[CrmPair, SetPlan]] = {}
        for p in ready:
            assert p.hubspot is not None and p.brevo is not None
            hid = p.hubspot.id
            if hid in read.failed:
                out.counts["association_read_failed"] += 1
                continue
            hs_assoc = read.links.get(hid, [])
            h = {a.to_id for a in hs_assoc if a.to_id in hs2br}
            b = {br2hs[x] for x in brevo_linked(p.brevo, to_type) if x in br2hs}
            out.counts["associations_not_linked_yet"] += sum(
                1 for a in hs_assoc if a.to_id not in hs2br
            ) + sum(1 for x in brevo_linked(p.brevo, to_type) if x not in br2hs)
            plan = merge_sets(h, b, base.get(hid), sync.direction)
            plans[hid] = (p, plan)
            if to_type == "contacts" and sync.company_name_attribute:
                primaries[hid] = [a.to_id for a in hs_assoc if _is_primary(a.types)]
        _count(out, plans.values())
        if dry_run:
            continue
        failed = await _write(sync, to_type, plans, hs2br, out)
        now = sync.clock()
        changed = {
            hid: plan.result
            for hid, (_, plan) in plans.items()
            if hid not in failed and (plan.writes or base.get(hid) != plan.result)
        }
        async with sync.sessions() as s, s.begin():
            await assoc_store.save(s, sync.object_type, to_type, changed, now=now)
    if primaries:
        await _company_names(sync, ready, primaries, out, dry_run=dry_run)


def _count(out: Outcome, plans: Any) -> None:
    for _, plan in plans:
        out.counts["assoc_hubspot_added"] += len(plan.hubspot_add)
        out.counts["assoc_hubspot_removed"] += len(plan.hubspot_remove)
        out.counts["assoc_brevo_added"] += len(plan.brevo_add)
        out.counts["assoc_brevo_removed"] += len(plan.brevo_remove)


async def _write(
    sync: CrmObjectSync,
    to_type: str,
    plans: dict[str, tuple[CrmPair, SetPlan]],
    hs2br: dict[str, str],
    out: Outcome,
) -> set[str]:
    """Write the planned link changes on both sides; the HubSpot ids whose writes failed."""
    failed: set[str] = set()
    adds = [(hid, t) for hid, (_, plan) in plans.items() for t in sorted(plan.hubspot_add)]
    if adds:
        try:
            result = await sync.hubspot.create_default_associations(sync.object_type, to_type, adds)
            for err in result.errors:
                if err.index is not None and 0 <= err.index < len(adds):
                    failed.add(adds[err.index][0])
        except ApiError as e:
            failed.update(hid for hid, _ in adds)
            out.failures.append(f"hubspot associate {sync.object_type}→{to_type}: {e}")
    removes = [
        (hid, sorted(plan.hubspot_remove))
        for hid, (_, plan) in plans.items()
        if plan.hubspot_remove
    ]
    for start in range(0, len(removes), ARCHIVE_BATCH):
        chunk = removes[start : start + ARCHIVE_BATCH]
        body = {
            "inputs": [{"from": {"id": hid}, "to": [{"id": t} for t in tos]} for hid, tos in chunk]
        }
        try:
            await sync.hubspot.request(
                "POST",
                lambda legacy: sync.hubspot.paths.associations(
                    sync.object_type, to_type, "batch/archive", legacy=legacy
                ),
                json=body,
                idempotent=True,
            )
        except ApiError as e:
            failed.update(hid for hid, _ in chunk)
            out.failures.append(f"hubspot unassociate {sync.object_type}→{to_type}: {e}")
    changes: list[LinkChange] = []
    touched: dict[str, set[str]] = {}
    for hid, (p, plan) in plans.items():
        rid = p.brevo_id
        assert rid is not None
        for ids, add in ((plan.brevo_add, True), (plan.brevo_remove, False)):
            for t in sorted(ids):
                other = hs2br[t]
                change = _link_change(sync.spec.brevo_kind, rid, to_type, other, add)
                changes.append(change)
                keys = touched.setdefault(hid, set())
                keys.add(f"{sync.spec.brevo_kind}:{rid}")
                if to_type == "companies":
                    keys.add(f"company:{other}")
    if changes:
        try:
            linked = await sync.crm.apply_links(changes)
        except ApiError as e:
            failed.update(touched)
            out.failures.append(f"brevo link-unlink: {e}")
        else:
            out.counts["brevo_link_calls"] += linked.calls
            for hid, keys in touched.items():
                if keys & set(linked.failed):
                    failed.add(hid)
    out.counts["association_write_failed"] += len(failed)
    return failed


def _link_change(kind: str, rid: str, to_type: str, other: str, add: bool) -> LinkChange:
    if to_type == "contacts":
        if kind == "company":
            return LinkChange(company=rid, contact=int(other), add=add)
        return LinkChange(deal=rid, contact=int(other), add=add)
    if kind == "deal":
        return LinkChange(deal=rid, company=other, add=add)
    return LinkChange(company=rid, deal=other, add=add)


def _final_name(sync: CrmObjectSync, p: CrmPair) -> str | None:
    key = sync.name_key
    if key is None or p.plan is None:
        return None
    action = p.plan.action(key)
    if action is not None and action.target == "hubspot":
        return action.value
    if p.hs_mapped is not None:
        return p.hs_mapped.values.get(key)
    return None


async def _company_names(
    sync: CrmObjectSync,
    pairs: Sequence[CrmPair],
    primaries: dict[str, list[str]],
    out: Outcome,
    *,
    dry_run: bool,
) -> None:
    """``COMPANY_NAME`` on each contact whose primary company is one of these companies."""
    attribute = sync.company_name_attribute
    assert attribute is not None
    names: dict[str, str] = {}
    for p in pairs:
        if p.hubspot is None:
            continue
        name = _final_name(sync, p)
        if name is None:
            continue
        for contact in primaries.get(p.hubspot.id, []):
            names[contact] = name
    if not names:
        return
    async with sync.sessions() as s:
        contact_links = await ledger.load_links(s, "contacts", hubspot_ids=sorted(names))
    todo: list[tuple[ledger.LinkRecord, str]] = []
    for lk in contact_links:
        name = names.get(lk.hubspot_id or "")
        if name is None or lk.brevo_id is None:
            continue
        marker = lk.bases.get(COMPANY_NAME_MARKER)
        if marker is not None and marker.value_hash == planner.value_hash(name):
            continue
        todo.append((lk, name))
    out.counts["company_name_writes"] += len(todo)
    if dry_run or not todo:
        return
    written: list[tuple[ledger.LinkRecord, str]] = []
    try:
        if sync.import_list_ids and all(lk.identity_key for lk, _ in todo):
            rows = [ImportRow(email=lk.identity_key, attributes={attribute: n}) for lk, n in todo]
            await sync.brevo.import_contacts(rows, list_ids=sync.import_list_ids)
            written = todo
        else:
            # no list to import into (Brevo requires one): contact updates, one call each
            for lk, n in todo:
                assert lk.brevo_id is not None
                await sync.brevo.update_contact(int(lk.brevo_id), "id", attributes={attribute: n})
                written.append((lk, n))
    except ApiError as e:
        out.failures.append(f"brevo {attribute}: {e}")
        out.counts["failed"] += len(todo) - len(written)
    now = sync.clock()
    async with sync.sessions() as s, s.begin():
        for lk, n in written:
            entry = ledger.BaseEntry(planner.value_hash(n), "hubspot", "brevo", now)
            await ledger.record_bases(s, lk.id, {COMPANY_NAME_MARKER: entry})


__all__ = ["COMPANY_NAME_MARKER", "brevo_linked", "sync_associations"]
