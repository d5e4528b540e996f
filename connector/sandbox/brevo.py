"""The Brevo API v3 simulator: a stateful, in-memory Starlette app mounted at ``/v3``.

``create_brevo_app()`` behaves like Brevo where the sync daemon cares: contacts with their
paging, filters, identifiers and silently-ignored attribute writes; lists; the asynchronous
``/contacts/import``; events; transactional e-mail captured in an outbox; webhook
configuration; minimal CRM companies and deals. Every ``/v3`` call needs the ``api-key``
header, counts against its endpoint family's rolling windows (429 and ``x-sib-ratelimit-*``
headers as Brevo sends them) and passes :class:`~connector.sandbox.common.FaultMiddleware`.

Control routes outside ``/v3`` (never faulted, logged or limited) serve the demo and the
benchmarks, which run the sandbox in its own process::

    GET  /_sandbox/calls     POST /_sandbox/faults   POST /_sandbox/reset
    POST /_sandbox/seed      GET  /_sandbox/outbox   GET  /_sandbox/events
    POST /_sandbox/edit      POST /_sandbox/wait     GET|POST /_sandbox/webhooks
    POST /_sandbox/simulate

Tests reach the state as ``app.state.brevo`` (a :class:`BrevoState`).
"""

from __future__ import annotations

import math
import time
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector.sandbox import brevo_contacts, brevo_crm, brevo_messaging
from connector.sandbox.brevo_http import handles_errors, read_object, state_of
from connector.sandbox.brevo_model import (
    DEFAULT_API_KEY,
    BrevoError,
    ChangeListener,
    Contact,
    ContactEvent,
    bad,
)
from connector.sandbox.brevo_state import RATE_LIMITS, BrevoState, rate_family
from connector.sandbox.common import FaultMiddleware
from connector.sandbox.webhook_sender import ENGAGEMENT_EVENTS, SIMULATED_EVENTS

__all__ = [
    "DEFAULT_API_KEY",
    "RATE_LIMITS",
    "BrevoState",
    "ChangeListener",
    "Contact",
    "ContactEvent",
    "create_brevo_app",
    "rate_family",
]

TOO_MANY = {"code": "too_many_requests", "message": "The expected rate limit is exceeded."}
UNAUTHORIZED = {"code": "unauthorized", "message": "Key not found"}

_BAD_GATEWAY = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def _rate_headers(limit: int, remaining: int, reset: float) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-sib-ratelimit-limit", str(limit).encode()),
        (b"x-sib-ratelimit-remaining", str(remaining).encode()),
        (b"x-sib-ratelimit-reset", str(max(math.ceil(reset), 0)).encode()),
    ]


