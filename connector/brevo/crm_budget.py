"""The hourly call budget of Brevo's CRM endpoints, planned: how many calls, and done when.

Brevo allows 100 requests per hour to every endpoint outside contacts, events and SMTP
(companies, deals, notes, tasks, their links, pipelines, ``/processes``, webhooks) on the
general plans and 200 on the advanced ones (API_NOTES_BREVO §2; the ``other`` family of
:data:`connector.ratelimit.BREVO_FAMILIES`). At that rate a call is worth 36 seconds, so the
CRM sync plans its calls instead of discovering the wait:

* :func:`pack` splits import rows into request bodies (next-fit by bytes) — the client's
  chunker, so what is planned is what is sent;
* :func:`plan_link_calls` turns link changes into the fewest ``link-unlink`` calls: a contact
  link can only be written from its company's or deal's side, but a company–deal link from
  either, and choosing sides is a minimum vertex cover of a bipartite graph (König's theorem,
  via a Hopcroft–Karp matching);
* :func:`plan` counts the calls a queue of work needs and, from the limiter's rolling
  window, when the last of them can go out — what ``connector status`` shows as "queued, done
  at".

Everything here is pure: no I/O, no clock; times are seconds on whatever clock the caller
passes in (the limiter's monotonic clock).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from connector.ratelimit import BREVO_FAMILIES, Limiter

HOUR = 3_600.0
CRM_FAMILY = "other"
"""The rate family Brevo's CRM endpoints fall in (:func:`connector.ratelimit.brevo_family`)."""

MAX_PAGE_SIZE = 1000
"""Records per ``GET /companies`` or ``GET /crm/deals`` page. SPEC24 states no maximum for these
lists; 1000 is the contacts maximum and what the sandbox allows [UNVERIFIED for CRM lists]: the
client falls back on a 400 ``out_of_range``."""

IMPORT_CHUNK_BYTES = 8_000_000
"""CSV bytes per CRM import request. SPEC24 states no limit for ``/companies/import`` or
``/crm/deals/import``; Brevo's help centre allows import files up to 250 MB (for the app) and
its contact import recommends ≤ 8 MB: the contact figure is kept [UNVERIFIED for CRM imports]."""


def hourly_limit(plan: str = "general") -> int:
    """Calls per hour for the CRM endpoints on a Brevo plan (``general`` | ``advanced``)."""
    return BREVO_FAMILIES[plan][CRM_FAMILY][1]


# --- import chunks -------------------------------------------------------------------------------


