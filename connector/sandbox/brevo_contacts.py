"""Brevo sandbox routes under ``/contacts`` and ``/processes``.

Contacts (list, get, create/upsert, update, delete), attributes, folders, lists and list
membership, the asynchronous ``/contacts/import`` with its processes, and the deprecated
``/contacts/batch``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from connector.sandbox.brevo_http import (
    handles_errors,
    json_ok,
    key_name,
    no_content,
    page,
    q_int,
    q_int_list,
    q_sort,
    read_object,
    state_of,
)
from connector.sandbox.brevo_model import (
    MAX_IMPORT_BYTES,
    BrevoError,
    JSONDict,
    bad,
    normalize_email,
    normalize_sms,
    not_found,
    parse_datetime,
)
from connector.sandbox.brevo_state import BrevoState, ImportJob, Patch

_EQUALS = re.compile(r'^\s*equals\(\s*([A-Za-z0-9_\-]+)\s*,\s*"?(.*?)"?\s*\)\s*$')


@handles_errors
async def get_contacts(request: Request) -> Response:
    """``GET /contacts``: creation order (``sort``), filters, ``{contacts, count}``."""
    state = state_of(request)
    qp = request.query_params
    limit = q_int(request, "limit", 50, maximum=1000)
    offset = q_int(request, "offset", 0)
    sort = q_sort(request)
    list_ids = q_int_list(request, "listIds")
    ids = q_int_list(request, "ids")
    if len(ids) > 20:
        raise BrevoError(400, "out_of_range", "You can pass a maximum of 20 IDs")
    if qp.get("segmentId"):
        if list_ids:
            raise bad("Either listIds or segmentId can be passed")
        raise bad("Segment does not exist")
    equals = None
    if qp.get("filter"):
        m = _EQUALS.match(qp["filter"])
        if m is None:
            raise bad('filter is not valid: only equals(ATTRIBUTE,"value") is allowed')
        equals = (m[1].upper(), m[2])
    missing = [i for i in list_ids if i not in state.lists]
    if missing:
        raise bad(f"List ID does not exist: {missing[0]}")
    modified = qp.get("modifiedSince")
    created = qp.get("createdSince")
    contacts, count = state.query_contacts(
        limit=limit,
        offset=offset,
        sort=sort,
        modified_since=parse_datetime(modified, "modifiedSince") if modified else None,
        created_since=parse_datetime(created, "createdSince") if created else None,
        list_ids=list_ids,
        ids=ids,
        equals=equals,
    )
    return json_ok({"contacts": [state.contact_json(c) for c in contacts], "count": count})


@handles_errors
async def create_contact(request: Request) -> Response:
    """``POST /contacts`` → 201 ``{id}``, or 204 when ``updateEnabled`` updated one."""
    state = state_of(request)
    body = await read_object(request)
    update = body.get("updateEnabled")
    if update is not None and not isinstance(update, bool):
        raise bad("updateEnabled should be a boolean")
    new_id = state.create_contact(body, key_name(request))
    return no_content() if new_id is None else json_ok({"id": new_id}, 201)


def _identifier_type(request: Request) -> str | None:
    return request.query_params.get("identifierType") or None


@handles_errors
async def get_contact(request: Request) -> Response:
    state = state_of(request)
    c = state.find(request.path_params["identifier"], _identifier_type(request))
    return json_ok({**state.contact_json(c), "statistics": {}})


@handles_errors
async def update_contact(request: Request) -> Response:
    state = state_of(request)
    c = state.find(request.path_params["identifier"], _identifier_type(request))
    body = await read_object(request)
    state.update_contact(c, body, key_name(request))
    return no_content()


@handles_errors
async def delete_contact(request: Request) -> Response:
    state = state_of(request)
    c = state.find(request.path_params["identifier"], _identifier_type(request))
    state.delete_contact(c, key_name(request))
    return no_content()


@handles_errors
async def batch_contacts(request: Request) -> Response:
    """``POST /contacts/batch``: deprecated (400) unless ``state.batch_endpoint="enabled"``."""
    state = state_of(request)
    if state.batch_endpoint == "deprecated":
        raise BrevoError(
            400,
            "bad_request",
            "POST /v3/contacts/batch is deprecated since 30 October 2026 and no longer "
            "available; use POST /v3/contacts/import instead.",
        )
    body = await read_object(request)
    items = body.get("contacts")
    if not isinstance(items, list) or not items:
        raise BrevoError(400, "missing_parameter", "contacts should be a non-empty array")
    planned = []
    for item in items:
        if not isinstance(item, dict):
            raise bad("contacts items should be objects")
        keys = [k for k in ("email", "id", "sms") if item.get(k) is not None]
        if len(keys) != 1:
            raise bad("Pass exactly one of email, id or sms per contact")
        kind = {"email": "email_id", "id": "contact_id", "sms": "phone_id"}[keys[0]]
        planned.append((state.find(str(item[keys[0]]), kind), item))
    for contact, item in planned:
        state.update_contact(contact, item, key_name(request))
    return no_content()


# --- import -----------------------------------------------------------------------------------


def _flag(body: JSONDict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(f"{name} should be a boolean")
    return value


_TOO_LARGE = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@handles_errors
async def import_contacts(request: Request) -> Response:
    """``POST /contacts/import`` → 202 ``{processId}``; processed after ``import_delay``.

    A request body far over the limit is refused by the gateway (413, HTML); a ``fileBody`` or
    ``jsonBody`` over 10 MB is a 400 from the API.
    """
    state = state_of(request)
    raw = await request.body()
    if len(raw) > MAX_IMPORT_BYTES + 1024 * 1024:
        return HTMLResponse(_TOO_LARGE, status_code=413)
    body = await read_object(request)
    sources = [k for k in ("fileUrl", "fileBody", "jsonBody") if body.get(k) is not None]
    if not sources:
        raise BrevoError(400, "missing_parameter", "fileUrl, fileBody or jsonBody is required")
    if len(sources) > 1:
        raise bad("Pass only one of fileUrl, fileBody or jsonBody")
    file_body, json_body, file_url = body.get("fileBody"), body.get("jsonBody"), body.get("fileUrl")
    if file_body is not None and not isinstance(file_body, str):
        raise bad("fileBody should be a string")
    if json_body is not None and not isinstance(json_body, list):
        raise bad("jsonBody should be an array")
    if file_url is not None and (
        not isinstance(file_url, str) or not file_url.startswith(("http://", "https://"))
    ):
        raise bad("fileUrl should be a URL")
    size = len(file_body.encode()) if isinstance(file_body, str) else len(json.dumps(json_body))
    if size > MAX_IMPORT_BYTES:
        raise bad("Maximum allowed file body size is 10MB")
    list_ids = sorted(state.check_lists(body.get("listIds")))
    new_list = body.get("newList")
    if new_list is not None:
        if not isinstance(new_list, dict):
            raise bad("newList should be an object")
        list_ids.append(state.create_list(new_list.get("listName"), new_list.get("folderId")).id)
    if not list_ids:
        raise BrevoError(400, "missing_parameter", "listIds or newList is required")
    notify = body.get("notifyUrl")
    if notify is not None and not isinstance(notify, str):
        raise bad("notifyUrl should be a URL")
    update_existing = _flag(body, "updateExistingContacts", True)
    job = ImportJob(
        process=state.new_process("IMPORT_USERS"),
        api_key_name=key_name(request),
        list_ids=list_ids,
        json_body=json_body,
        file_body=file_body,
        file_url=file_url,
        update_existing=update_existing,
        empty_attributes=_flag(body, "emptyContactsAttributes", False),
        email_blacklist=_flag(body, "emailBlacklist", False),
        sms_blacklist=_flag(body, "smsBlacklist", False),
        notify_url=notify,
    )
    state.start(run_import(state, job))
    return json_ok({"processId": job.process.id}, 202)


async def run_import(state: BrevoState, job: ImportJob) -> None:
    """The import's background half: queued → in_process → completed (+ notifyUrl)."""
    await asyncio.sleep(state.import_delay / 2)
    job.process.status = "in_process"
    text: str | None = None
    if job.file_url is not None:
        try:
            async with httpx.AsyncClient(transport=state.http_transport, timeout=30) as client:
                resp = await client.get(job.file_url)
                resp.raise_for_status()
            if job.file_url.lower().split("?")[0].endswith(".json"):
                loaded = resp.json()
                job.json_body = loaded if isinstance(loaded, list) else []
            else:
                text = resp.text
        except (httpx.HTTPError, ValueError) as e:
            job.process.errors.append(f"fileUrl could not be read: {e}")
            text = ""
    await asyncio.sleep(state.import_delay / 2)
    rows = parse_import_rows(state, job, text)
    state.run_import(job, rows)
    job.process.status = "completed"
    if state.notify_imports and job.notify_url:
        payload = {"processId": job.process.id, "status": "completed", **job.process.stats}
        try:
            async with httpx.AsyncClient(transport=state.http_transport, timeout=10) as client:
                await client.post(job.notify_url, json=payload)
        except httpx.HTTPError as e:
            job.process.errors.append(f"notifyUrl failed: {e}")


