"""The GDPR purge: one person out of every table at once (DESIGN §4–5, issue 4).

A HubSpot ``contact.privacyDeletion`` means the person must be forgotten: the connector deletes
the Brevo contact, then :func:`purge_person` removes from the store, in the caller's single
transaction, every row that names them — by HubSpot id, Brevo id or e-mail:

==================  ===================================================================
``links``           the person's links (matched by either id or the identity key)
``field_state``     the ledger rows of those links
``sync_history``    what travelled for those links
``inbox``           events and dirty keys whose ``object_id`` is one of the ids or e-mails,
                    or whose payload mentions one of the e-mails (a ``propertyChange`` of
                    ``email``, a Brevo event)
``dead_letters``    letters for those ids, that identity key, or a payload naming the e-mail
``skipped_records`` rows for those ids
``resync_stage``    a running resync's copy of the Brevo contact
``jobs``            hook steps for their HubSpot id or enrollment, or whose subject, input,
                    state or result mentions them
``enrollments``     their hook enrollments (by HubSpot / Brevo id or the e-mail's hash)
``runs``            error texts mentioning an e-mail: the e-mail is replaced, the run kept
``cursors``         the ids among a cursor's boundary ids
``rollup_values``   a contact's roll-up hashes, and ``rollup_members`` the records that
                    counted for them (:func:`connector.store.rollups.forget_contacts`)
==================  ===================================================================

and ``association_state``: a contact's own association sets, and their HubSpot id inside the
sets of other records (a company's or a deal's contacts).

It then leaves tombstones (``purged_identities``: SHA-256 hashes of each id and e-mail, never
the values): webhooks about the person that arrive later — our own deletion of the Brevo
contact fires one — are deleted by the worker on sight (:func:`purged_items`) instead of
waiting for retention. Tombstones expire after ``sync.retention_days``.

Nothing is committed here: the caller commits, so the person is gone from all tables or from
none. Matching the e-mail inside JSON and text columns is a substring scan (``LIKE``, escaped):
slow on a huge inbox, but privacy deletions are rare and the inbox is purged after
``sync.retention_days``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.store import rollups
from connector.store.db import dialect_insert, rowcount
from connector.store.jobs import identity_hash
from connector.store.models import (
    AssociationState,
    Cursor,
    DeadLetter,
    EmailEventEntry,
    Enrollment,
    FieldState,
    InboxItem,
    Job,
    Link,
    PurgedIdentity,
    ResyncStage,
    Run,
    SkippedRecord,
    SyncHistory,
    utcnow,
)

#: What replaces a purged e-mail inside kept texts (run errors).
REDACTED = "[purged]"


@dataclass(frozen=True, slots=True)
class Person:
    """Who to purge: every id and e-mail known for them (e-mails normalised, lower-case)."""

    object_type: str
    hubspot_ids: tuple[str, ...] = ()
    brevo_ids: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.hubspot_ids, *self.brevo_ids)))

    def with_links(self, rows: Iterable[Any]) -> Person:
        """This person with the ids and identity keys of their link rows added."""
        hs, br, em = list(self.hubspot_ids), list(self.brevo_ids), list(self.emails)
        for r in rows:
            if r.hubspot_id:
                hs.append(r.hubspot_id)
            if r.brevo_id:
                br.append(r.brevo_id)
            if r.identity_key:
                em.append(r.identity_key)
        return Person(
            self.object_type,
            tuple(dict.fromkeys(hs)),
            tuple(dict.fromkeys(br)),
            tuple(dict.fromkeys(e.strip().lower() for e in em if e.strip())),
        )


def _mentions(column: Any, emails: Sequence[str]) -> sa.ColumnElement[bool]:
    """``column`` (text or JSON) contains one of ``emails``, case-insensitively."""
    text = sa.func.lower(sa.cast(column, sa.Text()))
    return sa.or_(*(text.contains(e, autoescape=True) for e in emails))


def _any(*conditions: sa.ColumnElement[bool] | None) -> sa.ColumnElement[bool]:
    kept = [c for c in conditions if c is not None]
    return sa.or_(*kept) if kept else sa.false()


async def _delete(session: AsyncSession, table: Any, where: sa.ColumnElement[bool]) -> int:
    stmt = sa.delete(table).where(where).execution_options(synchronize_session=False)
    return rowcount(await session.execute(stmt))


async def purge_person(session: AsyncSession, person: Person) -> Counter[str]:
    """Delete every row naming ``person`` (see the module docstring); rows deleted per table.

    Runs in the caller's transaction. The person's links widen the match first: a link found by
    the HubSpot id brings its Brevo id and identity key along, so one id is enough.
    """
    counts: Counter[str] = Counter()
    ot = person.object_type
    link_match = _any(
        Link.hubspot_id.in_(person.hubspot_ids) if person.hubspot_ids else None,
        Link.brevo_id.in_(person.brevo_ids) if person.brevo_ids else None,
        Link.identity_key.in_(person.emails) if person.emails else None,
    )
    cols = (Link.id, Link.hubspot_id, Link.brevo_id, Link.identity_key)
    rows = (await session.execute(sa.select(*cols).where(Link.object_type == ot, link_match))).all()
    person = person.with_links(rows)
    link_ids = [r.id for r in rows]
    ids, emails = person.ids, person.emails

    if link_ids:
        counts["field_state"] = await _delete(session, FieldState, FieldState.link_id.in_(link_ids))
        counts["sync_history"] = await _delete(
            session, SyncHistory, SyncHistory.link_id.in_(link_ids)
        )
        counts["links"] = await _delete(session, Link, Link.id.in_(link_ids))

    inbox_match = _any(
        sa.and_(InboxItem.object_type == ot, InboxItem.object_id.in_(ids)) if ids else None,
        sa.func.lower(InboxItem.object_id).in_(emails) if emails else None,
        _mentions(InboxItem.payload, emails) if emails else None,
    )
    counts["inbox"] = await _delete(session, InboxItem, inbox_match)

    letter_match = _any(
        DeadLetter.object_id.in_(ids) if ids else None,
        DeadLetter.identity_key.in_(emails) if emails else None,
        _mentions(DeadLetter.payload, emails) if emails else None,
    )
    counts["dead_letters"] = await _delete(
        session, DeadLetter, sa.and_(DeadLetter.object_type == ot, letter_match)
    )

    skipped_match = _any(
        sa.and_(SkippedRecord.system == "hubspot", SkippedRecord.object_id.in_(person.hubspot_ids))
        if person.hubspot_ids
        else None,
        sa.and_(SkippedRecord.system == "brevo", SkippedRecord.object_id.in_(person.brevo_ids))
        if person.brevo_ids
        else None,
    )
    counts["skipped_records"] = await _delete(
        session, SkippedRecord, sa.and_(SkippedRecord.object_type == ot, skipped_match)
    )

    stage_match = _any(
        ResyncStage.brevo_id.in_(person.brevo_ids) if person.brevo_ids else None,
        ResyncStage.identity_key.in_(emails) if emails else None,
        _mentions(ResyncStage.payload, emails) if emails else None,
    )
    counts["resync_stage"] = await _delete(
        session, ResyncStage, sa.and_(ResyncStage.object_type == ot, stage_match)
    )

    hashes = [h for h in (identity_hash(e) for e in emails) if h]
    enrollment_match = _any(
        Enrollment.hubspot_id.in_(person.hubspot_ids) if person.hubspot_ids else None,
        Enrollment.brevo_id.in_(person.brevo_ids) if person.brevo_ids else None,
        Enrollment.identity_hash.in_(hashes) if hashes else None,
    )
    enrolled = sa.select(Enrollment.id).where(enrollment_match)
    job_match = _any(
        Job.subject.in_(ids) if ids else None,
        Job.hubspot_id.in_(person.hubspot_ids) if person.hubspot_ids else None,
        Job.enrollment_id.in_(enrolled) if enrollment_match is not None else None,
        _mentions(Job.subject, emails) if emails else None,
        _mentions(Job.result, emails) if emails else None,
        _mentions(Job.payload, emails) if emails else None,
        _mentions(Job.state, emails) if emails else None,
    )
    if person.hubspot_ids and ot == "contacts":  # Brevo e-mail events counted for them
        counts["email_event_entries"] = await _delete(
            session, EmailEventEntry, EmailEventEntry.hubspot_id.in_(person.hubspot_ids)
        )
        counts["rollups"] = await rollups.forget_contacts(session, person.hubspot_ids)
        counts["association_state"] = await _forget_associations(session, ot, person.hubspot_ids)
    counts["jobs"] = await _delete(session, Job, job_match)
    counts["enrollments"] = await _delete(session, Enrollment, enrollment_match)

    counts["tombstones"] = await _tombstone(session, person)
    if emails:
        counts["runs"] = await _redact_runs(session, emails)
    if ids:
        counts["cursors"] = await _prune_cursors(session, ot, ids)
    return Counter({k: v for k, v in counts.items() if v})


def tombstone_hash(kind: str, value: str) -> str:
    """The tombstone of one id (``kind`` hubspot / brevo) or e-mail (``kind`` email)."""
    key = value.strip().lower() if kind == "email" else value.strip()
    return hashlib.sha256(f"{kind}:{key}".encode()).hexdigest()


def _person_hashes(person: Person) -> list[str]:
    return list(
        dict.fromkeys(
            [
                *(tombstone_hash("hubspot", i) for i in person.hubspot_ids),
                *(tombstone_hash("brevo", i) for i in person.brevo_ids),
                *(tombstone_hash("email", e) for e in person.emails),
            ]
        )
    )


async def _tombstone(session: AsyncSession, person: Person) -> int:
    hashes = _person_hashes(person)
    if not hashes:
        return 0
    now = utcnow()
    stmt = (
        dialect_insert(session, PurgedIdentity)
        .values([{"hash": h, "purged_at": now} for h in hashes])
        .on_conflict_do_update(index_elements=[PurgedIdentity.hash], set_={"purged_at": now})
    )
    await session.execute(stmt)
    return len(hashes)


def item_hashes(source: str, object_id: str, payload: Any) -> list[str]:
    """The tombstones an inbox item would match: its record's id or e-mail."""
    if source == "pull":
        system = payload.get("system") if isinstance(payload, dict) else None
        return [tombstone_hash(str(system), object_id)] if system else []
    if "@" in object_id:
        return [tombstone_hash("email", object_id)]
    return [tombstone_hash("hubspot" if source == "hubspot" else "brevo", object_id)]


