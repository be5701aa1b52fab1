"""GET /v1/models, as OpenAI's (openai-python `types.Model`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "batchgate"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
