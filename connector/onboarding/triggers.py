"""Lifecycle triggers: Brevo list membership follows the HubSpot lifecycle stage, and a stage
change fires a Brevo event that can start Brevo automations.

Two job steps of the ``lifecycle`` hook (queued by :class:`~connector.onboarding.enroll.
HookEvents` inside the sync transaction, run by the hook runner):

- ``lists``: the contact's lists are made to match its **current** HubSpot stage (read when
  the job runs, so jobs may run in any order and a repeat changes nothing): everyone in
  ``connectors.hubspot.lists.all_contacts``; ``marketingqualifiedlead`` and
  ``salesqualifiedlead`` in ``qualified_leads``; ``customer`` in ``customers`` — and out of the
  stage lists it no longer belongs to. Jobs are handled in batches: one HubSpot batch read, one
  Brevo read per 20 contacts, and one add/remove call per list for the whole batch; a contact
  already where it belongs costs no write.
- ``event``: ``POST /v3/events`` ``lifecycle_stage_changed`` with the old and new stage and the
  contact's identifiers (Brevo id, HubSpot id as ``ext_id``). Brevo events carry no idempotency
  key, so the step is at most once: an attempt interrupted after the request left (a crash, a
  5xx, a timeout) is not repeated by itself — the job goes dead saying so, and ``connector
  hooks retry ID`` sends it once an operator has checked Brevo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from connector.brevo.client import BrevoClient
from connector.config import HubSpotLists
from connector.errors import ApiError, ConnectorError
from connector.hubspot.client import HubSpotClient
from connector.onboarding.enroll import LIFECYCLE_EVENT, STAGE_PROPERTY
from connector.store.jobs import JobRecord

log = structlog.get_logger(__name__)

#: Which stages belong in which configured list (``all_contacts``: every stage).
STAGE_LISTS: dict[str, frozenset[str]] = {
    "qualified_leads": frozenset({"marketingqualifiedlead", "salesqualifiedlead"}),
    "customers": frozenset({"customer"}),
}


class EventMaybeSent(ConnectorError):
    """An earlier attempt of an event job stopped after its request left: not repeated."""


def desired_lists(lists: HubSpotLists, stage: str | None) -> set[int]:
    """The configured list ids a contact at ``stage`` belongs to."""
    ids = lists.ids()
    wanted = {ids["all_contacts"]} if "all_contacts" in ids else set()
    normalised = (stage or "").strip().lower()
    for name, stages in STAGE_LISTS.items():
        if name in ids and normalised in stages:
            wanted.add(ids[name])
    return wanted


@dataclass
class ListsOutcome:
    """Per job id: the result to store, or the error that failed it."""

    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


async def sync_lists(
    jobs: Sequence[JobRecord],
    *,
    hubspot: HubSpotClient,
    brevo: BrevoClient,
    lists: HubSpotLists,
) -> ListsOutcome:
    """Bring the lists of the jobs' contacts in line with their current stage (batched).

    An API error that fails the whole batch propagates; a contact Brevo refused fails only
    its own job.
    """
    out = ListsOutcome()
    managed = set(lists.ids().values())
    hubspot_ids = list(dict.fromkeys(j.hubspot_id for j in jobs if j.hubspot_id))
    read = await hubspot.batch_read("contacts", hubspot_ids, [STAGE_PROPERTY, "email"])
    stages = {r.id: r.properties.get(STAGE_PROPERTY) for r in read.results if not r.archived}
    brevo_ids: dict[str, int] = {}
    for j in jobs:
        raw = j.payload.get("brevo_id")
        if j.hubspot_id and raw is not None and str(raw).isdigit():
            brevo_ids[j.hubspot_id] = int(raw)
    contacts = {c.id: c for c in await brevo.get_contacts_by_ids(sorted(set(brevo_ids.values())))}

    plan: dict[str, tuple[int, set[int], set[int], str | None]] = {}
    for hid in hubspot_ids:
        bid = brevo_ids.get(hid)
        contact = contacts.get(bid) if bid is not None else None
        if hid not in stages or contact is None:
            continue
        want = desired_lists(lists, stages[hid])
        have = set(contact.list_ids) & managed
        plan[hid] = (contact.id, want - have, (have - want) - _never_removed(lists), stages[hid])

    refused: set[int] = set()
    for list_id in sorted(managed):
        add = sorted({bid for bid, a, _, _ in plan.values() if list_id in a})
        remove = sorted({bid for bid, _, r, _ in plan.values() if list_id in r})
        if add:
            res = await brevo.add_to_list(list_id, ids=add)
            refused |= {int(x) for x in res.failure if str(x).isdigit()}
        if remove:
            res = await brevo.remove_from_list(list_id, ids=remove)
            refused |= {int(x) for x in res.failure if str(x).isdigit()}

    for j in jobs:
        hid = j.hubspot_id or ""
        if hid not in stages:
            out.results[j.id] = {"skipped": "contact no longer in HubSpot"}
        elif hid not in plan:
            out.results[j.id] = {"skipped": "no linked Brevo contact"}
        else:
            bid, added, removed, stage = plan[hid]
            if bid in refused:
                changed = sorted(added | removed)
                out.errors[j.id] = f"Brevo refused a list change of contact {bid} (lists {changed})"
            else:
                out.results[j.id] = {
                    "stage": stage,
                    "added": sorted(added),
                    "removed": sorted(removed),
                }
    return out


def _never_removed(lists: HubSpotLists) -> set[int]:
    return {lists.all_contacts} if lists.all_contacts is not None else set()


async def send_stage_event(
    job: JobRecord,
    brevo: BrevoClient,
    *,
    mark_calling: Callable[..., Awaitable[None]],
) -> dict[str, Any]:
    """Fire ``lifecycle_stage_changed`` once. ``mark_calling()`` records (and commits) that the
    request is about to leave; an earlier attempt that did so raises :class:`EventMaybeSent`."""
    if job.state.get("calling"):
        raise EventMaybeSent(
            f"an earlier attempt of this event ({job.key}) stopped after its request left, so "
            "Brevo may have received it; Brevo events cannot be deduplicated, so it is not sent "
            f"again by itself — check the contact's events in Brevo, then run "
            f"`connector hooks retry {job.id}` to send it"
        )
    payload: Mapping[str, Any] = job.payload
    raw = payload.get("brevo_id")
    brevo_id = int(raw) if raw is not None and str(raw).isdigit() else None
    properties = {
        "old_stage": payload.get("old") or "",
        "new_stage": payload.get("new") or "",
        "hubspot_id": job.hubspot_id or "",
        "event_key": job.key,
    }
    await mark_calling()
    try:
        await brevo.track_event(
            LIFECYCLE_EVENT,
            contact_id=brevo_id,
            ext_id=job.hubspot_id,
            properties=properties,
        )
    except ApiError as e:
        if e.status is not None and e.status < 500 and e.status not in (408,):
            await mark_calling(False)  # refused: it was not recorded, so it may go again
        raise
    return {"sent": True, "old": payload.get("old"), "new": payload.get("new")}


__all__ = [
    "STAGE_LISTS",
    "EventMaybeSent",
    "ListsOutcome",
    "desired_lists",
    "send_stage_event",
    "sync_lists",
]
