"""PLACEHOLDER (engineer A implements this module; the lead takes A's file at merge).

Only the interface the runner calls, so that imports work on this branch before the merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from connector.onboarding.calendar import BookedCall
from connector.onboarding.owners import OwnerInfo
from connector.onboarding.settings import OnboardingSettings


@dataclass(frozen=True)
class WelcomeContext:
    contact: Mapping[str, str | None]
    email: str
    first_name: str | None
    last_name: str | None
    owner: OwnerInfo | None
    call: BookedCall | None
    timezone: str


@dataclass(frozen=True)
class WelcomeEmail:
    subject: str
    html: str
    source: Literal["template", "llm"]
    fallback_reason: str | None


async def compose_welcome(
    settings: OnboardingSettings,
    ctx: WelcomeContext,
    *,
    base_dir: Path,
    http: httpx.AsyncClient | None = None,
) -> WelcomeEmail:
    raise NotImplementedError("connector.onboarding.compose comes from the steps branch")
