"""The HubSpot client: paging, batches, per-record errors, the 10k search walk, retries, auth.

Two kinds of test: the error, retry and auth paths against ``httpx.MockTransport`` (exact
control of each answer), and the API behaviour against the HubSpot sandbox over
``httpx.ASGITransport``. Limiters and retries share one fake clock whose ``sleep`` records the
wait and moves the clock, so nothing here really sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connector.config import HubSpotSettings, OAuthSettings
from connector.errors import (
    ApiError,
    AuthError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    scrub,
)
from connector.hubspot import HubSpotClient, StoredTokens
from connector.hubspot.paths import Paths
from connector.ratelimit import hubspot_limiters
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.sandbox.hubspot_state import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)

TOKEN = "pat-na1-0123456789abcdef-test-token"
BASE_URL = "https://hubspot.test"
V = "2026-09"


class FakeTime:
    """A clock that only moves when someone sleeps; every wait is recorded."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.waits: list[float] = []
        self.on_sleep: Callable[[], None] | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()
        await asyncio.sleep(0)


Handler = Callable[[httpx.Request], httpx.Response]


def settings(**kw: Any) -> HubSpotSettings:
    base: dict[str, Any] = {"base_url": BASE_URL, "max_retries": 4, "timeout_seconds": 5.0}
    if "oauth" not in kw:
        base["access_token"] = SecretStr(TOKEN)
    base.update(kw)
    return HubSpotSettings(**base)


def make_client(
    transport: httpx.AsyncBaseTransport | Handler,
    fake: FakeTime,
    *,
    token_store: Any = None,
    **kw: Any,
) -> HubSpotClient:
    if not isinstance(transport, httpx.AsyncBaseTransport):
        transport = httpx.MockTransport(transport)
    s = settings(**kw)
    return HubSpotClient(
        s,
        transport=transport,
        token_store=token_store,
        limiters=hubspot_limiters(s.tier, clock=fake.clock, sleep=fake.sleep),
        sleep=fake.sleep,
        clock=fake.clock,
        wall_clock=fake.clock,
    )


