"""Live mapping checks: a loaded mapping against the HubSpot properties and Brevo attributes.

:func:`live_check` reads the mapped object's HubSpot properties (one call) and Brevo's contact
attributes (one call) and reports, per field and with the mapping file's line: a property or
attribute that does not exist, a type that does not fit the field's transform or declared type,
value-map entries that are not options of an enumeration / category, and HubSpot properties the
live schema marks read-only on a field that would write to them. :func:`create_missing` creates
what can be created (custom HubSpot properties, Brevo attributes) with the right types.
:func:`check_directory` runs the static checks of every mapping file and then, unless they
failed or no clients are given, the live checks — ``connector mappings check``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from connector.brevo.client import BrevoClient
from connector.brevo.crm import BrevoCrm
from connector.brevo.models import BrevoAttribute
from connector.errors import ApiError, ConnectorError, NotFoundError, ValidationError
from connector.hubspot.client import HubSpotClient
from connector.hubspot.crm import HubSpotCrm
from connector.hubspot.models import PropertyDef
from connector.mapping import (
    CRM_OBJECTS,
    READ_ONLY_HUBSPOT,
    BrevoAttributeSpec,
    CompiledField,
    Mapping,
    Problem,
    Severity,
    check_mapping_file,
    check_mappings,
    line_of,
    load_mappings,
)
from connector.mapping_crm import (
    CrmSide,
    check_crm_fields,
    check_pipelines,
    is_pipeline_field,
    is_stage_field,
)
from connector.plan import Side
from connector.transforms import BooleanTransform, DateTransform, NumberTransform, ValueMap

#: HubSpot property types each kind of field fits (see :func:`field_kind`)
HUBSPOT_FITS: dict[str, frozenset[str]] = {
    "number": frozenset({"number"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"datetime"}),
    "boolean": frozenset({"bool"}),
    "value_map": frozenset({"enumeration", "string", "bool", "number", "phone_number"}),
    "enumeration": frozenset({"enumeration", "string"}),
    "phone": frozenset({"string", "phone_number"}),
    "text": frozenset({"string", "phone_number", "enumeration"}),
}
#: how to write a field for each HubSpot property type
HUBSPOT_FIX: dict[str, str] = {
    "number": "write type: number and transform: number",
    "date": "write type: date and transform: date",
    "datetime": "write type: datetime and transform: {date: datetime}",
    "bool": "write type: boolean and transform: boolean",
    "enumeration": "write type: enumeration (and a value_map if Brevo's values differ)",
    "string": "write type: text and drop the typed transform",
    "phone_number": "write type: phone and transform: phone_e164",
}
#: how to write a field for each Brevo attribute type
BREVO_FIX: dict[str, str] = {
    "float": "add transform: number (type: number)",
    "date": "add transform: date (type: date)",
    "boolean": "add transform: boolean (type: boolean)",
    "category": "add a value_map from the HubSpot values to the category's numbers",
    "text": "drop the typed transform so that values travel as text",
}
#: the property group custom properties go to, per object type
PROPERTY_GROUP = {
    "contacts": "contactinformation",
    "companies": "companyinformation",
    "deals": "dealinformation",
    "tickets": "ticketinformation",
}
_WRITABLE_BREVO = frozenset({"normal", "category", "transactional"})


@dataclass(frozen=True)
class Missing(Problem):
    """A missing HubSpot property or Brevo attribute that ``--create-missing`` can create.

    ``labels`` are the HubSpot option labels by value, when known (for a Brevo category).
    """

    system: Side = "hubspot"
    name: str = ""
    labels: tuple[tuple[str, str], ...] = ()


class CreateMissingError(ConnectorError):
    """Some creations failed; ``created`` lists those that went through."""

    def __init__(self, created: Sequence[str], failures: Sequence[str]) -> None:
        self.created = list(created)
        self.failures = list(failures)
        super().__init__("could not create: " + "; ".join(failures))


@dataclass
class Report:
    """What ``mappings check`` found: every problem, what was created, and which mapping
    files were checked against the accounts (``live``; empty when the live checks did not run).
    """

    problems: list[Problem]
    created: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        """How many problems are errors."""
        return sum(1 for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> int:
        """How many problems are warnings."""
        return sum(1 for p in self.problems if p.severity == "warning")


# --- what a field is ------------------------------------------------------------------------


def field_kind(f: CompiledField) -> str:
    """The field's kind from its typed transform, else its declared type, else ``text``.

    One of number, date, datetime, boolean, value_map, enumeration, phone, text.
    """
    typed = f.transform.typed
    if isinstance(typed, ValueMap):
        return "value_map"
    if isinstance(typed, DateTransform):
        return typed.hubspot_type
    if isinstance(typed, NumberTransform):
        return "number"
    if isinstance(typed, BooleanTransform):
        return "boolean"
    return f.spec.type or "text"


def _brevo_sends(f: CompiledField) -> tuple[str, frozenset[str]]:
    """What the field writes to Brevo, in words, and the Brevo attribute types that take it."""
    typed = f.transform.typed
    if isinstance(typed, ValueMap):
        values = list(typed.forward.values())
        if all(isinstance(v, bool) for v in values):
            return "true/false (value_map)", frozenset({"boolean", "text"})
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "the value map's numbers", frozenset({"category", "float", "text"})
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return "numbers (value_map)", frozenset({"float", "text"})
        return "text (value_map)", frozenset({"text"})
    if isinstance(typed, NumberTransform):
        return "numbers (transform: number)", frozenset({"float"})
    if isinstance(typed, DateTransform):
        return "dates (transform: date)", frozenset({"date"})
    if isinstance(typed, BooleanTransform):
        return "true/false (transform: boolean)", frozenset({"boolean"})
    return "text", frozenset({"text"})


def brevo_type(attribute: BrevoAttribute) -> str:
    """An attribute's type as the mapping sees it (category attributes list as ``text``)."""
    if attribute.category == "category" or attribute.enumeration:
        return "category"
    return attribute.type or "text"


