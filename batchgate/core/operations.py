"""Operations (label, summarize, extract, enrich, run): one instruction applied to many items.

Compiling an operation for one item gives an ordinary `/v1/chat/completions` body, so
operation batches run through the same batch core as OpenAI batch files; interpreting that
item's response gives its result row. Each operation is a small class in `_SPECS` that owns
its parameters, prompts, JSON Schema and result shape, so no code branches on the kind.

Operations that answer in JSON enforce their schema through structured output *and* check
the parsed answer against it here: not every backend enforces schemas, and an output cut
off at `max_tokens` parses as nothing. An answer that does not match is a failed row that
keeps the raw text, so callers can send it to a review queue instead of trusting it.

Label confidence is the model's probability of the chosen label renormalised over the allowed
categories, read from the response's token logprobs (`core/label_confidence.py` documents the
method), never a number the model writes into its answer.

Pure domain logic: no HTTP, no storage, no backend calls.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from batchgate.core.errors import InvalidRequestError
from batchgate.core.label_confidence import LABEL_TOP_LOGPROBS, label_confidence
from batchgate.protocol.operations import OPERATIONS, canonical_operation

FIELD_TYPES = ("categorical", "numeric", "integer", "boolean", "text", "list")

_COMMON_KEYS = frozenset({"model", "temperature", "max_tokens", "system_prompt", "user_prompt_template"})
_FIELD_KEYS = frozenset({"name", "type", "description", "valid_values", "examples"})
_JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RUN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True, slots=True)
class Item:
    """One record: the text the operation works on, and metadata that templates
    (`{field}` placeholders) and enrich's `include_context` can put into the prompt."""

    content: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Operation:
    """A validated operation, stored with its batch. Build it with `parse_operation` or
    `from_json`: `params` must already be normalised. `name` is what rows and the batch
    report: the kind, or a custom run's own name (`feedback_analysis`)."""

    kind: str
    model: str
    params: dict[str, Any]
    name: str = ""
    # prompts and schema are the same for every item: built once, not once per item
    _spec: _Spec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_spec", _spec_class(self.kind)(self.params))
        if not self.name:
            object.__setattr__(self, "name", self.kind)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "model": self.model, "params": self.params}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        """Validates again: a stored operation may predate a change of the rules."""
        name = data.get("name") or data.get("kind", "")
        return parse_operation(name, {**data.get("params", {}), "model": data.get("model")})


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result row of one item."""

    status: str  # "succeeded" | "failed"
    result: Any  # dict, or str for plain-text answers; None on failure
    error: str | None
    raw: str | None  # the model's text, when there was one
    model: str | None


def parse_operation(name: str, params: dict[str, Any], default_model: str = "default") -> Operation:
    """Validate an operation's parameters (the request body minus items/file_id) into an
    `Operation`. Errors are `InvalidRequestError`s whose `param` names the offending field.
    Whether a backend serves the model is the router's question, not checked here.

    `name` is an operation (label, summarize, extract, enrich, run), an alias of one
    (classify for label; the operation keeps its canonical name), or any other name: a
    custom run of that name, which takes run's parameters and reports its own name."""
    kind = canonical_operation(name) if isinstance(name, str) else ""
    if kind not in OPERATIONS:
        if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
            raise _invalid(
                "operation",
                f"'operation' must be one of {', '.join(OPERATIONS)}, or a custom run's name "
                "(a letter, then up to 63 letters, digits or _ . : -).",
            )
        kind = "run"
    spec = _spec_class(kind)
    custom = kind == "run" and name != "run"
    what = f"{name!r} (a custom run)" if custom else f"the {kind} operation"
    raw = dict(params)
    for key in raw:
        if key not in _COMMON_KEYS and key not in spec.keys:
            known = ", ".join(sorted(_COMMON_KEYS | spec.keys))
            raise _invalid(key, f"Unknown parameter {key!r} for {what} (known: {known}).")
    model = raw.get("model")
    if model is None:
        model = default_model
    if not isinstance(model, str) or not model:
        raise _invalid("model", "'model' must be a non-empty string.")
    if kind == "run" and raw.get("user_prompt_template") is None:
        raise _invalid(
            "user_prompt_template",
            f"{what[0].upper()}{what[1:]} needs a 'user_prompt_template' (built-in operations: "
            f"{', '.join(OPERATIONS)}; any other name is a custom run).",
        )
    return Operation(kind, model, {**_common_params(raw), **spec.normalise(raw)}, name if custom else kind)


