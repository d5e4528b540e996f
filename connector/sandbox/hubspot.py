"""HubSpot API simulator ("sandbox"): a stateful, in-memory Starlette app.

``create_hubspot_app(state)`` serves what the sync daemon uses of HubSpot's CRM API — objects
(list, read, create, update, archive, batch read/create/update/upsert/archive, search, merge,
GDPR delete), properties, owners, v4 associations, account info and OAuth — under both the
date-based versions (``/crm/objects/2026-09/contacts``) and the legacy numbered paths
(``/crm/v3/objects/contacts``, ``/crm/v4/associations/…``), with identical behaviour.

It answers as HubSpot does where a client must cope: bearer auth with 401/403 bodies, per-tier
rolling 10-second and daily limits with the ``X-HubSpot-RateLimit-*`` headers, the search API's
own 5-per-second limit (different 429 body, no headers), the 10,000-result search cap, batch
limits and 207 multi-status answers, validation errors. Faults and the call log come from
:mod:`connector.sandbox.common`; ``/_sandbox/*`` routes control it from another process. The
state lives in :class:`~connector.sandbox.hubspot_state.HubSpotState` (also ``app.state.hubspot``).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from connector.sandbox import hubspot_assoc as assoc
from connector.sandbox import hubspot_objects as objects
from connector.sandbox import hubspot_schemas as schemas
from connector.sandbox.common import FaultMiddleware
from connector.sandbox.hubspot_http import (
    DATE_VER,
    LEGACY,
    ORIGINAL_PATH,
    REWRITES,
    Handler,
    Scopes,
    assoc_scopes,
    cid,
    crm_endpoint,
    error_response,
    not_found,
    obj_scopes,
    schema_scope,
    server_error_response,
    ten_secondly_body,
)
from connector.sandbox.hubspot_model import ApiError, canonical_type
from connector.sandbox.hubspot_pipelines import list_pipelines
from connector.sandbox.hubspot_state import (
    ALL_SCOPES,
    DEFAULT_TOKEN,
    TIERS,
    ChangeListener,
    HubSpotState,
)

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_TOKEN",
    "TIERS",
    "ChangeListener",
    "HubSpotState",
    "create_hubspot_app",
]

# ------------------------------------------------------------------------------------ OAuth


def _oauth(state: HubSpotState) -> list[BaseRoute]:
    def oauth_error(status: str, message: str, code: int = 400) -> JSONResponse:
        return JSONResponse(
            {"status": status, "message": message, "correlationId": cid()}, status_code=code
        )

    async def token(request: Request) -> Response:
        ver = str(request.path_params["ver"])
        if not (DATE_VER.match(ver) or ver in LEGACY["oauth"]):
            return error_response(not_found())
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type")
        try:
            if grant == "refresh_token":
                out = state.refresh(
                    form.get("client_id", ""),
                    form.get("client_secret", ""),
                    form.get("refresh_token", ""),
                )
            elif grant == "authorization_code":
                out = state.exchange_code(
                    form.get("client_id", ""), form.get("client_secret", ""), form.get("code", "")
                )
            else:
                return oauth_error("BAD_GRANT_TYPE", f"unsupported grant_type {grant!r}")
        except ApiError as e:
            return oauth_error(e.category, e.message)
        return JSONResponse(out)

    async def access_token_info(request: Request) -> Response:
        value = str(request.path_params["token"])
        tok = state.tokens.get(value)
        if tok is None or tok.kind != "oauth":
            return oauth_error("error", "The access token was not found", 404)
        left = ((tok.expires_ms or 0) - state.now_ms()) // 1000
        if left <= 0:
            return oauth_error("error", "The access token is expired", 401)
        client = state.clients.get(tok.client_id or "")
        return JSONResponse(
            {
                "token": value,
                "user": tok.user,
                "hub_domain": "sandbox.hubspot.test",
                "scopes": sorted(tok.scopes),
                "signed_access_token": {},
                "hub_id": state.portal_id,
                "app_id": client.app_id if client else tok.app_id,
                "expires_in": left,
                "user_id": tok.user_id,
                "token_type": "access",
            }
        )

    async def refresh_token_info(request: Request) -> Response:
        value = str(request.path_params["token"])
        rt = state.refresh_tokens.get(value)
        if rt is None:
            return oauth_error("error", "The refresh token was not found", 404)
        if request.method == "DELETE":
            state.revoke(value)
            return Response(status_code=204)
        client = state.clients.get(rt.client_id)
        return JSONResponse(
            {
                "token": value,
                "user": "sandbox-admin@example.com",
                "hub_domain": "sandbox.hubspot.test",
                "scopes": sorted(rt.scopes),
                "hub_id": state.portal_id,
                "client_id": rt.client_id,
                "user_id": 9_000_001,
                "token_type": "refresh",
                "app_id": client.app_id if client else None,
            }
        )

    async def private_app_info(request: Request) -> Response:
        try:
            key = json.loads(await request.body() or b"{}").get("tokenKey", "")
        except (ValueError, AttributeError):
            key = ""
        tok = state.tokens.get(str(key))
        if tok is None or tok.kind != "static":
            return error_response(
                ApiError(401, "INVALID_AUTHENTICATION", "The token key is not a valid access token")
            )
        return JSONResponse(
            {
                "userId": tok.user_id,
                "hubId": state.portal_id,
                "appId": tok.app_id,
                "scopes": sorted(tok.scopes),
            }
        )

    return [
        Route("/oauth/{ver}/token", token, methods=["POST"]),
        Route("/oauth/v1/access-tokens/{token}", access_token_info, methods=["GET"]),
        Route("/oauth/v1/refresh-tokens/{token}", refresh_token_info, methods=["GET", "DELETE"]),
        Route("/oauth/v2/private-apps/get/access-token-info", private_app_info, methods=["POST"]),
    ]


# ---------------------------------------------------------------------------- control routes


_FAULT_KNOBS = (
    "latency",
    "error_rate",
    "timeout_rate",
    "timeout_seconds",
    "fail_next",
    "fail_status",
)


def _control(state: HubSpotState) -> list[BaseRoute]:
    async def calls(request: Request) -> Response:
        log = state.log
        body: dict[str, Any] = {
            "total": len(log.calls),
            "writes": log.writes(),
            "by_endpoint": dict(log.by_endpoint()),
        }
        if request.query_params.get("full") == "1":
            body["calls"] = [list(c) for c in log.calls]
        return JSONResponse(body)

    async def faults(request: Request) -> Response:
        try:
            knobs = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "invalid JSON"}, status_code=400)
        f = state.faults
        if knobs.get("clear"):
            f.clear()
        for k in _FAULT_KNOBS:
            if k in knobs:
                setattr(f, k, type(getattr(f, k))(knobs[k]))
        if "storm_seconds" in knobs:
            f.storm(float(knobs["storm_seconds"]))
        if "seed" in knobs:
            f._rng.seed(knobs["seed"])
        for k in (
            "index_lag_ms",
            "rate_limits",
            "rotate_refresh_tokens",
            "retry_after_header",
            "access_token_ttl",
            "api_limit_increases",
        ):
            if k in knobs:
                setattr(state, k, knobs[k])
        if "tier" in knobs:
            try:
                state.tier = knobs["tier"]
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        if "required_properties" in knobs:
            for t, names in knobs["required_properties"].items():
                state.required_properties[canonical_type(t) or t] = set(names)
        return JSONResponse(
            {
                **{k: getattr(f, k) for k in _FAULT_KNOBS},
                "storm_remaining": max(f.storm_until - time.monotonic(), 0.0),
                "tier": state.tier,
                "rate_limits": state.rate_limits,
                "index_lag_ms": state.index_lag_ms,
            }
        )

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    async def seed(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            n = int(body.get("contacts", 0))
        except (ValueError, TypeError, AttributeError):
            return JSONResponse({"error": 'body must be {"contacts": N}'}, status_code=400)
        ids = state.seed_contacts(n, seed=int(body.get("seed", 0)))
        return JSONResponse({"created": len(ids), "contacts": len(state.store("contacts"))})

    async def summary(request: Request) -> Response:
        return JSONResponse(
            {
                "objects": {t: len(s) for t, s in state.stores.items()},
                "calls": len(state.log.calls),
                "time": datetime.fromtimestamp(state.now_ms() / 1000, UTC).isoformat(),
            }
        )

    async def webhooks(request: Request) -> Response:
        """GET: the webhook configuration and delivery log. POST: change them, e.g.
        ``{"target_url": "http://127.0.0.1:8080/webhooks/hubspot"}`` (``null`` = off), and
        ``app_id``, ``client_secret``, ``subscriptions`` (event types), ``signature_version``
        (v1, v2, v3), ``batch_size``, ``linger``, ``max_in_flight``, ``timeout``,
        ``retry_scale``, ``clear_log``."""
        if request.method == "POST":
            try:
                knobs = json.loads(await request.body() or b"{}")
                if not isinstance(knobs, dict):
                    raise ValueError("not an object")
                if "target_url" in knobs:
                    state.webhook_target_url = knobs["target_url"]
                if "app_id" in knobs:
                    state.app_id = int(knobs["app_id"])
                if "client_secret" in knobs:
                    state.client_secret = str(knobs["client_secret"])
                if "subscriptions" in knobs:
                    state.webhook_subscriptions = {str(s) for s in knobs["subscriptions"]}
                if "signature_version" in knobs:
                    if knobs["signature_version"] not in ("v1", "v2", "v3"):
                        raise ValueError("signature_version must be v1, v2 or v3")
                    state.webhook_signature_version = knobs["signature_version"]
                state.webhook_sender.configure(knobs)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        raw_last = request.query_params.get("last", "")
        last = int(raw_last) if raw_last.isdigit() else 50
        return JSONResponse(
            {
                "target_url": state.webhook_target_url,
                "app_id": state.app_id,
                "portal_id": state.portal_id,
                "signature_version": state.webhook_signature_version,
                "subscriptions": sorted(state.webhook_subscriptions),
                **state.webhook_sender.snapshot(last),
            }
        )

    return [
        Route("/_sandbox/calls", calls, methods=["GET"]),
        Route("/_sandbox/webhooks", webhooks, methods=["GET", "POST"]),
        Route("/_sandbox/faults", faults, methods=["POST"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/seed", seed, methods=["POST"]),
        Route("/_sandbox/state", summary, methods=["GET"]),
    ]


# -------------------------------------------------------------------------------- the app


class _LegacyPaths:
    """Rewrites legacy numbered paths onto the date-versioned routes (``/crm/v3/objects/x``
    → ``/crm/objects/v3/x``); the call log, outside this, keeps the path as requested."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            for old, new in REWRITES:
                if path.startswith(old) or path == old.rstrip("/"):
                    rewritten = new + path[len(old) :]
                    scope = {
                        **scope,
                        "path": rewritten,
                        "raw_path": rewritten.encode(),
                        ORIGINAL_PATH: path,
                    }
                    break
        await self.app(scope, receive, send)


