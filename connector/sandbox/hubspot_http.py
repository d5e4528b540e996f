"""Shared HTTP glue of the HubSpot sandbox: error bodies, auth, limits, scopes, batch shapes.

Every CRM route goes through :func:`crm_endpoint`: API version check, bearer auth (401), rate limits
(429 with HubSpot's bodies and ``X-HubSpot-RateLimit-*`` headers; the search API's own limit has
another body and no headers), scopes (403), then the handler, whose :class:`ApiError` becomes
HubSpot's error JSON.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from connector.sandbox.hubspot_model import (
    ENGAGEMENTS,
    OBJECT_TYPES,
    ApiError,
    canonical_type,
    iso_ms,
)
from connector.sandbox.hubspot_state import HubSpotState, Token

BATCH_MAX = 100
LIST_MAX = 100
SCOPES_DOC = "https://developers.hubspot.com/scopes"
ORIGINAL_PATH = "sandbox.original_path"
DATE_VER = re.compile(r"^\d{4}-\d{2}$")
LEGACY: dict[str, frozenset[str]] = {
    "objects": frozenset({"v3"}),
    "object-assoc": frozenset({"v4"}),
    "associations": frozenset({"v4"}),
    "properties": frozenset({"v3"}),
    "owners": frozenset({"v3"}),
    "account": frozenset({"v3"}),
    "oauth": frozenset({"v1", "v3"}),
    "pipelines": frozenset({"v3"}),
    "schemas": frozenset({"v3"}),
}
# legacy prefix → canonical "/{family}/{ver}/" prefix, so one route serves both path styles
REWRITES: tuple[tuple[str, str], ...] = (
    ("/crm/v3/objects/", "/crm/objects/v3/"),
    ("/crm/v4/objects/", "/crm/objects/v4/"),
    ("/crm/v3/properties/", "/crm/properties/v3/"),
    ("/crm/v4/associations/", "/crm/associations/v4/"),
    ("/crm/v3/owners", "/crm/owners/v3"),
    ("/crm/v3/pipelines/", "/crm/pipelines/v3/"),
)


def cid() -> str:
    return str(uuid.uuid4())


def now_iso() -> str:
    return iso_ms(int(time.time() * 1000))


# ----------------------------------------------------------------------------- error bodies


def ten_secondly_body(portal_id: int) -> dict[str, Any]:
    return {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": cid(),
        "policyName": "TEN_SECONDLY_ROLLING",
        "groupName": f"publicapi:private-app-api-calls-ten-secondly:{portal_id}",
    }


def daily_body() -> dict[str, Any]:
    return {
        "status": "error",
        "message": "You have reached your daily limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": cid(),
        "policyName": "DAILY",
        "requestId": cid(),
    }


def search_limit_body() -> dict[str, Any]:
    return {
        "status": "error",
        "message": "You have reached your secondly limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": cid(),
    }


_BAD_GATEWAY = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def server_error_response(status: int) -> Response:
    """A 5xx as HubSpot's edge sends it: 502 is the gateway's HTML page, others JSON."""
    if status == 502:
        return HTMLResponse(_BAD_GATEWAY, status_code=502)
    body = {
        "status": "error",
        "message": "internal error",
        "correlationId": cid(),
        "category": "INTERNAL_ERROR",
    }
    return JSONResponse(body, status_code=status)


def error_response(e: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(e.body(cid()), status_code=e.status, headers=headers)


def not_found(message: str = "resource not found") -> ApiError:
    return ApiError(404, "OBJECT_NOT_FOUND", message)


# ------------------------------------------------------------------------------ endpoint glue


class Ctx:
    """What a handler needs: the state, the caller's token, the API version and the request."""

    def __init__(self, state: HubSpotState, token: Token, ver: str, request: Request) -> None:
        self.state = state
        self.token = token
        self.ver = ver
        self.request = request

    @property
    def enforce_required(self) -> bool:
        """Portal required-property rules apply from the 2026-09 version on (write validation)."""
        return bool(DATE_VER.match(self.ver)) and self.ver >= self.state.required_from_version

    def type_param(self, name: str = "type") -> str:
        raw = str(self.request.path_params[name])
        t = canonical_type(raw)
        if t is None:
            raise ApiError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {raw}")
        return t

    async def json(self) -> dict[str, Any]:
        raw = await self.request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(
                400, "VALIDATION_ERROR", f"Invalid input JSON on line 1, column 1: {exc}"
            ) from exc
        if not isinstance(body, dict):
            raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        return body

    def props_param(self) -> list[str] | None:
        out: list[str] = []
        for v in self.request.query_params.getlist("properties"):
            out.extend(p.strip() for p in v.split(",") if p.strip())
        return out or None

    def flag(self, name: str) -> bool:
        return self.request.query_params.get(name, "false").lower() == "true"


