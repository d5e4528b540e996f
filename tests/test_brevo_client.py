"""The Brevo client: paging, identity, errors, import, lists, events, email, webhooks, retries.

Two kinds of test: the error and retry paths against ``httpx.MockTransport`` (exact control of
each answer), and the API behaviour against the Brevo sandbox over ``httpx.ASGITransport``.
Limiters and retries share one fake clock whose ``sleep`` records the wait and moves the clock,
so nothing here really sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from brevo import AsyncBrevo
from pydantic import SecretStr

from connector.brevo import (
    BrevoClient,
    EmailAddress,
    EmailAlreadySentError,
    FieldValidationError,
    ImportBudgetExhaustedError,
    ImportRow,
    ResubscribeRefusedError,
    brevo_time,
)
from connector.config import BrevoSettings
from connector.errors import (
    AuthError,
    ConflictError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
)
from connector.ratelimit import Limiter, Window, brevo_limiters

API_KEY = "xkeysib-test-0123456789abcdef"
BASE_URL = "http://brevo.test/v3"
T0 = "2026-01-01T00:00:00.000Z"


class FakeTime:
    """A clock that only moves when someone sleeps; every wait is recorded."""

    def __init__(self) -> None:
        self.now = 10_000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


Handler = Callable[[httpx.Request], httpx.Response]


def make_client(
    transport: httpx.AsyncBaseTransport,
    fake: FakeTime,
    *,
    api_key: str = API_KEY,
    max_retries: int = 3,
) -> BrevoClient:
    settings = BrevoSettings(api_key=SecretStr(api_key), base_url=BASE_URL, max_retries=max_retries)
    return BrevoClient(
        settings,
        transport=transport,
        limiters=brevo_limiters(clock=fake.clock, sleep=fake.sleep),
        sleep=fake.sleep,
    )


def contact_json(i: int, *, modified: str = T0, email: str | None = None) -> dict[str, Any]:
    return {
        "id": i,
        "email": email or f"c{i}@example.com",
        "emailBlacklisted": False,
        "smsBlacklisted": False,
        "createdAt": T0,
        "modifiedAt": modified,
        "listIds": [2],
        "attributes": {"FIRSTNAME": f"C{i}"},
    }


def body(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


# --- errors and retries (MockTransport) -------------------------------------------------------


async def test_429_waits_for_the_ratelimit_reset_then_succeeds(fake: FakeTime) -> None:
    answers = iter(
        [
            httpx.Response(
                429,
                json={"code": "too_many_requests", "message": "Too many requests"},
                headers={"x-sib-ratelimit-remaining": "0", "x-sib-ratelimit-reset": "7"},
            ),
            httpx.Response(200, json={"attributes": []}),
        ]
    )
    async with make_client(httpx.MockTransport(lambda r: next(answers)), fake) as client:
        assert await client.list_attributes() == []
        assert fake.waits == [7.0]
        assert client.calls["GET /v3/contacts/attributes"] == 2


async def test_429_reset_is_clamped_to_an_hour(fake: FakeTime) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            json={"code": "too_many_requests", "message": "slow down"},
            headers={"x-sib-ratelimit-reset": "86400"},
        )

    async with make_client(httpx.MockTransport(handler), fake, max_retries=0) as client:
        with pytest.raises(RateLimitedError) as info:
            await client.list_attributes()
        assert info.value.retry_after == 3600.0
        assert info.value.category == "too_many_requests"


async def test_typed_sdk_error_body_is_read(fake: FakeTime) -> None:
    # on GET /contacts the SDK raises its TooManyRequestsError with a parsed ErrorModel
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            json={"code": "too_many_requests", "message": "The expected rate limit is exceeded."},
            headers={"x-sib-ratelimit-reset": "3", "x-request-id": "abc"},
        )

    async with make_client(httpx.MockTransport(handler), fake, max_retries=1) as client:
        with pytest.raises(RateLimitedError) as info:
            [c async for c in client.iter_contacts()]
    err = info.value
    assert (err.endpoint, err.status, err.category) == (
        "GET /v3/contacts",
        429,
        "too_many_requests",
    )
    assert err.retry_after == 3.0 and err.correlation_id == "abc"
    assert "rate limit is exceeded" in str(err)
    assert fake.waits == [3.0]


async def test_5xx_then_success_is_retried_for_a_read(fake: FakeTime) -> None:
    answers = iter(
        [
            httpx.Response(502, text="<html>bad gateway</html>"),
            httpx.Response(503, json={"code": "unavailable", "message": "try later"}),
            httpx.Response(200, json={"contacts": [contact_json(1)], "count": 1}),
        ]
    )
    async with make_client(httpx.MockTransport(lambda r: next(answers)), fake) as client:
        contacts = [c async for c in client.iter_contacts()]
        assert [c.id for c in contacts] == [1]
        assert client.calls["GET /v3/contacts"] == 3
        assert len(fake.waits) == 2 and all(w > 0 for w in fake.waits)


async def test_create_without_update_enabled_is_not_retried_after_5xx(fake: FakeTime) -> None:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(body(request))
        return httpx.Response(500, json={"code": "internal_error", "message": "oops"})

    async with make_client(httpx.MockTransport(handler), fake) as client:
        with pytest.raises(ServerError) as info:
            await client.create_contact("new@example.com", {}, update_enabled=False)
        assert len(seen) == 1 and seen[0]["updateEnabled"] is False
        assert info.value.endpoint == "POST /v3/contacts"
        assert info.value.status == 500 and info.value.category == "internal_error"

        seen.clear()
        with pytest.raises(ServerError):
            await client.create_contact("new@example.com", {}, update_enabled=True)
        assert len(seen) == 4  # upsert: idempotent in effect, so retried (3 retries)


async def test_empty_bodied_error_is_not_taken_for_success(fake: FakeTime) -> None:
    # the SDK's create_contact returns "no data" for any empty body, whatever the status
    async with make_client(
        httpx.MockTransport(lambda r: httpx.Response(503)), fake, max_retries=1
    ) as client:
        with pytest.raises(ServerError):
            await client.create_contact("a@example.com", {"FIRSTNAME": "A"})


async def test_425_too_early_is_retried(fake: FakeTime) -> None:
    answers = iter(
        [
            httpx.Response(425, json={"code": "too_early", "message": "still processing"}),
            httpx.Response(204),
        ]
    )
    async with make_client(httpx.MockTransport(lambda r: next(answers)), fake) as client:
        await client.update_contact("a@example.com", "email", attributes={"FIRSTNAME": "A"})
        assert client.calls["PUT /v3/contacts/{identifier}"] == 2


async def test_transport_errors(fake: FakeTime) -> None:
    attempts = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise httpx.ConnectError("refused", request=request)
        if attempts["n"] == 2:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, json={"webhooks": []})

    async with make_client(httpx.MockTransport(flaky), fake) as client:
        assert await client.list_webhooks("marketing") == []
        assert attempts["n"] == 3

    def timeout(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        raise httpx.ReadTimeout("slow", request=request)

    attempts["n"] = 0
    async with make_client(httpx.MockTransport(timeout), fake) as client:
        with pytest.raises(TransportError) as info:
            await client.create_webhook("https://hook.example.com/b", ["delivered"])
        assert attempts["n"] == 1  # may have been applied: a second webhook would be created
        assert info.value.endpoint == "POST /v3/webhooks"


async def test_401_is_an_auth_error_without_the_key(fake: FakeTime) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["api-key"]
        return httpx.Response(401, json={"code": "unauthorized", "message": f"Key not found {key}"})

    async with make_client(httpx.MockTransport(handler), fake) as client:
        with pytest.raises(AuthError) as info:
            await client.get_account()
    text = str(info.value)
    assert API_KEY not in text and API_KEY not in repr(info.value)
    assert "SMTP & API" in text and "API keys" in text
    assert info.value.status == 401 and info.value.endpoint == "GET /v3/account"


async def test_oauth_env_vars_do_not_switch_off_the_api_key(
    fake: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BREVO_CLIENT_ID", "stray-client-id")
    monkeypatch.setenv("BREVO_CLIENT_SECRET", "stray-client-secret")
    # the SDK reads them into its defaults when imported: act as if they had been set then
    defaults = AsyncBrevo.__init__.__kwdefaults__
    assert defaults is not None
    monkeypatch.setitem(defaults, "client_id", "stray-client-id")
    monkeypatch.setitem(defaults, "client_secret", "stray-client-secret")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"email": "owner@example.com", "plan": []})

    async with make_client(httpx.MockTransport(handler), fake) as client:
        account = await client.get_account()
    assert account.email == "owner@example.com"
    assert [r.url.path for r in seen] == ["/v3/account"]  # no OAuth token call
    assert seen[0].headers["api-key"] == API_KEY
    assert "authorization" not in seen[0].headers


async def test_duplicate_is_a_conflict_even_when_brevo_says_invalid_parameter(
    fake: FakeTime,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={
                "code": "invalid_parameter",
                "message": "Unable to create contact, email is already associated with another "
                "Contact",
                "metadata": {"duplicate_identifiers": ["email"]},
            },
            headers={"x-sib-request-id": "req-42"},
        )

    async with make_client(httpx.MockTransport(handler), fake) as client:
        with pytest.raises(ConflictError) as info:
            await client.create_contact("dup@example.com", {}, update_enabled=False)
    assert info.value.category == "invalid_parameter"
    assert info.value.correlation_id == "req-42"
    assert "already associated" in str(info.value)


async def test_limit_out_of_range_falls_back_to_500_once(fake: FakeTime) -> None:
    limits: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        limits.append(request.url.params["limit"])
        if request.url.params["limit"] == "1000":
            return httpx.Response(
                400, json={"code": "out_of_range", "message": "Limit exceeds max value"}
            )
        return httpx.Response(200, json={"contacts": [contact_json(1)], "count": 1})

    async with make_client(httpx.MockTransport(handler), fake) as client:
        stream = client.iter_contacts()
        assert [c.id async for c in stream] == [1]
    assert limits == ["1000", "500"]
    assert stream.page_size == 500


class ShiftingContacts:
    """``GET /contacts`` over a list the test mutates between pages (sorted by creation)."""

    def __init__(self, n: int) -> None:
        self.rows = [contact_json(i) for i in range(1, n + 1)]
        self.after_page: dict[int, Callable[[], object]] = {}
        self.pages = 0
        self.since: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params["limit"])
        offset = int(request.url.params["offset"])
        since = request.url.params.get("modifiedSince")
        self.since.append(since)
        rows = [r for r in self.rows if since is None or r["modifiedAt"] >= since]
        page = rows[offset : offset + limit]
        self.pages += 1
        if self.pages in self.after_page:
            self.after_page[self.pages]()
        return httpx.Response(200, json={"contacts": page, "count": len(rows)})


async def test_paging_survives_a_deletion_between_pages(fake: FakeTime) -> None:
    api = ShiftingContacts(25)
    api.after_page[1] = lambda: api.rows.pop(3)  # everything after id 4 moves one to the left
    async with make_client(httpx.MockTransport(api), fake) as client:
        stream = client.iter_contacts(page_size=10)
        ids = [c.id async for c in stream]
    expected = [i for i in range(1, 26)]
    assert sorted(ids) == expected and len(ids) == len(set(ids))
    assert stream.shifts == 1


async def test_paging_catches_a_contact_that_enters_the_filter_mid_scan(fake: FakeTime) -> None:
    old = "2025-01-01T00:00:00.000Z"
    api = ShiftingContacts(30)
    for r in api.rows[:10]:
        r["modifiedAt"] = old  # created and last modified before the cursor

    def edit_old_contact() -> None:  # moves into the filtered set at index 0
        api.rows[2]["modifiedAt"] = brevo_time(datetime.now(UTC))

    api.after_page[1] = edit_old_contact
    async with make_client(httpx.MockTransport(api), fake) as client:
        stream = client.iter_contacts(modified_since=datetime(2025, 6, 1, tzinfo=UTC), page_size=10)
        ids = [c.id async for c in stream]
    assert sorted(ids) == [3, *range(11, 31)] and len(ids) == len(set(ids))
    assert stream.shifts >= 1
    assert api.since[-1] != api.since[0]  # a catch-up pass from the scan's start
    assert stream.high_water_mark is not None
    assert stream.high_water_mark > datetime(2026, 1, 1, tzinfo=UTC)


async def test_import_is_chunked_by_serialised_size(fake: FakeTime) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(202, json={"processId": 100 + len(requests)})

    rows = [
        ImportRow(f"person{i}@example.com", {"FIRSTNAME": "Zoë", "N": i}, ext_id=f"hs-{i}")
        for i in range(300)
    ]
    one = len(json.dumps(rows[0].to_json(), ensure_ascii=False, separators=(",", ":")))
    async with make_client(httpx.MockTransport(handler), fake) as client:
        client.import_chunk_bytes = 120 * (one + 1)  # ~110 rows a request once the envelope fits
        ids = await client.import_contacts(rows, list_ids=[7], notify_url="https://x.test/n")
    assert ids == [101, 102, 103]
    assert {r.url.path for r in requests} == {"/v3/contacts/import"}
    sent = [body(r) for r in requests]
    assert sum(len(b["jsonBody"]) for b in sent) == 300
    assert all(len(r.content) <= 120 * (one + 1) for r in requests)
    assert sent[0]["listIds"] == [7] and sent[0]["updateExistingContacts"] is True
    assert sent[0]["notifyUrl"] == "https://x.test/n"
    assert sent[0]["jsonBody"][0]["attributes"]["EXT_ID"] == "hs-0"


async def test_import_sends_what_the_sdk_would_send(fake: FakeTime) -> None:
    """The import body is serialised by the client, not by the SDK: the same request."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(202, json={"processId": 1})

    rows = [
        ImportRow("a@example.com", {"FIRSTNAME": "Zoë", "N": 1.5, "B": True, "X": None}, "7"),
        ImportRow("b@example.com", {}),
    ]
    async with make_client(httpx.MockTransport(handler), fake) as client:
        await client.import_contacts(rows, list_ids=[7], notify_url="https://x.test/n")
        await client.sdk.contacts.with_raw_response.import_contacts(
            json_body=[r.to_json() for r in rows],
            list_ids=[7],
            update_existing_contacts=True,
            empty_contacts_attributes=False,
            notify_url="https://x.test/n",
        )
    ours, sdk = requests
    assert (ours.method, ours.url) == (sdk.method, sdk.url)
    assert json.loads(ours.content) == json.loads(sdk.content)
    for name in ("api-key", "content-type", "user-agent"):
        assert ours.headers[name] == sdk.headers[name]


