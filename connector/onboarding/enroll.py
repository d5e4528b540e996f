"""From sync events to durable hook jobs: onboarding enrollment and lifecycle triggers.

:class:`HookEvents` is the engine's ``on_events`` callback (:data:`connector.engine.
EventsCallback`): it runs inside the transaction that records a pass's links, so a contact's
enrollment commits together with its link — a crash cannot lose it, and a repeat of the pass
(which finds the link, so emits no ``created`` event) cannot enroll it twice.

Who enrolls in onboarding: a **new HubSpot contact** — a ``created`` event whose origin is
HubSpot — seen by an **incremental** pass (pull, webhook worker, or the dead-letter retry of
such a pass), never by an initial sync, a resync or a reconciliation (those meet the existing
base). The runner's first step then checks HubSpot's ``createdate`` against the time the hook
was enabled (``hook_state.enabled_at``): a contact created before it is skipped. The existing
base is enrolled only explicitly (:func:`enroll_existing`, ``connector hooks enroll``).

Lifecycle triggers: a lifecycle-stage change (a ``changed`` event of the field mapped to
HubSpot's ``lifecyclestage``) queues a ``lists`` job (Brevo list membership follows the stage)
and an ``event`` job (the Brevo event :data:`LIFECYCLE_EVENT`); a contact created on either
side queues a ``lists`` job. Not in a resync (the initial sync included): its differences
are a first alignment of two existing records, not changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from connector.config import Settings
from connector.engine import Mode, SyncEvent
from connector.mapping import Mapping
from connector.store import jobs
from connector.store.models import Enrollment, Link, utcnow

log = structlog.get_logger(__name__)

ONBOARDING = "onboarding"
LIFECYCLE = "lifecycle"
#: The onboarding steps, in order (each one job; the next is queued when one succeeds).
ONBOARDING_STEPS = ("assign_owner", "book_call", "compose_email", "send_email", "log_note")
LIFECYCLE_STEPS = ("lists", "event")
#: The Brevo event a lifecycle-stage change fires (``POST /v3/events``).
LIFECYCLE_EVENT = "lifecycle_stage_changed"
STAGE_PROPERTY = "lifecyclestage"

#: Modes whose ``created`` events enroll a contact in onboarding.
ENROLLING_MODES: frozenset[Mode] = frozenset({"incremental", "retry"})
#: Modes whose events fire the lifecycle triggers.
TRIGGER_MODES: frozenset[Mode] = frozenset({"incremental", "retry", "reconcile"})


def onboarding_enabled(settings: Settings) -> bool:
    return settings.onboarding is not None and settings.onboarding.enabled


def lists_configured(settings: Settings) -> bool:
    return bool(settings.connectors.hubspot.lists.ids())


class HookEvents:
    """The engine's ``on_events`` callback for one object type (contacts)."""

    def __init__(
        self,
        settings: Settings,
        mapping: Mapping,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.mapping = mapping
        self.clock = clock
        self.stage_field = next((f for f in mapping.fields if f.hubspot == STAGE_PROPERTY), None)

    @property
    def active(self) -> bool:
        """Whether any hook can act on this mapping's events."""
        if self.mapping.object != "contacts":
            return False
        return (
            onboarding_enabled(self.settings)
            or self.stage_field is not None
            or lists_configured(self.settings)
        )

    async def __call__(
        self, session: AsyncSession, events: Sequence[SyncEvent], mode: Mode
    ) -> None:
        if not self.active:
            return
        now = self.clock()
        if onboarding_enabled(self.settings) and mode in ENROLLING_MODES:
            await self._enroll(session, events, now)
        if mode in TRIGGER_MODES:
            await self._lifecycle(session, events, now)

    # --- onboarding ---------------------------------------------------------------------

    async def _enroll(
        self, session: AsyncSession, events: Sequence[SyncEvent], now: datetime
    ) -> None:
        new = [e for e in events if e.kind == "created" and e.origin == "hubspot" and e.hubspot_id]
        if not new:
            return
        if await jobs.enabled_at(session, ONBOARDING) is None:
            # first sight of the hook enabled (normally the daemon records it on start)
            await jobs.set_enabled(session, ONBOARDING, True, now=now)
        settings = self.settings.onboarding
        assert settings is not None
        for e in new:
            assert e.hubspot_id is not None
            identity = jobs.identity_hash(e.identity)
            if (
                not settings.reenroll
                and identity is not None
                and await jobs.identity_enrolled(session, ONBOARDING, identity, e.hubspot_id)
            ):
                log.info("onboarding.not_reenrolled", hubspot_id=e.hubspot_id)
                continue
            enrolled = await jobs.enroll(
                session,
                ONBOARDING,
                e.hubspot_id,
                first_step=ONBOARDING_STEPS[0],
                source="new",
                now=now,
                brevo_id=e.brevo_id,
                identity=identity,
            )
            if enrolled is not None:
                log.info("onboarding.enrolled", hubspot_id=e.hubspot_id, enrollment=enrolled)

    # --- lifecycle triggers -------------------------------------------------------------

    def stage_name(self, canonical: str | None) -> str | None:
        """The HubSpot stage for the mapping's canonical value (``"6"`` → ``customer``)."""
        if canonical is None or self.stage_field is None:
            return canonical
        try:
            return self.stage_field.transform.to_hubspot(canonical) or canonical
        except ValueError:
            return canonical

    async def _lifecycle(
        self, session: AsyncSession, events: Sequence[SyncEvent], now: datetime
    ) -> None:
        lists = lists_configured(self.settings)
        stage_key = self.stage_field.key if self.stage_field is not None else None
        stamp = now.isoformat()
        queued: list[jobs.JobInput] = []
        for e in events:
            if not e.hubspot_id:
                continue
            stage_change = e.kind == "changed" and stage_key is not None and e.field == stage_key
            payload: dict[str, Any] = {"brevo_id": e.brevo_id}
            if lists and (e.kind == "created" or stage_change):
                key = f"{LIFECYCLE}:{e.hubspot_id}:lists:{stamp}"
                queued.append(jobs.JobInput(key, LIFECYCLE, "lists", e.hubspot_id, payload=payload))
            if stage_change:
                old, new = self.stage_name(e.old), self.stage_name(e.new)
                key = f"{LIFECYCLE}:{e.hubspot_id}:event:{old}>{new}:{stamp}"
                payload = {**payload, "old": old, "new": new}
                queued.append(jobs.JobInput(key, LIFECYCLE, "event", e.hubspot_id, payload=payload))
        if queued:
            await jobs.add_many(session, queued, now=now)


# --- the existing base ---------------------------------------------------------------------


@dataclass(frozen=True)
class EnrollPlan:
    """What ``connector hooks enroll`` would do: the linked contacts not yet enrolled."""

    candidates: list[tuple[str, str | None, str | None]]
    """(HubSpot id, Brevo id, e-mail) of each contact to enroll"""
    reopen: list[str]
    """HubSpot ids whose enrollment was skipped (created before the hook was enabled)"""

    @property
    def count(self) -> int:
        return len(self.candidates) + len(self.reopen)


async def plan_existing(session: AsyncSession) -> EnrollPlan:
    """The existing base: every linked contact with no onboarding enrollment, plus those
    skipped for having been created before the hook was enabled."""
    enrolled = sa.select(Enrollment.hubspot_id).where(Enrollment.hook == ONBOARDING)
    stmt = (
        sa.select(Link.hubspot_id, Link.brevo_id, Link.identity_key)
        .where(
            Link.object_type == "contacts",
            Link.hubspot_id.is_not(None),
            Link.hubspot_id.not_in(enrolled),
        )
        .order_by(Link.id)
    )
    candidates = [(str(h), b, k) for h, b, k in await session.execute(stmt)]
    skipped = sa.select(Enrollment.hubspot_id).where(
        Enrollment.hook == ONBOARDING, Enrollment.status == "skipped"
    )
    reopen = [str(h) for h in (await session.scalars(skipped)).all()]
    return EnrollPlan(candidates, reopen)


async def enroll_existing(session: AsyncSession, plan: EnrollPlan, *, reenroll: bool) -> int:
    """Enroll the plan's contacts (``source = existing``); how many were enrolled."""
    now = utcnow()
    done = 0
    for hubspot_id, brevo_id, email in plan.candidates:
        identity = jobs.identity_hash(email)
        if (
            not reenroll
            and identity is not None
            and await jobs.identity_enrolled(session, ONBOARDING, identity, hubspot_id)
        ):
            continue
        enrolled = await jobs.enroll(
            session,
            ONBOARDING,
            hubspot_id,
            first_step=ONBOARDING_STEPS[0],
            source="existing",
            now=now,
            brevo_id=brevo_id,
            identity=identity,
        )
        done += enrolled is not None
    for hubspot_id in plan.reopen:
        done += await jobs.reopen_skipped(
            session, ONBOARDING, hubspot_id, first_step=ONBOARDING_STEPS[0], now=now
        )
    return done


__all__ = [
    "ENROLLING_MODES",
    "LIFECYCLE",
    "LIFECYCLE_EVENT",
    "LIFECYCLE_STEPS",
    "ONBOARDING",
    "ONBOARDING_STEPS",
    "TRIGGER_MODES",
    "EnrollPlan",
    "HookEvents",
    "enroll_existing",
    "lists_configured",
    "onboarding_enabled",
    "plan_existing",
]
