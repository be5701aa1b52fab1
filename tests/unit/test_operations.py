"""Operations: what each compiles to, how each validates its parameters (errors name the
field), and how responses become result rows (label confidence: test_label_confidence.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchgate.core.errors import InvalidRequestError
from batchgate.core.operations import (
    OPERATIONS,
    Item,
    Operation,
    compile_request,
    interpret,
    parse_operation,
)

SENTIMENTS = ["positive", "negative", "mixed"]
FIELDS = [
    {
        "name": "industry",
        "type": "categorical",
        "description": "The company's industry.",
        "valid_values": ["saas", "retail"],
    },
    {"name": "revenue", "type": "numeric", "description": "Yearly revenue in USD."},
    {"name": "employees", "type": "integer", "description": "Head count.", "examples": [12, 250]},
    {"name": "b2b", "type": "boolean", "description": "Sells to businesses."},
    {"name": "pitch", "type": "text", "description": "A one-line pitch."},
    {"name": "products", "type": "list", "description": "Main products."},
]


def response(text: str, logprobs: list[dict[str, Any]] | None = None, finish_reason: str = "stop") -> dict[str, Any]:
    """A chat-completion body in OpenAI's shape."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish_reason,
        "logprobs": None if logprobs is None else {"content": logprobs},
    }
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "qwen2.5-1.5b", "choices": [choice]}


def invalid(kind: str, params: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        parse_operation(kind, params)
    return info.value


# --- compile ------------------------------------------------------------------------------


def test_label_compiles_to_a_strict_schema_and_asks_for_logprobs() -> None:
    op = parse_operation("label", {"categories": SENTIMENTS, "model": "qwen2.5-1.5b"})
    body = compile_request(op, Item("Great food, slow service."))
    assert body["model"] == "qwen2.5-1.5b"
    assert body["temperature"] == 0.0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert "max_tokens" not in body
    system, user = body["messages"]
    assert system["role"] == "system" and '"positive", "negative", "mixed"' in system["content"]
    assert '{"label": "<category>"}' in system["content"]
    assert user == {"role": "user", "content": "Great food, slow service."}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "label",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": SENTIMENTS}},
                "required": ["label"],
                "additionalProperties": False,
            },
        },
    }


def test_multi_label_schema_is_a_non_empty_unique_array_of_categories() -> None:
    op = parse_operation("label", {"categories": ["billing", "bug", "praise"], "multi_label": True, "max_tokens": 64})
    body = compile_request(op, Item("x"))
    assert body["model"] == "default" and body["max_tokens"] == 64
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["labels"]
    assert schema["properties"]["labels"] == {
        "type": "array",
        "items": {"type": "string", "enum": ["billing", "bug", "praise"]},
        "minItems": 1,
        "uniqueItems": True,
    }
    assert "at least one" in body["messages"][0]["content"]


def test_summarize_is_plain_text_by_default_and_json_on_request() -> None:
    op = parse_operation("summarize", {"summary_instructions": "One sentence.", "temperature": 0.3})
    body = compile_request(op, Item("A long text."))
    assert "response_format" not in body and "logprobs" not in body
    assert body["temperature"] == 0.3
    assert "One sentence." in body["messages"][0]["content"]
    assert body["messages"][1]["content"] == "A long text."

    as_json = parse_operation("summarize", {"response_format": {"type": "json_object"}})
    body = compile_request(as_json, Item("A long text."))
    assert body["response_format"] == {"type": "json_object"}
    assert "JSON" in body["messages"][0]["content"]  # OpenAI refuses json_object mode without it
    assert "response_format" not in parse_operation("summarize", {"response_format": {"type": "text"}}).params


def test_extract_enforces_a_given_schema_or_asks_for_a_json_object() -> None:
    schema = {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}
    op = parse_operation("extract", {"extraction_instructions": "Find the email address.", "schema": schema})
    body = compile_request(op, Item("mail me at a@b.c"))
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "extraction", "schema": schema, "strict": True},
    }
    assert "Find the email address." in body["messages"][0]["content"]
    assert '"email"' in body["messages"][0]["content"]  # the schema is in the prompt too

    free = parse_operation("extract", {"extraction_instructions": "Find names."})
    assert compile_request(free, Item("x"))["response_format"] == {"type": "json_object"}


