"""Field mappings: ``mappings/*.yaml`` loaded, checked and applied.

A mapping file names a HubSpot object type, its identity (email for contacts) and a list of
fields, each with a HubSpot property, a Brevo attribute, a ``direction``, a ``conflict`` rule,
an optional declared ``type`` and an optional ``transform`` (see :mod:`connector.transforms`).

:func:`check_mapping_file` returns every problem it finds as a :class:`Problem` naming file,
line and field: YAML errors, unknown keys (with a did-you-mean), bad values, duplicate
targets, Brevo names not in UPPER_CASE, a transform that does not fit the declared type, a
value map that cannot go back to HubSpot, a read-only HubSpot property set to travel into
HubSpot. :func:`load_mapping` raises :class:`MappingError` when any of them is an error.

A loaded :class:`Mapping` turns one side's raw values into a :class:`MappedRecord`: per field
the canonical value (what the planner compares), the native value for the other side (what the
engine writes) and the reasons of values that would not convert. Fields are keyed by their
HubSpot property name everywhere (plan, ledger, records).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from connector.errors import ConfigError
from connector.plan import (
    ConflictRule,
    FieldDirection,
    FieldRule,
    Side,
    SideRecord,
    may_travel,
    other,
)
from connector.transforms import (
    TRANSFORM_NAMES,
    Chain,
    DateTransform,
    InvalidValue,
    SpecError,
    ValueMap,
    build_chain,
    normalise_email,
    text_of,
)

FieldType = Literal["text", "number", "date", "datetime", "boolean", "enumeration", "phone"]
Severity = Literal["error", "warning"]

#: HubSpot properties that HubSpot computes: they can only flow to Brevo.
READ_ONLY_HUBSPOT: frozenset[str] = frozenset(
    {
        "hs_total_deal_value",
        "num_associated_deals",
        "hs_object_id",
        "createdate",
        "lastmodifieddate",
        "hs_lastmodifieddate",
    }
)
KNOWN_OBJECTS = ("contacts", "companies", "deals", "tickets")
#: Objects synced with Brevo's CRM (companies, deals), whose attributes have lower-case
#: internal names (``name``, ``deal_stage``…), unlike contact attributes.
CRM_OBJECTS = frozenset({"companies", "deals"})
#: Brevo attributes the connector writes itself.
RESERVED_BREVO = frozenset({"EXT_ID"})

#: which transforms fit which declared type
FITS: dict[str, frozenset[str]] = {
    "text": frozenset({"trim", "lower", "email", "value_map"}),
    "enumeration": frozenset({"trim", "lower", "value_map"}),
    "phone": frozenset({"trim", "phone_e164"}),
    "number": frozenset({"number", "value_map"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"date"}),
    "boolean": frozenset({"boolean", "value_map"}),
}
#: the transform a typed field needs, or its value travels as text
TYPED_NEEDS: dict[str, str] = {
    "number": "number",
    "date": "date",
    "datetime": "date",
    "boolean": "boolean",
}

_BREVO_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_HUBSPOT_NAME = re.compile(r"[a-z0-9_]+")


# --- problems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a mapping file, with where it is."""

    file: str
    line: int | None
    field: str | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        name = f"{self.field}: " if self.field else ""
        return f"{where}: {self.severity}: {name}{self.message}"


class MappingError(ConfigError):
    """A mapping file has errors; ``problems`` lists them all (warnings included)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        super().__init__("\n".join(str(p) for p in errors or self.problems))


# --- the file's models ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformStep(_Strict):
    """One step of a field's transform: its name and parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Identity(_Strict):
    """The fields that identify a record on both sides (email for contacts)."""

    hubspot: str
    brevo: str


