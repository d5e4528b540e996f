"""The web app's operational side: the source allow-list, ``/healthz`` and ``/metrics``.

- Client address resolution (unit and property tests): the socket peer, or behind a trusted
  proxy the right-most untrusted ``X-Forwarded-For`` hop; a spoofed header from anyone else
  changes nothing.
- The allow-list over ASGI (``httpx.ASGITransport`` sets the peer address): 403 before the
  body is read, nothing stored, counted as ``ip_not_allowed``.
- ``/healthz``: the pure judgement (ok / starting / stale / disabled) and the endpoint on a
  real SQLite and PostgreSQL store.
- ``/metrics``: parsed with ``prometheus_client.parser`` after a real sync cycle of the daemon
  against the sandboxes; API calls and 429s against the sandboxes' own call logs; the daily
  budget from HubSpot's headers; store gauges while SQLite's write lock is held elsewhere.
- ``connector status`` / ``webhooks status`` name the dead inbox events.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from daemon_env import cli_env
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from store_fixtures import (  # noqa: F401 - fixtures
    fixture_db_url,
    fixture_engine,
    fixture_migrated_url,
    fixture_pg_server,
    fixture_pg_url,
    fixture_sessions,
    fixture_sqlite_url,
)
from sync_env import FakeTime, sync_env

from connector.config import HubSpotSettings, ServerSettings, WebhookSettings, load_config
from connector.daemon import Daemon
from connector.hubspot.client import HubSpotClient
from connector.hubspot.webhooks import v3_signature
from connector.metrics import Metrics
from connector.ratelimit import hubspot_limiters
from connector.runtime import Runtime
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.store import db, deadletters, inbox, runs
from connector.store.inbox import InboxInput
from connector.web import (
    assess_pull,
    assess_side,
    client_address,
    create_web_app,
    networks,
    parse_address,
)

SECRET = "hubspot-client-secret-ops"
TOKEN = "brevo-webhook-token-ops"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
BREVO_NETS = ("1.179.112.0/20", "172.246.240.0/20")
PROXIES = networks(["10.0.0.0/8", "192.168.1.1/32"])


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) → value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all((k, x) in ls for k, x in labels.items())
    )


# --- client address --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7:5123 ", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:1.179.112.9", "1.179.112.9"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("1.2.3", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    got = parse_address(text)
    assert (None if got is None else str(got)) == expected


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_headers() -> None:
    assert client_address("203.0.113.7", ["1.179.112.9"], ()) == ip("203.0.113.7")


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert client_address("203.0.113.7", ["1.179.112.9"], PROXIES) == ip("203.0.113.7")


def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() -> None:
    # the client claimed 1.179.112.9 itself (left-most); our proxies saw 198.51.100.4
    hops = ["1.179.112.9, 198.51.100.4, 10.1.2.3"]
    assert client_address("192.168.1.1", hops, PROXIES) == ip("198.51.100.4")
    # several headers are one list, in order
    assert client_address("10.0.0.1", ["1.179.112.9", "198.51.100.4"], PROXIES) == ip(
        "198.51.100.4"
    )


def test_forwarded_for_edge_cases() -> None:
    assert client_address("10.0.0.1", [], PROXIES) == ip("10.0.0.1")  # proxy's own request
    assert client_address("10.0.0.1", ["10.0.0.9, 10.0.0.8"], PROXIES) == ip("10.0.0.9")
    assert client_address("10.0.0.1", ["198.51.100.4:6000"], PROXIES) == ip("198.51.100.4")
    # a hop our proxy wrote that we cannot read: the client is unknown, not the hop left of it
    assert client_address("10.0.0.1", ["1.179.112.9, unknown"], PROXIES) is None
    assert client_address(None, ["1.179.112.9"], PROXIES) is None
    assert client_address("::ffff:10.0.0.1", ["1.179.112.9"], PROXIES) == ip("1.179.112.9")


_ipv4 = st.ip_addresses(v=4).map(str)


@given(peer=_ipv4, hops=st.lists(_ipv4, max_size=5))
def test_property_only_trusted_peers_forward(peer: str, hops: list[str]) -> None:
    got = client_address(peer, [", ".join(hops)] if hops else [], PROXIES)
    if not any(ip(peer) in n for n in PROXIES):
        assert got == ip(peer)
    else:
        untrusted = [h for h in hops if not any(ip(h) in n for n in PROXIES)]
        if untrusted:
            assert got == ip(untrusted[-1])  # right-most untrusted: never one further left
        else:
            assert got == ip(([peer, *hops])[1] if hops else peer)


# --- the allow-list over ASGI ----------------------------------------------------------------


@asynccontextmanager
async def ops_app(
    sessions: async_sessionmaker[AsyncSession],
    *,
    peer: str = "127.0.0.1",
    clock: Any = lambda: NOW,
    **options: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    server_keys = set(ServerSettings.model_fields)
    server = ServerSettings(**{k: v for k, v in options.items() if k in server_keys})
    app_keys = {"objects", "enabled_sides", "started_at", "metrics"}
    app_opts = {k: v for k, v in options.items() if k in app_keys}
    hooks = WebhookSettings(**{k: v for k, v in options.items() if k not in server_keys | app_keys})
    app = create_web_app(
        sessions=sessions,
        hubspot_secret=SECRET,
        brevo_token=TOKEN,
        settings=hooks,
        server=server,
        clock=clock,
        **app_opts,
    )
    transport = httpx.ASGITransport(app=app, client=(peer, 40123))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def brevo_body(i: int = 0) -> bytes:
    event = {"event": "unsubscribed", "email": f"u{i}@example.com", "id": 7, "ts_event": 1 + i}
    return json.dumps(event).encode()


BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def inbox_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        return int(await s.scalar(sa.text("SELECT count(*) FROM inbox")) or 0)


@pytest.fixture
async def lite(sqlite_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A migrated SQLite store (the allow-list does not depend on the database)."""
    db.upgrade(sqlite_url)
    engine = db.create_engine(sqlite_url)
    yield db.session_factory(engine)
    await engine.dispose()