def compile_request(op: Operation, item: Item) -> dict[str, Any]:
    """The `/v1/chat/completions` body for one item. Raises `InvalidRequestError`
    (param "user_prompt_template") when the template names a field the item lacks.

    `response_format` is shared by every item's body (one schema per operation, not one
    copy per item of a million-item batch): serialise bodies, do not mutate them."""
    spec = op._spec
    body: dict[str, Any] = {
        "model": op.model,
        "messages": spec.messages(item),
        "temperature": op.params["temperature"],
    }
    if "max_tokens" in op.params:
        body["max_tokens"] = op.params["max_tokens"]
    if spec.response_format is not None:
        body["response_format"] = spec.response_format
    if spec.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = LABEL_TOP_LOGPROBS  # the alternatives the confidence compares
    return body


def interpret(
    op: Operation, status_code: int | None, body: dict[str, Any] | None, error: dict[str, Any] | None
) -> Outcome:
    """The result row of one item, from its chat-completion response (status_code + body)
    or, when there was no response, its error (`{"code", "message"}`)."""
    if status_code is None or body is None:
        message = (error or {}).get("message") or "the request produced no response"
        return Outcome("failed", None, str(message), None, None)
    if status_code != 200:
        upstream = body.get("error")
        message = upstream.get("message") if isinstance(upstream, dict) else None
        return Outcome("failed", None, str(message or f"the backend answered HTTP {status_code}"), None, None)
    model = body.get("model") or op.model
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    message = choice.get("message") if choice is not None else None
    text = message.get("content") if isinstance(message, dict) else None
    if choice is None or not isinstance(text, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        if isinstance(refusal, str):
            return Outcome("failed", None, f"the model refused: {refusal}", refusal, model)
        return Outcome("failed", None, "the response holds no message content", None, model)
    try:
        result = op._spec.result(text, choice)
    except _Mismatch as exc:
        return Outcome("failed", None, exc.reason, text, model)
    return Outcome("succeeded", result, None, text, model)


# --- operations ---------------------------------------------------------------------------


def result_fields(op: Operation) -> list[str]:
    """The fields of the operation's results, for one column each in tables (CSV):
    the schema's properties, or ["result"] when results have no schema (text, free JSON)."""
    spec = op._spec
    if isinstance(spec, _Label):
        return [spec.key, "confidence"]
    properties = (spec.schema or {}).get("properties")
    return list(properties) if isinstance(properties, dict) else ["result"]


class _Mismatch(Exception):
    """The model's answer is not a result of the operation."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Spec:
    """One operation kind: its parameters, prompts, schema and result.

    `normalise` validates the kind's own parameters; an instance holds normalised
    parameters and what they compile to (system prompt, schema, response_format)."""

    kind: ClassVar[str]
    keys: ClassVar[frozenset[str]] = frozenset()
    schema_name: ClassVar[str] = "result"
    logprobs: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any]):
        self.params = params
        template = params.get("user_prompt_template")
        self.template = _parse_template(template) if template is not None else None
        self.schema = self.build_schema()
        self.response_format = self.build_response_format()
        self.system: str | None = params.get("system_prompt") or self.default_system_prompt()

    @classmethod
    def normalise(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return {}

    def build_schema(self) -> dict[str, Any] | None:
        return None

    def build_response_format(self) -> dict[str, Any] | None:
        if self.schema is None:
            return None
        return {"type": "json_schema", "json_schema": {"name": self.schema_name, "schema": self.schema, "strict": True}}

    def default_system_prompt(self) -> str | None:
        return None

    def messages(self, item: Item) -> list[dict[str, str]]:
        user = _render(self.template, item) if self.template is not None else item.content
        system = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*system, {"role": "user", "content": user}]

    def result(self, text: str, choice: dict[str, Any]) -> Any:
        raise NotImplementedError


class _Label(_Spec):
    kind = "label"
    keys = frozenset({"categories", "multi_label"})
    schema_name = "label"
    logprobs = True

    @classmethod
    def normalise(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return {
            "categories": _distinct_strings(raw.get("categories"), "categories"),
            "multi_label": _bool(raw.get("multi_label", False), "multi_label"),
        }

    @property
    def key(self) -> str:
        return "labels" if self.params["multi_label"] else "label"

    def build_schema(self) -> dict[str, Any]:
        value: dict[str, Any] = {"type": "string", "enum": self.params["categories"]}
        if self.params["multi_label"]:
            value = {"type": "array", "items": value, "minItems": 1, "uniqueItems": True}
        return _object_schema({self.key: value})

    def default_system_prompt(self) -> str:
        listed = ", ".join(_json(c) for c in self.params["categories"])
        if self.params["multi_label"]:
            return (
                "You are a careful text classifier. Read the text the user sends and choose every category "
                f"that applies to it (at least one) from this list: {listed}.\n"
                'Answer with a JSON object of the form {"labels": ["<category>", ...]}, writing each category '
                "exactly as listed and at most once."
            )
        return (
            "You are a careful text classifier. Read the text the user sends and choose the one category "
            f"that fits it best from this list: {listed}.\n"
            'Answer with a JSON object of the form {"label": "<category>"}, writing the category exactly as listed.'
        )

    def result(self, text: str, choice: dict[str, Any]) -> dict[str, Any]:
        answer = _parse_json(text, choice)
        labels = answer.get(self.key) if isinstance(answer, dict) else None
        if isinstance(labels, list) and all(isinstance(label, str) for label in labels):
            # backends that ignore uniqueItems (llama.cpp's grammar converter) may repeat a
            # label: the answer is the same set, not a wrong one
            answer[self.key] = labels = list(dict.fromkeys(labels))
        _validate(answer, self.schema, self.kind)
        chosen: list[str] = labels if isinstance(labels, list) else [answer[self.key]]
        confidence = label_confidence(choice.get("logprobs"), self.key, self.params["categories"], chosen)
        return {self.key: answer[self.key], "confidence": confidence}


class _Summarize(_Spec):
    kind = "summarize"
    keys = frozenset({"summary_instructions", "response_format"})

    @classmethod
    def normalise(cls, raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if raw.get("summary_instructions") is not None:
            out["summary_instructions"] = _text_param(raw["summary_instructions"], "summary_instructions")
        response_format = _response_format(raw.get("response_format"), ("text", "json_object"))
        if response_format is not None:
            out["response_format"] = response_format
        return out

    def build_response_format(self) -> dict[str, Any] | None:
        return self.params.get("response_format")

    def default_system_prompt(self) -> str:
        lines = [
            "You write summaries. Summarise the text the user sends: be concise and faithful, keep its key facts, "
            "and add nothing it does not say."
        ]
        if "summary_instructions" in self.params:
            lines.append(self.params["summary_instructions"])
        if self.response_format is not None:
            lines.append("Answer with a JSON object.")
        else:
            lines.append("Answer with the summary only, without a preamble.")
        return "\n".join(lines)

    def result(self, text: str, choice: dict[str, Any]) -> Any:
        if self.response_format is None:
            return text.strip()
        return _json_object(text, choice, self.kind)


class _Extract(_Spec):
    kind = "extract"
    keys = frozenset({"extraction_instructions", "schema"})
    schema_name = "extraction"

    @classmethod
    def normalise(cls, raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "extraction_instructions": _text_param(raw.get("extraction_instructions"), "extraction_instructions")
        }
        if raw.get("schema") is not None:
            schema = raw["schema"]
            _check_schema(schema, "schema")
            if schema.get("type") != "object":
                raise _invalid("schema.type", "'schema.type' must be 'object': extract returns one object per item.")
            out["schema"] = schema
        return out

    def build_schema(self) -> dict[str, Any] | None:
        return self.params.get("schema")

    def build_response_format(self) -> dict[str, Any] | None:
        return super().build_response_format() or {"type": "json_object"}

    def default_system_prompt(self) -> str:
        lines = ["You extract structured data from text.", self.params["extraction_instructions"]]
        if self.schema is not None:
            lines.append(f"Answer with a single JSON object that matches this JSON Schema:\n{_json(self.schema)}")
        else:
            lines.append("Answer with a single JSON object. Use null for anything the text does not say.")
        return "\n".join(lines)

    def result(self, text: str, choice: dict[str, Any]) -> dict[str, Any]:
        answer = _json_object(text, choice, self.kind)
        if self.schema is not None:
            _validate(answer, self.schema, self.kind)
        return answer


_FIELD_SHAPES = {
    "numeric": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "text": "a string",
    "list": "a list of strings",
}


class _Enrich(_Spec):
    kind = "enrich"
    keys = frozenset({"fields", "runtime_categories", "include_context"})
    schema_name = "enrichment"

    @classmethod
    def normalise(cls, raw: dict[str, Any]) -> dict[str, Any]:
        fields = raw.get("fields")
        if not isinstance(fields, list) or not fields:
            raise _invalid("fields", "'fields' must be a non-empty list of field definitions.")
        normalised: list[dict[str, Any]] = []
        for index, definition in enumerate(fields):
            normalised.append(_field(definition, f"fields[{index}]", {f["name"] for f in normalised}))
        given = raw.get("runtime_categories")
        given = {} if given is None else given
        if not isinstance(given, dict):
            raise _invalid("runtime_categories", "'runtime_categories' must map field names to lists of values.")
        types = {f["name"]: f["type"] for f in normalised}
        runtime: dict[str, list[str]] = {}
        for name, values in given.items():
            param = f"runtime_categories.{name}"
            if types.get(name) != "categorical":
                raise _invalid(param, f"'runtime_categories' names {name!r}, which is not a categorical field.")
            runtime[name] = _distinct_strings(values, param)
        for index, f in enumerate(normalised):
            if f["type"] == "categorical" and "valid_values" not in f and f["name"] not in runtime:
                raise _invalid(
                    f"fields[{index}].valid_values",
                    f"The categorical field {f['name']!r} needs 'valid_values' (or 'runtime_categories').",
                )
        return {
            "fields": normalised,
            "runtime_categories": runtime,
            "include_context": _bool(raw.get("include_context", False), "include_context"),
        }

    def values(self, f: dict[str, Any]) -> list[str]:
        """A categorical field's values: the call's runtime categories win over the definition."""
        return list(self.params["runtime_categories"].get(f["name"], f.get("valid_values", [])))

    def build_schema(self) -> dict[str, Any]:
        properties = {}
        for f in self.params["fields"]:
            kind = f["type"]
            if kind == "categorical":
                prop: dict[str, Any] = {"type": "string", "enum": self.values(f)}
            elif kind == "list":
                prop = {"type": "array", "items": {"type": "string"}}
            else:
                prop = {"type": {"numeric": "number", "text": "string"}.get(kind, kind)}
            properties[f["name"]] = {**prop, "description": f["description"]}
        return _object_schema(properties)

    def default_system_prompt(self) -> str:
        lines = [
            "You enrich records with new fields. For the record the user sends, fill in every field below "
            "from the record and your general knowledge, and answer with a JSON object holding exactly these fields:"
        ]
        for f in self.params["fields"]:
            kind = f["type"]
            shape = _FIELD_SHAPES[kind] if kind != "categorical" else "one of " + ", ".join(map(_json, self.values(f)))
            line = f"- {f['name']} ({shape}): {f['description']}"
            if f.get("examples"):
                line += " Examples: " + ", ".join(map(_json, f["examples"])) + "."
            lines.append(line)
        return "\n".join(lines)

    def messages(self, item: Item) -> list[dict[str, str]]:
        messages = super().messages(item)
        if self.params["include_context"] and item.metadata:
            context = orjson.dumps(item.metadata, default=str).decode()
            messages[-1]["content"] += f"\n\nContext (the record's metadata, as JSON):\n{context}"
        return messages

    def result(self, text: str, choice: dict[str, Any]) -> dict[str, Any]:
        answer = _parse_json(text, choice)
        _validate(answer, self.schema, self.kind)
        return {f["name"]: answer[f["name"]] for f in self.params["fields"]}


class _Run(_Spec):
    """A free-form prompt: the caller's system prompt and template, the caller's response_format."""

    kind = "run"
    keys = frozenset({"response_format"})

    @classmethod
    def normalise(cls, raw: dict[str, Any]) -> dict[str, Any]:
        # the template it needs is checked by parse_operation, which knows the run's name
        response_format = _response_format(raw.get("response_format"), ("text", "json_object", "json_schema"))
        return {} if response_format is None else {"response_format": response_format}

    def build_schema(self) -> dict[str, Any] | None:
        response_format = self.params.get("response_format") or {}
        schema: dict[str, Any] | None = response_format.get("json_schema", {}).get("schema")
        return schema

    def build_response_format(self) -> dict[str, Any] | None:
        return self.params.get("response_format")

    def result(self, text: str, choice: dict[str, Any]) -> Any:
        if self.response_format is None:
            return text.strip()
        if self.schema is None:  # json_object
            return _json_object(text, choice, self.kind)
        answer = _parse_json(text, choice)
        _validate(answer, self.schema, self.kind)
        return answer


_SPECS: dict[str, type[_Spec]] = {spec.kind: spec for spec in (_Label, _Summarize, _Extract, _Enrich, _Run)}


def _spec_class(kind: str) -> type[_Spec]:
    spec = _SPECS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise _invalid("operation", f"Unknown operation {kind!r}: expected one of {', '.join(OPERATIONS)}.")
    return spec


# --- answers: parsing and checking against a schema ---------------------------------------


def _parse_json(text: str, choice: dict[str, Any]) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        cut = " (it was cut off at max_tokens)" if choice.get("finish_reason") == "length" else ""
        raise _Mismatch(f"the model's output is not valid JSON{cut}: {exc}") from exc


def _json_object(text: str, choice: dict[str, Any], kind: str) -> dict[str, Any]:
    answer = _parse_json(text, choice)
    if not isinstance(answer, dict):
        raise _Mismatch(f"the model's output does not match the {kind} schema: $ should be an object")
    return answer


def _validate(value: Any, schema: dict[str, Any] | None, kind: str) -> None:
    problem = _mismatch(value, schema or {}, "$")
    if problem is not None:
        raise _Mismatch(f"the model's output does not match the {kind} schema: {problem}")


def _mismatch(value: Any, schema: Any, path: str) -> str | None:
    """The first way `value` breaks `schema`, or None. A small validator for the keywords
    this module generates (type, enum, properties, required, additionalProperties, items,
    minItems, maxItems, uniqueItems); other keywords of a caller's schema are not checked."""
    if not isinstance(schema, dict):
        return None
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            return f"{path} should be {' or '.join(map(str, types))}, not {_type_name(value)}"
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        return f"{path}: {_json(value)[:80]} is not one of {_json(schema['enum'])[:200]}"
    if isinstance(value, dict):
        return _object_mismatch(value, schema, path)
    if isinstance(value, list):
        return _array_mismatch(value, schema, path)
    return None


def _object_mismatch(value: dict[str, Any], schema: dict[str, Any], path: str) -> str | None:
    for name in schema.get("required", []):
        if name not in value:
            return f"{path} is missing the field {name!r}"
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problem = _mismatch(item, properties[name], f"{path}.{name}")
        elif extra is False:
            problem = f"{path} has an unexpected field {name!r}"
        else:
            problem = _mismatch(item, extra, f"{path}.{name}")
        if problem is not None:
            return problem
    return None


def _array_mismatch(value: list[Any], schema: dict[str, Any], path: str) -> str | None:
    if len(value) < schema.get("minItems", 0):
        return f"{path} should have at least {schema['minItems']} item(s)"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{path} should have at most {schema['maxItems']} item(s)"
    if schema.get("uniqueItems") and len({orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in value}) < len(value):
        return f"{path} repeats an item"
    for index, item in enumerate(value):
        problem = _mismatch(item, schema.get("items"), f"{path}[{index}]")
        if problem is not None:
            return problem
    return None


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, name: Any) -> bool:
    if isinstance(value, bool):  # a bool is an int in Python, not in JSON
        return name == "boolean"
    return isinstance(value, _PYTHON_TYPES.get(name, ()))


