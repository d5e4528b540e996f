"""Lifecycle triggers, in process, against both sandboxes on loopback: Brevo list membership
follows the HubSpot lifecycle stage (added and removed), a stage change fires one Brevo event
with the old and new stage, only on real changes (never an echo, a no-op, or a resync), and
the event is sent at most once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from daemon_env import CliEnv, cli_env

from connector.config import HubSpotLists, load_config
from connector.daemon import Daemon
from connector.onboarding.enroll import LIFECYCLE, LIFECYCLE_EVENT
from connector.onboarding.runner import retry_job
from connector.onboarding.triggers import desired_lists
from connector.resync import resync
from connector.runtime import Runtime
from connector.sandbox.brevo_model import Contact
from connector.store import db, jobs
from connector.store.models import utcnow

ALL, QUALIFIED, CUSTOMERS = 10, 11, 12


@dataclass
class Env:
    cli: CliEnv
    rt: Runtime
    daemon: Daemon

    async def cycle(self) -> None:
        await self.daemon.run_once(reconcile=False)

    def brevo(self, email: str) -> Contact:
        return next(c for c in self.cli.servers.brevo.contacts.values() if c.email == email)

    def lists(self, email: str) -> set[int]:
        return set(self.brevo(email).list_ids) & {ALL, QUALIFIED, CUSTOMERS}

    def events(self) -> list[tuple[str, str, str, str | None]]:
        return [
            (
                e.event_name,
                str(e.event_properties.get("old_stage")),
                str(e.event_properties.get("new_stage")),
                e.identifiers.get("ext_id"),
            )
            for e in self.cli.servers.brevo.events
        ]

    async def lifecycle_jobs(self) -> list[jobs.JobRecord]:
        async with self.rt.sessions() as s:
            return sorted(await jobs.list_jobs(s, hook=LIFECYCLE), key=lambda j: j.id)


@asynccontextmanager
async def triggers_env(tmp_path: Path) -> AsyncIterator[tuple[Env, str, str]]:
    async with cli_env(tmp_path, hubspot=3, brevo=1) as env:
        hs = env.servers.hubspot
        hid = sorted(hs.stores["contacts"].live)[0]
        hs.put_object("contacts", {"lifecyclestage": "lead"}, hid)
        email = str(hs.stores["contacts"].get(hid).props["email"]).lower()  # type: ignore[union-attr]
        db.upgrade(env.db_url)
        async with Runtime.open(load_config(env.config)) as rt:
            daemon = Daemon(rt)
            await daemon.prepare()
            e = Env(env, rt, daemon)
            await e.cycle()  # the initial sync: no trigger fires for the existing base
            assert e.events() == [] and await e.lifecycle_jobs() == []
            yield e, str(hid), email


async def test_lists_follow_the_stage_and_each_change_fires_one_event(tmp_path: Path) -> None:
    async with triggers_env(tmp_path) as (env, hid, email):
        hs = env.cli.servers.hubspot
        hs.put_object("contacts", {"lifecyclestage": "marketingqualifiedlead"}, hid)
        await env.cycle()
        assert env.lists(email) == {ALL, QUALIFIED}
        assert env.events() == [(LIFECYCLE_EVENT, "lead", "marketingqualifiedlead", hid)]
        stored = env.cli.servers.brevo.events[0]
        assert stored.identifiers.get("contact_id") == env.brevo(email).id

        hs.put_object("contacts", {"lifecyclestage": "customer"}, hid)
        await env.cycle()
        assert env.lists(email) == {ALL, CUSTOMERS}  # out of qualified leads, into customers
        assert env.events()[1:] == [(LIFECYCLE_EVENT, "marketingqualifiedlead", "customer", hid)]

        # in step: no echo, no no-op fires anything, and nothing is written
        before = env.cli.writes()
        queued = len(await env.lifecycle_jobs())
        await env.cycle()
        await env.cycle()
        assert env.cli.writes() == before
        assert len(await env.lifecycle_jobs()) == queued and len(env.events()) == 2
        assert all(j.status == "succeeded" for j in await env.lifecycle_jobs())


async def test_a_stage_change_made_in_brevo_fires_too(tmp_path: Path) -> None:
    async with triggers_env(tmp_path) as (env, hid, email):
        # LIFECYCLE_STAGE is a Brevo category: 4 is salesqualifiedlead in the mapping
        env.cli.servers.brevo.edit_contact(email, {"LIFECYCLE_STAGE": 4})
        await env.cycle()
        hs_stage = (env.cli.servers.hubspot.get_object("contacts", hid) or {}).get("lifecyclestage")
        assert hs_stage == "salesqualifiedlead"
        assert env.events() == [(LIFECYCLE_EVENT, "lead", "salesqualifiedlead", hid)]
        assert env.lists(email) == {ALL, QUALIFIED}


async def test_a_resync_fires_no_trigger(tmp_path: Path) -> None:
    async with triggers_env(tmp_path) as (env, hid, email):
        env.cli.servers.hubspot.put_object("contacts", {"lifecyclestage": "customer"}, hid)
        await resync(env.rt.engines["contacts"], mode="resync")
        await env.daemon.drain_hooks()
        assert env.brevo(email).attributes.get("LIFECYCLE_STAGE") == 6  # synced …
        assert env.events() == [] and await env.lifecycle_jobs() == []  # … without triggers


async def test_an_interrupted_event_is_not_sent_again_until_an_operator_retries(
    tmp_path: Path,
) -> None:
    async with triggers_env(tmp_path) as (env, hid, _):
        key = f"lifecycle:{hid}:event:lead>customer:test"
        payload = {"brevo_id": None, "old": "lead", "new": "customer"}
        async with env.rt.sessions() as s, s.begin():
            job_id = await jobs.add(
                s, jobs.JobInput(key, LIFECYCLE, "event", hid, payload=payload), now=utcnow()
            )
            assert job_id is not None
            # a worker got as far as sending, then died
            (claimed,) = await jobs.claim(
                s, worker="gone", limit=1, lease=timedelta(seconds=0), now=utcnow()
            )
            await jobs.save_state(s, claimed.id, {"calling": True})
        await env.daemon.drain_hooks()
        async with env.rt.sessions() as s:
            job = await jobs.get(s, job_id)
        assert job is not None and job.status == "dead"
        assert "may have received it" in (job.last_error or "")
        assert f"connector hooks retry {job_id}" in (job.last_error or "")
        assert env.events() == []

        assert await retry_job(env.rt.sessions, job_id) is not None
        await env.daemon.drain_hooks()
        assert env.events() == [(LIFECYCLE_EVENT, "lead", "customer", hid)]
        async with env.rt.sessions() as s:
            job = await jobs.get(s, job_id)
        assert job is not None and job.status == "succeeded"


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("subscriber", {ALL}),
        ("lead", {ALL}),
        ("marketingqualifiedlead", {ALL, QUALIFIED}),
        ("SalesQualifiedLead", {ALL, QUALIFIED}),
        ("opportunity", {ALL}),
        ("customer", {ALL, CUSTOMERS}),
        (None, {ALL}),
    ],
)
def test_desired_lists(stage: str | None, expected: set[int]) -> None:
    lists = HubSpotLists(all_contacts=ALL, qualified_leads=QUALIFIED, customers=CUSTOMERS)
    assert desired_lists(lists, stage) == expected
    assert desired_lists(HubSpotLists(customers=CUSTOMERS), stage) == expected & {CUSTOMERS}
