"""How deep a JSON request body may nest.

orjson reads JSON nested up to 1,024 levels but writes at most 254, and the gateway
writes what it is given: a schema into a stored operation, a body into a batch line or
an upstream request, all a few levels deeper than they came. A body read whole but
unwritable later was a 500 (issue 11 #7: an extract `schema` nested 400 levels), so a
body may nest MAX_DEPTH levels, far more than any real schema or message needs and far
enough under orjson's limit for every wrapping the gateway adds.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchgate.core.errors import InvalidRequestError

MAX_DEPTH = 128
_ORJSON_DEPTH = 254  # the deepest nesting of arrays and objects orjson.dumps writes


def check_nesting(body: Any) -> None:
    """Refuse a body nested deeper than MAX_DEPTH with a 400 naming its top-level field."""
    # Writing the body under enough enclosing arrays to reach orjson's limit exactly when
    # it is too deep: one pass in Rust, where walking a large body in Python would cost
    # more than parsing it. Only a refused body is walked, to name the field.
    enclosed = body
    for _ in range(_ORJSON_DEPTH - MAX_DEPTH):
        enclosed = [enclosed]
    try:
        orjson.dumps(enclosed)
    except TypeError:
        param = _too_deep(body)
        raise InvalidRequestError(
            f"'{param}' is nested more than {MAX_DEPTH} levels deep.", param=param, code="invalid_value"
        ) from None


def _too_deep(body: Any) -> str:
    """The top-level field (or array index) of the first value past MAX_DEPTH."""
    stack: list[tuple[Any, int, str]] = [(body, 1, "body")]
    while stack:
        value, depth, top = stack.pop()
        if isinstance(value, dict):
            children: Any = ((k, v) for k, v in value.items())
        elif isinstance(value, list):
            children = ((f"[{i}]", v) for i, v in enumerate(value))
        else:
            continue
        if depth > MAX_DEPTH:
            return top
        for key, child in children:
            stack.append((child, depth + 1, key if depth == 1 else top))
    return "body"
