"""The embedded llama.cpp engine on a real model (smollm2-135m, installed by `make setup`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import Server, answer, chat_line, jsonl, parse_jsonl, wait_for

from batchgate.core.ports import BackendRequest
from batchgate.core.ratelimit import estimate_cost
from batchgate.core.routing import BUILTIN_BACKEND, Router, RoutingConfig
from batchgate.engines.local.backend import LocalBackend
from batchgate.engines.local.catalog import ModelCatalog
from batchgate.engines.local.engine import LlamaEngine, PromptTooLongError, SamplingParams, _shared

MODEL = "smollm2-135m"
QUESTIONS = [
    "What is 2+2?",
    "Name a color.",
    "Say hello in French.",
    "What is the capital of France?",
    "Write a haiku about rain.",
    "List three fruits.",
    "Why is the sky blue?",
    "Give me a synonym for happy.",
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaEngine]:
    path = ModelCatalog(tmp_path_factory.mktemp("models")).resolve(MODEL)
    engine = LlamaEngine(path, slots=4, ctx_per_slot=512, threads=2)
    yield engine
    engine.close()


def prompt(engine: LlamaEngine, question: str) -> list[int]:
    return engine.tokenize(engine.chat_prompt([{"role": "user", "content": question}]))


def test_batched_generation_equals_one_at_a_time(engine: LlamaEngine) -> None:
    # Each slot has its own KV stream, so greedy decoding gives the same tokens whatever
    # else shares the batch; with a unified KV cache llama.cpp's results would depend on
    # the batch's make-up (seen here: 2 of 4 answers differed).
    greedy = SamplingParams(max_tokens=24, temperature=0)
    together = [engine.submit(prompt(engine, q), greedy) for q in QUESTIONS]  # 8 requests, 4 slots
    together_text = [f.result(120).text for f in together]
    alone_text = [engine.submit(prompt(engine, q), greedy).result(60).text for q in QUESTIONS]
    assert together_text == alone_text
    assert all(together_text)


def test_a_priority_request_starts_while_every_slot_holds_a_batch_sequence(engine: LlamaEngine) -> None:
    """The engine keeps one slot beyond its `slots` for priority (synchronous) requests:
    one submitted while batch sequences fill every slot and more wait starts at once,
    instead of after a batch sequence ends, and the waiting batch sequences do not take it."""
    long = SamplingParams(max_tokens=300, temperature=0, grammar='root ::= "ab"{300}')  # no early end
    batch = [engine.submit(prompt(engine, "Write a long story."), long) for _ in range(engine.slots + 2)]
    wait_for(lambda: sum(f.running() for f in batch) == engine.slots, 30, 0.005)  # every slot taken, 2 wait
    quick = engine.submit(prompt(engine, "Say hi."), SamplingParams(max_tokens=4, temperature=0), priority=True)
    assert quick.result(60).text
    assert not any(f.done() for f in batch), "the priority request ended before any batch sequence"
    assert sum(f.running() for f in batch) == engine.slots, "the waiting batch sequences did not take its slot"
    for f in batch:
        f.result(300)


def test_a_priority_request_interrupts_a_batch_step_and_changes_no_batch_answer(engine: LlamaEngine) -> None:
    """A priority request arriving during a step of batch sequences alone does not wait for
    it: llama.cpp abandons the step and the batch sequences redo it afterwards, with the
    same answers as without the interruption."""
    greedy = SamplingParams(max_tokens=64, temperature=0)
    questions = QUESTIONS[: engine.slots]
    undisturbed = [f.result(120).text for f in [engine.submit(prompt(engine, q), greedy) for q in questions]]
    interrupted_before = engine.interrupted_steps
    batch = [engine.submit(prompt(engine, q), greedy) for q in questions]
    wait_for(lambda: all(f.running() for f in batch), 30, 0.005)
    quick = SamplingParams(max_tokens=2, temperature=0)
    # one that lands between two steps or in a step's second half waits for it: retry
    while engine.interrupted_steps == interrupted_before and not any(f.done() for f in batch):
        assert engine.submit(prompt(engine, "Say hi."), quick, priority=True).result(60).text
    assert engine.interrupted_steps > interrupted_before, "no priority request interrupted a batch step"
    assert [f.result(120).text for f in batch] == undisturbed


def test_max_tokens_stop_and_usage(engine: LlamaEngine) -> None:
    tokens = prompt(engine, "Count from one to twenty in words, separated by commas.")
    capped = engine.submit(tokens, SamplingParams(max_tokens=5, temperature=0)).result(60)
    assert (capped.finish_reason, capped.completion_tokens, capped.prompt_tokens) == ("length", 5, len(tokens))
    full = engine.submit(tokens, SamplingParams(max_tokens=40, temperature=0)).result(60)
    assert full.text.startswith(capped.text)
    stop = full.text.split()[2]  # a word the model does produce
    stopped = engine.submit(tokens, SamplingParams(max_tokens=40, temperature=0, stop=(stop,))).result(60)
    assert stopped.finish_reason == "stop" and stop not in stopped.text
    assert full.text.startswith(stopped.text)


def test_prompt_longer_than_the_context(engine: LlamaEngine) -> None:
    with pytest.raises(PromptTooLongError) as info:
        engine.submit(list(range(1, 600)), SamplingParams())
    assert (info.value.prompt_tokens, info.value.limit) == (599, 512)


def test_seeded_sampling_is_reproducible(engine: LlamaEngine) -> None:
    tokens = prompt(engine, "Invent a name for a cat.")
    params = SamplingParams(max_tokens=12, temperature=0.9, seed=42)
    runs = list(concurrent.futures.as_completed([engine.submit(tokens, params) for _ in range(3)]))
    assert len({f.result().text for f in runs}) == 1


def test_a_shared_prompt_prefix_is_computed_once_and_changes_no_answer(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Sequences arriving together that share a prefix wait a step for the first one to
    compute it, then copy it from its stream; a later sequence reuses a slot's cache; a
    sequence that ends early leaves a gap the engine closes by moving the last one. The
    answers are those of one-at-a-time generation with every prompt computed in full."""
    path = ModelCatalog(tmp_path_factory.mktemp("models")).resolve(MODEL)
    lengths = [16, 3, 16, 8]  # the second ends first: the fourth moves into its slot
    with contextlib.closing(LlamaEngine(path, slots=4, ctx_per_slot=256, threads=2, prefix_reuse=False)) as plain:
        prompts = [prompt(plain, q) for q in [*QUESTIONS[:4], QUESTIONS[5]]]
        expected = [
            plain.submit(p, SamplingParams(max_tokens=m, temperature=0)).result(60)
            for p, m in zip(prompts, [*lengths, 16], strict=True)
        ]
    assert all(g.text and g.cached_tokens == 0 for g in expected)
    with contextlib.closing(LlamaEngine(path, slots=4, ctx_per_slot=256, threads=2)) as engine:
        submitted = [
            engine.submit(p, SamplingParams(max_tokens=m, temperature=0))
            for p, m in zip(prompts[:4], lengths, strict=True)
        ]
        together = [f.result(120) for f in submitted]
        greedy = SamplingParams(max_tokens=16, temperature=0)
        engine.submit(prompts[2], greedy).result(60)
        again = engine.submit(prompts[2], greedy).result(60)  # in the slot the one before left: all cached
        other = engine.submit(prompts[4], greedy).result(60)
    assert [g.text for g in [*together, other]] == [g.text for g in expected]
    assert again.text == expected[2].text
    # the first computes its prompt alone; the others copy what they share with it (the
    # chat template's system turn and more) and compute the rest
    assert together[0].cached_tokens == 0
    assert [g.cached_tokens for g in together[1:]] == [_shared(prompts[0], p) for p in prompts[1:4]]
    assert min(g.cached_tokens for g in together[1:]) >= 20
    assert again.cached_tokens == len(prompts[2]) - 1  # its last token is fed again for its logits
    assert other.cached_tokens >= 20


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [([], [1], 0), ([1, 2, 3], [1, 2, 3], 3), ([1, 2, 3], [1, 2], 2), ([1, 2, 9, 4], [1, 2, 3, 4], 2), ([5], [1], 0)],
)
def test_shared_prefix_length(a: list[int], b: list[int], expected: int) -> None:
    assert _shared(a, b) == _shared(b, a) == expected