def test_enrich_schema_types_every_field_and_requires_all() -> None:
    op = parse_operation("enrich", {"fields": FIELDS})
    body = compile_request(op, Item("Acme Corp makes anvils."))
    schema = body["response_format"]["json_schema"]["schema"]
    assert body["response_format"]["json_schema"]["name"] == "enrichment"
    assert schema["required"] == [f["name"] for f in FIELDS]
    assert schema["additionalProperties"] is False
    types = {name: {k: v for k, v in prop.items() if k != "description"} for name, prop in schema["properties"].items()}
    assert types == {
        "industry": {"type": "string", "enum": ["saas", "retail"]},
        "revenue": {"type": "number"},
        "employees": {"type": "integer"},
        "b2b": {"type": "boolean"},
        "pitch": {"type": "string"},
        "products": {"type": "array", "items": {"type": "string"}},
    }
    system = body["messages"][0]["content"]
    assert '- industry (one of "saas", "retail"): The company\'s industry.' in system
    assert "- employees (an integer): Head count. Examples: 12, 250." in system
    assert body["messages"][1]["content"] == "Acme Corp makes anvils."


def test_enrich_runtime_categories_override_valid_values() -> None:
    op = parse_operation("enrich", {"fields": FIELDS, "runtime_categories": {"industry": ["fintech", "health"]}})
    schema = compile_request(op, Item("x"))["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["industry"]["enum"] == ["fintech", "health"]
    without_values = [{"name": "tier", "type": "categorical", "description": "Tier."}]
    op = parse_operation("enrich", {"fields": without_values, "runtime_categories": {"tier": ["gold"]}})
    assert compile_request(op, Item("x"))["response_format"]["json_schema"]["schema"]["properties"]["tier"]["enum"] == [
        "gold"
    ]


def test_enrich_include_context_puts_metadata_into_the_prompt() -> None:
    item = Item("Acme Corp", {"country": "DE", "founded": 1990})
    plain = compile_request(parse_operation("enrich", {"fields": FIELDS}), item)
    assert plain["messages"][1]["content"] == "Acme Corp"
    with_context = compile_request(parse_operation("enrich", {"fields": FIELDS, "include_context": True}), item)
    assert with_context["messages"][1]["content"] == (
        'Acme Corp\n\nContext (the record\'s metadata, as JSON):\n{"country":"DE","founded":1990}'
    )


def test_run_uses_the_callers_prompts_and_response_format() -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": {"type": "object", "properties": {"reply": {"type": "string"}}}},
    }
    op = parse_operation(
        "run",
        {
            "system_prompt": "You answer support tickets.",
            "user_prompt_template": "Customer {name} ({tier}) wrote: {content}",
            "response_format": response_format,
            "temperature": 1,
        },
    )
    body = compile_request(op, Item("It broke.", {"name": "Ann", "tier": "gold"}))
    assert body["messages"] == [
        {"role": "system", "content": "You answer support tickets."},
        {"role": "user", "content": "Customer Ann (gold) wrote: It broke."},
    ]
    assert body["response_format"] == response_format
    assert body["temperature"] == 1.0

    bare = compile_request(parse_operation("run", {"user_prompt_template": "{content}"}), Item("hi"))
    assert bare["messages"] == [{"role": "user", "content": "hi"}]  # no system message unless given
    assert "response_format" not in bare


def test_overrides_replace_the_generated_prompts() -> None:
    op = parse_operation(
        "label",
        {"categories": SENTIMENTS, "system_prompt": "Be terse.", "user_prompt_template": "Review: {content}"},
    )
    body = compile_request(op, Item("ok"))
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Review: ok"},
    ]
    assert body["response_format"]["json_schema"]["name"] == "label"  # the schema still holds


# --- templates ----------------------------------------------------------------------------


def test_template_renders_metadata_as_json_and_keeps_escaped_braces() -> None:
    op = parse_operation("run", {"user_prompt_template": "{{literal}} {content} {tags} {score} {ok} {missing_ok}"})
    body = compile_request(op, Item("text", {"tags": ["a", "b"], "score": 1.5, "ok": True, "missing_ok": None}))
    assert body["messages"][0]["content"] == '{literal} text ["a","b"] 1.5 true null'


def test_a_placeholder_the_item_lacks_is_an_error_naming_it() -> None:
    op = parse_operation("run", {"user_prompt_template": "{content} from {company}"})
    assert compile_request(op, Item("x", {"company": "Acme"}))["messages"][0]["content"] == "x from Acme"
    with pytest.raises(InvalidRequestError) as info:
        compile_request(op, Item("x", {"other": 1}))
    assert info.value.param == "user_prompt_template"
    assert "{company}" in info.value.message


