"""HubSpot API paths: the one place the API version and the path templates live.

HubSpot's REST APIs are versioned by date since 2026-03 (``/crm/objects/2026-09/contacts``,
API_NOTES_HUBSPOT §0); the numbered v1–v4 paths go unsupported by September 2027. The object
paths are documented; the date paths of the other families used here (owners, properties,
associations, account info) follow the same pattern but are UNVERIFIED per endpoint (API_NOTES
§0, "check each in the 2026-09 reference before use"). Those routes therefore carry a
``family`` and a ``legacy`` twin: the client falls back to the legacy path once when HubSpot
says the dated route itself does not exist, and remembers that for the session.

Every builder returns a :class:`Route`: the real path, and a template with the ids left as
placeholders — the template names the endpoint in call counts, logs and errors, so no record
id, email or token ever reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

# Families whose dated paths are UNVERIFIED (API_NOTES_HUBSPOT §0): they may fall back to legacy.
OWNERS = "owners"
PROPERTIES = "properties"
ASSOCIATIONS = "associations"
ACCOUNT_INFO = "account-info"


@dataclass(frozen=True, slots=True)
class Route:
    """A path to call, and its template (ids as ``{id}``) for counting, logs and errors."""

    path: str
    template: str
    family: str | None = None
    legacy: bool = False


def _seg(value: str) -> str:
    return quote(str(value), safe="")


class Paths:
    """Path builders for one API version (``api_version``, e.g. ``2026-09``)."""

    def __init__(self, version: str) -> None:
        self.version = version

    # --- CRM objects (documented dated paths) ------------------------------------------------

    def objects(self, object_type: str) -> Route:
        p = f"/crm/objects/{self.version}/{_seg(object_type)}"
        return Route(p, p)

    def object(self, object_type: str, object_id: str) -> Route:
        base = self.objects(object_type).path
        return Route(f"{base}/{_seg(object_id)}", f"{base}/{{id}}")

    def batch(self, object_type: str, action: str) -> Route:
        p = f"{self.objects(object_type).path}/batch/{action}"
        return Route(p, p)

    def search(self, object_type: str) -> Route:
        p = f"{self.objects(object_type).path}/search"
        return Route(p, p)

    # --- families with UNVERIFIED dated paths (legacy fallback) ------------------------------

    def properties(self, object_type: str, *, legacy: bool = False) -> Route:
        ot = _seg(object_type)
        p = f"/crm/v3/properties/{ot}" if legacy else f"/crm/properties/{self.version}/{ot}"
        return Route(p, p, PROPERTIES, legacy)

    def owners(self, *, legacy: bool = False) -> Route:
        p = "/crm/v3/owners/" if legacy else f"/crm/owners/{self.version}/"
        return Route(p, p, OWNERS, legacy)

    def associations(
        self, from_type: str, to_type: str, suffix: str, *, legacy: bool = False
    ) -> Route:
        """``/crm/associations/{ver}/{from}/{to}/{suffix}`` (legacy: ``/crm/v4/associations/…``)."""
        pair = f"{_seg(from_type)}/{_seg(to_type)}/{suffix}"
        p = f"/crm/v4/associations/{pair}" if legacy else f"/crm/associations/{self.version}/{pair}"
        return Route(p, p, ASSOCIATIONS, legacy)

    def account_details(self, *, legacy: bool = False) -> Route:
        ver = "v3" if legacy else self.version
        p = f"/account-info/{ver}/details"
        return Route(p, p, ACCOUNT_INFO, legacy)

    # --- OAuth and token introspection (numbered paths; no dated version documented) ---------

    @staticmethod
    def oauth_access_token(token: str) -> Route:
        """``GET /oauth/v1/access-tokens/{token}``: the token is in the path, not the template."""
        return Route(f"/oauth/v1/access-tokens/{_seg(token)}", "/oauth/v1/access-tokens/{token}")

    @staticmethod
    def private_app_token_info() -> Route:
        p = "/oauth/v2/private-apps/get/access-token-info"
        return Route(p, p)