async def test_brevo_from_its_published_networks_is_accepted(
    lite: async_sessionmaker[AsyncSession],
) -> None:
    async with ops_app(lite, peer="1.179.112.9", allowed_ips={"brevo": BREVO_NETS}) as c:
        r = await c.post("/webhooks/brevo", content=brevo_body(), headers=BEARER)
    assert r.status_code == 200, r.text
    assert await inbox_count(lite) == 1


async def test_outside_the_list_is_403_before_auth_and_body_nothing_stored_and_counted(
    lite: async_sessionmaker[AsyncSession],
) -> None:
    opts: dict[str, Any] = {"allowed_ips": {"brevo": BREVO_NETS}, "max_body_bytes": 2048}
    async with ops_app(lite, peer="203.0.113.7", **opts) as c:
        r = await c.post("/webhooks/brevo", content=brevo_body(), headers=BEARER)
        assert r.status_code == 403 and r.json() == {"error": "forbidden"}
        # neither the (missing) token nor the (oversized) body is looked at
        r = await c.post("/webhooks/brevo", content=b"x" * 10_000)
        assert r.status_code == 403
        # HubSpot has no list here: anyone (the signature still decides)
        r = await c.post("/webhooks/hubspot", content=b"[]")
        assert r.status_code == 401
        samples = scrape((await c.get("/metrics")).text)
    assert await inbox_count(lite) == 0
    rejected = "connector_webhook_requests_rejected_total"
    assert value(samples, rejected, source="brevo", reason="ip_not_allowed") == 2
    assert value(samples, "connector_webhook_events_received_total", source="brevo") is None


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    lite: async_sessionmaker[AsyncSession],
) -> None:
    forwarded = {**BEARER, "X-Forwarded-For": "1.179.112.9"}
    opts: dict[str, Any] = {"allowed_ips": {"brevo": BREVO_NETS}, "trusted_proxies": ["10.0.0.0/8"]}
    async with ops_app(lite, peer="10.0.0.2", **opts) as c:  # our proxy
        r = await c.post("/webhooks/brevo", content=brevo_body(1), headers=forwarded)
        assert r.status_code == 200, r.text
        spoofed = {**BEARER, "X-Forwarded-For": "1.179.112.9, 203.0.113.7"}
        r = await c.post("/webhooks/brevo", content=brevo_body(2), headers=spoofed)
        assert r.status_code == 403  # the proxy saw 203.0.113.7; the rest is its claim
    async with ops_app(lite, peer="203.0.113.7", **opts) as c:  # anyone else: header ignored
        r = await c.post("/webhooks/brevo", content=brevo_body(3), headers=forwarded)
        assert r.status_code == 403
    assert await inbox_count(lite) == 1


