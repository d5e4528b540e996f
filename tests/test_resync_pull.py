"""Full resync (staged, resumable) and incremental pulls, against both sandboxes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sync_env import SyncEnv, sync_env

from connector.pull import Puller
from connector.resync import resync


def hubspot_emails(env: SyncEnv) -> set[str]:
    return {
        (o.props.get("email") or "").lower()
        for o in env.hs_state.stores["contacts"].live.values()
        if o.props.get("email")
    }


def brevo_emails(env: SyncEnv) -> set[str]:
    return {c.email.lower() for c in env.br_state.contacts.values() if c.email}


def seed_overlap(env: SyncEnv, hubspot: int, brevo: int, shared: int) -> None:
    env.hs_state.seed_contacts(hubspot)
    contacts = env.br_state.seed_contacts(brevo, seed=3)
    for c in contacts[:shared]:  # the same people on both sides, with different details
        env.hs_state.put_object("contacts", {"email": c.email, "firstname": "Shared"})


class Boom(Exception):
    pass


class CrashAfter:
    """A progress sink that raises after ``n`` records: a crash in the middle of a resync."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0

    def phase(self, name: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        self.seen += n
        if self.seen >= self.n:
            raise Boom


async def test_resync_makes_both_sides_equal_then_writes_nothing(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        seed_overlap(env, hubspot=1_200, brevo=300, shared=40)
        out = await resync(env.engine)
        assert out.counts["failed"] == 0, out.failures[:3]
        assert hubspot_emails(env) == brevo_emails(env)
        assert len(hubspot_emails(env)) == 1_200 + 300
        before = env.writes()
        again = await resync(env.engine)
        assert env.writes() == before, again.summary.as_dict()
        assert again.counts["failed"] == 0


async def test_dry_run_writes_nothing_and_counts_the_plan(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        seed_overlap(env, hubspot=150, brevo=60, shared=10)
        before = env.writes()
        out = await resync(env.engine, dry_run=True)
        assert env.writes() == before
        summary = out.summary.as_dict()
        assert summary["creates"] == {"brevo": 150, "hubspot": 50}


async def test_interrupted_resync_resumes_with_nothing_lost_or_doubled(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        seed_overlap(env, hubspot=2_500, brevo=200, shared=20)
        with pytest.raises(Boom):
            await resync(env.engine, progress=CrashAfter(200 + 1_000))  # stage, then 1 batch
        out = await resync(env.engine)
        assert out.counts["resumed"] == 1
        assert out.counts["failed"] == 0
        assert len(env.br_state.contacts) == 2_500 + 200  # no duplicates
        assert len(env.hs_state.stores["contacts"].live) == 2_500 + 200
        assert hubspot_emails(env) == brevo_emails(env)


async def test_incremental_pulls_carry_edits_both_ways_and_settle(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        seed_overlap(env, hubspot=30, brevo=10, shared=5)
        puller = Puller(env.engine, lookback=timedelta(seconds=0), clock=env.clock.now)
        await puller.pull("hubspot")  # first pull: a full resync
        env.clock.advance(60)
        contact = next(iter(env.br_state.contacts.values()))
        env.br_state.edit_contact(contact.email, {"FIRSTNAME": "Edited-in-Brevo"})
        hs_id = next(iter(env.hs_state.stores["contacts"].live))
        env.hs_state.put_object("contacts", {"lastname": "Edited-in-HubSpot"}, hs_id)
        env.clock.advance(60)
        await puller.pull("hubspot")
        await puller.pull("brevo")
        hs_names = {o.props.get("firstname") for o in env.hs_state.stores["contacts"].live.values()}
        assert "Edited-in-Brevo" in hs_names
        assert any(
            c.attributes.get("LASTNAME") == "Edited-in-HubSpot"
            for c in env.br_state.contacts.values()
        )
        before = env.writes()
        env.clock.advance(60)
        await puller.pull("hubspot")
        await puller.pull("brevo")
        assert env.writes() == before