class FieldMapping(_Strict):
    """One mapped field, as written in the file."""

    hubspot: str = Field(min_length=1)
    brevo: str = Field(min_length=1)
    direction: FieldDirection = "both"
    conflict: ConflictRule = "latest_wins"
    type: FieldType | None = None
    transform: tuple[TransformStep, ...] = ()
    description: str | None = None

    @field_validator("transform", mode="before")
    @classmethod
    def _steps(cls, raw: Any) -> tuple[TransformStep, ...]:
        return tuple(parse_steps(raw))

    def rule(self) -> FieldRule:
        """The planner's view of this field."""
        return FieldRule(direction=self.direction, conflict=self.conflict)


class OptOutRules(_Strict):
    """``optout:`` — what happens to a Brevo opt-out (unsubscribe, hard bounce, spam complaint).

    The opt-out itself always reaches HubSpot (``sync.optout.*`` properties) and is never
    synced back over; ``resubscribe`` says whether a resubscription in Brevo (the contact no
    longer blocklisted) clears the HubSpot mark too. Off by default: a resubscription must be
    the person's own choice, which only the marketer can vouch for.
    """

    resubscribe: bool = False


class MappingFile(_Strict):
    """A whole mapping file."""

    object: str = Field(min_length=1)
    description: str | None = None
    identity: Identity | None = None
    optout: OptOutRules = OptOutRules()
    fields: list[FieldMapping] = Field(min_length=1)


class _Header(_Strict):
    """The top level of a file, with the field entries left raw (each is checked alone)."""

    object: str = Field(min_length=1)
    description: str | None = None
    identity: Identity | None = None
    optout: OptOutRules = OptOutRules()
    fields: list[Any] = Field(min_length=1)


def parse_steps(raw: Any) -> list[TransformStep]:
    """The steps of a ``transform:`` value.

    Accepted shapes: ``trim``; ``{date: {hubspot_type: datetime}}``; ``{phone_e164: NO}``;
    ``{value_map: {lead: 2, customer: 6}}``; or a list of these.
    """
    if raw is None:
        return []
    items = raw if isinstance(raw, list | tuple) else [raw]
    return [_parse_step(item) for item in items]


def _parse_step(item: Any) -> TransformStep:
    if isinstance(item, TransformStep):
        return item
    if isinstance(item, str):
        return TransformStep(name=_known_transform(item))
    if isinstance(item, dict) and len(item) == 1:
        ((name, params),) = item.items()
        name = _known_transform(str(name))
        return TransformStep(name=name, params=_step_params(name, params))
    raise ValueError(
        f"a transform step is a name (trim) or one 'name: parameters' pair, not {item!r}"
    )


def _known_transform(name: str) -> str:
    if name in TRANSFORM_NAMES:
        return name
    close = difflib.get_close_matches(name, sorted(TRANSFORM_NAMES), n=1)
    hint = (
        f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(TRANSFORM_NAMES))}"
    )
    raise ValueError(f"unknown transform '{name}' — {hint}")


def _step_params(name: str, params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, bool) and name == "phone_e164":
        raise ValueError('quote the region code: phone_e164: "NO" (YAML reads a bare NO as false)')
    if isinstance(params, str) and name == "phone_e164":
        return {"region": params}
    if isinstance(params, str) and name == "date":
        return {"hubspot_type": params}
    if isinstance(params, dict):
        if name == "value_map":
            return dict(params)
        return {str(k): v for k, v in params.items()}
    raise ValueError(f"the parameters of transform '{name}' must be a mapping, not {params!r}")


# --- the loaded mapping --------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledField:
    """A checked field with its built transform."""

    spec: FieldMapping
    transform: Chain
    line: int | None = None

    @property
    def key(self) -> str:
        """The field's key in plans and the ledger: its HubSpot property name."""
        return self.spec.hubspot

    @property
    def hubspot(self) -> str:
        """The HubSpot property name."""
        return self.spec.hubspot

    @property
    def brevo(self) -> str:
        """The Brevo attribute name (``email`` for the contact's own address)."""
        return self.spec.brevo

    def name_on(self, side: Side) -> str:
        """The field's name on one side."""
        return self.spec.hubspot if side == "hubspot" else self.spec.brevo

    def flows_to(self, target: Side) -> bool:
        """Whether this field's direction lets values travel to ``target``."""
        return may_travel(target, self.spec.rule(), "bidirectional")


