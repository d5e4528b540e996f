"""The HubSpot sandbox behaves like HubSpot where the daemon cares, over real HTTP semantics
(``httpx.ASGITransport``), under both the date-based and the legacy numbered paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hubspot_shapes import (
    has_rate_headers,
    validate_assoc_read,
    validate_batch,
    validate_error,
    validate_list,
    validate_multi_status,
    validate_object,
    validate_rate_limit,
    validate_search,
    validate_search_rate_limit,
)

from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.sandbox.hubspot_state import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)

V = "2026-09"
AUTH = {"Authorization": "Bearer sandbox-token"}
START_MS = 1_795_000_000_000  # 2026-11-18


class Clock:
    """A settable clock in epoch ms."""

    def __init__(self, ms: int = START_MS) -> None:
        self.ms = float(ms)

    def __call__(self) -> float:
        return self.ms

    def advance(self, ms: float) -> None:
        self.ms += ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> HubSpotState:
    return HubSpotState(tier=None, clock=clock)


@pytest.fixture
async def hs(state: HubSpotState) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(state) as c:
        yield c


def _client(state: HubSpotState, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_hubspot_app(state)),
        base_url="http://hubspot.test",
        headers=AUTH if headers is None else headers,
    )


def objects(style: str, object_type: str = "contacts") -> str:
    return (
        f"/crm/objects/{V}/{object_type}" if style == "dated" else f"/crm/v3/objects/{object_type}"
    )


STYLES = ["dated", "legacy"]


# --- objects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
async def test_list_pages_by_after_with_next_link(
    hs: httpx.AsyncClient, state: HubSpotState, style: str
) -> None:
    state.seed_contacts(25)
    seen: list[str] = []
    url: str | None = objects(style)
    params: dict[str, Any] | None = {"limit": 10, "properties": "email,firstname"}
    pages = 0
    while url and pages < 10:
        r = await hs.get(url, params=params)
        assert r.status_code == 200
        body = r.json()
        validate_list(body)
        pages += 1
        seen += [o["id"] for o in body["results"]]
        assert set(body["results"][0]["properties"]) >= {"email", "firstname", "hs_object_id"}
        nxt = body.get("paging", {}).get("next")
        url, params = (nxt["link"], None) if nxt else (None, None)
        if nxt:
            assert nxt["link"].startswith(f"http://hubspot.test{objects(style)}?")
    assert pages == 3 and len(seen) == len(set(seen)) == 25
    r = await hs.get(objects(style), params={"limit": 101})
    assert r.status_code == 400
    validate_error(r.json(), "VALIDATION_ERROR")


async def test_default_and_requested_properties(hs: httpx.AsyncClient, state: HubSpotState) -> None:
    cid = state.put_object("contacts", {"email": "a@example.com", "firstname": "A", "city": "Lyon"})
    r = await hs.get(f"{objects('dated')}/{cid}")
    props = r.json()["properties"]
    assert set(props) == {
        "firstname",
        "lastname",
        "email",
        "createdate",
        "lastmodifieddate",
        "hs_lastmodifieddate",
        "hs_object_id",
    }
    assert props["lastname"] is None and props["hs_object_id"] == cid
    r = await hs.get(f"/crm/v3/objects/contacts/{cid}", params=[("properties", "city")])
    assert r.json()["properties"]["city"] == "Lyon" and "firstname" not in r.json()["properties"]
    validate_object(r.json())
    assert r.json()["createdAt"] == "2026-11-18T11:06:40.000Z"


async def test_create_then_get_patch_by_email_on_both_paths(hs: httpx.AsyncClient) -> None:
    r = await hs.post(objects("dated"), json={"properties": {"email": "Jo@Example.com", "age": 1}})
    assert r.status_code == 400  # unknown property
    r = await hs.post(objects("dated"), json={"properties": {"email": "Jo@Example.com"}})
    assert r.status_code == 201
    validate_object(r.json())
    cid = r.json()["id"]
    assert r.json()["properties"]["email"] == "jo@example.com"
    r = await hs.get(f"{objects('legacy')}/JO@example.com", params={"idProperty": "email"})
    assert r.status_code == 200 and r.json()["id"] == cid
    r = await hs.patch(
        f"{objects('legacy')}/jo@example.com",
        params={"idProperty": "email"},
        json={"properties": {"firstname": "Jo", "hs_email_optout": True}},
    )
    assert r.status_code == 200
    assert r.json()["properties"]["hs_email_optout"] == "true"
    r = await hs.get(f"{objects('dated')}/999999")
    assert r.status_code == 404
    validate_error(r.json(), "OBJECT_NOT_FOUND")
    r = await hs.get("/crm/objects/v9/contacts")
    assert r.status_code == 404


async def test_duplicate_email_is_409_with_existing_id(hs: httpx.AsyncClient) -> None:
    r = await hs.post(objects("dated"), json={"properties": {"email": "dup@example.com"}})
    existing = r.json()["id"]
    r = await hs.post(objects("legacy"), json={"properties": {"email": "DUP@example.com"}})
    assert r.status_code == 409
    body = r.json()
    validate_error(body, "CONFLICT")
    assert body["message"] == f"Contact already exists. Existing ID: {existing}"


async def test_validation_errors_name_each_property(hs: httpx.AsyncClient) -> None:
    props = {
        "email": "not-an-email",
        "favourite_colour": "blue",
        "hs_object_id": "5",
        "num_associated_deals": "3",
        "lifecyclestage": "zombie",
        "hs_email_optout": "maybe",
        "hubspot_owner_id": "12345",
        "firstname": "Fine",
    }
    r = await hs.post(objects("dated"), json={"properties": props})
    assert r.status_code == 400
    body = r.json()
    validate_error(body, "VALIDATION_ERROR")
    assert body["message"].startswith("Property values were not valid: ")
    codes = {e["context"]["propertyName"][0]: e["code"] for e in body["errors"]}
    assert codes == {
        "email": "INVALID_EMAIL",
        "favourite_colour": "PROPERTY_DOESNT_EXIST",
        "hs_object_id": "READ_ONLY_VALUE",
        "num_associated_deals": "READ_ONLY_VALUE",
        "lifecyclestage": "INVALID_OPTION",
        "hs_email_optout": "INVALID_BOOLEAN",
        "hubspot_owner_id": "INVALID_OPTION",
    }
    assert {"message": 'Property "favourite_colour" does not exist'}.items() <= next(
        e for e in body["errors"] if e["code"] == "PROPERTY_DOESNT_EXIST"
    ).items()
    r = await hs.post(
        objects("dated", "deals"), json={"properties": {"amount": "lots", "closedate": "soon"}}
    )
    assert {e["code"] for e in r.json()["errors"]} == {"INVALID_LONG", "INVALID_DATETIME"}


async def test_required_properties_from_2026_09_only(
    hs: httpx.AsyncClient, state: HubSpotState
) -> None:
    state.required_properties["contacts"] = {"lastname"}
    r = await hs.post(objects("dated"), json={"properties": {"email": "a@example.com"}})
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "REQUIRED_PROPERTY"
    for path in ("/crm/objects/2026-03/contacts", objects("legacy")):
        r = await hs.post(path, json={"properties": {"email": f"b{len(path)}@example.com"}})
        assert r.status_code == 201
    # engagements always need hs_timestamp
    r = await hs.post(objects("legacy", "notes"), json={"properties": {"hs_note_body": "x"}})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "REQUIRED_PROPERTY"


# --- batches ---------------------------------------------------------------------------------


async def test_batch_over_100_inputs_is_400(hs: httpx.AsyncClient) -> None:
    for op in ("read", "create", "update", "upsert", "archive"):
        r = await hs.post(f"{objects('dated')}/batch/{op}", json={"inputs": [{"id": "1"}] * 101})
        assert r.status_code == 400, op
        validate_error(r.json(), "VALIDATION_ERROR")


async def test_batch_create_with_trace_ids_is_207_per_record(
    hs: httpx.AsyncClient, state: HubSpotState
) -> None:
    state.put_object("contacts", {"email": "taken@example.com"})
    state.required_properties["contacts"] = {"lastname"}
    inputs = [
        {"properties": {"email": "ok1@example.com", "lastname": "A"}, "objectWriteTraceId": "t0"},
        {"properties": {"email": "bad@@x", "lastname": "B"}, "objectWriteTraceId": "t1"},
        {"properties": {"email": "taken@example.com", "lastname": "C"}, "objectWriteTraceId": "t2"},
        {"properties": {"email": "nolast@example.com"}, "objectWriteTraceId": "t3"},
        {"properties": {"email": "ok2@example.com", "lastname": "E"}, "objectWriteTraceId": "t4"},
    ]
    r = await hs.post(f"{objects('dated')}/batch/create", json={"inputs": inputs})
    assert r.status_code == 207
    body = r.json()
    validate_multi_status(body)
    validate_batch(body)
    assert body["status"] == "COMPLETE" and body["numErrors"] == 3
    assert [x["objectWriteTraceId"] for x in body["results"]] == ["t0", "t4"]
    by_trace = {e["context"]["objectWriteTraceId"][0]: e for e in body["errors"]}
    assert by_trace["t1"]["category"] == "VALIDATION_ERROR"
    assert by_trace["t1"]["errors"][0]["code"] == "INVALID_EMAIL"
    assert by_trace["t2"]["category"] == "CONFLICT"
    assert by_trace["t3"]["errors"][0]["code"] == "REQUIRED_PROPERTY"
    assert len(state.store("contacts")) == 3


async def test_batch_create_without_trace_ids_fails_whole(
    hs: httpx.AsyncClient, state: HubSpotState
) -> None:
    existing = state.put_object("contacts", {"email": "taken@example.com"})
    inputs = [{"properties": {"email": f"n{i}@example.com"}} for i in range(3)]
    r = await hs.post(
        f"{objects('dated')}/batch/create",
        json={"inputs": [*inputs, {"properties": {"email": "taken@example.com"}}]},
    )
    assert r.status_code == 409 and r.json()["message"].endswith(f"Existing ID: {existing}")
    assert len(state.store("contacts")) == 1  # nothing written
    r = await hs.post(f"{objects('dated')}/batch/create", json={"inputs": inputs})
    assert r.status_code == 201
    validate_batch(r.json())


async def test_batch_read_by_id_and_email_reports_missing(
    hs: httpx.AsyncClient, state: HubSpotState
) -> None:
    ids = state.seed_contacts(3)
    r = await hs.post(
        f"{objects('legacy')}/batch/read",
        json={"inputs": [{"id": ids[0]}, {"id": "424242"}], "properties": ["email"]},
    )
    assert r.status_code == 207
    body = r.json()
    validate_multi_status(body)
    assert body["errors"][0]["context"]["ids"] == ["424242"]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    email = state.get_object("contacts", ids[1])["email"]  # type: ignore[index]
    r = await hs.post(
        f"{objects('dated')}/batch/read",
        json={"idProperty": "email", "inputs": [{"id": email}], "properties": ["firstname"]},
    )
    assert r.status_code == 200 and r.json()["results"][0]["id"] == ids[1]
    validate_batch(r.json())


async def test_batch_upsert_by_email_reports_new(
    hs: httpx.AsyncClient, state: HubSpotState
) -> None:
    cid = state.put_object("contacts", {"email": "old@example.com", "firstname": "Old"})
    inputs = [
        {"id": "old@example.com", "idProperty": "email", "properties": {"firstname": "Renewed"}},
        {"id": "new@example.com", "idProperty": "email", "properties": {"firstname": "New"}},
    ]
    r = await hs.post(f"{objects('dated')}/batch/upsert", json={"inputs": inputs})
    assert r.status_code == 200
    body = r.json()
    validate_batch(body)
    flags = {x["properties"]["email"]: (x["new"], x["id"]) for x in body["results"]}
    assert flags["old@example.com"] == (False, cid) and flags["new@example.com"][0] is True
    assert state.get_object("contacts", cid)["firstname"] == "Renewed"  # type: ignore[index]
    r = await hs.post(f"{objects('dated')}/batch/upsert", json={"inputs": [inputs[0]] * 2})
    assert r.status_code == 400 and "Duplicate IDs" in r.json()["message"]


async def test_batch_update_207_for_unknown_ids_and_no_email_updates(
    hs: httpx.AsyncClient, state: HubSpotState
) -> None:
    ids = state.seed_contacts(2)
    inputs = [
        {"id": ids[0], "properties": {"jobtitle": "CTO"}},
        {"id": "777", "properties": {"jobtitle": "CTO"}},
    ]
    r = await hs.post(f"{objects('dated')}/batch/update", json={"inputs": inputs})
    assert r.status_code == 207
    validate_multi_status(r.json())
    assert r.json()["errors"][0]["context"] == {"ids": ["777"]}
    by_email = [{"id": "x@example.com", "idProperty": "email", "properties": {"city": "Paris"}}]
    r = await hs.post(f"{objects('dated')}/batch/update", json={"inputs": by_email})
    assert r.status_code == 207 and "non-unique" in r.json()["errors"][0]["message"]


async def test_archive_single_and_batch(hs: httpx.AsyncClient, state: HubSpotState) -> None:
    ids = state.seed_contacts(3)
    assert (await hs.delete(f"{objects('dated')}/{ids[0]}")).status_code == 204
    r = await hs.post(f"{objects('legacy')}/batch/archive", json={"inputs": [{"id": ids[1]}]})
    assert r.status_code == 204
    live = (await hs.get(objects("dated"))).json()["results"]
    assert [o["id"] for o in live] == [ids[2]]
    archived = (await hs.get(objects("dated"), params={"archived": "true"})).json()["results"]
    assert {o["id"] for o in archived} == set(ids[:2]) and all(o["archived"] for o in archived)
    assert all("archivedAt" in o for o in archived)


# --- search ----------------------------------------------------------------------------------


async def _search(hs: httpx.AsyncClient, body: dict[str, Any], style: str = "dated") -> Any:
    r = await hs.post(f"{objects(style)}/search", json=body)
    assert r.status_code == 200, r.text
    validate_search(r.json())
    return r.json()


def _f(prop: str, op: str, value: Any = None, **kw: Any) -> dict[str, Any]:
    f: dict[str, Any] = {"propertyName": prop, "operator": op, **kw}
    if value is not None:
        f["value"] = value
    return f


@pytest.fixture
def people(state: HubSpotState, clock: Clock) -> list[str]:
    rows = [
        {"email": "ann@acme.test", "firstname": "Ann", "lifecyclestage": "lead", "city": "Paris"},
        {"email": "bob@gmail.com", "firstname": "Bob", "lifecyclestage": "customer"},
        {
            "email": "cyd@gmail.com",
            "firstname": "Cyd",
            "lifecyclestage": "customer",
            "city": "Rome",
        },
        {"email": "dee@acme.test", "firstname": "Dee", "lifecyclestage": "opportunity"},
    ]
    ids = []
    for row in rows:
        ids.append(state.put_object("contacts", row))
        clock.advance(1000)
    return ids


@pytest.mark.parametrize("style", STYLES)
async def test_search_filters(hs: httpx.AsyncClient, people: list[str], style: str) -> None:
    ann, bob, cyd, dee = people

    async def ids(*filters: dict[str, Any], groups: list[Any] | None = None) -> list[str]:
        body = {"filterGroups": groups or [{"filters": list(filters)}]}
        return [o["id"] for o in (await _search(hs, body, style))["results"]]

    assert await ids(_f("lifecyclestage", "EQ", "customer")) == [bob, cyd]
    assert await ids(_f("email", "EQ", "ANN@acme.test")) == [ann]
    assert await ids(_f("lifecyclestage", "NEQ", "customer")) == [ann, dee]
    assert await ids(_f("lifecyclestage", "IN", values=["lead", "opportunity"])) == [ann, dee]
    assert await ids(_f("lifecyclestage", "NOT_IN", values=["lead", "opportunity"])) == [bob, cyd]
    assert await ids(_f("city", "HAS_PROPERTY")) == [ann, cyd]
    assert await ids(_f("city", "NOT_HAS_PROPERTY")) == [bob, dee]
    assert await ids(_f("email", "CONTAINS_TOKEN", "*@gmail.com")) == [bob, cyd]
    assert await ids(_f("email", "NOT_CONTAINS_TOKEN", "*@gmail.com")) == [ann, dee]
    t1 = START_MS + 1000
    assert await ids(_f("lastmodifieddate", "GTE", str(t1)), _f("createdate", "LT", t1 + 2000)) == [
        bob,
        cyd,
    ]
    iso = "2026-11-18T11:06:41.000Z"  # == t1
    assert await ids(_f("lastmodifieddate", "BETWEEN", iso, highValue=str(t1 + 1000))) == [bob, cyd]
    assert await ids(_f("hs_lastmodifieddate", "GT", str(t1))) == [cyd, dee]
    assert await ids(_f("hs_object_id", "IN", values=[dee, ann])) == [ann, dee]
    either = [{"filters": [_f("firstname", "EQ", "ann")]}, {"filters": [_f("city", "EQ", "rome")]}]
    assert await ids(groups=either) == [ann, cyd]


async def test_search_sorts_properties_query_and_paging(
    hs: httpx.AsyncClient, people: list[str]
) -> None:
    ann, bob, cyd, dee = people
    body = await _search(hs, {"sorts": ["-lastmodifieddate"], "limit": 3, "properties": ["city"]})
    assert body["total"] == 4 and [o["id"] for o in body["results"]] == [dee, cyd, bob]
    assert body["paging"]["next"]["after"] == "3"
    assert set(body["results"][1]["properties"]) >= {"city", "hs_object_id"}
    assert "firstname" not in body["results"][1]["properties"]
    body = await _search(hs, {"sorts": ["-lastmodifieddate"], "limit": 3, "after": "3"})
    assert [o["id"] for o in body["results"]] == [ann] and "paging" not in body
    sort = [{"propertyName": "firstname", "direction": "DESCENDING"}]
    body = await _search(hs, {"sorts": sort})
    assert [o["id"] for o in body["results"]] == [dee, cyd, bob, ann]
    body = await _search(hs, {"query": "gmail"})
    assert [o["id"] for o in body["results"]] == [bob, cyd]


async def test_search_request_limits_are_400(hs: httpx.AsyncClient) -> None:
    f = _f("firstname", "EQ", "x")
    bad = [
        {"limit": 201},
        {"filterGroups": [{"filters": [f]}] * 6},
        {"filterGroups": [{"filters": [f] * 11}]},
        {"filterGroups": [{"filters": [f] * 9}] * 3},  # 27 filters in all
        {"filterGroups": [{"filters": [_f("nope", "EQ", "x")]}]},
        {"filterGroups": [{"filters": [_f("firstname", "LIKE", "x")]}]},
    ]
    for body in bad:
        r = await hs.post(f"{objects('dated')}/search", json=body)
        assert r.status_code == 400, body
        validate_error(r.json(), "VALIDATION_ERROR")


async def test_search_10k_cap_with_15k_records_on_one_timestamp(
    hs: httpx.AsyncClient, state: HubSpotState
) -> None:
    ids = state.seed_contacts(15_000)  # all stamped START_MS by the fixed clock
    window = {
        "filterGroups": [{"filters": [_f("lastmodifieddate", "GTE", str(START_MS))]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "limit": 200,
    }
    body = await _search(hs, {**window, "after": "9800"})
    assert body["total"] == 15_000 and body["paging"]["next"]["after"] == "10000"
    for after, limit in (("10000", 10), ("9900", 200)):
        r = await hs.post(
            f"{objects('dated')}/search", json={**window, "after": after, "limit": limit}
        )
        assert r.status_code == 400
        validate_error(r.json(), "VALIDATION_ERROR")
    # the way past it: an hs_object_id tie-breaker, sorted by id, in a new query
    tie = {
        "filterGroups": [
            {
                "filters": [
                    _f("lastmodifieddate", "GTE", str(START_MS)),
                    _f("hs_object_id", "GT", ids[9_999]),
                ]
            }
        ],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "limit": 200,
    }
    body = await _search(hs, tie)
    assert body["total"] == 5_000 and body["results"][0]["id"] == ids[10_000]


async def test_search_index_lag(hs: httpx.AsyncClient, state: HubSpotState, clock: Clock) -> None:
    state.index_lag_ms = 2_000
    cid = state.put_object("contacts", {"email": "late@example.com"})
    body = {"filterGroups": [{"filters": [_f("email", "EQ", "late@example.com")]}]}
    assert (await _search(hs, body))["total"] == 0
    assert (await hs.get(f"{objects('dated')}/{cid}")).status_code == 200  # reads are immediate
    clock.advance(2_000)
    assert (await _search(hs, body))["total"] == 1


# --- rate limits -----------------------------------------------------------------------------


async def test_search_limit_is_5_per_second_without_headers(
    state: HubSpotState, clock: Clock
) -> None:
    state.tier = "professional"
    async with _client(state) as hs:
        for _ in range(5):
            r = await hs.post(f"{objects('dated')}/search", json={})
            assert r.status_code == 200
            assert not any(h.startswith("x-hubspot-ratelimit") for h in r.headers)
        r = await hs.post(f"{objects('legacy')}/search", json={})
        assert r.status_code == 429
        validate_search_rate_limit(r.json())
        assert not any(h.startswith("x-hubspot-ratelimit") for h in r.headers)
        assert (await hs.get(objects("dated"))).status_code == 200  # other calls unaffected
        clock.advance(1000)
        assert (await hs.post(f"{objects('dated')}/search", json={})).status_code == 200


async def test_ten_second_window_by_tier(state: HubSpotState, clock: Clock) -> None:
    state.tier = "free"
    async with _client(state) as hs:
        for i in range(100):
            r = await hs.get(objects("dated" if i % 2 else "legacy"))
            assert r.status_code == 200
            assert has_rate_headers(r.headers)
            assert r.headers["x-hubspot-ratelimit-remaining"] == str(99 - i)
        assert r.headers["x-hubspot-ratelimit-max"] == "100"
        assert r.headers["x-hubspot-ratelimit-interval-milliseconds"] == "10000"
        assert r.headers["x-hubspot-ratelimit-daily"] == "250000"
        assert r.headers["x-hubspot-ratelimit-daily-remaining"] == str(250_000 - 100)
        r = await hs.get(objects("dated"))
        assert r.status_code == 429
        validate_rate_limit(r.json(), "TEN_SECONDLY_ROLLING")
        assert r.json()["message"] == "You have reached your ten_secondly_rolling limit."
        assert has_rate_headers(r.headers) and r.headers["x-hubspot-ratelimit-remaining"] == "0"
        clock.advance(10_000)
        assert (await hs.get(objects("dated"))).status_code == 200
        state.set_daily_usage(250_000)
        r = await hs.get(objects("dated"))
        assert r.status_code == 429
        validate_rate_limit(r.json(), "DAILY")
    state.tier = "enterprise"
    assert (state.ten_second_limit, state.daily_limit) == (190, 1_000_000)


# --- auth ------------------------------------------------------------------------------------


async def test_401_bodies(state: HubSpotState, clock: Clock) -> None:
    state.add_token("short-lived", kind="oauth", expires_in=60)
    state.add_token("to-revoke")
    state.revoke("to-revoke")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer to-revoke"}):
        async with _client(state, headers) as hs:
            r = await hs.get(objects("dated"))
        assert r.status_code == 401
        validate_error(r.json(), "INVALID_AUTHENTICATION")
        assert r.json()["message"].startswith("Authentication credentials not found.")
    clock.advance(61_000)
    async with _client(state, {"Authorization": "Bearer short-lived"}) as hs:
        r = await hs.get(objects("legacy"))
    assert r.status_code == 401
    validate_error(r.json(), "EXPIRED_AUTHENTICATION")


async def test_403_missing_scope(state: HubSpotState) -> None:
    state.add_token("read-only", ["crm.objects.contacts.read"])
    async with _client(state, {"Authorization": "Bearer read-only"}) as hs:
        assert (await hs.get(objects("dated"))).status_code == 200
        r = await hs.post(objects("dated"), json={"properties": {"email": "a@example.com"}})
    assert r.status_code == 403
    body = r.json()
    validate_error(body, "MISSING_SCOPES")
    assert body["message"].startswith("This app hasn't been granted all required scopes")
    assert body["errors"][0]["context"]["requiredGranularScopes"] == ["crm.objects.contacts.write"]
    assert body["errors"][0]["message"] == "One or more of the following scopes are required."


async def test_oauth_refresh_with_rotation(state: HubSpotState, clock: Clock) -> None:
    state.tier = "professional"
    state.rotate_refresh_tokens = True
    form = {
        "grant_type": "refresh_token",
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "refresh_token": DEFAULT_REFRESH_TOKEN,
    }
    async with _client(state, {}) as hs:
        r = await hs.post("/oauth/v1/token", data=form)
        assert r.status_code == 200
        tok = r.json()
        assert tok["token_type"] == "bearer" and tok["expires_in"] == 1800
        assert tok["refresh_token"] != DEFAULT_REFRESH_TOKEN
        r = await hs.post("/oauth/v3/token", data=form)  # the old refresh token is gone
        assert r.status_code == 400 and r.json()["status"] == "BAD_REFRESH_TOKEN"
        r = await hs.post(f"/oauth/{V}/token", data={**form, "refresh_token": tok["refresh_token"]})
        assert r.status_code == 200
        access = r.json()["access_token"]
        info = (await hs.get(f"/oauth/v1/access-tokens/{access}")).json()
        assert info["hub_id"] == state.portal_id and "crm.objects.contacts.write" in info["scopes"]
        assert info["expires_in"] == 1800 and info["token"] == access
        r = await hs.get(objects("dated"), headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 200
        assert has_rate_headers(r.headers, daily=False)
        assert "x-hubspot-ratelimit-daily" not in r.headers  # not on OAuth-authorised calls
        r = await hs.post(
            "/oauth/v2/private-apps/get/access-token-info", json={"tokenKey": "sandbox-token"}
        )
        assert r.json()["hubId"] == state.portal_id and r.json()["scopes"]
        clock.advance(1_800_000)
        r = await hs.get(objects("dated"), headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 401 and r.json()["category"] == "EXPIRED_AUTHENTICATION"


# --- merges, GDPR, properties, owners, associations, account -----------------------------------


async def test_merge_moves_properties_and_redirects_the_loser(
    hs: httpx.AsyncClient, state: HubSpotState, clock: Clock
) -> None:
    keep = state.put_object("contacts", {"email": "keep@example.com", "firstname": "Keep"})
    lose = state.put_object("contacts", {"email": "lose@example.com", "city": "Oslo"})
    clock.advance(5_000)
    body = {"primaryObjectId": keep, "objectIdToMerge": lose}
    r = await hs.post(f"{objects('dated')}/merge", json=body)
    assert r.status_code == 200
    validate_object(r.json())
    assert r.json()["updatedAt"] == "2026-11-18T11:06:45.000Z"  # the survivor is restamped
    r = await hs.get(
        f"{objects('legacy')}/{lose}", params={"properties": "city,hs_merged_object_ids"}
    )
    assert r.status_code == 200 and r.json()["id"] == keep
    assert r.json()["properties"]["city"] == "Oslo"
    assert r.json()["properties"]["hs_merged_object_ids"] == lose
    r = await hs.get(f"{objects('dated')}/lose@example.com", params={"idProperty": "email"})
    assert r.json()["id"] == keep
    assert len(state.store("contacts")) == 1


async def test_gdpr_delete(hs: httpx.AsyncClient, state: HubSpotState) -> None:
    cid = state.put_object("contacts", {"email": "gone@example.com"})
    r = await hs.post(f"{objects('dated')}/gdpr-delete", json={"objectId": cid})
    assert r.status_code == 204
    assert (await hs.get(f"{objects('dated')}/{cid}")).status_code == 404
    archived = await hs.get(objects("dated"), params={"archived": "true"})
    assert archived.json()["results"] == []
    r = await hs.post(objects("dated"), json={"properties": {"email": "gone@example.com"}})
    assert r.status_code == 400  # blocklisted


async def test_properties_seeded_and_custom(hs: httpx.AsyncClient) -> None:
    r = await hs.get(f"/crm/properties/{V}/contacts")
    assert r.status_code == 200
    props = {p["name"]: p for p in r.json()["results"]}
    assert "preferred_channel" not in props
    stages = [o["value"] for o in props["lifecyclestage"]["options"]]
    assert stages[:3] == ["subscriber", "lead", "marketingqualifiedlead"] and "evangelist" in stages
    assert props["hs_total_deal_value"]["modificationMetadata"]["readOnlyValue"] is True
    assert props["email"]["modificationMetadata"]["readOnlyValue"] is False
    assert len(props["hubspot_owner_id"]["options"]) == 3
    new = {
        "name": "preferred_channel",
        "label": "Preferred channel",
        "type": "enumeration",
        "fieldType": "select",
        "groupName": "contactinformation",
        "options": [{"label": "Email", "value": "email"}, {"label": "SMS", "value": "sms"}],
    }
    r = await hs.post("/crm/v3/properties/contacts", json=new)
    assert r.status_code == 201 and r.json()["name"] == "preferred_channel"
    assert (await hs.post(f"/crm/properties/{V}/contacts", json=new)).status_code == 409
    r = await hs.get("/crm/v3/properties/contacts/preferred_channel")
    assert r.json()["type"] == "enumeration"
    r = await hs.post(objects("dated"), json={"properties": {"preferred_channel": "fax"}})
    assert r.json()["errors"][0]["code"] == "INVALID_OPTION"
    r = await hs.post(objects("dated"), json={"properties": {"preferred_channel": "sms"}})
    assert r.status_code == 201


async def test_owners(hs: httpx.AsyncClient, state: HubSpotState) -> None:
    r = await hs.get(f"/crm/owners/{V}/", params={"limit": 2})
    body = r.json()
    assert len(body["results"]) == 2 and "paging" in body
    r = await hs.get(body["paging"]["next"]["link"])
    assert len(r.json()["results"]) == 1 and "paging" not in r.json()
    email = next(iter(state.owners.values())).email
    r = await hs.get("/crm/v3/owners/", params={"email": email})
    (owner,) = r.json()["results"]
    assert owner["email"] == email and owner["id"] in state.owners
    assert (await hs.get(f"/crm/v3/owners/{owner['id']}")).json()["userId"] == owner["userId"]


async def test_associations_v4(hs: httpx.AsyncClient, state: HubSpotState) -> None:
    contact = state.put_object("contacts", {"email": "c@example.com"})
    company = state.put_object("companies", {"name": "Acme"})
    deal = state.put_object("deals", {"dealname": "Big", "amount": "1200.5"})
    r = await hs.get(f"/crm/associations/{V}/notes/contacts/labels")
    assert r.json()["results"] == [{"category": "HUBSPOT_DEFINED", "typeId": 202, "label": None}]
    r = await hs.get("/crm/v4/associations/contacts/companies/labels")
    assert {t["typeId"] for t in r.json()["results"]} == {1, 279}
    r = await hs.put(
        f"/crm/objects/{V}/contacts/{contact}/associations/default/companies/{company}"
    )
    assert r.status_code == 200
    assert r.json()["results"][0]["associationSpec"]["associationTypeId"] == 279
    r = await hs.post(
        "/crm/v4/associations/contacts/companies/batch/read",
        json={"inputs": [{"id": contact}, {"id": "123"}]},
    )
    assert r.status_code == 207
    validate_assoc_read(r.json())
    (link,) = r.json()["results"][0]["to"]
    assert link["toObjectId"] == int(company)
    assert {t["typeId"] for t in link["associationTypes"]} == {1, 279}  # the first is primary
    r = await hs.post(
        f"/crm/associations/{V}/deals/contacts/batch/create",
        json={
            "inputs": [
                {
                    "from": {"id": deal},
                    "to": {"id": contact},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
                }
            ]
        },
    )
    assert r.status_code == 201
    got = state.get_object("contacts", contact)
    assert got is not None and got["num_associated_deals"] == "1"
    assert got["hs_total_deal_value"] == "1200.5"
    note = {
        "properties": {"hs_timestamp": "2026-11-18T10:00:00Z", "hs_note_body": "Welcome"},
        "associations": [
            {
                "to": {"id": contact},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}],
            }
        ],
    }
    r = await hs.post(objects("dated", "notes"), json=note)
    assert r.status_code == 201 and r.json()["properties"]["hs_timestamp"].endswith(".000Z")
    r = await hs.get(f"/crm/v4/objects/contacts/{contact}/associations/notes")
    assert r.json()["results"][0]["toObjectId"] == int(r.json()["results"][0]["toObjectId"])
    r = await hs.post(
        f"/crm/associations/{V}/contacts/companies/batch/archive",
        json={"inputs": [{"from": {"id": contact}, "to": [{"id": company}]}]},
    )
    assert r.status_code == 204
    assert state.associations_of("contacts", int(contact), "companies") == []


@pytest.mark.parametrize("ver", [V, "v3"])
async def test_account_details(hs: httpx.AsyncClient, state: HubSpotState, ver: str) -> None:
    r = await hs.get(f"/account-info/{ver}/details")
    body = r.json()
    assert body["portalId"] == state.portal_id
    assert set(body) >= {"accountType", "timeZone", "companyCurrency", "uiDomain"}
    assert "dataHostingLocation" in body


# --- faults, control routes, hooks -----------------------------------------------------------


async def test_faults_and_control_routes(hs: httpx.AsyncClient, state: HubSpotState) -> None:
    r = await hs.post("/_sandbox/seed", json={"contacts": 12})
    assert r.json()["contacts"] == 12
    await hs.post("/_sandbox/faults", json={"fail_next": 1, "fail_status": 502})
    r = await hs.get(objects("dated"))
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    await hs.post("/_sandbox/faults", json={"fail_next": 1, "fail_status": 503})
    r = await hs.get(objects("dated"))
    assert r.status_code == 503 and r.json()["category"] == "INTERNAL_ERROR"
    validate_error(r.json(), "INTERNAL_ERROR")
    await hs.post("/_sandbox/faults", json={"storm_seconds": 30})
    r = await hs.get(objects("dated"))
    assert r.status_code == 429
    validate_rate_limit(r.json(), "TEN_SECONDLY_ROLLING")
    await hs.post("/_sandbox/faults", json={"clear": True})
    await hs.post(f"{objects('dated')}/batch/read", json={"inputs": []})
    await hs.post(objects("dated"), json={"properties": {"email": "w@example.com"}})
    calls = (await hs.get("/_sandbox/calls")).json()
    assert calls["total"] == 5 and calls["writes"] == 1  # control routes are not logged
    assert calls["by_endpoint"][f"GET {objects('dated')}"] == 3
    await hs.post("/_sandbox/reset")
    assert len(state.store("contacts")) == 0 and state.log.calls == []


async def test_change_listeners_and_ui_edits(
    hs: httpx.AsyncClient, state: HubSpotState, clock: Clock
) -> None:
    events: list[tuple[str, str, str, str | None, str | None, str]] = []
    state.listeners.append(lambda *e: events.append(e))
    cid = state.put_object("contacts", {"email": "ui@example.com"})
    clock.advance(60_000)
    state.put_object("contacts", {"firstname": "Ui"}, cid)
    got = state.get_object("contacts", cid)
    assert got is not None and got["lastmodifieddate"] == "2026-11-18T11:07:40.000Z"
    assert got["createdate"] == "2026-11-18T11:06:40.000Z"
    await hs.patch(f"{objects('dated')}/{cid}", json={"properties": {"firstname": "Api"}})
    await hs.patch(f"{objects('dated')}/{cid}", json={"properties": {"firstname": "Api"}})  # no-op
    assert events == [
        ("creation", "contacts", cid, None, None, "CRM_UI"),
        ("propertyChange", "contacts", cid, "email", "ui@example.com", "CRM_UI"),
        ("propertyChange", "contacts", cid, "firstname", "Ui", "CRM_UI"),
        ("propertyChange", "contacts", cid, "firstname", "Api", "INTEGRATION"),
    ]
