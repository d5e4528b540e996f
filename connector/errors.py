"""The connector's exception tree.

    ConnectorError                 every error the connector raises on purpose
    ├── ConfigError                a bad config file: names the key, the problem and the fix
    ├── StoreError                 the database cannot be reached, or is not migrated
    └── ApiError                   a call to HubSpot or Brevo failed (after retries, if any)
        ├── TransportError         no usable answer: timeout, connection refused, reset
        ├── RateLimitedError       429: the account's rate limit (carries retry_after)
        ├── ServerError            5xx from the API
        ├── AuthError              401: the token or key is invalid, expired or revoked
        ├── ForbiddenError         403: the credential lacks a scope or permission
        ├── NotFoundError          404
        ├── ConflictError          409 (or Brevo's duplicate_parameter): carries existing_id
        └── ValidationError        400 / 422: the API refused the input

Every ApiError carries the system (``hubspot`` | ``brevo``), the endpoint (method and path, no
query string), the HTTP status, the API's own error category (HubSpot ``category`` /
``errorType``, Brevo ``code``), the correlation id when the API sends one, and a message that
has been passed through :func:`scrub` so no registered secret can reach a log line.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET_LEN = 6


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`scrub` removes it from every message and log line."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _secrets_lock:
            _secrets.add(value)


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


_BEARER = re.compile(r"(?i)(bearer\s+|api-key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._\-]{8,}")


def scrub(text: str) -> str:
    """Replace every registered secret, and anything that looks like a bearer token, by ***."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return _BEARER.sub(lambda m: m.group(1) + "***", text)


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""


class ConfigError(ConnectorError):
    """The configuration is wrong; the message names the key, the problem and the fix."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class StoreError(ConnectorError):
    """The state database cannot be reached, or its schema is not at the expected revision."""


class ApiError(ConnectorError):
    """A call to HubSpot or Brevo failed."""

    def __init__(
        self,
        message: str,
        *,
        system: str,
        endpoint: str,
        status: int | None = None,
        category: str | None = None,
        correlation_id: str | None = None,
        body: Any = None,
    ) -> None:
        self.system = system
        self.endpoint = endpoint
        self.status = status
        self.category = category
        self.correlation_id = correlation_id
        self.body = body
        self.raw_message = scrub(message)
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [f"{self.system} {self.endpoint}"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.category:
            parts.append(self.category)
        head = " → ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]
        tail = f" (correlation id {self.correlation_id})" if self.correlation_id else ""
        return f"{head}: {self.raw_message}{tail}"


class TransportError(ApiError):
    """No usable answer: a timeout, a refused or reset connection."""


class RateLimitedError(ApiError):
    """HTTP 429: the account's rate limit was reached."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServerError(ApiError):
    """HTTP 5xx from the API."""


class AuthError(ApiError):
    """HTTP 401: the credential is invalid, expired or revoked."""


class ForbiddenError(ApiError):
    """HTTP 403: the credential lacks a scope or permission."""


class NotFoundError(ApiError):
    """HTTP 404."""


class ConflictError(ApiError):
    """HTTP 409, or Brevo's duplicate-identifier 400: the record already exists."""

    def __init__(self, message: str, *, existing_id: str | None = None, **kw: Any) -> None:
        self.existing_id = existing_id
        super().__init__(message, **kw)


class ValidationError(ApiError):
    """HTTP 400 or 422: the API refused the input (invalid email, unknown property, …)."""
