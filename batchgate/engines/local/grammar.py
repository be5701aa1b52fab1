"""GBNF grammars that hold the local engine's output to JSON Schemas (`response_format`
and tool arguments), built with llama-cpp-python's schema converter."""

from __future__ import annotations

from typing import Any

from llama_cpp.llama_grammar import INVALID_RULE_CHARS_RE, SchemaConverter

from batchgate.core.errors import InvalidRequestError

MAX_ENUMERATED_RANGE = 256
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_NAMED_SCHEMAS = ("properties", "patternProperties", "$defs", "definitions")
_LITERALS = ("enum", "const", "default", "examples")


def unsupported(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_value")


def with_enumerated_ranges(schema: Any, path: str, param: str | None = None) -> Any:
    """The schema with every bounded integer (`minimum`/`maximum`) as an `enum` of its
    values: llama-cpp-python's grammar converter ignores numeric bounds, and an output
    outside them would not match the schema. Bounds it cannot enumerate (one-sided,
    over 256 values, or on non-integers) are refused naming `param` (default: the place
    in the schema), never silently dropped."""
    if isinstance(schema, list):
        return [with_enumerated_ranges(s, f"{path}[{i}]", param) for i, s in enumerate(schema)]
    if not isinstance(schema, dict):
        return schema
    if any(key in schema for key in _BOUNDS):
        low = schema.get("minimum", schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else None)
        high = schema.get("maximum", schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else None)
        if (
            schema.get("type") != "integer"
            or not isinstance(low, int)
            or not isinstance(high, int)
            or not 0 <= high - low < MAX_ENUMERATED_RANGE
        ):
            raise unsupported(
                f"Unsupported bounds at {path}: the local engine enforces minimum/maximum only on integers "
                f"with both bounds and at most {MAX_ENUMERATED_RANGE} values; use an enum otherwise.",
                param or path,
            )
        rest = {k: v for k, v in schema.items() if k not in (*_BOUNDS, "type")}
        return {**rest, "enum": list(range(low, high + 1))}
    walked: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _NAMED_SCHEMAS and isinstance(value, dict):  # names here are not keywords
            walked[key] = {name: with_enumerated_ranges(s, f"{path}.{key}.{name}", param) for name, s in value.items()}
        elif key in _LITERALS:
            walked[key] = value
        else:
            walked[key] = with_enumerated_ranges(value, f"{path}.{key}", param)
    return walked


class _Converter(SchemaConverter):
    """llama-cpp-python's converter, naming each `$ref` rule after the whole reference:
    the original names it after the last path segment only, so two schemas in one
    grammar (two tools, each with a `$defs/Item`) would share the first one's rule."""

    def _resolve_ref(self, ref: str) -> str:
        name = INVALID_RULE_CHARS_RE.sub("-", ref)
        if name not in self._rules and ref not in self._refs_being_resolved:
            self._refs_being_resolved.add(ref)
            name = self.visit(self._refs[ref], name)
            self._refs_being_resolved.remove(ref)
        return name


class GrammarBuilder:
    """One grammar from several JSON Schemas (each its own rule) and hand-written rules."""

    def __init__(self) -> None:
        self._converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def schema_rule(self, schema: dict[str, Any], name: str, param: str) -> str:
        """The name of the rule matching `schema` (already bounds-enumerated): `root` for
        the name "", else `name`; a schema the converter cannot handle is refused naming
        `param`."""
        try:
            resolved = self._converter.resolve_refs(schema, name)  # local refs become "<name>#/…"
            return str(self._converter.visit(resolved, name))
        except Exception as exc:  # the converter raises plain exceptions for unsupported schemas
            raise unsupported(f"Invalid or unsupported JSON schema at {param}: {exc}", param) from exc

    def rule(self, name: str, body: str) -> str:
        return str(self._converter._add_rule(name, body))

    def literal(self, text: str) -> str:
        return str(self._converter._format_literal(text))

    def grammar(self) -> str:
        # the converter lets raw control characters into strings, which JSON forbids (and
        # json.loads refuses): exclude them, as llama.cpp's own JSON grammar does
        text = str(self._converter.format_grammar())
        return text.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')


def schema_grammar(schema: dict[str, Any], path: str, param: str) -> str:
    """The grammar of JSON matching `schema`; problems are refused naming `param`."""
    builder = GrammarBuilder()
    builder.schema_rule(with_enumerated_ranges(schema, path, param), "", param)
    return builder.grammar()


def response_format_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema a request's `response_format` asks for: None for text, any object
    for `json_object`."""
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise unsupported(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.", "response_format.type"
        )
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise unsupported(
            "'response_format.json_schema.schema' must be a JSON Schema object.", "response_format.json_schema"
        )
    return schema
