"""Brevo e-mail events on HubSpot contacts (tables ``email_event_entries``, ``email_event_seen``).

One entry per (HubSpot contact, event kind, campaign): how many events of that kind the
contact had for that campaign, when, its timeline note and whether the contact's e-mail
properties wait to be written. :func:`unseen` / :func:`mark_seen` keep an event counted once
even when its inbox item is processed again after a crash; :func:`apply_deltas` adds a batch of
counted events in one go. The note's life (``none`` → ``creating`` → ``created``) is written
before and after the HubSpot call by :func:`set_note_state` and :func:`record_notes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store.db import rowcount
from connector.store.models import EmailEventEntry, EmailEventSeen

_CHUNK = 500
NoteState = Literal["none", "creating", "created", "off"]


@dataclass(frozen=True, slots=True)
class EventDelta:
    """Events of one kind and campaign for one contact, to add to its entry."""

    hubspot_id: str
    kind: str
    campaign: str
    campaign_name: str | None
    count: int
    uniques: int
    first_at: datetime
    last_at: datetime
    detail: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.hubspot_id, self.kind, self.campaign)


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored entry (see :class:`~connector.store.models.EmailEventEntry`)."""

    id: int
    hubspot_id: str
    kind: str
    campaign: str
    campaign_name: str | None
    count: int
    uniques: int
    first_at: datetime
    last_at: datetime
    detail: str | None
    note_state: str
    note_id: str | None
    note_count: int
    note_attempts: int

    @property
    def shown_count(self) -> int:
        """Events to show: ``uniqueOpened`` counts only when no ``opened`` was counted."""
        return max(self.count, self.uniques)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_COLUMNS = (
    EmailEventEntry.id,
    EmailEventEntry.hubspot_id,
    EmailEventEntry.kind,
    EmailEventEntry.campaign,
    EmailEventEntry.campaign_name,
    EmailEventEntry.count,
    EmailEventEntry.uniques,
    EmailEventEntry.first_at,
    EmailEventEntry.last_at,
    EmailEventEntry.detail,
    EmailEventEntry.note_state,
    EmailEventEntry.note_id,
    EmailEventEntry.note_count,
    EmailEventEntry.note_attempts,
)


def _entry(row: Any) -> Entry:
    return Entry(**row._asdict())


async def _select(session: AsyncSession, condition: sa.ColumnElement[bool]) -> list[Entry]:
    stmt = sa.select(*_COLUMNS).where(condition).order_by(EmailEventEntry.id)
    return [_entry(row) for row in (await session.execute(stmt)).all()]


# --- events counted once --------------------------------------------------------------------


async def unseen(session: AsyncSession, keys: Iterable[str]) -> list[str]:
    """The ``keys`` not counted yet, in the order given (each once)."""
    wanted = list(dict.fromkeys(keys))
    seen: set[str] = set()
    for chunk in _chunks(wanted):
        stmt = sa.select(EmailEventSeen.key).where(EmailEventSeen.key.in_(chunk))
        seen.update((await session.execute(stmt)).scalars())
    return [k for k in wanted if k not in seen]


async def mark_seen(session: AsyncSession, keys: Iterable[str], now: datetime) -> None:
    """Record ``keys`` as counted (callers pass only :func:`unseen` ones)."""
    rows = [{"key": k, "seen_at": now} for k in dict.fromkeys(keys)]
    for chunk in _chunks(rows):
        await session.execute(sa.insert(EmailEventSeen), list(chunk))


async def purge_seen(session: AsyncSession, before: datetime) -> int:
    """Forget the keys counted before ``before`` (their inbox rows are purged by then)."""
    stmt = sa.delete(EmailEventSeen).where(EmailEventSeen.seen_at < before)
    return rowcount(await session.execute(stmt))


# --- entries ----------------------------------------------------------------------------------


async def entries_of(session: AsyncSession, hubspot_ids: Iterable[str]) -> list[Entry]:
    """Every entry of the given contacts."""
    ids = list(dict.fromkeys(hubspot_ids))
    out: list[Entry] = []
    for chunk in _chunks(ids):
        out.extend(await _select(session, EmailEventEntry.hubspot_id.in_(chunk)))
    return out


