"""Live mapping checks for Brevo CRM objects: companies and deals.

A mapping whose ``object:`` is ``companies`` or ``deals`` writes Brevo CRM records, whose
attributes are not contact attributes: they are read with ``GET /crm/attributes/companies`` /
``GET /crm/attributes/deals`` (:class:`~connector.brevo.crm.BrevoCrm`) and named by their
lower-case internal name (``deal_name``, ``amount``, ``pipeline``, ``deal_stage``).

:func:`check_crm_fields` checks each field's Brevo attribute (exists, type fits the field).
:func:`check_pipelines` checks a deals mapping's pipeline and stage value maps (``hubspot:
pipeline`` ⇄ ``brevo: pipeline``, ``hubspot: dealstage`` ⇄ ``brevo: deal_stage``) against both
sides' pipelines — HubSpot's ``GET /crm/pipelines/{version}/deals`` and Brevo's ``GET
/crm/pipeline/details/all``: every stage of a mapped HubSpot pipeline has an entry, every key
is a real HubSpot id and every value a real Brevo id, and a stage lands in the Brevo pipeline
its HubSpot pipeline maps to. Messages list the valid ids with their labels.

Brevo CRM calls count against the 100-per-hour CRM budget: a check costs two (attributes,
and pipelines for deals).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connector.brevo.crm_models import BrevoPipeline, CrmAttribute
from connector.hubspot.crm import Pipeline
from connector.mapping import CompiledField, Mapping, Severity
from connector.transforms import BooleanTransform, DateTransform, NumberTransform, ValueMap

#: HubSpot deal properties that hold a pipeline id and a stage id
HUBSPOT_PIPELINE = "pipeline"
HUBSPOT_STAGE = "dealstage"
#: Brevo deal attributes (internal names) that hold a pipeline id and a stage id (SPEC24 ``Deal``
#: example ``attributes.pipeline`` / ``attributes.deal_stage``; the attribute types are
#: ``pipeline`` and ``stage`` in ``GET /crm/attributes/deals``)
BREVO_PIPELINE = "pipeline"
BREVO_STAGE = "deal_stage"
#: Brevo CRM attribute types each kind of field fits
CRM_FITS: dict[str, frozenset[str]] = {
    "number": frozenset({"number"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"date"}),
    "boolean": frozenset({"boolean"}),
    "text": frozenset({"text", "user", "single-select", "multi-choice"}),
    "enumeration": frozenset({"text", "single-select", "multi-choice"}),
    "phone": frozenset({"text", "number"}),
}
#: Brevo attributes Brevo fills itself (never written by the connector)
CRM_COMPUTED = frozenset({"created_at", "last_updated_at", "last_updated_date"})
#: How a missing CRM attribute is created (Brevo's ``POST /crm/attributes`` exists in SDK
#: 5.1.0, not in SPEC24, and takes a *label*: the internal name Brevo derives from it is not
#: documented, so the connector does not create CRM attributes itself)
CREATE_HINT = (
    "create it in Brevo (CRM → Settings → {where} attributes) as a {type} attribute, then put "
    "its internal name here (--create-missing creates contact attributes only: Brevo names a "
    "new CRM attribute from its label, so check the name it got)"
)
#: CRM attribute type to offer for each kind of field
CRM_TYPE_FOR = {
    "number": "number",
    "date": "date",
    "datetime": "date",
    "boolean": "boolean",
    "value_map": "single-select",
}

AddProblem = Callable[[CompiledField, str, str, Severity], None]


@dataclass(frozen=True)
class CrmSide:
    """What the CRM checks read from the accounts."""

    attributes: dict[str, CrmAttribute]
    hubspot_pipelines: list[Pipeline]
    brevo_pipelines: list[BrevoPipeline]


def _kind(f: CompiledField) -> str:
    typed = f.transform.typed
    if isinstance(typed, ValueMap):
        return "value_map"
    if isinstance(typed, DateTransform):
        return typed.hubspot_type
    if isinstance(typed, NumberTransform):
        return "number"
    if isinstance(typed, BooleanTransform):
        return "boolean"
    return f.spec.type or "text"


def _where(mapping: Mapping) -> str:
    return "Company" if mapping.object == "companies" else "Deal"


def _attribute_list(attributes: dict[str, CrmAttribute]) -> str:
    shown = [f"{a.internal_name} ({a.type})" for a in attributes.values()]
    return ", ".join(shown[:20]) + (", …" if len(shown) > 20 else "")


def is_pipeline_field(f: CompiledField) -> bool:
    return f.hubspot == HUBSPOT_PIPELINE or f.brevo == BREVO_PIPELINE


def is_stage_field(f: CompiledField) -> bool:
    return f.hubspot == HUBSPOT_STAGE or f.brevo == BREVO_STAGE


def check_crm_fields(
    mapping: Mapping, attributes: dict[str, CrmAttribute], add: AddProblem
) -> None:
    """Each field's Brevo CRM attribute exists and takes what the field sends."""
    for f in mapping.fields:
        attr = attributes.get(f.brevo)
        if attr is None:
            lower = {name.lower(): a for name, a in attributes.items()}
            near = lower.get(f.brevo.lower())
            if near is not None:
                message = (
                    f"Brevo {mapping.object} attribute '{f.brevo}' does not exist; its internal "
                    f"name is '{near.internal_name}': write brevo: {near.internal_name}"
                )
            else:
                kind = _kind(f)
                wanted = CRM_TYPE_FOR.get(kind, "text")
                hint = CREATE_HINT.format(where=_where(mapping), type=wanted)
                message = (
                    f"Brevo {mapping.object} attribute '{f.brevo}' does not exist: {hint} "
                    f"(its attributes: {_attribute_list(attributes)})"
                )
            add(f, "brevo", message, "error")
            continue
        if attr.internal_name in CRM_COMPUTED and f.flows_to("brevo"):
            message = f"Brevo sets {attr.internal_name} itself: set direction: brevo_to_hubspot"
            add(f, "direction", message, "error")
            continue
        kind = _kind(f)
        if attr.type in ("pipeline", "stage") or is_pipeline_field(f) or is_stage_field(f):
            if kind != "value_map":
                message = (
                    f"Brevo attribute {attr.internal_name} holds {attr.type} ids, which differ "
                    "from HubSpot's: add a value_map from each HubSpot id to its Brevo id "
                    "(connector mappings check lists both sides' ids)"
                )
                add(f, "transform", message, "error")
            continue
        if kind == "value_map":
            _select_values(f, attr, add)
            continue
        fits = CRM_FITS.get(kind, frozenset({"text"}))
        if attr.type not in fits:
            wanted = CRM_TYPE_FOR.get(kind, "text")
            message = (
                f"type mismatch: Brevo {mapping.object} attribute {attr.internal_name} is "
                f"{attr.type}, the mapping treats it as {kind}: map it to a {wanted} attribute, "
                "or change the field's type and transform"
            )
            add(f, "brevo", message, "error")


