"""The HubSpot sandbox's data model: object types, property definitions, records and stores.

Records are immutable versions (:class:`HsObject`): an update makes a new version, so the
search index (which may lag behind, like HubSpot's) can keep pointing at the old one. An
:class:`ObjectStore` keeps, per object type, the live records indexed by id and by lower-cased
email, a sorted id list for list paging, and a separate search view sorted by last-modified
time that is fed either at once or after an "index lag".
"""

from __future__ import annotations

import bisect
import json
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

# ---------------------------------------------------------------------------- object types

OBJECT_TYPES: tuple[str, ...] = (
    "contacts",
    "companies",
    "deals",
    "tickets",
    "notes",
    "meetings",
    "calls",
    "tasks",
    "emails",
)
ENGAGEMENTS = frozenset({"notes", "meetings", "calls", "tasks", "emails"})
TYPE_IDS: dict[str, str] = {
    "contacts": "0-1",
    "companies": "0-2",
    "deals": "0-3",
    "tickets": "0-5",
    "calls": "0-48",
    "emails": "0-49",
    "meetings": "0-47",
    "notes": "0-46",
    "tasks": "0-27",
}
_ALIASES: dict[str, str] = {v: k for k, v in TYPE_IDS.items()}
_ALIASES.update({t: t for t in OBJECT_TYPES})
SINGULAR: dict[str, str] = {t: ("company" if t == "companies" else t[:-1]) for t in OBJECT_TYPES}
_ALIASES.update({s: t for t, s in SINGULAR.items()})  # contact, company, …


def canonical_type(name: str) -> str | None:
    """``contacts``, ``contact``, ``0-1``, ``CONTACTS`` → ``contacts``; unknown → None."""
    return _ALIASES.get(name.lower())


def created_prop(object_type: str) -> str:
    return "hs_createdate" if object_type in ENGAGEMENTS else "createdate"


def modified_props(object_type: str) -> tuple[str, ...]:
    return (
        ("lastmodifieddate", "hs_lastmodifieddate")
        if object_type == "contacts"
        else ("hs_lastmodifieddate",)
    )


DEFAULT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": ("firstname", "lastname", "email", "createdate", "lastmodifieddate"),
    "companies": ("name", "domain", "createdate", "hs_lastmodifieddate"),
    "deals": ("dealname", "amount", "dealstage", "pipeline", "closedate", "createdate"),
    "tickets": ("subject", "content", "hs_pipeline", "hs_pipeline_stage", "createdate"),
}


def default_properties(object_type: str) -> tuple[str, ...]:
    base = DEFAULT_PROPERTIES.get(object_type, ("hs_createdate", "hs_lastmodifieddate"))
    extra = tuple(p for p in modified_props(object_type) if p not in base)
    return (*base, *extra, "hs_object_id")


# Free-text `query` in search looks in these (HubSpot's "default searchable properties").
SEARCHABLE: dict[str, tuple[str, ...]] = {
    "contacts": ("firstname", "lastname", "email", "phone", "company", "hs_additional_emails"),
    "companies": ("name", "domain", "website", "phone"),
    "deals": ("dealname",),
    "tickets": ("subject", "content"),
    "notes": ("hs_note_body",),
    "meetings": ("hs_meeting_title", "hs_meeting_body"),
    "calls": ("hs_call_title", "hs_call_body"),
    "tasks": ("hs_task_subject", "hs_task_body"),
    "emails": ("hs_email_subject", "hs_email_text"),
}

# ----------------------------------------------------------------------------- time helpers


