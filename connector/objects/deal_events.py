"""The ``deal_stage_changed`` Brevo event: a deal's stage change starts Brevo automations.

Two halves, as the lifecycle trigger (:mod:`connector.onboarding.enroll` and
:mod:`connector.onboarding.triggers`), on the same ``jobs`` table and the same hook runner:

- :class:`DealEvents` is a sync engine's ``on_events`` callback
  (:data:`connector.engine.EventsCallback`): for each ``changed`` event of a deal whose field is
  the mapping's stage field (``hubspot: dealstage``), from either side, it queues one job of the
  hook :data:`DEAL_HOOK` *inside the sync transaction* — the change and its job commit together,
  so a crash cannot lose one or queue it twice. The job's payload holds the deal's ids and the
  old and new stage (HubSpot ids and the Brevo ids the value map gives). Not in a resync (a first
  alignment of two existing records is no change), as the lifecycle trigger.
- :class:`DealEventSender` runs the claimed jobs in batches (the hook runner's round): one
  HubSpot batch read of the deals, one association batch read deals → contacts (up to 1,000
  deals per call), one batch read of the contacts' e-mails, HubSpot's deal pipelines (for the
  labels; one call per round) and Brevo's (one CRM call per hour, cached). Then, per deal, one
  ``POST /v3/events`` ``deal_stage_changed`` per associated contact with an e-mail, identified
  by that e-mail, with the deal's ids on both sides, name, amount, pipeline, old and new stage
  (ids and labels).

Exactly once as far as Brevo allows: Brevo events carry no idempotency key, so each contact's
event is marked in the job's state before its request leaves and after it is answered. A job
repeated after a crash skips the contacts already sent; a contact whose request left without an
answer is not sent again by itself — the job goes dead naming it, and ``connector hooks retry
ID`` sends it (and any left) once an operator has checked Brevo.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from connector.brevo.client import BrevoClient
from connector.brevo.crm import BrevoCrm
from connector.brevo.crm_models import BrevoPipeline
from connector.engine import Mode, SyncEvent
from connector.errors import ApiError
from connector.hubspot.client import HubSpotClient
from connector.hubspot.crm import HubSpotCrm, Pipeline
from connector.mapping import CompiledField
from connector.mapping import Mapping as FieldMapping
from connector.store import jobs
from connector.store.jobs import JobRecord
from connector.store.models import utcnow

log = structlog.get_logger(__name__)

#: the hook (``jobs.hook``) and step of a deal stage event
DEAL_HOOK = "deal_events"
DEAL_STEP = "stage_event"
#: the Brevo event a deal's stage change fires (``POST /v3/events``)
DEAL_STAGE_EVENT = "deal_stage_changed"
#: HubSpot deal properties the event reports
DEAL_PROPERTIES = ("dealname", "amount", "pipeline", "dealstage")
#: modes whose stage changes fire the event (as the lifecycle trigger: not a resync)
EVENT_MODES: frozenset[Mode] = frozenset({"incremental", "retry", "reconcile"})
#: how long Brevo's pipelines (labels) are kept: one CRM call per hour at most
BREVO_PIPELINES_TTL = 3_600.0


def _stage_field(mapping: FieldMapping) -> CompiledField | None:
    return next((f for f in mapping.fields if f.hubspot == "dealstage"), None)


def _hubspot_value(f: CompiledField | None, canonical: str | None) -> str | None:
    """The HubSpot id for a canonical (Brevo-side) value of a value-mapped field."""
    if canonical is None or f is None:
        return canonical
    try:
        return f.transform.to_hubspot(canonical) or canonical
    except ValueError:
        return canonical


class DealEvents:
    """The ``on_events`` callback of the deals sync: queues a job per deal stage change."""

    def __init__(self, mapping: FieldMapping, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.mapping = mapping
        self.clock = clock
        self.stage_field = _stage_field(mapping)

    @property
    def active(self) -> bool:
        """Whether the mapping maps the deal stage at all."""
        return self.mapping.object == "deals" and self.stage_field is not None

    def jobs_for(self, events: Sequence[SyncEvent], now: datetime) -> list[jobs.JobInput]:
        """The jobs ``events`` queue (pure: no I/O)."""
        if not self.active:
            return []
        assert self.stage_field is not None
        stamp = now.isoformat()
        queued: list[jobs.JobInput] = []
        for e in events:
            if (
                e.object_type != "deals"
                or e.kind != "changed"
                or e.field != self.stage_field.key
                or not e.hubspot_id
                or e.old == e.new
            ):
                continue
            old = _hubspot_value(self.stage_field, e.old)
            new = _hubspot_value(self.stage_field, e.new)
            key = f"{DEAL_HOOK}:{e.hubspot_id}:{DEAL_STEP}:{old}>{new}:{stamp}"
            payload = {
                "brevo_deal_id": e.brevo_id,
                "old": old,
                "new": new,
                "old_brevo": e.old,
                "new_brevo": e.new,
                "origin": e.origin,
            }
            queued.append(jobs.JobInput(key, DEAL_HOOK, DEAL_STEP, e.hubspot_id, payload=payload))
        return queued

    async def __call__(
        self, session: AsyncSession, events: Sequence[SyncEvent], mode: Mode
    ) -> None:
        if mode not in EVENT_MODES:
            return
        now = self.clock()
        queued = self.jobs_for(events, now)
        if queued:
            await jobs.add_many(session, queued, now=now)


# --- sending ----------------------------------------------------------------------------------


def contact_mark(contact_id: str) -> str:
    """How a contact is named in a job's state (its HubSpot id, not its e-mail)."""
    return contact_id


