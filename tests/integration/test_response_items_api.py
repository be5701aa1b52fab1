"""GET /v1/responses/{id}/input_items through the official `openai` client
(`client.responses.input_items.list`, its cursor pages), and stored responses expiring
(`BATCHGATE_RESPONSE_RETENTION`): not found from then on, as OpenAI's. A real server on
the scripted backend."""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest
from openai import OpenAI
from support import Server

CONVERSATION = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]},
    {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "3C"},
    {"role": "assistant", "content": "It is 3C."},
    {"role": "user", "content": "Thanks"},
]


def client_of(server: Server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_input_items_are_listed_with_the_openai_client(start_server: Callable[..., Server]) -> None:
    client = client_of(start_server(insecure=True))
    response = client.responses.create(model="m", input=CONVERSATION, store=True)  # type: ignore[arg-type]

    items = list(client.responses.input_items.list(response.id, order="asc"))
    assert [item.type for item in items] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    developer, user, call, output, assistant, last = items
    assert developer.role == "developer" and user.role == "user"  # type: ignore[union-attr]
    assert user.content[0].type == "input_text" and user.content[0].text == "Weather in Oslo?"  # type: ignore[union-attr]
    assert call.call_id == "call_1" and call.name == "weather" and call.arguments == '{"city":"Oslo"}'  # type: ignore[union-attr]
    assert output.call_id == "call_1" and output.output == "3C"  # type: ignore[union-attr]
    assert assistant.role == "assistant" and assistant.content[0].text == "It is 3C."  # type: ignore[union-attr]
    assert all(item.id for item in items) and len({item.id for item in items}) == 6

    # newest first by default; the client follows the cursor (after = the page's last id)
    first = client.responses.input_items.list(response.id, limit=4)
    assert [i.id for i in first.data] == [i.id for i in reversed(items)][:4] and first.has_more
    assert [i.id for i in first.iter_pages().__next__().data] == [i.id for i in first.data]
    every = [i.id for i in client.responses.input_items.list(response.id, limit=2)]  # auto-paging, 3 pages
    assert every == [i.id for i in reversed(items)]
    assert client.responses.input_items.list(response.id).data[0].id == last.id  # type: ignore[union-attr]

    with pytest.raises(openai.BadRequestError):
        client.responses.input_items.list(response.id, limit=101)
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.input_items.list(response.id, after="msg_unknown")
    assert unknown.value.param == "after"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as include:
        client.responses.input_items.list(response.id, include=["message.input_image.image_url"])
    assert include.value.param == "include"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_unknown")
    unstored = client.responses.create(model="m", input="not kept")
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(unstored.id)


def test_a_stored_response_expires(start_server: Callable[..., Server]) -> None:
    client = client_of(start_server({"BATCHGATE_RESPONSE_RETENTION": "2"}, insecure=True))
    response = client.responses.create(model="m", input="hello", store=True)
    assert client.responses.retrieve(response.id).id == response.id
    assert client.responses.input_items.list(response.id).data
    time.sleep(2.2)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(response.id)
    with pytest.raises(openai.NotFoundError) as previous:
        client.responses.create(model="m", input="again", previous_response_id=response.id)
    assert previous.value.param == "previous_response_id"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)