def pack(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """Indexes of ``sizes`` in consecutive groups, each summing to at most ``capacity``.

    Next-fit, in order: a row goes to the current group while it fits, else opens the next.
    Order is kept because a later row for the same record must be applied after an earlier one.
    """
    if capacity <= 0:
        raise ValueError("capacity must be positive")
    groups: list[list[int]] = []
    used = 0
    for i, size in enumerate(sizes):
        if size > capacity:
            raise ValueError(
                f"row {i} takes {size} bytes, more than the {capacity} bytes a request can carry"
            )
        if groups and used + size <= capacity:
            groups[-1].append(i)
            used += size
        else:
            groups.append([i])
            used = size
    return groups


@dataclass(frozen=True, slots=True)
class ImportQueue:
    """Rows waiting for one CRM import: their CSV bytes, the largest row, the header line."""

    rows: int = 0
    bytes: int = 0
    max_row_bytes: int = 0
    header_bytes: int = 0

    @classmethod
    def of(cls, row_sizes: Sequence[int], header_bytes: int) -> ImportQueue:
        return cls(len(row_sizes), sum(row_sizes), max(row_sizes, default=0), header_bytes)


def import_calls(queue: ImportQueue, chunk_bytes: int = IMPORT_CHUNK_BYTES) -> int:
    """Requests :func:`pack` needs for the queue, at most (exact for rows of one size).

    Every request but the last is filled beyond ``capacity - max_row`` (next-fit closes a
    request only when the next row does not fit), hence ``ceil(bytes / (capacity - max_row))``.
    """
    if queue.rows == 0:
        return 0
    capacity = chunk_bytes - queue.header_bytes
    if queue.max_row_bytes > capacity:
        raise ValueError("a row is larger than an import request can carry")
    if queue.max_row_bytes == capacity:
        return queue.rows
    return max(1, math.ceil(queue.bytes / (capacity - queue.max_row_bytes)))


def import_calls_at_least(queue: ImportQueue, chunk_bytes: int = IMPORT_CHUNK_BYTES) -> int:
    """No packing can use fewer requests than this: ``ceil(bytes / capacity)``."""
    if queue.rows == 0:
        return 0
    return max(1, math.ceil(queue.bytes / (chunk_bytes - queue.header_bytes)))


# --- pages and reads -----------------------------------------------------------------------------


def scan_pages(records: int, page_size: int = MAX_PAGE_SIZE) -> int:
    """Pages a full list scan takes: Brevo's CRM lists give no total, so a scan ends on the
    first page shorter than ``page_size`` — an exact multiple costs one more, empty, page."""
    if records < 0 or page_size < 1:
        raise ValueError("records must be ≥ 0 and page_size ≥ 1")
    return records // page_size + 1


ReadStrategy = Literal["by_id", "scan"]


def read_strategy(
    ids: int, records_total: int | None, page_size: int = MAX_PAGE_SIZE
) -> ReadStrategy:
    """How to read ``ids`` records: one ``GET /{kind}/{id}`` each, or one list scan.

    Brevo has no batch read for companies or deals; a scan of the whole account is cheaper
    once the ids outnumber its pages (needs the account's record count, e.g. from the last
    scan).
    """
    if records_total is not None and scan_pages(records_total, page_size) < ids:
        return "scan"
    return "by_id"


def read_calls(ids: int, records_total: int | None, page_size: int = MAX_PAGE_SIZE) -> int:
    if ids <= 0:
        return 0
    if read_strategy(ids, records_total, page_size) == "scan":
        assert records_total is not None
        return scan_pages(records_total, page_size)
    return ids


# --- link calls ----------------------------------------------------------------------------------

CONTACT = "contact"


@dataclass(frozen=True, slots=True)
class LinkChange:
    """One link to add (``add=True``) or remove between two records.

    Exactly two of ``company``, ``deal``, ``contact`` are set: company–contact, deal–contact or
    company–deal. Contact ids are Brevo's integer ids; company and deal ids are strings.
    """

    company: str | None = None
    deal: str | None = None
    contact: int | None = None
    add: bool = True

    def __post_init__(self) -> None:
        given = sum(v is not None for v in (self.company, self.deal, self.contact))
        if given != 2:
            raise ValueError("a link change names exactly two of company, deal and contact")


@dataclass(slots=True)
class LinkCall:
    """One ``PATCH /companies/link-unlink/{id}`` or ``PATCH /crm/deals/link-unlink/{id}``.

    ``link_others``/``unlink_others`` hold deal ids on a company call, company ids on a deal
    call.
    """

    kind: Literal["company", "deal"]
    id: str
    link_contacts: list[int] = field(default_factory=list)
    unlink_contacts: list[int] = field(default_factory=list)
    link_others: list[str] = field(default_factory=list)
    unlink_others: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return (
            len(self.link_contacts)
            + len(self.unlink_contacts)
            + len(self.link_others)
            + len(self.unlink_others)
        )


def _max_matching(adj: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Hopcroft–Karp on a bipartite graph (left → right lists): a maximum matching left→right."""
    match_l: dict[str, str] = {}
    match_r: dict[str, str] = {}
    while True:
        dist: dict[str, int] = {}
        queue: deque[str] = deque()
        for u in adj:
            if u not in match_l:
                dist[u] = 0
                queue.append(u)
        reachable_free = False
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                w = match_r.get(v)
                if w is None:
                    reachable_free = True
                elif w not in dist:
                    dist[w] = dist[u] + 1
                    queue.append(w)
        if not reachable_free:
            return match_l
        for root in adj:
            if root in match_l:
                continue
            # iterative DFS along the BFS layers, so deep graphs cannot overflow the stack
            stack: list[tuple[str, Iterator[str]]] = [(root, iter(adj[root]))]
            chosen: list[str] = []
            while stack:
                u, edges = stack[-1]
                step: str | None = None
                for v in edges:
                    w = match_r.get(v)
                    if w is None:
                        chosen.append(v)
                        for (x, _), y in zip(stack, chosen, strict=True):
                            match_l[x] = y
                            match_r[y] = x
                        stack.clear()
                        break
                    if dist.get(w) == dist[u] + 1:
                        chosen.append(v)
                        step = w
                        break
                else:
                    dist[u] = -1  # a dead end for this phase
                    stack.pop()
                    if chosen:
                        chosen.pop()
                    continue
                if step is not None:
                    stack.append((step, iter(adj[step])))


def min_vertex_cover(
    edges: Iterable[tuple[str, str]],
) -> tuple[set[str], set[str]]:
    """A minimum vertex cover (left ids, right ids) of a bipartite graph (König's theorem)."""
    adj: dict[str, list[str]] = {}
    for left, right in edges:
        adj.setdefault(left, []).append(right)
    match_l = _max_matching(adj)
    match_r = {v: u for u, v in match_l.items()}
    # Z: vertices reached from unmatched left vertices by alternating paths
    seen_l = {u for u in adj if u not in match_l}
    seen_r: set[str] = set()
    queue = deque(seen_l)
    while queue:
        u = queue.popleft()
        for v in adj[u]:
            if v in seen_r or match_l.get(u) == v:
                continue
            seen_r.add(v)
            w = match_r.get(v)
            if w is not None and w not in seen_l:
                seen_l.add(w)
                queue.append(w)
    return set(adj) - seen_l, seen_r


def plan_link_calls(
    changes: Iterable[LinkChange], *, max_ids_per_call: int | None = None
) -> list[LinkCall]:
    """The fewest link-unlink calls that apply ``changes`` (the last change of a pair wins).

    Contact links are written from the company's or deal's side (Brevo has no contact-side
    endpoint), so those records need a call anyway; a company–deal link rides on one of them
    if it can, and the rest are placed by a minimum vertex cover. ``max_ids_per_call`` splits
    a call whose id lists would grow past it (Brevo documents no limit [UNVERIFIED]).
    """
    last: dict[tuple[str, str, str], bool] = {}
    for ch in changes:
        if ch.contact is not None:
            side = ("company", ch.company) if ch.company is not None else ("deal", ch.deal)
            assert side[1] is not None
            last[(side[0], side[1], f"{CONTACT}:{ch.contact}")] = ch.add
        else:
            assert ch.company is not None and ch.deal is not None
            last[("pair", ch.company, ch.deal)] = ch.add
    calls: dict[tuple[str, str], LinkCall] = {}

    def call(kind: Literal["company", "deal"], rid: str) -> LinkCall:
        return calls.setdefault((kind, rid), LinkCall(kind, rid))

    pairs: list[tuple[str, str, bool]] = []
    for (kind, rid, other), add in last.items():
        if kind == "pair":
            pairs.append((rid, other, add))
            continue
        contact = int(other.split(":", 1)[1])
        c = call("company" if kind == "company" else "deal", rid)
        (c.link_contacts if add else c.unlink_contacts).append(contact)
    rest: list[tuple[str, str, bool]] = []
    for company, deal, add in pairs:
        if ("company", company) in calls:
            c = calls[("company", company)]
            (c.link_others if add else c.unlink_others).append(deal)
        elif ("deal", deal) in calls:
            d = calls[("deal", deal)]
            (d.link_others if add else d.unlink_others).append(company)
        else:
            rest.append((company, deal, add))
    cover_companies, _ = min_vertex_cover((c, d) for c, d, _ in rest)
    for company, deal, add in rest:
        if company in cover_companies:
            c = call("company", company)
            (c.link_others if add else c.unlink_others).append(deal)
        else:
            d = call("deal", deal)
            (d.link_others if add else d.unlink_others).append(company)
    out = list(calls.values())
    if max_ids_per_call is not None:
        out = [part for c in out for part in _split(c, max_ids_per_call)]
    return out


def _split(call: LinkCall, limit: int) -> list[LinkCall]:
    if limit < 1:
        raise ValueError("max_ids_per_call must be at least 1")
    if call.size <= limit:
        return [call]
    items: list[tuple[str, int | str]] = [
        *(("lc", v) for v in call.link_contacts),
        *(("uc", v) for v in call.unlink_contacts),
        *(("lo", v) for v in call.link_others),
        *(("uo", v) for v in call.unlink_others),
    ]
    parts: list[LinkCall] = []
    for start in range(0, len(items), limit):
        part = LinkCall(call.kind, call.id)
        for tag, v in items[start : start + limit]:
            if tag == "lc":
                part.link_contacts.append(int(v))
            elif tag == "uc":
                part.unlink_contacts.append(int(v))
            elif tag == "lo":
                part.link_others.append(str(v))
            else:
                part.unlink_others.append(str(v))
        parts.append(part)
    return parts


# --- the budget and the plan ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    """The CRM family's rolling window as it stands: its limit, and the calls still in it.

    ``used`` holds ``(time, count)`` pairs: ``count`` calls that leave the window at
    ``time + period``. ``blocked_until``: no call before then (after a 429 or "0 remaining").
    ``bucket``: the limiter counts calls in buckets of this many seconds (aligned on
    multiples of it) and a call leaves the window with its whole bucket; 0 = exact times.
    """

    limit: int
    period: float = HOUR
    used: tuple[tuple[float, int], ...] = ()
    blocked_until: float = 0.0
    bucket: float = 0.0

    def leaves_at(self, sent: float) -> float:
        """The time a call sent at ``sent`` counts as, for leaving the window."""
        if self.bucket <= 0:
            return sent
        return sent - (sent % self.bucket) + self.bucket

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0:
            raise ValueError("limit must be ≥ 1 and period > 0")

    def in_window(self, now: float) -> int:
        return sum(n for t, n in self.used if t + self.period > now)

    def available(self, now: float) -> int:
        """Calls that may go out at ``now`` without waiting."""
        if self.blocked_until > now:
            return 0
        return max(self.limit - self.in_window(now), 0)


def budget_from_limiter(limiter: Limiter, now: float) -> Budget:
    """The :class:`Budget` of a Brevo limiter's hourly window (the ``other`` family's).

    Reads the window's buckets: a bucket's calls are taken to leave the window when the whole
    bucket does (``start + width + period``), as :class:`connector.ratelimit.Window` counts.
    """
    hourly = max(limiter.windows, key=lambda w: w.period)
    used = tuple(
        (start + hourly.width, int(count))
        for start, count in hourly._buckets  # read-only view of the window's buckets
    )
    blocked = limiter._blocked_until  # read-only, like the buckets
    return Budget(
        hourly.limit, hourly.period, used, blocked if blocked > now else 0.0, hourly.width
    )


def iter_call_times(calls: int, budget: Budget, now: float) -> Iterator[float]:
    """The earliest times ``calls`` calls can go out, in order, within the rolling window.

    A call may go out at ``x`` when fewer than ``limit`` calls lie in ``(x - period, x]``;
    so the call ``limit`` places after another waits until that one has left the window
    (with its bucket, when the budget counts in buckets, as the limiter does).
    """
    start = max(now, budget.blocked_until)
    # the newest `limit` call times, sorted; a bucket's time may lie a little after `now`
    recent: list[float] = []
    for t, n in budget.used:
        if t + budget.period > now:
            recent.extend([t] * n)
    recent.sort()
    del recent[: -budget.limit]
    previous = start
    for _ in range(calls):
        at = previous
        if len(recent) >= budget.limit:
            at = max(at, recent[-budget.limit] + budget.period)
        bisect.insort(recent, budget.leaves_at(at))
        del recent[: -budget.limit]
        previous = at
        yield at


@dataclass(frozen=True, slots=True)
class CrmWork:
    """What is queued for Brevo's CRM endpoints.

    ``link_calls`` comes from :func:`plan_link_calls` (already the fewest); ``scans`` holds
    the record count of each list scan to run; ``reads`` the id reads as ``(ids,
    records_total)`` pairs (total None when unknown).
    """

    company_imports: ImportQueue = ImportQueue()
    deal_imports: ImportQueue = ImportQueue()
    polls_per_import: int = 0
    link_calls: int = 0
    reads: tuple[tuple[int, int | None], ...] = ()
    scans: tuple[int, ...] = ()
    other_calls: int = 0
    """Single calls (pipelines, attributes, one create or update…)."""


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Calls the queued work needs by kind, and when the last one can be sent."""

    imports: int
    polls: int
    links: int
    reads: int
    pages: int
    other: int
    limit: int
    available_now: int
    now: float
    done_at: float

    @property
    def total(self) -> int:
        return self.imports + self.polls + self.links + self.reads + self.pages + self.other

    @property
    def wait_seconds(self) -> float:
        return self.done_at - self.now

    @property
    def fits_now(self) -> bool:
        return self.total <= self.available_now

    def summary(self) -> str:
        """One line for ``connector status``: what the queue costs and when it is done."""
        parts = [
            f"{n} {label}"
            for n, label in (
                (self.imports, "import"),
                (self.polls, "poll"),
                (self.links, "link"),
                (self.reads, "read"),
                (self.pages, "page"),
                (self.other, "other"),
            )
            if n
        ]
        what = ", ".join(parts) if parts else "nothing queued"
        when = "now" if self.wait_seconds <= 0 else f"in {_duration(self.wait_seconds)}"
        return (
            f"{self.total} Brevo CRM call(s) ({what}); {self.available_now} of "
            f"{self.limit}/h left now; done {when}"
        )


def _duration(seconds: float) -> str:
    minutes = math.ceil(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def plan(
    work: CrmWork,
    budget: Budget,
    now: float,
    *,
    chunk_bytes: int = IMPORT_CHUNK_BYTES,
    page_size: int = MAX_PAGE_SIZE,
) -> CallPlan:
    """How many calls ``work`` takes and when, at the earliest, the last one goes out."""
    imports = import_calls(work.company_imports, chunk_bytes) + import_calls(
        work.deal_imports, chunk_bytes
    )
    reads = sum(read_calls(ids, total, page_size) for ids, total in work.reads)
    pages = sum(scan_pages(n, page_size) for n in work.scans)
    polls = imports * work.polls_per_import
    total = imports + polls + work.link_calls + reads + pages + work.other_calls
    done_at = max(iter_call_times(total, budget, now), default=now)  # the times only grow
    return CallPlan(
        imports=imports,
        polls=polls,
        links=work.link_calls,
        reads=reads,
        pages=pages,
        other=work.other_calls,
        limit=budget.limit,
        available_now=budget.available(now),
        now=now,
        done_at=done_at,
    )


__all__ = [
    "CRM_FAMILY",
    "HOUR",
    "IMPORT_CHUNK_BYTES",
    "MAX_PAGE_SIZE",
    "Budget",
    "CallPlan",
    "CrmWork",
    "ImportQueue",
    "LinkCall",
    "LinkChange",
    "budget_from_limiter",
    "hourly_limit",
    "import_calls",
    "import_calls_at_least",
    "iter_call_times",
    "min_vertex_cover",
    "pack",
    "plan",
    "plan_link_calls",
    "read_calls",
    "read_strategy",
    "scan_pages",
]
