"""Records and value rules of the Brevo sandbox: contacts, attributes, lists, processes, ….

Pure data and validation, no HTTP: what an e-mail, an SMS number or a date attribute must look
like, and how a written value is coerced to its attribute's type — or silently dropped, as
Brevo does with unknown attributes and wrong-typed values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import Any

import phonenumbers

JSONDict = dict[str, Any]

DEFAULT_API_KEY = "xkeysib-sandbox-connector"
"""The key every sandbox starts with; its name is ``connector``."""

MAX_IMPORT_BYTES = 10 * 1024 * 1024
"""``/contacts/import``: ``fileBody`` / ``jsonBody`` at most 10 MB (SPEC24)."""

MAX_LIST_BATCH = 150
MAX_WEBHOOKS = 40

CATEGORIES = ("normal", "transactional", "category", "calculated", "global")
ATTRIBUTE_TYPES = ("text", "date", "float", "boolean", "id", "category", "multiple-choice", "user")

TRANSACTIONAL_EVENTS = frozenset(
    {
        "sent",
        "request",
        "delivered",
        "hardBounce",
        "softBounce",
        "blocked",
        "spam",
        "invalid",
        "deferred",
        "click",
        "opened",
        "uniqueOpened",
        "unsubscribed",
    }
)
MARKETING_EVENTS = frozenset(
    {
        "spam",
        "opened",
        "click",
        "hardBounce",
        "softBounce",
        "unsubscribed",
        "listAddition",
        "delivered",
        "contactUpdated",
        "contactDeleted",
    }
)
INBOUND_EVENTS = frozenset({"inboundEmailProcessed", "reply"})
WEBHOOK_EVENTS = {
    "transactional": TRANSACTIONAL_EVENTS,
    "marketing": MARKETING_EVENTS,
    "inbound": INBOUND_EVENTS,
}


class BrevoError(Exception):
    """An API error: answered as ``{"code", "message"[, "metadata"]}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, metadata: JSONDict | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.metadata = metadata

    def body(self) -> JSONDict:
        out: JSONDict = {"code": self.code, "message": self.message}
        if self.metadata is not None:
            out["metadata"] = self.metadata
        return out


def bad(message: str, code: str = "invalid_parameter") -> BrevoError:
    return BrevoError(400, code, message)


def not_found(message: str) -> BrevoError:
    return BrevoError(404, "document_not_found", message)


# --- records ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Contact:
    """A contact. ``attributes`` holds every attribute except EMAIL, SMS and EXT_ID."""

    id: int
    email: str | None
    ext_id: str | None
    sms: str | None
    attributes: JSONDict
    email_blacklisted: bool
    sms_blacklisted: bool
    list_ids: set[int]
    created_at: datetime
    modified_at: datetime

    def all_attributes(self) -> JSONDict:
        """The attributes as the API shows them (SMS and EXT_ID included)."""
        out = dict(self.attributes)
        if self.sms is not None:
            out["SMS"] = self.sms
        if self.ext_id is not None:
            out["EXT_ID"] = self.ext_id
        return out

    def copy(self) -> Contact:
        return Contact(
            self.id,
            self.email,
            self.ext_id,
            self.sms,
            dict(self.attributes),
            self.email_blacklisted,
            self.sms_blacklisted,
            set(self.list_ids),
            self.created_at,
            self.modified_at,
        )


@dataclass(frozen=True, slots=True)
class ContactEvent:
    """What happened to a contact, for the change listeners (the later webhook sender).

    ``name`` is a Brevo webhook event name: ``contactCreated`` (no webhook of its own; a create
    with lists also yields ``listAddition``), ``contactUpdated``, ``contactDeleted``,
    ``listAddition`` (``list_ids`` = the lists joined) or ``listRemoval``. ``changed`` holds the
    new values of the attributes that changed (``None`` = cleared).
    """

    name: str
    contact_id: int
    at: datetime
    list_ids: tuple[int, ...] = ()
    changed: JSONDict = field(default_factory=dict)


ChangeListener = Callable[[ContactEvent, Contact, str], None]
"""Called with (event, a snapshot of the contact, the name of the API key; "" for UI edits)."""


@dataclass(slots=True)
class AttributeDef:
    name: str
    category: str
    type: str
    enumeration: list[JSONDict] | None = None
    options: list[str] | None = None
    value: str | None = None

    def to_json(self) -> JSONDict:
        # category attributes show type "text" with their enumeration (SPEC24 example)
        out: JSONDict = {
            "name": self.name,
            "category": self.category,
            "type": "text" if self.type == "category" else self.type,
        }
        if self.enumeration is not None:
            out["enumeration"] = self.enumeration
        if self.options is not None:
            out["multiCategoryOptions"] = self.options
        if self.value is not None:
            out["calculatedValue"] = self.value
        return out


@dataclass(slots=True)
class Folder:
    id: int
    name: str


@dataclass(slots=True)
class ContactList:
    id: int
    name: str
    folder_id: int
    created_at: datetime
    members: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Process:
    """An asynchronous job (``/contacts/import`` …) as ``GET /processes/{id}`` shows it."""

    id: int
    name: str
    status: str = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    export_url: str | None = None
    stats: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> JSONDict:
        out: JSONDict = {"id": self.id, "status": self.status, "name": self.name}
        if self.export_url is not None:
            out["export_url"] = self.export_url
        return out


@dataclass(slots=True)
class Webhook:
    id: int
    url: str
    type: str
    events: list[str]
    description: str
    batched: bool
    auth: JSONDict | None
    headers: list[JSONDict] | None
    channel: str
    domain: str | None
    created_at: datetime
    modified_at: datetime


