"""Continuous batching on one llama.cpp context.

Many sequences are decoded together: every step builds one `llama_batch` holding the
next token of each decoding sequence plus a chunk of prompt tokens of sequences still
being prefilled, so prompt processing and decoding interleave and a short request is
never stuck behind a long one. A sequence that finishes frees its slot at once and a
waiting one takes it on the next step. Besides its `slots`, the context holds one more
slot that only priority (synchronous) requests take: with every slot on batch
sequences, a synchronous request starts on the next step instead of waiting for a batch
sequence to end (seconds, with long generations). Nor does it wait for most of the
step in flight: a step of batch sequences alone is interrupted when a priority request
arrives in its first half (llama.cpp checks an abort flag between graph nodes), its
tokens are taken back, and the next step prefills the priority prompt; the batch
sequences redo the interrupted step after it. In the second half, finishing the step
costs the request less than redoing it would cost the batch.

Each slot has its own KV stream (`kv_unified = false`): attention then never mixes
sequences' cache layouts. On smollm2-135m greedy output is the same token for token
whatever else shares the batch (tests/integration/test_local_engine.py checks it against
one-at-a-time generation); with quantizations whose CPU matmul kernels work on groups of
rows (Q4_K here) the batch's make-up still moves the logits slightly, and some answers on
qwen2.5-0.5b differ late from one-at-a-time ones. The price is a fixed context per slot
(`ctx_per_slot`).

Prompt prefixes are computed once (`prefix_reuse`). A slot keeps the KV of its last
sequence when it ends; a new sequence keeps what its slot's cache shares with its prompt,
or gets a longer shared prefix copied from another slot's stream, and only the rest of
its prompt is prefilled. Batch lines nearly always share one (the chat template's system
turn, an operation's instructions), and on a CPU prefilling a token costs about as much
as generating one. When many sequences arrive together, those that share a prefix with
one still being prefilled wait a step for it instead of each computing it again. The
reused count is reported as `cached_tokens`.

The occupied slots stay one run from slot 0 (`_compact`) and a step's tokens go in slot
order: with a KV stream per sequence, llama.cpp cuts a step into ubatches of consecutive
sequence ids, and a step over scattered slots runs as many small ubatches.

The decode loop runs in its own thread; llama.cpp calls release the GIL.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from batchgate.core.errors import BackendError, InvalidRequestError

log = logging.getLogger("batchgate.engine")


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF the output must match (structured output)
    logprobs: int | None = None  # None: off; k: each token's logprob and the k most likely


@dataclass(slots=True)
class TokenLogprob:
    """A generated token, its log-probability under the model, and the most likely ones."""

    token: bytes
    logprob: float
    top: list[tuple[bytes, float]]


@dataclass(slots=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    logprobs: list[TokenLogprob] | None = None
    cached_tokens: int = 0  # prompt tokens whose KV was reused, not computed


class InvalidGrammarError(InvalidRequestError):
    """llama.cpp refused the grammar made from the request's JSON schema."""

    def __init__(self, reason: str):
        super().__init__(f"Invalid or unsupported json_schema: {reason}", param="response_format", code="invalid_value")


