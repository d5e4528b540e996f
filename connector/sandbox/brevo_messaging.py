"""Brevo sandbox routes for the account, events, transactional e-mail and webhooks."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector.sandbox.brevo_http import (
    handles_errors,
    json_ok,
    key_name,
    no_content,
    q_sort,
    read_json,
    read_object,
    state_of,
)
from connector.sandbox.brevo_model import (
    EVENT_NAME_RE,
    MAX_WEBHOOKS,
    WEBHOOK_EVENTS,
    BrevoError,
    Contact,
    JSONDict,
    SentEmail,
    StoredEvent,
    Webhook,
    bad,
    normalize_email,
    not_found,
    parse_datetime,
)
from connector.sandbox.brevo_state import BrevoState

# --- account ----------------------------------------------------------------------------------


@handles_errors
async def get_account(request: Request) -> Response:
    """``GET /account``: the connection test's call."""
    state = state_of(request)
    plan: JSONDict = {"type": "free", "creditsType": "sendLimit", "credits": 300.0}
    if state.plan == "advanced":
        plan = {
            "type": "subscription",
            "creditsType": "sendLimit",
            "credits": 150000.0,
            "startDate": "2026-01-01",
            "endDate": "2026-12-31",
        }
    return json_ok(
        {
            "email": state.account_email,
            "firstName": "Sandra",
            "lastName": "Box",
            "companyName": "Sandbox Company",
            "address": {
                "street": "1 Loopback Street",
                "city": "Localhost",
                "zipCode": "12700",
                "country": "France",
            },
            "plan": [plan],
            "relay": {
                "enabled": True,
                "data": {
                    "userName": state.account_email,
                    "relay": "smtp-relay.brevo.com",
                    "port": 587,
                },
            },
            "marketingAutomation": {"key": "sandbox-ma-key", "enabled": True},
        }
    )


# --- events -----------------------------------------------------------------------------------

_IDENTIFIERS = ("contact_id", "email_id", "ext_id", "phone_id", "whatsapp_id", "landline_number_id")


def _resolve(state: BrevoState, ids: JSONDict) -> Contact | None:
    for kind in _IDENTIFIERS:
        if kind in ids:
            try:
                return state.find(str(ids[kind]), kind)
            except BrevoError:
                continue
    return None


def record_event(state: BrevoState, body: object, api_key_name: str) -> StoredEvent:
    """Validate one ``POST /events`` body, apply its ``contact_properties``, store it."""
    if not isinstance(body, dict):
        raise bad("Input must be a valid JSON object", "bad_request")
    name = body.get("event_name")
    if name is None:
        raise BrevoError(400, "missing_parameter", "event_name is required")
    if not isinstance(name, str) or not EVENT_NAME_RE.match(name):
        raise bad("event_name must be at most 255 characters of A-Z, a-z, 0-9, - and _")
    ids = body.get("identifiers")
    if not isinstance(ids, dict) or not any(ids.get(k) not in (None, "") for k in _IDENTIFIERS):
        raise BrevoError(400, "missing_parameter", "identifiers must name the contact")
    unknown = set(ids) - set(_IDENTIFIERS)
    if unknown:
        raise bad(f"identifiers: unknown key {sorted(unknown)[0]}")
    date = body.get("event_date")
    if date is not None:
        if not isinstance(date, str):
            raise bad("event_date should be an ISO 8601 date-time")
        parse_datetime(date, "event_date")
    props = body.get("event_properties") or {}
    contact_props = body.get("contact_properties") or {}
    if not isinstance(props, dict) or not isinstance(contact_props, dict):
        raise bad("event_properties and contact_properties should be objects")
    if len(json.dumps(props)) > 50 * 1024:
        raise bad("event_properties is limited to 50KB")
    contact = _resolve(state, ids)
    if contact is None and state.events_create_contacts and ids.get("email_id"):
        p = state.make_patch(contact_props, empty_clears=False)
        p.email = normalize_email(ids["email_id"])
        contact = state.insert(p, api_key_name)
    elif contact is not None and contact_props:
        p = state.make_patch(contact_props, empty_clears=False)
        if not state.conflicts(contact, p):
            state.apply(contact, p, api_key_name)
    event = StoredEvent(
        event_name=name,
        identifiers=dict(ids),
        contact_id=None if contact is None else contact.id,
        event_date=date or state.fmt(state.clock()),
        event_properties=props,
        contact_properties=contact_props,
        api_key_name=api_key_name,
        received_at=state.clock(),
    )
    state.events.append(event)
    return event


@handles_errors
async def create_event(request: Request) -> Response:
    """``POST /events`` → 204."""
    state = state_of(request)
    record_event(state, await read_object(request), key_name(request))
    return no_content()