class BrevoGate:
    """ASGI middleware for ``/v3``: the ``api-key`` check, then the family's rate windows.

    Every answer carries ``x-sib-ratelimit-limit/-remaining/-reset`` (reset = whole seconds
    until the window frees a slot) for the family's tightest window; over it → 429 with the
    same headers and no ``Retry-After``.
    """

    def __init__(self, app: ASGIApp, *, state: BrevoState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (
            scope["path"] == "/v3" or scope["path"].startswith("/v3/")
        ):
            await self.app(scope, receive, send)
            return
        state = self.state
        name = state.key_name(Headers(scope=scope).get("api-key"))
        if name is None:
            await JSONResponse(UNAUTHORIZED, status_code=401)(scope, receive, send)
            return
        scope["brevo_key_name"] = name
        extra: list[tuple[bytes, bytes]] = []
        if state.rate_limits:
            allowed, extra = self._take(rate_family(scope["method"], scope["path"]))
            if not allowed:
                resp = JSONResponse(TOO_MANY, status_code=429)
                resp.raw_headers.extend(extra)
                await resp(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _take(self, family: str) -> tuple[bool, list[tuple[bytes, bytes]]]:
        now = self.state.monotonic()
        best: tuple[int, int, float] | None = None
        for window in self.state.windows[family]:  # shortest period first
            ok, remaining, reset = window.take(now)
            if not ok:
                return False, _rate_headers(window.limit, 0, reset)
            if best is None or remaining < best[1]:
                best = (window.limit, remaining, reset)
        assert best is not None
        return True, _rate_headers(*best)


def _too_many_factory(state: BrevoState) -> Any:
    def too_many() -> Response:
        """A fault-injected 429 storm, shaped like the contacts family's 429."""
        resp = JSONResponse(TOO_MANY, status_code=429)
        limit = RATE_LIMITS["contacts"][0][0] * (2 if state.plan == "advanced" else 1)
        reset = max(state.faults.storm_until - time.monotonic(), 1.0)
        resp.raw_headers.extend(_rate_headers(limit, 0, reset))
        return resp

    return too_many


def _server_error(status: int) -> Response:
    """5xx as Brevo's API answers them; a 502 comes from the gateway as HTML."""
    if status == 502:
        return HTMLResponse(_BAD_GATEWAY, status_code=502)
    message = {
        503: "Service temporarily unavailable",
        504: "Gateway timeout",
    }.get(status, "Internal server error")
    return JSONResponse({"code": "internal_error", "message": message}, status_code=status)


async def _not_found(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        body = {"code": "method_not_allowed", "message": "Method not allowed"}
        return JSONResponse(body, status_code=405)
    return JSONResponse({"code": "document_not_found", "message": "Invalid route"}, 404)


async def _crash(request: Request, exc: Exception) -> Response:
    return JSONResponse({"code": "internal_error", "message": "Internal server error"}, 500)


# --- control routes ---------------------------------------------------------------------------


async def ctl_calls(request: Request) -> Response:
    log = state_of(request).calls
    calls = [{"method": m, "path": p, "status": s} for m, p, s in list(log.calls)]
    return JSONResponse(
        {
            "count": len(calls),
            "writes": log.writes(),
            "byEndpoint": dict(log.by_endpoint()),
            "calls": calls,
        }
    )


@handles_errors
async def ctl_faults(request: Request) -> Response:
    """Set fault knobs: latency, error_rate, timeout_rate, timeout_seconds, fail_next,
    fail_status, storm_seconds; ``{"clear": true}`` clears them all first."""
    f = state_of(request).faults
    body = await read_object(request)
    if body.get("clear"):
        f.clear()
    for key in ("latency", "error_rate", "timeout_rate", "timeout_seconds"):
        if key in body:
            setattr(f, key, float(body[key]))
    for key in ("fail_next", "fail_status"):
        if key in body:
            setattr(f, key, int(body[key]))
    if "storm_seconds" in body:
        f.storm(float(body["storm_seconds"]))
    return JSONResponse(
        {
            "latency": f.latency,
            "error_rate": f.error_rate,
            "timeout_rate": f.timeout_rate,
            "timeout_seconds": f.timeout_seconds,
            "fail_next": f.fail_next,
            "fail_status": f.fail_status,
            "storm_remaining": max(f.storm_until - time.monotonic(), 0.0),
        }
    )


async def ctl_reset(request: Request) -> Response:
    state_of(request).reset()
    return JSONResponse({"ok": True})


@handles_errors
async def ctl_seed(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    n = body.get("contacts", 0)
    seed = body.get("seed", 0)
    if not isinstance(n, int) or not isinstance(seed, int) or n < 0:
        raise bad("contacts and seed should be non-negative integers")
    state.seed_contacts(n, seed=seed)
    return JSONResponse({"seeded": n, "total": len(state.contacts)})


async def ctl_outbox(request: Request) -> Response:
    return JSONResponse({"emails": [e.to_json() for e in state_of(request).outbox]})


async def ctl_events(request: Request) -> Response:
    state = state_of(request)
    return JSONResponse(
        {
            "events": [
                {
                    "event_name": e.event_name,
                    "identifiers": e.identifiers,
                    "contact_id": e.contact_id,
                    "event_date": e.event_date,
                    "event_properties": e.event_properties,
                    "contact_properties": e.contact_properties,
                    "api_key_name": e.api_key_name,
                }
                for e in state.events
            ]
        }
    )


@handles_errors
async def ctl_edit(request: Request) -> Response:
    """A UI edit: ``{"email", "attributes", "listIds"?, "unlinkListIds"?}``."""
    state = state_of(request)
    body = await read_object(request)
    try:
        c = state.edit_contact(
            str(body.get("email", "")),
            body.get("attributes") or {},
            list_ids=body.get("listIds") or (),
            unlink_list_ids=body.get("unlinkListIds") or (),
            email_blacklisted=body.get("emailBlacklisted"),
        )
    except KeyError:
        raise BrevoError(404, "document_not_found", "Contact does not exist") from None
    return JSONResponse(state.contact_json(c))


@handles_errors
async def ctl_webhooks(request: Request) -> Response:
    """GET: the registered webhooks and the delivery log. POST: knobs ``batch_window``,
    ``event_style`` (snake, camel), ``batch_size``, ``linger``, ``max_in_flight``,
    ``timeout``, ``retry_scale``, ``clear_log``."""
    state = state_of(request)
    if request.method == "POST":
        body = await read_object(request)
        try:
            if "batch_window" in body:
                state.webhook_batch_window = float(body["batch_window"])
            if "event_style" in body:
                if body["event_style"] not in ("snake", "camel"):
                    raise ValueError("event_style should be snake or camel")
                state.webhook_event_style = body["event_style"]
            state.webhook_sender.configure(body)
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
    return JSONResponse(
        {
            "webhooks": [brevo_messaging.webhook_json(state, w) for w in state.webhooks.values()],
            "batch_window": state.webhook_batch_window,
            "event_style": state.webhook_event_style,
            **state.webhook_sender.snapshot(),
        }
    )


@handles_errors
async def ctl_simulate(request: Request) -> Response:
    """``{"event": "unsubscribed" | "hardBounce" | "spam" | "delivered" | "opened" | "click",
    "email"}``: a campaign event."""
    state = state_of(request)
    body = await read_object(request)
    event = body.get("event")
    if event not in SIMULATED_EVENTS | ENGAGEMENT_EVENTS:
        names = ", ".join(sorted(SIMULATED_EVENTS | ENGAGEMENT_EVENTS))
        raise bad(f"event should be one of {names}")
    hooks = state.webhook_events
    email = str(body.get("email", ""))
    try:
        c = (
            hooks.engagement(email, str(event))
            if event in ENGAGEMENT_EVENTS
            else hooks.simulate(email, str(event))
        )
    except KeyError:
        raise BrevoError(404, "document_not_found", "Contact does not exist") from None
    return JSONResponse(state.contact_json(c))


async def ctl_wait(request: Request) -> Response:
    """Wait for queued imports to complete."""
    await state_of(request).wait_processes()
    return JSONResponse({"ok": True})


CONTROL_ROUTES = [
    Route("/_sandbox/calls", ctl_calls, methods=["GET"]),
    Route("/_sandbox/faults", ctl_faults, methods=["POST"]),
    Route("/_sandbox/reset", ctl_reset, methods=["POST"]),
    Route("/_sandbox/seed", ctl_seed, methods=["POST"]),
    Route("/_sandbox/outbox", ctl_outbox, methods=["GET"]),
    Route("/_sandbox/events", ctl_events, methods=["GET"]),
    Route("/_sandbox/edit", ctl_edit, methods=["POST"]),
    Route("/_sandbox/wait", ctl_wait, methods=["POST"]),
    Route("/_sandbox/webhooks", ctl_webhooks, methods=["GET", "POST"]),
    Route("/_sandbox/simulate", ctl_simulate, methods=["POST"]),
]


def create_brevo_app(state: BrevoState | None = None) -> Starlette:
    """The Brevo sandbox as an ASGI app; its state is ``app.state.brevo``."""
    state = BrevoState() if state is None else state
    api = brevo_contacts.ROUTES + brevo_messaging.ROUTES + brevo_crm.ROUTES
    app = Starlette(
        routes=[Mount("/v3", routes=api), *CONTROL_ROUTES],
        middleware=[
            Middleware(
                FaultMiddleware,
                faults=state.faults,
                log=state.calls,
                too_many=_too_many_factory(state),
                server_error=_server_error,
            ),
            Middleware(BrevoGate, state=state),
        ],
        exception_handlers={404: _not_found, 405: _not_found, Exception: _crash},
    )
    app.state.brevo = state
    return app
