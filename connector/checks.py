"""``connector test``: the connection test, one ✓/✗ line per check, each ✗ with a fix.

Every check is an async function returning :class:`CheckResult`; :func:`run_checks` runs them
in order and never raises for an API or database problem (that is what a ✗ is for). Secrets
never reach the output: messages come from the typed errors, which scrub them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from connector.brevo.client import BrevoClient
from connector.config import Settings
from connector.errors import (
    ApiError,
    AuthError,
    ConnectorError,
    ForbiddenError,
    NotFoundError,
    TransportError,
)
from connector.hubspot.client import HubSpotClient
from connector.store import db as store_db

HUBSPOT_TOKEN_HINT = (
    "issue a new token: a Service Key under Settings → Development → Keys, or the static token "
    "of your project app (Development → Projects → your app → Auth); a legacy private app's "
    "token can be rotated under its Auth tab. Put it in HUBSPOT_ACCESS_TOKEN."
)
BREVO_KEY_HINT = (
    "create a new API key in Brevo under SMTP & API → API keys (name it for the connector), "
    "and put it in BREVO_API_KEY."
)

READ_OBJECTS = ("contacts", "companies", "deals")
REGISTER_HINT = "run: connector webhooks register"


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""
    hint: str = ""

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        text = f"{mark} {self.name}"
        if self.detail:
            text += f": {self.detail}"
        if not self.ok and self.hint:
            text += f"\n    → {self.hint}"
        return text


def _api_hint(e: ApiError, token_hint: str) -> str:
    if isinstance(e, AuthError):
        return token_hint
    if isinstance(e, TransportError):
        return "check base_url, DNS and the network path (proxy, firewall) to the API."
    if isinstance(e, ForbiddenError):
        return "grant the missing scope to the app or key, then reinstall or re-issue it."
    return "see the error above; run again with log_level: debug for the request log."


async def _guard(name: str, fn: Callable[[], Awaitable[CheckResult]], hint: str) -> CheckResult:
    try:
        return await fn()
    except ApiError as e:
        return CheckResult(name, False, str(e), _api_hint(e, hint))
    except ConnectorError as e:
        return CheckResult(name, False, str(e), hint)


async def hubspot_checks(settings: Settings, hubspot: HubSpotClient) -> list[CheckResult]:
    results: list[CheckResult] = []

    async def reachable() -> CheckResult:
        info = await hubspot.account_details()
        detail = f"portal {info.portal_id or '?'} {info.account_type or ''}".strip()
        return CheckResult("HubSpot reachable, token valid", True, detail)

    first = await _guard("HubSpot reachable, token valid", reachable, HUBSPOT_TOKEN_HINT)
    results.append(first)
    if not first.ok:
        return results

    for object_type in READ_OBJECTS:

        async def readable(t: str = object_type) -> CheckResult:
            async for _ in hubspot.iter_objects(t, ["hs_object_id"], page_size=1):
                break
            return CheckResult(f"HubSpot {t} readable", True)

        results.append(
            await _guard(
                f"HubSpot {object_type} readable",
                readable,
                f"grant crm.objects.{object_type}.read to the app or key",
            )
        )

    async def write_scope() -> CheckResult:
        wanted = ["crm.objects.contacts.write"]
        sync = settings.connectors.hubspot.sync
        if sync.companies:
            wanted.append("crm.objects.companies.write")
        if sync.deals:
            wanted.append("crm.objects.deals.write")
        info = await hubspot.token_info()
        if info is not None and info.scopes:
            missing = [s for s in wanted if s not in info.scopes]
            if missing:
                return CheckResult(
                    "HubSpot write scope",
                    False,
                    "missing " + ", ".join(missing),
                    "add the scopes to the app or key (Settings → Development), then re-issue "
                    "the token or reinstall the app.",
                )
            return CheckResult("HubSpot write scope", True, ", ".join(wanted))
        missing = [s for s in wanted if not await hubspot.probe_write_scope(s.split(".")[2])]
        if missing:
            return CheckResult(
                "HubSpot write scope",
                False,
                "missing " + ", ".join(missing) + " (probed: the token cannot tell its scopes)",
                "add the scopes to the app or key, then re-issue the token.",
            )
        return CheckResult("HubSpot write scope", True, "probed " + ", ".join(wanted))

    results.append(await _guard("HubSpot write scope", write_scope, HUBSPOT_TOKEN_HINT))
    return results


async def brevo_checks(settings: Settings, brevo: BrevoClient) -> list[CheckResult]:
    results: list[CheckResult] = []

    async def key_valid() -> CheckResult:
        account = await brevo.get_account()
        return CheckResult("Brevo API key valid", True, account.company_name or "account")

    first = await _guard("Brevo API key valid", key_valid, BREVO_KEY_HINT)
    results.append(first)
    if not first.ok:
        return results

    lists = settings.connectors.hubspot.lists.ids()

    async def lists_exist() -> CheckResult:
        missing = []
        for role, list_id in lists.items():
            try:
                found = await brevo.get_list(list_id)
            except NotFoundError:
                found = None
            if found is None:
                missing.append(f"{role}={list_id}")
        if missing:
            return CheckResult(
                "Brevo lists exist",
                False,
                "not found: " + ", ".join(missing),
                "create the lists in Brevo (Contacts → Lists) and put their ids under "
                "connectors.hubspot.lists in the config.",
            )
        shown = ", ".join(f"{k}={v}" for k, v in lists.items()) or "none configured"
        return CheckResult("Brevo lists exist", True, shown)

    results.append(await _guard("Brevo lists exist", lists_exist, BREVO_KEY_HINT))
    return results


async def database_check(settings: Settings) -> CheckResult:
    name = "Database reachable and migrated"
    try:
        engine = store_db.create_engine(settings.database.url)
    except ConnectorError as e:
        return CheckResult(name, False, str(e), "fix database.url in the config.")
    try:
        status = await store_db.check(engine)
    finally:
        await engine.dispose()
    if not status.reachable:
        return CheckResult(
            name,
            False,
            status.error or "unreachable",
            "check database.url and that the server runs.",
        )
    if not status.migrated:
        return CheckResult(
            name,
            False,
            f"schema at {status.current or 'nothing'}, expected {status.head}",
            "run: connector db upgrade",
        )
    return CheckResult(name, True, f"revision {status.head}")


async def brevo_webhook_check(settings: Settings, brevo: BrevoClient) -> CheckResult:
    from connector.webhook_setup import brevo_url, find_brevo_webhook

    name = "Brevo webhook registered"
    assert settings.webhooks is not None
    url = brevo_url(settings)
    if url is None:
        return CheckResult(
            name,
            False,
            "server.public_url is not set",
            "set server.public_url, then run: connector webhooks register",
        )

    async def registered() -> CheckResult:
        hook = await find_brevo_webhook(brevo, url)
        if hook is None:
            return CheckResult(name, False, f"no marketing webhook points at {url}", REGISTER_HINT)
        return CheckResult(name, True, f"webhook {hook.id} → {url}")

    return await _guard(name, registered, REGISTER_HINT)


async def run_checks(
    settings: Settings, hubspot: HubSpotClient | None, brevo: BrevoClient | None
) -> Sequence[CheckResult]:
    results: list[CheckResult] = []
    if hubspot is not None:
        results += await hubspot_checks(settings, hubspot)
    if brevo is not None:
        results += await brevo_checks(settings, brevo)
        if settings.webhooks is not None:
            results.append(await brevo_webhook_check(settings, brevo))
    results.append(await database_check(settings))
    return results
