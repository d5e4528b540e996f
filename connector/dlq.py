"""``connector dlq retry``: sync dead-lettered records again; resolve the ones that now succeed.

A retry hands the records' ids to their object type's sync, up to :data:`BATCH` per pass:
:meth:`SyncEngine.sync` for contacts, :meth:`ObjectSync.sync_ids` for companies, deals and the
other object types of ``Runtime.objects`` (``mode="retry"`` both). The sync keeps one open
letter per failing record (a new failure adds an attempt and its error to it) and resolves the
letters of records that sync, so a letter still open with more attempts failed again. A record
that no longer exists on either side has nothing left to sync: resolved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.engine import SyncEngine
from connector.errors import scrub
from connector.objects.base import ObjectSync
from connector.store import deadletters
from connector.store.deadletters import DeadLetterRecord
from connector.store.models import DeadLetter, utcnow

#: Records per engine pass.
BATCH = 100
#: Most open dead letters ``--all`` takes in one go.
MAX_ALL = 100_000


@dataclass(frozen=True)
class RetryResult:
    """One dead letter after its retry: resolved, or still open with its new error."""

    letter: DeadLetterRecord
    resolved: bool
    attempts: int
    error: str | None = None


def _targets(letters: Sequence[DeadLetterRecord]) -> tuple[list[str], list[str]]:
    """The HubSpot and Brevo ids to hand the engine."""
    hubspot: list[str] = []
    brevo: list[str] = []
    for lt in letters:
        hs, br = lt.payload.get("hubspot_id"), lt.payload.get("brevo_id")
        if hs:
            hubspot.append(str(hs))
        if br:
            brevo.append(str(br))
        if not hs and not br and lt.object_id:
            (hubspot if lt.system == "hubspot" else brevo).append(lt.object_id)
    return list(dict.fromkeys(hubspot)), list(dict.fromkeys(brevo))


#: One object type's sync of records named by id: ``(hubspot_ids, brevo_ids)``.
SyncIds = Callable[[list[str], list[str]], Awaitable[object]]


def _sync_of(
    object_type: str, engines: Mapping[str, SyncEngine], objects: Mapping[str, ObjectSync]
) -> SyncIds | None:
    """The retry pass of ``object_type``: the contact engine's ``sync``, else the object
    sync's ``sync_ids``; ``None`` if the type is not synced."""
    engine = engines.get(object_type)
    if engine is not None:

        async def by_engine(hubspot_ids: list[str], brevo_ids: list[str]) -> object:
            return await engine.sync(hubspot_ids=hubspot_ids, brevo_ids=brevo_ids, mode="retry")

        return by_engine
    obj = objects.get(object_type)
    if obj is not None:

        async def by_object(hubspot_ids: list[str], brevo_ids: list[str]) -> object:
            return await obj.sync_ids(hubspot_ids=hubspot_ids, brevo_ids=brevo_ids, mode="retry")

        return by_object
    return None


async def retry(
    sessions: async_sessionmaker[AsyncSession],
    engines: Mapping[str, SyncEngine],
    letters: Sequence[DeadLetterRecord],
    *,
    objects: Mapping[str, ObjectSync] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> list[RetryResult]:
    """Retry ``letters`` (open ones), batched per object type; see the module docstring.

    ``engines`` sync contacts (``Runtime.engines``), ``objects`` every other object type
    (``Runtime.objects``)."""
    results: list[RetryResult] = []
    by_object: dict[str, list[DeadLetterRecord]] = {}
    for lt in letters:
        if lt.resolved_at is None:
            by_object.setdefault(lt.object_type, []).append(lt)
    for object_type, group in by_object.items():
        sync = _sync_of(object_type, engines, objects or {})
        for start in range(0, len(group), BATCH):
            batch = group[start : start + BATCH]
            if sync is None:
                why = f"{object_type} is not synced (enable it under connectors.hubspot.sync)"
                results += [RetryResult(lt, False, lt.attempts, why) for lt in batch]
                continue
            results += await _retry_batch(sessions, sync, batch, clock)
    return results


async def _retry_batch(
    sessions: async_sessionmaker[AsyncSession],
    sync: SyncIds,
    batch: Sequence[DeadLetterRecord],
    clock: Callable[[], datetime],
) -> list[RetryResult]:
    hubspot_ids, brevo_ids = _targets(batch)
    crash: str | None = None
    try:
        await sync(hubspot_ids, brevo_ids)
    except Exception as e:  # the whole pass failed: every letter stays open
        crash = scrub(f"{type(e).__name__}: {e}")
    results: list[RetryResult] = []
    async with sessions() as s, s.begin():
        for lt in batch:
            now = await deadletters.get(s, lt.id)
            if now is None or now.resolved_at is not None:  # the engine resolved it: synced
                results.append(RetryResult(lt, True, lt.attempts))
            elif crash is not None:
                attempts = lt.attempts + 1
                await s.execute(
                    sa.update(DeadLetter)
                    .where(DeadLetter.id == lt.id)
                    .values(attempts=attempts, error=crash[: deadletters.MAX_ERROR_LEN])
                    .execution_options(synchronize_session=False)
                )
                results.append(RetryResult(lt, False, attempts, crash))
            elif now.attempts > lt.attempts:  # the engine failed it again (same letter)
                results.append(RetryResult(lt, False, now.attempts, now.error))
            else:  # nothing failed and nothing is left to sync (gone on both sides)
                await deadletters.resolve(s, lt.id, clock())
                results.append(RetryResult(lt, True, lt.attempts))
    return results


async def open_letters(
    session: AsyncSession, ids: Sequence[int] | None
) -> tuple[list[DeadLetterRecord], list[str]]:
    """The letters to retry (``None``: every open one) and a message per id that is not."""
    if ids is None:
        return await deadletters.list_open(session, limit=MAX_ALL), []
    found: list[DeadLetterRecord] = []
    problems: list[str] = []
    for letter_id in dict.fromkeys(ids):
        letter = await deadletters.get(session, letter_id)
        if letter is None:
            problems.append(f"dead letter {letter_id}: no such id (see connector dlq list)")
        elif letter.resolved_at is not None:
            problems.append(f"dead letter {letter_id}: already resolved")
        else:
            found.append(letter)
    return found, problems


def summary_row(letter: DeadLetterRecord) -> dict[str, Any]:
    """One dead letter as the columns of ``dlq list`` (and its ``--json``)."""
    return {
        "id": letter.id,
        "created_at": letter.created_at.isoformat(),
        "system": letter.system,
        "object_type": letter.object_type,
        "object_id": letter.object_id,
        "operation": letter.operation,
        "error": letter.error,
        "attempts": letter.attempts,
    }


__all__ = ["BATCH", "MAX_ALL", "RetryResult", "open_letters", "retry", "summary_row"]
