"""A test bed for companies and deals: the contact sync bed (:mod:`sync_env`) plus one
:class:`~connector.objects.crm_sync.CrmObjectSync` per object type, and helpers to edit
companies, deals and their links on either side as a person would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync_env import ROOT, SyncEnv, sync_env

from connector.engine import Outcome
from connector.mapping import Mapping, check_mapping_text, load_mapping
from connector.objects.crm_sync import CrmObjectSync
from connector.sandbox.brevo_crm import CrmRecord
from connector.store import associations as assoc_store
from connector.store import links as ledger

HS_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "contractsent",
    "closedwon",
    "closedlost",
)


def deals_mapping(pipeline_id: str, stage_ids: list[str]) -> Mapping:
    """mappings/deals.yaml with its value maps filled with the Brevo sandbox's ids."""
    text = (ROOT / "mappings" / "deals.yaml").read_text()
    text = text.replace("REPLACE-WITH-BREVO-PIPELINE-ID", f'"{pipeline_id}"')
    stages = "\n".join(f'        {hs}: "{br}"' for hs, br in zip(HS_STAGES, stage_ids, strict=True))
    start = text.index("        appointmentscheduled:")
    end = text.index("\n\n", start)
    text = text[:start] + stages + text[end:]
    mapping, problems = check_mapping_text(text, "deals.yaml")
    assert mapping is not None, [str(p) for p in problems]
    return mapping


@dataclass
class CrmEnv:
    env: SyncEnv
    syncs: dict[str, CrmObjectSync] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)

    @property
    def companies(self) -> CrmObjectSync:
        return self.syncs["companies"]

    @property
    def deals(self) -> CrmObjectSync:
        return self.syncs["deals"]

    # --- HubSpot side --------------------------------------------------------------------------

    def hs_create(self, object_type: str, **props: Any) -> str:
        self.env.clock.advance(1)
        return self.env.hs_state.put_object(object_type, props)

    def hs_edit(self, object_type: str, hid: str, **props: Any) -> None:
        self.env.clock.advance(1)
        self.env.hs_state.put_object(object_type, props, hid)

    def hs_get(self, object_type: str, hid: str) -> dict[str, str | None] | None:
        return self.env.hs_state.get_object(object_type, hid)

    def hs_ids(self, object_type: str) -> list[str]:
        return [str(i) for i in sorted(self.env.hs_state.stores[object_type].live)]

    def hs_associate(self, from_type: str, fid: str, to_type: str, tid: str) -> None:
        self.env.clock.advance(1)
        self.env.hs_state.associate_default(from_type, int(fid), to_type, int(tid))

    def hs_disassociate(self, from_type: str, fid: str, to_type: str, tid: str) -> None:
        self.env.clock.advance(1)
        self.env.hs_state.disassociate(from_type, int(fid), to_type, int(tid))

    def hs_assoc(self, from_type: str, fid: str, to_type: str) -> set[str]:
        return {str(t) for t, _ in self.env.hs_state.associations_of(from_type, int(fid), to_type)}

    # --- Brevo side ----------------------------------------------------------------------------

    def br_store(self, object_type: str) -> dict[str, CrmRecord]:
        crm = self.env.br_state.crm
        return crm.companies if object_type == "companies" else crm.deals

    def br_create(self, object_type: str, name: str, **attrs: Any) -> str:
        self.env.clock.advance(1)
        kind = "company" if object_type == "companies" else "deal"
        return self.env.br_state.crm.create(kind, name, attrs).id

    def br_edit(self, object_type: str, bid: str, **attrs: Any) -> None:
        self.env.clock.advance(1)
        rec = self.br_store(object_type)[bid]
        rec.attributes.update(attrs)
        self.env.br_state.crm.touch(rec)

    def br_get(self, object_type: str, bid: str) -> CrmRecord | None:
        return self.br_store(object_type).get(bid)

    def br_link_contact(self, object_type: str, bid: str, contact: int, add: bool = True) -> None:
        self.env.clock.advance(1)
        rec = self.br_store(object_type)[bid]
        if add and contact not in rec.linked_contacts:
            rec.linked_contacts.append(contact)
        if not add and contact in rec.linked_contacts:
            rec.linked_contacts.remove(contact)
        self.env.br_state.crm.touch(rec)

    # --- the store -----------------------------------------------------------------------------

    async def links(self, object_type: str) -> list[ledger.LinkRecord]:
        out: list[ledger.LinkRecord] = []
        async with self.env.engine.sessions() as s:
            async for batch in ledger.iter_links(s, object_type):
                out.extend(batch)
        return out

    async def brevo_id(self, object_type: str, hid: str) -> str:
        found = [lk.brevo_id for lk in await self.links(object_type) if lk.hubspot_id == hid]
        assert len(found) == 1 and found[0], f"no {object_type} link for HubSpot {hid}"
        return found[0]

    async def hubspot_id(self, object_type: str, bid: str) -> str:
        found = [lk.hubspot_id for lk in await self.links(object_type) if lk.brevo_id == bid]
        assert len(found) == 1 and found[0], f"no {object_type} link for Brevo {bid}"
        return found[0]

    async def assoc_base(self, object_type: str, to_type: str, hid: str) -> frozenset[str] | None:
        async with self.env.engine.sessions() as s:
            return (await assoc_store.load(s, object_type, to_type, [hid])).get(hid)

    # --- cycles --------------------------------------------------------------------------------

    def writes(self) -> tuple[int, int]:
        return self.env.writes()

    async def contacts_cycle(self) -> Outcome:
        self.env.clock.advance(60)
        out = await self.env.cycle()
        assert out.counts["failed"] == 0, out.failures
        return out

    async def cycle(self, object_type: str, **kw: Any) -> Outcome:
        """A full reconcile of one object type that must not fail."""
        self.env.clock.advance(60)
        out = await self.syncs[object_type].resync(**kw)
        assert out.counts["failed"] == 0, out.failures
        assert out.counts["dead_lettered"] == 0
        return out

    async def assert_quiet(self, object_type: str) -> Outcome:
        before = self.writes()
        out = await self.cycle(object_type)
        assert self.writes() == before, (out.summary.sample_diffs(), out.counts)
        assert not out.events
        return out

    def contact(self, email: str, **props: Any) -> str:
        """A HubSpot contact (synced to Brevo by the next contacts cycle)."""
        return self.env.hs_create(email=email, **props)

    def br_contact_id(self, email: str) -> int:
        c = self.env.br_by_email(email)
        assert c is not None, email
        return int(c.id)


@asynccontextmanager
async def crm_env(
    tmp_path: Path, objects: tuple[str, ...] = ("companies",)
) -> AsyncIterator[CrmEnv]:
    async with sync_env(tmp_path) as env:
        bed = CrmEnv(env)

        async def on_events(session: Any, events: Any, mode: Any) -> None:
            bed.events.extend(events)

        for object_type in objects:
            if object_type == "deals":
                crm = env.br_state.crm
                mapping = deals_mapping(crm.pipeline_id, [s["id"] for s in crm.stages])
            else:
                mapping = load_mapping(ROOT / "mappings" / f"{object_type}.yaml")
            bed.syncs[object_type] = CrmObjectSync(
                mapping=mapping,
                hubspot=env.hubspot,
                brevo=env.brevo,
                sessions=env.engine.sessions,
                import_list_ids=[10],
                import_poll_every=0.01,
                clock=env.clock.now,
                sleep=env.fake.sleep,
                on_events=on_events,
            )
        yield bed
