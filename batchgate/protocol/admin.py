"""/v1/admin: API keys and projects (a batchgate API; only keys with the `admin` scope).

Key fields follow the gateway's data model: scopes, the models a key may use, expiry.
A key's secret is in the answer to its creation only; it is stored as a hash.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["batch", "sync", "read", "admin"]


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


class ApiKeyUpdate(BaseModel):
    """The fields to change; those left out keep their value (null allowed_models: any
    model; null expires_at: never)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    scopes: list[Scope] | None = Field(default=None, min_length=1)
    allowed_models: list[str] | None = None
    expires_at: int | None = Field(default=None, ge=0, le=2**63 - 1)


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


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