def reply(
    status: int = 200, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def obj(i: int, **props: str) -> dict[str, Any]:
    return {
        "id": str(i),
        "properties": {"hs_object_id": str(i), **props},
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-01-02T00:00:00.000Z",
        "archived": False,
    }


TEN_SECONDLY = {
    "status": "error",
    "message": "You have reached your ten_secondly_rolling limit.",
    "errorType": "RATE_LIMIT",
    "correlationId": "c-10s",
    "policyName": "TEN_SECONDLY_ROLLING",
}
DAILY = {
    "status": "error",
    "message": "You have reached your daily limit.",
    "errorType": "RATE_LIMIT",
    "correlationId": "c-daily",
    "policyName": "DAILY",
}


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


# --- paths -----------------------------------------------------------------------------------


def test_paths_are_dated_and_templates_hide_ids() -> None:
    p = Paths("2026-09")
    assert p.batch("contacts", "upsert").path == "/crm/objects/2026-09/contacts/batch/upsert"
    assert p.search("deals").path == "/crm/objects/2026-09/deals/search"
    one = p.object("contacts", "a@b.com")
    assert one.path == "/crm/objects/2026-09/contacts/a%40b.com"
    assert one.template == "/crm/objects/2026-09/contacts/{id}"
    assert p.owners().path == "/crm/owners/2026-09/"
    assert p.owners(legacy=True).path == "/crm/v3/owners/"
    assert p.properties("contacts", legacy=True).path == "/crm/v3/properties/contacts"
    assert p.associations("notes", "contacts", "labels").path == (
        "/crm/associations/2026-09/notes/contacts/labels"
    )
    assert p.associations("notes", "contacts", "labels", legacy=True).path == (
        "/crm/v4/associations/notes/contacts/labels"
    )
    assert p.account_details(legacy=True).path == "/account-info/v3/details"
    tok = p.oauth_access_token("secret-token")
    assert "secret-token" in tok.path and "secret-token" not in tok.template


# --- paging ----------------------------------------------------------------------------------


async def test_iter_objects_pages_with_after(fake: FakeTime) -> None:
    seen: list[dict[str, str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == f"/crm/objects/{V}/contacts"
        assert req.headers["authorization"] == f"Bearer {TOKEN}"
        q = dict(req.url.params)
        seen.append(q)
        start = int(q.get("after", "0"))
        results = [obj(i, email=f"u{i}@x.io") for i in range(start, min(start + 2, 5))]
        paging = {"next": {"after": str(start + 2)}} if start + 2 < 5 else None
        return reply(200, {"results": results, **({"paging": paging} if paging else {})})

    async with make_client(handler, fake) as hs:
        got = [o.id async for o in hs.iter_objects("contacts", ["email"], page_size=2)]
    assert got == ["0", "1", "2", "3", "4"]
    assert [s.get("after") for s in seen] == [None, "2", "4"]
    assert seen[0]["properties"] == "email" and seen[0]["limit"] == "2"
    assert hs.calls[f"GET /crm/objects/{V}/contacts"] == 3


async def test_iter_objects_refuses_a_repeated_after(fake: FakeTime) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return reply(200, {"results": [obj(1)], "paging": {"next": {"after": "7"}}})

    async with make_client(handler, fake) as hs:
        with pytest.raises(ApiError, match="paging loop"):
            async for _ in hs.iter_objects("contacts", []):
                pass


# --- batches and per-record errors ------------------------------------------------------------


async def test_207_is_split_into_results_and_record_errors(fake: FakeTime) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        inputs = json.loads(req.content)["inputs"]
        bad = inputs[1]
        return reply(
            207,
            {
                "status": "COMPLETE",
                "results": [
                    {**obj(10 + i), "new": i == 0, "objectWriteTraceId": inp["objectWriteTraceId"]}
                    for i, inp in enumerate(inputs)
                    if inp is not bad
                ],
                "numErrors": 1,
                "errors": [
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": "Property values were not valid",
                        "context": {"objectWriteTraceId": [bad["objectWriteTraceId"]]},
                        "errors": [{"message": "invalid", "code": "INVALID_EMAIL"}],
                    }
                ],
            },
        )

    rows = [{"email": "a@x.io"}, {"email": "bad@"}, {"email": "c@x.io"}]
    async with make_client(handler, fake) as hs:
        res = await hs.batch_upsert("contacts", rows)
    assert [r.input_index for r in res.results] == [0, 2]
    assert res.new_ids == ["10"]
    (err,) = res.errors
    assert (err.index, err.id, err.email, err.category, err.code, err.status) == (
        1,
        "bad@",
        "bad@",
        "VALIDATION_ERROR",
        "INVALID_EMAIL",
        400,
    )


async def test_a_batch_refused_whole_is_bisected_to_the_bad_record(fake: FakeTime) -> None:
    written: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        inputs = json.loads(req.content)["inputs"]
        if any(i["id"].startswith("bad") for i in inputs):
            return reply(
                400,
                {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "Property values were not valid",
                    "correlationId": "x",
                },
            )
        written.extend(i["id"] for i in inputs)
        return reply(
            200,
            {
                "status": "COMPLETE",
                "results": [
                    {**obj(n), "objectWriteTraceId": i["objectWriteTraceId"]}
                    for n, i in enumerate(inputs)
                ],
            },
        )

    rows = [{"email": f"u{i}@x.io"} for i in range(20)]
    rows[13] = {"email": "bad13"}
    async with make_client(handler, fake) as hs:
        res = await hs.batch_upsert("contacts", rows)
    assert [e.index for e in res.errors] == [13]
    assert res.errors[0].category == "VALIDATION_ERROR"
    assert sorted(written) == sorted(r["email"] for r in rows if r["email"] != "bad13")
    assert sorted(r.input_index for r in res.results if r.input_index is not None) == [
        i for i in range(20) if i != 13
    ]


async def test_a_refusal_naming_records_drops_them_and_resends_the_rest(fake: FakeTime) -> None:
    sizes: list[int] = []

    def handler(req: httpx.Request) -> httpx.Response:
        inputs = json.loads(req.content)["inputs"]
        sizes.append(len(inputs))
        bad = [i["objectWriteTraceId"] for i in inputs if "required" not in i["properties"]]
        if bad:
            return reply(
                400,
                {
                    "category": "VALIDATION_ERROR",
                    "message": "missing required",
                    "errors": [
                        {
                            "message": "x",
                            "code": "REQUIRED_PROPERTY",
                            "context": {"objectWriteTraceId": bad},
                        }
                    ],
                },
            )
        return reply(201, {"results": [obj(1) for _ in inputs]})

    rows: list[dict[str, str]] = [{"required": "y"} for _ in range(10)]
    rows[2], rows[7] = {}, {}
    async with make_client(handler, fake) as hs:
        res = await hs.batch_create("deals", rows)
    assert sizes == [10, 8]
    assert [(e.index, e.code) for e in res.errors] == [
        (2, "REQUIRED_PROPERTY"),
        (7, "REQUIRED_PROPERTY"),
    ]
    assert len(res.results) == 8


async def test_upsert_keeps_one_email_per_chunk(fake: FakeTime) -> None:
    chunks: list[list[str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        ids = [i["id"] for i in json.loads(req.content)["inputs"]]
        chunks.append(ids)
        return reply(200, {"results": []})

    rows = [{"email": f"u{i}@x.io"} for i in range(150)] + [{"email": "U3@x.io"}]
    async with make_client(handler, fake) as hs:
        await hs.batch_upsert("contacts", rows)
    assert [len(c) for c in chunks] == [100, 51]
    for c in chunks:
        assert len({x.lower() for x in c}) == len(c)
    with pytest.raises(ValueError, match="email"):
        await hs.batch_upsert("contacts", [{"firstname": "no email"}])


async def test_409_carries_the_existing_id(fake: FakeTime) -> None:
    body = {
        "status": "error",
        "message": "Contact already exists. Existing ID: 37765128953",
        "correlationId": "c-409",
        "category": "CONFLICT",
    }
    async with make_client(lambda r: reply(409, body), fake) as hs:
        with pytest.raises(ConflictError) as info:
            await hs.create_object("contacts", {"email": "a@x.io"})
        res = await hs.batch_create("contacts", [{"email": "a@x.io"}])
    assert info.value.existing_id == "37765128953"
    assert info.value.correlation_id == "c-409" and info.value.category == "CONFLICT"
    assert res.errors[0].existing_id == "37765128953" and res.errors[0].status == 409


# --- rate limits and retries ---------------------------------------------------------------


async def test_ten_secondly_429_waits_ten_seconds_and_blocks_the_limiter(fake: FakeTime) -> None:
    answers = [reply(429, TEN_SECONDLY), reply(200, obj(1))]
    async with make_client(lambda r: answers.pop(0), fake) as hs:
        got = await hs.get_object("contacts", "1", [])
    assert got is not None and got.id == "1"
    assert fake.waits == [10.0]


async def test_retry_after_is_honoured_when_sent(fake: FakeTime) -> None:
    answers = [reply(429, TEN_SECONDLY, {"Retry-After": "3"}), reply(200, obj(1))]
    async with make_client(lambda r: answers.pop(0), fake) as hs:
        await hs.get_object("contacts", "1", [])
    assert fake.waits == [3.0]


async def test_search_secondly_limit_waits_one_second(fake: FakeTime) -> None:
    answers = [
        reply(
            429,
            {
                "status": "error",
                "message": "You have reached your secondly limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": "c",
            },
        ),
        reply(200, {"total": 0, "results": []}),
    ]
    async with make_client(lambda r: answers.pop(0), fake) as hs:
        got = [o async for o in hs.search_modified("contacts", 0, 1, [])]
    assert got == [] and fake.waits == [1.0]


async def test_daily_429_is_not_retried(fake: FakeTime) -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return reply(429, DAILY)

    async with make_client(handler, fake) as hs:
        with pytest.raises(RateLimitedError) as info:
            await hs.get_object("contacts", "1", [])
    assert calls == 1
    assert info.value.category == "DAILY"
    assert "midnight in the account's time zone" in str(info.value)


async def test_5xx_then_success_is_retried_with_backoff(fake: FakeTime) -> None:
    answers = [
        httpx.Response(502, text="<html><body><h1>502 Bad Gateway</h1></body></html>"),
        reply(503, {"status": "error", "message": "busy", "category": "SERVICE_UNAVAILABLE"}),
        reply(200, obj(1)),
    ]
    async with make_client(lambda r: answers.pop(0), fake) as hs:
        got = await hs.get_object("contacts", "1", [])
    assert got is not None
    assert len(fake.waits) == 2 and 0 < fake.waits[0] < fake.waits[1]


async def test_non_json_error_body_is_kept_readable(fake: FakeTime) -> None:
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    async with make_client(lambda r: httpx.Response(502, text=html), fake, max_retries=1) as hs:
        with pytest.raises(ServerError) as info:
            await hs.get_object("contacts", "1", [])
    assert "502 Bad Gateway" in str(info.value) and "<h1>" not in str(info.value)


async def test_non_idempotent_call_is_not_retried_after_a_5xx(fake: FakeTime) -> None:
    posts: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "GET":  # the association labels, fetched once per session
            return reply(
                200, {"results": [{"category": "HUBSPOT_DEFINED", "typeId": 202, "label": None}]}
            )
        posts.append(json.loads(req.content))
        return reply(500, {"status": "error", "message": "internal", "category": "INTERNAL"})

    async with make_client(handler, fake) as hs:
        with pytest.raises(ServerError):
            await hs.create_note("<p>hi</p>", datetime(2026, 1, 1, tzinfo=UTC), "5", owner_id="9")
    assert len(posts) == 1 and fake.waits == []
    assert posts[0]["properties"] == {
        "hs_timestamp": "2026-01-01T00:00:00.000Z",
        "hs_note_body": "<p>hi</p>",
        "hubspot_owner_id": "9",
    }
    assert posts[0]["associations"][0]["types"][0]["associationTypeId"] == 202


async def test_timeouts_are_retried_for_reads_only(fake: FakeTime) -> None:
    state = {"slow": 2}

    async def handler(req: httpx.Request) -> httpx.Response:
        if state["slow"] > 0:
            state["slow"] -= 1
            await asyncio.sleep(1)
        return reply(200, obj(1))

    async with make_client(httpx.MockTransport(handler), fake, timeout_seconds=0.02) as hs:
        assert await hs.get_object("contacts", "1", []) is not None
        assert len(fake.waits) == 2
        state["slow"] = 1
        with pytest.raises(TransportError, match="no complete answer"):
            await hs.create_object("contacts", {"email": "a@x.io"})


async def test_401_raises_auth_error_without_the_token(fake: FakeTime) -> None:
    body = {
        "status": "error",
        "message": f"Authentication credentials not found. Bearer {TOKEN}",
        "correlationId": "c-401",
        "category": "INVALID_AUTHENTICATION",
    }
    async with make_client(lambda r: reply(401, body), fake) as hs:
        with pytest.raises(AuthError) as info:
            await hs.get_object("contacts", "1", [])
    assert TOKEN not in str(info.value)
    assert "hubspot.access_token" in str(info.value)
    assert info.value.category == "INVALID_AUTHENTICATION"
    assert info.value.correlation_id == "c-401"
    assert info.value.endpoint == f"GET /crm/objects/{V}/contacts/{{id}}"
    assert TOKEN not in scrub(f"leaked {TOKEN} here")


# --- the dated paths that are UNVERIFIED fall back to legacy ----------------------------------


async def test_unknown_dated_route_falls_back_to_legacy_once(fake: FakeTime) -> None:
    paths: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        paths.append(req.url.path)
        if req.url.path.startswith(f"/crm/owners/{V}"):
            return httpx.Response(404, text="<html>Not Found</html>")
        return reply(200, {"results": [{"id": "7", "email": "o@x.io", "userId": 9}]})

    async with make_client(handler, fake) as hs:
        first = [o.id async for o in hs.iter_owners()]
        second = [o.id async for o in hs.iter_owners()]
    assert first == second == ["7"]
    assert paths == [f"/crm/owners/{V}/", "/crm/v3/owners/", "/crm/v3/owners/"]


async def test_a_no_route_404_falls_back_even_as_object_not_found(fake: FakeTime) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if f"/{V}/" in req.url.path:
            body = {"message": f"No route for GET {req.url.path}", "category": "OBJECT_NOT_FOUND"}
            return reply(404, body)
        return reply(200, {"portalId": 42, "timeZone": "Europe/Paris"})

    async with make_client(handler, fake) as hs:
        details = await hs.account_details()
    assert details.portal_id == 42 and details.time_zone == "Europe/Paris"
    assert hs.calls["GET /account-info/v3/details"] == 1


async def test_object_not_found_does_not_fall_back(fake: FakeTime) -> None:
    body = {"status": "error", "message": "no such property", "category": "OBJECT_NOT_FOUND"}
    async with make_client(lambda r: reply(404, body), fake) as hs:
        with pytest.raises(NotFoundError):
            await hs.list_properties("contacts")
        assert sum(hs.calls.values()) == 1


# --- token introspection -------------------------------------------------------------------


async def test_token_info_for_a_static_token(fake: FakeTime) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == "/oauth/v2/private-apps/get/access-token-info"
        assert json.loads(req.content) == {"tokenKey": TOKEN}
        return reply(
            200, {"userId": 1, "hubId": 42, "appId": 3, "scopes": ["crm.objects.contacts.read"]}
        )

    async with make_client(handler, fake) as hs:
        info = await hs.token_info()
    assert info is not None and info.hub_id == 42 and "crm.objects.contacts.read" in info.scopes

    async with make_client(lambda r: reply(404, {"message": "nope"}), fake) as hs:
        assert await hs.token_info() is None


# --- OAuth ---------------------------------------------------------------------------------


class FakeStore:
    def __init__(self, stored: StoredTokens | None = None) -> None:
        self.stored = stored
        self.saved: list[tuple[str, str | None, datetime | None]] = []

    async def load(self) -> StoredTokens | None:
        return self.stored

    async def save(
        self, refresh_token: str, access_token: str | None, expires_at: datetime | None
    ) -> None:
        self.saved.append((refresh_token, access_token, expires_at))
        self.stored = StoredTokens(refresh_token, access_token, expires_at)


def oauth_settings(refresh: str = "refresh-config-000") -> OAuthSettings:
    return OAuthSettings(
        client_id="client-1",
        client_secret=SecretStr("client-secret-xyz"),
        refresh_token=SecretStr(refresh),
    )


class OAuthServer:
    """A token endpoint that rotates refresh tokens, and an API that checks the bearer."""

    def __init__(self, *, camel: bool = False, expires_in: int = 1800) -> None:
        self.camel = camel
        self.expires_in = expires_in
        self.valid_refresh = {"refresh-config-000"}
        self.valid_access: set[str] = set()
        self.refresh_bodies: list[dict[str, str]] = []
        self.api_auth: list[str] = []
        self.n = 0
        self.fail_refresh: list[httpx.Response] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        if req.url.path == "/oauth/2026-03/token":
            form = dict(httpx.QueryParams(req.content.decode()))
            self.refresh_bodies.append(form)
            if self.fail_refresh:
                return self.fail_refresh.pop(0)
            if form["refresh_token"] not in self.valid_refresh:
                return reply(
                    400,
                    {"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"},
                )
            self.n += 1
            access, refresh = f"access-{self.n:04d}-abcdef", f"refresh-{self.n:04d}-abcdef"
            self.valid_refresh = {refresh}
            self.valid_access.add(access)
            if self.camel:
                return reply(
                    200,
                    {"accessToken": access, "refreshToken": refresh, "expiresIn": self.expires_in},
                )
            return reply(
                200,
                {
                    "access_token": access,
                    "refresh_token": refresh,
                    "expires_in": self.expires_in,
                    "token_type": "bearer",
                },
            )
        bearer = req.headers.get("authorization", "").removeprefix("Bearer ")
        self.api_auth.append(bearer)
        if bearer not in self.valid_access:
            return reply(
                401, {"status": "error", "message": "expired", "category": "EXPIRED_AUTHENTICATION"}
            )
        return reply(200, obj(1))


@pytest.mark.parametrize("camel", [False, True])
async def test_oauth_refreshes_ahead_of_expiry_and_persists_rotation(
    fake: FakeTime, camel: bool
) -> None:
    server = OAuthServer(camel=camel)
    store = FakeStore()
    async with make_client(server, fake, token_store=store, oauth=oauth_settings()) as hs:
        await asyncio.gather(*(hs.get_object("contacts", "1", []) for _ in range(5)))
        assert server.n == 1  # five concurrent requests, one refresh
        assert server.refresh_bodies[0] == {
            "grant_type": "refresh_token",
            "client_id": "client-1",
            "client_secret": "client-secret-xyz",
            "refresh_token": "refresh-config-000",
        }
        assert store.saved[-1][:2] == ("refresh-0001-abcdef", "access-0001-abcdef")
        fake.now += 1800 - 300 - 1  # still outside the 300 s margin
        await hs.get_object("contacts", "1", [])
        assert server.n == 1
        fake.now += 2  # inside the margin: refreshed before the token expires
        await hs.get_object("contacts", "1", [])
        assert server.n == 2
        assert store.saved[-1][0] == "refresh-0002-abcdef"
        assert set(server.api_auth) == {"access-0001-abcdef", "access-0002-abcdef"}
        assert hs.calls["POST /oauth/2026-03/token"] == 2


async def test_oauth_never_refreshes_on_401(fake: FakeTime) -> None:
    server = OAuthServer()
    async with make_client(server, fake, oauth=oauth_settings()) as hs:
        await hs.get_object("contacts", "1", [])
        server.valid_access.clear()  # revoked behind our back
        with pytest.raises(AuthError) as info:
            await hs.get_object("contacts", "1", [])
    assert server.n == 1
    assert "access-0001-abcdef" not in str(info.value)
    assert "re-authorise" in str(info.value)


async def test_oauth_stored_refresh_token_wins_and_falls_back_to_config(fake: FakeTime) -> None:
    server = OAuthServer()
    server.valid_refresh = {"refresh-stored-999"}
    store = FakeStore(StoredTokens("refresh-stored-999"))
    async with make_client(server, fake, token_store=store, oauth=oauth_settings()) as hs:
        await hs.get_object("contacts", "1", [])
    assert server.refresh_bodies[0]["refresh_token"] == "refresh-stored-999"

    # a stored token still valid is used without a refresh at all
    expires = datetime.fromtimestamp(fake.now + 3600, tz=UTC)
    server2 = OAuthServer()
    server2.valid_access.add("access-stored-abcdef")
    store2 = FakeStore(StoredTokens("refresh-x", "access-stored-abcdef", expires))
    async with make_client(server2, fake, token_store=store2, oauth=oauth_settings()) as hs:
        await hs.get_object("contacts", "1", [])
    assert server2.refresh_bodies == []

    # the stored token was revoked (the app re-installed): the config's new token is used
    server3 = OAuthServer()
    store3 = FakeStore(StoredTokens("refresh-revoked-1"))
    async with make_client(server3, fake, token_store=store3, oauth=oauth_settings()) as hs:
        await hs.get_object("contacts", "1", [])
    assert [b["refresh_token"] for b in server3.refresh_bodies] == [
        "refresh-revoked-1",
        "refresh-config-000",
    ]


async def test_oauth_refresh_429_and_5xx_are_retried(fake: FakeTime) -> None:
    server = OAuthServer()
    server.fail_refresh = [reply(429, TEN_SECONDLY), reply(502, {"message": "bad gateway"})]
    async with make_client(server, fake, oauth=oauth_settings()) as hs:
        await hs.get_object("contacts", "1", [])
    assert server.n == 1 and len(server.refresh_bodies) == 3


async def test_oauth_revoked_refresh_token_raises_auth_error_without_secrets(
    fake: FakeTime,
) -> None:
    server = OAuthServer()
    server.valid_refresh = set()
    async with make_client(server, fake, oauth=oauth_settings()) as hs:
        with pytest.raises(AuthError) as info:
            await hs.get_object("contacts", "1", [])
    text = str(info.value)
    assert "refresh-config-000" not in text and "client-secret-xyz" not in text
    assert info.value.category == "BAD_REFRESH_TOKEN"
    assert "hubspot.oauth.refresh_token" in text
    assert len(server.refresh_bodies) == 1  # a 400 is not retried


async def test_oauth_token_info_keeps_the_token_out_of_call_counts(fake: FakeTime) -> None:
    server = OAuthServer()

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.startswith("/oauth/v1/access-tokens/"):
            return reply(
                200,
                {
                    "token": "x",
                    "hub_id": 42,
                    "scopes": ["oauth", "crm.objects.contacts.read"],
                    "expires_in": 1700,
                },
            )
        return server(req)

    async with make_client(handler, fake, oauth=oauth_settings()) as hs:
        info = await hs.token_info()
    assert info is not None and info.kind == "oauth" and info.hub_id == 42
    assert hs.calls["GET /oauth/v1/access-tokens/{token}"] == 1
    assert not any("access-0001" in k for k in hs.calls)


# --- the search walk past the cap, against a tiny fake search (cap lowered to 100) -------------


class FakeSearch:
    """Search with HubSpot's rules at a small cap; ties in time come back in scrambled order."""

    def __init__(self, stamps: dict[int, int], cap: int) -> None:
        self.stamps = stamps
        self.cap = cap
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        self.bodies.append(body)
        after, limit = int(body.get("after", 0)), body["limit"]
        if after + limit > self.cap:
            return reply(400, {"category": "VALIDATION_ERROR", "message": "past the cap"})
        ops = {
            "GTE": lambda a, b: a >= b,
            "GT": lambda a, b: a > b,
            "LTE": lambda a, b: a <= b,
            "EQ": lambda a, b: a == b,
        }

        def value(i: int, prop: str) -> int:
            return i if prop == "hs_object_id" else self.stamps[i]

        hits = [
            i
            for i in self.stamps
            if all(
                ops[f["operator"]](value(i, f["propertyName"]), int(f["value"]))
                for f in body["filterGroups"][0]["filters"]
            )
        ]
        sort = body["sorts"][0]["propertyName"]
        hits.sort(key=lambda i: (value(i, sort), (i * 7919) % 1009))  # ties not by id
        page = hits[after : after + limit]
        out: dict[str, Any] = {
            "total": len(hits),
            "results": [
                {"id": str(i), "properties": {"lastmodifieddate": str(self.stamps[i])}}
                for i in page
            ],
        }
        if after + limit < len(hits):
            out["paging"] = {"next": {"after": str(after + limit)}}
        return reply(200, out)


async def test_search_walk_past_a_small_cap_yields_each_record_once(
    fake: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connector.hubspot.client as client_mod

    monkeypatch.setattr(client_mod, "SEARCH_CAP", 100)
    stamps = {i: 1_000 + i // 3 for i in range(1, 121)}  # three records per timestamp
    stamps.update({i: 5_000 for i in range(121, 371)})  # a bulk job: 250 share one timestamp
    stamps.update({i: 6_000 + i for i in range(371, 451)})
    stamps[999] = 99_999  # outside the window
    search = FakeSearch(stamps, cap=100)
    async with make_client(search, fake) as hs:
        got = [o async for o in hs.search_modified("contacts", 0, 50_000, ["email"], page_size=20)]
    ids = [o.id for o in got]
    assert len(ids) == len(set(ids)) == 450
    ts = [int(o.properties["lastmodifieddate"] or 0) for o in got]
    assert ts == sorted(ts)
    sorts = {b["sorts"][0]["propertyName"] for b in search.bodies}
    assert sorts == {"lastmodifieddate", "hs_object_id"}
    assert all(int(b.get("after", 0)) + b["limit"] <= 100 for b in search.bodies)
    assert search.bodies[0]["properties"] == ["email", "lastmodifieddate"]


# --- against the sandbox, over real HTTP semantics (httpx.ASGITransport) ------------------------


class Sandbox:
    """The HubSpot sandbox on the fake clock (its rate windows and token expiry move with it)."""

    def __init__(self, fake: FakeTime, **kw: Any) -> None:
        self.state = HubSpotState(clock=lambda: fake.now * 1000, **kw)
        self.state.add_token(TOKEN)
        self.transport = httpx.ASGITransport(app=create_hubspot_app(self.state))
        self.fake = fake

    def client(self, **kw: Any) -> HubSpotClient:
        return make_client(self.transport, self.fake, **kw)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.state.log.calls if m == method and p == path)


@pytest.fixture
def sandbox(fake: FakeTime) -> Sandbox:
    return Sandbox(fake)


def contact_rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {"email": f"person{i}@example.com", "firstname": f"P{i}", "lastname": "Test"}
        for i in range(start, start + n)
    ]


async def test_sandbox_paging(sandbox: Sandbox) -> None:
    sandbox.state.seed_contacts(250)
    async with sandbox.client() as hs:
        got = [o async for o in hs.iter_objects("contacts", ["email", "firstname"])]
    assert len({o.id for o in got}) == 250
    assert all(o.properties.get("email") for o in got)
    assert hs.calls[f"GET /crm/objects/{V}/contacts"] == 3


async def test_sandbox_batch_upsert_250_is_three_calls(sandbox: Sandbox) -> None:
    upsert = f"/crm/objects/{V}/contacts/batch/upsert"
    async with sandbox.client() as hs:
        res = await hs.batch_upsert("contacts", contact_rows(250))
        assert res.ok and len(res.results) == 250 and len(res.new_ids) == 250
        assert sorted(r.input_index for r in res.results if r.input_index is not None) == list(
            range(250)
        )
        again = await hs.batch_upsert("contacts", contact_rows(250))
        read = await hs.batch_read("contacts", [*res.new_ids[:120], "999999999"], ["email"])
    assert sandbox.count("POST", upsert) == 6
    assert again.ok and again.new_ids == []
    assert len(sandbox.state.store("contacts")) == 250
    assert len(read.results) == 120
    (missing,) = read.errors
    assert (missing.id, missing.index, missing.category) == ("999999999", 120, "OBJECT_NOT_FOUND")
    assert hs.calls[f"POST /crm/objects/{V}/contacts/batch/read"] == 2


async def test_sandbox_207_splits_per_record_and_enforces_required(sandbox: Sandbox) -> None:
    sandbox.state.required_properties["contacts"] = {"lastname"}  # portal rule, from 2026-09
    rows = contact_rows(5)
    rows[1]["email"] = "not-an-email"
    del rows[3]["lastname"]
    async with sandbox.client() as hs:
        res = await hs.batch_upsert("contacts", rows)
    assert sorted(r.input_index for r in res.results if r.input_index is not None) == [0, 2, 4]
    by_index = {e.index: e for e in res.errors}
    assert set(by_index) == {1, 3}
    assert by_index[1].category == "VALIDATION_ERROR" and by_index[1].code == "INVALID_EMAIL"
    assert by_index[3].code == "REQUIRED_PROPERTY" and by_index[3].email == "person3@example.com"
    assert len(sandbox.state.store("contacts")) == 3


class StripTraceIds(httpx.AsyncBaseTransport):
    """Drops ``objectWriteTraceId`` from batch creates: HubSpot then refuses a batch whole."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/batch/create"):
            body = json.loads(request.content)
            for item in body["inputs"]:
                item.pop("objectWriteTraceId", None)
            request = httpx.Request(request.method, request.url, headers=request.headers, json=body)
            request.headers["content-length"] = str(len(request.content))
        return await self.inner.handle_async_request(request)


async def test_sandbox_one_bad_record_in_a_refused_batch_loses_no_other(
    sandbox: Sandbox, fake: FakeTime
) -> None:
    rows = contact_rows(40)
    rows[29]["email"] = "bad@@example"
    async with make_client(StripTraceIds(sandbox.transport), fake) as hs:
        res = await hs.batch_create("contacts", rows)
    assert [(e.index, e.category) for e in res.errors] == [(29, "VALIDATION_ERROR")]
    assert len(res.results) == 39 and len(sandbox.state.store("contacts")) == 39
    refused = sum(1 for m, p, st in sandbox.state.log.calls if st == 400)
    assert 1 < refused <= 7  # log2(40) halvings, each refused once


async def test_sandbox_409_existing_id(sandbox: Sandbox, fake: FakeTime) -> None:
    existing = sandbox.state.put_object("contacts", {"email": "taken@example.com"})
    async with sandbox.client() as hs:
        with pytest.raises(ConflictError) as info:
            await hs.create_object("contacts", {"email": "taken@example.com"})
        traced = await hs.batch_create(
            "contacts", [{"email": "taken@example.com"}, *contact_rows(2)]
        )
    assert info.value.existing_id == existing and info.value.status == 409
    assert [(e.index, e.existing_id) for e in traced.errors] == [(0, existing)]
    async with make_client(StripTraceIds(sandbox.transport), fake) as hs:
        whole = await hs.batch_create(
            "contacts", [*contact_rows(3, 10), {"email": "taken@example.com"}]
        )
    assert [(e.index, e.status, e.existing_id) for e in whole.errors] == [(3, 409, existing)]
    assert len(whole.results) == 3


async def test_sandbox_search_walks_past_10k_with_a_15k_bulk_timestamp(fake: FakeTime) -> None:
    box = Sandbox(fake)
    state = box.state
    fake.now = 1_800_000_000.0
    state.seed_contacts(5_000, seed=1, spread_ms=7)
    fake.now += 100
    bulk_ms = int(fake.now * 1000)
    state.seed_contacts(15_000, seed=2)  # a bulk job: one timestamp for all
    fake.now += 100
    state.seed_contacts(5_000, seed=3, spread_ms=3)
    since, until = 0, int(fake.now * 1000)
    async with box.client() as hs:
        got = [o async for o in hs.search_modified("contacts", since, until, ["email"])]
        searches = hs.calls[f"POST /crm/objects/{V}/contacts/search"]
    ids = [o.id for o in got]
    assert len(ids) == len(set(ids)) == 25_000
    stamps = [int(o.updated_at.timestamp() * 1000) for o in got if o.updated_at]
    assert stamps == sorted(stamps) and stamps.count(bulk_ms) == 15_000
    assert not any(st == 400 for _, _, st in state.log.calls)  # never paged past the cap
    assert searches < 220  # 125 pages at least; the bulk timestamp is re-read once


async def test_sandbox_429_storm_is_ridden_out_with_backoff(
    sandbox: Sandbox, fake: FakeTime
) -> None:
    sandbox.state.seed_contacts(5)
    sandbox.state.faults.storm(60)

    def calm_after_three() -> None:
        if len(fake.waits) >= 3:
            sandbox.state.faults.storm_until = 0.0

    fake.on_sleep = calm_after_three
    async with sandbox.client() as hs:
        got = [o async for o in hs.iter_objects("contacts", ["email"])]
    assert len(got) == 5
    assert fake.waits[:3] == [10.0, 10.0, 10.0]  # TEN_SECONDLY_ROLLING: wait a whole window
    assert sandbox.count("GET", f"/crm/objects/{V}/contacts") == 4


async def test_sandbox_server_errors_then_success(sandbox: Sandbox, fake: FakeTime) -> None:
    cid = sandbox.state.put_object("contacts", {"email": "a@example.com"})
    sandbox.state.faults.fail_next, sandbox.state.faults.fail_status = 2, 502
    async with sandbox.client() as hs:
        got = await hs.get_object("contacts", cid, ["email"])
    assert got is not None and got.properties["email"] == "a@example.com"
    assert len(fake.waits) == 2 and hs.calls[f"GET /crm/objects/{V}/contacts/{{id}}"] == 3


async def test_sandbox_create_is_not_retried_after_a_5xx(sandbox: Sandbox, fake: FakeTime) -> None:
    sandbox.state.faults.fail_next, sandbox.state.faults.fail_status = 1, 500
    async with sandbox.client() as hs:
        with pytest.raises(ServerError) as info:
            await hs.batch_create("contacts", contact_rows(3))
    assert info.value.status == 500 and info.value.category == "INTERNAL_ERROR"
    assert sandbox.count("POST", f"/crm/objects/{V}/contacts/batch/create") == 1
    assert fake.waits == []


async def test_sandbox_timeouts_are_retried(sandbox: Sandbox, fake: FakeTime) -> None:
    sandbox.state.seed_contacts(30)
    f = sandbox.state.faults
    f.timeout_rate, f.timeout_seconds = 0.5, 0.5
    f._rng.seed(7)
    async with sandbox.client(timeout_seconds=0.05, max_retries=8) as hs:
        got = [o async for o in hs.iter_objects("contacts", ["email"], page_size=10)]
    assert len(got) == 30
    assert len(fake.waits) >= 1  # some pages timed out and were sent again


async def test_sandbox_daily_cap_is_not_retried(sandbox: Sandbox, fake: FakeTime) -> None:
    state = sandbox.state
    state._daily = {state._day(): state.daily_limit}  # no public knob for "cap spent" yet
    async with sandbox.client() as hs:
        with pytest.raises(RateLimitedError) as info:
            await hs.get_object("contacts", "1", [])
    assert info.value.category == "DAILY" and info.value.retry_after is None
    assert len(state.log.calls) == 1 and fake.waits == []


async def test_sandbox_revoked_token_is_an_auth_error_without_the_token(sandbox: Sandbox) -> None:
    sandbox.state.revoke(TOKEN)
    async with sandbox.client() as hs:
        with pytest.raises(AuthError) as info:
            await hs.get_object("contacts", "1", [])
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value.args)
    assert info.value.category == "INVALID_AUTHENTICATION" and info.value.correlation_id


def sandbox_oauth() -> OAuthSettings:
    return OAuthSettings(
        client_id=DEFAULT_CLIENT_ID,
        client_secret=SecretStr(DEFAULT_CLIENT_SECRET),
        refresh_token=SecretStr(DEFAULT_REFRESH_TOKEN),
    )


async def test_sandbox_oauth_refresh_ahead_rotation_and_no_refresh_on_401(
    sandbox: Sandbox, fake: FakeTime
) -> None:
    state = sandbox.state
    state.rotate_refresh_tokens = True
    cid = state.put_object("contacts", {"email": "a@example.com"})
    store = FakeStore()

    def token_calls() -> int:
        return sandbox.count("POST", "/oauth/2026-03/token")

    async with sandbox.client(oauth=sandbox_oauth(), token_store=store) as hs:
        assert await hs.get_object("contacts", cid, []) is not None
        assert token_calls() == 1
        rotated = store.saved[-1][0]
        assert rotated != DEFAULT_REFRESH_TOKEN and rotated in state.refresh_tokens
        fake.now += 1_600  # 200 s before expiry, inside the 300 s margin
        assert await hs.get_object("contacts", cid, []) is not None
        assert token_calls() == 2 and store.saved[-1][0] != rotated
        info = await hs.token_info()
        assert info is not None and info.kind == "oauth" and info.hub_id == state.portal_id
        state.revoke(hs.auth.token or "")  # revoked behind our back: a 401, and no refresh
        with pytest.raises(AuthError) as err:
            await hs.get_object("contacts", cid, [])
        assert token_calls() == 2
    for secret in (DEFAULT_CLIENT_SECRET, rotated):
        assert secret not in str(err.value)

    # a restart: the stored (rotated) refresh token wins over the config's, which is dead now
    async with sandbox.client(oauth=sandbox_oauth(), token_store=FakeStore(store.stored)) as hs:
        fake.now += 3_600
        assert await hs.get_object("contacts", cid, []) is not None
    assert token_calls() == 3


async def test_sandbox_properties_owners_associations_notes_account(sandbox: Sandbox) -> None:
    state = sandbox.state
    cid = state.put_object("contacts", {"email": "a@example.com"})
    comp = state.put_object("companies", {"name": "Acme"})
    async with sandbox.client() as hs:
        props = await hs.list_properties("contacts")
        assert "email" in {p.name for p in props}
        made = await hs.create_property(
            "contacts",
            {
                "name": "brevo_id",
                "label": "Brevo id",
                "type": "string",
                "fieldType": "text",
                "groupName": "contactinformation",
            },
        )
        assert made.name == "brevo_id"
        with pytest.raises(ConflictError):
            await hs.create_property(
                "contacts",
                {
                    "name": "brevo_id",
                    "label": "x",
                    "type": "string",
                    "fieldType": "text",
                    "groupName": "contactinformation",
                },
            )
        owners = [o async for o in hs.iter_owners()]
        assert len(owners) == 3 and all(o.email for o in owners)
        labels = await hs.association_labels("contacts", "companies")
        assert labels and all(lb.category == "HUBSPOT_DEFINED" for lb in labels)
        linked = await hs.create_default_associations("contacts", "companies", [(cid, comp)])
        assert linked.done == 1 and not linked.errors
        assoc = await hs.read_associations("contacts", "companies", [cid, "424242"])
        assert [a.to_id for a in assoc[cid]] == [comp] and "424242" not in assoc
        note = await hs.create_note(
            "<p>Welcome!</p>", datetime(2026, 11, 23, 10, tzinfo=UTC), cid, owner_id=owners[0].id
        )
        notes = await hs.read_associations("notes", "contacts", [note.id])
        assert [a.to_id for a in notes[note.id]] == [cid]
        details = await hs.account_details()
        assert details.portal_id == state.portal_id and details.time_zone == state.time_zone
        info = await hs.token_info()
        assert (
            info is not None
            and info.kind == "static"
            and "crm.objects.contacts.read" in info.scopes
        )
    assert not hs._legacy  # every dated path answered: no legacy fallback


async def test_db_token_store_persists_the_rotated_refresh_token(
    sandbox: Sandbox, fake: FakeTime, tmp_path: Any
) -> None:
    from connector.hubspot import DbTokenStore
    from connector.store import db

    url = f"sqlite:///{tmp_path / 'state.db'}"
    db.upgrade(url)
    engine = db.create_engine(url)
    sandbox.state.rotate_refresh_tokens = True
    cid = sandbox.state.put_object("contacts", {"email": "a@example.com"})
    try:
        store = DbTokenStore(db.session_factory(engine))
        assert await store.load() is None
        async with sandbox.client(oauth=sandbox_oauth(), token_store=store) as hs:
            await hs.get_object("contacts", cid, [])
        saved = await store.load()
        assert saved is not None and saved.refresh_token in sandbox.state.refresh_tokens
        assert saved.access_token == hs.auth.token
        assert saved.expires_at == datetime.fromtimestamp(fake.now + 1800, tz=UTC)
        # a restart reuses the stored, still valid access token: no refresh at all
        async with sandbox.client(oauth=sandbox_oauth(), token_store=store) as hs:
            await hs.get_object("contacts", cid, [])
        assert sandbox.count("POST", "/oauth/2026-03/token") == 1
    finally:
        await engine.dispose()


async def test_sandbox_probe_write_scope(sandbox: Sandbox) -> None:
    async with sandbox.client() as hs:
        assert await hs.probe_write_scope("contacts") is True
    sandbox.state.add_token(TOKEN, ["crm.objects.contacts.read"])
    async with sandbox.client() as hs:
        assert await hs.probe_write_scope("contacts") is False
    assert len(sandbox.state.store("contacts")) == 0


# --- chunks in flight ------------------------------------------------------------------------


class Overlapping(httpx.AsyncBaseTransport):
    """Answers batch calls, the first call last: counts the calls in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.sent: list[list[str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        ids = [str(i["id"]) for i in json.loads(request.content)["inputs"]]
        first = not self.sent
        self.sent.append(ids)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        for _ in range(500 if first else 1):  # the first answers once another call came in
            if not first or len(self.sent) > 1:
                break
            await asyncio.sleep(0)
        self.in_flight -= 1
        return reply(200, {"results": [obj(int(i)) for i in ids if i.isdigit()]})


async def test_batch_read_keeps_two_chunks_in_flight_and_the_results_in_order(
    fake: FakeTime,
) -> None:
    transport = Overlapping()
    ids = [str(i) for i in range(1, 351)]
    async with make_client(transport, fake) as hs:
        res = await hs.batch_read("contacts", ids, ["email"])
    assert [len(c) for c in transport.sent] == [100, 100, 100, 50]
    assert transport.peak == 2
    assert [r.id for r in res.results] == ids


async def test_upsert_with_a_repeated_email_sends_its_chunks_one_at_a_time(
    fake: FakeTime,
) -> None:
    transport = Overlapping()
    rows = [{"email": f"u{i}@x.io"} for i in range(150)] + [{"email": "U3@x.io"}]
    async with make_client(transport, fake) as hs:
        await hs.batch_upsert("contacts", rows)
    assert [len(c) for c in transport.sent] == [100, 51]
    assert transport.peak == 1  # the second write of u3 must follow the first

    distinct = Overlapping()
    async with make_client(distinct, fake) as hs:
        await hs.batch_upsert("contacts", [{"email": f"u{i}@x.io"} for i in range(250)])
    assert distinct.peak == 2


async def test_chunks_in_flight_stop_starting_after_a_failure() -> None:
    from connector.hubspot.client import _in_order

    started: list[int] = []

    def call(i: int) -> Callable[[], Any]:
        async def run() -> int:
            started.append(i)
            await asyncio.sleep(0)
            if i == 1:
                raise ServerError("boom", system="hubspot", endpoint="POST /x")
            return i

        return run

    with pytest.raises(ServerError):
        await _in_order([call(i) for i in range(6)], 2)
    assert started[:2] == [0, 1] and set(started) <= {0, 1, 2}  # none after the failure

    started.clear()
    assert await _in_order([call(i) for i in (0, 2, 3)], 2) == [0, 2, 3]
