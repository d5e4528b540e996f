"""Brevo's official OpenAPI spec (Nov 2024), loaded once, validating httpx calls against it.

``validate(request, response)`` checks a call made to the sandbox (``…/v3/…``) as if it had
gone to ``https://api.brevo.com/v3``: the request against the operation's parameters, body and
security, the response against the documented status and schema. A status the operation does
not document (401, 429 and 5xx mostly) must still carry Brevo's ``{code, message}`` error body.

The spec file has defects that stop a strict loader or make valid traffic fail; they are
mended at load time, each one listed in :data:`ERRATA`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_schema_validator import OAS30Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = Path(__file__).resolve().parent / "specs" / "brevo_v3_openapi3_2024-11.yml"
SERVER = "https://api.brevo.com"

ERRATA = (
    "line 6902 holds a TAB (`description: \\tSuccessful operation`): replaced by a space",
    "YAML 1.1 timestamps (one is an impossible date) are kept as strings",
    "integer response codes (200:) become strings, as OpenAPI requires",
    "`content: {}` on bodiless responses (204, some 201) reads as 'a body is required': dropped",
    "`maximum: 1E+2` / `5E+1` are strings in YAML 1.1: made numbers",
    "string-typed parameters with an integer default (loyalty endpoints): default quoted",
    "postContactInfo.success/failure: oneOf of two array types matches an empty array twice; anyOf",
    "add/removeContactFromList* request schemas have no `required`, so every body matches "
    "every branch of their oneOf: each now requires its own key",
    "errorModel.code lacks `too_many_requests`, the code of Brevo's 429 body (API_NOTES §2, "
    "SDK TooManyRequestsError)",
    "getAttributes type enum lacks `multiple-choice` and `user` (SDK 5.1.0 "
    "GetAttributesResponseAttributesItemType)",
)

_ERROR_SHAPE = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}


_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _NoTimestampLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """Safe loader (libyaml when present) that leaves date-like scalars as strings."""


_NoTimestampLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mend(node: Any) -> Any:
    if isinstance(node, dict):
        out = {str(k): _mend(v) for k, v in node.items()}
        for bound in ("maximum", "minimum"):
            if isinstance(out.get(bound), str):
                out[bound] = float(out[bound])
        if out.get("type") == "string" and isinstance(out.get("default"), int):
            out["default"] = str(out["default"])
        if out.get("content") == {}:
            del out["content"]
        return out
    if isinstance(node, list):
        return [_mend(v) for v in node]
    return node


@functools.cache
def load_spec_dict() -> dict[str, Any]:
    """The spec as a dict, with :data:`ERRATA` applied (parsed once; do not mutate)."""
    text = SPEC_PATH.read_text(encoding="utf-8").replace("\t", " ")
    spec: dict[str, Any] = _mend(yaml.load(text, Loader=_NoTimestampLoader))
    schemas = spec["components"]["schemas"]
    contacts = schemas["postContactInfo"]["properties"]["contacts"]["properties"]
    for key in ("success", "failure"):
        contacts[key]["anyOf"] = contacts[key].pop("oneOf")
    for name, key in (
        ("addContactToListByEmails", "emails"),
        ("addContactToListByIDs", "ids"),
        ("addContactToListByExtIDs", "extIds"),
        ("removeContactFromListByEmails", "emails"),
        ("removeContactFromListByIDs", "ids"),
        ("removeContactFromListByExtIDs", "extIds"),
        ("removeContactFromListByAll", "all"),
    ):
        schemas[name]["required"] = [key]
    schemas["errorModel"]["properties"]["code"]["enum"].append("too_many_requests")
    attr_type = schemas["getAttributes"]["properties"]["attributes"]["items"]["properties"]
    attr_type["type"]["enum"] += ["multiple-choice", "user"]
    return spec


@functools.cache
def openapi() -> OpenAPI:
    """The spec as an openapi-core object, built (and itself validated) once per process."""
    return OpenAPI.from_dict(load_spec_dict())


class _Request:
    """httpx.Request → openapi-core's Request protocol, re-hosted on api.brevo.com."""

    def __init__(self, request: httpx.Request) -> None:
        self._request = request
        query = parse_qsl(request.url.query.decode(), keep_blank_values=True)
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(query),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )

    @property
    def host_url(self) -> str:
        return SERVER

    @property
    def path(self) -> str:
        path = self._request.url.path
        assert path.startswith("/v3/"), f"not a Brevo API path: {path}"
        return path

    @property
    def method(self) -> str:
        return self._request.method.lower()

    @property
    def body(self) -> bytes | None:
        try:
            content = self._request.content
        except httpx.RequestNotRead:  # multipart bodies are streams
            content = self._request.read()
        return content or None

    @property
    def content_type(self) -> str:
        return str(self._request.headers.get("content-type", "")).lower()


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def content_type(self) -> str:
        return str(self._response.headers.get("content-type", "")).lower()

    @property
    def headers(self) -> Headers:
        return Headers(list(self._response.headers.items()))

    @property
    def data(self) -> bytes | None:
        return self._response.content or None


def validate(
    request: httpx.Request, response: httpx.Response, *, check_request: bool = True
) -> None:
    """Raise if the call does not match the spec (``check_request=False``: response only)."""
    spec = openapi()
    req = _Request(request)
    if check_request:
        spec.validate_request(req)
    try:
        spec.validate_response(req, _Response(response))
    except ResponseNotFound:
        validate_error_body(response)


def validate_error_body(response: httpx.Response) -> None:
    """An undocumented status: a JSON ``{code, message}`` unless the gateway sent HTML."""
    assert response.status_code >= 400, f"undocumented success {response.status_code}"
    if response.headers.get("content-type", "").startswith("text/html"):
        return
    OAS30Validator(_ERROR_SHAPE).validate(json.loads(response.content))
