"""Roll-up mapping files (``mappings/rollups/*.yaml``): HubSpot records → Brevo contact attributes.

A roll-up file names the HubSpot object type whose records are summed up on each associated
contact (``object: tickets``, ``meetings``, a custom object's ``objectTypeId`` like ``2-3456``
or its name) and a list of ``rollup:`` entries, each one Brevo attribute and how its value is
computed from the contact's associated records (``value:``):

========================  ============================================================  ======
``count``                 how many records (``filter:`` all | open | closed | won |      float
                          won_or_open)
``count_open``            records in a stage that is not closed (pipeline metadata)      float
``count_closed``          records in a closed stage                                      float
``latest``                the newest value of a date ``property:`` (``YYYY-MM-DD``)       date
``sum``                   the sum of a number ``property:`` (with ``filter:``)            float
``health_score``          the file's ``health_score:`` formula over the tickets          float
``property``              the ``property:`` of the most recently modified record         text
========================  ============================================================  ======

An entry may name its own ``object:`` (the engagements file reads meetings, calls and notes).
The files live in a folder of their own so the field-mapping loader (:mod:`connector.mapping`)
does not read them. :func:`check_rollup_text` reports every problem with file, line and fix;
:func:`load_rollup_mappings` loads a folder or raises :class:`~connector.mapping.MappingError`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from connector.mapping import MappingError, Problem, line_of

ValueKind = Literal[
    "count", "count_open", "count_closed", "latest", "sum", "health_score", "property"
]
StageFilter = Literal["all", "open", "closed", "won", "won_or_open"]
BrevoType = Literal["float", "date", "text", "boolean"]

ROLLUP_DIR = "rollups"
"""The folder under ``sync.mappings_dir`` that holds the roll-up files."""

#: HubSpot's engagement types (date property ``hs_timestamp``)
ENGAGEMENT_TYPES = frozenset({"meetings", "calls", "notes", "tasks", "emails"})
#: Standard object types a roll-up may read; anything else must be a custom object
STANDARD_TYPES = frozenset({"tickets", "deals", "companies", *ENGAGEMENT_TYPES})
#: (pipeline property, stage property) per object type; custom objects use HubSpot's
#: ``hs_pipeline``/``hs_pipeline_stage`` like tickets
PIPELINE_PROPS: dict[str, tuple[str, str]] = {"deals": ("pipeline", "dealstage")}
DEFAULT_PIPELINE_PROPS = ("hs_pipeline", "hs_pipeline_stage")
#: the property ``health_score`` reads for the ticket's priority
PRIORITY_PROP = "hs_ticket_priority"
URGENT_PRIORITIES = frozenset({"HIGH", "URGENT"})
#: the creation date of tickets, deals and custom objects (HubSpot names it two ways)
CREATED_PROPS: dict[str, str] = {"tickets": "createdate", "deals": "createdate"}

_TOP_KEYS = ("object", "rollup", "health_score", "description")
_ENTRY_KEYS = ("brevo", "value", "object", "property", "filter", "type", "description")
_HEALTH_KEYS = (
    "start",
    "per_open_ticket",
    "per_urgent_open_ticket",
    "per_recent_ticket",
    "recent_days",
    "min",
    "max",
)
_BREVO_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_FILTERED = frozenset({"count", "sum"})
_NEEDS_PROPERTY = frozenset({"sum", "property"})


def stage_props(object_type: str) -> tuple[str, str]:
    """The (pipeline, stage) property names of an object type."""
    return PIPELINE_PROPS.get(object_type, DEFAULT_PIPELINE_PROPS)


def default_date_property(object_type: str) -> str:
    """The date ``latest`` reads when the entry names none: the activity date of engagements
    (``hs_timestamp``), the creation date otherwise."""
    if object_type in ENGAGEMENT_TYPES:
        return "hs_timestamp"
    return CREATED_PROPS.get(object_type, "hs_createdate")


def brevo_type_of(kind: ValueKind, declared: BrevoType | None) -> BrevoType:
    """The Brevo attribute type a value kind writes."""
    if kind == "latest":
        return "date"
    if kind == "property":
        return declared or "text"
    return "float"


@dataclass(frozen=True, slots=True)
class HealthScore:
    """``start`` + points per open ticket, per open HIGH/URGENT ticket and per ticket created
    in the last ``recent_days`` days, clamped to ``[min, max]``."""

    start: float = 100.0
    per_open_ticket: float = -15.0
    per_urgent_open_ticket: float = -10.0
    per_recent_ticket: float = -5.0
    recent_days: int = 30
    min: float = 0.0
    max: float = 100.0


@dataclass(frozen=True, slots=True)
class RollupField:
    """One Brevo attribute and how it is computed from one object type's records."""

    brevo: str
    object: str
    value: ValueKind
    prop: str | None = None
    filter: StageFilter = "all"
    type: BrevoType | None = None
    line: int | None = None

    @property
    def brevo_type(self) -> BrevoType:
        return brevo_type_of(self.value, self.type)

    @property
    def date_property(self) -> str:
        return self.prop or default_date_property(self.object)

    @property
    def needs_stages(self) -> bool:
        return self.value in ("count_open", "count_closed", "health_score") or (
            self.filter != "all"
        )

    def properties(self) -> list[str]:
        """The HubSpot properties this entry reads."""
        props: list[str] = []
        if self.value == "latest":
            props.append(self.date_property)
        elif self.prop:
            props.append(self.prop)
        if self.value == "health_score":
            props += [PRIORITY_PROP, default_date_property(self.object)]
        if self.needs_stages:
            props += list(stage_props(self.object))
        if self.value == "property":
            props.append("hs_lastmodifieddate")
        return props