@dataclass(frozen=True)
class MappedRecord:
    """One side's record run through a mapping.

    ``values``: canonical value per field key (for the planner). ``native``: the value to
    write to the other side per field key (only for fields that may travel there).
    ``invalid``: per field key, why a value would not convert. ``targets``: the other side's
    name per field key. ``identity``: the normalised email (or None).
    """

    side: Side
    values: dict[str, str | None]
    native: dict[str, Any]
    invalid: dict[str, str]
    targets: dict[str, str]
    identity: str | None = None

    def payload(self, fields: Iterable[str]) -> dict[str, Any]:
        """The other side's names and native values for the given field keys."""
        return {self.targets[f]: self.native[f] for f in fields if f in self.native}

    def side_record(self, record_id: str, modified_at: datetime) -> SideRecord:
        """The planner's input for this side."""
        return SideRecord(record_id, dict(self.values), modified_at, dict(self.invalid))


@dataclass(frozen=True)
class BrevoAttributeSpec:
    """What a Brevo attribute should look like, for creating missing ones."""

    name: str
    type: Literal["text", "float", "date", "boolean", "category"]
    enumeration: tuple[tuple[int, str], ...] = ()


@dataclass
class Mapping:
    """A loaded, checked mapping for one object type."""

    spec: MappingFile
    fields: tuple[CompiledField, ...]
    source: str | None = None
    warnings: list[Problem] = field(default_factory=list)

    @property
    def object(self) -> str:
        """The HubSpot object type (contacts, companies, …)."""
        return self.spec.object

    @property
    def identity(self) -> Identity | None:
        """The identity fields, if the object has one."""
        return self.spec.identity

    @property
    def resubscribe(self) -> bool:
        """Whether a Brevo resubscription clears the HubSpot opt-out (``optout.resubscribe``)."""
        return self.spec.optout.resubscribe

    @property
    def identity_field(self) -> str | None:
        """The key of the mapped field that carries the identity, if it is mapped."""
        ident = self.spec.identity
        if ident is None:
            return None
        return next((f.key for f in self.fields if f.hubspot == ident.hubspot), None)

    def field_by_key(self, key: str) -> CompiledField:
        """One field by its key (HubSpot property name)."""
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(key)

    def rules(self) -> dict[str, FieldRule]:
        """The planner's rules, by field key."""
        return {f.key: f.spec.rule() for f in self.fields}

    def hubspot_properties(self) -> list[str]:
        """The HubSpot properties to request."""
        names = [f.hubspot for f in self.fields]
        ident = self.spec.identity
        if ident is not None and ident.hubspot not in names:
            names.append(ident.hubspot)
        return names

    def brevo_attributes(self) -> list[str]:
        """The Brevo attributes mapped (the built-in lower-case ``email`` is not one)."""
        return [f.brevo for f in self.fields if _BREVO_NAME.fullmatch(f.brevo)]

    def brevo_attribute_specs(self) -> list[BrevoAttributeSpec]:
        """Each mapped Brevo attribute with the type its transform implies."""
        return [_attribute_spec(f) for f in self.fields if _BREVO_NAME.fullmatch(f.brevo)]

    def to_brevo(self, hubspot_properties: AbcMapping[str, str | None]) -> MappedRecord:
        """Map a HubSpot record's properties (canonical values and Brevo natives)."""
        return self._map("hubspot", hubspot_properties.get)

    def to_hubspot(self, brevo_attributes: AbcMapping[str, Any]) -> MappedRecord:
        """Map a Brevo contact's attributes (pass its top-level ``email`` in them too)."""
        return self._map("brevo", lambda name: brevo_value(brevo_attributes, name))

    def _compiled(self, side: Side) -> _SidePlan:
        """What :meth:`_map` needs per field for one side, worked out once per field list."""
        cache = self.__dict__.get("_side_plans")
        if cache is None or cache[0] is not self.fields:
            cache = (self.fields, {s: _SidePlan.of(self, s) for s in ("hubspot", "brevo")})
            self.__dict__["_side_plans"] = cache
        return cache[1][side]

    def _map(self, side: Side, raw_of: Callable[[str], Any]) -> MappedRecord:
        """Map one side's raw values, read by name with ``raw_of``."""
        plan = self._compiled(side)
        values: dict[str, str | None] = {}
        native: dict[str, Any] = {}
        invalid: dict[str, str] = {}
        from_hubspot = side == "hubspot"
        for key, name, transform, flows in plan.fields:
            raw = raw_of(name)
            try:
                if from_hubspot:
                    # a chain's HubSpot canonical form is the canonical form of its Brevo
                    # value: convert once, use it for both
                    converted = transform.to_brevo(raw)
                    values[key] = transform.canonical_brevo(converted)
                    if flows:
                        native[key] = converted
                else:
                    values[key] = transform.canonical_brevo(raw)
                    if flows:
                        native[key] = transform.to_hubspot(raw)
            except InvalidValue as e:
                values.pop(key, None)
                native.pop(key, None)
                invalid[key] = e.reason
        email = None
        if plan.identity is not None:
            email = normalise_email(text_of(raw_of(plan.identity)))
        return MappedRecord(side, values, native, invalid, dict(plan.targets), email)


