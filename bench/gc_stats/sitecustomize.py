"""Garbage-collector statistics of a benchmarked `batchgate serve` (bench/RESULTS.md,
"Garbage collection in the long-running processes").

Put this directory on PYTHONPATH with GCSTAT=1 and every `batchgate serve` started by a
benchmark prints, to its log in bench/out/, every 5 s, the collections so far per
generation with the seconds they took and the objects the collector tracks (GCSTAT=jobs:
its job process too):

  GCSTAT=1 PYTHONPATH=bench/gc_stats .venv/bin/python bench/dispatch_raw.py --rounds 1
  grep GCSTAT bench/out/dispatch_raw-server.log | tail -1

GCTH=a,b,c sets the thresholds at start; GCFREEZE=1 freezes the heap 4 s after start
(the experiments that led to app.settle_heap). Other processes are left alone.
"""

import os
import sys

# `serve`, and with GCSTAT=jobs its job process too (a multiprocessing spawn child)
WATCHED = {"serve", "--multiprocessing-fork"} if os.environ.get("GCSTAT") == "jobs" else {"serve"}

if WATCHED & set(sys.argv) and os.environ.get("GCSTAT"):
    import gc
    import threading
    import time

    stats = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
    started = [0.0]

    def _timed(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            stats[info["generation"]][0] += 1
            stats[info["generation"]][1] += time.perf_counter() - started[0]

    gc.callbacks.append(_timed)
    if os.environ.get("GCTH"):
        gc.set_threshold(*(int(x) for x in os.environ["GCTH"].split(",")))

    def _report() -> None:
        if os.environ.get("GCFREEZE"):
            time.sleep(4)
            gc.freeze()
        while True:
            time.sleep(5)
            per_generation = {g: (n, round(s, 3)) for g, (n, s) in stats.items()}
            tracked = len(gc.get_objects())
            print("GCSTAT", os.getpid(), per_generation, "tracked", tracked, file=sys.stderr, flush=True)

    threading.Thread(target=_report, name="gc-stats", daemon=True).start()
