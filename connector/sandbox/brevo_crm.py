"""Brevo CRM in the sandbox: companies, deals and pipelines (string ids), minimal but real.

All of these fall in the "other endpoints" rate family (100 requests/hour on general plans).
``PATCH`` with ``linkedContactsIds``/``linkedDealsIds`` replaces the whole association list,
as the SDK documents; ``link-unlink`` adds and removes single links.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector.sandbox.brevo_http import (
    handles_errors,
    json_ok,
    no_content,
    q_int,
    q_sort,
    read_multipart,
    read_object,
    state_of,
)
from connector.sandbox.brevo_model import BrevoError, JSONDict, bad, not_found, parse_datetime


@dataclass(slots=True)
class CrmRecord:
    """A company or a deal: attributes plus links to contacts and to the other kind."""

    id: str
    attributes: JSONDict
    linked_contacts: list[int]
    linked_other: list[str]
    created_at: datetime
    modified_at: datetime


def _attr(name: str, label: str, kind: str, required: bool = False) -> JSONDict:
    return {
        "internalName": name,
        "label": label,
        "attributeTypeName": kind,
        "attributeOptions": [],
        "isRequired": required,
    }


# Default attributes of a new account (help.brevo.com "default company / deal attributes");
# SPEC24 ``CompanyAttributes`` / ``DealAttributes`` give the shape.
COMPANY_ATTRIBUTES: tuple[JSONDict, ...] = (
    _attr("name", "Company name", "text", True),
    _attr("owner", "Company owner", "user"),
    _attr("domain", "Domain", "text"),
    _attr("industry", "Industry", "text"),
    _attr("phone_number", "Phone", "number"),
    _attr("number_of_employees", "Number of employees", "number"),
    _attr("revenue", "Revenue", "number"),
    _attr("created_at", "Created at", "date"),
    _attr("last_updated_at", "Last updated at", "date"),
)
DEAL_ATTRIBUTES: tuple[JSONDict, ...] = (
    _attr("deal_name", "Deal name", "text", True),
    _attr("deal_owner", "Deal owner", "user"),
    _attr("amount", "Amount", "number"),
    _attr("pipeline", "Pipeline", "pipeline"),
    _attr("deal_stage", "Deal stage", "stage"),
    _attr("close_date", "Close date", "date"),
    _attr("created_at", "Created at", "date"),
    _attr("last_updated_at", "Last updated at", "date"),
)


@dataclass
class CrmStore:
    """Companies, deals and the default sales pipeline."""

    clock: Callable[[], datetime]
    companies: dict[str, CrmRecord] = field(default_factory=dict)
    deals: dict[str, CrmRecord] = field(default_factory=dict)
    attribute_defs: dict[str, list[JSONDict]] = field(
        default_factory=lambda: {
            "company": [dict(a) for a in COMPANY_ATTRIBUTES],
            "deal": [dict(a) for a in DEAL_ATTRIBUTES],
        }
    )
    _counter: int = 0

    def __post_init__(self) -> None:
        self.pipeline_id = self.new_id()
        self.stages = [
            {"id": self.new_id(), "name": name}
            for name in ("New", "Qualified", "Proposal", "Negotiation", "Won", "Lost")
        ]

    def new_id(self) -> str:
        """A 24-hex-digit, ObjectId-like id: creation second + counter."""
        self._counter += 1
        return f"{int(self.clock().timestamp()) & 0xFFFFFFFF:08x}{self._counter:016x}"

    def pipelines(self) -> list[JSONDict]:
        return [
            {"pipeline": self.pipeline_id, "pipeline_name": "Sales pipeline", "stages": self.stages}
        ]

    def forget_contact(self, contact_id: int) -> None:
        for rec in (*self.companies.values(), *self.deals.values()):
            if contact_id in rec.linked_contacts:
                rec.linked_contacts.remove(contact_id)

    def create(self, kind: str, name: str, attributes: JSONDict) -> CrmRecord:
        now = self.clock()
        attrs = dict(attributes)
        if kind == "company":
            attrs["name"] = name
        else:
            attrs["deal_name"] = name
            attrs.setdefault("pipeline", self.pipeline_id)
            attrs.setdefault("deal_stage", self.stages[0]["id"])
            self.check_stage(attrs)
        rec = CrmRecord(self.new_id(), attrs, [], [], now, now)
        (self.companies if kind == "company" else self.deals)[rec.id] = rec
        return rec

    def check_stage(self, attrs: JSONDict) -> None:
        if attrs.get("pipeline") != self.pipeline_id:
            raise bad("pipeline does not exist")
        if attrs.get("deal_stage") not in {s["id"] for s in self.stages}:
            raise bad("deal_stage does not exist in the pipeline")

    def touch(self, rec: CrmRecord) -> None:
        rec.modified_at = self.clock()


def _ids(value: object, name: str, kind: type) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(v, kind) and not isinstance(v, bool) for v in value
    ):
        raise bad(f"{name} should be an array of {'integers' if kind is int else 'strings'}")
    return list(dict.fromkeys(value))


def _record_json(rec: CrmRecord, kind: str, fmt: Callable[[datetime], str]) -> JSONDict:
    attrs = dict(rec.attributes)
    attrs["created_at"] = fmt(rec.created_at)
    attrs["last_updated_at"] = fmt(rec.modified_at)
    other = "linkedDealsIds" if kind == "company" else "linkedCompaniesIds"
    return {
        "id": rec.id,
        "attributes": attrs,
        "linkedContactsIds": list(rec.linked_contacts),
        other: list(rec.linked_other),
    }


def _get(store: dict[str, CrmRecord], rid: str, what: str) -> CrmRecord:
    rec = store.get(rid)
    if rec is None:
        raise not_found(f"{what} not found")
    return rec


def _link(
    crm: CrmStore, rec: CrmRecord, kind: str, contacts: list[int], others: list[str], add: bool
) -> None:
    other_store = crm.deals if kind == "company" else crm.companies
    for cid in contacts:
        if add and cid not in rec.linked_contacts:
            rec.linked_contacts.append(cid)
        elif not add and cid in rec.linked_contacts:
            rec.linked_contacts.remove(cid)
    for oid in others:
        other = other_store.get(oid)
        if other is None:
            raise bad(f"{'Deal' if kind == 'company' else 'Company'} {oid} not found")
        if add and oid not in rec.linked_other:
            rec.linked_other.append(oid)
            if rec.id not in other.linked_other:
                other.linked_other.append(rec.id)
        elif not add and oid in rec.linked_other:
            rec.linked_other.remove(oid)
            if rec.id in other.linked_other:
                other.linked_other.remove(rec.id)


def _check_contacts(request: Request, ids: list[int]) -> None:
    state = state_of(request)
    missing = [i for i in ids if i not in state.contacts]
    if missing:
        raise bad(f"Contact(s) not found: {', '.join(map(str, missing))}")


def _filtered(request: Request, records: list[CrmRecord], other_param: str) -> list[CrmRecord]:
    qp = request.query_params
    modified = qp.get("modifiedSince")
    created = qp.get("createdSince")
    if modified:
        since = parse_datetime(modified, "modifiedSince")
        records = [r for r in records if r.modified_at >= since]
    if created:
        since = parse_datetime(created, "createdSince")
        records = [r for r in records if r.created_at >= since]
    contact = qp.get("linkedContactsIds") or qp.get("filters[linkedContactsIds]")
    if contact:
        records = [r for r in records if contact.isdigit() and int(contact) in r.linked_contacts]
    other = qp.get(other_param) or qp.get(f"filters[{other_param}]")
    if other:
        records = [r for r in records if other in r.linked_other]
    for key, value in qp.items():
        if key.startswith("filters[attributes.") and key.endswith("]"):
            attr = key[len("filters[attributes.") : -1]
            records = [
                r for r in records if str(r.attributes.get(attr, "")).lower() == value.lower()
            ]
    return records


# --- companies --------------------------------------------------------------------------------


@handles_errors
async def list_companies(request: Request) -> Response:
    """``GET /companies``: ``page`` (from 1) and ``limit``, newest first by default."""
    state = state_of(request)
    page = q_int(request, "page", 1, minimum=1)
    limit = q_int(request, "limit", 50, maximum=1000, minimum=1)
    sort = q_sort(request)
    records = _filtered(request, list(state.crm.companies.values()), "linkedDealsIds")
    if sort == "desc":
        records.reverse()
    chunk = records[(page - 1) * limit : page * limit]
    return json_ok({"items": [_record_json(r, "company", state.fmt) for r in chunk]})


@handles_errors
async def create_company(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BrevoError(400, "missing_parameter", "name is required")
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise bad("attributes should be an object")
    contacts = _ids(body.get("linkedContactsIds"), "linkedContactsIds", int)
    deals = _ids(body.get("linkedDealsIds"), "linkedDealsIds", str)
    _check_contacts(request, contacts)
    if "countryCode" in body:
        attrs = {**attrs, "country_code": body["countryCode"]}
    rec = state.crm.create("company", name.strip(), attrs)
    _link(state.crm, rec, "company", contacts, deals, add=True)
    return json_ok({"id": rec.id})


@handles_errors
async def get_company(request: Request) -> Response:
    state = state_of(request)
    rec = _get(state.crm.companies, request.path_params["id"], "Company")
    return json_ok(_record_json(rec, "company", state.fmt))


@handles_errors
async def patch_company(request: Request) -> Response:
    """``PATCH /companies/{id}``: attributes merge; link lists, when given, replace."""
    state = state_of(request)
    rec = _get(state.crm.companies, request.path_params["id"], "Company")
    body = await read_object(request)
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise bad("attributes should be an object")
    rec.attributes.update(attrs)
    if isinstance(body.get("name"), str) and body["name"].strip():
        rec.attributes["name"] = body["name"].strip()
    if "countryCode" in body:
        rec.attributes["country_code"] = body["countryCode"]
    if "linkedContactsIds" in body:
        contacts = _ids(body["linkedContactsIds"], "linkedContactsIds", int)
        _check_contacts(request, contacts)
        rec.linked_contacts = contacts
    if "linkedDealsIds" in body:
        deals = _ids(body["linkedDealsIds"], "linkedDealsIds", str)
        _link(state.crm, rec, "company", [], list(rec.linked_other), add=False)
        _link(state.crm, rec, "company", [], deals, add=True)
    state.crm.touch(rec)
    return json_ok(_record_json(rec, "company", state.fmt))


@handles_errors
async def delete_company(request: Request) -> Response:
    state = state_of(request)
    rec = _get(state.crm.companies, request.path_params["id"], "Company")
    _link(state.crm, rec, "company", [], list(rec.linked_other), add=False)
    del state.crm.companies[rec.id]
    return no_content()


@handles_errors
async def link_company(request: Request) -> Response:
    state = state_of(request)
    rec = _get(state.crm.companies, request.path_params["id"], "Company")
    body = await read_object(request)
    link_c = _ids(body.get("linkContactIds"), "linkContactIds", int)
    _check_contacts(request, link_c)
    _link(
        state.crm, rec, "company", link_c, _ids(body.get("linkDealsIds"), "linkDealsIds", str), True
    )
    unlink_c = _ids(body.get("unlinkContactIds"), "unlinkContactIds", int)
    unlink_d = _ids(body.get("unlinkDealsIds"), "unlinkDealsIds", str)
    _link(state.crm, rec, "company", unlink_c, unlink_d, add=False)
    state.crm.touch(rec)
    return no_content()


@handles_errors
async def import_companies(request: Request) -> Response:
    """``POST /companies/import`` (multipart ``file`` CSV + ``mapping`` JSON) → ``{processId}``.

    Rows with a ``company_id`` (SPEC24; ``id`` is read too) naming an existing company update
    it when ``mapping.update_existing_records`` is true; other rows create companies (``name``
    needed).
    """
    state = state_of(request)
    fields = await read_multipart(request)
    if "file" not in fields:
        raise BrevoError(400, "missing_parameter", "file is required")
    mapping: JSONDict = {}
    if "mapping" in fields:
        try:
            loaded = json.loads(fields["mapping"])
        except json.JSONDecodeError:
            raise bad("mapping must be JSON") from None
        if not isinstance(loaded, dict):
            raise bad("mapping must be a JSON object")
        mapping = loaded
    text = fields["file"].decode("utf-8-sig")
    first = text.split("\n", 1)[0]
    reader = csv.DictReader(io.StringIO(text), delimiter=";" if ";" in first else ",")
    proc = state.new_process("IMPORT_COMPANIES")
    stats = {"created": 0, "updated": 0, "invalid": 0}
    unset = bool(mapping.get("unset_empty_attributes"))
    for row in reader:
        values = {str(k).strip(): (v or "").strip() for k, v in row.items() if k}
        rid = values.pop("company_id", "") or values.pop("id", "")
        values.pop("id", None)
        existing = state.crm.companies.get(rid) if rid else None
        attrs = {k: v for k, v in values.items() if v or unset}
        if existing is not None and mapping.get("update_existing_records", True):
            for k, v in attrs.items():
                if v == "":
                    existing.attributes.pop(k, None)
                else:
                    existing.attributes[k] = v
            state.crm.touch(existing)
            stats["updated"] += 1
        elif values.get("name"):
            name = attrs.pop("name")
            state.crm.create("company", name, {k: v for k, v in attrs.items() if v})
            stats["created"] += 1
        else:
            stats["invalid"] += 1
    proc.stats, proc.status = stats, "completed"
    return json_ok({"processId": proc.id})


# --- deals ------------------------------------------------------------------------------------


@handles_errors
async def list_deals(request: Request) -> Response:
    """``GET /crm/deals``: ``offset``/``limit``, newest first by default."""
    state = state_of(request)
    offset = q_int(request, "offset", 0)
    limit = q_int(request, "limit", 50, maximum=1000, minimum=1)
    sort = q_sort(request)
    records = _filtered(request, list(state.crm.deals.values()), "linkedCompaniesIds")
    if sort == "desc":
        records.reverse()
    chunk = records[offset : offset + limit]
    return json_ok({"items": [_record_json(r, "deal", state.fmt) for r in chunk]})


@handles_errors
async def create_deal(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BrevoError(400, "missing_parameter", "name is required")
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise bad("attributes should be an object")
    contacts = _ids(body.get("linkedContactsIds"), "linkedContactsIds", int)
    companies = _ids(body.get("linkedCompaniesIds"), "linkedCompaniesIds", str)
    _check_contacts(request, contacts)
    rec = state.crm.create("deal", name.strip(), attrs)
    _link(state.crm, rec, "deal", contacts, companies, add=True)
    return json_ok({"id": rec.id}, 201)


@handles_errors
async def get_deal(request: Request) -> Response:
    state = state_of(request)
    rec = _get(state.crm.deals, request.path_params["id"], "Deal")
    return json_ok(_record_json(rec, "deal", state.fmt))


@handles_errors
async def patch_deal(request: Request) -> Response:
    """``PATCH /crm/deals/{id}`` → 204; link lists, when given, replace."""
    state = state_of(request)
    rec = _get(state.crm.deals, request.path_params["id"], "Deal")
    body = await read_object(request)
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise bad("attributes should be an object")
    merged = {**rec.attributes, **attrs}
    state.crm.check_stage(merged)
    rec.attributes = merged
    if isinstance(body.get("name"), str) and body["name"].strip():
        rec.attributes["deal_name"] = body["name"].strip()
    if "linkedContactsIds" in body:
        contacts = _ids(body["linkedContactsIds"], "linkedContactsIds", int)
        _check_contacts(request, contacts)
        rec.linked_contacts = contacts
    if "linkedCompaniesIds" in body:
        companies = _ids(body["linkedCompaniesIds"], "linkedCompaniesIds", str)
        _link(state.crm, rec, "deal", [], list(rec.linked_other), add=False)
        _link(state.crm, rec, "deal", [], companies, add=True)
    state.crm.touch(rec)
    return no_content()


@handles_errors
async def delete_deal(request: Request) -> Response:
    state = state_of(request)
    rec = _get(state.crm.deals, request.path_params["id"], "Deal")
    _link(state.crm, rec, "deal", [], list(rec.linked_other), add=False)
    del state.crm.deals[rec.id]
    return no_content()


@handles_errors
async def link_deal(request: Request) -> Response:
    state = state_of(request)
    rec = _get(state.crm.deals, request.path_params["id"], "Deal")
    body = await read_object(request)
    link_c = _ids(body.get("linkContactIds"), "linkContactIds", int)
    _check_contacts(request, link_c)
    companies = _ids(body.get("linkCompanyIds"), "linkCompanyIds", str)
    _link(state.crm, rec, "deal", link_c, companies, add=True)
    unlink_c = _ids(body.get("unlinkContactIds"), "unlinkContactIds", int)
    unlink_o = _ids(body.get("unlinkCompanyIds"), "unlinkCompanyIds", str)
    _link(state.crm, rec, "deal", unlink_c, unlink_o, add=False)
    state.crm.touch(rec)
    return no_content()


def _coerce(value: str, kind: str | None) -> Any:
    """A CSV cell as the attribute's type stores it (numbers and booleans typed)."""
    if kind == "number":
        try:
            number = float(value)
        except ValueError:
            raise bad(f"{value!r} is not a number") from None
        return int(number) if number.is_integer() else number
    if kind == "boolean":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise bad(f"{value!r} is not a boolean")
        return value.lower() in ("true", "1", "yes")
    return value


