"""HubSpot sandbox handlers for CRM objects, batches, search, merges, properties and owners."""

from __future__ import annotations

import bisect
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connector.sandbox.hubspot_http import (
    LIST_MAX,
    ORIGINAL_PATH,
    Ctx,
    batch_inputs,
    batch_response,
    item_error,
    not_found,
    now_iso,
)
from connector.sandbox.hubspot_model import (
    SINGULAR,
    ApiError,
    HsObject,
    assoc_name,
    canonical_type,
    validation_error,
)
from connector.sandbox.hubspot_search import SearchError, run_search

# ------------------------------------------------------------------------------- objects


def _next_link(request: Request, after: str) -> str:
    """The next page's URL, on the path as the client requested it (legacy or dated)."""
    url = request.url.include_query_params(after=after)
    original = request.scope.get(ORIGINAL_PATH)
    return str(url.replace(path=original)) if original else str(url)


def _render_with_assoc(
    c: Ctx, t: str, obj: HsObject, props: list[str] | None, archived: bool = False
) -> dict[str, Any]:
    out = c.state.render(t, obj, props, archived=archived)
    wanted = [
        x
        for v in c.request.query_params.getlist("associations")
        for x in (canonical_type(p.strip()) for p in v.split(","))
        if x
    ]
    assoc: dict[str, Any] = {}
    for to in wanted:
        links = c.state.associations_of(t, obj.id, to)
        if links:
            assoc[to] = {
                "results": [
                    {"id": str(tid), "type": assoc_name(a)} for tid, types in links for a in types
                ]
            }
    if assoc:
        out["associations"] = assoc
    return out


async def list_objects(c: Ctx) -> Response:
    t = c.type_param()
    st = c.state.store(t)
    try:
        limit = int(c.request.query_params.get("limit", "10"))
        after = int(c.request.query_params.get("after", "0") or 0)
    except ValueError as exc:
        raise ApiError(400, "VALIDATION_ERROR", "limit and after must be integers") from exc
    if not 1 <= limit <= LIST_MAX:
        raise ApiError(400, "VALIDATION_ERROR", f"limit must be between 1 and {LIST_MAX}")
    props = c.props_param()
    archived = c.flag("archived")
    if archived:
        ids = sorted(st.archived)
        source: dict[int, HsObject] = st.archived
    else:
        ids = st.ids
        source = st.live
    i = bisect.bisect_left(ids, after)
    chunk = ids[i : i + limit + 1]
    results = [_render_with_assoc(c, t, source[k], props, archived) for k in chunk[:limit]]
    body: dict[str, Any] = {"results": results}
    if len(chunk) > limit:
        nxt = str(chunk[limit])
        body["paging"] = {"next": {"after": nxt, "link": _next_link(c.request, nxt)}}
    return JSONResponse(body)


async def get_object(c: Ctx) -> Response:
    t = c.type_param()
    key = str(c.request.path_params["id"])
    id_prop = c.request.query_params.get("idProperty")
    if c.flag("archived"):
        try:
            obj = c.state.store(t).archived.get(int(key))
        except ValueError:
            obj = None
        if obj is None:
            raise not_found()
        return JSONResponse(_render_with_assoc(c, t, obj, c.props_param(), True))
    obj = c.state.find(t, key, id_prop)
    if obj is None:
        raise not_found()
    return JSONResponse(_render_with_assoc(c, t, obj, c.props_param()))


async def create_object(c: Ctx) -> Response:
    t = c.type_param()
    body = await c.json()
    props = body.get("properties")
    if not isinstance(props, dict):
        raise ApiError(400, "VALIDATION_ERROR", "properties is required and must be an object")
    assoc = body.get("associations") or []
    if not isinstance(assoc, list):
        raise ApiError(400, "VALIDATION_ERROR", "associations must be a list")
    obj = c.state.create(t, props, enforce_required=c.enforce_required, associations=assoc)
    return JSONResponse(c.state.render(t, obj, list(props)), status_code=201)


async def update_object(c: Ctx) -> Response:
    t = c.type_param()
    body = await c.json()
    props = body.get("properties")
    if not isinstance(props, dict):
        raise ApiError(400, "VALIDATION_ERROR", "properties is required and must be an object")
    obj = c.state.find(
        t, str(c.request.path_params["id"]), c.request.query_params.get("idProperty")
    )
    if obj is None:
        raise not_found()
    new = c.state.update(t, obj, props, enforce_required=c.enforce_required)
    return JSONResponse(c.state.render(t, new, list(props)))


async def archive_object(c: Ctx) -> Response:
    t = c.type_param()
    obj = c.state.find(t, str(c.request.path_params["id"]))
    if obj is not None:
        c.state.archive(t, obj)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------- batches


def _check_duplicate_ids(inputs: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    dupes: list[str] = []
    for i in inputs:
        k = str(i.get("id", "")).lower()
        if k in seen:
            dupes.append(str(i.get("id")))
        seen.add(k)
    if dupes:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"Duplicate IDs found in batch input: {dupes}. IDs must be unique",
        )