@handles_errors
async def create_events_batch(request: Request) -> Response:
    """``POST /events/batch`` ``{events:[…]}`` → 202 (``partiallyQueued`` on some errors)."""
    state = state_of(request)
    body: Any = await read_json(request)
    items = body.get("events") if isinstance(body, dict) else body
    if not isinstance(items, list) or not items:
        raise BrevoError(400, "missing_parameter", "events should be a non-empty array")
    errors: list[JSONDict] = []
    for i, item in enumerate(items):
        try:
            record_event(state, item, key_name(request))
        except BrevoError as e:
            errors.append({"eventIndex": [i], "message": e.message})
    if len(errors) == len(items):
        raise bad(f"No event could be queued: {errors[0]['message']}")
    if errors:
        return json_ok(
            {
                "status": "partiallyQueued",
                "total_events": len(items),
                "successful_events": len(items) - len(errors),
                "failed_events": len(errors),
                "errors": errors,
            },
            202,
        )
    return json_ok({"message": "Batch accepted", "count": len(items)}, 202)


# --- transactional e-mail ---------------------------------------------------------------------


def _recipients(value: object, name: str, *, required: bool) -> list[JSONDict]:
    if value is None:
        if required:
            raise BrevoError(400, "missing_parameter", f"{name} is missing")
        return []
    if not isinstance(value, list) or (required and not value):
        raise bad(f"{name} should be a non-empty array")
    out = []
    for r in value:
        if not isinstance(r, dict) or "email" not in r:
            raise BrevoError(400, "missing_parameter", f"email is missing in {name}")
        try:
            normalize_email(r["email"])
        except BrevoError:
            raise bad(f"email is not valid in {name}") from None
        out.append(r)
    return out


@handles_errors
async def send_email(request: Request) -> Response:
    """``POST /smtp/email`` → 201 ``{messageId}``; captured in the outbox, never sent.

    A second request with the same ``headers.IdempotencyKey`` is 400 ``duplicate_request``.
    """
    state = state_of(request)
    body = await read_object(request)
    headers = body.get("headers") or {}
    if not isinstance(headers, dict):
        raise bad("headers should be an object")
    idem = next((str(v) for k, v in headers.items() if k.lower() == "idempotencykey"), None)
    if idem is not None and idem in state.idempotency_keys:
        raise BrevoError(400, "duplicate_request", "Request already processed")
    template = body.get("templateId")
    if template is not None and (not isinstance(template, int) or isinstance(template, bool)):
        raise bad("templateId should be an integer")
    versions = body.get("messageVersions")
    sender = body.get("sender")
    if sender is None:
        if template is None:
            raise BrevoError(400, "missing_parameter", "sender is missing")
    elif not isinstance(sender, dict) or not ("email" in sender or "id" in sender):
        raise BrevoError(400, "missing_parameter", "sender email or id is missing")
    elif "email" in sender:
        try:
            normalize_email(sender["email"])
        except BrevoError:
            raise bad("sender email is not valid") from None
    if versions is None:
        _recipients(body.get("to"), "to", required=True)
    elif not isinstance(versions, list) or not versions:
        raise bad("messageVersions should be a non-empty array")
    else:
        for v in versions:
            _recipients(v.get("to") if isinstance(v, dict) else None, "to", required=True)
    _recipients(body.get("cc"), "cc", required=False)
    _recipients(body.get("bcc"), "bcc", required=False)
    if body.get("replyTo") is not None:
        _recipients([body["replyTo"]], "replyTo", required=False)
    if template is None:
        if not isinstance(body.get("subject"), str) or not body["subject"].strip():
            raise BrevoError(400, "missing_parameter", "subject is missing")
        if not (body.get("htmlContent") or body.get("textContent")):
            raise BrevoError(400, "missing_parameter", "htmlContent or textContent is missing")
    tags = body.get("tags")
    if tags is not None and (
        not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
    ):
        raise bad("tags should be an array of strings")
    now = state.clock()
    count = len(versions) if isinstance(versions, list) else 1
    ids = []
    for _ in range(count):
        ids.append(f"<{now:%Y%m%d%H%M%S}.{len(state.outbox) + 1:012d}@smtp-relay.mailin.fr>")
        state.outbox.append(SentEmail(ids[-1], dict(body), key_name(request), now))
    if idem is not None:
        state.idempotency_keys[idem] = ids[0]
    result: JSONDict = {"messageIds": ids} if versions is not None else {"messageId": ids[0]}
    return json_ok(result, 202 if body.get("scheduledAt") else 201)


# --- webhooks ---------------------------------------------------------------------------------


def webhook_json(state: BrevoState, w: Webhook) -> JSONDict:
    out: JSONDict = {
        "id": w.id,
        "url": w.url,
        "description": w.description,
        "events": list(w.events),
        "type": w.type,
        "batched": w.batched,
        "channel": w.channel,
        "createdAt": state.fmt(w.created_at),
        "modifiedAt": state.fmt(w.modified_at),
    }
    if w.auth is not None:
        out["auth"] = w.auth
    if w.headers is not None:
        out["headers"] = w.headers
    if w.domain is not None:
        out["domain"] = w.domain
    return out