def hubspot_property_spec(f: CompiledField, object_type: str) -> dict[str, Any] | None:
    """The ``create_property`` body for a field's missing HubSpot property (None: cannot)."""
    kind = field_kind(f)
    types: dict[str, tuple[str, str]] = {
        "number": ("number", "number"),
        "date": ("date", "date"),
        "datetime": ("datetime", "date"),
        "boolean": ("bool", "booleancheckbox"),
        "value_map": ("enumeration", "select"),
        "phone": ("string", "phonenumber"),
        "text": ("string", "text"),
    }
    if kind not in types or not creatable_hubspot(f.hubspot):
        return None
    ptype, field_type = types[kind]
    spec: dict[str, Any] = {
        "name": f.hubspot,
        "label": f.hubspot.replace("_", " ").title(),
        "type": ptype,
        "fieldType": field_type,
        "groupName": PROPERTY_GROUP.get(object_type, "contactinformation"),
    }
    if f.spec.description:
        spec["description"] = f.spec.description
    typed = f.transform.typed
    if isinstance(typed, ValueMap):
        spec["options"] = [
            {"label": key, "value": key, "displayOrder": i} for i, key in enumerate(typed.forward)
        ]
    elif kind == "boolean":
        spec["options"] = [
            {"label": "Yes", "value": "true", "displayOrder": 0},
            {"label": "No", "value": "false", "displayOrder": 1},
        ]
    return spec


def creatable_hubspot(name: str) -> bool:
    """Whether a missing HubSpot property may be created as a custom one."""
    return (
        not name.startswith("hs_")
        and name not in READ_ONLY_HUBSPOT
        and name.replace("_", "").isalnum()
        and name == name.lower()
    )


# --- lines ----------------------------------------------------------------------------------


