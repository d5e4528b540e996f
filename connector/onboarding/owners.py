"""PLACEHOLDER (engineer A implements this module; the lead takes A's file at merge).

Only the interface the runner calls, so that imports work on this branch before the merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from connector.hubspot.client import HubSpotClient
from connector.onboarding.settings import OwnerSettings


@dataclass(frozen=True)
class OwnerInfo:
    id: str
    email: str | None
    first_name: str | None
    last_name: str | None

    @property
    def name(self) -> str:
        full = " ".join(p for p in (self.first_name, self.last_name) if p)
        return full or self.email or self.id


def pick_owner(
    settings: OwnerSettings,
    contact: Mapping[str, str | None],
    *,
    sequence: int,
    loads: Mapping[str, int] | None = None,
    candidates: Sequence[str] | None = None,
) -> str:
    raise NotImplementedError("connector.onboarding.owners comes from the steps branch")


async def owner_loads(hubspot: HubSpotClient, owner_ids: Sequence[str]) -> dict[str, int]:
    raise NotImplementedError("connector.onboarding.owners comes from the steps branch")


async def team_members(hubspot: HubSpotClient, team_id: str) -> list[str]:
    raise NotImplementedError("connector.onboarding.owners comes from the steps branch")


async def owner_info(hubspot: HubSpotClient, owner_id: str) -> OwnerInfo:
    raise NotImplementedError("connector.onboarding.owners comes from the steps branch")