async def test_hubspot_allow_list_lets_a_signed_request_through(
    lite: async_sessionmaker[AsyncSession],
) -> None:
    event = {
        "objectId": 5,
        "eventId": 9,
        "subscriptionId": 1,
        "portalId": 1,
        "appId": 1,
        "occurredAt": 1_790_000_000_000,
        "subscriptionType": "contact.creation",
        "attemptNumber": 0,
    }
    body = json.dumps([event]).encode()
    ts = str(int(NOW.timestamp() * 1000))
    url = "http://testserver/webhooks/hubspot"
    headers = {
        "X-HubSpot-Signature-v3": v3_signature(SECRET, "POST", url, body, ts),
        "X-HubSpot-Request-Timestamp": ts,
        "Content-Type": "application/json",
    }
    opts: dict[str, Any] = {"allowed_ips": {"hubspot": ["198.51.100.0/24", "2001:db8::/32"]}}
    async with ops_app(lite, peer="2001:db8::7", **opts) as c:
        r = await c.post("/webhooks/hubspot", content=body, headers=headers)
        assert r.status_code == 200, r.text
    async with ops_app(lite, peer="198.51.101.1", **opts) as c:
        r = await c.post("/webhooks/hubspot", content=body, headers=headers)
        assert r.status_code == 403


# --- /healthz: the judgement -----------------------------------------------------------------

STALE = 900.0


def test_a_recent_pull_is_ok_and_an_old_one_stale_once_the_start_window_is_over() -> None:
    start = NOW - timedelta(hours=2)
    ok = assess_pull(NOW - timedelta(seconds=60), now=NOW, started_at=start, stale_after=STALE)
    assert (ok.status, ok.age_seconds) == ("ok", 60.0)
    old = assess_pull(NOW - timedelta(seconds=901), now=NOW, started_at=start, stale_after=STALE)
    assert (old.status, old.age_seconds) == ("stale", 901.0)
    never = assess_pull(None, now=NOW, started_at=start, stale_after=STALE)
    assert (never.status, never.age_seconds) == ("stale", None)


def test_a_daemon_that_just_started_is_not_stale_yet() -> None:
    start = NOW - timedelta(seconds=300)
    never = assess_pull(None, now=NOW, started_at=start, stale_after=STALE)
    assert never.status == "starting"
    # it was down two days: the age says so, but it has its window to pull first
    old = assess_pull(NOW - timedelta(days=2), now=NOW, started_at=start, stale_after=STALE)
    assert (old.status, old.age_seconds) == ("starting", 172_800.0)
    late = assess_pull(None, now=NOW, started_at=NOW - timedelta(seconds=901), stale_after=STALE)
    assert late.status == "stale"


