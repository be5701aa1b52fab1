#!/usr/bin/env bash
# Run the three batchgate benchmarks one after another (never in parallel: they share
# the CPU they measure). Usage, from anywhere:
#   bench/run_all.sh                    # full size: 1M / 100k / 1M lines
#   bench/run_all.sh --quick            # 100k / 20k / 100k lines, about a minute
#   bench/run_all.sh --record-results   # also append the results to bench/RESULTS.md
# Any other argument is passed to every script (e.g. --tmp-dir /mnt/fast).
# Exit status: 0 when every benchmark ran (a missed target is reported, not an error);
# with STRICT=1, 1 when a target was missed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
INGEST=1000000 RECORD=100000 OUTPUT=1000000
args=()
for a in "$@"; do
  if [[ $a == --quick ]]; then INGEST=100000 RECORD=20000 OUTPUT=100000; else args+=("$a"); fi
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$PY" bench/ingest.py --lines "$INGEST" "${args[@]}" | tee -a "$log"
"$PY" bench/record.py --lines "$RECORD" "${args[@]}" | tee -a "$log"
"$PY" bench/output.py --lines "$OUTPUT" "${args[@]}" | tee -a "$log"
echo
echo "== summary =="
grep -E '^TARGET ' "$log"
if [[ ${STRICT:-0} == 1 ]] && grep -q '^TARGET .* MISS$' "$log"; then exit 1; fi
