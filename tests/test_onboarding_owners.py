"""Owner assignment: the strategies as properties (hypothesis), the look-ups against the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from connector.config import HubSpotSettings
from connector.errors import ConfigError
from connector.hubspot import HubSpotClient
from connector.onboarding.owners import (
    OwnerInfo,
    first_matching_rule,
    owner_info,
    owner_loads,
    pick_owner,
    team_members,
)
from connector.onboarding.settings import OwnerRule, OwnerSettings
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app

ids = st.lists(st.integers(1, 999).map(str), min_size=1, max_size=6, unique=True)
words = st.sampled_from(["Norway", "norway ", "NORWAY", "Sweden", "lead", "customer", "", "1-10"])
contacts = st.dictionaries(
    st.sampled_from(["country", "lifecyclestage", "company_size", "city"]),
    st.one_of(st.none(), words),
)


# --- round_robin -------------------------------------------------------------------------------


@given(ids, st.integers(0, 10_000))
def test_round_robin_cycles_through_the_ids_in_order(owner_ids: list[str], seq: int) -> None:
    s = OwnerSettings(strategy="round_robin", owner_ids=owner_ids)
    n = len(owner_ids)
    picks = [pick_owner(s, {}, sequence=seq + i) for i in range(n)]
    assert sorted(picks) == sorted(owner_ids)  # every owner once per lap
    assert picks[0] == owner_ids[seq % n]
    assert pick_owner(s, {}, sequence=seq + n) == picks[0]


@given(ids, ids, st.integers(0, 1000))
def test_round_robin_over_a_team_uses_its_members(
    owner_ids: list[str], members: list[str], seq: int
) -> None:
    s = OwnerSettings(strategy="round_robin", owner_ids=owner_ids, team_id="501")
    assert pick_owner(s, {}, sequence=seq, candidates=members) == members[seq % len(members)]
    with pytest.raises(ValueError, match="candidates"):
        pick_owner(s, {}, sequence=seq)
    with pytest.raises(ConfigError, match="team 501 has no active owners"):
        pick_owner(s, {}, sequence=seq, candidates=[])


# --- least_loaded ------------------------------------------------------------------------------


@given(ids, st.data())
def test_least_loaded_takes_the_fewest_and_ties_go_to_the_first(
    owner_ids: list[str], data: st.DataObject
) -> None:
    loads = {o: data.draw(st.integers(0, 5)) for o in owner_ids}
    s = OwnerSettings(strategy="least_loaded", owner_ids=owner_ids)
    got = pick_owner(s, {}, sequence=data.draw(st.integers(0, 99)), loads=loads)
    assert loads[got] == min(loads.values())
    assert got == next(o for o in owner_ids if loads[o] == min(loads.values()))


def test_least_loaded_needs_every_load() -> None:
    s = OwnerSettings(strategy="least_loaded", owner_ids=["1", "2"])
    with pytest.raises(ValueError, match="owner_loads"):
        pick_owner(s, {}, sequence=0)
    with pytest.raises(ValueError, match="no load known for owner"):
        pick_owner(s, {}, sequence=0, loads={"1": 3})


# --- rules -------------------------------------------------------------------------------------

RULES = [
    OwnerRule(when={"country": ["Norway", "Sweden"], "lifecyclestage": "customer"}, owner_id="7"),
    OwnerRule(when={"country": "norway"}, owner_ids=["8", "9"]),
    OwnerRule(when={"company_size": "1-10"}, owner_id="10"),
]


def _norm(v: str | None) -> str | None:
    return None if v is None else v.strip().casefold()


def _reference(contact: dict[str, str | None], seq: int, default: str | None) -> str:
    """The rules written out by hand, independently of the implementation."""
    country, stage, size = (
        _norm(contact.get("country")),
        _norm(contact.get("lifecyclestage")),
        _norm(contact.get("company_size")),
    )
    if country in ("norway", "sweden") and stage == "customer":
        return "7"
    if country == "norway":
        return ["8", "9"][seq % 2]
    if size == "1-10":
        return "10"
    return default if default else ["1", "2", "3"][seq % 3]


@given(contacts, st.integers(0, 100), st.sampled_from([None, "42"]))
def test_rules_first_match_case_insensitive_then_default_then_round_robin(
    contact: dict[str, str | None], seq: int, default: str | None
) -> None:
    s = OwnerSettings(
        strategy="rules", rules=RULES, owner_ids=["1", "2", "3"], default_owner_id=default
    )
    assert pick_owner(s, contact, sequence=seq) == _reference(contact, seq, default)


@given(contacts, st.integers(0, 100), st.sampled_from(["round_robin", "least_loaded", "rules"]))
def test_an_existing_owner_is_kept_whatever_the_strategy(
    contact: dict[str, str | None], seq: int, strategy: Any
) -> None:
    s = OwnerSettings(strategy=strategy, owner_ids=["1", "2"], rules=RULES)
    owned = {**contact, "hubspot_owner_id": " 555 "}
    assert pick_owner(s, owned, sequence=seq, loads={"1": 0, "2": 0}) == "555"


def test_rules_without_match_default_or_ids_is_a_config_error() -> None:
    s = OwnerSettings(strategy="rules", rules=RULES)
    assert first_matching_rule(RULES, {"country": "Denmark"}) is None
    with pytest.raises(ConfigError, match=r"onboarding\.owners\.owner_ids"):
        pick_owner(s, {"country": "Denmark"}, sequence=0)
    assert pick_owner(s, {"country": " NORWAY"}, sequence=1) == "9"


def test_owner_info_name() -> None:
    assert OwnerInfo("1", "a@x.test", "Ada", "Lovelace").name == "Ada Lovelace"
    assert OwnerInfo("1", "a@x.test", None, " ").name == "a@x.test"
    assert OwnerInfo("1", None, None, None).name == "owner 1"


# --- look-ups against the HubSpot sandbox ------------------------------------------------------


@pytest.fixture
def hubspot_state() -> HubSpotState:
    state = HubSpotState(rate_limits=False)
    state.add_owner("201", "kari@sandbox-crm.test", "Kari", "Nordmann", teams=[("77", "CS")])
    state.add_owner(
        "202", "ola@sandbox-crm.test", "Ola", "Hansen", teams=[("88", "S"), ("77", "CS")]
    )
    state.add_owner(
        "203", "gone@sandbox-crm.test", "Gone", "User", teams=[("77", "CS")], archived=True
    )
    return state


@pytest.fixture
async def hubspot(hubspot_state: HubSpotState) -> AsyncIterator[HubSpotClient]:
    settings = HubSpotSettings(
        base_url="http://hubspot.sandbox", access_token=SecretStr("sandbox-token"), max_retries=2
    )
    transport = httpx.ASGITransport(app=create_hubspot_app(hubspot_state))
    async with HubSpotClient(settings, transport=transport) as client:
        yield client


async def test_owner_loads_counts_owned_contacts_with_one_search_each(
    hubspot: HubSpotClient, hubspot_state: HubSpotState
) -> None:
    for i, owner in enumerate(["201", "201", "201", "202", None]):
        props = {"email": f"c{i}@example.test"}
        if owner:
            props["hubspot_owner_id"] = owner
        hubspot_state.put_object("contacts", props)
    before = hubspot_state.log.count(contains="/search")
    loads = await owner_loads(hubspot, ["201", "202", "71011001", "201"])
    assert loads == {"201": 3, "202": 1, "71011001": 0}
    assert hubspot_state.log.count(contains="/search") - before == 3
    s = OwnerSettings(strategy="least_loaded", owner_ids=["201", "202", "71011001"])
    assert pick_owner(s, {}, sequence=0, loads=loads) == "71011001"


async def test_team_members_are_the_active_owners_of_the_team(hubspot: HubSpotClient) -> None:
    assert await team_members(hubspot, "77") == ["201", "202"]
    assert await team_members(hubspot, "88") == ["202"]
    assert await team_members(hubspot, "999") == []


async def test_owner_info_reads_one_owner(hubspot: HubSpotClient) -> None:
    info = await owner_info(hubspot, "202")
    assert info == OwnerInfo("202", "ola@sandbox-crm.test", "Ola", "Hansen")
    assert info.name == "Ola Hansen"
    with pytest.raises(ConfigError, match="owner 404404 does not exist"):
        await owner_info(hubspot, "404404")
