"""Strict JSON for bodies from outside (webhooks): what a database can store, or a clear no.

Both webhook parsers read their bodies with :func:`load_json`: UTF-8 only, no NaN or
Infinity, no number that overflows, no nesting deeper than :data:`MAX_DEPTH`, no NUL character
or unpaired surrogate in any string. Anything else raises :class:`PayloadError` (a 400).
"""

from __future__ import annotations

import json
import math
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


def _check_tree(root: Any) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and text that no database can store."""
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                _check_text(key)
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)


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
    _check_tree(data)
    return data