def test_backend_responses_and_errors(tmp_path: Path) -> None:
    backend = LocalBackend(ModelCatalog(tmp_path), default_model=MODEL, slots=2, ctx_per_slot=256)

    async def run() -> None:
        try:
            chat = await backend.execute(
                BackendRequest(
                    "a",
                    "/v1/chat/completions",
                    chat_line("a", "Hi", model="default", temperature=0, max_tokens=8)["body"],
                )
            )
            assert chat.status_code == 200 and chat.body["object"] == "chat.completion"
            usage = chat.body["usage"]
            assert (chat.input_tokens, chat.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
            assert 0 < usage["completion_tokens"] <= 8
            text = await backend.execute(
                BackendRequest(
                    "b",
                    "/v1/completions",
                    {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0},
                )
            )
            assert text.status_code == 200 and text.body["choices"][0]["finish_reason"] == "length"
            unknown = await answer(
                backend,
                BackendRequest(
                    "c", "/v1/chat/completions", {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}
                ),
            )
            assert unknown.status_code == 404 and unknown.body["error"]["code"] == "model_not_found"
            assert MODEL in unknown.body["error"]["message"]
            long = await answer(
                backend, BackendRequest("d", "/v1/completions", {"model": MODEL, "prompt": "word " * 400})
            )
            assert long.status_code == 400 and long.body["error"]["code"] == "context_length_exceeded"
            assert "256 tokens" in long.body["error"]["message"]
            bad = await answer(
                backend, BackendRequest("e", "/v1/chat/completions", {"model": MODEL, "messages": [], "max_tokens": 0})
            )
            assert bad.status_code == 400 and bad.body["error"]["param"] == "max_tokens"
            bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": "not a schema"}}
            body = chat_line("f", "x", model=MODEL, response_format=bad_schema)["body"]
            refused = await answer(backend, BackendRequest("f", "/v1/chat/completions", body))
            assert refused.status_code == 400 and refused.body["error"]["param"] == "response_format.json_schema"
            body = chat_line("g", "x", model=MODEL, top_logprobs=3)["body"]
            refused = await answer(backend, BackendRequest("g", "/v1/chat/completions", body))
            assert refused.status_code == 400 and refused.body["error"]["param"] == "top_logprobs"
            body = chat_line("h", "x", model=MODEL, n=9)["body"]
            refused = await answer(backend, BackendRequest("h", "/v1/chat/completions", body))
            assert refused.status_code == 400 and refused.body["error"]["param"] == "n"
            body = chat_line("i", "Name an animal.", model=MODEL, n=3, temperature=1.0, seed=7, max_tokens=6)["body"]
            several = await backend.execute(BackendRequest("i", "/v1/chat/completions", body))
            choices = several.body["choices"]
            assert [c["index"] for c in choices] == [0, 1, 2] and all(c["message"]["content"] for c in choices)
            assert several.output_tokens == several.body["usage"]["completion_tokens"] <= 18
            again = await backend.execute(BackendRequest("i", "/v1/chat/completions", body))
            assert [c["message"]["content"] for c in again.body["choices"]] == [
                c["message"]["content"] for c in choices
            ]
        finally:
            await backend.aclose()

    asyncio.run(run())


def test_rate_limits_count_a_loaded_models_prompt_with_its_tokenizer(tmp_path: Path) -> None:
    """What a key's token limits charge at admission (core/ratelimit.estimate_cost): the
    prompt's tokens by the local model's own tokenizer and chat template once it is
    loaded, exactly what its usage reports; before that, the 4-characters estimate."""
    backend = LocalBackend(ModelCatalog(tmp_path), default_model=MODEL, slots=2, ctx_per_slot=256)
    router = Router(RoutingConfig(), {BUILTIN_BACKEND: backend}, backend)
    body = chat_line("a", "Count the tokens of this question, please.", model=MODEL, max_tokens=2)["body"]
    url = "/v1/chat/completions"

    async def run() -> None:
        assert router.prompt_tokens(url, body) is None, "not loaded: counting is no reason to load a model"
        estimated = estimate_cost(body, url, router.prompt_tokens).input_tokens
        try:
            answer = await backend.execute(BackendRequest("a", url, body))
            assert answer.status_code == 200
            counted = estimate_cost(body, url, router.prompt_tokens)
            assert counted.input_tokens == answer.input_tokens != estimated
            assert counted.output_tokens == 2
            assert router.prompt_tokens("/v1/embeddings", {"model": MODEL, "input": "x"}) is None
            assert router.prompt_tokens(url, {"model": MODEL, "messages": "no list"}) is None, "refused later"
        finally:
            await backend.aclose()
        assert router.prompt_tokens(url, body) is None, "closed"

    asyncio.run(run())


def test_logprobs_are_the_models_own(tmp_path: Path) -> None:
    backend = LocalBackend(ModelCatalog(tmp_path), default_model=MODEL, slots=2, ctx_per_slot=256)
    chat_body = chat_line("a", "Name a fruit.", model=MODEL, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3)
    text_body = {"model": MODEL, "prompt": "One, two,", "max_tokens": 3, "temperature": 0, "logprobs": 2}

    async def run() -> tuple:
        try:
            chat = await backend.execute(BackendRequest("a", "/v1/chat/completions", chat_body["body"]))
            text = await backend.execute(BackendRequest("b", "/v1/completions", text_body))
            return chat, text
        finally:
            await backend.aclose()

    chat, text = asyncio.run(run())
    choice = chat.body["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == chat.output_tokens and "".join(t["token"] for t in content) == choice["message"]["content"]
    for t in content:
        assert t["logprob"] <= 0 and len(t["top_logprobs"]) == 3
        assert bytes(t["bytes"]).decode(errors="replace") == t["token"]
        # greedy: the chosen token is the most likely one, and the alternatives are ranked
        assert t["top_logprobs"][0]["token"] == t["token"] and t["top_logprobs"][0]["logprob"] == t["logprob"]
        assert [a["logprob"] for a in t["top_logprobs"]] == sorted(
            (a["logprob"] for a in t["top_logprobs"]), reverse=True
        )
        assert sum(math.exp(a["logprob"]) for a in t["top_logprobs"]) <= 1 + 1e-6
    legacy = text.body["choices"][0]["logprobs"]
    assert len(legacy["tokens"]) == len(legacy["token_logprobs"]) == len(legacy["top_logprobs"]) == 3
    assert all(len(top) <= 2 for top in legacy["top_logprobs"]) and legacy["text_offset"][0] == 0


REVIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string"},
    },
    "required": ["sentiment", "stars", "summary"],
}


