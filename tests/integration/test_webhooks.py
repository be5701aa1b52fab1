"""Signed webhooks on a real server: endpoints, the event a batch's end posts, retries of a
failing receiver with the same event id, and the signature checked by the official
`openai` client (`client.webhooks.unwrap`) and by the `standardwebhooks` package."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import standardwebhooks
from openai import OpenAI
from support import TERMINAL, Server, chat_line, jsonl, wait_for

# attempts one second apart (the default schedule waits 5 s, then 5 min, ...)
FAST_RETRIES = {"BATCHGATE_WEBHOOK_RETRY_SCHEDULE": "[1, 1, 1]", "BATCHGATE_WEBHOOK_POLL_INTERVAL": "0.1"}


class Receiver:
    """An HTTP endpoint on 127.0.0.1 that answers 500 to its first `failures` requests."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(500 if len(receiver.requests) <= receiver.failures else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(failures=2)
    yield r
    r.close()


@pytest.fixture
def fast_server(start_server: Callable[..., Server]) -> Server:
    return start_server(FAST_RETRIES)


def api(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def run_batch(client: OpenAI, rows: list[dict]) -> str:
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: client.batches.retrieve(batch.id).status in TERMINAL, 30)
    return batch.id


def test_endpoints_show_their_secret_once_and_stay_in_their_project(fast_server: Server) -> None:
    key, other = fast_server.create_key("hooks"), fast_server.create_key("elsewhere")
    with api(fast_server, key) as c, api(fast_server, other) as o:
        r = c.post(
            "/webhooks", json={"url": "https://example.com/h", "events": ["batch.completed"], "description": "x"}
        )
        assert r.status_code == 200, r.text
        hook = r.json()
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["batch.completed"]
        assert hook["object"] == "webhook_endpoint" and hook["id"].startswith("wh_")
        listed = c.get("/webhooks").json()["data"]
        assert [h["id"] for h in listed] == [hook["id"]] and listed[0]["secret"] is None
        assert c.get(f"/webhooks/{hook['id']}").json()["secret"] is None
        assert o.get(f"/webhooks/{hook['id']}").status_code == 404
        assert o.get("/webhooks").json()["data"] == []
        assert c.post("/webhooks", json={"url": "ftp://x/y"}).json()["error"]["param"] == "url"
        assert c.post("/webhooks", json={"url": "https://x/y", "events": ["batch.nope"]}).status_code == 400
        assert o.delete(f"/webhooks/{hook['id']}").status_code == 404
        deleted = c.delete(f"/webhooks/{hook['id']}").json()
        assert deleted == {"id": hook["id"], "object": "webhook_endpoint.deleted", "deleted": True}
        assert c.get("/webhooks").json()["data"] == []


def test_a_failing_receiver_gets_the_same_signed_event_until_it_answers(
    fast_server: Server, receiver: Receiver
) -> None:
    key = fast_server.create_key("hooks")
    client = OpenAI(base_url=fast_server.url + "/v1", api_key=key, max_retries=0)
    with api(fast_server, key) as c:
        hook = c.post("/webhooks", json={"url": receiver.url}).json()
        batch_id = run_batch(client, [chat_line("a"), chat_line("b")])
        wait_for(lambda: len(receiver.requests) >= 3, 30)
        time.sleep(1.5)  # nothing more once answered
        assert len(receiver.requests) == 3
        bodies = {body for body, _ in receiver.requests}
        ids = {headers["webhook-id"] for _, headers in receiver.requests}
        assert len(bodies) == 1 and len(ids) == 1, "one event, one id, on every attempt"
        body, headers = receiver.requests[-1]
        event = client.webhooks.unwrap(body.decode(), headers, secret=hook["secret"])
        assert (event.type, event.data.id, event.id, event.object) == ("batch.completed", batch_id, ids.pop(), "event")
        standardwebhooks.Webhook(hook["secret"]).verify(body.decode(), headers)
        assert json.loads(body) == {
            "id": event.id,
            "object": "event",
            "type": "batch.completed",
            "created_at": event.created_at,
            "data": {"id": batch_id},
        }
        (delivery,) = wait_for(lambda: c.get(f"/webhooks/{hook['id']}/deliveries").json()["data"], 10)
        assert delivery["status"] == "delivered" and delivery["event_id"] == event.id and delivery["attempts"] == 3
        assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
        assert [a["error"] for a in delivery["attempt_log"]] == ["HTTP 500", "HTTP 500", None]
        assert all(a["latency_ms"] >= 0 for a in delivery["attempt_log"])


