"""Post-sync hook jobs (tables ``jobs``, ``enrollments``, ``hook_state``).

A hook is a sequence of steps; each step of each contact is one row of ``jobs`` with an
idempotency key ``hook:contact:step``. Life of a job: ``pending`` → :func:`claim`
(``running``, leased to one worker, attempt counted) → :func:`succeed` (``succeeded``: never
run again), :func:`fail` (``failed`` until its next attempt, ``dead`` after ``max_attempts``)
or :func:`defer` (``pending`` until a later time, attempt not counted: quiet hours). A worker
that dies leaves its job ``running``; once the claim runs out (or its holder is known dead)
another worker claims it again, and the step's own idempotency makes the repeat harmless.

Several daemons may share one PostgreSQL database: claiming uses ``SELECT … FOR UPDATE SKIP
LOCKED``; on SQLite the ``BEGIN IMMEDIATE`` transaction serialises claims. Every function runs
in the caller's transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast, get_args

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store.db import MAX_ERROR_LEN, clip_error, dialect_insert, record_failure, rowcount
from connector.store.models import (
    Enrollment,
    EnrollmentSource,
    EnrollmentStatus,
    HookState,
    Job,
    JobStatus,
    utcnow,
)

#: Statuses ``connector hooks list --failed`` shows.
FAILED_STATUSES: tuple[JobStatus, ...] = ("failed", "dead")


def job_key(hook: str, hubspot_id: str, step: str) -> str:
    """The idempotency key of one step of one contact: ``hook:contact:step``."""
    return f"{hook}:{hubspot_id}:{step}"


def identity_hash(email: str | None) -> str | None:
    """SHA-256 of the trimmed, lower-cased e-mail: recognises a person without storing the
    address."""
    key = (email or "").strip().lower()
    return hashlib.sha256(key.encode()).hexdigest() if "@" in key else None


@dataclass(frozen=True, slots=True)
class JobInput:
    """A new job; a known ``key`` makes the insert a no-op."""

    key: str
    hook: str
    step: str
    hubspot_id: str | None
    subject: str = ""
    enrollment_id: int | None = None
    payload: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as read or claimed; ``attempts`` includes a claimed job's current one.

    ``resumed`` is true when the claim took the job from a worker that stopped while running
    it: the step may have got as far as its external call.
    """

    id: int
    key: str
    hook: str
    step: str
    subject: str
    hubspot_id: str | None
    enrollment_id: int | None
    status: JobStatus
    attempts: int
    next_attempt_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    last_error: str | None = None
    claimed_by: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    resumed: bool = False


_COLUMNS = (
    Job.id,
    Job.idempotency_key,
    Job.hook,
    Job.step,
    Job.subject,
    Job.hubspot_id,
    Job.enrollment_id,
    Job.status,
    Job.attempts,
    Job.next_attempt_at,
    Job.payload,
    Job.state,
    Job.result,
    Job.last_error,
    Job.claimed_by,
    Job.created_at,
    Job.updated_at,
)


def _record(r: Any, resumed: bool = False) -> JobRecord:
    return JobRecord(
        id=r.id,
        key=r.idempotency_key,
        hook=r.hook,
        step=r.step,
        subject=r.subject,
        hubspot_id=r.hubspot_id,
        enrollment_id=r.enrollment_id,
        status=r.status,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        payload=dict(r.payload or {}),
        state=dict(r.state or {}),
        result=dict(r.result) if r.result is not None else None,
        last_error=r.last_error,
        claimed_by=r.claimed_by,
        created_at=r.created_at,
        updated_at=r.updated_at,
        resumed=resumed,
    )


# --- adding ---------------------------------------------------------------------------------


async def add(
    session: AsyncSession,
    job: JobInput,
    *,
    now: datetime,
    claimed_by: str | None = None,
    lease: timedelta | None = None,
) -> int | None:
    """Insert a job; its id, or None if its key exists. With ``claimed_by`` it is inserted
    already claimed (``running``, first attempt) — the runner chains a contact's next step
    this way, without a round trip through :func:`claim`."""
    claimed = claimed_by is not None
    row = {
        "idempotency_key": job.key,
        "hook": job.hook,
        "step": job.step,
        "subject": job.subject or (job.hubspot_id or ""),
        "hubspot_id": job.hubspot_id,
        "enrollment_id": job.enrollment_id,
        "payload": dict(job.payload) if job.payload is not None else None,
        "status": "running" if claimed else "pending",
        "attempts": 1 if claimed else 0,
        "next_attempt_at": now,
        "claimed_by": claimed_by,
        "claimed_until": now + lease if claimed and lease is not None else None,
        "created_at": now,
        "updated_at": now,
    }
    stmt = (
        dialect_insert(session, Job)
        .values(**row)
        .on_conflict_do_nothing(index_elements=[Job.idempotency_key])
        .returning(Job.id)
    )
    return cast(int | None, await session.scalar(stmt))


