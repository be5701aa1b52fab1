"""POST /v1/responses answered now: created, streamed as OpenAI's events, and (with
`store: true`) kept for GET /v1/responses/{id} and `previous_response_id`.

The translation to and from chat completions is in `core/responses.py`; this adds the
project's stored conversations, their input items, their expiry and the event stream.

A stored response expires `retention` seconds after it was created (OpenAI keeps them 30
days): from then on it is not found, as if deleted, and the sweeper deletes its row.

For a model served natively (`native`), a request goes to the upstream as it came, and
a streamed one's events come back as the upstream wrote them; `previous_response_id`
must then name a response this project stored from a native answer too (the upstream
holds that one). Otherwise the request is translated to chat completions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from batchgate.core.clock import Clock, SystemClock
from batchgate.core.errors import BackendRejectedError, BatchgateError, NotFoundError
from batchgate.core.ids import IdSequence, new_id
from batchgate.core.models import StoredResponse
from batchgate.core.ports import Backend, BackendRequest, Store, StreamDelta
from batchgate.core.responses import (
    CHAT,
    RESPONSES,
    Translated,
    answer_status,
    base_response,
    conversation,
    ended,
    input_items,
    items_page,
    native_conversation,
    never,
    output_message,
    rename_refusal,
    response_object,
    translate,
)
from batchgate.protocol import responses as wire

Event = dict[str, Any]


class ResponseService:
    def __init__(
        self,
        backend: Backend,
        store: Store,
        clock: Clock | None = None,
        retention: int | None = None,
        native: Callable[[str], bool] = never,
    ):
        self.backend = backend
        self.store = store
        self.clock = clock or SystemClock()
        self.retention = retention  # seconds a stored response is kept; None: for ever
        self.native = native
        self._ids = IdSequence("resp-")

    async def _stored(self, project: str, response_id: str, param: str = "response_id") -> StoredResponse:
        """The project's stored response, unless it expired (then, as OpenAI, not found)."""
        stored = await asyncio.to_thread(self.store.get_response, response_id, project)
        if stored is None or (self.retention and stored.created_at + self.retention <= self.clock.time()):
            raise NotFoundError(f"No response with id {response_id!r}.", param=param)
        return stored

    async def _previous(self, project: str, body: dict[str, Any]) -> StoredResponse | None:
        previous = body.get("previous_response_id")
        return await self._stored(project, previous, "previous_response_id") if isinstance(previous, str) else None

    async def _translate(self, body: dict[str, Any], previous: StoredResponse | None) -> Translated:
        return translate(body, previous.messages if previous else [])

    async def create(self, project: str, body: dict[str, Any]) -> wire.Response | dict[str, Any]:
        """The response: a `wire.Response`, or as a native upstream wrote it (a dict)."""
        previous = await self._previous(project, body)
        if self._native(body, previous):
            return await self._forward(project, body, previous)
        t = await self._translate(body, previous)
        try:
            answer = await self.backend.execute(BackendRequest(self._ids.next(), CHAT, t.chat, interactive=True))
        except BackendRejectedError as exc:
            raise rename_refusal(exc) from None
        response = response_object(t, answer, new_id("resp_"), int(self.clock.time()), bool(t.request.store))
        await self._keep(project, t, response)
        return response

    def _native(self, body: dict[str, Any], previous: StoredResponse | None) -> bool:
        """Whether the upstream answers the request itself: the model is served natively,
        and what it continues, if anything, was answered natively too."""
        return self.native(str(body.get("model"))) and (previous is None or previous.native)

    async def _forward(self, project: str, body: dict[str, Any], previous: StoredResponse | None) -> dict[str, Any]:
        """The request answered by its upstream's own /v1/responses."""
        answer = await self.backend.execute(BackendRequest(self._ids.next(), RESPONSES, body, interactive=True))
        response = dict(answer.body)
        await self._keep_native(project, body, previous, response)
        return response

    async def _forward_stream(
        self, project: str, body: dict[str, Any], previous: StoredResponse | None
    ) -> AsyncIterator[Event]:
        """The request streamed by its upstream's own /v1/responses: its events as it wrote
        them (the last one's response with the route's cost), its final response kept with
        `store: true`. A refusal is raised before the first event; a stream that breaks off
        after it ends with an `error` event."""
        request = BackendRequest(self._ids.next(), RESPONSES, body, interactive=True)
        sent, number = False, -1  # whether an event was sent; the last one's sequence_number
        try:
            async for delta in self.backend.stream(request):
                event = delta.event
                if event is None:
                    continue
                if event.get("type") in ("response.completed", "response.incomplete"):
                    await self._keep_native(project, body, previous, event.get("response"))
                sequence = event.get("sequence_number")
                sent, number = True, sequence if isinstance(sequence, int) else number + 1
                yield event
        except BatchgateError as exc:
            if not sent:
                raise
            yield {"type": "error", "sequence_number": number + 1, "code": exc.code, "message": exc.message, "param": exc.param}  # fmt: skip

    async def _keep_native(
        self, project: str, body: dict[str, Any], previous: StoredResponse | None, response: Any
    ) -> None:
        if body.get("store") is True and isinstance(response, dict) and isinstance(response.get("id"), str):
            history = previous.messages if previous else []
            record = StoredResponse(
                response["id"],
                project,
                int(response.get("created_at") or self.clock.time()),
                response,
                native_conversation(history, body.get("input"), response),
                input_items(body.get("input")),
                native=True,
            )
            await asyncio.to_thread(self.store.add_response, record)

    async def _keep(self, project: str, t: Translated, response: wire.Response) -> None:
        if t.request.store:
            record = StoredResponse(
                response.id,
                project,
                response.created_at,
                orjson.loads(response.model_dump_json()),
                conversation(t, response),
                input_items(t.request.input),
            )
            await asyncio.to_thread(self.store.add_response, record)

    async def get(self, project: str, response_id: str) -> dict[str, Any]:
        return (await self._stored(project, response_id)).response

    async def input_items(
        self, project: str, response_id: str, after: str | None = None, limit: int = 20, order: str = "desc"
    ) -> wire.InputItemList:
        """The input items of a stored response, a page at a time (newest first by default,
        as OpenAI's)."""
        stored = await self._stored(project, response_id)
        page, has_more = items_page(stored.input_items, after, limit, order)
        return wire.InputItemList.model_validate(
            {
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": has_more,
            }
        )

    async def delete(self, project: str, response_id: str) -> wire.ResponseDeleted:
        await self._stored(project, response_id)  # an expired one is gone already
        if not await asyncio.to_thread(self.store.delete_response, response_id, project):
            raise NotFoundError(f"No response with id {response_id!r}.", param="response_id")
        return wire.ResponseDeleted(id=response_id)

    async def stream(self, project: str, body: dict[str, Any]) -> AsyncIterator[Event]:
        """OpenAI's event sequence. A refusal is raised before the first event, so it can
        still be an ordinary HTTP error.

        Text streams as the engine writes it. With tools in play the answer is only known
        to be a call, and a valid one, once complete (the local engine does not stream
        calls), so it is generated whole, then sent as the same events.

        A model served natively streams its upstream's own events (`_forward_stream`)."""
        previous = await self._previous(project, body)
        if self._native(body, previous):
            async for event in self._forward_stream(project, body, previous):
                yield event
            return
        t = await self._translate(body, previous)
        created_at, response_id = int(self.clock.time()), new_id("resp_")
        start = base_response(t, response_id, created_at, bool(t.request.store))
        tools_in_play = bool(t.request.tools) and t.request.tool_choice != "none"
        request = BackendRequest(self._ids.next(), CHAT, t.chat, interactive=True)
        events = _Sequence()
        if tools_in_play:
            try:
                answer = await self.backend.execute(request)
            except BackendRejectedError as exc:
                raise rename_refusal(exc) from None
            response = response_object(t, answer, response_id, created_at, bool(t.request.store))
            yield events.response("response.created", start)
            yield events.response("response.in_progress", start)
            for index, item in enumerate(response.output):
                for event in _item_events(events, index, item):
                    yield event
        else:
            deltas = self.backend.stream(request)
            try:
                first: StreamDelta | None = await anext(deltas)
            except BackendRejectedError as exc:
                raise rename_refusal(exc) from None
            yield events.response("response.created", start)
            yield events.response("response.in_progress", start)
            item_id, text = new_id("msg_"), []
            yield events.item("response.output_item.added", 0, output_message("", "in_progress", item_id), [])
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield events.part("response.content_part.added", item_id, part)
            last = first
            delta = first
            while delta is not None:
                if delta.text:
                    text.append(delta.text)
                    yield events.text("response.output_text.delta", item_id, delta=delta.text)
                last = delta
                try:
                    delta = await anext(deltas, None)
                except BatchgateError as exc:
                    # the answer broke off after events were sent: OpenAI's error and
                    # response.failed events end the stream, not a cut connection
                    yield events.event("error", code=exc.code, message=exc.message, param=exc.param)
                    error = wire.ResponseError(code=exc.code or "server_error", message=exc.message)
                    yield events.response(
                        "response.failed", start.model_copy(update={"status": "failed", "error": error})
                    )
                    return
            assert last is not None
            full = "".join(text)
            status = answer_status(last.finish_reason)
            message = output_message(full, status, item_id)
            yield events.text("response.output_text.done", item_id, text=full)
            yield events.part("response.content_part.done", item_id, {**part, "text": full})
            yield events.item("response.output_item.done", 0, message)
            response = ended(start, status, [message] if full else [], last.input_tokens, last.output_tokens)
        await self._keep(project, t, response)
        kind = "response.completed" if response.status == "completed" else "response.incomplete"
        yield events.response(kind, response)


