"""The durable hook runner: onboarding steps and lifecycle triggers, each exactly once.

Every step of every contact is one row of ``jobs`` (:mod:`connector.store.jobs`) with the key
``hook:contact:step``. The runner claims due jobs, runs each step, and records the outcome in
the database before the next step starts; the next step is inserted in the same transaction as
the success of the one before, so the chain can neither stop nor fork after a crash.

Onboarding (a contact created in HubSpot after the hook was enabled), in order:

1. ``assign_owner`` — a contact that has an owner keeps it; else :func:`pick_owner` (the
   round-robin position is taken, and the pick stored, in one transaction *before* HubSpot is
   written, so a repeat writes the same owner) and ``hubspot_owner_id`` goes out through a
   batch update. The first step also checks that HubSpot's ``createdate`` is after the time
   the hook was enabled (``hook_state.enabled_at``); an older contact is skipped.
2. ``book_call`` — the owner's busy times over the horizon, :func:`find_slot`, and
   ``provider.book`` with the step's key (a repeat returns the same booking). The chosen slot
   is stored before booking, so a repeat asks for the same one.
3. ``compose_email`` — :func:`compose_welcome` (template or LLM), stored until sent; also
   written to ``onboarding.email.output_dir`` when set.
4. ``send_email`` — Brevo transactional e-mail with ``IdempotencyKey`` = the step's key, the
   sender and tags from config; outside ``onboarding.send_window`` the job waits for the window
   to open (attempt not counted); ``max_emails_per_contact`` caps the welcome e-mails one person
   gets across HubSpot ids. Once sent, the stored body is dropped (its hash is kept).
5. ``log_note`` — a HubSpot note on the contact's timeline (owner, call time, e-mail subject)
   carrying the key; an attempt that follows one that may have created it first looks for a
   note with that key among the contact's notes (HubSpot's create is not idempotent).

Exactly once, whatever crashes: a succeeded step is never run again (its result is stored);
a step interrupted inside its external call runs again and its key makes the repeat harmless
(Brevo answers ``duplicate_request``, the provider returns the same booking, the note is found,
the owner write sets the same value). A failed step retries after ``retry_base_seconds × 2ⁿ``
and is ``dead`` after ``max_attempts`` (``connector hooks list --failed``, ``connector hooks
retry ID``).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.brevo.client import BrevoClient, EmailAlreadySentError
from connector.brevo.models import EmailAddress
from connector.config import Settings
from connector.errors import ConfigError, ConnectorError, scrub
from connector.hubspot.client import HubSpotClient
from connector.hubspot.models import HubSpotObject, parse_datetime
from connector.objects.deal_events import DEAL_HOOK, DealEventSender, released_state
from connector.onboarding import triggers
from connector.onboarding.enroll import (
    LIFECYCLE,
    ONBOARDING,
    ONBOARDING_STEPS,
    lists_configured,
    onboarding_enabled,
)
from connector.onboarding.settings import OnboardingSettings, QuietHours
from connector.store import jobs
from connector.store.jobs import EnrollmentRecord, JobRecord
from connector.store.models import EnrollmentStatus, utcnow

if TYPE_CHECKING:
    from connector.onboarding.calendar import BookedCall, BookingRequest, CalendarProvider
    from connector.onboarding.compose import WelcomeContext, WelcomeEmail
    from connector.onboarding.owners import OwnerInfo
    from connector.onboarding.settings import CalendarSettings, OwnerSettings, WorkingHours
    from connector.onboarding.slots import Interval

log = structlog.get_logger(__name__)

#: How long a claim lasts; a live worker finishes a step well within it. A worker known dead
#: (a process of this host that no longer runs) loses its claims at once.
LEASE = timedelta(minutes=10)
#: Most jobs claimed per round.
BATCH = 50
#: Longest wait between two attempts of a failing step.
MAX_BACKOFF = timedelta(hours=6)
#: Contact properties the steps read (plus those the owner rules test).
CONTACT_PROPERTIES = (
    "email",
    "firstname",
    "lastname",
    "company",
    "country",
    "phone",
    "jobtitle",
    "lifecyclestage",
    "hubspot_owner_id",
    "createdate",
)


# --- the steps' building blocks (engineer A's modules), swappable in tests ----------------


class _FindSlot(Protocol):
    def __call__(
        self,
        busy: Sequence[Interval],
        *,
        now: datetime,
        timezone: str,
        hours: WorkingHours,
        min_notice: timedelta,
        horizon: timedelta,
        duration: timedelta,
    ) -> Interval: ...


class _PickOwner(Protocol):
    def __call__(
        self,
        settings: OwnerSettings,
        contact: Mapping[str, str | None],
        *,
        sequence: int,
        loads: Mapping[str, int] | None = None,
        candidates: Sequence[str] | None = None,
    ) -> str: ...


class _Compose(Protocol):
    def __call__(
        self,
        settings: OnboardingSettings,
        ctx: WelcomeContext,
        *,
        base_dir: Path,
        http: httpx.AsyncClient | None = None,
    ) -> Awaitable[WelcomeEmail]: ...


class _MakeProvider(Protocol):
    def __call__(
        self,
        settings: CalendarSettings,
        *,
        hubspot: HubSpotClient,
        http: httpx.AsyncClient | None = None,
    ) -> CalendarProvider: ...


@dataclass(frozen=True)
class StepKit:
    """The functions the steps are built from (:mod:`connector.onboarding.slots`, ``owners``,
    ``calendar``, ``compose``), and the classes they exchange."""

    find_slot: _FindSlot
    pick_owner: _PickOwner
    owner_loads: Callable[[HubSpotClient, Sequence[str]], Awaitable[dict[str, int]]]
    team_members: Callable[[HubSpotClient, str], Awaitable[list[str]]]
    owner_info: Callable[[HubSpotClient, str], Awaitable[OwnerInfo]]
    make_provider: _MakeProvider
    compose_welcome: _Compose
    owner_cls: type[OwnerInfo]
    booking_cls: type[BookingRequest]
    call_cls: type[BookedCall]
    context_cls: type[WelcomeContext]


def default_kit() -> StepKit:
    """The real step functions."""
    from connector.onboarding.calendar import BookedCall, BookingRequest, make_provider
    from connector.onboarding.compose import WelcomeContext, compose_welcome
    from connector.onboarding.owners import (
        OwnerInfo,
        owner_info,
        owner_loads,
        pick_owner,
        team_members,
    )
    from connector.onboarding.slots import find_slot

    return StepKit(
        find_slot=find_slot,
        pick_owner=pick_owner,
        owner_loads=owner_loads,
        team_members=team_members,
        owner_info=owner_info,
        make_provider=make_provider,
        compose_welcome=compose_welcome,
        owner_cls=OwnerInfo,
        booking_cls=BookingRequest,
        call_cls=BookedCall,
        context_cls=WelcomeContext,
    )


# --- outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """The step succeeded; ``result`` is stored and the next step queued."""

    result: dict[str, Any]


@dataclass(frozen=True)
class Wait:
    """Not now (quiet hours): the job waits until ``until``; the attempt is not counted."""

    until: datetime
    reason: str


@dataclass(frozen=True)
class Stop:
    """The enrollment ends here (e.g. the contact predates the hook): the job succeeded with
    ``result`` and the enrollment takes ``status``."""

    status: EnrollmentStatus
    reason: str
    result: dict[str, Any] = field(default_factory=dict)


StepOutcome = Done | Wait | Stop


class PermanentStepError(ConnectorError):
    """A failure a retry cannot mend (the job is dead at once, the message says what to fix)."""


@dataclass
class RunnerResult:
    """What one :meth:`HookRunner.run_once` did, per outcome."""

    claimed: int = 0
    succeeded: int = 0
    retrying: int = 0
    dead: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "claimed": self.claimed,
            "succeeded": self.succeeded,
            "retrying": self.retrying,
            "dead": self.dead,
            "waiting": self.waiting,
        }


@dataclass
class _Step:
    job: JobRecord
    enrollment: EnrollmentRecord
    contact: HubSpotObject
    previous: dict[str, dict[str, Any]]
    now: datetime

    @property
    def props(self) -> dict[str, str | None]:
        return self.contact.properties

    @property
    def email(self) -> str:
        return (self.props.get("email") or "").strip()

    @property
    def name(self) -> str:
        full = " ".join(p for p in (self.props.get("firstname"), self.props.get("lastname")) if p)
        return full or self.email


# --- the runner ----------------------------------------------------------------------------


class HookRunner:
    """Claims and runs due hook jobs; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        hubspot: HubSpotClient,
        brevo: BrevoClient,
        sessions: async_sessionmaker[AsyncSession],
        worker_id: str,
        kit: StepKit | None = None,
        is_dead: Callable[[str], bool] = lambda holder: False,
        clock: Callable[[], datetime] = utcnow,
        base_dir: Path | None = None,
        lease: timedelta = LEASE,
        batch: int = BATCH,
    ) -> None:
        self.settings = settings
        self.onboarding = settings.onboarding
        self.hubspot = hubspot
        self.brevo = brevo
        self.sessions = sessions
        self.worker_id = worker_id
        self._kit = kit
        self.is_dead = is_dead
        self.clock = clock
        self.base_dir = base_dir or Path.cwd()
        self.lease = lease
        self.batch = batch
        self._provider: CalendarProvider | None = None
        self._http: httpx.AsyncClient | None = None
        self._deal_sender: DealEventSender | None = None
        self.log = log.bind(worker=worker_id)

    @property
    def kit(self) -> StepKit:
        if self._kit is None:
            self._kit = default_kit()
        return self._kit

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=30.0)
        return self._http

    @property
    def provider(self) -> CalendarProvider:
        if self._provider is None:
            assert self.onboarding is not None
            self._provider = self.kit.make_provider(
                self.onboarding.calendar, hubspot=self.hubspot, http=self.http
            )
        return self._provider

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def hooks(self) -> list[str]:
        """The hooks whose jobs this runner takes: onboarding only while it is enabled
        (its jobs wait otherwise), lifecycle always."""
        hooks = [LIFECYCLE, DEAL_HOOK]
        return [ONBOARDING, *hooks] if onboarding_enabled(self.settings) else hooks

    async def prepare(self) -> None:
        """Record whether onboarding is enabled; its first enabling time is when contacts
        start to count as new (:func:`jobs.set_enabled`)."""
        async with self.sessions() as s, s.begin():
            at = await jobs.set_enabled(
                s, ONBOARDING, onboarding_enabled(self.settings), now=self.clock()
            )
        if at is not None:
            self.log.info("onboarding.enabled", since=at.isoformat())

    # --- loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, idle_wait: float = 2.0) -> None:
        """Run due jobs until ``stop`` is set; between rounds with nothing due, wait."""
        await self.prepare()
        try:
            while not stop.is_set():
                try:
                    result = await self.run_once(stop)
                except Exception as e:  # the database hiccuped: try again next round
                    self.log.error("hooks.round_failed", error=scrub(f"{type(e).__name__}: {e}"))
                    result = RunnerResult()
                if result.claimed == 0:
                    with _suppress_timeout():
                        await asyncio.wait_for(stop.wait(), timeout=idle_wait)
        finally:
            await self.aclose()

    async def run_once(self, stop: asyncio.Event | None = None) -> RunnerResult:
        """Run every job due now (and those their successes queue), then return."""
        out = RunnerResult()
        while stop is None or not stop.is_set():
            claimed = await self._claim()
            if not claimed:
                break
            out.claimed += len(claimed)
            lists = [j for j in claimed if j.hook == LIFECYCLE and j.step == "lists"]
            if lists:
                await self._run_lists(lists, out)
            deals = [j for j in claimed if j.hook == DEAL_HOOK]
            if deals:
                await self._run_deal_events(deals, out)
            for job in claimed:
                if stop is not None and stop.is_set():
                    await self._release([j for j in claimed if j.status == "running"])
                    break
                if job.hook == LIFECYCLE and job.step == "event":
                    await self._run_event(job, out)
                elif job.hook == ONBOARDING:
                    await self._run_chain(job, out)
        return out

    async def _claim(self) -> list[JobRecord]:
        now = self.clock()
        async with self.sessions() as s, s.begin():
            holders = await jobs.live_holders(s, now)
            dead = [h for h in holders if h != self.worker_id and self.is_dead(h)]
            return await jobs.claim(
                s,
                worker=self.worker_id,
                limit=self.batch,
                lease=self.lease,
                now=now,
                hooks=self.hooks(),
                dead_holders=dead,
            )

    async def _release(self, claimed: Sequence[JobRecord]) -> None:
        async with self.sessions() as s, s.begin():
            await jobs.release(s, [j.id for j in claimed], worker=self.worker_id, now=self.clock())

    # --- recording ----------------------------------------------------------------------

    def backoff(self, attempts: int) -> timedelta:
        base = self.onboarding.retry_base_seconds if self.onboarding else 30.0
        return min(timedelta(seconds=base * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)

    @property
    def max_attempts(self) -> int:
        return self.onboarding.max_attempts if self.onboarding else 6

    async def _failed(
        self, job: JobRecord, error: BaseException | str, out: RunnerResult, *, permanent: bool
    ) -> None:
        text = scrub(error if isinstance(error, str) else f"{type(error).__name__}: {error}")
        now = self.clock()
        async with self.sessions() as s, s.begin():
            outcome = await jobs.fail(
                s,
                job.id,
                text,
                now=now,
                max_attempts=self.max_attempts,
                backoff=self.backoff,
                permanent=permanent,
            )
            if outcome == "dead" and job.enrollment_id is not None:
                await jobs.set_enrollment(s, job.enrollment_id, "dead", text, now=now)
        if outcome == "dead":
            out.dead += 1
        else:
            out.retrying += 1
        out.errors.append(f"{job.key}: {text}")
        level = self.log.error if outcome == "dead" else self.log.warning
        level("hooks.step_failed", job=job.id, key=job.key, outcome=outcome, error=text)

    async def _save_state(self, job: JobRecord, **changes: Any) -> JobRecord:
        """Store what the step decided (committed before the external call it prepares)."""
        state = {**job.state, **changes}
        async with self.sessions() as s, s.begin():
            if not await jobs.save_state(s, job.id, state, worker=self.worker_id):
                raise ConnectorError(f"job {job.id} was taken over by another worker")
        return _with_state(job, state)

    # --- lifecycle ----------------------------------------------------------------------

    async def _run_lists(self, claimed: list[JobRecord], out: RunnerResult) -> None:
        lists = self.settings.connectors.hubspot.lists
        if not lists_configured(self.settings):
            done = triggers.ListsOutcome(results={j.id: {"skipped": "no lists"} for j in claimed})
        else:
            try:
                done = await triggers.sync_lists(
                    claimed, hubspot=self.hubspot, brevo=self.brevo, lists=lists
                )
            except Exception as e:
                for job in claimed:
                    await self._failed(job, e, out, permanent=False)
                return
        for job in claimed:
            if job.id in done.errors:
                await self._failed(job, done.errors[job.id], out, permanent=False)
                continue
            async with self.sessions() as s, s.begin():
                await jobs.succeed(
                    s, job.id, done.results.get(job.id, {}), now=self.clock(), worker=self.worker_id
                )
            out.succeeded += 1

    async def _run_event(self, job: JobRecord, out: RunnerResult) -> None:
        current = job

        async def mark_calling(calling: bool = True) -> None:
            nonlocal current
            current = await self._save_state(current, calling=calling)

        try:
            result = await triggers.send_stage_event(job, self.brevo, mark_calling=mark_calling)
        except triggers.EventMaybeSent as e:
            await self._failed(job, e, out, permanent=True)
            return
        except Exception as e:
            await self._failed(job, e, out, permanent=False)
            return
        async with self.sessions() as s, s.begin():
            await jobs.succeed(s, job.id, result, now=self.clock(), worker=self.worker_id)
        out.succeeded += 1

    async def _run_deal_events(self, claimed: list[JobRecord], out: RunnerResult) -> None:
        """``deal_stage_changed`` events (:mod:`connector.objects.deal_events`), batched."""
        if self._deal_sender is None:
            self._deal_sender = DealEventSender(self.hubspot, self.brevo)

        async def save_state(job: JobRecord, changes: dict[str, Any]) -> JobRecord:
            return await self._save_state(job, **changes)

        try:
            done = await self._deal_sender.run(claimed, save_state)
        except Exception as e:
            for job in claimed:
                await self._failed(job, e, out, permanent=False)
            return
        for job in claimed:
            if job.id in done.errors:
                permanent = job.id in done.permanent
                await self._failed(job, done.errors[job.id], out, permanent=permanent)
                continue
            async with self.sessions() as s, s.begin():
                await jobs.succeed(
                    s, job.id, done.results.get(job.id, {}), now=self.clock(), worker=self.worker_id
                )
            out.succeeded += 1

    # --- onboarding ---------------------------------------------------------------------

    async def _run_chain(self, job: JobRecord | None, out: RunnerResult) -> None:
        """Run a contact's step, then each next step it queues, until one fails or waits."""
        contact: HubSpotObject | None = None
        while job is not None:
            try:
                if contact is None:
                    contact = await self.hubspot.get_object(
                        "contacts", job.hubspot_id or "", self._properties()
                    )
                    if contact is None:
                        raise PermanentStepError(
                            f"HubSpot contact {job.hubspot_id} no longer exists (deleted or "
                            "merged): nothing to onboard"
                        )
                outcome = await self._attempt(job, contact)
            except (PermanentStepError, ConfigError) as e:
                await self._failed(job, e, out, permanent=True)
                return
            except Exception as e:
                await self._failed(job, e, out, permanent=False)
                return
            job = await self._record(job, outcome, out)

    def _properties(self) -> list[str]:
        assert self.onboarding is not None
        ruled = {p for rule in self.onboarding.owners.rules for p in rule.when}
        return list(dict.fromkeys([*CONTACT_PROPERTIES, *sorted(ruled)]))

    async def _attempt(self, job: JobRecord, contact: HubSpotObject) -> StepOutcome:
        assert job.enrollment_id is not None
        async with self.sessions() as s:
            enrollment = await jobs.get_enrollment(s, job.enrollment_id)
            previous = await jobs.results(s, job.enrollment_id)
        if enrollment is None:
            raise PermanentStepError(f"job {job.id} has no enrollment")
        step = _Step(job, enrollment, contact, previous, self.clock())
        run = {
            "assign_owner": self.assign_owner,
            "book_call": self.book_call,
            "compose_email": self.compose_email,
            "send_email": self.send_email,
            "log_note": self.log_note,
        }.get(job.step)
        if run is None:
            raise PermanentStepError(f"unknown onboarding step {job.step!r}")
        return await run(step)

    async def _record(
        self, job: JobRecord, outcome: StepOutcome, out: RunnerResult
    ) -> JobRecord | None:
        """Store the outcome; the next step's job (claimed by us) if there is one."""
        now = self.clock()
        assert job.enrollment_id is not None
        if isinstance(outcome, Wait):
            async with self.sessions() as s, s.begin():
                await jobs.defer(s, job.id, outcome.until, outcome.reason, now=now)
            out.waiting += 1
            self.log.info("hooks.step_waits", key=job.key, until=outcome.until.isoformat())
            return None
        result = outcome.result
        position = ONBOARDING_STEPS.index(job.step)
        following = ONBOARDING_STEPS[position + 1] if position + 1 < len(ONBOARDING_STEPS) else None
        next_id: int | None = None
        async with self.sessions() as s, s.begin():
            if not await jobs.succeed(s, job.id, result, now=now, worker=self.worker_id):
                self.log.warning("hooks.claim_lost", key=job.key)
                return None
            if isinstance(outcome, Stop):
                await jobs.set_enrollment(
                    s, job.enrollment_id, outcome.status, outcome.reason, now=now
                )
            elif following is None:
                await jobs.set_enrollment(s, job.enrollment_id, "done", None, now=now)
            else:
                if job.step == "send_email":
                    await self._forget_body(s, job.enrollment_id)
                key = jobs.job_key(ONBOARDING, job.hubspot_id or "", following)
                next_id = await jobs.add(
                    s,
                    jobs.JobInput(
                        key, ONBOARDING, following, job.hubspot_id, enrollment_id=job.enrollment_id
                    ),
                    now=now,
                    claimed_by=self.worker_id,
                    lease=self.lease,
                )
        out.succeeded += 1
        self.log.info("hooks.step_done", key=job.key, **_loggable(result))
        if next_id is None:
            return None
        async with self.sessions() as s:
            return await jobs.get(s, next_id)

    async def _forget_body(self, session: AsyncSession, enrollment_id: int) -> None:
        """Once the e-mail is sent, keep its subject and a hash, not its body."""
        composed = (await jobs.results(session, enrollment_id)).get("compose_email")
        if composed and "html" in composed:
            body = composed.pop("html") or ""
            composed["html_sha256"] = hashlib.sha256(body.encode()).hexdigest()
            await jobs.replace_result(session, enrollment_id, "compose_email", composed)

    # --- the steps ----------------------------------------------------------------------

    @property
    def cfg(self) -> OnboardingSettings:
        assert self.onboarding is not None
        return self.onboarding

    async def assign_owner(self, step: _Step) -> StepOutcome:
        if step.enrollment.source == "new":
            async with self.sessions() as s:
                enabled = await jobs.enabled_at(s, ONBOARDING)
            created = parse_datetime(step.props.get("createdate")) or step.contact.created_at
            if enabled is None or (created is not None and created < enabled):
                when = created.isoformat() if created else "unknown"
                since = enabled.isoformat() if enabled else "never"
                return Stop(
                    "skipped",
                    f"created {when}, before the hook was enabled ({since}); enroll existing "
                    "contacts with `connector hooks enroll`",
                    {"skipped": "created before the hook was enabled"},
                )
        if not step.email:
            return Stop("skipped", "the contact has no e-mail address", {"skipped": "no email"})
        current = step.props.get("hubspot_owner_id") or None
        picked = step.job.state.get("owner_id")
        if current is not None:
            return Done({"owner_id": current, "assigned": current == picked})
        job = step.job
        if picked is None:
            owners = self.cfg.owners
            candidates = (
                await self.kit.team_members(self.hubspot, owners.team_id)
                if owners.team_id
                else None
            )
            loads = None
            if owners.strategy == "least_loaded":
                pool = list(candidates or owners.owner_ids)
                loads = await self.kit.owner_loads(self.hubspot, pool)
            async with self.sessions() as s, s.begin():
                sequence = await jobs.next_sequence(s, ONBOARDING, now=step.now)
                picked = self.kit.pick_owner(
                    owners, step.props, sequence=sequence, loads=loads, candidates=candidates
                )
                state = {**job.state, "owner_id": picked, "sequence": sequence}
                if not await jobs.save_state(s, job.id, state, worker=self.worker_id):
                    raise ConnectorError(f"job {job.id} was taken over by another worker")
        result = await self.hubspot.batch_update(
            "contacts", {job.hubspot_id or "": {"hubspot_owner_id": picked}}
        )
        if result.errors:
            err = result.errors[0]
            raise ConnectorError(
                f"HubSpot refused hubspot_owner_id={picked} for contact {job.hubspot_id}: "
                f"{err.category or err.code or ''} {err.message} (is owner {picked} in "
                "onboarding.owners an active HubSpot user?)"
            )
        return Done({"owner_id": str(picked), "assigned": True})

    async def book_call(self, step: _Step) -> StepOutcome:
        owner_id = step.previous.get("assign_owner", {}).get("owner_id")
        if not owner_id:
            raise PermanentStepError("book_call needs the owner from assign_owner")
        cal = self.cfg.calendar
        owner = await self.kit.owner_info(self.hubspot, str(owner_id))
        job = step.job
        slot = _slot(job.state.get("slot"))
        if slot is None or slot[0] <= step.now:
            horizon = timedelta(days=cal.horizon_days)
            busy = await self.provider.busy(owner, step.now, step.now + horizon)
            slot = self.kit.find_slot(
                busy,
                now=step.now,
                timezone=cal.timezone,
                hours=cal.working_hours,
                min_notice=timedelta(hours=cal.min_notice_hours),
                horizon=horizon,
                duration=timedelta(minutes=cal.duration_minutes),
            )
            job = await self._save_state(job, slot=[slot[0].isoformat(), slot[1].isoformat()])
        names = {
            "contact_name": step.name,
            "company_name": self.cfg.company.name,
            "owner_name": owner.name,
        }
        request = self.kit.booking_cls(
            key=job.key,
            owner=owner,
            contact_id=job.hubspot_id or "",
            contact_email=step.email,
            contact_name=step.name,
            start=slot[0],
            end=slot[1],
            title=_fill(cal.title, names),
            description=_agenda(self.cfg, owner.name, step.name, cal.duration_minutes),
            video_link=cal.video_link,
        )
        call = await self.provider.book(request)
        return Done(
            {
                "provider": call.provider,
                "event_id": call.event_id,
                "start": call.start.isoformat(),
                "end": call.end.isoformat(),
                "link": call.link,
                "owner": {
                    "id": owner.id,
                    "email": owner.email,
                    "first_name": owner.first_name,
                    "last_name": owner.last_name,
                },
            }
        )

    async def compose_email(self, step: _Step) -> StepOutcome:
        booked = step.previous.get("book_call") or {}
        owner = self._owner(booked.get("owner"))
        call = self._call(booked)
        ctx = self.kit.context_cls(
            contact=dict(step.props),
            email=step.email,
            first_name=step.props.get("firstname"),
            last_name=step.props.get("lastname"),
            owner=owner,
            call=call,
            timezone=self.cfg.calendar.timezone,
        )
        mail = await self.kit.compose_welcome(self.cfg, ctx, base_dir=self.base_dir, http=self.http)
        if mail.fallback_reason:
            self.log.warning(
                "onboarding.llm_fallback", key=step.job.key, reason=mail.fallback_reason
            )
        result: dict[str, Any] = {
            "subject": mail.subject,
            "html": mail.html,
            "source": mail.source,
            "fallback_reason": mail.fallback_reason,
        }
        if self.cfg.email.output_dir:
            name = f"welcome-{step.job.hubspot_id}.html"
            path = await asyncio.to_thread(_write_copy, self._folder(), name, mail.html)
            result["file"] = str(path)
        return Done(result)

    async def send_email(self, step: _Step) -> StepOutcome:
        window = self.cfg.send_window
        if window is not None:
            opens = next_open(window, self.cfg.calendar.timezone, step.now)
            if opens > step.now:
                return Wait(opens, f"quiet hours: sends at {opens.isoformat()}")
        composed = step.previous.get("compose_email") or {}
        if "html" not in composed:
            raise PermanentStepError("send_email needs the composed e-mail from compose_email")
        job = step.job
        if not job.state.get("calling"):
            async with self.sessions() as s:
                sent = await jobs.count_succeeded(
                    s,
                    ONBOARDING,
                    "send_email",
                    step.enrollment.identity_hash,
                    job.hubspot_id or "",
                    only_sent=True,
                )
            if sent >= self.cfg.max_emails_per_contact:
                return Done(
                    {
                        "sent": False,
                        "subject": composed.get("subject"),
                        "reason": f"max_emails_per_contact ({self.cfg.max_emails_per_contact}) "
                        "reached for this person",
                    }
                )
            job = await self._save_state(job, calling=True)
        sender = self.cfg.sender
        already = False
        message_id: str | None
        try:
            message_id = await self.brevo.send_email(
                sender=EmailAddress(sender.email, sender.name),
                to=[EmailAddress(step.email, step.name or None)],
                subject=str(composed.get("subject") or ""),
                html=str(composed["html"]),
                tags=self.cfg.email.tags,
                idempotency_key=job.key,
            )
        except EmailAlreadySentError:
            message_id, already = None, True
        return Done(
            {
                "sent": True,
                "message_id": message_id,
                "already_sent": already,
                "subject": composed.get("subject"),
            }
        )

    async def log_note(self, step: _Step) -> StepOutcome:
        job = step.job
        if job.state.get("calling"):
            found = await self.find_note(job.hubspot_id or "", job.key)
            if found is not None:
                return Done({"note_id": found, "found_existing": True})
        else:
            job = await self._save_state(job, calling=True)
        owner_id = step.previous.get("assign_owner", {}).get("owner_id")
        body = note_body(step.previous, job.key, self.cfg.calendar.timezone)
        note = await self.hubspot.create_note(
            body, step.now, job.hubspot_id or "", str(owner_id) if owner_id else None
        )
        return Done({"note_id": note.id})

    async def find_note(self, hubspot_id: str, key: str) -> str | None:
        """The id of a note on the contact that carries ``key``, if there is one."""
        linked = await self.hubspot.read_associations("contacts", "notes", [hubspot_id])
        ids = [a.to_id for a in linked.get(hubspot_id, [])]
        if not ids:
            return None
        read = await self.hubspot.batch_read("notes", ids, ["hs_note_body"])
        for note in read.results:
            if key in (note.properties.get("hs_note_body") or ""):
                return note.id
        return None

    # --- helpers ------------------------------------------------------------------------

    def _folder(self) -> Path:
        folder = Path(self.cfg.email.output_dir or ".")
        return folder if folder.is_absolute() else self.base_dir / folder

    def _owner(self, raw: Any) -> OwnerInfo | None:
        if not isinstance(raw, dict) or not raw.get("id"):
            return None
        return self.kit.owner_cls(
            id=str(raw["id"]),
            email=raw.get("email"),
            first_name=raw.get("first_name"),
            last_name=raw.get("last_name"),
        )

    def _call(self, booked: Mapping[str, Any]) -> BookedCall | None:
        start, end = parse_datetime(booked.get("start")), parse_datetime(booked.get("end"))
        if not booked.get("event_id") or start is None or end is None:
            return None
        return self.kit.call_cls(
            provider=str(booked.get("provider") or ""),
            event_id=str(booked["event_id"]),
            start=start,
            end=end,
            link=booked.get("link"),
        )


# --- pure helpers ------------------------------------------------------------------------


def _write_copy(folder: Path, name: str, text: str) -> Path:
    """Write a rendered e-mail to ``onboarding.email.output_dir`` (the demo names the file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _with_state(job: JobRecord, state: dict[str, Any]) -> JobRecord:
    from dataclasses import replace

    return replace(job, state=state)


def _slot(raw: Any) -> tuple[datetime, datetime] | None:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        return None
    start, end = parse_datetime(raw[0]), parse_datetime(raw[1])
    return (start, end) if start is not None and end is not None else None


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with ``{name}`` fields filled; unknown fields are left as written."""
    try:
        return string.Formatter().vformat(template, (), _Blank(values))
    except (ValueError, IndexError):
        return template


def _agenda(cfg: OnboardingSettings, owner: str, contact: str, minutes: int) -> str:
    company = cfg.company.name
    return (
        f"Welcome to {company}, {contact}! A {minutes}-minute onboarding call with {owner}, "
        f"your customer-success manager.\n\nAgenda:\n"
        f"1. Introductions and your goals\n"
        f"2. Getting set up with {company}\n"
        f"3. Next steps and questions"
    )


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _open_at(window: QuietHours, local: datetime) -> bool:
    day, clock = _WEEKDAYS[local.weekday()], local.time().replace(tzinfo=None)
    if window.start < window.end:
        return day in window.days and window.start <= clock < window.end
    # a window across midnight (e.g. 22:00–06:00) belongs to the day it starts on
    if clock >= window.start:
        return day in window.days
    yesterday = _WEEKDAYS[(local.weekday() - 1) % 7]
    return clock < window.end and yesterday in window.days


def next_open(window: QuietHours, timezone: str, now: datetime) -> datetime:
    """``now`` if the send window is open, else when it next opens (aware UTC)."""
    tz = ZoneInfo(timezone)
    local = now.astimezone(tz)
    if _open_at(window, local):
        return now
    today: date = local.date()
    for ahead in range(0, 8):
        day = today + timedelta(days=ahead)
        if _WEEKDAYS[day.weekday()] not in window.days:
            continue
        opens = datetime.combine(day, window.start, tzinfo=tz)
        if opens > local:
            return opens.astimezone(now.tzinfo)
    return now + timedelta(days=7)  # no day configured: checked again in a week


def note_body(previous: Mapping[str, Mapping[str, Any]], key: str, timezone: str) -> str:
    """The timeline note: what onboarding did (owner, call, e-mail), with the job's key."""
    esc = html.escape
    owner = previous.get("assign_owner", {})
    booked = previous.get("book_call", {})
    sent = previous.get("send_email", {})
    who = booked.get("owner") or {}
    owner_name = " ".join(p for p in (who.get("first_name"), who.get("last_name")) if p)
    owner_text = (
        f"{owner_name} (owner {owner.get('owner_id')})"
        if owner_name
        else f"owner {owner.get('owner_id')}"
    )
    owner_text += " — assigned" if owner.get("assigned") else " — kept"
    start = parse_datetime(booked.get("start"))
    if start is not None:
        local = start.astimezone(ZoneInfo(timezone))
        call = f"{local:%A %d %B %Y, %H:%M} ({timezone})"
        if booked.get("link"):
            call += f" — {booked['link']}"
    else:
        call = "not booked"
    subject = sent.get("subject") or previous.get("compose_email", {}).get("subject") or ""
    mail = (
        f"“{subject}” sent"
        if sent.get("sent")
        else f"“{subject}” not sent: {sent.get('reason', '')}"
    )
    return (
        "<p><strong>Customer onboarding</strong> (by the HubSpot–Brevo connector)</p><ul>"
        f"<li>Customer-success owner: {esc(owner_text)}</li>"
        f"<li>Onboarding call: {esc(call)}</li>"
        f"<li>Welcome e-mail: {esc(mail)}</li>"
        f"</ul><p><small>ref {esc(key)}</small></p>"
    )


def _loggable(result: Mapping[str, Any]) -> dict[str, Any]:
    """A step result for a log line: no bodies, no addresses."""
    return {
        k: v
        for k, v in result.items()
        if k not in ("html", "owner") and isinstance(v, str | int | bool | None)
    }


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, TimeoutError)


async def retry_job(sessions: async_sessionmaker[AsyncSession], job_id: int) -> JobRecord | None:
    """``connector hooks retry ID``: queue a failed or dead job again with a fresh budget. An
    event job's "may have been sent" mark is cleared: the operator checked Brevo."""
    async with sessions() as s, s.begin():
        current = await jobs.get(s, job_id)
        state = None
        if current is not None and current.hook == LIFECYCLE and current.state.get("calling"):
            state = {k: v for k, v in current.state.items() if k != "calling"}
        elif current is not None and current.hook == DEAL_HOOK:
            state = released_state(current.state)
        return await jobs.retry(s, job_id, now=utcnow(), state=state)


__all__ = [
    "BATCH",
    "LEASE",
    "Done",
    "HookRunner",
    "PermanentStepError",
    "RunnerResult",
    "StepKit",
    "Stop",
    "Wait",
    "default_kit",
    "next_open",
    "note_body",
    "retry_job",
]
