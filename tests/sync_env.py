"""A sync test bed: both sandboxes (in process, over ASGI), both clients, a migrated SQLite store,
the default contact mapping with its custom fields created on both sides, and an engine.

Time is simulated twice over, so nothing depends on the wall clock:

- :class:`FakeTime` is the monotonic clock of the clients' rate limiters and retries: sleeping
  on it only moves it forward (a 429 storm costs no real time);
- :class:`WallClock` is the calendar time of both sandboxes (HubSpot's ``lastmodifieddate``,
  Brevo's ``modifiedAt``) and of the engine's ledger; it moves only when a test says so
  (:meth:`WallClock.advance`), which is how tests decide which side changed last.

:class:`SyncEnv` adds what the end-to-end tests and the state machine share: a full sync cycle
(:meth:`SyncEnv.cycle`), user edits on either side as a person in the UI would make them,
canonical views of both sides through the mapping, the store's links, dead letters and skipped
records, and a deterministic 429 storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from connector.brevo.client import BrevoClient
from connector.brevo.models import BrevoContact
from connector.config import BrevoSettings, HubSpotSettings
from connector.engine import Mode, Outcome, SyncEngine
from connector.hubspot.client import HubSpotClient
from connector.hubspot.models import HubSpotObject
from connector.mapping import Mapping, load_mapping
from connector.ratelimit import brevo_limiters
from connector.sandbox.brevo import BrevoState, create_brevo_app
from connector.sandbox.brevo_model import Contact
from connector.sandbox.common import is_write
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.store import db, deadletters, skipped
from connector.store import links as ledger

ROOT = Path(__file__).resolve().parents[1]
HS_TOKEN = "sandbox-token"
BR_KEY = "sandbox-brevo-key"
#: Where the simulated calendar starts (a Monday morning).
EPOCH = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class FakeTime:
    """A monotonic clock that jumps ahead when slept on: rate limits cost no real time.

    :meth:`call_after` runs a callback once the clock has moved past a point (used to end a
    429 storm after so many simulated seconds).
    """

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept = 0.0
        self._alarms: list[tuple[float, Callable[[], None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        due = [a for a in self._alarms if a[0] <= self.now]
        self._alarms = [a for a in self._alarms if a[0] > self.now]
        for _, callback in due:
            callback()
        await asyncio.sleep(0)

    def call_after(self, seconds: float, callback: Callable[[], None]) -> None:
        self._alarms.append((self.now + seconds, callback))


class WallClock:
    """Calendar time for both sandboxes and the engine; it moves only when told to."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def ms(self) -> float:
        return self.at.timestamp() * 1000

    def advance(self, seconds: float = 1.0) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at


