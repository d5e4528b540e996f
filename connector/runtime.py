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
from connector.onboarding.enroll import HookEvents
from connector.store import db

#: object types the engine syncs today, in the order they run
SUPPORTED_OBJECTS = ("contacts",)


def mapping_path(settings: Settings, object_type: str) -> Path:
    return Path(settings.sync.mappings_dir) / f"{object_type}.yaml"


def enabled_objects(settings: Settings) -> list[str]:
    switches = settings.connectors.hubspot.sync.model_dump()
    return [o for o in SUPPORTED_OBJECTS if switches.get(o)]


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
                    rt.add_engine(object_type)
                await rt.add_rollups()
            yield rt
        finally:
            await hubspot.aclose()
            await brevo.aclose()
            await db_engine.dispose()

    def add_engine(self, object_type: str) -> SyncEngine:
        path = mapping_path(self.settings, object_type)
        if not path.is_file():
            raise ConfigError(
                f"{path}: no mapping file for {object_type} — copy it from the project's "
                f"mappings/ folder, or set sync.mappings_dir in the config",
                key="sync.mappings_dir",
            )
        mapping = load_mapping(path, default_region=self.settings.sync.default_region)
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
