"""/v1/admin: API keys and projects (a batchgate API; only keys with the `admin` scope).

Key fields follow the gateway's data model: scopes, the models a key may use, expiry,
rate limits, a cap on parallel requests, and a budget. A key's secret is in the answer to
its creation only; it is stored as a hash.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["batch", "sync", "read", "admin"]
LimitKind = Literal["requests", "input_tokens", "output_tokens", "total_tokens"]
BudgetPeriod = Literal["day", "week", "month", "total"]


class RateLimitSpec(BaseModel):
    """At most `limit` of `kind` in any rolling window of `window_s` seconds: a burst of
    `limit`, refilled continuously at `limit / window_s` per second (GCRA). Requests over
    it get 429 `rate_limit_exceeded`; batch lines wait for room instead."""

    model_config = ConfigDict(extra="forbid")

    kind: LimitKind = Field(
        description="What is counted: `requests`, `input_tokens` (prompt), `output_tokens` (completion) "
        "or `total_tokens` (both)."
    )
    limit: int = Field(ge=1, le=2**53, description="How many per window.")
    window_s: int = Field(ge=1, le=31 * 86400, description="The rolling window's length in seconds (60: a minute).")


_LIMITS = "Rate limits, each independent; empty: none."
_PARALLEL = "How many synchronous requests and batch lines of the key may run at once; null: no cap."
_BUDGET = "The most the key may spend per budget_period, in USD (the hard limit); null: no budget."
_PERIOD = "The period a budget renews over: day, week, month (UTC calendar periods) or total (never)."
_SOFT = "A soft threshold in USD: passing it is reported, spending goes on; null: none."

_PROFILE = (
    "A [profiles.NAME] of the server's routing config: the key's requests and batch lines resolve "
    "their model through it (models outside it: 404 model_not_found); null: the whole config."
)


class ApiKeyObject(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    project_id: str
    project: str = Field(description="The project's name.")
    prefix: str = Field(description="The first characters of the secret, to recognise it.")
    scopes: list[Scope]
    allowed_models: list[str] | None = Field(description="The models the key may use; null: any.")
    created_at: int
    expires_at: int | None = Field(description="When the key stops working (epoch seconds); null: never.")
    revoked_at: int | None
    limits: list[RateLimitSpec] = Field(description=_LIMITS)
    max_parallel_requests: int | None = Field(description=_PARALLEL)
    budget_usd: float | None = Field(description=_BUDGET)
    budget_period: BudgetPeriod = Field(description=_PERIOD)
    budget_soft_usd: float | None = Field(description=_SOFT)
    routing_profile: str | None = Field(default=None, description=_PROFILE)
    secret: str | None = Field(default=None, description="The key itself: in the answer to its creation only.")


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKeyObject]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=200, description="The project's name (created if new).")
    name: str = Field(default="", max_length=200)
    scopes: list[Scope] = Field(default=["batch", "sync", "read"], min_length=1)
    allowed_models: list[str] | None = None
    expires_at: int | None = Field(default=None, ge=0, le=2**63 - 1)
    limits: list[RateLimitSpec] = Field(default=[], max_length=32, description=_LIMITS)
    max_parallel_requests: int | None = Field(default=None, ge=1, le=2**31, description=_PARALLEL)
    budget_usd: float | None = Field(default=None, ge=0, le=1e12, description=_BUDGET)
    budget_period: BudgetPeriod = Field(default="month", description=_PERIOD)
    budget_soft_usd: float | None = Field(default=None, ge=0, le=1e12, description=_SOFT)
    routing_profile: str | None = Field(default=None, max_length=200, description=_PROFILE)


class ApiKeyUpdate(BaseModel):
    """The fields to change; those left out keep their value (null allowed_models: any
    model; null expires_at: never; `limits` replaces the whole list, [] or null: none;
    null max_parallel_requests, budget_usd, budget_soft_usd or routing_profile: none)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    scopes: list[Scope] | None = Field(default=None, min_length=1)
    allowed_models: list[str] | None = None
    expires_at: int | None = Field(default=None, ge=0, le=2**63 - 1)
    limits: list[RateLimitSpec] | None = Field(default=None, max_length=32, description=_LIMITS)
    max_parallel_requests: int | None = Field(default=None, ge=1, le=2**31, description=_PARALLEL)
    budget_usd: float | None = Field(default=None, ge=0, le=1e12, description=_BUDGET)
    budget_period: BudgetPeriod | None = Field(default=None, description=_PERIOD + " Null keeps it.")
    budget_soft_usd: float | None = Field(default=None, ge=0, le=1e12, description=_SOFT)
    routing_profile: str | None = Field(default=None, max_length=200, description=_PROFILE)


class ApiKeyDeleted(BaseModel):
    object: Literal["api_key.deleted"] = "api_key.deleted"
    id: str
    deleted: bool = True


class ProjectObject(BaseModel):
    object: Literal["project"] = "project"
    id: str
    name: str
    created_at: int


class ProjectList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ProjectObject]


class ProjectLogging(BaseModel):
    object: Literal["project.logging"] = "project.logging"
    project_id: str
    name: str
    store_bodies: bool = Field(description="Keep the request and response bodies of synchronous requests.")
    body_cap_bytes: int = Field(description="Each body is cut at this many bytes (and marked truncated).")


class ProjectLoggingUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_bodies: bool
    body_cap_bytes: int = Field(default=16 * 1024, ge=1, le=1 << 20, description="At most 1 MiB; default 16 KiB.")


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
