"""CRM search for the HubSpot sandbox: filters, sorts, free-text query, paging and its caps.

The search runs over a store's search view (which may lag behind the live records). Each filter
group picks its cheapest candidate set from an index (ids, last-modified time, email) instead of
scanning every record, evaluates its filters on those, and the groups are OR-ed together.
"""

from __future__ import annotations

import bisect
import fnmatch
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.sandbox.hubspot_model import (
    SEARCHABLE,
    HsObject,
    ObjectStore,
    PropertyDef,
    created_prop,
    modified_props,
    parse_number,
    parse_time_ms,
    to_str,
)

MAX_LIMIT = 200
MAX_RESULTS = 10_000
MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25
MAX_QUERY = 3000
OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    }
)

ValueOf = Callable[[HsObject, str], str | None]


class SearchError(Exception):
    """A search request HubSpot would refuse with 400."""

    def __init__(self, message: str, *, sub_category: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sub_category = sub_category


@dataclass
class SearchResult:
    total: int
    page: list[HsObject]
    next_after: int | None


Key = float | str | int


def _kind(prop: str, defs: Mapping[str, PropertyDef]) -> str:
    d = defs[prop]
    if prop == "hs_object_id":
        return "id"
    if d.type in ("datetime", "date"):
        return "time"
    if d.type == "number":
        return "number"
    return "string"


def _convert(kind: str, raw: Any, prop: str) -> Key:
    s = to_str(raw)
    if s is None:
        raise SearchError(f"Filter value for {prop} must not be null")
    if kind in ("id", "time"):
        ms = parse_time_ms(s) if kind == "time" else (int(s) if s.strip().isdigit() else None)
        if ms is None:
            raise SearchError(f"'{s}' is not a valid value for property {prop}")
        return ms
    if kind == "number":
        n = parse_number(s)
        if n is None:
            raise SearchError(f"'{s}' is not a valid number for property {prop}")
        return n
    return s.lower()


_TOKEN_SPLIT = re.compile(r"[\s,;:/()\[\]\"']+")


def _tokens(text: str) -> list[str]:
    t = text.lower()
    return [w for w in _TOKEN_SPLIT.split(t) if w]


@dataclass
class _Filter:
    prop: str
    op: str
    kind: str
    value: Key | None = None
    high: Key | None = None
    values: frozenset[Key] = frozenset()
    token: str = ""

    def key_of(self, obj: HsObject, store_type: str, value_of: ValueOf) -> Key | None:
        k = self.kind
        if k == "id":
            return obj.id
        if k == "time":
            if self.prop == created_prop(store_type):
                return obj.created_ms
            if self.prop in modified_props(store_type):
                return obj.updated_ms
        raw = value_of(obj, self.prop)
        if raw is None or raw == "":
            return None
        if k == "time":
            return parse_time_ms(raw)
        if k == "number":
            return parse_number(raw)
        return raw.lower()

    def match(self, obj: HsObject, store_type: str, value_of: ValueOf) -> bool:
        op = self.op
        v = self.key_of(obj, store_type, value_of)
        if op == "HAS_PROPERTY":
            return v is not None
        if op == "NOT_HAS_PROPERTY":
            return v is None
        if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            found = v is not None and self._contains(str(v))
            return found if op == "CONTAINS_TOKEN" else not found
        if op == "NEQ":
            return v != self.value
        if op == "NOT_IN":
            return v not in self.values
        if v is None:
            return False
        if op == "EQ":
            return v == self.value
        if op == "IN":
            return v in self.values
        assert self.value is not None
        try:
            if op == "LT":
                return v < self.value  # type: ignore[operator]
            if op == "LTE":
                return v <= self.value  # type: ignore[operator]
            if op == "GT":
                return v > self.value  # type: ignore[operator]
            if op == "GTE":
                return v >= self.value  # type: ignore[operator]
            assert self.high is not None
            return self.value <= v <= self.high  # type: ignore[operator]
        except TypeError:
            return False

    def _contains(self, text: str) -> bool:
        tok = self.token
        if "*" in tok:
            return fnmatch.fnmatchcase(text, tok) or any(
                fnmatch.fnmatchcase(w, tok) for w in _tokens(text)
            )
        return tok == text or tok in _tokens(text)


def _compile(f: Any, defs: Mapping[str, PropertyDef]) -> _Filter:
    if not isinstance(f, dict):
        raise SearchError("Each filter must be an object")
    prop = f.get("propertyName")
    op = str(f.get("operator", "EQ")).upper()
    if not isinstance(prop, str) or not prop:
        raise SearchError("Filter is missing propertyName")
    if prop not in defs:
        raise SearchError(f'Property "{prop}" does not exist', sub_category="PROPERTY_DOESNT_EXIST")
    if op not in OPERATORS:
        raise SearchError(f"Unsupported operator {op}; allowed: {sorted(OPERATORS)}")
    kind = _kind(prop, defs)
    flt = _Filter(prop, op, kind)
    if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        return flt
    if op in ("IN", "NOT_IN"):
        values = f.get("values")
        if not isinstance(values, list) or not values:
            raise SearchError(f"Operator {op} requires a non-empty 'values' list")
        flt.values = frozenset(_convert(kind, v, prop) for v in values)
        return flt
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        raw = to_str(f.get("value"))
        if not raw:
            raise SearchError(f"Operator {op} requires a value")
        flt.token = raw.lower()
        return flt
    if "value" not in f:
        raise SearchError(f"Operator {op} requires a value")
    flt.value = _convert(kind, f["value"], prop)
    if op == "BETWEEN":
        if "highValue" not in f:
            raise SearchError("Operator BETWEEN requires highValue")
        flt.high = _convert(kind, f["highValue"], prop)
    return flt


def _parse_sort(raw: Any, defs: Mapping[str, PropertyDef]) -> tuple[str, bool] | None:
    """First sort only (HubSpot honours one): (property, descending)."""
    if not raw:
        return None
    if not isinstance(raw, list):
        raise SearchError("sorts must be a list")
    s = raw[0]
    if isinstance(s, str):
        desc = s.startswith("-")
        prop = s.lstrip("-+")
    elif isinstance(s, dict):
        prop = str(s.get("propertyName", ""))
        desc = str(s.get("direction", "ASCENDING")).upper().startswith("DESC")
    else:
        raise SearchError("Each sort must be a string or an object")
    if prop not in defs:
        raise SearchError(f'Property "{prop}" does not exist', sub_category="PROPERTY_DOESNT_EXIST")
    return prop, desc


def parse_paging(body: Mapping[str, Any]) -> tuple[int, int]:
    """(after, limit) with HubSpot's caps: limit ≤ 200 and never a page past result 10,000."""
    try:
        limit = int(body.get("limit") or 10)
        after = int(body.get("after") or 0)
    except (TypeError, ValueError) as exc:
        raise SearchError("limit and after must be integers") from exc
    if limit < 1 or limit > MAX_LIMIT:
        raise SearchError(f"limit must be between 1 and {MAX_LIMIT} (was {limit})")
    if after < 0:
        raise SearchError("after must not be negative")
    if after >= MAX_RESULTS or after + limit > MAX_RESULTS:
        raise SearchError(
            f"The search API returns at most {MAX_RESULTS} results per query; a page starting "
            f"at {after} with limit {limit} goes past it. Narrow the query instead of paging "
            "further.",
            sub_category="SEARCH_RESULT_LIMIT_EXCEEDED",
        )
    return after, limit


_BIG = 1 << 62


def _int_bounds(f: _Filter) -> tuple[int, int] | None:
    """Inclusive integer bounds of a range filter on ids or ms times, or None."""
    if not isinstance(f.value, int) or f.op not in ("EQ", "GT", "GTE", "LT", "LTE", "BETWEEN"):
        return None
    v = f.value
    if f.op == "EQ":
        return v, v
    if f.op == "GT":
        return v + 1, _BIG
    if f.op == "GTE":
        return v, _BIG
    if f.op == "LT":
        return -_BIG, v - 1
    if f.op == "LTE":
        return -_BIG, v
    if not isinstance(f.high, int):
        return None
    return v, f.high


class _Plan:
    """Where a filter group's candidates come from, and what is left to check on each."""

    def __init__(
        self, candidates: Iterable[HsObject], size: int, residual: list[_Filter], order: str | None
    ) -> None:
        self.candidates = candidates
        self.size = size
        self.residual = residual
        self.order = order  # "id" or "mod" when the candidates come sorted that way


class _Group:
    def __init__(self, filters: list[_Filter]) -> None:
        self.filters = filters

    def plan(self, store: ObjectStore) -> _Plan:
        """Pick the narrowest index for this group (id or last-modified range, id list or
        email); the filters that index fully answers are not checked again per record."""
        mods = modified_props(store.type)
        ranges: dict[str, tuple[int, int, list[_Filter]]] = {}
        for f in self.filters:
            field_ = "id" if f.kind == "id" else "mod" if f.prop in mods else None
            b = _int_bounds(f) if field_ else None
            if field_ is None or b is None:
                continue
            lo, hi, absorbed = ranges.get(field_, (-_BIG, _BIG, []))
            ranges[field_] = (max(lo, b[0]), min(hi, b[1]), [*absorbed, f])
        sx = store.sx
        best = _Plan(sx.values(), len(sx), list(self.filters), None)
        for field_, (lo, hi, absorbed) in ranges.items():
            rest = [f for f in self.filters if f not in absorbed]
            if field_ == "id":
                ids = store.sx_ids
                i, j = bisect.bisect_left(ids, lo), bisect.bisect_right(ids, hi)
                if j - i < best.size or (j - i == best.size and best.order is None):
                    best = _Plan((sx[k] for k in ids[i:j]), max(j - i, 0), rest, "id")
            else:
                mod = store.sx_mod
                i = bisect.bisect_left(mod, (lo, -_BIG))
                j = bisect.bisect_right(mod, (hi, _BIG))
                if j - i < best.size or (j - i == best.size and best.order is None):
                    best = _Plan((sx[k] for _, k in mod[i:j]), max(j - i, 0), rest, "mod")
        for f in self.filters:
            keys: list[int] | None = None
            if f.kind == "id" and f.op == "IN":
                keys = sorted(int(v) for v in f.values)
            elif f.prop == "email" and f.op == "EQ" and isinstance(f.value, str):
                found = store.by_email.get(f.value)
                keys = [found] if found is not None else []
            if keys is not None and len(keys) < best.size:
                objs = [o for o in (sx.get(k) for k in keys) if o is not None]
                best = _Plan(objs, len(objs), list(self.filters), "id")
        return best


def _predicate(f: _Filter, store_type: str, value_of: ValueOf) -> Callable[[HsObject], bool]:
    """A fast check for range filters on ids and stamps; the generic one otherwise."""
    b = _int_bounds(f)
    if b is not None and (f.kind == "id" or f.prop in modified_props(store_type)):
        lo, hi = b
        if f.kind == "id":
            return lambda o: lo <= o.id <= hi
        return lambda o: lo <= o.updated_ms <= hi
    return lambda o: f.match(o, store_type, value_of)


def _query_matcher(query: str, store_type: str, value_of: ValueOf) -> Callable[[HsObject], bool]:
    words = _tokens(query)
    fields = SEARCHABLE.get(store_type, ())

    def match(obj: HsObject) -> bool:
        text: list[str] = []
        for name in fields:
            v = value_of(obj, name)
            if v:
                text.extend(_tokens(v))
                text.extend(w for w in re.split(r"[@.]+", v.lower()) if w)
        text.append(str(obj.id))
        return all(any(t.startswith(w) for t in text) for w in words)

    return match


def run_search(
    store: ObjectStore,
    body: Mapping[str, Any],
    defs: Mapping[str, PropertyDef],
    value_of: ValueOf,
) -> SearchResult:
    """Evaluate one search request body against the store's search view."""
    groups_raw = body.get("filterGroups") or []
    if not isinstance(groups_raw, list):
        raise SearchError("filterGroups must be a list")
    if len(groups_raw) > MAX_GROUPS:
        raise SearchError(
            f"Too many filter groups ({len(groups_raw)}); the maximum is {MAX_GROUPS}",
            sub_category="TOO_MANY_FILTER_GROUPS",
        )
    groups: list[_Group] = []
    total_filters = 0
    for g in groups_raw:
        filters = g.get("filters") if isinstance(g, dict) else None
        if not isinstance(filters, list):
            raise SearchError("Each filter group needs a 'filters' list")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise SearchError(
                f"Too many filters in a group ({len(filters)}); the maximum is "
                f"{MAX_FILTERS_PER_GROUP}",
                sub_category="TOO_MANY_FILTERS",
            )
        total_filters += len(filters)
        groups.append(_Group([_compile(f, defs) for f in filters]))
    if total_filters > MAX_FILTERS:
        raise SearchError(
            f"Too many filters ({total_filters}); the maximum is {MAX_FILTERS}",
            sub_category="TOO_MANY_FILTERS",
        )
    query = body.get("query")
    if query is not None and (not isinstance(query, str) or len(query) > MAX_QUERY):
        raise SearchError(f"query must be a string of at most {MAX_QUERY} characters")
    sort = _parse_sort(body.get("sorts"), defs)
    after, limit = parse_paging(body)

    st = store.type
    q = _query_matcher(query, st, value_of) if query and query.strip() else None
    groups = [g for g in groups if g.filters] or [_Group([])]
    if len(groups) == 1:
        plan = groups[0].plan(store)
        checks = [_predicate(f, st, value_of) for f in plan.residual]
        if q is not None:
            checks.append(q)
        wanted = "mod" if sort and not sort[1] and sort[0] in modified_props(st) else None
        wanted = "id" if sort is None or sort == ("hs_object_id", False) else wanted
        if not checks and plan.order is not None and plan.order == wanted:
            # answered by the index alone, already in the requested order: no scan, no sort
            cands = plan.candidates
            page = list(itertools.islice(cands, after, after + limit))
            nxt = after + limit if after + limit < plan.size else None
            return SearchResult(plan.size, page, nxt)
        matched = [o for o in plan.candidates if all(c(o) for c in checks)]
        if plan.order is not None and plan.order == wanted:
            total = len(matched)
            nxt = after + limit if after + limit < total else None
            return SearchResult(total, matched[after : after + limit], nxt)
    else:
        seen: dict[int, HsObject] = {}
        for g in groups:
            plan = g.plan(store)
            checks = [_predicate(f, st, value_of) for f in plan.residual]
            for o in plan.candidates:
                if o.id not in seen and all(c(o) for c in checks) and (q is None or q(o)):
                    seen[o.id] = o
        matched = list(seen.values())

    _sort(matched, sort, st, defs, value_of)
    total = len(matched)
    page = matched[after : after + limit]
    nxt = after + limit if after + limit < total else None
    return SearchResult(total, page, nxt)


def _sort(
    matched: list[HsObject],
    sort: tuple[str, bool] | None,
    store_type: str,
    defs: Mapping[str, PropertyDef],
    value_of: ValueOf,
) -> None:
    """Sort in place; ties (and the default order) by id ascending; empty values last."""
    if sort is None:
        matched.sort(key=lambda o: o.id)
        return
    prop, desc = sort
    f = _Filter(prop, "EQ", _kind(prop, defs))
    keyed = [(f.key_of(o, store_type, value_of), o) for o in matched]
    with_value = [(k, o) for k, o in keyed if k is not None]
    empty = [o for k, o in keyed if k is None]
    with_value.sort(key=lambda ko: ko[1].id)
    with_value.sort(key=lambda ko: ko[0], reverse=desc)
    empty.sort(key=lambda o: o.id)
    matched[:] = [o for _, o in with_value] + empty