def test_structured_output_always_parses_and_matches_the_schema(tmp_path: Path) -> None:
    backend = LocalBackend(ModelCatalog(tmp_path), default_model=MODEL, slots=4, ctx_per_slot=512)
    reviews = [
        "Great sound, lasts all day.",
        "Broke after a week.",
        "It is fine.",
        "Love it!",
        "Too loud, returned it.",
    ]
    schema_format = {"type": "json_schema", "json_schema": {"name": "review", "schema": REVIEW_SCHEMA}}

    def body(i: int, text: str) -> dict:
        response_format = schema_format if i % 2 else {"type": "json_object"}
        line = chat_line(
            str(i), f"Review: {text}\nAnswer in JSON.", model=MODEL, temperature=0.7, seed=i, max_tokens=96
        )
        return {**line["body"], "response_format": response_format}

    async def run() -> list:
        try:
            calls = [
                backend.execute(BackendRequest(str(i), "/v1/chat/completions", body(i, text)))
                for i, text in enumerate(reviews * 2)
            ]
            return await asyncio.gather(*calls)
        finally:
            await backend.aclose()

    for i, response in enumerate(asyncio.run(run())):
        assert response.status_code == 200
        choice = response.body["choices"][0]
        if choice["finish_reason"] == "length":
            continue  # cut off by max_tokens: valid so far, but not a whole document
        parsed = json.loads(choice["message"]["content"])
        if i % 2:
            assert set(parsed) == {"sentiment", "stars", "summary"}
            assert parsed["sentiment"] in ("positive", "negative", "neutral")
            assert isinstance(parsed["stars"], int) and 1 <= parsed["stars"] <= 5
            assert isinstance(parsed["summary"], str)
        else:
            assert isinstance(parsed, dict)