async def test_contact_listings_send_what_the_sdk_would_send(fake: FakeTime) -> None:
    """``GET /contacts`` goes past the SDK's decoding, not past its request building."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"contacts": [contact_json(3)], "count": 1})

    since = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    async with make_client(httpx.MockTransport(handler), fake) as client:
        got = await client.get_contacts_by_ids([3, 4])
        await client.sdk.contacts.with_raw_response.get_contacts(ids=[3, 4], limit=2)
        listed = [c async for c in client.iter_contacts(modified_since=since, overlap=False)]
        await client.sdk.contacts.with_raw_response.get_contacts(
            limit=1000, offset=0, sort="asc", modified_since=brevo_time(since)
        )
    assert [c.id for c in got] == [c.id for c in listed] == [3]
    for ours, sdk in (requests[0:2], requests[2:4]):
        assert (ours.method, ours.url.path) == (sdk.method, sdk.url.path)
        assert sorted(ours.url.params.multi_items()) == sorted(sdk.url.params.multi_items())
        assert ours.headers["api-key"] == sdk.headers["api-key"]


async def test_wait_for_import_respects_its_polling_budget(fake: FakeTime) -> None:
    polls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        polls.append(request.url.path)
        return httpx.Response(200, json={"id": 5, "name": "IMPORTUSER", "status": "in_process"})

    async with make_client(httpx.MockTransport(handler), fake) as client:
        with pytest.raises(ImportBudgetExhaustedError) as info:
            await client.wait_for_import([5], poll_every=60, budget=3)
    assert len(polls) == 3 and info.value.pending == [5]
    assert fake.waits[:3] == [60, 60, 60]
    assert "notify_url" in str(info.value)


async def test_email_change_of_a_blocklisted_contact_is_refused(fake: FakeTime) -> None:
    puts: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={**contact_json(9), "emailBlacklisted": True})
        puts.append(body(request))
        return httpx.Response(204)

    async with make_client(httpx.MockTransport(handler), fake) as client:
        with pytest.raises(ResubscribeRefusedError):
            await client.update_contact(9, "id", attributes={"EMAIL": "new@example.com"})
        with pytest.raises(ResubscribeRefusedError):
            await client.update_contact(
                9, "id", attributes={"EMAIL": "new@example.com"}, known_blocklisted=True
            )
        assert puts == []
        await client.update_contact(9, "id", attributes={"FIRSTNAME": "X"})
        await client.update_contact(
            9, "id", attributes={"EMAIL": "new@example.com"}, allow_resubscribe=True
        )
    assert puts == [
        {"attributes": {"FIRSTNAME": "X"}},
        {"attributes": {"EMAIL": "new@example.com"}},
    ]


# --- against the Brevo sandbox (ASGITransport) ------------------------------------------------

sandbox = pytest.importorskip("connector.sandbox.brevo")
BrevoState = sandbox.BrevoState
SANDBOX_KEY = sandbox.DEFAULT_API_KEY


class YieldingTime(FakeTime):
    """Fake time whose sleep also lets the sandbox's background tasks (imports) run."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        for _ in range(5):
            await asyncio.sleep(0)