@pytest.mark.parametrize("template", ["{}", "{0}", "{content.upper}", "{meta[0]}", "{content!r}", "{content:>9}", "{"])
def test_placeholders_that_cannot_name_an_item_field_are_refused_up_front(template: str) -> None:
    error = invalid("run", {"user_prompt_template": f"hello {template}"})
    assert error.param == "user_prompt_template"


# --- validation ---------------------------------------------------------------------------

CATEGORICAL = {"name": "tier", "type": "categorical", "description": "Tier.", "valid_values": ["gold"]}


@pytest.mark.parametrize(
    ("kind", "params", "param"),
    [
        ("", {}, "operation"),
        ("9lives", {"user_prompt_template": "{content}"}, "operation"),
        ("feedback_analysis", {}, "user_prompt_template"),
        ("feedback_analysis", {"user_prompt_template": "{content}", "categories": ["a"]}, "categories"),
        ("classify", {}, "categories"),
        ("label", {}, "categories"),
        ("label", {"categories": []}, "categories"),
        ("label", {"categories": "a,b"}, "categories"),
        ("label", {"categories": ["a", 2]}, "categories"),
        ("label", {"categories": ["a", " "]}, "categories"),
        ("label", {"categories": ["a", "a"]}, "categories"),
        ("label", {"categories": ["a"], "multi_label": "yes"}, "multi_label"),
        ("label", {"categories": ["a"], "temperature": 2.5}, "temperature"),
        ("label", {"categories": ["a"], "temperature": -0.1}, "temperature"),
        ("label", {"categories": ["a"], "temperature": "0"}, "temperature"),
        ("label", {"categories": ["a"], "temperature": True}, "temperature"),
        ("label", {"categories": ["a"], "max_tokens": 0}, "max_tokens"),
        ("label", {"categories": ["a"], "max_tokens": 1.5}, "max_tokens"),
        ("label", {"categories": ["a"], "model": ""}, "model"),
        ("label", {"categories": ["a"], "system_prompt": ""}, "system_prompt"),
        ("label", {"categories": ["a"], "colour": "red"}, "colour"),
        ("label", {"categories": ["a"], "response_format": {"type": "json_object"}}, "response_format"),
        ("summarize", {"summary_instructions": 3}, "summary_instructions"),
        ("summarize", {"response_format": {"type": "json_schema"}}, "response_format.type"),
        ("summarize", {"response_format": "json"}, "response_format.type"),
        ("extract", {}, "extraction_instructions"),
        ("extract", {"extraction_instructions": "  "}, "extraction_instructions"),
        ("extract", {"extraction_instructions": "x", "schema": []}, "schema"),
        ("extract", {"extraction_instructions": "x", "schema": {"type": "array"}}, "schema.type"),
        (
            "extract",
            {"extraction_instructions": "x", "schema": {"type": "object", "properties": {"a": {"type": "str"}}}},
            "schema.properties.a.type",
        ),
        ("extract", {"extraction_instructions": "x", "schema": {"type": "object", "required": "a"}}, "schema.required"),
        ("enrich", {}, "fields"),
        ("enrich", {"fields": []}, "fields"),
        ("enrich", {"fields": ["industry"]}, "fields[0]"),
        ("enrich", {"fields": [CATEGORICAL, {"name": "x", "type": "date", "description": "d"}]}, "fields[1].type"),
        ("enrich", {"fields": [{"name": "my field", "type": "text", "description": "d"}]}, "fields[0].name"),
        ("enrich", {"fields": [CATEGORICAL, CATEGORICAL]}, "fields[1].name"),
        ("enrich", {"fields": [{"name": "x", "type": "text"}]}, "fields[0].description"),
        ("enrich", {"fields": [{"name": "x", "type": "text", "description": "d", "unit": "m"}]}, "fields[0].unit"),
        ("enrich", {"fields": [{"name": "x", "type": "categorical", "description": "d"}]}, "fields[0].valid_values"),
        (
            "enrich",
            {"fields": [{"name": "x", "type": "categorical", "description": "d", "valid_values": []}]},
            "fields[0].valid_values",
        ),
        (
            "enrich",
            {"fields": [{"name": "x", "type": "text", "description": "d", "valid_values": ["a"]}]},
            "fields[0].valid_values",
        ),
        (
            "enrich",
            {"fields": [{"name": "x", "type": "text", "description": "d", "examples": "a"}]},
            "fields[0].examples",
        ),
        ("enrich", {"fields": [CATEGORICAL], "runtime_categories": {"size": ["s"]}}, "runtime_categories.size"),
        ("enrich", {"fields": [CATEGORICAL], "runtime_categories": {"tier": []}}, "runtime_categories.tier"),
        ("enrich", {"fields": [CATEGORICAL], "runtime_categories": ["tier"]}, "runtime_categories"),
        ("enrich", {"fields": [CATEGORICAL], "include_context": 1}, "include_context"),
        ("run", {}, "user_prompt_template"),
        ("run", {"user_prompt_template": "{content}", "response_format": {"type": "xml"}}, "response_format.type"),
        (
            "run",
            {"user_prompt_template": "{content}", "response_format": {"type": "json_schema"}},
            "response_format.json_schema",
        ),
        (
            "run",
            {
                "user_prompt_template": "{content}",
                "response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}},
            },
            "response_format.json_schema.name",
        ),
        (
            "run",
            {
                "user_prompt_template": "{content}",
                "response_format": {"type": "json_schema", "json_schema": {"name": "ab", "schema": "object"}},
            },
            "response_format.json_schema.schema",
        ),
    ],
)
def test_each_invalid_parameter_is_named(kind: str, params: dict[str, Any], param: str) -> None:
    assert invalid(kind, params).param == param