def test_a_batch_on_the_local_model(start_server: Callable[..., Server]) -> None:
    server = start_server(env={"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": MODEL}, insecure=True)
    import httpx

    c = httpx.Client(base_url=server.url + "/v1", timeout=60)
    rows = [chat_line(f"q{i}", q, model="default", temperature=0, max_tokens=16) for i, q in enumerate(QUESTIONS)]
    rows.append(chat_line("long", "x" * 20_000, model="default"))  # more tokens than the context: 400
    file_id = c.post("/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    batch_id = c.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()["id"]
    batch = wait_for(lambda: (b := c.get(f"/batches/{batch_id}").json())["status"] == "completed" and b, 180, 0.2)
    assert batch["request_counts"] == {"total": 9, "completed": 8, "failed": 1}  # (unknown models fail validation)
    output = parse_jsonl(c.get(f"/files/{batch['output_file_id']}/content").content)
    assert all(r["response"]["body"]["choices"][0]["message"]["content"] for r in output)
    assert batch["usage"]["output_tokens"] == sum(r["response"]["body"]["usage"]["completion_tokens"] for r in output)
    errors = parse_jsonl(c.get(f"/files/{batch['error_file_id']}/content").content)
    assert errors[0]["custom_id"] == "long" and errors[0]["response"]["status_code"] == 400


def test_synchronous_endpoints_with_the_openai_client(start_server: Callable[..., Server]) -> None:
    import openai

    server = start_server(env={"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": MODEL}, insecure=True)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert {m.id for m in client.models.list()} >= {"default", MODEL}
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.content and chat.usage is not None and 0 < chat.usage.completion_tokens <= 8
    again = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0
    )  # its prompt is in a slot's cache: reported as OpenAI reports prompt caching
    assert again.choices[0].message.content == chat.choices[0].message.content
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    text = client.completions.create(model="default", prompt="The sky is", max_tokens=4, temperature=0)
    assert text.choices[0].finish_reason == "length" and text.usage is not None and text.usage.completion_tokens == 4
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    # streamed chunks reassemble to the same text as the plain answer, stop strings included
    question = [{"role": "user", "content": "Count from one to ten in words."}]
    plain = client.chat.completions.create(model=MODEL, messages=question, max_tokens=24, temperature=0, stop=["five"])
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=question, max_tokens=24, temperature=0, stop=["five"], stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content and len(chunks) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        plain.choices[0].finish_reason
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=question, stream=True)