def _routes(state: HubSpotState) -> list[BaseRoute]:
    o = "/crm/objects/{ver}/{type}"
    a = "/crm/associations/{ver}/{from}/{to}"
    oa = "/crm/objects/{ver}/{type}/{id}/associations"
    p = "/crm/properties/{ver}/{type}"
    rd, wr = obj_scopes(False), obj_scopes(True)
    ard, awr = assoc_scopes(False), assoc_scopes(True)
    srd: Scopes = lambda c: [schema_scope(c.type_param(), False)]  # noqa: E731
    swr: Scopes = lambda c: [schema_scope(c.type_param(), True)]  # noqa: E731
    own: Scopes = lambda c: ["crm.objects.owners.read"]  # noqa: E731
    sch = schemas.schema_scopes
    table: list[tuple[str, str, str, Handler, Scopes | None]] = [
        # (method, path, family, handler, scopes); specific paths before {id}
        ("POST", f"{o}/search", "objects", objects.search, rd),
        ("POST", f"{o}/batch/read", "objects", objects.batch_read, rd),
        ("POST", f"{o}/batch/create", "objects", objects.batch_create, wr),
        ("POST", f"{o}/batch/update", "objects", objects.batch_update, wr),
        ("POST", f"{o}/batch/upsert", "objects", objects.batch_upsert, wr),
        ("POST", f"{o}/batch/archive", "objects", objects.batch_archive, wr),
        ("POST", f"{o}/merge", "objects", objects.merge, wr),
        ("POST", f"{o}/gdpr-delete", "objects", objects.gdpr_delete, wr),
        ("PUT", f"{oa}/default/{{to}}/{{to_id}}", "object-assoc", assoc.put_default, awr),
        ("PUT", f"{oa}/{{to}}/{{to_id}}", "object-assoc", assoc.put_labels, awr),
        ("DELETE", f"{oa}/{{to}}/{{to_id}}", "object-assoc", assoc.delete_one, awr),
        ("GET", f"{oa}/{{to}}", "object-assoc", assoc.list_for_object, ard),
        ("GET", o, "objects", objects.list_objects, rd),
        ("POST", o, "objects", objects.create_object, wr),
        ("GET", f"{o}/{{id}}", "objects", objects.get_object, rd),
        ("PATCH", f"{o}/{{id}}", "objects", objects.update_object, wr),
        ("DELETE", f"{o}/{{id}}", "objects", objects.archive_object, wr),
        ("POST", f"{a}/batch/read", "associations", assoc.batch_read, ard),
        ("POST", f"{a}/batch/create", "associations", assoc.batch_create, awr),
        ("POST", f"{a}/batch/archive", "associations", assoc.batch_archive, awr),
        ("POST", f"{a}/batch/associate/default", "associations", assoc.batch_default, awr),
        ("POST", f"{a}/batch/labels/archive", "associations", assoc.batch_labels_archive, awr),
        ("GET", f"{a}/labels", "associations", assoc.labels, ard),
        ("GET", p, "properties", objects.list_properties, srd),
        ("POST", p, "properties", objects.create_property, swr),
        ("GET", f"{p}/{{name}}", "properties", objects.get_property, srd),
        ("GET", "/crm/pipelines/{ver}/{type}", "pipelines", list_pipelines, rd),
        ("GET", "/crm/owners/{ver}", "owners", objects.list_owners, own),
        ("GET", "/crm/owners/{ver}/", "owners", objects.list_owners, own),
        ("GET", "/crm/owners/{ver}/{owner_id}", "owners", objects.get_owner, own),
        ("GET", "/account-info/{ver}/details", "account", assoc.account_details, None),
        ("GET", "/crm-object-schemas/{ver}/schemas", "schemas", schemas.list_schemas, sch),
        (
            "GET",
            "/crm-object-schemas/{ver}/schemas/{object_type}",
            "schemas",
            schemas.get_schema,
            sch,
        ),
        (
            "GET",
            "/account-info/{ver}/api-usage/daily/private-apps",
            "account",
            assoc.api_usage,
            None,
        ),
    ]
    routes: list[BaseRoute] = [
        Route(
            path,
            crm_endpoint(state, family, handler, scopes, search=path.endswith("/search")),
            methods=[method],
        )
        for method, path, family, handler, scopes in table
    ]
    return [*routes, *_oauth(state), *_control(state)]


def create_hubspot_app(state: HubSpotState | None = None) -> Starlette:
    """The HubSpot sandbox as an ASGI app (state at ``app.state.hubspot``)."""
    state = state or HubSpotState()

    async def route_not_found(request: Request, exc: Exception) -> Response:
        return error_response(not_found(f"No route for {request.method} {request.url.path}"))

    async def not_allowed(request: Request, exc: Exception) -> Response:
        e = ApiError(405, "VALIDATION_ERROR", f"Method {request.method} not allowed here")
        return error_response(e)

    app = Starlette(
        routes=_routes(state),
        exception_handlers={404: route_not_found, 405: not_allowed},
    )
    app.state.hubspot = state
    app.add_middleware(_LegacyPaths)
    app.add_middleware(
        FaultMiddleware,
        faults=state.faults,
        log=state.log,
        too_many=lambda: JSONResponse(ten_secondly_body(state.portal_id), status_code=429),
        server_error=server_error_response,
    )
    return app
