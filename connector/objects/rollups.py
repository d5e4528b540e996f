"""HubSpot records rolled up into Brevo contact attributes (tickets, engagements, deals, custom
objects).

Two parts:

* **Pure**: :func:`compute` turns one contact's associated records (by object type), the
  pipelines' stage metadata and the roll-up entries into attribute values — counts, latest
  dates, open/closed by the stage's ``isClosed`` (or ``ticketState``), won by
  ``probability == 1.0`` (or the stage id ``closedwon``), sums, the health score formula, a
  property of the most recently modified record. :func:`canonical` is the text each value is
  compared and hashed by.
* **I/O**: :class:`ContactRollups` refreshes contacts by HubSpot id: their associations to each
  object type (1,000 contacts per call), the records (100 per call, only the properties the
  entries read), the pipelines (one call per type, cached), then compares each value with the
  hash last written (``rollup_values``) and writes only the changed attributes to the linked
  Brevo contacts — one ``/contacts/import`` for many, single updates for a few. Contacts
  without a Brevo link are skipped (counted as ``skipped_unlinked``) until they are linked.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.brevo.client import BrevoClient
from connector.brevo.models import BrevoContact, ImportRow
from connector.engine import Outcome
from connector.errors import ApiError, NotFoundError, ValidationError
from connector.hubspot.client import HubSpotClient
from connector.hubspot.crm import HubSpotCrm, Pipeline
from connector.objects.rollup_mapping import (
    PRIORITY_PROP,
    URGENT_PRIORITIES,
    HealthScore,
    RollupField,
    RollupMapping,
    default_date_property,
    stage_props,
)
from connector.store import links as ledger
from connector.store import rollups as state
from connector.store.models import utcnow

log = structlog.get_logger(__name__)

Value = float | int | str | bool | None
"""An attribute value as written to Brevo (``None``: clear it)."""

# --- pure part ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stage:
    """What a pipeline stage means for roll-ups."""

    closed: bool = False
    won: bool = False


OPEN = Stage()
StageTable = Mapping[str, Mapping[str, Stage]]
"""``{pipeline id: {stage id: Stage}}`` of one object type."""


def stage_table(pipelines: Iterable[Pipeline]) -> dict[str, dict[str, Stage]]:
    """The stage table of an object type from its pipelines (HubSpot's stage metadata)."""
    table: dict[str, dict[str, Stage]] = {}
    for p in pipelines:
        stages = table.setdefault(p.id, {})
        for s in p.stages:
            closed = s.is_closed
            won = closed and (s.probability == 1.0 or s.id == "closedwon")
            stages[s.id] = Stage(closed, won)
    return table


def record_stage(props: Mapping[str, str | None], object_type: str, table: StageTable) -> Stage:
    """A record's stage: by (pipeline, stage); a stage id found in another pipeline counts too
    (records moved between pipelines); HubSpot's default ``closedwon``/``closedlost`` ids
    without metadata are closed; anything unknown is open."""
    pipeline_prop, stage_prop = stage_props(object_type)
    stage_id = props.get(stage_prop)
    if not stage_id:
        return OPEN
    found = table.get(props.get(pipeline_prop) or "", {}).get(stage_id)
    if found is None:
        found = next((st[stage_id] for st in table.values() if stage_id in st), None)
    if found is not None:
        return found
    if stage_id == "closedwon":
        return Stage(True, True)
    if stage_id == "closedlost":
        return Stage(True, False)
    return OPEN


def parse_time(raw: str | None) -> datetime | None:
    """A HubSpot date or datetime (ISO-8601 or epoch milliseconds) → aware UTC datetime."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        return None
    try:
        if text.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(text) / 1000, UTC)
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_number(raw: str | None) -> float | None:
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def number(value: float) -> float | int:
    """A number as Brevo gets it: an int when whole, else rounded to 2 decimals."""
    rounded = round(value, 2)
    return int(rounded) if rounded == int(rounded) else rounded


def canonical(value: Value) -> str:
    """The text a value is compared and hashed by: numbers by value (3 == 3.0), dates by day,
    booleans as true/false, ``None`` and ``""`` alike (empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(number(float(value))))
    return str(value)


@dataclass(frozen=True, slots=True)
class Record:
    """One associated record: its id and the properties read."""

    id: str
    properties: Mapping[str, str | None]


def _matches(stage: Stage, flt: str) -> bool:
    if flt == "open":
        return not stage.closed
    if flt == "closed":
        return stage.closed
    if flt == "won":
        return stage.won
    if flt == "won_or_open":
        return stage.won or not stage.closed
    return True


def _latest(records: Sequence[Record], prop: str) -> str | None:
    times = [t for r in records if (t := parse_time(r.properties.get(prop))) is not None]
    return max(times).date().isoformat() if times else None


def _newest(records: Sequence[Record]) -> Record | None:
    def key(r: Record) -> tuple[datetime, int, str]:
        t = parse_time(r.properties.get("hs_lastmodifieddate")) or datetime.min.replace(tzinfo=UTC)
        return (t, int(r.id) if r.id.isdigit() else -1, r.id)

    return max(records, key=key) if records else None


def _convert(raw: str | None, kind: str) -> Value:
    if raw is None or str(raw).strip() == "":
        return None
    if kind == "float":
        n = parse_number(raw)
        return None if n is None else number(n)
    if kind == "date":
        t = parse_time(raw)
        return None if t is None else t.date().isoformat()
    if kind == "boolean":
        return str(raw).strip().lower() in ("true", "1", "yes")
    return str(raw)


def health_score(
    tickets: Sequence[Record], stages: StageTable, health: HealthScore, today: date
) -> float | int:
    """``start`` + weights × (open tickets, open HIGH/URGENT tickets, tickets created in the
    last ``recent_days`` days), clamped to ``[min, max]``."""
    since = today - timedelta(days=health.recent_days)
    created = default_date_property("tickets")
    score = health.start
    for t in tickets:
        stage = record_stage(t.properties, "tickets", stages)
        if not stage.closed:
            score += health.per_open_ticket
            priority = (t.properties.get(PRIORITY_PROP) or "").upper()
            if priority in URGENT_PRIORITIES:
                score += health.per_urgent_open_ticket
        when = parse_time(t.properties.get(created))
        if when is not None and since < when.date() <= today:
            score += health.per_recent_ticket
    return number(min(max(score, health.min), health.max))


def compute_field(
    f: RollupField,
    records: Sequence[Record],
    stages: StageTable,
    health: HealthScore,
    today: date,
) -> Value:
    """One entry's value over one contact's records of ``f.object``."""
    if f.value == "health_score":
        return health_score(records, stages, health, today)
    if f.value == "latest":
        return _latest(records, f.date_property)
    if f.value == "property":
        newest = _newest(records)
        return (
            None if newest is None else _convert(newest.properties.get(f.prop or ""), f.brevo_type)
        )
    flt = {"count_open": "open", "count_closed": "closed"}.get(f.value, f.filter)
    chosen = (
        list(records)
        if flt == "all"
        else [r for r in records if _matches(record_stage(r.properties, f.object, stages), flt)]
    )
    if f.value == "sum":
        return number(sum(parse_number(r.properties.get(f.prop or "")) or 0.0 for r in chosen))
    return len(chosen)


def compute(
    fields: Iterable[RollupField],
    records: Mapping[str, Sequence[Record]],
    stages: Mapping[str, StageTable],
    health: HealthScore,
    today: date,
) -> dict[str, Value]:
    """Every entry's value for one contact (``records`` and ``stages`` by object type)."""
    return {
        f.brevo: compute_field(
            f, records.get(f.object, ()), stages.get(f.object, {}), health, today
        )
        for f in fields
    }


# --- I/O part -------------------------------------------------------------------------------

Baseline = Literal["store", "brevo"]
IMPORT_THRESHOLD = 20
SNAPSHOT_TTL = timedelta(minutes=5)
"""How long one listing of the Brevo contacts serves the resyncs of the roll-up sources."""


@dataclass
class _Entry:
    """One roll-up entry with the health settings of its file."""

    field: RollupField
    health: HealthScore


@dataclass
class _Contact:
    hubspot_id: str
    link: ledger.LinkRecord
    values: dict[str, Value] = field(default_factory=dict)
    changed: dict[str, Value] = field(default_factory=dict)


class ContactRollups:
    """Refreshes the roll-up attributes of HubSpot contacts on their linked Brevo contacts.

    ``mappings`` are the loaded roll-up files; ``list_ids`` the Brevo list the contacts import
    goes to (Brevo's import needs one: ``connectors.hubspot.lists.all_contacts``; without it
    every write is a single update). ``calls`` counts what each refresh spent, per API.
    """

    def __init__(
        self,
        *,
        hubspot: HubSpotClient,
        brevo: BrevoClient,
        sessions: async_sessionmaker[AsyncSession],
        mappings: Sequence[RollupMapping],
        list_ids: Sequence[int] = (),
        import_threshold: int = IMPORT_THRESHOLD,
        crm: HubSpotCrm | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.hubspot = hubspot
        self.brevo = brevo
        self.sessions = sessions
        self.mappings = list(mappings)
        self.list_ids = list(list_ids)
        self.import_threshold = max(1, import_threshold)
        self.crm = crm or HubSpotCrm(hubspot)
        self.clock = clock
        self.entries = [_Entry(f, m.health) for m in self.mappings for f in m.fields]
        self._stages: dict[str, dict[str, dict[str, Stage]]] = {}
        self.calls: Counter[str] = Counter()
        self.snapshot_ttl = SNAPSHOT_TTL
        self._snapshot: tuple[datetime, dict[str, dict[str, Any]]] | None = None

    @property
    def object_types(self) -> tuple[str, ...]:
        """Every HubSpot object type some entry reads."""
        return tuple(dict.fromkeys(e.field.object for e in self.entries))

    def attributes(self, object_types: Collection[str] | None = None) -> list[str]:
        return [
            e.field.brevo
            for e in self.entries
            if object_types is None or e.field.object in object_types
        ]

    def properties(self, object_type: str) -> list[str]:
        props = [
            p for e in self.entries if e.field.object == object_type for p in e.field.properties()
        ]
        return list(dict.fromkeys(props))

    # --- the Brevo side's current values ---------------------------------------------------

    async def brevo_snapshot(self) -> dict[str, dict[str, Any]]:
        """``{Brevo id: {attribute: value}}`` of every roll-up attribute of every Brevo contact:
        one listing (1,000 contacts per call), shared by the sources' resyncs for
        ``snapshot_ttl`` and kept up to date with what the roll-ups write meanwhile."""
        now = self.clock()
        if self._snapshot is not None and now - self._snapshot[0] <= self.snapshot_ttl:
            return self._snapshot[1]
        attributes = self.attributes()
        values: dict[str, dict[str, Any]] = {}
        listed = 0
        async for c in self.brevo.iter_contacts():
            values.update(brevo_rollup_values([c], attributes))
            listed += 1
        self.calls["brevo_list"] += max(1, math.ceil(listed / 1000))
        self._snapshot = (now, values)
        return values

    def _remember(self, written: Iterable[_Contact]) -> None:
        if self._snapshot is None:
            return
        values = self._snapshot[1]
        for c in written:
            values.setdefault(c.link.brevo_id or "", {}).update(c.changed)

    # --- stages ---------------------------------------------------------------------------

    async def _stage_table(self, object_type: str, reload: bool = False) -> StageTable:
        if reload or object_type not in self._stages:
            try:
                pipelines = await self.crm.pipelines(object_type)
            except (NotFoundError, ValidationError) as e:
                log.warning("rollups.no_pipelines", object_type=object_type, error=str(e))
                pipelines = []
            self.calls["hubspot_pipelines"] += 1
            self._stages[object_type] = stage_table(pipelines)
        return self._stages[object_type]

    async def _stages_for(self, object_type: str, records: Iterable[Record]) -> StageTable:
        table = await self._stage_table(object_type)
        _, stage_prop = stage_props(object_type)
        known = {s for st in table.values() for s in st}
        unknown = {r.properties.get(stage_prop) for r in records} - known - {None, ""}
        if unknown and object_type in self._stages:  # a stage added since: read them again
            table = await self._stage_table(object_type, reload=True)
        return table

    # --- refresh --------------------------------------------------------------------------

    async def refresh(
        self,
        hubspot_contact_ids: Iterable[str],
        *,
        object_types: Collection[str] | None = None,
        dry_run: bool = False,
        baseline: Baseline = "store",
        brevo_values: Mapping[str, Mapping[str, Any]] | None = None,
        out: Outcome | None = None,
    ) -> Outcome:
        """Recompute the roll-ups of these contacts (the entries reading ``object_types``, or
        all) and write what changed. ``baseline="brevo"`` compares with the Brevo contacts'
        current values (``brevo_values`` by Brevo id, or read 20 per call) instead of the
        values last written — what a resync does, catching edits made in Brevo."""
        out = out or Outcome()
        entries = [
            e for e in self.entries if object_types is None or e.field.object in object_types
        ]
        ids = [str(i) for i in dict.fromkeys(hubspot_contact_ids)]
        if not entries or not ids:
            return out
        async with self.sessions() as session:
            links = await ledger.load_links(session, "contacts", hubspot_ids=ids)
        linked = {lk.hubspot_id: lk for lk in links if lk.hubspot_id is not None and lk.brevo_id}
        contacts = [_Contact(cid, linked[cid]) for cid in ids if cid in linked]
        out.counts["skipped_unlinked"] += len(ids) - len(contacts)
        if not contacts:
            return out
        types = list(dict.fromkeys(e.field.object for e in entries))
        records: dict[str, dict[str, list[Record]]] = {c.hubspot_id: {} for c in contacts}
        members: dict[str, dict[str, list[str]]] = {}
        for object_type in types:
            members[object_type] = await self._read_records(
                object_type, [c.hubspot_id for c in contacts], records, out
            )
        contacts = [c for c in contacts if c.hubspot_id in records]  # unreadable ones wait
        stages: dict[str, StageTable] = {}
        for object_type in types:
            if any(e.field.object == object_type and e.field.needs_stages for e in entries):
                every = [r for per in records.values() for r in per.get(object_type, [])]
                stages[object_type] = await self._stages_for(object_type, every)
        today = self.clock().date()
        for c in contacts:
            for e in entries:
                f = e.field
                c.values[f.brevo] = compute_field(
                    f,
                    records[c.hubspot_id].get(f.object, []),
                    stages.get(f.object, {}),
                    e.health,
                    today,
                )
        await self._diff(contacts, baseline, brevo_values)
        changed = [c for c in contacts if c.changed]
        out.counts["rollup_contacts"] += len(contacts)
        out.counts["unchanged"] += len(contacts) - len(changed)
        if dry_run:
            out.counts["would_write"] += len(changed)
            return out
        written = await self._write(changed, out)
        self._remember(written)
        async with self.sessions() as session, session.begin():
            for object_type, per_contact in members.items():
                await state.replace_members(session, object_type, per_contact)
            hashes = {
                (c.hubspot_id, attr): state.value_hash(canonical(v))
                for c in written
                for attr, v in c.changed.items()
            }
            if baseline == "brevo":  # the in-step ones become the baseline too
                hashes.update(
                    {
                        (c.hubspot_id, attr): state.value_hash(canonical(v))
                        for c in contacts
                        if not c.changed
                        for attr, v in c.values.items()
                    }
                )
            await state.save_values(session, hashes, now=self.clock())
        return out

    async def _read_records(
        self,
        object_type: str,
        contact_ids: list[str],
        records: dict[str, dict[str, list[Record]]],
        out: Outcome,
    ) -> dict[str, list[str]]:
        """Associations contact → ``object_type`` and the records themselves; the record
        ids per contact (what ``rollup_members`` keeps)."""
        assoc = await self.crm.read_associations("contacts", object_type, contact_ids)
        self.calls["hubspot_associations"] += assoc.calls
        if assoc.failed:
            out.counts["failed"] += len(assoc.failed)
            out.failures.append(
                f"{len(assoc.failed)} contacts' {object_type} associations unreadable: "
                + next(iter(assoc.failed.values()))
            )
        by_contact = {
            cid: [a.to_id for a in assoc.links.get(cid, [])]
            for cid in contact_ids
            if cid not in assoc.failed
        }
        wanted = list(dict.fromkeys(r for rs in by_contact.values() for r in rs))
        found: dict[str, Record] = {}
        if wanted:
            props = self.properties(object_type)
            result = await self.hubspot.batch_read(object_type, wanted, props)
            self.calls["hubspot_batch_read"] += math.ceil(len(wanted) / 100)
            for obj in result.results:
                found[obj.id] = Record(obj.id, obj.properties)
        out.counts["records_read"] += len(found)
        for cid, rids in by_contact.items():
            records[cid][object_type] = [found[r] for r in rids if r in found]
        for cid in assoc.failed:  # unreadable: keep their last values, do not write
            records.pop(cid, None)
        return {cid: [r for r in rids if r in found] for cid, rids in by_contact.items()}

    async def _diff(
        self,
        contacts: list[_Contact],
        baseline: Baseline,
        brevo_values: Mapping[str, Mapping[str, Any]] | None,
    ) -> None:
        if baseline == "store":
            async with self.sessions() as session:
                last = await state.load_values(session, [c.hubspot_id for c in contacts])
            for c in contacts:
                c.changed = {
                    attr: v
                    for attr, v in c.values.items()
                    if _differs(last.get((c.hubspot_id, attr)), v)
                }
            return
        current = dict(brevo_values or {})
        missing = [int(c.link.brevo_id or 0) for c in contacts if c.link.brevo_id not in current]
        if missing:
            for bc in await self.brevo.get_contacts_by_ids(missing):
                current[str(bc.id)] = bc.attributes
            self.calls["brevo_get_contacts"] += math.ceil(len(missing) / 20)
        for c in contacts:
            attrs = current.get(c.link.brevo_id or "", {})
            c.changed = {
                attr: v
                for attr, v in c.values.items()
                if _brevo_canonical(attrs.get(attr), v) != canonical(v)
            }

    async def _write(self, changed: list[_Contact], out: Outcome) -> list[_Contact]:
        """Write the changed attributes: an import for many, single updates for a few."""
        if not changed:
            return []
        written: list[_Contact] = []
        singles = changed
        if self.list_ids and len(changed) >= self.import_threshold:
            with_email = [c for c in changed if c.link.identity_key]
            singles = [c for c in changed if not c.link.identity_key]
            written += await self._import(with_email, out)
        for c in singles:
            try:
                await self.brevo.update_contact(
                    int(c.link.brevo_id or 0), "id", attributes=_attributes(c.changed)
                )
                self.calls["brevo_update"] += 1
            except NotFoundError:
                out.counts["brevo_missing"] += 1
                continue
            except ApiError as e:
                out.counts["failed"] += 1
                out.failures.append(f"rollups: Brevo contact {c.link.brevo_id}: {e}")
                continue
            out.counts["brevo_updated"] += 1
            written.append(c)
        return written

    async def _import(self, contacts: list[_Contact], out: Outcome) -> list[_Contact]:
        """One import per kind of row: rows that only set values, and rows that clear some
        (sent with ``emptyContactsAttributes`` so Brevo erases those)."""
        setting = [c for c in contacts if all(v is not None for v in c.changed.values())]
        clearing = [c for c in contacts if c not in setting]
        done: list[_Contact] = []
        for group, empty in ((setting, False), (clearing, True)):
            if not group:
                continue
            rows = [
                ImportRow(email=c.link.identity_key, attributes=_attributes(c.changed))
                for c in group
            ]
            try:
                pids = await self.brevo.import_contacts(
                    rows, list_ids=self.list_ids, empty_attributes=empty
                )
            except ApiError as e:
                out.counts["failed"] += len(group)
                out.failures.append(f"rollups: Brevo import: {e}")
                continue
            self.calls["brevo_import"] += len(pids)
            out.counts["brevo_imported"] += len(group)
            done += group
        return done


def _differs(last_hash: str | None, value: Value) -> bool:
    """Whether a value differs from the one last written (nothing written yet and nothing
    to write is no difference: a contact without tickets gets no empty date cleared)."""
    if last_hash is None:
        return value is not None
    return last_hash != state.value_hash(canonical(value))


def _attributes(values: Mapping[str, Value]) -> dict[str, Any]:
    return {k: ("" if v is None else v) for k, v in values.items()}


def _brevo_canonical(raw: Any, like: Value) -> str:
    """A Brevo attribute value in the canonical text of the value it is compared with."""
    if raw is None or raw == "":
        return ""
    if isinstance(like, bool):
        return canonical(bool(raw))
    if isinstance(like, int | float):
        n = parse_number(str(raw))
        return canonical(n) if n is not None else str(raw)
    if isinstance(like, str) and len(like) == 10 and like[4] == "-":  # a date
        return str(raw)[:10]
    return str(raw)


def brevo_rollup_values(
    contacts: Iterable[BrevoContact], attributes: Collection[str]
) -> dict[str, dict[str, Any]]:
    """``{Brevo id: {attribute: value}}`` of the roll-up attributes only (a resync's baseline)."""
    wanted = set(attributes)
    return {str(c.id): {k: v for k, v in c.attributes.items() if k in wanted} for c in contacts}


__all__ = [
    "ContactRollups",
    "Record",
    "Stage",
    "canonical",
    "compute",
    "compute_field",
    "health_score",
    "record_stage",
    "stage_table",
]