def test_a_side_is_its_worst_object_and_a_disabled_side_is_never_stale() -> None:
    start = NOW - timedelta(hours=1)
    pulls = {
        ("hubspot", "contacts"): NOW - timedelta(seconds=10),
        ("hubspot", "companies"): NOW - timedelta(seconds=2000),
        ("brevo", "contacts"): NOW - timedelta(seconds=5000),
    }
    kw: dict[str, Any] = {"last_pulls": pulls, "now": NOW, "started_at": start}
    hs = assess_side(
        "hubspot", enabled=True, objects=["contacts", "companies"], stale_after=STALE, **kw
    )
    assert (hs.status, hs.age_seconds) == ("stale", 2000.0)
    assert hs.objects["contacts"].status == "ok"
    br = assess_side("brevo", enabled=False, objects=["contacts"], stale_after=STALE, **kw)
    assert (br.status, br.age_seconds) == ("disabled", 5000.0)
    # objects None: whatever the runs show
    guessed = assess_side("hubspot", enabled=True, objects=None, stale_after=3000, **kw)
    assert set(guessed.objects) == {"contacts", "companies"} and guessed.status == "ok"


# --- /healthz and /metrics on a real store ---------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def record_pull(
    sessions: async_sessionmaker[AsyncSession], system: str, started: datetime, status: str = "ok"
) -> None:
    async with sessions() as s, s.begin():
        run_id = await runs.start_run(s, "pull", system, "contacts", started)  # type: ignore[arg-type]
        await runs.finish_run(s, run_id, status, {}, None, started + timedelta(seconds=3))  # type: ignore[arg-type]


async def seed_inbox(sessions: async_sessionmaker[AsyncSession]) -> None:
    """3 open events (one of them retried), 1 dead, 1 done; and 2 open dead letters."""
    items = [
        InboxInput("hubspot", f"k{i}", "contacts", str(i), "contact.creation") for i in range(5)
    ]
    async with sessions() as s, s.begin():
        await inbox.enqueue(s, items, now=NOW)
    async with sessions() as s, s.begin():
        claimed = await inbox.claim(s, worker="w", limit=3, lease=timedelta(minutes=5), now=NOW)
    first, second, third = (c.id for c in claimed)
    async with sessions() as s, s.begin():
        kw: dict[str, Any] = {"now": NOW, "backoff": lambda n: timedelta(seconds=n)}
        assert await inbox.fail(s, first, "boom", max_attempts=1, **kw) == "dead"
        assert await inbox.fail(s, second, "boom", max_attempts=5, **kw) == "retry"
        await inbox.complete(s, [third], now=NOW)
        for n in range(2):
            await deadletters.add(
                s,
                system="brevo",
                object_type="contacts",
                object_id=str(n),
                identity_key=None,
                operation="update",
                payload={},
                error="refused",
                attempts=3,
                now=NOW,
            )


