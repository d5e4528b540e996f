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

LOOKUP_MAX = 200
"""Phones looked up in Brevo one call each (the API source) in one pass (20 s of Brevo's
contacts limit); beyond that, a pass trusts the ledger alone for the rest."""


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
    brevo_is_current: bool,
    brevo_lookup_max: int | None = None,
) -> dict[int, str]:
    """The writes whose phone must be left out, by ``index``, each with the reason.

    ``brevo_is_current``: ``in_brevo`` answers for Brevo as it is now (the API): its answer
    overrules the ledger, whose holder may have changed number since (a stale base must not
    block the phone). Otherwise (a resync's stage, a copy from before this run's own writes)
    the ledger's holder stands and Brevo is asked only about phones no link holds.
    ``brevo_lookup_max``: at most this many phones are looked up in Brevo (``None``: all);
    for the rest the ledger alone decides.
    """
    if not writes:
        return {}
    refused: dict[int, str] = {}
    by_index = {w.index: w for w in writes}
    by_hash = await in_ledger([planner.value_hash(w.value) for w in writes])
    ledger_holder: dict[int, ledger.LinkRecord] = {}
    ask: list[PhoneWrite] = []
    for w in writes:
        linked = by_hash.get(planner.value_hash(w.value), [])
        holders = [h for h in linked if not w.is_self(h.id, h.hubspot_id, h.brevo_id)]
        if holders:
            ledger_holder[w.index] = holders[0]
            if brevo_is_current:
                ask.append(w)
        elif not linked:
            ask.append(w)
        # else: its own Brevo contact holds it already
    keys = list(dict.fromkeys(k for w in ask if (k := phone_key(w.value))))
    checked = set(keys if brevo_lookup_max is None else keys[:brevo_lookup_max])
    in_account = await in_brevo([k for k in keys if k in checked]) if checked else {}
    first: dict[str, int] = {}
    for w in writes:
        key = phone_key(w.value)
        if key is None:
            continue
        held = ledger_holder.get(w.index)
        holder = in_account.get(key)
        if key in checked and (held is None or brevo_is_current):
            if holder is not None and not w.is_self(None, None, holder):
                linked_to = f"linked to HubSpot {held.hubspot_id}" if held else "not linked"
                refused[w.index] = (
                    f"phone already on Brevo contact {holder} ({linked_to}); Brevo keeps an "
                    "SMS number on one contact only"
                )
                continue
        elif held is not None:
            refused[w.index] = (
                f"phone already on Brevo contact {held.brevo_id} (linked to HubSpot "
                f"{held.hubspot_id}); Brevo keeps an SMS number on one contact only"
            )
            continue
        if key in first:
            other = by_index[first[key]]
            refused[w.index] = (
                f"phone also wanted by HubSpot {other.hubspot_id} in the same pass, which "
                "keeps it; Brevo keeps an SMS number on one contact only"
            )
        else:
            first[key] = w.index
    return refused