@dataclass(frozen=True)
class RollupMapping:
    """One roll-up file, loaded and checked."""

    object: str
    fields: tuple[RollupField, ...]
    health: HealthScore = field(default_factory=HealthScore)
    source: str | None = None

    @property
    def objects(self) -> tuple[str, ...]:
        """The object types the file reads, in order of first use."""
        return tuple(dict.fromkeys(f.object for f in self.fields))

    def fields_of(self, object_type: str) -> tuple[RollupField, ...]:
        return tuple(f for f in self.fields if f.object == object_type)

    def properties(self, object_type: str) -> list[str]:
        props = [p for f in self.fields_of(object_type) for p in f.properties()]
        return list(dict.fromkeys(props))


def _suggest(word: str, options: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(options)})"


class _Checker:
    def __init__(self, file: str, root: yaml.Node | None) -> None:
        self.file = file
        self.root = root
        self.problems: list[Problem] = []

    def add(
        self, path: tuple[str | int, ...], name: str | None, message: str, warn: bool = False
    ) -> None:
        severity: Literal["error", "warning"] = "warning" if warn else "error"
        self.problems.append(Problem(self.file, line_of(self.root, path), name, message, severity))

    def unknown_keys(
        self, data: AbcMapping[str, Any], allowed: tuple[str, ...], path: tuple[str | int, ...]
    ) -> None:
        for key in data:
            if key not in allowed:
                self.add((*path, str(key)), str(key), "unknown key" + _suggest(str(key), allowed))


def _number(c: _Checker, raw: Any, path: tuple[str | int, ...], name: str) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        c.add(path, name, f"must be a number, not {raw!r}")
        return None
    return float(raw)


def _health(c: _Checker, raw: Any) -> HealthScore:
    if raw is None:
        return HealthScore()
    if not isinstance(raw, AbcMapping):
        c.add(("health_score",), "health_score", "must be a mapping of weights (see the example)")
        return HealthScore()
    c.unknown_keys(raw, _HEALTH_KEYS, ("health_score",))
    values: dict[str, Any] = {}
    for key in _HEALTH_KEYS:
        if key in raw:
            number = _number(c, raw[key], ("health_score", key), key)
            if number is not None:
                values[key] = int(number) if key == "recent_days" else number
    if values.get("recent_days", 1) < 1:
        c.add(("health_score", "recent_days"), "recent_days", "must be at least 1 (days)")
        values.pop("recent_days")
    health = HealthScore(**values)
    if health.min > health.max:
        c.add(("health_score", "min"), "min", f"min {health.min} is above max {health.max}")
        return HealthScore()
    return health


