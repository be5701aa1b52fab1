"""Output pages: GET /api/batches/{id}/output?format=json&offset=X&limit=1000 at the start,
the middle and the end of a large operation batch's output.

An operation batch of --lines items (default 1,000,000) is submitted as a text file to
POST /api/files (operation `run`, one item per line) and run to `completed` on a real
`batchgate serve` subprocess (scripted backend). Then one 1,000-row JSON page is read at
offsets 0, the middle and the last page, --repeat times each (best counts).

Reference, same run: reading every row up to the last page and throwing it away, as a
page at that offset cost before pages could seek (GET ...?format=jsonl&offset=0&limit=N,
the same server code path without the seek).

Targets: the last page takes at most 2x the first (page time flat across the output), and
the reference / last page ratio is reported (how much seeking saves at that offset).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc

NAME = "output_pages"
PAGE = 1000
FLAT_TARGET = 2.0


def write_items(path: Path, lines: int) -> int:
    with open(path, "w") as f:
        for i in range(lines):
            f.write(f"review {i}: {bc.input_content(i, 120)}\n")
    return path.stat().st_size


def timed_get(c: httpx.Client, url: str, params: dict[str, object]) -> tuple[float, int]:
    """(seconds, bytes) of one GET, the body streamed and discarded."""
    started = time.perf_counter()
    size = 0
    with c.stream("GET", url, params=params) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            size += len(chunk)
    return time.perf_counter() - started, size


def main() -> None:
    p = bc.base_parser(__doc__ or "", 1_000_000)
    p.add_argument("--repeat", type=int, default=5, help="reads of each page (default 5; best counts)")
    args = p.parse_args()
    result = bc.default_result(args)
    targets = bc.Targets()
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        items = Path(tmp) / "reviews.txt"
        size = write_items(items, args.lines)
        with bc.run_server(NAME, {"BATCHGATE_CONCURRENCY": 256}, args.tmp_dir) as server, bc.client(server) as c:
            started = time.perf_counter()
            with open(items, "rb") as f:
                form = {"operation": "run", "user_prompt_template": "{content}"}
                r = c.post("/api/files", data=form, files={"file": (items.name, f, "text/plain")})
            r.raise_for_status()
            batch_id = r.json()["batch_id"]
            submitted = time.perf_counter() - started
            deadline = time.perf_counter() + args.timeout
            while (status := c.get(f"/api/batches/{batch_id}", timeout=60).json())["status"] != "completed":
                if status["status"] not in ("queued", "processing") or time.perf_counter() > deadline:
                    raise RuntimeError(f"batch {batch_id}: {status}")
                time.sleep(0.5)
            ran = time.perf_counter() - started - submitted

            url = f"/api/batches/{batch_id}/output"
            offsets = {"first": 0, "middle": args.lines // 2, "last": args.lines - PAGE}
            pages = {}
            for name, offset in offsets.items():
                runs = [
                    timed_get(c, url, {"format": "json", "offset": offset, "limit": PAGE}) for _ in range(args.repeat)
                ]
                pages[name] = min(t for t, _ in runs), runs[0][1]
            reference = min(
                timed_get(c, url, {"format": "jsonl", "offset": 0, "limit": offsets["last"] + PAGE})[0]
                for _ in range(2)
            )
    flat = pages["last"][0] / pages["first"][0]
    saved = reference / pages["last"][0]
    table = [
        ("items", f"{args.lines:,} ({bc.mb(size)} text file)"),
        ("POST /api/files (parse, compile, store)", f"{submitted:.1f} s"),
        ("queued -> completed", f"{ran:.1f} s"),
        *[
            (f"page of {PAGE} at offset {offsets[n]:,} ({n})", f"{t * 1000:.1f} ms ({bc.mb(b)})")
            for n, (t, b) in pages.items()
        ],
        (f"reference: rows 0..{offsets['last'] + PAGE:,} read and dropped", f"{reference * 1000:.0f} ms"),
        ("last page / first page", f"{flat:.2f}x"),
        ("reference / last page", f"{saved:.0f}x"),
    ]
    result.update(
        items=args.lines,
        page_seconds={n: t for n, (t, _) in pages.items()},
        reference_seconds=reference,
        submit_seconds=submitted,
        run_seconds=ran,
    )
    targets.check(f"last page / first page <= {FLAT_TARGET}", flat, flat <= FLAT_TARGET)
    bc.report(NAME, args, table, result, targets)


if __name__ == "__main__":
    main()
