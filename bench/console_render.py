"""Console pages over a big store: server time to render each page with 1,000,000 request
rows (and as many ledger rows) and 10,000 batches, on SQLite. Target: < 300 ms a page.

The store is seeded directly in bulk (SQL inserts into the tables the stores use: one
batch with --big-rows request rows, the rest spread over the other batches; a ledger row
per request row over the last 30 days, 4 models, 5 keys). Pages are rendered in-process
through the ASGI app (Starlette's TestClient, signed in with an admin key, so every
project is visible: the widest queries), round-robin over the pages, --runs times each;
min and median per page. The server time is the time inside the app: the TestClient's
own overhead is measured on /health and reported beside it.

    python bench/console_render.py                  # 1,000,000 rows, 10,000 batches
    python bench/console_render.py --rows 100000    # quicker
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from batchgate.api import create_app
from batchgate.app import build_services
from batchgate.settings import Settings
from batchgate.store import rollup_sql

DAY = 86_400
MODELS = ("qwen2.5-1.5b", "smollm2-135m", "gpt-4o-mini", "llama-3-8b")
STATUSES = ("completed",) * 8 + ("failed", "cancelled", "expired")
TARGET_MS = 300.0


def seed(db: Path, rows: int, batches: int, big_rows: int, keys: list[str], project: str) -> tuple[str, int]:
    """Fill the store; (the big batch's id, the ledger's largest pk)."""
    rng = random.Random(7)
    now = int(time.time())
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    per_batch = [big_rows] + [0] * (batches - 1)
    for i in range(rows - big_rows):
        per_batch[1 + i % (batches - 1)] += 1
    batch_rows = []
    for pk in range(1, batches + 1):
        active = pk > batches - 40  # the newest 40 are running
        status = "in_progress" if active else rng.choice(STATUSES)
        total = per_batch[pk - 1]
        failed = total // 50
        created = now - 30 * DAY + pk * (30 * DAY // batches)
        source = "operation" if pk % 10 == 0 else "agent" if pk % 17 == 0 else "openai"
        batch_rows.append((
            pk, f"batch_{pk:08d}", project, "/v1/chat/completions", f"file-{pk:08d}", "24h", status, created,
            created + DAY, created + 1, None if active else created + 600, total,
            total // 2 if active else total - failed, failed, total * 20, total * 40, total * 0.00012, source,
            keys[pk % len(keys)],
        ))  # fmt: skip
    conn.executemany(
        "INSERT INTO batches (pk, id, project_id, endpoint, input_file_id, completion_window, status, created_at, "
        "expires_at, in_progress_at, completed_at, total, completed, failed, input_tokens, output_tokens, cost, "
        "source, key_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        batch_rows,
    )
    requests, ledger = [], []
    for pk, count in enumerate(per_batch, 1):
        batch = batch_rows[pk - 1]
        for line in range(1, count + 1):
            ok = line % 50 != 0
            model = MODELS[(pk + line) % len(MODELS)]
            started = batch[7] + line * 0.01 if pk > 1 else now - 30 * DAY + line * (30 * DAY / count)
            cost = 0.00012 if ok else 0.0
            requests.append((
                (pk << 32) | line, f"row-{line}", line * 200, 200, "succeeded" if ok else "failed", 1,
                200 if ok else 400, b'{"id": "chatcmpl-1", "choices": []}' if ok else None,
                None if ok else "invalid_request", 20, 40 if ok else 0, cost, 120, "local", model,
            ))  # fmt: skip
            ledger.append((
                "batch", project, batch[18], batch[1], line, "/v1/chat/completions", model, model, "local",
                20, 40 if ok else 0, cost, 120, 200 if ok else 400, None if ok else "invalid_request", started,
                started + 0.12,
            ))  # fmt: skip
            if len(requests) >= 100_000:
                _flush(conn, requests, ledger)
    _flush(conn, requests, ledger)
    # rows written around the store: its hourly rollup (migration 0014) summed from them, as the migration does
    conn.execute("DELETE FROM usage_rollup")
    conn.execute(rollup_sql.backfill_sql("sqlite"))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    top = conn.execute("SELECT max(pk) FROM ledger").fetchone()[0]
    conn.close()
    return batch_rows[0][1], top


def _flush(conn: sqlite3.Connection, requests: list, ledger: list) -> None:
    conn.executemany(
        "INSERT INTO requests (id, custom_id, offset, length, state, attempts, status_code, result, error_code, "
        "input_tokens, output_tokens, cost, latency_ms, backend, model) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        requests,
    )
    conn.executemany(
        "INSERT INTO ledger (kind, project_id, key_id, batch_id, line, endpoint, model, resolved_model, backend, "
        "input_tokens, output_tokens, cost, latency_ms, status_code, error_code, started_at, finished_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ledger,
    )
    requests.clear()
    ledger.clear()


def pages(big: str, top: int, key: str, batches: int) -> list[str]:
    return [
        "/console/batches",
        f"/console/batches?offset={batches - 50}",
        "/console/batches?status=failed",
        "/console/batches?kind=operation",
        f"/console/batches?key={key}",
        "/console/batches?model=llama-3-8b",
        f"/console/batches/{big}",
        f"/console/batches/{big}?after=400000",
        f"/console/batches/{big}?state=failed",
        f"/console/batches/{big}/progress",
        f"/console/batches/batch_{batches // 2:08d}",
        "/console/logs",
        "/console/logs?model=gpt-4o-mini",
        f"/console/logs?before={top // 2}",
        f"/console/logs?batch_id={big}",
        "/console/logs?status=400",
        "/console/usage",
        "/console/usage?days=30",
        "/console/usage?days=90&stack=key",
        "/console/keys",
        "/console/models",
        "/console/prompts",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--big-rows", type=int, default=500_000, help="request rows of the one big batch")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), backend="scripted")
        services = build_services(settings)
        key, secret = services.keys.create("acme", "bench", ("batch", "sync", "read", "admin"))
        others = [services.keys.create("acme", f"k{i}")[0].id for i in range(4)]
        started = time.perf_counter()
        big, top = seed(settings.db_path, args.rows, args.batches, args.big_rows, [key.id, *others], key.project_id)
        print(
            f"seeded {args.rows:,} request and ledger rows, {args.batches:,} batches in {time.perf_counter() - started:.0f} s"
        )
        app = create_app(services)
        with TestClient(app) as client:
            login = client.get("/console/login").text
            token = re.search(r"csrf=([0-9a-f]+)", login).group(1)  # type: ignore[union-attr]
            assert client.post(f"/console/login?csrf={token}", data={"api_key": secret}).status_code in (200, 303)
            urls = pages(big, top, key.id, args.batches)
            times: dict[str, list[float]] = {url: [] for url in [*urls, "/health"]}
            for _ in range(args.runs):
                for url in [*urls, "/health"]:
                    t = time.perf_counter()
                    response = client.get(url, follow_redirects=False)
                    times[url].append((time.perf_counter() - t) * 1000)
                    assert response.status_code == 200, (url, response.status_code, response.text[:300])
        services.close()
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {args.runs} runs a page, round-robin")
    print(f"{'page':58} {'min ms':>8} {'median':>8}  <{TARGET_MS:.0f} ms")
    for url, ms in times.items():
        verdict = "" if url == "/health" else ("ok" if statistics.median(ms) < TARGET_MS else "MISS")
        print(f"{url:58} {min(ms):8.1f} {statistics.median(ms):8.1f}  {verdict}")


if __name__ == "__main__":
    main()
