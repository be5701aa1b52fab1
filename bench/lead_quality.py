"""Lead-tier quality: how often the lead-scoring agent puts a lead in its true tier.

    .venv/bin/python bench/lead_quality.py [--model qwen2.5-1.5b] [--model smollm2-135m] [--record-results]

A benchmark, not a test (issue 13, "Quality"): no pass/fail target. Every lead of
bench/data/leads_labelled.jsonl (64 short lead descriptions written for this benchmark, 16
per tier) goes, as one agent batch, through `POST /v1/agent/batch/completions` on a real
`batchgate serve` (local backend), one server per model. The agent is the lead-scoring agent
of examples/lead_scoring.py (structured output {score 0-100, tier A-D, reason}) with a system
prompt that spells out the rules the leads were labelled by, so the true tier is defined:

  three signals, each yes or no: a senior buyer (C-level, VP, Head of, Director), strong
  intent (asked for a demo or for pricing/a quote, or was referred by an existing customer),
  a budget (a stated budget of at least $50,000 a year); tier A = all three, B = two, C = one,
  D = none, and D regardless for a disqualified lead (student, intern, job seeker, competitor,
  someone selling to us, asked not to be contacted, purchased cold-list contact with no budget).

Each lead in the data file carries those signals; the script checks that its tier follows from
them before anything runs. Measured per model: tier accuracy (an unparseable answer or a failed
record counts as wrong), the confusion matrix (true tier -> answered tier), unparseable answers
and failed records, whether the score lies in its tier's range, tokens per lead, wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

sys.path.insert(0, str(bc.ROOT / "examples"))
from lead_scoring import SCHEMA

from batchgate import Client

NAME = "lead_quality"
DATA = bc.BENCH_DIR / "data" / "leads_labelled.jsonl"
TIERS = ["A", "B", "C", "D"]
SCORE_RANGES = {"A": (80, 100), "B": (60, 79), "C": (35, 59), "D": (0, 34)}
DEFAULT_MODELS = ["qwen2.5-1.5b", "smollm2-135m"]

SYSTEM_PROMPT = """You qualify B2B sales leads for a data-infrastructure product.
Check three signals, each yes or no:
1. Senior buyer: the contact's title is C-level (CEO, CTO, CIO, CFO, Chief ... Officer), VP or SVP, Head of ..., or Director. Managers, engineers, analysts, developers, consultants and other staff are not senior buyers.
2. Strong intent: the lead requested a demo, asked for pricing or a quote, or was referred by an existing customer. Webinars, ebooks, whitepapers, newsletters, blog posts, free trials, trade-show badge scans and visits to the pricing page are not strong intent.
3. Budget: a stated budget of at least $50,000 a year. No budget, an unknown budget or less than $50,000 a year does not count.
Tier A: all three signals. Tier B: exactly two. Tier C: exactly one. Tier D: none.
Always tier D (disqualified), whatever the signals: a student, intern or job seeker; a competitor; someone selling to us; a contact who asked not to be contacted; a contact from a purchased cold list with no budget.
Score: A 80-100, B 60-79, C 35-59, D 0-34.
Answer with JSON only: {"score": <0-100>, "tier": "A"|"B"|"C"|"D", "reason": "<one line naming the signals>"}."""


def expected_tier(lead: dict[str, Any]) -> str:
    if lead["disqualified"]:
        return "D"
    return "DCBA"[lead["senior"] + lead["intent"] + lead["budget"]]


def load_leads(path: Path, limit: int | None) -> list[dict[str, Any]]:
    leads = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    for lead in leads:
        if lead["tier"] != expected_tier(lead):
            raise ValueError(f"{path}: {lead['id']} is tier {lead['tier']} but its signals say {expected_tier(lead)}")
    # a fixed shuffle: the file is grouped by tier, and a run cut short (--limit, or a batch
    # cancelled on a slow machine: its finished results are kept) should still sample every tier
    random.Random(1).shuffle(leads)
    return leads[:limit] if limit else leads


def agent(model: str, max_tokens: int) -> dict[str, Any]:
    return {
        "agent_name": "Lead Scorer",
        "description": "Scores and tiers B2B leads",
        "system_prompt": SYSTEM_PROMPT,
        "model_name": model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "llm_args": {
            "response_format": {"type": "json_schema", "json_schema": {"name": "lead_score", "schema": SCHEMA}}
        },
    }


def parse(result: dict[str, Any]) -> dict[str, Any] | None:
    """The answer's {score, tier, reason}, or None when it is not that JSON (a review-queue row)."""
    if not result["success"] or not result["outputs"]:
        return None
    try:
        answer = json.loads(result["outputs"][-1]["content"] or "")
    except (ValueError, TypeError):
        return None
    if not isinstance(answer, dict) or answer.get("tier") not in TIERS or not isinstance(answer.get("score"), int):
        return None
    return answer


