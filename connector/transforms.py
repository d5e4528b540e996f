"""Value transforms between HubSpot properties and Brevo attributes.

A transform is a small object that converts one mapped field's value both ways and brings
either side's value to **one canonical string** (or ``None`` for "empty"), the form the
planner compares and hashes::

    to_brevo(hubspot_value: str | None) -> Any        HubSpot string → Brevo native value
    to_hubspot(brevo_value: Any) -> str | None        Brevo native value → HubSpot string
    canonical_hubspot(hubspot_value) -> str | None    HubSpot value → canonical form
    canonical_brevo(brevo_value) -> str | None        Brevo value → canonical form
    canonical(value, side="hubspot") -> str | None    either of the two above

The laws every transform keeps (property-tested), for every value it accepts:

    canonical_brevo(to_brevo(h)) == canonical_hubspot(h)
    canonical_hubspot(to_hubspot(b)) == canonical_brevo(b)

so a value written to the other side reads back with the hash that was recorded for it, and
nothing echoes. A value that cannot be converted raises :class:`InvalidValue` with a reason
meant for a log line; the field is then skipped, the rest of the record still syncs.
``None`` and the empty string both mean "empty" and canonicalise to ``None``.

Transforms, by their name in a mapping file: ``phone_e164`` (param ``region``), ``date``
(param ``hubspot_type``: ``date`` | ``datetime``), ``number``, ``boolean``, ``value_map``
(its param is the HubSpot → Brevo table), ``trim``, ``lower``, ``email``. A list is a chain:
any number of text steps (``trim``, ``lower``, ``email``, ``phone_e164``) followed by at most
one typed step (``date``, ``number``, ``boolean``, ``value_map``), which comes last.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email

Side = Literal["hubspot", "brevo"]
HubSpotDateType = Literal["date", "datetime"]

TEXT_STEPS = frozenset({"trim", "lower", "email", "phone_e164"})
TYPED_STEPS = frozenset({"date", "number", "boolean", "value_map"})
TRANSFORM_NAMES = TEXT_STEPS | TYPED_STEPS


class InvalidValue(ValueError):
    """A value that cannot be converted; ``reason`` says why, in words for a log line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SpecError(ValueError):
    """A transform specification that cannot be built (unknown name, bad parameter)."""


# --- helpers -------------------------------------------------------------------------------


def _short(value: Any) -> str:
    """A value for an error message, cut to a sane length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def number_text(value: float) -> str:
    """The canonical text of a float: plain digits, no exponent, no trailing zeros."""
    if not math.isfinite(value):
        raise InvalidValue(f"{value!r} is not a finite number")
    if value == 0:
        return "0"
    text = format(Decimal(repr(value)).normalize(), "f")
    return text


def text_of(value: Any) -> str | None:
    """Any native value as text (``None`` for empty): how an untransformed field compares."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        parts = [t for t in (text_of(v) for v in value) if t is not None]
        return ";".join(parts) or None
    return str(value)


def normalise_email(value: str | None) -> str | None:
    """An email address stripped and lower-cased, or ``None`` if empty or not an address.

    The syntax is checked with email-validator (no DNS lookup). This is the identity key of a
    contact on both sides.
    """
    if value is None:
        return None
    candidate = value.strip().lower()
    if not candidate:
        return None
    return candidate if _plain_email(candidate) or _valid_email(candidate) else None


_PLAIN_EMAIL = re.compile(
    r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)


def phone_key(value: Any) -> str | None:
    """A phone number as digits with its country code (``+47 912 34 567``, ``0047912…`` and
    ``47912…`` are all ``47912…``): how Brevo's SMS values are compared. None for no value."""
    if value is None or isinstance(value, bool):
        return None
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    if str(value).strip().startswith("00"):
        digits = digits[2:]
    return digits or None


