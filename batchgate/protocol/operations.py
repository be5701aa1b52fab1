"""The operations API's wire shapes: `/api/completions/{operation}`, `/api/batches`,
`/api/files` (AgentFlow-compatible).

The server parses requests into these models and answers with them; the SDK reads its
answers with the same models, so the two cannot drift. Types here are the wire's: an
operation's own rules (a non-empty category list, a temperature between 0 and 2, a
template naming only fields an item has) are checked by `core/operations.py`. Either way
a request that does not fit is a 400 naming the parameter (`fields[0].type`).
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

OPERATIONS = ("label", "summarize", "extract", "enrich", "run")
# names accepted for an operation, and the canonical operation each stands for
ALIASES = {"classify": "label"}

BatchState = Literal["queued", "processing", "completed", "failed", "cancelled", "expired"]
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled", "expired"})
RowStatus = Literal["succeeded", "failed"]
OutputFormat = Literal["json", "jsonl", "csv"]
RecordFormat = Literal["csv", "json", "jsonl", "text"]
FieldType = Literal["categorical", "numeric", "integer", "boolean", "text", "list"]


def canonical_operation(name: str) -> str:
    """The operation a name stands for: `classify` is `label`; other names are themselves."""
    return ALIASES.get(name, name)


# --- requests -----------------------------------------------------------------------------


class OperationItem(BaseModel):
    """One item: `content` is the text the operation works on; `metadata` (and any other
    key) travels with it into `{field}` placeholders and back in the output row."""

    model_config = ConfigDict(extra="allow")

    content: str
    metadata: dict[str, Any] | None = None


class ResponseFormat(BaseModel):
    """As in OpenAI's chat completions: `text`, `json_object`, or `json_schema` with
    `json_schema: {name, schema, strict?}` (which operations take which: see each one)."""

    model_config = ConfigDict(extra="allow")

    type: str
    json_schema: dict[str, Any] | None = None


class EnrichField(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="An identifier: the key of the field in each result.")
    type: FieldType
    description: str
    valid_values: list[str] | None = Field(None, description="The values of a categorical field.")
    examples: list[Any] | None = None


class OperationParams(BaseModel):
    """Parameters every operation takes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str | None = Field(None, description="A model name; the server's default when omitted.")
    temperature: float | None = Field(None, description="0 to 2; default 0 (repeatable answers).")
    max_tokens: int | None = Field(None, description="A cap on each answer's tokens.")
    system_prompt: str | None = Field(None, description="Replaces the operation's generated system prompt.")
    user_prompt_template: str | None = Field(
        None, description="The user message, with `{content}` and `{<metadata field>}` placeholders."
    )


class LabelParams(OperationParams):
    categories: list[str] = Field(description="The labels to choose from (distinct, non-empty).")
    multi_label: bool | None = Field(None, description="Every category that applies (default false: exactly one).")


class SummarizeParams(OperationParams):
    summary_instructions: str | None = None
    response_format: ResponseFormat | None = Field(None, description="`text` (default) or `json_object`.")


class ExtractParams(OperationParams):
    extraction_instructions: str
    # `schema` would shadow a BaseModel attribute: the field is `schema_` in Python, `schema` on the wire
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="A JSON Schema (type object) every result must match."
    )


class EnrichParams(OperationParams):
    fields: list[EnrichField]
    runtime_categories: dict[str, list[str]] | None = Field(
        None, description="Valid values for categorical fields, overriding their definitions."
    )
    include_context: bool | None = Field(None, description="Put each item's metadata into the prompt.")


class RunParams(OperationParams):
    operation: str | None = Field(
        None,
        description="A name for this custom run (e.g. `feedback_analysis`), recorded on its rows; default `run`.",
    )
    response_format: ResponseFormat | None = Field(
        None, description="`text` (default), `json_object` or `json_schema`."
    )


class _Items(BaseModel):
    items: list[OperationItem] = Field(description="Objects with `content` (and `metadata`), or plain strings.")

    @field_validator("items", mode="before")
    @classmethod
    def _strings_are_content(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"content": item} if isinstance(item, str) else item for item in value]
        return value


class LabelRequest(LabelParams, _Items):
    """POST /api/completions/label"""


class SummarizeRequest(SummarizeParams, _Items):
    """POST /api/completions/summarize"""


class ExtractRequest(ExtractParams, _Items):
    """POST /api/completions/extract"""


class EnrichRequest(EnrichParams, _Items):
    """POST /api/completions/enrich"""


class RunRequest(RunParams, _Items):
    """POST /api/completions/run"""


