"""HubSpot sandbox handlers for v4 associations and account information."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response

from connector.sandbox.hubspot_http import (
    Ctx,
    batch_inputs,
    batch_response,
    int_id,
    item_error,
    now_iso,
)
from connector.sandbox.hubspot_model import (
    SINGULAR,
    TYPE_IDS,
    ApiError,
    assoc_types_between,
    iso_ms,
)

# ----------------------------------------------------------------------------- associations


def _assoc_types_json(types: list[Any]) -> list[dict[str, Any]]:
    return [{"category": "HUBSPOT_DEFINED", "typeId": a.type_id, "label": a.label} for a in types]


async def labels(c: Ctx) -> Response:
    f, t = c.type_param("from"), c.type_param("to")
    return JSONResponse({"results": _assoc_types_json(assoc_types_between(f, t))})


async def batch_read(c: Ctx) -> Response:
    f, t = c.type_param("from"), c.type_param("to")
    started = now_iso()
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    # association batch reads take up to 1,000 ids ([DOC] changelog 2025-02-10)
    for i in batch_inputs(await c.json(), maximum=1000):
        fid = int_id(i.get("id"), "id")
        links = c.state.associations_of(f, fid, t)
        if not links:
            errors.append(
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                    "message": f"No {SINGULAR[t]} is associated with {SINGULAR[f]} {fid}.",
                    "context": {"fromObjectId": [str(fid)]},
                    "errors": [],
                }
            )
            continue
        results.append(
            {
                "from": {"id": str(fid)},
                "to": [
                    {"toObjectId": tid, "associationTypes": _assoc_types_json(types)}
                    for tid, types in links
                ],
            }
        )
    return batch_response(results, errors, started, 200)


async def batch_create(c: Ctx) -> Response:
    f, t = c.type_param("from"), c.type_param("to")
    started = now_iso()
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i in batch_inputs(await c.json()):
        try:
            fid = int_id((i.get("from") or {}).get("id"), "from.id")
            tid = int_id((i.get("to") or {}).get("id"), "to.id")
            types = i.get("types") or []
            if not types:
                raise ApiError(400, "VALIDATION_ERROR", "types is required")
            for ty in types:
                c.state.associate(f, fid, t, tid, int_id(ty.get("associationTypeId"), "typeId"))
        except ApiError as e:
            errors.append(item_error(e, None, str((i.get("from") or {}).get("id"))))
            continue
        labels = [
            a.label
            for _, ats in c.state.associations_of(f, fid, t)
            for a in ats
            if _ == tid and a.label
        ]
        results.append(
            {
                "fromObjectTypeId": TYPE_IDS[f],
                "fromObjectId": fid,
                "toObjectTypeId": TYPE_IDS[t],
                "toObjectId": tid,
                "labels": labels,
            }
        )
    return batch_response(results, errors, started, 201)


async def batch_default(c: Ctx) -> Response:
    f, t = c.type_param("from"), c.type_param("to")
    started = now_iso()
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i in batch_inputs(await c.json()):
        try:
            fid = int_id((i.get("from") or {}).get("id"), "from.id")
            tid = int_id((i.get("to") or {}).get("id"), "to.id")
            at = c.state.associate_default(f, fid, t, tid)
        except ApiError as e:
            errors.append(item_error(e, None, str((i.get("from") or {}).get("id"))))
            continue
        results.append(_default_result(fid, tid, at.type_id))
    return batch_response(results, errors, started, 200)


def _default_result(fid: int, tid: int, type_id: int) -> dict[str, Any]:
    return {
        "from": {"id": str(fid)},
        "to": {"id": str(tid)},
        "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id},
    }


async def batch_archive(c: Ctx) -> Response:
    f, t = c.type_param("from"), c.type_param("to")
    for i in batch_inputs(await c.json()):
        fid = int_id((i.get("from") or {}).get("id"), "from.id")
        tos = i.get("to") or []
        for to in tos if isinstance(tos, list) else [tos]:
            c.state.disassociate(f, fid, t, int_id(to.get("id"), "to.id"))
    return Response(status_code=204)


async def batch_labels_archive(c: Ctx) -> Response:
    f, t = c.type_param("from"), c.type_param("to")
    for i in batch_inputs(await c.json()):
        fid = int_id((i.get("from") or {}).get("id"), "from.id")
        tid = int_id((i.get("to") or {}).get("id"), "to.id")
        ids = [int_id(ty.get("associationTypeId"), "typeId") for ty in i.get("types") or []]
        c.state.disassociate(f, fid, t, tid, ids)
    return Response(status_code=204)


async def put_default(c: Ctx) -> Response:
    started = now_iso()
    f, t = c.type_param("type"), c.type_param("to")
    fid = int_id(c.request.path_params["id"], "id")
    tid = int_id(c.request.path_params["to_id"], "toObjectId")
    at = c.state.associate_default(f, fid, t, tid)
    return batch_response([_default_result(fid, tid, at.type_id)], [], started, 200)


async def put_labels(c: Ctx) -> Response:
    f, t = c.type_param("type"), c.type_param("to")
    fid = int_id(c.request.path_params["id"], "id")
    tid = int_id(c.request.path_params["to_id"], "toObjectId")
    raw = json.loads(await c.request.body() or b"[]")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "VALIDATION_ERROR", "Body must be a non-empty list of types")
    for ty in raw:
        c.state.associate(f, fid, t, tid, int_id(ty.get("associationTypeId"), "typeId"))
    labels = [
        a.label
        for x, ats in c.state.associations_of(f, fid, t)
        for a in ats
        if x == tid and a.label
    ]
    return JSONResponse(
        {
            "fromObjectTypeId": TYPE_IDS[f],
            "fromObjectId": fid,
            "toObjectTypeId": TYPE_IDS[t],
            "toObjectId": tid,
            "labels": labels,
        },
        status_code=201,
    )


async def list_for_object(c: Ctx) -> Response:
    f, t = c.type_param("type"), c.type_param("to")
    fid = int_id(c.request.path_params["id"], "id")
    links = c.state.associations_of(f, fid, t)
    return JSONResponse(
        {
            "results": [
                {"toObjectId": tid, "associationTypes": _assoc_types_json(types)}
                for tid, types in links
            ]
        }
    )


async def delete_one(c: Ctx) -> Response:
    f, t = c.type_param("type"), c.type_param("to")
    fid = int_id(c.request.path_params["id"], "id")
    c.state.disassociate(f, fid, t, int_id(c.request.path_params["to_id"], "toObjectId"))
    return Response(status_code=204)


# ---------------------------------------------------------------------------------- account


async def account_details(c: Ctx) -> Response:
    s = c.state
    return JSONResponse(
        {
            "portalId": s.portal_id,
            "accountType": "STANDARD",
            "timeZone": s.time_zone,
            "companyCurrency": "EUR",
            "additionalCurrencies": [],
            "utcOffset": "+01:00",
            "utcOffsetMilliseconds": 3_600_000,
            "uiDomain": "app-eu1.hubspot.com",
            "dataHostingLocation": "eu1",
        }
    )


async def api_usage(c: Ctx) -> Response:
    used, limit = c.state.daily_usage()
    now = c.state.now_ms()
    return JSONResponse(
        {
            "results": [
                {
                    "name": "api-calls-daily",
                    "usageLimit": limit,
                    "currentUsage": used,
                    "collectedAt": iso_ms(now),
                    "fetchStatus": "SUCCESS",
                    "resetsAt": iso_ms(now - now % 86_400_000 + 86_400_000),
                }
            ]
        }
    )