async def test_healthz_reports_ages_inbox_and_turns_503_when_a_side_is_stale(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = Clock(NOW)
    await record_pull(sessions, "hubspot", NOW - timedelta(seconds=30))
    await record_pull(sessions, "brevo", NOW - timedelta(seconds=200))
    await record_pull(sessions, "brevo", NOW - timedelta(seconds=100), status="failed")
    await seed_inbox(sessions)
    start = NOW - timedelta(hours=1)
    opts: dict[str, Any] = {"objects": ["contacts"], "started_at": start}
    async with ops_app(sessions, clock=clock, stale_after_seconds=600, **opts) as c:
        r = await c.get("/healthz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ok" and body["database"] == "up"
        assert body["sides"]["hubspot"]["last_pull_age_seconds"] == 30.0
        # a failed pull is not a successful one: the age counts from the last ok pull
        assert body["sides"]["brevo"]["last_pull_age_seconds"] == 200.0
        contacts = body["sides"]["brevo"]["objects"]["contacts"]
        assert contacts["last_pull_at"] == (NOW - timedelta(seconds=200)).isoformat()
        assert body["inbox"] == {"depth": 3, "dead": 1}
        assert body["dead_letters_open"] == 2

        clock.now = NOW + timedelta(seconds=450)  # Brevo's last pull is now 650 s old
        r = await c.get("/healthz")
        assert r.status_code == 503
        assert r.json()["status"] == "stale"
        assert r.json()["sides"]["brevo"]["status"] == "stale"
        assert r.json()["sides"]["hubspot"]["status"] == "ok"
    async with ops_app(sessions, clock=clock, stale_after_seconds=600, **opts,
                       enabled_sides=["hubspot"]) as c:  # fmt: skip
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json()["sides"]["brevo"]["status"] == "disabled"


async def test_metrics_read_the_store_at_scrape_time(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = Clock(NOW)
    await record_pull(sessions, "hubspot", NOW - timedelta(seconds=30))
    await seed_inbox(sessions)
    async with ops_app(sessions, clock=clock) as c:
        samples = scrape((await c.get("/metrics")).text)
        assert value(samples, "connector_store_up") == 1
        assert value(samples, "connector_inbox_depth") == 3
        assert value(samples, "connector_inbox_dead_events") == 1
        assert value(samples, "connector_dead_letters_open") == 2
        lag = "connector_sync_lag_seconds"
        assert value(samples, lag, side="hubspot", object_type="contacts") == 30.0
        assert value(samples, lag, side="brevo", object_type="contacts") is None  # never
        stamp = "connector_sync_last_pull_timestamp_seconds"
        assert (
            value(samples, stamp, side="hubspot", object_type="contacts")
            == (NOW - timedelta(seconds=30)).timestamp()
        )

        await record_pull(sessions, "hubspot", NOW - timedelta(seconds=5))
        clock.now = NOW + timedelta(seconds=10)
        samples = scrape((await c.get("/metrics")).text)
        assert value(samples, lag, side="hubspot", object_type="contacts") == 15.0


async def test_metrics_without_a_database_still_answer_with_store_up_0(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path}/no/such/dir/state.db")
    try:
        async with ops_app(db.session_factory(engine)) as c:
            r = await c.get("/metrics")
            assert r.status_code == 200
            samples = scrape(r.text)
            assert value(samples, "connector_store_up") == 0
            assert value(samples, "connector_inbox_depth") is None  # not shown stale
            assert (await c.get("/healthz")).status_code == 503
    finally:
        await engine.dispose()


async def test_a_scrape_on_sqlite_needs_no_write_lock(
    lite: async_sessionmaker[AsyncSession],
) -> None:
    """The daemon's transactions begin IMMEDIATE (the write lock); the scrape's read must not
    wait for it, or a scrape during a long write would time out, and a scrape holding it would
    hold up the intake."""
    async with lite() as writer, writer.begin():
        await writer.execute(sa.text("DELETE FROM inbox WHERE id < 0"))  # holds the write lock
        async with ops_app(lite, db_timeout_seconds=1.0) as c:
            samples = scrape((await c.get("/metrics")).text)
    assert value(samples, "connector_store_up") == 1
    assert value(samples, "connector_inbox_depth") == 0


# --- API calls, 429s and the daily budget against the sandboxes ------------------------------


async def test_api_calls_and_429s_match_what_the_sandboxes_answered(tmp_path: Path) -> None:
    metrics = Metrics()
    async with sync_env(tmp_path) as env:
        env.hubspot.attach_metrics(metrics.api)
        env.brevo.attach_metrics(metrics.api)
        for i in range(3):
            env.hs_create(email=f"storm{i}@example.com", firstname=f"S{i}")
        env.storm(20.0, brevo=False)  # HubSpot's backoff would outlast a shared storm
        await env.cycle()
        env.hs_create(email="storm9@example.com", firstname="S9")
        env.storm(20.0, hubspot=False)
        await env.cycle()
        hs_log, br_log = env.hs_state.log.calls, env.br_state.calls.calls
    samples = scrape(generate_latest(metrics.registry).decode())
    hs_429 = sum(1 for _, _, status in hs_log if status == 429)
    br_429 = sum(1 for _, _, status in br_log if status == 429)
    assert hs_429 > 0 and br_429 > 0  # the storm was felt on both sides
    assert value(samples, "connector_api_rate_limited_total", api="hubspot") == hs_429
    assert value(samples, "connector_api_rate_limited_total", api="brevo") == br_429
    assert total(samples, "connector_api_calls_total", api="hubspot") == len(hs_log)
    assert total(samples, "connector_api_calls_total", api="brevo") == len(br_log)
    assert value(samples, "connector_api_calls_total", api="hubspot", status="429") == hs_429


def budget(metrics: Metrics) -> tuple[float | None, float | None, float | None]:
    samples = scrape(generate_latest(metrics.registry).decode())
    return (
        value(samples, "connector_api_daily_budget_limit", api="hubspot"),
        value(samples, "connector_api_daily_budget_used", api="hubspot"),
        value(samples, "connector_api_daily_budget_remaining", api="hubspot"),
    )


async def test_daily_budget_comes_from_hubspots_headers_else_from_the_limiter() -> None:
    state = HubSpotState(rate_limits=True)  # professional tier: 625,000 a day
    state.add_token("budget-token")
    state.seed_contacts(3)
    metrics = Metrics()
    client = HubSpotClient(
        HubSpotSettings(base_url="http://hubspot.test", access_token="budget-token"),
        transport=httpx.ASGITransport(app=create_hubspot_app(state)),
    )
    async with client as hs:
        assert budget(metrics) == (None, None, None)  # nothing attached: nothing known
        hs.attach_metrics(metrics.api)
        assert budget(metrics) == (625_000, 0, 625_000)  # the tier's cap, from the limiter
        for _ in range(3):
            await hs.list_page("contacts", ["email"])
    used, daily = state.daily_usage()
    assert used == 3
    assert budget(metrics) == (daily, used, daily - used)


def test_budget_falls_back_to_the_limiters_daily_window() -> None:
    fake = FakeTime()
    metrics = Metrics()
    limiters = hubspot_limiters("starter", clock=fake.clock)
    metrics.api.track_daily("hubspot", limiters["general"])
    for _ in range(4):
        limiters["general"].windows[1].record(fake.clock())
    assert budget(metrics) == (250_000, 4, 249_996)
    fake.now += 86_400 + 1_000  # a day later the window is empty again
    assert budget(metrics) == (250_000, 0, 250_000)
    # once HubSpot has said, its figures win (the account's use, not only this process's)
    metrics.api.observe_daily("hubspot", 250_000, 1_000)
    assert budget(metrics) == (250_000, 249_000, 1_000)


# --- the daemon: one registry, scraped after a real sync --------------------------------------


async def test_metrics_and_health_after_a_daemon_sync_against_the_sandboxes(
    tmp_path: Path,
) -> None:
    async with cli_env(tmp_path, hubspot=12, brevo=6) as env:
        with env.config.open("a", encoding="utf-8") as f:
            f.write(f'webhooks:\n  brevo_token: "{TOKEN}"\n')
        settings = load_config(env.config)
        assert settings.webhooks is not None
        async with Runtime.open(settings) as rt:
            daemon = Daemon(rt)
            await daemon.prepare()
            results = await daemon.run_once()
            # every enabled object type (the sandbox config enables them all) pulled
            assert [r.status for r in results] == ["ok"] * sum(
                j.kind == "pull" for j in daemon.jobs()
            )
            pulled = daemon.pulled_objects()
            assert pulled["brevo"] == ["contacts", "companies", "deals"]  # roll-ups: HubSpot only
            app = daemon.web_app(settings.webhooks)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                assert (await c.post("/webhooks/brevo", json=[])).status_code == 401
                samples = scrape((await c.get("/metrics")).text)
                health = await c.get("/healthz")
            hubspot_calls = sum(rt.hubspot.calls.values())
            brevo_calls = sum(rt.brevo.calls.values())
        hs_answered = len(env.servers.hubspot.log.calls)
        br_answered = len(env.servers.brevo.calls.calls)

    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    assert set(health.json()["sides"]["hubspot"]["objects"]) == set(pulled["hubspot"])
    assert set(health.json()["sides"]["brevo"]["objects"]) == set(pulled["brevo"])
    # every call both clients made, each counted once, as the sandboxes answered them
    assert total(samples, "connector_api_calls_total", api="hubspot") == hubspot_calls
    assert hubspot_calls == hs_answered
    assert total(samples, "connector_api_calls_total", api="brevo") == brevo_calls
    assert brevo_calls == br_answered
    assert value(samples, "connector_api_rate_limited_total", api="hubspot") == 0
    # the daily budget: the cli sandbox sends no daily headers, so the limiter's count
    limit = value(samples, "connector_api_daily_budget_limit", api="hubspot")
    assert limit == 625_000
    assert value(samples, "connector_api_daily_budget_used", api="hubspot") == hubspot_calls
    # records synced: what the engine passes reported, per side written to
    written: dict[str, int] = {}
    for r in results:
        if r.job.object_type != "contacts":
            continue
        for key, n in r.counts.items():
            written[key] = written.get(key, 0) + n
    synced = "connector_records_synced_total"
    for side, operation in (
        ("hubspot", "created"),
        ("hubspot", "updated"),
        ("brevo", "created"),
        ("brevo", "updated"),
        ("brevo", "imported"),
    ):
        got = value(samples, synced, side=side, object_type="contacts", operation=operation)
        assert got == written.get(f"{side}_{operation}", 0), (side, operation)
    assert value(samples, synced, side="hubspot", object_type="contacts", operation="created") == 6
    assert total(samples, synced, side="brevo") >= 12  # the 12 HubSpot contacts reached Brevo
    # the store at scrape time
    assert value(samples, "connector_store_up") == 1
    assert value(samples, "connector_inbox_depth") == 0
    for side in ("hubspot", "brevo"):
        lag = value(samples, "connector_sync_lag_seconds", side=side, object_type="contacts")
        assert lag is not None and 0 <= lag < 600
    # the intake's metrics are in the same registry (the scrape is the daemon's, not a copy)
    assert total(samples, "connector_webhook_requests_rejected_total", source="brevo") == 1


# --- status commands name the dead inbox events -----------------------------------------------


async def test_status_and_webhooks_status_show_dead_inbox_events(tmp_path: Path) -> None:
    async with cli_env(tmp_path, hubspot=1) as env:
        with env.config.open("a", encoding="utf-8") as f:
            f.write(
                f'webhooks:\n  brevo_token: "{TOKEN}"\n  allowed_ips:\n'
                f"    brevo: [{', '.join(BREVO_NETS)}]\n"
            )
        db.upgrade(env.db_url)
        engine = db.create_engine(env.db_url)
        sessions = db.session_factory(engine)
        try:
            await seed_inbox(sessions)
        finally:
            await engine.dispose()

        code, out, err = await env.cli("webhooks", "status")
        assert code == 0, out + err
        assert "dead 1" in out and "1 event(s) dead" in out and "never purged" in out
        assert "boom" in out and "contact.creation" in out
        assert "accepted from    1.179.112.0/20, 172.246.240.0/20" in out
        code, out, err = await env.cli("webhooks", "status", "--json")
        report = json.loads(out)
        assert report["inbox"]["dead"] == 1 and report["dead_events"][0]["last_error"] == "boom"

        code, out, err = await env.cli("status")
        assert "Dead webhook events" in out and "connector webhooks status" in out, out
        code, out, err = await env.cli("status", "--json")
        assert json.loads(out)["dead_inbox_events"] == 1
        assert json.loads(out)["pending_dirty_keys"] == 3