async def batch_read(c: Ctx) -> Response:
    t = c.type_param()
    started = now_iso()
    body = await c.json()
    inputs = batch_inputs(body)
    props = body.get("properties") or None
    if props is not None and not isinstance(props, list):
        raise ApiError(400, "VALIDATION_ERROR", "properties must be a list")
    id_prop = body.get("idProperty")
    archived = c.flag("archived")
    results: list[dict[str, Any]] = []
    missing: list[str] = []
    seen: set[int] = set()
    st = c.state.store(t)
    for i in inputs:
        key = str(i.get("id", ""))
        if archived:
            obj = st.archived.get(int(key)) if key.isdigit() else None
        else:
            obj = c.state.find(t, key, id_prop)
        if obj is None:
            missing.append(key)
        elif obj.id not in seen:
            seen.add(obj.id)
            results.append(c.state.render(t, obj, props, archived=archived))
    errors = []
    if missing:
        errors.append(
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": f"Could not get some {SINGULAR[t].upper()} objects, they may be deleted "
                "or not exist. Check that ids are valid.",
                "context": {"ids": missing},
                "errors": [],
            }
        )
    return batch_response(results, errors, started, 200)


async def batch_create(c: Ctx) -> Response:
    t = c.type_param()
    started = now_iso()
    inputs = batch_inputs(await c.json())
    state = c.state
    traced = all(i.get("objectWriteTraceId") for i in inputs)
    if not traced:
        # without a trace id per input HubSpot fails the whole batch on the first error
        _precheck_create(c, t, inputs)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i in inputs:
        trace = i.get("objectWriteTraceId")
        props = i.get("properties")
        try:
            if not isinstance(props, dict):
                raise ApiError(400, "VALIDATION_ERROR", "properties is required")
            obj = state.create(
                t,
                props,
                enforce_required=c.enforce_required,
                associations=i.get("associations") or [],
            )
        except ApiError as e:
            errors.append(item_error(e, trace, None))
            continue
        r = state.render(t, obj, list(props))
        if trace:
            r["objectWriteTraceId"] = trace
        results.append(r)
    return batch_response(results, errors, started, 201)


def _precheck_create(c: Ctx, t: str, inputs: list[dict[str, Any]]) -> None:
    """Validate a whole untraced batch create first: the first error fails it all."""
    emails: dict[str, int] = {}
    for n, i in enumerate(inputs):
        props = i.get("properties")
        if not isinstance(props, dict):
            raise ApiError(400, "VALIDATION_ERROR", f"inputs[{n}].properties is required")
        _, errs = c.state.validate(t, props, current=None, enforce_required=c.enforce_required)
        if errs:
            raise validation_error(errs)
        email = str(props.get("email") or "").strip().lower()
        if t == "contacts" and email:
            existing = c.state.store(t).by_email.get(email)
            if existing is not None:
                raise ApiError(409, "CONFLICT", f"Contact already exists. Existing ID: {existing}")
            if email in emails:
                raise ApiError(
                    409,
                    "CONFLICT",
                    f"Duplicate email {email} in inputs[{emails[email]}] and inputs[{n}]",
                )
            emails[email] = n


async def batch_update(c: Ctx) -> Response:
    t = c.type_param()
    started = now_iso()
    body = await c.json()
    inputs = batch_inputs(body)
    _check_duplicate_ids(inputs)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i in inputs:
        trace = i.get("objectWriteTraceId")
        key = str(i.get("id", ""))
        id_prop = i.get("idProperty") or body.get("idProperty")
        try:
            if id_prop == "email" and t == "contacts":
                raise ApiError(
                    400,
                    "VALIDATION_ERROR",
                    "Unable to perform update/upsert by non-unique 0-1 property email; "
                    "use batch/upsert or record ids",
                )
            props = i.get("properties")
            if not isinstance(props, dict):
                raise ApiError(400, "VALIDATION_ERROR", "properties is required")
            obj = c.state.find(t, key, id_prop)
            if obj is None:
                raise ApiError(
                    404, "OBJECT_NOT_FOUND", f"Object not found. objectId {key} does not exist."
                )
            new = c.state.update(t, obj, props, enforce_required=c.enforce_required)
        except ApiError as e:
            errors.append(item_error(e, trace, key))
            continue
        r = c.state.render(t, new, list(props))
        if trace:
            r["objectWriteTraceId"] = trace
        results.append(r)
    return batch_response(results, errors, started, 200)


async def batch_upsert(c: Ctx) -> Response:
    t = c.type_param()
    started = now_iso()
    body = await c.json()
    inputs = batch_inputs(body)
    _check_duplicate_ids(inputs)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i in inputs:
        trace = i.get("objectWriteTraceId")
        key = str(i.get("id", ""))
        id_prop = i.get("idProperty") or body.get("idProperty")
        props = i.get("properties")
        try:
            if not isinstance(props, dict) or not key:
                raise ApiError(400, "VALIDATION_ERROR", "id and properties are required")
            obj = c.state.find(t, key, id_prop)
            if obj is not None:
                new, is_new = (
                    c.state.update(t, obj, props, enforce_required=c.enforce_required),
                    False,
                )
            elif id_prop and id_prop != "hs_object_id":
                create_props = {**props, id_prop: key}
                new = c.state.create(t, create_props, enforce_required=c.enforce_required)
                is_new = True
            else:
                raise ApiError(
                    404, "OBJECT_NOT_FOUND", f"Object not found. objectId {key} does not exist."
                )
        except ApiError as e:
            errors.append(item_error(e, trace, key))
            continue
        r = c.state.render(t, new, [*props, *([id_prop] if id_prop else [])])
        r["new"] = is_new
        if trace:
            r["objectWriteTraceId"] = trace
        results.append(r)
    return batch_response(results, errors, started, 200)


