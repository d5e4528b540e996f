"""HubSpot request signatures (v3; v1/v2 fallback) and Brevo webhook auth: unit and over HTTP.

Expected signatures are built here the way HubSpot's docs describe them, independently of the
module: ``base64(HMAC-SHA256(secret, method + uri + body + timestamp))`` with the timestamp
header verbatim and the listed percent-encoded characters of the URI decoded. v1 and v2 are
checked against the worked examples of HubSpot's docs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest

from connector.brevo.webhooks import BrevoAuthError, check_brevo_auth
from connector.config import ServerSettings, WebhookSettings
from connector.hubspot.webhooks import HubSpotSignature, SignatureError, v3_signature
from connector.web import create_web_app

_SERVER_KEYS = frozenset(ServerSettings.model_fields)


def _split(options: dict[str, Any]) -> tuple[WebhookSettings, ServerSettings]:
    """``WebhookSettings`` and ``ServerSettings`` from one set of keyword overrides."""
    server = {k: v for k, v in options.items() if k in _SERVER_KEYS}
    hooks = {k: v for k, v in options.items() if k not in _SERVER_KEYS}
    return WebhookSettings(**hooks), ServerSettings(**server)


SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"  # the placeholder secret of HubSpot's examples
NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
URI = "https://hooks.example.com/webhooks/hubspot?portal=%3A1%2F2&who=a%40b%21%24%27%28%29%2A%2C%3B"
BODY = '[{"objectId":1,"propertyValue":"Zoë"}]'.encode()
TOKEN = "brevo-hook-secret-123"

# The table of HubSpot's v3 docs, written out here on purpose (not imported).
DOCS_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def docs_v3(method: str, uri: str, body: bytes, timestamp: str, secret: str = SECRET) -> str:
    for encoded, char in DOCS_DECODE.items():
        uri = uri.replace(encoded, char)
    source = f"{method}{uri}{body.decode('utf-8')}{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def v3_headers(
    method: str = "POST", uri: str = URI, body: bytes = BODY, ts: int | str = NOW_MS
) -> dict[str, str]:
    return {
        "X-HubSpot-Signature-v3": docs_v3(method, uri, body, str(ts)),
        "X-HubSpot-Request-Timestamp": str(ts),
    }


def reason(
    headers: dict[str, str],
    *,
    method: str = "POST",
    uri: str = URI,
    body: bytes = BODY,
    checker: HubSpotSignature | None = None,
) -> str | None:
    """The rejection reason, or None when the request verifies."""
    try:
        (checker or HubSpotSignature(SECRET)).verify(method, uri, body, headers, NOW)
    except SignatureError as exc:
        return exc.reason
    return None


# --- v3 ----------------------------------------------------------------------------------------


def test_v3_valid_with_listed_uri_characters_decoded() -> None:
    assert reason(v3_headers()) is None
    assert (
        v3_signature(SECRET, "POST", URI, BODY, str(NOW_MS))
        == v3_headers()["X-HubSpot-Signature-v3"]
    )
    # Hex digits in lower case are the same characters.
    assert reason(v3_headers(), uri=URI.replace("%3A", "%3a")) is None


def test_v3_uses_the_timestamp_string_verbatim() -> None:
    padded = "0" + str(NOW_MS)
    assert reason(v3_headers(ts=padded)) is None
    forged = {
        "X-HubSpot-Signature-v3": docs_v3("POST", URI, BODY, str(NOW_MS)),
        "X-HubSpot-Request-Timestamp": padded,
    }
    assert reason(forged) == "mismatch"


def test_v3_header_names_are_case_insensitive() -> None:
    headers = {k.upper(): v for k, v in v3_headers().items()}
    assert reason(headers) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("body", BODY.replace(b"1", b"2")),
        ("uri", URI.replace("portal", "portals")),
        ("uri", URI.replace("%3A", "%253A")),
        ("method", "PUT"),
    ],
)
def test_v3_tampered_request_is_refused(field: str, value: Any) -> None:
    assert reason(v3_headers(), **{field: value}) == "mismatch"


def test_v3_tampered_timestamp_is_refused() -> None:
    headers = v3_headers()
    headers["X-HubSpot-Request-Timestamp"] = str(NOW_MS - 1)
    assert reason(headers) == "mismatch"


def test_v3_stale_timestamp_is_refused_even_when_signed() -> None:
    assert reason(v3_headers(ts=NOW_MS - 300_000)) is None  # exactly five minutes: still fine
    assert reason(v3_headers(ts=NOW_MS - 300_001)) == "stale"
    assert reason(v3_headers(ts=NOW_MS - 86_400_000)) == "stale"


def test_v3_future_timestamp_beyond_skew_is_refused() -> None:
    assert reason(v3_headers(ts=NOW_MS + 60_000)) is None
    assert reason(v3_headers(ts=NOW_MS + 60_001)) == "future"
    strict = HubSpotSignature(SECRET, max_skew_seconds=0)
    assert reason(v3_headers(ts=NOW_MS + 1), checker=strict) == "future"


@pytest.mark.parametrize("ts", ["", "17e11", "-5", "1.5", " 1", "١٢٣", "9" * 17])
def test_v3_unreadable_timestamp_is_refused(ts: str) -> None:
    headers = {"X-HubSpot-Signature-v3": "x", "X-HubSpot-Request-Timestamp": ts}
    assert reason(headers) == "bad_timestamp"


def test_missing_signature_headers_are_refused() -> None:
    assert reason({}) == "missing"
    assert reason({"X-HubSpot-Signature-v3": v3_headers()["X-HubSpot-Signature-v3"]}) == (
        "missing_timestamp"
    )
    assert reason({"X-HubSpot-Signature": "abc"}) == "missing"  # no version header
    assert reason({"X-HubSpot-Signature": "abc", "X-HubSpot-Signature-Version": "v9"}) == (
        "missing"
    )


# --- v1 / v2 fallback --------------------------------------------------------------------------

DOCS_V1_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
    b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
)
DOCS_V1 = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
DOCS_V2_GET = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"


def test_v1_fallback_matches_the_docs_example() -> None:
    headers = {"X-HubSpot-Signature": DOCS_V1, "X-HubSpot-Signature-Version": "v1"}
    assert reason(headers, body=DOCS_V1_BODY) is None
    assert reason({**headers, "X-HubSpot-Signature": DOCS_V1.upper()}, body=DOCS_V1_BODY) is None
    assert reason(headers, body=DOCS_V1_BODY + b" ") == "mismatch"


def test_v2_fallback_matches_the_docs_example() -> None:
    headers = {"X-HubSpot-Signature": DOCS_V2_GET, "X-HubSpot-Signature-Version": "v2"}
    uri = "https://www.example.com/webhook_uri"
    assert reason(headers, method="GET", uri=uri, body=b"") is None
    assert reason(headers, method="POST", uri=uri, body=b"") == "mismatch"
    post = hashlib.sha256(f"{SECRET}POST{URI}".encode() + BODY).hexdigest()
    v2 = {"X-HubSpot-Signature": post, "X-HubSpot-Signature-Version": "v2"}
    assert reason(v2) is None
    assert reason(v2, uri=URI + "&x=1") == "mismatch"


def test_a_bad_v3_signature_is_never_retried_as_v1() -> None:
    headers = {
        "X-HubSpot-Signature": DOCS_V1,
        "X-HubSpot-Signature-Version": "v1",
        "X-HubSpot-Signature-v3": "forged",
        "X-HubSpot-Request-Timestamp": str(NOW_MS),
    }
    assert reason(headers, body=DOCS_V1_BODY) == "mismatch"


def test_legacy_signatures_can_be_switched_off() -> None:
    checker = HubSpotSignature(SECRET, accept_legacy=False)
    headers = {"X-HubSpot-Signature": DOCS_V1, "X-HubSpot-Signature-Version": "v1"}
    assert reason(headers, body=DOCS_V1_BODY, checker=checker) == "legacy_disabled"
    assert reason(v3_headers(), checker=checker) is None


def test_the_secret_is_not_in_the_repr() -> None:
    assert SECRET not in repr(HubSpotSignature(SECRET))


# --- Brevo -------------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def brevo_reason(headers: dict[str, str], token: str | None = TOKEN) -> str | None:
    try:
        check_brevo_auth(headers, token)
    except BrevoAuthError as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}",
        f"bearer   {TOKEN}",
        basic("brevo", TOKEN),
        basic("", TOKEN),
    ],
)
def test_brevo_accepts_the_token(value: str) -> None:
    assert brevo_reason({"Authorization": value}) is None
    assert brevo_reason({"authorization": value}) is None


def test_brevo_basic_auth_with_user_and_password_as_the_token() -> None:
    assert brevo_reason({"Authorization": basic("hook", "p@ss:word")}, "hook:p@ss:word") is None
    assert brevo_reason({"Authorization": basic("hook", "other")}, "hook:p@ss:word") == "mismatch"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "missing"),
        ({"Authorization": ""}, "missing"),
        ({"Authorization": "Bearer wrong-token"}, "mismatch"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "mismatch"),
        ({"Authorization": "Bearer"}, "mismatch"),
        ({"Authorization": basic("brevo", "wrong")}, "mismatch"),
        ({"Authorization": "Basic not*base64"}, "malformed"),
        ({"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}, "malformed"),
        ({"Authorization": f"Token {TOKEN}"}, "scheme"),
        ({"X-Token": TOKEN}, "missing"),
    ],
)
def test_brevo_refuses_a_wrong_or_missing_token(headers: dict[str, str], expected: str) -> None:
    assert brevo_reason(headers) == expected


def test_brevo_without_a_configured_token_refuses_everything() -> None:
    assert brevo_reason({"Authorization": "Bearer "}, None) == "not_configured"
    assert brevo_reason({"Authorization": f"Bearer {TOKEN}"}, "") == "not_configured"


# --- over HTTP ---------------------------------------------------------------------------------


def _no_database() -> Any:
    raise AssertionError("an unauthenticated or empty request must not touch the database")


async def _client(**overrides: Any) -> httpx.AsyncClient:
    secret = overrides.pop("hubspot_secret", SECRET)
    app = create_web_app(
        sessions=cast(Any, _no_database),
        hubspot_secret=secret,
        brevo_token=TOKEN,
        settings=_split(overrides)[0],
        server=_split(overrides)[1],
        clock=lambda: NOW,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with await _client() as c:
        yield c


LOCAL = "http://testserver/webhooks/hubspot"


async def test_http_v3_valid_empty_batch_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/webhooks/hubspot", content=b"[]", headers=v3_headers(uri=LOCAL, body=b"[]")
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 0, "stored": 0, "duplicates": 0}


@pytest.mark.parametrize(
    "headers",
    [
        v3_headers(uri=LOCAL, body=b"[ ]"),  # tampered body
        v3_headers(uri=LOCAL + "?a=1", body=b"[]"),  # tampered URI
        v3_headers(method="PUT", uri=LOCAL, body=b"[]"),  # tampered method
        {**v3_headers(uri=LOCAL, body=b"[]"), "X-HubSpot-Request-Timestamp": str(NOW_MS + 1)},
        v3_headers(uri=LOCAL, body=b"[]", ts=NOW_MS - 300_001),  # stale
        v3_headers(uri=LOCAL, body=b"[]", ts=NOW_MS + 3_600_000),  # future
        {},
    ],
    ids=["body", "uri", "method", "timestamp", "stale", "future", "unsigned"],
)
async def test_http_bad_signature_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.post("/webhooks/hubspot", content=b"[]", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized"}


async def test_http_v1_and_v2_only_when_configured(client: httpx.AsyncClient) -> None:
    v1 = hashlib.sha256(SECRET.encode() + b"[]").hexdigest()
    headers = {"X-HubSpot-Signature": v1, "X-HubSpot-Signature-Version": "v1"}
    r = await client.post("/webhooks/hubspot", content=b"[]", headers=headers)
    assert r.status_code == 401  # the default: v3 only


async def test_http_v1_and_v2_fallback() -> None:
    async with await _client(accept_legacy_signatures=True) as client:
        await _legacy_accepted(client)


async def _legacy_accepted(client: httpx.AsyncClient) -> None:
    v1 = hashlib.sha256(SECRET.encode() + b"[]").hexdigest()
    v2 = hashlib.sha256(f"{SECRET}POST{LOCAL}[]".encode()).hexdigest()
    for version, sig in (("v1", v1), ("v2", v2)):
        headers = {"X-HubSpot-Signature": sig, "X-HubSpot-Signature-Version": version}
        r = await client.post("/webhooks/hubspot", content=b"[]", headers=headers)
        assert r.status_code == 200, (version, r.text)


async def test_http_v3_over_the_query_string(client: httpx.AsyncClient) -> None:
    path = "/webhooks/hubspot?portal=%3A1&x=%2Fy"
    headers = v3_headers(uri="http://testserver" + path, body=b"[]")
    r = await client.post(path, content=b"[]", headers=headers)
    assert r.status_code == 200, r.text


PROXY_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com, inner"}
PUBLIC = "https://hooks.example.com/webhooks/hubspot"


async def test_http_forwarded_headers_only_when_the_proxy_is_trusted() -> None:
    headers = {**PROXY_HEADERS, **v3_headers(uri=PUBLIC, body=b"[]")}
    async with await _client() as untrusted:
        r = await untrusted.post("/webhooks/hubspot", content=b"[]", headers=headers)
        assert r.status_code == 401
    async with await _client(trusted_proxies=["127.0.0.1"]) as trusted:
        r = await trusted.post("/webhooks/hubspot", content=b"[]", headers=headers)
        assert r.status_code == 200, r.text


async def test_http_public_url_with_a_stripped_prefix() -> None:
    uri = "https://example.org/sync/webhooks/hubspot"
    async with await _client(public_url="https://example.org/sync/") as c:
        r = await c.post(
            "/webhooks/hubspot", content=b"[]", headers=v3_headers(uri=uri, body=b"[]")
        )
        assert r.status_code == 200, r.text


async def test_http_without_a_client_secret_hubspot_gets_401() -> None:
    async with await _client(hubspot_secret=None) as c:
        headers = v3_headers(uri=LOCAL, body=b"[]")
        r = await c.post("/webhooks/hubspot", content=b"[]", headers=headers)
        assert r.status_code == 401


async def test_http_brevo_token_bearer_and_basic(client: httpx.AsyncClient) -> None:
    ok = await client.post(
        "/webhooks/brevo", content=b"[]", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 200, ok.text
    basic_ok = await client.post("/webhooks/brevo", content=b"[]", auth=("brevo", TOKEN))
    assert basic_ok.status_code == 200, basic_ok.text
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": basic("brevo", "x")}):
        r = await client.post("/webhooks/brevo", content=b"[]", headers=headers)
        assert r.status_code == 401, headers


async def test_http_wrong_method_and_path(client: httpx.AsyncClient) -> None:
    assert (await client.get("/webhooks/hubspot")).status_code == 405
    assert (await client.post("/webhooks/other", content=b"[]")).status_code == 404


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        ServerSettings(public_url="hooks.example.com")
    with pytest.raises(ValueError):
        ServerSettings(trusted_proxies=["not-a-network"])
    with pytest.raises(ValueError):
        WebhookSettings(hubspot_path="/metrics")
    with pytest.raises(ValueError):
        WebhookSettings(hubspot_path="/same", brevo_path="/same")
    assert ServerSettings(public_url="https://h.example/x/").public_url == "https://h.example/x"
    assert ServerSettings(trusted_proxies="10.1.2.3").trusted_proxies == ("10.1.2.3/32",)
    assert WebhookSettings().max_age_seconds == 300
