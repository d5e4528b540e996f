"""The calls a resync and a creation in HubSpot spend: no read the run already answered.

- phase 3 of a full resync does not read HubSpot by email for the Brevo contacts phase 2 left
  unclaimed (phase 2 listed every HubSpot record), and a HubSpot record created meanwhile is
  updated by the upsert, not duplicated;
- an import's read-back lists from after the previous read-back, not the previous imports
  again;
- a new HubSpot record is read back only when its upsert answer lacks a value HubSpot may have
  set; otherwise its EXT_ID goes to Brevo straight away.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sync_env import ROOT, SyncEnv, sync_env

from connector.engine import SyncEngine
from connector.mapping import load_mapping
from connector.pull import Puller
from connector.resync import resync


def _hubspot_emails(env: SyncEnv) -> list[str]:
    return sorted(
        (o.props.get("email") or "").lower()
        for o in env.hs_state.stores["contacts"].live.values()
        if o.props.get("email")
    )


class ClockStep:
    """A progress sink that moves the shared wall clock on after each batch (time passes
    between passes, as it does for real)."""

    def __init__(self, env: SyncEnv, seconds: float) -> None:
        self.env, self.seconds = env, seconds
        self.phases: list[str] = []

    def phase(self, name: str, total: int | None) -> None:
        self.phases.append(name)

    def advance(self, n: int) -> None:
        self.env.clock.advance(self.seconds)


async def test_phase_three_does_not_read_hubspot_by_email(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        env.hs_state.seed_contacts(30)
        env.br_state.seed_contacts(40, seed=3)  # none of them in HubSpot
        out = await resync(env.engine)
        assert out.counts["failed"] == 0, out.failures[:3]
        assert out.counts["hubspot_created"] == 40
        # one batch/read: the new records read back (calculated deal properties), none by email
        assert env.hs_state.log.count(contains="batch/read") == 1
        assert env.hs_state.log.count(contains="batch/upsert") == 1
        emails = _hubspot_emails(env)
        assert len(emails) == len(set(emails)) == 70


async def test_a_hubspot_record_created_during_phase_three_is_not_duplicated(
    tmp_path: Path,
) -> None:
    async with sync_env(tmp_path) as env:
        env.hs_state.seed_contacts(5)
        contacts = env.br_state.seed_contacts(3, seed=4)
        late = contacts[0].email

        class CreateAtPhaseThree(ClockStep):
            def phase(self, name: str, total: int | None) -> None:
                super().phase(name, total)
                if name == "Syncing Brevo-only contacts":  # after HubSpot was listed
                    env.hs_state.put_object("contacts", {"email": late, "firstname": "Late"})

        out = await resync(env.engine, progress=CreateAtPhaseThree(env, 1.0))
        assert out.counts["failed"] == 0, out.failures[:3]
        emails = _hubspot_emails(env)
        assert emails.count(late.lower()) == 1  # the upsert keyed on email updated it
        assert len(emails) == 5 + 3


async def test_an_import_read_back_does_not_list_the_previous_imports(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        env.hs_state.seed_contacts(2_500)  # two passes: 2,000 then 500 into an empty Brevo
        env.clock.advance(0.25)  # times to the millisecond
        out = await resync(env.engine, progress=ClockStep(env, 1.5))
        assert out.counts["failed"] == 0, out.failures[:3]
        assert out.counts["brevo_imported"] == 2_500
        # the stage (Brevo empty: one call), then 2 pages for the first import and 1 for the
        # second: not 3 (listing the first import's 2,000 contacts again)
        assert env.br_state.calls.count(method="GET", contains="/contacts") == 1 + 2 + 1


def _hubspot_calls(env: SyncEnv) -> list[str]:
    return [
        path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1]
        for _, path, _ in env.hs_state.log.calls
    ]


def _names_only_mapping(tmp_path: Path) -> Path:
    text = (ROOT / "mappings" / "contacts.yaml").read_text(encoding="utf-8")
    head = text.split("\nfields:", 1)[0]
    path = tmp_path / "names.yaml"
    path.write_text(
        head
        + """