async def apply_deltas(
    session: AsyncSession,
    deltas: Sequence[EventDelta],
    *,
    note_wanted: Mapping[str, bool],
    now: datetime,
) -> tuple[int, int]:
    """Add ``deltas`` to their entries (created when new; ``note_wanted[kind]`` says whether a
    new one gets a note); the contacts' properties become pending. (created, updated)."""
    merged: dict[tuple[str, str, str], EventDelta] = {}
    for d in deltas:
        old = merged.get(d.key)
        merged[d.key] = (
            d
            if old is None
            else EventDelta(
                d.hubspot_id,
                d.kind,
                d.campaign,
                d.campaign_name or old.campaign_name,
                old.count + d.count,
                old.uniques + d.uniques,
                min(old.first_at, d.first_at),
                max(old.last_at, d.last_at),
                d.detail if d.last_at >= old.last_at and d.detail else old.detail or d.detail,
            )
        )
    existing = {
        (e.hubspot_id, e.kind, e.campaign): e
        for e in await entries_of(session, [k[0] for k in merged])
    }
    created = updated = 0
    inserts: list[dict[str, Any]] = []
    for key, d in merged.items():
        e = existing.get(key)
        if e is None:
            inserts.append(
                {
                    "hubspot_id": d.hubspot_id,
                    "kind": d.kind,
                    "campaign": d.campaign,
                    "campaign_name": d.campaign_name,
                    "count": d.count,
                    "uniques": d.uniques,
                    "first_at": d.first_at,
                    "last_at": d.last_at,
                    "detail": d.detail,
                    "note_state": "none" if note_wanted.get(d.kind, False) else "off",
                    "props_pending": True,
                    "changed_at": now,
                    "updated_at": now,
                }
            )
            continue
        newer = d.last_at >= e.last_at
        await session.execute(
            sa.update(EmailEventEntry)
            .where(EmailEventEntry.id == e.id)
            .values(
                count=EmailEventEntry.count + d.count,
                uniques=EmailEventEntry.uniques + d.uniques,
                first_at=min(e.first_at, d.first_at),
                last_at=max(e.last_at, d.last_at),
                campaign_name=d.campaign_name or e.campaign_name,
                detail=(d.detail if newer and d.detail else e.detail or d.detail),
                props_pending=True,
                changed_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        updated += 1
    for chunk in _chunks(inserts):
        await session.execute(sa.insert(EmailEventEntry), list(chunk))
        created += len(chunk)
    return created, updated


async def with_note_state(
    session: AsyncSession, state: NoteState, *, max_attempts: int, limit: int
) -> list[Entry]:
    """Entries whose note is in ``state`` (and has not failed ``max_attempts`` times)."""
    cond = sa.and_(
        EmailEventEntry.note_state == state, EmailEventEntry.note_attempts < max_attempts
    )
    stmt = sa.select(*_COLUMNS).where(cond).order_by(EmailEventEntry.id).limit(limit)
    return [_entry(row) for row in (await session.execute(stmt)).all()]


async def stale_notes(session: AsyncSession, *, limit: int) -> list[Entry]:
    """Entries whose note shows an older count than the entry holds now."""
    shown = sa.case(
        (EmailEventEntry.count >= EmailEventEntry.uniques, EmailEventEntry.count),
        else_=EmailEventEntry.uniques,
    )
    cond = sa.and_(EmailEventEntry.note_state == "created", shown != EmailEventEntry.note_count)
    stmt = sa.select(*_COLUMNS).where(cond).order_by(EmailEventEntry.id).limit(limit)
    return [_entry(row) for row in (await session.execute(stmt)).all()]


async def set_note_state(
    session: AsyncSession, ids: Iterable[int], state: NoteState, now: datetime
) -> None:
    """Move the notes of entries ``ids`` to ``state``."""
    for chunk in _chunks(list(ids)):
        await session.execute(
            sa.update(EmailEventEntry)
            .where(EmailEventEntry.id.in_(chunk))
            .values(note_state=state, updated_at=now)
            .execution_options(synchronize_session=False)
        )


async def record_notes(
    session: AsyncSession, notes: Mapping[int, tuple[str, int]], now: datetime
) -> None:
    """``{entry id: (note id, count shown)}``: the notes exist."""
    for entry_id, (note_id, shown) in notes.items():
        await session.execute(
            sa.update(EmailEventEntry)
            .where(EmailEventEntry.id == entry_id)
            .values(note_state="created", note_id=note_id, note_count=shown, updated_at=now)
            .execution_options(synchronize_session=False)
        )


async def set_note_counts(session: AsyncSession, counts: Mapping[int, int], now: datetime) -> None:
    """``{entry id: count shown}`` after the notes were updated."""
    for entry_id, shown in counts.items():
        await session.execute(
            sa.update(EmailEventEntry)
            .where(EmailEventEntry.id == entry_id)
            .values(note_count=shown, updated_at=now)
            .execution_options(synchronize_session=False)
        )


async def note_failed(session: AsyncSession, ids: Iterable[int], now: datetime) -> None:
    """The note could not be made: back to ``none``, one attempt more."""
    for chunk in _chunks(list(ids)):
        await session.execute(
            sa.update(EmailEventEntry)
            .where(EmailEventEntry.id.in_(chunk))
            .values(
                note_state="none",
                note_attempts=EmailEventEntry.note_attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )


async def pending_contacts(session: AsyncSession, *, limit: int) -> list[str]:
    """HubSpot ids of contacts whose e-mail properties wait to be written."""
    stmt = (
        sa.select(EmailEventEntry.hubspot_id)
        .where(EmailEventEntry.props_pending.is_(True))
        .group_by(EmailEventEntry.hubspot_id)
        .order_by(sa.func.min(EmailEventEntry.id))
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def clear_pending(
    session: AsyncSession, hubspot_ids: Iterable[str], *, read_at: datetime
) -> None:
    """The properties of ``hubspot_ids`` were written as read at ``read_at``: entries not
    changed since are no longer pending."""
    for chunk in _chunks(list(hubspot_ids)):
        await session.execute(
            sa.update(EmailEventEntry)
            .where(
                EmailEventEntry.hubspot_id.in_(chunk),
                EmailEventEntry.props_pending.is_(True),
                EmailEventEntry.changed_at <= read_at,
            )
            .values(props_pending=False)
            .execution_options(synchronize_session=False)
        )


__all__ = [
    "Entry",
    "EventDelta",
    "NoteState",
    "apply_deltas",
    "clear_pending",
    "entries_of",
    "mark_seen",
    "note_failed",
    "pending_contacts",
    "purge_seen",
    "record_notes",
    "set_note_counts",
    "set_note_state",
    "stale_notes",
    "unseen",
]