def test_defaults_are_filled_in() -> None:
    op = parse_operation("label", {"categories": ["a"]}, default_model="qwen2.5-0.5b")
    assert op == Operation("label", "qwen2.5-0.5b", {"temperature": 0.0, "categories": ["a"], "multi_label": False})
    assert op.name == "label"


def test_classify_is_label_under_its_canonical_name() -> None:
    assert parse_operation("classify", {"categories": ["a"]}) == parse_operation("label", {"categories": ["a"]})


def test_any_other_name_is_a_custom_run_that_keeps_its_name() -> None:
    params = {"system_prompt": "You analyse feedback.", "user_prompt_template": "{content}"}
    op = parse_operation("feedback_analysis", {**params, "response_format": {"type": "json_object"}})
    assert (op.kind, op.name) == ("run", "feedback_analysis")
    assert compile_request(op, Item("x"))["messages"][0]["content"] == "You analyse feedback."
    again = Operation.from_json(orjson.loads(orjson.dumps(op.to_json())))
    assert again == op and again.name == "feedback_analysis"
    message = invalid("lable", {"categories": ["a"]}).message
    assert "'lable' (a custom run)" in message


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("label", {"categories": SENTIMENTS, "multi_label": True, "max_tokens": 20, "model": "m"}),
        ("summarize", {"summary_instructions": "Short.", "response_format": {"type": "json_object"}}),
        ("extract", {"extraction_instructions": "x", "schema": {"type": "object"}, "system_prompt": "S"}),
        ("enrich", {"fields": FIELDS, "runtime_categories": {"industry": ["a"]}, "include_context": True}),
        ("run", {"user_prompt_template": "{content}", "temperature": 0.7}),
    ],
)
def test_to_json_from_json_roundtrip(kind: str, params: dict[str, Any]) -> None:
    op = parse_operation(kind, params)
    stored = orjson.loads(orjson.dumps(op.to_json()))
    again = Operation.from_json(stored)
    assert again == op
    assert compile_request(again, Item("x")) == compile_request(op, Item("x"))


def test_every_operation_parses() -> None:
    minimal = {
        "label": {"categories": ["a"]},
        "summarize": {},
        "extract": {"extraction_instructions": "x"},
        "enrich": {"fields": [CATEGORICAL]},
        "run": {"user_prompt_template": "{content}"},
    }
    assert tuple(minimal) == OPERATIONS
    for kind in OPERATIONS:
        assert parse_operation(kind, minimal[kind]).kind == kind


# --- interpret ----------------------------------------------------------------------------

LABEL = parse_operation("label", {"categories": SENTIMENTS})


def test_label_result_keeps_the_raw_answer_and_the_model() -> None:
    # the confidence itself is tested in test_label_confidence.py
    outcome = interpret(LABEL, 200, response('{"label":"positive"}'), None)
    assert outcome.status == "succeeded" and outcome.error is None
    assert outcome.result == {"label": "positive", "confidence": None}
    assert outcome.raw == '{"label":"positive"}' and outcome.model == "qwen2.5-1.5b"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"label": "neutral"}', "$.label"),
        ('{"label": "positive", "why": "nice"}', "unexpected field 'why'"),
        ('{"sentiment": "positive"}', "missing the field 'label'"),
        ('["positive"]', "$ should be object"),
        ("positive", "not valid JSON"),
    ],
)
def test_a_wrong_answer_is_a_failed_row_with_the_raw_text(text: str, fragment: str) -> None:
    outcome = interpret(LABEL, 200, response(text), None)
    assert outcome.status == "failed" and outcome.result is None
    assert outcome.raw == text and outcome.model == "qwen2.5-1.5b"
    assert outcome.error is not None and fragment in outcome.error


