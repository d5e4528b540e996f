"""Step 1 of onboarding: which customer-success owner a new contact gets.

:func:`pick_owner` is pure: the strategy (``onboarding.owners.strategy``) applied to the
contact's properties and to what the runner looked up beforehand — the round-robin position
(``sequence``, kept durably by the runner so a restart does not reset the rotation), the owners'
current loads (:func:`owner_loads`) for ``least_loaded``, and the team's members
(:func:`team_members`) when ``owners.team_id`` is set.

A contact that already has ``hubspot_owner_id`` keeps it: the runner checks this and does not
call :func:`pick_owner` (nor write the property) for such a contact. As a safety net,
:func:`pick_owner` returns the existing owner if it is called anyway, so a bug upstream can
never re-assign a contact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from connector.errors import ConfigError, NotFoundError
from connector.hubspot.client import HubSpotClient
from connector.onboarding.crm import get_owner, search_page
from connector.onboarding.settings import OwnerRule, OwnerSettings

log = structlog.get_logger(__name__)

OWNER_PROPERTY = "hubspot_owner_id"


@dataclass(frozen=True)
class OwnerInfo:
    """A HubSpot owner as the later steps need it (calendar, email signature, note)."""

    id: str
    email: str | None
    first_name: str | None
    last_name: str | None

    @property
    def name(self) -> str:
        """ "First Last", else the e-mail address, else "owner {id}"."""
        full = " ".join(p for p in (self.first_name, self.last_name) if p and p.strip())
        return full.strip() or self.email or f"owner {self.id}"


def pick_owner(
    settings: OwnerSettings,
    contact: Mapping[str, str | None],
    *,
    sequence: int,
    loads: Mapping[str, int] | None = None,
    candidates: Sequence[str] | None = None,
) -> str:
    """The owner id for ``contact`` under ``settings.strategy``.

    * ``round_robin``: ``pool[sequence % len(pool)]``; the pool is ``candidates`` (the team's
      members) when ``team_id`` is set, else ``owner_ids``.
    * ``least_loaded``: the pool's owner with the fewest contacts in ``loads``; ties go to the
      earliest in the pool. Every pool member must be in ``loads``.
    * ``rules``: the first rule whose every ``when`` property equals (trimmed, case-insensitive)
      the value or one of the listed values; its ``owner_id``, or round-robin over its
      ``owner_ids``. No match: ``default_owner_id``, else round-robin over the pool.
    """
    existing = (contact.get(OWNER_PROPERTY) or "").strip()
    if existing:
        log.warning("onboarding.owner_already_set", owner_id=existing)
        return existing
    if sequence < 0:
        raise ValueError("sequence must be ≥ 0")
    if settings.strategy == "rules":
        rule = first_matching_rule(settings.rules, contact)
        if rule is not None:
            if rule.owner_id:
                return rule.owner_id
            return rule.owner_ids[sequence % len(rule.owner_ids)]
        if settings.default_owner_id:
            return settings.default_owner_id
        return _round_robin(_pool(settings, candidates), sequence)
    pool = _pool(settings, candidates)
    if settings.strategy == "least_loaded":
        if loads is None:
            raise ValueError("least_loaded needs the owners' loads (owner_loads)")
        missing = [o for o in pool if o not in loads]
        if missing:
            raise ValueError(f"no load known for owner(s) {', '.join(missing)}")
        return min(enumerate(pool), key=lambda p: (loads[p[1]], p[0]))[1]
    return _round_robin(pool, sequence)


def first_matching_rule(
    rules: Sequence[OwnerRule], contact: Mapping[str, str | None]
) -> OwnerRule | None:
    """The first rule all of whose conditions the contact meets (an empty ``when`` matches)."""
    for rule in rules:
        if all(_matches(contact.get(prop), want) for prop, want in rule.when.items()):
            return rule
    return None


def _matches(value: str | None, want: str | list[str]) -> bool:
    if value is None:
        return False
    have = value.strip().casefold()
    wanted = [want] if isinstance(want, str) else want
    return any(have == w.strip().casefold() for w in wanted)


def _pool(settings: OwnerSettings, candidates: Sequence[str] | None) -> list[str]:
    if settings.team_id:
        if candidates is None:
            raise ValueError(
                f"owners.team_id is {settings.team_id}: pass the team's members as candidates"
            )
        pool = list(dict.fromkeys(str(c) for c in candidates))
        if not pool:
            raise ConfigError(
                f"HubSpot team {settings.team_id} has no active owners: add members to the team "
                "or set onboarding.owners.owner_ids instead of team_id",
                key="onboarding.owners.team_id",
            )
        return pool
    pool = list(dict.fromkeys(settings.owner_ids))
    if not pool:
        raise ConfigError(
            "no owner to assign: set onboarding.owners.owner_ids, team_id or default_owner_id",
            key="onboarding.owners.owner_ids",
        )
    return pool


def _round_robin(pool: Sequence[str], sequence: int) -> str:
    return pool[sequence % len(pool)]


# --- HubSpot look-ups -------------------------------------------------------------------------


async def owner_loads(hubspot: HubSpotClient, owner_ids: Sequence[str]) -> dict[str, int]:
    """Contacts owned per owner: one CRM search per owner (``hubspot_owner_id EQ id``, limit 1),
    reading its ``total``. Searches go through the client's search limiter (5/s).

    Search is backed by an index that lags writes by seconds, so two contacts assigned within
    that lag may both see the older loads; the imbalance is at most the burst size.
    """
    out: dict[str, int] = {}
    for oid in dict.fromkeys(str(o) for o in owner_ids):
        page = await search_page(
            hubspot,
            "contacts",
            [[{"propertyName": OWNER_PROPERTY, "operator": "EQ", "value": oid}]],
            ["hs_object_id"],
            limit=1,
        )
        out[oid] = page.total
    return out


async def team_members(hubspot: HubSpotClient, team_id: str) -> list[str]:
    """Ids of the active owners in HubSpot team ``team_id`` (the owners API lists each owner's
    ``teams``), in the API's order — a stable order, so the round-robin is stable too."""
    members = [
        o.id async for o in hubspot.iter_owners() if str(team_id) in o.team_ids and not o.archived
    ]
    if not members:
        log.warning("onboarding.team_empty", team_id=team_id)
    return members


async def owner_info(hubspot: HubSpotClient, owner_id: str) -> OwnerInfo:
    """The owner's name and e-mail (``GET /crm/owners/…/{id}``); an unknown id is a ConfigError
    naming the config keys that may hold it."""
    try:
        owner = await get_owner(hubspot, owner_id)
    except NotFoundError:
        raise ConfigError(
            f"HubSpot owner {owner_id} does not exist (or was deactivated): check "
            "onboarding.owners (owner_ids, rules, default_owner_id) against Settings → Users",
            key="onboarding.owners",
        ) from None
    return OwnerInfo(
        id=owner.id or str(owner_id),
        email=owner.email,
        first_name=owner.first_name,
        last_name=owner.last_name,
    )


__all__ = [
    "OWNER_PROPERTY",
    "OwnerInfo",
    "first_matching_rule",
    "owner_info",
    "owner_loads",
    "pick_owner",
    "team_members",
]
