"""Shape validators for HubSpot API responses (from shared/API_NOTES_HUBSPOT.md).

Plain functions over jsonschema: each raises ``jsonschema.ValidationError`` when a body does not
have the shape HubSpot documents. Used by the sandbox tests and the HubSpot client tests, so that
both sides agree on the same shapes.
"""

from __future__ import annotations

from typing import Any

import jsonschema

ISO_MS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

_STR_OR_NULL = {"type": ["string", "null"]}

OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "properties", "createdAt", "updatedAt", "archived"],
    "properties": {
        "id": {"type": "string", "pattern": r"^\d+$"},
        "properties": {
            "type": "object",
            "additionalProperties": _STR_OR_NULL,
            "required": ["hs_object_id"],
        },
        "createdAt": {"type": "string", "pattern": ISO_MS},
        "updatedAt": {"type": "string", "pattern": ISO_MS},
        "archivedAt": {"type": "string", "pattern": ISO_MS},
        "archived": {"type": "boolean"},
        "objectWriteTraceId": {"type": "string"},
        "new": {"type": "boolean"},
        "associations": {"type": "object"},
    },
}

PAGING: dict[str, Any] = {
    "type": "object",
    "required": ["next"],
    "properties": {
        "next": {
            "type": "object",
            "required": ["after"],
            "properties": {"after": {"type": "string"}, "link": {"type": "string"}},
        }
    },
}

LIST: dict[str, Any] = {
    "type": "object",
    "required": ["results"],
    "properties": {"results": {"type": "array", "items": OBJECT}, "paging": PAGING},
}

SEARCH: dict[str, Any] = {
    "type": "object",
    "required": ["total", "results"],
    "additionalProperties": False,
    "properties": {
        "total": {"type": "integer", "minimum": 0},
        "results": {"type": "array", "items": OBJECT},
        "paging": PAGING,
    },
}

STANDARD_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["status", "category", "message"],
    "properties": {
        "status": {"const": "error"},
        "category": {"type": "string"},
        "message": {"type": "string"},
        "subCategory": {"type": "string"},
        "context": {"type": "object", "additionalProperties": {"type": "array"}},
        "errors": {"type": "array"},
        "id": {"type": "string"},
        "links": {"type": "object"},
    },
}

BATCH: dict[str, Any] = {
    "type": "object",
    "required": ["status", "results", "startedAt", "completedAt"],
    "properties": {
        "status": {"enum": ["PENDING", "PROCESSING", "CANCELED", "COMPLETE"]},
        "results": {"type": "array"},
        "startedAt": {"type": "string", "pattern": ISO_MS},
        "completedAt": {"type": "string", "pattern": ISO_MS},
        "numErrors": {"type": "integer"},
        "errors": {"type": "array", "items": STANDARD_ERROR},
    },
}

ERROR_DETAIL: dict[str, Any] = {
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {"type": "string"},
        "code": {"type": "string"},
        "in": {"type": "string"},
        "subCategory": {"type": "string"},
        "context": {"type": "object"},
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["status", "message", "correlationId", "category"],
    "properties": {
        "status": {"const": "error"},
        "message": {"type": "string"},
        "correlationId": {"type": "string", "pattern": UUID},
        "category": {"type": "string"},
        "subCategory": {"type": "string"},
        "errors": {"type": "array", "items": ERROR_DETAIL},
        "context": {"type": "object"},
        "links": {"type": "object"},
    },
}

RATE_LIMIT: dict[str, Any] = {
    "type": "object",
    "required": ["status", "message", "errorType", "correlationId", "policyName"],
    "properties": {
        "status": {"const": "error"},
        "message": {"type": "string"},
        "errorType": {"const": "RATE_LIMIT"},
        "correlationId": {"type": "string"},
        "policyName": {"enum": ["TEN_SECONDLY_ROLLING", "DAILY"]},
        "groupName": {"type": "string"},
        "requestId": {"type": "string"},
    },
}

SEARCH_RATE_LIMIT: dict[str, Any] = {
    "type": "object",
    "required": ["status", "message", "errorType", "correlationId"],
    "properties": {
        "status": {"const": "error"},
        "message": {"const": "You have reached your secondly limit."},
        "errorType": {"const": "RATE_LIMIT"},
        "correlationId": {"type": "string"},
    },
    "not": {"required": ["policyName"]},
}

ASSOC_TYPE: dict[str, Any] = {
    "type": "object",
    "required": ["category", "typeId"],
    "properties": {
        "category": {"enum": ["HUBSPOT_DEFINED", "USER_DEFINED", "INTEGRATOR_DEFINED"]},
        "typeId": {"type": "integer"},
        "label": {"type": ["string", "null"]},
    },
}

ASSOC_READ: dict[str, Any] = {
    **BATCH,
    "properties": {
        **BATCH["properties"],
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["from", "to"],
                "properties": {
                    "from": {"type": "object", "required": ["id"]},
                    "to": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["toObjectId", "associationTypes"],
                            "properties": {
                                "toObjectId": {"type": "integer"},
                                "associationTypes": {"type": "array", "items": ASSOC_TYPE},
                            },
                        },
                    },
                },
            },
        },
    },
}

RATE_HEADERS = (
    "x-hubspot-ratelimit-max",
    "x-hubspot-ratelimit-remaining",
    "x-hubspot-ratelimit-interval-milliseconds",
)
DAILY_HEADERS = ("x-hubspot-ratelimit-daily", "x-hubspot-ratelimit-daily-remaining")


def validate_object(body: Any) -> None:
    jsonschema.validate(body, OBJECT)


def validate_list(body: Any) -> None:
    jsonschema.validate(body, LIST)


def validate_search(body: Any) -> None:
    jsonschema.validate(body, SEARCH)


def validate_batch(body: Any, *, objects: bool = True) -> None:
    """A batch answer (200/201/207); with ``objects`` its results are CRM objects."""
    jsonschema.validate(body, BATCH)
    if objects:
        for r in body["results"]:
            validate_object(r)
    if body.get("errors") is not None and body.get("numErrors") != len(body["errors"]):
        raise jsonschema.ValidationError("numErrors does not match len(errors)")


def validate_multi_status(body: Any) -> None:
    """A 207 answer: a batch body with a non-empty ``errors`` list and ``numErrors``."""
    validate_batch(body, objects=False)
    if not body.get("errors") or "numErrors" not in body:
        raise jsonschema.ValidationError("a 207 body needs errors[] and numErrors")


def validate_error(body: Any, category: str | None = None) -> None:
    jsonschema.validate(body, ERROR)
    if category is not None and body["category"] != category:
        raise jsonschema.ValidationError(f"category {body['category']!r} != {category!r}")


def validate_rate_limit(body: Any, policy: str | None = None) -> None:
    jsonschema.validate(body, RATE_LIMIT)
    if policy is not None and body["policyName"] != policy:
        raise jsonschema.ValidationError(f"policyName {body['policyName']!r} != {policy!r}")


def validate_search_rate_limit(body: Any) -> None:
    jsonschema.validate(body, SEARCH_RATE_LIMIT)


def validate_assoc_read(body: Any) -> None:
    jsonschema.validate(body, ASSOC_READ)


def has_rate_headers(headers: Any, *, daily: bool = True) -> bool:
    """True when the ``X-HubSpot-RateLimit-*`` headers are all there (daily ones optional)."""
    names = RATE_HEADERS + (DAILY_HEADERS if daily else ())
    return all(n in headers for n in names)
