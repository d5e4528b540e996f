"""Associations of companies and deals, both ways, and the contacts' COMPANY_NAME.

Contacts are synced first by the contact engine (their links translate ids); then a
company/deal cycle carries links added or removed on either side, and a removal is never
added back.
"""

from __future__ import annotations

from pathlib import Path

from crm_env import CrmEnv, crm_env
from hypothesis import given
from hypothesis import strategies as st

from connector.objects.assoc_merge import merge_sets


async def setup(bed: CrmEnv) -> tuple[str, str, str, int]:
    """Ann (contact, synced) and Acme (company, synced): HubSpot ids, Brevo ids."""
    ann = bed.contact("ann@example.com", firstname="Ann")
    await bed.contacts_cycle()
    hid = bed.hs_create("companies", name="Acme", domain="acme.com")
    await bed.cycle("companies")
    return ann, hid, await bed.brevo_id("companies", hid), bed.br_contact_id("ann@example.com")


async def test_hubspot_association_reaches_brevo_and_removal_too(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        ann, hid, bid, ann_br = await setup(bed)
        bed.hs_associate("contacts", ann, "companies", hid)
        await bed.cycle("companies")
        assert bed.br_get("companies", bid).linked_contacts == [ann_br]  # type: ignore[union-attr]
        assert await bed.assoc_base("companies", "contacts", hid) == {ann}
        await bed.assert_quiet("companies")
        bed.hs_disassociate("contacts", ann, "companies", hid)
        await bed.cycle("companies")
        assert bed.br_get("companies", bid).linked_contacts == []  # type: ignore[union-attr]
        await bed.assert_quiet("companies")


async def test_brevo_link_reaches_hubspot_and_unlink_is_not_added_back(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        ann, hid, bid, ann_br = await setup(bed)
        bed.br_link_contact("companies", bid, ann_br)
        await bed.cycle("companies")
        assert bed.hs_assoc("companies", hid, "contacts") == {ann}
        await bed.assert_quiet("companies")
        bed.br_link_contact("companies", bid, ann_br, add=False)
        await bed.cycle("companies")
        assert bed.hs_assoc("companies", hid, "contacts") == set()
        assert bed.br_get("companies", bid).linked_contacts == []  # type: ignore[union-attr]
        await bed.assert_quiet("companies")


async def test_company_name_fills_primary_contacts_once(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        ann, hid, _, _ = await setup(bed)
        bed.hs_associate("contacts", ann, "companies", hid)  # Ann's primary company
        await bed.cycle("companies")
        assert bed.env.br_by_email("ann@example.com").all_attributes()["COMPANY_NAME"] == "Acme"  # type: ignore[union-attr]
        imports = bed.env.br_state.calls.count(contains="/contacts/import")
        await bed.cycle("companies")
        assert bed.env.br_state.calls.count(contains="/contacts/import") == imports
        bed.hs_edit("companies", hid, name="Acme Corp")
        out = await bed.cycle("companies")
        assert out.counts["company_name_writes"] == 1
        assert (
            bed.env.br_by_email("ann@example.com").all_attributes()["COMPANY_NAME"] == "Acme Corp"
        )  # type: ignore[union-attr]


async def test_association_webhook_ids_sync_the_record(tmp_path: Path) -> None:
    async with crm_env(tmp_path) as bed:
        ann, hid, bid, ann_br = await setup(bed)
        bed.hs_associate("companies", hid, "contacts", ann)
        await bed.companies.sync_ids(hubspot_ids=[hid])
        assert bed.br_get("companies", bid).linked_contacts == [ann_br]  # type: ignore[union-attr]


async def test_deal_links_to_contact_and_company_both_ways(tmp_path: Path) -> None:
    async with crm_env(tmp_path, ("companies", "deals")) as bed:
        ann, co, co_br, ann_br = await setup(bed)
        deal = bed.hs_create(
            "deals", dealname="Big", amount="100", pipeline="default", dealstage="qualifiedtobuy"
        )
        bed.hs_associate("deals", deal, "contacts", ann)
        bed.hs_associate("deals", deal, "companies", co)
        await bed.cycle("deals")
        deal_br = await bed.brevo_id("deals", deal)
        rec = bed.br_get("deals", deal_br)
        assert rec is not None
        assert rec.linked_contacts == [ann_br] and rec.linked_other == [co_br]
        await bed.assert_quiet("deals")
        # unlinked in Brevo → removed in HubSpot
        bed.env.clock.advance(1)
        rec.linked_contacts.remove(ann_br)
        bed.env.br_state.crm.touch(rec)
        await bed.cycle("deals")
        assert bed.hs_assoc("deals", deal, "contacts") == set()
        assert bed.hs_assoc("deals", deal, "companies") == {co}
        await bed.assert_quiet("deals")


@given(
    h=st.frozensets(st.sampled_from("abcdef")),
    b=st.frozensets(st.sampled_from("abcdef")),
    base=st.none() | st.frozensets(st.sampled_from("abcdef")),
)
def test_merge_sets_converges(
    h: frozenset[str], b: frozenset[str], base: frozenset[str] | None
) -> None:
    plan = merge_sets(h, b, base)
    new_h = (h | plan.hubspot_add) - plan.hubspot_remove
    new_b = (b | plan.brevo_add) - plan.brevo_remove
    assert new_h == new_b == plan.result
    # applying it again changes nothing
    again = merge_sets(new_h, new_b, plan.result)
    assert again.writes == 0
    # an id both sides keep is never removed; with no base nothing is removed
    assert (h & b) <= plan.result
    if base is None:
        assert plan.result == h | b
    # a removal on one side is not added back
    for x in base or ():
        if (x in h) != (x in b):
            assert x not in plan.result
