"""Brevo webhooks: the auth check (bearer token or basic auth) and payload parsing.

Brevo signs nothing (API_NOTES_BREVO §3): a webhook proves itself with the secret configured
on it, sent as ``Authorization: Bearer <token>`` (``auth: {type: bearer}``) or as basic auth
from a ``https://user:password@host/…`` URL. :func:`check_brevo_auth` accepts the bearer
token, or basic auth whose password (or whole ``user:password``) is the token; comparisons are
constant-time.

A body is one event (an object) or a batch (an array, up to 500 events). Each event becomes
one inbox item for the contact (its e-mail lower-cased, or its ``contact_id``); the whole
event, ``api_key_name`` included (the echo hint of Brevo's 2026-11 changelog), is its payload.
Brevo retries an event with the same content, so the dedup key is a hash of the fields that
identify it (:data:`IDENTIFYING_FIELDS`): a retry is stored once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from connector.errors import ConnectorError
from connector.payload import PayloadError, load_json
from connector.store.inbox import InboxInput

#: The fields hashed into an event's dedup key (the e-mail lower-cased first).
IDENTIFYING_FIELDS: tuple[str, ...] = (
    "event",
    "email",
    "id",
    "contact_id",
    "ts_event",
    "ts_epoch",
    "ts",
    "date",
    "date_event",
    "camp_id",
    "message-id",
    "list_id",
    "list_ids",
    "URL",
    "content",
)

#: Brevo e-mail events filed under their own object type, :data:`EMAIL_EVENTS_TYPE` (nothing in
#: the contact changed; :mod:`connector.objects.email_events` puts them on HubSpot).
EMAIL_EVENT_NAMES = frozenset({"delivered", "opened", "uniqueOpened", "click"})
EMAIL_EVENTS_TYPE = "email_events"

_EVENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}", re.ASCII)
_CONTACT_ID = re.compile(r"[0-9]{1,19}", re.ASCII)
_MAX_EMAIL = 320


class BrevoAuthError(ConnectorError):
    """The request does not carry the configured Brevo webhook secret; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Brevo webhook authentication rejected: {reason}")
        self.reason = reason


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(_utf8(expected), _utf8(given))


def check_brevo_auth(headers: Mapping[str, str], token: str | None) -> None:
    """Return if ``headers`` carry ``token``; else raise :class:`BrevoAuthError`.

    Accepted: ``Authorization: Bearer <token>``; ``Authorization: Basic base64(user:pass)``
    with ``pass == token`` or ``user:pass == token``. Header names are case-insensitive.
    """
    if not token:
        raise BrevoAuthError("not_configured")
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if value is None or not value.strip():
        raise BrevoAuthError("missing")
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        if not _same(token, credentials):
            raise BrevoAuthError("mismatch")
        return
    if scheme.lower() != "basic":
        raise BrevoAuthError("scheme")
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise BrevoAuthError("malformed") from None
    _user, colon, password = decoded.partition(":")
    password_ok = bool(colon) and _same(token, password)
    pair_ok = _same(token, decoded)
    if not (password_ok or pair_ok):
        raise BrevoAuthError("mismatch")


# --- payloads ----------------------------------------------------------------------------------


def normalize_email(value: str) -> str:
    """Brevo and HubSpot both key contacts by e-mail: trimmed and lower-cased."""
    return value.strip().lower()


def _email(event: Mapping[str, Any], where: str) -> str | None:
    value = event.get("email")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{where}: email must be a string")
    email = normalize_email(value)
    if (
        not email
        or len(email) > _MAX_EMAIL
        or "@" not in email
        or any(ch.isspace() or ord(ch) < 32 for ch in email)
    ):
        raise PayloadError(f"{where}: email is not an e-mail address")
    return email


def _contact_id(event: Mapping[str, Any], where: str) -> str | None:
    value = event.get("contact_id")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return str(value)
    if isinstance(value, str) and _CONTACT_ID.fullmatch(value):
        return value
    raise PayloadError(f"{where}: contact_id must be a non-negative integer")


def dedup_key(event: Mapping[str, Any]) -> str:
    """``br:{event}:{sha256}`` over :data:`IDENTIFYING_FIELDS` (e-mail normalised)."""
    fields = {k: event[k] for k in IDENTIFYING_FIELDS if k in event}
    if isinstance(fields.get("email"), str):
        fields["email"] = normalize_email(fields["email"])
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    digest = hashlib.sha256(canonical.encode("ascii")).hexdigest()
    return f"br:{event['event']}:{digest}"


def event_name(name: str) -> str:
    """Brevo's event name in one spelling: the registered camelCase (``contactUpdated``).

    Payloads have been seen with snake_case names (``contact_updated``, ``hard_bounce``) while
    webhooks are registered with camelCase ones [UNVERIFIED which the live API sends]: the
    worker sees one spelling either way.
    """
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def parse_event(event: Any, index: int = 0) -> InboxInput:
    """One Brevo webhook event → one inbox item; :class:`PayloadError` if malformed."""
    where = f"event {index}"
    if not isinstance(event, dict):
        raise PayloadError(f"{where}: must be a JSON object")
    name = event.get("event")
    if not isinstance(name, str) or not _EVENT.fullmatch(name):
        raise PayloadError(f"{where}: event must be a Brevo event name such as unsubscribed")
    email = _email(event, where)
    contact_id = _contact_id(event, where)
    object_id = email or contact_id
    if object_id is None:
        raise PayloadError(f"{where}: neither email nor contact_id names the contact")
    routed = event_name(name) in EMAIL_EVENT_NAMES
    return InboxInput(
        source="brevo",
        dedup_key=dedup_key(event),
        object_type=EMAIL_EVENTS_TYPE if routed else "contacts",
        object_id=object_id,
        event_type=event_name(name),
        payload=event,
    )


def parse_brevo(body: bytes) -> list[InboxInput]:
    """A Brevo webhook body (one event, or an array of them) → inbox items, all or none.

    Raises :class:`PayloadError` when the body or any one event is malformed.
    """
    data = load_json(body)
    if isinstance(data, dict):
        return [parse_event(data)]
    if not isinstance(data, list):
        raise PayloadError("the body must be a JSON object or an array of them")
    return [parse_event(event, i) for i, event in enumerate(data)]


__all__ = [
    "EMAIL_EVENTS_TYPE",
    "EMAIL_EVENT_NAMES",
    "IDENTIFYING_FIELDS",
    "BrevoAuthError",
    "PayloadError",
    "check_brevo_auth",
    "dedup_key",
    "load_json",
    "normalize_email",
    "parse_brevo",
    "parse_event",
]
