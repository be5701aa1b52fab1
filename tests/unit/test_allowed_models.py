"""Validation refuses batch lines whose model the batch's key may not use, naming the
line, on the fast path and the slow one alike."""

from __future__ import annotations

import io

from support import chat_line, jsonl

from batchgate.core.validation import ValidationLimits, validate_input


def errors(lines: list[dict], allowed: frozenset[str] | None) -> list[tuple[str, int | None, str | None]]:
    limits = ValidationLimits(allowed_models=allowed)
    result = validate_input(io.BytesIO(jsonl(lines)), "/v1/chat/completions", limits, lambda _: None)
    return [(e.code, e.line, e.param) for e in result.errors]


def test_a_model_the_key_may_not_use_fails_its_line() -> None:
    lines = [chat_line("a", model="m1"), chat_line("b", model="m2"), chat_line("c", model="m1")]
    assert errors(lines, None) == []
    assert errors(lines, frozenset({"m1", "m2"})) == []
    assert errors(lines, frozenset({"m1"})) == [("model_not_allowed", 2, "body.model")]
    assert errors(lines, frozenset()) == [("model_not_allowed", n, "body.model") for n in (1, 2, 3)]
