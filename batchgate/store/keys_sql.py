"""API key rows, shared by the SQLite and PostgreSQL stores: scopes as comma-separated
text, allowed models as a JSON list (NULL: any model)."""

from __future__ import annotations

from typing import Any

import orjson

from batchgate.core.models import ApiKey

KEY_SELECT = (
    "SELECT k.id, k.project_id, k.name, k.prefix, k.created_at, k.revoked_at, p.name, k.scopes, "
    "k.allowed_models, k.expires_at FROM api_keys k JOIN projects p ON p.id = k.project_id"
)
KEY_INSERT_COLUMNS = "id, project_id, name, prefix, key_hash, created_at, scopes, allowed_models, expires_at"


def insert_params(key: ApiKey, key_hash: str) -> tuple[Any, ...]:
    return (
        key.id, key.project_id, key.name, key.prefix, key_hash, key.created_at, ",".join(key.scopes),
        models_text(key), key.expires_at,
    )  # fmt: skip


def update_params(key: ApiKey) -> tuple[Any, ...]:
    """(name, scopes, allowed_models, expires_at, id): for UPDATE ... SET those WHERE id."""
    return key.name, ",".join(key.scopes), models_text(key), key.expires_at, key.id


def models_text(key: ApiKey) -> str | None:
    return orjson.dumps(list(key.allowed_models)).decode() if key.allowed_models is not None else None


def api_key(row: tuple[Any, ...]) -> ApiKey:
    key_id, project_id, name, prefix, created_at, revoked_at, project_name, scopes, models, expires_at = row
    return ApiKey(
        key_id,
        project_id,
        name,
        prefix,
        created_at,
        revoked_at,
        project_name,
        scopes=tuple(s for s in scopes.split(",") if s),
        allowed_models=tuple(orjson.loads(models)) if models is not None else None,
        expires_at=expires_at,
    )
