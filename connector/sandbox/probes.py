"""Benchmark probes for the sandboxes: UI edits in bulk, arrival marks, full dumps.

An additive layer over the two sandbox apps (nothing in them changes), for ``bench/`` and any
test that drives the sandboxes from another process:

- ``POST /_sandbox/probe/edit`` on either sandbox: a list of edits made as a person in the UI
  would make them (HubSpot ``CRM_UI`` through ``put_object``; Brevo ``edit_contact`` with no API
  key). One request carries many edits, so a driver can make changes at a given rate without
  paying an HTTP round trip per change.
- **Arrival marks**: an edit that sets a value starting with :data:`MARK_PREFIX` is stamped
  (``time.monotonic()`` in the sandbox process) when it is made, and again when the *other*
  sandbox is written that same value by the connector (HubSpot ``INTEGRATION``, Brevo's
  connector key). ``GET /_sandbox/probe/marks`` returns both stamps per value: the latency of
  a change from one side to the other, measured on one clock, outside the process measured.
- ``GET /_sandbox/probe/contacts``: every live contact, for a full compare after a soak.

:func:`install` wires both apps (they must share one process: the marks share one clock).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connector.sandbox.brevo_model import Contact, ContactEvent
from connector.sandbox.brevo_state import BrevoState
from connector.sandbox.hubspot_state import HubSpotState

MARK_PREFIX = "mk-"
"""Values starting with this are timed from the edit on one side to the write on the other."""


@dataclass
class Marks:
    """Per marked value: when it was made, on which side, and when the other side got it."""

    made: dict[str, tuple[str, float]] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def make(self, side: str, value: object) -> None:
        if isinstance(value, str) and value.startswith(MARK_PREFIX):
            with self._lock:
                self.made[value] = (side, time.monotonic())

    def arrive(self, side: str, value: object) -> None:
        """``value`` was written to ``side`` by the connector; stamp it once."""
        if not (isinstance(value, str) and value.startswith(MARK_PREFIX)):
            return
        with self._lock:
            origin = self.made.get(value)
            if origin is not None and origin[0] != side and value not in self.seen:
                self.seen[value] = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "now": time.monotonic(),
                "marks": {
                    v: {"side": side, "made": t, "seen": self.seen.get(v)}
                    for v, (side, t) in self.made.items()
                },
            }

    def clear(self) -> None:
        with self._lock:
            self.made.clear()
            self.seen.clear()


def _edits(body: object) -> list[dict[str, Any]]:
    edits = body.get("edits") if isinstance(body, dict) else None
    if not isinstance(edits, list) or not all(isinstance(e, dict) for e in edits):
        raise ValueError('body must be {"edits": [{…}, …]}')
    return edits


async def _body(request: Request) -> object:
    return json.loads(await request.body() or b"{}")


def _hubspot_routes(state: HubSpotState, marks: Marks) -> list[Route]:
    def listener(
        event: str, obj_type: str, obj_id: object, prop: str | None, value: str | None, src: str
    ) -> None:
        if event == "propertyChange" and src == "INTEGRATION":
            marks.arrive("hubspot", value)

    state.listeners.append(listener)

    async def edit(request: Request) -> Response:
        """``{"edits": [{"id"?: …, "email"?: …, "properties": {…}}]}``: UI edits (an edit
        without id or email creates a contact). Answers the ids, or per edit an error."""
        try:
            edits = _edits(await _body(request))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        results: list[str | None] = []
        errors: list[str] = []
        for e in edits:
            props = dict(e.get("properties") or {})
            oid = e.get("id")
            if oid is None and e.get("email"):
                found = state.stores["contacts"].by_email.get(str(e["email"]).strip().lower())
                oid = found if found in state.stores["contacts"].live else None
                if oid is None:
                    errors.append(f"no contact {e['email']}")
                    results.append(None)
                    continue
            try:
                results.append(state.put_object("contacts", props, oid))
            except Exception as exc:  # a validation error of one edit: the others go on
                errors.append(str(exc))
                results.append(None)
                continue
            for v in props.values():
                marks.make("hubspot", v)
        return JSONResponse({"ids": results, "errors": errors})

    async def contacts(request: Request) -> Response:
        store = state.stores["contacts"]
        return JSONResponse(
            {"contacts": [{"id": str(i), **o.props} for i, o in store.live.items()]}
        )

    async def marks_route(request: Request) -> Response:
        if request.method == "DELETE":
            marks.clear()
        return JSONResponse(marks.snapshot())

    return [
        Route("/_sandbox/probe/edit", edit, methods=["POST"]),
        Route("/_sandbox/probe/contacts", contacts, methods=["GET"]),
        Route("/_sandbox/probe/marks", marks_route, methods=["GET", "DELETE"]),
    ]


def _brevo_routes(state: BrevoState, marks: Marks) -> list[Route]:
    def listener(event: ContactEvent, contact: Contact, api_key_name: str) -> None:
        if api_key_name:  # an API write (the connector's key), not a UI edit
            for value in contact.attributes.values():
                marks.arrive("brevo", value)

    state.listeners.append(listener)

    async def edit(request: Request) -> Response:
        """``{"edits": [{"email": …, "attributes": {…}, "create"?: true}]}``: UI edits."""
        try:
            edits = _edits(await _body(request))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        ids: list[int | None] = []
        errors: list[str] = []
        for e in edits:
            attrs = dict(e.get("attributes") or {})
            try:
                if e.get("create"):
                    ids.append(state.create_contact({"email": e["email"], "attributes": attrs}, ""))
                else:
                    ids.append(state.edit_contact(str(e.get("email", "")), attrs).id)
            except Exception as exc:  # unknown or duplicate contact: the others go on
                errors.append(f"{e.get('email')}: {exc!r}")
                ids.append(None)
                continue
            for v in attrs.values():
                marks.make("brevo", v)
        return JSONResponse({"ids": ids, "errors": errors})

    async def contacts(request: Request) -> Response:
        return JSONResponse(
            {
                "contacts": [
                    {
                        "id": c.id,
                        "email": c.email,
                        "ext_id": c.ext_id,
                        "attributes": c.attributes,
                        "emailBlacklisted": c.email_blacklisted,
                    }
                    for c in state.contacts.values()
                ],
                "outbox": [e.to_json() for e in state.outbox],
            }
        )

    return [
        Route("/_sandbox/probe/edit", edit, methods=["POST"]),
        Route("/_sandbox/probe/contacts", contacts, methods=["GET"]),
    ]


def install(
    hubspot_app: Starlette, hubspot: HubSpotState, brevo_app: Starlette, brevo: BrevoState
) -> Marks:
    """Add the probe routes and listeners to both apps (before they serve); the shared marks."""
    marks = Marks()
    hubspot_app.router.routes.extend(_hubspot_routes(hubspot, marks))
    brevo_app.router.routes.extend(_brevo_routes(brevo, marks))
    return marks
