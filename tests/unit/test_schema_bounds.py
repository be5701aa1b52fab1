"""Integer bounds in a json_schema response_format: enforced by enumerating the values
(the grammar converter ignores them), or refused with a 400 naming the place."""

from __future__ import annotations

import pytest

from batchgate.core.errors import InvalidRequestError
from batchgate.engines.local.grammar import with_enumerated_ranges


def test_bounded_integers_become_enums_everywhere_in_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "stars": {"type": "integer", "minimum": 1, "maximum": 5, "description": "rating"},
            "minimum": {"type": "string"},  # a property named like a keyword stays a property
            "scores": {"type": "array", "items": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}},
        },
        "$defs": {"level": {"type": "integer", "minimum": -1, "maximum": 1}},
        "enum": None,
    }
    out = with_enumerated_ranges(schema, "s")
    assert out["properties"]["stars"] == {"description": "rating", "enum": [1, 2, 3, 4, 5]}
    assert out["properties"]["minimum"] == {"type": "string"}
    assert out["properties"]["scores"]["items"] == {"enum": [1, 2]}
    assert out["$defs"]["level"] == {"enum": [-1, 0, 1]}


@pytest.mark.parametrize(
    "field",
    [
        {"type": "integer", "minimum": 0},  # one-sided
        {"type": "integer", "minimum": 0, "maximum": 100_000},  # too many values
        {"type": "number", "minimum": 0, "maximum": 1},  # not an integer
    ],
)
def test_bounds_that_cannot_be_enforced_are_refused_naming_the_field(field: dict) -> None:
    with pytest.raises(InvalidRequestError, match=r"Unsupported bounds at s\.properties\.x"):
        with_enumerated_ranges({"type": "object", "properties": {"x": field}}, "s")
