"""A sync test bed: both sandboxes (in process, over ASGI), both clients, a migrated SQLite store,
the default contact mapping with its custom fields created on both sides, and an engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from connector.brevo.client import BrevoClient
from connector.config import BrevoSettings, HubSpotSettings
from connector.engine import SyncEngine
from connector.hubspot.client import HubSpotClient
from connector.mapping import Mapping, load_mapping
from connector.ratelimit import brevo_limiters
from connector.sandbox.brevo import BrevoState, create_brevo_app
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.store import db

ROOT = Path(__file__).resolve().parents[1]
HS_TOKEN = "sandbox-token"
BR_KEY = "sandbox-brevo-key"


class FakeTime:
    """A monotonic clock that jumps ahead when slept on: rate limits cost no real time."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await asyncio.sleep(0)


@dataclass
class SyncEnv:
    hs_state: HubSpotState
    br_state: BrevoState
    hubspot: HubSpotClient
    brevo: BrevoClient
    mapping: Mapping
    engine: SyncEngine
    db_url: str

    def writes(self) -> tuple[int, int]:
        """State-changing calls each sandbox has answered so far (HubSpot, Brevo)."""
        return self.hs_state.log.writes(), self.br_state.calls.writes()


def create_custom_fields(hs: HubSpotState, br: BrevoState, mapping: Mapping) -> None:
    for name in ("preferred_channel", "customer_segment"):
        hs.create_property(
            "contacts",
            {
                "name": name,
                "label": name,
                "type": "string",
                "fieldType": "text",
                "groupName": "contactinformation",
            },
        )
    existing = (
        {a.name for a in br.attributes.values()} if isinstance(br.attributes, dict) else set()
    )
    for spec in mapping.brevo_attribute_specs():
        if spec.name in existing or spec.name in ("FIRSTNAME", "LASTNAME", "SMS", "EMAIL"):
            continue
        body: dict[str, object] = {"type": spec.type}
        category = "normal"
        if spec.type == "category":
            category = "category"
            body["enumeration"] = [{"value": v, "label": label} for v, label in spec.enumeration]
        with contextlib.suppress(Exception):  # already there in this account
            br.create_attribute(category, spec.name, body)


@asynccontextmanager
async def sync_env(tmp_path: Path, *, import_threshold: int = 50) -> AsyncIterator[SyncEnv]:
    hs_state = HubSpotState(rate_limits=False)
    br_state = BrevoState(rate_limits=False, import_delay=0.0)
    br_state.add_api_key(BR_KEY, name="connector")
    mapping = load_mapping(ROOT / "mappings" / "contacts.yaml", default_region="FR")
    create_custom_fields(hs_state, br_state, mapping)
    fake = FakeTime()
    hubspot = HubSpotClient(
        HubSpotSettings(base_url="http://hubspot.test", access_token=HS_TOKEN),
        transport=httpx.ASGITransport(create_hubspot_app(hs_state)),
        sleep=fake.sleep,
        clock=fake.clock,
    )
    brevo = BrevoClient(
        BrevoSettings(base_url="http://brevo.test/v3", api_key=BR_KEY),
        transport=httpx.ASGITransport(create_brevo_app(br_state)),
        limiters=brevo_limiters("general", clock=fake.clock, sleep=fake.sleep),
        sleep=fake.sleep,
    )
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    await asyncio.to_thread(db.upgrade, url)
    engine_ = db.create_engine(url)
    sessions = db.session_factory(engine_)
    engine = SyncEngine(
        mapping=mapping,
        hubspot=hubspot,
        brevo=brevo,
        sessions=sessions,
        import_list_ids=[10],
        import_threshold=import_threshold,
        import_poll_every=0.01,
    )
    try:
        yield SyncEnv(hs_state, br_state, hubspot, brevo, mapping, engine, url)
    finally:
        await hubspot.aclose()
        await brevo.aclose()
        await engine_.dispose()
