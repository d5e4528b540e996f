"""HubSpot CRM reads: associations by the thousand, companies/deals/tickets by the hundred,
pipelines on the dated path (with the legacy fallback).

Associations and batch reads run against the HubSpot sandbox (``httpx.ASGITransport``);
pipelines, which the sandbox does not serve, and the refused-batch-size path run against
``httpx.MockTransport``. One fake clock drives the limiters, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connector.config import HubSpotSettings
from connector.hubspot import HubSpotClient
from connector.hubspot.crm import ASSOCIATIONS_READ_MAX, HubSpotCrm
from connector.ratelimit import hubspot_limiters
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app

TOKEN = "pat-na1-0123456789abcdef-crm-test"
BASE_URL = "https://hubspot.test"
V = "2026-09"
ASSOC_READ = f"POST /crm/associations/{V}/contacts/companies/batch/read"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def make_client(transport: httpx.AsyncBaseTransport, fake: FakeTime) -> HubSpotClient:
    settings = HubSpotSettings(
        base_url=BASE_URL, access_token=SecretStr(TOKEN), max_retries=2, timeout_seconds=5.0
    )
    return HubSpotClient(
        settings,
        transport=transport,
        limiters=hubspot_limiters(settings.tier, clock=fake.clock, sleep=fake.sleep),
        sleep=fake.sleep,
        clock=fake.clock,
        wall_clock=fake.clock,
    )


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def state(fake: FakeTime) -> HubSpotState:
    st = HubSpotState(clock=lambda: fake.now * 1000)
    st.add_token(TOKEN)
    return st


@pytest.fixture
def transport(state: HubSpotState) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_hubspot_app(state))


class Recording(httpx.AsyncBaseTransport):
    """Passes requests on to the sandbox and keeps their JSON bodies."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.bodies: list[Any] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        if body:
            self.bodies.append(json.loads(body))
        return await self.inner.handle_async_request(request)


def link(state: HubSpotState, contact: str, company: str) -> None:
    state.associate_default("contacts", int(contact), "companies", int(company))


async def test_associations_of_2500_contacts_in_three_calls(
    state: HubSpotState, transport: httpx.ASGITransport, fake: FakeTime
) -> None:
    contacts = state.seed_contacts(2500)
    companies = [state.put_object("companies", {"name": f"Co {i}"}) for i in range(10)]
    for i, cid in enumerate(contacts):
        if i % 5:  # every fifth contact has no company
            link(state, cid, companies[i % 10])
    recording = Recording(transport)
    async with make_client(recording, fake) as hs:
        read = await HubSpotCrm(hs).read_associations("contacts", "companies", contacts)
        assert read.calls == 3 and hs.calls[ASSOC_READ] == 3
    assert [len(b["inputs"]) for b in recording.bodies] == [ASSOCIATIONS_READ_MAX] * 2 + [500]
    assert set(read.links) == set(contacts) and not read.failed
    for i, cid in enumerate(contacts):
        expected = [] if i % 5 == 0 else [companies[i % 10]]
        assert [a.to_id for a in read.links[cid]] == expected
    assert all(a.types for a in read.links[contacts[1]])
    # the client's own reader takes 100 per call: ten times the calls for the same answer
    async with make_client(transport, fake) as hs:
        await hs.read_associations("contacts", "companies", contacts)
        assert hs.calls[ASSOC_READ] == 25


async def test_deleted_records_are_reported_apart_from_records_without_links(
    state: HubSpotState, transport: httpx.ASGITransport, fake: FakeTime
) -> None:
    [a, b] = state.seed_contacts(2)
    company = state.put_object("companies", {"name": "Acme"})
    link(state, a, company)
    async with make_client(transport, fake) as hs:
        read = await HubSpotCrm(hs).read_associations("contacts", "companies", [a, b, a])
    assert [x.to_id for x in read.links[a]] == [company] and read.links[b] == []
    assert read.calls == 1


async def test_companies_deals_tickets_are_batch_read_by_the_hundred(
    state: HubSpotState, transport: httpx.ASGITransport, fake: FakeTime
) -> None:
    made = {
        "companies": [state.put_object("companies", {"name": f"C{i}"}) for i in range(150)],
        "deals": [
            state.put_object("deals", {"dealname": f"D{i}", "amount": str(i)}) for i in range(120)
        ],
        "tickets": [state.put_object("tickets", {"subject": f"T{i}"}) for i in range(30)],
    }
    props = {"companies": ["name"], "deals": ["dealname", "amount"], "tickets": ["subject"]}
    async with make_client(transport, fake) as hs:
        crm = HubSpotCrm(hs)
        for kind, ids in made.items():
            res = await crm.batch_read(kind, [*ids, "999999999"], props[kind])
            assert sorted(o.id for o in res.results) == sorted(ids)
            assert [e.id for e in res.errors] == ["999999999"]
        assert hs.calls[f"POST /crm/objects/{V}/companies/batch/read"] == 2
        assert hs.calls[f"POST /crm/objects/{V}/deals/batch/read"] == 2
        assert hs.calls[f"POST /crm/objects/{V}/tickets/batch/read"] == 1