class _Sequence:
    """Events numbered in the order they are sent (`sequence_number`)."""

    def __init__(self) -> None:
        self.number = -1

    def event(self, kind: str, **fields: Any) -> Event:
        self.number += 1
        return {"type": kind, "sequence_number": self.number, **fields}

    def response(self, kind: str, response: wire.Response) -> Event:
        return self.event(kind, response=orjson.loads(response.model_dump_json()))

    def item(self, kind: str, index: int, item: wire.OutputMessage | wire.FunctionCall, content: Any = None) -> Event:
        data = item.model_dump()
        if content is not None:
            data["content"] = content
        return self.event(kind, output_index=index, item=data)

    def part(self, kind: str, item_id: str, part: dict[str, Any], index: int = 0) -> Event:
        return self.event(kind, item_id=item_id, output_index=index, content_index=0, part=part)

    def text(self, kind: str, item_id: str, index: int = 0, **fields: Any) -> Event:
        return self.event(kind, item_id=item_id, output_index=index, content_index=0, logprobs=[], **fields)


def _item_events(events: _Sequence, index: int, item: wire.OutputMessage | wire.FunctionCall) -> list[Event]:
    """The events of one output item generated whole."""
    if isinstance(item, wire.FunctionCall):
        pending = item.model_copy(update={"arguments": "", "status": "in_progress"})
        return [
            events.item("response.output_item.added", index, pending),
            events.event(
                "response.function_call_arguments.delta", item_id=item.id, output_index=index, delta=item.arguments
            ),
            events.event(
                "response.function_call_arguments.done",
                item_id=item.id,
                output_index=index,
                name=item.name,
                arguments=item.arguments,
            ),
            events.item("response.output_item.done", index, item),
        ]
    text = "".join(c.text for c in item.content)
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    return [
        events.item("response.output_item.added", index, item.model_copy(update={"status": "in_progress"}), []),
        events.part("response.content_part.added", item.id, part, index),
        events.text("response.output_text.delta", item.id, index, delta=text),
        events.text("response.output_text.done", item.id, index, text=text),
        events.part("response.content_part.done", item.id, {**part, "text": text}, index),
        events.item("response.output_item.done", index, item),
    ]
