"""The Brevo sandbox's account: contacts with their indexes, attributes, lists and processes.

:class:`BrevoState` is the whole in-memory account. Its contact operations are the API's rules
(identifiers unique, wrong-typed or unknown attributes silently dropped, modifiedAt bumped by
attribute and list-membership changes, e-mail change un-blocklisting) and raise
:class:`~connector.sandbox.brevo_model.BrevoError` where Brevo answers an error. The HTTP layer
(:mod:`connector.sandbox.brevo`) only parses requests and renders these results.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

import httpx

from connector.sandbox.brevo_crm import CrmStore
from connector.sandbox.brevo_model import (
    DEFAULT_API_KEY,
    IGNORE,
    MAX_LIST_BATCH,
    STANDARD_ATTRIBUTES,
    AttributeDef,
    BrevoError,
    ChangeListener,
    Contact,
    ContactEvent,
    ContactList,
    Folder,
    JSONDict,
    Process,
    SentEmail,
    StoredEvent,
    Webhook,
    bad,
    coerce_value,
    format_datetime,
    is_empty,
    normalize_email,
    normalize_sms,
    not_found,
)
from connector.sandbox.brevo_seed import generate_contacts
from connector.sandbox.common import CallLog, Faults, RollingWindow
from connector.sandbox.webhook_sender import BREVO_RETRY, BrevoWebhooks, WebhookSender

Plan = Literal["general", "advanced"]

# (limit, period in seconds) per endpoint family on the general plan; "advanced" doubles them
# (API_NOTES_BREVO §2). The 3,600,000/h of /smtp/email equals 1,000/s over an hour and is left
# out: it can never bind.
RATE_LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    "contacts": ((10, 1.0), (36_000, 3600.0)),
    "events": ((10, 1.0), (36_000, 3600.0)),
    "smtp_email": ((1_000, 1.0),),
    "smtp_emails": ((2, 1.0), (7_200, 3600.0)),
    "smtp_other": ((300, 3600.0),),
    "other": ((100, 3600.0),),
}


def rate_family(method: str, path: str) -> str:
    """The rate-limit family of a ``/v3/…`` call."""
    p = path[3:] if path.startswith("/v3/") else path
    if p == "/contacts" or p.startswith("/contacts/"):
        return "contacts"
    if p == "/events" or p.startswith("/events/"):
        return "events"
    if method == "POST" and p == "/smtp/email":
        return "smtp_email"
    if method == "GET" and p.startswith("/smtp/blockedContacts"):
        return "smtp_email"
    if method == "GET" and p.startswith("/smtp/emails"):
        return "smtp_emails"
    if p.startswith("/smtp/"):
        return "smtp_other"
    return "other"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Patch:
    """The changes one write asks for, already validated (``None`` attribute = clear it)."""

    email: str | None = None
    sms: str | None = None
    sms_set: bool = False
    ext_id: str | None = None
    ext_id_set: bool = False
    attrs: dict[str, object] = field(default_factory=dict)
    email_blacklisted: bool | None = None
    sms_blacklisted: bool | None = None
    add_lists: set[int] = field(default_factory=set)
    remove_lists: set[int] = field(default_factory=set)


@dataclass(slots=True)
class ImportJob:
    process: Process
    api_key_name: str
    list_ids: list[int]
    json_body: list[Any] | None = None
    file_body: str | None = None
    file_url: str | None = None
    update_existing: bool = True
    empty_attributes: bool = False
    email_blacklist: bool = False
    sms_blacklist: bool = False
    notify_url: str | None = None


@dataclass(eq=False)
class BrevoState:
    """One Brevo account in memory, plus the sandbox's knobs (faults, rate limits, clock).

    ``clock`` gives wall time (createdAt/modifiedAt, modifiedSince); ``monotonic`` feeds the
    rate windows. ``api_keys`` maps each key to its name. ``import_delay`` is how long an import
    stays queued/in process; ``notify_imports`` lets imports POST to their ``notifyUrl``.
    ``batch_endpoint`` = ``"deprecated"`` answers ``POST /contacts/batch`` with 400 (as after
    2026-10-30), ``"enabled"`` performs it. ``events_create_contacts`` makes ``POST /events``
    create a missing contact from ``email_id`` [UNVERIFIED either way; off by default].
    ``noop_writes_bump`` bumps modifiedAt even on writes that change nothing [UNVERIFIED].
    ``http_transport`` (tests) carries the import's ``fileUrl`` fetch and ``notifyUrl`` POST.

    Marketing webhooks (``POST /webhooks`` or :meth:`add_webhook`) are delivered by
    ``webhook_sender`` (its knobs: ``retry_scale``, ``timeout``, ``max_in_flight``…);
    ``webhook_batch_window`` is the seconds a ``batched`` webhook accumulates events (Brevo:
    5 minutes); ``webhook_event_style`` names events in payloads ``"snake"``
    (``contact_updated``) or ``"camel"`` (``contactUpdated``, as registered).
    """

    clock: Callable[[], datetime] = _utcnow
    monotonic: Callable[[], float] = time.monotonic
    api_keys: dict[str, str] = field(default_factory=lambda: {DEFAULT_API_KEY: "connector"})
    plan: Plan = "general"
    rate_limits: bool = True
    import_delay: float = 0.2
    notify_imports: bool = False
    batch_endpoint: Literal["deprecated", "enabled"] = "deprecated"
    events_create_contacts: bool = False
    noop_writes_bump: bool = False
    tz: tzinfo = UTC
    account_email: str = "owner@sandbox-company.example"
    faults: Faults = field(default_factory=Faults)
    calls: CallLog = field(default_factory=CallLog)
    listeners: list[ChangeListener] = field(default_factory=list)
    http_transport: httpx.AsyncBaseTransport | None = None
    webhook_batch_window: float = 0.5
    webhook_event_style: Literal["snake", "camel"] = "snake"

    def __post_init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.windows: dict[str, list[RollingWindow]] = {}
        self.webhook_sender = WebhookSender(
            name="brevo", policy=BREVO_RETRY, transport=self.http_transport
        )
        self.webhook_events = BrevoWebhooks(self, self.webhook_sender)
        self.reset()

    # --- lifecycle ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to a fresh account: standard attributes, folder 1, lists 10-12, no contacts."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.contacts: dict[int, Contact] = {}
        self._order: list[int] = []  # contact ids in creation order (ids only grow)
        self._by_email: dict[str, int] = {}
        self._by_ext: dict[str, int] = {}
        self._by_sms: dict[str, int] = {}
        self._next_contact = 1
        self._version = 0
        self._query_cache: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()
        self.attributes: dict[str, AttributeDef] = {
            a.name: AttributeDef(a.name, a.category, a.type, a.enumeration, a.options, a.value)
            for a in STANDARD_ATTRIBUTES
        }
        now = self.clock()
        self.folders: dict[int, Folder] = {1: Folder(1, "Your first folder")}
        self.lists: dict[int, ContactList] = {
            i: ContactList(i, name, 1, now)
            for i, name in ((10, "All contacts"), (11, "Qualified leads"), (12, "Customers"))
        }
        self._next_folder, self._next_list = 2, 13
        self.processes: dict[int, Process] = {}
        self._next_process = 1
        self.webhooks: dict[int, Webhook] = {}
        self.next_webhook_id = 1
        self.events: list[StoredEvent] = []
        self.outbox: list[SentEmail] = []
        self.idempotency_keys: dict[str, str] = {}
        self.crm = CrmStore(clock=self.clock)
        self.faults.clear()
        self.calls.clear()
        self.reset_windows()

    def reset_windows(self) -> None:
        factor = 2 if self.plan == "advanced" else 1
        self.windows = {
            fam: [RollingWindow(limit * factor, period) for limit, period in spec]
            for fam, spec in RATE_LIMITS.items()
        }

    def add_api_key(self, key: str, name: str) -> None:
        """Accept ``key``; changes made with it carry ``name`` (Brevo's ``api_key_name``)."""
        self.api_keys[key] = name

    def set_plan(self, plan: Plan) -> None:
        """Switch between the general and the advanced (doubled) rate limits."""
        self.plan = plan
        self.reset_windows()

    def key_name(self, key: str | None) -> str | None:
        return None if key is None else self.api_keys.get(key)

    def now(self) -> datetime:
        """The clock, at the millisecond precision Brevo shows (so filters match the API)."""
        t = self.clock()
        return t.replace(microsecond=t.microsecond // 1000 * 1000)

    def fmt(self, dt: datetime) -> str:
        return format_datetime(dt, self.tz)

    # --- contacts: lookup ----------------------------------------------------------------------

    def get(self, email: str) -> Contact | None:
        """The contact with this e-mail (any case), or None."""
        cid = self._by_email.get(email.strip().lower())
        return None if cid is None else self.contacts[cid]

    def find(self, identifier: str, identifier_type: str | None = None) -> Contact:
        """Resolve ``/contacts/{identifier}`` as Brevo does; 404 ``document_not_found``."""
        ident = identifier.strip()
        cid: int | None = None
        t = identifier_type
        if t is None:
            if "@" in ident:
                cid = self._by_email.get(ident.lower())
            elif ident.isdigit():
                cid = int(ident) if int(ident) in self.contacts else self._sms_id(ident)
            elif ident.startswith("+"):
                cid = self._sms_id(ident)
        elif t == "email_id":
            cid = self._by_email.get(ident.lower())
        elif t == "contact_id":
            if not ident.isdigit():
                raise bad("Invalid contact id")
            cid = int(ident) if int(ident) in self.contacts else None
        elif t == "ext_id":
            cid = self._by_ext.get(ident)
        elif t == "phone_id":
            cid = self._sms_id(ident)
        elif t in ("whatsapp_id", "landline_number_id"):
            name = "WHATSAPP" if t == "whatsapp_id" else "LANDLINE_NUMBER"
            digits = ident.lstrip("+")
            cid = next(
                (
                    c.id
                    for c in self.contacts.values()
                    if str(c.attributes.get(name, "")).lstrip("+") == digits
                ),
                None,
            )
        else:
            raise bad("identifierType is not valid")
        if cid is None:
            raise not_found("Contact does not exist")
        return self.contacts[cid]

    def _sms_id(self, raw: str) -> int | None:
        try:
            return self._by_sms.get(normalize_sms(raw))
        except BrevoError:
            return None

    def query_contacts(
        self,
        *,
        limit: int,
        offset: int,
        sort: str = "desc",
        modified_since: datetime | None = None,
        created_since: datetime | None = None,
        list_ids: Iterable[int] = (),
        ids: Iterable[int] = (),
        equals: tuple[str, str] | None = None,
    ) -> tuple[list[Contact], int]:
        """One page of contacts in creation order (``sort``) and the count of all matches.

        Without filters a page costs O(limit). A filtered id list is computed once and kept
        until the next write, so paging through it does not rescan the store.
        """
        lists = tuple(sorted(set(list_ids)))
        wanted = tuple(sorted(set(ids)))
        seq: list[int]
        if not (modified_since or created_since or lists or wanted or equals):
            seq = self._order
        elif wanted and not (modified_since or created_since or lists or equals):
            seq = [i for i in wanted if i in self.contacts]
        else:
            key = (self._version, modified_since, created_since, lists, wanted, equals)
            cached = self._query_cache.get(key)
            if cached is None:
                cached = [
                    cid
                    for cid in (wanted or self._order)
                    if cid in self.contacts
                    and self._matches(
                        self.contacts[cid], modified_since, created_since, lists, equals
                    )
                ]
                self._query_cache[key] = cached
                while len(self._query_cache) > 8:
                    self._query_cache.popitem(last=False)
            seq = cached
        count = len(seq)
        if sort == "asc":
            page_ids = seq[offset : offset + limit]
        else:
            hi = count - offset
            page_ids = seq[max(hi - limit, 0) : max(hi, 0)][::-1]
        return [self.contacts[i] for i in page_ids], count

    @staticmethod
    def _matches(
        c: Contact,
        modified_since: datetime | None,
        created_since: datetime | None,
        lists: tuple[int, ...],
        equals: tuple[str, str] | None,
    ) -> bool:
        if modified_since is not None and c.modified_at < modified_since:
            return False
        if created_since is not None and c.created_at < created_since:
            return False
        if lists and not any(lid in c.list_ids for lid in lists):
            return False
        if equals is not None:
            name, want = equals
            value = c.email if name == "EMAIL" else c.all_attributes().get(name)
            if isinstance(value, bool):
                value = "true" if value else "false"
            if value is None or str(value).lower() != want.lower():
                return False
        return True

    def contact_json(self, c: Contact) -> JSONDict:
        out: JSONDict = {}
        if c.email is not None:
            out["email"] = c.email
        out.update(
            id=c.id,
            emailBlacklisted=c.email_blacklisted,
            smsBlacklisted=c.sms_blacklisted,
            createdAt=self.fmt(c.created_at),
            modifiedAt=self.fmt(c.modified_at),
            listIds=sorted(c.list_ids),
            attributes=c.all_attributes(),
        )
        return out

    # --- contacts: writes ---------------------------------------------------------------------

    def make_patch(
        self, attributes: object, *, empty_clears: bool = True, upper: bool = False
    ) -> Patch:
        """Validate ``attributes``: EMAIL/SMS/EXT_ID strictly, the rest silently filtered.

        Unknown attributes and values that do not fit their attribute's type are dropped, as
        Brevo documents. ``upper`` upper-cases the names (CSV headers).
        """
        if attributes is None:
            attributes = {}
        if not isinstance(attributes, Mapping):
            raise bad("attributes should be an object")
        p = Patch()
        for raw_name, value in attributes.items():
            name = str(raw_name).strip().upper() if upper else str(raw_name)
            if name == "EMAIL":
                if not is_empty(value):
                    p.email = normalize_email(value)
            elif name == "SMS":
                if is_empty(value):
                    if empty_clears:
                        p.sms, p.sms_set = None, True
                else:
                    p.sms, p.sms_set = normalize_sms(value), True
            elif name == "EXT_ID":
                if is_empty(value):
                    if empty_clears:
                        p.ext_id, p.ext_id_set = None, True
                elif isinstance(value, str | int) and not isinstance(value, bool):
                    p.ext_id, p.ext_id_set = str(value), True
            elif (attr := self.attributes.get(name)) is not None:
                if is_empty(value):
                    if empty_clears:
                        p.attrs[name] = None
                    continue
                coerced = coerce_value(attr, value)
                if coerced is not IGNORE:
                    p.attrs[name] = coerced
        return p

    def check_lists(self, ids: object, name: str = "listIds") -> set[int]:
        if ids is None:
            return set()
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise bad(f"{name} should be an array of integers")
        missing = [i for i in ids if i not in self.lists]
        if missing and name != "unlinkListIds":
            raise bad(f"List ID(s) not found: {', '.join(map(str, missing))}")
        return set(ids)

    def conflicts(self, c: Contact | None, p: Patch) -> list[str]:
        own = None if c is None else c.id
        dup: list[str] = []
        if p.email is not None and self._by_email.get(p.email, own) != own:
            dup.append("email")
        if p.sms is not None and self._by_sms.get(p.sms, own) != own:
            dup.append("SMS")
        if p.ext_id is not None and self._by_ext.get(p.ext_id, own) != own:
            dup.append("ext_id")
        return dup

    def create_contact(self, body: JSONDict, api_key_name: str) -> int | None:
        """``POST /contacts``: the new id, or None when ``updateEnabled`` updated a contact."""
        p = self.make_patch(body.get("attributes"))
        ident_email: str | None = None
        if body.get("email") is not None:
            ident_email = normalize_email(body["email"])
            if p.email is None:
                p.email = ident_email
        ext = body.get("ext_id")
        if ext is not None:
            if not isinstance(ext, str | int) or isinstance(ext, bool):
                raise bad("ext_id should be a string")
            p.ext_id, p.ext_id_set = str(ext), True
        self._flags(p, body)
        p.add_lists = self.check_lists(body.get("listIds"))
        if p.email is None and p.ext_id is None and p.sms is None:
            raise BrevoError(
                400, "missing_parameter", "email, ext_id or attributes.SMS is required"
            )
        found = {
            "email": self._by_email.get(ident_email or p.email or ""),
            "ext_id": self._by_ext.get(p.ext_id or ""),
            "SMS": self._by_sms.get(p.sms or ""),
        }
        matched = [k for k, v in found.items() if v is not None]
        if matched and body.get("updateEnabled") is not True:
            raise _duplicate("create", matched)
        if matched:
            target = self.contacts[next(v for v in found.values() if v is not None)]
            if dup := self.conflicts(target, p):
                raise _duplicate("update", dup)
            self.apply(target, p, api_key_name)
            return None
        return self.insert(p, api_key_name).id

    def update_contact(self, c: Contact, body: JSONDict, api_key_name: str) -> None:
        """``PUT /contacts/{identifier}``."""
        p = self.make_patch(body.get("attributes"))
        if "ext_id" in body:
            ext = body["ext_id"]
            if ext is not None and (not isinstance(ext, str | int) or isinstance(ext, bool)):
                raise bad("ext_id should be a string")
            p.ext_id, p.ext_id_set = (None if is_empty(ext) else str(ext)), True
        self._flags(p, body)
        p.add_lists = self.check_lists(body.get("listIds"))
        p.remove_lists = self.check_lists(body.get("unlinkListIds"), "unlinkListIds")
        if dup := self.conflicts(c, p):
            raise BrevoError(
                400, "duplicate_parameter", "Contact already exist", {"duplicate_identifiers": dup}
            )
        self.apply(c, p, api_key_name)

    @staticmethod
    def _flags(p: Patch, body: Mapping[str, Any]) -> None:
        for key in ("emailBlacklisted", "smsBlacklisted"):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, bool):
                raise bad(f"{key} should be a boolean")
            if key == "emailBlacklisted":
                p.email_blacklisted = value
            else:
                p.sms_blacklisted = value

    def insert(self, p: Patch, api_key_name: str) -> Contact:
        """Create a contact from a validated patch; 400 if an identifier is taken."""
        if dup := self.conflicts(None, p):
            raise _duplicate("create", dup)
        now = self.now()
        c = Contact(
            id=self._next_contact,
            email=None,
            ext_id=None,
            sms=None,
            attributes={},
            email_blacklisted=bool(p.email_blacklisted),
            sms_blacklisted=bool(p.sms_blacklisted),
            list_ids=set(),
            created_at=now,
            modified_at=now,
        )
        self._next_contact += 1
        self.contacts[c.id] = c
        self._order.append(c.id)
        self.apply(c, p, api_key_name, created=True)
        return c

    def apply(self, c: Contact, p: Patch, api_key_name: str, *, created: bool = False) -> bool:
        """Write a patch (conflicts already checked); bump modifiedAt and notify if it changed."""
        changed: JSONDict = {}
        if p.email is not None and p.email != c.email:
            if c.email is not None:
                self._by_email.pop(c.email, None)
            self._by_email[p.email] = c.id
            c.email = p.email
            changed["EMAIL"] = p.email
            # "If a blocklisted contact's email address is updated, it is going to remove that
            # blocklisting" (SDK update_contact note)
            if not created and c.email_blacklisted and p.email_blacklisted is not True:
                c.email_blacklisted = False
                changed["emailBlacklisted"] = False
        if p.sms_set and p.sms != c.sms:
            if c.sms is not None:
                self._by_sms.pop(c.sms, None)
            if p.sms is not None:
                self._by_sms[p.sms] = c.id
            c.sms = p.sms
            changed["SMS"] = p.sms
        if p.ext_id_set and p.ext_id != c.ext_id:
            if c.ext_id is not None:
                self._by_ext.pop(c.ext_id, None)
            if p.ext_id is not None:
                self._by_ext[p.ext_id] = c.id
            c.ext_id = p.ext_id
            changed["EXT_ID"] = p.ext_id
        for name, value in p.attrs.items():
            if value is None:
                if name in c.attributes:
                    del c.attributes[name]
                    changed[name] = None
            elif c.attributes.get(name) != value or name not in c.attributes:
                c.attributes[name] = value
                changed[name] = value
        if p.email_blacklisted is not None and p.email_blacklisted != c.email_blacklisted:
            c.email_blacklisted = p.email_blacklisted
            changed["emailBlacklisted"] = p.email_blacklisted
        if p.sms_blacklisted is not None and p.sms_blacklisted != c.sms_blacklisted:
            c.sms_blacklisted = p.sms_blacklisted
            changed["smsBlacklisted"] = p.sms_blacklisted
        added = sorted(p.add_lists - c.list_ids)
        removed = sorted((p.remove_lists - p.add_lists) & c.list_ids)
        for lid in added:
            c.list_ids.add(lid)
            self.lists[lid].members.add(c.id)
        for lid in removed:
            c.list_ids.discard(lid)
            if lid in self.lists:
                self.lists[lid].members.discard(c.id)
        touched = bool(changed or added or removed)
        if touched or created or self.noop_writes_bump:
            if not created:
                c.modified_at = self.now()
            self._version += 1
        if self.listeners and (touched or created):
            at = c.modified_at
            events: list[ContactEvent] = []
            if created:
                events.append(ContactEvent("contactCreated", c.id, at, changed=changed))
            elif changed:
                events.append(ContactEvent("contactUpdated", c.id, at, changed=changed))
            if added:
                events.append(ContactEvent("listAddition", c.id, at, list_ids=tuple(added)))
            if removed:
                events.append(ContactEvent("listRemoval", c.id, at, list_ids=tuple(removed)))
            self._emit(events, c, api_key_name)
        return touched

    def _emit(self, events: list[ContactEvent], c: Contact, api_key_name: str) -> None:
        for event in events:
            snapshot = c.copy()
            for listener in list(self.listeners):
                listener(event, snapshot, api_key_name)

    def delete_contact(self, c: Contact, api_key_name: str) -> None:
        """``DELETE /contacts/{identifier}``; the account owner's contact is 405."""
        if c.email is not None and c.email == self.account_email.lower():
            raise BrevoError(
                405,
                "method_not_allowed",
                "You're not allowed to delete registered email contact with Brevo",
            )
        del self.contacts[c.id]
        self._order.pop(bisect.bisect_left(self._order, c.id))
        for index, key in (
            (self._by_email, c.email),
            (self._by_sms, c.sms),
            (self._by_ext, c.ext_id),
        ):
            if key is not None:
                index.pop(key, None)
        for lid in c.list_ids:
            if lid in self.lists:
                self.lists[lid].members.discard(c.id)
        self._version += 1
        self.crm.forget_contact(c.id)
        self._emit([ContactEvent("contactDeleted", c.id, self.clock())], c, api_key_name)

    def edit_contact(
        self,
        email: str,
        attributes: Mapping[str, object],
        *,
        list_ids: Iterable[int] = (),
        unlink_list_ids: Iterable[int] = (),
        email_blacklisted: bool | None = None,
    ) -> Contact:
        """A marketer's edit in the Brevo UI: same rules as the API, ``api_key_name`` empty.

        Saving in the UI bumps modifiedAt even when no value changed; KeyError if no contact
        has this e-mail.
        """
        c = self.get(email)
        if c is None:
            raise KeyError(email)
        p = self.make_patch(dict(attributes))
        p.add_lists, p.remove_lists = set(list_ids), set(unlink_list_ids)
        p.email_blacklisted = email_blacklisted
        if dup := self.conflicts(c, p):
            raise _duplicate("update", dup)
        if not self.apply(c, p, ""):
            c.modified_at = self.now()
            self._version += 1
        return c

    # --- webhooks -----------------------------------------------------------------------------

    def add_webhook(
        self,
        url: str,
        events: Iterable[str],
        *,
        token: str | None = None,
        batched: bool = False,
        type_: str = "marketing",
        description: str = "",
    ) -> Webhook:
        """Register a webhook as ``POST /webhooks`` would (bearer ``token`` if given)."""
        now = self.clock()
        hook = Webhook(
            id=self.next_webhook_id,
            url=url,
            type=type_,
            events=list(dict.fromkeys(events)),
            description=description,
            batched=batched,
            auth=None if token is None else {"type": "bearer", "token": token},
            headers=None,
            channel="email",
            domain=None,
            created_at=now,
            modified_at=now,
        )
        self.webhooks[hook.id] = hook
        self.next_webhook_id += 1
        self.webhook_events.listen()
        return hook

    def simulate_unsubscribe(self, email: str, **campaign: Any) -> Contact:
        """A campaign recipient unsubscribes: blocklisted, ``unsubscribed`` webhook sent."""
        return self.webhook_events.simulate(email, "unsubscribed", **campaign)

    def simulate_hard_bounce(self, email: str, **campaign: Any) -> Contact:
        """A campaign e-mail hard-bounces: blocklisted, ``hardBounce`` webhook sent."""
        return self.webhook_events.simulate(email, "hardBounce", **campaign)

    def simulate_spam(self, email: str, **campaign: Any) -> Contact:
        """A recipient reports a campaign as spam: blocklisted, ``spam`` webhook sent."""
        return self.webhook_events.simulate(email, "spam", **campaign)

    def simulate_delivered(self, email: str, **campaign: Any) -> Contact:
        """A campaign e-mail reaches the contact: ``delivered`` webhook sent."""
        return self.webhook_events.engagement(email, "delivered", **campaign)

    def simulate_open(self, email: str, **campaign: Any) -> Contact:
        """The contact opens a campaign e-mail: ``opened`` webhook sent."""
        return self.webhook_events.engagement(email, "opened", **campaign)

    def simulate_click(self, email: str, **campaign: Any) -> Contact:
        """The contact clicks a link of a campaign e-mail: ``click`` webhook (with ``URL``)."""
        return self.webhook_events.engagement(email, "click", **campaign)

    # --- lists --------------------------------------------------------------------------------

    def change_list(
        self, list_id: int, body: JSONDict, api_key_name: str, *, add: bool
    ) -> JSONDict:
        """``POST /contacts/lists/{id}/contacts/add|remove`` → the ``contacts`` object."""
        lst = self.lists.get(list_id)
        if lst is None:
            raise not_found("List ID does not exist")
        if not add and body.get("all") is True:
            proc = self.new_process("REMOVE_ALL_FROM_LIST")
            for member in sorted(lst.members):
                self.apply(self.contacts[member], Patch(remove_lists={list_id}), api_key_name)
            proc.status = "completed"
            return {"processId": proc.id}
        kinds = [k for k in ("emails", "ids", "extIds") if k in body]
        if len(kinds) != 1:
            raise bad("Pass exactly one of emails, ids or extIds")
        kind = kinds[0]
        items = body[kind]
        if not isinstance(items, list) or not items:
            raise BrevoError(400, "missing_parameter", f"{kind} should be a non-empty array")
        if len(items) > MAX_LIST_BATCH:
            word = {"emails": "emails", "ids": "IDs", "extIds": "EXT_ID attributes"}[kind]
            raise BrevoError(
                400,
                "out_of_range",
                f"You can pass a maximum of {MAX_LIST_BATCH} {word} for "
                f"{'addition' if add else 'removal'} in one request",
            )
        success: list[Any] = []
        failure: list[Any] = []
        for item in items:
            cid: int | None = None
            if kind == "emails" and isinstance(item, str):
                cid = self._by_email.get(item.strip().lower())
            elif kind == "ids" and isinstance(item, int) and item in self.contacts:
                cid = item
            elif kind == "extIds" and isinstance(item, str | int):
                cid = self._by_ext.get(str(item))
            if cid is None or (cid in lst.members) == add:
                failure.append(item)
                continue
            patch = Patch(add_lists={list_id}) if add else Patch(remove_lists={list_id})
            self.apply(self.contacts[cid], patch, api_key_name)
            success.append(item)
        if not success:
            verb = "already in list" if add else "already removed from list"
            raise bad(f"Contact {verb} and/or does not exist")
        return {"success": success, "failure": failure, "total": len(items)}

    def list_json(self, lst: ContactList, *, extended: bool = False) -> JSONDict:
        blacklisted = sum(1 for cid in lst.members if self.contacts[cid].email_blacklisted)
        out: JSONDict = {
            "id": lst.id,
            "name": lst.name,
            "totalBlacklisted": blacklisted,
            "totalSubscribers": len(lst.members) - blacklisted,
            "uniqueSubscribers": len(lst.members),
            "folderId": lst.folder_id,
        }
        if extended:
            out["createdAt"] = self.fmt(lst.created_at)
            out["dynamicList"] = False
        return out

    def create_list(self, name: object, folder_id: object) -> ContactList:
        if not isinstance(name, str) or not name.strip():
            raise BrevoError(400, "missing_parameter", "name is required")
        if not isinstance(folder_id, int) or isinstance(folder_id, bool):
            raise BrevoError(400, "missing_parameter", "folderId is required")
        if folder_id not in self.folders:
            raise bad("Folder ID does not exist")
        lst = ContactList(self._next_list, name.strip(), folder_id, self.clock())
        self.lists[lst.id] = lst
        self._next_list += 1
        return lst

    def create_folder(self, name: object) -> Folder:
        if not isinstance(name, str) or not name.strip():
            raise BrevoError(400, "missing_parameter", "name is required")
        folder = Folder(self._next_folder, name.strip())
        self.folders[folder.id] = folder
        self._next_folder += 1
        return folder

    def folder_json(self, folder: Folder) -> JSONDict:
        members: set[int] = set()
        for lst in self.lists.values():
            if lst.folder_id == folder.id:
                members |= lst.members
        blacklisted = sum(1 for cid in members if self.contacts[cid].email_blacklisted)
        return {
            "id": folder.id,
            "name": folder.name,
            "totalBlacklisted": blacklisted,
            "totalSubscribers": len(members) - blacklisted,
            "uniqueSubscribers": len(members),
        }

    # --- attributes ---------------------------------------------------------------------------

    def create_attribute(self, category: str, name: str, body: JSONDict) -> AttributeDef:
        """``POST /contacts/attributes/{category}/{name}`` with Brevo's type rules."""
        name = name.strip().upper()
        if category not in ("normal", "transactional", "category", "calculated", "global"):
            raise bad("attributeCategory is not valid")
        if not name:
            raise BrevoError(400, "missing_parameter", "attributeName is required")
        if name in self.attributes:
            raise bad("Attribute name already exists")
        type_ = body.get("type")
        if category in ("calculated", "global"):
            value = body.get("value")
            if not isinstance(value, str) or not value:
                raise BrevoError(400, "missing_parameter", "value is required")
            attr = AttributeDef(name, category, "float", value=value)
        elif category == "category":
            if type_ not in (None, "category"):
                raise bad("type must be category for category attributes")
            enum = body.get("enumeration")
            if not isinstance(enum, list) or not enum:
                raise BrevoError(400, "missing_parameter", "enumeration is required")
            for item in enum:
                if (
                    not isinstance(item, dict)
                    or not isinstance(item.get("value"), int)
                    or not isinstance(item.get("label"), str)
                    or len(item["label"]) > 200
                ):
                    raise bad("enumeration items need an integer value and a label")
            items = [{"value": i["value"], "label": i["label"]} for i in enum]
            attr = AttributeDef(name, category, "category", enumeration=items)
        else:
            t = "text" if type_ is None else type_
            allowed = {
                "normal": ("text", "date", "float", "boolean", "multiple-choice", "user"),
                "transactional": ("text", "date", "float", "id"),
            }[category]
            if t not in allowed:
                raise bad(f"type {t!r} is not allowed for {category} attributes")
            options = None
            if t == "multiple-choice":
                raw = body.get("multiCategoryOptions")
                if not isinstance(raw, list) or not raw:
                    raise BrevoError(400, "missing_parameter", "multiCategoryOptions is required")
                if not all(isinstance(o, str) and 0 < len(o) <= 200 for o in raw):
                    raise bad("multiCategoryOptions must be labels of at most 200 characters")
                options = list(raw)
            attr = AttributeDef(name, category, str(t), options=options)
        self.attributes[name] = attr
        return attr

    def delete_attribute(self, category: str, name: str) -> None:
        attr = self.attributes.get(name.upper())
        if attr is None or attr.category != category:
            raise not_found("Attribute does not exist")
        del self.attributes[attr.name]
        for c in self.contacts.values():
            c.attributes.pop(attr.name, None)

    # --- processes and imports ----------------------------------------------------------------

    def new_process(self, name: str) -> Process:
        proc = Process(self._next_process, name, created_at=self.clock())
        self.processes[proc.id] = proc
        self._next_process += 1
        return proc

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background coroutine (an import) on the running loop; kept until done."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_processes(self) -> None:
        """Wait until every queued import has completed (tests and the demo)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    def run_import(self, job: ImportJob, rows: list[tuple[Patch, str | None]]) -> None:
        """Apply parsed import rows: create or update contacts and add them to the lists.

        A row is (patch, error): rows with an error (bad e-mail or SMS, no identifier,
        identifiers owned by different contacts) are skipped and counted as invalid.
        """
        stats = {"created": 0, "updated": 0, "unchanged": 0, "invalid": 0}
        for p, error in rows:
            if error is not None:
                stats["invalid"] += 1
                job.process.errors.append(error)
                continue
            p.add_lists = set(job.list_ids) & set(self.lists)
            if job.email_blacklist:
                p.email_blacklisted = True
            if job.sms_blacklist:
                p.sms_blacklisted = True
            found = [
                cid
                for cid in (
                    self._by_email.get(p.email or ""),
                    self._by_ext.get(p.ext_id or ""),
                    self._by_sms.get(p.sms or ""),
                )
                if cid is not None
            ]
            if not found:
                if p.email is None and p.ext_id is None and p.sms is None:
                    stats["invalid"] += 1
                    job.process.errors.append("row without email, ext_id or SMS")
                    continue
                self.insert(p, job.api_key_name)
                stats["created"] += 1
                continue
            target = self.contacts[found[0]]
            if not job.update_existing:
                p = Patch(add_lists=p.add_lists)
            if self.conflicts(target, p):
                stats["invalid"] += 1
                job.process.errors.append(f"identifiers of {p.email or p.ext_id or p.sms} clash")
                continue
            touched = self.apply(target, p, job.api_key_name)
            stats["updated" if touched else "unchanged"] += 1
        job.process.stats = stats

    # --- seeding ------------------------------------------------------------------------------

    def seed_contacts(self, n: int, seed: int = 0) -> list[Contact]:
        """Add ``n`` deterministic, realistic contacts created over the past 400 days.

        Every one is in list 10; about 20 % in 11 and 10 % in 12; 40 % have an SMS number.
        Fast enough for 100,000 (indexes are filled directly). Seed an empty account for a
        timeline in which creation order and ``createdAt`` agree.
        """
        out = generate_contacts(
            n,
            seed=seed,
            now=self.clock(),
            first_id=self._next_contact,
            email_taken=self._by_email.__contains__,
            sms_taken=self._by_sms.__contains__,
        )
        for c in out:
            self.contacts[c.id] = c
            self._order.append(c.id)
            if c.email is not None:
                self._by_email[c.email] = c.id
            if c.sms is not None:
                self._by_sms[c.sms] = c.id
            for lid in c.list_ids:
                self.lists[lid].members.add(c.id)
        self._next_contact += n
        self._version += 1
        return out


def _duplicate(verb: str, identifiers: list[str]) -> BrevoError:
    return BrevoError(
        400,
        "duplicate_parameter",
        f"Unable to {verb} contact, {', '.join(identifiers)} is already associated with "
        "another Contact",
        {"duplicate_identifiers": identifiers},
    )
