"""HubSpot webhooks: request signatures (v3, with v1/v2 as fallback) and payload parsing.

Signatures (API_NOTES_HUBSPOT §3.4). v3 is preferred: ``X-HubSpot-Signature-v3`` is
``base64(HMAC-SHA256(client_secret, method + uri + body + timestamp))``, where the timestamp is
the ``X-HubSpot-Request-Timestamp`` header (epoch milliseconds) used verbatim and the URI has
the characters listed in :data:`V3_DECODED` percent-decoded. A request older than five minutes,
or dated further in the future than the allowed clock skew, is refused. Only when there is no
v3 header, ``X-HubSpot-Signature-Version: v1|v2`` selects the legacy hex SHA-256 digests
(``secret + body`` and ``secret + method + uri + body``); a v3 header that does not match is
never retried as v1/v2. Every comparison is constant-time.

Payloads (API_NOTES_HUBSPOT §3.3): a JSON array of events. Each becomes one inbox item whose
dedup key is ``hs:{subscriptionId}:{eventId}:{objectId}:{occurredAt}`` (``eventId`` alone is
not unique); the whole event, ``changeSource``/``sourceId`` included, is its payload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connector.errors import ConnectorError
from connector.payload import PayloadError, load_json
from connector.store.inbox import InboxInput

#: Oldest accepted request, in seconds (HubSpot's own SDK uses 300).
MAX_AGE_SECONDS = 300
#: How far in the future a request timestamp may be (our clock may lag HubSpot's).
MAX_SKEW_SECONDS = 60

SIGNATURE_V3 = "x-hubspot-signature-v3"
SIGNATURE = "x-hubspot-signature"
SIGNATURE_VERSION = "x-hubspot-signature-version"
TIMESTAMP = "x-hubspot-request-timestamp"

#: Percent-encoded characters HubSpot's docs say to decode in the URI before hashing (v3).
V3_DECODED: dict[str, str] = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_V3_DECODE = re.compile("|".join(V3_DECODED), re.IGNORECASE)
_TIMESTAMP = re.compile(r"[0-9]{1,16}", re.ASCII)


class SignatureError(ConnectorError):
    """The request is not proven to come from HubSpot; ``reason`` says why (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"HubSpot webhook signature rejected: {reason}")
        self.reason = reason


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def decode_v3_uri(uri: str) -> str:
    """``uri`` with the characters of :data:`V3_DECODED` decoded (hex digits in any case)."""
    return _V3_DECODE.sub(lambda m: V3_DECODED[m.group(0).upper()], uri)


