"""The inbox worker and the daemon's webhook wiring, against both sandboxes on loopback.

Webhooks reach the intake app (in process over ``httpx.ASGITransport``, or the real server of
``Daemon.run`` / ``connector run``), are stored in the inbox, and the worker reads the named
records in batches and syncs them: a HubSpot edit reaches Brevo, a Brevo edit reaches HubSpot,
many events for one record make one read, an engine that raises retries the events with
backoff until they are dead, a busy object lease hands the events back untried.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_env import CliEnv, cli_env
from starlette.applications import Starlette

from connector.config import Settings, load_config
from connector.daemon import Daemon
from connector.engine import Outcome
from connector.hubspot.webhooks import v3_signature
from connector.runtime import Runtime
from connector.sandbox.server import HUBSPOT_CLIENT_SECRET
from connector.store import inbox, leases
from connector.web import create_web_app
from connector.worker import InboxWorker, coalesce, exponential_backoff

TOKEN = "brevo-webhook-token-0123"
APP_URL = "http://connector.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def now_ms() -> int:
    return int(time.time() * 1000)


def hs_event(object_id: str | int, n: int, **fields: Any) -> dict[str, Any]:
    """A HubSpot ``contact.propertyChange`` payload element (``n`` makes it unique)."""
    event: dict[str, Any] = {
        "objectId": int(object_id),
        "propertyName": "firstname",
        "propertyValue": f"value {n}",
        "changeSource": "CRM_UI",
        "eventId": 7_000_000 + n,
        "subscriptionId": 4242,
        "portalId": 1,
        "appId": 1,
        "occurredAt": now_ms() + n,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
    }
    event.update(fields)
    return event


@dataclass
class Env:
    cli: CliEnv
    settings: Settings
    rt: Runtime
    daemon: Daemon
    app: Starlette
    client: httpx.AsyncClient
    port: int

    async def post_hubspot(self, events: list[dict[str, Any]]) -> httpx.Response:
        """A signed (v3) HubSpot batch to the intake app."""
        body = json.dumps(events).encode()
        ts = str(now_ms())
        url = f"{APP_URL}/webhooks/hubspot"
        headers = {
            "X-HubSpot-Signature-v3": v3_signature(HUBSPOT_CLIENT_SECRET, "POST", url, body, ts),
            "X-HubSpot-Request-Timestamp": ts,
            "Content-Type": "application/json",
        }
        response = await self.client.post("/webhooks/hubspot", content=body, headers=headers)
        assert response.status_code == 200, response.text
        return response

    def inbox_rows(self) -> list[tuple[Any, ...]]:
        return self.cli.query(
            "SELECT object_type, object_id, event_type, status, attempts, last_error "
            "FROM inbox ORDER BY id"
        )

    def hs_id(self, email: str) -> str:
        oid = self.cli.servers.hubspot.stores["contacts"].by_email[email]
        return str(oid)


@asynccontextmanager
async def worker_env(
    tmp_path: Path, *, hubspot: int = 0, brevo: int = 0, **sync: Any
) -> AsyncIterator[Env]:
    """Sandboxes, a config with a ``webhooks:`` section, a migrated store, the runtime, a
    daemon (not running) and the intake app over ASGI."""
    async with cli_env(tmp_path, hubspot=hubspot, brevo=brevo, **sync) as cli:
        port = free_port()
        with cli.config.open("a", encoding="utf-8") as f:
            f.write(
                f'server:\n  host: 127.0.0.1\n  port: {port}\nwebhooks:\n  brevo_token: "{TOKEN}"\n'
            )
        settings = load_config(cli.config)
        assert settings.webhooks is not None
        async with Runtime.open(settings) as rt:
            daemon = Daemon(rt, inbox_idle_wait=0.05, stop_grace=3.0)
            await daemon.prepare()
            app = create_web_app(
                sessions=rt.sessions,
                hubspot_secret=HUBSPOT_CLIENT_SECRET,
                brevo_token=TOKEN,
                settings=settings.webhooks,
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=APP_URL) as client:
                yield Env(cli, settings, rt, daemon, app, client, port)


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# --- pure parts -----------------------------------------------------------------------------


def test_coalesce_groups_per_object_type_and_record() -> None:
    def item(i: int, source: str, object_type: str, object_id: str, event: str) -> inbox.InboxItem:
        return inbox.InboxItem(
            i, source, f"k{i}", object_type, object_id, event, {}, 1, datetime.now(UTC), None
        )  # type: ignore[arg-type]

    merge = item(7, "hubspot", "contacts", "5", "contact.merge")
    merge.payload.update(primaryObjectId=5, newObjectId=9, mergedObjectIds=[6])
    batches = coalesce(
        [
            item(1, "hubspot", "contacts", "5", "contact.propertyChange"),
            item(2, "hubspot", "contacts", "5", "contact.creation"),
            item(3, "brevo", "contacts", "A@x.io", "contact_updated"),
            item(4, "brevo", "contacts", "a@x.io", "unsubscribed"),
            item(5, "brevo", "contacts", "77", "listAddition"),
            item(6, "hubspot", "contacts", "8", "contact.deletion"),
            merge,
            item(8, "brevo", "contacts", "b@x.io", "opened"),
            item(9, "hubspot", "companies", "3", "company.propertyChange"),
        ]
    )
    contacts = batches["contacts"]
    assert list(contacts.hubspot_ids) == ["5", "9"]  # the deleted 8 and the merged 6: no read
    assert list(contacts.brevo_emails) == ["a@x.io"] and list(contacts.brevo_ids) == ["77"]
    assert contacts.records == 4 and len(contacts.items) == 8
    assert contacts.kinds == {"change": 4, "optout": 1, "delete": 1, "merge": 1, "none": 1}
    assert list(batches["companies"].hubspot_ids) == ["3"]
    backoff = exponential_backoff(timedelta(seconds=10), timedelta(seconds=60))
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4, 99)] == [10, 20, 40, 60, 60]


# --- in process: the intake app over ASGI, the worker --------------------------------------


async def test_100_events_for_10_records_make_one_batch_read(tmp_path: Path) -> None:
    async with worker_env(tmp_path, hubspot=10) as env:
        await env.daemon.run_once(inbox=False)  # the first pulls link both sides
        ids = [str(i) for i in sorted(env.cli.servers.hubspot.stores["contacts"].live)]
        assert len(ids) == 10
        hs_log, br_log = env.cli.servers.hubspot.log, env.cli.servers.brevo.calls
        hs_log.clear()
        br_log.clear()
        events = [hs_event(ids[n % 10], n) for n in range(100)]
        response = await env.post_hubspot(events)
        assert response.json() == {"received": 100, "stored": 100, "duplicates": 0}

        result = await env.daemon.drain_inbox()
        assert (result.claimed, result.records, result.passes, result.completed) == (
            100,
            10,
            1,
            100,
        )
        assert hs_log.count(contains="/batch/read") == 1  # ten records, one batch call
        assert br_log.count(method="GET") == 1  # their linked Brevo contacts: one call
        assert env.cli.writes() == (0, 0)  # nothing changed: reads only
        assert {row[3] for row in env.inbox_rows()} == {"done"}
        worker_runs = env.cli.query("SELECT status, counts FROM runs WHERE kind = 'worker'")
        assert len(worker_runs) == 1 and worker_runs[0][0] == "ok"
        assert json.loads(worker_runs[0][1])["events"] == 100


async def test_brevo_contact_updated_reaches_hubspot(tmp_path: Path) -> None:
    async with worker_env(tmp_path, brevo=3) as env:
        await env.daemon.run_once(inbox=False)
        servers = env.cli.servers
        servers.brevo.webhook_sender.transport = httpx.ASGITransport(app=env.app)
        servers.point_webhooks_at(None, f"{APP_URL}/webhooks/brevo", TOKEN)
        contact = next(iter(servers.brevo.contacts.values()))
        assert contact.email is not None
        servers.brevo.edit_contact(contact.email, {"FIRSTNAME": "Yara"})
        await servers.brevo.webhook_sender.drain(5)
        rows = env.inbox_rows()
        assert [(r[1], r[2], r[3]) for r in rows] == [
            (contact.email.lower(), "contactUpdated", "pending")
        ]

        result = await env.daemon.drain_inbox()
        assert (result.records, result.completed, result.counts["hubspot_updated"]) == (1, 1, 1)
        props = servers.hubspot.get_object("contacts", env.hs_id(contact.email.lower()))
        assert props is not None and props["firstname"] == "Yara"
        assert env.inbox_rows()[0][3] == "done"


async def test_engine_failure_retried_with_backoff_then_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with worker_env(tmp_path, hubspot=2) as env:
        calls: list[dict[str, Any]] = []

        async def broken(**kw: Any) -> Outcome:
            calls.append(kw)
            raise RuntimeError("HubSpot is down (token sandbox-token)")

        monkeypatch.setattr(env.rt.engines["contacts"], "sync", broken)
        await env.post_hubspot(
            [
                hs_event(101, 1),
                hs_event(101, 2),
                hs_event(55, 3, subscriptionType="company.propertyChange"),
            ]
        )
        at = [datetime.now(UTC) + timedelta(seconds=1)]
        worker = InboxWorker(
            env.rt,
            worker_id="test-worker",
            max_attempts=3,
            backoff=lambda n: timedelta(seconds=10 * n),
            clock=lambda: at[0],
        )

        first = await worker.run_once()
        # the company event goes to the companies sync (enabled in the sandbox config)
        assert (first.claimed, first.ignored, first.retried, first.dead) == (3, 0, 2, 0)
        assert calls == [
            {
                "hubspot_ids": ["101"],
                "brevo_ids": [],
                "brevo_emails": [],
                "brevo_changed_since": None,
                "mode": "incremental",
            }
        ]
        assert (await worker.run_once()).claimed == 0  # not due yet
        at[0] += timedelta(seconds=10)
        again = await worker.run_once()
        assert (again.claimed, again.retried, again.dead) == (2, 2, 0)
        at[0] += timedelta(seconds=19)
        assert (await worker.run_once()).claimed == 0  # the second wait is 20 s
        at[0] += timedelta(seconds=1)
        last = await worker.run_once()
        assert (last.claimed, last.retried, last.dead) == (2, 0, 2)
        at[0] += timedelta(hours=2)
        assert (await worker.run_once()).claimed == 0  # dead stays dead

        rows = env.inbox_rows()
        assert [(r[0], r[3], r[4]) for r in rows] == [
            ("contacts", "dead", 3),
            ("contacts", "dead", 3),
            ("companies", "done", 1),
        ]
        assert "RuntimeError: HubSpot is down" in rows[0][5]
        assert "sandbox-token" not in rows[0][5]
        async with env.rt.sessions() as s:
            assert (await inbox.counts_by_status(s))["dead"] == 2
        worker_runs = env.cli.query("SELECT status FROM runs WHERE kind = 'worker'")
        assert worker_runs == [("failed",)] * 3


async def test_busy_lease_hands_events_back_untried(tmp_path: Path) -> None:
    async with worker_env(tmp_path, hubspot=1) as env:
        await env.daemon.run_once(inbox=False)
        hid = next(iter(env.cli.servers.hubspot.stores["contacts"].live))
        await env.post_hubspot([hs_event(hid, 1)])
        async with env.rt.sessions() as s, s.begin():
            taken = await leases.acquire(
                s, "sync:contacts", "elsewhere:1:abc", timedelta(minutes=1), datetime.now(UTC)
            )
            assert taken
        busy = await env.daemon.drain_inbox()
        assert (busy.claimed, busy.released, busy.completed, busy.busy) == (1, 1, 0, ["contacts"])
        assert [(r[3], r[4]) for r in env.inbox_rows()] == [("pending", 0)]  # attempt not counted

        async with env.rt.sessions() as s, s.begin():
            await leases.release(s, "sync:contacts", "elsewhere:1:abc")
        results = await env.daemon.run_once(reconcile=False)  # pulls, then one inbox pass
        # contacts, companies and deals (enabled in the sandbox config): two pulls each; the
        # roll-up sources (tickets, meetings, calls, notes): a HubSpot pull each
        pulls = 2 + sum(len(o.pull_systems) for o in env.rt.objects.values())
        assert pulls == 2 + 2 * 2 + 4
        assert [r.status for r in results] == ["ok"] * pulls
        drained = env.daemon.last_inbox
        assert drained is not None and (drained.completed, drained.records) == (1, 1)
        assert [(r[3], r[4]) for r in env.inbox_rows()] == [("done", 1)]
        assert env.cli.query("SELECT count(*) FROM leases") == [(0,)]


# --- the daemon: the real web server, the worker loop, a graceful stop ---------------------


async def test_daemon_serves_signed_hubspot_webhooks_and_syncs_them_to_brevo(
    tmp_path: Path,
) -> None:
    async with worker_env(tmp_path, hubspot=3, poll_interval=3600) as env:
        task = asyncio.create_task(env.daemon.run())
        base = f"http://127.0.0.1:{env.port}"
        try:
            async with httpx.AsyncClient(base_url=base) as http:

                async def healthy() -> bool:
                    try:
                        return (await http.get("/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(healthy)
                await eventually(
                    lambda: (
                        env.cli.query(
                            "SELECT count(*) FROM runs WHERE kind = 'pull' AND status = 'ok'"
                            " AND object_type = 'contacts'"
                        )
                        == [(2,)]
                    )
                )
            servers = env.cli.servers
            servers.hubspot.webhook_sender.linger = 0.02
            servers.point_webhooks_at(f"{base}/webhooks/hubspot")
            hid = next(iter(servers.hubspot.stores["contacts"].live))
            email = servers.hubspot.get_object("contacts", hid)["email"]  # type: ignore[index]
            servers.hubspot.put_object("contacts", {"firstname": "Zelda"}, hid)

            def in_brevo() -> bool:
                contact = servers.brevo.get(email or "")
                return contact is not None and contact.attributes.get("FIRSTNAME") == "Zelda"

            await eventually(in_brevo)
            await servers.hubspot.webhook_sender.drain(5)
            rows = env.inbox_rows()
            assert {(r[1], r[2]) for r in rows} >= {(str(hid), "contact.propertyChange")}
            await eventually(lambda: {r[3] for r in env.inbox_rows()} == {"done"})
        finally:
            started = time.monotonic()
            env.daemon.stop()
            await asyncio.wait_for(task, timeout=10)
        assert time.monotonic() - started < 10
        with pytest.raises(httpx.TransportError):  # no longer listening
            async with httpx.AsyncClient() as http:
                await http.get(f"{base}/healthz")
        assert env.cli.query("SELECT count(*) FROM leases") == [(0,)]
        assert env.cli.query("SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]
        assert env.cli.query("SELECT count(*) FROM runs WHERE kind = 'worker'")[0][0] >= 1


async def test_connector_run_with_webhooks_answers_healthz_and_exits_0_on_sigterm(
    tmp_path: Path,
) -> None:
    async with worker_env(tmp_path, hubspot=2, poll_interval=3600) as env:
        await env.post_hubspot([hs_event(1, 1), hs_event(1, 2)])
        code, out, err = await env.cli.cli("run", "--once")  # pulls, then one inbox pass
        assert code == 0, out + err
        assert "inbox: ok — claimed=2, records=1, passes=1, completed=2" in out
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "connector",
            "--config",
            str(env.cli.config),
            "run",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env.port}") as http:

                async def healthy() -> bool:
                    try:
                        response = await http.get("/healthz")
                    except httpx.TransportError:
                        return False
                    return response.status_code == 200 and response.json()["status"] == "ok"

                await eventually(healthy, within=20)
                refused = await http.post("/webhooks/brevo", json={"event": "spam"})
                assert refused.status_code == 401
        except BaseException:
            proc.kill()
            raise
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=15)
        elapsed = time.monotonic() - started
        text = err.decode()
        assert proc.returncode == 0, text
        assert elapsed < 10
        assert '"web.listening"' in text and '"worker.started"' in text
        assert '"daemon.stopped"' in text
        assert TOKEN not in text and HUBSPOT_CLIENT_SECRET not in text

        code, out, err = await env.cli.cli("webhooks", "status", "--json")
        assert code == 0, out + err
        report = json.loads(out)
        assert report["hubspot_url"] == f"http://127.0.0.1:{env.port}/webhooks/hubspot"
        assert report["hubspot_secret_set"] and report["brevo_token_set"]
        assert report["inbox"]["done"] == 2 and report["inbox"]["dead"] == 0
        assert TOKEN not in out
