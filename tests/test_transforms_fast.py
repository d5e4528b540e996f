"""The fast paths of e-mail and phone normalisation give email-validator's and
phonenumbers' answers, only sooner."""

from __future__ import annotations

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector.transforms import InvalidValue, PhoneE164, _parse_e164, _plain_email

LABEL = st.text(alphabet="ab0z-", min_size=1, max_size=6)
TLD = st.sampled_from(["org", "io", "test", "local", "localhost", "onion", "arpa", "x1", "c"])


def _accepted(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(
    local=st.text(alphabet="ab0_+-.%", min_size=0, max_size=8),
    labels=st.lists(LABEL, min_size=0, max_size=3),
    tld=TLD,
)
@example(local="a", labels=["ab--cd"], tld="org")
@example(local="a", labels=["x"], tld="local")
@example(local="a", labels=["x"], tld="test")
@example(local=".a", labels=["x"], tld="org")
@example(local="a" * 65, labels=["x"], tld="org")
def test_the_fast_email_path_accepts_only_what_email_validator_accepts(
    local: str, labels: list[str], tld: str
) -> None:
    address = f"{local}@{'.'.join([*labels, tld])}"
    if _plain_email(address):
        assert _accepted(address), address


@pytest.mark.parametrize(
    "address", ["anna.martin@example.org", "x_y+z@mail.co.uk", "a-b@sub-1.example.io", "p@q.test"]
)
def test_the_fast_email_path_takes_everyday_addresses(address: str) -> None:
    assert _plain_email(address) and _accepted(address)


@settings(max_examples=300, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=6, max_size=12),
    prefix=st.sampled_from(["", "+", "00", "+1 ", "+33 ", "+39 0", "+47"]),
    region=st.sampled_from(["US", "FR", "NO", "IT"]),
    from_brevo=st.booleans(),
)
def test_an_e164_number_normalises_to_itself_from_either_side(
    digits: str, prefix: str, region: str, from_brevo: bool
) -> None:
    """What the remembered normal forms rely on: an E.164 result parses back to itself."""
    result = _parse_e164(prefix + digits, from_brevo, region)
    if result is not None:
        assert phonenumbers.is_valid_number(phonenumbers.parse(result, region))
        assert _parse_e164(result, False, region) == result
        assert _parse_e164(result, True, region) == result
        assert _parse_e164(result[1:], True, region) == result  # as Brevo answers it


def test_a_remembered_phone_number_gives_the_same_answer_and_the_same_error() -> None:
    phone = PhoneE164("FR")
    for _ in range(2):
        assert phone.normalise("06 12 34 56 78", "hubspot") == "+33612345678"
        assert phone.normalise("+33612345678", "brevo") == "+33612345678"
        with pytest.raises(InvalidValue):
            phone.normalise("12", "hubspot")


def test_the_remembered_numbers_keep_the_newest_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from connector import transforms

    monkeypatch.setattr(transforms, "_E164_SEEN", {})
    monkeypatch.setattr(transforms, "_E164_KEPT", 8)
    phone = PhoneE164("FR")
    for n in range(10):
        phone.normalise(f"06 12 34 56 {n:02d}", "hubspot")
    seen = transforms._E164_SEEN
    assert len(seen) <= 8
    assert seen["3361234560" + "9", True, "FR"] == "+33612345609"  # the newest kept
    assert ("06 12 34 56 00", False, "FR") not in seen  # the oldest dropped
    assert phone.normalise("33612345609", "brevo") == "+33612345609"