def _webhook_fields(body: JSONDict, type_: str, *, partial: bool) -> JSONDict:
    out: JSONDict = {}
    url = body.get("url")
    if url is not None or not partial:
        if url is None:
            raise BrevoError(400, "missing_parameter", "url is missing")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise bad("url is not valid")
        out["url"] = url
    events = body.get("events")
    if events is not None or (not partial and type_ != "inbound"):
        if not isinstance(events, list) or not events:
            raise BrevoError(400, "missing_parameter", "events is missing")
        wrong = [e for e in events if e not in WEBHOOK_EVENTS[type_]]
        if wrong:
            raise bad(f"events not valid for a {type_} webhook: {', '.join(map(str, wrong))}")
        out["events"] = list(dict.fromkeys(events))
    for key, kind in (("description", str), ("batched", bool), ("domain", str)):
        if key in body and body[key] is not None:
            if not isinstance(body[key], kind):
                raise bad(f"{key} is not valid")
            out[key] = body[key]
    auth = body.get("auth")
    if auth is not None:
        if not isinstance(auth, dict) or auth.get("type") not in ("bearer", "basic"):
            raise bad("auth should be {type: bearer, token}")
        out["auth"] = dict(auth)
    headers = body.get("headers")
    if headers is not None:
        if not isinstance(headers, list) or not all(
            isinstance(h, dict) and isinstance(h.get("key"), str) for h in headers
        ):
            raise bad("headers should be an array of {key, value}")
        out["headers"] = [dict(h) for h in headers]
    return out


@handles_errors
async def get_webhooks(request: Request) -> Response:
    state = state_of(request)
    type_ = request.query_params.get("type", "transactional")
    if type_ not in WEBHOOK_EVENTS:
        raise bad("type should be marketing, transactional or inbound")
    hooks = [w for w in state.webhooks.values() if w.type == type_]
    if q_sort(request) == "desc":
        hooks.reverse()
    return json_ok({"webhooks": [webhook_json(state, w) for w in hooks]})


@handles_errors
async def create_webhook(request: Request) -> Response:
    """``POST /webhooks`` → 201 ``{id}``; marketing events are then delivered to it."""
    state = state_of(request)
    body = await read_object(request)
    type_ = body.get("type") or "transactional"
    if type_ not in WEBHOOK_EVENTS:
        raise bad("type should be transactional, marketing or inbound")
    channel = body.get("channel") or "email"
    if channel not in ("email", "sms"):
        raise bad("channel should be email or sms")
    fields = _webhook_fields(body, type_, partial=False)
    if sum(1 for w in state.webhooks.values() if w.type != "inbound") >= MAX_WEBHOOKS:
        raise bad(f"You can create at most {MAX_WEBHOOKS} webhooks")
    now = state.clock()
    hook = Webhook(
        id=state.next_webhook_id,
        url=fields["url"],
        type=type_,
        events=fields.get("events", ["inboundEmailProcessed"]),
        description=fields.get("description", ""),
        batched=fields.get("batched", False),
        auth=fields.get("auth"),
        headers=fields.get("headers"),
        channel=channel,
        domain=fields.get("domain"),
        created_at=now,
        modified_at=now,
    )
    state.webhooks[hook.id] = hook
    state.next_webhook_id += 1
    state.webhook_events.listen()
    return json_ok({"id": hook.id}, 201)


def _hook(request: Request) -> Webhook:
    state = state_of(request)
    raw = request.path_params["webhook_id"]
    hook = state.webhooks.get(int(raw)) if raw.isdigit() else None
    if hook is None:
        raise not_found("Webhook not found")
    return hook


@handles_errors
async def get_webhook(request: Request) -> Response:
    return json_ok(webhook_json(state_of(request), _hook(request)))


@handles_errors
async def update_webhook(request: Request) -> Response:
    state = state_of(request)
    hook = _hook(request)
    fields = _webhook_fields(await read_object(request), hook.type, partial=True)
    for key, value in fields.items():
        setattr(hook, key, value)
    hook.modified_at = state.clock()
    return no_content()


@handles_errors
async def delete_webhook(request: Request) -> Response:
    state = state_of(request)
    del state.webhooks[_hook(request).id]
    return no_content()


ROUTES = [
    Route("/account", get_account, methods=["GET"]),
    Route("/events", create_event, methods=["POST"]),
    Route("/events/batch", create_events_batch, methods=["POST"]),
    Route("/smtp/email", send_email, methods=["POST"]),
    Route("/webhooks", get_webhooks, methods=["GET"]),
    Route("/webhooks", create_webhook, methods=["POST"]),
    Route("/webhooks/{webhook_id}", get_webhook, methods=["GET"]),
    Route("/webhooks/{webhook_id}", update_webhook, methods=["PUT"]),
    Route("/webhooks/{webhook_id}", delete_webhook, methods=["DELETE"]),
]
