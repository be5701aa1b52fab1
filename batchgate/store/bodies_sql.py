"""Stored request bodies (core/bodies.py), shared by the SQLite and PostgreSQL stores:
the project's setting (projects.store_bodies, projects.body_cap_bytes) and one
request_bodies row per ledger row whose project opted in (migration 0013)."""

from __future__ import annotations

from typing import Any

from batchgate.core.bodies import BodySettings, RequestBodies


def set_settings_sql(p: str) -> str:
    return f"UPDATE projects SET store_bodies = {p}, body_cap_bytes = {p} WHERE id = {p}"


def set_settings_params(project_id: str, settings: BodySettings) -> tuple[Any, ...]:
    return (1 if settings.store_bodies else 0, settings.body_cap_bytes, project_id)


def settings_sql(p: str) -> str:
    return f"SELECT store_bodies, body_cap_bytes FROM projects WHERE id = {p}"


def settings(row: tuple[Any, ...] | None) -> BodySettings:
    return BodySettings(bool(row[0]), int(row[1])) if row is not None else BodySettings()


def insert_sql(p: str) -> str:
    return (
        "INSERT INTO request_bodies (ledger_id, request, response, request_truncated, response_truncated) "
        f"VALUES ({p}, {p}, {p}, {p}, {p})"
    )


def insert_params(ledger_id: int, bodies: RequestBodies) -> tuple[Any, ...]:
    return (ledger_id, bodies.request, bodies.response, int(bodies.request_truncated), int(bodies.response_truncated))


def select_sql(p: str) -> str:
    return f"SELECT request, response, request_truncated, response_truncated FROM request_bodies WHERE ledger_id = {p}"


def bodies(row: tuple[Any, ...] | None) -> RequestBodies | None:
    return RequestBodies(row[0], row[1], bool(row[2]), bool(row[3])) if row is not None else None