async def add_many(session: AsyncSession, jobs: Sequence[JobInput], *, now: datetime) -> int:
    """Insert pending jobs, ignoring known keys; how many were new."""
    added = 0
    for job in {j.key: j for j in jobs}.values():
        if await add(session, job, now=now) is not None:
            added += 1
    return added


# --- claiming -------------------------------------------------------------------------------


def _claimable(now: datetime, dead_holders: Collection[str]) -> sa.ColumnElement[bool]:
    stale = [Job.claimed_until <= now]
    if dead_holders:
        stale.append(Job.claimed_by.in_(list(dead_holders)))
    return sa.or_(
        sa.and_(Job.status.in_(("pending", "failed")), Job.next_attempt_at <= now),
        sa.and_(Job.status == "running", sa.or_(*stale)),
    )


async def claim(
    session: AsyncSession,
    *,
    worker: str,
    limit: int,
    lease: timedelta,
    now: datetime,
    hooks: Collection[str] | None = None,
    steps: Collection[str] | None = None,
    dead_holders: Collection[str] = (),
) -> list[JobRecord]:
    """Lease up to ``limit`` due jobs to ``worker`` until ``now + lease``, oldest due first.

    Due: ``pending``/``failed`` with ``next_attempt_at <= now``, or ``running`` whose claim
    ran out or whose holder is in ``dead_holders`` (a process known dead). Each claim counts
    an attempt, so a step that kills its worker every time still ends ``dead``.
    """
    if limit < 1:
        return []
    where = _claimable(now, dead_holders)
    if hooks is not None:
        where = sa.and_(where, Job.hook.in_(list(hooks)))
    if steps is not None:
        where = sa.and_(where, Job.step.in_(list(steps)))
    pick = (
        sa.select(Job.id, Job.status)
        .where(where)
        .order_by(Job.next_attempt_at, Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
    )
    picked = {r.id: r.status for r in await session.execute(pick)}
    if not picked:
        return []
    stmt = (
        sa.update(Job)
        .where(Job.id.in_(list(picked)), where)
        .values(
            status="running",
            claimed_by=worker,
            claimed_until=now + lease,
            attempts=Job.attempts + 1,
            updated_at=now,
        )
        .returning(*_COLUMNS)
        .execution_options(synchronize_session=False)
    )
    rows = [_record(r, resumed=picked[r.id] == "running") for r in await session.execute(stmt)]
    return sorted(rows, key=lambda j: (j.next_attempt_at, j.id))


async def live_holders(session: AsyncSession, now: datetime) -> list[str]:
    """Workers holding an unexpired claim (to ask which of them are dead processes)."""
    stmt = (
        sa.select(Job.claimed_by)
        .where(Job.status == "running", Job.claimed_until > now, Job.claimed_by.is_not(None))
        .distinct()
    )
    return [h for h in (await session.scalars(stmt)).all() if h]


async def extend(
    session: AsyncSession, ids: Sequence[int], *, worker: str, lease: timedelta, now: datetime
) -> int:
    """Renew ``worker``'s claims on ``ids``; how many it still held."""
    if not ids:
        return 0
    stmt = (
        sa.update(Job)
        .where(Job.id.in_(list(ids)), Job.status == "running", Job.claimed_by == worker)
        .values(claimed_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return rowcount(await session.execute(stmt))


# --- finishing ------------------------------------------------------------------------------


def _mine(job_id: int, worker: str | None) -> sa.ColumnElement[bool]:
    where = sa.and_(Job.id == job_id, Job.status == "running")
    return where if worker is None else sa.and_(where, Job.claimed_by == worker)


async def save_state(
    session: AsyncSession, job_id: int, state: Mapping[str, Any], *, worker: str | None = None
) -> bool:
    """Replace a running job's ``state`` (commit before the external call it prepares)."""
    stmt = (
        sa.update(Job)
        .where(_mine(job_id, worker))
        .values(state=dict(state))
        .execution_options(synchronize_session=False)
    )
    return rowcount(await session.execute(stmt)) == 1


async def succeed(
    session: AsyncSession,
    job_id: int,
    result: Mapping[str, Any],
    *,
    now: datetime,
    worker: str | None = None,
) -> bool:
    """Mark a running job ``succeeded`` with its result; False if ``worker`` lost it."""
    stmt = (
        sa.update(Job)
        .where(_mine(job_id, worker))
        .values(
            status="succeeded",
            result=dict(result),
            last_error=None,
            claimed_by=None,
            claimed_until=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(await session.execute(stmt)) == 1


async def fail(
    session: AsyncSession,
    job_id: int,
    error: str,
    *,
    now: datetime,
    max_attempts: int,
    backoff: Callable[[int], timedelta],
    permanent: bool = False,
) -> Literal["retry", "dead"]:
    """Record a failed attempt: retried at ``now + backoff(attempts)``, or ``dead`` at the
    limit (at once if ``permanent``: retrying cannot help)."""
    return await record_failure(
        session,
        Job,
        job_id,
        error,
        now=now,
        max_attempts=max_attempts,
        backoff=backoff,
        permanent=permanent,
    )


async def defer(
    session: AsyncSession, job_id: int, until: datetime, reason: str, *, now: datetime
) -> None:
    """Put a claimed job back until ``until`` without counting the attempt (quiet hours)."""
    await session.execute(
        sa.update(Job)
        .where(Job.id == job_id)
        .values(
            status="pending",
            attempts=sa.case((Job.attempts > 0, Job.attempts - 1), else_=0),
            next_attempt_at=until,
            claimed_by=None,
            claimed_until=None,
            last_error=clip_error(reason),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


async def release(session: AsyncSession, ids: Sequence[int], *, worker: str, now: datetime) -> int:
    """Hand claimed jobs back untried (graceful shutdown): attempt not counted."""
    if not ids:
        return 0
    stmt = (
        sa.update(Job)
        .where(Job.id.in_(list(ids)), Job.status == "running", Job.claimed_by == worker)
        .values(
            status=sa.case((Job.attempts > 1, "failed"), else_="pending"),
            attempts=Job.attempts - 1,
            claimed_by=None,
            claimed_until=None,
            next_attempt_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(await session.execute(stmt))


async def retry(
    session: AsyncSession,
    job_id: int,
    *,
    now: datetime,
    state: Mapping[str, Any] | None = None,
) -> JobRecord | None:
    """Queue a ``failed`` or ``dead`` job again at once with a fresh attempt budget (and,
    given, a new ``state``); None if there is no such job (or it is not failed)."""
    values: dict[str, Any] = {
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "updated_at": now,
    }
    if state is not None:
        values["state"] = dict(state)
    stmt = (
        sa.update(Job)
        .where(Job.id == job_id, Job.status.in_(FAILED_STATUSES))
        .values(**values)
        .returning(*_COLUMNS)
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        return None
    if row.enrollment_id is not None:
        await set_enrollment(session, row.enrollment_id, "active", None, now=now)
    return _record(row)


# --- reading --------------------------------------------------------------------------------


async def get(session: AsyncSession, job_id: int) -> JobRecord | None:
    row = (await session.execute(sa.select(*_COLUMNS).where(Job.id == job_id))).first()
    return _record(row) if row is not None else None


async def list_jobs(
    session: AsyncSession,
    *,
    failed_only: bool = False,
    hook: str | None = None,
    hubspot_id: str | None = None,
    limit: int = 100,
) -> list[JobRecord]:
    """Jobs, newest first (``failed_only``: those waiting for a retry, and the dead)."""
    stmt = sa.select(*_COLUMNS).order_by(Job.id.desc()).limit(limit)
    if failed_only:
        stmt = stmt.where(Job.status.in_(FAILED_STATUSES))
    if hook is not None:
        stmt = stmt.where(Job.hook == hook)
    if hubspot_id is not None:
        stmt = stmt.where(Job.hubspot_id == hubspot_id)
    return [_record(r) for r in await session.execute(stmt)]


async def results(session: AsyncSession, enrollment_id: int) -> dict[str, dict[str, Any]]:
    """The results of an enrollment's succeeded steps, by step."""
    stmt = sa.select(Job.step, Job.result).where(
        Job.enrollment_id == enrollment_id, Job.status == "succeeded"
    )
    return {step: dict(result or {}) for step, result in await session.execute(stmt)}


async def replace_result(
    session: AsyncSession, enrollment_id: int, step: str, result: Mapping[str, Any]
) -> None:
    """Rewrite a succeeded step's stored result (e.g. drop a sent e-mail's body)."""
    await session.execute(
        sa.update(Job)
        .where(Job.enrollment_id == enrollment_id, Job.step == step, Job.status == "succeeded")
        .values(result=dict(result))
        .execution_options(synchronize_session=False)
    )


async def counts_by_status(session: AsyncSession, hook: str | None = None) -> dict[str, int]:
    """Job count per status, every known status included (0 if none)."""
    counts: dict[str, int] = dict.fromkeys(get_args(JobStatus), 0)
    stmt = sa.select(Job.status, sa.func.count()).group_by(Job.status)
    if hook is not None:
        stmt = stmt.where(Job.hook == hook)
    for status, count in await session.execute(stmt):
        counts[status] = int(count)
    return counts


async def count_succeeded(
    session: AsyncSession,
    hook: str,
    step: str,
    identity: str | None,
    hubspot_id: str,
    *,
    only_sent: bool = False,
) -> int:
    """How many ``step`` jobs of ``hook`` succeeded for this person: by identity hash across
    HubSpot ids (a contact deleted and created again), else by HubSpot id. ``only_sent``:
    only those whose result says ``sent`` (a capped send succeeds without sending)."""
    stmt = (
        sa.select(Job.result)
        .select_from(Job)
        .join(Enrollment, Enrollment.id == Job.enrollment_id)
        .where(Job.hook == hook, Job.step == step, Job.status == "succeeded")
    )
    if identity is not None:
        stmt = stmt.where(
            sa.or_(Enrollment.identity_hash == identity, Enrollment.hubspot_id == hubspot_id)
        )
    else:
        stmt = stmt.where(Enrollment.hubspot_id == hubspot_id)
    found = (await session.scalars(stmt)).all()
    return sum(1 for r in found if not only_sent or (r or {}).get("sent"))


# --- enrollments ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrollmentRecord:
    id: int
    hook: str
    hubspot_id: str
    brevo_id: str | None
    identity_hash: str | None
    source: EnrollmentSource
    status: EnrollmentStatus
    reason: str | None
    created_at: datetime


def _enrollment(e: Enrollment) -> EnrollmentRecord:
    return EnrollmentRecord(
        e.id,
        e.hook,
        e.hubspot_id,
        e.brevo_id,
        e.identity_hash,
        e.source,
        e.status,
        e.reason,
        e.created_at,
    )


async def enroll(
    session: AsyncSession,
    hook: str,
    hubspot_id: str,
    *,
    first_step: str,
    source: EnrollmentSource,
    now: datetime,
    brevo_id: str | None = None,
    identity: str | None = None,
) -> int | None:
    """Enroll a contact and queue its first step; the enrollment id, or None if the contact
    is enrolled already (once per hook and HubSpot id, whatever happens)."""
    stmt = (
        dialect_insert(session, Enrollment)
        .values(
            hook=hook,
            hubspot_id=hubspot_id,
            brevo_id=brevo_id,
            identity_hash=identity,
            source=source,
            status="active",
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[Enrollment.hook, Enrollment.hubspot_id])
        .returning(Enrollment.id)
    )
    enrollment_id = cast(int | None, await session.scalar(stmt))
    if enrollment_id is None:
        return None
    key = job_key(hook, hubspot_id, first_step)
    await add(
        session,
        JobInput(key, hook, first_step, hubspot_id, enrollment_id=enrollment_id),
        now=now,
    )
    return enrollment_id


async def get_enrollment(session: AsyncSession, enrollment_id: int) -> EnrollmentRecord | None:
    e = await session.get(Enrollment, enrollment_id)
    return _enrollment(e) if e is not None else None


async def find_enrollment(
    session: AsyncSession, hook: str, hubspot_id: str
) -> EnrollmentRecord | None:
    stmt = sa.select(Enrollment).where(Enrollment.hook == hook, Enrollment.hubspot_id == hubspot_id)
    e = (await session.scalars(stmt)).first()
    return _enrollment(e) if e is not None else None


async def identity_enrolled(
    session: AsyncSession, hook: str, identity: str, except_hubspot_id: str | None = None
) -> bool:
    """Whether this person (by identity hash) was enrolled under another HubSpot id."""
    stmt = sa.select(sa.func.count()).where(
        Enrollment.hook == hook,
        Enrollment.identity_hash == identity,
        Enrollment.status != "skipped",
    )
    if except_hubspot_id is not None:
        stmt = stmt.where(Enrollment.hubspot_id != except_hubspot_id)
    return int(await session.scalar(stmt) or 0) > 0


async def set_enrollment(
    session: AsyncSession,
    enrollment_id: int,
    status: EnrollmentStatus,
    reason: str | None,
    *,
    now: datetime,
) -> None:
    await session.execute(
        sa.update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(status=status, reason=clip_error(reason) if reason else None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


async def reopen_skipped(
    session: AsyncSession, hook: str, hubspot_id: str, *, first_step: str, now: datetime
) -> bool:
    """Enroll a contact whose enrollment was skipped (created before the hook was enabled)
    explicitly after all: ``source`` becomes ``existing`` and the first step runs again."""
    stmt = (
        sa.update(Enrollment)
        .where(
            Enrollment.hook == hook,
            Enrollment.hubspot_id == hubspot_id,
            Enrollment.status == "skipped",
        )
        .values(source="existing", status="active", reason=None, updated_at=now)
        .returning(Enrollment.id)
        .execution_options(synchronize_session=False)
    )
    enrollment_id = await session.scalar(stmt)
    if enrollment_id is None:
        return False
    await session.execute(
        sa.update(Job)
        .where(Job.idempotency_key == job_key(hook, hubspot_id, first_step))
        .values(status="pending", attempts=0, next_attempt_at=now, result=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return True


async def enrollment_counts(session: AsyncSession, hook: str) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(get_args(EnrollmentStatus), 0)
    stmt = (
        sa.select(Enrollment.status, sa.func.count())
        .where(Enrollment.hook == hook)
        .group_by(Enrollment.status)
    )
    for status, count in await session.execute(stmt):
        counts[status] = int(count)
    return counts


# --- hook state -----------------------------------------------------------------------------


async def enabled_at(session: AsyncSession, hook: str) -> datetime | None:
    """When the hook was (last) enabled; None if it is not."""
    return cast(
        datetime | None,
        await session.scalar(sa.select(HookState.enabled_at).where(HookState.hook == hook)),
    )


async def set_enabled(
    session: AsyncSession, hook: str, enabled: bool, *, now: datetime | None = None
) -> datetime | None:
    """Record the hook as enabled (keeping an earlier ``enabled_at``) or disabled (clearing
    it, so enabling it again later starts a new period). Returns ``enabled_at``."""
    now = now or utcnow()
    insert = dialect_insert(session, HookState).values(
        hook=hook, enabled_at=now if enabled else None, sequence=0, updated_at=now
    )
    if enabled:
        stmt = insert.on_conflict_do_update(
            index_elements=[HookState.hook],
            set_={
                "enabled_at": sa.func.coalesce(HookState.enabled_at, insert.excluded.enabled_at),
                "updated_at": now,
            },
        )
    else:
        stmt = insert.on_conflict_do_update(
            index_elements=[HookState.hook], set_={"enabled_at": None, "updated_at": now}
        )
    await session.execute(stmt)
    return await enabled_at(session, hook)


async def next_sequence(session: AsyncSession, hook: str, *, now: datetime) -> int:
    """Take the hook's next round-robin position (0, 1, 2, …): atomic under concurrency."""
    await session.execute(
        dialect_insert(session, HookState)
        .values(hook=hook, enabled_at=None, sequence=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=[HookState.hook])
    )
    stmt = (
        sa.update(HookState)
        .where(HookState.hook == hook)
        .values(sequence=HookState.sequence + 1, updated_at=now)
        .returning(HookState.sequence)
        .execution_options(synchronize_session=False)
    )
    taken = await session.scalar(stmt)
    assert taken is not None
    return int(taken) - 1


__all__ = [
    "FAILED_STATUSES",
    "MAX_ERROR_LEN",
    "EnrollmentRecord",
    "JobInput",
    "JobRecord",
    "add",
    "add_many",
    "claim",
    "count_succeeded",
    "counts_by_status",
    "defer",
    "enabled_at",
    "enroll",
    "enrollment_counts",
    "extend",
    "fail",
    "find_enrollment",
    "get",
    "get_enrollment",
    "identity_enrolled",
    "identity_hash",
    "job_key",
    "list_jobs",
    "live_holders",
    "next_sequence",
    "release",
    "reopen_skipped",
    "replace_result",
    "results",
    "retry",
    "save_state",
    "set_enabled",
    "set_enrollment",
    "succeed",
]
