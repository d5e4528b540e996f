"""``connector mappings check`` for the roll-up files (``mappings/rollups/``).

Static problems come from :func:`~connector.objects.rollup_mapping.check_rollup_dir`. The live
check reads each standard object type's HubSpot properties (one call per type), the custom
object schemas (one call, ``/crm-object-schemas/{version}/schemas``) and Brevo's contact
attributes (one call), and reports with file and line: an object type HubSpot does not have, a
custom object not associated with contacts, a property that does not exist or has the wrong
type (a ``latest`` of a non-date, a ``sum`` of a non-number), a Brevo attribute that is missing
(``--create-missing`` creates it with the right type) or has another type.

:func:`resolve_custom_types` turns the custom object names of loaded files into their
``objectTypeId`` — the name HubSpot's webhooks use — for the running daemon.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path

from connector.brevo.client import BrevoClient
from connector.brevo.models import BrevoAttribute
from connector.errors import ApiError, ConfigError, NotFoundError, ValidationError
from connector.hubspot.client import HubSpotClient
from connector.hubspot.models import PropertyDef
from connector.hubspot.schemas import ObjectSchema, find_schema, list_schemas
from connector.mapping import Problem
from connector.mapping_live import CreateMissingError, Missing, Report, brevo_type
from connector.objects.rollup_mapping import (
    STANDARD_TYPES,
    RollupField,
    RollupMapping,
    check_rollup_dir,
)

#: HubSpot property types each kind of read needs
_DATE_TYPES = frozenset({"date", "datetime"})
_NUMBER_TYPES = frozenset({"number"})
#: properties every object has (the roll-ups read them without the schema listing them)
_IMPLICIT = frozenset({"hs_lastmodifieddate", "hs_object_id", "hs_createdate", "createdate"})


def _suggest(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _property_problems(
    m: RollupMapping, f: RollupField, props: dict[str, PropertyDef], what: str
) -> list[Problem]:
    file = m.source or "<rollup>"
    found: list[Problem] = []
    wanted = [f.date_property] if f.value == "latest" else [f.prop] if f.prop else []
    for name in wanted:
        if name is None:
            continue
        prop = props.get(name)
        if prop is None:
            if name in _IMPLICIT and f.value != "sum":
                continue
            message = f"{what} has no property '{name}'" + _suggest(name, sorted(props))
            found.append(Problem(file, f.line, f.brevo, message))
            continue
        if f.value == "latest" and prop.type not in _DATE_TYPES:
            message = f"'{name}' is a {prop.type} property: latest needs a date or datetime"
            found.append(Problem(file, f.line, f.brevo, message))
        if f.value == "sum" and prop.type not in _NUMBER_TYPES:
            message = f"'{name}' is a {prop.type} property: sum needs a number property"
            found.append(Problem(file, f.line, f.brevo, message))
    return found


def _brevo_problem(
    m: RollupMapping, f: RollupField, attributes: dict[str, BrevoAttribute]
) -> Problem | None:
    file = m.source or "<rollup>"
    attr = attributes.get(f.brevo)
    if attr is None:
        message = (
            f"Brevo has no contact attribute {f.brevo} ({f.brevo_type}): create it under "
            "Contacts → Settings → Contact attributes, or run: connector mappings check "
            "--create-missing"
        )
        return Missing(file, f.line, f.brevo, message, system="brevo", name=f.brevo)
    have = brevo_type(attr)
    if have != f.brevo_type:
        message = (
            f"Brevo attribute {f.brevo} is {have}, the roll-up writes {f.brevo_type}: change "
            f"the attribute's type in Brevo (or use another attribute)"
        )
        return Problem(file, f.line, f.brevo, message)
    return None


async def live_check_rollups(
    mappings: Sequence[RollupMapping], hubspot: HubSpotClient, brevo: BrevoClient
) -> list[Problem]:
    """Every live problem of the loaded roll-up files."""
    problems: list[Problem] = []
    if not mappings:
        return problems
    attributes = {a.name.upper(): a for a in await brevo.list_attributes()}
    props_of: dict[str, dict[str, PropertyDef] | None] = {}
    schemas: list[ObjectSchema] | None = None
    for m in mappings:
        file = m.source or "<rollup>"
        for object_type in m.objects:
            fields = m.fields_of(object_type)
            line = fields[0].line
            if object_type not in props_of:
                if object_type in STANDARD_TYPES:
                    try:
                        listed = await hubspot.list_properties(object_type)
                        props_of[object_type] = {p.name: p for p in listed if not p.archived}
                    except (NotFoundError, ValidationError) as e:
                        message = f"HubSpot has no object type '{object_type}' ({e.raw_message})"
                        problems.append(Problem(file, line, "object", message))
                        props_of[object_type] = None
                else:
                    if schemas is None:
                        schemas = await list_schemas(hubspot)
                    schema = find_schema(schemas, object_type)
                    if schema is None:
                        known = ", ".join(f"{s.name} ({s.object_type_id})" for s in schemas)
                        message = (
                            f"HubSpot has no custom object '{object_type}' "
                            f"(custom objects: {known or 'none'}): use its objectTypeId from "
                            "Settings → Data Management → Objects"
                        )
                        problems.append(Problem(file, line, "object", message))
                        props_of[object_type] = None
                    else:
                        if not schema.associates_with_contacts:
                            message = (
                                f"custom object '{object_type}' has no association with "
                                "contacts: its records cannot roll up onto a contact"
                            )
                            problems.append(Problem(file, line, "object", message))
                        props_of[object_type] = {p.name: p for p in schema.properties}
            props = props_of[object_type]
            for f in fields:
                if props is not None:
                    problems += _property_problems(m, f, props, f"HubSpot {object_type}")
                brevo_problem = _brevo_problem(m, f, attributes)
                if brevo_problem is not None:
                    problems.append(brevo_problem)
    return sorted(problems, key=lambda p: (p.file, p.line or 0))


async def create_missing_attributes(
    mappings: Sequence[RollupMapping], problems: Sequence[Problem], brevo: BrevoClient
) -> list[str]:
    """Create the Brevo attributes the problems name as missing; what was created."""
    types = {f.brevo: f.brevo_type for m in mappings for f in m.fields}
    created: list[str] = []
    failures: list[str] = []
    for p in problems:
        if not isinstance(p, Missing) or p.system != "brevo" or p.name not in types:
            continue
        if any(c.startswith(f"Brevo attribute {p.name} ") for c in created):
            continue
        try:
            await brevo.create_attribute(p.name, types[p.name])
        except ApiError as e:
            failures.append(f"{p.name}: {e}")
            continue
        created.append(f"Brevo attribute {p.name} ({types[p.name]})")
    if failures:
        raise CreateMissingError(created, failures)
    return created


async def check_rollups(
    folder: str | Path,
    report: Report,
    *,
    hubspot: HubSpotClient | None = None,
    brevo: BrevoClient | None = None,
    create: bool = False,
) -> Report:
    """Add the roll-up files' problems (and, with clients and no static errors, the live
    ones; with ``create``, the attributes created) to ``report``."""
    mappings, static = check_rollup_dir(folder)
    report.problems += static
    if hubspot is None or brevo is None or any(p.severity == "error" for p in static):
        return report
    live = await live_check_rollups(mappings, hubspot, brevo)
    if create and any(isinstance(p, Missing) for p in live):
        report.created += await create_missing_attributes(mappings, live, brevo)
        live = await live_check_rollups(mappings, hubspot, brevo)
    report.problems += live
    report.live += [m.source or m.object for m in mappings]
    return report


async def resolve_custom_types(
    mappings: Sequence[RollupMapping], hubspot: HubSpotClient
) -> list[RollupMapping]:
    """The files with each custom object named by its ``objectTypeId`` (one schema call, only
    when some file names a custom object by name)."""
    custom = {
        f.object
        for m in mappings
        for f in m.fields
        if f.object not in STANDARD_TYPES and not f.object.startswith("2-")
    }
    if not custom:
        return list(mappings)
    schemas = await list_schemas(hubspot)
    ids: dict[str, str] = {}
    for name in custom:
        schema = find_schema(schemas, name)
        if schema is None:
            raise ConfigError(
                f"roll-up files name the custom object '{name}', which HubSpot does not have: "
                "run connector mappings check",
                key="sync.mappings_dir",
            )
        ids[name] = schema.object_type_id
    out = []
    for m in mappings:
        fields = tuple(dataclasses.replace(f, object=ids.get(f.object, f.object)) for f in m.fields)
        out.append(dataclasses.replace(m, object=ids.get(m.object, m.object), fields=fields))
    return out


__all__ = [
    "check_rollups",
    "create_missing_attributes",
    "live_check_rollups",
    "resolve_custom_types",
]
