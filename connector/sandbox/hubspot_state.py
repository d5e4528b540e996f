"""The HubSpot sandbox's state: records, properties, owners, associations, tokens and limits.

:class:`HubSpotState` is what the HTTP layer (``hubspot.py``) acts on and what tests poke
directly (``seed_contacts``, ``put_object``, ``set_tokens``, ``revoke``, the clock). Every
write goes through :meth:`HubSpotState.create` / :meth:`HubSpotState.update` so validation,
timestamps, the search index and change listeners behave the same for API and direct edits.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from connector.sandbox.common import CallLog, Faults
from connector.sandbox.hubspot_access import (
    ALL_SCOPES,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    DEFAULT_TOKEN,
    STATIC_APP_ID,
    TIERS,
    AccessMixin,
    ChangeListener,
    OAuthClient,
    Owner,
    RateDecision,
    RefreshToken,
    Token,
)
from connector.sandbox.hubspot_links import LinksMixin
from connector.sandbox.hubspot_model import (
    ASSOC_TYPES,
    COMPUTED,
    ENGAGEMENTS,
    LIFECYCLE_STAGES,
    OBJECT_TYPES,
    PROPERTY_TYPES,
    SINGULAR,
    ApiError,
    HsObject,
    ObjectStore,
    PropError,
    PropertyDef,
    canonical_type,
    created_prop,
    default_properties,
    iso_ms,
    modified_props,
    normalise_value,
    standard_properties,
    to_str,
    validation_error,
)
from connector.sandbox.webhook_sender import (
    DEFAULT_SUBSCRIPTIONS,
    HUBSPOT_RETRY,
    HubSpotWebhooks,
    WebhookSender,
)

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REFRESH_TOKEN",
    "DEFAULT_TOKEN",
    "TIERS",
    "ChangeListener",
    "HubSpotState",
    "OAuthClient",
    "Owner",
    "RateDecision",
    "RefreshToken",
    "Token",
]


def _words(text: str) -> list[str]:
    return text.split()


_FIRST = _words(
    "Alice Bruno Chloé David Emma Farid Gabrielle Hugo Inès Jules Katarina Louis Manon Nicolas "
    "Olivia Paul Quentin Rose Samuel Théo Ursula Victor Wendy Xavier Yasmine Zoé Liam Noah Mia "
    "Lena Jonas Sofia Mateo Elena Lucas Anna Omar Priya Kenji Aiko"
)
_LAST = _words(
    "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent "
    "Lefebvre Michel Garcia Müller Schmidt Rossi Smith Johnson Brown Nguyen Kowalski Novak Silva "
    "Santos O'Brien Jansen Larsen Tanaka Kim Patel Haddad Costa Fischer Weber"
)
_DOMAINS = _words("example.com example.org mail.test acme.test globex.test initech.test")
_COMPANIES = _words("Acme Globex Initech Umbrella Hooli Vandelay Stark Wayne")
_CITIES = [
    (c.split(":")[0], c.split(":")[1].replace("_", " "))
    for c in _words(
        "Paris:France Lyon:France Berlin:Germany Madrid:Spain London:United_Kingdom "
        "Brussels:Belgium Montréal:Canada"
    )
]
_TITLES = ["CEO", "CTO", "Marketing Manager", "Sales Director", "Developer", "Designer", ""]


def _ascii(s: str) -> str:
    table = str.maketrans("éèëêàâäïîôöùûüçÉ'", "eeeeaaaiioouuucE-")
    return s.translate(table)


class HubSpotState(AccessMixin, LinksMixin):
    """The whole simulated HubSpot account (one portal), held in memory."""

    def __init__(
        self,
        *,
        tier: str | None = "professional",
        rate_limits: bool = True,
        clock: Callable[[], float] | None = None,
        portal_id: int = 2_440_001,
        time_zone: str = "Europe/Paris",
        seed_token: bool = True,
        index_lag_ms: int = 0,
    ) -> None:
        self.clock = clock or (lambda: time.time() * 1000)
        self.portal_id = portal_id
        self.time_zone = time_zone
        self.faults = Faults()
        self.log = CallLog()
        # The webhook hook point: each listener is called synchronously after every change with
        # (event_type, object_type, object_id, property, value, change_source); event types are
        # creation, propertyChange, deletion, merge (value = the merged-away id),
        # privacyDeletion, associationChange (property = "CONTACT_TO_COMPANY", value = to id).
        # change_source is INTEGRATION for API writes, CRM_UI for put_object, IMPORT for seeds.
        self.listeners = []
        self.index_lag_ms = index_lag_ms
        # property names required on writes (portal rules, enforced from API version 2026-09)
        self.required_properties: dict[str, set[str]] = {t: set() for t in OBJECT_TYPES}
        self.required_from_version = "2026-09"
        self.blocklisted_emails: set[str] = set()
        self.owners: dict[str, Owner] = {}
        self._seed_owners()
        self._init_access(tier, rate_limits, seed_token)
        self._init_data()
        # Webhooks (API_NOTES_HUBSPOT §3): the app's id and client secret (signatures), the
        # subscribed event types, the signature version ("v3", or "v1"/"v2"); the delivery
        # knobs are on ``webhook_sender``. Nothing is sent until webhook_target_url is set.
        self.app_id = STATIC_APP_ID
        self.client_secret = DEFAULT_CLIENT_SECRET
        self.webhook_subscriptions: set[str] = set(DEFAULT_SUBSCRIPTIONS)
        self.webhook_signature_version = "v3"
        self.webhook_sender = WebhookSender(
            name="hubspot", policy=HUBSPOT_RETRY, attempt_field="attemptNumber"
        )
        self.webhooks = HubSpotWebhooks(self, self.webhook_sender)
        self._webhook_target_url: str | None = None

    @property
    def webhook_target_url(self) -> str | None:
        """Where change events are POSTed (None = webhooks off, the listener unhooked)."""
        return self._webhook_target_url

    @webhook_target_url.setter
    def webhook_target_url(self, url: str | None) -> None:
        self._webhook_target_url = url or None
        hooked = self.webhooks in self.listeners
        if url and not hooked:
            self.listeners.append(self.webhooks)
        elif not url and hooked:
            self.listeners.remove(self.webhooks)

    # ------------------------------------------------------------------------- basics

    def _init_data(self) -> None:
        self.stores = {t: ObjectStore(t) for t in OBJECT_TYPES}
        self.properties: dict[str, dict[str, PropertyDef]] = standard_properties(self.now_ms())
        self.assoc = {}
        self._next_id = 10_001

    def _seed_owners(self) -> None:
        now = self.now_ms()
        for i, (first, last) in enumerate(
            (("Alice", "Martin"), ("Bruno", "Dubois"), ("Chloé", "Garcia"))
        ):
            oid = str(71_011_001 + i)
            email = f"{_ascii(first).lower()}.{last.lower()}@sandbox-crm.test"
            self.owners[oid] = Owner(oid, email, first, last, 9_000_001 + i, now)

    def reset(self) -> None:
        """Forget every record, association, custom property, call and fault (tokens stay)."""
        self._init_data()
        self.log.clear()
        self.faults.clear()
        self.reset_limits()
        self.blocklisted_emails.clear()

    def store(self, object_type: str) -> ObjectStore:
        return self.stores[object_type]

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # ------------------------------------------------------------------------ reading

    def value_of(self, object_type: str) -> Callable[[HsObject, str], str | None]:
        """A getter for property values, computed ones (ids, stamps, roll-ups) included."""
        created = created_prop(object_type)
        mods = modified_props(object_type)

        def get(obj: HsObject, name: str) -> str | None:
            if name == "hs_object_id":
                return str(obj.id)
            if name == created:
                return iso_ms(obj.created_ms)
            if name in mods:
                return iso_ms(obj.updated_ms)
            if name == "num_associated_deals":
                return str(len(self._linked(object_type, obj.id, "deals")))
            if name == "num_associated_contacts":
                return str(len(self._linked(object_type, obj.id, "contacts")))
            if name == "hs_total_deal_value":
                deals = self.stores["deals"]
                total = 0.0
                for did in self._linked(object_type, obj.id, "deals"):
                    d = deals.live.get(did)
                    amount = d.props.get("amount") if d else None
                    if amount:
                        with contextlib.suppress(ValueError):
                            total += float(amount)
                return to_str(total)
            return obj.props.get(name)

        return get

    def render(
        self,
        object_type: str,
        obj: HsObject,
        properties: Iterable[str] | None = None,
        *,
        archived: bool = False,
    ) -> dict[str, Any]:
        """The v3 JSON of one record with the requested (or default) properties."""
        defs = self.properties[object_type]
        get = self.value_of(object_type)
        names = list(properties) if properties else list(default_properties(object_type))
        always = ("hs_object_id", created_prop(object_type), *modified_props(object_type))
        props: dict[str, str | None] = {}
        for n in (*names, *always):
            if n in defs and n not in props:
                props[n] = get(obj, n)
        out: dict[str, Any] = {
            "id": str(obj.id),
            "properties": props,
            "createdAt": iso_ms(obj.created_ms),
            "updatedAt": iso_ms(obj.updated_ms),
            "archived": archived,
        }
        if archived and obj.archived_ms is not None:
            out["archivedAt"] = iso_ms(obj.archived_ms)
        return out

    def find(self, object_type: str, key: str, id_property: str | None = None) -> HsObject | None:
        """A live record by id (following merges) or by a unique property (``email``)."""
        st = self.stores[object_type]
        if id_property and id_property != "hs_object_id":
            if id_property == "email":
                oid = st.by_email.get(key.strip().lower())
                return st.live.get(oid) if oid is not None else None
            return next((o for o in st.live.values() if o.props.get(id_property) == key), None)
        try:
            return st.get(int(key))
        except ValueError:
            return None

    # ------------------------------------------------------------------------ writing

    def validate(
        self,
        object_type: str,
        raw: Mapping[str, Any],
        *,
        current: HsObject | None,
        enforce_required: bool,
    ) -> tuple[dict[str, str | None], list[PropError]]:
        defs = self.properties[object_type]
        clean: dict[str, str | None] = {}
        errors: list[PropError] = []
        for name, value in raw.items():
            d = defs.get(name)
            if d is None:
                errors.append(
                    PropError("PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist', name)
                )
                continue
            if d.read_only or name in COMPUTED:
                errors.append(
                    PropError(
                        "READ_ONLY_VALUE",
                        f'The property "{name}" is read-only and its value cannot be set',
                        name,
                    )
                )
                continue
            s = to_str(value)
            if s is None or s == "":
                clean[name] = None
                continue
            v, err = normalise_value(d, s, self.owners)
            if err is not None:
                errors.append(err)
                continue
            if name == "email" and v in self.blocklisted_emails:
                errors.append(
                    PropError(
                        "INVALID_EMAIL",
                        f"Email address {v} was permanently deleted (GDPR) and is blocklisted",
                        name,
                    )
                )
                continue
            clean[name] = v
        required = set(self.required_properties.get(object_type, ()) if enforce_required else ())
        if object_type in ENGAGEMENTS:
            required.add("hs_timestamp")
        for name in sorted(required):
            after = (
                clean.get(name) if name in clean else (current.props.get(name) if current else None)
            )
            if not after and not any(e.name == name for e in errors):
                errors.append(
                    PropError("REQUIRED_PROPERTY", f'Property "{name}" is required', name)
                )
        return clean, errors

    def _check_unique_email(self, object_type: str, email: str | None, own_id: int | None) -> None:
        if object_type != "contacts" or not email:
            return
        existing = self.stores["contacts"].by_email.get(email)
        if existing is not None and existing != own_id:
            raise ApiError(409, "CONFLICT", f"Contact already exists. Existing ID: {existing}")

    def create(
        self,
        object_type: str,
        properties: Mapping[str, Any],
        *,
        enforce_required: bool = True,
        source: str = "INTEGRATION",
        associations: list[dict[str, Any]] | None = None,
    ) -> HsObject:
        """Create a record (validated; 409 on a duplicate contact email)."""
        clean, errors = self.validate(
            object_type, properties, current=None, enforce_required=enforce_required
        )
        if errors:
            raise validation_error(errors)
        self._check_unique_email(object_type, clean.get("email"), None)
        links = self._parse_inline_associations(object_type, associations or [])
        now = self.now_ms()
        obj = HsObject(self._new_id(), {k: v for k, v in clean.items() if v is not None}, now, now)
        self.stores[object_type].put(obj, now, self.index_lag_ms)
        if self.listeners:
            self._emit("creation", object_type, obj.id, None, None, source)
            for k, v in obj.props.items():
                self._emit("propertyChange", object_type, obj.id, k, v, source)
        for to_type, to_id, type_id in links:
            self.associate(object_type, obj.id, to_type, to_id, type_id, source=source)
        return obj

    def update(
        self,
        object_type: str,
        obj: HsObject,
        properties: Mapping[str, Any],
        *,
        enforce_required: bool = True,
        source: str = "INTEGRATION",
    ) -> HsObject:
        """Apply a partial update; unchanged values neither bump the stamps nor fire events."""
        clean, errors = self.validate(
            object_type, properties, current=obj, enforce_required=enforce_required
        )
        if errors:
            raise validation_error(errors)
        if "email" in clean:
            self._check_unique_email(object_type, clean["email"], obj.id)
        changes = {k: v for k, v in clean.items() if obj.props.get(k) != v}
        if not changes:
            return obj
        now = self.now_ms()
        new = obj.evolve(changes, now)
        new.props = {k: v for k, v in new.props.items() if v is not None}
        self.stores[object_type].put(new, now, self.index_lag_ms)
        for k, v in changes.items():
            self._emit("propertyChange", object_type, obj.id, k, v, source)
        return new

    def archive(self, object_type: str, obj: HsObject, *, source: str = "INTEGRATION") -> None:
        """DELETE: move the record to the archive (restorable in HubSpot for 90 days)."""
        self._drop_associations(object_type, obj.id, source)
        self.stores[object_type].remove(obj.id, self.now_ms(), self.index_lag_ms, archive=True)
        self._emit("deletion", object_type, obj.id, None, None, source)

    def restore(self, object_type: str, object_id: str | int, *, source: str = "CRM_UI") -> str:
        """A user restores an archived record from HubSpot's recycle bin (within 90 days): it
        is live again under the same id, ``restore`` fires. KeyError if it is not archived
        (merged-away and GDPR-deleted records are not in the archive)."""
        t = self._type(object_type)
        st = self.stores[t]
        obj = st.archived.get(int(object_id))
        if obj is None:
            raise KeyError(f"no archived {t} with id {object_id}")
        email = (obj.props.get("email") or "").lower()
        if email and st.by_email.get(email) in st.live:
            raise ValueError(f"{email} belongs to another live record: restore refused")
        now = self.now_ms()
        st.put(HsObject(obj.id, dict(obj.props), obj.created_ms, now), now, self.index_lag_ms)
        self._emit("restore", t, obj.id, None, None, source)
        return str(obj.id)

    def gdpr_delete(self, key: str, id_property: str | None = None) -> bool:
        """Permanently delete a contact; an unknown email is blocklisted. True if one existed."""
        obj = self.find("contacts", key, id_property)
        if obj is None:
            if id_property == "email":
                self.blocklisted_emails.add(key.strip().lower())
            return False
        st = self.stores["contacts"]
        self._drop_associations("contacts", obj.id, "GDPR")
        st.remove(obj.id, self.now_ms(), self.index_lag_ms, archive=False)
        for loser, survivor in list(st.merged_into.items()):
            if survivor == obj.id:
                del st.merged_into[loser]
        email = obj.props.get("email")
        if email:
            self.blocklisted_emails.add(email)
        self._emit("privacyDeletion", "contacts", obj.id, None, None, "GDPR")
        self._emit("deletion", "contacts", obj.id, None, None, "GDPR")
        return True

    def merge(self, object_type: str, primary: HsObject, loser: HsObject) -> HsObject:
        """Merge ``loser`` into ``primary``: blanks filled, ids recorded, associations moved."""
        if primary.id == loser.id:
            raise ApiError(400, "VALIDATION_ERROR", "Cannot merge an object with itself")
        st = self.stores[object_type]
        now = self.now_ms()
        changes: dict[str, str | None] = {
            k: v for k, v in loser.props.items() if v and not primary.props.get(k) and k != "email"
        }
        before = (primary.props.get("hs_merged_object_ids") or "").split(";")
        chained = (loser.props.get("hs_merged_object_ids") or "").split(";")
        merged_ids = [x for x in (*before, str(loser.id), *chained) if x]
        changes["hs_merged_object_ids"] = ";".join(merged_ids)
        loser_email = loser.props.get("email")
        if object_type == "contacts" and loser_email:
            extra = [e for e in (primary.props.get("hs_additional_emails") or "").split(";") if e]
            if loser_email not in extra and loser_email != primary.props.get("email"):
                extra.append(loser_email)
            changes["hs_additional_emails"] = ";".join(extra)
        for (to_type, to_id), types in list(self.assoc.get((object_type, loser.id), {}).items()):
            if (to_type, to_id) != (object_type, primary.id):
                for tid in sorted(types, key=lambda t: not ASSOC_TYPES[t].primary):
                    if not ASSOC_TYPES[tid].primary or not self._has_primary(
                        object_type, primary.id, to_type
                    ):
                        self.associate(
                            object_type,
                            primary.id,
                            to_type,
                            to_id,
                            tid,
                            source="MERGE",
                            with_sibling=False,
                        )
        self._drop_associations(object_type, loser.id, "MERGE")
        st.remove(loser.id, now, self.index_lag_ms, archive=False)
        st.merged_into[loser.id] = primary.id
        for k, v in list(st.merged_into.items()):
            if v == loser.id:
                st.merged_into[k] = primary.id
        new = primary.evolve(changes, now)
        st.put(new, now, self.index_lag_ms)
        if object_type == "contacts" and loser_email:
            st.by_email[loser_email] = primary.id
        self._emit("merge", object_type, primary.id, "mergedObjectIds", str(loser.id), "MERGE")
        return new

    def put_object(
        self,
        object_type: str,
        properties: Mapping[str, Any],
        object_id: str | int | None = None,
        *,
        source: str = "CRM_UI",
    ) -> str:
        """A direct edit as a user in HubSpot's UI would make it (stamps bumped, listeners
        told with ``CRM_UI``): creates, or updates ``object_id``. Returns the id."""
        t = self._type(object_type)
        if object_id is None:
            return str(self.create(t, properties, enforce_required=False, source=source).id)
        obj = self.stores[t].get(int(object_id))
        if obj is None:
            raise KeyError(f"no {t} with id {object_id}")
        return str(self.update(t, obj, properties, enforce_required=False, source=source).id)

    def get_object(self, object_type: str, object_id: str | int) -> dict[str, str | None] | None:
        """All stored and computed properties of a live record (for tests), or None."""
        t = self._type(object_type)
        obj = self.stores[t].get(int(object_id))
        if obj is None:
            return None
        get = self.value_of(t)
        return {n: get(obj, n) for n in self.properties[t] if get(obj, n) is not None}

    @staticmethod
    def _type(object_type: str) -> str:
        t = canonical_type(object_type)
        if t is None:
            raise KeyError(f"unknown object type {object_type!r}")
        return t

    # ------------------------------------------------------------------------- seeding

    def seed_contacts(self, n: int, seed: int = 0, *, spread_ms: int = 0) -> list[str]:
        """Add ``n`` realistic, deterministic contacts (no listeners' HTTP, no validation).

        All get the clock's current time, or times ``spread_ms`` apart ending now."""
        rng = random.Random(seed)
        st = self.stores["contacts"]
        now = self.now_ms()
        base = len(st.live) + len(st.archived)
        owners = sorted(self.owners)
        ids: list[str] = []
        for i in range(n):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            local = f"{_ascii(first)}.{_ascii(last)}".lower().replace("'", "")
            email = f"{local}{base + i + 1}@{rng.choice(_DOMAINS)}"
            city, country = rng.choice(_CITIES)
            props: dict[str, str | None] = {
                "email": email,
                "firstname": first,
                "lastname": last,
                "phone": f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} "
                f"{rng.randint(10, 99)} {rng.randint(10, 99)}",
                "company": rng.choice(_COMPANIES),
                "city": city,
                "country": country,
                "jobtitle": rng.choice(_TITLES) or None,
                "lifecyclestage": rng.choice(LIFECYCLE_STAGES[:6]),
            }
            if rng.random() < 0.3:
                props["hubspot_owner_id"] = rng.choice(owners)
            stamp = now - (n - 1 - i) * spread_ms
            obj = HsObject(self._new_id(), {k: v for k, v in props.items() if v}, stamp, stamp)
            st.put(obj, now, self.index_lag_ms)
            if self.listeners:
                self._emit("creation", "contacts", obj.id, None, None, "IMPORT")
            ids.append(str(obj.id))
        return ids

    # ---------------------------------------------------------------------- properties

    def create_property(self, object_type: str, body: Mapping[str, Any]) -> PropertyDef:
        """POST /crm/properties: a custom property (409 if the name exists)."""
        name = body.get("name")
        if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
            raise ApiError(400, "VALIDATION_ERROR", "Property name is missing or invalid")
        if name != name.lower():
            raise ApiError(400, "VALIDATION_ERROR", f"Property name {name!r} must be lower-case")
        defs = self.properties[object_type]
        if name in defs:
            raise ApiError(
                409,
                "OBJECT_ALREADY_EXISTS",
                f"A property named '{name}' already exists.",
                sub_category="PropertyValidationError.PROPERTY_EXISTS",
            )
        ptype = str(body.get("type", "string"))
        field_type = str(body.get("fieldType", "text"))
        if ptype not in PROPERTY_TYPES:
            raise ApiError(400, "VALIDATION_ERROR", f"Unknown property type {ptype!r}")
        if field_type not in PROPERTY_TYPES[ptype]:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"fieldType {field_type!r} is not valid for type {ptype!r}; "
                f"one of {list(PROPERTY_TYPES[ptype])}",
            )
        options = body.get("options") or []
        if ptype == "enumeration" and field_type != "booleancheckbox" and not options:
            raise ApiError(400, "VALIDATION_ERROR", "Enumeration properties need options")
        if ptype == "bool" and not options:
            options = [{"label": "Yes", "value": "true"}, {"label": "No", "value": "false"}]
        clean_opts = [
            {
                "label": str(o.get("label", o.get("value"))),
                "value": str(o.get("value")),
                "displayOrder": int(o.get("displayOrder", i)),
                "hidden": bool(o.get("hidden", False)),
            }
            for i, o in enumerate(options)
            if isinstance(o, dict) and "value" in o
        ]
        now = self.now_ms()
        d = PropertyDef(
            name=name,
            label=str(body.get("label", name)),
            type=ptype,
            field_type=field_type,
            group_name=str(body.get("groupName", f"{SINGULAR[object_type]}information")),
            options=clean_opts,
            has_unique_value=bool(body.get("hasUniqueValue", False)),
            hubspot_defined=False,
            description=str(body.get("description", "")),
            created_ms=now,
            updated_ms=now,
        )
        defs[name] = d
        return d

    def add_owner(
        self,
        owner_id: str,
        email: str,
        first_name: str,
        last_name: str,
        *,
        teams: Iterable[tuple[str, str]] = (("501", "Customer Success"),),
        archived: bool = False,
    ) -> Owner:
        """Add (or replace) an owner — a user who can own records — in the given teams."""
        owner = Owner(
            str(owner_id),
            email,
            first_name,
            last_name,
            9_000_000 + len(self.owners) + 1,
            self.now_ms(),
            archived=archived,
            teams=tuple(teams),
        )
        self.owners[owner.id] = owner
        return owner

    def owner_options(self) -> list[dict[str, Any]]:
        return [
            {
                "label": f"{o.first_name} {o.last_name}",
                "value": o.id,
                "displayOrder": i,
                "hidden": False,
            }
            for i, o in enumerate(self.owners.values())
        ]
