"""HTTP plumbing shared by the Brevo sandbox's route modules: bodies, queries, errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connector.sandbox.brevo_model import BrevoError, JSONDict, bad

if TYPE_CHECKING:
    from connector.sandbox.brevo_state import BrevoState

Handler = Callable[[Request], Awaitable[Response]]


def state_of(request: Request) -> BrevoState:
    state: BrevoState = request.app.state.brevo
    return state


def key_name(request: Request) -> str:
    """Name of the API key that authenticated this request (set by the gate)."""
    name: str = request.scope.get("brevo_key_name", "")
    return name


def error_response(err: BrevoError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def handles_errors(fn: Handler) -> Handler:
    """Turn a raised :class:`BrevoError` into Brevo's JSON error answer."""

    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except BrevoError as err:
            return error_response(err)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def json_ok(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def no_content() -> Response:
    return Response(status_code=204)


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise BrevoError(400, "missing_parameter", "Request body is missing")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("Input must be a valid JSON object", "bad_request") from None


async def read_object(request: Request) -> JSONDict:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad("Input must be a valid JSON object", "bad_request")
    return body


def q_int(
    request: Request, name: str, default: int, *, maximum: int | None = None, minimum: int = 0
) -> int:
    """An integer query parameter; 400 ``out_of_range`` past its documented bounds."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"{name} should be an integer") from None
    if maximum is not None and value > maximum:
        raise BrevoError(
            400,
            "out_of_range",
            "Limit exceeds max value" if name == "limit" else f"{name} exceeds max value",
        )
    if value < minimum:
        raise BrevoError(400, "out_of_range", f"{name} should be at least {minimum}")
    return value


def q_int_list(request: Request, name: str) -> list[int]:
    """``listIds=1&listIds=2`` or ``listIds=1,2``."""
    out: list[int] = []
    for raw in request.query_params.getlist(name):
        for part in raw.split(","):
            if part.strip():
                try:
                    out.append(int(part))
                except ValueError:
                    raise bad(f"{name} should be integers") from None
    return out


def q_sort(request: Request, default: str = "desc") -> str:
    sort = request.query_params.get("sort", default) or default
    if sort not in ("asc", "desc"):
        raise bad("sort should be asc or desc")
    return sort


def page(items: list[Any], offset: int, limit: int, sort: str) -> list[Any]:
    """Slice items held in ascending order as ``sort`` asks."""
    seq = items if sort == "asc" else items[::-1]
    return seq[offset : offset + limit]


async def read_multipart(request: Request) -> dict[str, bytes]:
    """Fields of a ``multipart/form-data`` body (stdlib parser; no python-multipart)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise bad("Content-Type must be multipart/form-data", "bad_request")
    raw = await request.body()
    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + raw
    )
    fields: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload
    return fields