def parse_import_rows(
    state: BrevoState, job: ImportJob, text: str | None = None
) -> list[tuple[Patch, str | None]]:
    """``jsonBody`` items or ``;``-separated CSV (``text``/``fileBody``) → patches."""
    empty = job.empty_attributes and job.update_existing
    rows: list[tuple[Patch, str | None]] = []
    if job.json_body is not None:
        for item in job.json_body:
            rows.append(_json_row(state, item, empty))
        return rows
    body = text if text is not None else job.file_body or ""
    reader = csv.reader(io.StringIO(body.lstrip("\ufeff")), delimiter=";")
    header: list[str] | None = None
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = [h.strip().upper() for h in cells]
            continue
        record = dict(zip(header, cells, strict=False))
        try:
            rows.append((state.make_patch(record, empty_clears=empty, upper=True), None))
        except BrevoError as e:
            rows.append((Patch(), f"{record.get('EMAIL', '')}: {e.message}"))
    return rows


def _json_row(state: BrevoState, item: object, empty: bool) -> tuple[Patch, str | None]:
    if not isinstance(item, dict):
        return Patch(), "jsonBody item is not an object"
    try:
        attrs = item.get("attributes") or {}
        p = state.make_patch(attrs, empty_clears=empty)
        if item.get("email") is not None:
            p.email = normalize_email(item["email"])
        if item.get("ext_id") is not None:
            p.ext_id, p.ext_id_set = str(item["ext_id"]), True
        if item.get("sms") is not None:
            p.sms, p.sms_set = normalize_sms(item["sms"]), True
        return p, None
    except BrevoError as e:
        return Patch(), f"{item.get('email', '')}: {e.message}"


