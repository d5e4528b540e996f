"""The sync planner: a pure function from both sides' values and the ledger to actions.

Plan, then apply (vdirsyncer's model): :func:`plan_pair` looks at one linked record pair —
each side's mapped values in canonical form, the sync-origin ledger (the hash of the value
last synced per field, the merge base) and the rules — and says what to do per field. It does
no I/O and reads no clock, so the same function is the dry run and the unit under property
tests. The engine applies a plan: it writes the values, then records the plan's new bases.

Per field, with ``h``, ``b`` the hashes of the two sides' canonical values and ``base`` the
ledger hash (DESIGN §5):

- ``h == b``: nothing to write. If the ledger lacks that hash, an ``adopt`` action records it
  (a ledger write only). Otherwise ``skip_echo`` (our own write read back) or ``skip_noop``.
- only HubSpot differs from ``base`` → ``to_brevo``; only Brevo → ``to_hubspot``.
- both differ, or there is no base: the field's conflict rule (``hubspot_wins``,
  ``brevo_wins``, ``latest_wins`` by the sides' modification times, a tie going to HubSpot)
  → ``conflict_to_brevo`` / ``conflict_to_hubspot``. On a one-way field the source side wins
  (``source_wins``): otherwise a conflict could stall until an unrelated write moved a
  modification time. With no base and one side empty, the value fills the empty side
  (``fill_empty``): a first sync never erases data.
- the field's direction and the run's direction bound all of this: a flow they forbid becomes
  ``skip_direction``; it writes nothing and leaves the base as it was.
- an invalid value on either side → ``skip_invalid`` with its reason; other fields go on.

Echo suppression falls out: after writing ``v`` the new base is ``hash(v)``, so when the
written side is read back ``h == b == base`` and nothing travels.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Side = Literal["hubspot", "brevo"]
FieldDirection = Literal["both", "hubspot_to_brevo", "brevo_to_hubspot"]
RunDirection = Literal["bidirectional", "hubspot_to_brevo", "brevo_to_hubspot"]
ConflictRule = Literal["hubspot_wins", "brevo_wins", "latest_wins"]
ActionKind = Literal[
    "to_brevo",
    "to_hubspot",
    "conflict_to_brevo",
    "conflict_to_hubspot",
    "adopt",
    "skip_echo",
    "skip_noop",
    "skip_direction",
    "skip_invalid",
]
#: what decided a value's travel: one side changed, a conflict rule, a first fill, a create
DecidedBy = Literal[
    "hubspot_changed",
    "brevo_changed",
    "hubspot_wins",
    "brevo_wins",
    "latest_wins",
    "source_wins",
    "fill_empty",
    "create",
]
PlanKind = Literal["create_in_brevo", "create_in_hubspot", "update", "nothing", "skip"]

FIELD_DIRECTIONS: tuple[FieldDirection, ...] = ("both", "hubspot_to_brevo", "brevo_to_hubspot")
RUN_DIRECTIONS: tuple[RunDirection, ...] = ("bidirectional", "hubspot_to_brevo", "brevo_to_hubspot")
CONFLICT_RULES: tuple[ConflictRule, ...] = ("hubspot_wins", "brevo_wins", "latest_wins")
WRITE_KINDS: frozenset[str] = frozenset(
    {"to_brevo", "to_hubspot", "conflict_to_brevo", "conflict_to_hubspot"}
)
SKIP_KINDS: frozenset[str] = frozenset({"skip_echo", "skip_noop", "skip_direction", "skip_invalid"})

_LABEL: dict[Side, str] = {"hubspot": "HubSpot", "brevo": "Brevo"}


def other(side: Side) -> Side:
    """The other system."""
    return "brevo" if side == "hubspot" else "hubspot"


def value_hash(canonical: str | None) -> str:
    """The ledger hash of a canonical value: sha256 hex of a tagged encoding (None ≠ "")."""
    data = b"n" if canonical is None else b"s:" + canonical.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


# --- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRule:
    """One mapped field's rules: which way it may travel and who wins a conflict."""

    direction: FieldDirection = "both"
    conflict: ConflictRule = "latest_wins"


@dataclass(frozen=True)
class SideRecord:
    """One side's record: its id, canonical values per field, modification time, bad values.

    A field missing from ``values`` counts as empty. ``modified_at`` must be timezone-aware;
    it only breaks ``latest_wins`` conflicts (Brevo bumps it on list changes alone, so it is
    never taken as a sign of change).
    """

    id: str
    values: Mapping[str, str | None]
    modified_at: datetime
    invalid: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BaseEntry:
    """A ledger row: hash of the value last synced, the side it came from, and when."""

    value_hash: str
    origin: Side
    synced_at: datetime


