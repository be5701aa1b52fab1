"""Label quality: accuracy and calibration of the label operation on the embedded models.

A benchmark, not a test (issue 5, "Quality, measured"): no pass/fail target. Every review of
bench/data/reviews_labelled.jsonl (short product reviews written for this benchmark, each
hand-labelled positive / negative / mixed) is labelled by a real `batchgate serve` (local
backend) through the operations API, `POST /api/completions/label` with the categories
["positive", "negative", "mixed"], in synchronous calls of at most 50 items. One server per
model; a one-item call loads the model (on a fresh data dir: assembled and sha256-verified
from its packages) before the clock starts.

Measured, per model:
  - accuracy: rows whose label equals the hand label, over all reviews (a failed row counts
    as wrong); failed rows (status != "succeeded") are also counted on their own;
  - calibration: mean confidence of the right answers vs the wrong ones, and the chance that a
    random right answer has a higher confidence than a random wrong one (AUROC; 0.5 = the
    confidence does not separate them); reliability bins (confidence in [0, 0.2), ...,
    [0.8, 1]: answers, mean confidence, accuracy), the expected calibration error over them
    (ECE: sum over bins of |accuracy - mean confidence| weighted by the bin's share), and the
    Brier score (mean of (confidence - right)^2). The confidence is the model's probability of
    the chosen label renormalised over the three categories, from the response's token
    logprobs (batchgate/core/label_confidence.py);
  - a confusion matrix (hand label x model label, plus failed);
  - wall time of the labelling calls (model already loaded), and reviews/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

NAME = "label_quality"
DATA = bc.BENCH_DIR / "data" / "reviews_labelled.jsonl"
CATEGORIES = ["positive", "negative", "mixed"]
MAX_SYNC_ITEMS = 50  # the synchronous limit of /api/completions (settings.max_sync_items)
DEFAULT_MODELS = ["qwen2.5-1.5b", "smollm2-135m"]


def load_reviews(path: Path, limit: int | None) -> list[dict[str, Any]]:
    reviews = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    for r in reviews:
        if r["label"] not in CATEGORIES:
            raise ValueError(f"{path}: {r['id']} has label {r['label']!r}, not one of {CATEGORIES}")
    return reviews[:limit] if limit else reviews


def label_call(c: Any, model: str, reviews: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = {
        "items": [{"content": r["text"], "metadata": {"id": r["id"]}} for r in reviews],
        "categories": CATEGORIES,
        "model": model,
    }
    r = c.post("/api/completions/label", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"POST /api/completions/label answered {r.status_code}: {r.text[:500]}")
    rows = r.json()["data"]
    if [row["metadata"]["id"] for row in rows] != [rv["id"] for rv in reviews]:
        raise RuntimeError("the rows do not come back in input order")
    return rows


def run_model(model: str, reviews: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "BATCHGATE_BACKEND": "local",
        "BATCHGATE_DEFAULT_MODEL": model,
        "BATCHGATE_ENGINE_SLOTS": args.slots,
        "BATCHGATE_ENGINE_THREADS": args.threads,
    }
    with bc.run_server(f"{NAME}-{model}", env=env, tmp_dir=args.tmp_dir) as server, bc.client(server) as c:
        t_load = time.perf_counter()
        label_call(c, model, reviews[:1])  # loads the model (first use: assemble + verify)
        load_s = time.perf_counter() - t_load
        rows: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for start in range(0, len(reviews), args.chunk):
            rows += label_call(c, model, reviews[start : start + args.chunk])
            print(f"  {model}: {len(rows)}/{len(reviews)} labelled, {time.perf_counter() - t0:.1f} s", flush=True)
        t1 = time.perf_counter()
        time.sleep(0.05)  # one more RSS/CPU sample after the last call
        rss_peak, cores = server.rss.peak(t0, t1), server.rss.cpu_cores(t0, t1)
    return {
        "model": model,
        "rows": rows,
        "elapsed_s": t1 - t0,
        "load_s": load_s,
        "rss_peak_bytes": rss_peak,
        "server_cpu_cores": cores,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def auroc(right: list[float], wrong: list[float]) -> float | None:
    """P(confidence of a random right answer > that of a random wrong one); ties count half."""
    if not right or not wrong:
        return None
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def reliability(pairs: list[tuple[float, bool]], bins: int = 5) -> list[dict[str, Any]]:
    """Equal-width confidence bins (the last one includes 1.0): answers, mean confidence, accuracy."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(c, ok) for c, ok in pairs if lo <= c < hi or (b == bins - 1 and c == hi)]
        out.append(
            {
                "range": [lo, hi],
                "n": len(inside),
                "mean_confidence": sum(c for c, _ in inside) / len(inside) if inside else None,
                "accuracy": sum(ok for _, ok in inside) / len(inside) if inside else None,
            }
        )
    return out