fields:
  - hubspot: email
    brevo: email
    type: text
    transform: email
  - hubspot: firstname
    brevo: FIRSTNAME
    type: text
    transform: trim
  - hubspot: lastname
    brevo: LASTNAME
    type: text
    transform: trim
""",
        encoding="utf-8",
    )
    return path


async def test_a_new_hubspot_record_is_read_back_only_when_hubspot_may_have_set_values(
    tmp_path: Path,
) -> None:
    async with sync_env(tmp_path) as env:
        mapping = load_mapping(_names_only_mapping(tmp_path), default_region="FR")
        engine = SyncEngine(
            mapping=mapping,
            hubspot=env.hubspot,
            brevo=env.brevo,
            sessions=env.engine.sessions,
            import_list_ids=[10],
            import_poll_every=0.01,
            clock=env.clock.now,
        )
        full = env.br_create("full@example.org", FIRSTNAME="Ada", LASTNAME="Lovelace")
        out = await engine.sync(brevo_ids=[str(full)])
        assert out.counts["hubspot_created"] == 1, out.failures
        # read by email (absent), the upsert; every mapped value is in the upsert's answer:
        # no read-back after it, and the EXT_ID is set straight away
        assert _hubspot_calls(env) == ["batch/read", "batch/upsert"]
        found = env.hs_by_email("full@example.org")
        assert found is not None
        contact = env.br_get(full)
        assert contact is not None and contact.ext_id == found[0]

        env.hs_state.log.clear()
        partial = env.br_create("partial@example.org", FIRSTNAME="Grace")  # no LASTNAME
        out = await engine.sync(brevo_ids=[str(partial)])
        assert out.counts["hubspot_created"] == 1, out.failures
        # LASTNAME empty: HubSpot may have set lastname itself, so the record is read back
        assert _hubspot_calls(env) == ["batch/read", "batch/upsert", "batch/read"]
        found = env.hs_by_email("partial@example.org")
        assert found is not None
        contact = env.br_get(partial)
        assert contact is not None and contact.ext_id == found[0]
        env.clock.advance(60)
        before = env.writes()
        await engine.sync(brevo_ids=[str(full), str(partial)])
        assert env.writes() == before  # in step: nothing more to write


async def test_a_record_read_before_another_pass_synced_it_is_read_again(tmp_path: Path) -> None:
    """A pull lets a webhook pass run between its batches: a record of its next batch, read
    before that pass wrote to it, must not carry its old value back over the new one."""
    async with sync_env(tmp_path) as env:
        hid = env.hs_create(email="ada@example.org", firstname="Ada", lastname="Old")
        env.clock.advance(60)
        out = await env.cycle()
        assert out.counts["failed"] == 0, out.failures
        stale = [o for o in (await env.listing())[0] if o.id == hid]  # the pull's copy
        read_at = env.clock.now()
        env.clock.advance(60)
        env.br_edit("ada@example.org", LASTNAME="New")  # the webhook pass carries it over
        contact = env.br_by_email("ada@example.org")
        assert contact is not None
        await env.engine.sync(brevo_ids=[str(contact.id)])
        assert env.hs_values(hid)["lastname"] == "New"
        env.clock.advance(60)
        out = await env.engine.sync(hubspot=stale, read_at=read_at)
        assert out.counts["reread_synced_meanwhile"] == 1
        assert env.hs_values(hid)["lastname"] == "New"
        contact = env.br_by_email("ada@example.org")
        assert contact is not None and contact.attributes["LASTNAME"] == "New"


async def test_a_pull_calls_between_after_each_batch_but_the_last(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        env.hs_state.seed_contacts(5)
        puller = Puller(env.engine, lookback=timedelta(seconds=0), clock=env.clock.now)
        await puller.pull("hubspot")  # the first pull: the full resync
        env.clock.advance(60)
        for hid in env.hs_ids():
            env.hs_edit(hid, firstname="Edited")
        env.clock.advance(60)
        calls: list[int] = []

        async def between() -> None:
            calls.append(1)

        puller.batch_size = 2
        out = await puller.pull("hubspot", between=between)
        assert out.counts["hubspot_without_email"] == 0
        assert len(calls) == 2  # batches of 2, 2 and 1
