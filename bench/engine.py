"""Engine: generated tokens/s of a 64-request batch on the embedded llama.cpp engine.

Ways over the same 64 short chat prompts (greedy, max_tokens 64, 2 threads) on the same
model, interleaved in rounds (a, c, a, c, ...; bench/_common.interleave; --rounds):
  (a) batchgate: a batch through a real `batchgate serve` (local backend, 64 slots), from
      `POST /v1/batches` to `completed`; also the time to the first finished line;
  (b) reference: a sequential loop of `llama_cpp.Llama.create_chat_completion`;
  (c) reference: llama.cpp's multi-sequence decode driven directly (one low-level
      `llama_batch` carrying all 64 sequences: prompts, then one token each per step),
      with the same per-sequence KV layout the engine uses.
(b) runs only with --sequential (it is slow). Targets (issues 3, 15): (a) >= 90% of (c),
min and median over the kept rounds (a round whose (c) collapsed under a neighbour is
discarded and repeated); (a)'s time to first result under half its run; (a) >= 1.8x (b)
(with --sequential); server RSS <= model file + 600 MB. One server serves every round.

All three use the same KV cache type (--kv-type, the engine's default q8_0). The batch
is polled every 0.5 s (--poll), as a client would: the references have no poller, and on
a 2-core machine a 50 Hz poller takes about a tenth of llama.cpp's CPU (measured: 0.84
of (c) at 0.02 s, 0.93 at 1 s). The completion is seen up to one poll late, which only
counts against (a).
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc
import llama_cpp as L
import llama_cpp.llama_cpp as bindings
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from batchgate.engines.local.catalog import ModelCatalog
from batchgate.engines.local.engine import KV_TYPES, context_params, model_params

# every way loads the model with the engine's parameters (on AMX CPUs llama.cpp's extra
# buffer types crash: see engine.model_params); the Llama class reads them from here
bindings.llama_model_default_params = model_params

NAME = "engine"
_QUIET = L.llama_log_callback(lambda *a: None)  # referenced for the process's lifetime
TOPICS = ["rivers", "bread", "stars", "trains", "owls", "rain", "chess", "salt", "maps", "bees", "glass", "tea"]


def prompts(n: int, round_: int = 0) -> list[str]:
    """The requests of one round. Their number changes from round to round, so a server
    that keeps prompt caches (batchgate, llama-server) may reuse the chat template's
    prefix, as it would in use, but never a whole prompt of an earlier round."""
    return [f"Write two sentences about {TOPICS[i % len(TOPICS)]} (note {round_}.{i})." for i in range(n)]


def sequential(model: Path, questions: list[str], max_tokens: int, threads: int, kv_type: str) -> tuple[float, int]:
    kv = {} if kv_type == "f16" else {"flash_attn": True, "type_k": KV_TYPES[kv_type], "type_v": KV_TYPES[kv_type]}
    llm = L.Llama(str(model), n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False, **kv)
    t0, tokens = time.perf_counter(), 0
    for q in questions:
        out = llm.create_chat_completion([{"role": "user", "content": q}], max_tokens=max_tokens, temperature=0)
        tokens += out["usage"]["completion_tokens"]
    elapsed = time.perf_counter() - t0
    del llm
    return elapsed, tokens


def direct(
    model_path: Path, questions: list[str], max_tokens: int, threads: int, ctx_per_seq: int, kv_type: str
) -> tuple[float, int]:
    n = len(questions)
    model = L.llama_model_load_from_file(str(model_path).encode(), model_params())
    vocab = L.llama_model_get_vocab(model)
    # the engine's context (per-sequence KV streams, its KV type), with one batch for all prompts
    ctx = L.llama_init_from_model(model, context_params(n, ctx_per_seq, 4096, threads, kv_type))
    chat = Jinja2ChatFormatter(template=L.llama_model_chat_template(model, None).decode(), eos_token="", bos_token="")
    token_lists = []
    for q in questions:
        text = chat(messages=[{"role": "user", "content": q}]).prompt.encode()
        buf = (L.llama_token * (len(text) + 16))()
        token_lists.append(list(buf[: L.llama_tokenize(vocab, text, len(text), buf, len(buf), True, True)]))
    batch = L.llama_batch_init(4096, 0, n)
    samplers = []
    for _ in range(n):
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        samplers.append(chain)
    t0, generated = time.perf_counter(), 0
    k, logits_at = 0, {}
    for s, toks in enumerate(token_lists):
        for j, t in enumerate(toks):
            batch.token[k], batch.pos[k], batch.n_seq_id[k], batch.seq_id[k][0] = t, j, 1, s
            batch.logits[k] = j == len(toks) - 1
            if j == len(toks) - 1:
                logits_at[s] = k
            k += 1
    batch.n_tokens = k
    assert L.llama_decode(ctx, batch) == 0
    pos, counts = [len(t) for t in token_lists], [0] * n
    while logits_at:
        k, nxt = 0, {}
        for s, i in logits_at.items():
            tok = L.llama_sampler_sample(samplers[s], ctx, i)
            if L.llama_vocab_is_eog(vocab, tok):
                continue
            counts[s] += 1
            generated += 1
            if counts[s] >= max_tokens:
                continue
            batch.token[k], batch.pos[k], batch.n_seq_id[k], batch.seq_id[k][0], batch.logits[k] = tok, pos[s], 1, s, 1
            pos[s] += 1
            nxt[s] = k
            k += 1
        if not k:
            break
        batch.n_tokens = k
        assert L.llama_decode(ctx, batch) == 0
        logits_at = nxt
    elapsed = time.perf_counter() - t0
    for chain in samplers:
        L.llama_sampler_free(chain)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return elapsed, generated


class Gateway:
    """Way (a): one `batchgate serve` for every round (the model loaded once, as in a
    long-running server); each call runs the batch and returns its tokens/s."""

    def __init__(self, n: int, args, name: str = NAME) -> None:  # type: ignore[no-untyped-def]
        self.args = args
        self.n = n
        self.rounds = itertools.count(1)  # round 0's first prompt is the warm-up
        env = {
            "BATCHGATE_BACKEND": "local",
            "BATCHGATE_ENGINE_SLOTS": getattr(args, "slots", None) or n,
            "BATCHGATE_ENGINE_CTX_PER_SLOT": args.ctx_per_seq,
            "BATCHGATE_ENGINE_THREADS": args.threads,
            "BATCHGATE_CONCURRENCY": n,
            "BATCHGATE_ENGINE_KV_TYPE": args.kv_type,
            "BATCHGATE_ENGINE_PREFIX_REUSE": str(getattr(args, "prefix_reuse", True)).lower(),
        }
        self._server_cm = bc.run_server(name, env=env, tmp_dir=args.tmp_dir)  # its log: bench/out/<name>-server.log
        self.server = self._server_cm.__enter__()
        self.rss_peak = 0
        with bc.client(self.server) as c:
            # warm-up: load the model before the clock starts, as a long-running server has
            warm = c.post(
                "/v1/files",
                files={"file": ("w.jsonl", json.dumps(self._lines(0)[0]).encode())},
                data={"purpose": "batch"},
            )
            bc.wait_status(c, bc.create_batch(c, warm.json()["id"])["id"], "completed", args.timeout, 0.1)

    def _lines(self, round_: int) -> list[dict]:
        return [
            {
                "custom_id": f"q{i}",
                "method": "POST",
                "url": bc.ENDPOINT,
                "body": {
                    "model": self.args.model,
                    "messages": [{"role": "user", "content": q}],
                    "max_tokens": self.args.max_tokens,
                    "temperature": 0,
                },
            }
            for i, q in enumerate(prompts(self.n, round_))
        ]

    def close(self) -> None:
        self._server_cm.__exit__(None, None, None)

    def __call__(self) -> tuple[float, dict]:
        args = self.args
        lines = self._lines(next(self.rounds))
        with bc.client(self.server) as c:
            data = "\n".join(json.dumps(line) for line in lines).encode()
            file_id = c.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}).json()["id"]
            t0 = time.perf_counter()
            batch_id = bc.create_batch(c, file_id)["id"]
            first = None
            while True:
                batch = c.get(f"/v1/batches/{batch_id}").json()
                now = time.perf_counter()
                if first is None and batch["request_counts"]["completed"]:
                    first = now - t0
                if batch["status"] == "completed":
                    break
                if now - t0 > args.timeout:
                    raise RuntimeError("timed out")
                time.sleep(args.poll)
        elapsed = now - t0
        self.rss_peak = max(self.rss_peak, self.server.rss.peak(t0, now))
        if batch["request_counts"]["completed"] != len(lines):
            raise RuntimeError(f"batchgate: {batch['request_counts']}")
        tokens = batch["usage"]["output_tokens"]
        assert first is not None
        return tokens / elapsed, {"seconds": elapsed, "tokens": tokens, "first_s": first, "first_frac": first / elapsed}


def main() -> None:
    parser = bc.base_parser(__doc__.splitlines()[0], 64)
    parser.add_argument("--model", default="smollm2-135m", help="catalog name (default smollm2-135m)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx-per-seq", type=int, default=256)
    parser.add_argument("--slots", type=int, default=None, help="(a)'s engine slots (default: one per request)")
    parser.add_argument("--rounds", type=int, default=3, help="kept rounds of (a), (c) interleaved (default 3)")
    parser.add_argument("--collapse", type=float, default=0.6, help="discard a round below this x the best (c)")
    parser.add_argument("--sequential", action="store_true", help="also run (b) in every round (slow)")
    parser.set_defaults(poll=0.5)
    parser.add_argument("--kv-type", choices=sorted(KV_TYPES), default="q8_0", help="KV cache type, all ways")
    args = parser.parse_args()
    L.llama_log_set(_QUIET, ctypes.c_void_p(0))
    path = ModelCatalog(Path(os.environ.get("TMPDIR", "/tmp")) / "batchgate-bench-models").resolve(args.model)
    # each way is called once a round, so each one's count gives every way the round's prompts
    direct_rounds, sequential_rounds = itertools.count(1), itertools.count(1)

    def run_direct() -> tuple[float, dict]:
        questions = prompts(args.lines, next(direct_rounds))
        s, tokens = direct(path, questions, args.max_tokens, args.threads, args.ctx_per_seq, args.kv_type)
        return tokens / s, {"seconds": s, "tokens": tokens}

    def run_sequential() -> tuple[float, dict]:
        questions = prompts(args.lines, next(sequential_rounds))
        s, tokens = sequential(path, questions, args.max_tokens, args.threads, args.kv_type)
        return tokens / s, {"seconds": s, "tokens": tokens}

    gateway = Gateway(args.lines, args)
    try:
        ways = {"batchgate": gateway, "direct": run_direct}
        if args.sequential:
            ways["sequential"] = run_sequential
        res = bc.interleave(ways, args.rounds, "direct", collapse=args.collapse)
    finally:
        gateway.close()
    kept = res.kept()
    first = [r.samples["batchgate"].extra["first_s"] for r in kept]
    frac = [r.samples["batchgate"].extra["first_frac"] for r in kept]
    model_mb = path.stat().st_size
    table = [
        (
            "model",
            f"{args.model} ({bc.mb(model_mb)}), {args.lines} requests, max_tokens {args.max_tokens}, "
            f"{args.threads} threads, KV {args.kv_type}, poll {args.poll} s",
        ),
        *bc.interleaved_rows(
            res,
            "tokens/s",
            {
                "batchgate": "(a) batchgate batch, create -> completed",
                "direct": "(c) direct llama_batch, all sequences",
                "sequential": "(b) sequential Llama.create_chat_completion",
            },
        ),
        ("(a) time to first result", bc.min_median(first, 1, " s")),
        ("(a) time to first result / run", bc.min_median(frac, 2)),
        ("server peak RSS (with job process)", f"{bc.mb(gateway.rss_peak)} (model file {bc.mb(model_mb)})"),
    ]
    ratio = bc.stats(res.ratios("batchgate"))
    result = bc.default_result(args) | {
        "interleaved": res.as_json(),
        "ratio_vs_direct": ratio,
        "first_result_fraction": bc.stats(frac),
        "server_rss_peak_bytes": gateway.rss_peak,
    }
    targets = bc.Targets()
    if args.sequential:
        seq = bc.stats(res.ratios("batchgate", "sequential"))
        targets.check("engine_vs_sequential_median>=1.8", seq["median"], seq["median"] >= 1.8)
    targets.check("engine_vs_direct_median>=0.9", ratio["median"], ratio["median"] >= 0.9)
    targets.check("engine_vs_direct_min>=0.9", ratio["min"], ratio["min"] >= 0.9)
    fr = bc.stats(frac)
    targets.check("engine_first_result_fraction_max<0.5", fr["max"], fr["max"] < 0.5)
    rss_limit = model_mb + 600 * bc.MB
    targets.check("engine_rss_mb<=model+600", gateway.rss_peak / bc.MB, gateway.rss_peak <= rss_limit)
    bc.report(NAME, args, table, result, targets)


if __name__ == "__main__":
    main()
