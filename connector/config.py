"""Configuration: YAML with ``${VAR}`` / ``${VAR:-default}`` interpolation, checked by pydantic.

``load_config(path)`` reads the file, interpolates environment variables into string values,
and validates the result against :class:`Settings`. Any problem — a missing file, bad YAML, an
unknown key, a wrong type, an unset environment variable — raises :class:`ConfigError` with a
message that names the file, the line, the key, what is wrong and how to fix it. Secrets are
``SecretStr``: their repr is ``**********`` and they are registered with
:func:`connector.errors.register_secret` so no log line or error message can show them.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from connector.errors import ConfigError, register_secret
from connector.onboarding.settings import OnboardingSettings

DEFAULT_CONFIG_PATH = "config.yaml"
CONFIG_ENV_VAR = "CONNECTOR_CONFIG"

Tier = Literal["free", "starter", "professional", "enterprise"]
Direction = Literal["bidirectional", "hubspot_to_brevo", "brevo_to_hubspot"]
LogLevel = Literal["debug", "info", "warning", "error"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OAuthSettings(_Section):
    """OAuth 2.0 for a HubSpot app installed with the authorization-code flow."""

    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr
    token_path: str = "/oauth/2026-03/token"
    refresh_margin_seconds: int = Field(default=300, ge=0)


class HubSpotSyncSwitches(_Section):
    contacts: bool = True
    companies: bool = False
    deals: bool = False
    tickets: bool = False
    engagements: bool = False


class HubSpotLists(_Section):
    """Brevo list ids that lifecycle stages move contacts into."""

    all_contacts: int | None = None
    qualified_leads: int | None = None
    customers: int | None = None

    def ids(self) -> dict[str, int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class HubSpotSettings(_Section):
    enabled: bool = True
    base_url: str = "https://api.hubapi.com"
    api_version: str = "2026-09"
    access_token: SecretStr | None = None
    oauth: OAuthSettings | None = None
    app_client_secret: SecretStr | None = None
    tier: Tier = "professional"
    api_limit_increase: bool = False
    sync: HubSpotSyncSwitches = HubSpotSyncSwitches()
    direction: Direction = "bidirectional"
    lists: HubSpotLists = HubSpotLists()
    debug: bool = False
    log_level: LogLevel = "info"
    log_webhooks: bool = False
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=20)

    @field_validator("api_version")
    @classmethod
    def _date_version(cls, v: str) -> str:
        if not re.fullmatch(r"\d{4}-(03|09)", v):
            raise ValueError(
                "HubSpot's API versions are dated YYYY-03 or YYYY-09 (for example 2026-09)"
            )
        return v

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> HubSpotSettings:
        if not self.enabled:
            return self
        if self.access_token is None and self.oauth is None:
            raise ValueError(
                "give either access_token (a Service Key, a project app's static token or a "
                "legacy private-app token) or an oauth: block (client_id, client_secret, "
                "refresh_token)"
            )
        if self.access_token is not None and self.oauth is not None:
            raise ValueError("give access_token or oauth, not both")
        return self


class BrevoSettings(_Section):
    enabled: bool = True
    base_url: str = "https://api.brevo.com/v3"
    api_key: SecretStr | None = None
    api_key_name: str | None = None
    """the name given to ``api_key`` in Brevo (SMTP & API → API keys). Brevo's contact webhooks
    carry the name of the key that made a change (``api_key_name``): with it set, our own
    writes coming back are recognised without a read (an extra hint beside the ledger)"""
    plan: Literal["general", "advanced"] = "general"
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=20)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @model_validator(mode="after")
    def _key_needed(self) -> BrevoSettings:
        if self.enabled and self.api_key is None:
            raise ValueError("api_key is required: create one in Brevo under SMTP & API → API keys")
        return self


class Connectors(_Section):
    hubspot: HubSpotSettings
    brevo: BrevoSettings


class DatabaseSettings(_Section):
    url: str = "sqlite:///connector.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not re.match(r"^(sqlite(\+aiosqlite)?|postgresql(\+psycopg)?)://", v):
            raise ValueError(
                "use sqlite:///path/to/connector.db or postgresql+psycopg://user@host/dbname"
            )
        return v


class OptOutSettings(_Section):
    """``sync.optout``: how a Brevo unsubscribe, hard bounce or spam complaint marks HubSpot."""

    property: str = "brevo_email_optout"
    """a HubSpot boolean contact property set to true (created when missing)"""
    reason_property: str = "brevo_optout_reason"
    """unsubscribed | hard_bounce | spam"""
    date_property: str = "brevo_optout_date"


class EmailEventProperties(_Section):
    """``sync.email_events.properties``: the HubSpot contact properties the Brevo e-mail events
    fill (created when missing); ``null`` leaves one out."""

    last_open_date: str | None = "brevo_last_open_date"
    last_click_date: str | None = "brevo_last_click_date"
    last_delivered_date: str | None = "brevo_last_delivered_date"
    opens: str | None = "brevo_email_opens"
    clicks: str | None = "brevo_email_clicks"
    hard_bounced: str | None = "brevo_hard_bounced"


class EmailEventsSettings(_Section):
    """``sync.email_events``: Brevo e-mail events (delivered, opened, clicked, hard bounce,
    unsubscribed) on the HubSpot contact — a timeline note per (contact, event kind, campaign)
    and the :class:`EmailEventProperties`. Active when ``connectors.hubspot.sync.engagements``
    is on and ``enabled`` is true."""

    enabled: bool = True
    timeline: Literal["note", "none"] = "note"
    timeline_kinds: tuple[
        Literal["delivered", "opened", "clicked", "hard_bounce", "unsubscribed"], ...
    ] = ("delivered", "opened", "clicked", "hard_bounce", "unsubscribed")
    """the event kinds that get a timeline note (the properties are kept for all)"""
    property_group: str = "contactinformation"
    """the HubSpot property group of the properties it creates (must exist)"""
    properties: EmailEventProperties = EmailEventProperties()


class SyncSettings(_Section):
    """How often and how the daemon syncs; intervals in seconds."""

    poll_interval: float = Field(default=30.0, gt=0)
    reconcile_interval: float = Field(default=86_400.0, gt=0)
    lookback_seconds: float = Field(default=120.0, ge=0)
    default_region: str = "US"
    mappings_dir: str = "mappings"
    import_threshold: int = Field(default=50, ge=1)
    batch_size: int = Field(default=100, ge=1, le=100)
    max_delete_share: float = Field(default=0.2, ge=0, le=1)
    retention_days: int = Field(default=30, ge=1)
    """processed inbox events and sync history older than this are purged"""
    on_hubspot_delete: Literal["delete", "blocklist", "ignore"] = "blocklist"
    """what a HubSpot contact deletion does to the linked Brevo contact"""
    on_brevo_delete: Literal["archive", "ignore"] = "ignore"
    """what a Brevo contact deletion does to the linked HubSpot contact"""
    optout: OptOutSettings = OptOutSettings()
    email_events: EmailEventsSettings = EmailEventsSettings()

    @field_validator("default_region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z]{2}", v):
            raise ValueError("a two-letter country code in capitals, such as US, GB, FR or NO")
        return v


_WEBHOOK_PATH = re.compile(r"/[A-Za-z0-9_\-./]*")
_RESERVED_PATHS = ("/healthz", "/metrics")


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP network: write 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32"
        ) from None


class ServerSettings(_Section):
    """The ``server:`` section: the HTTP listener inside ``connector run`` (webhooks, health,
    metrics)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_url: str | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of the reverse proxies whose ``X-Forwarded-For``/``-Proto``/``-Host`` are
    believed; from anyone else those headers are ignored."""
    stale_after_seconds: float = Field(default=900.0, gt=0)
    """``/healthz`` answers 503 when a side's last successful pull is older than this."""

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", v):
            raise ValueError(
                "the external base URL, such as https://sync.example.com (no query or fragment)"
            )
        return v.rstrip("/")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            return tuple(_cidr(str(x)) for x in v)
        return v


