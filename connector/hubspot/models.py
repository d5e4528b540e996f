"""Typed results of the HubSpot client, parsed leniently from the API's JSON.

HubSpot says to treat every field of its answers as optional (API_NOTES_HUBSPOT §6, error
shape), so each ``from_api`` takes what is there and leaves the rest ``None``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from connector.errors import scrub


def parse_datetime(value: Any) -> datetime | None:
    """An ISO-8601 string or epoch milliseconds as an aware UTC datetime (``None`` if neither)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def to_epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds of an ISO string or an epoch-ms value (``None`` if neither)."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    parsed = parse_datetime(value)
    if parsed is None:
        return None
    return round(parsed.timestamp() * 1000)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class HubSpotObject:
    """One CRM record (contact, company, note …)."""

    id: str
    properties: dict[str, str | None]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    archived: bool = False
    archived_at: datetime | None = None
    new: bool | None = None
    """Batch upsert only: ``True`` if the record was created, ``False`` if it was updated."""
    input_index: int | None = None
    """Batch writes only: the position, in the caller's inputs, of the input this answers."""

    @classmethod
    def from_api(cls, data: Mapping[str, Any], *, input_index: int | None = None) -> HubSpotObject:
        props = data.get("properties") or {}
        return cls(
            id=str(data.get("id", "")),
            properties={str(k): _str_or_none(v) for k, v in props.items()},
            created_at=parse_datetime(data.get("createdAt")),
            updated_at=parse_datetime(data.get("updatedAt")),
            archived=bool(data.get("archived", False)),
            archived_at=parse_datetime(data.get("archivedAt")),
            new=data.get("new") if isinstance(data.get("new"), bool) else None,
            input_index=input_index,
        )


@dataclass(frozen=True, slots=True)
class RecordError:
    """One input that HubSpot refused, inside a batch that may have partly succeeded."""

    index: int | None
    """Position of the input in the caller's list (``None`` if HubSpot's error named no input)."""
    id: str | None
    """The input's id: a record id, or the ``id_property`` value (an email for upserts)."""
    email: str | None
    trace_id: str | None
    """The ``objectWriteTraceId`` the client gave the input."""
    status: int | None
    category: str | None
    code: str | None
    message: str
    existing_id: str | None = None
    """For a conflict: the id of the record that already exists."""


@dataclass(slots=True)
class BatchResult:
    """A batch call's outcome, split per record: what was done and what was refused."""

    results: list[HubSpotObject] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)

    @property
    def new_ids(self) -> list[str]:
        """Ids of the records an upsert created (``new: true``)."""
        return [r.id for r in self.results if r.new]

    @property
    def ok(self) -> bool:
        return not self.errors

    def extend(self, other: BatchResult) -> None:
        self.results.extend(other.results)
        self.errors.extend(other.errors)


@dataclass(frozen=True, slots=True)
class PropertyOption:
    label: str
    value: str
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class PropertyDef:
    """A property's definition (``/crm/properties/…``)."""

    name: str
    label: str
    type: str
    field_type: str
    group_name: str | None = None
    description: str | None = None
    options: tuple[PropertyOption, ...] = ()
    read_only: bool = False
    calculated: bool = False
    hubspot_defined: bool = False
    has_unique_value: bool = False
    archived: bool = False

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> PropertyDef:
        meta = data.get("modificationMetadata") or {}
        return cls(
            name=str(data.get("name", "")),
            label=str(data.get("label", "")),
            type=str(data.get("type", "")),
            field_type=str(data.get("fieldType", "")),
            group_name=_str_or_none(data.get("groupName")),
            description=_str_or_none(data.get("description")) or None,
            options=tuple(
                PropertyOption(
                    label=str(o.get("label", "")),
                    value=str(o.get("value", "")),
                    hidden=bool(o.get("hidden", False)),
                )
                for o in data.get("options") or []
            ),
            read_only=bool(meta.get("readOnlyValue", False)),
            calculated=bool(data.get("calculated", False)),
            hubspot_defined=bool(data.get("hubspotDefined", False)),
            has_unique_value=bool(data.get("hasUniqueValue", False)),
            archived=bool(data.get("archived", False)),
        )


@dataclass(frozen=True, slots=True)
class Owner:
    """A HubSpot user who can own records; ``id`` goes into ``hubspot_owner_id``."""

    id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    user_id: str | None
    archived: bool = False
    team_ids: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Owner:
        return cls(
            id=str(data.get("id", "")),
            email=_str_or_none(data.get("email")),
            first_name=_str_or_none(data.get("firstName")),
            last_name=_str_or_none(data.get("lastName")),
            user_id=_str_or_none(data.get("userId")),
            archived=bool(data.get("archived", False)),
            team_ids=tuple(str(t.get("id")) for t in data.get("teams") or [] if "id" in t),
        )


@dataclass(frozen=True, slots=True)
class AssociationLabel:
    """An association type between two object types (``category`` + ``type_id``)."""

    category: str
    type_id: int
    label: str | None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> AssociationLabel:
        return cls(
            category=str(data.get("category", "")),
            type_id=int(data.get("typeId", 0)),
            label=_str_or_none(data.get("label")) or None,
        )