@dataclass(slots=True)
class StoredEvent:
    """A ``POST /events`` call as received."""

    event_name: str
    identifiers: JSONDict
    contact_id: int | None
    event_date: str
    event_properties: JSONDict
    contact_properties: JSONDict
    api_key_name: str
    received_at: datetime


@dataclass(slots=True)
class SentEmail:
    """A transactional e-mail captured in the outbox instead of being sent."""

    message_id: str
    payload: JSONDict
    api_key_name: str
    at: datetime

    @property
    def to(self) -> list[str]:
        return [str(r.get("email", "")) for r in self.payload.get("to") or []]

    @property
    def subject(self) -> str | None:
        s = self.payload.get("subject")
        return s if isinstance(s, str) else None

    def to_json(self) -> JSONDict:
        return {
            "messageId": self.message_id,
            "apiKeyName": self.api_key_name,
            "at": self.at.isoformat(),
            **self.payload,
        }


# --- value rules ------------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_SMS_STRIP = re.compile(r"[\s().\-/]")
_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$")
EVENT_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def normalize_email(value: object) -> str:
    """Trimmed, lower-cased e-mail, or 400 ``Invalid email address``."""
    if isinstance(value, str):
        email = value.strip().lower()
        if len(email) <= 254 and _EMAIL_RE.match(email):
            return email
    raise bad("Invalid email address")


def normalize_sms(value: object) -> str:
    """An SMS number with its country code, as digits (``33612345678``).

    Accepted: ``+CC…``, ``00CC…`` and ``CC…`` (SDK create_contact note); a national number
    (leading single 0) or an unknown country code is 400 ``Invalid phone number``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        raw = str(value)
    elif isinstance(value, str):
        raw = _SMS_STRIP.sub("", value)
    else:
        raise bad("Invalid phone number")
    if raw.startswith("+"):
        digits = raw[1:]
    elif raw.startswith("00"):
        digits = raw[2:]
    elif raw.startswith("0"):
        raise bad("Invalid phone number")
    else:
        digits = raw
    if not digits.isdigit() or not 6 <= len(digits) <= 15:
        raise bad("Invalid phone number")
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        raise bad("Invalid phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise bad("Invalid phone number")
    return digits


def parse_datetime(value: str, name: str) -> datetime:
    """A ``modifiedSince``-style date-time; without a zone it is UTC. 400 if unparsable."""
    text = value.strip()
    # an un-encoded "+02:00" arrives as " 02:00"
    if re.match(r"^.+T\d\d:\d\d(:\d\d(\.\d+)?)? \d\d:?\d\d$", text):
        text = text[: text.rindex(" ")] + "+" + text[text.rindex(" ") + 1 :]
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise bad(f"{name} is not a valid date-time (YYYY-MM-DDTHH:mm:ss.SSSZ)") from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def format_datetime(dt: datetime, tz: tzinfo) -> str:
    """``2024-05-01T17:05:03.123Z`` (or with the account's offset)."""
    text = dt.astimezone(tz).isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class _Ignore:
    """Marker: the value does not fit the attribute and is silently dropped."""


IGNORE = _Ignore()


def coerce_value(attr: AttributeDef, value: object) -> object:
    """The value as stored for ``attr``, or :data:`IGNORE` when Brevo would drop it."""
    t = attr.type
    if attr.category in ("calculated", "global"):
        return IGNORE
    if isinstance(value, bool):
        if t == "boolean":
            return value
        return IGNORE
    if t in ("text", "user"):
        if isinstance(value, str):
            return value
        if isinstance(value, int | float):
            return str(value)
        return IGNORE
    if t == "id":
        return value if isinstance(value, str | int) else IGNORE
    if t == "date":
        if isinstance(value, str) and (m := _DATE_RE.match(value.strip())):
            try:
                return date(int(m[1]), int(m[2]), int(m[3])).isoformat()
            except ValueError:
                return IGNORE
        return IGNORE
    if t == "float":
        if isinstance(value, int | float):
            return value
        if isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"-?\d+", text):
                return int(text)
            if re.fullmatch(r"-?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?", text):
                return float(text)
        return IGNORE
    if t == "boolean":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return IGNORE
    if t == "category":
        for item in attr.enumeration or []:
            if value == item["value"] or (
                isinstance(value, str)
                and (
                    value.strip() == str(item["value"])
                    or value.strip().lower() == str(item["label"]).lower()
                )
            ):
                return item["value"]
        return IGNORE
    if t == "multiple-choice":
        options = attr.options or []
        chosen = [value] if isinstance(value, str) else value
        if isinstance(chosen, list) and all(isinstance(v, str) and v in options for v in chosen):
            return list(chosen)
        return IGNORE
    return IGNORE


def is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


STANDARD_ATTRIBUTES: tuple[AttributeDef, ...] = (
    AttributeDef("EMAIL", "normal", "text"),
    AttributeDef("FIRSTNAME", "normal", "text"),
    AttributeDef("LASTNAME", "normal", "text"),
    AttributeDef("SMS", "normal", "text"),
    AttributeDef("EXT_ID", "normal", "text"),
    AttributeDef("WHATSAPP", "normal", "text"),
    AttributeDef("LANDLINE_NUMBER", "normal", "text"),
    AttributeDef("JOB_TITLE", "normal", "text"),
    AttributeDef("LINKEDIN", "normal", "text"),
    AttributeDef("OPT_IN", "normal", "boolean"),
    AttributeDef(
        "DOUBLE_OPT-IN",
        "category",
        "category",
        enumeration=[{"value": 1, "label": "Yes"}, {"value": 2, "label": "No"}],
    ),
)
"""What a new Brevo account has; custom ones (LIFECYCLE_STAGE, …) must be created."""

IDENTITY_ATTRIBUTES = frozenset({"EMAIL", "SMS", "EXT_ID"})