class PromptTooLongError(InvalidRequestError):
    def __init__(self, prompt_tokens: int, limit: int):
        super().__init__(
            f"The prompt is {prompt_tokens} tokens; this model's context per request is {limit} tokens.",
            param="messages",
            code="context_length_exceeded",
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit


@dataclass(eq=False)
class _Sequence:
    prompt: list[int]
    params: SamplingParams
    future: concurrent.futures.Future[Generation]
    max_tokens: int
    slot: int = -1
    fed: int = 0  # prompt tokens already in the KV cache
    reused: int = 0  # of those, the ones found there (a prefix computed for an earlier sequence)
    sampler: Any = None
    logits_at: int = -1  # index in the current batch whose logits are this sequence's
    pending: int | None = None  # the sampled token to feed on the next step
    output: bytearray = field(default_factory=bytearray)
    generated: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    on_text: Callable[[str], None] | None = None  # called with the text so far, per token
    priority: bool = False  # a synchronous request: may take the reserved slot


# llama.cpp logs every tensor it loads to stderr; keep only our own logging. The ctypes
# callback must stay referenced for as long as llama.cpp may call it: module lifetime.
_QUIET = L.llama_log_callback(lambda level, text, data: None)


def _silence_llama_logs() -> None:
    L.llama_log_set(_QUIET, ctypes.c_void_p(0))


def _cpu_has_amx() -> bool:
    try:
        return " amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def model_params() -> Any:
    """llama.cpp's default model parameters, minus its extra CPU buffer types where the
    CPU has AMX: llama-cpp-python 0.3.36's AMX matmul (an extra buffer type) segfaults
    on any prompt longer than one token there. Elsewhere they stay on (weight repacking
    speeds up some quantizations)."""
    params = L.llama_model_default_params()
    if _cpu_has_amx():
        params.use_extra_bufts = False
    return params


# a cached prefix is copied from another slot's stream when it is this many tokens longer
# than the one in the chosen slot (the copy moves the whole stream: a few MB), and a
# sequence waits a step for a prefix being computed when it would save this many
MIN_COPY = 4
MIN_WAIT = 16

KV_TYPES = {"f16": L.GGML_TYPE_F16, "q8_0": L.GGML_TYPE_Q8_0}


def _flag_reader() -> Any:
    """A C function of the shape of ggml's abort callback, `bool f(void *data)`, that is
    true once the one-byte flag at `data` is set: libc's strlen, over a two-byte buffer
    whose second byte stays 0. llama.cpp calls it after every graph node from its own
    thread, without the GIL: a Python callback would take the GIL hundreds of times a step.
    None where libc cannot be opened this way (the engine then finishes steps in flight)."""
    try:
        return ctypes.cast(ctypes.CDLL(None).strlen, L.ggml_abort_callback)
    except (OSError, AttributeError, TypeError):
        return None


_READ_FLAG = _flag_reader()


def context_params(slots: int, ctx_per_slot: int, batch_tokens: int, threads: int, kv_type: str = "q8_0") -> Any:
    """A context of `slots` sequences, each with its own KV stream (see the module doc).

    The KV cache is q8_0 by default: half the memory of f16 (on smollm2-135m with 64
    slots of 256 tokens, 180 MB less) and about 5% faster decoding here, at a precision
    loss llama.cpp's own measurements put in the noise; a quantized V cache needs flash
    attention. "f16" keeps llama.cpp's default."""
    params = L.llama_context_default_params()
    params.n_ctx = slots * ctx_per_slot
    params.n_batch = batch_tokens
    params.n_seq_max = slots
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = False
    params.type_k = params.type_v = KV_TYPES[kv_type]
    if kv_type != "f16":
        params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
    return params


class LlamaEngine:
    """One GGUF model with `slots` sequences decoded together."""

    def __init__(
        self,
        model_path: Path,
        slots: int = 8,
        ctx_per_slot: int = 2048,
        threads: int = 2,
        batch_tokens: int = 512,
        kv_type: str = "q8_0",
        prefix_reuse: bool = True,
    ):
        _silence_llama_logs()
        L.llama_backend_init()
        self.model_path = model_path
        self.slots = slots
        self.ctx_per_slot = ctx_per_slot
        self.batch_tokens = batch_tokens
        self.prefix_reuse = prefix_reuse
        self._model = L.llama_model_load_from_file(str(model_path).encode(), model_params())
        if not self._model:
            raise BackendError(f"llama.cpp could not load {model_path}")
        self._vocab = L.llama_model_get_vocab(self._model)
        self._n_vocab = L.llama_vocab_n_tokens(self._vocab)
        # one more sequence than `slots`: the slot kept for priority requests (`_admit`)
        params = context_params(slots + 1, ctx_per_slot, batch_tokens, threads, kv_type)
        # set (under `_wake`) when a priority request arrives in the first half of a step
        # of batch sequences alone: llama.cpp then abandons the step (`_step`)
        self._interrupt = ctypes.create_string_buffer(2)
        self._halfway = 0.0  # perf_counter() until which the running step may be interrupted
        self._token_seconds = 0.0  # a step's seconds per token (moving average)
        self.interrupted_steps = 0
        if _READ_FLAG is not None:
            params.abort_callback = _READ_FLAG
            params.abort_callback_data = ctypes.cast(self._interrupt, ctypes.c_void_p)
        self._ctx = L.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise BackendError(f"llama.cpp could not create a context for {model_path}")
        self._memory = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(batch_tokens, 0, slots + 1)
        template = L.llama_model_chat_template(self._model, None)
        self._chat = Jinja2ChatFormatter(
            template=(template or b"").decode(),
            eos_token=self._piece(L.llama_vocab_eos(self._vocab)).decode(errors="replace"),
            bos_token=self._piece(L.llama_vocab_bos(self._vocab)).decode(errors="replace"),
        ) if template else None  # fmt: skip
        self._waiting: deque[_Sequence] = deque()
        self._active: dict[int, _Sequence] = {}
        self._kv: list[list[int]] = [[] for _ in range(slots + 1)]  # each slot's cached tokens, by position
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"llama-{model_path.stem}", daemon=True)
        self._thread.start()

    # ---- text <-> tokens ----------------------------------------------------------

    @property
    def renders_tools(self) -> bool:
        """Whether the model's chat template renders `tools` and tool turns itself (as
        Qwen2.5's does); otherwise the caller writes them into the messages."""
        return self._chat is not None and "tools" in self._chat.template

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt for a chat, with the model's own template from the GGUF."""
        if self._chat is None:
            return "".join(f"{m.get('role', 'user')}: {m.get('content', '')}\n" for m in messages) + "assistant: "
        # plain dicts are the wire shape
        return self._chat(messages=messages, tools=tools).prompt  # type: ignore[arg-type]

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        if self._closed:  # its vocabulary is freed (close() frees it after its thread ends)
            raise BackendError("The local engine is shut down.")
        data = text.encode()
        buffer = (L.llama_token * (len(data) + 16))()
        n = L.llama_tokenize(self._vocab, data, len(data), buffer, len(buffer), add_special, True)
        if n < 0:
            raise BackendError("The local engine could not tokenize the prompt.")
        return list(buffer[:n])

    def _piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[:n] if n > 0 else b""

    # ---- requests -----------------------------------------------------------------

    def submit(
        self,
        prompt: list[int],
        params: SamplingParams,
        priority: bool = False,
        on_text: Callable[[str], None] | None = None,
    ) -> concurrent.futures.Future[Generation]:
        """Queue a generation; with `priority` ahead of every waiting one (a synchronous
        request takes the next free slot instead of queueing behind a batch).
        `on_text`, if given, is called from the engine's thread with the text generated so
        far after each token (for streaming). Raises PromptTooLongError when the prompt
        leaves no room.

        `max_tokens` beyond the room left in the slot's context is clamped to it (the
        generation then ends with finish_reason "length")."""
        room = self.ctx_per_slot - len(prompt)
        if room < 1:
            raise PromptTooLongError(len(prompt), self.ctx_per_slot)
        if params.grammar is not None:  # refuse a bad grammar now, not when the slot opens
            L.llama_sampler_free(self._grammar_sampler(params.grammar))
        future: concurrent.futures.Future[Generation] = concurrent.futures.Future()
        tokens = max(0, min(params.max_tokens, room))
        sequence = _Sequence(prompt, params, future, tokens, on_text=on_text, priority=priority)
        with self._wake:
            if priority:
                self._waiting.appendleft(sequence)
                if time.perf_counter() < self._halfway:
                    self._interrupt[0] = b"x"
            else:
                self._waiting.append(sequence)
            self._wake.notify()
        return future

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(30)
        L.llama_batch_free(self._batch)
        L.llama_free(self._ctx)
        L.llama_model_free(self._model)

    # ---- the decode loop ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._active:
                    self._wake.wait()
                if self._closed:
                    break
                self._admit()
                self._compact()
            try:
                self._step()
            except Exception as exc:  # a failed decode must not strand the waiting callers
                log.exception("llama.cpp decode step failed")
                for sequence in list(self._active.values()):
                    self._finish(sequence, error=exc)
        for sequence in [*self._active.values(), *self._waiting]:
            if not sequence.future.done():
                sequence.future.set_exception(BackendError("The local engine was closed.", transient=True))

    def _admit(self) -> None:
        # slot `self.slots`, the last, is the one kept for priority sequences
        free = [slot for slot in range(self.slots + 1) if slot not in self._active]
        held: list[_Sequence] = []  # waiting a step for a prefix an active sequence is computing
        while free and self._waiting:
            if free == [self.slots] and not self._waiting[0].priority:
                break  # only the reserved slot is free (priority sequences wait first in line)
            sequence = self._waiting.popleft()
            if not sequence.priority and self._prefix_coming(sequence.prompt):
                held.append(sequence)
                continue
            if not sequence.future.set_running_or_notify_cancel():
                continue
            self._start_in(free.pop(0), sequence)  # the lowest: the reserved one only when it is the last
        self._waiting.extendleft(reversed(held))

    def _compact(self) -> None:
        """Move the last sequence into the first gap until the occupied slots are one run:
        every gap costs a ubatch (see the module doc; measured: a step of 64 tokens over
        scattered slots took 2.5x as long as over slots 0-63)."""
        while self._active:
            gap = next(slot for slot in range(self.slots + 2) if slot not in self._active)
            last = max(self._active)
            if gap > last:
                return
            sequence = self._active.pop(last)
            L.llama_memory_seq_cp(self._memory, last, gap, -1, -1)  # a whole-stream copy
            L.llama_memory_seq_rm(self._memory, last, -1, -1)
            self._kv[gap], self._kv[last] = self._kv[last], []
            sequence.slot = gap
            self._active[gap] = sequence

    def _cached_prefix(self, prompt: list[int]) -> tuple[int, int]:
        """The slot whose cache shares the longest prefix with `prompt`, and its length."""
        shares = [_shared(tokens, prompt) for tokens in self._kv]
        best = max(range(len(shares)), key=shares.__getitem__)
        return best, shares[best]

    def _prefix_coming(self, prompt: list[int]) -> bool:
        """Whether a sequence being prefilled will soon have computed a prefix of `prompt`
        at least MIN_WAIT tokens longer than any cache holds now: worth waiting a step for."""
        if not self.prefix_reuse:
            return False
        cached = self._cached_prefix(prompt)[1]
        return any(
            s.fed < shared and shared >= cached + MIN_WAIT
            for s in self._active.values()
            if s.fed < len(s.prompt) and (shared := _shared(s.prompt, prompt))
        )

    def _start_in(self, slot: int, sequence: _Sequence) -> None:
        """Give `slot` to `sequence`, keeping (or copying in) the longest cached prefix of
        its prompt; the last prompt token is always fed, as its logits start the answer."""
        keep = 0
        if self.prefix_reuse:
            source, shared = self._cached_prefix(sequence.prompt)
            own = _shared(self._kv[slot], sequence.prompt)
            if shared >= own + MIN_COPY:  # another stream holds more: copy it (a whole-stream copy)
                L.llama_memory_seq_cp(self._memory, source, slot, -1, -1)
                self._kv[slot] = self._kv[source][:shared]
                own = shared
            keep = min(own, len(sequence.prompt) - 1)
        # a memory that cannot drop just a tail (recurrent models), or that no longer holds
        # the start of the kept prefix (a sliding window), starts the slot afresh
        if keep and (
            not L.llama_memory_seq_rm(self._memory, slot, keep, -1)
            or L.llama_memory_seq_pos_min(self._memory, slot) != 0
        ):
            keep = 0
        if not keep:
            L.llama_memory_seq_rm(self._memory, slot, -1, -1)
        del self._kv[slot][keep:]
        sequence.slot, sequence.fed, sequence.reused = slot, keep, keep
        sequence.sampler = self._sampler(sequence.params)
        self._active[slot] = sequence

    def _grammar_sampler(self, grammar: str) -> Any:
        sampler = L.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        if not sampler:
            raise InvalidGrammarError("llama.cpp rejected the grammar")
        return sampler

    def _sampler(self, params: SamplingParams) -> Any:
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if params.grammar is not None:  # first: later samplers only see what it allows
            L.llama_sampler_chain_add(chain, self._grammar_sampler(params.grammar))
        if params.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        if params.top_p < 1:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _step(self) -> None:
        batch, n = self._batch, 0

        def add(token: int, pos: int, slot: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
            batch.seq_id[n][0], batch.logits[n] = slot, logits
            self._kv[slot].append(token)
            n += 1

        # while a priority (synchronous) prompt is being prefilled, a step carries only
        # priority sequences: its first token comes as fast as on an idle engine, and the
        # batch sequences wait that one step (their pending token is fed on the next)
        urgent = any(s.priority and s.fed < len(s.prompt) for s in self._active.values())
        stepping = sorted((s for s in self._active.values() if s.priority or not urgent), key=lambda s: s.slot)
        # decoding sequences feed one token each; prefilling ones share the room left,
        # priority ones first (a long batch prompt would otherwise hold a synchronous
        # request's prompt back for steps)
        room = self.batch_tokens - sum(s.pending is not None for s in stepping)
        chunks: dict[int, int] = {}
        for sequence in sorted(stepping, key=lambda s: not s.priority):
            if sequence.pending is None and room > 0:
                chunks[sequence.slot] = min(len(sequence.prompt) - sequence.fed, room)
                room -= chunks[sequence.slot]
        # what a step that is interrupted takes back: each sequence's cache length, prompt
        # progress and pending token before it
        before = {s.slot: (len(self._kv[s.slot]), s.fed, s.pending) for s in stepping}
        # in slot order: llama.cpp cuts the step into ubatches of consecutive sequence ids
        for sequence in stepping:
            if sequence.pending is not None:
                sequence.logits_at = n
                add(sequence.pending, len(sequence.prompt) + sequence.generated - 1, sequence.slot, True)
                sequence.pending = None
            for _ in range(chunks.get(sequence.slot, 0)):
                last = sequence.fed == len(sequence.prompt) - 1
                if last:
                    sequence.logits_at = n
                add(sequence.prompt[sequence.fed], sequence.fed, sequence.slot, last)
                sequence.fed += 1
        if n == 0:
            return
        batch.n_tokens = n
        # only a step without priority sequences may be interrupted (one that carries them
        # always ends, so a stream of synchronous requests cannot stall each other), and
        # only in its first half: later, finishing it costs the waiting request less than
        # redoing it costs the batch
        started = time.perf_counter()
        with self._wake:
            if not any(s.priority for s in stepping):
                self._halfway = started + n * self._token_seconds / 2
                if any(s.priority for s in self._waiting):
                    self._interrupt[0] = b"x"  # arrived since `_admit`: take it first
        try:
            status = L.llama_decode(self._ctx, batch)
        finally:
            with self._wake:
                self._halfway = 0.0
                self._interrupt[0] = b"\0"
        if status == 2:  # interrupted: llama.cpp dropped the step's tokens from the cache
            self._take_back(stepping, before)
            return
        if status != 0:
            raise BackendError(f"llama_decode returned {status}")
        self._token_seconds += ((time.perf_counter() - started) / n - self._token_seconds) / 8
        for sequence in list(self._active.values()):
            if sequence.logits_at >= 0:
                token = L.llama_sampler_sample(sequence.sampler, self._ctx, sequence.logits_at)
                self._advance(sequence, token, sequence.logits_at)
                sequence.logits_at = -1

    def _take_back(self, stepping: list[_Sequence], before: dict[int, tuple[int, int, int | None]]) -> None:
        """Undo an interrupted step: its sequences' caches, prompt progress and pending
        tokens go back to what they were before it (llama.cpp keeps the ubatches it
        finished, so the cache is cut to the step's start too)."""
        self.interrupted_steps += 1
        for sequence in stepping:
            cached, sequence.fed, sequence.pending = before[sequence.slot]
            L.llama_memory_seq_rm(self._memory, sequence.slot, cached, -1)
            del self._kv[sequence.slot][cached:]
            sequence.logits_at = -1

    def _logprob(self, token: int, at: int, top: int) -> TokenLogprob:
        """The model's log-probability of `token` (softmax of the raw logits, before any
        sampling transform), and the `top` most likely tokens."""
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self._ctx, at), shape=(self._n_vocab,))
        peak = float(logits.max())
        log_total = peak + float(np.log(np.exp(logits - peak).sum()))
        best = np.argpartition(logits, -top)[-top:] if top else np.empty(0, dtype=np.int64)
        best = best[np.argsort(-logits[best])]
        alternatives = [(self._piece(int(t)), float(logits[t]) - log_total) for t in best]
        return TokenLogprob(self._piece(token), float(logits[token]) - log_total, alternatives)

    def _advance(self, sequence: _Sequence, token: int, at: int) -> None:
        if L.llama_vocab_is_eog(self._vocab, token):
            self._finish(sequence, "stop")
            return
        if sequence.params.logprobs is not None:
            sequence.logprobs.append(self._logprob(token, at, sequence.params.logprobs))
        sequence.generated += 1
        sequence.output += self._piece(token)
        if sequence.params.stop:
            text = sequence.output.decode(errors="ignore")
            cut = min((i for s in sequence.params.stop if (i := text.find(s)) >= 0), default=-1)
            if cut >= 0:
                sequence.output = bytearray(text[:cut].encode())
                self._finish(sequence, "stop")
                return
        if sequence.generated >= sequence.max_tokens:
            self._finish(sequence, "length")
            return
        if sequence.on_text is not None:
            sequence.on_text(sequence.output.decode(errors="ignore"))
        sequence.pending = token

    def _finish(self, sequence: _Sequence, reason: str = "stop", error: Exception | None = None) -> None:
        # the slot keeps its cache for the next sequence (`_start_in`), unless the step failed
        self._active.pop(sequence.slot, None)
        L.llama_sampler_free(sequence.sampler)
        if error is not None:
            L.llama_memory_seq_rm(self._memory, sequence.slot, -1, -1)
            self._kv[sequence.slot].clear()
            sequence.future.set_exception(error)
            return
        text = sequence.output.decode(errors="replace")
        logprobs = sequence.logprobs if sequence.params.logprobs is not None else None
        sequence.future.set_result(
            Generation(text, len(sequence.prompt), sequence.generated, reason, logprobs, sequence.reused)
        )


def _shared(cached: list[int], prompt: list[int]) -> int:
    """The length of the common prefix of two token lists (a binary search over slice
    comparisons, which run in C: prompts of thousands of tokens are compared per slot)."""
    low, high = 0, min(len(cached), len(prompt))
    while low < high:
        middle = (low + high + 1) // 2
        if cached[:middle] == prompt[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