@dataclass(frozen=True)
class _SidePlan:
    """One side's mapping, precomputed: per field its key, name on that side, transform and
    whether its values may travel to the other side; the other side's names; the identity."""

    fields: tuple[tuple[str, str, Chain, bool], ...]
    targets: dict[str, str]
    identity: str | None

    @staticmethod
    def of(mapping: Mapping, side: Side) -> _SidePlan:
        target = other(side)
        ident = mapping.spec.identity
        return _SidePlan(
            tuple(
                (f.key, f.name_on(side), f.transform, f.flows_to(target)) for f in mapping.fields
            ),
            {f.key: f.name_on(target) for f in mapping.fields},
            None if ident is None else ident.hubspot if side == "hubspot" else ident.brevo,
        )


def brevo_value(attributes: AbcMapping[str, Any], name: str) -> Any:
    """A Brevo value by attribute name (exact, then upper case; ``email`` also as EMAIL)."""
    if name in attributes:
        return attributes[name]
    if name.upper() in attributes:
        return attributes[name.upper()]
    if name.lower() == "email":
        return attributes.get("email")
    return None


def _attribute_spec(f: CompiledField) -> BrevoAttributeSpec:
    typed = f.transform.typed
    if isinstance(typed, ValueMap):
        values = list(typed.forward.items())
        if all(isinstance(v, int) and not isinstance(v, bool) for _, v in values):
            enum = tuple(sorted((int(v), k) for k, v in values))
            return BrevoAttributeSpec(f.brevo, "category", enum)
        return BrevoAttributeSpec(f.brevo, "text")
    kinds: dict[str, Literal["float", "date", "boolean"]] = {
        "number": "float",
        "date": "date",
        "boolean": "boolean",
    }
    return BrevoAttributeSpec(f.brevo, kinds.get(typed.name, "text"))


# --- loading and checking ------------------------------------------------------------------


def load_mapping(
    path: str | Path, *, default_region: str = "US", read_only: Collection[str] | None = None
) -> Mapping:
    """Load and check one mapping file; raise :class:`MappingError` if it has errors."""
    mapping, problems = check_mapping_text(
        _read(path), str(path), default_region=default_region, read_only=read_only
    )
    if mapping is None or any(p.severity == "error" for p in problems):
        raise MappingError(problems)
    return mapping


def load_mappings(
    directory: str | Path,
    *,
    default_region: str = "US",
    read_only: Collection[str] | None = None,
) -> dict[str, Mapping]:
    """Load every ``*.yaml`` / ``*.yml`` file of a directory, by object type."""
    mappings, problems = _check_directory(directory, default_region, read_only)
    if any(p.severity == "error" for p in problems):
        raise MappingError(problems)
    return mappings


