"""The 3-way merge of association sets: pure, as :mod:`connector.plan` is for field values.

One record's associations to one other type, on each side, in one id space (the associated
records' HubSpot ids, translated through the links table), and the set both sides agreed on
at the last sync (the base). An id on one side only was *added* there if the base lacks it,
or *removed* on the other side if the base has it: so a removal travels as a removal and is
never added back. With no base (a first sync) the union is kept: a first sync never unlinks.
A one-way run direction makes its source side the truth.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from connector.plan import RunDirection


@dataclass(frozen=True)
class SetPlan:
    """What to write to each side, and the new base once the writes succeed."""

    hubspot_add: frozenset[str] = frozenset()
    hubspot_remove: frozenset[str] = frozenset()
    brevo_add: frozenset[str] = frozenset()
    brevo_remove: frozenset[str] = frozenset()
    result: frozenset[str] = frozenset()

    @property
    def writes(self) -> int:
        """How many links change, on both sides together."""
        return (
            len(self.hubspot_add)
            + len(self.hubspot_remove)
            + len(self.brevo_add)
            + len(self.brevo_remove)
        )


def merge_sets(
    hubspot: Set[str],
    brevo: Set[str],
    base: Set[str] | None,
    direction: RunDirection = "bidirectional",
) -> SetPlan:
    """Plan one record's associations (see the module docstring)."""
    h, b = frozenset(hubspot), frozenset(brevo)
    if direction == "hubspot_to_brevo":
        return SetPlan(brevo_add=h - b, brevo_remove=b - h, result=h)
    if direction == "brevo_to_hubspot":
        return SetPlan(hubspot_add=b - h, hubspot_remove=h - b, result=b)
    known = frozenset(base or ())
    only_h, only_b = h - b, b - h
    removed_in_brevo = only_h & known  # HubSpot still has it, Brevo dropped it
    removed_in_hubspot = only_b & known
    added_in_hubspot = only_h - known
    added_in_brevo = only_b - known
    return SetPlan(
        hubspot_add=added_in_brevo,
        hubspot_remove=removed_in_brevo,
        brevo_add=added_in_hubspot,
        brevo_remove=removed_in_hubspot,
        result=(h & b) | added_in_hubspot | added_in_brevo,
    )


__all__ = ["SetPlan", "merge_sets"]
