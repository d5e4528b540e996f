"""HubSpot CRM reads for companies, deals and tickets: associations by the thousand, pipelines.

Additive to :class:`~connector.hubspot.client.HubSpotClient` (whose ``_request`` gives every
call the limiter, the retry policy and the dated-path fallback):

* :meth:`HubSpotCrm.read_associations` reads associations v4 in batches of up to 1,000 ids —
  HubSpot's limit for association batch reads since 2025-02-10 ([DOC] changelog "Bug Fix:
  Batch Read Limit for HubSpot Associations API") — ten times fewer calls than the client's
  100-id batches. If HubSpot refuses the size, it steps down to 100 once and remembers. Ids
  with no associations come back with an empty list (HubSpot answers them as
  ``NO_ASSOCIATIONS_FOUND`` errors), so "none" and "unread" stay apart.
* :meth:`HubSpotCrm.pipelines` reads ``GET /crm/pipelines/{version}/{objectType}`` ([DOC]
  developers.hubspot.com/docs/api-reference/latest/crm/pipelines: the dated path exists from
  2026-03; API_NOTES_HUBSPOT does not list it), falling back to ``/crm/v3/pipelines`` once if
  the dated route is unknown, like the other families in :mod:`connector.hubspot.paths`.

Object batch reads (companies, deals, tickets, 100 ids per call) are the client's
:meth:`~HubSpotClient.batch_read`, generic over the object type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from connector.errors import ValidationError
from connector.hubspot.client import HubSpotClient
from connector.hubspot.models import Association, AssociationLabel, BatchResult
from connector.hubspot.paths import Route, _seg

log = structlog.get_logger(__name__)

ASSOCIATIONS_READ_MAX = 1000
"""Ids per association batch read ([DOC] changelog 2025-02-10: "may not exceed 1000 IDs")."""
ASSOCIATIONS_READ_FALLBACK = 100
PIPELINES = "pipelines"
"""The route family of pipelines (its dated path may fall back to the legacy one)."""
NO_ASSOCIATIONS = "NO_ASSOCIATIONS_FOUND"


def pipelines_route(version: str, object_type: str, *, legacy: bool = False) -> Route:
    """``/crm/pipelines/{version}/{objectType}`` (legacy: ``/crm/v3/pipelines/{objectType}``)."""
    ot = _seg(object_type)
    p = f"/crm/v3/pipelines/{ot}" if legacy else f"/crm/pipelines/{version}/{ot}"
    return Route(p, p, PIPELINES, legacy)


@dataclass(frozen=True, slots=True)
class PipelineStage:
    """One stage: its id is what a deal's ``dealstage`` (a ticket's ``hs_pipeline_stage``)
    holds. ``metadata`` carries ``probability`` and ``isClosed`` on deal stages and
    ``ticketState`` on ticket stages, as strings."""

    id: str
    label: str
    display_order: int = 0
    archived: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_closed(self) -> bool:
        return (
            self.metadata.get("isClosed", "").lower() == "true"
            or self.metadata.get("ticketState", "").upper() == "CLOSED"
        )

    @property
    def probability(self) -> float | None:
        raw = self.metadata.get("probability")
        try:
            return float(raw) if raw not in (None, "") else None
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A pipeline of deals or tickets (or another object type), stages in display order."""

    id: str
    label: str
    display_order: int = 0
    archived: bool = False
    stages: tuple[PipelineStage, ...] = ()

    def stage(self, stage_id: str) -> PipelineStage | None:
        return next((s for s in self.stages if s.id == stage_id), None)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Pipeline:
        stages = [
            PipelineStage(
                id=str(s.get("id", "")),
                label=str(s.get("label", "")),
                display_order=_int(s.get("displayOrder")),
                archived=bool(s.get("archived", False)),
                metadata={str(k): str(v) for k, v in (s.get("metadata") or {}).items()},
            )
            for s in data.get("stages") or []
            if isinstance(s, Mapping)
        ]
        stages.sort(key=lambda s: s.display_order)
        return cls(
            id=str(data.get("id", "")),
            label=str(data.get("label", "")),
            display_order=_int(data.get("displayOrder")),
            archived=bool(data.get("archived", False)),
            stages=tuple(stages),
        )


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass(slots=True)
class AssociationsRead:
    """What an association batch read gave: the links of every id read (``[]``: none), and
    the ids HubSpot could not read, with its message."""

    links: dict[str, list[Association]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    calls: int = 0


def _error_ids(error: Mapping[str, Any]) -> list[str]:
    """The record ids a batch error names (``context.fromObjectId`` / ``ids`` / ``id``)."""
    ids: list[str] = []
    context = error.get("context") or {}
    if isinstance(context, Mapping):
        for key in ("fromObjectId", "ids", "id"):
            raw = context.get(key)
            values = raw if isinstance(raw, list) else [raw] if raw is not None else []
            ids.extend(str(v) for v in values)
    return ids


def _refuses_size(exc: ValidationError) -> bool:
    text = exc.raw_message.lower()
    return any(w in text for w in ("exceed", "maximum", "limit", "too many", "size"))


class HubSpotCrm:
    """CRM reads for companies, deals, tickets and their associations, on a HubSpotClient."""

    def __init__(
        self, client: HubSpotClient, *, association_batch: int = ASSOCIATIONS_READ_MAX
    ) -> None:
        if not 1 <= association_batch <= ASSOCIATIONS_READ_MAX:
            raise ValueError(f"association_batch must be between 1 and {ASSOCIATIONS_READ_MAX}")
        self.client = client
        self.association_batch = association_batch

    async def read_associations(
        self, from_type: str, to_type: str, ids: Iterable[str]
    ) -> AssociationsRead:
        """The ``to_type`` records associated with each of ``ids``, up to 1,000 ids a call.

        A record with more associations than one answer holds comes back with a ``paging``
        token; it is read again with ``after`` in a later batch, alongside other ids.
        """
        result = AssociationsRead()
        pending: list[dict[str, str]] = [{"id": str(v)} for v in dict.fromkeys(ids)]
        wanted = {p["id"] for p in pending}
        paths = self.client.paths
        while pending:
            size = self.association_batch
            chunk, rest = pending[:size], pending[size:]
            try:
                data = await self.client._request(
                    "POST",
                    lambda legacy: paths.associations(
                        from_type, to_type, "batch/read", legacy=legacy
                    ),
                    json={"inputs": chunk},
                    idempotent=True,
                )
            except ValidationError as exc:
                if size > ASSOCIATIONS_READ_FALLBACK and _refuses_size(exc):
                    log.warning(
                        "hubspot.association_batch_size_refused",
                        tried=size,
                        now=ASSOCIATIONS_READ_FALLBACK,
                    )
                    self.association_batch = ASSOCIATIONS_READ_FALLBACK
                    result.calls += 1
                    continue
                raise
            result.calls += 1
            pending = rest
            for res in (data or {}).get("results") or []:
                from_id = str((res.get("from") or {}).get("id", ""))
                bucket = result.links.setdefault(from_id, [])
                for to in res.get("to") or []:
                    types = tuple(
                        AssociationLabel.from_api(t) for t in to.get("associationTypes") or []
                    )
                    bucket.append(Association(str(to.get("toObjectId", "")), types))
                after = ((res.get("paging") or {}).get("next") or {}).get("after")
                if after not in (None, ""):
                    pending.append({"id": from_id, "after": str(after)})
            for err in (data or {}).get("errors") or []:
                if not isinstance(err, Mapping):
                    continue
                none = NO_ASSOCIATIONS in str(err.get("subCategory", ""))
                for rid in _error_ids(err):
                    if none:
                        result.links.setdefault(rid, [])
                    else:
                        result.failed[rid] = str(err.get("message", "unreadable"))
        for rid in wanted - result.links.keys() - result.failed.keys():
            result.failed[rid] = "HubSpot did not answer for this id"
        return result

    async def batch_read(
        self, object_type: str, ids: Iterable[str], properties: Sequence[str]
    ) -> BatchResult:
        """Companies, deals, tickets (any type) by id, 100 per call (the client's batch read)."""
        return await self.client.batch_read(object_type, ids, properties)

    async def pipelines(self, object_type: str) -> list[Pipeline]:
        """Every pipeline of an object type (``deals``, ``tickets``, a custom object id…),
        archived ones included (a record may still sit in one), in display order."""
        version = self.client.paths.version
        data = await self.client._request(
            "GET",
            lambda legacy: pipelines_route(version, object_type, legacy=legacy),
        )
        pipelines = [
            Pipeline.from_api(p)
            for p in (data or {}).get("results") or []
            if isinstance(p, Mapping)
        ]
        pipelines.sort(key=lambda p: p.display_order)
        return pipelines


__all__ = [
    "ASSOCIATIONS_READ_MAX",
    "AssociationsRead",
    "HubSpotCrm",
    "Pipeline",
    "PipelineStage",
    "pipelines_route",
]