async def purged_items(session: AsyncSession, items: Sequence[Any]) -> list[int]:
    """The ids of ``items`` (claimed inbox items) that name a purged person."""
    wanted: dict[str, list[int]] = {}
    for item in items:
        for h in item_hashes(item.source, item.object_id, item.payload):
            wanted.setdefault(h, []).append(item.id)
    if not wanted:
        return []
    found = await session.scalars(
        sa.select(PurgedIdentity.hash).where(PurgedIdentity.hash.in_(list(wanted)))
    )
    return sorted({i for h in found for i in wanted[h]})


async def purge_tombstones(session: AsyncSession, before: datetime, *, limit: int) -> int:
    """Drop up to ``limit`` tombstones older than ``before`` (retention, chunked)."""
    oldest = (
        sa.select(PurgedIdentity.hash)
        .where(PurgedIdentity.purged_at < before)
        .order_by(PurgedIdentity.purged_at)
        .limit(limit)
    )
    stmt = sa.delete(PurgedIdentity).where(PurgedIdentity.hash.in_(oldest))
    return rowcount(await session.execute(stmt.execution_options(synchronize_session=False)))


async def _redact_runs(session: AsyncSession, emails: Sequence[str]) -> int:
    """Replace the e-mails inside run error texts (the run's counts and times are kept)."""
    pattern = re.compile("|".join(re.escape(e) for e in emails), re.IGNORECASE)
    found = await session.execute(
        sa.select(Run.id, Run.error).where(Run.error.is_not(None), _mentions(Run.error, emails))
    )
    changed = 0
    for run_id, error in found.all():
        await session.execute(
            sa.update(Run)
            .where(Run.id == run_id)
            .values(error=pattern.sub(REDACTED, error or ""))
            .execution_options(synchronize_session=False)
        )
        changed += 1
    return changed


