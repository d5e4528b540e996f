"""Associations (v4) of the HubSpot sandbox, a base of :class:`HubSpotState`.

Associations are stored both ways: adding a type from A to B also adds its inverse from B to A.
A primary company association comes with its unlabeled sibling, and a record has at most one
primary company.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connector.sandbox.hubspot_access import StateBase
from connector.sandbox.hubspot_model import (
    ASSOC_TYPES,
    DEFAULT_ASSOC,
    PRIMARY_SIBLING,
    SINGULAR,
    ApiError,
    AssocType,
    ObjectStore,
)


class LinksMixin(StateBase):
    """Association storage and operations."""

    stores: dict[str, ObjectStore]
    assoc: dict[tuple[str, int], dict[tuple[str, int], set[int]]]

    # ---------------------------------------------------------------------- associations

    def _linked(self, from_type: str, from_id: int, to_type: str) -> list[int]:
        return [tid for (t, tid) in self.assoc.get((from_type, from_id), {}) if t == to_type]

    def associations_of(
        self, from_type: str, from_id: int, to_type: str
    ) -> list[tuple[int, list[AssocType]]]:
        """(to id, association types) for every record of ``to_type`` linked to this one."""
        out = []
        for (t, tid), types in sorted(self.assoc.get((from_type, from_id), {}).items()):
            if t == to_type:
                out.append((tid, sorted((ASSOC_TYPES[x] for x in types), key=lambda a: a.type_id)))
        return out

    def _has_primary(self, from_type: str, from_id: int, to_type: str) -> bool:
        return any(
            ASSOC_TYPES[x].primary
            for (t, _), types in self.assoc.get((from_type, from_id), {}).items()
            if t == to_type
            for x in types
        )

    def assoc_type(self, from_type: str, to_type: str, type_id: int) -> AssocType:
        at = ASSOC_TYPES.get(type_id)
        if at is None or (at.from_type, at.to_type) != (from_type, to_type):
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"{type_id} is not a valid association type id between {from_type} and {to_type}",
            )
        return at

    def default_assoc_type(self, from_type: str, to_type: str) -> AssocType:
        tid = DEFAULT_ASSOC.get((from_type, to_type))
        if tid is None:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"No default association is defined between {from_type} and {to_type}",
            )
        return ASSOC_TYPES[tid]

    def associate(
        self,
        from_type: str,
        from_id: int,
        to_type: str,
        to_id: int,
        type_id: int,
        *,
        source: str = "INTEGRATION",
        with_sibling: bool = True,
    ) -> list[int]:
        """Link two live records with one type (and its inverse); returns the type ids added."""
        at = self.assoc_type(from_type, to_type, type_id)
        for t, i in ((from_type, from_id), (to_type, to_id)):
            if i not in self.stores[t].live:
                raise ApiError(404, "OBJECT_NOT_FOUND", f"No {SINGULAR[t]} with id {i} exists")
        added: list[int] = []
        ids = [type_id]
        if at.primary and with_sibling:
            ids.append(PRIMARY_SIBLING[type_id])
        if at.primary:
            # the side that is not a company has exactly one primary company
            one, one_type = (from_id, from_type) if at.to_type == "companies" else (to_id, to_type)
            primary_id = at.type_id if at.to_type == "companies" else at.inverse
            for (t, other), types in list(self.assoc.get((one_type, one), {}).items()):
                if (
                    t == "companies"
                    and other != (to_id if one == from_id else from_id)
                    and (primary_id in types)
                ):
                    self._unlink(one_type, one, t, other, [primary_id], source)
        for tid in ids:
            inv = ASSOC_TYPES[tid].inverse
            fwd = self.assoc.setdefault((from_type, from_id), {}).setdefault(
                (to_type, to_id), set()
            )
            if tid not in fwd:
                fwd.add(tid)
                added.append(tid)
            self.assoc.setdefault((to_type, to_id), {}).setdefault((from_type, from_id), set()).add(
                inv
            )
        if added:
            self._emit(
                "associationChange",
                from_type,
                from_id,
                f"{SINGULAR[from_type].upper()}_TO_{SINGULAR[to_type].upper()}",
                str(to_id),
                source,
            )
        return added

    def associate_default(
        self, from_type: str, from_id: int, to_type: str, to_id: int
    ) -> AssocType:
        """The default association (contact→company also becomes primary if none is)."""
        at = self.default_assoc_type(from_type, to_type)
        self.associate(from_type, from_id, to_type, to_id, at.type_id)
        if (from_type, to_type) == ("contacts", "companies") and not self._has_primary(
            from_type, from_id, to_type
        ):
            self.associate(from_type, from_id, to_type, to_id, 1)
        return at

    def _unlink(
        self,
        from_type: str,
        from_id: int,
        to_type: str,
        to_id: int,
        type_ids: Iterable[int] | None,
        source: str,
    ) -> bool:
        fwd = self.assoc.get((from_type, from_id), {})
        types = fwd.get((to_type, to_id))
        if not types:
            return False
        drop = set(types) if type_ids is None else set(type_ids) & types
        if not drop:
            return False
        types -= drop
        back = self.assoc.get((to_type, to_id), {}).get((from_type, from_id), set())
        back -= {ASSOC_TYPES[t].inverse for t in drop}
        if not types:
            del fwd[(to_type, to_id)]
        if not back:
            self.assoc.get((to_type, to_id), {}).pop((from_type, from_id), None)
        self._emit(
            "associationChange",
            from_type,
            from_id,
            f"{SINGULAR[from_type].upper()}_TO_{SINGULAR[to_type].upper()}",
            str(to_id),
            source,
        )
        return True

    def disassociate(
        self,
        from_type: str,
        from_id: int,
        to_type: str,
        to_id: int,
        type_ids: Iterable[int] | None = None,
    ) -> bool:
        """Remove all (or the given) association types between two records."""
        return self._unlink(from_type, from_id, to_type, to_id, type_ids, "INTEGRATION")

    def _drop_associations(self, object_type: str, object_id: int, source: str) -> None:
        for t, i in list(self.assoc.get((object_type, object_id), {})):
            self._unlink(object_type, object_id, t, i, None, source)
        self.assoc.pop((object_type, object_id), None)

    def _parse_inline_associations(
        self, from_type: str, raw: list[dict[str, Any]]
    ) -> list[tuple[str, int, int]]:
        """``associations`` on a create: [{to:{id}, types:[{associationCategory, …TypeId}]}]."""
        out: list[tuple[str, int, int]] = []
        for a in raw:
            try:
                to_id = int(a["to"]["id"])
                types = a["types"]
            except (KeyError, TypeError, ValueError) as exc:
                raise ApiError(400, "VALIDATION_ERROR", "Invalid associations input") from exc
            for t in types:
                try:
                    tid = int(t["associationTypeId"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise ApiError(
                        400, "VALIDATION_ERROR", "associationTypeId is required"
                    ) from exc
                at = ASSOC_TYPES.get(tid)
                if at is None or at.from_type != from_type:
                    raise ApiError(
                        400,
                        "VALIDATION_ERROR",
                        f"{tid} is not a valid association type id from {from_type}",
                    )
                if to_id not in self.stores[at.to_type].live:
                    raise ApiError(
                        400,
                        "VALIDATION_ERROR",
                        f"The {SINGULAR[at.to_type]} {to_id} to associate with does not exist",
                    )
                out.append((at.to_type, to_id, tid))
        return out