@handles_errors
async def get_processes(request: Request) -> Response:
    state = state_of(request)
    limit = q_int(request, "limit", 10, maximum=50)
    offset = q_int(request, "offset", 0)
    procs = page(list(state.processes.values()), offset, limit, q_sort(request))
    return json_ok({"processes": [p.to_json() for p in procs], "count": len(state.processes)})


@handles_errors
async def get_process(request: Request) -> Response:
    state = state_of(request)
    raw = request.path_params["process_id"]
    if not raw.isdigit():
        raise bad("processId should be an integer")
    proc = state.processes.get(int(raw))
    if proc is None:
        raise not_found("Process does not exist")
    return json_ok(proc.to_json())


# --- attributes -------------------------------------------------------------------------------


@handles_errors
async def get_attributes(request: Request) -> Response:
    state = state_of(request)
    return json_ok({"attributes": [a.to_json() for a in state.attributes.values()]})


@handles_errors
async def create_attribute(request: Request) -> Response:
    state = state_of(request)
    raw = await request.body()
    body = await read_object(request) if raw.strip() else {}
    state.create_attribute(request.path_params["category"], request.path_params["name"], body)
    return Response(status_code=201)


@handles_errors
async def delete_attribute(request: Request) -> Response:
    state = state_of(request)
    state.delete_attribute(request.path_params["category"], request.path_params["name"])
    return no_content()


# --- folders and lists ------------------------------------------------------------------------


@handles_errors
async def get_folders(request: Request) -> Response:
    state = state_of(request)
    limit = q_int(request, "limit", 10, maximum=50)
    offset = q_int(request, "offset", 0)
    folders = page(list(state.folders.values()), offset, limit, q_sort(request))
    return json_ok(
        {"folders": [state.folder_json(f) for f in folders], "count": len(state.folders)}
    )