def v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The ``X-HubSpot-Signature-v3`` value HubSpot sends for this request."""
    message = _utf8(method) + _utf8(decode_v3_uri(uri)) + body + _utf8(timestamp)
    digest = hmac.new(_utf8(secret), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def v1_signature(secret: str, body: bytes) -> str:
    """The v1 ``X-HubSpot-Signature``: hex SHA-256 of ``secret + body``."""
    return hashlib.sha256(_utf8(secret) + body).hexdigest()


def v2_signature(secret: str, method: str, uri: str, body: bytes) -> str:
    """The v2 ``X-HubSpot-Signature``: hex SHA-256 of ``secret + method + uri + body``."""
    return hashlib.sha256(_utf8(secret) + _utf8(method) + _utf8(uri) + body).hexdigest()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(_utf8(expected), _utf8(given))


class HubSpotSignature:
    """Verifies HubSpot's request signatures with the app's client secret."""

    def __init__(
        self,
        secret: str,
        *,
        max_age_seconds: float = MAX_AGE_SECONDS,
        max_skew_seconds: float = MAX_SKEW_SECONDS,
        accept_legacy: bool = True,
    ) -> None:
        if not secret:
            raise ValueError("the HubSpot app client secret is empty")
        self._secret = secret
        self.max_age_ms = int(max_age_seconds * 1000)
        self.max_skew_ms = int(max_skew_seconds * 1000)
        self.accept_legacy = accept_legacy

    def __repr__(self) -> str:
        return f"HubSpotSignature(accept_legacy={self.accept_legacy})"

    def verify(
        self, method: str, uri: str, body: bytes, headers: Mapping[str, str], now: datetime
    ) -> None:
        """Return if the request is signed by HubSpot, else raise :class:`SignatureError`.

        ``uri`` is the full URL HubSpot called (``https://host/path?query``), ``headers`` any
        mapping (names are matched case-insensitively), ``now`` an aware datetime.
        """
        found: dict[str, str] = {}
        for name, value in headers.items():
            found.setdefault(name.lower(), value)
        v3 = found.get(SIGNATURE_V3)
        if v3 is not None:
            self._verify_v3(method, uri, body, v3.strip(), found.get(TIMESTAMP), now)
            return
        legacy = found.get(SIGNATURE)
        version = (found.get(SIGNATURE_VERSION) or "").strip().lower()
        if legacy is None or version not in ("v1", "v2"):
            raise SignatureError("missing")
        if not self.accept_legacy:
            raise SignatureError("legacy_disabled")
        if version == "v1":
            expected = v1_signature(self._secret, body)
        else:
            expected = v2_signature(self._secret, method, uri, body)
        if not _same(expected, legacy.strip().lower()):
            raise SignatureError("mismatch")

    def _verify_v3(
        self,
        method: str,
        uri: str,
        body: bytes,
        signature: str,
        timestamp: str | None,
        now: datetime,
    ) -> None:
        if timestamp is None:
            raise SignatureError("missing_timestamp")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise SignatureError("bad_timestamp")
        age_ms = int(now.timestamp() * 1000) - int(timestamp)
        if age_ms > self.max_age_ms:
            raise SignatureError("stale")
        if -age_ms > self.max_skew_ms:
            raise SignatureError("future")
        expected = v3_signature(self._secret, method, uri, body, timestamp)
        if not _same(expected, signature):
            raise SignatureError("mismatch")


# --- payloads ----------------------------------------------------------------------------------

#: Legacy subscription-type prefixes → the connector's object type names.
PREFIX_OBJECT_TYPES: dict[str, str] = {
    "contact": "contacts",
    "company": "companies",
    "deal": "deals",
    "ticket": "tickets",
    "line_item": "line_items",
    "product": "products",
    "conversation": "conversations",
}
#: ``objectTypeId`` of generic ``object.*`` events → object type name (the table of HubSpot's
#: "Using the object APIs" guide); others (custom objects ``2-…``) are kept as given.
OBJECT_TYPE_IDS: dict[str, str] = {
    "0-1": "contacts",
    "0-2": "companies",
    "0-3": "deals",
    "0-5": "tickets",
    "0-7": "products",
    "0-8": "line_items",
    "0-14": "quotes",
    "0-18": "communications",
    "0-19": "feedback_submissions",
    "0-27": "tasks",
    "0-46": "notes",
    "0-47": "meetings",
    "0-48": "calls",
    "0-49": "emails",
    "0-53": "invoices",
    "0-54": "marketing_events",
    "0-69": "subscriptions",
    "0-74": "goals",
    "0-84": "discounts",
    "0-85": "fees",
    "0-86": "taxes",
    "0-101": "payments",
    "0-115": "users",
    "0-116": "postal_mail",
    "0-123": "orders",
    "0-136": "leads",
    "0-142": "carts",
    "0-162": "services",
    "0-410": "courses",
    "0-420": "listings",
    "0-421": "appointments",
    "0-970": "projects",
}

_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}\.[A-Za-z_][A-Za-z0-9_]{0,40}", re.ASCII)
_OBJECT_TYPE_ID = re.compile(r"[0-9]{1,4}-[0-9]{1,12}", re.ASCII)
_ASSOCIATION_TYPE = re.compile(r"([A-Z_]+?)_TO_[A-Z_]+", re.ASCII)
_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}", re.ASCII)
_MAX_ID = 2**63


def _as_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_ID:
        return str(value)
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    return None


def _id(event: Mapping[str, Any], key: str, where: str) -> str:
    value = _optional_id(event, key, where)
    if value is None:
        raise PayloadError(f"{where}: {key} is missing")
    return value


def _optional_id(event: Mapping[str, Any], key: str, where: str) -> str | None:
    value = event.get(key)
    if value is None:
        return None
    found = _as_id(value)
    if found is None:
        raise PayloadError(f"{where}: {key} must be a non-negative integer or a short id string")
    return found


def _occurred_at(event: Mapping[str, Any], where: str) -> int:
    value = event.get("occurredAt")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_ID:
        return value
    raise PayloadError(f"{where}: occurredAt must be epoch milliseconds (an integer)")


def _object_type_id(event: Mapping[str, Any], key: str, where: str) -> str | None:
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, str) and _OBJECT_TYPE_ID.fullmatch(value):
        return value
    raise PayloadError(f"{where}: {key} must look like 0-1 or 2-12345")


def _object_type(event: Mapping[str, Any], prefix: str, action: str, where: str) -> str:
    if action == "associationChange":
        from_type = _object_type_id(event, "fromObjectTypeId", where)
        if from_type is not None:
            return OBJECT_TYPE_IDS.get(from_type, from_type)
        association = event.get("associationType")
        if isinstance(association, str):
            m = _ASSOCIATION_TYPE.fullmatch(association)
            if m and m.group(1).lower() in PREFIX_OBJECT_TYPES:
                return PREFIX_OBJECT_TYPES[m.group(1).lower()]
    if prefix == "object":
        type_id = _object_type_id(event, "objectTypeId", where)
        if type_id is None:
            raise PayloadError(f"{where}: object.* events need objectTypeId")
        return OBJECT_TYPE_IDS.get(type_id, type_id)
    return PREFIX_OBJECT_TYPES.get(prefix, prefix)


def _check_merge(event: Mapping[str, Any], where: str) -> None:
    _optional_id(event, "primaryObjectId", where)
    _optional_id(event, "newObjectId", where)
    merged = event.get("mergedObjectIds")
    if merged is None:
        return
    if not isinstance(merged, list) or any(_as_id(m) is None for m in merged):
        raise PayloadError(f"{where}: mergedObjectIds must be a list of ids")


def _subject(event: Mapping[str, Any], action: str, where: str) -> tuple[str, str]:
    """(object id for the inbox row, the object part of the dedup key)."""
    object_id = _optional_id(event, "objectId", where)
    if action == "associationChange":
        from_id = _optional_id(event, "fromObjectId", where)
        to_id = _optional_id(event, "toObjectId", where)
        if object_id is None:
            if from_id is None or to_id is None:
                raise PayloadError(f"{where}: objectId or fromObjectId and toObjectId needed")
            return from_id, f"{from_id}-{to_id}"
    if action == "merge":
        _check_merge(event, where)
        if object_id is None:
            primary = _id(event, "primaryObjectId", where)
            return primary, primary
    if object_id is None:
        raise PayloadError(f"{where}: objectId is missing")
    return object_id, object_id


def parse_event(event: Any, index: int = 0) -> InboxInput:
    """One HubSpot webhook event → one inbox item; :class:`PayloadError` if malformed."""
    where = f"event {index}"
    if not isinstance(event, dict):
        raise PayloadError(f"{where}: must be a JSON object")
    kind = event.get("subscriptionType")
    if kind is None:
        kind = event.get("eventType")
    if not isinstance(kind, str) or not _TYPE.fullmatch(kind):
        raise PayloadError(f"{where}: subscriptionType must look like contact.propertyChange")
    prefix, action = kind.split(".", 1)
    subscription = _id(event, "subscriptionId", where)
    event_id = _id(event, "eventId", where)
    occurred_at = _occurred_at(event, where)
    object_id, object_key = _subject(event, action, where)
    return InboxInput(
        source="hubspot",
        dedup_key=f"hs:{subscription}:{event_id}:{object_key}:{occurred_at}",
        object_type=_object_type(event, prefix, action, where),
        object_id=object_id,
        event_type=kind,
        payload=event,
    )


def parse_hubspot(body: bytes) -> list[InboxInput]:
    """A HubSpot webhook body (a JSON array of events) → inbox items, all or none.

    Raises :class:`PayloadError` when the body or any one event is malformed.
    """
    data = load_json(body)
    if not isinstance(data, list):
        raise PayloadError("the body must be a JSON array of events")
    return [parse_event(event, i) for i, event in enumerate(data)]


__all__ = [
    "MAX_AGE_SECONDS",
    "MAX_SKEW_SECONDS",
    "OBJECT_TYPE_IDS",
    "PREFIX_OBJECT_TYPES",
    "V3_DECODED",
    "HubSpotSignature",
    "PayloadError",
    "SignatureError",
    "decode_v3_uri",
    "load_json",
    "parse_event",
    "parse_hubspot",
    "v1_signature",
    "v2_signature",
    "v3_signature",
]
