"""What several pages share: finding a batch the viewer may see, acting as the viewer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from batchgate.console.render import Ctx
from batchgate.core.errors import NotFoundError
from batchgate.core.metering import Caller, current_caller
from batchgate.core.models import BatchRecord

PAGE_SIZE = 50


def visible_batch(ctx: Ctx, batch_id: str) -> BatchRecord:
    """The batch, if the viewer may see it (an admin sees every project's); else 404."""
    project = ctx.viewer.visible_project
    if project is not None:
        return ctx.services.batches.get(project, batch_id)
    batch = ctx.services.store.get_batch(batch_id, None)
    if batch is None:
        raise NotFoundError(f"No such Batch object: {batch_id}", param="batch_id")
    return batch


@contextlib.contextmanager
def acting_as(ctx: Ctx) -> Iterator[None]:
    """While the block runs, what the services create records the viewer's key (as an API
    request's would: `core.metering.current_caller`)."""
    key = ctx.viewer.key
    caller = (
        Caller(key.id, key.project_id, key.allowed_models, key.routing_profile)
        if key
        else Caller(None, ctx.viewer.project_id)
    )
    token = current_caller.set(caller)
    try:
        yield
    finally:
        current_caller.reset(token)


def int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None
