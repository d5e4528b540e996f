"""The Brevo sandbox: behaviour the sync daemon relies on, every call checked against the spec.

The client's response hook validates each request and response with Brevo's official OpenAPI
spec (tests/brevo_spec.py). A request sent on purpose outside the spec (a bad key, a limit too
high) is marked ``extensions={"spec": "response"}``; a call the 2024 spec does not know is
marked ``{"spec": "skip"}`` with a comment naming the note that verifies it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import brevo_spec
import httpx
import pytest
from brevo import AsyncBrevo
from brevo.contacts import ImportContactsRequestJsonBodyItem

from connector.sandbox.brevo import (
    DEFAULT_API_KEY,
    BrevoState,
    Contact,
    ContactEvent,
    create_brevo_app,
)

RESPONSE_ONLY: dict[str, Any] = {"spec": "response"}
SKIP: dict[str, Any] = {"spec": "skip"}
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class TickClock:
    """Wall clock for the sandbox: every reading is 1 ms later; ``advance`` jumps ahead."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class Mono:
    """Monotonic clock for the rate windows, moved by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _check(response: httpx.Response) -> None:
    await response.aread()
    mode = response.request.extensions.get("spec", "full")
    if mode != "skip":
        brevo_spec.validate(response.request, response, check_request=mode == "full")


def _client(app: Any, key: str | None = DEFAULT_API_KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app),
        base_url="http://brevo.test/v3",
        headers={"api-key": key} if key else {},
        event_hooks={"response": [_check]},
    )


@pytest.fixture(scope="session", autouse=True)
def spec() -> Any:
    return brevo_spec.openapi()


@pytest.fixture
def clock() -> TickClock:
    return TickClock()


@pytest.fixture
def state(clock: TickClock) -> BrevoState:
    return BrevoState(clock=clock, rate_limits=False, import_delay=0.01)


@pytest.fixture
def app(state: BrevoState) -> Any:
    return create_brevo_app(state)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as c:
        yield c


async def _create(client: httpx.AsyncClient, email: str, **body: Any) -> int:
    r = await client.post("/contacts", json={"email": email, **body})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


# --- spec, auth, account ----------------------------------------------------------------------


def test_spec_loads_with_errata_listed() -> None:
    spec = brevo_spec.load_spec_dict()
    assert len(spec["paths"]) == 185
    assert "/contacts/import" in spec["paths"] and brevo_spec.ERRATA


async def test_unknown_or_missing_key_is_401(app: Any) -> None:
    for key in ("xkeysib-wrong", None):
        async with _client(app, key) as c:
            r = await c.get("/contacts", extensions=RESPONSE_ONLY)
        assert r.status_code == 401
        assert r.json() == {"code": "unauthorized", "message": "Key not found"}


async def test_account(client: httpx.AsyncClient) -> None:
    r = await client.get("/account")
    assert r.status_code == 200
    body = r.json()
    assert body["email"] and body["companyName"] and body["plan"][0]["type"] == "free"


# --- contacts: paging and filters -------------------------------------------------------------


async def test_paging_by_creation_order_and_limit_errors(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    state.seed_contacts(120, seed=1)
    ids: list[int] = []
    for offset in (0, 50, 100):
        r = await client.get("/contacts", params={"limit": 50, "offset": offset, "sort": "asc"})
        body = r.json()
        assert body["count"] == 120
        ids += [c["id"] for c in body["contacts"]]
    assert ids == sorted(ids) and len(set(ids)) == 120
    first = (await client.get("/contacts")).json()
    assert len(first["contacts"]) == 50  # default limit
    assert first["contacts"][0]["id"] == 120  # default sort: newest first
    contact = first["contacts"][0]
    assert set(contact) >= {"email", "id", "emailBlacklisted", "smsBlacklisted"}
    assert contact["createdAt"].endswith("Z") and contact["listIds"][0] == 10
    r = await client.get("/contacts", params={"limit": 1001}, extensions=RESPONSE_ONLY)
    assert r.status_code == 400
    assert r.json() == {"code": "out_of_range", "message": "Limit exceeds max value"}
    r = await client.get("/contacts", params={"limit": 1000, "offset": 5000})
    assert r.json() == {"contacts": [], "count": 120}
    r = await client.get("/contacts", params={"listIds": [12], "limit": 1000})
    in_12 = [c for c in state.contacts.values() if 12 in c.list_ids]
    assert r.json()["count"] == len(in_12) > 0


async def test_modified_since_sees_edits_and_list_changes_but_sorts_by_creation(
    client: httpx.AsyncClient, state: BrevoState, clock: TickClock
) -> None:
    emails = [f"p{i}@example.com" for i in range(5)]
    for e in emails:
        await _create(client, e, attributes={"FIRSTNAME": e[:2]})
    clock.advance(minutes=10)
    cursor = clock.now
    clock.advance(seconds=1)
    state.edit_contact(emails[3], {"LASTNAME": "Edited"})  # a UI edit
    r = await client.post("/contacts/lists/11/contacts/add", json={"emails": [emails[1]]})
    assert r.status_code == 201
    since = cursor.isoformat().replace("+00:00", "Z")
    r = await client.get("/contacts", params={"modifiedSince": since, "sort": "asc"})
    body = r.json()
    assert [c["email"] for c in body["contacts"]] == [emails[1], emails[3]]  # creation order
    assert body["count"] == 2
    # a no-op write changes nothing, so modifiedAt stays
    before = state.get(emails[0])
    assert before is not None
    stamp = before.modified_at
    r = await client.put(f"/contacts/{emails[0]}", json={"attributes": {"FIRSTNAME": "p0"}})
    assert r.status_code == 204 and before.modified_at == stamp
    r = await client.get("/contacts", params={"createdSince": since})
    assert r.json() == {"contacts": [], "count": 0}  # all five were created before the cursor
    r = await client.get("/contacts", params={"modifiedSince": "not a date"})
    assert r.status_code == 400


# --- contacts: create, update, delete ---------------------------------------------------------


async def test_create_duplicate_invalid_email_and_sms(client: httpx.AsyncClient) -> None:
    cid = await _create(client, "Ada@Example.com", attributes={"SMS": "+33 6 12 34 56 78"})
    r = await client.get("/contacts/ada@example.com")
    assert r.json()["id"] == cid and r.json()["attributes"]["SMS"] == "33612345678"
    r = await client.post("/contacts", json={"email": "ada@example.com"})
    assert r.status_code == 400
    err = r.json()
    assert err["code"] == "duplicate_parameter"
    assert err["metadata"]["duplicate_identifiers"] == ["email"]
    r = await client.post(
        "/contacts",
        json={"email": "ada@example.com", "attributes": {"LASTNAME": "L"}, "updateEnabled": True},
    )
    assert r.status_code == 204 and r.content == b""
    # the spec's `format: email` already rejects this request: check the answer only
    r = await client.post("/contacts", json={"email": "not-an-email"}, extensions=RESPONSE_ONLY)
    assert r.status_code == 400
    assert r.json() == {"code": "invalid_parameter", "message": "Invalid email address"}
    for sms in ("0612345678", "+999123", "phone"):
        r = await client.post(
            "/contacts", json={"email": "b@example.com", "attributes": {"SMS": sms}}
        )
        assert r.status_code == 400
        assert r.json() == {"code": "invalid_parameter", "message": "Invalid phone number"}
    # accepted: CC…, 00CC… and +CC… (SDK create_contact note); stored as digits
    for i, sms in enumerate(("447700900123", "004915112345678", "+1 415 555 2671")):
        await _create(client, f"s{i}@example.com", attributes={"SMS": sms})
    r = await client.post(
        "/contacts", json={"email": "c@example.com", "attributes": {"SMS": "0033612345678"}}
    )
    assert r.status_code == 400
    assert r.json()["metadata"]["duplicate_identifiers"] == ["SMS"]
    r = await client.post("/contacts", json={"attributes": {"FIRSTNAME": "x"}})
    assert r.status_code == 400 and r.json()["code"] == "missing_parameter"
    r = await client.post("/contacts", json={"attributes": {"SMS": "+447911123456"}})
    sms_only = r.json()["id"]
    r = await client.get("/contacts/447911123456", params={"identifierType": "phone_id"})
    assert r.json()["id"] == sms_only and "email" not in r.json()


async def test_update_email_change_unblocklists_and_identifier_types(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    cid = await _create(client, "old@example.com", emailBlacklisted=True, ext_id="hs-1")
    await _create(client, "taken@example.com")
    r = await client.put(
        "/contacts/old@example.com", json={"attributes": {"EMAIL": "taken@example.com"}}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "duplicate_parameter"
    r = await client.put(
        "/contacts/old@example.com", json={"attributes": {"EMAIL": "New@example.com"}}
    )
    assert r.status_code == 204
    r = await client.get("/contacts/old@example.com")
    assert r.status_code == 404
    assert r.json() == {"code": "document_not_found", "message": "Contact does not exist"}
    r = await client.get("/contacts/hs-1", params={"identifierType": "ext_id"})
    body = r.json()
    assert body["email"] == "new@example.com" and body["emailBlacklisted"] is False
    assert body["attributes"]["EXT_ID"] == "hs-1"
    r = await client.put(
        f"/contacts/{cid}",
        params={"identifierType": "contact_id"},
        json={"emailBlacklisted": True, "ext_id": "hs-2", "listIds": [11], "unlinkListIds": [12]},
    )
    assert r.status_code == 204
    c = state.contacts[cid]
    assert c.email_blacklisted and c.ext_id == "hs-2" and c.list_ids == {11}
    r = await client.put("/contacts/nobody@example.com", json={"attributes": {}})
    assert r.status_code == 404
    r = await client.delete(f"/contacts/{cid}")
    assert r.status_code == 204 and cid not in state.contacts
    await _create(client, state.account_email)
    r = await client.delete(f"/contacts/{state.account_email}")
    assert r.status_code == 405


async def test_unknown_attributes_and_wrong_types_are_silently_ignored(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    for name, body in (
        ("LIFECYCLE_STAGE", {"type": "text"}),
        ("SIGNUP_DATE", {"type": "date"}),
        ("SCORE", {"type": "float"}),
        ("VIP", {"type": "boolean"}),
    ):
        r = await client.post(f"/contacts/attributes/normal/{name}", json=body)
        assert r.status_code == 201
    r = await client.post("/contacts/attributes/normal/score", json={"type": "text"})
    assert r.status_code == 400  # names are upper-cased: SCORE exists
    attrs = {a["name"]: a for a in (await client.get("/contacts/attributes")).json()["attributes"]}
    assert attrs["SIGNUP_DATE"]["type"] == "date" and "FIRSTNAME" in attrs
    cid = await _create(
        client,
        "t@example.com",
        attributes={"LIFECYCLE_STAGE": "lead", "SIGNUP_DATE": "2026-02-03T10:00:00Z", "SCORE": 4},
    )
    r = await client.put(
        "/contacts/t@example.com",
        json={
            "attributes": {
                "NOT_IN_ACCOUNT": "x",
                "SIGNUP_DATE": "yesterday",
                "SCORE": "high",
                "VIP": "maybe",
                "LIFECYCLE_STAGE": "customer",
            }
        },
    )
    assert r.status_code == 204
    stored = state.contacts[cid].attributes
    assert stored == {"LIFECYCLE_STAGE": "customer", "SIGNUP_DATE": "2026-02-03", "SCORE": 4}
    r = await client.put("/contacts/t@example.com", json={"attributes": {"VIP": True, "SCORE": ""}})
    assert state.contacts[cid].attributes == {
        "LIFECYCLE_STAGE": "customer",
        "SIGNUP_DATE": "2026-02-03",
        "VIP": True,
    }


async def test_attribute_type_rules(client: httpx.AsyncClient) -> None:
    r = await client.post("/contacts/attributes/transactional/FLAG", json={"type": "boolean"})
    assert r.status_code == 400
    r = await client.post("/contacts/attributes/category/TIER", json={"type": "category"})
    assert r.status_code == 400 and r.json()["code"] == "missing_parameter"
    r = await client.post(
        "/contacts/attributes/category/TIER",
        json={"type": "category", "enumeration": [{"value": 1, "label": "Gold"}]},
    )
    assert r.status_code == 201
    r = await client.post("/contacts/attributes/normal/FIRSTNAME", json={"type": "text"})
    assert r.status_code == 400
    await _create(client, "cat@example.com", attributes={"TIER": "gold"})
    r = await client.get("/contacts/cat@example.com")
    assert r.json()["attributes"]["TIER"] == 1


# --- import and processes ---------------------------------------------------------------------


async def test_import_json_then_process_completes(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    await _create(client, "known@example.com", attributes={"FIRSTNAME": "Old", "LASTNAME": "Keep"})
    r = await client.post(
        "/contacts/import",
        json={
            "jsonBody": [
                {"email": "known@example.com", "attributes": {"FIRSTNAME": "New", "LASTNAME": ""}},
                {"email": "fresh@example.com", "attributes": {"FIRSTNAME": "F", "NOPE": 1}},
                {"email": "broken", "attributes": {}},
            ],
            "listIds": [11],
            "updateExistingContacts": True,
        },
    )
    assert r.status_code == 202
    pid = r.json()["processId"]
    r = await client.get(f"/processes/{pid}")
    assert r.json() == {"id": pid, "status": "queued", "name": "IMPORT_USERS"}
    await state.wait_processes()
    r = await client.get(f"/processes/{pid}")
    assert r.json()["status"] == "completed"
    assert state.processes[pid].stats == {"created": 1, "updated": 1, "unchanged": 0, "invalid": 1}
    known = state.get("known@example.com")
    fresh = state.get("fresh@example.com")
    assert known is not None and fresh is not None
    # empty values do not erase without emptyContactsAttributes; unknown NOPE is dropped
    assert known.attributes == {"FIRSTNAME": "New", "LASTNAME": "Keep"} and 11 in known.list_ids
    assert fresh.attributes == {"FIRSTNAME": "F"} and fresh.list_ids == {11}
    r = await client.get("/processes", params={"limit": 10})
    assert r.json()["count"] == 1
    r = await client.get("/processes/999")
    assert r.status_code == 404


async def test_import_csv_erasing_empties_and_request_errors(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    await _create(client, "a@example.com", attributes={"FIRSTNAME": "A", "LASTNAME": "Gone"})
    csv_body = (
        "EMAIL;FIRSTNAME;LASTNAME;SMS\na@example.com;Anne;;\nb@example.com;Bob;B;+4915112345678\n"
    )
    r = await client.post(
        "/contacts/import",
        json={
            "fileBody": csv_body,
            "newList": {"listName": "Imported", "folderId": 1},
            "emptyContactsAttributes": True,
        },
    )
    assert r.status_code == 202
    await state.wait_processes()
    a, b = state.get("a@example.com"), state.get("b@example.com")
    assert a is not None and b is not None
    assert a.attributes == {"FIRSTNAME": "Anne"} and b.sms == "4915112345678"
    new_list = max(state.lists)
    assert state.lists[new_list].name == "Imported" and state.lists[new_list].members == {
        a.id,
        b.id,
    }
    r = await client.post("/contacts/import", json={"jsonBody": [{"email": "x@example.com"}]})
    assert r.status_code == 400 and r.json()["code"] == "missing_parameter"  # no listIds
    r = await client.post("/contacts/import", json={"listIds": [10]})
    assert r.status_code == 400
    big = "EMAIL\n" + "x" * (10 * 1024 * 1024)
    r = await client.post("/contacts/import", json={"fileBody": big, "listIds": [10]})
    assert r.status_code == 400 and "10MB" in r.json()["message"]
    r = await client.post(
        "/contacts/import", json={"fileBody": big + "y" * (2 * 1024 * 1024), "listIds": [10]}
    )
    assert r.status_code == 413 and r.headers["content-type"].startswith("text/html")


async def test_import_reads_file_url_and_posts_to_notify_url(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    notified: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # the fileUrl
            return httpx.Response(200, text="EMAIL;FIRSTNAME\nurl@example.com;Url\n")
        notified.append(json.loads(request.content))
        return httpx.Response(200)

    state.notify_imports = True
    state.http_transport = httpx.MockTransport(handler)
    r = await client.post(
        "/contacts/import",
        json={
            "fileUrl": "https://files.example/contacts.csv",
            "listIds": [10],
            "notifyUrl": "https://connector.example/brevo/import-done",
        },
    )
    await state.wait_processes()
    url_contact = state.get("url@example.com")
    assert url_contact is not None and url_contact.attributes == {"FIRSTNAME": "Url"}
    pid = r.json()["processId"]
    assert notified == [
        {
            "processId": pid,
            "status": "completed",
            "created": 1,
            "updated": 0,
            "unchanged": 0,
            "invalid": 0,
        }
    ]


async def test_batch_endpoint_is_deprecated_by_default(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    await _create(client, "bt@example.com")
    body = {"contacts": [{"email": "bt@example.com", "attributes": {"FIRSTNAME": "B"}}]}
    r = await client.post("/contacts/batch", json=body)
    assert r.status_code == 400 and "/contacts/import" in r.json()["message"]
    state.batch_endpoint = "enabled"
    r = await client.post("/contacts/batch", json=body)
    assert r.status_code == 204
    assert state.contacts[1].attributes == {"FIRSTNAME": "B"}


# --- lists ------------------------------------------------------------------------------------


async def test_list_add_remove_at_most_150(
    client: httpx.AsyncClient, state: BrevoState, clock: TickClock
) -> None:
    state.seed_contacts(200)
    emails = [c.email or "" for c in state.contacts.values() if 12 not in c.list_ids]
    assert len(emails) >= 151
    r = await client.post(
        "/contacts/lists/12/contacts/add", json={"emails": emails[:151]}, extensions=RESPONSE_ONLY
    )  # the spec's maxItems: 150 already rejects the request
    assert r.status_code == 400 and r.json()["code"] == "out_of_range"
    clock.advance(minutes=1)
    mark = clock.now
    r = await client.post(
        "/contacts/lists/12/contacts/add", json={"emails": [*emails[:149], "ghost@example.com"]}
    )
    assert r.status_code == 201
    result = r.json()["contacts"]
    assert result["success"] == emails[:149] and result["failure"] == ["ghost@example.com"]
    member = state.get(emails[0])
    assert member is not None and member.modified_at > mark and 12 in member.list_ids
    r = await client.post("/contacts/lists/12/contacts/add", json={"emails": emails[:2]})
    assert r.status_code == 400
    assert r.json()["message"] == "Contact already in list and/or does not exist"
    r = await client.post("/contacts/lists/12/contacts/remove", json={"ids": [member.id]})
    assert r.json()["contacts"]["success"] == [member.id] and 12 not in member.list_ids
    r = await client.post("/contacts/lists/12/contacts/add", json={"emails": [], "ids": [1]})
    assert r.status_code == 400
    r = await client.get("/contacts/lists/12")
    assert r.json()["uniqueSubscribers"] == len(state.lists[12].members)
    r = await client.get("/contacts/lists/99")
    assert r.status_code == 404
    r = await client.get("/contacts/lists", params={"limit": 51}, extensions=RESPONSE_ONLY)
    assert r.status_code == 400
    r = await client.get("/contacts/lists", params={"sort": "asc"})
    assert [x["name"] for x in r.json()["lists"]] == [
        "All contacts",
        "Qualified leads",
        "Customers",
    ]
    r = await client.post("/contacts/folders", json={"name": "Sync"})
    folder = r.json()["id"]
    r = await client.post("/contacts/lists", json={"name": "Synced", "folderId": folder})
    assert r.status_code == 201
    r = await client.get(f"/contacts/lists/{r.json()['id']}/contacts")
    assert r.json() == {"contacts": [], "count": 0}
    assert (await client.get("/contacts/folders")).json()["count"] == 2


# --- events, transactional e-mail, webhooks ---------------------------------------------------


async def test_events_are_stored_and_update_contact_properties(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    await _create(client, "ev@example.com")
    body = {
        "event_name": "lifecycle_changed",
        "identifiers": {"email_id": "ev@example.com"},
        "contact_properties": {"FIRSTNAME": "Eve"},
        "event_properties": {"stage": "customer", "score": 3},
    }
    r = await client.post("/events", json=body)
    assert r.status_code == 204
    event = state.events[-1]
    assert event.contact_id == 1 and event.api_key_name == "connector"
    assert state.contacts[1].attributes["FIRSTNAME"] == "Eve"
    r = await client.post("/events", json={**body, "event_name": "bad name!"})
    assert r.status_code == 400
    r = await client.post("/events", json={"event_name": "x"}, extensions=RESPONSE_ONLY)
    assert r.status_code == 400 and r.json()["code"] == "missing_parameter"
    # /events/batch is newer than the 2024 spec (API_NOTES §4, SDK create_batch_events)
    r = await client.post(
        "/events/batch", json={"events": [body, {"event_name": "x"}]}, extensions=SKIP
    )
    assert r.status_code == 202 and r.json()["status"] == "partiallyQueued"
    r = await client.post("/events/batch", json={"events": [body]}, extensions=SKIP)
    assert r.json() == {"message": "Batch accepted", "count": 1}
    assert len(state.events) == 3


async def test_transactional_email_outbox_and_idempotency(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    email = {
        "sender": {"email": "team@company.example", "name": "Team"},
        "to": [{"email": "new.customer@example.com", "name": "New Customer"}],
        "subject": "Welcome!",
        "htmlContent": "<p>Hello</p>",
        "tags": ["onboarding"],
        "headers": {"IdempotencyKey": "welcome-42"},
    }
    r = await client.post("/smtp/email", json=email)
    assert r.status_code == 201
    message_id = r.json()["messageId"]
    assert message_id.startswith("<") and message_id.endswith("@smtp-relay.mailin.fr>")
    sent = state.outbox[0]
    assert sent.to == ["new.customer@example.com"] and sent.subject == "Welcome!"
    assert sent.payload["tags"] == ["onboarding"]
    r = await client.post("/smtp/email", json=email)
    assert r.status_code == 400
    assert r.json() == {"code": "duplicate_request", "message": "Request already processed"}
    r = await client.post(
        "/smtp/email", json={**email, "headers": {}, "subject": None}, extensions=RESPONSE_ONLY
    )
    assert r.status_code == 400 and r.json()["code"] == "missing_parameter"
    assert len(state.outbox) == 1


async def test_webhooks_crud(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/webhooks",
        json={
            "url": "https://connector.example/webhooks/brevo",
            "events": ["contactUpdated", "contactDeleted", "listAddition", "unsubscribed"],
            "type": "marketing",
            "batched": True,
            "auth": {"type": "bearer", "token": "s3cret"},
        },
    )
    assert r.status_code == 201
    hook_id = r.json()["id"]
    r = await client.get("/webhooks", params={"type": "marketing"})
    assert [w["id"] for w in r.json()["webhooks"]] == [hook_id]
    assert (await client.get("/webhooks")).json() == {"webhooks": []}  # default: transactional
    r = await client.put(f"/webhooks/{hook_id}", json={"events": ["contactUpdated"]})
    assert r.status_code == 204
    r = await client.get(f"/webhooks/{hook_id}")
    assert r.json()["events"] == ["contactUpdated"] and r.json()["batched"] is True
    r = await client.post(
        "/webhooks", json={"url": "https://x.example/h", "events": ["listAddition"]}
    )  # listAddition is not a transactional event
    assert r.status_code == 400
    assert (await client.delete(f"/webhooks/{hook_id}")).status_code == 204
    assert (await client.get(f"/webhooks/{hook_id}")).status_code == 404


async def test_change_listeners_get_the_api_key_name(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    seen: list[tuple[str, str, str, tuple[int, ...]]] = []

    def listener(event: ContactEvent, contact: Contact, key_name: str) -> None:
        seen.append((event.name, contact.email or "", key_name, event.list_ids))

    state.listeners.append(listener)
    await _create(client, "l@example.com", listIds=[10])
    await client.put("/contacts/l@example.com", json={"attributes": {"FIRSTNAME": "L"}})
    state.edit_contact("l@example.com", {"LASTNAME": "UI"})
    await client.delete("/contacts/l@example.com")
    assert seen == [
        ("contactCreated", "l@example.com", "connector", ()),
        ("listAddition", "l@example.com", "connector", (10,)),
        ("contactUpdated", "l@example.com", "connector", ()),
        ("contactUpdated", "l@example.com", "", ()),
        ("contactDeleted", "l@example.com", "connector", ()),
    ]


# --- CRM --------------------------------------------------------------------------------------


async def test_companies_and_deals(client: httpx.AsyncClient, state: BrevoState) -> None:
    c1 = await _create(client, "c1@example.com")
    c2 = await _create(client, "c2@example.com")
    r = await client.post("/companies", json={"name": "Acme", "linkedContactsIds": [c1]})
    assert r.status_code == 200
    company = r.json()["id"]
    assert isinstance(company, str) and len(company) == 24
    r = await client.post(
        "/crm/deals",
        json={"name": "Renewal", "attributes": {"amount": 900}, "linkedCompaniesIds": [company]},
    )
    assert r.status_code == 201
    deal = r.json()["id"]
    r = await client.get(f"/companies/{company}")
    assert r.json()["linkedDealsIds"] == [deal] and r.json()["attributes"]["name"] == "Acme"
    r = await client.patch(f"/companies/{company}", json={"linkedContactsIds": [c2]})
    assert r.json()["linkedContactsIds"] == [c2]  # PATCH replaces the list
    r = await client.patch(f"/companies/link-unlink/{company}", json={"linkContactIds": [c1]})
    assert r.status_code == 204
    assert state.crm.companies[company].linked_contacts == [c2, c1]
    r = await client.patch(f"/crm/deals/{deal}", json={"attributes": {"deal_stage": "nope"}})
    assert r.status_code == 400
    stage = state.crm.stages[2]["id"]
    r = await client.patch(f"/crm/deals/{deal}", json={"attributes": {"deal_stage": stage}})
    assert r.status_code == 204
    r = await client.patch(f"/crm/deals/link-unlink/{deal}", json={"unlinkCompanyIds": [company]})
    assert state.crm.companies[company].linked_other == []
    r = await client.get("/crm/deals")
    assert r.json()["items"][0]["attributes"]["deal_stage"] == stage
    r = await client.get("/crm/pipeline/details/all")
    assert [s["name"] for s in r.json()[0]["stages"]][:2] == ["New", "Qualified"]
    r = await client.get("/companies", params={"page": 1, "limit": 10})
    assert [x["id"] for x in r.json()["items"]] == [company]
    r = await client.post(
        "/companies/import",
        files={"file": ("companies.csv", b"name;domain\nGlobex;globex.example\n")},
        data={"mapping": json.dumps({"update_existing_records": True})},
    )
    assert r.status_code == 200 and state.processes[r.json()["processId"]].status == "completed"
    assert len(state.crm.companies) == 2
    assert (await client.delete(f"/crm/deals/{deal}")).status_code == 204
    assert (await client.delete(f"/companies/{company}")).status_code == 204
    assert (await client.get(f"/companies/{company}")).status_code == 404


# --- rate limits and faults -------------------------------------------------------------------


async def test_rate_limit_429_with_sib_headers(clock: TickClock) -> None:
    mono = Mono()
    state = BrevoState(clock=clock, monotonic=mono)
    async with _client(create_brevo_app(state)) as client:
        remaining = []
        for _ in range(10):
            r = await client.get("/contacts")
            assert r.status_code == 200
            assert r.headers["x-sib-ratelimit-limit"] == "10"
            assert r.headers["x-sib-ratelimit-reset"] == "1"
            remaining.append(int(r.headers["x-sib-ratelimit-remaining"]))
        assert remaining == list(range(9, -1, -1))
        r = await client.get("/contacts")
        assert r.status_code == 429
        assert r.json() == {
            "code": "too_many_requests",
            "message": "The expected rate limit is exceeded.",
        }
        assert r.headers["x-sib-ratelimit-remaining"] == "0" and "retry-after" not in r.headers
        # other families have their own windows: /account is in the 100/hour family
        r = await client.get("/account")
        assert r.headers["x-sib-ratelimit-limit"] == "100"
        assert r.headers["x-sib-ratelimit-reset"] == "3600"
        mono.t += 1.0
        assert (await client.get("/contacts")).status_code == 200
        mono.t += 1800
        r = await client.get("/account")
        assert r.headers["x-sib-ratelimit-remaining"] == "98"
        assert r.headers["x-sib-ratelimit-reset"] == "1799"  # first /account call 1801 s ago
    advanced = BrevoState(clock=clock, monotonic=mono, plan="advanced")
    async with _client(create_brevo_app(advanced)) as client:
        r = await client.get("/contacts")
        assert r.headers["x-sib-ratelimit-limit"] == "20"
        assert (await client.post("/smtp/email", json={})).headers[
            "x-sib-ratelimit-limit"
        ] == "2000"


async def test_faults_storm_5xx_and_gateway_html(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    state.faults.storm(30)
    r = await client.get("/contacts")
    assert r.status_code == 429 and r.json()["code"] == "too_many_requests"
    assert int(r.headers["x-sib-ratelimit-reset"]) >= 29
    state.faults.clear()
    state.faults.fail_next, state.faults.fail_status = 1, 500
    r = await client.get("/contacts")
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    state.faults.fail_next, state.faults.fail_status = 1, 502
    r = await client.get("/contacts")
    assert r.status_code == 502 and "Bad Gateway" in r.text
    assert (await client.get("/contacts")).status_code == 200
    assert [s for _, _, s in state.calls.calls] == [429, 500, 502, 200]


async def test_control_routes(app: Any, state: BrevoState) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://brevo.test"
    ) as ctl:
        r = await ctl.post("/_sandbox/seed", json={"contacts": 25, "seed": 3})
        assert r.json() == {"seeded": 25, "total": 25}
        async with _client(app) as client:
            await client.get("/contacts", params={"limit": 5})
            await client.post("/contacts", json={"email": "ctl@example.com"})
            await client.post(
                "/smtp/email",
                json={
                    "sender": {"email": "a@example.com"},
                    "to": [{"email": "b@example.com"}],
                    "subject": "s",
                    "textContent": "t",
                },
            )
        calls = (await ctl.get("/_sandbox/calls")).json()
        assert calls["count"] == 3 and calls["writes"] == 2
        assert calls["byEndpoint"]["GET /v3/contacts"] == 1
        assert (await ctl.get("/_sandbox/outbox")).json()["emails"][0]["subject"] == "s"
        r = await ctl.post(
            "/_sandbox/edit", json={"email": "ctl@example.com", "attributes": {"FIRSTNAME": "C"}}
        )
        assert r.json()["attributes"] == {"FIRSTNAME": "C"}
        r = await ctl.post("/_sandbox/faults", json={"fail_next": 2, "fail_status": 503})
        assert r.json()["fail_next"] == 2
        await ctl.post("/_sandbox/reset")
        assert state.contacts == {} and state.faults.fail_next == 0 and state.calls.calls == []


# --- the official SDK against the sandbox -----------------------------------------------------


async def test_brevo_python_sdk_against_the_sandbox(app: Any, state: BrevoState) -> None:
    state.seed_contacts(30)
    state.rate_limits = True
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), event_hooks={"response": [_check]}
    ) as http:
        sdk = AsyncBrevo(
            api_key=DEFAULT_API_KEY,
            base_url="http://brevo.test/v3",
            httpx_client=http,
            max_retries=0,
            client_id=None,
            client_secret=None,
        )
        page = await sdk.contacts.get_contacts(limit=10, offset=0, sort="asc")
        assert page.count == 30 and [c.id for c in page.contacts] == list(range(1, 11))
        created = await sdk.contacts.create_contact(
            email="sdk@example.com", attributes={"FIRSTNAME": "Sdk"}, list_ids=[10]
        )
        assert created is not None and created.id == 31
        raw = await sdk.contacts.with_raw_response.get_contacts(limit=1)
        assert raw.data.count == 31 and raw.headers["x-sib-ratelimit-limit"] == "10"
        job = await sdk.contacts.import_contacts(
            json_body=[ImportContactsRequestJsonBodyItem(email="sdk2@example.com")],
            list_ids=[11],
        )
        await state.wait_processes()
        assert state.processes[job.process_id].status == "completed"
        assert state.get("sdk2@example.com") is not None


# --- scale ------------------------------------------------------------------------------------


async def test_holds_100k_contacts_with_cheap_pages(
    client: httpx.AsyncClient, state: BrevoState
) -> None:
    state.seed_contacts(100_000)
    r = await client.get("/contacts", params={"limit": 1000, "offset": 99_000, "sort": "asc"})
    body = r.json()
    assert body["count"] == 100_000 and body["contacts"][-1]["id"] == 100_000
    sample = state.contacts[77_777]
    assert sample.email is not None
    r = await client.get(f"/contacts/{sample.email}")
    assert r.json()["id"] == 77_777
    with_sms = next(c for c in state.contacts.values() if c.sms is not None)
    r = await client.get(f"/contacts/{with_sms.sms}", params={"identifierType": "phone_id"})
    assert r.json()["id"] == with_sms.id
