"""HubSpot sandbox: ``GET /crm/pipelines/{version}/{objectType}`` (deals and tickets).

The sandbox keeps no pipeline table: a pipeline is an option of the object type's pipeline
property (``pipeline`` for deals, ``hs_pipeline`` for tickets) and its stages are the options
of the stage property (``dealstage``, ``hs_pipeline_stage``), so a test that adds an option
adds a pipeline or a stage. Every pipeline holds every stage (the sandbox seeds one pipeline,
``default``). The answer has HubSpot's shape: ``results[{id, label, displayOrder, archived,
stages[{id, label, displayOrder, archived, metadata}]}]`` — deal stages carry ``isClosed`` and
``probability`` metadata, ticket stages ``ticketState``.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from connector.sandbox.hubspot_http import Ctx, not_found

#: object type → (pipeline property, stage property)
PIPELINE_PROPERTIES = {
    "deals": ("pipeline", "dealstage"),
    "tickets": ("hs_pipeline", "hs_pipeline_stage"),
}
_CLOSED_WON = ("closedwon",)
_CLOSED = ("closedwon", "closedlost")


def _stage(object_type: str, option: Any, order: int) -> dict[str, Any]:
    value = str(option["value"])
    if object_type == "deals":
        closed = value in _CLOSED
        probability = "1.0" if value in _CLOSED_WON else "0.0" if closed else "0.5"
        metadata = {"isClosed": "true" if closed else "false", "probability": probability}
    else:
        closed = value.upper() in ("4", "CLOSED")
        metadata = {"ticketState": "CLOSED" if closed else "OPEN"}
    return {
        "id": value,
        "label": option["label"],
        "displayOrder": order,
        "archived": False,
        "metadata": metadata,
    }


async def list_pipelines(c: Ctx) -> Response:
    """Every pipeline of deals or tickets; 404 for an object type without pipelines."""
    object_type = c.type_param()
    names = PIPELINE_PROPERTIES.get(object_type)
    props = c.state.properties.get(object_type, {})
    if names is None or names[0] not in props or names[1] not in props:
        raise not_found(f"Unable to find pipelines for object type {object_type}")
    stages = [_stage(object_type, o, i) for i, o in enumerate(props[names[1]].options)]
    results = [
        {
            "id": str(o["value"]),
            "label": o["label"],
            "displayOrder": i,
            "archived": False,
            "stages": stages,
        }
        for i, o in enumerate(props[names[0]].options)
    ]
    return JSONResponse({"results": results})


__all__ = ["PIPELINE_PROPERTIES", "list_pipelines"]
