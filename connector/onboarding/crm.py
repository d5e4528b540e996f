"""The few HubSpot calls the onboarding steps need that :class:`HubSpotClient` has no method for.

A search that returns its ``total`` and one page (owner loads, meetings in a window), reading
one owner by id, and creating an object together with its associations (one call, so a
meeting is never left unassociated). Each goes through the client's own request pipeline —
its rate limiters (``search`` included), retries, legacy-path fallback and typed errors — so
these behave exactly like the client's public methods. They would fit as public methods of
the client; they live here to keep the onboarding work in its own package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from connector.errors import ForbiddenError, NotFoundError
from connector.hubspot.client import HubSpotClient
from connector.hubspot.models import HubSpotObject, Owner
from connector.hubspot.paths import OWNERS, Route

SEARCH_PAGE_MAX = 200


@dataclass(frozen=True, slots=True)
class SearchPage:
    results: list[HubSpotObject]
    total: int
    after: str | None


Filter = Mapping[str, Any]


async def search_page(
    hubspot: HubSpotClient,
    object_type: str,
    filter_groups: Sequence[Sequence[Filter]],
    properties: Sequence[str],
    *,
    limit: int = SEARCH_PAGE_MAX,
    after: str | None = None,
    sorts: Sequence[Mapping[str, str]] = (),
) -> SearchPage:
    """One page of ``POST …/{object_type}/search`` (filter groups OR-ed, filters AND-ed)."""
    body: dict[str, Any] = {
        "filterGroups": [{"filters": [dict(f) for f in group]} for group in filter_groups],
        "properties": list(properties),
        "limit": max(1, min(limit, SEARCH_PAGE_MAX)),
    }
    if sorts:
        body["sorts"] = [dict(s) for s in sorts]
    if after is not None:
        body["after"] = after
    data = await hubspot.request(
        "POST", hubspot.paths.search(object_type), json=body, idempotent=True, search=True
    )
    data = data or {}
    nxt = ((data.get("paging") or {}).get("next") or {}).get("after")
    results = [HubSpotObject.from_api(r) for r in data.get("results") or []]
    total = data.get("total")
    return SearchPage(
        results=results,
        total=int(total) if isinstance(total, int | str) and str(total).isdigit() else len(results),
        after=str(nxt) if nxt not in (None, "") else None,
    )


async def search_all(
    hubspot: HubSpotClient,
    object_type: str,
    filter_groups: Sequence[Sequence[Filter]],
    properties: Sequence[str],
    *,
    max_results: int = 2_000,
) -> list[HubSpotObject]:
    """Every result of a search (up to ``max_results``), page by page."""
    out: list[HubSpotObject] = []
    after: str | None = None
    seen: set[str] = set()
    while len(out) < max_results:
        page = await search_page(hubspot, object_type, filter_groups, properties, after=after)
        out.extend(page.results)
        if page.after is None or not page.results or page.after in seen:
            break
        seen.add(page.after)
        after = page.after
    return out[:max_results]


async def get_owner(hubspot: HubSpotClient, owner_id: str) -> Owner:
    """``GET /crm/owners/{ver}/{ownerId}`` (legacy ``/crm/v3/owners/{ownerId}``); 404 raises
    :class:`~connector.errors.NotFoundError`."""

    def route(legacy: bool) -> Route:
        base = hubspot.paths.owners(legacy=legacy)
        return Route(
            f"{base.path}{quote(str(owner_id), safe='')}", f"{base.template}{{id}}", OWNERS, legacy
        )

    data = await hubspot.request("GET", route)
    return Owner.from_api(data or {})


async def create_with_associations(
    hubspot: HubSpotClient,
    object_type: str,
    properties: Mapping[str, str],
    associations: Sequence[tuple[str, int]],
) -> HubSpotObject:
    """``POST …/{object_type}`` with ``associations`` (``(to_id, HUBSPOT_DEFINED type id)``).

    Not retried after a 5xx or a timeout (the client's rule for creates): it may have been
    applied. The caller decides how to find out (see ``calendar.HubSpotMeetings.book``).
    """
    body = {
        "properties": dict(properties),
        "associations": [
            {
                "to": {"id": str(to_id)},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": tid}],
            }
            for to_id, tid in associations
        ],
    }
    data = await hubspot.request(
        "POST", hubspot.paths.objects(object_type), json=body, idempotent=False
    )
    return HubSpotObject.from_api(data or {})


async def default_type_id(
    hubspot: HubSpotClient, from_type: str, to_type: str, fallback: int
) -> int:
    """The unlabelled HUBSPOT_DEFINED association type id (``fallback`` if HubSpot won't say)."""
    try:
        labels = await hubspot.association_labels(from_type, to_type)
    except (NotFoundError, ForbiddenError):
        return fallback
    found = [lb.type_id for lb in labels if lb.category == "HUBSPOT_DEFINED" and not lb.label]
    return found[0] if found else fallback


__all__ = [
    "SearchPage",
    "create_with_associations",
    "default_type_id",
    "get_owner",
    "search_all",
    "search_page",
]