class WriteFaults:
    """ASGI middleware in front of a sandbox: answers its next ``n`` state-changing calls with
    ``status`` before the sandbox sees them (reads pass), so a test can fail writes only."""

    def __init__(self, app: ASGIApp, body: dict[str, object]) -> None:
        self.app = app
        self.body = body
        self.n = 0
        self.status = 503
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.n > 0 and is_write(scope["method"], scope["path"]):
            self.n -= 1
            self.answered += 1
            await JSONResponse(self.body, status_code=self.status)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class SyncEnv:
    hs_state: HubSpotState
    br_state: BrevoState
    hubspot: HubSpotClient
    brevo: BrevoClient
    mapping: Mapping
    engine: SyncEngine
    db_url: str
    clock: WallClock = field(default_factory=WallClock)
    fake: FakeTime = field(default_factory=FakeTime)
    hs_write_faults: WriteFaults | None = None
    br_write_faults: WriteFaults | None = None

    def writes(self) -> tuple[int, int]:
        """State-changing calls each sandbox has answered so far (HubSpot, Brevo)."""
        return self.hs_state.log.writes(), self.br_state.calls.writes()

    # --- sync cycles ---------------------------------------------------------------------------

    async def listing(self) -> tuple[list[HubSpotObject], list[BrevoContact]]:
        """Every record of both sides, read through the clients (a full listing)."""
        hs = [o async for o in self.hubspot.iter_objects("contacts", self.engine.hs_props)]
        br = [c async for c in self.brevo.iter_contacts()]
        return hs, br

    async def cycle(self, *, mode: Mode = "incremental", dry_run: bool = False) -> Outcome:
        """One sync cycle: the full listing of both sides through the engine."""
        hs, br = await self.listing()
        return await self.engine.sync(hubspot=hs, brevo=br, mode=mode, dry_run=dry_run)

    # --- user edits (as in each tool's UI) -------------------------------------------------------

    def hs_create(self, **props: str | None) -> str:
        """A contact created by hand in HubSpot; its id."""
        return self.hs_state.put_object("contacts", props)

    def hs_edit(self, hubspot_id: str, **props: str | None) -> None:
        """A contact edited by hand in HubSpot."""
        self.hs_state.put_object("contacts", props, hubspot_id)

    def hs_get(self, hubspot_id: str) -> dict[str, str | None] | None:
        """A live HubSpot contact's properties (stored and computed), or None."""
        return self.hs_state.get_object("contacts", hubspot_id)

    def hs_by_email(self, email: str) -> tuple[str, dict[str, str | None]] | None:
        """The live HubSpot contact with this email: (id, properties), or None."""
        oid = self.hs_state.stores["contacts"].by_email.get(email.strip().lower())
        if oid is None or oid not in self.hs_state.stores["contacts"].live:
            return None
        props = self.hs_get(str(oid))
        return None if props is None else (str(oid), props)

    def hs_ids(self) -> list[str]:
        """The ids of every live HubSpot contact."""
        return [str(i) for i in sorted(self.hs_state.stores["contacts"].live)]

    def br_create(self, email: str, **attributes: object) -> int:
        """A contact created by hand in Brevo; its id."""
        new_id = self.br_state.create_contact({"email": email, "attributes": attributes}, "")
        assert new_id is not None, f"{email} already exists in Brevo"
        return new_id

    def br_edit(self, email: str, **attributes: object) -> Contact:
        """A contact edited by hand in Brevo (pass ``EMAIL=`` to change its address)."""
        return self.br_state.edit_contact(email, attributes)

    def br_get(self, brevo_id: int | str) -> Contact | None:
        """A Brevo contact by id, or None."""
        return self.br_state.contacts.get(int(brevo_id))

    def br_by_email(self, email: str) -> Contact | None:
        """The Brevo contact with this email, or None."""
        return self.br_state.get(email)

    # --- canonical views ----------------------------------------------------------------------

    def hs_values(self, hubspot_id: str) -> dict[str, str | None]:
        """A HubSpot contact's mapped fields in canonical form (invalid values left out)."""
        props = self.hs_get(hubspot_id)
        assert props is not None, f"no HubSpot contact {hubspot_id}"
        return self.mapping.to_brevo(props).values

    def br_values(self, contact: Contact) -> dict[str, str | None]:
        """A Brevo contact's mapped fields in canonical form (invalid values left out)."""
        return self.mapping.to_hubspot(brevo_view(contact)).values

    # --- the store -----------------------------------------------------------------------------

    async def links(self) -> list[ledger.LinkRecord]:
        """Every contact link with its ledger rows."""
        out: list[ledger.LinkRecord] = []
        async with self.engine.sessions() as s:
            async for batch in ledger.iter_links(s, "contacts"):
                out.extend(batch)
        return out

    async def dead_letters(self) -> list[deadletters.DeadLetterRecord]:
        """The open dead letters, oldest first."""
        async with self.engine.sessions() as s:
            return await deadletters.list_open(s, limit=1000)

    async def skipped(self) -> list[skipped.SkippedItem]:
        """The records listed as not synced."""
        async with self.engine.sessions() as s:
            return await skipped.list_skipped(s, limit=1000)

    # --- faults ----------------------------------------------------------------------------------

    def fail_writes(self, system: str, n: int, status: int = 503) -> None:
        """Answer the next ``n`` write calls to ``system`` ("hubspot" | "brevo") with ``status``."""
        faults = self.hs_write_faults if system == "hubspot" else self.br_write_faults
        assert faults is not None
        faults.n, faults.status = n, status

    def clear_faults(self) -> None:
        """No fault pending anywhere any more."""
        self.hs_state.faults.clear()
        self.br_state.faults.clear()
        for faults in (self.hs_write_faults, self.br_write_faults):
            if faults is not None:
                faults.n = 0

    def faults_pending(self) -> bool:
        """Whether an injected fault has not been used up yet."""
        pending = [self.hs_state.faults.fail_next, self.br_state.faults.fail_next]
        pending += [f.n for f in (self.hs_write_faults, self.br_write_faults) if f is not None]
        storming = self.hs_state.faults.storm_until or self.br_state.faults.storm_until
        return any(pending) or bool(storming)

    def storm(self, seconds: float, *, hubspot: bool = True, brevo: bool = True) -> None:
        """Answer every call with 429 until the clients' fake clock has moved ``seconds``."""
        states: list[HubSpotState | BrevoState] = []
        if hubspot:
            states.append(self.hs_state)
        if brevo:
            states.append(self.br_state)
        for state in states:
            # the sandboxes compare with time.monotonic(): a far end, lifted by the fake clock
            state.faults.storm_until = time.monotonic() + 86_400

        def calm() -> None:
            for state in states:
                state.faults.storm_until = 0.0

        self.fake.call_after(seconds, calm)


def brevo_view(contact: Contact) -> dict[str, Any]:
    """A sandbox contact as the mapping reads it: its attributes (SMS included) and email."""
    return {**contact.all_attributes(), "email": contact.email}


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
async def sync_env(
    tmp_path: Path, *, import_threshold: int = 50, clock: WallClock | None = None
) -> AsyncIterator[SyncEnv]:
    wall = clock or WallClock()
    hs_state = HubSpotState(rate_limits=False, clock=wall.ms)
    br_state = BrevoState(rate_limits=False, import_delay=0.0, clock=wall.now)
    br_state.add_api_key(BR_KEY, name="connector")
    mapping = load_mapping(ROOT / "mappings" / "contacts.yaml", default_region="FR")
    create_custom_fields(hs_state, br_state, mapping)
    fake = FakeTime()
    hs_faults = WriteFaults(
        create_hubspot_app(hs_state),
        {"status": "error", "message": "internal error", "category": "INTERNAL_ERROR"},
    )
    br_faults = WriteFaults(
        create_brevo_app(br_state), {"code": "internal_error", "message": "Internal server error"}
    )
    hubspot = HubSpotClient(
        HubSpotSettings(base_url="http://hubspot.test", access_token=HS_TOKEN),
        transport=httpx.ASGITransport(hs_faults),
        sleep=fake.sleep,
        clock=fake.clock,
    )
    brevo = BrevoClient(
        BrevoSettings(base_url="http://brevo.test/v3", api_key=BR_KEY),
        transport=httpx.ASGITransport(br_faults),
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
        clock=wall.now,
    )
    try:
        yield SyncEnv(
            hs_state,
            br_state,
            hubspot,
            brevo,
            mapping,
            engine,
            url,
            wall,
            fake,
            hs_faults,
            br_faults,
        )
    finally:
        await hubspot.aclose()
        await brevo.aclose()
        await engine_.dispose()