def _type_name(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object", "null"):
        if _is_type(value, name):
            return name
    return type(value).__name__


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


# --- parameters ---------------------------------------------------------------------------


def _invalid(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _common_params(raw: dict[str, Any]) -> dict[str, Any]:
    """temperature (default 0: operations want repeatable answers), max_tokens, system_prompt
    and user_prompt_template; a null counts as absent."""
    temperature = raw.get("temperature")
    temperature = 0 if temperature is None else temperature
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise _invalid("temperature", "'temperature' must be a number between 0 and 2.")
    out: dict[str, Any] = {"temperature": float(temperature)}
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _invalid("max_tokens", "'max_tokens' must be a positive integer.")
        out["max_tokens"] = max_tokens
    for key in ("system_prompt", "user_prompt_template"):
        if raw.get(key) is not None:
            out[key] = _text_param(raw[key], key)
    if "user_prompt_template" in out:
        _parse_template(out["user_prompt_template"])
    return out


def _text_param(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(param, f"'{param}' must be a non-empty string.")
    return value


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(param, f"'{param}' must be true or false.")
    return value


def _distinct_strings(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _invalid(param, f"'{param}' must be a non-empty list of strings.")
    seen: set[str] = set()
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _invalid(param, f"'{param}[{index}]' must be a non-empty string.")
        if item in seen:
            raise _invalid(param, f"'{param}' lists {item!r} twice.")
        seen.add(item)
    return list(value)


def _field(definition: Any, param: str, taken: set[str]) -> dict[str, Any]:
    """One enrich field definition, normalised."""
    if not isinstance(definition, dict):
        raise _invalid(param, f"'{param}' must be an object with name, type and description.")
    for key in definition:
        if key not in _FIELD_KEYS:
            raise _invalid(f"{param}.{key}", f"Unknown key {key!r} in a field definition.")
    name = definition.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise _invalid(f"{param}.name", f"'{param}.name' must be an identifier (letters, digits, underscores).")
    if name in taken:
        raise _invalid(f"{param}.name", f"The field name {name!r} is used twice.")
    kind = definition.get("type")
    if kind not in FIELD_TYPES:
        raise _invalid(f"{param}.type", f"'{param}.type' is {kind!r}: expected one of {', '.join(FIELD_TYPES)}.")
    field_ = {
        "name": name,
        "type": kind,
        "description": _text_param(definition.get("description"), f"{param}.description"),
    }
    if definition.get("valid_values") is not None:
        if kind != "categorical":
            raise _invalid(f"{param}.valid_values", "'valid_values' applies to categorical fields only.")
        field_["valid_values"] = _distinct_strings(definition["valid_values"], f"{param}.valid_values")
    if definition.get("examples") is not None:
        if not isinstance(definition["examples"], list):
            raise _invalid(f"{param}.examples", f"'{param}.examples' must be a list.")
        field_["examples"] = list(definition["examples"])
    return field_


def _response_format(value: Any, allowed: tuple[str, ...]) -> dict[str, Any] | None:
    """A caller's response_format, normalised; None for plain text."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in allowed:
        raise _invalid("response_format.type", f"'response_format.type' must be one of {', '.join(allowed)}.")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise _invalid("response_format.json_schema", "'response_format.json_schema' must be an object.")
    if not isinstance(spec.get("name"), str) or not _SCHEMA_NAME.fullmatch(spec["name"]):
        raise _invalid("response_format.json_schema.name", "'name' must be 1-64 letters, digits, '_' or '-'.")
    _check_schema(spec.get("schema"), "response_format.json_schema.schema")
    if not isinstance(spec.get("strict", False), bool):
        raise _invalid("response_format.json_schema.strict", "'strict' must be true or false.")
    return {"type": "json_schema", "json_schema": spec}


def _check_schema(schema: Any, param: str) -> None:
    """Enough of a caller's JSON Schema to check answers against it: the keywords
    `_mismatch` reads must have the right shape."""
    if not isinstance(schema, dict):
        raise _invalid(param, f"'{param}' must be a JSON Schema object.")
    kind = schema.get("type")
    if kind is not None and not all(t in _JSON_TYPES for t in (kind if isinstance(kind, list) else [kind])):
        raise _invalid(f"{param}.type", f"'{param}.type' must be one of {', '.join(_JSON_TYPES)}.")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise _invalid(f"{param}.properties", f"'{param}.properties' must be an object.")
    for name, sub in properties.items():
        _check_schema(sub, f"{param}.properties.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _invalid(f"{param}.required", f"'{param}.required' must be a list of field names.")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise _invalid(f"{param}.enum", f"'{param}.enum' must be a non-empty list.")
    if "items" in schema:
        _check_schema(schema["items"], f"{param}.items")
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, bool):
        _check_schema(extra, f"{param}.additionalProperties")


def _object_schema(properties: dict[str, Any]) -> dict[str, Any]:
    """A closed object with every property required: what strict structured output accepts."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


# --- templates ----------------------------------------------------------------------------


def _parse_template(template: str) -> list[tuple[str, str | None]]:
    """The template as (literal text, placeholder name or None) pieces.

    str.format syntax, but only plain names: `{content}` or a metadata field. `{}`, `{0}`,
    attribute or index access, conversions and format specs can name no item field (and
    attribute access would reach into Python objects), so they are refused up front."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise _invalid(
            "user_prompt_template",
            f"'user_prompt_template' is not a valid template ({exc}); write literal braces as '{{{{' and '}}}}'.",
        ) from exc
    pieces: list[tuple[str, str | None]] = []
    for literal, name, format_spec, conversion in parts:
        if name is not None and (not name or name.isdigit() or "." in name or "[" in name or format_spec or conversion):
            shown = (
                "{" + name + (f"!{conversion}" if conversion else "") + (f":{format_spec}" if format_spec else "") + "}"
            )
            raise _invalid(
                "user_prompt_template",
                f"The placeholder {shown} cannot name an item field: use {{content}} or {{<metadata field>}}, "
                "and write literal braces as '{{' and '}}'.",
            )
        pieces.append((literal, name))
    return pieces


def _render(pieces: list[tuple[str, str | None]], item: Item) -> str:
    out = []
    for literal, name in pieces:
        out.append(literal)
        if name is None:
            continue
        if name == "content":
            out.append(item.content)
        elif name in item.metadata:
            value = item.metadata[name]
            out.append(value if isinstance(value, str) else orjson.dumps(value, default=str).decode())
        else:
            raise _invalid(
                "user_prompt_template",
                f"The user_prompt_template placeholder {{{name}}} names a field this item does not have "
                f"(no metadata {name!r}).",
            )
    return "".join(out)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
