"""Summarize a py-spy raw (collapsed stacks) profile written by `bench/<name>.py --profile`.

    .venv/bin/python bench/profile_summary.py bench/out/ingest-profile.txt [--top 25] [--thread NAME]

Prints samples per thread, then the functions with the most inclusive and self samples
(line numbers folded for the inclusive view). py-spy samples at 100 Hz, so 100 samples
are about one second of a thread's wall time off the idle list (a thread waiting for
the GIL still counts as active).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--thread", default=None, help="only stacks whose thread label contains this")
    args = p.parse_args()
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0])
        threads[thread] += n
        if args.thread and args.thread not in thread:
            continue
        total += n
        seen = set()
        for frame in frames[1:]:
            key = re.sub(r":\d+\)$", ")", frame)
            if key not in seen:
                inclusive[key] += n
                seen.add(key)
        self_[frames[-1]] += n
    print("samples per thread:")
    for name, n in threads.most_common():
        print(f"  {n:7d}  {name}")
    print(f"\ninclusive (of {total} samples{' in ' + args.thread if args.thread else ''}):")
    for key, n in inclusive.most_common(args.top):
        print(f"  {n:7d}  {100 * n / max(total, 1):5.1f}%  {key}")
    print("\nself (innermost frame, with line):")
    for key, n in self_.most_common(args.top):
        print(f"  {n:7d}  {100 * n / max(total, 1):5.1f}%  {key}")


if __name__ == "__main__":
    main()
