"""The onboarding hook, in process, against both sandboxes on loopback: who enrolls, the steps
in order, each once, retries and the dead-letter state, quiet hours, the per-person cap.

The step functions (slot finder, owner picker, calendar provider, composer) are the
stand-ins of ``onboarding_fakes`` with the real signatures: these tests are about the runner.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import onboarding_fakes
import pytest
from daemon_env import CliEnv, cli_env
from hypothesis import given
from hypothesis import strategies as st

from connector.config import Settings, load_config
from connector.daemon import Daemon
from connector.engine import SyncEvent
from connector.onboarding.enroll import ONBOARDING
from connector.onboarding.runner import next_open, retry_job
from connector.onboarding.settings import WEEKDAYS, QuietHours
from connector.runtime import Runtime
from connector.store import db, jobs

OWNERS = ["71011001", "71011002"]


def onboarding_yaml(**extra: str) -> str:
    lines = [
        "onboarding:",
        "  enabled: true",
        '  sender: {email: success@example.com, name: "Ada Lovelace"}',
        '  company: {name: "Example Ltd", description: "We make examples."}',
        f"  owners: {{strategy: round_robin, owner_ids: {OWNERS}}}",
        "  calendar: {provider: hubspot_meetings, timezone: Europe/Oslo, min_notice_hours: 24}",
        "  email: {tags: [onboarding, welcome]}",
    ]
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Env:
    cli: CliEnv
    rt: Runtime
    daemon: Daemon
    composer: onboarding_fakes.Composer

    @property
    def settings(self) -> Settings:
        return self.rt.settings

    def create_contact(self, email: str, **props: str) -> str:
        values = {"email": email, "firstname": "Grace", "lastname": "Hopper", **props}
        return self.cli.servers.hubspot.put_object("contacts", values)

    def emails_to(self, email: str) -> list[dict[str, object]]:
        out = self.cli.servers.brevo.outbox
        return [m.payload for m in out if email in m.to]

    def linked(self, kind: str, hubspot_id: str) -> list[int]:
        """The live ``kind`` records (meetings, notes) associated to the contact."""
        hs = self.cli.servers.hubspot
        return [
            tid
            for tid, _ in hs.associations_of("contacts", int(hubspot_id), kind)
            if hs.stores[kind].get(tid) is not None
        ]

    async def cycle(self) -> None:
        await self.daemon.run_once(reconcile=False)

    async def jobs(self, hubspot_id: str) -> list[jobs.JobRecord]:
        async with self.rt.sessions() as s:
            found = await jobs.list_jobs(s, hook=ONBOARDING, hubspot_id=hubspot_id)
        return sorted(found, key=lambda j: j.id)


@asynccontextmanager
async def onboarding_env(
    tmp_path: Path, composer: onboarding_fakes.Composer | None = None, **extra: str
) -> AsyncIterator[Env]:
    composer = composer or onboarding_fakes.Composer()
    onboarding_fakes.install(composer)
    async with cli_env(tmp_path, hubspot=4, brevo=2) as env:
        env.config.write_text(
            env.config.read_text(encoding="utf-8") + onboarding_yaml(**extra), encoding="utf-8"
        )
        settings = load_config(env.config)
        db.upgrade(env.db_url)
        async with Runtime.open(settings) as rt:
            daemon = Daemon(rt)
            await daemon.prepare()
            yield Env(env, rt, daemon, composer)


async def test_a_new_hubspot_contact_is_onboarded_once_and_the_existing_base_never(
    tmp_path: Path,
) -> None:
    async with onboarding_env(tmp_path) as env:
        await env.cycle()  # the initial sync: the existing base is not enrolled
        async with env.rt.sessions() as s:
            assert await jobs.enrollment_counts(s, ONBOARDING) == dict.fromkeys(
                ("active", "done", "skipped", "dead", "cancelled"), 0
            )
        hid = env.create_contact("grace@example.com")
        await env.cycle()

        listed = await env.jobs(hid)
        assert [(j.step, j.status, j.attempts) for j in listed] == [
            ("assign_owner", "succeeded", 1),
            ("book_call", "succeeded", 1),
            ("compose_email", "succeeded", 1),
            ("send_email", "succeeded", 1),
            ("log_note", "succeeded", 1),
        ]
        results = {j.step: j.result or {} for j in listed}
        assert results["assign_owner"] == {"owner_id": OWNERS[0], "assigned": True}
        hs = env.cli.servers.hubspot
        assert (hs.get_object("contacts", hid) or {}).get("hubspot_owner_id") == OWNERS[0]

        (mail,) = env.emails_to("grace@example.com")
        assert mail["subject"] == "Welcome to Example Ltd, Grace"
        assert mail["sender"] == {"email": "success@example.com", "name": "Ada Lovelace"}
        assert mail["tags"] == ["onboarding", "welcome"]
        assert mail["headers"] == {"IdempotencyKey": f"onboarding:{hid}:send_email"}
        assert results["send_email"]["message_id"]
        assert "html" not in results["compose_email"]  # the body is dropped once sent
        assert len(results["compose_email"]["html_sha256"]) == 64

        (meeting,) = env.linked("meetings", hid)
        assert results["book_call"]["event_id"] == str(meeting)
        start = datetime.fromisoformat(results["book_call"]["start"])
        assert start >= datetime.now(UTC) + timedelta(hours=24)  # min_notice_hours
        (note,) = env.linked("notes", hid)
        body = (hs.get_object("notes", note) or {}).get("hs_note_body") or ""
        assert f"onboarding:{hid}:log_note" in body
        assert "Welcome to Example Ltd, Grace" in body and "Alice Martin" in body
        async with env.rt.sessions() as s:
            found = await jobs.find_enrollment(s, ONBOARDING, hid)
        assert found is not None and (found.source, found.status) == ("new", "done")

        # nothing runs twice: more cycles send, book and log nothing more
        await env.cycle()
        await env.cycle()
        assert len(env.emails_to("grace@example.com")) == 1
        assert len(env.linked("meetings", hid)) == 1 and len(env.linked("notes", hid)) == 1
        assert len(env.cli.servers.brevo.outbox) == 1  # the seeded base got nothing


async def test_round_robin_and_an_existing_owner_is_kept(tmp_path: Path) -> None:
    async with onboarding_env(tmp_path) as env:
        await env.cycle()
        first = env.create_contact("one@example.com")
        kept = env.create_contact("two@example.com", hubspot_owner_id="71011003")
        second = env.create_contact("three@example.com")
        await env.cycle()
        hs = env.cli.servers.hubspot
        owners = {
            h: (hs.get_object("contacts", h) or {}).get("hubspot_owner_id")
            for h in (first, kept, second)
        }
        assert owners == {first: OWNERS[0], kept: "71011003", second: OWNERS[1]}
        (assigned,) = [j for j in await env.jobs(kept) if j.step == "assign_owner"]
        assert assigned.result == {"owner_id": "71011003", "assigned": False}


async def test_a_contact_created_before_the_hook_was_enabled_is_skipped(tmp_path: Path) -> None:
    async with onboarding_env(tmp_path) as env:
        # in HubSpot before the hook, without an e-mail: not synced by the initial sync
        hid = env.cli.servers.hubspot.put_object("contacts", {"firstname": "Old"})
        async with env.rt.sessions() as s, s.begin():
            await jobs.set_enabled(s, ONBOARDING, False)
            await jobs.set_enabled(
                s, ONBOARDING, True, now=datetime.now(UTC) + timedelta(seconds=1)
            )
        await env.cycle()
        env.cli.servers.hubspot.put_object("contacts", {"email": "old@example.com"}, hid)
        await env.cycle()  # now synced, as new to Brevo: enrolled, but it predates the hook
        (job,) = await env.jobs(hid)
        assert job.status == "succeeded" and job.result == {
            "skipped": "created before the hook was enabled"
        }
        async with env.rt.sessions() as s:
            found = await jobs.find_enrollment(s, ONBOARDING, hid)
        assert found is not None and found.status == "skipped"
        assert "connector hooks enroll" in (found.reason or "")
        assert env.emails_to("old@example.com") == []


async def test_a_failing_step_backs_off_then_is_dead_and_retry_revives_it(tmp_path: Path) -> None:
    composer = onboarding_fakes.Composer(fail_first=2)
    async with onboarding_env(tmp_path, composer, max_attempts="2", retry_base_seconds="60") as env:
        skew = [timedelta(0)]
        env.daemon.hook_runner.clock = lambda: datetime.now(UTC) + skew[0]
        await env.cycle()
        hid = env.create_contact("flaky@example.com")
        await env.cycle()
        compose = next(j for j in await env.jobs(hid) if j.step == "compose_email")
        assert (compose.status, compose.attempts) == ("failed", 1)
        assert compose.updated_at is not None
        assert compose.next_attempt_at == compose.updated_at + timedelta(seconds=60)
        await env.daemon.drain_hooks()  # not due yet: nothing happens
        assert composer.calls == 1
        skew[0] = timedelta(seconds=61)
        await env.daemon.drain_hooks()
        compose = next(j for j in await env.jobs(hid) if j.step == "compose_email")
        assert (compose.status, compose.attempts) == ("dead", 2)
        assert "composer down (call 2)" in (compose.last_error or "")
        async with env.rt.sessions() as s:
            found = await jobs.find_enrollment(s, ONBOARDING, hid)
            failed = await jobs.list_jobs(s, failed_only=True)
        assert found is not None and found.status == "dead"
        assert [j.id for j in failed] == [compose.id]
        assert env.emails_to("flaky@example.com") == []

        assert await retry_job(env.rt.sessions, compose.id) is not None
        await env.daemon.drain_hooks()
        steps = [(j.step, j.status) for j in await env.jobs(hid)]
        assert steps[-1] == ("log_note", "succeeded") and len(steps) == 5
        assert len(env.emails_to("flaky@example.com")) == 1
        async with env.rt.sessions() as s:
            found = await jobs.find_enrollment(s, ONBOARDING, hid)
        assert found is not None and found.status == "done"
        # the steps before the failure were not repeated
        assert len(env.linked("meetings", hid)) == 1


async def test_quiet_hours_make_the_send_wait_without_counting_an_attempt(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    today = WEEKDAYS[datetime.now(ZoneInfo("Europe/Oslo")).weekday()]
    others = [d for d in WEEKDAYS if d != today and d != WEEKDAYS[(WEEKDAYS.index(today) + 6) % 7]]
    window = f"{{days: [{', '.join(others)}], start: '08:00', end: '20:00'}}"
    async with onboarding_env(tmp_path, send_window=window) as env:
        await env.cycle()
        hid = env.create_contact("night@example.com")
        await env.cycle()
        send = next(j for j in await env.jobs(hid) if j.step == "send_email")
        assert (send.status, send.attempts) == ("pending", 0)
        assert send.next_attempt_at > datetime.now(UTC) + timedelta(hours=1)
        assert "quiet hours" in (send.last_error or "")
        assert env.emails_to("night@example.com") == []
        assert [j.step for j in await env.jobs(hid)][-1] == "send_email"  # no note yet


async def test_the_same_person_is_not_reenrolled_unless_configured_and_then_capped(
    tmp_path: Path,
) -> None:
    async with onboarding_env(tmp_path, reenroll="true") as env:
        hooks = env.rt.engines["contacts"].on_events
        assert hooks is not None
        await env.cycle()
        first = env.create_contact("again@example.com")
        await env.cycle()
        assert len(env.emails_to("again@example.com")) == 1
        # the same person under a new HubSpot id (deleted, then created again)
        second = env.create_contact("again.new@example.com")
        event = SyncEvent("created", "contacts", "hubspot", second, "77", "again@example.com")
        async with env.rt.sessions() as s, s.begin():
            await hooks(s, [event], "incremental")
        await env.daemon.drain_hooks()
        send = [j for j in await env.jobs(second) if j.step == "send_email"]
        assert send[0].result is not None and send[0].result["sent"] is False  # capped at 1
        assert "max_emails_per_contact" in send[0].result["reason"]
        note = [j for j in await env.jobs(second) if j.step == "log_note"]
        assert note[0].status == "succeeded"
        assert env.emails_to("again.new@example.com") == []
        assert len(env.emails_to("again@example.com")) == 1
        del first


async def test_without_reenroll_the_same_person_is_not_enrolled_again(tmp_path: Path) -> None:
    async with onboarding_env(tmp_path) as env:
        hooks = env.rt.engines["contacts"].on_events
        assert hooks is not None
        one = SyncEvent("created", "contacts", "hubspot", "901", "1", "Same@Example.com")
        two = SyncEvent("created", "contacts", "hubspot", "902", "2", "same@example.com")
        old = SyncEvent("created", "contacts", "brevo", "903", "3", "brevo@example.com")
        async with env.rt.sessions() as s, s.begin():
            await hooks(s, [one, old], "incremental")
            await hooks(s, [two], "incremental")
            await hooks(
                s, [SyncEvent("created", "contacts", "hubspot", "904", "4", "r@x.io")], "resync"
            )
            await hooks(
                s, [SyncEvent("created", "contacts", "hubspot", "905", "5", "c@x.io")], "reconcile"
            )
        async with env.rt.sessions() as s:
            listed = await jobs.list_jobs(s, hook=ONBOARDING)
        assert [j.hubspot_id for j in listed] == ["901"]


def test_reenroll_off_is_the_default() -> None:
    from connector.onboarding.settings import OnboardingSettings

    cfg = OnboardingSettings.model_validate(
        {
            "sender": {"email": "a@example.com"},
            "company": {"name": "X"},
            "owners": {"owner_ids": ["1"]},
        }
    )
    assert cfg.reenroll is False and cfg.max_emails_per_contact == 1


# --- quiet hours (pure) --------------------------------------------------------------------

windows = st.builds(
    QuietHours,
    days=st.lists(st.sampled_from(WEEKDAYS), min_size=1, unique=True),
    start=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    end=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
)


@given(
    window=windows,
    now=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    zone=st.sampled_from(["Europe/Oslo", "America/New_York", "UTC", "Asia/Kolkata"]),
)
def test_next_open_is_now_inside_the_window_else_a_later_opening(
    window: QuietHours, now: datetime, zone: str
) -> None:
    from zoneinfo import ZoneInfo

    from connector.onboarding.runner import _open_at

    opens = next_open(window, zone, now)
    assert opens >= now
    if window.start == window.end:
        return
    inside = _open_at(window, now.astimezone(ZoneInfo(zone)))
    assert (opens == now) == inside
    if not inside:
        local = opens.astimezone(ZoneInfo(zone))
        assert local.time() == window.start or local.fold or opens - now >= timedelta(days=7)


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (datetime(2026, 3, 6, 21, 0), datetime(2026, 3, 9, 8, 0)),  # Friday night → Monday
        (datetime(2026, 3, 9, 7, 59), datetime(2026, 3, 9, 8, 0)),
        (datetime(2026, 3, 9, 12, 0), datetime(2026, 3, 9, 12, 0)),  # open: now
    ],
)
def test_next_open_examples(local: datetime, expected: datetime) -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Oslo")
    window = QuietHours(days=["mon", "tue", "wed", "thu", "fri"], start=time(8), end=time(20))
    got = next_open(window, "Europe/Oslo", local.replace(tzinfo=tz).astimezone(UTC))
    assert got == expected.replace(tzinfo=tz)


async def test_hooks_cli_lists_retries_and_counts_the_existing_base(tmp_path: Path) -> None:
    composer = onboarding_fakes.Composer(fail_first=99)
    async with onboarding_env(tmp_path, composer, max_attempts="1") as env:
        await env.cycle()
        hid = env.create_contact("flaky@example.com")
        await env.cycle()
        dead = next(j for j in await env.jobs(hid) if j.step == "compose_email")
        assert dead.status == "dead"

        code, out, err = await env.cli.cli("hooks", "list", "--failed")
        assert code == 0, err
        row = next(line for line in out.splitlines() if line.strip().startswith(f"│ {dead.id} "))
        assert hid in row and "compose_email" in row and "dead" in row
        assert "composer down" in out and "f***@example.com" in out
        assert "flaky@example.com" not in out  # e-mails masked (logging.log_emails is off)
        assert "connector hooks retry ID" in out

        code, out, _ = await env.cli.cli("hooks", "retry", str(dead.id), "999999")
        assert code == 1 and f"✓ {dead.id} queued again" in out
        code, out, _ = await env.cli.cli("hooks", "list", "--json")
        assert code == 0
        assert {"id": dead.id, "status": "pending", "attempts": 0}.items() <= next(
            r for r in json.loads(out) if r["id"] == dead.id
        ).items()

        # the seeded base (4 HubSpot + 2 Brevo contacts, all linked) is counted, not enrolled
        code, out, _ = await env.cli.cli("hooks", "enroll", "--dry-run")
        assert code == 0 and "6 existing contact(s) would be enrolled" in out
        code, out, err = await env.cli.cli("hooks", "enroll", "--yes")
        assert code == 2 and "onboarding.enroll: existing_too" in err
        async with env.rt.sessions() as s:
            assert len(await jobs.list_jobs(s, hook=ONBOARDING)) == 3  # unchanged


# --- the demo -------------------------------------------------------------------------------


async def test_the_demo_shows_the_booked_call_and_names_the_rendered_email(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    from connector.demo import run_demo

    onboarding_fakes.install()

    async def checks_skipped(settings: Settings) -> int:
        return 0

    code = await run_demo(tmp_path, checks_skipped)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Onboarding of the new HubSpot contact grace.hopper@demo.example:" in out
    assert re.search(r"call booked +\w{3} \d\d \w{3} \d{4} \d\d:\d\d–\d\d:\d\d Europe/Oslo", out)
    assert "welcome e-mail  “Welcome to Example Ltd, Grace” sent through Brevo" in out
    named = re.search(r"rendered to +(\S+)", out)
    assert named is not None
    rendered = await asyncio.to_thread(Path(named.group(1)).read_text, encoding="utf-8")
    assert "Welcome to Example Ltd, Grace" in rendered
    assert "timeline note" in out
    assert out.rstrip().endswith("API writes: HubSpot 0, Brevo 0")  # the hooks settled too