def check_mapping_file(
    path: str | Path, *, default_region: str = "US", read_only: Collection[str] | None = None
) -> list[Problem]:
    """Every problem in one mapping file (errors and warnings), for ``mappings check``."""
    try:
        text = _read(path)
    except MappingError as e:
        return e.problems
    _, problems = check_mapping_text(
        text, str(path), default_region=default_region, read_only=read_only
    )
    return problems


def check_mappings(
    directory: str | Path,
    *,
    default_region: str = "US",
    read_only: Collection[str] | None = None,
) -> list[Problem]:
    """Every problem in every mapping file of a directory."""
    return _check_directory(directory, default_region, read_only)[1]


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise MappingError([Problem(str(path), None, None, f"cannot read: {e.strerror}")]) from None


def _check_directory(
    directory: str | Path, default_region: str, read_only: Collection[str] | None
) -> tuple[dict[str, Mapping], list[Problem]]:
    folder = Path(directory)
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        return {}, [Problem(str(folder), None, None, "no mapping files (*.yaml) here")]
    mappings: dict[str, Mapping] = {}
    problems: list[Problem] = []
    for path in files:
        try:
            text = _read(path)
        except MappingError as e:
            problems += e.problems
            continue
        mapping, found = check_mapping_text(
            text, str(path), default_region=default_region, read_only=read_only
        )
        problems += found
        if mapping is None:
            continue
        if mapping.object in mappings:
            first = mappings[mapping.object].source
            message = f"a second mapping for object '{mapping.object}' (first in {first})"
            problems.append(Problem(str(path), None, "object", message))
            continue
        mappings[mapping.object] = mapping
    return mappings, problems


def check_mapping_text(
    text: str,
    file: str = "<mapping>",
    *,
    default_region: str = "US",
    read_only: Collection[str] | None = None,
) -> tuple[Mapping | None, list[Problem]]:
    """Check a mapping file's text: the mapping (None if it has errors) and every problem."""
    checker = _Checker(file)
    data = checker.parse(text)
    if data is None:
        return None, checker.problems
    header = checker.header(data)
    entries = checker.entries(data)
    locked = READ_ONLY_HUBSPOT | frozenset(read_only or ())
    raw_entries = data.get("fields")
    raw_list = raw_entries if isinstance(raw_entries, list) else []
    identity = _identity_of(data)
    checker.lower_case_brevo = data.get("object") in CRM_OBJECTS
    compiled = checker.fields(raw_list, entries, identity, default_region, locked)
    checker.problems.sort(key=lambda p: p.line or 0)
    if header is None or checker.has_errors():
        return None, checker.problems
    spec = MappingFile(
        object=header.object,
        description=header.description,
        identity=_identity_of(data),
        optout=header.optout,
        fields=[c.spec for c in compiled],
    )
    warnings = list(checker.problems)
    return Mapping(spec, tuple(compiled), source=file, warnings=warnings), checker.problems


_OPTIONS: dict[str, tuple[str, ...]] = {
    "direction": get_args(FieldDirection),
    "conflict": get_args(ConflictRule),
    "type": get_args(FieldType),
}


