"""Stored responses' rows, shared by the SQLite and PostgreSQL stores.

The `messages` column holds the response's state besides the response object, as JSON:
`{"messages": [...], "input_items": [...], "native": bool}`. Rows written before input
items were kept hold the bare list of messages; they read back with no input items.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchgate.core.models import StoredResponse

SELECT = "SELECT id, project_id, created_at, response, messages FROM responses"
INSERT_COLUMNS = "id, project_id, created_at, response, messages"


def insert_params(response: StoredResponse) -> tuple[Any, ...]:
    state = {"messages": response.messages, "input_items": response.input_items, "native": response.native}
    return (
        response.id,
        response.project_id,
        response.created_at,
        orjson.dumps(response.response).decode(),
        orjson.dumps(state).decode(),
    )


def stored_response(row: tuple[Any, ...]) -> StoredResponse:
    response_id, project_id, created_at, response, state = row
    state = orjson.loads(state)
    if isinstance(state, list):  # a row from before input items were kept
        state = {"messages": state}
    return StoredResponse(
        response_id,
        project_id,
        created_at,
        orjson.loads(response),
        state["messages"],
        state.get("input_items") or [],
        bool(state.get("native")),
    )


def delete_expired_sql(p: str) -> str:
    """Delete up to a number of responses created before a time (parameters: the time, the
    number), oldest first."""
    return (
        f"DELETE FROM responses WHERE id IN "
        f"(SELECT id FROM responses WHERE created_at < {p} ORDER BY created_at LIMIT {p})"
    )