def _select_values(f: CompiledField, attr: CrmAttribute, add: AddProblem) -> None:
    table = f.transform.typed
    assert isinstance(table, ValueMap)
    if attr.type not in ("single-select", "multi-choice") or not attr.options:
        return
    known = set(attr.options) | set(attr.options.values())
    unknown = sorted({str(v) for v in table.forward.values()} - known)
    if unknown:
        options = ", ".join(f"{k} ({label})" for k, label in attr.options.items())
        message = (
            f"value map values that are not options of Brevo attribute {attr.internal_name}: "
            f"{', '.join(unknown)} (its options: {options})"
        )
        add(f, "transform", message, "error")


# --- pipelines and stages ---------------------------------------------------------------------


def _hs_pipelines(pipelines: Sequence[Pipeline]) -> str:
    return "; ".join(f"{p.id} ({p.label})" for p in pipelines if not p.archived) or "none"


def _hs_stages(pipelines: Sequence[Pipeline]) -> str:
    return "; ".join(
        f"{p.label}: " + ", ".join(f"{s.id} ({s.label})" for s in p.stages if not s.archived)
        for p in pipelines
    )


def _br_pipelines(pipelines: Sequence[BrevoPipeline]) -> str:
    return "; ".join(f"{p.id} ({p.name})" for p in pipelines) or "none"


def _br_stages(pipelines: Sequence[BrevoPipeline]) -> str:
    return "; ".join(
        f"{p.name}: " + ", ".join(f"{s.id} ({s.name})" for s in p.stages) for p in pipelines
    )


def _table(f: CompiledField | None) -> dict[str, str] | None:
    if f is None or not isinstance(f.transform.typed, ValueMap):
        return None
    return {k: str(v) for k, v in f.transform.typed.forward.items()}