async def _forget_associations(
    session: AsyncSession, object_type: str, hubspot_ids: Sequence[str]
) -> int:
    """Drop the record's own association sets and take its id out of the other records' sets
    of ``object_type`` (a company's contacts): rows deleted or changed."""
    changed = await _delete(
        session,
        AssociationState,
        sa.and_(
            AssociationState.object_type == object_type,
            AssociationState.hubspot_id.in_(hubspot_ids),
        ),
    )
    gone = set(hubspot_ids)
    # a substring scan narrows the rows; the lists are then checked id by id
    rows = await session.execute(
        sa.select(
            AssociationState.object_type,
            AssociationState.hubspot_id,
            AssociationState.to_type,
            AssociationState.to_hubspot_ids,
        ).where(
            AssociationState.to_type == object_type,
            _mentions(AssociationState.to_hubspot_ids, list(gone)),
        )
    )
    for owner_type, owner_id, to_type, to_ids in rows.all():
        kept = [i for i in to_ids or [] if str(i) not in gone]
        if len(kept) == len(to_ids or []):
            continue
        await session.execute(
            sa.update(AssociationState)
            .where(
                AssociationState.object_type == owner_type,
                AssociationState.hubspot_id == owner_id,
                AssociationState.to_type == to_type,
            )
            .values(to_hubspot_ids=kept)
            .execution_options(synchronize_session=False)
        )
        changed += 1
    return changed


async def _prune_cursors(session: AsyncSession, object_type: str, ids: Sequence[str]) -> int:
    """Drop the ids from the cursors' boundary lists (a purged id is never seen again)."""
    gone = set(ids)
    rows = await session.execute(
        sa.select(Cursor.system, Cursor.object_type, Cursor.boundary_ids).where(
            Cursor.object_type == object_type
        )
    )
    changed = 0
    for system, ot, boundary in rows.all():
        kept = [i for i in boundary or [] if str(i) not in gone]
        if len(kept) != len(boundary or []):
            await session.execute(
                sa.update(Cursor)
                .where(Cursor.system == system, Cursor.object_type == ot)
                .values(boundary_ids=kept)
                .execution_options(synchronize_session=False)
            )
            changed += 1
    return changed


async def drop_inbox_rows(session: AsyncSession, ids: Sequence[int]) -> int:
    """Delete inbox rows by id (events about a purged person)."""
    if not ids:
        return 0
    stmt = sa.delete(InboxItem).where(InboxItem.id.in_(list(ids)))
    return rowcount(await session.execute(stmt.execution_options(synchronize_session=False)))


__all__ = [
    "REDACTED",
    "Person",
    "drop_inbox_rows",
    "item_hashes",
    "purge_person",
    "purge_tombstones",
    "purged_items",
    "tombstone_hash",
]