Handler = Callable[[Ctx], Awaitable[Response]]
Scopes = Callable[[Ctx], list[str]]


def object_scope(t: str, write: bool) -> str:
    if t == "tickets":
        return "tickets"
    if t not in OBJECT_TYPES:  # a custom object type (hubspot_schemas.define_custom_object)
        return f"crm.objects.custom.{'write' if write else 'read'}"
    base = "contacts" if t in ENGAGEMENTS else t  # engagements ride on the contacts scopes
    return f"crm.objects.{base}.{'write' if write else 'read'}"


def schema_scope(t: str, write: bool) -> str:
    if t == "tickets":
        return "tickets"
    if t not in OBJECT_TYPES:
        return f"crm.schemas.custom.{'write' if write else 'read'}"
    base = "contacts" if t in ENGAGEMENTS else t
    return f"crm.schemas.{base}.{'write' if write else 'read'}"


def obj_scopes(write: bool) -> Scopes:
    return lambda c: [object_scope(c.type_param(), write)]


def assoc_scopes(write: bool) -> Scopes:
    def f(c: Ctx) -> list[str]:
        names = ("from", "to") if "from" in c.request.path_params else ("type", "to")
        return sorted({object_scope(c.type_param(n), write) for n in names})

    return f


def authenticate(state: HubSpotState, request: Request) -> Token | ApiError:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = state.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
    if token is None:
        return ApiError(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication "
            "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
            "oauth-overview",
        )
    if token.expires_ms is not None and token.expires_ms <= state.now_ms():
        minutes = (state.now_ms() - token.expires_ms) // 60_000
        return ApiError(
            401,
            "EXPIRED_AUTHENTICATION",
            f"The OAuth token used to make this call expired {minutes} minute(s) ago.",
        )
    return token


def crm_endpoint(
    state: HubSpotState,
    family: str,
    handler: Handler,
    scopes: Scopes | None,
    *,
    search: bool = False,
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: version check, auth, rate limits (and their headers), scopes, errors."""

    async def endpoint(request: Request) -> Response:
        ver = str(request.path_params.get("ver", ""))
        if not (DATE_VER.match(ver) or ver in LEGACY[family]):
            return error_response(not_found(f"No API version {ver!r} for this path"))
        auth = authenticate(state, request)
        if isinstance(auth, ApiError):
            return error_response(auth)
        token = auth
        if search:
            decision = state.take_search()
            if not decision.allowed:
                return JSONResponse(search_limit_body(), status_code=429)
        else:
            decision = state.take_rate(token)
            if not decision.allowed:
                headers = dict(decision.headers)
                if state.retry_after_header:
                    headers["Retry-After"] = str(max(1, round(decision.retry_after + 0.5)))
                body = (
                    daily_body()
                    if decision.policy == "DAILY"
                    else ten_secondly_body(state.portal_id)
                )
                return JSONResponse(body, status_code=429, headers=headers)
        ctx = Ctx(state, token, ver, request)
        try:
            required = scopes(ctx) if scopes else []
            if any(s not in token.scopes for s in required):
                raise ApiError(
                    403,
                    "MISSING_SCOPES",
                    "This app hasn't been granted all required scopes to make this call. Read "
                    f"more about required scopes here: {SCOPES_DOC}",
                    errors=[
                        {
                            "message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": required},
                        }
                    ],
                )
            response = await handler(ctx)
        except ApiError as e:
            response = error_response(e)
        response.headers.update(decision.headers)
        return response

    return endpoint


def batch_inputs(body: dict[str, Any], maximum: int = BATCH_MAX) -> list[dict[str, Any]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise ApiError(400, "VALIDATION_ERROR", "inputs is required and must be a list of objects")
    if len(inputs) > maximum:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"Batch input size of {len(inputs)} exceeds the maximum of {maximum}",
            context={"maxInputs": [str(maximum)], "inputs": [str(len(inputs))]},
        )
    return inputs


def batch_response(
    results: list[dict[str, Any]], errors: list[dict[str, Any]], started: str, ok_status: int
) -> JSONResponse:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    body["startedAt"] = started
    body["completedAt"] = now_iso()
    return JSONResponse(body, status_code=207 if errors else ok_status)


def item_error(e: ApiError, trace: str | None, ident: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "error", "category": e.category, "message": e.message}
    if e.sub_category:
        out["subCategory"] = e.sub_category
    if trace:
        out["context"] = {"objectWriteTraceId": [trace]}
    elif ident is not None:
        out["context"] = {"ids": [ident]}
    else:
        out["context"] = {}
    out["errors"] = e.errors or []
    return out


def int_id(raw: Any, what: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "VALIDATION_ERROR", f"{what} must be a numeric id") from exc