@pytest.fixture
def ytime() -> YieldingTime:
    return YieldingTime()


@pytest.fixture
def state(ytime: YieldingTime) -> Any:
    # the sandbox's rate windows run on the same fake clock as the client's limiters
    return BrevoState(monotonic=ytime.clock, import_delay=0.0)


@pytest.fixture
async def brevo(state: Any, ytime: YieldingTime) -> AsyncIterator[BrevoClient]:
    transport = httpx.ASGITransport(app=sandbox.create_brevo_app(state))
    async with make_client(transport, ytime, api_key=SANDBOX_KEY) as client:
        yield client


async def test_sandbox_pages_2500_contacts_in_3_calls(brevo: BrevoClient, state: Any) -> None:
    state.seed_contacts(2500)
    stream = brevo.iter_contacts(page_size=1000)
    ids = [c.id async for c in stream]
    assert sorted(ids) == sorted(state.contacts) and len(ids) == 2500
    assert brevo.calls["GET /v3/contacts"] == 3
    assert state.calls.count(method="GET", contains="/v3/contacts") == 3
    assert stream.shifts == 0


async def test_sandbox_modified_since_and_high_water_mark(brevo: BrevoClient, state: Any) -> None:
    state.seed_contacts(300)
    stamps = sorted(c.modified_at for c in state.contacts.values())
    cutoff = stamps[len(stamps) // 2].replace(microsecond=0)
    expected = {c.id for c in state.contacts.values() if c.modified_at >= cutoff}
    stream = brevo.iter_contacts(modified_since=cutoff, page_size=50)
    got = [c async for c in stream]
    assert {c.id for c in got} == expected and len(got) == len(expected)
    newest = max(c.modified_at for c in state.contacts.values())
    assert stream.high_water_mark is not None
    assert stream.high_water_mark == newest.replace(microsecond=newest.microsecond // 1000 * 1000)
    assert all(c.modified_at >= cutoff for c in got)


async def test_sandbox_contact_edited_during_paging_is_read_once(
    brevo: BrevoClient, state: Any
) -> None:
    state.seed_contacts(2500)
    order = sorted(state.contacts)
    later, earlier = state.contacts[order[1500]], state.contacts[order[10]]
    seen: list[int] = []
    async for c in brevo.iter_contacts(page_size=1000):
        seen.append(c.id)
        if len(seen) == 1000:  # between pages: one contact already read, one still ahead
            state.edit_contact(later.email, {"FIRSTNAME": "Edited"})
            state.edit_contact(earlier.email, {"FIRSTNAME": "Edited too"})
        if c.id == later.id:
            assert c.attributes["FIRSTNAME"] == "Edited"
    assert len(seen) == len(set(seen)) == 2500


async def test_sandbox_contact_entering_the_filter_during_paging_is_not_lost(
    brevo: BrevoClient, state: Any
) -> None:
    state.seed_contacts(400)
    stamps = sorted(c.modified_at for c in state.contacts.values())
    cutoff = stamps[100].replace(microsecond=0)
    expected = {c.id for c in state.contacts.values() if c.modified_at >= cutoff}
    outsider = next(c for c in state.contacts.values() if c.modified_at < cutoff)
    seen: list[int] = []
    stream = brevo.iter_contacts(modified_since=cutoff, page_size=100)
    async for c in stream:
        seen.append(c.id)
        if len(seen) == 100:  # now modified: it enters the result set before our offset
            state.edit_contact(outsider.email, {"FIRSTNAME": "Back again"})
    assert set(seen) == expected | {outsider.id}
    assert len(seen) == len(set(seen))
    assert stream.shifts >= 1


async def test_sandbox_get_contact_by_each_identifier(brevo: BrevoClient) -> None:
    new_id = await brevo.create_contact(
        "Ann+tag@Example.com",
        {"FIRSTNAME": "Ann", "SMS": "+33612345678"},
        ext_id="hs-101",
        list_ids=[10],
    )
    assert isinstance(new_id, int)
    by_email = await brevo.get_contact("ann+tag@example.com", "email")
    assert by_email is not None and by_email.id == new_id
    assert by_email.ext_id == "hs-101" and by_email.list_ids == [10]
    assert by_email.attributes["FIRSTNAME"] == "Ann"
    for ident, by in ((new_id, "id"), ("hs-101", "ext_id"), ("+33612345678", "phone")):
        found = await brevo.get_contact(ident, by)  # type: ignore[arg-type]
        assert found is not None and found.id == new_id, by
    assert await brevo.get_contact("nobody@example.com", "email") is None

    # upsert answers 204: no id
    assert await brevo.create_contact("ann+tag@example.com", {"LASTNAME": "Lee"}) is None
    await brevo.update_contact(new_id, "id", attributes={"FIRSTNAME": "Anne"}, list_ids=[11])
    after = await brevo.get_contact(new_id, "id")
    assert after is not None and after.attributes["FIRSTNAME"] == "Anne"
    assert after.attributes["LASTNAME"] == "Lee" and after.list_ids == [10, 11]
    assert await brevo.delete_contact("hs-101", "ext_id") is True
    assert await brevo.delete_contact("hs-101", "ext_id") is False


async def test_sandbox_duplicate_is_a_conflict(brevo: BrevoClient) -> None:
    await brevo.create_contact("dup@example.com", {})
    with pytest.raises(ConflictError) as info:
        await brevo.create_contact("dup@example.com", {}, update_enabled=False)
    assert info.value.endpoint == "POST /v3/contacts" and info.value.status == 400
    assert "already associated" in str(info.value)


async def test_sandbox_invalid_sms_names_the_field(brevo: BrevoClient) -> None:
    with pytest.raises(FieldValidationError) as info:
        await brevo.create_contact("phone@example.com", {"SMS": "0612345678"})
    assert isinstance(info.value, ValidationError)
    assert info.value.field == "SMS" and "SMS" in str(info.value)
    assert "0612345678" not in str(info.value)


async def test_sandbox_import_5000_rows_in_3_chunks(brevo: BrevoClient, state: Any) -> None:
    rows = [
        ImportRow(f"imported{i}@example.com", {"FIRSTNAME": f"Imp{i}"}, ext_id=f"hs-{i}")
        for i in range(5000)
    ]
    size = len(json.dumps([r.to_json() for r in rows], ensure_ascii=False, separators=(",", ":")))
    brevo.import_chunk_bytes = size // 3 + 1000  # three requests instead of one
    process_ids = await brevo.import_contacts(rows, list_ids=[11])
    assert len(process_ids) == 3
    done = await brevo.wait_for_import(process_ids, poll_every=30, budget=9)
    assert set(done) == set(process_ids)
    assert all(p.status == "completed" for p in done.values())
    assert brevo.calls["GET /v3/processes/{processId}"] <= 9
    assert state.calls.count(contains="/contacts/batch") == 0
    last = await brevo.get_contact("imported4999@example.com", "email")
    assert last is not None and last.attributes["FIRSTNAME"] == "Imp4999"
    assert last.list_ids == [11] and last.ext_id == "hs-4999"
    first = await brevo.get_contact("hs-0", "ext_id")
    assert first is not None and first.email == "imported0@example.com"
    assert len(state.contacts) == 5000


async def test_sandbox_list_membership_in_chunks_of_150(brevo: BrevoClient, state: Any) -> None:
    contacts = state.seed_contacts(400)
    emails = [c.email for c in contacts]
    already = {c.email for c in contacts if 12 in c.list_ids}
    result = await brevo.add_to_list(12, emails=emails)
    assert brevo.calls["POST /v3/contacts/lists/{listId}/contacts/add"] == 3
    assert result.success == set(emails) - already
    assert result.failure == already
    listed = await brevo.get_list(12)
    assert listed is not None and listed.unique_subscribers == 400
    assert await brevo.get_list(999) is None

    removed = await brevo.remove_from_list(12, ids=[c.id for c in contacts[:10]])
    assert removed.success == {c.id for c in contacts[:10]}
    again = await brevo.remove_from_list(12, ids=[c.id for c in contacts[:10]])
    assert again.failure == {c.id for c in contacts[:10]} and not again.success


async def test_sandbox_attributes(brevo: BrevoClient) -> None:
    await brevo.create_attribute("lifecycle_stage", "text")
    await brevo.create_attribute(
        "TIER", "category", category="category", enumeration={1: "Gold", 2: "Silver"}
    )
    attrs = {a.name: a for a in await brevo.list_attributes()}
    assert attrs["LIFECYCLE_STAGE"].type == "text"
    assert attrs["TIER"].enumeration == {1: "Gold", 2: "Silver"}
    with pytest.raises(ValidationError):
        await brevo.create_attribute("TIER", "text")


async def test_sandbox_events(brevo: BrevoClient, state: Any) -> None:
    await brevo.create_contact("ev@example.com", {})
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    await brevo.track_event(
        "lifecycle_customer",
        email="ev@example.com",
        properties={"plan": "pro", "seats": 5},
        contact_properties={"FIRSTNAME": "Eve"},
        event_date=when,
    )
    (event,) = state.events
    assert event.event_name == "lifecycle_customer"
    assert event.identifiers == {"email_id": "ev@example.com"}
    assert event.event_properties == {"plan": "pro", "seats": 5}
    with pytest.raises(ValueError):
        await brevo.track_event("bad name!", email="ev@example.com")
    with pytest.raises(ValueError):
        await brevo.track_event("no_identifier")


class LoseFirstAnswer(httpx.AsyncBaseTransport):
    """Forwards to the sandbox, but the first answer to ``path`` is lost (a read timeout)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path: str) -> None:
        self.inner = inner
        self.path = path
        self.lost = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == self.path and not self.lost:
            self.lost = True
            await response.aclose()
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


async def test_sandbox_transactional_email_is_idempotent(
    brevo: BrevoClient, state: Any, ytime: YieldingTime
) -> None:
    sender = EmailAddress("hello@sandbox-company.example", "Sandbox")
    message_id = await brevo.send_email(
        sender=sender,
        to=["new.customer@example.com"],
        subject="Welcome",
        html="<p>Hi</p>",
        tags=["onboarding"],
        idempotency_key="welcome-42",
    )
    assert message_id and len(state.outbox) == 1
    assert state.outbox[0].payload["headers"] == {"IdempotencyKey": "welcome-42"}
    with pytest.raises(EmailAlreadySentError):
        await brevo.send_email(
            sender=sender,
            to=["new.customer@example.com"],
            subject="Welcome",
            html="<p>Hi</p>",
            idempotency_key="welcome-42",
        )
    assert len(state.outbox) == 1

    # a 5xx before Brevo took the email: retried, sent once
    state.faults.fail_next = 1
    assert await brevo.send_email(
        sender=sender, to=["b@example.com"], subject="S", html="<p>x</p>", idempotency_key="k2"
    )
    assert len(state.outbox) == 2

    # the answer is lost after Brevo took it: the retry is recognised, still sent once
    transport = LoseFirstAnswer(
        httpx.ASGITransport(app=sandbox.create_brevo_app(state)), "/v3/smtp/email"
    )
    async with make_client(transport, ytime, api_key=SANDBOX_KEY) as client:
        with pytest.raises(EmailAlreadySentError):
            await client.send_email(
                sender=sender,
                to=["c@example.com"],
                subject="S",
                html="<p>x</p>",
                idempotency_key="k3",
            )
    assert transport.lost and len(state.outbox) == 3


async def test_sandbox_webhooks(brevo: BrevoClient) -> None:
    hook_id = await brevo.create_webhook(
        "https://connector.example.com/webhooks/brevo",
        ["contactUpdated", "listAddition", "unsubscribed"],
        auth_token="s3cret-webhook-token",
        description="connector",
    )
    marketing = await brevo.list_webhooks("marketing")
    assert [(w.id, w.type, w.description) for w in marketing] == [
        (hook_id, "marketing", "connector")
    ]
    assert set(marketing[0].events) == {"contactUpdated", "listAddition", "unsubscribed"}
    everything = await brevo.list_webhooks()
    assert [w.id for w in everything] == [hook_id]
    assert brevo.calls["GET /v3/webhooks"] == 4
    with pytest.raises(ValidationError):
        await brevo.create_webhook("https://x.example.com", ["not-an-event"])


async def test_sandbox_account(brevo: BrevoClient) -> None:
    account = await brevo.get_account()
    assert account.company_name == "Sandbox Company" and account.plans


async def test_sandbox_limiter_keeps_the_client_under_the_limit(
    brevo: BrevoClient, state: Any, ytime: YieldingTime
) -> None:
    await brevo.create_contact("rl@example.com", {})
    for _ in range(35):
        assert await brevo.get_contact("rl@example.com") is not None
    assert not [c for c in state.calls.calls if c[2] == 429]
    assert sum(ytime.waits) >= 3.0  # 36 contacts calls at 10/s


async def test_sandbox_ratelimit_headers_hold_the_client_back(
    state: Any, ytime: YieldingTime
) -> None:
    generous = {
        name: Limiter(name, [Window(10_000, 1.0)], clock=ytime.clock, sleep=ytime.sleep)
        for name in ("contacts", "events", "smtp_email", "smtp_other", "other")
    }
    settings = BrevoSettings(api_key=SecretStr(SANDBOX_KEY), base_url=BASE_URL, max_retries=3)
    transport = httpx.ASGITransport(app=sandbox.create_brevo_app(state))
    async with BrevoClient(
        settings, transport=transport, limiters=generous, sleep=ytime.sleep
    ) as client:
        for _ in range(25):  # the sandbox allows 10 per second
            await client.list_attributes()
    # "x-sib-ratelimit-remaining: 0" blocked the limiter before any 429
    assert 429 not in [s for _, _, s in state.calls.calls]
    assert sum(ytime.waits) >= 2.0


async def test_sandbox_429_waits_for_the_reset(
    brevo: BrevoClient, state: Any, ytime: YieldingTime
) -> None:
    for _ in range(10):  # another process on the same account used this second's budget
        state.windows["contacts"][0].take(ytime.now)
    assert await brevo.list_attributes()
    statuses = [s for _, _, s in state.calls.calls]
    assert statuses == [429, 200]
    assert ytime.waits == [1.0]  # x-sib-ratelimit-reset: 1
    assert brevo.calls["GET /v3/contacts/attributes"] == 2


async def test_sandbox_5xx_then_success_and_no_retry_of_plain_create(
    brevo: BrevoClient, state: Any
) -> None:
    await brevo.create_contact("five@example.com", {})
    state.faults.fail_next, state.faults.fail_status = 2, 503
    assert await brevo.get_contact("five@example.com") is not None
    assert state.calls.count(method="GET") == 3

    state.calls.clear()
    state.faults.fail_next, state.faults.fail_status = 1, 500
    with pytest.raises(ServerError):
        await brevo.create_contact("six@example.com", {}, update_enabled=False)
    assert state.calls.count(method="POST") == 1
    assert state.get("six@example.com") is None


async def test_sandbox_wrong_key_is_an_auth_error(state: Any, ytime: YieldingTime) -> None:
    transport = httpx.ASGITransport(app=sandbox.create_brevo_app(state))
    async with make_client(transport, ytime, api_key="xkeysib-wrong-key-123456") as client:
        with pytest.raises(AuthError) as info:
            await client.get_contact("x@example.com")
    assert "xkeysib-wrong-key-123456" not in str(info.value)
    assert info.value.status == 401 and info.value.category == "unauthorized"