@dataclass(frozen=True)
class PairState:
    """What is known of one record pair: each side (None if absent) and the ledger rows."""

    hubspot: SideRecord | None
    brevo: SideRecord | None
    base: Mapping[str, BaseEntry] | None = None


# --- outputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldAction:
    """What to do with one field.

    ``value`` is the canonical value that travels (or the agreed value for adopt/no-op
    actions); ``previous`` is the target side's value it replaces. ``new_base`` is the ledger
    row to record once the write (if any) has succeeded. ``toward`` is the side the value goes
    to, or would go to if its direction allowed it (``skip_direction``).
    """

    field: str
    kind: ActionKind
    value: str | None = None
    previous: str | None = None
    rule_used: DecidedBy | None = None
    reason: str = ""
    new_base: BaseEntry | None = None
    toward: Side | None = None

    @property
    def target(self) -> Side | None:
        """The side this action writes to, if it writes."""
        if self.kind in ("to_brevo", "conflict_to_brevo"):
            return "brevo"
        if self.kind in ("to_hubspot", "conflict_to_hubspot"):
            return "hubspot"
        return None

    @property
    def is_conflict(self) -> bool:
        """Whether both sides had changed (or had never been synced) and a rule decided."""
        return self.rule_used in ("hubspot_wins", "brevo_wins", "latest_wins", "source_wins")


@dataclass(frozen=True)
class EmailChange:
    """The identity field changes on ``target``: the engine guards blocklisted contacts."""

    target: Side
    old: str | None
    new: str | None


@dataclass(frozen=True)
class PairPlan:
    """The plan for one record pair: a create, an update per field, nothing, or a skip."""

    kind: PlanKind
    actions: tuple[FieldAction, ...] = ()
    hubspot_id: str | None = None
    brevo_id: str | None = None
    reason: str = ""
    email_change: EmailChange | None = None

    def writes(self, side: Side) -> dict[str, str | None]:
        """The canonical values this plan writes to ``side``, by field.

        The engine sends the native values of these fields from the other side's mapped
        record (``MappedRecord.payload(plan.writes(side))``).
        """
        return {a.field: a.value for a in self.actions if a.target == side}

    @property
    def ledger_updates(self) -> dict[str, BaseEntry]:
        """The ledger rows to record after the writes succeed, by field."""
        return {a.field: a.new_base for a in self.actions if a.new_base is not None}

    def action(self, field_name: str) -> FieldAction | None:
        """The action planned for one field, if any."""
        return next((a for a in self.actions if a.field == field_name), None)


def is_noop(plan: PairPlan) -> bool:
    """Whether the plan sends nothing to either API (it may still adopt ledger rows)."""
    if plan.kind in ("create_in_brevo", "create_in_hubspot"):
        return False
    return not any(a.kind in WRITE_KINDS for a in plan.actions)


# --- planning ------------------------------------------------------------------------------


def may_travel(target: Side, rule: FieldRule, direction: RunDirection) -> bool:
    """Whether a value may be written to ``target`` under a field's and the run's direction."""
    source = other(target)
    one_way = f"{source}_to_{target}"
    return rule.direction in ("both", one_way) and direction in ("bidirectional", one_way)


def _why_not(target: Side, rule: FieldRule, direction: RunDirection) -> str:
    source = other(target)
    one_way = f"{source}_to_{target}"
    if rule.direction not in ("both", one_way):
        return f"field direction is {rule.direction}"
    return f"run direction is {direction}"


@dataclass(frozen=True)
class _Field:
    """The inputs of one field's decision."""

    name: str
    rule: FieldRule
    h: str | None
    b: str | None
    base: BaseEntry | None
    h_time: datetime
    b_time: datetime
    now: datetime

    def value(self, side: Side) -> str | None:
        return self.h if side == "hubspot" else self.b


def plan_pair(
    state: PairState,
    rules: Mapping[str, FieldRule],
    direction: RunDirection = "bidirectional",
    *,
    identity: str | None = None,
    now: datetime | None = None,
) -> PairPlan:
    """Plan one record pair.

    ``rules`` lists the mapped fields (by field key) with their rules; ``identity`` names the
    identity field (email for contacts), whose change is flagged on the plan and without which
    a record is not created. ``now`` stamps the new ledger rows; it defaults to the later of
    the sides' modification times, so the function never reads a clock.
    """
    hs, br = state.hubspot, state.brevo
    if hs is None and br is None:
        return PairPlan(kind="nothing", reason="neither side has the record")
    stamp = now if now is not None else max(r.modified_at for r in (hs, br) if r is not None)
    if hs is not None and br is not None:
        return _plan_update(hs, br, state.base or {}, rules, direction, identity, stamp)
    if hs is not None:
        return _plan_create(hs, "brevo", rules, direction, identity, stamp)
    assert br is not None
    return _plan_create(br, "hubspot", rules, direction, identity, stamp)