class AllowedIps(_Section):
    """``webhooks.allowed_ips``: source networks allowed per endpoint (empty: anyone)."""

    hubspot: tuple[str, ...] = ()
    brevo: tuple[str, ...] = ()

    @field_validator("hubspot", "brevo", mode="before")
    @classmethod
    def _networks(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list | tuple):
            return tuple(_cidr(str(x)) for x in v)
        return v


#: What Brevo publishes as its webhook senders (for ``webhooks.allowed_ips.brevo``).
BREVO_WEBHOOK_NETWORKS = ("1.179.112.0/20", "172.246.240.0/20")


class WebhookSettings(_Section):
    """The ``webhooks:`` section of the config file (the listener is ``server:``)."""

    brevo_token: SecretStr | None = None
    coalesce_seconds: float = Field(default=1.0, ge=0, le=60)
    """events for one record arriving within this window are read once"""
    allowed_ips: AllowedIps = AllowedIps()
    hubspot_path: str = "/webhooks/hubspot"
    brevo_path: str = "/webhooks/brevo"
    max_age_seconds: int = Field(default=300, ge=10, le=300)
    max_skew_seconds: int = Field(default=60, ge=0, le=300)
    accept_legacy_signatures: bool = False
    """also accept HubSpot's v1/v2 signatures (older apps); v3 is always accepted"""
    db_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    retry_after_seconds: int = Field(default=60, ge=1, le=86_400)

    @field_validator("hubspot_path", "brevo_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not _WEBHOOK_PATH.fullmatch(v) or v in _RESERVED_PATHS:
            raise ValueError("a path such as /webhooks/hubspot (not /healthz or /metrics)")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> WebhookSettings:
        if self.hubspot_path == self.brevo_path:
            raise ValueError("hubspot_path and brevo_path must differ")
        return self


class LoggingSettings(_Section):
    level: LogLevel = "info"
    format: Literal["auto", "json", "console"] = "auto"
    log_emails: bool = False


class Settings(BaseSettings):
    """The whole configuration file."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    connectors: Connectors
    database: DatabaseSettings = DatabaseSettings()
    sync: SyncSettings = SyncSettings()
    server: ServerSettings | None = None
    webhooks: WebhookSettings | None = None
    logging: LoggingSettings = LoggingSettings()
    onboarding: OnboardingSettings | None = None

    def secrets(self) -> list[str]:
        hs, br = self.connectors.hubspot, self.connectors.brevo
        found: list[SecretStr | None] = [hs.access_token, hs.app_client_secret, br.api_key]
        if self.webhooks is not None:
            found.append(self.webhooks.brevo_token)
        if hs.oauth:
            found += [hs.oauth.client_secret, hs.oauth.refresh_token]
        if self.onboarding is not None:
            cal, llm = self.onboarding.calendar.google, self.onboarding.email.llm
            if cal is not None:
                found += [cal.client_secret, cal.refresh_token]
            if llm is not None:
                found.append(llm.api_key)
        return [s.get_secret_value() for s in found if s is not None]


# --- interpolation -----------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _MissingVar(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        got = env.get(name)
        if got is None or (got == "" and default is not None):
            if default is None:
                raise _MissingVar(name)
            return default
        return got

    return _VAR.sub(sub, value)


def _interpolate_tree(node: Any, env: Mapping[str, str], path: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env, (*path, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env, (*path, str(i))) for i, v in enumerate(node)]
    if isinstance(node, str):
        try:
            return interpolate(node, env)
        except _MissingVar as e:
            raise _InterpolationError(path, e.name) from None
    return node


class _InterpolationError(Exception):
    def __init__(self, path: tuple[str, ...], var: str) -> None:
        self.path = path
        self.var = var


# --- line numbers for messages -------------------------------------------------------------


def _line_of(root: yaml.Node | None, path: tuple[str | int, ...]) -> int | None:
    """The 1-based line of a key path in the YAML document, or the closest parent's."""
    node = root
    line: int | None = None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _fields_of(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """Known field names at a key path (for "did you mean" hints)."""
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
        else:
            return []
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _describe(err: Mapping[str, Any], where: str) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent, name = loc[:-1], str(loc[-1])
        known = _fields_of(Settings, parent)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys here: {', '.join(known)}"
        return f"{where}{key}: unknown key — {hint} Remove or rename it."
    if kind == "missing":
        return f"{where}{key}: required key is missing — add it (see config.example.yaml)."
    msg = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    shown = (
        "" if got is None or isinstance(got, (dict, list)) or "secret" in key else f" (got {got!r})"
    )
    return f"{where}{key}: {msg}{shown} — fix this value in the config file."


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate the configuration file.

    ``path`` defaults to ``$CONNECTOR_CONFIG`` or ``./config.yaml``.
    """
    env = os.environ if env is None else env
    cfg_path = Path(path or env.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)
    if not cfg_path.is_file():
        raise ConfigError(
            f"{cfg_path}: no such configuration file — copy config.example.yaml to {cfg_path} "
            f"and edit it, or pass --config PATH (or set {CONFIG_ENV_VAR})."
        )
    text = cfg_path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(
            f"{cfg_path}{at}: not valid YAML ({problem}) — check indentation and quoting."
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: the top level must be a mapping with a connectors: key.")
    try:
        data = _interpolate_tree(raw, env, ())
    except _InterpolationError as e:
        line = _line_of(root, e.path)
        key = ".".join(e.path)
        raise ConfigError(
            f"{cfg_path}:{line}: {key}: environment variable {e.var} is not set — export it, "
            f"put it in the systemd EnvironmentFile, or write ${{{e.var}:-default}}.",
            key=key,
        ) from None
    try:
        settings = Settings(**data)
    except PydanticValidationError as e:
        lines = []
        first_key: str | None = None
        for err in e.errors():
            loc = tuple(err["loc"])
            line = _line_of(root, loc)
            where = f"{cfg_path}:{line}: " if line else f"{cfg_path}: "
            lines.append(_describe(err, where))
            first_key = first_key or ".".join(str(p) for p in loc)
        raise ConfigError("\n".join(lines), key=first_key) from None
    for secret in settings.secrets():
        register_secret(secret)
    return settings
