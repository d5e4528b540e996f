"""The ``onboarding:`` section of the config file (issue: post-sync hooks).

Keys are a contract with users' config files: ``enabled``, ``enroll``, ``sender``, ``company``,
``owners`` (``strategy``, ``owner_ids``, ``team_id``, ``rules``, ``default_owner_id``),
``calendar`` (``provider``, ``timezone``, ``working_hours``, ``min_notice_hours``, …),
``email`` (``template``, ``llm``, …), plus the workflow controls (``quiet_hours``,
``max_emails_per_contact``, ``reenroll``) and the step runner's retry policy.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not an IANA time zone: write one such as Europe/Oslo or America/New_York"
        ) from None
    return value


def _clock(value: Any) -> Any:
    if isinstance(value, str):
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
            raise ValueError(f"{value!r} is not a time of day: write HH:MM, such as 09:00")
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 09:00 as the sexagesimal integer 540
        return time(value // 60, value % 60) if 0 <= value < 24 * 60 else value
    return value


class Person(_Section):
    email: str
    name: str | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v.strip()):
            raise ValueError(f"{v!r} is not an e-mail address")
        return v.strip()


class CompanyInfo(_Section):
    name: str
    description: str = ""
    website: str | None = None


class OwnerRule(_Section):
    """First match wins: every ``when`` property must equal (case-insensitively) one of the
    listed values; ``owner_id`` (or ``owner_ids`` round-robin) is then assigned."""

    when: dict[str, str | list[str]]
    owner_id: str | None = None
    owner_ids: list[str] = []

    @model_validator(mode="after")
    def _target(self) -> OwnerRule:
        if not self.owner_id and not self.owner_ids:
            raise ValueError("a rule needs owner_id or owner_ids")
        return self


class OwnerSettings(_Section):
    strategy: Literal["round_robin", "least_loaded", "rules"] = "round_robin"
    owner_ids: list[str] = []
    team_id: str | None = None
    """round-robin over the members of this HubSpot team instead of ``owner_ids``"""
    rules: list[OwnerRule] = []
    default_owner_id: str | None = None
    """for ``rules`` when none matches (else the round-robin over ``owner_ids``)"""

    @field_validator("owner_ids", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        return [str(x) for x in v] if isinstance(v, list) else v


class WorkingHours(_Section):
    days: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]
    start: time = time(9, 0)
    end: time = time(17, 0)

    _start = field_validator("start", "end", mode="before")(classmethod(lambda cls, v: _clock(v)))

    @model_validator(mode="after")
    def _order(self) -> WorkingHours:
        if self.end <= self.start:
            raise ValueError("working_hours.end must be after working_hours.start")
        if not self.days:
            raise ValueError("working_hours.days needs at least one day")
        return self


class GoogleCredentials(_Section):
    """OAuth 2.0 (refresh-token flow) for the Google Calendar API."""

    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr
    token_url: str = "https://oauth2.googleapis.com/token"
    base_url: str = "https://www.googleapis.com/calendar/v3"
    calendars: dict[str, str] = {}
    """HubSpot owner id → calendar id (default: the owner's e-mail address)"""


class CalendarSettings(_Section):
    provider: Literal["hubspot_meetings", "google"] = "hubspot_meetings"
    timezone: str = "UTC"
    working_hours: WorkingHours = WorkingHours()
    min_notice_hours: float = Field(default=24, ge=0)
    horizon_days: int = Field(default=14, ge=1, le=90)
    duration_minutes: int = Field(default=60, ge=15, le=480)
    title: str = "Onboarding call: {contact_name} × {company_name}"
    video_link: str | None = None
    """put in the invitation, e.g. a fixed Zoom/Meet room URL"""
    google: GoogleCredentials | None = None

    _tz = field_validator("timezone")(classmethod(lambda cls, v: _zone(v)))

    @model_validator(mode="after")
    def _credentials(self) -> CalendarSettings:
        if self.provider == "google" and self.google is None:
            raise ValueError(
                "provider google needs calendar.google: {client_id, client_secret, refresh_token}"
            )
        return self


class LlmSettings(_Section):
    base_url: str
    model: str
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=20, gt=0, le=120)


class EmailSettings(_Section):
    template: str = "mappings/templates/welcome.html.j2"
    subject: str = "Welcome to {company_name}, {first_name}"
    llm: LlmSettings | None = None
    tags: list[str] = ["onboarding", "welcome"]
    output_dir: str | None = None
    """also write each rendered email here as an .html file (the demo names it)"""


class QuietHours(_Section):
    """Emails go out only on these days and hours (in ``calendar.timezone``); others wait."""

    days: list[Weekday] = list(WEEKDAYS)
    start: time = time(8, 0)
    end: time = time(20, 0)

    _clock = field_validator("start", "end", mode="before")(classmethod(lambda cls, v: _clock(v)))


class OnboardingSettings(_Section):
    enabled: bool = False
    enroll: Literal["new_only", "existing_too"] = "new_only"
    sender: Person
    company: CompanyInfo
    owners: OwnerSettings = OwnerSettings()
    calendar: CalendarSettings = CalendarSettings()
    email: EmailSettings = EmailSettings()
    send_window: QuietHours | None = None
    """quiet hours: when set, emails are only sent inside this window"""
    max_emails_per_contact: int = Field(default=1, ge=1)
    reenroll: bool = False
    """a contact deleted and created again (a new HubSpot id) is onboarded again"""
    max_attempts: int = Field(default=6, ge=1, le=50)
    retry_base_seconds: float = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _owners(self) -> OnboardingSettings:
        o = self.owners
        if o.strategy in ("round_robin", "least_loaded") and not (o.owner_ids or o.team_id):
            raise ValueError(f"owners.strategy {o.strategy} needs owners.owner_ids or team_id")
        if o.strategy == "rules" and not o.rules:
            raise ValueError("owners.strategy rules needs owners.rules")
        return self


__all__ = [
    "WEEKDAYS",
    "CalendarSettings",
    "CompanyInfo",
    "EmailSettings",
    "GoogleCredentials",
    "LlmSettings",
    "OnboardingSettings",
    "OwnerRule",
    "OwnerSettings",
    "Person",
    "QuietHours",
    "Weekday",
    "WorkingHours",
]