def check_pipelines(mapping: Mapping, side: CrmSide, add: AddProblem) -> None:
    """A deals mapping's pipeline and stage value maps against both sides' pipelines."""
    pipeline_field = next((f for f in mapping.fields if f.hubspot == HUBSPOT_PIPELINE), None)
    stage_field = next((f for f in mapping.fields if f.hubspot == HUBSPOT_STAGE), None)
    hs_all = side.hubspot_pipelines
    br_all = side.brevo_pipelines
    hs_by_id = {p.id: p for p in hs_all}
    br_by_id = {p.id: p for p in br_all}
    pipeline_map = _table(pipeline_field)
    if pipeline_field is not None and pipeline_map is not None:
        unknown = [k for k in pipeline_map if k not in hs_by_id]
        if unknown:
            message = (
                f"pipeline value map keys that are not HubSpot deal pipeline ids: "
                f"{', '.join(unknown)} (HubSpot's pipelines: {_hs_pipelines(hs_all)})"
            )
            add(pipeline_field, "transform", message, "error")
        bad = sorted({v for v in pipeline_map.values() if v not in br_by_id})
        if bad:
            message = (
                f"pipeline value map values that are not Brevo pipeline ids: {', '.join(bad)} "
                f"(Brevo's pipelines: {_br_pipelines(br_all)})"
            )
            add(pipeline_field, "transform", message, "error")
        unmapped = [p for p in hs_all if not p.archived and p.id not in pipeline_map]
        if unmapped and pipeline_field.flows_to("brevo"):
            listed = ", ".join(f"{p.id} ({p.label})" for p in unmapped)
            message = (
                f"HubSpot deal pipelines missing from the pipeline value map (their deals do "
                f"not reach Brevo): {listed} — add '<HubSpot id>: <Brevo pipeline id>' for each "
                f"(Brevo's pipelines: {_br_pipelines(br_all)})"
            )
            add(pipeline_field, "transform", message, "error")
    stage_map = _table(stage_field)
    if stage_field is None or stage_map is None:
        return
    mapped = (
        [hs_by_id[k] for k in pipeline_map if k in hs_by_id]
        if pipeline_map is not None
        else [p for p in hs_all if not p.archived]
    )
    all_stage_ids = {s.id for p in hs_all for s in p.stages}
    unknown = [k for k in stage_map if k not in all_stage_ids]
    if unknown:
        message = (
            f"stage value map keys that are not HubSpot deal stage ids: {', '.join(unknown)} "
            f"(HubSpot's stages: {_hs_stages(mapped or hs_all)})"
        )
        add(stage_field, "transform", message, "error")
    missing = [
        f"{s.id} ({p.label} / {s.label})"
        for p in mapped
        for s in p.stages
        if not s.archived and s.id not in stage_map
    ]
    if missing:
        message = (
            f"HubSpot deal stages missing from the stage value map: {', '.join(missing)} — add "
            f"'<HubSpot stage id>: <Brevo stage id>' for each (Brevo's stages: "
            f"{_br_stages(br_all)})"
        )
        add(stage_field, "transform", message, "error")
    brevo_stage_pipeline = {s.id: p for p in br_all for s in p.stages}
    bad = sorted({v for v in stage_map.values() if v not in brevo_stage_pipeline})
    if bad:
        message = (
            f"stage value map values that are not Brevo deal stage ids: {', '.join(bad)} "
            f"(Brevo's stages: {_br_stages(br_all)})"
        )
        add(stage_field, "transform", message, "error")
    if pipeline_map is None:
        return
    wrong: list[str] = []
    for p in mapped:
        target = br_by_id.get(pipeline_map[p.id])
        if target is None:
            continue
        for s in p.stages:
            value = stage_map.get(s.id)
            landed = brevo_stage_pipeline.get(value) if value is not None else None
            if landed is not None and landed.id != target.id:
                wrong.append(f"{s.id} → {value} (in {landed.name}, not {target.name})")
    if wrong:
        message = (
            "stages mapped into another Brevo pipeline than their HubSpot pipeline maps to: "
            f"{'; '.join(wrong)} (Brevo's stages: {_br_stages(br_all)})"
        )
        add(stage_field, "transform", message, "error")


__all__ = [
    "BREVO_PIPELINE",
    "BREVO_STAGE",
    "HUBSPOT_PIPELINE",
    "HUBSPOT_STAGE",
    "CrmSide",
    "check_crm_fields",
    "check_pipelines",
    "is_pipeline_field",
    "is_stage_field",
]