class _Checker:
    """Collects problems for one file, with line numbers from the composed YAML tree."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.root: yaml.Node | None = None
        self.problems: list[Problem] = []
        #: a companies/deals file: Brevo CRM attribute names are lower case
        self.lower_case_brevo = False

    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def add(
        self,
        path: tuple[str | int, ...],
        message: str,
        *,
        name: str | None = None,
        severity: Severity = "error",
    ) -> None:
        line = line_of(self.root, path)
        self.problems.append(Problem(self.file, line, name, message, severity))

    # parsing

    def parse(self, text: str) -> dict[str, Any] | None:
        try:
            self.root = yaml.compose(text)
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(e, "problem", None) or str(e)
            message = f"not valid YAML ({problem}): check indentation and quoting"
            self.problems.append(Problem(self.file, line, None, message))
            return None
        if not isinstance(data, dict):
            message = "the top level must be a mapping with object:, identity: and fields:"
            self.problems.append(Problem(self.file, 1, None, message))
            return None
        return data

    def header(self, data: dict[str, Any]) -> _Header | None:
        try:
            header = _Header.model_validate(data)
        except PydanticValidationError as e:
            self._pydantic(e, (), None, _Header)
            return None
        self._object_name(header.object)
        return header

    def entries(self, data: dict[str, Any]) -> list[tuple[int, FieldMapping]]:
        raw = data.get("fields")
        if not isinstance(raw, list):
            return []
        valid: list[tuple[int, FieldMapping]] = []
        for index, entry in enumerate(raw):
            name = _entry_name(entry, index)
            if not isinstance(entry, dict):
                self.add(
                    ("fields", index), "each field is a mapping with hubspot: and brevo:", name=name
                )
                continue
            try:
                valid.append((index, FieldMapping.model_validate(entry)))
            except PydanticValidationError as e:
                self._pydantic(e, ("fields", index), name, FieldMapping)
                rest = _without_unknown_keys(entry, e)
                if rest is not None:
                    valid.append((index, rest))
        return valid

    def _pydantic(
        self,
        error: PydanticValidationError,
        prefix: tuple[str | int, ...],
        name: str | None,
        model: type[BaseModel],
    ) -> None:
        for err in error.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            self.add((*prefix, *loc), _describe(err, loc, model), name=name)

    def _object_name(self, name: str) -> None:
        if name in KNOWN_OBJECTS:
            return
        close = difflib.get_close_matches(name, KNOWN_OBJECTS, n=1)
        if close:
            message = f"'{name}' is not a standard object type — did you mean '{close[0]}'?"
            self.add(("object",), message, name="object", severity="warning")

    # field checks

    def fields(
        self,
        raw_entries: list[Any],
        entries: list[tuple[int, FieldMapping]],
        identity: Identity | None,
        default_region: str,
        locked: frozenset[str],
    ) -> list[CompiledField]:
        self._all_names(raw_entries, identity)
        compiled: list[CompiledField] = []
        for index, fm in entries:
            at: tuple[str | int, ...] = ("fields", index)
            self._read_only(at, fm, locked)
            self._one_way_conflict(at, fm)
            chain = self._transform(at, fm, default_region)
            if chain is not None:
                compiled.append(CompiledField(fm, chain, line_of(self.root, at)))
        if identity is not None:
            self._identity(identity, entries)
        return compiled

    def _all_names(self, raw_entries: list[Any], identity: Identity | None) -> None:
        """Name checks on every entry that has names, valid or not."""
        seen_hubspot: dict[str, int | None] = {}
        seen_brevo: dict[str, int | None] = {}
        for index, entry in enumerate(raw_entries):
            if not isinstance(entry, dict):
                continue
            at: tuple[str | int, ...] = ("fields", index)
            name = _entry_name(entry, index)
            hubspot, brevo = entry.get("hubspot"), entry.get("brevo")
            if isinstance(hubspot, str) and hubspot:
                self._hubspot_name(at, hubspot, name)
                self._duplicate(at, "hubspot", hubspot, seen_hubspot, name)
            if isinstance(brevo, str) and brevo:
                self._brevo_name(at, brevo, identity, name)
                self._duplicate(at, "brevo", brevo.upper(), seen_brevo, name)

    def _brevo_name(
        self, at: tuple[str | int, ...], brevo: str, identity: Identity | None, name: str
    ) -> None:
        if brevo.upper() in RESERVED_BREVO:
            message = f"{brevo} is reserved: the connector writes the HubSpot id there"
            self.add((*at, "brevo"), message, name=name)
        elif self.lower_case_brevo:
            return  # CRM attributes: Brevo's internal names, lower case
        elif not (identity and brevo == identity.brevo) and not _BREVO_NAME.fullmatch(brevo):
            fix = re.sub(r"[^A-Z0-9_]", "_", brevo.upper())
            message = f"Brevo attribute names are UPPER_CASE: write {fix}"
            self.add((*at, "brevo"), message, name=name)

    def _hubspot_name(self, at: tuple[str | int, ...], hubspot: str, name: str) -> None:
        if not _HUBSPOT_NAME.fullmatch(hubspot):
            message = (
                f"'{hubspot}' is not a HubSpot internal name (lower case, digits, _): "
                "is it the property's label?"
            )
            self.add((*at, "hubspot"), message, name=name, severity="warning")

    def _duplicate(
        self,
        at: tuple[str | int, ...],
        key: str,
        value: str,
        seen: dict[str, int | None],
        name: str,
    ) -> None:
        line = line_of(self.root, (*at, key))
        if value in seen:
            system = "HubSpot property" if key == "hubspot" else "Brevo attribute"
            first = seen[value]
            message = f"{system} '{value}' is mapped twice (first on line {first}): keep one"
            self.add((*at, key), message, name=name)
            return
        seen[value] = line

    def _read_only(
        self, at: tuple[str | int, ...], fm: FieldMapping, locked: frozenset[str]
    ) -> None:
        if fm.hubspot in locked and fm.direction != "hubspot_to_brevo":
            message = f"{fm.hubspot} is read-only in HubSpot: set direction: hubspot_to_brevo"
            self.add((*at, "direction"), message, name=fm.hubspot)

    def _one_way_conflict(self, at: tuple[str | int, ...], fm: FieldMapping) -> None:
        if fm.direction == "both" or "conflict" not in fm.model_fields_set:
            return
        source = fm.direction.split("_to_")[0]
        if fm.conflict != f"{source}_wins":
            message = (
                f"conflict: {fm.conflict} is ignored on a {fm.direction} field, where "
                f"{source} (the source) always wins: remove it or write {source}_wins"
            )
            self.add((*at, "conflict"), message, name=fm.hubspot, severity="warning")

    def _transform(
        self, at: tuple[str | int, ...], fm: FieldMapping, default_region: str
    ) -> Chain | None:
        where = (*at, "transform")
        name = fm.hubspot
        hubspot_type = "datetime" if fm.type == "datetime" else "date"
        try:
            chain = build_chain(
                ((s.name, s.params) for s in fm.transform),
                region=default_region,
                hubspot_type=hubspot_type,
            )
        except SpecError as e:
            self.add(where, str(e), name=name)
            return None
        ok = self._fits(where, fm, chain)
        ok = self._value_map(where, fm, chain) and ok
        return chain if ok else None

    def _fits(self, where: tuple[str | int, ...], fm: FieldMapping, chain: Chain) -> bool:
        if fm.type is None:
            return True
        ok = True
        for step in fm.transform:
            if step.name not in FITS[fm.type]:
                fits = ", ".join(sorted(FITS[fm.type]))
                message = f"transform '{step.name}' does not fit type {fm.type} (fits: {fits})"
                self.add(where, message, name=fm.hubspot)
                ok = False
        typed = chain.typed
        if isinstance(typed, DateTransform) and fm.type in ("date", "datetime"):
            ok = self._date_type(where, fm, typed) and ok
        needed = TYPED_NEEDS.get(fm.type)
        if ok and needed and not any(s.name in (needed, "value_map") for s in fm.transform):
            message = (
                f"type {fm.type} without transform: {needed} — the value travels as text, "
                f"which Brevo ignores in a {fm.type} attribute"
            )
            self.add((*where[:-1], "type"), message, name=fm.hubspot, severity="warning")
        return ok

    def _date_type(
        self, where: tuple[str | int, ...], fm: FieldMapping, typed: DateTransform
    ) -> bool:
        if typed.hubspot_type == fm.type:
            return True
        message = f"hubspot_type {typed.hubspot_type} contradicts type {fm.type}"
        self.add(where, message, name=fm.hubspot)
        return False

    def _value_map(self, where: tuple[str | int, ...], fm: FieldMapping, chain: Chain) -> bool:
        table = chain.typed
        if not isinstance(table, ValueMap):
            return True
        ok = True
        if fm.direction != "hubspot_to_brevo" and not table.one_to_one:
            clashes = "; ".join(
                f"{value} ← {', '.join(keys)}" for value, keys in table.ambiguous().items()
            )
            message = (
                f"the value map is not one-to-one ({clashes}), so Brevo values cannot go back "
                "to HubSpot: make it one-to-one or set direction: hubspot_to_brevo"
            )
            self.add(where, message, name=fm.hubspot)
            ok = False
        for key in table.forward:
            try:
                seen = chain.to_hubspot(table.forward[key])
            except InvalidValue:
                seen = None
            if table.one_to_one and seen != key:
                message = (
                    f"value map key '{key}' is changed by the steps before it "
                    f"(to {seen!r}): write it as they leave it"
                )
                self.add(where, message, name=fm.hubspot)
                ok = False
        return ok

    def _identity(self, identity: Identity, entries: list[tuple[int, FieldMapping]]) -> None:
        match = [(i, fm) for i, fm in entries if fm.hubspot == identity.hubspot]
        if not match:
            message = (
                f"identity property '{identity.hubspot}' is not among the fields: a change of "
                "it will not travel to the other side"
            )
            self.add(("identity",), message, name="identity", severity="warning")
            return
        index, fm = match[0]
        if fm.brevo != identity.brevo:
            message = f"the identity maps to {identity.brevo}, this field to {fm.brevo}"
            self.add(("fields", index, "brevo"), message, name=fm.hubspot)
        if identity.hubspot == "email" and not any(s.name == "email" for s in fm.transform):
            message = "use transform: email so that case and spaces do not count as a change"
            self.add(("fields", index), message, name=fm.hubspot, severity="warning")


def _without_unknown_keys(
    entry: dict[str, Any], error: PydanticValidationError
) -> FieldMapping | None:
    """The entry without its unknown keys, if that is its only fault (to check the rest)."""
    errors = error.errors()
    if any(err["type"] != "extra_forbidden" for err in errors):
        return None
    unknown = {err["loc"][0] for err in errors if err["loc"]}
    try:
        return FieldMapping.model_validate({k: v for k, v in entry.items() if k not in unknown})
    except PydanticValidationError:
        return None


def _identity_of(data: AbcMapping[str, Any]) -> Identity | None:
    """A file's identity (email by default for contacts), even if the rest is broken."""
    raw = data.get("identity")
    if raw is None:
        return (
            Identity(hubspot="email", brevo="email") if data.get("object") == "contacts" else None
        )
    try:
        return Identity.model_validate(raw)
    except PydanticValidationError:
        return None


def _entry_name(entry: Any, index: int) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("hubspot"), str):
        return str(entry["hubspot"])
    return f"fields[{index}]"


def _describe(err: Any, loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """A pydantic error in words, with a did-you-mean for unknown keys and bad values."""
    key = str(loc[-1]) if loc else "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = list(model.model_fields)
        if len(loc) > 1 and loc[0] == "identity":
            known = list(Identity.model_fields)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
        return f"unknown key '{key}' — {hint}"
    if kind == "missing":
        return f"required key '{key}' is missing"
    if kind == "too_short":
        return f"{key}: add at least one entry"
    if kind == "literal_error" and key in _OPTIONS:
        options = _OPTIONS[key]
        got = str(err.get("input"))
        close = difflib.get_close_matches(got, options, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        return f"{key}: '{got}' is not one of {', '.join(options)}{hint}"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{key}: {message}"


def line_of(root: yaml.Node | None, path: tuple[str | int, ...]) -> int | None:
    """The 1-based line of a key path in a composed YAML document, or its closest parent's."""
    node = root
    line: int | None = None if root is None else root.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
