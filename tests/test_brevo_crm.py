"""Brevo CRM companies and deals: paging, imports, links, pipelines, attributes, call counts.

Against the Brevo sandbox over ``httpx.ASGITransport`` for behaviour, and
``httpx.MockTransport`` for the shapes the sandbox does not take (the unverified ones: ``page``
as an offset, a smaller page-size maximum, a process id as a string, the older attributes
path). The client's limiters and the sandbox's rate windows share one fake clock, so an hour
of Brevo's 100-calls-per-hour budget passes without sleeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from connector.brevo.client import BrevoClient
from connector.brevo.crm import BrevoCrm
from connector.brevo.crm_budget import (
    Budget,
    CrmWork,
    LinkChange,
    budget_from_limiter,
    import_calls,
    import_calls_at_least,
    plan,
    plan_link_calls,
)
from connector.brevo.crm_models import CrmImportRow
from connector.config import BrevoSettings
from connector.errors import ServerError, ValidationError
from connector.ratelimit import brevo_limiters
from connector.sandbox.brevo import DEFAULT_API_KEY, BrevoState, create_brevo_app

BASE_URL = "http://brevo.test/v3"
IMPORT_COMPANIES = "POST /v3/companies/import"
IMPORT_DEALS = "POST /v3/crm/deals/import"
LIST_COMPANIES = "GET /v3/companies"
LIST_DEALS = "GET /v3/crm/deals"


class FakeTime:
    """A clock that only moves when someone sleeps; sleeping also lets sandbox tasks run."""

    def __init__(self) -> None:
        self.now = 10_000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        for _ in range(3):
            await asyncio.sleep(0)


def make_client(transport: httpx.AsyncBaseTransport, fake: FakeTime) -> BrevoClient:
    settings = BrevoSettings(api_key=SecretStr(DEFAULT_API_KEY), base_url=BASE_URL, max_retries=3)
    return BrevoClient(
        settings,
        transport=transport,
        limiters=brevo_limiters(clock=fake.clock, sleep=fake.sleep),
        sleep=fake.sleep,
    )


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def state(fake: FakeTime) -> BrevoState:
    return BrevoState(monotonic=fake.clock, import_delay=0.0)


@pytest.fixture
async def brevo(state: BrevoState, fake: FakeTime) -> AsyncIterator[BrevoClient]:
    async with make_client(httpx.ASGITransport(app=create_brevo_app(state)), fake) as client:
        yield client


@pytest.fixture
def crm(brevo: BrevoClient) -> BrevoCrm:
    return BrevoCrm(brevo)


def crm_calls(state: BrevoState) -> int:
    """Every call the sandbox saw outside the contacts family."""
    return sum(1 for _, p, _ in state.calls.calls if "/v3/" in p and "/v3/contacts" not in p)


def seed_companies(state: BrevoState, n: int, start: datetime) -> list[str]:
    ids = []
    for i in range(n):
        rec = state.crm.create("company", f"Company {i:05d}", {"domain": f"c{i}.example"})
        rec.modified_at = start + timedelta(seconds=i)
        ids.append(rec.id)
    return ids


# --- imports ----------------------------------------------------------------------------------


async def test_a_thousand_companies_import_in_one_call(
    crm: BrevoCrm, brevo: BrevoClient, state: BrevoState
) -> None:
    rows = [
        CrmImportRow({"name": f"Acme {i}", "domain": f"acme{i}.example", "revenue": i * 10})
        for i in range(1000)
    ]
    queue = crm.measure_import("company", rows)
    assert import_calls(queue) == import_calls_at_least(queue) == 1  # the minimum is one
    process_ids = await crm.import_companies(rows)
    assert len(process_ids) == 1 and process_ids[0] is not None
    assert brevo.calls[IMPORT_COMPANIES] == 1
    assert sum(brevo.calls.values()) == 1 and crm_calls(state) == 1
    assert len(state.crm.companies) == 1000
    names = {r.attributes["name"] for r in state.crm.companies.values()}
    assert names == {f"Acme {i}" for i in range(1000)}
    done = await crm.wait_for_imports(process_ids, poll_every=10, budget=2)
    assert done[process_ids[0]].status == "completed"


async def test_import_is_split_only_where_the_byte_limit_says(
    brevo: BrevoClient, state: BrevoState
) -> None:
    rows = [CrmImportRow({"name": f"Globex {i:04d}", "industry": "Tools"}) for i in range(900)]
    crm = BrevoCrm(brevo)
    queue = crm.measure_import("company", rows)
    crm.import_chunk_bytes = queue.header_bytes + queue.bytes // 3 + queue.max_row_bytes
    expected_max = import_calls(queue, crm.import_chunk_bytes)
    process_ids = await crm.import_companies(rows)
    assert import_calls_at_least(queue, crm.import_chunk_bytes) <= len(process_ids)
    assert len(process_ids) <= expected_max and len(process_ids) == 3
    assert brevo.calls[IMPORT_COMPANIES] == 3 and len(state.crm.companies) == 900


async def test_import_updates_by_company_id_and_unsets_only_when_asked(
    crm: BrevoCrm, state: BrevoState
) -> None:
    a = state.crm.create("company", "Initech", {"domain": "initech.example", "industry": "IT"})
    b = state.crm.create("company", "Umbrella", {"domain": "umbrella.example"})
    await crm.import_companies(
        [
            CrmImportRow({"industry": "Software", "domain": None}, id=a.id),
            CrmImportRow({"industry": "Pharma"}, id=b.id),
            CrmImportRow({"name": "Hooli", "industry": "Search"}),
        ]
    )
    assert len(state.crm.companies) == 3
    assert state.crm.companies[a.id].attributes["industry"] == "Software"
    assert state.crm.companies[a.id].attributes["domain"] == "initech.example"  # left alone
    await crm.import_companies([CrmImportRow({"domain": None}, id=a.id)], unset_empty=True)
    assert "domain" not in state.crm.companies[a.id].attributes
    with pytest.raises(ValueError, match="no 'name'"):
        await crm.import_companies([CrmImportRow({"industry": "Nameless"})])


async def test_deals_import_with_pipeline_stage_and_typed_amount(
    crm: BrevoCrm, brevo: BrevoClient, state: BrevoState
) -> None:
    [pipeline] = await crm.pipelines()
    assert [s.name for s in pipeline.stages][:2] == ["New", "Qualified"]
    won = next(s for s in pipeline.stages if s.name == "Won")
    rows = [
        CrmImportRow(
            {
                "deal_name": f"Renewal {i}",
                "amount": 1000 + i,
                "pipeline": pipeline.id,
                "deal_stage": won.id if i % 2 else pipeline.stages[0].id,
            }
        )
        for i in range(10)
    ]
    rows.append(CrmImportRow({"deal_name": "Lost cause", "deal_stage": "no-such-stage"}))
    [pid] = await crm.import_deals(rows)
    assert pid is not None and brevo.calls[IMPORT_DEALS] == 1
    assert state.processes[pid].stats == {"created": 10, "updated": 0, "invalid": 1}
    deals = [d async for d in crm.iter_deals()]
    assert len(deals) == 10 and brevo.calls[LIST_DEALS] == 1
    by_name = {d.name: d for d in deals}
    assert by_name["Renewal 3"].stage == won.id and by_name["Renewal 3"].pipeline == pipeline.id
    assert by_name["Renewal 3"].attributes["amount"] == 1003
    await crm.import_deals([CrmImportRow({"amount": 5}, id=by_name["Renewal 3"].id)])
    assert state.crm.deals[by_name["Renewal 3"].id].attributes["amount"] == 5
    assert len(state.crm.deals) == 10


# --- reads ------------------------------------------------------------------------------------


async def test_companies_page_by_1000_and_modified_since(
    crm: BrevoCrm, brevo: BrevoClient, state: BrevoState
) -> None:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    ids = seed_companies(state, 2500, start)
    stream = crm.iter_companies()
    got = [c.id async for c in stream]
    assert got == ids  # oldest-created first, each once
    assert brevo.calls[LIST_COMPANIES] == 3 and stream.pages == 3
    assert stream.high_water_mark == start + timedelta(seconds=2499)

    cutoff = start + timedelta(seconds=2000)
    recent = crm.iter_companies(modified_since=cutoff)
    assert [c.id async for c in recent] == ids[2000:]
    assert brevo.calls[LIST_COMPANIES] == 4
    assert recent.next_modified_since <= recent.started_at
    sent = [p for m, p, _ in state.calls.calls if m == "GET" and p.startswith("/v3/companies")]
    assert len(sent) == 4


async def test_deals_exact_multiple_of_the_page_costs_one_more_page(
    crm: BrevoCrm, brevo: BrevoClient, state: BrevoState
) -> None:
    for i in range(2000):
        state.crm.create("deal", f"Deal {i}", {"amount": i})
    deals = [d async for d in crm.iter_deals()]
    assert len({d.id for d in deals}) == 2000
    assert brevo.calls[LIST_DEALS] == 3  # 1000 + 1000 + an empty page: Brevo gives no total


async def test_get_by_ids_reads_one_by_one_or_scans_when_cheaper(
    crm: BrevoCrm, brevo: BrevoClient, state: BrevoState
) -> None:
    ids = seed_companies(state, 1200, datetime(2026, 5, 1, tzinfo=UTC))
    few = await crm.get_companies([ids[5], ids[700], "0" * 24])
    assert [c.id for c in few] == [ids[5], ids[700]]
    assert brevo.calls["GET /v3/companies/{id}"] == 3 and brevo.calls[LIST_COMPANIES] == 0
    many = await crm.get_companies(ids[:50], records_total=1200)
    assert {c.id for c in many} == set(ids[:50])
    assert brevo.calls[LIST_COMPANIES] == 2 and brevo.calls["GET /v3/companies/{id}"] == 3
    deal = state.crm.create("deal", "Solo", {})
    assert (await crm.get_deal(deal.id)) is not None
    assert await crm.get_deals(["f" * 24]) == []


# --- links ------------------------------------------------------------------------------------


async def test_links_go_through_link_unlink_in_the_fewest_calls(
    crm: BrevoCrm, brevo: BrevoClient, state: BrevoState
) -> None:
    contacts = [c.id for c in state.seed_contacts(6)]
    acme = state.crm.create("company", "Acme", {})
    globex = state.crm.create("company", "Globex", {})
    deals = [state.crm.create("deal", f"D{i}", {}) for i in range(4)]
    acme.linked_contacts.append(contacts[5])  # linked before: must survive the sync's links
    changes = [
        LinkChange(company=acme.id, contact=contacts[0]),
        LinkChange(company=acme.id, contact=contacts[1]),
        LinkChange(deal=deals[0].id, contact=contacts[2]),
        *(LinkChange(company=globex.id, deal=d.id) for d in deals),  # one call from Globex
        LinkChange(company=acme.id, deal=deals[0].id),  # rides on Acme's call
    ]
    result = await crm.apply_links(changes)
    assert result.calls == 3 and not result.failed
    assert brevo.calls["PATCH /v3/companies/link-unlink/{id}"] == 2
    assert brevo.calls["PATCH /v3/crm/deals/link-unlink/{id}"] == 1
    patches = [p for m, p, _ in state.calls.calls if m == "PATCH"]
    assert len(patches) == 3 and all("/link-unlink/" in p for p in patches)  # never a PATCH
    assert sorted(acme.linked_contacts) == sorted([contacts[5], contacts[0], contacts[1]])
    assert sorted(globex.linked_other) == sorted(d.id for d in deals)
    assert deals[0].linked_contacts == [contacts[2]]
    assert sorted(deals[0].linked_other) == sorted([globex.id, acme.id])

    removed = await crm.apply_links(
        [
            LinkChange(company=acme.id, contact=contacts[0], add=False),
            LinkChange(company=globex.id, deal=deals[1].id, add=False),
        ]
    )
    assert removed.calls == 2
    assert sorted(acme.linked_contacts) == sorted([contacts[5], contacts[1]])
    assert deals[1].id not in globex.linked_other and globex.id not in deals[1].linked_other


async def test_a_refused_link_is_reported_and_the_others_still_go(
    crm: BrevoCrm, state: BrevoState
) -> None:
    contact = state.seed_contacts(1)[0].id
    acme = state.crm.create("company", "Acme", {})
    result = await crm.apply_links(
        [
            LinkChange(company="f" * 24, contact=contact),
            LinkChange(company=acme.id, contact=contact),
            LinkChange(company=acme.id, deal="e" * 24),
        ]
    )
    assert result.calls == 2
    assert set(result.failed) == {f"company:{'f' * 24}", f"company:{acme.id}"}
    assert result.done == []
    await crm.link_company(acme.id, link_contacts=[contact])
    assert acme.linked_contacts == [contact]
    deal = state.crm.create("deal", "D", {})
    await crm.link_deal(deal.id, link_companies=[acme.id], link_contacts=[contact])
    assert acme.linked_other == [deal.id] and deal.linked_contacts == [contact]


# --- attributes -------------------------------------------------------------------------------


async def test_company_and_deal_attributes(crm: BrevoCrm, brevo: BrevoClient) -> None:
    companies = {a.internal_name: a for a in await crm.company_attributes()}
    assert companies["name"].required and companies["revenue"].type == "number"
    deals = {a.internal_name: a for a in await crm.deal_attributes()}
    assert deals["deal_stage"].type == "stage" and deals["amount"].type == "number"
    assert brevo.calls["GET /v3/crm/attributes/companies"] == 1


# --- the budget, against the real limiter ------------------------------------------------------


async def test_the_plan_says_when_130_link_calls_are_done_and_the_limiter_agrees(
    crm: BrevoCrm, brevo: BrevoClient, state: BrevoState, fake: FakeTime
) -> None:
    contact = state.seed_contacts(1)[0].id
    companies = [state.crm.create("company", f"C{i}", {}) for i in range(130)]
    changes = [LinkChange(company=c.id, contact=contact) for c in companies]
    await crm.pipelines()  # one call already in this hour's window
    limiter = brevo.limiter_for("/v3/companies")
    budget = budget_from_limiter(limiter, fake.now)
    assert budget.limit == 100 and budget.available(fake.now) == 99
    work = CrmWork(link_calls=len(plan_link_calls(changes)))
    planned = plan(work, budget, fake.now)
    assert planned.links == 130 and planned.total == 130 and not planned.fits_now
    assert 3600 - 36 <= planned.wait_seconds <= 3600 + 36
    assert "130 Brevo CRM call(s) (130 link); 99 of 100/h left now" in planned.summary()
    started = fake.now
    result = await crm.apply_links(changes)
    assert result.calls == 130 and not result.failed
    # the plan counts in the limiter's 36-second buckets: it foresees the very second
    assert fake.now == pytest.approx(planned.done_at)
    assert fake.now - started >= 3600 - 36
    assert all(contact in c.linked_contacts for c in companies)


def test_budget_for_a_fresh_hour() -> None:
    planned = plan(CrmWork(link_calls=100), Budget(limit=100), now=0.0)
    assert planned.fits_now and planned.done_at == 0.0


# --- shapes the sandbox does not take (MockTransport) ------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def mock_crm(handler: Handler, fake: FakeTime) -> tuple[BrevoCrm, BrevoClient]:
    client = make_client(httpx.MockTransport(handler), fake)
    return BrevoCrm(client), client


def company(i: int) -> dict[str, Any]:
    return {
        "id": f"{i:024x}",
        "attributes": {"name": f"C{i}", "last_updated_at": "2026-05-01T00:00:00.000Z"},
        "linkedContactsIds": [],
        "linkedDealsIds": [],
    }


async def test_companies_page_read_as_an_offset_when_brevo_means_one(fake: FakeTime) -> None:
    records = [company(i) for i in range(25)]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        q = parse_qs(urlsplit(str(request.url)).query)
        start, limit = int(q["page"][0]), int(q["limit"][0])
        seen.append(q["page"][0])
        return httpx.Response(200, json={"items": records[start : start + limit]})

    crm, client = mock_crm(handler, fake)
    crm.page_size = 10
    async with client:
        got = [c.id async for c in crm.iter_companies()]
        assert got[0] == records[1]["id"]  # read as page numbers first
        assert sorted(got) == sorted(r["id"] for r in records) and len(got) == 25
        assert crm.company_paging == "offset"
        assert seen == ["1", "2", "0", "10", "20"]
        again = [c.id async for c in crm.iter_companies()]
        assert again == [r["id"] for r in records] and seen[5:] == ["0", "10", "20"]


async def test_page_size_steps_down_on_out_of_range(fake: FakeTime) -> None:
    limits: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        limit = int(parse_qs(urlsplit(str(request.url)).query)["limit"][0])
        limits.append(limit)
        if limit > 100:
            return httpx.Response(
                400, json={"code": "out_of_range", "message": "Limit exceeds max value"}
            )
        return httpx.Response(200, json={"items": []})

    crm, client = mock_crm(handler, fake)
    async with client:
        assert [d async for d in crm.iter_deals()] == []
        assert limits == [1000, 500, 100] and crm.page_size == 100
        assert [d async for d in crm.iter_deals()] == [] and limits[3:] == [100]


async def test_import_answer_shapes_and_multipart_body(fake: FakeTime) -> None:
    answers = iter([{"processId": "77"}, {}])
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"].startswith("multipart/form-data")
        bodies.append(request.content)
        return httpx.Response(200, json=next(answers))

    crm, client = mock_crm(handler, fake)
    async with client:
        assert await crm.import_deals([CrmImportRow({"deal_name": "A;B", "amount": 1.5})]) == [77]
        assert await crm.import_deals([CrmImportRow({"amount": None}, id="d1")]) == [None]
    first = bodies[0].decode()
    assert "amount;deal_name" not in first and "deal_name;amount\n" in first
    assert "1.5;" not in first and '"A;B";1.5\n' in first
    mapping = json.loads(first.split('name="mapping"')[1].split("\r\n\r\n", 1)[1].split("\r\n")[0])
    assert mapping == {
        "link_entities": False,
        "unlink_entities": False,
        "update_existing_records": True,
        "unset_empty_attributes": False,
    }
    assert "deal_id;amount\nd1;\n" in bodies[1].decode()


async def test_company_attributes_fall_back_to_the_spec_path(fake: FakeTime) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/crm/attributes/companies"):
            return httpx.Response(404, json={"code": "not_found", "message": "Not found"})
        assert request.headers["api-key"] == DEFAULT_API_KEY
        return httpx.Response(
            200,
            json=[
                {
                    "internalName": "tier",
                    "label": "Tier",
                    "attributeTypeName": "single-select",
                    "attributeOptions": [{"key": "gold", "value": "Gold"}],
                    "isRequired": False,
                }
            ],
        )

    crm, client = mock_crm(handler, fake)
    async with client:
        [attr] = await crm.company_attributes()
    assert attr.internal_name == "tier" and attr.options == {"gold": "Gold"}
    assert paths == ["/v3/crm/attributes/companies", "/v3/companies/attributes"]
    assert client.calls["GET /v3/companies/attributes"] == 1


async def test_pipelines_single_object_shape(fake: FakeTime) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "pipeline": "p1",
                "pipeline_name": "Sales",
                "stages": [{"id": "s1", "name": "New"}],
            },
        )

    crm, client = mock_crm(handler, fake)
    async with client:
        [p] = await crm.pipelines()
    assert p.id == "p1" and p.stage("s1") is not None and p.stage("s9") is None


async def test_validation_error_of_a_list_is_raised(fake: FakeTime) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": "invalid_parameter", "message": "bad date"})

    crm, client = mock_crm(handler, fake)
    async with client:
        with pytest.raises(ValidationError):
            [d async for d in crm.iter_deals(modified_since=datetime(2026, 1, 1, tzinfo=UTC))]


async def test_a_chunk_of_creates_is_not_resent_after_a_5xx_but_updates_are(
    fake: FakeTime,
) -> None:
    answers = iter([502, 200, 502])
    sent: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        status = next(answers)
        if status == 502:
            return httpx.Response(502, text="<html>Bad Gateway</html>")
        return httpx.Response(200, json={"processId": 5})

    crm, client = mock_crm(handler, fake)
    async with client:
        assert await crm.import_companies([CrmImportRow({"revenue": 1}, id="c1")]) == [5]
        assert len(sent) == 2  # an update: sent again
        with pytest.raises(ServerError):
            await crm.import_companies([CrmImportRow({"name": "New Co"})])
        assert len(sent) == 3  # a create: not resent, it may have been applied
