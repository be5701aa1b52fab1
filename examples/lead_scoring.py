"""Lead scoring with one agent over 10,000 synthetic leads, through the agent batch API.

    .venv/bin/python examples/lead_scoring.py                  # 10,000 leads on the local default model
    .venv/bin/python examples/lead_scoring.py --count 200      # a quick run
    .venv/bin/python examples/lead_scoring.py --base-url http://host:8000 --api-key bg-...

One agent definition (score 0-100, tier A-D, a one-line reason, as structured output)
is reused for every lead; the leads go in chunks of 500, one durable agent batch each,
through the SDK with a manifest: killed (even with kill -9) and run again, it resumes
and resubmits nothing. Results are routed into one file per tier, answers that do not
parse go to a review file, and the cost is summed per record and in total from the
`cost` the gateway records for each record (the route's prices in batchgate.toml, or the
local catalog models' default prices; batch lines pay half).

Without --base-url it starts a batchgate server on the local engine with a data dir
under examples/out/lead-scoring/ that persists, so a resumed run finds its batches.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from batchgate import Client

HERE = Path(__file__).parent
OUT = HERE / "out" / "lead-scoring"

SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 0, "maximum": 100},
        "tier": {"type": "string", "enum": ["A", "B", "C", "D"]},
        "reason": {"type": "string"},
    },
    "required": ["score", "tier", "reason"],
}
SYSTEM_PROMPT = (
    "You qualify B2B sales leads for a data-infrastructure product. Score each lead from 0 to 100 "
    "for how likely it is to buy within a quarter: fit (company size, industry, the contact's "
    "seniority) and intent (demo requests, pricing visits, engagement). Tier A is 80-100, B 60-79, "
    "C 35-59, D below 35. Give a one-line reason. Answer with JSON only."
)

INDUSTRIES = ["fintech", "retail", "healthcare", "logistics", "media", "manufacturing", "education", "gaming"]
TITLES = ["CTO", "VP Engineering", "Head of Data", "Data Engineer", "Analyst", "Intern", "Procurement Manager"]
SOURCES = ["demo request", "pricing page", "webinar", "ebook download", "cold list", "referral"]


def synthetic_leads(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "lead_id": f"L{i:05d}",
            "company": f"{rng.choice(['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli', 'Vandelay'])} {i}",
            "industry": rng.choice(INDUSTRIES),
            "employees": rng.choice([8, 40, 120, 600, 2500, 12000]),
            "title": rng.choice(TITLES),
            "source": rng.choice(SOURCES),
            "pages_visited": rng.randint(0, 40),
            "budget_usd": rng.choice([0, 5_000, 25_000, 100_000, 500_000]),
        }
        for i in range(count)
    ]


def task(lead: dict[str, Any]) -> str:
    return "Lead:\n" + "\n".join(f"- {k}: {v}" for k, v in lead.items() if k != "lead_id")


def main() -> int:
    args = parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    server = None
    if args.base_url is None:
        server, args.base_url, args.api_key = start_server(args.model)
    agent = {
        "agent_name": "Lead Scorer",
        "description": "Scores and tiers B2B leads",
        "system_prompt": SYSTEM_PROMPT,
        "model_name": args.model,
        "max_tokens": 120,
        "temperature": 0,
        "llm_args": {
            "response_format": {"type": "json_schema", "json_schema": {"name": "lead_score", "schema": SCHEMA}}
        },
    }
    leads = synthetic_leads(args.count)
    records = [{"agent_config": agent, "task": task(lead)} for lead in leads]
    started = time.perf_counter()
    tiers = {t: open(OUT / f"tier_{t}.jsonl", "w") for t in "ABCD"}  # noqa: SIM115 - closed below
    review = open(OUT / "review.jsonl", "w")  # noqa: SIM115
    totals: dict[str, Any] = {"records": 0, "cost": 0.0, "input_tokens": 0, "output_tokens": 0, "review": 0}
    totals |= {f"tier_{t}": 0 for t in "ABCD"}
    try:
        with Client(base_url=args.base_url, api_key=args.api_key, timeout=120) as client:
            chunks = client.agent.batch.completions.run_chunks(
                records, chunk_size=args.chunk_size, manifest=OUT / f"manifest-{args.count}.json"
            )
            for chunk, batch in chunks:
                for offset, result in enumerate(batch.results):
                    lead = leads[chunk * args.chunk_size + offset]
                    route(lead, result.model_dump(), tiers, review, totals)
                print(f"chunk {chunk}: {batch.status}, {batch.completed_requests}/{batch.total_requests} answered")
    finally:
        for f in [*tiers.values(), review]:
            f.close()
        if server is not None:
            server.terminate()
            server.wait(30)
    elapsed = time.perf_counter() - started
    n = max(totals["records"], 1)
    print(f"\n{totals['records']} leads in {elapsed:.1f} s; {totals['review']} to review ({OUT / 'review.jsonl'})")
    for t in "ABCD":
        print(f"  tier {t}: {totals[f'tier_{t}']} leads -> {OUT / f'tier_{t}.jsonl'}")
    print(
        f"tokens: {totals['input_tokens']} in, {totals['output_tokens']} out ({(totals['input_tokens'] + totals['output_tokens']) / n:.0f} per lead)"
    )
    print(
        f"cost: ${totals['cost']:.6f} in total, ${totals['cost'] / n:.8f} per lead (the route's or the local model's prices)"
    )
    return 0


def route(
    lead: dict[str, Any], result: dict[str, Any], tiers: dict[str, Any], review: Any, totals: dict[str, Any]
) -> None:
    """A scored lead into its tier's file; a failed record or an unparseable answer to review."""
    totals["records"] += 1
    totals["cost"] += result["cost"]
    totals["input_tokens"] += result["usage"]["input_tokens"]
    totals["output_tokens"] += result["usage"]["output_tokens"]
    text = result["outputs"][-1]["content"] if result["outputs"] else None
    try:
        scored = json.loads(text or "")
        tier = scored["tier"]
        tiers[tier].write(json.dumps({**lead, **scored, "cost": result["cost"]}) + "\n")
        totals[f"tier_{tier}"] += 1
    except (ValueError, KeyError, TypeError):
        totals["review"] += 1
        review.write(json.dumps({**lead, "answer": text, "error": result["error"]}) + "\n")


def start_server(model: str) -> tuple[subprocess.Popen[bytes], str, str]:
    data_dir = OUT / "data"
    batchgate = [sys.executable, "-m", "batchgate"]
    key = subprocess.run(
        [*batchgate, "keys", "create", "--project", "lead-scoring", "--data-dir", str(data_dir)],
        check=True, capture_output=True, text=True,
    ).stdout.split()[-1]  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(OUT / "server.log", "ab")  # noqa: SIM115 - the server's for its lifetime
    env = {"BATCHGATE_BACKEND": "local", **os.environ}
    server = subprocess.Popen(
        [*batchgate, "serve", "--port", str(port), "--data-dir", str(data_dir)], stdout=log, stderr=log, env=env
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return server, url, key
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"the server did not start; see {OUT / 'server.log'}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="leads to generate and score")
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--model", default="default", help="default: the server's default model")
    parser.add_argument("--base-url", default=os.environ.get("BATCHGATE_BASE_URL"))
    parser.add_argument("--api-key", default=os.environ.get("BATCHGATE_API_KEY"))
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