def test_a_synchronous_request_is_served_ahead_of_a_running_batch(start_server: Callable[..., Server]) -> None:
    import time

    import httpx

    env = {"BATCHGATE_BACKEND": "local", "BATCHGATE_DEFAULT_MODEL": MODEL, "BATCHGATE_ENGINE_SLOTS": "2"}
    server = start_server(env=env, insecure=True)
    c = httpx.Client(base_url=server.url + "/v1", timeout=120)
    rows = [
        chat_line(f"b{i}", f"Tell a long story about {i}.", model=MODEL, temperature=0, max_tokens=48)
        for i in range(40)
    ]
    file_id = c.post("/files", files={"file": ("in.jsonl", jsonl(rows))}, data={"purpose": "batch"}).json()["id"]
    batch_id = c.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()["id"]
    wait_for(lambda: c.get(f"/batches/{batch_id}").json()["request_counts"]["completed"] >= 2, 120, 0.1)
    started = time.perf_counter()
    reply = c.post(
        "/chat/completions", json=chat_line("s", "Say hi.", model=MODEL, temperature=0, max_tokens=8)["body"]
    )
    took = time.perf_counter() - started
    assert reply.status_code == 200
    remaining = c.get(f"/batches/{batch_id}").json()["request_counts"]
    # 40 lines on 2 slots take far longer than one short answer: had it queued behind
    # the batch, the batch would be (nearly) done by now. (No bound in seconds: on a
    # loaded 2-core machine the answer itself can take 20 s.)
    assert remaining["completed"] < 30, (took, remaining)
