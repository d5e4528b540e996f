"""Links and the sync-origin ledger (tables ``links`` and ``field_state``, DESIGN §4–5).

A link is one synced record pair (HubSpot id ⇄ Brevo id, plus the normalised email); its
``field_state`` rows hold, per mapped field, the hash of the last synced value — the base of
the 3-way merge and the echo detector. Only hashes are stored (the store is not a second CRM):
:class:`BaseEntry` refuses anything but a hex SHA-256.

Every function runs in the caller's transaction; the caller commits. Reads go in chunks of
:data:`CHUNK` keys per query and writes in a handful of statements per batch
(:func:`save_pairs`), so 100,000 contacts never cost one round trip each.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from connector.errors import StoreError
from connector.store.db import dialect_insert
from connector.store.models import FieldState, Link, PendingWrite, System, utcnow

if TYPE_CHECKING:
    _Row = sa.Row[*tuple[Any, ...]]

#: Most keys bound in one ``IN`` list (well under SQLite's and PostgreSQL's limits).
CHUNK = 500

#: Ledger rows whose field starts with ``@`` are *markers*, not mapped fields: what the event
#: semantics (:mod:`connector.events`) did to the pair — a deletion handled, a value the
#: connector wrote outside the mapping (the opt-out properties). Field keys are HubSpot
#: property names, which never start with ``@``, and the planner only reads mapped fields.
MARKER_PREFIX = "@"
#: The pair's record on ``origin`` was deleted and the deletion handled (the link is kept so
#: the pair is not recreated); ``written_to`` is the side the connector changed for it, if any.
DELETED_MARKER = "@deleted"

_HASH = re.compile(r"[0-9a-f]{64}")
_HEX = "0123456789abcdef"
_SYSTEMS = ("hubspot", "brevo")


class LinkConflict(StoreError):
    """A write would give one HubSpot or Brevo id to two links (a merge the caller must do)."""


@dataclass(frozen=True, slots=True)
class BaseEntry:
    """One ledger row: hash of the last synced value, where it came from, where it was written."""

    value_hash: str
    origin: System
    written_to: System | None
    synced_at: datetime

    def __post_init__(self) -> None:
        digest = self.value_hash
        # 64 hex digits: the same test as _HASH.fullmatch, without the regex machinery
        # (every ledger row read builds one); anything unusual goes through the regex
        plain = isinstance(digest, str) and len(digest) == 64 and not digest.strip(_HEX)
        if not plain and not _HASH.fullmatch(digest):
            raise ValueError("value_hash must be a lower-case hex SHA-256, never a clear value")
        if self.origin not in _SYSTEMS or self.written_to not in (*_SYSTEMS, None):
            raise ValueError(f"unknown system in {self.origin!r} / {self.written_to!r}")
        if self.synced_at.tzinfo is None:
            raise ValueError("synced_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """A stored link with its ledger rows keyed by field name."""

    id: int
    object_type: str
    hubspot_id: str | None
    brevo_id: str | None
    identity_key: str | None
    bases: dict[str, BaseEntry] = field(default_factory=dict)

    def marker(self, name: str) -> BaseEntry | None:
        """A marker row (see :data:`MARKER_PREFIX`), or ``None``."""
        return self.bases.get(name) if name.startswith(MARKER_PREFIX) else None


@dataclass(frozen=True, slots=True)
class PairWrite:
    """One pair for :func:`save_pairs`: the ids as they should be stored, and new bases.

    With ``link_id`` the link is updated; without, the link holding ``hubspot_id`` or
    ``brevo_id`` is updated, or a new one is created. The ids are written as given (``None``
    clears one); ``bases`` are upserted (fields not named keep their rows).
    """

    hubspot_id: str | None
    brevo_id: str | None
    identity_key: str | None
    bases: Mapping[str, BaseEntry] = field(default_factory=dict)
    link_id: int | None = None


@dataclass(frozen=True, slots=True)
class MoveResult:
    """Outcome of :func:`move_hubspot_id`.

    ``link_id`` is the link that now holds the surviving id (``None`` if neither id was
    linked); ``dropped`` is the merged-away link, deleted because the survivor already had one
    (its Brevo contact is the duplicate to merge away).
    """

    link_id: int | None
    dropped: LinkRecord | None = None


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_LINKS = cast(sa.Table, Link.__table__)
_FIELD_STATE = cast(sa.Table, FieldState.__table__)
_LINK_COLUMNS = (Link.id, Link.object_type, Link.hubspot_id, Link.brevo_id, Link.identity_key)
_BASE_COLUMNS = (
    FieldState.link_id,
    FieldState.field,
    FieldState.value_hash,
    FieldState.origin,
    FieldState.written_to,
    FieldState.synced_at,
)


def _entry(row: _Row) -> BaseEntry:
    return BaseEntry(
        value_hash=row.value_hash,
        origin=cast(System, row.origin),
        written_to=cast("System | None", row.written_to),
        synced_at=row.synced_at,
    )


async def _fetch(
    session: AsyncSession, object_type: str, condition: sa.ColumnElement[bool]
) -> list[LinkRecord]:
    """Links of ``object_type`` matching ``condition``, with their bases: two queries."""
    where = sa.and_(Link.object_type == object_type, condition)
    rows = (await session.execute(sa.select(*_LINK_COLUMNS).where(where).order_by(Link.id))).all()
    if not rows:
        return []
    records = {
        r.id: LinkRecord(r.id, r.object_type, r.hubspot_id, r.brevo_id, r.identity_key)
        for r in rows
    }
    bases = sa.select(*_BASE_COLUMNS).join(Link, Link.id == FieldState.link_id).where(where)
    for b in await session.execute(bases):
        record = records.get(b.link_id)
        if record is not None:  # a link inserted between the two queries is left out
            record.bases[b.field] = _entry(b)
    return list(records.values())


def _key_condition(keys: Sequence[tuple[str, str]]) -> sa.ColumnElement[bool]:
    by_kind: dict[str, list[str]] = {"hubspot": [], "brevo": [], "identity": []}
    for kind, key in keys:
        by_kind[kind].append(key)
    columns = {"hubspot": Link.hubspot_id, "brevo": Link.brevo_id, "identity": Link.identity_key}
    return sa.or_(*(columns[kind].in_(values) for kind, values in by_kind.items() if values))


async def load_links(
    session: AsyncSession,
    object_type: str,
    *,
    hubspot_ids: Iterable[str] = (),
    brevo_ids: Iterable[str] = (),
    identity_keys: Iterable[str] = (),
) -> list[LinkRecord]:
    """The links matching any of the given ids or identity keys, with their bases, by id.

    One links query and one ``field_state`` query per :data:`CHUNK` keys, whatever the mix.
    """
    keys: list[tuple[str, str]] = []
    for kind, values in (
        ("hubspot", hubspot_ids),
        ("brevo", brevo_ids),
        ("identity", identity_keys),
    ):
        keys.extend((kind, v) for v in dict.fromkeys(values))
    found: dict[int, LinkRecord] = {}
    held: dict[str, set[str]] = {"hubspot": set(), "brevo": set()}
    chunk: list[tuple[str, str]] = []
    for i, (kind, value) in enumerate(keys):
        # an id a link already found holds names no other link (ids are unique per type)
        if value not in held.get(kind, ()):
            chunk.append((kind, value))
        if chunk and (len(chunk) >= CHUNK or i == len(keys) - 1):
            await _fetch_new(session, object_type, _key_condition(chunk), found, held)
            chunk = []
    return [found[i] for i in sorted(found)]


async def _fetch_new(
    session: AsyncSession,
    object_type: str,
    condition: sa.ColumnElement[bool],
    found: dict[int, LinkRecord],
    held: dict[str, set[str]],
) -> None:
    """Add to ``found`` the links matching ``condition`` it lacks, with their bases (a link
    found by one key is not read again, bases and all, for another)."""
    where = sa.and_(Link.object_type == object_type, condition)
    rows = (await session.execute(sa.select(*_LINK_COLUMNS).where(where))).all()
    new: list[int] = []
    for r in rows:
        if r.id in found:
            continue
        found[r.id] = LinkRecord(r.id, r.object_type, r.hubspot_id, r.brevo_id, r.identity_key)
        new.append(r.id)
        if r.hubspot_id is not None:
            held["hubspot"].add(r.hubspot_id)
        if r.brevo_id is not None:
            held["brevo"].add(r.brevo_id)
    for ids in _chunks(new):
        bases = sa.select(*_BASE_COLUMNS).where(FieldState.link_id.in_(ids))
        for b in await session.execute(bases):
            found[b.link_id].bases[b.field] = _entry(b)


async def holders_of_values(
    session: AsyncSession, object_type: str, field_name: str, hashes: Iterable[str]
) -> dict[str, list[LinkRecord]]:
    """The links whose last synced ``field_name`` has one of these value hashes, by hash.

    Used for values that must be unique on one side (a Brevo SMS number): who holds one
    already. Indexed by ``field_state.value_hash``; one query per :data:`CHUNK` hashes.
    """
    found: dict[str, list[LinkRecord]] = {}
    for chunk in _chunks(list(dict.fromkeys(hashes))):
        stmt = (
            sa.select(FieldState.value_hash, *_LINK_COLUMNS)
            .join(Link, Link.id == FieldState.link_id)
            .where(
                FieldState.value_hash.in_(chunk),
                FieldState.field == field_name,
                Link.object_type == object_type,
            )
        )
        for r in await session.execute(stmt):
            record = LinkRecord(r.id, r.object_type, r.hubspot_id, r.brevo_id, r.identity_key)
            found.setdefault(r.value_hash, []).append(record)
    return found


async def count_links(session: AsyncSession, object_type: str) -> int:
    """How many links of ``object_type`` exist."""
    stmt = sa.select(sa.func.count()).select_from(Link).where(Link.object_type == object_type)
    return int(await session.scalar(stmt) or 0)


async def iter_links(
    session: AsyncSession, object_type: str, batch: int = 1000
) -> AsyncIterator[list[LinkRecord]]:
    """Every link of ``object_type`` with its bases, ``batch`` at a time in id order.

    Keyset pagination (``id > last``): two queries per batch, stable while links are added.
    On SQLite keep the surrounding transaction short or use a ``DEFERRED`` engine: an open
    ``BEGIN IMMEDIATE`` holds the write lock.
    """
    if batch < 1:
        raise ValueError("batch must be positive")
    last = 0
    while True:
        stmt = (
            sa.select(Link.id)
            .where(Link.object_type == object_type, Link.id > last)
            .order_by(Link.id)
            .limit(batch)
        )
        ids = (await session.scalars(stmt)).all()
        if not ids:
            return
        records = await _fetch(session, object_type, Link.id.between(ids[0], ids[-1]))
        yield records
        last = ids[-1]


def _base_rows(link_id: int, entries: Mapping[str, BaseEntry]) -> list[dict[str, Any]]:
    return [
        {
            "link_id": link_id,
            "field": name,
            "value_hash": e.value_hash,
            "origin": e.origin,
            "written_to": e.written_to,
            "synced_at": e.synced_at,
        }
        for name, e in entries.items()
    ]


async def _upsert_bases(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    # against the table, not the ORM entity: a Core executemany, no ORM bookkeeping per row
    stmt = dialect_insert(session, cast(Any, _FIELD_STATE))
    stmt = stmt.on_conflict_do_update(
        index_elements=[_FIELD_STATE.c.link_id, _FIELD_STATE.c.field],
        set_={
            "value_hash": stmt.excluded.value_hash,
            "origin": stmt.excluded.origin,
            "written_to": stmt.excluded.written_to,
            "synced_at": stmt.excluded.synced_at,
        },
    )
    await session.execute(stmt, rows)


async def record_bases(
    session: AsyncSession, link_id: int, entries: Mapping[str, BaseEntry]
) -> None:
    """Insert or replace the ledger rows of ``link_id`` for the given fields: one statement."""
    await _upsert_bases(session, _base_rows(link_id, entries))


async def delete_bases(session: AsyncSession, link_id: int, fields: Iterable[str]) -> int:
    """Forget the ledger rows of ``fields`` (e.g. unmapped fields); how many were deleted."""
    names = list(dict.fromkeys(fields))
    deleted = 0
    for chunk in _chunks(names):
        stmt = sa.delete(FieldState).where(
            FieldState.link_id == link_id, FieldState.field.in_(chunk)
        )
        deleted += _rowcount(await session.execute(stmt))
    return deleted


@dataclass(frozen=True, slots=True)
class Pending:
    """A write-ahead row (:class:`~connector.store.models.PendingWrite`): the value hash about
    to be written to ``target``, whose outcome is not known until the ledger records it."""

    target: System
    value_hash: str
    created_at: datetime


async def record_pending(
    session: AsyncSession, rows: Sequence[tuple[int, str, System, str]], now: datetime
) -> None:
    """Before writing: ``(link_id, field, target, value_hash)`` per value about to be written
    (a row already there for the field is replaced)."""
    if not rows:
        return
    await clear_pending(session, [(r[0], r[1]) for r in rows])
    await session.execute(
        sa.insert(PendingWrite),
        [
            {"link_id": i, "field": f, "target": t, "value_hash": h, "created_at": now}
            for i, f, t, h in rows
        ],
    )


async def load_pending(
    session: AsyncSession, link_ids: Iterable[int]
) -> dict[int, dict[str, Pending]]:
    """The write-ahead rows of ``link_ids``, by link id and field."""
    found: dict[int, dict[str, Pending]] = {}
    for chunk in _chunks(list(dict.fromkeys(link_ids))):
        result = await session.execute(
            sa.select(
                PendingWrite.link_id,
                PendingWrite.field,
                PendingWrite.target,
                PendingWrite.value_hash,
                PendingWrite.created_at,
            ).where(PendingWrite.link_id.in_(chunk))
        )
        for link_id, name, target, value_hash, created_at in result:
            found.setdefault(link_id, {})[name] = Pending(target, value_hash, created_at)
    return found


async def clear_pending(session: AsyncSession, keys: Iterable[tuple[int, str]]) -> None:
    """After the ledger recorded them: forget the write-ahead rows of ``(link_id, field)``."""
    wanted = list(dict.fromkeys(keys))
    for chunk in _chunks(wanted):
        await session.execute(
            sa.delete(PendingWrite).where(
                sa.tuple_(PendingWrite.link_id, PendingWrite.field).in_(chunk)
            )
        )


def _check_batch(pairs: Sequence[PairWrite]) -> None:
    seen: dict[str, set[Any]] = {"hubspot_id": set(), "brevo_id": set(), "link_id": set()}
    for pair in pairs:
        if pair.hubspot_id is None and pair.brevo_id is None:
            raise ValueError("a link needs a hubspot_id or a brevo_id")
        for name, ids in seen.items():
            value = getattr(pair, name)
            if value is None:
                continue
            if value in ids:
                raise ValueError(f"{name} {value!r} appears twice in one batch")
            ids.add(value)


def _side_keys(hubspot_id: str | None, brevo_id: str | None) -> list[tuple[str, Any]]:
    keys: list[tuple[str, Any]] = []
    if hubspot_id is not None:
        keys.append(("hs", hubspot_id))
    if brevo_id is not None:
        keys.append(("br", brevo_id))
    return keys


async def _lookup(
    session: AsyncSession, object_type: str, keys: Sequence[tuple[str, Any]]
) -> dict[int, _Row]:
    """Links of ``object_type`` by ``("id" | "hs" | "br", value)`` keys, by id."""
    found: dict[int, _Row] = {}
    columns = {"id": Link.id, "hs": Link.hubspot_id, "br": Link.brevo_id}
    for chunk in _chunks(keys):
        values: dict[str, list[Any]] = {}
        for kind, value in chunk:
            values.setdefault(kind, []).append(value)
        where = sa.or_(*(columns[kind].in_(v) for kind, v in values.items()))
        stmt = sa.select(*_LINK_COLUMNS).where(Link.object_type == object_type, where)
        for row in await session.execute(stmt):
            found[row.id] = row
    return found


def _new_link_key(hubspot_id: str | None, brevo_id: str | None) -> tuple[str, str | None]:
    return ("hubspot", hubspot_id) if hubspot_id is not None else ("brevo", brevo_id)


async def save_pairs(
    session: AsyncSession,
    object_type: str,
    pairs: Sequence[PairWrite],
    *,
    now: datetime | None = None,
) -> list[int]:
    """Create or update many links and upsert their bases; the link ids, in ``pairs`` order.

    Statements: one lookup per :data:`CHUNK` keys (by ``link_id`` where given, else by the
    side ids; plus one for the new side ids of known links, if any), one ``UPDATE``
    executemany for the links whose ids or identity key changed (unchanged ones are not
    written), one multi-row ``INSERT … RETURNING`` per 1,000 new links, and one upsert
    executemany for all the bases. Raises :class:`LinkConflict` (before writing) when a pair
    would take an id another link holds, or names a link that no longer exists; ``ValueError``
    when two pairs of the batch name the same id or link.
    """
    if not pairs:
        return []
    _check_batch(pairs)
    now = now or utcnow()

    # Known links by id; new pairs by their side ids. Then, only if some known link changes
    # a side id, who holds the new id (the usual pass costs one lookup per 500 links).
    first: list[tuple[str, Any]] = []
    for p in pairs:
        if p.link_id is not None:
            first.append(("id", p.link_id))
        else:
            first.extend(_side_keys(p.hubspot_id, p.brevo_id))
    by_id = await _lookup(session, object_type, first)
    second: list[tuple[str, Any]] = []
    for p in pairs:
        row = by_id.get(p.link_id) if p.link_id is not None else None
        if row is not None:
            second.extend(
                _side_keys(
                    p.hubspot_id if p.hubspot_id != row.hubspot_id else None,
                    p.brevo_id if p.brevo_id != row.brevo_id else None,
                )
            )
    by_id.update(await _lookup(session, object_type, second))
    by_hs = {r.hubspot_id: r.id for r in by_id.values() if r.hubspot_id is not None}
    by_br = {r.brevo_id: r.id for r in by_id.values() if r.brevo_id is not None}

    resolved: list[int | None] = []
    updates: list[dict[str, Any]] = []
    for p in pairs:
        if p.link_id is not None and p.link_id not in by_id:
            raise LinkConflict(f"{object_type} link {p.link_id} no longer exists")
        owners = {p.link_id, by_hs.get(p.hubspot_id), by_br.get(p.brevo_id)} - {None}
        if len(owners) > 1:
            raise LinkConflict(
                f"{object_type} pair hubspot_id={p.hubspot_id!r} brevo_id={p.brevo_id!r} "
                f"matches links {sorted(cast(set[int], owners))}; merge them first"
            )
        link_id = owners.pop() if owners else None
        resolved.append(link_id)
        if link_id is None:
            continue
        row = by_id[link_id]
        wanted = (p.hubspot_id, p.brevo_id, p.identity_key)
        if (row.hubspot_id, row.brevo_id, row.identity_key) != wanted:
            updates.append(
                {
                    "id": link_id,
                    "hubspot_id": p.hubspot_id,
                    "brevo_id": p.brevo_id,
                    "identity_key": p.identity_key,
                    "updated_at": now,
                }
            )
    twice = [i for i, n in Counter(i for i in resolved if i is not None).items() if n > 1]
    if twice:
        raise ValueError(f"{object_type} links {sorted(twice)} appear twice in one batch")
    if updates:
        await session.execute(sa.update(Link), updates)

    new = [i for i, link_id in enumerate(resolved) if link_id is None]
    if new:
        rows = [
            {
                "object_type": object_type,
                "hubspot_id": pairs[i].hubspot_id,
                "brevo_id": pairs[i].brevo_id,
                "identity_key": pairs[i].identity_key,
                "created_at": now,
                "updated_at": now,
            }
            for i in new
        ]
        # RETURNING order is not guaranteed: map the new ids back by the unique side ids.
        links = _LINKS
        insert = sa.insert(links).returning(links.c.id, links.c.hubspot_id, links.c.brevo_id)
        created = {
            _new_link_key(r.hubspot_id, r.brevo_id): r.id
            for r in await session.execute(insert, rows)
        }
        for i in new:
            resolved[i] = created[_new_link_key(pairs[i].hubspot_id, pairs[i].brevo_id)]

    link_ids = cast(list[int], resolved)
    base_rows: list[dict[str, Any]] = []
    for link_id, p in zip(link_ids, pairs, strict=True):
        base_rows.extend(_base_rows(link_id, p.bases))
    await _upsert_bases(session, base_rows)
    return link_ids


async def upsert_link(
    session: AsyncSession,
    object_type: str,
    *,
    hubspot_id: str | None,
    brevo_id: str | None,
    identity_key: str | None,
    link_id: int | None = None,
    now: datetime | None = None,
) -> int:
    """Create or update one link (see :class:`PairWrite` for the matching); its id."""
    pair = PairWrite(hubspot_id, brevo_id, identity_key, link_id=link_id)
    return (await save_pairs(session, object_type, [pair], now=now))[0]


async def move_hubspot_id(
    session: AsyncSession,
    object_type: str,
    old: str,
    new: str,
    *,
    now: datetime | None = None,
) -> MoveResult:
    """HubSpot merged ``old`` into ``new``: the link moves to the surviving id.

    If ``new`` already has a link, that one is kept and ``old``'s link (with its bases) is
    deleted and returned as ``dropped``.
    """
    found = await load_links(session, object_type, hubspot_ids=[old, new])
    old_link = next((r for r in found if r.hubspot_id == old), None)
    new_link = next((r for r in found if r.hubspot_id == new), None)
    if old == new or old_link is None:
        return MoveResult(new_link.id if new_link else None)
    if new_link is None:
        stmt = (
            sa.update(Link)
            .where(Link.id == old_link.id)
            .values(hubspot_id=new, updated_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )
        await session.execute(stmt)
        return MoveResult(old_link.id)
    await delete_link(session, old_link.id)
    return MoveResult(new_link.id, dropped=old_link)


async def delete_link(session: AsyncSession, link_id: int) -> bool:
    """Delete a link and its ledger rows (GDPR purge, deletions); ``False`` if it was absent."""
    await session.execute(sa.delete(FieldState).where(FieldState.link_id == link_id))
    stmt = sa.delete(Link).where(Link.id == link_id).execution_options(synchronize_session=False)
    return _rowcount(await session.execute(stmt)) > 0


def _rowcount(result: Any) -> int:
    return cast(sa.CursorResult[Any], result).rowcount


__all__ = [
    "CHUNK",
    "DELETED_MARKER",
    "MARKER_PREFIX",
    "BaseEntry",
    "LinkConflict",
    "LinkRecord",
    "MoveResult",
    "PairWrite",
    "count_links",
    "delete_bases",
    "delete_link",
    "iter_links",
    "load_links",
    "move_hubspot_id",
    "record_bases",
    "save_pairs",
    "upsert_link",
]