def _plan_update(
    hs: SideRecord,
    br: SideRecord,
    base: Mapping[str, BaseEntry],
    rules: Mapping[str, FieldRule],
    direction: RunDirection,
    identity: str | None,
    now: datetime,
) -> PairPlan:
    actions: list[FieldAction] = []
    for name, rule in rules.items():
        invalid = _invalid_reason(name, hs, br)
        if invalid:
            actions.append(FieldAction(name, "skip_invalid", reason=invalid))
            continue
        f = _Field(
            name,
            rule,
            hs.values.get(name),
            br.values.get(name),
            base.get(name),
            hs.modified_at,
            br.modified_at,
            now,
        )
        actions.append(_plan_field(f, direction))
    writes = any(a.kind in WRITE_KINDS for a in actions)
    return PairPlan(
        kind="update" if writes else "nothing",
        actions=tuple(actions),
        hubspot_id=hs.id,
        brevo_id=br.id,
        email_change=_email_change(actions, identity),
    )


def _invalid_reason(name: str, hs: SideRecord, br: SideRecord) -> str:
    if name not in hs.invalid and name not in br.invalid:
        return ""  # the usual case, without building the list
    sides: tuple[tuple[Side, SideRecord], ...] = (("hubspot", hs), ("brevo", br))
    reasons = [
        f"{_LABEL[side]} value: {rec.invalid[name]}" for side, rec in sides if name in rec.invalid
    ]
    return "; ".join(reasons)


def _email_change(actions: Iterable[FieldAction], identity: str | None) -> EmailChange | None:
    for action in actions:
        if identity is not None and action.field == identity and action.target is not None:
            return EmailChange(target=action.target, old=action.previous, new=action.value)
    return None


def _plan_field(f: _Field, direction: RunDirection) -> FieldAction:
    """One field's action for a pair where both sides exist and both values are valid."""
    hh, bh = value_hash(f.h), value_hash(f.b)
    if hh == bh:
        return _agreed(f, hh)
    if f.base is None and (f.h is None or f.b is None):
        filler: Side = "hubspot" if f.b is None else "brevo"
        return _travel(f, filler, "fill_empty", direction, "no sync history and one side empty")
    h_changed = f.base is None or f.base.value_hash != hh
    b_changed = f.base is None or f.base.value_hash != bh
    if h_changed and not b_changed:
        return _travel(f, "hubspot", "hubspot_changed", direction, "changed in HubSpot")
    if b_changed and not h_changed:
        return _travel(f, "brevo", "brevo_changed", direction, "changed in Brevo")
    history = "never synced" if f.base is None else "changed on both sides"
    if f.rule.direction != "both":
        source: Side = "hubspot" if f.rule.direction == "hubspot_to_brevo" else "brevo"
        why = f"source_wins: {_LABEL[source]} is the source of a {f.rule.direction} field"
        return _travel(f, source, "source_wins", direction, f"{history}; {why}", conflict=True)
    winner, why = resolve_conflict(f.rule.conflict, f.h_time, f.b_time)
    return _travel(f, winner, f.rule.conflict, direction, f"{history}; {why}", conflict=True)


def resolve_conflict(rule: ConflictRule, h_time: datetime, b_time: datetime) -> tuple[Side, str]:
    """The side whose value wins a conflict under ``rule``, and why (ties go to HubSpot)."""
    if rule == "hubspot_wins":
        return "hubspot", "hubspot_wins"
    if rule == "brevo_wins":
        return "brevo", "brevo_wins"
    if b_time > h_time:
        return "brevo", "latest_wins: Brevo changed later"
    if b_time == h_time:
        return "hubspot", "latest_wins: same time, HubSpot wins the tie"
    return "hubspot", "latest_wins: HubSpot changed later"


def _agreed(f: _Field, digest: str) -> FieldAction:
    """Both sides hold the same value: no write; adopt it as the base if the ledger differs."""
    if f.base is not None and f.base.value_hash == digest:
        written: Side = other(f.base.origin)
        written_at = f.h_time if written == "hubspot" else f.b_time
        if written_at >= f.base.synced_at:
            reason = f"{_LABEL[written]} shows our own write"
            return FieldAction(f.name, "skip_echo", f.h, f.h, reason=reason)
        return FieldAction(f.name, "skip_noop", f.h, f.h, reason="in step")
    origin: Side = f.base.origin if f.base else ("brevo" if f.b_time > f.h_time else "hubspot")
    entry = BaseEntry(digest, origin, f.now)
    return FieldAction(f.name, "adopt", f.h, f.h, reason="same on both sides", new_base=entry)


