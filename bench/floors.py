"""The floors: the fewest calls a job needs and the least time the rate limits allow for them.

A sync connector is bounded by the APIs, so each figure is set beside what the APIs permit.

**Calls.** ``min_calls`` counts what no client could avoid, with each API's largest batch:

- HubSpot reads the list API 100 per page (``GET /crm/objects/…/contacts?limit=100``) and writes
  100 inputs per batch call (``batch/upsert`` keyed on email needs no read first);
- Brevo lists contacts 1,000 per page (``GET /contacts?limit=1000``; an empty account still
  answers one call), and bulk writes go through ``POST /contacts/import``, whose body may hold
  up to 8 MB (so ``ceil(bytes / 8 MB)`` imports, :data:`IMPORT_ROW_BYTES` per row). An import
  returns no contact ids: the new contacts are read back, 1,000 per page, to link them.

A contact created in HubSpot from Brevo is read back once (``batch/read``, 100 per call) when
the upsert's answer lacks a value HubSpot may have set itself — a mapped property the Brevo
contact left empty or that is read-only: a default, or a calculated property such as the
default mapping's ``num_associated_deals`` and ``hs_total_deal_value``, which HubSpot sets to
0 on every new contact. The answer holds only the properties sent (the sandbox does so;
API_NOTES_HUBSPOT §6 documents the upsert and its ``new`` flag, not which properties come
back), and without the read those values would not reach Brevo in the same run. So in
``resync_b2h`` every new record is read back, and its calculated values go to Brevo with its
``EXT_ID`` in one import — read back like every import that sets attributes (Brevo drops
values it does not accept without an error, API_NOTES_BREVO pitfall 6): both are part of the
minimum.

**Time.** A rolling window of ``limit`` calls per ``period`` (HubSpot's 190 per 10 s on
Professional, Brevo's 10 per second and 36,000 per hour for contacts, API_NOTES_BREVO §2) lets
call ``k`` (0-based) go no earlier than ``floor(k / limit) × period`` after the first: the
first ``limit`` calls go at once, then one window's worth per period. ``floor_s`` is the largest
such time over the API families a job uses (families have separate windows, so a perfect client
overlaps them), plus Brevo's import processing where a job must wait for it: an import is
asynchronous (202 and a process, API_NOTES_BREVO §1 ``/contacts/import``) and its contacts can
only be read back once it has run, so the last import's processing time (the sandbox's
``--import-delay``, :data:`IMPORT_PROCESSING_S`) lies on the critical path of every job that
confirms an import. The floor leaves out the servers' answer time (HubSpot's list pages are a
chain of cursors, each waiting for the one before) and our own CPU: it is a floor, not an
estimate, and at 10,000 contacts, where no rate limit binds, no client comes near it.
"""

from __future__ import annotations

import math

HUBSPOT_WINDOW = (190, 10.0)
"""HubSpot Professional: 190 requests per rolling 10 seconds per app (search has its own 5/s)."""
HUBSPOT_SEARCH_WINDOW = (5, 1.0)
BREVO_CONTACTS_WINDOWS = ((10, 1.0), (36_000, 3600.0))
"""Brevo general plan, the contacts endpoints: 10 per second and 36,000 per hour."""
HUBSPOT_PAGE = 100
HUBSPOT_BATCH = 100
BREVO_PAGE = 1_000
IMPORT_BODY_BYTES = 8_000_000
IMPORT_ROW_BYTES = 300
"""A seeded contact as an import row with the default mapping (measured: 250–300 bytes)."""
IMPORT_EXT_ID_ROW_BYTES = 130
"""An import row that sets ``EXT_ID`` and the two calculated deal attributes on a known email."""
IMPORT_PROCESSING_S = 0.2
"""How long the sandbox takes to run an import (``bench.harness.Sandboxes(import_delay=…)``)."""


def window_floor(calls: int, limit: int, period: float) -> float:
    """Least seconds from the first to the last of ``calls`` calls under one rolling window."""
    if calls <= 0:
        return 0.0
    return ((calls - 1) // limit) * period


def hubspot_floor(calls: int) -> float:
    return window_floor(calls, *HUBSPOT_WINDOW)


def brevo_floor(calls: int) -> float:
    return max(window_floor(calls, limit, period) for limit, period in BREVO_CONTACTS_WINDOWS)


def imports(rows: int, row_bytes: int) -> int:
    return math.ceil(rows * row_bytes / IMPORT_BODY_BYTES) if rows else 0


def resync_h2b(n: int) -> dict[str, float | int]:
    """N HubSpot contacts into an empty Brevo."""
    hs = math.ceil(n / HUBSPOT_PAGE) or 1
    br = 1 + imports(n, IMPORT_ROW_BYTES) + math.ceil(n / BREVO_PAGE)
    wait = IMPORT_PROCESSING_S if n else 0.0  # the import must run before its read-back
    return {
        "min_calls": hs + br,
        "floor_s": max(hubspot_floor(hs), brevo_floor(br) + wait),
        "min_hubspot_calls": hs,
        "min_brevo_calls": br,
    }


def resync_b2h(n: int) -> dict[str, float | int]:
    """N Brevo contacts into an empty HubSpot (and each one's HubSpot id back as EXT_ID).

    HubSpot: one list call (empty), the upserts, and the read-back of the new records (see
    the module docstring). Brevo: the listing, then the import of each new record's id and
    calculated values, and its read-back."""
    hs = 1 + 2 * math.ceil(n / HUBSPOT_BATCH)
    pages = math.ceil(n / BREVO_PAGE)
    br = (pages or 1) + imports(n, IMPORT_EXT_ID_ROW_BYTES) + pages
    wait = IMPORT_PROCESSING_S if n else 0.0
    return {
        "min_calls": hs + br,
        "floor_s": max(hubspot_floor(hs), brevo_floor(br) + wait),
        "min_hubspot_calls": hs,
        "min_brevo_calls": br,
    }


def instep(n: int) -> dict[str, float | int]:
    """Both sides already equal: read both in full, write nothing."""
    hs = math.ceil(n / HUBSPOT_PAGE) or 1
    br = math.ceil(n / BREVO_PAGE) or 1
    return {"min_calls": hs + br, "floor_s": max(hubspot_floor(hs), brevo_floor(br))}


def per_record(n: int) -> dict[str, float | int]:
    """The per-item way: list HubSpot 100 per page, then one Brevo write per contact."""
    hs = math.ceil(n / HUBSPOT_PAGE) or 1
    return {"min_calls": hs + n, "floor_s": max(hubspot_floor(hs), brevo_floor(n))}
