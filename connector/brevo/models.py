"""Plain dataclasses for what the Brevo client returns and takes.

The SDK's pydantic models are not passed on: they keep unknown fields, skip validation and
change with every generated release. These are parsed from Brevo's JSON by the client, with
timestamps as aware ``datetime`` values (UTC when Brevo sends no offset).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

IdentifierKind = Literal["email", "id", "ext_id", "phone"]
"""How a contact is named in a call: by email, Brevo id, ``EXT_ID`` or ``SMS`` number."""

AttributeType = Literal[
    "text", "date", "float", "boolean", "id", "category", "multiple-choice", "user"
]
AttributeCategory = Literal["normal", "transactional", "category", "calculated", "global"]
WebhookType = Literal["transactional", "marketing", "inbound"]


def parse_datetime(value: Any) -> datetime | None:
    """Brevo's ISO-8601 timestamps (``…Z`` or ``…+02:00``) as aware datetimes; None if absent."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BrevoContact:
    """One Brevo contact as listed or read; ``attributes`` as Brevo names them (UPPERCASE)."""

    id: int
    email: str | None
    ext_id: str | None
    attributes: dict[str, Any]
    list_ids: list[int]
    email_blacklisted: bool
    sms_blacklisted: bool
    created_at: datetime
    modified_at: datetime

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrevoContact:
        attributes = dict(raw.get("attributes") or {})
        ext_id = raw.get("ext_id") or raw.get("extId") or attributes.get("EXT_ID")
        created = parse_datetime(raw.get("createdAt")) or _EPOCH
        return cls(
            id=int(raw["id"]),
            email=raw.get("email") or None,
            ext_id=str(ext_id) if ext_id not in (None, "") else None,
            attributes=attributes,
            list_ids=[int(i) for i in raw.get("listIds") or []],
            email_blacklisted=bool(raw.get("emailBlacklisted", False)),
            sms_blacklisted=bool(raw.get("smsBlacklisted", False)),
            created_at=created,
            modified_at=parse_datetime(raw.get("modifiedAt")) or created,
        )


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One contact for ``POST /contacts/import`` (``jsonBody``); attribute names UPPERCASE."""

    email: str | None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    ext_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        attributes = dict(self.attributes)
        item: dict[str, Any] = {}
        if self.email is not None:
            item["email"] = self.email
        if self.ext_id is not None:
            # Brevo names the identifier both ways: the EXT_ID attribute and `ext_id`.
            attributes["EXT_ID"] = self.ext_id
            item["ext_id"] = self.ext_id
        item["attributes"] = attributes
        return item


@dataclass(frozen=True, slots=True)
class BrevoProcess:
    """A background process (an import): ``status`` is queued | in_process | completed | failed."""

    id: int
    name: str
    status: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in {"completed", "failed", "cancelled"}

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrevoProcess:
        return cls(
            id=int(raw["id"]),
            name=str(raw.get("name", "")),
            status=str(raw.get("status", "")),
            info=dict(raw.get("info") or {}),
        )


@dataclass(frozen=True, slots=True)
class BrevoAttribute:
    """A contact attribute defined in the account."""

    name: str
    category: str
    type: str | None
    enumeration: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrevoAttribute:
        enum = {int(e["value"]): str(e.get("label", "")) for e in raw.get("enumeration") or []}
        kind = raw.get("type")
        return cls(
            name=str(raw["name"]),
            category=str(raw.get("category", "")),
            type=str(kind) if kind is not None else None,
            enumeration=enum,
        )


@dataclass(frozen=True, slots=True)
class BrevoList:
    """A contact list."""

    id: int
    name: str
    folder_id: int | None
    unique_subscribers: int | None
    total_subscribers: int | None
    total_blacklisted: int | None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrevoList:
        def opt_int(key: str) -> int | None:
            value = raw.get(key)
            return int(value) if value is not None else None

        return cls(
            id=int(raw["id"]),
            name=str(raw.get("name", "")),
            folder_id=opt_int("folderId"),
            unique_subscribers=opt_int("uniqueSubscribers"),
            total_subscribers=opt_int("totalSubscribers"),
            total_blacklisted=opt_int("totalBlacklisted"),
        )


@dataclass(slots=True)
class ListMembershipResult:
    """What ``add_to_list`` / ``remove_from_list`` did: contacts done, contacts refused."""

    success: set[str | int] = field(default_factory=set)
    failure: set[str | int] = field(default_factory=set)
    process_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """A sender or recipient of a transactional email."""

    email: str
    name: str | None = None

    def to_json(self) -> dict[str, str]:
        return {"email": self.email, **({"name": self.name} if self.name else {})}


@dataclass(frozen=True, slots=True)
class BrevoWebhook:
    """A webhook registered in the account."""

    id: int
    url: str
    type: str
    events: list[str]
    description: str | None = None
    batched: bool = False

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrevoWebhook:
        description = raw.get("description")
        return cls(
            id=int(raw["id"]),
            url=str(raw.get("url", "")),
            type=str(raw.get("type", "")),
            events=[str(e) for e in raw.get("events") or []],
            description=str(description) if description is not None else None,
            batched=bool(raw.get("batched", False)),
        )


@dataclass(frozen=True, slots=True)
class BrevoAccount:
    """The account behind the API key (``GET /account``); ``raw`` keeps the whole answer."""

    email: str | None
    company_name: str | None
    plans: list[dict[str, Any]]
    raw: dict[str, Any]

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrevoAccount:
        return cls(
            email=raw.get("email"),
            company_name=raw.get("companyName"),
            plans=[dict(p) for p in raw.get("plan") or []],
            raw=dict(raw),
        )