@handles_errors
async def create_folder(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    return json_ok({"id": state.create_folder(body.get("name")).id}, 201)


@handles_errors
async def get_folder(request: Request) -> Response:
    state = state_of(request)
    folder = state.folders.get(_int_param(request, "folder_id"))
    if folder is None:
        raise not_found("Folder ID does not exist")
    return json_ok(state.folder_json(folder))


def _int_param(request: Request, name: str) -> int:
    raw = request.path_params[name]
    if not raw.isdigit():
        raise bad(f"{name} should be an integer")
    return int(raw)


@handles_errors
async def get_lists(request: Request) -> Response:
    state = state_of(request)
    limit = q_int(request, "limit", 10, maximum=50)
    offset = q_int(request, "offset", 0)
    lists = page(list(state.lists.values()), offset, limit, q_sort(request))
    return json_ok({"lists": [state.list_json(x) for x in lists], "count": len(state.lists)})


@handles_errors
async def create_list(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    return json_ok({"id": state.create_list(body.get("name"), body.get("folderId")).id}, 201)


@handles_errors
async def get_list(request: Request) -> Response:
    state = state_of(request)
    lst = state.lists.get(_int_param(request, "list_id"))
    if lst is None:
        raise not_found("List ID does not exist")
    return json_ok(state.list_json(lst, extended=True))


@handles_errors
async def get_list_contacts(request: Request) -> Response:
    """``GET /contacts/lists/{id}/contacts`` (limit ≤ 500)."""
    state = state_of(request)
    list_id = _int_param(request, "list_id")
    if list_id not in state.lists:
        raise not_found("List ID does not exist")
    limit = q_int(request, "limit", 50, maximum=500)
    offset = q_int(request, "offset", 0)
    modified = request.query_params.get("modifiedSince")
    contacts, count = state.query_contacts(
        limit=limit,
        offset=offset,
        sort=q_sort(request),
        modified_since=parse_datetime(modified, "modifiedSince") if modified else None,
        list_ids=[list_id],
    )
    return json_ok({"contacts": [state.contact_json(c) for c in contacts], "count": count})


@handles_errors
async def add_to_list(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    result = state.change_list(_int_param(request, "list_id"), body, key_name(request), add=True)
    return json_ok({"contacts": result}, 201)


@handles_errors
async def remove_from_list(request: Request) -> Response:
    state = state_of(request)
    body = await read_object(request)
    result = state.change_list(_int_param(request, "list_id"), body, key_name(request), add=False)
    return json_ok({"contacts": result}, 201)


ROUTES = [
    Route("/contacts", get_contacts, methods=["GET"]),
    Route("/contacts", create_contact, methods=["POST"]),
    Route("/contacts/batch", batch_contacts, methods=["POST"]),
    Route("/contacts/import", import_contacts, methods=["POST"]),
    Route("/contacts/attributes", get_attributes, methods=["GET"]),
    Route("/contacts/attributes/{category}/{name}", create_attribute, methods=["POST"]),
    Route("/contacts/attributes/{category}/{name}", delete_attribute, methods=["DELETE"]),
    Route("/contacts/folders", get_folders, methods=["GET"]),
    Route("/contacts/folders", create_folder, methods=["POST"]),
    Route("/contacts/folders/{folder_id}", get_folder, methods=["GET"]),
    Route("/contacts/lists", get_lists, methods=["GET"]),
    Route("/contacts/lists", create_list, methods=["POST"]),
    Route("/contacts/lists/{list_id}", get_list, methods=["GET"]),
    Route("/contacts/lists/{list_id}/contacts", get_list_contacts, methods=["GET"]),
    Route("/contacts/lists/{list_id}/contacts/add", add_to_list, methods=["POST"]),
    Route("/contacts/lists/{list_id}/contacts/remove", remove_from_list, methods=["POST"]),
    Route("/contacts/{identifier}", get_contact, methods=["GET"]),
    Route("/contacts/{identifier}", update_contact, methods=["PUT"]),
    Route("/contacts/{identifier}", delete_contact, methods=["DELETE"]),
    Route("/processes", get_processes, methods=["GET"]),
    Route("/processes/{process_id}", get_process, methods=["GET"]),
]
