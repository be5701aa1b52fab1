"""JSON request bodies parsed into protocol models, after the caller is authenticated.

FastAPI reads a declared body before it runs any dependency, so a stranger's 400 MB
body would be read before their key is refused. `JsonBody(Model)` is a dependency
instead: it needs the caller's project first, then reads the body through
`deps.json_object` (one reader and one bad-JSON answer for every endpoint) and validates
it into the model, answering a mismatch with OpenAI's 400 naming the parameter.
`api/openapi.py` documents each route's JsonBody model as its request body.
"""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from batchgate.api.deps import json_object, project_id
from batchgate.api.errors import invalid_request

M = TypeVar("M", bound=BaseModel)


class JsonBody(Generic[M]):
    def __init__(self, model: type[M]):
        self.model = model

    async def __call__(self, request: Request, project: Annotated[str, Depends(project_id)]) -> M:
        body = await json_object(request)
        try:
            return self.model.model_validate(body)
        except ValidationError as exc:
            raise invalid_request(exc.errors(), in_body=True) from None
