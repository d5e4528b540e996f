"""``connector webhooks register``: Brevo's marketing webhook, and HubSpot's app settings.

Brevo's webhook is created through the API, once: a run first lists the marketing webhooks
(one call; the /webhooks family allows 100 requests per hour) and creates one only when none
points at ``{public_url}{brevo_path}``. HubSpot's subscriptions cannot be created with the
connector's token (a legacy private app manages them in its UI, a project app in its
``webhooks.json``), so the command prints the settings to enter there.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.brevo.client import BrevoClient
from connector.brevo.models import BrevoWebhook
from connector.config import Settings
from connector.errors import ConfigError
from connector.mapping import load_mapping
from connector.runtime import email_events_on, mapping_path

BREVO_EVENTS = (
    "unsubscribed",
    "hardBounce",
    "spam",
    "listAddition",
    "contactUpdated",
    "contactDeleted",
)
#: Marketing e-mail events subscribed when they go to HubSpot (:func:`brevo_events`).
BREVO_EMAIL_EVENTS = ("delivered", "opened", "click")
BREVO_DESCRIPTION = "HubSpot ⇄ Brevo connector"
HUBSPOT_OBJECT_EVENTS = (
    "contact.creation",
    "contact.deletion",
    "contact.merge",
    "contact.privacyDeletion",
    "contact.restore",
)
HUBSPOT_MAX_CONCURRENT = 10
#: HubSpot rejects these as propertyChange subscriptions (API notes §2.1)
HUBSPOT_UNSUBSCRIBABLE = frozenset({"hs_lastmodifieddate", "num_unique_conversion_events"})


@dataclass(frozen=True)
class Targets:
    hubspot_url: str
    brevo_url: str
    brevo_token: str


def targets(settings: Settings) -> Targets:
    """The two webhook URLs and Brevo's bearer token; ConfigError naming a missing key."""
    hooks = settings.webhooks
    if hooks is None:
        raise ConfigError(
            "webhooks: section missing — add one with brevo_token (and server.public_url)",
            key="webhooks",
        )
    public_url = settings.server.public_url if settings.server is not None else None
    if public_url is None:
        raise ConfigError(
            "server.public_url is not set — the external base URL HubSpot and Brevo can "
            "reach, such as https://sync.example.com",
            key="server.public_url",
        )
    if hooks.brevo_token is None:
        raise ConfigError(
            "webhooks.brevo_token is not set — a long random string; Brevo sends it back as "
            "a bearer token",
            key="webhooks.brevo_token",
        )
    return Targets(
        hubspot_url=public_url + hooks.hubspot_path,
        brevo_url=public_url + hooks.brevo_path,
        brevo_token=hooks.brevo_token.get_secret_value(),
    )


def brevo_url(settings: Settings) -> str | None:
    """Where Brevo's webhook should point, or ``None`` without ``server.public_url``."""
    server, hooks = settings.server, settings.webhooks
    if server is None or server.public_url is None or hooks is None:
        return None
    return server.public_url + hooks.brevo_path


def brevo_events(settings: Settings) -> tuple[str, ...]:
    """The marketing events to subscribe: :data:`BREVO_EVENTS`, and :data:`BREVO_EMAIL_EVENTS`
    when e-mail events go to HubSpot (:func:`connector.runtime.email_events_on`)."""
    return (*BREVO_EVENTS, *BREVO_EMAIL_EVENTS) if email_events_on(settings) else BREVO_EVENTS


async def find_brevo_webhook(brevo: BrevoClient, url: str) -> BrevoWebhook | None:
    """The marketing webhook that points at ``url``, if any (one API call)."""
    for hook in await brevo.list_webhooks("marketing"):
        if hook.url.rstrip("/") == url.rstrip("/"):
            return hook
    return None


async def ensure_brevo_webhook(
    brevo: BrevoClient,
    target: Targets,
    *,
    dry_run: bool,
    events: tuple[str, ...] = BREVO_EVENTS,
) -> tuple[bool, int | None]:
    """(created, id): creates the webhook unless one exists; ``dry_run`` never creates."""
    existing = await find_brevo_webhook(brevo, target.brevo_url)
    if existing is not None:
        return False, existing.id
    if dry_run:
        return False, None
    hook_id = await brevo.create_webhook(
        target.brevo_url,
        events,
        type="marketing",
        auth_token=target.brevo_token,
        description=BREVO_DESCRIPTION,
    )
    return True, hook_id