def _plain_email(candidate: str) -> bool:
    """A fast yes for the everyday address that email-validator surely accepts: ASCII letters,
    digits and ``_+-`` in dot-separated atoms, an ASCII domain of several labels without
    ``--`` (IDNA's reserved hyphens) ending in a letters-only top-level domain, within the
    length limits, and no special-use domain (``.local``, …; ``.test`` is allowed, as with
    ``test_environment``). Anything else goes to email-validator (``False`` here means
    "ask it", not "invalid")."""
    if len(candidate) > 254 or not _PLAIN_EMAIL.fullmatch(candidate):
        return False
    local, domain = candidate.split("@")
    if len(local) > 64 or len(domain) > 253 or "--" in domain:
        return False
    for name in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if name != "test" and (domain == name or domain.endswith("." + name)):
            return False
    return True


@functools.lru_cache(maxsize=1 << 13)
def _valid_email(candidate: str) -> bool:
    """Whether email-validator accepts the address (cached: the same address is checked
    several times per record — pairing, both sides' mapping — and validation is slow)."""
    try:
        # syntax only: no DNS, and reserved test domains (.test) are addresses too
        validate_email(candidate, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return False
    return True


# --- the base class ------------------------------------------------------------------------


class Transform(ABC):
    """One field's conversion between a HubSpot string and a Brevo native value."""

    #: the name used in mapping files
    name: ClassVar[str] = ""

    @abstractmethod
    def to_brevo(self, hubspot_value: str | None) -> Any:
        """The Brevo native value for a HubSpot value (``None`` for empty)."""

    @abstractmethod
    def to_hubspot(self, brevo_value: Any) -> str | None:
        """The HubSpot string for a Brevo value (``None`` for empty)."""

    @abstractmethod
    def canonical_brevo(self, brevo_value: Any) -> str | None:
        """The canonical form of a Brevo value."""

    def canonical_hubspot(self, hubspot_value: str | None) -> str | None:
        """The canonical form of a HubSpot value."""
        return self.canonical_brevo(self.to_brevo(hubspot_value))

    def canonical(self, value: Any, side: Side = "hubspot") -> str | None:
        """The canonical form of a value read from ``side``."""
        if side == "hubspot":
            return self.canonical_hubspot(value)
        return self.canonical_brevo(value)


class Plain(Transform):
    """No transform: the text travels as it is (empty string = empty)."""

    name = "plain"

    def to_brevo(self, hubspot_value: str | None) -> Any:
        return text_of(hubspot_value)

    def to_hubspot(self, brevo_value: Any) -> str | None:
        return text_of(brevo_value)

    def canonical_brevo(self, brevo_value: Any) -> str | None:
        return text_of(brevo_value)


# --- text steps: the same normalisation on both sides --------------------------------------


class TextStep(Transform):
    """A text-to-text step: both directions and the canonical form are one normalisation."""

    @abstractmethod
    def normalise(self, text: str, side: Side) -> str | None:
        """The normalised text of a non-empty value read from ``side``."""

    def _apply(self, value: Any, side: Side) -> str | None:
        text = text_of(value)
        return None if text is None else self.normalise(text, side)

    def to_brevo(self, hubspot_value: str | None) -> Any:
        return self._apply(hubspot_value, "hubspot")

    def to_hubspot(self, brevo_value: Any) -> str | None:
        return self._apply(brevo_value, "brevo")

    def canonical_hubspot(self, hubspot_value: str | None) -> str | None:
        return self._apply(hubspot_value, "hubspot")

    def canonical_brevo(self, brevo_value: Any) -> str | None:
        return self._apply(brevo_value, "brevo")


class Trim(TextStep):
    """Strip leading and trailing white space."""

    name = "trim"

    def normalise(self, text: str, side: Side) -> str | None:
        return text.strip() or None


class Lower(TextStep):
    """Lower-case the text."""

    name = "lower"

    def normalise(self, text: str, side: Side) -> str | None:
        return text.lower() or None


class Email(TextStep):
    """An email address, stripped, lower-cased and syntax-checked."""

    name = "email"

    def normalise(self, text: str, side: Side) -> str | None:
        if not text.strip():
            return None
        email = normalise_email(text)
        if email is None:
            raise InvalidValue(f"{_short(text)} is not a valid email address")
        return email


class PhoneE164(TextStep):
    """A phone number in E.164 (``+4791234567``).

    HubSpot numbers without a country code are read in the default ``region``. Brevo stores
    numbers with their country code, with or without ``+`` or as ``00…``: a bare string of
    digits from Brevo is read as international first.
    """

    name = "phone_e164"

    def __init__(self, region: str = "US") -> None:
        region = region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise SpecError(f"unknown phone region {region!r}: use a two-letter code like US, NO")
        self.region = region

    def normalise(self, text: str, side: Side) -> str | None:
        raw = text.strip()
        if not raw:
            return None
        key = (raw, side == "brevo", self.region)
        e164 = _E164_SEEN[key] if key in _E164_SEEN else _e164(*key)
        if e164 is None:
            raise InvalidValue(
                f"{_short(raw)} is not a valid phone number (default region {self.region})"
            )
        return e164


_PHONE_PUNCTUATION = re.compile(r"[\s().\-/]")
_E164_SEEN: dict[tuple[str, bool, str], str | None] = {}
"""Numbers already parsed: each is parsed several times per record (HubSpot's text, its E.164
form, Brevo's copy), and parsing is slow. At :data:`_E164_KEPT` entries the older half is
dropped (not all: the numbers of the pass under way are read again by its import's read-back)."""
_E164_KEPT = 1 << 14


def _e164(raw: str, from_brevo: bool, region: str) -> str | None:
    """:func:`_parse_e164`, remembered; an E.164 result is remembered as its own normal form
    too (an E.164 number parses back to itself, from either side), and so are its digits
    without the ``+`` from Brevo, which answers numbers that way (from Brevo, digits are read
    as ``+digits`` first: that E.164 number again)."""
    result = _parse_e164(raw, from_brevo, region)
    if len(_E164_SEEN) >= _E164_KEPT:
        for old in list(itertools.islice(_E164_SEEN, _E164_KEPT // 2)):
            del _E164_SEEN[old]
    _E164_SEEN[raw, from_brevo, region] = result
    if result is not None:
        _E164_SEEN[result, False, region] = _E164_SEEN[result, True, region] = result
        _E164_SEEN[result[1:], True, region] = result
    return result


def _parse_e164(raw: str, from_brevo: bool, region: str) -> str | None:
    """A stripped, non-empty phone number in E.164, or ``None`` if it is not valid."""
    compact = _PHONE_PUNCTUATION.sub("", raw)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    candidates = [compact]
    if from_brevo and compact.isdigit():
        candidates.insert(0, "+" + compact)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


# --- typed steps ---------------------------------------------------------------------------

_EPOCH = date(1970, 1, 1)
_MS_PER_DAY = 86_400_000
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH_MS_RE = re.compile(r"-?\d+")


class DateTransform(Transform):
    """A HubSpot date or datetime property ↔ a Brevo date attribute (``YYYY-MM-DD``).

    HubSpot values read: epoch milliseconds (as a string), an ISO date, or an ISO date-time
    (converted to its UTC calendar day). Written back: midnight-UTC epoch milliseconds for a
    ``date`` property, ``YYYY-MM-DDT00:00:00Z`` for a ``datetime`` one. The canonical form is
    the calendar day, ``YYYY-MM-DD``: Brevo keeps no time of day.
    """

    name = "date"

    def __init__(self, hubspot_type: HubSpotDateType = "date") -> None:
        if hubspot_type not in ("date", "datetime"):
            raise SpecError(f"hubspot_type must be date or datetime, not {hubspot_type!r}")
        self.hubspot_type: HubSpotDateType = hubspot_type

    def to_brevo(self, hubspot_value: str | None) -> Any:
        day = _hubspot_day(hubspot_value)
        return None if day is None else day.isoformat()

    def to_hubspot(self, brevo_value: Any) -> str | None:
        day = _brevo_day(brevo_value)
        if day is None:
            return None
        if self.hubspot_type == "datetime":
            return f"{day.isoformat()}T00:00:00Z"
        return str((day - _EPOCH).days * _MS_PER_DAY)

    def canonical_brevo(self, brevo_value: Any) -> str | None:
        day = _brevo_day(brevo_value)
        return None if day is None else day.isoformat()


def _hubspot_day(value: str | None) -> date | None:
    """The UTC calendar day of a HubSpot date/datetime value."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        if _EPOCH_MS_RE.fullmatch(text):
            return _EPOCH + timedelta(days=int(text) // _MS_PER_DAY)
        if _DATE_RE.fullmatch(text):
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise InvalidValue(f"{_short(value)} is not a HubSpot date or date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date()


def _brevo_day(value: Any) -> date | None:
    """The calendar day of a Brevo date value (its date part as written, no zone shift)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        match = _DATE_RE.match(value.strip())
        if match:
            try:
                return date.fromisoformat(match.group(0))
            except ValueError:
                pass
    raise InvalidValue(f"{_short(value)} is not a Brevo date (YYYY-MM-DD)")


class NumberTransform(Transform):
    """A HubSpot number string (``"1200.50"``) ↔ a Brevo float.

    The canonical form is the value at float precision in plain digits without trailing
    zeros (``"1200.5"``), since that is all Brevo keeps.
    """

    name = "number"

    def to_brevo(self, hubspot_value: str | None) -> Any:
        value = _hubspot_number(hubspot_value)
        if value is None:
            return None
        if value.is_integer() and abs(value) < 1e15:
            return int(value)
        return value

    def to_hubspot(self, brevo_value: Any) -> str | None:
        return self.canonical_brevo(brevo_value)

    def canonical_brevo(self, brevo_value: Any) -> str | None:
        value = _brevo_number(brevo_value)
        return None if value is None else number_text(value)


def _hubspot_number(value: str | None) -> float | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        number = float(Decimal(text))
    except (InvalidOperation, ValueError, OverflowError):
        raise InvalidValue(f"{_short(value)} is not a number") from None
    if not math.isfinite(number):
        raise InvalidValue(f"{_short(value)} is not a finite number")
    return number


def _brevo_number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidValue(f"{value!r} is a boolean, not a number")
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise InvalidValue(f"{value!r} is not a finite number")
        return number
    if isinstance(value, str):
        return _hubspot_number(value)
    raise InvalidValue(f"{_short(value)} is not a number")


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class BooleanTransform(Transform):
    """A HubSpot ``"true"``/``"false"`` string ↔ a Brevo boolean."""

    name = "boolean"

    def to_brevo(self, hubspot_value: str | None) -> Any:
        return _truth(hubspot_value)

    def to_hubspot(self, brevo_value: Any) -> str | None:
        return self.canonical_brevo(brevo_value)

    def canonical_brevo(self, brevo_value: Any) -> str | None:
        truth = _truth(brevo_value)
        return None if truth is None else ("true" if truth else "false")


def _truth(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise InvalidValue(f"{_short(value)} is not a boolean (true or false)")


Scalar = str | int | float | bool


class ValueMap(Transform):
    """A table from HubSpot values to Brevo values (e.g. lifecycle stage → category id).

    The canonical form is the Brevo value as text, so a many-to-one table still compares
    correctly towards Brevo; going back to HubSpot needs a one-to-one table
    (:attr:`one_to_one`). A value missing from the table is an :class:`InvalidValue`.
    """

    name = "value_map"

    def __init__(self, table: Mapping[Any, Any]) -> None:
        if not table:
            raise SpecError("value_map needs at least one 'hubspot value: brevo value' entry")
        forward: dict[str, Scalar] = {}
        for key, value in table.items():
            if not isinstance(value, str | int | float | bool) or value == "":
                raise SpecError(f"value_map: the value for {key!r} must be a non-empty scalar")
            forward[str(text_of(key))] = value
        self.forward = forward
        self.backward: dict[str, list[str]] = {}
        for key, value in forward.items():
            self.backward.setdefault(str(text_of(value)), []).append(key)

    @property
    def one_to_one(self) -> bool:
        """Whether each Brevo value comes from one HubSpot value only (needed both ways)."""
        return all(len(keys) == 1 for keys in self.backward.values())

    def ambiguous(self) -> dict[str, list[str]]:
        """The Brevo values that several HubSpot values map to."""
        return {value: keys for value, keys in self.backward.items() if len(keys) > 1}

    def to_brevo(self, hubspot_value: str | None) -> Any:
        key = text_of(hubspot_value)
        if key is None:
            return None
        if key not in self.forward:
            known = ", ".join(sorted(self.forward))
            raise InvalidValue(f"{_short(key)} is not in the value map (known: {known})")
        return self.forward[key]

    def to_hubspot(self, brevo_value: Any) -> str | None:
        key = self.canonical_brevo(brevo_value)
        if key is None:
            return None
        keys = self.backward.get(key)
        if not keys:
            raise InvalidValue(f"Brevo value {_short(brevo_value)} is not in the value map")
        if len(keys) > 1:
            raise InvalidValue(f"Brevo value {key} maps back to several values: {keys}")
        return keys[0]

    def canonical_brevo(self, brevo_value: Any) -> str | None:
        if isinstance(brevo_value, float) and brevo_value.is_integer():
            brevo_value = int(brevo_value)
        return text_of(brevo_value)


# --- chains --------------------------------------------------------------------------------


class Chain(Transform):
    """Text steps applied in order, then at most one typed step (which comes last)."""

    name = "chain"

    def __init__(self, steps: Sequence[Transform]) -> None:
        text_steps: list[TextStep] = []
        typed: Transform | None = None
        for step in steps:
            if typed is not None:
                raise SpecError(
                    f"'{typed.name}' must be the last transform of a chain "
                    f"('{step.name}' comes after it)"
                )
            if isinstance(step, TextStep):
                text_steps.append(step)
            else:
                typed = step
        self.text_steps = tuple(text_steps)
        self.typed: Transform = typed if typed is not None else Plain()
        self.steps = tuple(steps)

    def _text(self, value: Any, side: Side) -> str | None:
        text = text_of(value)
        for step in self.text_steps:
            if text is None:
                return None
            text = step.normalise(text, side)
        return text

    def to_brevo(self, hubspot_value: str | None) -> Any:
        return self.typed.to_brevo(self._text(hubspot_value, "hubspot"))

    def to_hubspot(self, brevo_value: Any) -> str | None:
        if isinstance(self.typed, Plain):
            return self._text(brevo_value, "brevo")
        return self._text(self.typed.to_hubspot(brevo_value), "hubspot")

    def canonical_brevo(self, brevo_value: Any) -> str | None:
        if isinstance(self.typed, Plain):
            return self._text(brevo_value, "brevo")
        return self.typed.canonical_brevo(brevo_value)


def build_step(name: str, params: Mapping[str, Any] | None = None, **defaults: Any) -> Transform:
    """One transform from its mapping-file name and parameters.

    ``defaults`` supplies ``region`` (phone) and ``hubspot_type`` (date) when the step's own
    parameters do not.
    """
    params = dict(params or {})
    if name == "value_map":
        return ValueMap(params)
    if name == "phone_e164":
        _only(name, params, {"region"})
        region = params.get("region", defaults.get("region", "US"))
        if not isinstance(region, str):
            raise SpecError(f'quote the region code: region: "NO" (YAML read {region!r})')
        return PhoneE164(region)
    if name == "date":
        _only(name, params, {"hubspot_type"})
        return DateTransform(params.get("hubspot_type", defaults.get("hubspot_type", "date")))
    simple: dict[str, type[Transform]] = {
        "trim": Trim,
        "lower": Lower,
        "email": Email,
        "number": NumberTransform,
        "boolean": BooleanTransform,
    }
    if name not in simple:
        raise SpecError(f"unknown transform {name!r} (known: {', '.join(sorted(TRANSFORM_NAMES))})")
    _only(name, params, set())
    return simple[name]()


def _only(name: str, params: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        takes = f"takes only {', '.join(sorted(allowed))}" if allowed else "takes no parameters"
        raise SpecError(f"transform {name!r} {takes} (got {', '.join(extra)})")


def build_chain(steps: Iterable[tuple[str, Mapping[str, Any] | None]], **defaults: Any) -> Chain:
    """A chain from ``(name, params)`` pairs; an empty chain is :class:`Plain` text."""
    return Chain([build_step(name, params, **defaults) for name, params in steps])