def _travel(
    f: _Field,
    source: Side,
    decided: DecidedBy,
    direction: RunDirection,
    reason: str,
    *,
    conflict: bool = False,
) -> FieldAction:
    """The source side's value goes to the other side, if the directions allow it."""
    target = other(source)
    value, previous = f.value(source), f.value(target)
    if not may_travel(target, f.rule, direction):
        why = f"{reason}; may not go to {_LABEL[target]}: {_why_not(target, f.rule, direction)}"
        return FieldAction(f.name, "skip_direction", value, previous, decided, why, toward=target)
    kind: ActionKind
    if target == "brevo":
        kind = "conflict_to_brevo" if conflict else "to_brevo"
    else:
        kind = "conflict_to_hubspot" if conflict else "to_hubspot"
    entry = BaseEntry(value_hash(value), source, f.now)
    return FieldAction(f.name, kind, value, previous, decided, reason, entry, target)


def _plan_create(
    source: SideRecord,
    target: Side,
    rules: Mapping[str, FieldRule],
    direction: RunDirection,
    identity: str | None,
    now: datetime,
) -> PairPlan:
    """Only one side has the record: create it on the other side, if allowed."""
    origin = other(target)
    hubspot_id = source.id if origin == "hubspot" else None
    brevo_id = source.id if origin == "brevo" else None
    if direction not in ("bidirectional", f"{origin}_to_{target}"):
        reason = f"exists only in {_LABEL[origin]}; run direction is {direction}"
        return PairPlan(kind="skip", reason=reason, hubspot_id=hubspot_id, brevo_id=brevo_id)
    if identity is not None and (identity in source.invalid or source.values.get(identity) is None):
        why = source.invalid.get(identity, "no value")
        return PairPlan(
            kind="skip",
            reason=f"no usable {identity} in {_LABEL[origin]}: {why}",
            hubspot_id=hubspot_id,
            brevo_id=brevo_id,
        )
    actions = tuple(
        _create_action(name, rule, source, target, direction, now) for name, rule in rules.items()
    )
    kind: PlanKind = "create_in_brevo" if target == "brevo" else "create_in_hubspot"
    return PairPlan(
        kind=kind,
        actions=actions,
        hubspot_id=hubspot_id,
        brevo_id=brevo_id,
        reason=f"new in {_LABEL[origin]}",
    )


def _create_action(
    name: str,
    rule: FieldRule,
    source: SideRecord,
    target: Side,
    direction: RunDirection,
    now: datetime,
) -> FieldAction:
    origin = other(target)
    if name in source.invalid:
        reason = f"{_LABEL[origin]} value: {source.invalid[name]}"
        return FieldAction(name, "skip_invalid", reason=reason)
    value = source.values.get(name)
    entry = BaseEntry(value_hash(value), origin, now)
    if may_travel(target, rule, direction):
        kind: ActionKind = "to_brevo" if target == "brevo" else "to_hubspot"
        return FieldAction(name, kind, value, None, "create", "new record", entry, target)
    if value is None:
        # The new record will not hold this field either: both sides agree on "empty".
        return FieldAction(name, "adopt", None, None, reason="empty on both sides", new_base=entry)
    why = f"new record; may not go to {_LABEL[target]}: {_why_not(target, rule, direction)}"
    return FieldAction(name, "skip_direction", value, None, "create", why, toward=target)


# --- summary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDiff:
    """One planned write, kept as a sample for the dry run."""

    hubspot_id: str | None
    brevo_id: str | None
    plan_kind: PlanKind
    action: FieldAction

    def __str__(self) -> str:
        a = self.action
        target = _LABEL[a.target] if a.target else "-"
        ids = f"hubspot:{self.hubspot_id or '-'} brevo:{self.brevo_id or '-'}"
        change = f"{a.previous!r} → {a.value!r}"
        return f"{ids} {a.field}: {change} to {target} ({a.rule_used}: {a.reason})"


