"""Plain dataclasses for Brevo's CRM objects: companies, deals, pipelines, CRM attributes.

Parsed by :mod:`connector.brevo.crm` from Brevo's JSON (the SDK's pydantic models are not
passed on, as in :mod:`connector.brevo.models`). Companies and deals carry string
(ObjectId-like) ids; contacts linked to them carry Brevo's integer contact ids.

Brevo keeps a record's name and timestamps among its ``attributes``: ``name`` for a company,
``deal_name`` for a deal, ``created_at`` and a last-update stamp, spelt ``last_updated_at`` in
the spec's company example and ``last_updated_date`` in its deal example (SPEC24 ``Company`` /
``Deal`` schemas). Both spellings are read [UNVERIFIED which one live deals carry].
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from .models import parse_datetime

CrmKind = Literal["company", "deal"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MODIFIED_KEYS = ("last_updated_at", "last_updated_date", "updated_at")


def _stamps(attributes: Mapping[str, Any]) -> tuple[datetime, datetime]:
    created = parse_datetime(attributes.get("created_at")) or _EPOCH
    for key in _MODIFIED_KEYS:
        modified = parse_datetime(attributes.get(key))
        if modified is not None:
            return created, modified
    return created, created


def _int_ids(raw: Any) -> list[int]:
    out: list[int] = []
    for v in raw or []:
        try:
            out.append(int(v))
        except (TypeError, ValueError):
            continue
    return out


def _str_ids(raw: Any) -> list[str]:
    return [str(v) for v in raw or [] if v not in (None, "")]


@dataclass(frozen=True, slots=True)
class BrevoCompany:
    """One Brevo company; ``attributes`` as Brevo names them (lower-case internal names)."""

    id: str
    name: str | None
    attributes: dict[str, Any]
    linked_contact_ids: list[int]
    linked_deal_ids: list[str]
    created_at: datetime
    modified_at: datetime

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrevoCompany:
        attributes = dict(raw.get("attributes") or {})
        created, modified = _stamps(attributes)
        name = attributes.get("name")
        return cls(
            id=str(raw["id"]),
            name=str(name) if name not in (None, "") else None,
            attributes=attributes,
            linked_contact_ids=_int_ids(raw.get("linkedContactsIds")),
            linked_deal_ids=_str_ids(raw.get("linkedDealsIds")),
            created_at=created,
            modified_at=modified,
        )


@dataclass(frozen=True, slots=True)
class BrevoDeal:
    """One Brevo deal; ``pipeline`` and ``stage`` are the ids of its pipeline and stage."""

    id: str
    name: str | None
    attributes: dict[str, Any]
    linked_contact_ids: list[int]
    linked_company_ids: list[str]
    pipeline: str | None
    stage: str | None
    created_at: datetime
    modified_at: datetime

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrevoDeal:
        attributes = dict(raw.get("attributes") or {})
        created, modified = _stamps(attributes)
        name = attributes.get("deal_name")
        pipeline = attributes.get("pipeline")
        stage = attributes.get("deal_stage")
        return cls(
            id=str(raw["id"]),
            name=str(name) if name not in (None, "") else None,
            attributes=attributes,
            linked_contact_ids=_int_ids(raw.get("linkedContactsIds")),
            linked_company_ids=_str_ids(raw.get("linkedCompaniesIds")),
            pipeline=str(pipeline) if pipeline not in (None, "") else None,
            stage=str(stage) if stage not in (None, "") else None,
            created_at=created,
            modified_at=modified,
        )


@dataclass(frozen=True, slots=True)
class BrevoStage:
    """A deal stage (its id is what a deal's ``deal_stage`` attribute holds)."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class BrevoPipeline:
    """A deal pipeline and its stages, in Brevo's order."""

    id: str
    name: str
    stages: tuple[BrevoStage, ...]

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> BrevoPipeline:
        stages = tuple(
            BrevoStage(id=str(s.get("id", "")), name=str(s.get("name", "")))
            for s in raw.get("stages") or []
            if isinstance(s, Mapping)
        )
        return cls(
            id=str(raw.get("pipeline", "")), name=str(raw.get("pipeline_name", "")), stages=stages
        )

    def stage(self, stage_id: str) -> BrevoStage | None:
        return next((s for s in self.stages if s.id == stage_id), None)


@dataclass(frozen=True, slots=True)
class CrmAttribute:
    """A company or deal attribute: ``internal_name`` is the key in ``attributes``.

    ``options`` maps a category option's key to its label (``attributeOptions[{key, value}]``).
    """

    internal_name: str
    label: str
    type: str
    required: bool = False
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> CrmAttribute:
        options: dict[str, str] = {}
        for opt in raw.get("attributeOptions") or []:
            if isinstance(opt, Mapping) and "key" in opt:
                options[str(opt["key"])] = str(opt.get("value", opt.get("label", "")))
        return cls(
            internal_name=str(raw.get("internalName", "")),
            label=str(raw.get("label", "")),
            type=str(raw.get("attributeTypeName", "")),
            required=bool(raw.get("isRequired", False)),
            options=options,
        )


def csv_value(value: Any) -> str:
    """One attribute value as a CSV cell: None → empty, booleans as ``true``/``false``,
    dates in ISO-8601, lists joined by commas, mappings as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(csv_value(v) for v in value)
    return str(value)


CSV_DELIMITER = ";"
"""Brevo's CRM import reads ``;``, ``,`` or tab (help.brevo.com "Format your deals and companies
import file"); ``;`` matches its contact imports and is rarer in free text than ``,``."""


def csv_line(cells: Sequence[str]) -> str:
    """One CSV line (with its ``\\n``), quoted only where a cell needs it."""
    buf = io.StringIO()
    csv.writer(buf, delimiter=CSV_DELIMITER, lineterminator="\n").writerow(cells)
    return buf.getvalue()


@dataclass(frozen=True, slots=True)
class CrmImportRow:
    """One company or deal for ``/companies/import`` or ``/crm/deals/import``.

    ``id`` names an existing record to update (the ``company_id`` / ``deal_id`` column, SPEC24);
    without it the row creates a record, which needs ``name`` (companies) or ``deal_name``
    (deals) among ``attributes``. A None or missing value is an empty cell: left alone by
    Brevo, or cleared when the import sets ``unset_empty_attributes``.
    """

    attributes: Mapping[str, Any]
    id: str | None = None


@dataclass(slots=True)
class LinkResult:
    """What a batch of link-unlink calls did: records written, and those Brevo refused."""

    calls: int = 0
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Record id → the error message Brevo gave (a 404 for a deleted record, a 400 …)."""


__all__ = [
    "CSV_DELIMITER",
    "BrevoCompany",
    "BrevoDeal",
    "BrevoPipeline",
    "BrevoStage",
    "CrmAttribute",
    "CrmImportRow",
    "CrmKind",
    "LinkResult",
    "csv_line",
    "csv_value",
]
