"""Brevo keeps an SMS number on one contact only: who already holds the phones a pass writes.

Brevo matches an import row — and a ``POST /contacts`` with ``updateEnabled`` — to the contact
that holds the row's SMS number when its e-mail is new, so a phone two HubSpot contacts share
(a household, a switchboard) would make the second write land on the first person's Brevo
contact; on an update by id Brevo refuses it as a duplicate. Before a pass writes phones to
Brevo, each one is looked up:

1. in the ledger — a linked pair whose last synced phone it is (``field_state.value_hash``);
2. in Brevo — a contact not linked yet (a resync's stage, or the API by SMS number);
3. within the pass — two records that both want it: the first keeps it.

A phone held by another contact is left out of that record's write, with the reason (the
rest of the record syncs; its phone field keeps its ledger base, so it is tried again when
the record changes or at the next reconciliation). Nothing is dead-lettered for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from connector import plan as planner
from connector.store import links as ledger
from connector.transforms import phone_key

LOOKUP_MAX = 100
"""Phones looked up in Brevo one call each (the API source) in one pass; the rest of the
pass's new phones wait for the next pass or reconciliation, where they are looked up again."""


@dataclass(frozen=True)
class PhoneWrite:
    """One record of the pass about to write ``value`` (canonical, E.164) to Brevo's SMS."""

    index: int
    value: str
    link_id: int | None
    hubspot_id: str | None
    brevo_id: str | None

    def is_self(self, link_id: int | None, hubspot_id: str | None, brevo_id: str | None) -> bool:
        return (
            (link_id is not None and link_id == self.link_id)
            or (hubspot_id is not None and hubspot_id == self.hubspot_id)
            or (brevo_id is not None and brevo_id == self.brevo_id)
        )


LedgerLookup = Callable[[Sequence[str]], Awaitable[dict[str, list[ledger.LinkRecord]]]]
"""value hashes → the links whose last synced phone has that hash."""
BrevoLookup = Callable[[Sequence[str]], Awaitable[dict[str, str]]]
"""phone keys (:func:`~connector.transforms.phone_key`) → the Brevo contact id holding each."""


async def phones_in_use(
    writes: Sequence[PhoneWrite],
    *,
    in_ledger: LedgerLookup,
    in_brevo: BrevoLookup,
    brevo_lookup_max: int | None = None,
) -> dict[int, str]:
    """The writes whose phone must be left out, by ``index``, each with the reason.

    ``brevo_lookup_max``: at most this many phones are looked up in Brevo (``None``: all);
    the others, not proven free, are left out too ("not checked yet").
    """
    if not writes:
        return {}
    refused: dict[int, str] = {}
    by_index = {w.index: w for w in writes}
    by_hash = await in_ledger([planner.value_hash(w.value) for w in writes])
    unlinked: list[PhoneWrite] = []
    for w in writes:
        linked = by_hash.get(planner.value_hash(w.value), [])
        holders = [h for h in linked if not w.is_self(h.id, h.hubspot_id, h.brevo_id)]
        if not holders and linked:
            continue  # its own Brevo contact holds it already
        if holders:
            h = holders[0]
            refused[w.index] = (
                f"phone already on Brevo contact {h.brevo_id} (linked to HubSpot "
                f"{h.hubspot_id}); Brevo keeps an SMS number on one contact only"
            )
        else:
            unlinked.append(w)
    keys = list(dict.fromkeys(k for w in unlinked if (k := phone_key(w.value))))
    checked = keys if brevo_lookup_max is None else keys[:brevo_lookup_max]
    in_account = await in_brevo(checked) if checked else {}
    checked_set = set(checked)
    first: dict[str, int] = {}
    for w in unlinked:
        key = phone_key(w.value)
        if key is None:
            continue
        holder = in_account.get(key)
        if key not in checked_set:
            refused[w.index] = (
                "phone not checked against Brevo yet (more new phones in this pass than "
                f"{brevo_lookup_max}): written once it is, by a later pass or reconciliation"
            )
        elif holder is not None and not w.is_self(None, None, holder):
            refused[w.index] = (
                f"phone already on Brevo contact {holder} (not linked); Brevo keeps an SMS "
                "number on one contact only"
            )
        elif key in first:
            other = by_index[first[key]]
            refused[w.index] = (
                f"phone also wanted by HubSpot {other.hubspot_id} in the same pass, which "
                "keeps it; Brevo keeps an SMS number on one contact only"
            )
        else:
            first[key] = w.index
    return refused
