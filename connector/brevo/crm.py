"""Brevo's CRM companies and deals: paged reads, imports, link-unlink, pipelines, attributes.

:class:`BrevoCrm` rides on a :class:`~connector.brevo.client.BrevoClient`: every call goes
through its ``_call`` (retries, error mapping, :attr:`~BrevoClient.calls`) and its httpx
client (the limiter of the ``other`` family, ``x-sib-ratelimit-*`` headers). That family
allows 100 calls per hour on the general plans (200 on advanced), so every method here spends
as few as it can, and :mod:`connector.brevo.crm_budget` plans the rest:

* reads page with the largest page size (1000 [UNVERIFIED for CRM lists]; a 400
  ``out_of_range`` steps down once and is remembered), ``sort=asc`` and ``modifiedSince``;
* writes go through ``POST /companies/import`` and ``POST /crm/deals/import`` — multipart, a
  CSV ``file`` plus a ``mapping`` JSON (SPEC24, SDK 5.1.0), answered ``{processId}`` — packed
  into as few requests as the byte limit allows (one for a thousand companies);
* links go through the link-unlink endpoints only (a PATCH with ``linkedContactsIds``
  replaces the whole list, API_NOTES_BREVO §6), as the fewest calls
  (:func:`~connector.brevo.crm_budget.plan_link_calls`).

Brevo has no batch read of companies or deals: :meth:`BrevoCrm.get_companies` and
:meth:`BrevoCrm.get_deals` read ids one call each, or scan the list when that is cheaper.
An import answers only a process id: the ids of the records it created are not returned, so
the caller reads them back (a ``modifiedSince`` scan from before the import).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, Self, TypeVar

import structlog
from brevo.core.api_error import ApiError as SdkApiError
from brevo.core.http_response import AsyncHttpResponse

from connector.errors import NotFoundError, ValidationError

from .client import BrevoClient, _json_body, brevo_time
from .crm_budget import (
    IMPORT_CHUNK_BYTES,
    MAX_PAGE_SIZE,
    ImportQueue,
    LinkCall,
    LinkChange,
    pack,
    plan_link_calls,
    read_strategy,
)
from .crm_models import (
    BrevoCompany,
    BrevoDeal,
    BrevoPipeline,
    CrmAttribute,
    CrmImportRow,
    CrmKind,
    LinkResult,
    csv_line,
    csv_value,
)
from .models import BrevoProcess

log = structlog.get_logger(__name__)

CATCH_UP_SKEW = timedelta(seconds=60)
PAGE_SIZE_LADDER = (1000, 500, 100, 50)
"""Page sizes tried in turn after a 400 ``out_of_range`` (50 is Brevo's documented default)."""

_ID_COLUMN: dict[CrmKind, str] = {"company": "company_id", "deal": "deal_id"}
_NAME_ATTRIBUTE: dict[CrmKind, str] = {"company": "name", "deal": "deal_name"}
_ENDPOINTS: dict[CrmKind, dict[str, str]] = {
    "company": {
        "list": "GET /v3/companies",
        "get": "GET /v3/companies/{id}",
        "import": "POST /v3/companies/import",
        "link": "PATCH /v3/companies/link-unlink/{id}",
    },
    "deal": {
        "list": "GET /v3/crm/deals",
        "get": "GET /v3/crm/deals/{id}",
        "import": "POST /v3/crm/deals/import",
        "link": "PATCH /v3/crm/deals/link-unlink/{id}",
    },
}

PagingMode = Literal["page", "offset"]
R = TypeVar("R", BrevoCompany, BrevoDeal)


def _items(data: Any, key: str = "items") -> list[Any]:
    """A list answer, bare or wrapped in ``{key: [...]}``."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get(key), list):
        return list(data[key])
    return []


def _process_id(data: Any) -> int | None:
    """``{processId}`` as SPEC24 documents it (an integer); a numeric string is accepted too,
    and an answer without one (the SDK types it "integer or null") gives None."""
    raw = data.get("processId") if isinstance(data, dict) else None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    return None


class CrmStream(Generic[R]):
    """Companies or deals (modified since a time), oldest-created first, each once.

    An async iterator. Brevo sorts these lists by creation, not modification, and gives no
    total: the scan ends on the first short page. :attr:`high_water_mark` is the largest
    modification time seen; :attr:`next_modified_since` is where the next incremental read
    starts (the scan's start, less a clock-skew margin), so a record changed while this scan
    ran is read again next time rather than lost.
    """

    def __init__(
        self,
        crm: BrevoCrm,
        kind: CrmKind,
        parse: Callable[[Any], R],
        *,
        modified_since: datetime | None,
    ) -> None:
        self._crm = crm
        self.kind = kind
        self._parse: Callable[[Any], R] = parse
        self.modified_since = modified_since
        self.started_at = datetime.now(UTC)
        self.high_water_mark: datetime | None = None
        self.pages = 0
        self._seen: set[str] = set()
        self._gen: AsyncGenerator[R, None] = self._run()

    @property
    def next_modified_since(self) -> datetime:
        return self.started_at - CATCH_UP_SKEW

    @property
    def count(self) -> int:
        """Distinct records read so far."""
        return len(self._seen)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> R:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    def _fresh(self, raw_items: list[Any]) -> list[R]:
        out: list[R] = []
        for raw in raw_items:
            if not isinstance(raw, dict) or raw.get("id") in (None, ""):
                continue
            record = self._parse(raw)
            if record.id in self._seen:
                continue
            self._seen.add(record.id)
            if self.high_water_mark is None or record.modified_at > self.high_water_mark:
                self.high_water_mark = record.modified_at
            out.append(record)
        return out

    async def _page(self, position: int, *, probe: bool = False) -> tuple[list[Any], int]:
        items, limit = await self._crm._list_page(
            self.kind, position, self.modified_since, probe=probe
        )
        self.pages += 1
        return items, limit

    async def _run(self) -> AsyncGenerator[R, None]:
        crm = self._crm
        if self.kind == "deal" or crm.company_paging == "offset":
            async for record in self._by_offset(
                crm.company_offset_base if self.kind == "company" else 0
            ):
                yield record
            return
        # GET /companies takes `page`, documented as "Index of the first document of the page"
        # (SPEC24, SDK) but named like a page number, as the sandbox reads it [UNVERIFIED].
        # Read it as a page number; if page 2 starts inside page 1, it is an offset: switch.
        first_ids: list[str] = []
        number = 1
        while True:
            items, limit = await self._page(number)
            ids = [str(i.get("id")) for i in items if isinstance(i, dict)]
            if number == 2 and ids and ids[0] in first_ids[1:]:
                log.warning("brevo_companies_page_is_an_offset")
                crm.company_paging = "offset"
                async for record in self._by_offset(0):
                    yield record
                return
            if number == 1:
                first_ids = ids
            for record in self._fresh(items):
                yield record
            if len(items) < limit:
                return
            number += 1

    async def _by_offset(self, start: int) -> AsyncGenerator[R, None]:
        position = start
        while True:
            probe = self.kind == "company" and position == 0
            try:
                items, limit = await self._page(position, probe=probe)
            except ValidationError:
                if probe:
                    # a 1-based index: 0 is refused, and 1 is the first record
                    self._crm.company_offset_base = position = 1
                    continue
                raise
            for record in self._fresh(items):
                yield record
            if len(items) < limit:
                return
            position += len(items)


class BrevoCrm:
    """Brevo CRM companies and deals for one account, on a :class:`BrevoClient`'s plumbing.

    ``page_size``: records per list page (stepped down on a 400 ``out_of_range``);
    ``import_chunk_bytes``: CSV bytes per import request; ``link_ids_per_call``: split a
    link-unlink call whose id lists grow past it (None: no limit, Brevo documents none).
    """

    def __init__(
        self,
        client: BrevoClient,
        *,
        page_size: int = MAX_PAGE_SIZE,
        import_chunk_bytes: int = IMPORT_CHUNK_BYTES,
        link_ids_per_call: int | None = None,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        self.client = client
        self.page_size = page_size
        self.import_chunk_bytes = import_chunk_bytes
        self.link_ids_per_call = link_ids_per_call
        self.company_paging: PagingMode = "page"
        self.company_offset_base = 0

    # --- plumbing ---------------------------------------------------------------------------

    async def _call(
        self,
        name: str,
        endpoint: str,
        factory: Callable[[], Awaitable[AsyncHttpResponse[Any]]],
        *,
        idempotent: bool,
    ) -> Any:
        response = await self.client._call(name, endpoint, factory, idempotent)
        return _json_body(response)

    async def _raw_get(self, name: str, path: str) -> Any:
        """``GET {base_url}/{path}`` through the client's httpx client (for a route the SDK
        lacks), with the SDK's error shape so :meth:`BrevoClient._call` maps it the same way."""
        settings = self.client.settings
        assert settings.api_key is not None  # BrevoClient refuses a settings without one
        url = f"{settings.base_url}/{path}"
        headers = {"api-key": settings.api_key.get_secret_value(), "accept": "application/json"}

        async def attempt() -> AsyncHttpResponse[Any]:
            response = await self.client._http.get(url, headers=headers)
            if not 200 <= response.status_code < 300:
                body = _json_body(response)
                raise SdkApiError(
                    status_code=response.status_code,
                    headers=dict(response.headers),
                    body=body if body is not None else response.text,
                )
            return AsyncHttpResponse(response=response, data=None)

        return await self._call(name, f"GET /v3/{path}", attempt, idempotent=True)

    async def _list_page(
        self, kind: CrmKind, position: int, since: datetime | None, *, probe: bool = False
    ) -> tuple[list[Any], int]:
        """One list page at ``position`` (page number or index); its items and the limit used.

        A 400 ``out_of_range`` steps the page size down (unless ``probe``: the position itself
        is being tried, and the error is the caller's answer).
        """
        while True:
            limit = self.page_size
            modified = brevo_time(since) if since is not None else None
            if kind == "company":
                factory = functools.partial(
                    self.client.sdk.companies.with_raw_response.get_all_companies,
                    page=position,
                    limit=limit,
                    sort="asc",
                    modified_since=modified,
                )
            else:
                factory = functools.partial(
                    self.client.sdk.deals.with_raw_response.get_all_deals,
                    offset=position,
                    limit=limit,
                    sort="asc",
                    modified_since=modified,
                )
            try:
                data = await self._call(
                    f"list_{kind}s", _ENDPOINTS[kind]["list"], factory, idempotent=True
                )
            except ValidationError as e:
                smaller = [s for s in PAGE_SIZE_LADDER if s < limit]
                if e.category == "out_of_range" and smaller and not probe:
                    log.warning("brevo_crm_page_size_fallback", kind=kind, tried=limit)
                    self.page_size = smaller[0]
                    continue
                raise
            return _items(data), limit

    # --- reads ------------------------------------------------------------------------------

    def iter_companies(self, *, modified_since: datetime | None = None) -> CrmStream[BrevoCompany]:
        """Every company (modified since a time), each once; see :class:`CrmStream`."""
        return CrmStream(self, "company", BrevoCompany.from_api, modified_since=modified_since)

    def iter_deals(self, *, modified_since: datetime | None = None) -> CrmStream[BrevoDeal]:
        """Every deal (modified since a time), each once; see :class:`CrmStream`."""
        return CrmStream(self, "deal", BrevoDeal.from_api, modified_since=modified_since)

    async def get_company(self, company_id: str) -> BrevoCompany | None:
        """One company; None when it does not exist."""
        try:
            data = await self._call(
                "get_company",
                _ENDPOINTS["company"]["get"],
                lambda: self.client.sdk.companies.with_raw_response.get_a_company(company_id),
                idempotent=True,
            )
        except NotFoundError:
            return None
        return BrevoCompany.from_api(data or {"id": company_id})

    async def get_deal(self, deal_id: str) -> BrevoDeal | None:
        """One deal; None when it does not exist."""
        try:
            data = await self._call(
                "get_deal",
                _ENDPOINTS["deal"]["get"],
                lambda: self.client.sdk.deals.with_raw_response.get_a_deal(deal_id),
                idempotent=True,
            )
        except NotFoundError:
            return None
        return BrevoDeal.from_api(data or {"id": deal_id})

    async def _get_many(
        self,
        ids: Iterable[str],
        records_total: int | None,
        one: Callable[[str], Awaitable[R | None]],
        scan: Callable[[], CrmStream[R]],
    ) -> list[R]:
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if read_strategy(len(wanted), records_total, self.page_size) == "scan":
            keep = set(wanted)
            return [r async for r in scan() if r.id in keep]
        found: list[R] = []
        for rid in wanted:
            record = await one(rid)
            if record is not None:
                found.append(record)
        return found

    async def get_companies(
        self, ids: Iterable[str], *, records_total: int | None = None
    ) -> list[BrevoCompany]:
        """Companies by id; absent ids are left out.

        One call per id — Brevo has no batch read — unless ``records_total`` (the account's
        company count, e.g. the last scan's) says a full scan takes fewer calls.
        """
        return await self._get_many(ids, records_total, self.get_company, self.iter_companies)

    async def get_deals(
        self, ids: Iterable[str], *, records_total: int | None = None
    ) -> list[BrevoDeal]:
        """Deals by id; absent ids are left out (as :meth:`get_companies`)."""
        return await self._get_many(ids, records_total, self.get_deal, self.iter_deals)

    async def delete(self, kind: CrmKind, record_id: str) -> bool:
        """Delete one company or deal (Brevo has no batch delete); False when it was gone."""
        if kind == "company":
            factory = functools.partial(
                self.client.sdk.companies.with_raw_response.delete_a_company, record_id
            )
        else:
            factory = functools.partial(
                self.client.sdk.deals.with_raw_response.delete_a_deal, record_id
            )
        try:
            await self._call(
                f"delete_{kind}",
                _ENDPOINTS[kind]["get"].replace("GET", "DELETE"),
                factory,
                idempotent=True,
            )
        except NotFoundError:
            return False
        return True

    # --- imports ----------------------------------------------------------------------------

    def _csv(self, kind: CrmKind, rows: Sequence[CrmImportRow]) -> tuple[str, list[str]]:
        """The header line and one line per row; the id column first when any row has an id."""
        id_column = _ID_COLUMN[kind]
        name = _NAME_ATTRIBUTE[kind]
        keys: dict[str, None] = {}
        for i, row in enumerate(rows):
            if row.id is None and row.attributes.get(name) in (None, ""):
                raise ValueError(f"import row {i} creates a {kind} but has no {name!r}")
            for key in row.attributes:
                if key in (id_column, "id"):
                    raise ValueError(f"{key!r} is not an attribute: pass the record id as id=")
                keys[key] = None
        columns = sorted(keys, key=lambda k: (k != name, k))
        if any(row.id is not None for row in rows):
            columns.insert(0, id_column)
        lines = []
        for row in rows:
            values = {**row.attributes, id_column: row.id}
            lines.append(csv_line([csv_value(values.get(c)) for c in columns]))
        return csv_line(columns), lines

    def measure_import(self, kind: CrmKind, rows: Sequence[CrmImportRow]) -> ImportQueue:
        """What an import of ``rows`` weighs, for :func:`~connector.brevo.crm_budget.plan`."""
        if not rows:
            return ImportQueue()
        header, lines = self._csv(kind, rows)
        return ImportQueue.of([len(line.encode()) for line in lines], len(header.encode()))

    async def _import(
        self,
        kind: CrmKind,
        rows: Sequence[CrmImportRow],
        *,
        update_existing: bool,
        unset_empty: bool,
    ) -> list[int | None]:
        if not rows:
            return []
        header, lines = self._csv(kind, rows)
        head = header.encode()
        encoded = [line.encode() for line in lines]
        mapping = {
            "link_entities": False,
            "unlink_entities": False,
            "update_existing_records": update_existing,
            "unset_empty_attributes": unset_empty,
        }
        groups = pack([len(b) for b in encoded], self.import_chunk_bytes - len(head))
        filename = "companies.csv" if kind == "company" else "deals.csv"
        if kind == "company":
            send = (
                self.client.sdk.companies.with_raw_response.import_companies_creation_and_updation
            )
        else:
            send = self.client.sdk.deals.with_raw_response.import_deals_creation_and_updation
        process_ids: list[int | None] = []
        for group in groups:
            body = head + b"".join(encoded[i] for i in group)
            # Rows that name their record are safe to send twice; a row that creates one is
            # not (no key to match it by), so such a chunk is not resent after a 5xx or a
            # timeout: the next sync pass finds the record missing, or created, and acts.
            updates_only = all(rows[i].id is not None for i in group)
            data = await self._call(
                f"import_{kind}s",
                _ENDPOINTS[kind]["import"],
                functools.partial(send, file=(filename, body, "text/csv"), mapping=mapping),
                idempotent=updates_only,
            )
            pid = _process_id(data)
            if pid is None:
                log.warning("brevo_crm_import_without_process_id", kind=kind, rows=len(group))
            else:
                log.info("brevo_crm_import_started", kind=kind, process_id=pid, rows=len(group))
            process_ids.append(pid)
        return process_ids

    async def import_companies(
        self,
        rows: Sequence[CrmImportRow],
        *,
        update_existing: bool = True,
        unset_empty: bool = False,
    ) -> list[int | None]:
        """Create and update companies through ``POST /companies/import``; one process id per
        request (None when Brevo gave none).

        Rows with an ``id`` update that company (``company_id`` column); the others create
        one. ``unset_empty``: an empty cell clears the attribute (pass complete rows then).
        A request holding creates is not resent after a 5xx or a timeout (it may have been
        applied, and a second one would duplicate): read back by a key attribute (e.g. the
        HubSpot id) before writing again.
        """
        return await self._import(
            "company", rows, update_existing=update_existing, unset_empty=unset_empty
        )

    async def import_deals(
        self,
        rows: Sequence[CrmImportRow],
        *,
        update_existing: bool = True,
        unset_empty: bool = False,
    ) -> list[int | None]:
        """Create and update deals through ``POST /crm/deals/import`` (``deal_id`` column),
        as :meth:`import_companies`. ``pipeline`` and ``deal_stage`` hold ids from
        :meth:`pipelines`."""
        return await self._import(
            "deal", rows, update_existing=update_existing, unset_empty=unset_empty
        )

    async def wait_for_imports(
        self, process_ids: Sequence[int | None], *, poll_every: float, budget: int
    ) -> dict[int, BrevoProcess]:
        """Poll ``GET /processes/{id}`` until the imports are done (the client's budgeted
        poll; each poll is one of the hour's CRM-family calls). Whether CRM imports show up
        under ``/processes`` like contact imports is [UNVERIFIED]."""
        ids = [p for p in process_ids if p is not None]
        return await self.client.wait_for_import(ids, poll_every=poll_every, budget=budget)

    # --- links ------------------------------------------------------------------------------

    async def _send_link(self, call: LinkCall) -> None:
        if call.size == 0:
            return
        if call.kind == "company":
            factory = functools.partial(
                self.client.sdk.companies.with_raw_response.link_and_unlink_company_with_contact_and_deal,
                call.id,
                link_contact_ids=call.link_contacts,
                unlink_contact_ids=call.unlink_contacts,
                link_deals_ids=call.link_others,
                unlink_deals_ids=call.unlink_others,
            )
        else:
            factory = functools.partial(
                self.client.sdk.deals.with_raw_response.link_and_unlink_a_deal_with_contacts_and_companies,
                call.id,
                link_contact_ids=call.link_contacts,
                unlink_contact_ids=call.unlink_contacts,
                link_company_ids=call.link_others,
                unlink_company_ids=call.unlink_others,
            )
        await self._call(
            f"link_{call.kind}",
            _ENDPOINTS[call.kind]["link"],
            factory,
            idempotent=True,  # links are sets: sending the same change twice changes nothing
        )

    async def link_company(
        self,
        company_id: str,
        *,
        link_contacts: Sequence[int] = (),
        unlink_contacts: Sequence[int] = (),
        link_deals: Sequence[str] = (),
        unlink_deals: Sequence[str] = (),
    ) -> None:
        """Add and remove a company's links in one call (``PATCH /companies/link-unlink``)."""
        await self._send_link(
            LinkCall(
                "company",
                company_id,
                list(link_contacts),
                list(unlink_contacts),
                list(link_deals),
                list(unlink_deals),
            )
        )

    async def link_deal(
        self,
        deal_id: str,
        *,
        link_contacts: Sequence[int] = (),
        unlink_contacts: Sequence[int] = (),
        link_companies: Sequence[str] = (),
        unlink_companies: Sequence[str] = (),
    ) -> None:
        """Add and remove a deal's links in one call (``PATCH /crm/deals/link-unlink``)."""
        await self._send_link(
            LinkCall(
                "deal",
                deal_id,
                list(link_contacts),
                list(unlink_contacts),
                list(link_companies),
                list(unlink_companies),
            )
        )

    async def apply_links(self, changes: Iterable[LinkChange]) -> LinkResult:
        """Apply link changes in the fewest link-unlink calls.

        A record Brevo refuses (404: deleted; 400: a linked id it does not know) is reported
        in :attr:`LinkResult.failed` and the others still go out; rate limits and server
        errors are raised after the client's retries.
        """
        calls = plan_link_calls(changes, max_ids_per_call=self.link_ids_per_call)
        result = LinkResult()
        for call in calls:
            try:
                await self._send_link(call)
            except (NotFoundError, ValidationError) as e:
                result.failed[f"{call.kind}:{call.id}"] = e.raw_message
                continue
            finally:
                result.calls += 1
            result.done.append(f"{call.kind}:{call.id}")
        return result

    # --- pipelines and attributes -----------------------------------------------------------

    async def pipelines(self) -> list[BrevoPipeline]:
        """Every deal pipeline with its stages (``GET /crm/pipeline/details/all``).

        SPEC24 answers a list of pipelines; a single pipeline object (the shape of the
        deprecated ``/crm/pipeline/details``) is read too.
        """
        data = await self._call(
            "pipelines",
            "GET /v3/crm/pipeline/details/all",
            lambda: self.client.sdk.deals.with_raw_response.get_all_pipelines(),
            idempotent=True,
        )
        if isinstance(data, dict) and "stages" in data:
            data = [data]
        raw = _items(data, "pipelines")
        return [BrevoPipeline.from_api(p) for p in raw if isinstance(p, dict)]

    async def company_attributes(self) -> list[CrmAttribute]:
        """The account's company attributes.

        SDK 5.1.0 reads ``GET /crm/attributes/companies``; SPEC24 (Nov 2024) documents
        ``GET /companies/attributes``: the first is tried, the second on a 404.
        """
        try:
            data = await self._call(
                "company_attributes",
                "GET /v3/crm/attributes/companies",
                lambda: self.client.sdk.companies.with_raw_response.get_company_attributes(),
                idempotent=True,
            )
        except NotFoundError:
            data = await self._raw_get("company_attributes", "companies/attributes")
        return [CrmAttribute.from_api(a) for a in _items(data, "attributes") if isinstance(a, dict)]

    async def deal_attributes(self) -> list[CrmAttribute]:
        """The account's deal attributes (``GET /crm/attributes/deals``)."""
        data = await self._call(
            "deal_attributes",
            "GET /v3/crm/attributes/deals",
            lambda: self.client.sdk.deals.with_raw_response.get_deal_attributes(),
            idempotent=True,
        )
        return [CrmAttribute.from_api(a) for a in _items(data, "attributes") if isinstance(a, dict)]


async def collect(stream: AsyncIterator[R]) -> list[R]:
    """Every record of a stream, as a list (tests and small accounts)."""
    return [r async for r in stream]


__all__ = ["CATCH_UP_SKEW", "BrevoCrm", "CrmStream", "collect"]
