"""The sandboxes send webhooks as HubSpot and Brevo do: batches, signatures, auth, retries.

Each test delivers to an in-process Starlette receiver over ``httpx.ASGITransport`` (injected
as the sender's transport) and checks what arrived, recomputing HubSpot's v3 signature here
from the documented algorithm (API_NOTES_HUBSPOT §3.4) rather than with the sandbox's code.
Retry delays run on a shrunken time scale so every test is quick.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector.sandbox.brevo import DEFAULT_API_KEY, BrevoState, create_brevo_app
from connector.sandbox.hubspot import DEFAULT_TOKEN, HubSpotState, create_hubspot_app
from connector.sandbox.server import SandboxServers

HS_URL = "http://receiver.test/webhooks/hubspot?portal=1"
BREVO_URL = "http://receiver.test/webhooks/brevo"
SECRET = "sandbox-client-secret"


@dataclass
class Received:
    url: str
    headers: httpx.Headers
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A webhook endpoint: answers the scripted statuses (then 200), optionally slowly."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: deque[int] = deque()
        self.delays: deque[float] = deque()
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self.transport = httpx.ASGITransport(app=self.app)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.delays.popleft() if self.delays else self.delay
            if delay:
                await asyncio.sleep(delay)
            status = self.script.popleft() if self.script else 200
            self.received.append(
                Received(str(request.url), httpx.Headers(request.headers.raw), body, status)
            )
            return Response(status_code=status)
        finally:
            self.in_flight -= 1

    def ok(self) -> list[Received]:
        return [r for r in self.received if r.status == 200]

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for r in self.ok():
            data = r.json()
            out.extend(data if isinstance(data, list) else [data])
        return out


def expected_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot's documented v3 signature, written out independently of the sandbox."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def hubspot(receiver: Receiver) -> AsyncIterator[HubSpotState]:
    state = HubSpotState(rate_limits=False)
    state.webhook_sender.transport = receiver.transport
    state.webhook_sender.linger = 0.02
    state.webhook_target_url = HS_URL
    yield state
    await state.webhook_sender.aclose()


@pytest.fixture
async def brevo(receiver: Receiver) -> AsyncIterator[BrevoState]:
    state = BrevoState(rate_limits=False)
    state.webhook_sender.transport = receiver.transport
    state.webhook_sender.retry_scale = 0.0001  # +10 min → 60 ms
    state.webhook_batch_window = 0.05
    yield state
    await state.webhook_sender.aclose()


@pytest.fixture
async def brevo_api(brevo: BrevoState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_brevo_app(brevo))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://brevo.test/v3",
        headers={"api-key": DEFAULT_API_KEY},
    ) as client:
        yield client


# --- HubSpot ----------------------------------------------------------------------------------


async def test_hubspot_batches_of_at_most_100_signed_v3(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    ids = hubspot.seed_contacts(250)
    await hubspot.webhook_sender.drain(5)
    sizes = sorted(len(r.json()) for r in receiver.received)
    assert sizes == [50, 100, 100]
    now_ms = time.time() * 1000
    for r in receiver.received:
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-hubspot-signature-version"] == "v3"
        ts = r.headers["x-hubspot-request-timestamp"]
        assert ts.isdigit() and abs(int(ts) - now_ms) < 60_000  # epoch milliseconds
        assert r.headers["x-hubspot-signature-v3"] == expected_v3(
            SECRET, "POST", HS_URL, r.body, ts
        )
    events = receiver.events()
    assert [str(e["objectId"]) for e in events] == ids
    first = events[0]
    assert set(first) == {
        "eventId",
        "subscriptionId",
        "portalId",
        "appId",
        "occurredAt",
        "subscriptionType",
        "attemptNumber",
        "changeSource",
        "sourceId",
        "objectId",
    }
    assert first["subscriptionType"] == "contact.creation"
    assert first["portalId"] == hubspot.portal_id and first["appId"] == hubspot.app_id
    assert first["attemptNumber"] == 0 and first["changeSource"] == "IMPORT"
    assert isinstance(first["occurredAt"], int) and first["occurredAt"] > 1_600_000_000_000
    event_ids = [e["eventId"] for e in events]
    assert event_ids == sorted(event_ids) and len(set(event_ids)) == len(event_ids)
    assert len({e["subscriptionId"] for e in events}) == 1
    assert len(hubspot.webhook_sender.log.sent) == 3


async def test_hubspot_property_changes_api_vs_ui(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    hubspot.webhook_subscriptions = {"contact.propertyChange:firstname", "contact.creation"}
    cid = hubspot.put_object("contacts", {"email": "ui@example.com", "firstname": "Ann"})
    app = create_hubspot_app(hubspot)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://hubspot.test",
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    ) as api:
        r = await api.patch(
            f"/crm/v3/objects/contacts/{cid}",
            json={"properties": {"firstname": "Anna", "lastname": "Lee"}},
        )
        assert r.status_code == 200
    await hubspot.webhook_sender.drain(5)
    events = sorted(receiver.events(), key=lambda e: e["eventId"])
    assert [(e["subscriptionType"], e.get("propertyValue")) for e in events] == [
        ("contact.creation", None),
        ("contact.propertyChange", "Ann"),
        ("contact.propertyChange", "Anna"),
    ]
    ui, api_write = events[1], events[2]
    assert ui["changeSource"] == "CRM_UI" and ui["sourceId"].startswith("userId:")
    assert api_write["changeSource"] == "INTEGRATION"
    assert api_write["sourceId"] == str(hubspot.app_id)
    assert api_write["propertyName"] == "firstname" and api_write["objectId"] == int(cid)
    assert ui["subscriptionId"] == api_write["subscriptionId"] != events[0]["subscriptionId"]


async def test_hubspot_property_values_are_strings(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    hubspot.webhook_subscriptions = {"deal.propertyChange"}
    did = hubspot.put_object("deals", {"dealname": "Big", "amount": 1200})
    hubspot.put_object("deals", {"amount": ""}, did)
    await hubspot.webhook_sender.drain(5)
    values = {(e["propertyName"], e["propertyValue"]) for e in receiver.events()}
    assert ("amount", "1200") in values and ("amount", "") in values
    assert all(isinstance(v, str) for _, v in values)


async def test_hubspot_retries_with_attempt_number(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    receiver.script.extend([500, 429, 404])
    hubspot.put_object("contacts", {"email": "r@example.com"})
    await hubspot.webhook_sender.drain(5)
    assert [r.status for r in receiver.received] == [500, 429, 404, 200]
    bodies = [r.json() for r in receiver.received]
    assert [b[0]["attemptNumber"] for b in bodies] == [0, 1, 2, 3]
    assert len({b[0]["eventId"] for b in bodies}) == 1
    for r in receiver.received:  # every attempt is signed afresh
        ts = r.headers["x-hubspot-request-timestamp"]
        assert r.headers["x-hubspot-signature-v3"] == expected_v3(
            SECRET, "POST", HS_URL, r.body, ts
        )
    log = hubspot.webhook_sender.log
    assert [a.status for a in log.retried] == [500, 429, 404]
    assert [a.attempt for a in log.sent] == [3] and not log.dropped


async def test_hubspot_retries_slow_answers_and_connection_failures(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    sender = hubspot.webhook_sender
    sender.timeout = 0.1  # HubSpot: 5 s
    receiver.delays.append(0.5)
    hubspot.put_object("contacts", {"email": "slow@example.com"})
    await sender.drain(5)
    assert [a.error for a in sender.log.retried] == ["timeout"]
    assert receiver.events()[0]["attemptNumber"] == 1

    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(204)

    sender.transport = httpx.MockTransport(flaky)
    hubspot.put_object("contacts", {"email": "down@example.com"})
    await sender.drain(5)
    assert calls == 2
    assert sender.log.retried[-1].error == "connection: ConnectError"
    assert sender.log.sent[-1].status == 204


async def test_hubspot_gives_up_after_ten_retries(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    hubspot.webhook_sender.retry_scale = 1e-6
    receiver.script.extend([503] * 20)
    hubspot.put_object("contacts", {"email": "gone@example.com"})
    await hubspot.webhook_sender.drain(5)
    assert len(receiver.received) == 11  # the first try and 10 retries
    log = hubspot.webhook_sender.log
    assert len(log.retried) == 10 and len(log.dropped) == 1 and not log.sent


async def test_hubspot_at_most_10_requests_in_flight(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    receiver.delay = 0.05
    hubspot.seed_contacts(2500)  # 25 batches of 100
    await hubspot.webhook_sender.drain(10)
    assert len(receiver.received) == 25
    assert receiver.max_in_flight == 10
    assert hubspot.webhook_sender.max_in_flight_seen == 10
    assert len(receiver.events()) == 2500


async def test_hubspot_privacy_deletion_also_fires_deletion(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    hubspot.webhook_subscriptions = {"contact.privacyDeletion", "contact.deletion"}
    cid = hubspot.put_object("contacts", {"email": "gdpr@example.com"})
    assert hubspot.gdpr_delete(cid)
    await hubspot.webhook_sender.drain(5)
    pairs = [(e["subscriptionType"], e["objectId"]) for e in receiver.events()]
    assert pairs == [("contact.privacyDeletion", int(cid)), ("contact.deletion", int(cid))]


async def test_hubspot_merge_payload(hubspot: HubSpotState, receiver: Receiver) -> None:
    hubspot.webhook_subscriptions = {"contact.merge"}
    a = hubspot.put_object("contacts", {"email": "a@example.com"})
    b = hubspot.put_object("contacts", {"email": "b@example.com", "city": "Lyon"})
    st = hubspot.store("contacts")
    primary, loser = st.get(int(a)), st.get(int(b))
    assert primary is not None and loser is not None
    hubspot.merge("contacts", primary, loser)
    await hubspot.webhook_sender.drain(5)
    (event,) = receiver.events()
    assert event["subscriptionType"] == "contact.merge"
    assert event["objectId"] == event["primaryObjectId"] == event["newObjectId"] == int(a)
    assert event["mergedObjectIds"] == [int(b)]
    assert isinstance(event["numberOfPropertiesMoved"], int)


async def test_hubspot_association_change_both_ways(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    hubspot.webhook_subscriptions = {"contact.associationChange", "company.associationChange"}
    c = hubspot.put_object("contacts", {"email": "assoc@example.com"})
    co = hubspot.put_object("companies", {"name": "Acme"})
    hubspot.associate_default("contacts", int(c), "companies", int(co))
    await hubspot.webhook_sender.drain(5)
    events = receiver.events()
    kinds = {(e["subscriptionType"], e["associationType"]) for e in events}
    assert kinds == {
        ("contact.associationChange", "CONTACT_TO_COMPANY"),
        ("company.associationChange", "COMPANY_TO_CONTACT"),
    }
    forward = next(e for e in events if e["associationType"] == "CONTACT_TO_COMPANY")
    assert (forward["fromObjectId"], forward["toObjectId"]) == (int(c), int(co))
    assert forward["associationRemoved"] is False
    assert any(e["isPrimaryAssociation"] for e in events)
    receiver.received.clear()
    hubspot.disassociate("contacts", int(c), "companies", int(co))
    await hubspot.webhook_sender.drain(5)
    assert all(e["associationRemoved"] for e in receiver.events())


async def test_hubspot_v1_signature_option(hubspot: HubSpotState, receiver: Receiver) -> None:
    hubspot.webhook_signature_version = "v1"
    hubspot.put_object("contacts", {"email": "v1@example.com"})
    await hubspot.webhook_sender.drain(5)
    r = receiver.received[0]
    assert r.headers["x-hubspot-signature-version"] == "v1"
    assert r.headers["x-hubspot-signature"] == hashlib.sha256(SECRET.encode() + r.body).hexdigest()
    assert "x-hubspot-signature-v3" not in r.headers


async def test_hubspot_control_route(receiver: Receiver) -> None:
    state = HubSpotState(rate_limits=False)
    state.webhook_sender.transport = receiver.transport
    app = create_hubspot_app(state)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hubspot.test"
    ) as ctl:
        state.put_object("contacts", {"email": "before@example.com"})  # no target: not sent
        r = await ctl.post(
            "/_sandbox/webhooks",
            json={"target_url": HS_URL, "linger": 0.01, "subscriptions": ["contact.creation"]},
        )
        assert r.status_code == 200 and r.json()["target_url"] == HS_URL
        state.put_object("contacts", {"email": "after@example.com"})
        await state.webhook_sender.drain(5)
        body = (await ctl.get("/_sandbox/webhooks")).json()
        assert body["counts"]["sent_events"] == 1 and body["sent"][0]["status"] == 200
        assert body["subscriptions"] == ["contact.creation"]
        r = await ctl.post("/_sandbox/webhooks", json={"signature_version": "v9"})
        assert r.status_code == 400
        await ctl.post("/_sandbox/webhooks", json={"target_url": None})
        assert state.webhooks not in state.listeners
    assert len(receiver.events()) == 1
    await state.webhook_sender.aclose()


# --- Brevo ------------------------------------------------------------------------------------


async def _register(api: httpx.AsyncClient, url: str, events: list[str], **extra: Any) -> int:
    r = await api.post(
        "/webhooks", json={"url": url, "events": events, "type": "marketing", **extra}
    )
    assert r.status_code == 201, r.text
    hook_id: int = r.json()["id"]
    return hook_id


async def test_brevo_bearer_auth_and_api_key_name(
    brevo: BrevoState, brevo_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    hook = await _register(
        brevo_api,
        BREVO_URL,
        ["contactUpdated", "listAddition"],
        auth={"type": "bearer", "token": "s3cret"},
    )
    r = await brevo_api.post("/contacts", json={"email": "k@example.com", "listIds": [11]})
    assert r.status_code == 201
    await brevo_api.put("/contacts/k@example.com", json={"attributes": {"FIRSTNAME": "Kim"}})
    brevo.edit_contact("k@example.com", {"LASTNAME": "Ui"})
    await brevo.webhook_sender.drain(5)
    assert all(r.headers["authorization"] == "Bearer s3cret" for r in receiver.received)
    assert all(isinstance(r.json(), dict) for r in receiver.received)  # one event per POST
    events = receiver.events()
    assert [(e["event"], e["api_key_name"]) for e in events] == [
        ("list_addition", "connector"),
        ("contact_updated", "connector"),
        ("contact_updated", ""),
    ]
    added, api_edit, ui_edit = events
    assert added["list_id"] == [11] and added["id"] == hook
    assert api_edit["content"] == [{"FIRSTNAME": "Kim"}]
    assert ui_edit["content"] == [{"LASTNAME": "Ui"}]
    for e in events:
        assert e["email"] == "k@example.com"
        assert isinstance(e["ts_event"], int) and isinstance(e["ts"], int)
        assert len(e["date_event"]) == len("2026-03-01 09:00:00")


async def test_brevo_basic_auth_from_url_and_custom_headers(
    brevo: BrevoState, brevo_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    await _register(
        brevo_api,
        "http://hook:pa%40ss@receiver.test/webhooks/brevo",
        ["contactDeleted"],
        headers=[{"key": "X-Tenant", "value": "t1"}],
    )
    brevo.seed_contacts(1)
    email = next(iter(brevo.contacts.values())).email
    assert (await brevo_api.delete(f"/contacts/{email}")).status_code == 204
    await brevo.webhook_sender.drain(5)
    (r,) = receiver.received
    assert r.url == BREVO_URL
    assert r.headers["authorization"] == "Basic " + base64.b64encode(b"hook:pa@ss").decode()
    assert r.headers["x-tenant"] == "t1"
    assert r.json()["event"] == "contact_deleted" and "api_key_name" not in r.json()


async def test_brevo_drops_on_500_without_retry(brevo: BrevoState, receiver: Receiver) -> None:
    brevo.add_webhook(BREVO_URL, ["contactUpdated"], token="t")
    brevo.seed_contacts(2)
    a, b = (c.email or "" for c in brevo.contacts.values())
    receiver.script.extend([500, 400])
    brevo.edit_contact(a, {"FIRSTNAME": "X"})
    brevo.edit_contact(b, {"FIRSTNAME": "Y"})
    await brevo.webhook_sender.drain(5)
    assert sorted(r.status for r in receiver.received) == [400, 500]  # never retried
    log = brevo.webhook_sender.log
    assert len(log.dropped) == 2 and not log.retried and not log.sent
    assert log.counts["dropped_events"] == 2


async def test_brevo_retries_on_429_timeouts_and_connection_errors(
    brevo: BrevoState, receiver: Receiver
) -> None:
    brevo.add_webhook(BREVO_URL, ["contactUpdated"], token="t")
    brevo.seed_contacts(1)
    email = next(iter(brevo.contacts.values())).email or ""
    receiver.script.extend([429, 429])
    brevo.edit_contact(email, {"FIRSTNAME": "A"})
    await brevo.webhook_sender.drain(5)
    assert [r.status for r in receiver.received] == [429, 429, 200]
    assert receiver.received[0].json() == receiver.events()[0]  # the same event, retried
    sender = brevo.webhook_sender
    sender.timeout = 0.05
    receiver.delays.append(0.3)
    brevo.edit_contact(email, {"FIRSTNAME": "B"})
    await sender.drain(5)
    assert sender.log.retried[-1].error == "timeout"
    assert receiver.events()[-1]["content"] == [{"FIRSTNAME": "B"}]


async def test_brevo_gives_up_after_four_retries(brevo: BrevoState, receiver: Receiver) -> None:
    brevo.webhook_sender.retry_scale = 1e-6
    brevo.add_webhook(BREVO_URL, ["contactUpdated"], token="t")
    brevo.seed_contacts(1)
    receiver.script.extend([429] * 10)
    brevo.edit_contact(next(iter(brevo.contacts.values())).email or "", {"FIRSTNAME": "Z"})
    await brevo.webhook_sender.drain(5)
    assert len(receiver.received) == 5
    assert len(brevo.webhook_sender.log.dropped) == 1


async def test_brevo_batched_webhook_sends_arrays_of_at_most_500(
    brevo: BrevoState, receiver: Receiver
) -> None:
    brevo.add_webhook(BREVO_URL, ["contactUpdated"], token="t", batched=True)
    brevo.seed_contacts(1200)
    for c in list(brevo.contacts.values()):
        brevo.edit_contact(c.email or "", {"FIRSTNAME": "Batch"})
    await brevo.webhook_sender.drain(5)
    assert all(isinstance(r.json(), list) for r in receiver.received)
    assert sorted(len(r.json()) for r in receiver.received) == [200, 500, 500]
    assert len(receiver.events()) == 1200


async def test_brevo_simulated_campaign_events(
    brevo: BrevoState, brevo_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    await _register(
        brevo_api,
        BREVO_URL,
        ["unsubscribed", "hardBounce", "spam", "contactUpdated"],
        auth={"type": "bearer", "token": "t"},
    )
    brevo.seed_contacts(3)
    a, b, c = (x.email or "" for x in brevo.contacts.values())
    brevo.simulate_unsubscribe(a)
    brevo.simulate_hard_bounce(b)
    brevo.simulate_spam(c)
    await brevo.webhook_sender.drain(5)
    assert all(x.email_blacklisted for x in brevo.contacts.values())
    events = {e["event"]: e for e in receiver.events()}
    assert set(events) == {"unsubscribed", "hard_bounce", "spam"}  # no contact_updated
    assert events["unsubscribed"]["email"] == a and "list_id" in events["unsubscribed"]
    assert events["hard_bounce"]["reason"] and events["spam"]["reason"]
    for e in events.values():
        assert {"id", "camp_id", "date_event", "ts_event", "ts", "date_sent"} <= set(e)
    with pytest.raises(KeyError):
        brevo.simulate_spam("nobody@example.com")


async def test_brevo_control_routes_and_camel_case(
    brevo: BrevoState, brevo_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    await _register(brevo_api, BREVO_URL, ["unsubscribed"], auth={"type": "bearer", "token": "t"})
    brevo.seed_contacts(1)
    email = next(iter(brevo.contacts.values())).email
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_brevo_app(brevo)), base_url="http://brevo.test"
    ) as ctl:
        r = await ctl.post("/_sandbox/webhooks", json={"event_style": "camel"})
        assert r.status_code == 200 and len(r.json()["webhooks"]) == 1
        r = await ctl.post("/_sandbox/simulate", json={"event": "unsubscribed", "email": email})
        assert r.status_code == 200 and r.json()["emailBlacklisted"] is True
        assert (await ctl.post("/_sandbox/simulate", json={"event": "x"})).status_code == 400
        await brevo.webhook_sender.drain(5)
        body = (await ctl.get("/_sandbox/webhooks")).json()
        assert body["counts"]["sent_events"] == 1
    assert receiver.events()[0]["event"] == "unsubscribed"


# --- the sender -------------------------------------------------------------------------------


async def test_drain_waits_for_lingering_batches_and_times_out(
    hubspot: HubSpotState, receiver: Receiver
) -> None:
    sender = hubspot.webhook_sender
    sender.linger = 0.3
    hubspot.put_object("contacts", {"email": "linger@example.com"})
    assert sender.queued() > 0 and not receiver.received
    await sender.drain(5)
    assert sender.idle() and len(receiver.received) == 1
    sender.retry_scale = 1.0  # a real one-minute retry: drain cannot wait for it
    receiver.script.append(500)
    hubspot.put_object("contacts", {"email": "later@example.com"})
    with pytest.raises(TimeoutError):
        await sender.drain(0.5)
    assert sender.log.retried[-1].status == 500


async def test_sandbox_servers_point_webhooks_at(receiver: Receiver) -> None:
    async with SandboxServers(rate_limits=False) as servers:
        servers.hubspot.webhook_sender.transport = receiver.transport
        servers.brevo.webhook_sender.transport = receiver.transport
        servers.hubspot.webhook_sender.linger = 0.01
        servers.point_webhooks_at(HS_URL, BREVO_URL, "tok")
        async with httpx.AsyncClient(headers={"api-key": "sandbox-brevo-key"}) as api:
            r = await api.post(f"{servers.brevo_url}/contacts", json={"email": "s@example.com"})
            assert r.status_code == 201
            r = await api.put(
                f"{servers.brevo_url}/contacts/s@example.com",
                json={"attributes": {"FIRSTNAME": "S"}},
            )
            assert r.status_code == 204
        servers.hubspot.put_object("contacts", {"email": "s@example.com"})
        await servers.hubspot.webhook_sender.drain(5)
        await servers.brevo.webhook_sender.drain(5)
    by_path = {r.url.split("?")[0]: r for r in receiver.received}
    brevo_event = by_path[BREVO_URL].json()
    assert brevo_event["event"] == "contact_updated" and brevo_event["api_key_name"] == "connector"
    assert by_path[BREVO_URL].headers["authorization"] == "Bearer tok"
    assert "x-hubspot-signature-v3" in by_path[HS_URL.split("?")[0]].headers