class _Lines:
    """Lines of a field's keys in the mapping file (the compiled fields know their entry line)."""

    def __init__(self, mapping: Mapping) -> None:
        self.root: yaml.Node | None = None
        self.index: dict[int, int] = {}
        try:
            self.root = yaml.compose(Path(mapping.source or "").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return
        if isinstance(self.root, yaml.MappingNode):
            for key, value in self.root.value:
                if key.value == "fields" and isinstance(value, yaml.SequenceNode):
                    for i, node in enumerate(value.value):
                        self.index[node.start_mark.line + 1] = i

    def of(self, f: CompiledField, key: str) -> int | None:
        """The line of ``key`` in the field's entry (or the entry's line)."""
        index = self.index.get(f.line or -1)
        if self.root is None or index is None:
            return f.line
        return line_of(self.root, ("fields", index, key))

    def top(self, key: str) -> int | None:
        """The line of a top-level key."""
        return line_of(self.root, (key,)) if self.root is not None else None


# --- the live check -------------------------------------------------------------------------


class _Check:
    """Collects the live problems of one mapping."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.file = mapping.source or "<mapping>"
        self.lines = _Lines(mapping)
        self.problems: list[Problem] = []
        self.specs = {s.name: s for s in mapping.brevo_attribute_specs()}

    def add(
        self,
        f: CompiledField,
        key: str,
        message: str,
        severity: Severity = "error",
    ) -> None:
        self.problems.append(Problem(self.file, self.lines.of(f, key), f.key, message, severity))

    # HubSpot

    def hubspot(
        self, f: CompiledField, props: dict[str, PropertyDef], *, values: bool = True
    ) -> None:
        prop = props.get(f.hubspot)
        obj = self.mapping.object
        if prop is None:
            self._missing_hubspot(f)
            return
        kind = field_kind(f)
        hs_type = prop.type
        if hs_type == "enumeration" and prop.field_type == "booleancheckbox" and kind == "boolean":
            hs_type = "bool"  # an older checkbox property: true/false options
        if hs_type not in HUBSPOT_FITS.get(kind, frozenset()):
            if kind == "text" and f.flows_to("brevo") and not f.flows_to("hubspot"):
                message = (
                    f"HubSpot property '{f.hubspot}' is {hs_type}: it reaches Brevo as text; "
                    f"{HUBSPOT_FIX.get(hs_type, 'declare its type')} to convert it"
                )
                self.add(f, "type", message, "warning")
            else:
                message = (
                    f"type mismatch: HubSpot property '{f.hubspot}' ({obj}) is {hs_type}, the "
                    f"mapping treats it as {_kind_words(kind)}: "
                    f"{HUBSPOT_FIX.get(hs_type, 'map it to a field of its type')}"
                )
                self.add(f, "type" if f.spec.type else "transform", message)
            return
        if kind == "text" and hs_type == "enumeration" and f.flows_to("hubspot"):
            message = (
                f"HubSpot property '{f.hubspot}' is an enumeration: values from Brevo must be one "
                f"of its options ({_options(prop)}); write type: enumeration, with a value_map "
                "if Brevo's values differ"
            )
            self.add(f, "type", message, "warning")
        if values:
            self._hubspot_values(f, prop, hs_type)

    def _missing_hubspot(self, f: CompiledField) -> None:
        obj = self.mapping.object
        spec = hubspot_property_spec(f, obj)
        if spec is None:
            hint = (
                "check its internal name in HubSpot (Settings → Properties)"
                if not creatable_hubspot(f.hubspot)
                else "create it in HubSpot as a dropdown with its options"
            )
            message = f"HubSpot property '{f.hubspot}' does not exist on {obj}: {hint}"
            self.add(f, "hubspot", message)
            return
        message = (
            f"HubSpot property '{f.hubspot}' does not exist on {obj}: create it as type "
            f"{spec['type']}, field type {spec['fieldType']}, or run with --create-missing"
        )
        line = self.lines.of(f, "hubspot")
        self.problems.append(
            Missing(self.file, line, f.key, message, "error", "hubspot", f.hubspot)
        )

    def _hubspot_values(self, f: CompiledField, prop: PropertyDef, hs_type: str) -> None:
        table = f.transform.typed
        if not isinstance(table, ValueMap):
            return
        if hs_type == "enumeration":
            options = [o.value for o in prop.options]
        elif hs_type == "bool":
            options = ["true", "false"]
        else:
            return
        unknown = [k for k in table.forward if k not in options]
        if unknown:
            message = (
                f"value map keys that are not options of HubSpot property '{f.hubspot}': "
                f"{', '.join(unknown)} (its options: {_options(prop) or ', '.join(options)})"
            )
            self.add(f, "transform", message)
        unmapped = [o for o in options if o not in table.forward]
        if unmapped and f.flows_to("brevo"):
            message = (
                f"HubSpot options missing from the value map (such values will not reach "
                f"Brevo): {', '.join(unmapped)}"
            )
            self.add(f, "transform", message, "warning")

    # Brevo

    def brevo(
        self,
        f: CompiledField,
        attributes: dict[str, BrevoAttribute],
        labels: tuple[tuple[str, str], ...],
    ) -> None:
        attr = attributes.get(f.brevo.upper())
        if attr is None:
            message = (
                f"Brevo attribute {f.brevo.upper()} does not exist: create it as "
                f"{self._wanted(f)}, or run with --create-missing"
            )
            line = self.lines.of(f, "brevo")
            self.problems.append(
                Missing(self.file, line, f.key, message, "error", "brevo", f.brevo.upper(), labels)
            )
            return
        if attr.category not in _WRITABLE_BREVO and f.flows_to("brevo"):
            message = (
                f"Brevo attribute {attr.name} is {attr.category} (Brevo computes it): "
                "set direction: brevo_to_hubspot"
            )
            self.add(f, "direction", message)
            return
        kind = brevo_type(attr)
        sends, fits = _brevo_sends(f)
        if kind not in fits:
            wanted = self._wanted(f)
            fix = BREVO_FIX.get(kind)
            mapping_fix = f", or {fix}" if fix else ""
            message = (
                f"type mismatch: Brevo attribute {attr.name} is {kind}, the mapping sends "
                f"{sends}: re-create it in Brevo as {wanted}{mapping_fix}"
            )
            self.add(f, "brevo", message)
            return
        table = f.transform.typed
        if kind == "category" and isinstance(table, ValueMap):
            allowed = set(attr.enumeration)
            unknown = sorted({v for v in table.forward.values() if v not in allowed}, key=str)
            if unknown:
                options = ", ".join(
                    f"{v} = {label}" for v, label in sorted(attr.enumeration.items())
                )
                message = (
                    f"value map values that are not options of Brevo category {attr.name}: "
                    f"{', '.join(str(v) for v in unknown)} (its options: {options})"
                )
                self.add(f, "transform", message)

    def _wanted(self, f: CompiledField) -> str:
        spec = self.specs[f.brevo]
        if spec.type == "category":
            options = ", ".join(f"{v} {key}" for v, key in spec.enumeration)
            return f"a category attribute ({options})"
        return f"a {spec.type} attribute"

    # read-only

    def read_only(self, props: Iterable[PropertyDef], default_region: str) -> None:
        """Re-run the static check with the live read-only set; keep what that adds."""
        live = {p.name for p in props if p.read_only or p.calculated}
        mapped = {f.hubspot for f in self.mapping.fields}
        if not (live & mapped) or self.mapping.source is None:
            return
        before = set(check_mapping_file(self.mapping.source, default_region=default_region))
        after = check_mapping_file(
            self.mapping.source, default_region=default_region, read_only=live
        )
        self.problems += [p for p in after if p not in before]


def _kind_words(kind: str) -> str:
    return {"value_map": "a value map", "boolean": "boolean (transform: boolean)"}.get(kind, kind)


def _options(prop: PropertyDef) -> str:
    shown = [o.value for o in prop.options if not o.hidden]
    text = ", ".join(shown[:12])
    return text + (", …" if len(shown) > 12 else "")


async def live_check(
    mapping: Mapping,
    hubspot: HubSpotClient,
    brevo: BrevoClient,
    *,
    default_region: str = "US",
) -> list[Problem]:
    """Every live problem of a loaded mapping (one HubSpot and one Brevo call)."""
    check = _Check(mapping)
    try:
        listed = await hubspot.list_properties(mapping.object)
    except (NotFoundError, ValidationError) as e:
        message = f"HubSpot has no object type '{mapping.object}' ({e.raw_message})"
        return [Problem(check.file, check.lines.top("object"), "object", message)]
    props = {p.name: p for p in listed if not p.archived}
    attributes: dict[str, BrevoAttribute] | None = None
    if mapping.object in CRM_OBJECTS:
        await _crm_check(check, props, hubspot, brevo)
    elif mapping.object == "contacts":
        attributes = {a.name.upper(): a for a in await brevo.list_attributes()}
    else:
        message = f"Brevo attributes are checked for contacts only, not {mapping.object}"
        check.problems.append(
            Problem(check.file, check.lines.top("object"), "object", message, "warning")
        )
    for f in mapping.fields:
        if mapping.object in CRM_OBJECTS:
            break  # checked by _crm_check
        check.hubspot(f, props)
        prop = props.get(f.hubspot)
        labels = tuple((o.value, o.label) for o in prop.options) if prop else ()
        if attributes is not None and f.brevo in check.specs:
            check.brevo(f, attributes, labels)
    ident = mapping.identity
    if ident is not None and ident.hubspot not in props:
        message = f"identity property '{ident.hubspot}' does not exist on {mapping.object}"
        check.problems.append(Problem(check.file, check.lines.top("identity"), "identity", message))
    check.read_only(listed, default_region)
    return sorted(check.problems, key=lambda p: p.line or 0)


async def _crm_check(
    check: _Check, props: dict[str, PropertyDef], hubspot: HubSpotClient, brevo: BrevoClient
) -> None:
    """A companies or deals mapping: HubSpot properties as for contacts (a pipeline's and a
    stage's value map are checked against the pipelines instead of the property's options),
    Brevo CRM attributes, and for deals both sides' pipelines (:mod:`connector.mapping_crm`).
    """
    mapping = check.mapping
    deals = mapping.object == "deals"
    for f in mapping.fields:
        check.hubspot(f, props, values=not (deals and (is_pipeline_field(f) or is_stage_field(f))))

    def add(f: CompiledField, key: str, message: str, severity: Severity) -> None:
        check.add(f, key, message, severity)

    crm = BrevoCrm(brevo)
    listed = await (crm.deal_attributes() if deals else crm.company_attributes())
    attributes = {a.internal_name: a for a in listed}
    check_crm_fields(mapping, attributes, add)
    if deals and any(is_pipeline_field(f) or is_stage_field(f) for f in mapping.fields):
        side = CrmSide(
            attributes,
            await HubSpotCrm(hubspot).pipelines("deals"),
            await crm.pipelines(),
        )
        check_pipelines(mapping, side, add)


async def create_missing(
    mapping: Mapping,
    problems: Iterable[Problem],
    hubspot: HubSpotClient,
    brevo: BrevoClient,
) -> list[str]:
    """Create the missing properties and attributes named in ``problems``; what was created.

    Raises :class:`CreateMissingError` (with the ones that were created) if any call fails.
    """
    file = mapping.source or "<mapping>"
    specs = {s.name: s for s in mapping.brevo_attribute_specs()}
    created: list[str] = []
    failures: list[str] = []
    for p in problems:
        if not isinstance(p, Missing) or p.file != file:
            continue
        f = next((f for f in mapping.fields if f.key == p.field), None)
        if f is None:
            continue
        try:
            if p.system == "brevo":
                created.append(await _create_attribute(brevo, specs[f.brevo], dict(p.labels)))
            else:
                created.append(await _create_property(hubspot, mapping.object, f))
        except ApiError as e:
            failures.append(f"{p.name}: {e}")
    if failures:
        raise CreateMissingError(created, failures)
    return created


async def _create_attribute(
    brevo: BrevoClient, spec: BrevoAttributeSpec, labels: dict[str, str]
) -> str:
    if spec.type == "category":
        enumeration = {v: labels.get(key, key) for v, key in spec.enumeration}
        await brevo.create_attribute(
            spec.name, "category", category="category", enumeration=enumeration
        )
        options = ", ".join(f"{v} = {label}" for v, label in enumeration.items())
        return f"Brevo attribute {spec.name} (category: {options})"
    await brevo.create_attribute(spec.name, spec.type)
    return f"Brevo attribute {spec.name} ({spec.type})"


async def _create_property(hubspot: HubSpotClient, object_type: str, f: CompiledField) -> str:
    spec = hubspot_property_spec(f, object_type)
    if spec is None:  # pragma: no cover - Missing is only made for creatable properties
        raise ValueError(f"cannot create {f.hubspot}")
    await hubspot.create_property(object_type, spec)
    return f"HubSpot property {object_type}.{f.hubspot} ({spec['type']}, {spec['fieldType']})"


# --- the whole command ----------------------------------------------------------------------


async def check_directory(
    directory: str | Path,
    *,
    default_region: str = "US",
    hubspot: HubSpotClient | None = None,
    brevo: BrevoClient | None = None,
    create: bool = False,
) -> Report:
    """``mappings check``: static checks, then (with clients, if those passed) live checks.

    With ``create``, missing properties and attributes are created and the live check runs
    again, so the report shows what is left.
    """
    static = check_mappings(directory, default_region=default_region)
    if hubspot is None or brevo is None or any(p.severity == "error" for p in static):
        return Report(static)
    mappings = load_mappings(directory, default_region=default_region)
    live = await _live(mappings.values(), hubspot, brevo, default_region)
    created: list[str] = []
    if create and any(isinstance(p, Missing) for p in live):
        for mapping in mappings.values():
            created += await create_missing(mapping, live, hubspot, brevo)
        live = await _live(mappings.values(), hubspot, brevo, default_region)
    problems = sorted([*static, *live], key=lambda p: (p.file, p.line or 0))
    return Report(problems, created, [m.source or m.object for m in mappings.values()])


async def _live(
    mappings: Collection[Mapping], hubspot: HubSpotClient, brevo: BrevoClient, region: str
) -> list[Problem]:
    found: list[Problem] = []
    for mapping in mappings:
        found += await live_check(mapping, hubspot, brevo, default_region=region)
    return found