def iso_ms(ms: int) -> str:
    """Epoch ms → ``2026-11-23T10:00:00.123Z``."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


_DIGITS = re.compile(r"^-?\d+$")


@lru_cache(maxsize=65536)
def parse_time_ms(value: str) -> int | None:
    """Epoch ms (as digits) or an ISO-8601 date / date-time → epoch ms; otherwise None."""
    v = value.strip()
    if not v:
        return None
    if _DIGITS.match(v):
        return int(v)
    try:
        if len(v) == 10:
            d = date.fromisoformat(v)
            return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def parse_number(value: str) -> float | None:
    try:
        f = float(value)
    except ValueError:
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


# ------------------------------------------------------------------------------- properties

PROPERTY_TYPES: dict[str, tuple[str, ...]] = {
    "string": ("text", "textarea", "html", "file", "phonenumber", "select", "radio"),
    "number": ("number", "calculation_equation"),
    "date": ("date",),
    "datetime": ("date",),
    "enumeration": ("select", "radio", "checkbox", "booleancheckbox"),
    "bool": ("booleancheckbox",),
    "phone_number": ("phonenumber",),
}


@dataclass
class PropertyDef:
    """One property of an object type, as ``/crm/properties`` describes it."""

    name: str
    label: str
    type: str = "string"
    field_type: str = "text"
    group_name: str = "contactinformation"
    options: list[dict[str, Any]] = field(default_factory=list)
    read_only: bool = False
    calculated: bool = False
    has_unique_value: bool = False
    hubspot_defined: bool = True
    description: str = ""
    created_ms: int = 0
    updated_ms: int = 0

    def option_values(self) -> set[str]:
        return {str(o["value"]) for o in self.options}

    def to_json(self, owner_options: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        options = owner_options if owner_options is not None else self.options
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": self.description,
            "groupName": self.group_name,
            "options": options,
            "displayOrder": -1,
            "calculated": self.calculated,
            "externalOptions": self.name == "hubspot_owner_id",
            "hasUniqueValue": self.has_unique_value,
            "hidden": False,
            "hubspotDefined": self.hubspot_defined,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
            },
            "formField": not self.read_only,
            "createdAt": iso_ms(self.created_ms),
            "updatedAt": iso_ms(self.updated_ms),
            "archived": False,
            "dataSensitivity": "non_sensitive",
        }


def _opts(*values: str | tuple[str, str]) -> list[dict[str, Any]]:
    out = []
    for i, v in enumerate(values):
        value, label = (v, v.replace("_", " ").title()) if isinstance(v, str) else v
        out.append({"label": label, "value": value, "displayOrder": i, "hidden": False})
    return out


LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
LEAD_STATUSES = (
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
)
DEAL_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)


def _p(name: str, label: str, type_: str = "string", ft: str = "text", **kw: Any) -> PropertyDef:
    return PropertyDef(name=name, label=label, type=type_, field_type=ft, **kw)


def _common(object_type: str, group: str) -> list[PropertyDef]:
    """Properties every object type has: id, create/modify stamps and the owner."""
    ro: dict[str, Any] = {"read_only": True, "group_name": group}
    props = [
        _p("hs_object_id", "Record ID", "number", "number", **ro),
        _p(created_prop(object_type), "Create Date", "datetime", "date", **ro),
        _p("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", **ro),
        _p("hubspot_owner_id", "Owner", "enumeration", "select", group_name=group),
    ]
    if object_type == "contacts":
        props.append(_p("lastmodifieddate", "Last Modified Date", "datetime", "date", **ro))
    if object_type not in ENGAGEMENTS:
        props.append(
            _p("hs_merged_object_ids", "Merged Record IDs", "enumeration", "checkbox", **ro)
        )
    return props


def _standard_properties() -> dict[str, list[PropertyDef]]:
    g = "contactinformation"
    calc: dict[str, Any] = {"read_only": True, "calculated": True, "group_name": "deal_information"}
    contacts = [
        *_common("contacts", g),
        _p("email", "Email", group_name=g, has_unique_value=False),
        _p("firstname", "First Name", group_name=g),
        _p("lastname", "Last Name", group_name=g),
        _p("phone", "Phone Number", "string", "phonenumber", group_name=g),
        _p("mobilephone", "Mobile Phone Number", "string", "phonenumber", group_name=g),
        _p("company", "Company Name", group_name=g),
        _p("website", "Website URL", group_name=g),
        _p("jobtitle", "Job Title", group_name=g),
        _p("city", "City", group_name=g),
        _p("country", "Country/Region", group_name=g),
        _p("address", "Street Address", group_name=g),
        _p("zip", "Postal Code", group_name=g),
        _p(
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            group_name=g,
            options=_opts(*LIFECYCLE_STAGES),
        ),
        _p(
            "hs_lead_status",
            "Lead Status",
            "enumeration",
            "radio",
            group_name="sales_properties",
            options=_opts(*LEAD_STATUSES),
        ),
        _p(
            "hs_email_optout",
            "Unsubscribed from all email",
            "bool",
            "booleancheckbox",
            group_name="emailinformation",
            options=_opts(("true", "Yes"), ("false", "No")),
        ),
        _p(
            "hs_additional_emails",
            "Additional email addresses",
            "enumeration",
            "checkbox",
            read_only=True,
            group_name=g,
        ),
        _p("hs_total_deal_value", "Total Deal Value", "number", "number", **calc),
        _p("num_associated_deals", "Associated Deals", "number", "number", **calc),
    ]
    gc = "companyinformation"
    companies = [
        *_common("companies", gc),
        _p("name", "Name", group_name=gc),
        _p("domain", "Company Domain Name", group_name=gc),
        _p("website", "Website URL", group_name=gc),
        _p("phone", "Phone Number", "string", "phonenumber", group_name=gc),
        _p("industry", "Industry", group_name=gc),
        _p("city", "City", group_name=gc),
        _p("country", "Country/Region", group_name=gc),
        _p("numberofemployees", "Number of Employees", "number", "number", group_name=gc),
        _p("annualrevenue", "Annual Revenue", "number", "number", group_name=gc),
        _p(
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            group_name=gc,
            options=_opts(*LIFECYCLE_STAGES),
        ),
        _p(
            "num_associated_contacts",
            "Associated Contacts",
            "number",
            "number",
            read_only=True,
            calculated=True,
            group_name=gc,
        ),
    ]
    gd = "dealinformation"
    deals = [
        *_common("deals", gd),
        _p("dealname", "Deal Name", group_name=gd),
        _p("amount", "Amount", "number", "number", group_name=gd),
        _p(
            "dealstage",
            "Deal Stage",
            "enumeration",
            "radio",
            group_name=gd,
            options=_opts(*DEAL_STAGES),
        ),
        _p(
            "pipeline",
            "Pipeline",
            "enumeration",
            "select",
            group_name=gd,
            options=_opts(("default", "Sales Pipeline")),
        ),
        _p("closedate", "Close Date", "datetime", "date", group_name=gd),
        _p(
            "dealtype",
            "Deal Type",
            "enumeration",
            "radio",
            group_name=gd,
            options=_opts("newbusiness", "existingbusiness"),
        ),
        _p(
            "num_associated_contacts",
            "Number of Contacts",
            "number",
            "number",
            read_only=True,
            calculated=True,
            group_name=gd,
        ),
    ]
    gt = "ticketinformation"
    tickets = [
        *_common("tickets", gt),
        _p("subject", "Ticket name", group_name=gt),
        _p("content", "Ticket description", "string", "textarea", group_name=gt),
        _p(
            "hs_pipeline",
            "Pipeline",
            "enumeration",
            "select",
            group_name=gt,
            options=_opts(("0", "Support Pipeline")),
        ),
        _p(
            "hs_pipeline_stage",
            "Ticket status",
            "enumeration",
            "radio",
            group_name=gt,
            options=_opts(
                ("1", "New"), ("2", "Waiting on contact"), ("3", "Waiting on us"), ("4", "Closed")
            ),
        ),
        _p(
            "hs_ticket_priority",
            "Priority",
            "enumeration",
            "select",
            group_name=gt,
            options=_opts("LOW", "MEDIUM", "HIGH", "URGENT"),
        ),
    ]
    ge = "engagement"

    def eng(t: str, *extra: PropertyDef) -> list[PropertyDef]:
        return [
            *_common(t, ge),
            _p("hs_timestamp", "Activity date", "datetime", "date", group_name=ge),
            _p("hs_attachment_ids", "Attached file IDs", "enumeration", "checkbox", group_name=ge),
            *extra,
        ]

    notes = eng("notes", _p("hs_note_body", "Note body", "string", "html", group_name=ge))
    meetings = eng(
        "meetings",
        _p("hs_meeting_title", "Meeting name", group_name=ge),
        _p("hs_meeting_body", "Meeting description", "string", "html", group_name=ge),
        _p("hs_internal_meeting_notes", "Internal notes", "string", "html", group_name=ge),
        _p("hs_meeting_external_url", "External URL", group_name=ge),
        _p("hs_meeting_location", "Location", group_name=ge),
        _p("hs_meeting_start_time", "Start Time", "datetime", "date", group_name=ge),
        _p("hs_meeting_end_time", "End Time", "datetime", "date", group_name=ge),
        _p(
            "hs_meeting_outcome",
            "Meeting outcome",
            "enumeration",
            "select",
            group_name=ge,
            options=_opts("SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED"),
        ),
    )
    calls = eng(
        "calls",
        _p("hs_call_title", "Call Title", group_name=ge),
        _p("hs_call_body", "Call notes", "string", "html", group_name=ge),
        _p("hs_call_duration", "Call duration", "number", "number", group_name=ge),
        _p(
            "hs_call_direction",
            "Call direction",
            "enumeration",
            "select",
            group_name=ge,
            options=_opts("INBOUND", "OUTBOUND"),
        ),
        _p(
            "hs_call_status",
            "Call status",
            "enumeration",
            "select",
            group_name=ge,
            options=_opts(
                "BUSY",
                "CALLING_CRM_USER",
                "CANCELED",
                "COMPLETED",
                "CONNECTING",
                "FAILED",
                "IN_PROGRESS",
                "NO_ANSWER",
                "QUEUED",
                "RINGING",
            ),
        ),
        _p("hs_call_to_number", "To number", group_name=ge),
        _p("hs_call_from_number", "From number", group_name=ge),
    )
    tasks = eng(
        "tasks",
        _p("hs_task_subject", "Task Title", group_name=ge),
        _p("hs_task_body", "Notes", "string", "html", group_name=ge),
        _p(
            "hs_task_status",
            "Task Status",
            "enumeration",
            "select",
            group_name=ge,
            options=_opts("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"),
        ),
        _p(
            "hs_task_priority",
            "Priority",
            "enumeration",
            "select",
            group_name=ge,
            options=_opts("NONE", "LOW", "MEDIUM", "HIGH"),
        ),
        _p(
            "hs_task_type",
            "Task Type",
            "enumeration",
            "select",
            group_name=ge,
            options=_opts("CALL", "EMAIL", "TODO"),
        ),
    )
    emails = eng(
        "emails",
        _p("hs_email_subject", "Email subject", group_name=ge),
        _p("hs_email_text", "Email body", "string", "textarea", group_name=ge),
        _p("hs_email_html", "Email HTML body", "string", "html", group_name=ge),
        _p(
            "hs_email_direction",
            "Email direction",
            "enumeration",
            "select",
            group_name=ge,
            options=_opts("EMAIL", "INCOMING_EMAIL", "FORWARDED_EMAIL"),
        ),
        _p(
            "hs_email_status",
            "Email send status",
            "enumeration",
            "select",
            group_name=ge,
            options=_opts("BOUNCED", "FAILED", "SCHEDULED", "SENDING", "SENT"),
        ),
    )
    return {
        "contacts": contacts,
        "companies": companies,
        "deals": deals,
        "tickets": tickets,
        "notes": notes,
        "meetings": meetings,
        "calls": calls,
        "tasks": tasks,
        "emails": emails,
    }


def standard_properties(now_ms: int) -> dict[str, dict[str, PropertyDef]]:
    """A fresh copy of the seeded property definitions per object type."""
    out: dict[str, dict[str, PropertyDef]] = {}
    for t, defs in _standard_properties().items():
        for d in defs:
            d.created_ms = d.updated_ms = now_ms
        out[t] = {d.name: d for d in defs}
    return out


# Properties HubSpot computes; never written by the API.
COMPUTED = frozenset(
    {
        "hs_object_id",
        "createdate",
        "hs_createdate",
        "lastmodifieddate",
        "hs_lastmodifieddate",
        "num_associated_deals",
        "hs_total_deal_value",
        "num_associated_contacts",
    }
)

# ------------------------------------------------------------------------------ associations


@dataclass(frozen=True)
class AssocType:
    """One HUBSPOT_DEFINED association type (a direction between two object types)."""

    from_type: str
    to_type: str
    type_id: int
    label: str | None
    inverse: int
    primary: bool = False


_ASSOC_ROWS: list[tuple[str, str, int, int, str | None]] = [
    # from, to, typeId, inverse typeId, label
    ("contacts", "companies", 279, 280, None),
    ("contacts", "companies", 1, 2, "Primary"),
    ("deals", "contacts", 3, 4, None),
    ("deals", "companies", 341, 342, None),
    ("deals", "companies", 5, 6, "Primary"),
    ("tickets", "contacts", 16, 15, None),
    ("tickets", "companies", 339, 340, None),
    ("tickets", "companies", 26, 25, "Primary"),
    ("tickets", "deals", 28, 27, None),
    ("notes", "contacts", 202, 201, None),
    ("notes", "companies", 190, 189, None),
    ("notes", "deals", 214, 213, None),
    ("notes", "tickets", 228, 227, None),
    ("calls", "contacts", 194, 193, None),
    ("calls", "companies", 182, 181, None),
    ("calls", "deals", 206, 205, None),
    ("emails", "contacts", 198, 197, None),
    ("emails", "companies", 186, 185, None),
    ("emails", "deals", 210, 209, None),
    ("meetings", "contacts", 200, 199, None),
    ("meetings", "companies", 188, 187, None),
    ("meetings", "deals", 212, 211, None),
    ("tasks", "contacts", 204, 203, None),
    ("tasks", "companies", 192, 191, None),
    ("tasks", "deals", 216, 215, None),
]


def _assoc_types() -> dict[int, AssocType]:
    out: dict[int, AssocType] = {}
    for f, t, tid, inv, label in _ASSOC_ROWS:
        primary = label == "Primary"
        out[tid] = AssocType(f, t, tid, label, inv, primary)
        out[inv] = AssocType(t, f, inv, label, tid, primary)
    return out


ASSOC_TYPES: dict[int, AssocType] = _assoc_types()
# The type "associate/default" and inline creation without a type use, per direction.
DEFAULT_ASSOC: dict[tuple[str, str], int] = {
    (a.from_type, a.to_type): a.type_id
    for a in ASSOC_TYPES.values()
    if not a.primary or (a.from_type, a.to_type) == ("deals", "companies")
}
# The unlabeled sibling a primary association always comes with.
PRIMARY_SIBLING: dict[int, int] = {
    a.type_id: next(
        b.type_id
        for b in ASSOC_TYPES.values()
        if (b.from_type, b.to_type) == (a.from_type, a.to_type) and not b.primary
    )
    for a in ASSOC_TYPES.values()
    if a.primary
}


def assoc_types_between(from_type: str, to_type: str) -> list[AssocType]:
    return sorted(
        (a for a in ASSOC_TYPES.values() if (a.from_type, a.to_type) == (from_type, to_type)),
        key=lambda a: a.type_id,
    )


def assoc_name(a: AssocType) -> str:
    """v3-style association type name: ``contact_to_company`` (primary or only type), else
    ``contact_to_company_unlabeled``."""
    base = f"{SINGULAR[a.from_type]}_to_{SINGULAR[a.to_type]}"
    only = len(assoc_types_between(a.from_type, a.to_type)) == 1
    return base if a.primary or only else f"{base}_unlabeled"


# ------------------------------------------------------------------------------------ records


@dataclass(slots=True)
class HsObject:
    """One version of a record. Never mutated once stored: updates make a new version."""

    id: int
    props: dict[str, str | None]
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None

    def evolve(self, changes: Mapping[str, str | None], now_ms: int) -> HsObject:
        return HsObject(self.id, {**self.props, **changes}, self.created_ms, now_ms)


def _insort(lst: list[Any], item: Any) -> None:
    if not lst or lst[-1] <= item:
        lst.append(item)
    else:
        bisect.insort(lst, item)


def _remove_sorted(lst: list[Any], item: Any) -> None:
    i = bisect.bisect_left(lst, item)
    if i < len(lst) and lst[i] == item:
        del lst[i]


class ObjectStore:
    """Live records of one object type, plus the (possibly lagging) search view."""

    def __init__(self, object_type: str) -> None:
        self.type = object_type
        self.live: dict[int, HsObject] = {}
        self.archived: dict[int, HsObject] = {}
        self.ids: list[int] = []  # sorted live ids, for list paging
        self.by_email: dict[str, int] = {}  # lower(email), incl. merged-away secondary emails
        self.merged_into: dict[int, int] = {}
        # search view
        self.sx: dict[int, HsObject] = {}
        self.sx_ids: list[int] = []
        self.sx_mod: list[tuple[int, int]] = []  # (updated_ms, id)
        self._pending: deque[tuple[int, int, HsObject | None]] = deque()

    def __len__(self) -> int:
        return len(self.live)

    def get(self, object_id: int, *, follow_merges: bool = True) -> HsObject | None:
        obj = self.live.get(object_id)
        if obj is None and follow_merges:
            seen = 0
            while object_id in self.merged_into and seen < 300:
                object_id = self.merged_into[object_id]
                seen += 1
            obj = self.live.get(object_id)
        return obj

    def put(self, obj: HsObject, now_ms: int, lag_ms: int) -> None:
        """Store a new version (create or update) and schedule it for the search view."""
        old = self.live.get(obj.id)
        self.live[obj.id] = obj
        if old is None:
            self.archived.pop(obj.id, None)
            _insort(self.ids, obj.id)
        self._reindex_email(old, obj)
        self._to_index(obj.id, obj, now_ms, lag_ms)

    def remove(self, object_id: int, now_ms: int, lag_ms: int, *, archive: bool) -> HsObject:
        obj = self.live.pop(object_id)
        _remove_sorted(self.ids, object_id)
        self._reindex_email(obj, None)
        if archive:
            self.archived[object_id] = HsObject(
                obj.id, obj.props, obj.created_ms, now_ms, archived_ms=now_ms
            )
        self._to_index(object_id, None, now_ms, lag_ms)
        return obj

    def _reindex_email(self, old: HsObject | None, new: HsObject | None) -> None:
        old_email = (old.props.get("email") or "").lower() if old else ""
        new_email = (new.props.get("email") or "").lower() if new else ""
        if old_email and old_email != new_email and self.by_email.get(old_email) == old.id:  # type: ignore[union-attr]
            del self.by_email[old_email]
        if new_email and new is not None:
            self.by_email[new_email] = new.id

    def _to_index(self, object_id: int, obj: HsObject | None, now_ms: int, lag_ms: int) -> None:
        if lag_ms <= 0 and not self._pending:
            self._apply(object_id, obj)
        else:
            self._pending.append((now_ms + max(lag_ms, 0), object_id, obj))

    def sync_index(self, now_ms: int) -> None:
        """Make every change whose index lag has elapsed visible to search."""
        while self._pending and self._pending[0][0] <= now_ms:
            _, object_id, obj = self._pending.popleft()
            self._apply(object_id, obj)

    def _apply(self, object_id: int, obj: HsObject | None) -> None:
        old = self.sx.get(object_id)
        if old is not None:
            _remove_sorted(self.sx_mod, (old.updated_ms, object_id))
        if obj is None:
            if old is not None:
                del self.sx[object_id]
                _remove_sorted(self.sx_ids, object_id)
            return
        self.sx[object_id] = obj
        _insort(self.sx_mod, (obj.updated_ms, object_id))
        if old is None:
            _insort(self.sx_ids, object_id)


# ------------------------------------------------------------------------------- validation

EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


@dataclass(frozen=True)
class PropError:
    """One invalid property value: HubSpot's ``error`` code, message and property name."""

    code: str
    message: str
    name: str

    def detail(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "code": self.code,
            "context": {"propertyName": [self.name]},
        }

    def legacy(self) -> dict[str, Any]:
        return {
            "isValid": False,
            "message": self.message,
            "error": self.code,
            "name": self.name,
            "localizedErrorMessage": self.message,
        }


