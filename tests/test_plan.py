"""The planner: examples of each rule, then Hypothesis properties.

Properties: (a) applying a plan and planning again gives no write and no ledger change
(convergence in one step, no echo); (b) a direction that forbids a flow never sees it;
(c) conflicts obey the field's rule; (d) equal sides never write; (e) transforms round-trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.plan import (
    CONFLICT_RULES,
    FIELD_DIRECTIONS,
    RUN_DIRECTIONS,
    BaseEntry,
    FieldRule,
    PairPlan,
    PairState,
    RunDirection,
    Side,
    SideRecord,
    guard_deletions,
    is_noop,
    plan_pair,
    summarize,
    value_hash,
)
from connector.transforms import (
    BooleanTransform,
    DateTransform,
    Email,
    Lower,
    NumberTransform,
    PhoneE164,
    Transform,
    Trim,
    ValueMap,
    build_chain,
    normalise_email,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=10)
BOTH = FieldRule()


def side(values: Mapping[str, str | None], at: datetime = T0, **invalid: str) -> SideRecord:
    return SideRecord("x", dict(values), at, invalid)


def base(value: str | None, origin: Side = "hubspot", at: datetime = T0) -> BaseEntry:
    return BaseEntry(value_hash(value), origin, at)


def one(
    h: str | None,
    b: str | None,
    ledger: BaseEntry | None = None,
    rule: FieldRule = BOTH,
    direction: RunDirection = "bidirectional",
    h_at: datetime = T0,
    b_at: datetime = T0,
) -> PairPlan:
    state = PairState(side({"f": h}, h_at), side({"f": b}, b_at), {"f": ledger} if ledger else None)
    return plan_pair(state, {"f": rule}, direction, now=T2)


# --- examples ------------------------------------------------------------------------------


def test_value_hash_tells_none_from_empty() -> None:
    assert value_hash(None) != value_hash("")
    assert value_hash("a") == value_hash("a")
    assert len(value_hash("a")) == 64


def test_only_hubspot_changed_goes_to_brevo() -> None:
    plan = one("new", "old", base("old"))
    action = plan.actions[0]
    assert (action.kind, action.value, action.previous) == ("to_brevo", "new", "old")
    assert action.rule_used == "hubspot_changed"
    assert action.new_base == BaseEntry(value_hash("new"), "hubspot", T2)
    assert plan.kind == "update" and plan.writes("brevo") == {"f": "new"}
    assert not is_noop(plan)


def test_only_brevo_changed_goes_to_hubspot() -> None:
    action = one("old", "new", base("old")).actions[0]
    assert (action.kind, action.value, action.rule_used) == ("to_hubspot", "new", "brevo_changed")


def test_our_own_write_read_back_is_an_echo() -> None:
    ledger = base("v", origin="hubspot", at=T1)
    action = one("v", "v", ledger, h_at=T0, b_at=T1).actions[0]
    assert action.kind == "skip_echo" and action.new_base is None
    assert one("v", "v", ledger, h_at=T0, b_at=T0).actions[0].kind == "skip_noop"


def test_equal_sides_without_a_base_are_adopted_without_a_write() -> None:
    plan = one("v", "v", None)
    assert plan.actions[0].kind == "adopt"
    assert plan.ledger_updates["f"].value_hash == value_hash("v")
    assert is_noop(plan) and plan.kind == "nothing"


@pytest.mark.parametrize(
    ("rule", "h_at", "b_at", "kind", "why"),
    [
        ("hubspot_wins", T0, T1, "conflict_to_brevo", "hubspot_wins"),
        ("brevo_wins", T1, T0, "conflict_to_hubspot", "brevo_wins"),
        ("latest_wins", T0, T1, "conflict_to_hubspot", "Brevo changed later"),
        ("latest_wins", T1, T0, "conflict_to_brevo", "HubSpot changed later"),
        ("latest_wins", T1, T1, "conflict_to_brevo", "tie"),
    ],
)
def test_conflicts_follow_the_rule_and_say_so(
    rule: str, h_at: datetime, b_at: datetime, kind: str, why: str
) -> None:
    field_rule = FieldRule(conflict=rule)  # type: ignore[arg-type]
    action = one("h", "b", base("old"), field_rule, h_at=h_at, b_at=b_at).actions[0]
    assert action.kind == kind
    assert action.rule_used == rule
    assert why in action.reason
    assert action.is_conflict


def test_first_sync_fills_an_empty_side_instead_of_erasing() -> None:
    # Brevo is "later" (a list change bumped it), but its empty value must not erase HubSpot's.
    action = one("Ada", None, None, h_at=T0, b_at=T1).actions[0]
    assert (action.kind, action.value, action.rule_used) == ("to_brevo", "Ada", "fill_empty")
    # with a base, emptying a field is a change like any other
    assert one("Ada", None, base("Ada")).actions[0].kind == "to_hubspot"


def test_a_one_way_field_source_wins_its_conflicts() -> None:
    one_way = FieldRule(direction="hubspot_to_brevo", conflict="latest_wins")
    action = one("h", "b", base("old"), one_way, h_at=T0, b_at=T1).actions[0]
    assert (action.kind, action.value, action.rule_used) == (
        "conflict_to_brevo",
        "h",
        "source_wins",
    )
    back = FieldRule(direction="brevo_to_hubspot")
    assert one("h", "b", None, back).actions[0].kind == "conflict_to_hubspot"


def test_direction_stops_a_flow_without_touching_the_base() -> None:
    one_way = FieldRule(direction="hubspot_to_brevo")
    action = one("old", "edited in brevo", base("old"), one_way).actions[0]
    assert action.kind == "skip_direction" and action.new_base is None
    assert "field direction is hubspot_to_brevo" in action.reason
    run = one("old", "new", base("old"), direction="hubspot_to_brevo").actions[0]
    assert run.kind == "skip_direction"
    assert "run direction is hubspot_to_brevo" in run.reason


def test_invalid_value_skips_that_field_only() -> None:
    state = PairState(
        SideRecord("1", {"phone": None, "name": "Ada"}, T0, {"phone": "'12' is not a phone"}),
        SideRecord("2", {"phone": "+4791234567", "name": "Ad"}, T0),
        {"phone": base("x"), "name": base("Ad")},
    )
    plan = plan_pair(state, {"phone": BOTH, "name": BOTH}, now=T2)
    phone, name = plan.action("phone"), plan.action("name")
    assert phone is not None and name is not None
    assert phone.kind == "skip_invalid"
    assert phone.reason == "HubSpot value: '12' is not a phone"
    assert phone.new_base is None
    assert name.kind == "to_brevo"


def test_email_change_is_flagged_for_the_engine() -> None:
    state = PairState(
        side({"email": "new@example.com", "name": "A"}),
        side({"email": "old@example.com", "name": "A"}),
        {"email": base("old@example.com"), "name": base("A")},
    )
    plan = plan_pair(state, {"email": BOTH, "name": BOTH}, identity="email", now=T2)
    assert plan.kind == "update"
    assert plan.email_change is not None
    assert plan.email_change.target == "brevo"
    assert (plan.email_change.old, plan.email_change.new) == (
        "old@example.com",
        "new@example.com",
    )
    quiet = plan_pair(replace(state, hubspot=state.brevo), {"email": BOTH}, identity="email")
    assert quiet.email_change is None


def test_create_in_brevo_carries_the_fields_that_may_travel() -> None:
    rules = {
        "email": BOTH,
        "score": FieldRule(direction="brevo_to_hubspot"),
        "note": FieldRule(direction="brevo_to_hubspot"),
        "phone": BOTH,
    }
    hs = SideRecord("101", {"email": "a@example.com", "score": "5"}, T0, {"phone": "bad"})
    plan = plan_pair(PairState(hs, None), rules, identity="email", now=T1)
    assert plan.kind == "create_in_brevo" and plan.hubspot_id == "101"
    kinds = {a.field: a.kind for a in plan.actions}
    assert kinds == {
        "email": "to_brevo",
        "score": "skip_direction",
        "note": "adopt",
        "phone": "skip_invalid",
    }
    assert plan.writes("brevo") == {"email": "a@example.com"}
    assert set(plan.ledger_updates) == {"email", "note"}


def test_create_needs_an_identity_and_a_direction() -> None:
    no_email = PairState(side({"email": None}), None)
    plan = plan_pair(no_email, {"email": BOTH}, identity="email")
    assert plan.kind == "skip" and "no usable email" in plan.reason
    brevo_only = PairState(None, side({"email": "a@example.com"}))
    assert plan_pair(brevo_only, {"email": BOTH}, identity="email").kind == "create_in_hubspot"
    stopped = plan_pair(brevo_only, {"email": BOTH}, "hubspot_to_brevo", identity="email")
    assert stopped.kind == "skip" and "run direction" in stopped.reason
    assert plan_pair(PairState(None, None), {"email": BOTH}).kind == "nothing"


def test_summary_counts_and_samples() -> None:
    plans = [
        one("new", "old", base("old")),
        one("h", "b", base("old"), FieldRule(conflict="brevo_wins")),
        one("v", "v", base("v", at=T1)),
        one("v", "v"),
        one("x", "y", base("x"), FieldRule(direction="hubspot_to_brevo")),
        plan_pair(PairState(side({"f": "a"}), None), {"f": BOTH}),
        plan_pair(PairState(side({"f": None}), None), {"f": BOTH}, identity="f"),
    ]
    summary = summarize(plans)
    assert summary.records == 7
    assert summary.creates == {"brevo": 1}
    assert summary.updates == {"brevo": 1, "hubspot": 1}
    assert summary.field_writes == {"brevo": 2, "hubspot": 1}
    assert summary.decided_by == {"hubspot_changed": 1, "brevo_wins": 1, "create": 1}
    assert summary.conflicts == {"brevo_wins": 1}
    assert summary.conflict_writes == {"hubspot": 1}
    assert summary.blocked == {"hubspot": 1}
    assert summary.skips == {"skip_noop": 1, "skip_direction": 1}
    assert summary.adopted == 1
    assert summary.noop_records == 3
    assert sum(summary.records_skipped.values()) == 1
    diffs = summary.sample_diffs(2)
    assert len(diffs) == 2
    assert "'old' → 'new' to Brevo (hubspot_changed" in diffs[0]
    assert summary.as_dict()["field_writes"] == {"brevo": 2, "hubspot": 1}


def test_guard_deletions() -> None:
    assert guard_deletions(0, 0, 0.1) is None
    assert guard_deletions(5, 100, 0.1) is None
    message = guard_deletions(100, 100, 0.5)
    assert message is not None and "--force" in message and "100 of 100" in message
    assert guard_deletions(3, 2, 0.5) is not None
    assert guard_deletions(1, 1, 0.5, min_count=5) is None
    with pytest.raises(ValueError):
        guard_deletions(1, 1, 1.5)


# --- Hypothesis: random pairs --------------------------------------------------------------

FIELDS = ("f0", "f1", "f2", "f3")
VALUES = st.sampled_from([None, "a", "b", "c"])
TIMES = st.sampled_from([T0, T1, T2])
RULES = st.builds(FieldRule, st.sampled_from(FIELD_DIRECTIONS), st.sampled_from(CONFLICT_RULES))
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def records(draw: st.DrawFn, rid: str) -> SideRecord:
    values = {f: draw(VALUES) for f in FIELDS}
    bad = draw(st.lists(st.sampled_from(FIELDS), max_size=1))
    invalid = {f: "unparseable" for f in bad}
    for f in invalid:
        values.pop(f)
    return SideRecord(rid, values, draw(TIMES), invalid)


@st.composite
def states(draw: st.DrawFn, both: bool = False) -> PairState:
    presence = "both" if both else draw(st.sampled_from(["both", "both", "hubspot", "brevo"]))
    hs = draw(records("h1")) if presence in ("both", "hubspot") else None
    br = draw(records("b1")) if presence in ("both", "brevo") else None
    ledger: dict[str, BaseEntry] = {}
    for f in FIELDS if presence == "both" else ():  # an unlinked record has no ledger rows
        if draw(st.booleans()):
            origin: Side = draw(st.sampled_from(["hubspot", "brevo"]))
            ledger[f] = BaseEntry(value_hash(draw(VALUES)), origin, draw(TIMES))
    return PairState(hs, br, ledger or None)


def rule_sets() -> st.SearchStrategy[dict[str, FieldRule]]:
    return st.fixed_dictionaries({f: RULES for f in FIELDS})


def apply(state: PairState, plan: PairPlan, at: datetime) -> PairState:
    """What the engine does with a plan: write the values, then record the new bases."""
    hs, br = state.hubspot, state.brevo
    if plan.kind == "create_in_brevo":
        br = SideRecord("new", plan.writes("brevo"), at)
    elif plan.kind == "create_in_hubspot":
        hs = SideRecord("new", plan.writes("hubspot"), at)
    elif plan.kind == "update":
        hs = _written(hs, plan.writes("hubspot"), at)
        br = _written(br, plan.writes("brevo"), at)
    ledger = dict(state.base or {})
    ledger.update(plan.ledger_updates)
    return PairState(hs, br, ledger)


def _written(
    rec: SideRecord | None, writes: dict[str, str | None], at: datetime
) -> SideRecord | None:
    if rec is None or not writes:
        return rec
    return replace(rec, values={**rec.values, **writes}, modified_at=at)


@PROPS
@given(states(), rule_sets(), st.sampled_from(RUN_DIRECTIONS))
def test_a_applied_plan_converges_in_one_step(
    state: PairState, rules: dict[str, FieldRule], direction: RunDirection
) -> None:
    plan = plan_pair(state, rules, direction, identity="f0", now=T2)
    after = apply(state, plan, T2 + timedelta(seconds=1))
    again = plan_pair(after, rules, direction, identity="f0", now=T2 + timedelta(minutes=1))
    assert is_noop(again), again
    assert again.ledger_updates == {}, again
    # the write we made shows up as an echo or a no-op, never as a change to send back
    for action in again.actions:
        assert action.kind in ("skip_echo", "skip_noop", "skip_direction", "skip_invalid")
    if plan.kind == "skip" or again.kind == "skip":
        assert again.kind == plan.kind


@PROPS
@given(states(), rule_sets(), st.sampled_from(RUN_DIRECTIONS))
def test_b_a_forbidden_flow_never_happens(
    state: PairState, rules: dict[str, FieldRule], direction: RunDirection
) -> None:
    plan = plan_pair(state, rules, direction, now=T2)
    if direction == "hubspot_to_brevo":
        assert plan.kind != "create_in_hubspot"
    if direction == "brevo_to_hubspot":
        assert plan.kind != "create_in_brevo"
    for action in plan.actions:
        rule = rules[action.field]
        if action.target == "hubspot":
            assert rule.direction != "hubspot_to_brevo" and direction != "hubspot_to_brevo"
        if action.target == "brevo":
            assert rule.direction != "brevo_to_hubspot" and direction != "brevo_to_hubspot"
        if action.kind == "skip_direction":
            assert action.new_base is None


@PROPS
@given(states(both=True), rule_sets(), st.sampled_from(RUN_DIRECTIONS))
def test_c_conflicts_obey_the_rule(
    state: PairState, rules: dict[str, FieldRule], direction: RunDirection
) -> None:
    hs, br = state.hubspot, state.brevo
    assert hs is not None and br is not None
    plan = plan_pair(state, rules, direction, now=T2)
    ledger = state.base or {}
    for f in FIELDS:
        if f in hs.invalid or f in br.invalid:
            continue
        h, b, entry = hs.values.get(f), br.values.get(f), ledger.get(f)
        if h == b:
            continue
        both_changed = entry is not None and entry.value_hash not in (
            value_hash(h),
            value_hash(b),
        )
        no_base_both_set = entry is None and h is not None and b is not None
        if not (both_changed or no_base_both_set):
            continue
        rule: str = rules[f].conflict
        if rules[f].direction != "both":  # a one-way field's source wins
            rule, winner = "source_wins", rules[f].direction.split("_to_")[0]
        elif rule == "latest_wins":
            winner = "brevo" if br.modified_at > hs.modified_at else "hubspot"
        else:
            winner = rule.removesuffix("_wins")
        action = plan.action(f)
        assert action is not None
        assert action.rule_used == rule
        assert action.value == (h if winner == "hubspot" else b)
        loser = "brevo" if winner == "hubspot" else "hubspot"
        assert action.kind in (f"conflict_to_{loser}", "skip_direction")


@PROPS
@given(states(both=True), rule_sets(), st.sampled_from(RUN_DIRECTIONS))
def test_d_equal_sides_never_write(
    state: PairState, rules: dict[str, FieldRule], direction: RunDirection
) -> None:
    hs, br = state.hubspot, state.brevo
    assert hs is not None and br is not None
    plan = plan_pair(state, rules, direction, now=T2)
    for f in FIELDS:
        if f in hs.invalid or f in br.invalid or hs.values.get(f) != br.values.get(f):
            continue
        action = plan.action(f)
        assert action is not None
        assert action.kind in ("adopt", "skip_noop", "skip_echo")
        assert action.target is None


# --- Hypothesis: transforms round-trip -----------------------------------------------------

REGIONS = ["US", "GB", "NO", "FR", "DE", "JP", "IN", "BR", "AU", "ZA", "CA", "ES", "SG"]
PHONE_FORMATS = [
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
]


@st.composite
def phones(draw: st.DrawFn) -> tuple[str, str]:
    region = draw(st.sampled_from(REGIONS))
    kind = draw(
        st.sampled_from(
            [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
        )
    )
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None
    text = phonenumbers.format_number(number, draw(st.sampled_from(PHONE_FORMATS)))
    return region, text


def assert_round_trip(transform: Transform, x: str | None) -> None:
    """canonical(to_hubspot(to_brevo(x))) == canonical(x), and both sides agree on x."""
    canonical = transform.canonical_hubspot(x)
    native = transform.to_brevo(x)
    assert transform.canonical_brevo(native) == canonical
    back = transform.to_hubspot(native)
    assert transform.canonical_hubspot(back) == canonical
    assert transform.canonical_brevo(transform.to_brevo(back)) == canonical


@PROPS
@given(phones())
def test_e_phone_round_trips(case: tuple[str, str]) -> None:
    region, text = case
    transform = PhoneE164(region)
    assert_round_trip(transform, text)
    assert str(transform.canonical_hubspot(text)).startswith("+")


DATES = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))


@st.composite
def hubspot_dates(draw: st.DrawFn) -> str:
    day = draw(DATES)
    midnight = (day - date(1970, 1, 1)).days * 86_400_000
    form = draw(st.sampled_from(["ms", "ms+", "iso", "isotime"]))
    if form == "ms":
        return str(midnight)
    if form == "ms+":
        return str(midnight + draw(st.integers(0, 86_399_999)))
    if form == "iso":
        return day.isoformat()
    seconds = draw(st.integers(0, 86_399))
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


@PROPS
@given(hubspot_dates(), st.sampled_from(["date", "datetime"]))
def test_e_dates_round_trip(x: str, hubspot_type: str) -> None:
    assert_round_trip(DateTransform(hubspot_type), x)  # type: ignore[arg-type]


NUMBERS = st.one_of(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(Decimal),
    st.integers(-(10**15), 10**15).map(Decimal),
)


@PROPS
@given(NUMBERS, st.sampled_from(["{}", "{:f}", "{:.2f}"]))
def test_e_numbers_round_trip(number: Decimal, fmt: str) -> None:
    assert_round_trip(NumberTransform(), fmt.format(number))


@PROPS
@given(st.sampled_from(["true", "false", "TRUE", "False", "", None]))
def test_e_booleans_round_trip(x: str | None) -> None:
    assert_round_trip(BooleanTransform(), x)


@PROPS
@given(
    st.dictionaries(
        st.text(st.characters(categories=["Ll", "Nd"]), min_size=1, max_size=8),
        st.integers(1, 1000),
        min_size=1,
        max_size=8,
    ).filter(lambda table: len(set(table.values())) == len(table)),
    st.data(),
)
def test_e_one_to_one_value_maps_round_trip(table: dict[str, int], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(table)))
    assert_round_trip(ValueMap(table), key)


TEXT = st.text(max_size=20)


@PROPS
@given(TEXT, st.lists(st.sampled_from([Trim(), Lower()]), max_size=3))
def test_e_text_steps_round_trip(x: str, steps: list[Transform]) -> None:
    chain = build_chain([(s.name, None) for s in steps])
    assert_round_trip(chain, x)


@PROPS
@given(st.emails())
def test_e_emails_round_trip(x: str) -> None:
    email = Email()
    if normalise_email(x) is None:
        return
    assert_round_trip(email, x.upper())
    assert email.canonical_hubspot(x.upper()) == normalise_email(x)