def _email_hash(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:16]


@dataclass
class DealOutcome:
    """Per job id: the result to store, the error that fails it (``permanent``: an event
    that may have been sent, which only an operator can release)."""

    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    permanent: set[int] = field(default_factory=set)


SaveState = Callable[[JobRecord, dict[str, Any]], Awaitable[JobRecord]]


@dataclass
class _Labels:
    hubspot: dict[str, Pipeline]
    brevo: dict[str, BrevoPipeline]

    def hubspot_pipeline(self, pipeline_id: str | None) -> str:
        p = self.hubspot.get(pipeline_id or "")
        return p.label if p is not None else ""

    def hubspot_stage(self, pipeline_id: str | None, stage_id: str | None) -> str:
        pipelines = [self.hubspot[pipeline_id]] if pipeline_id in self.hubspot else []
        for p in [*pipelines, *self.hubspot.values()]:
            s = p.stage(stage_id or "")
            if s is not None:
                return s.label
        return ""

    def brevo_stage(self, stage_id: str | None) -> tuple[str, str]:
        """(stage name, pipeline id) of a Brevo stage id."""
        for p in self.brevo.values():
            s = p.stage(stage_id or "")
            if s is not None:
                return s.name, p.id
        return "", ""


class DealEventSender:
    """Sends the ``deal_stage_changed`` events of claimed jobs (see the module docstring)."""

    def __init__(
        self,
        hubspot: HubSpotClient,
        brevo: BrevoClient,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hubspot = hubspot
        self.brevo = brevo
        self.monotonic = monotonic
        self._brevo_pipelines: tuple[float, list[BrevoPipeline]] | None = None

    async def _brevo_labels(self) -> list[BrevoPipeline]:
        cached = self._brevo_pipelines
        if cached is not None and self.monotonic() - cached[0] < BREVO_PIPELINES_TTL:
            return cached[1]
        try:
            pipelines = await BrevoCrm(self.brevo).pipelines()
        except ApiError as e:  # labels are a nicety: the ids still go out
            log.warning("deal_events.brevo_pipelines_unread", error=str(e))
            return cached[1] if cached is not None else []
        self._brevo_pipelines = (self.monotonic(), pipelines)
        return pipelines

    async def run(self, claimed: Sequence[JobRecord], save_state: SaveState) -> DealOutcome:
        """Send the events of ``claimed`` jobs. An API error that fails the batch's reads
        propagates (the runner retries every job); a send that fails fails only its job."""
        out = DealOutcome()
        deal_ids = list(dict.fromkeys(j.hubspot_id for j in claimed if j.hubspot_id))
        read = await self.hubspot.batch_read("deals", deal_ids, list(DEAL_PROPERTIES))
        deals = {r.id: r.properties for r in read.results if not r.archived}
        crm = HubSpotCrm(self.hubspot)
        associations = await crm.read_associations("deals", "contacts", list(deals))
        contact_ids = list(
            dict.fromkeys(a.to_id for links in associations.links.values() for a in links)
        )
        emails: dict[str, str] = {}
        if contact_ids:
            contacts = await self.hubspot.batch_read("contacts", contact_ids, ["email"])
            for c in contacts.results:
                email = (c.properties.get("email") or "").strip().lower()
                if "@" in email and not c.archived:
                    emails[c.id] = email
        labels = _Labels(
            {p.id: p for p in await crm.pipelines("deals")},
            {p.id: p for p in await self._brevo_labels()},
        )
        for job in claimed:
            hid = job.hubspot_id or ""
            if hid not in deals:
                out.results[job.id] = {"skipped": "deal no longer in HubSpot"}
                continue
            if hid in associations.failed:
                out.errors[job.id] = (
                    f"HubSpot could not read deal {hid}'s contacts: {associations.failed[hid]}"
                )
                continue
            targets = [a.to_id for a in associations.links.get(hid, []) if a.to_id in emails]
            properties = self.properties(job, deals[hid], labels)
            await self._send(job, targets, emails, properties, save_state, out)
        return out

    @staticmethod
    def properties(
        job: JobRecord, deal: Mapping[str, str | None], labels: _Labels
    ) -> dict[str, Any]:
        """The event's properties: the deal on both sides, and the stage change."""
        p = job.payload
        pipeline = deal.get("pipeline")
        old_brevo_label, old_brevo_pipeline = labels.brevo_stage(p.get("old_brevo"))
        new_brevo_label, new_brevo_pipeline = labels.brevo_stage(p.get("new_brevo"))
        amount_raw = deal.get("amount")
        amount: float | str = ""
        try:
            amount = float(amount_raw) if amount_raw not in (None, "") else ""
        except ValueError:
            amount = str(amount_raw)
        brevo_pipeline_id = new_brevo_pipeline or old_brevo_pipeline
        brevo_pipeline = labels.brevo.get(brevo_pipeline_id)
        return {
            "hubspot_deal_id": job.hubspot_id or "",
            "brevo_deal_id": p.get("brevo_deal_id") or "",
            "deal_name": deal.get("dealname") or "",
            "amount": amount,
            "pipeline_id": pipeline or "",
            "pipeline": labels.hubspot_pipeline(pipeline),
            "brevo_pipeline_id": brevo_pipeline_id,
            "brevo_pipeline": brevo_pipeline.name if brevo_pipeline is not None else "",
            "old_stage_id": p.get("old") or "",
            "old_stage": labels.hubspot_stage(pipeline, p.get("old")),
            "new_stage_id": p.get("new") or "",
            "new_stage": labels.hubspot_stage(pipeline, p.get("new")),
            "old_brevo_stage_id": p.get("old_brevo") or "",
            "old_brevo_stage": old_brevo_label,
            "new_brevo_stage_id": p.get("new_brevo") or "",
            "new_brevo_stage": new_brevo_label,
            "changed_in": p.get("origin") or "",
            "event_key": job.key,
        }

    async def _send(
        self,
        job: JobRecord,
        targets: list[str],
        emails: Mapping[str, str],
        properties: Mapping[str, Any],
        save_state: SaveState,
        out: DealOutcome,
    ) -> None:
        current = job
        sent: list[str] = list(current.state.get("sent") or [])
        uncertain: list[str] = list(current.state.get("uncertain") or [])
        calling = current.state.get("calling")
        if calling and calling not in sent and calling not in uncertain:
            uncertain.append(str(calling))  # an earlier attempt stopped inside this request
            current = await save_state(current, {"calling": None, "uncertain": uncertain})
        for cid in targets:
            if cid in sent or cid in uncertain:
                continue
            current = await save_state(current, {"calling": cid})
            try:
                await self.brevo.track_event(
                    DEAL_STAGE_EVENT, email=emails[cid], properties=properties
                )
            except ApiError as e:
                if e.status is not None and e.status < 500 and e.status != 408:
                    # refused: Brevo did not record it, so it may go again
                    current = await save_state(current, {"calling": None})
                out.errors[job.id] = f"contact {cid}: {e}"
                return
            sent.append(cid)
            current = await save_state(current, {"calling": None, "sent": sent})
            log.info("deal_events.sent", job=job.id, contact=cid, email=_email_hash(emails[cid]))
        if uncertain:
            out.permanent.add(job.id)
            out.errors[job.id] = (
                f"an earlier attempt of this event ({job.key}) stopped after the request for "
                f"HubSpot contact(s) {', '.join(uncertain)} left, so Brevo may have received "
                "it; Brevo events cannot be deduplicated, so it is not sent again by itself — "
                f"check those contacts' events in Brevo, then run `connector hooks retry "
                f"{job.id}` to send it"
            )
            return
        out.results[job.id] = {
            "sent": len(sent),
            "contacts": sent,
            "old": job.payload.get("old"),
            "new": job.payload.get("new"),
        }


def released_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A dead deal event job's state once an operator has checked Brevo (``hooks retry``):
    the contacts whose event may have been sent are sent again."""
    return {k: v for k, v in state.items() if k not in ("calling", "uncertain")}


__all__ = [
    "DEAL_HOOK",
    "DEAL_STAGE_EVENT",
    "DEAL_STEP",
    "DealEventSender",
    "DealEvents",
    "DealOutcome",
    "released_state",
]