async def batch_archive(c: Ctx) -> Response:
    t = c.type_param()
    for i in batch_inputs(await c.json()):
        obj = c.state.find(t, str(i.get("id", "")))
        if obj is not None:
            c.state.archive(t, obj)
    return Response(status_code=204)


async def search(c: Ctx) -> Response:
    t = c.type_param()
    body = await c.json()
    st = c.state.store(t)
    st.sync_index(c.state.now_ms())
    try:
        res = run_search(st, body, c.state.properties[t], c.state.value_of(t))
    except SearchError as e:
        raise ApiError(400, "VALIDATION_ERROR", e.message, sub_category=e.sub_category) from e
    props = body.get("properties") or None
    if isinstance(props, str):
        props = [p.strip() for p in props.split(",") if p.strip()]
    out: dict[str, Any] = {
        "total": res.total,
        "results": [c.state.render(t, o, props) for o in res.page],
    }
    if res.next_after is not None:
        out["paging"] = {"next": {"after": str(res.next_after)}}
    return JSONResponse(out)


async def merge(c: Ctx) -> Response:
    t = c.type_param()
    if t not in ("contacts", "companies", "deals", "tickets"):
        raise ApiError(400, "VALIDATION_ERROR", f"Merging is not supported for {t}")
    body = await c.json()
    a, b = body.get("primaryObjectId"), body.get("objectIdToMerge")
    if a is None or b is None:
        raise ApiError(400, "VALIDATION_ERROR", "primaryObjectId and objectIdToMerge are required")
    st = c.state.store(t)
    primary = st.live.get(int(a)) if str(a).isdigit() else None
    loser = st.live.get(int(b)) if str(b).isdigit() else None
    if primary is None or loser is None:
        raise not_found(f"Object {a if primary is None else b} not found")
    new = c.state.merge(t, primary, loser)
    return JSONResponse(c.state.render(t, new, None))


async def gdpr_delete(c: Ctx) -> Response:
    if c.type_param() != "contacts":
        raise not_found()
    body = await c.json()
    key = body.get("objectId")
    if key is None:
        raise ApiError(400, "VALIDATION_ERROR", "objectId is required")
    c.state.gdpr_delete(str(key), body.get("idProperty"))
    return Response(status_code=204)


# ------------------------------------------------------------------------------- properties


async def list_properties(c: Ctx) -> Response:
    t = c.type_param()
    owners = c.state.owner_options()
    return JSONResponse(
        {
            "results": [
                d.to_json(owners if d.name == "hubspot_owner_id" else None)
                for d in c.state.properties[t].values()
            ]
        }
    )


async def get_property(c: Ctx) -> Response:
    t = c.type_param()
    name = str(c.request.path_params["name"])
    d = c.state.properties[t].get(name)
    if d is None:
        raise not_found(f"Unable to find property with name {name} for object type {t}")
    return JSONResponse(d.to_json(c.state.owner_options() if name == "hubspot_owner_id" else None))


async def create_property(c: Ctx) -> Response:
    t = c.type_param()
    d = c.state.create_property(t, await c.json())
    return JSONResponse(d.to_json(), status_code=201)


# ----------------------------------------------------------------------------------- owners


async def list_owners(c: Ctx) -> Response:
    q = c.request.query_params
    owners = [o for o in c.state.owners.values() if o.archived == c.flag("archived")]
    if q.get("email"):
        owners = [o for o in owners if o.email.lower() == q["email"].lower()]
    try:
        limit = min(max(int(q.get("limit", "100")), 1), 500)
        after = int(q.get("after", "0") or 0)
    except ValueError as exc:
        raise ApiError(400, "VALIDATION_ERROR", "limit and after must be integers") from exc
    owners.sort(key=lambda o: int(o.id))
    page = [o for o in owners if int(o.id) >= after][: limit + 1]
    body: dict[str, Any] = {"results": [o.to_json() for o in page[:limit]]}
    if len(page) > limit:
        nxt = page[limit].id
        body["paging"] = {"next": {"after": nxt, "link": _next_link(c.request, nxt)}}
    return JSONResponse(body)


async def get_owner(c: Ctx) -> Response:
    key = str(c.request.path_params["owner_id"])
    if c.request.query_params.get("idProperty") == "userId":
        owner = next((o for o in c.state.owners.values() if str(o.user_id) == key), None)
    else:
        owner = c.state.owners.get(key)
    if owner is None:
        raise not_found(f"Owner {key} not found")
    return JSONResponse(owner.to_json())
