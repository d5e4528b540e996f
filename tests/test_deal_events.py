"""The ``deal_stage_changed`` Brevo event: queued in the sync transaction for a deal's stage
change (either side, never in a resync), sent by the hook runner once per associated contact
with an e-mail (reads in batches), never twice — against both sandboxes over ASGI and a real
SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.brevo.client import BrevoClient
from connector.config import BrevoSettings, HubSpotSettings, Settings, load_config
from connector.engine import SyncEvent
from connector.hubspot.client import HubSpotClient
from connector.mapping import load_mapping
from connector.objects.deal_events import DEAL_HOOK, DEAL_STAGE_EVENT, DealEvents
from connector.onboarding.runner import HookRunner, retry_job
from connector.sandbox.brevo import BrevoState, create_brevo_app
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.store import db, jobs
from connector.store.models import utcnow

HERE = Path(__file__).resolve().parent
DEALS_MAPPING = HERE / "mappings_crm" / "deals.yaml"
PIPELINE = "65f0a1b2c3d4e5f600000001"
STAGES = {
    "New": "65f0a1b2c3d4e5f600000002",
    "Qualified": "65f0a1b2c3d4e5f600000003",
    "Proposal": "65f0a1b2c3d4e5f600000004",
    "Negotiation": "65f0a1b2c3d4e5f600000005",
    "Won": "65f0a1b2c3d4e5f600000006",
    "Lost": "65f0a1b2c3d4e5f600000007",
}
DEAL_TO_CONTACT = 3  # HUBSPOT_DEFINED deal → contact


@dataclass
class Env:
    hs: HubSpotState
    br: BrevoState
    runner: HookRunner
    sessions: Any
    deal: str
    contacts: list[str]

    def events(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (e.event_name, str(e.identifiers.get("email_id")), dict(e.event_properties))
            for e in self.br.events
        ]

    def association_reads(self) -> int:
        return sum(
            1 for _, path, _ in self.hs.log.calls if "associations" in path and "batch/read" in path
        )

    async def queue(self, events: list[SyncEvent], mode: Any = "incremental") -> None:
        callback = DealEvents(load_mapping(DEALS_MAPPING))
        async with self.sessions() as s, s.begin():
            await callback(s, events, mode)

    async def deal_jobs(self) -> list[jobs.JobRecord]:
        async with self.sessions() as s:
            return sorted(await jobs.list_jobs(s, hook=DEAL_HOOK), key=lambda j: j.id)


def stage_change(deal: str, old: str, new: str, origin: Any = "brevo") -> SyncEvent:
    return SyncEvent("changed", "deals", origin, deal, "brevo-deal-1", None, "dealstage", old, new)


def _settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text(
        "connectors:\n  hubspot:\n    access_token: t\n  brevo:\n    api_key: k\n"
        f"database:\n  url: sqlite:///{tmp_path / 'c.db'}\n"
    )
    return load_config(config, env={})


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    hs = HubSpotState(rate_limits=False)
    br = BrevoState(rate_limits=False)
    hs.add_token("t")
    br.add_api_key("k", name="connector")
    br.crm.pipeline_id = PIPELINE
    br.crm.stages = [{"id": sid, "name": name} for name, sid in STAGES.items()]
    contacts = [
        hs.create("contacts", {"email": "Ann@Example.com", "firstname": "Ann"}).id,
        hs.create("contacts", {"email": "bob@example.com", "firstname": "Bob"}).id,
        hs.create("contacts", {"firstname": "No Email"}).id,
    ]
    deal = hs.create(
        "deals",
        {"dealname": "Big deal", "amount": "1200", "pipeline": "default", "dealstage": "closedwon"},
    ).id
    for cid in contacts:
        hs.associate("deals", deal, "contacts", cid, DEAL_TO_CONTACT)
    settings = _settings(tmp_path)
    db.upgrade(settings.database.url)
    engine = db.create_engine(settings.database.url)
    sessions = db.session_factory(engine)
    hubspot = HubSpotClient(
        HubSpotSettings(base_url="http://hubspot.test", access_token="t"),
        transport=httpx.ASGITransport(create_hubspot_app(hs)),
    )
    brevo = BrevoClient(
        BrevoSettings(base_url="http://brevo.test/v3", api_key="k"),
        transport=httpx.ASGITransport(create_brevo_app(br)),
    )
    runner = HookRunner(
        settings, hubspot=hubspot, brevo=brevo, sessions=sessions, worker_id="test-worker"
    )
    try:
        yield Env(hs, br, runner, sessions, str(deal), [str(c) for c in contacts])
    finally:
        await runner.aclose()
        await hubspot.aclose()
        await brevo.aclose()
        await engine.dispose()


async def test_a_stage_change_fires_one_event_per_contact_once(env: Env) -> None:
    await env.queue(
        [
            stage_change(env.deal, STAGES["Proposal"], STAGES["Won"]),
            SyncEvent("changed", "deals", "hubspot", env.deal, "b1", None, "amount", "1", "2"),
            SyncEvent("changed", "contacts", "hubspot", "7", "8", "x@y.z", "dealstage", "a", "b"),
            SyncEvent("created", "deals", "hubspot", env.deal, "b1", None),
        ]
    )
    (job,) = await env.deal_jobs()
    assert job.payload["old"] == "presentationscheduled"
    assert job.payload["new"] == "closedwon"
    result = await env.runner.run_once()
    assert result.succeeded == 1 and result.errors == []
    events = env.events()
    assert sorted(email for _, email, _ in events) == ["ann@example.com", "bob@example.com"]
    assert {name for name, _, _ in events} == {DEAL_STAGE_EVENT}
    props = events[0][2]
    assert props["hubspot_deal_id"] == env.deal
    assert props["brevo_deal_id"] == "brevo-deal-1"
    assert props["deal_name"] == "Big deal"
    assert props["amount"] == 1200.0
    assert (props["pipeline_id"], props["pipeline"]) == ("default", "Sales Pipeline")
    assert (props["brevo_pipeline_id"], props["brevo_pipeline"]) == (PIPELINE, "Sales pipeline")
    assert (props["old_stage_id"], props["old_stage"]) == (
        "presentationscheduled",
        "Presentationscheduled",
    )
    assert (props["new_stage_id"], props["new_stage"]) == ("closedwon", "Closedwon")
    assert (props["old_brevo_stage_id"], props["old_brevo_stage"]) == (
        STAGES["Proposal"],
        "Proposal",
    )
    assert (props["new_brevo_stage_id"], props["new_brevo_stage"]) == (STAGES["Won"], "Won")
    assert props["changed_in"] == "brevo"
    assert env.association_reads() == 1  # all the round's deals in one batch read
    (done,) = await env.deal_jobs()
    assert done.status == "succeeded"
    assert done.result is not None and done.result["sent"] == 2

    again = await env.runner.run_once()
    assert again.claimed == 0
    assert len(env.events()) == 2


async def test_no_event_for_a_resync_or_a_no_change(env: Env) -> None:
    await env.queue([stage_change(env.deal, STAGES["New"], STAGES["Won"])], mode="resync")
    await env.queue([stage_change(env.deal, STAGES["Won"], STAGES["Won"])])
    assert await env.deal_jobs() == []


async def test_a_change_made_in_hubspot_fires_too(env: Env) -> None:
    await env.queue([stage_change(env.deal, STAGES["New"], STAGES["Lost"], origin="hubspot")])
    await env.runner.run_once()
    events = env.events()
    assert len(events) == 2
    assert events[0][2]["changed_in"] == "hubspot"
    assert events[0][2]["new_stage_id"] == "closedlost"


async def test_many_deals_cost_one_association_read(env: Env) -> None:
    more = []
    for i in range(30):
        d = env.hs.create(
            "deals", {"dealname": f"D{i}", "pipeline": "default", "dealstage": "qualifiedtobuy"}
        ).id
        env.hs.associate("deals", d, "contacts", int(env.contacts[i % 2]), DEAL_TO_CONTACT)
        more.append(stage_change(str(d), STAGES["New"], STAGES["Qualified"]))
    await env.queue(more)
    result = await env.runner.run_once()
    assert result.succeeded == 30
    assert len(env.events()) == 30
    assert env.association_reads() == 1


async def test_an_interrupted_send_is_not_repeated_until_an_operator_retries(env: Env) -> None:
    ann, bob, _ = env.contacts
    await env.queue([stage_change(env.deal, STAGES["Proposal"], STAGES["Won"])])
    async with env.sessions() as s, s.begin():
        # a worker sent Ann's event, then died inside Bob's request
        (claimed,) = await jobs.claim(
            s, worker="gone", limit=1, lease=timedelta(seconds=0), now=utcnow(), hooks=[DEAL_HOOK]
        )
        await jobs.save_state(s, claimed.id, {"sent": [ann], "calling": bob})
    await env.runner.run_once()
    (job,) = await env.deal_jobs()
    assert job.status == "dead"
    assert f"HubSpot contact(s) {bob} left" in (job.last_error or "")
    assert f"connector hooks retry {job.id}" in (job.last_error or "")
    assert env.events() == []  # neither Ann (sent) nor Bob (maybe sent) again

    assert await retry_job(env.sessions, job.id) is not None
    await env.runner.run_once()
    assert [email for _, email, _ in env.events()] == ["bob@example.com"]
    (job,) = await env.deal_jobs()
    assert job.status == "succeeded"