def ece(bins: list[dict[str, Any]]) -> float | None:
    """Expected calibration error: the bins' |accuracy - mean confidence|, weighted by size."""
    n = sum(b["n"] for b in bins)
    if not n:
        return None
    return sum(b["n"] / n * abs(b["accuracy"] - b["mean_confidence"]) for b in bins if b["n"])


def score(run: dict[str, Any], reviews: list[dict[str, Any]]) -> dict[str, Any]:
    confusion: Counter[tuple[str, str]] = Counter()
    right_conf, wrong_conf, predictions = [], [], []
    failed, no_confidence, correct = 0, 0, 0
    errors: Counter[str] = Counter()
    for review, row in zip(reviews, run["rows"], strict=True):
        result = row.get("result") or {}
        if row["status"] != "succeeded":
            failed += 1
            errors[str(row.get("error"))[:200]] += 1
            predicted, conf = "failed", None
        else:
            predicted, conf = result.get("label"), result.get("confidence")
        ok = predicted == review["label"]
        correct += ok
        confusion[(review["label"], predicted)] += 1
        if predicted != "failed":
            if conf is None:
                no_confidence += 1
            else:
                (right_conf if ok else wrong_conf).append(conf)
        predictions.append(
            {
                "id": review["id"],
                "label": review["label"],
                "predicted": predicted,
                "confidence": conf,
                "error": row.get("error"),
            }
        )
    n = len(reviews)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    pairs = [(c, True) for c in right_conf] + [(c, False) for c in wrong_conf]
    bins = reliability(pairs)
    return {
        "model": run["model"],
        "reviews": n,
        "correct": correct,
        "accuracy": correct / n,
        "failed": failed,
        "failed_errors": dict(errors),
        "no_confidence": no_confidence,
        "mean_confidence_right": mean(right_conf),
        "mean_confidence_wrong": mean(wrong_conf),
        "n_right_with_confidence": len(right_conf),
        "n_wrong_with_confidence": len(wrong_conf),
        "auroc": auroc(right_conf, wrong_conf),
        "reliability": bins,
        "ece": ece(bins),
        "brier": mean([(c - ok) ** 2 for c, ok in pairs]),
        "confusion": {t: {p: confusion[(t, p)] for p in [*CATEGORIES, "failed"]} for t in CATEGORIES},
        "elapsed_s": run["elapsed_s"],
        "reviews_per_s": n / run["elapsed_s"],
        "load_s": run["load_s"],
        "rss_peak_bytes": run["rss_peak_bytes"],
        "server_cpu_cores": run["server_cpu_cores"],
        "loadavg_after": run["loadavg_after"],
        "predictions": predictions,
    }


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table_rows(s: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, str]]:
    m = s["model"]
    rows = [
        (
            f"{m}: accuracy",
            f"{s['accuracy']:.1%} ({s['correct']}/{s['reviews']}); failed rows {s['failed']}"
            + (f", succeeded without confidence {s['no_confidence']}" if s["no_confidence"] else ""),
        ),
        (
            f"{m}: mean confidence right / wrong",
            f"{_f(s['mean_confidence_right'])} (n={s['n_right_with_confidence']}) / "
            f"{_f(s['mean_confidence_wrong'])} (n={s['n_wrong_with_confidence']}); AUROC {_f(s['auroc'], 2)}",
        ),
        (
            f"{m}: calibration",
            f"ECE {_f(s['ece'])} (5 bins), Brier {_f(s['brier'])}; reliability (confidence bin: answers, "
            "mean confidence, accuracy): "
            + "; ".join(
                f"[{b['range'][0]:.1f}, {b['range'][1]:.1f}{']' if b['range'][1] == 1 else ')'}: {b['n']}"
                + (f", {b['mean_confidence']:.2f}, {b['accuracy']:.2f}" if b["n"] else "")
                for b in s["reliability"]
            ),
        ),
    ]
    for t in CATEGORIES:
        cells = ", ".join(f"{p} {n}" for p, n in s["confusion"][t].items() if n or p != "failed")
        rows.append((f"{m}: hand {t} -> model", cells))
    rows.append(
        (
            f"{m}: wall time",
            f"{s['elapsed_s']:.1f} s ({s['reviews_per_s']:.2f} reviews/s; {args.slots} slots, {args.threads} threads, "
            f"calls of {args.chunk}); server used {s['server_cpu_cores']:.2f} cores, loadavg after "
            f"{s['loadavg_after']}; model load {s['load_s']:.1f} s; server peak RSS {bc.mb(s['rss_peak_bytes'])}",
        )
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", action="append", help=f"catalog name, repeatable (default: {' and '.join(DEFAULT_MODELS)})"
    )
    p.add_argument("--data", type=Path, default=DATA, help="labelled reviews, JSONL {id, text, label}")
    p.add_argument("--limit", type=int, default=None, help="only the first N reviews (a quick trial)")
    p.add_argument("--chunk", type=int, default=MAX_SYNC_ITEMS, help=f"items per call (max {MAX_SYNC_ITEMS})")
    p.add_argument("--slots", type=int, default=8, help="BATCHGATE_ENGINE_SLOTS (default 8)")
    p.add_argument("--threads", type=int, default=2, help="BATCHGATE_ENGINE_THREADS (default 2)")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the temp data dirs go (default: $TMPDIR)")
    p.add_argument("--record-results", action="store_true", help="append the results to bench/RESULTS.md")
    args = p.parse_args()
    if not 1 <= args.chunk <= MAX_SYNC_ITEMS:
        p.error(f"--chunk must be 1..{MAX_SYNC_ITEMS}")
    models = args.model or DEFAULT_MODELS
    reviews = load_reviews(args.data, args.limit)
    counts = Counter(r["label"] for r in reviews)
    result = bc.default_result(args)  # machine info (load average) before the runs
    print(f"{len(reviews)} reviews ({', '.join(f'{c} {counts[c]}' for c in CATEGORIES)}), models {models}")
    scores = []
    for model in models:
        s = score(run_model(model, reviews, args), reviews)
        scores.append(s)
        wrong = [x for x in s["predictions"] if x["predicted"] != x["label"]]
        for x in wrong:
            print(f"    wrong: {x['id']} hand {x['label']}, model {x['predicted']} ({_f(x['confidence'], 2)})")
    table = [
        (
            "data",
            f"{os.path.relpath(args.data.resolve(), bc.ROOT)}: {len(reviews)} reviews ({', '.join(f'{c} {counts[c]}' for c in CATEGORIES)})",
        ),
        (
            "confidence",
            "the model's probability of the chosen label renormalised over the categories, from the "
            "response's token logprobs (batchgate/core/label_confidence.py)",
        ),
    ]
    for s in scores:
        table += table_rows(s, args)
    result["models"] = scores
    # no target (issue 5 gives none): the numbers are the result
    bc.report(NAME, args, table, result, bc.Targets())


if __name__ == "__main__":
    main()
