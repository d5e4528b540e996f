"""The welcome e-mail: the template, the sanitiser, and the LLM path replayed from cassettes.

The LLM cassettes (tests/cassettes/onboarding_llm_*.yaml) were recorded once against
:func:`fake_llm_app` below — an OpenAI-compatible chat-completions server run on loopback — and
are replayed with ``record_mode="none"``, against a base URL on which nothing listens: a request
the cassette does not hold fails instead of reaching a network. To record them again, delete
them and run ``ONBOARDING_RECORD_CASSETTES=1 pytest tests/test_onboarding_compose.py``.
A timeout cannot be put in a cassette, so that case runs against the fake, live on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import vcr
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector.errors import ConfigError
from connector.onboarding.calendar import BookedCall
from connector.onboarding.compose import (
    WelcomeContext,
    compose_welcome,
    describe_call,
    parse_llm_answer,
)
from connector.onboarding.owners import OwnerInfo
from connector.onboarding.sanitize import sanitize_html
from connector.onboarding.settings import OnboardingSettings

CASSETTES = Path(__file__).parent / "cassettes"
RECORD = os.environ.get("ONBOARDING_RECORD_CASSETTES") == "1"
API_KEY = "sk-test-0123456789"
LINK = "https://meet.example.test/onboarding?room=kari&x=1"
CALL = BookedCall(
    "google",
    "abc123",
    datetime(2030, 6, 4, 8, 30, tzinfo=UTC),
    datetime(2030, 6, 4, 9, 30, tzinfo=UTC),
    LINK,
)
OWNER = OwnerInfo("101", "alice.martin@example.test", "Alice", "Martin")


def settings(**email: Any) -> OnboardingSettings:
    return OnboardingSettings(
        sender={"email": "success@example.test", "name": "Ada Lovelace"},
        company={"name": "Example Ltd", "description": "We make examples & more."},
        owners={"owner_ids": ["101"]},
        calendar={"timezone": "Europe/Oslo"},
        email=email,
    )


def context(**kw: Any) -> WelcomeContext:
    base: dict[str, Any] = {
        "contact": {"firstname": "Kari", "lastname": "Nordmann", "city": "Bergen", "phone": "1"},
        "email": "kari@customer.test",
        "first_name": "Kari",
        "last_name": "Nordmann",
        "owner": OWNER,
        "call": CALL,
        "timezone": "Europe/Oslo",
    }
    base.update(kw)
    return WelcomeContext(**base)


async def compose(s: OnboardingSettings, ctx: WelcomeContext | None = None) -> Any:
    return await compose_welcome(s, ctx or context(), base_dir=Path(__file__).parents[1])


# --- the template --------------------------------------------------------------------------------


async def test_the_default_template_says_everything_it_should() -> None:
    mail = await compose(settings())
    assert mail.source == "template" and mail.fallback_reason is None
    assert mail.subject == "Welcome to Example Ltd, Kari"
    h = mail.html
    assert "Welcome, Kari!" in h
    assert "We make examples &amp; more." in h  # autoescaped
    assert "Alice Martin will be your contact person" in h
    assert 'href="mailto:alice.martin@example.test"' in h
    assert "Tuesday 4 June 2030" in h and "10:30–11:30 CEST (Europe/Oslo)" in h
    assert 'href="https://meet.example.test/onboarding?room=kari&amp;x=1"' in h
    assert "reply to this e-mail" in h.lower()
    assert "<strong>Ada Lovelace</strong>" in h
    assert "<title>Welcome to Example Ltd, Kari</title>" in h


async def test_contact_data_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    mail = await compose(settings(), context(first_name=evil))
    assert "<script>" not in mail.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert mail.subject == f"Welcome to Example Ltd, {evil}"  # a subject is plain text


async def test_no_first_name_no_owner_no_call() -> None:
    mail = await compose(settings(), context(first_name=" ", owner=None, call=None))
    assert mail.subject == "Welcome to Example Ltd"
    assert "Welcome, there!" in mail.html
    assert "contact person" not in mail.html and "onboarding call" not in mail.html


async def test_template_errors_name_the_key_and_the_variable(tmp_path: Path) -> None:
    (tmp_path / "t.html.j2").write_text("<p>Hi {{ first_nmae }}</p>")
    with pytest.raises(ConfigError, match="'first_nmae' is undefined") as err:
        await compose_welcome(settings(template="t.html.j2"), context(), base_dir=tmp_path)
    assert err.value.key == "onboarding.email.template"
    (tmp_path / "s.html.j2").write_text("<p>\n{% if %}</p>")
    with pytest.raises(ConfigError, match="line 2"):
        await compose_welcome(settings(template="s.html.j2"), context(), base_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        await compose_welcome(settings(template="none.j2"), context(), base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"\{nickname\}|nickname") as err:
        await compose(settings(subject="Hi {nickname}"))
    assert err.value.key == "onboarding.email.subject"


async def test_the_default_template_is_found_from_any_config_directory(tmp_path: Path) -> None:
    mail = await compose_welcome(settings(), context(), base_dir=tmp_path)
    assert "Welcome, Kari!" in mail.html


def test_describe_call_in_the_readers_zone() -> None:
    ny = describe_call(CALL, "America/New_York")
    assert (ny["date"], ny["time"]) == ("Tuesday 4 June 2030", "04:30–05:30 EDT")
    jan = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)
    winter = BookedCall("x", "1", jan, jan.replace(hour=9), None)
    assert describe_call(winter, "Europe/Oslo")["time"] == "09:00–10:00 CET"


# --- the sanitiser -------------------------------------------------------------------------------


def test_sanitiser_keeps_formatting_and_drops_active_content() -> None:
    dirty = (
        '<html><body><p style="color:red" onclick="steal()">Hi <b>Kari</b></p>'
        "<script>alert(1)</script><style>p{}</style>"
        '<form action="https://evil.test"><input name="pw"><button>Go</button></form>'
        '<a href="javascript:alert(1)">x</a><a href="https://ok.test" onmouseover="y()">ok</a>'
        '<iframe src="https://evil.test"></iframe><img src="https://track.test/p.gif">'
        '<div style="background:url(https://track.test)">z</div><ul><li>one<li>two</ul>'
        "<p>unclosed <em>em</body></html>"
    )
    clean, removed = sanitize_html(dirty)
    assert clean == (
        '<p style="color:red">Hi <b>Kari</b></p><a>x</a><a href="https://ok.test">ok</a>'
        "<div>z</div><ul><li>one<li>two</li></li></ul><p>unclosed <em>em</em></p>"
    )
    for what in ("<script>", "onclick=", "<form>", "<iframe>", "<img>", "style="):
        assert what in removed


html_bits = st.sampled_from(
    [
        "<script>",
        "</script>",
        "<p>",
        "</p>",
        '<a href="javascript:x">',
        '<a href="https://a.test">',
        "</a>",
        '<b onclick="x">',
        "<form>",
        "</form>",
        "<svg onload=x>",
        "<scr",
        "ipt>",
        "on",
        "error=",
        '"',
        "'",
        "<",
        ">",
        "=",
        "text",
        "<!--",
        "-->",
        "<style>",
        "<iframe/src=x>",
        "&lt;",
    ]
)


@given(st.lists(html_bits, max_size=30).map("".join))
def test_sanitised_html_never_has_scripts_handlers_or_forms(dirty: str) -> None:
    clean, _ = sanitize_html(dirty)
    lowered = clean.lower()
    assert "<script" not in lowered and "<form" not in lowered and "<iframe" not in lowered
    assert "<svg" not in lowered and "<style" not in lowered
    for tag in re.findall(r"<[^>]*>", lowered):  # text is escaped: every "<" opens a real tag
        assert not re.search(r"\son[a-z]*\s*=", tag), tag
        assert "javascript:" not in tag
    assert sanitize_html(clean)[0] == clean  # stable: nothing left to remove


# --- the LLM: an OpenAI-compatible fake, recorded once into cassettes ----------------------------


def _completion(content: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-sandbox-1",
        "object": "chat.completion",
        "created": 1_900_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 300, "completion_tokens": 120, "total_tokens": 420},
    }


def fake_llm_app(release: asyncio.Event | None = None) -> Starlette:
    """Chat completions: the model name picks the behaviour (as a test fixture, not an LLM)."""

    async def completions(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        body = await request.json()
        model = body["model"]
        assert body["response_format"]["type"] == "json_schema"
        facts = json.loads(body["messages"][1]["content"].split("\n", 1)[1])
        call, who = facts["onboarding_call"], facts["customer"]["first_name"]
        if model == "slow" and release is not None:
            await release.wait()
        if model == "broken":
            return JSONResponse({"error": {"message": "internal error"}}, status_code=500)
        if model == "bad-json":
            return JSONResponse(
                _completion('{"subject": "Welcome", "html": "<p>unterminated', model)
            )
        html = (
            f"<p>Hi {who},</p><p>Welcome to {facts['company']['name']}! "
            f"{facts['contact_person']['name']} will be your contact person.</p>"
            f"<p>Your onboarding call: {call['date']}, {call['time']} ({call['zone']}). "
            f'<a href="{call["link"]}">Join the video call</a>. '
            "Reply to this e-mail if you need another time.</p>"
            f"<p>Best regards,<br>{facts['sender_name']}</p>"
        )
        if model == "unsafe":
            html += '<script>fetch("https://evil.test")</script><p onclick="x()">P.S.</p>'
        subject = f"{who}, your onboarding call with {facts['company']['name']} is booked"
        return JSONResponse(_completion(json.dumps({"subject": subject, "html": html}), model))

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn has no started event
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        await task
        sock.close()


MY_VCR = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    # not the port (random when recording); the body, so a changed request needs a new cassette
    match_on=["method", "scheme", "host", "path", "query", "body"],
    filter_headers=["authorization"],
    decode_compressed_response=True,
)


@contextmanager
def cassette(name: str) -> Iterator[Any]:
    path = CASSETTES / f"{name}.yaml"
    if not path.exists() and not RECORD:
        pytest.fail(f"{path} is missing: record it with ONBOARDING_RECORD_CASSETTES=1")
    with MY_VCR.use_cassette(path.name, record_mode="once" if RECORD else "none") as cas:
        yield cas


@asynccontextmanager
async def llm_base_url() -> AsyncIterator[str]:
    """The live fake while recording; a loopback port nothing listens on while replaying."""
    if RECORD:
        async with serve(fake_llm_app()) as url:
            yield url
    else:
        yield "http://127.0.0.1:9/v1"


def llm_settings(base_url: str, model: str, **kw: Any) -> OnboardingSettings:
    return settings(llm={"base_url": base_url, "model": model, "api_key": API_KEY, **kw})


async def test_llm_writes_the_email() -> None:
    async with llm_base_url() as url:
        with cassette("onboarding_llm_success") as cas:
            mail = await compose(llm_settings(url, "good"))
    assert mail.source == "llm" and mail.fallback_reason is None
    assert mail.subject == "Kari, your onboarding call with Example Ltd is booked"
    assert "Tuesday 4 June 2030, 10:30–11:30 CEST (Europe/Oslo)" in mail.html
    assert 'href="https://meet.example.test/onboarding?room=kari&amp;x=1"' in mail.html
    assert mail.html.startswith("<!DOCTYPE html>")
    sent = json.loads(cas.requests[0].body)  # matched on the body: this is what was sent now
    assert sent["model"] == "good"
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["subject", "html"]
    facts = sent["messages"][1]["content"]
    assert '"city": "Bergen"' in facts and "phone" not in facts  # only the listed fields
    assert "authorization" not in {k.lower() for k in cas.requests[0].headers}  # not stored


async def test_llm_html_is_sanitised() -> None:
    async with llm_base_url() as url:
        with cassette("onboarding_llm_unsafe_html"):
            mail = await compose(llm_settings(url, "unsafe"))
    assert mail.source == "llm"
    assert "<script" not in mail.html and "onclick" not in mail.html and "<p>P.S.</p>" in mail.html


async def test_invalid_json_falls_back_to_the_template() -> None:
    async with llm_base_url() as url:
        with cassette("onboarding_llm_invalid_json"):
            mail = await compose(llm_settings(url, "bad-json"))
    assert mail.source == "template"
    assert mail.fallback_reason == "invalid output: the content is not JSON"
    assert "Welcome, Kari!" in mail.html and mail.subject == "Welcome to Example Ltd, Kari"


async def test_http_500_falls_back_to_the_template() -> None:
    async with llm_base_url() as url:
        with cassette("onboarding_llm_http_500"):
            mail = await compose(llm_settings(url, "broken"))
    assert mail.source == "template"
    assert mail.fallback_reason == "POST /chat/completions answered HTTP 500"


async def test_timeout_falls_back_to_the_template() -> None:
    release = asyncio.Event()
    async with serve(fake_llm_app(release)) as url:
        try:
            mail = await compose(llm_settings(url, "slow", timeout_seconds=0.2))
        finally:
            release.set()
    assert mail.source == "template"
    assert mail.fallback_reason is not None and mail.fallback_reason.startswith("timeout")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (json.dumps({"subject": "", "html": f'<a href="{LINK}">x</a>'}), "subject"),
        (json.dumps({"subject": "A\nB", "html": f'<a href="{LINK}">x</a>'}), "subject"),
        (json.dumps({"subject": "Hi", "html": "<script>only</script>"}), "empty"),
        (json.dumps({"subject": "Hi", "html": "<p>no link</p>"}), "video link"),
        (json.dumps({"subject": "Hi", "html": "<p>x</p>", "extra": 1}), "does not match"),
        (json.dumps(["subject", "html"]), "does not match"),
    ],
)
def test_invalid_answers_are_refused(content: str, reason: str) -> None:
    raw = json.dumps(_completion(content, "m")).encode()
    with pytest.raises(Exception, match=reason):
        parse_llm_answer(raw, call=describe_call(CALL, "Europe/Oslo"))