def _entry(c: _Checker, i: int, raw: Any, default_object: str | None) -> RollupField | None:
    path: tuple[str | int, ...] = ("rollup", i)
    if not isinstance(raw, AbcMapping):
        c.add(path, None, "each rollup entry must be a mapping like {brevo: X, value: count}")
        return None
    c.unknown_keys(raw, _ENTRY_KEYS, path)
    brevo = raw.get("brevo")
    if not isinstance(brevo, str) or not brevo:
        c.add(path, None, "needs 'brevo:', the Brevo contact attribute to write (UPPER_CASE)")
        return None
    if not _BREVO_NAME.match(brevo):
        fix = re.sub(r"[^A-Z0-9_]", "_", brevo.upper())
        c.add((*path, "brevo"), brevo, f"Brevo attribute names are UPPER_CASE: write {fix}")
        return None
    kinds = get_args(ValueKind)
    kind = raw.get("value")
    if kind not in kinds:
        c.add((*path, "value"), brevo, f"value {kind!r} is not known" + _suggest(str(kind), kinds))
        return None
    obj = raw.get("object", default_object)
    if not isinstance(obj, str | int) or not str(obj).strip():
        c.add(path, brevo, "no object type: set 'object:' in the file or in this entry")
        return None
    obj = str(obj).strip()
    prop = raw.get("property")
    if prop is not None and (not isinstance(prop, str) or not prop.strip()):
        c.add((*path, "property"), brevo, "property must be a HubSpot property's internal name")
        return None
    if kind in _NEEDS_PROPERTY and not prop:
        example = "amount" if kind == "sum" else "the property to copy"
        c.add(path, brevo, f"value {kind} needs 'property:' ({example})")
        return None
    filters = get_args(StageFilter)
    flt = raw.get("filter", "all")
    if flt not in filters:
        c.add(
            (*path, "filter"), brevo, f"filter {flt!r} is not known" + _suggest(str(flt), filters)
        )
        return None
    if flt != "all" and kind not in _FILTERED:
        c.add((*path, "filter"), brevo, f"filter applies to count and sum, not {kind}")
        return None
    if flt in ("won", "won_or_open") and obj != "deals":
        c.add((*path, "filter"), brevo, f"filter {flt} needs deal stages (object: deals)")
        return None
    if kind == "health_score" and obj != "tickets":
        c.add((*path, "value"), brevo, "health_score is computed from tickets (object: tickets)")
        return None
    if kind in ("count_open", "count_closed") and obj in ENGAGEMENT_TYPES:
        c.add((*path, "value"), brevo, f"{obj} have no pipeline stages: use value: count")
        return None
    types = get_args(BrevoType)
    declared = raw.get("type")
    if declared is not None and declared not in types:
        c.add(
            (*path, "type"),
            brevo,
            f"type {declared!r} is not known" + _suggest(str(declared), types),
        )
        return None
    if declared is not None and kind != "property":
        c.add((*path, "type"), brevo, f"type is set by value {kind}; drop it", warn=True)
        declared = None
    return RollupField(
        brevo=brevo,
        object=obj,
        value=cast(ValueKind, kind),
        prop=prop.strip() if isinstance(prop, str) else None,
        filter=cast(StageFilter, flt),
        type=cast("BrevoType | None", declared),
        line=line_of(c.root, path),
    )