@dataclass(frozen=True, slots=True)
class Association:
    """One associated record, with the association types that link it."""

    to_id: str
    types: tuple[AssociationLabel, ...] = ()


@dataclass(slots=True)
class AssociationWriteResult:
    """The outcome of a batch association write."""

    done: int = 0
    errors: list[RecordError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AccountDetails:
    """``/account-info/…/details``: the portal id and, for the daily cap, its time zone."""

    portal_id: int | None
    time_zone: str | None
    currency: str | None
    account_type: str | None
    data_hosting_location: str | None
    ui_domain: str | None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> AccountDetails:
        portal = data.get("portalId")
        return cls(
            portal_id=int(portal)
            if isinstance(portal, int | str) and str(portal).isdigit()
            else None,
            time_zone=_str_or_none(data.get("timeZone")),
            currency=_str_or_none(data.get("companyCurrency")),
            account_type=_str_or_none(data.get("accountType")),
            data_hosting_location=_str_or_none(data.get("dataHostingLocation")),
            ui_domain=_str_or_none(data.get("uiDomain")),
        )


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What HubSpot says about the credential: its scopes and the account it belongs to."""

    kind: Literal["oauth", "static"]
    scopes: frozenset[str]
    hub_id: int | None = None
    app_id: int | None = None
    user_id: str | None = None
    expires_in: int | None = None

    @classmethod
    def from_api(cls, kind: Literal["oauth", "static"], data: Mapping[str, Any]) -> TokenInfo:
        def num(*keys: str) -> int | None:
            for key in keys:
                value = data.get(key)
                if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
                    return int(value)
            return None

        user = data.get("user_id", data.get("userId"))
        return cls(
            kind=kind,
            scopes=frozenset(str(s) for s in data.get("scopes") or []),
            hub_id=num("hub_id", "hubId"),
            app_id=num("app_id", "appId"),
            user_id=_str_or_none(user),
            expires_in=num("expires_in", "expiresIn"),
        )


_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]+>")
_NAMING_KEYS = ("objectWriteTraceId", "objectWriteTraceIds", "ids", "id", "emails", "email")


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, list | tuple | set | frozenset):
        for item in value:
            if isinstance(item, str | int):
                yield str(item)
    elif isinstance(value, str | int):
        yield str(value)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """HubSpot's error body (every field optional, per its docs), or a non-JSON answer's text.

    ``message`` has been through :func:`~connector.errors.scrub`; ``raw`` (not in the repr) is
    the body as received.

    ``category`` is ``category`` or ``errorType``; ``contexts`` holds the top-level ``context``
    and each ``errors[].context`` that is an object (the docs also show strings there).
    """

    message: str
    category: str | None = None
    sub_category: str | None = None
    correlation_id: str | None = None
    policy_name: str | None = None
    codes: tuple[str, ...] = ()
    contexts: tuple[Mapping[str, Any], ...] = ()
    raw: Mapping[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, content: bytes, headers: Mapping[str, str] | None = None) -> ErrorBody:
        correlation = (headers or {}).get("x-hubspot-correlation-id")
        try:
            data = json.loads(content) if content else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            text = " ".join(_TAGS.sub(" ", content.decode("utf-8", "replace")).split())
            message = f"non-JSON answer: {text[:200]}" if text else "empty answer"
            return cls(message=scrub(message), correlation_id=correlation)
        return cls.from_mapping(data, correlation_id=correlation)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, correlation_id: str | None = None
    ) -> ErrorBody:
        details = [d for d in data.get("errors") or [] if isinstance(d, Mapping)]
        contexts = [data.get("context")] + [d.get("context") for d in details]
        codes = [d.get("code") for d in details] + [d.get("subCategory") for d in details]
        sub = data.get("subCategory")
        category = data.get("category") or data.get("errorType") or data.get("error")
        if category is None and data.get("status") not in (None, "error"):
            category = data.get("status")  # the OAuth endpoints: {"status": "BAD_REFRESH_TOKEN"}
        return cls(
            message=scrub(
                str(data.get("message") or data.get("error_description") or "no message")
            ),
            category=str(category) if isinstance(category, str) else None,
            sub_category=sub if isinstance(sub, str) else None,
            correlation_id=_str_or_none(data.get("correlationId")) or correlation_id,
            policy_name=_str_or_none(data.get("policyName")),
            codes=tuple(str(c) for c in codes if isinstance(c, str) and c),
            contexts=tuple(c for c in contexts if isinstance(c, Mapping)),
            raw=data,
        )

    @property
    def existing_id(self) -> str | None:
        """The id in "… already exists. Existing ID: N" (a 409 CONFLICT)."""
        m = _EXISTING_ID.search(self.message)
        return m.group(1) if m else None

    @property
    def code(self) -> str | None:
        return self.sub_category or (self.codes[0] if self.codes else None)

    def named(self) -> set[str]:
        """Record keys the error names: trace ids, ids and emails (emails lower-cased)."""
        found: set[str] = set()
        sources: list[Mapping[str, Any]] = [self.raw or {}, *self.contexts]
        for source in sources:
            for key in _NAMING_KEYS:
                found.update(_texts(source.get(key)))
        return {v.strip().lower() if "@" in v else v for v in found}