def test_an_answer_cut_off_at_max_tokens_says_so() -> None:
    outcome = interpret(LABEL, 200, response('{"label": "posi', finish_reason="length"), None)
    assert outcome.status == "failed" and "cut off at max_tokens" in (outcome.error or "")


def test_upstream_errors_are_failed_rows() -> None:
    body = {"error": {"message": "model overloaded", "type": "server_error", "param": None, "code": None}}
    outcome = interpret(LABEL, 503, body, None)
    assert (outcome.status, outcome.result, outcome.error, outcome.raw) == ("failed", None, "model overloaded", None)
    assert interpret(LABEL, 500, {}, None).error == "the backend answered HTTP 500"
    lost = interpret(LABEL, None, None, {"code": "timeout", "message": "the upstream timed out"})
    assert (lost.status, lost.error, lost.model) == ("failed", "the upstream timed out", None)


def test_a_refusal_is_a_failed_row() -> None:
    body = response("")
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    outcome = interpret(LABEL, 200, body, None)
    assert outcome.status == "failed" and outcome.raw == "I can't help with that."


def test_enrich_returns_exactly_the_fields_typed() -> None:
    op = parse_operation("enrich", {"fields": FIELDS})
    answer = {
        "pitch": "Anvils for everyone.",
        "industry": "retail",
        "revenue": 1.5e6,
        "employees": 40,
        "b2b": False,
        "products": ["anvil", "rocket skates"],
    }
    outcome = interpret(op, 200, response(orjson.dumps(answer).decode()), None)
    assert outcome.status == "succeeded"
    assert list(outcome.result) == [f["name"] for f in FIELDS]  # in the definition's order
    assert outcome.result == answer


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"employees": "40"}, "$.employees should be integer, not string"),
        ({"employees": 40.5}, "$.employees should be integer, not number"),
        ({"revenue": True}, "$.revenue should be number, not boolean"),
        ({"b2b": 0}, "$.b2b should be boolean, not integer"),
        ({"products": "anvil"}, "$.products should be array"),
        ({"products": ["anvil", 3]}, "$.products[1] should be string"),
        ({"industry": "mining"}, "$.industry"),
        ({"extra": 1}, "unexpected field 'extra'"),
    ],
)
def test_enrich_answers_of_the_wrong_type_fail(change: dict[str, Any], fragment: str) -> None:
    op = parse_operation("enrich", {"fields": FIELDS})
    answer = {"industry": "saas", "revenue": 1, "employees": 4, "b2b": True, "pitch": "p", "products": []} | change
    outcome = interpret(op, 200, response(orjson.dumps(answer).decode()), None)
    assert outcome.status == "failed"
    assert outcome.error is not None and fragment in outcome.error


def test_summarize_results() -> None:
    text = interpret(parse_operation("summarize", {}), 200, response("  A short summary.\n"), None)
    assert (text.status, text.result, text.raw) == ("succeeded", "A short summary.", "  A short summary.\n")
    as_json = parse_operation("summarize", {"response_format": {"type": "json_object"}})
    assert interpret(as_json, 200, response('{"summary": "s"}'), None).result == {"summary": "s"}
    assert interpret(as_json, 200, response("s"), None).status == "failed"


def test_extract_results_are_checked_against_the_given_schema() -> None:
    schema = {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}
    op = parse_operation("extract", {"extraction_instructions": "x", "schema": schema})
    assert interpret(op, 200, response('{"email": "a@b.c"}'), None).result == {"email": "a@b.c"}
    assert interpret(op, 200, response('{"email": null}'), None).status == "failed"
    free = parse_operation("extract", {"extraction_instructions": "x"})
    assert interpret(free, 200, response('{"anything": [1]}'), None).result == {"anything": [1]}
    assert interpret(free, 200, response("[1]"), None).status == "failed"


def test_run_results_follow_the_response_format() -> None:
    text = parse_operation("run", {"user_prompt_template": "{content}"})
    assert interpret(text, 200, response("hello"), None).result == "hello"
    schema = {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, 2]}}, "required": ["n"]}
    typed = parse_operation(
        "run",
        {
            "user_prompt_template": "{content}",
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        },
    )
    assert interpret(typed, 200, response('{"n": 2}'), None).result == {"n": 2}
    assert interpret(typed, 200, response('{"n": 3}'), None).status == "failed"
    assert interpret(typed, 200, response('{"n": true}'), None).status == "failed"
