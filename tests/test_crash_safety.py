"""Crash safety: the daemon killed with SIGKILL while webhooks arrive and while a batch is
being written, restarted, and every change applied exactly once in effect, none lost.

A client edits contacts in both sandboxes continuously and posts the matching webhooks to the
daemon's intake (HubSpot's signed v3, Brevo's with the bearer token), retrying until it gets a
2xx as HubSpot and Brevo do. Two bursts of new contacts make the daemon write in bulk, and each
time the sandbox kills the daemon from inside that write: once inside the Brevo import of 60
contacts created in HubSpot, once inside HubSpot's batch create of 60 contacts created in
Brevo. The remote side finishes the write; the daemon never hears of it. After each kill the
daemon is started again. New contacts keep being created on both sides, their webhooks posted,
all along: while the daemon is being killed, while it is down, after.

The edits of existing contacts pause from each kill until the restarted daemon answers: an edit
of a field made while the connector's own write of that field is being killed is a known gap of
the engine (the write reached the other side but not the ledger, so after the restart it looks
like a person's later change there, and ``latest_wins`` lets it overwrite the edit; a
write-ahead record of the hash being written would close it).

Then: every event that got a 2xx is in the inbox and was processed, nothing is dead, both
sandboxes hold the last value of every edit, each new contact exists exactly once on both
sides, and every contact is linked once.

The pulls run only when the daemon starts (``poll_interval`` is an hour): between the
restarts, the changes travel by webhook alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from daemon_env import WEBHOOK_TOKEN, CliEnv, DaemonProc, cli_env, eventually, free_port

from connector.brevo.webhooks import parse_brevo
from connector.hubspot.webhooks import parse_hubspot, v3_signature
from connector.sandbox.brevo_model import Contact, ContactEvent
from connector.sandbox.server import HUBSPOT_CLIENT_SECRET

BURST = 60  # over sync.import_threshold (50): the Brevo side is written by one import


def now_ms() -> int:
    return int(time.time() * 1000)


class Client:
    """Posts webhooks to the daemon like HubSpot and Brevo: again and again until a 2xx."""

    def __init__(self, env: CliEnv) -> None:
        self.env = env
        self.http = httpx.AsyncClient(base_url=env.base_url, timeout=5.0)
        self.accepted: list[tuple[str, bytes]] = []
        self.failures: Counter[str] = Counter()
        self.seq = 0
        self.pause_edits = False
        self.give_up_at: float | None = None
        """once set (the test is ending), a post still failing then raises instead of looping"""

    def next_id(self) -> int:
        self.seq += 1
        return self.seq

    async def post(self, source: str, payload: Any) -> None:
        body = json.dumps(payload).encode()
        path = f"/webhooks/{source}"
        while True:
            headers = {"Content-Type": "application/json"}
            if source == "hubspot":
                ts = str(now_ms())
                uri = f"{self.env.base_url}{path}"
                headers["X-HubSpot-Request-Timestamp"] = ts
                headers["X-HubSpot-Signature-v3"] = v3_signature(
                    HUBSPOT_CLIENT_SECRET, "POST", uri, body, ts
                )
            else:
                headers["Authorization"] = f"Bearer {WEBHOOK_TOKEN}"
            try:
                response = await self.http.post(path, content=body, headers=headers)
            except httpx.TransportError as e:  # the daemon is down: retry, as both APIs do
                self.failures[type(e).__name__] += 1
            else:
                if 200 <= response.status_code < 300:
                    self.accepted.append((source, body))
                    return
                assert response.status_code == 429, (response.status_code, response.text)
                self.failures["429"] += 1
            if self.give_up_at is not None and time.monotonic() > self.give_up_at:
                raise RuntimeError(f"{source} webhook never accepted")
            await asyncio.sleep(0.05)

    def hubspot_event(self, kind: str, object_id: str, **fields: Any) -> dict[str, Any]:
        n = self.next_id()
        return {
            "objectId": int(object_id),
            "eventId": 90_000_000 + n,
            "subscriptionId": 4242,
            "portalId": 1,
            "appId": 1,
            "occurredAt": now_ms(),
            "subscriptionType": f"contact.{kind}",
            "attemptNumber": 0,
            "changeSource": "CRM_UI",
            **fields,
        }

    def brevo_event(self, contact: Contact, changed: dict[str, Any]) -> dict[str, Any]:
        n = self.next_id()
        return {
            "event": "contact_updated",
            "email": contact.email,
            "contact_id": contact.id,
            "id": 1,
            "content": [changed],
            "ts_event": int(time.time()),
            "ts_epoch": now_ms() * 1000 + n,
            "api_key_name": "",
        }


async def edit_hubspot(
    env: CliEnv, client: Client, ids: list[str], expected: dict[str, str], stop: asyncio.Event
) -> None:
    """A sales rep retyping first names in HubSpot, each change's webhook posted (not while
    ``client.pause_edits`` is set)."""
    k = 0
    while not stop.is_set():
        if client.pause_edits:
            await asyncio.sleep(0.02)
            continue
        hid = ids[k % len(ids)]
        value = f"Hs{k}"
        env.servers.hubspot.put_object("contacts", {"firstname": value}, hid)
        expected[hid] = value
        event = client.hubspot_event(
            "propertyChange", hid, propertyName="firstname", propertyValue=value
        )
        await client.post("hubspot", [event])
        k += 1
        await asyncio.sleep(0.05)


async def edit_brevo(
    env: CliEnv, client: Client, emails: list[str], expected: dict[str, str], stop: asyncio.Event
) -> None:
    """A marketer retyping last names in Brevo, each change's webhook posted (not while
    ``client.pause_edits`` is set)."""
    k = 0
    while not stop.is_set():
        if client.pause_edits:
            await asyncio.sleep(0.02)
            continue
        email = emails[k % len(emails)]
        value = f"Br{k}"
        contact = env.servers.brevo.edit_contact(email, {"LASTNAME": value})
        expected[email] = value
        await client.post("brevo", client.brevo_event(contact, {"LASTNAME": value}))
        k += 1
        await asyncio.sleep(0.05)


async def create_both(env: CliEnv, client: Client, made: list[str], stop: asyncio.Event) -> None:
    """New contacts, one every 0.3 s, in HubSpot and in Brevo by turns, each with its
    webhook — also while the daemon is being killed and while it is down (slow enough that
    only the bursts make the engine import)."""
    k = 0
    while not stop.is_set():
        email = f"steady{k}@example.com"
        if k % 2 == 0:
            hid = env.servers.hubspot.put_object("contacts", {"email": email, "firstname": "S"})
            made.append(email)
            await client.post("hubspot", [client.hubspot_event("creation", hid)])
        else:
            env.servers.brevo.create_contact({"email": email, "attributes": {"FIRSTNAME": "S"}}, "")
            made.append(email)
            contact = env.servers.brevo.get(email)
            assert contact is not None
            await client.post("brevo", client.brevo_event(contact, {"EMAIL": email}))
        k += 1
        await asyncio.sleep(0.3)


class Killer:
    """Kills the daemon (SIGKILL) from inside a sandbox's write, when armed."""

    def __init__(self) -> None:
        self.target: DaemonProc | None = None
        self.killed = asyncio.Event()

    def arm(self, target: DaemonProc) -> None:
        self.target = target
        self.killed.clear()

    def fire(self) -> None:
        if self.target is not None and self.target.alive:
            os.kill(self.target.pid, signal.SIGKILL)
            self.target = None
            self.killed.set()