async def _read_import(request: Request) -> tuple[JSONDict, list[dict[str, str]]]:
    """The ``mapping`` options and the CSV rows of a CRM import (``;``, ``,`` or tab)."""
    fields = await read_multipart(request)
    if "file" not in fields:
        raise BrevoError(400, "missing_parameter", "file is required")
    mapping: JSONDict = {}
    if "mapping" in fields:
        try:
            loaded = json.loads(fields["mapping"])
        except json.JSONDecodeError:
            raise bad("mapping must be JSON") from None
        if not isinstance(loaded, dict):
            raise bad("mapping must be a JSON object")
        mapping = loaded
    text = fields["file"].decode("utf-8-sig")
    first = text.split("\n", 1)[0]
    delimiter = ";" if ";" in first else "\t" if "\t" in first else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    rows = [{str(k).strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    return mapping, rows


@handles_errors
async def import_deals(request: Request) -> Response:
    """``POST /crm/deals/import`` (multipart ``file`` CSV + ``mapping`` JSON) → ``{processId}``.

    A row whose ``deal_id`` (``id`` is read too) names an existing deal updates it when
    ``mapping.update_existing_records`` (default true); other rows create deals (``deal_name``
    needed; ``pipeline``/``deal_stage`` default to the first pipeline's first stage). Empty
    cells are left alone unless ``unset_empty_attributes``. A row Brevo would refuse (unknown
    stage, a number that is not one) is counted ``invalid`` and the others still import.
    """
    state = state_of(request)
    mapping, rows = await _read_import(request)
    types = {a["internalName"]: a["attributeTypeName"] for a in state.crm.attribute_defs["deal"]}
    proc = state.new_process("IMPORT_DEALS")
    stats = {"created": 0, "updated": 0, "invalid": 0}
    unset = bool(mapping.get("unset_empty_attributes"))
    update = bool(mapping.get("update_existing_records", True))
    for values in rows:
        rid = values.pop("deal_id", "") or values.pop("id", "")
        values.pop("id", None)
        existing = state.crm.deals.get(rid) if rid else None
        try:
            attrs = {k: _coerce(v, types.get(k)) for k, v in values.items() if v}
            if existing is not None and update:
                merged = {**existing.attributes, **attrs}
                if unset:
                    for k, v in values.items():
                        if not v:
                            merged.pop(k, None)
                state.crm.check_stage(merged)
                existing.attributes = merged
                state.crm.touch(existing)
                stats["updated"] += 1
            elif attrs.get("deal_name"):
                name = str(attrs.pop("deal_name"))
                state.crm.create("deal", name, attrs)
                stats["created"] += 1
            else:
                stats["invalid"] += 1
        except BrevoError as err:
            proc.errors.append(err.message)
            stats["invalid"] += 1
    proc.stats, proc.status = stats, "completed"
    return json_ok({"processId": proc.id})


@handles_errors
async def company_attributes(request: Request) -> Response:
    """``GET /crm/attributes/companies`` (SDK 5.1.0) and ``GET /companies/attributes`` (SPEC24)."""
    return json_ok(state_of(request).crm.attribute_defs["company"])


@handles_errors
async def deal_attributes(request: Request) -> Response:
    """``GET /crm/attributes/deals``."""
    return json_ok(state_of(request).crm.attribute_defs["deal"])


@handles_errors
async def pipelines_all(request: Request) -> Response:
    return json_ok(state_of(request).crm.pipelines())


@handles_errors
async def pipeline_default(request: Request) -> Response:
    return json_ok(state_of(request).crm.pipelines()[0])


@handles_errors
async def pipeline_one(request: Request) -> Response:
    crm = state_of(request).crm
    if request.path_params["pipeline_id"] != crm.pipeline_id:
        raise not_found("Pipeline not found")
    return json_ok(crm.pipelines())


ROUTES = [
    Route("/companies", list_companies, methods=["GET"]),
    Route("/companies", create_company, methods=["POST"]),
    Route("/companies/import", import_companies, methods=["POST"]),
    Route("/companies/link-unlink/{id}", link_company, methods=["PATCH"]),
    Route("/companies/attributes", company_attributes, methods=["GET"]),
    Route("/crm/attributes/companies", company_attributes, methods=["GET"]),
    Route("/crm/attributes/deals", deal_attributes, methods=["GET"]),
    Route("/companies/{id}", get_company, methods=["GET"]),
    Route("/companies/{id}", patch_company, methods=["PATCH"]),
    Route("/companies/{id}", delete_company, methods=["DELETE"]),
    Route("/crm/deals", list_deals, methods=["GET"]),
    Route("/crm/deals", create_deal, methods=["POST"]),
    Route("/crm/deals/link-unlink/{id}", link_deal, methods=["PATCH"]),
    Route("/crm/deals/import", import_deals, methods=["POST"]),
    Route("/crm/deals/{id}", get_deal, methods=["GET"]),
    Route("/crm/deals/{id}", patch_deal, methods=["PATCH"]),
    Route("/crm/deals/{id}", delete_deal, methods=["DELETE"]),
    Route("/crm/pipeline/details/all", pipelines_all, methods=["GET"]),
    Route("/crm/pipeline/details", pipeline_default, methods=["GET"]),
    Route("/crm/pipeline/details/{pipeline_id}", pipeline_one, methods=["GET"]),
]