def test_failed_cancelled_and_operation_batches_are_announced(fast_server: Server) -> None:
    receiver = Receiver(failures=0)
    try:
        key = fast_server.create_key("hooks")
        client = OpenAI(base_url=fast_server.url + "/v1", api_key=key, max_retries=0)
        with api(fast_server, key) as c:
            hook = c.post("/webhooks", json={"url": receiver.url}).json()
            # a batch that fails validation
            bad = client.files.create(file=("in.jsonl", io.BytesIO(b'{"custom_id": 1}\n')), purpose="batch").id
            failed = client.batches.create(input_file_id=bad, endpoint="/v1/chat/completions", completion_window="24h")
            # a batch cancelled while its lines sleep
            slow = [chat_line(f"s{i}", mock={"sleep": 5}) for i in range(3)]
            slow_file = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(slow))), purpose="batch").id
            cancelled = client.batches.create(
                input_file_id=slow_file, endpoint="/v1/chat/completions", completion_window="24h"
            )
            client.batches.cancel(cancelled.id)
            # an operation batch (the operations API compiles into an ordinary batch)
            body = {"operation": "summarize", "items": ["one", "two"], "model": "test-model"}
            op = c.post(fast_server.url + "/api/batches", json=body)
            assert op.status_code in (200, 201, 202), op.text
            op_id = op.json()["batch_id"]

            def events() -> dict[str, str]:
                found = {}
                for body, headers in receiver.requests:
                    e = client.webhooks.unwrap(body.decode(), headers, secret=hook["secret"])
                    found[e.data.id] = e.type
                return found

            seen = wait_for(lambda: e if len(e := events()) >= 3 else None, 30)
            assert seen[failed.id] == "batch.failed"
            assert seen[cancelled.id] == "batch.cancelled"
            assert seen[op_id] == "batch.completed"
    finally:
        receiver.close()


def test_a_pending_delivery_survives_a_kill_and_keeps_its_event_id(start_server: Callable[..., Server]) -> None:
    receiver = Receiver(failures=1)
    env = {"BATCHGATE_WEBHOOK_RETRY_SCHEDULE": "[3, 1]", "BATCHGATE_WEBHOOK_POLL_INTERVAL": "0.1"}
    try:
        server = start_server(env)
        key = server.create_key("hooks")
        client = OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        with api(server, key) as c:
            hook = c.post("/webhooks", json={"url": receiver.url}).json()
        batch_id = run_batch(client, [chat_line("a")])
        with api(server, key) as c:  # the first attempt failed and is logged
            deliveries = f"/webhooks/{hook['id']}/deliveries"
            wait_for(lambda: (d := c.get(deliveries).json()["data"]) and d[0]["attempts"] == 1, 30)
        server.kill()  # kill -9 with the delivery pending (its next attempt 3 s later)
        server = start_server(env)
        wait_for(lambda: len(receiver.requests) == 2, 30)
        (first_body, first), (second_body, second) = receiver.requests
        assert first["webhook-id"] == second["webhook-id"] and first_body == second_body
        assert client.webhooks.unwrap(second_body.decode(), second, secret=hook["secret"]).data.id == batch_id
        with api(server, key) as c:
            (delivery,) = c.get(f"/webhooks/{hook['id']}/deliveries").json()["data"]
        assert delivery["status"] == "delivered" and [a["status_code"] for a in delivery["attempt_log"]] == [500, 200]
    finally:
        receiver.close()