def to_str(value: Any) -> str | None:
    """JSON input value → HubSpot's stored string (bools lower-case, integral floats plain)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    return str(value)


def normalise_value(
    d: PropertyDef, raw: str, owner_ids: Iterable[str]
) -> tuple[str | None, PropError | None]:
    """Check one non-empty value against its definition; return the stored form or an error."""
    name = d.name
    if name == "email":
        v = raw.strip().lower()
        if not EMAIL_RE.match(v):
            return None, PropError("INVALID_EMAIL", f"Email address {raw} is invalid", name)
        return v, None
    if d.type == "number":
        n = parse_number(raw)
        if n is None:
            return None, PropError("INVALID_LONG", f"{raw} was not a valid number.", name)
        return raw.strip(), None
    if d.type in ("datetime", "date"):
        ms = parse_time_ms(raw)
        if ms is None:
            code = "INVALID_DATE" if d.type == "date" else "INVALID_DATETIME"
            return None, PropError(code, f"{raw} was not a valid {d.type}.", name)
        if d.type == "date":
            if ms % 86_400_000:
                msg = (
                    f"{raw} is at {ms % 86_400_000} ms past midnight; dates must be at midnight UTC"
                )
                return None, PropError("INVALID_DATE", msg, name)
            return iso_ms(ms)[:10], None
        return iso_ms(ms), None
    if d.type == "bool":
        v = raw.strip().lower()
        if v not in ("true", "false"):
            return None, PropError("INVALID_BOOLEAN", f"{raw} was not a valid boolean.", name)
        return v, None
    if d.type == "enumeration":
        allowed = set(owner_ids) if name == "hubspot_owner_id" else d.option_values()
        if d.field_type == "checkbox" and not allowed:
            return raw, None  # free multi-value (ids lists)
        values = raw.split(";") if d.field_type == "checkbox" else [raw]
        bad = [v for v in values if v not in allowed]
        if bad:
            msg = f"{bad[0]} was not one of the allowed options: {sorted(allowed)}"
            return None, PropError("INVALID_OPTION", msg, name)
        return raw, None
    return raw, None


# ----------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A HubSpot error answer: status code plus the standard error body fields."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        sub_category: str | None = None,
        context: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.errors = errors
        self.sub_category = sub_category
        self.context = context

    def body(self, correlation_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id,
            "category": self.category,
        }
        if self.sub_category:
            out["subCategory"] = self.sub_category
        if self.errors:
            out["errors"] = self.errors
        if self.context:
            out["context"] = self.context
        return out


def validation_error(errors: list[PropError]) -> ApiError:
    """HubSpot's 400 for invalid property values (legacy JSON list in the message, too)."""
    legacy = json.dumps([e.legacy() for e in errors], separators=(",", ":"))
    return ApiError(
        400,
        "VALIDATION_ERROR",
        f"Property values were not valid: {legacy}",
        errors=[e.detail() for e in errors],
    )