def check_rollup_text(text: str, file: str) -> tuple[RollupMapping | None, list[Problem]]:
    """Parse and check a roll-up file: the mapping (``None`` when it has errors) and every
    problem found."""
    c = _Checker(file, None)
    try:
        c.root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return None, [Problem(file, line, None, f"not valid YAML: {e}")]
    if not isinstance(data, AbcMapping):
        return None, [Problem(file, 1, None, "a roll-up file is a mapping: object:, rollup: […]")]
    c.unknown_keys(data, _TOP_KEYS, ())
    default_object = data.get("object")
    if default_object is not None:
        default_object = str(default_object).strip()
    entries = data.get("rollup")
    if not isinstance(entries, list) or not entries:
        c.add(("rollup",), "rollup", "needs 'rollup:', a list of {brevo: ATTRIBUTE, value: …}")
        return None, c.problems
    fields: list[RollupField] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(entries):
        f = _entry(c, i, raw, default_object)
        if f is None:
            continue
        if f.brevo in seen:
            c.add(
                ("rollup", i, "brevo"), f.brevo, f"written twice (also entry {seen[f.brevo] + 1})"
            )
            continue
        seen[f.brevo] = i
        fields.append(f)
    health = _health(c, data.get("health_score"))
    if "health_score" in data and not any(f.value == "health_score" for f in fields):
        c.add(("health_score",), "health_score", "no entry uses value: health_score", warn=True)
    if any(p.severity == "error" for p in c.problems):
        return None, c.problems
    mapping = RollupMapping(
        object=default_object or fields[0].object,
        fields=tuple(fields),
        health=health,
        source=file,
    )
    return mapping, c.problems


def rollup_dir(mappings_dir: str | Path) -> Path:
    return Path(mappings_dir) / ROLLUP_DIR


def rollup_files(folder: str | Path) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        return []
    return sorted([*path.glob("*.yaml"), *path.glob("*.yml")])


def field_mapping_targets(mappings_dir: Path) -> dict[str, str]:
    """``{Brevo contact attribute: file}`` of the contact field mappings
    (``mappings/*.yaml`` with ``object: contacts``) in a folder."""
    targets: dict[str, str] = {}
    for path in sorted([*mappings_dir.glob("*.yaml"), *mappings_dir.glob("*.yml")]):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # the field-mapping check reports it
        if not isinstance(data, AbcMapping) or data.get("object", "contacts") != "contacts":
            continue  # companies and deals map Brevo CRM attributes, not contact ones
        fields = data.get("fields")
        for f in fields if isinstance(fields, list) else []:
            brevo = f.get("brevo") if isinstance(f, AbcMapping) else None
            if isinstance(brevo, str):
                targets.setdefault(brevo.strip().upper(), str(path))
    return targets


def check_rollup_dir(folder: str | Path) -> tuple[list[RollupMapping], list[Problem]]:
    """Every roll-up file of a folder (none is fine): the loaded ones and every problem.
    An attribute written by two files — two roll-ups, or a roll-up and a field mapping of the
    folder above — is an error (they would overwrite each other)."""
    mappings: list[RollupMapping] = []
    problems: list[Problem] = []
    writers: dict[str, str] = field_mapping_targets(Path(folder).parent)
    for path in rollup_files(folder):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            problems.append(Problem(str(path), None, None, f"cannot read: {e.strerror}"))
            continue
        mapping, found = check_rollup_text(text, str(path))
        problems += found
        if mapping is None:
            continue
        clash = False
        for f in mapping.fields:
            other = writers.get(f.brevo)
            if other is not None:
                message = f"also written by {other}: remove it from one of the two files"
                problems.append(Problem(str(path), f.line, f.brevo, message))
                clash = True
            writers.setdefault(f.brevo, str(path))
        if not clash:
            mappings.append(mapping)
    return mappings, problems


def load_rollup_file(path: str | Path) -> RollupMapping:
    """One roll-up file; raises :class:`MappingError` if it has errors."""
    mapping, problems = check_rollup_text(Path(path).read_text(encoding="utf-8"), str(path))
    if mapping is None:
        raise MappingError(problems)
    return mapping


def load_rollup_mappings(folder: str | Path) -> list[RollupMapping]:
    """Every roll-up file of a folder; raises :class:`MappingError` if any has errors."""
    mappings, problems = check_rollup_dir(folder)
    if any(p.severity == "error" for p in problems):
        raise MappingError(problems)
    return mappings


__all__ = [
    "ROLLUP_DIR",
    "HealthScore",
    "RollupField",
    "RollupMapping",
    "check_rollup_dir",
    "check_rollup_text",
    "load_rollup_file",
    "load_rollup_mappings",
    "rollup_dir",
    "stage_props",
]
