"""Strict JSON for bodies from outside (webhooks): what a database can store, or a clear no.

Both webhook parsers read their bodies with :func:`load_json`: UTF-8 only, no NaN or
Infinity, no number that overflows, no nesting deeper than :data:`MAX_DEPTH`, no NUL character
or unpaired surrogate in any string. Anything else raises :class:`PayloadError` (a 400).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from connector.errors import ConnectorError

MAX_DEPTH = 32


class PayloadError(ConnectorError, ValueError):
    """A webhook body that is malformed: the whole request is refused (400), nothing stored."""


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise PayloadError("a string contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError("a string contains an unpaired surrogate") from None


def _check_tree(root: Any, *, texts: bool) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and (with ``texts``) text that no database
    can store."""
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if texts:
                for key in node:
                    _check_text(key)
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            if texts and isinstance(node, str):
                _check_text(node)
            continue
        for child in children:
            # plain values need no visit unless their text counts (the hot path skips them)
            if type(child) in _CONTAINERS or (texts and isinstance(child, str)):
                stack.append((child, depth + 1))


_CONTAINERS = (dict, list)


def load_json(body: bytes) -> Any:
    """Parse strict UTF-8 JSON: no NaN/Infinity, no overflowing numbers, no absurd nesting."""
    try:
        data = json.loads(
            body.decode("utf-8"), parse_constant=_bad_constant, parse_float=_finite_float
        )
    except UnicodeDecodeError:
        raise PayloadError("the body is not UTF-8") from None
    except RecursionError:
        raise PayloadError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise PayloadError(f"the body is not valid JSON ({type(exc).__name__})") from None
    # A NUL or a lone surrogate can only come from a \u escape: valid UTF-8 (checked by the
    # decode above) holds neither, so without one the strings need no look (the hot path).
    _check_tree(data, texts=b"\\u" in body)
    return data