@dataclass
class PlanSummary:
    """Counters over many plans, and sample diffs for the dry run.

    Per target side: ``creates`` and ``updates`` count records, ``field_writes`` fields,
    ``conflict_writes`` the fields a conflict rule sent there, ``blocked`` the changes a
    direction kept from going there. Per rule: ``decided_by`` counts every write by what
    decided it, ``conflicts`` every conflict by its rule (including those a direction then
    stopped). ``skips`` counts skipped fields by kind and ``records_skipped`` the records not
    synced at all, by reason.
    """

    records: int = 0
    noop_records: int = 0
    adopted: int = 0
    creates: Counter[str] = field(default_factory=Counter)
    updates: Counter[str] = field(default_factory=Counter)
    field_writes: Counter[str] = field(default_factory=Counter)
    conflict_writes: Counter[str] = field(default_factory=Counter)
    blocked: Counter[str] = field(default_factory=Counter)
    decided_by: Counter[str] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)
    skips: Counter[str] = field(default_factory=Counter)
    records_skipped: Counter[str] = field(default_factory=Counter)
    email_changes: Counter[str] = field(default_factory=Counter)
    max_samples: int = 100
    samples: list[FieldDiff] = field(default_factory=list)

    def add(self, plan: PairPlan) -> None:
        """Count one plan."""
        self.records += 1
        if plan.kind == "skip":
            self.records_skipped[plan.reason] += 1
        elif plan.kind in ("create_in_brevo", "create_in_hubspot"):
            self.creates[plan.kind.removeprefix("create_in_")] += 1
        elif is_noop(plan):
            self.noop_records += 1
        for side in ("hubspot", "brevo"):
            if plan.kind == "update" and plan.writes(side):
                self.updates[side] += 1
        if plan.email_change is not None:
            self.email_changes[plan.email_change.target] += 1
        for action in plan.actions:
            self._count(plan, action)

    def _count(self, plan: PairPlan, action: FieldAction) -> None:
        if action.is_conflict and action.rule_used is not None:
            self.conflicts[action.rule_used] += 1
        if action.kind == "adopt":
            self.adopted += 1
        elif action.kind in SKIP_KINDS:
            self.skips[action.kind] += 1
            if action.kind == "skip_direction" and action.toward is not None:
                self.blocked[action.toward] += 1
        elif action.target is not None:
            self.field_writes[action.target] += 1
            self.decided_by[action.rule_used or "create"] += 1
            if action.is_conflict:
                self.conflict_writes[action.target] += 1
            if len(self.samples) < self.max_samples:
                self.samples.append(FieldDiff(plan.hubspot_id, plan.brevo_id, plan.kind, action))

    def sample_diffs(self, n: int = 10) -> list[str]:
        """Up to ``n`` planned writes, one line each, for a dry run to show."""
        return [str(diff) for diff in self.samples[:n]]

    def as_dict(self) -> dict[str, Any]:
        """The counters as plain data (for JSON output and the runs table)."""
        counters = (
            "creates",
            "updates",
            "field_writes",
            "conflict_writes",
            "blocked",
            "decided_by",
            "conflicts",
            "skips",
            "records_skipped",
            "email_changes",
        )
        data: dict[str, Any] = {
            "records": self.records,
            "noop_records": self.noop_records,
            "adopted": self.adopted,
        }
        for name in counters:
            data[name] = dict(getattr(self, name))
        return data


def summarize(plans: Iterable[PairPlan], *, max_samples: int = 100) -> PlanSummary:
    """A :class:`PlanSummary` over ``plans``."""
    summary = PlanSummary(max_samples=max_samples)
    for plan in plans:
        summary.add(plan)
    return summary


# --- the mass-delete guard -----------------------------------------------------------------


def guard_deletions(
    n_to_delete: int, n_linked: int, max_share: float, *, min_count: int = 1
) -> str | None:
    """Why a batch of deletions must not run, or ``None`` if it may.

    A side that suddenly lists nothing (an outage, a wrong key, an emptied account) must not
    empty the other side: deleting more than ``max_share`` (0–1) of the linked records is
    refused unless forced. Fewer than ``min_count`` deletions are always allowed.
    """
    if not 0 <= max_share <= 1:
        raise ValueError(f"max_share must be between 0 and 1, not {max_share}")
    if n_to_delete < 0 or n_linked < 0:
        raise ValueError("counts cannot be negative")
    if n_to_delete == 0 or n_to_delete < min_count:
        return None
    if n_to_delete > n_linked:
        return (
            f"refusing to delete {n_to_delete} records: only {n_linked} are linked "
            "(the state store and the accounts disagree; run a resync first)"
        )
    share = n_to_delete / n_linked
    if share > max_share:
        return (
            f"refusing to delete {n_to_delete} of {n_linked} linked records "
            f"({share:.0%} > the {max_share:.0%} allowed): if this is intended, "
            "run again with --force"
        )
    return None