# --- MockTransport: what the sandbox does not serve --------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]

PIPELINES = {
    "results": [
        {
            "id": "renewals",
            "label": "Renewals",
            "displayOrder": 1,
            "archived": False,
            "stages": [
                {"id": "won", "label": "Won", "displayOrder": 2, "metadata": {"isClosed": "true"}},
                {
                    "id": "open",
                    "label": "Open",
                    "displayOrder": 0,
                    "metadata": {"isClosed": "false", "probability": "0.2"},
                },
            ],
        },
        {
            "id": "default",
            "label": "Sales Pipeline",
            "displayOrder": 0,
            "stages": [{"id": "appointmentscheduled", "label": "Appointment", "metadata": {}}],
        },
    ]
}


async def test_pipelines_on_the_dated_path(fake: FakeTime) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json=PIPELINES)

    async with make_client(httpx.MockTransport(handler), fake) as hs:
        pipelines = await HubSpotCrm(hs).pipelines("deals")
    assert paths == [f"/crm/pipelines/{V}/deals"]
    assert [p.id for p in pipelines] == ["default", "renewals"]
    renewals = pipelines[1]
    assert [s.id for s in renewals.stages] == ["open", "won"]
    won, opened = renewals.stage("won"), renewals.stage("open")
    assert won is not None and won.is_closed and won.probability is None
    assert opened is not None and not opened.is_closed and opened.probability == 0.2


async def test_pipelines_fall_back_to_the_legacy_path_once(fake: FakeTime) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if "/v3/" not in request.url.path:
            return httpx.Response(404, text="Not Found")
        return httpx.Response(200, json={"results": [PIPELINES["results"][1]]})

    async with make_client(httpx.MockTransport(handler), fake) as hs:
        crm = HubSpotCrm(hs)
        assert [p.id for p in await crm.pipelines("tickets")] == ["default"]
        assert [p.id for p in await crm.pipelines("deals")] == ["default"]
    assert paths == [
        f"/crm/pipelines/{V}/tickets",
        "/crm/v3/pipelines/tickets",
        "/crm/v3/pipelines/deals",
    ]


async def test_a_refused_batch_size_steps_down_to_100_once(fake: FakeTime) -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        sizes.append(len(inputs))
        if len(inputs) > 100:
            return httpx.Response(
                400,
                json={
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": f"Batch input size of {len(inputs)} exceeds the maximum of 100",
                },
            )
        results: list[dict[str, Any]] = [
            {"from": {"id": i["id"]}, "to": [{"toObjectId": 7, "associationTypes": []}]}
            for i in inputs
        ]
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    async with make_client(httpx.MockTransport(handler), fake) as hs:
        crm = HubSpotCrm(hs)
        read = await crm.read_associations("deals", "companies", [str(i) for i in range(250)])
        assert sizes == [250, 100, 100, 50] and read.calls == 4
        assert len(read.links) == 250 and all(v[0].to_id == "7" for v in read.links.values())
        await crm.read_associations("deals", "companies", ["1", "2"])
        assert sizes[4:] == [2] and crm.association_batch == 100


async def test_paged_associations_and_unread_ids(fake: FakeTime) -> None:
    bodies: list[list[dict[str, str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        bodies.append(inputs)
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for i in inputs:
            if i["id"] == "1" and "after" not in i:
                results.append(
                    {
                        "from": {"id": "1"},
                        "to": [{"toObjectId": 10, "associationTypes": []}],
                        "paging": {"next": {"after": "p2"}},
                    }
                )
            elif i["id"] == "1":
                results.append({"from": {"id": "1"}, "to": [{"toObjectId": 11}]})
            elif i["id"] == "2":
                errors.append(
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                        "message": "none",
                        "context": {"fromObjectId": ["2"]},
                    }
                )
            else:
                errors.append(
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": "Object not found",
                        "context": {"ids": [i["id"]]},
                    }
                )
        return httpx.Response(207, json={"results": results, "errors": errors})

    async with make_client(httpx.MockTransport(handler), fake) as hs:
        read = await HubSpotCrm(hs).read_associations("companies", "deals", ["1", "2", "3"])
    assert [a.to_id for a in read.links["1"]] == ["10", "11"]
    assert read.links["2"] == [] and read.failed == {"3": "Object not found"}
    assert bodies[1] == [{"id": "1", "after": "p2"}] and read.calls == 2
