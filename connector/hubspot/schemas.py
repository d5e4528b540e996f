"""HubSpot custom object schemas: ``GET /crm-object-schemas/{version}/schemas``.

The dated path is HubSpot's 2026-03 reference ("Retrieve all custom object schemas",
developers.hubspot.com/docs/api-reference/2026-03/crm/objects/schemas/get-schemas);
API_NOTES_HUBSPOT does not list it, so the route carries the legacy twin
``/crm-object-schemas/v3/schemas`` and the client falls back to it once if the dated route is
unknown (as for properties and associations, :mod:`connector.hubspot.paths`). A schema names a
custom object by ``objectTypeId`` (``2-…``), ``name`` and ``fullyQualifiedName`` and lists its
properties and association definitions; it needs the ``crm.schemas.custom.read`` scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector.hubspot.client import HubSpotClient
from connector.hubspot.models import PropertyDef
from connector.hubspot.paths import Route

SCHEMAS = "schemas"
"""The route family of the schema API (its dated path may fall back to ``v3``)."""
CONTACTS_TYPE_ID = "0-1"


def schemas_route(version: str, *, legacy: bool = False) -> Route:
    """``/crm-object-schemas/{version}/schemas`` (legacy: ``…/v3/schemas``)."""
    p = f"/crm-object-schemas/{'v3' if legacy else version}/schemas"
    return Route(p, p, SCHEMAS, legacy)


@dataclass(frozen=True, slots=True)
class ObjectSchema:
    """One custom object type: its ids, its properties and the types it associates with."""

    object_type_id: str
    name: str
    fully_qualified_name: str
    label: str
    properties: tuple[PropertyDef, ...] = ()
    associated_type_ids: tuple[str, ...] = ()

    def matches(self, ref: str) -> bool:
        """Whether a mapping's ``object:`` names this type (id, name or qualified name)."""
        r = ref.strip().lower()
        return r in (
            self.object_type_id.lower(),
            self.name.lower(),
            self.fully_qualified_name.lower(),
        )

    @property
    def associates_with_contacts(self) -> bool:
        return CONTACTS_TYPE_ID in self.associated_type_ids

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> ObjectSchema:
        associated: list[str] = []
        type_id = str(data.get("objectTypeId") or "")
        for a in data.get("associations") or []:
            if not isinstance(a, Mapping):
                continue
            for key in ("toObjectTypeId", "fromObjectTypeId"):
                other = str(a.get(key) or "")
                if other and other != type_id:
                    associated.append(other)
        labels = data.get("labels") or {}
        return cls(
            object_type_id=type_id,
            name=str(data.get("name") or ""),
            fully_qualified_name=str(data.get("fullyQualifiedName") or ""),
            label=str(labels.get("singular") or data.get("name") or ""),
            properties=tuple(
                PropertyDef.from_api(p)
                for p in data.get("properties") or []
                if isinstance(p, Mapping)
            ),
            associated_type_ids=tuple(dict.fromkeys(associated)),
        )


async def list_schemas(client: HubSpotClient) -> list[ObjectSchema]:
    """Every custom object schema of the account (one call)."""
    version = client.paths.version
    data = await client.request("GET", lambda legacy: schemas_route(version, legacy=legacy))
    return [
        ObjectSchema.from_api(s)
        for s in (data or {}).get("results") or []
        if isinstance(s, Mapping)
    ]


def find_schema(schemas: list[ObjectSchema], ref: str) -> ObjectSchema | None:
    return next((s for s in schemas if s.matches(ref)), None)


__all__ = ["ObjectSchema", "find_schema", "list_schemas", "schemas_route"]
