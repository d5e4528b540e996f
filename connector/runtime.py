"""Wiring: from :class:`~connector.config.Settings` to clients, store and one engine per object.

The CLI commands and the daemon build the same :class:`Runtime`, so a command behaves exactly
as the daemon would. ``async with Runtime.open(settings) as rt:`` opens everything and closes
it again (HTTP connection pools, the database engine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from connector.brevo.client import BrevoClient
from connector.config import Settings
from connector.engine import SyncEngine
from connector.errors import ConfigError
from connector.hubspot.auth import DbTokenStore
from connector.hubspot.client import HubSpotClient
from connector.mapping import Mapping, load_mapping
from connector.objects.base import ObjectSync
from connector.objects.email_events import EmailEventsSync
from connector.onboarding.enroll import HookEvents
from connector.store import db

#: object types synced today, in the order they run: contacts by the engine, the others by an
#: :class:`~connector.objects.base.ObjectSync` each (registered in :attr:`Runtime.objects`)
SUPPORTED_OBJECTS = ("contacts", "companies", "deals")
#: the object types :meth:`Runtime.add_object` builds a CRM object sync for
CRM_OBJECTS = ("companies", "deals")


def mapping_path(settings: Settings, object_type: str) -> Path:
    return Path(settings.sync.mappings_dir) / f"{object_type}.yaml"


def enabled_objects(settings: Settings) -> list[str]:
    switches = settings.connectors.hubspot.sync.model_dump()
    return [o for o in SUPPORTED_OBJECTS if switches.get(o)]


def email_events_on(settings: Settings) -> bool:
    """Brevo e-mail events reach HubSpot: ``connectors.hubspot.sync.engagements`` and
    ``sync.email_events.enabled`` on, and HubSpot written to (not ``hubspot_to_brevo``)."""
    hs = settings.connectors.hubspot
    return (
        hs.enabled
        and hs.sync.engagements
        and settings.sync.email_events.enabled
        and hs.direction != "hubspot_to_brevo"
    )


@dataclass
class Runtime:
    settings: Settings
    hubspot: HubSpotClient
    brevo: BrevoClient
    db_engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    mappings: dict[str, Mapping] = field(default_factory=dict)
    engines: dict[str, SyncEngine] = field(default_factory=dict)
    #: every other object type's sync, by object type (companies, deals, …)
    objects: dict[str, ObjectSync] = field(default_factory=dict)
    #: Brevo e-mail events → HubSpot timeline and properties (:func:`email_events_on`)
    email_events: EmailEventsSync | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, *, load_engines: bool = True) -> AsyncIterator[Runtime]:
        db_engine = db.create_engine(settings.database.url)
        sessions = db.session_factory(db_engine)
        token_store = DbTokenStore(sessions) if settings.connectors.hubspot.oauth else None
        hubspot = HubSpotClient(settings.connectors.hubspot, token_store=token_store)
        brevo = BrevoClient(settings.connectors.brevo)
        rt = cls(settings, hubspot, brevo, db_engine, sessions)
        try:
            if load_engines:
                for object_type in enabled_objects(settings):
                    if object_type in CRM_OBJECTS:
                        rt.add_object(object_type)
                    else:
                        rt.add_engine(object_type)
                if email_events_on(settings):
                    rt.email_events = EmailEventsSync(settings, hubspot, sessions)
                await rt.add_rollups()
            yield rt
        finally:
            await hubspot.aclose()
            await brevo.aclose()
            await db_engine.dispose()

    def _load_mapping(self, object_type: str) -> Mapping:
        path = mapping_path(self.settings, object_type)
        if not path.is_file():
            raise ConfigError(
                f"{path}: no mapping file for {object_type} — copy it from the project's "
                f"mappings/ folder, or set sync.mappings_dir in the config",
                key="sync.mappings_dir",
            )
        return load_mapping(path, default_region=self.settings.sync.default_region)

    def add_object(self, object_type: str) -> ObjectSync:
        """Build the two-way CRM sync of companies or deals and register it."""
        from datetime import timedelta

        from connector.objects.crm_sync import CrmObjectSync
        from connector.objects.deal_events import DealEvents

        mapping = self._load_mapping(object_type)
        sync = self.settings.sync
        lists = self.settings.connectors.hubspot.lists
        obj = CrmObjectSync(
            mapping=mapping,
            hubspot=self.hubspot,
            brevo=self.brevo,
            sessions=self.sessions,
            direction=self.settings.connectors.hubspot.direction,
            lookback=timedelta(seconds=sync.lookback_seconds),
            on_hubspot_delete=sync.on_hubspot_delete,
            on_brevo_delete=sync.on_brevo_delete,
            max_delete_share=sync.max_delete_share,
            import_list_ids=[lists.all_contacts] if lists.all_contacts else [],
            # a deal stage change → the deal_stage_changed Brevo event, queued in the sync's
            # transaction and sent by the hook runner
            on_events=DealEvents(mapping) if object_type == "deals" else None,
        )
        self.mappings[object_type] = mapping
        self.objects[object_type] = obj
        return obj

    def add_engine(self, object_type: str) -> SyncEngine:
        mapping = self._load_mapping(object_type)
        lists = self.settings.connectors.hubspot.lists
        engine = SyncEngine(
            mapping=mapping,
            hubspot=self.hubspot,
            brevo=self.brevo,
            sessions=self.sessions,
            direction=self.settings.connectors.hubspot.direction,
            import_list_ids=[lists.all_contacts] if lists.all_contacts else [],
            import_threshold=self.settings.sync.import_threshold,
            on_events=HookEvents(self.settings, mapping),
        )
        from connector.events import attach  # events imports the engine module

        attach(engine, self.settings)  # deletions, merges, opt-outs (DESIGN §5)
        self.mappings[object_type] = mapping
        self.engines[object_type] = engine
        return engine

    async def add_rollups(self) -> list[str]:
        """Register the roll-up sources the config enables (tickets, engagements, deals, custom
        objects: ``mappings/rollups/``); the object types registered. With the deals sync
        registered, the deal roll-ups run on its ``after_pass`` hook instead of a pull."""
        from connector.objects.rollup_check import resolve_custom_types
        from connector.objects.rollup_mapping import load_rollup_mappings, rollup_dir
        from connector.objects.rollup_sync import build_rollups, enabled_types

        mappings = load_rollup_mappings(rollup_dir(self.settings.sync.mappings_dir))
        if enabled_types(self.settings, mappings):
            mappings = await resolve_custom_types(mappings, self.hubspot)
        sources = build_rollups(
            self.settings,
            hubspot=self.hubspot,
            brevo=self.brevo,
            sessions=self.sessions,
            mappings=mappings,
        )
        deals = sources.get("deals")
        host = self.objects.get("deals")
        if deals is not None and host is not None and hasattr(host, "after_pass"):
            del sources["deals"]
            previous = getattr(host, "after_pass", None)
            rollup: Callable[[str, list[str]], Awaitable[None]] = deals.after_pass
            hook = rollup
            if previous is not None:

                async def both(object_type: str, ids: list[str]) -> None:
                    await previous(object_type, ids)
                    await rollup(object_type, ids)

                hook = both
            setattr(host, "after_pass", hook)  # noqa: B010 - not on the ObjectSync protocol
        for name, source in sources.items():
            self.objects.setdefault(name, source)
        return list(sources)