CompletionRequest = LabelRequest | SummarizeRequest | ExtractRequest | EnrichRequest | RunRequest


class BatchOptions(BaseModel):
    """What a batch takes besides its operation's parameters."""

    completion_window: str | None = Field(None, description='How long the batch may run ("24h" by default).')
    metadata: dict[str, str] | None = Field(None, description="Up to 16 string pairs, kept with the batch.")
    content_column: str | None = Field(
        None, description="The CSV column or JSON key holding each record's content (default `content`)."
    )
    format: RecordFormat | None = Field(None, description="The file's format when its name does not tell.")


class BatchParams(LabelParams, SummarizeParams, ExtractParams, EnrichParams, RunParams, BatchOptions):
    """Every operation's parameters, each optional: which apply depends on `operation`."""

    categories: list[str] | None = None  # type: ignore[assignment]
    extraction_instructions: str | None = None  # type: ignore[assignment]
    fields: list[EnrichField] | None = None  # type: ignore[assignment]
    operation: str = Field(
        description="label (alias classify), summarize, extract, enrich, run, or any other name: a custom run."
    )


class BatchCreateRequest(BatchParams, _Items):
    """POST /api/batches: `items`, or `file_id` of a records file uploaded to /v1/files."""

    items: list[OperationItem] | None = None  # type: ignore[assignment]
    file_id: str | None = None


class RecordsUpload(BatchParams):
    """POST /api/files, as multipart form fields beside the `file` part."""

    @classmethod
    def from_form(cls, form: dict[str, str]) -> RecordsUpload:
        """The form's fields, each read as its parameter's type says (form values are all
        strings): a string parameter is the value as sent (`content_column=2021` is the
        column "2021"); a list of strings is a JSON array or comma-separated
        (`categories=enterprise,mid-market,smb`); other objects and arrays are JSON;
        booleans and numbers are parsed. An empty field counts as not sent, as HTML forms
        send every field. Raises pydantic's ValidationError."""
        by_name = {field.alias or name: field.annotation for name, field in cls.model_fields.items()}
        values = {name: _form_value(by_name.get(name), value) for name, value in form.items() if value != ""}
        return cls.model_validate(values)


def _form_value(annotation: Any, value: str) -> Any:
    types = get_args(annotation) or (annotation,)
    if str in types:
        return value
    if value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # the model then says what type it wanted
    if list[str] in types:
        return [part.strip() for part in value.split(",")]
    return value


# --- responses ----------------------------------------------------------------------------


class OperationRow(BaseModel):
    """One item's result, in input order."""

    index: int = Field(description="The item's position in the input, from 0.")
    id: str = Field(description="batchgate's id of the item: item-0000000, item-0000001, …")
    operation: str
    status: RowStatus
    result: Any = Field(
        None,
        description='The operation\'s output: {"label","confidence"} / {"labels","confidence"}, the summary, '
        "the extracted object, the enriched fields, the run's answer. Null when the row failed.",
    )
    error: str | None = None
    model: str | None = None
    metadata: dict[str, Any] = Field(
        description="The input record as given: every field under its own name, the content included."
    )
    raw: str | None = Field(None, description="The model's text, on a failed row that has one (for review).")


class CompletionResponse(BaseModel):
    """The answer of POST /api/completions/{operation}."""

    results: list[OperationRow]
    model: str
    operation: str


class OperationUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0


class OperationBatch(BaseModel):
    """An operation batch's status (GET /api/batches/{id}, and the answer of creating or
    cancelling one)."""

    batch_id: str
    status: BatchState = Field(
        description="queued (validating), processing (in progress, finalizing or being cancelled), completed, "
        "failed (validation failed), cancelled, expired"
    )
    total_items: int
    completed_items: int = 0
    failed_items: int = 0
    progress_percentage: float = 0.0
    operation: str | None = None
    model: str | None = None
    created_at: int | None = None
    usage: OperationUsage = Field(default_factory=OperationUsage)
    metadata: dict[str, str] | None = None
    error: str | None = Field(None, description="Why a failed batch failed.")
    file_id: str | None = Field(None, description="The uploaded file a batch from POST /api/files was made of.")


class OperationBatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OperationBatch]
    last_id: str | None = None
    has_more: bool = False


class OutputPage(BaseModel):
    """GET /api/batches/{id}/output?format=json: one page of rows."""

    id: str
    status: BatchState
    offset: int
    limit: int
    total: int = Field(description="Rows in the whole output (one per item).")
    results: list[OperationRow]
