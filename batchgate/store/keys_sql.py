"""API key rows, shared by the SQLite and PostgreSQL stores (they differ only in how a
parameter is written: `?` or `%s`): scopes as comma-separated text, allowed models as a
JSON list (NULL: any model), rate limits as a JSON list of {kind, limit, window_s}
(NULL: none)."""

from __future__ import annotations

from typing import Any

import orjson

from batchgate.core.models import ApiKey, RateLimit

KEY_SELECT = (
    "SELECT k.id, k.project_id, k.name, k.prefix, k.created_at, k.revoked_at, p.name, k.scopes, "
    "k.allowed_models, k.expires_at, k.limits, k.max_parallel_requests, k.budget_usd, k.budget_period, "
    "k.budget_soft_usd, k.routing_profile FROM api_keys k JOIN projects p ON p.id = k.project_id"
)
# the fields `update_api_key` changes, in the order of `update_params`
_UPDATED = [
    "name", "scopes", "allowed_models", "expires_at", "limits", "max_parallel_requests", "budget_usd",
    "budget_period", "budget_soft_usd", "routing_profile",
]  # fmt: skip
KEY_INSERT_COLUMNS = ", ".join(["id", "project_id", "prefix", "key_hash", "created_at", *_UPDATED])


def insert_sql(p: str) -> str:
    return f"INSERT INTO api_keys ({KEY_INSERT_COLUMNS}) VALUES ({', '.join([p] * (5 + len(_UPDATED)))})"


def insert_params(key: ApiKey, key_hash: str) -> tuple[Any, ...]:
    return (key.id, key.project_id, key.prefix, key_hash, key.created_at, *_changeable(key))


def update_sql(p: str) -> str:
    """UPDATE of an active key's changeable fields; its parameters are `update_params`."""
    return f"UPDATE api_keys SET {', '.join(f'{c} = {p}' for c in _UPDATED)} WHERE id = {p} AND revoked_at IS NULL"


def update_params(key: ApiKey) -> tuple[Any, ...]:
    return (*_changeable(key), key.id)


def _changeable(key: ApiKey) -> tuple[Any, ...]:
    return (
        key.name, ",".join(key.scopes), models_text(key), key.expires_at, limits_text(key),
        key.max_parallel_requests, key.budget_usd, key.budget_period, key.budget_soft_usd, key.routing_profile,
    )  # fmt: skip


def models_text(key: ApiKey) -> str | None:
    return orjson.dumps(list(key.allowed_models)).decode() if key.allowed_models is not None else None


def limits_text(key: ApiKey) -> str | None:
    if not key.limits:
        return None
    return orjson.dumps([{"kind": r.kind, "limit": r.limit, "window_s": r.window_s} for r in key.limits]).decode()


def api_key(row: tuple[Any, ...]) -> ApiKey:
    (
        key_id, project_id, name, prefix, created_at, revoked_at, project_name, scopes, models, expires_at,
        limits, max_parallel, budget_usd, budget_period, budget_soft_usd, routing_profile,
    ) = row  # fmt: skip
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
        limits=tuple(RateLimit(**r) for r in orjson.loads(limits)) if limits else (),
        max_parallel_requests=max_parallel,
        budget_usd=budget_usd,
        budget_period=budget_period,
        budget_soft_usd=budget_soft_usd,
        routing_profile=routing_profile,
    )