def run_model(model: str, leads: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "BATCHGATE_BACKEND": "local",
        "BATCHGATE_DEFAULT_MODEL": model,
        "BATCHGATE_ENGINE_SLOTS": args.slots,
        "BATCHGATE_ENGINE_THREADS": args.threads,
    }
    cfg = agent(model, args.max_tokens)
    records = [{"agent_config": cfg, "task": "Lead: " + lead["lead"]} for lead in leads]
    with bc.run_server(f"{NAME}-{model}", env=env, tmp_dir=args.tmp_dir) as server:
        with Client(base_url=server.base_url, timeout=120) as client:
            t_load = time.perf_counter()
            client.agent.completions.create(**records[0])  # loads the model (first use: assemble + verify)
            load_s = time.perf_counter() - t_load
            t0 = time.perf_counter()
            batch = client.agent.batch.completions.create(records, timeout=args.timeout, poll_interval=0.5)
            t1 = time.perf_counter()
        time.sleep(0.05)  # one more CPU sample after the batch
        cores = server.rss.cpu_cores(t0, t1)
    return {
        "model": model,
        "status": batch.status,
        "results": [r.model_dump(mode="json") for r in batch.results],
        "elapsed_s": t1 - t0,
        "load_s": load_s,
        "server_cpu_cores": cores,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def score(run: dict[str, Any], leads: list[dict[str, Any]]) -> dict[str, Any]:
    confusion: Counter[tuple[str, str]] = Counter()
    correct = unparseable = failed = in_range = tokens_in = tokens_out = 0
    predictions = []
    for lead, result in zip(leads, run["results"], strict=True):
        tokens_in += result["usage"]["input_tokens"]
        tokens_out += result["usage"]["output_tokens"]
        answer = parse(result)
        if not result["success"]:
            failed += 1
            predicted = "failed"
        elif answer is None:
            unparseable += 1
            predicted = "unparseable"
        else:
            predicted = answer["tier"]
            lo, hi = SCORE_RANGES[predicted]
            in_range += lo <= answer["score"] <= hi
        raw = result["outputs"][-1]["content"] if result["outputs"] else None
        correct += predicted == lead["tier"]
        confusion[(lead["tier"], predicted)] += 1
        predictions.append(
            {
                "id": lead["id"],
                "tier": lead["tier"],
                "predicted": predicted,
                "answer": answer if answer is not None else raw,
                "error": result.get("error"),
            }
        )
    n = len(leads)
    return {
        "model": run["model"],
        "status": run["status"],
        "leads": n,
        "correct": correct,
        "accuracy": correct / n,
        "unparseable": unparseable,
        "failed": failed,
        "score_in_tier_range": in_range,
        "confusion": {t: {p: confusion[(t, p)] for p in [*TIERS, "unparseable", "failed"]} for t in TIERS},
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "elapsed_s": run["elapsed_s"],
        "load_s": run["load_s"],
        "server_cpu_cores": run["server_cpu_cores"],
        "loadavg_after": run["loadavg_after"],
        "predictions": predictions,
    }


def table_rows(s: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, str]]:
    m, n = s["model"], s["leads"]
    rows = [
        (
            f"{m}: tier accuracy",
            f"{s['accuracy']:.1%} ({s['correct']}/{n}); unparseable {s['unparseable']}, failed records {s['failed']}",
        ),
        (
            f"{m}: tier accuracy over the records that ran",
            f"{s['correct'] / max(n - s['failed'], 1):.1%} ({s['correct']}/{n - s['failed']}; a cancelled or failed "
            "record did not run)",
        ),
        (f"{m}: score inside its tier's range", f"{s['score_in_tier_range']} of {n - s['unparseable'] - s['failed']}"),
    ]
    for t in TIERS:
        cells = ", ".join(f"{p} {k}" for p, k in s["confusion"][t].items() if k or p in TIERS)
        rows.append((f"{m}: true {t} -> answered", cells))
    rows.append(
        (
            f"{m}: wall time, tokens",
            f"{s['elapsed_s']:.1f} s for {n} leads ({n / s['elapsed_s']:.2f} leads/s; {args.slots} slots, "
            f"{args.threads} threads; server used {s['server_cpu_cores']:.2f} cores, loadavg after "
            f"{s['loadavg_after']}); {s['input_tokens'] / n:.0f} input + {s['output_tokens'] / n:.0f} output "
            f"tokens per lead; model load {s['load_s']:.1f} s; batch {s['status']}",
        )
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", action="append", help=f"catalog name, repeatable (default: {' and '.join(DEFAULT_MODELS)})"
    )
    p.add_argument("--data", type=Path, default=DATA, help="labelled leads, JSONL {id, tier, signals, lead}")
    p.add_argument("--limit", type=int, default=None, help="only the first N leads (a quick trial)")
    p.add_argument("--max-tokens", type=int, default=120, help="the agent's max_tokens (default 120)")
    p.add_argument("--slots", type=int, default=8, help="BATCHGATE_ENGINE_SLOTS (default 8)")
    p.add_argument("--threads", type=int, default=2, help="BATCHGATE_ENGINE_THREADS (default 2)")
    p.add_argument("--timeout", type=float, default=1800.0, help="cap in seconds on each batch's wait")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the temp data dirs go (default: $TMPDIR)")
    p.add_argument("--record-results", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()
    models = args.model or DEFAULT_MODELS
    leads = load_leads(args.data, args.limit)
    counts = Counter(lead["tier"] for lead in leads)
    result = bc.default_result(args)  # machine info (load average) before the runs
    print(f"{len(leads)} leads ({', '.join(f'{t} {counts[t]}' for t in TIERS)}), models {models}", flush=True)
    scores = []
    for model in models:
        s = score(run_model(model, leads, args), leads)
        scores.append(s)
        for x in s["predictions"]:
            if x["predicted"] != x["tier"]:
                print(f"    wrong: {x['id']} true {x['tier']}, answered {x['predicted']}: {x['answer']}")
    table = [
        (
            "data",
            f"{os.path.relpath(args.data.resolve(), bc.ROOT)}: {len(leads)} leads "
            f"({', '.join(f'{t} {counts[t]}' for t in TIERS)})",
        )
    ]
    for s in scores:
        table += table_rows(s, args)
    result["models"] = scores
    bc.report(NAME, args, table, result, bc.Targets())


if __name__ == "__main__":
    main()