#: the HubSpot event prefix of each object type the config can switch on (``sync:``)
HUBSPOT_PREFIX = {"companies": "company", "deals": "deal", "tickets": "ticket"}
#: record events subscribed for companies, deals and tickets (each also gets one
#: ``propertyChange`` per mapped property, and ``associationChange``)
HUBSPOT_RECORD_EVENTS = ("creation", "deletion", "merge", "restore")
#: the engagement object types whose changes reach Brevo (meetings, calls, notes), by HubSpot
#: objectTypeId: they can only be subscribed as generic ``object.*`` events (API notes §3.2)
HUBSPOT_ENGAGEMENT_TYPES = (("meetings", "0-47"), ("calls", "0-48"), ("notes", "0-46"))
HUBSPOT_ENGAGEMENT_EVENTS = ("creation", "deletion", "associationChange")


def _mapped_properties(settings: Settings, object_type: str) -> list[str] | None:
    """The subscribable HubSpot properties of an object type's mapping file (None: no file)."""
    path = mapping_path(settings, object_type)
    if not path.is_file():
        return None
    mapping = load_mapping(path, default_region=settings.sync.default_region)
    return [p for p in mapping.hubspot_properties() if p not in HUBSPOT_UNSUBSCRIBABLE]


def hubspot_subscriptions(settings: Settings) -> list[str]:
    """The HubSpot subscriptions for the object types switched on in ``sync:``.

    Contacts: the contact events and one propertyChange per mapped property of
    ``contacts.yaml``. Companies, deals, tickets: creation, deletion, merge, restore,
    associationChange and one propertyChange per property of their mapping file.
    Engagements: ``object.*`` (generic) creation, deletion and associationChange of meetings,
    calls and notes, by objectTypeId. A ConfigError when contacts have no mapping file; an
    object type without one gets no propertyChange (:func:`subscription_notes` says so).
    """
    props = _mapped_properties(settings, "contacts")
    if props is None:
        path = mapping_path(settings, "contacts")
        raise ConfigError(
            f"{path}: no mapping file for contacts — set sync.mappings_dir in the config",
            key="sync.mappings_dir",
        )
    subs = [
        *HUBSPOT_OBJECT_EVENTS,
        *(f"contact.propertyChange: {p}" for p in props),
    ]
    switches = settings.connectors.hubspot.sync
    enabled = [o for o in HUBSPOT_PREFIX if getattr(switches, o, False)]
    if enabled:
        subs.append("contact.associationChange")
    for object_type in enabled:
        prefix = HUBSPOT_PREFIX[object_type]
        mapped = _mapped_properties(settings, object_type) or []
        subs += [f"{prefix}.{e}" for e in HUBSPOT_RECORD_EVENTS]
        subs.append(f"{prefix}.associationChange")
        subs += [f"{prefix}.propertyChange: {p}" for p in mapped]
    if getattr(switches, "engagements", False):
        for name, type_id in HUBSPOT_ENGAGEMENT_TYPES:
            subs += [
                f"object.{e} (objectTypeId {type_id}, {name})" for e in HUBSPOT_ENGAGEMENT_EVENTS
            ]
    return subs


def subscription_notes(settings: Settings) -> list[str]:
    """What the operator should know about the subscriptions: object types switched on
    without a mapping file (their propertyChange subscriptions cannot be listed yet)."""
    notes: list[str] = []
    switches = settings.connectors.hubspot.sync
    for object_type, prefix in HUBSPOT_PREFIX.items():
        if (
            getattr(switches, object_type, False)
            and _mapped_properties(settings, object_type) is None
        ):
            path = mapping_path(settings, object_type)
            notes.append(
                f"sync.{object_type} is on but {path} does not exist: add the mapping file, then "
                f"run this again for its {prefix}.propertyChange subscriptions"
            )
    return notes


def hubspot_instructions(target: Targets, subscriptions: list[str]) -> list[str]:
    lines = [
        "HubSpot: enter these in your app's webhook settings (a legacy private app: its "
        "Webhooks tab; a project app: webhooks.json, then upload the project):",
        f"  Target URL               {target.hubspot_url}",
        f"  Max concurrent requests  {HUBSPOT_MAX_CONCURRENT}",
        "  Subscriptions:",
    ]
    lines += [f"    {s}" for s in subscriptions]
    lines.append(
        "  Note: a Service Key cannot receive webhooks; with one the connector polls instead."
    )
    return lines
