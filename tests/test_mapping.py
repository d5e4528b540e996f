"""Transforms both ways, the mapping checker's messages and lines, and the default mapping."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from textwrap import dedent

import pytest

from connector.mapping import (
    MappingError,
    Problem,
    check_mapping_file,
    check_mapping_text,
    load_mapping,
    load_mappings,
)
from connector.transforms import (
    BooleanTransform,
    DateTransform,
    InvalidValue,
    NumberTransform,
    PhoneE164,
    SpecError,
    ValueMap,
    build_chain,
    normalise_email,
)

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
CONTACTS = MAPPINGS / "contacts.yaml"
_T = datetime(2024, 1, 1, tzinfo=UTC)

# --- phone ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "raw", "e164"),
    [
        ("NO", "912 34 567", "+4791234567"),
        ("US", "+47 912 34 567", "+4791234567"),
        ("US", "0047 912 34 567", "+4791234567"),
        ("US", "(202) 555-0143", "+12025550143"),
        ("US", "+1 202-555-0143", "+12025550143"),
        ("GB", "020 7946 0958", "+442079460958"),
        ("FR", "06 12 34 56 78", "+33612345678"),
        ("DE", "030 123456", "+4930123456"),
        ("JP", "03-1234-5678", "+81312345678"),
        ("IN", "098765 43210", "+919876543210"),
    ],
)
def test_phone_from_hubspot_in_several_regions(region: str, raw: str, e164: str) -> None:
    phone = PhoneE164(region)
    assert phone.to_brevo(raw) == e164
    assert phone.canonical_hubspot(raw) == e164
    assert phone.to_hubspot(e164) == e164


@pytest.mark.parametrize("stored", ["+4791234567", "4791234567", "004791234567"])
def test_phone_from_brevo_reads_its_accepted_formats(stored: str) -> None:
    # Brevo stores numbers with a country code, with or without + (its documented formats).
    phone = PhoneE164("US")
    assert phone.canonical_brevo(stored) == "+4791234567"
    assert phone.to_hubspot(stored) == "+4791234567"


@pytest.mark.parametrize("bad", ["12", "call me maybe", "+47 12", "555"])
def test_unparseable_phone_is_an_invalid_value_with_a_reason(bad: str) -> None:
    with pytest.raises(InvalidValue) as raised:
        PhoneE164("NO").to_brevo(bad)
    assert "not a valid phone number" in raised.value.reason
    assert "NO" in raised.value.reason


def test_phone_empty_is_none_and_unknown_region_is_refused() -> None:
    assert PhoneE164("US").to_brevo("") is None
    assert PhoneE164("US").to_brevo("   ") is None
    assert PhoneE164("US").canonical_brevo(None) is None
    with pytest.raises(SpecError, match="region"):
        PhoneE164("XX")


# --- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hubspot", "day"),
    [
        ("1700006400000", "2023-11-15"),  # midnight UTC, HubSpot's date property form
        ("1700092799999", "2023-11-15"),  # the last millisecond of that UTC day
        ("1700092800000", "2023-11-16"),
        ("2023-11-15", "2023-11-15"),
        ("2023-11-15T23:30:00Z", "2023-11-15"),
        ("2023-11-15T23:30:00-05:00", "2023-11-16"),  # its UTC day
        ("2023-11-16T00:30:00+01:00", "2023-11-15"),
        ("2023-11-15T10:00:00.000Z", "2023-11-15"),
        ("2024-02-29", "2024-02-29"),  # leap day
        ("1709164800000", "2024-02-29"),
        ("2024-03-10", "2024-03-10"),  # US DST change: UTC days have no DST
        ("1710028800000", "2024-03-10"),
        ("1711843200000", "2024-03-31"),  # EU DST change
        ("0", "1970-01-01"),
        ("-86400000", "1969-12-31"),  # before the epoch
        ("-1", "1969-12-31"),
        ("946684800000", "2000-01-01"),
        ("253402214400000", "9999-12-31"),
    ],
)
def test_hubspot_date_to_brevo_day(hubspot: str, day: str) -> None:
    assert DateTransform("date").to_brevo(hubspot) == day
    assert DateTransform("datetime").canonical_hubspot(hubspot) == day


@pytest.mark.parametrize(
    ("day", "epoch_ms"),
    [
        ("2023-11-15", "1700006400000"),
        ("2024-02-29", "1709164800000"),
        ("2024-03-10", "1710028800000"),
        ("2024-10-27", "1729987200000"),
        ("1970-01-01", "0"),
        ("1969-12-31", "-86400000"),
        ("1900-03-01", "-2203891200000"),
    ],
)
def test_brevo_day_to_hubspot_midnight_utc_epoch_ms(day: str, epoch_ms: str) -> None:
    date = DateTransform("date")
    assert date.to_hubspot(day) == epoch_ms
    assert date.to_brevo(epoch_ms) == day


def test_brevo_day_to_hubspot_datetime_is_iso_midnight_utc() -> None:
    assert DateTransform("datetime").to_hubspot("2023-11-15") == "2023-11-15T00:00:00Z"


def test_brevo_date_with_a_time_keeps_its_calendar_day() -> None:
    date = DateTransform("date")
    assert date.canonical_brevo("2023-11-15T00:00:00.000+01:00") == "2023-11-15"
    assert date.canonical_brevo("") is None


@pytest.mark.parametrize("bad", ["yesterday", "2023-13-01", "15/11/2023", "12:00"])
def test_bad_dates_are_invalid(bad: str) -> None:
    with pytest.raises(InvalidValue):
        DateTransform("date").to_brevo(bad)
    with pytest.raises(InvalidValue):
        DateTransform("date").to_hubspot(bad)


# --- numbers, booleans, value maps, text ---------------------------------------------------


def test_number_both_ways_and_canonical_form() -> None:
    number = NumberTransform()
    assert number.to_brevo("1200.50") == 1200.5
    assert number.to_brevo("1200.00") == 1200
    assert number.to_brevo(" 3 ") == 3
    assert number.to_brevo("") is None
    assert number.canonical_hubspot("1200.50") == "1200.5"
    assert number.canonical_hubspot("1e3") == "1000"
    assert number.canonical_hubspot("-0.0") == "0"
    assert number.canonical_brevo(1200.5) == "1200.5"
    assert number.canonical_brevo(7) == "7"
    assert number.to_hubspot(1200.5) == "1200.5"
    assert number.to_hubspot(0.1) == "0.1"
    assert number.to_hubspot(None) is None
    for bad in ("abc", "NaN", "inf", "1,200"):
        with pytest.raises(InvalidValue):
            number.to_brevo(bad)
    with pytest.raises(InvalidValue):
        number.to_hubspot(True)


def test_boolean_both_ways() -> None:
    boolean = BooleanTransform()
    assert boolean.to_brevo("true") is True
    assert boolean.to_brevo("false") is False
    assert boolean.to_brevo("") is None
    assert boolean.to_hubspot(True) == "true"
    assert boolean.to_hubspot(False) == "false"
    assert boolean.canonical_hubspot("TRUE") == "true"
    with pytest.raises(InvalidValue):
        boolean.to_brevo("maybe")
    with pytest.raises(InvalidValue):
        boolean.to_hubspot(2)


def test_value_map_both_ways() -> None:
    stages = ValueMap({"lead": 2, "customer": 6})
    assert stages.to_brevo("lead") == 2
    assert stages.to_hubspot(6) == "customer"
    assert stages.to_hubspot("6") == "customer"
    assert stages.to_hubspot(6.0) == "customer"
    assert stages.canonical_hubspot("customer") == stages.canonical_brevo(6) == "6"
    assert stages.one_to_one
    with pytest.raises(InvalidValue, match="not in the value map"):
        stages.to_brevo("zombie")
    with pytest.raises(InvalidValue, match="not in the value map"):
        stages.to_hubspot(9)


def test_many_to_one_value_map_goes_one_way_only() -> None:
    table = ValueMap({"lead": 1, "subscriber": 1, "customer": 2})
    assert not table.one_to_one
    assert table.ambiguous() == {"1": ["lead", "subscriber"]}
    assert table.canonical_hubspot("lead") == table.canonical_hubspot("subscriber")
    with pytest.raises(InvalidValue, match="several"):
        table.to_hubspot(1)


def test_text_chains() -> None:
    chain = build_chain([("trim", None), ("lower", None)])
    assert chain.to_brevo("  Ada LOVELACE ") == "ada lovelace"
    assert chain.to_hubspot(" X ") == "x"
    assert chain.canonical_brevo("  ") is None
    staged = build_chain([("trim", None), ("value_map", {"lead": 2})])
    assert staged.to_brevo(" lead ") == 2
    assert staged.to_hubspot(2) == "lead"
    with pytest.raises(SpecError, match="last"):
        build_chain([("number", None), ("trim", None)])
    with pytest.raises(SpecError, match="unknown transform"):
        build_chain([("uppercase", None)])


def test_plain_text_treats_empty_as_none() -> None:
    plain = build_chain([])
    assert plain.canonical_hubspot("") is None
    assert plain.canonical_brevo(None) is None
    assert plain.to_brevo(" a ") == " a "


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        ("Ada@Example.COM", "ada@example.com"),
        ("  ada@example.com\n", "ada@example.com"),
        ("x@mail.example.org", "x@mail.example.org"),
        ("", None),
        (None, None),
        ("not an email", None),
        ("ada@", None),
        ("@example.com", None),
    ],
)
def test_normalise_email(raw: str | None, email: str | None) -> None:
    assert normalise_email(raw) == email


# --- the default mapping -------------------------------------------------------------------


def test_default_mapping_loads_with_no_problems() -> None:
    assert check_mapping_file(CONTACTS) == []
    mapping = load_mapping(CONTACTS)
    assert mapping.object == "contacts"
    assert mapping.warnings == []
    pairs = {f.hubspot: f.brevo for f in mapping.fields}
    assert pairs == {
        "email": "email",
        "firstname": "FIRSTNAME",
        "lastname": "LASTNAME",
        "phone": "SMS",
        "company": "COMPANY_NAME",
        "lifecyclestage": "LIFECYCLE_STAGE",
        "hs_lead_status": "LEAD_STATUS",
        "hs_total_deal_value": "DEAL_VALUE",
        "num_associated_deals": "DEAL_COUNT",
        "preferred_channel": "PREFERRED_CHANNEL",
        "customer_segment": "SEGMENT",
    }
    rules = mapping.rules()
    assert rules["hs_total_deal_value"].direction == "hubspot_to_brevo"
    assert rules["num_associated_deals"].direction == "hubspot_to_brevo"
    assert rules["firstname"].conflict == "latest_wins"
    assert mapping.identity_field == "email"
    assert mapping.hubspot_properties()[0] == "email"
    assert "email" not in mapping.brevo_attributes()
    assert "LIFECYCLE_STAGE" in mapping.brevo_attributes()


def test_default_mapping_maps_a_contact_both_ways() -> None:
    mapping = load_mapping(CONTACTS, default_region="NO")
    hubspot = {
        "email": " Ada@Example.com ",
        "firstname": "Ada ",
        "phone": "912 34 567",
        "lifecyclestage": "customer",
        "hs_total_deal_value": "1200.50",
        "num_associated_deals": "3",
        "hs_lead_status": "OPEN",
    }
    record = mapping.to_brevo(hubspot)
    assert record.identity == "ada@example.com"
    assert record.invalid == {}
    assert record.payload(["email", "phone", "lifecyclestage", "hs_total_deal_value"]) == {
        "email": "ada@example.com",
        "SMS": "+4791234567",
        "LIFECYCLE_STAGE": 6,
        "DEAL_VALUE": 1200.5,
    }
    brevo = {
        "email": "ada@example.com",
        "FIRSTNAME": "Ada",
        "SMS": "4791234567",
        "LIFECYCLE_STAGE": 6,
        "DEAL_VALUE": 1200.5,
        "DEAL_COUNT": 3,
        "LEAD_STATUS": "OPEN",
    }
    back = mapping.to_hubspot(brevo)
    assert back.values == record.values
    assert back.native["lifecyclestage"] == "customer"
    assert "hs_total_deal_value" not in back.native  # it may not flow into HubSpot
    assert back.side_record("7", _T).values == record.values


def test_a_bad_value_skips_that_field_only() -> None:
    mapping = load_mapping(CONTACTS)
    record = mapping.to_brevo({"email": "a@example.com", "phone": "12", "firstname": "A"})
    assert set(record.invalid) == {"phone"}
    assert "not a valid phone number" in record.invalid["phone"]
    assert "phone" not in record.values
    assert record.values["firstname"] == "A"
    bad_email = mapping.to_hubspot({"email": "nope", "LIFECYCLE_STAGE": 42})
    assert set(bad_email.invalid) == {"email", "lifecyclestage"}
    assert bad_email.identity is None


def test_category_attribute_spec_for_create_missing() -> None:
    specs = {s.name: s for s in load_mapping(CONTACTS).brevo_attribute_specs()}
    assert specs["LIFECYCLE_STAGE"].type == "category"
    assert specs["LIFECYCLE_STAGE"].enumeration[0] == (1, "subscriber")
    assert specs["DEAL_VALUE"].type == "float"
    assert specs["FIRSTNAME"].type == "text"


def test_load_mappings_reads_a_directory(tmp_path: Path) -> None:
    assert set(load_mappings(MAPPINGS)) == {"contacts", "companies", "deals"}
    (tmp_path / "a.yaml").write_text(CONTACTS.read_text())
    (tmp_path / "b.yml").write_text(CONTACTS.read_text())
    with pytest.raises(MappingError, match="second mapping for object 'contacts'"):
        load_mappings(tmp_path)


# --- static checks -------------------------------------------------------------------------

BROKEN = dedent(
    """\
    object: contacts
    identity:
      hubspot: email
      brevo: email
    fields:
      - hubspot: email
        brevo: email
        transform: email
      - hubspot: firstname
        brevo: firstname
        conflit: hubspot_wins
      - hubspot: phone
        brevo: SMS
        direction: sideways
      - hubspot: amount
        brevo: AMOUNT
        type: number
        transform: date
      - hubspot: lifecyclestage
        brevo: STAGE
        transform:
          value_map: {lead: 1, subscriber: 1}
      - hubspot: hs_total_deal_value
        brevo: DEAL_VALUE
        transform: number
      - hubspot: company
        brevo: SMS
      - hubspot: firstname
        brevo: FIRST
        transform: phone_e16
      - hubspot: secret_score
        brevo: EXT_ID
        direction: both
    """
)


def _by_line(problems: list[Problem]) -> dict[int | None, str]:
    return {p.line: f"{p.field}: {p.message}" for p in problems}


def test_broken_file_reports_each_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "contacts.yaml"
    path.write_text(BROKEN)
    problems = check_mapping_file(path)
    assert all(p.file == str(path) and p.severity == "error" for p in problems)
    found = _by_line(problems)
    assert "UPPER_CASE: write FIRSTNAME" in found[10]
    assert "unknown key 'conflit'" in found[11]
    assert "did you mean 'conflict'" in found[11]
    assert found[14].startswith("phone: direction: 'sideways' is not one of both")
    assert "transform 'date' does not fit type number" in found[18]
    assert "not one-to-one" in found[21]
    assert "hubspot_to_brevo" in found[21]
    assert found[23] == (
        "hs_total_deal_value: hs_total_deal_value is read-only in HubSpot: "
        "set direction: hubspot_to_brevo"
    )
    assert "Brevo attribute 'SMS' is mapped twice (first on line 13)" in found[27]
    assert "HubSpot property 'firstname' is mapped twice (first on line 9)" in found[28]
    assert "did you mean 'phone_e164'" in found[30]
    assert "EXT_ID is reserved" in found[32]
    assert len(problems) == 10
    assert str(problems[0]).startswith(f"{path}:10: error: firstname: ")


def test_load_mapping_raises_with_all_problems(tmp_path: Path) -> None:
    path = tmp_path / "contacts.yaml"
    path.write_text(BROKEN)
    with pytest.raises(MappingError) as raised:
        load_mapping(path)
    assert len(raised.value.problems) == 10
    assert f"{path}:23: error:" in str(raised.value)


def test_live_read_only_properties_are_checked_too() -> None:
    text = dedent(
        """\
        object: contacts
        fields:
          - hubspot: email
            brevo: email
            transform: email
          - hubspot: score
            brevo: SCORE
            direction: brevo_to_hubspot
            conflict: brevo_wins
        """
    )
    mapping, problems = check_mapping_text(text, "m.yaml")
    assert mapping is not None and problems == []
    mapping, problems = check_mapping_text(text, "m.yaml", read_only={"score"})
    assert mapping is None
    assert [(p.line, p.message) for p in problems] == [
        (8, "score is read-only in HubSpot: set direction: hubspot_to_brevo")
    ]


def test_yaml_syntax_error_has_a_line() -> None:
    _, problems = check_mapping_text("object: contacts\nfields:\n  - hubspot: [a\n", "x.yaml")
    assert len(problems) == 1
    assert problems[0].line is not None
    assert "not valid YAML" in problems[0].message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("objekt: contacts\nfields: []\n", 1, "did you mean 'object'"),
        ("object: contacts\nfields: []\n", 2, "fields"),
        ("object: contacts\nfields:\n  - hubspot: a\n", 3, "required key 'brevo'"),
        ("object: contacts\nfields:\n  - hubspot: a\n    brevo: A\n    conflict: me\n", 5, "me"),
        ("object: contact\nfields:\n  - {hubspot: a, brevo: A}\n", 1, "did you mean 'contacts'"),
    ],
)
def test_structural_problems(text: str, line: int, words: str) -> None:
    _, problems = check_mapping_text(text, "x.yaml")
    assert any(p.line == line and words in p.message for p in problems), problems


def test_warnings_do_not_stop_loading() -> None:
    text = dedent(
        """\
        object: deals
        fields:
          - hubspot: amount
            brevo: amount
            type: number
          - hubspot: closedate
            brevo: close_date
            type: datetime
            transform: date
            direction: hubspot_to_brevo
        """
    )
    mapping, problems = check_mapping_text(text, "deals.yaml")
    assert mapping is not None
    assert [(p.line, p.severity) for p in problems] == [(5, "warning")]
    assert "without transform: number" in problems[0].message
    explicit = text.replace("hubspot_to_brevo", "hubspot_to_brevo\n    conflict: brevo_wins")
    mapping, problems = check_mapping_text(explicit, "deals.yaml")
    assert mapping is not None
    assert [(p.line, p.severity) for p in problems] == [(5, "warning"), (11, "warning")]
    assert "is ignored on a hubspot_to_brevo field" in problems[1].message
    # type: datetime makes the date transform write HubSpot ISO date-times
    closedate = mapping.field_by_key("closedate").transform
    assert closedate.to_hubspot("2024-01-02") == "2024-01-02T00:00:00Z"


def test_transform_shapes_and_their_errors() -> None:
    text = dedent(
        """\
        object: contacts
        fields:
          - hubspot: phone
            brevo: SMS
            transform: {phone_e164: "NO"}
          - hubspot: birthday
            brevo: BIRTHDAY
            type: date
            transform: {date: datetime}
          - hubspot: stage
            brevo: STAGE
            transform: [lower, {value_map: {Lead: 1}}]
          - hubspot: flag
            brevo: FLAG
            transform: {number: {precision: 2}}
        """
    )
    _, problems = check_mapping_text(text, "c.yaml")
    found = _by_line(problems)
    assert "hubspot_type datetime contradicts type date" in found[9]
    assert "key 'Lead' is changed by the steps before it" in found[12]
    assert "takes no parameters" in found[15]
    ok = "object: contacts\nfields:\n"
    ok += '  - {hubspot: phone, brevo: SMS, transform: {phone_e164: "NO"}}\n'
    mapping, problems = check_mapping_text(ok, "c.yaml", default_region="US")
    assert mapping is not None
    norway = ok.replace('"NO"', "NO")  # YAML 1.1 reads a bare NO as false
    assert "quote the region code" in check_mapping_text(norway, "c.yaml")[1][-1].message
    assert mapping.field_by_key("phone").transform.to_brevo("912 34 567") == "+4791234567"