def hubspot_emails(env: CliEnv) -> list[str]:
    live = env.servers.hubspot.stores["contacts"].live.values()
    return [str(o.props["email"]).lower() for o in live if o.props.get("email")]


def brevo_emails(env: CliEnv) -> list[str]:
    return [c.email.lower() for c in env.servers.brevo.contacts.values() if c.email]


async def started(env: CliEnv, daemon: DaemonProc, *, pulls: bool = True) -> None:
    """The daemon answers and (with ``pulls``) has run its start-up pulls: what comes next is
    the worker's."""
    async with httpx.AsyncClient(base_url=env.base_url) as http:

        async def healthy() -> bool:
            assert daemon.alive, daemon.text()[-3000:]
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(healthy, what="daemon answering /healthz")
    if not pulls:
        return
    await eventually(
        lambda: (
            {e["job"] for e in daemon.events("job.done")}
            >= {"pull:hubspot:contacts", "pull:brevo:contacts"}
        ),
        within=30,
        what="start-up pulls",
    )


async def test_sigkill_during_webhooks_and_batch_writes_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    async with cli_env(
        tmp_path, hubspot=20, brevo=10, webhooks_port=free_port(), poll_interval=3600
    ) as env:
        hs, br = env.servers.hubspot, env.servers.brevo
        hs_seeded = sorted(str(i) for i in hs.stores["contacts"].live)
        br_seeded = sorted(c.email for c in br.contacts.values() if c.email)
        daemon = await env.daemon("d")
        await started(env, daemon)
        await eventually(
            lambda: env.query("SELECT count(*) FROM links") == [(30,)], what="initial sync"
        )

        killer = Killer()

        def on_brevo_change(event: ContactEvent, contact: Contact, api_key_name: str) -> None:
            if event.name == "contactCreated" and api_key_name == "connector":
                killer.fire()  # the connector's import is being applied

        def on_hubspot_change(kind: str, object_type: str, *rest: Any) -> None:
            if kind == "creation" and object_type == "contacts" and rest[-1] == "INTEGRATION":
                killer.fire()  # the connector's batch create is being applied

        br.listeners.append(on_brevo_change)
        hs.listeners.append(on_hubspot_change)

        client = Client(env)
        stop = asyncio.Event()
        expected_hs: dict[str, str] = {}
        expected_br: dict[str, str] = {}
        steady: list[str] = []
        editors = [
            asyncio.create_task(create_both(env, client, steady, stop)),
            asyncio.create_task(edit_hubspot(env, client, hs_seeded[:8], expected_hs, stop)),
            asyncio.create_task(edit_brevo(env, client, br_seeded[:8], expected_br, stop)),
        ]
        try:
            await eventually(lambda: len(client.accepted) >= 20, what="webhooks flowing")

            # 1. new contacts in HubSpot → the daemon imports them into Brevo → killed inside
            client.pause_edits = True  # see the module docstring
            killer.arm(daemon)
            new_hs = [
                hs.put_object(
                    "contacts",
                    {"email": f"crash-h{i}@example.com", "firstname": "New", "lastname": f"H{i}"},
                )
                for i in range(BURST)
            ]
            await client.post("hubspot", [client.hubspot_event("creation", i) for i in new_hs])
            await asyncio.wait_for(killer.killed.wait(), 45)
            await daemon.proc.wait()
            daemon = await env.daemon("d")  # webhooks keep coming meanwhile (and fail)
            await started(env, daemon)

            client.pause_edits = False
            await eventually(lambda: len(client.accepted) >= len(expected_br) + 30, what="edits")

            # 2. new contacts in Brevo → the daemon batch-creates them in HubSpot → killed
            client.pause_edits = True
            killer.arm(daemon)
            created: list[Contact] = []
            for i in range(BURST):
                email = f"crash-b{i}@example.com"
                br.create_contact(
                    {"email": email, "attributes": {"FIRSTNAME": "New", "LASTNAME": f"B{i}"}}, ""
                )
                contact = br.get(email)
                assert contact is not None
                created.append(contact)
            await client.post("brevo", [client.brevo_event(c, {"EMAIL": c.email}) for c in created])
            await asyncio.wait_for(killer.killed.wait(), 45)
            await daemon.proc.wait()
            daemon = await env.daemon("d")
            await started(env, daemon, pulls=False)
            client.pause_edits = False
            n = len(client.accepted)
            await eventually(lambda: len(client.accepted) >= n + 10, what="webhooks after")
        finally:
            stop.set()
            client.give_up_at = time.monotonic() + 20  # never hang on a daemon that is gone
            await asyncio.gather(*editors, return_exceptions=True)
            await client.http.aclose()

        # the daemon was down twice while the client kept posting
        assert client.failures["ConnectError"] > 0

        def open_rows() -> bool:
            statuses = "('pending', 'failed', 'processing')"
            return env.query(f"SELECT count(*) FROM inbox WHERE status IN {statuses}") == [(0,)]

        await eventually(open_rows, within=60, what="inbox processed")

        # every event that got a 2xx is in the inbox, processed
        status = dict(env.query("SELECT dedup_key, status FROM inbox"))
        keys = [
            item.dedup_key
            for source, body in client.accepted
            for item in (parse_hubspot(body) if source == "hubspot" else parse_brevo(body))
        ]
        assert len(keys) == len(set(keys)) > 2 * BURST + 40
        assert {status.get(k) for k in keys} == {"done"}

        # the last value of every edit, on both sides
        for hid, value in expected_hs.items():
            props = hs.get_object("contacts", hid)
            assert props is not None and props["firstname"] == value
            contact = br.get(str(props["email"]))
            assert contact is not None and contact.attributes.get("FIRSTNAME") == value, hid
        for email, value in expected_br.items():
            contact = br.get(email)
            assert contact is not None and contact.attributes.get("LASTNAME") == value
            hid = str(hs.stores["contacts"].by_email[email.lower()])
            assert (hs.get_object("contacts", hid) or {}).get("lastname") == value, email

        # each contact once on each side, every one linked once
        hs_all, br_all = hubspot_emails(env), brevo_emails(env)
        total = 30 + 2 * BURST + len(steady)
        assert len(hs_all) == len(set(hs_all)) == total
        assert len(br_all) == len(set(br_all)) == total
        assert set(steady) <= set(hs_all)
        assert set(hs_all) == set(br_all)
        assert {f"crash-h{i}@example.com" for i in range(BURST)} <= set(br_all)
        assert {f"crash-b{i}@example.com" for i in range(BURST)} <= set(hs_all)
        assert env.query("SELECT count(*), count(DISTINCT identity_key) FROM links") == [
            (total, total)
        ]
        assert env.query("SELECT count(*) FROM inbox WHERE status = 'dead'") == [(0,)]
        # the two killed processes' runs were closed, not left "running"
        assert env.query("SELECT count(*) FROM runs WHERE status = 'interrupted'")[0][0] >= 2

        assert await daemon.terminate() == 0
        assert env.query("SELECT count(*) FROM leases") == [(0,)]
        assert env.query("SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]
