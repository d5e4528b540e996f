"""HubSpot sandbox: custom object schemas and custom object types (pipelines are
:mod:`connector.sandbox.hubspot_pipelines`).

* ``GET /crm-object-schemas/{ver}/schemas`` and ``…/schemas/{objectType}`` (the dated path of
  HubSpot's 2026-03 reference; legacy ``v3``): the custom object schemas, by ``objectTypeId``,
  ``fullyQualifiedName`` or name, in the reference's shape (``objectTypeId``, ``name``,
  ``labels``, ``properties``, ``associations``…).
* :func:`define_custom_object` adds a custom object type (``2-…``) with its properties and an
  association type to contacts: its records then live in the ordinary object, batch, search and
  associations routes like any type. HubSpot's object-type registry is global in the sandbox
  (the type tables of :mod:`connector.sandbox.hubspot_model`), so a type defined once is known
  to every sandbox in the process; each portal keeps its own schemas and records.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import JSONResponse, Response

from connector.sandbox import hubspot_model as model
from connector.sandbox.hubspot_http import Ctx, not_found
from connector.sandbox.hubspot_model import ApiError, ObjectStore, PropertyDef, iso_ms

_schemas: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()
_next_assoc_id = [1_000]


def schemas_of(state: Any) -> dict[str, dict[str, Any]]:
    """The portal's custom object schemas by name (those whose records still exist)."""
    found = _schemas.setdefault(state, {})
    for name in [n for n in found if n not in state.stores]:  # gone with a reset
        del found[name]
    return found


def define_custom_object(
    state: Any,
    name: str,
    properties: Iterable[Mapping[str, Any]],
    *,
    type_id: str | None = None,
    label: str | None = None,
) -> str:
    """Add a custom object type to the portal (and to the sandbox's type registry); its
    ``objectTypeId``. ``properties`` are ``{name, label, type, fieldType}`` like HubSpot's."""
    name = name.strip().lower()
    existing = model.TYPE_IDS.get(name)
    object_type_id = (
        type_id or existing or f"2-{state.portal_id % 10_000_000 + len(model.TYPE_IDS)}"
    )
    if name not in model.TYPE_IDS:
        model.TYPE_IDS[name] = object_type_id
        model.SINGULAR[name] = name
        for alias in (name, object_type_id, f"p{state.portal_id}_{name}"):
            model._ALIASES[alias] = name
        fwd, inv = _next_assoc_id[0], _next_assoc_id[0] + 1
        _next_assoc_id[0] += 2
        model.ASSOC_TYPES[fwd] = model.AssocType(name, "contacts", fwd, None, inv)
        model.ASSOC_TYPES[inv] = model.AssocType("contacts", name, inv, None, fwd)
        model.DEFAULT_ASSOC[(name, "contacts")] = fwd
        model.DEFAULT_ASSOC[("contacts", name)] = inv
    now = state.now_ms()
    group = f"{name}_information"
    defs: dict[str, PropertyDef] = {}
    for d in model._common(name, group):
        d.created_ms = d.updated_ms = now
        defs[d.name] = d
    for p in properties:
        d = PropertyDef(
            name=str(p["name"]),
            label=str(p.get("label", p["name"])),
            type=str(p.get("type", "string")),
            field_type=str(p.get("fieldType", "text")),
            group_name=group,
            hubspot_defined=False,
            created_ms=now,
            updated_ms=now,
        )
        defs[d.name] = d
    state.stores[name] = ObjectStore(name)
    state.properties[name] = defs
    state.required_properties[name] = set()
    custom = [d for d in defs.values() if not d.hubspot_defined]
    assoc_id = model.DEFAULT_ASSOC[(name, "contacts")]
    schemas_of(state)[name] = {
        "id": object_type_id.split("-", 1)[1],
        "objectTypeId": object_type_id,
        "name": name,
        "fullyQualifiedName": f"p{state.portal_id}_{name}",
        "labels": {"singular": label or name, "plural": label or name},
        "primaryDisplayProperty": custom[0].name if custom else "hs_object_id",
        "requiredProperties": [],
        "searchableProperties": [d.name for d in custom[:1]],
        "secondaryDisplayProperties": [],
        "associations": [
            {
                "fromObjectTypeId": object_type_id,
                "toObjectTypeId": "0-1",
                "name": f"{name}_to_contact",
                "id": str(assoc_id),
                "createdAt": iso_ms(now),
                "updatedAt": iso_ms(now),
            }
        ],
        "metaType": "PORTAL_SPECIFIC",
        "archived": False,
        "createdAt": iso_ms(now),
        "updatedAt": iso_ms(now),
    }
    return object_type_id


def _schema_json(state: Any, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    props = [d.to_json() for d in state.properties.get(name, {}).values()]
    return {**schema, "properties": props}


# --- handlers -------------------------------------------------------------------------------


async def list_schemas(c: Ctx) -> Response:
    schemas = schemas_of(c.state)
    return JSONResponse({"results": [_schema_json(c.state, n, s) for n, s in schemas.items()]})


async def get_schema(c: Ctx) -> Response:
    raw = str(c.request.path_params["object_type"])
    for name, schema in schemas_of(c.state).items():
        if raw.lower() in (name, schema["objectTypeId"], schema["fullyQualifiedName"].lower()):
            return JSONResponse(_schema_json(c.state, name, schema))
    raise not_found(f"Unable to find object type {raw}")


def schema_scopes(_: Ctx) -> list[str]:
    return ["crm.schemas.custom.read"]


def unknown_type(raw: str) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {raw}")


__all__ = [
    "define_custom_object",
    "get_schema",
    "list_schemas",
    "schemas_of",
]
