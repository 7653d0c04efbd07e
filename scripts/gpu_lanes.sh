#!/usr/bin/env bash
# Several `bench run` lanes side by side on one GPU: small CNNs are launch-bound, so concurrent processes
# keep the GPU busier than one. Lanes share the results folder; the per-key cache lock makes a model needed by
# two lanes (a teacher) train once. Each argument is one lane's `bench run` arguments, e.g.
#   OUT=<folder> LANE_TIMEOUT=480 scripts/gpu_lanes.sh "--suite mtard-full --defense ard" "--suite mtard-full --defense mtard"
set -uo pipefail
cd "$(dirname "$0")/.."
SETUP_ONLY=1 SKIP_BENCH=1 bash scripts/gpu_full_run.sh || exit 1
export PYTHONPATH=/tmp/site BENCH_DATA="$PWD/.data" BENCH_PROGRESS=0 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
i=0
for lane in "$@"; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  ( start=$(date +%s); timeout "${LANE_TIMEOUT:-480}" python3 -m bench.cli --results leaderboards run $lane --device cuda
    echo "lane $i exit $? after $(( $(date +%s) - start )) s: $lane" ) > "$OUT/lane$i.log" 2>&1 &
done
wait
tail -n 3 "$OUT"/lane*.log
tar czf "$OUT/full_records.tgz" -C leaderboards records $(test -d leaderboards/artifacts && echo artifacts) \
    $(test -d leaderboards/logs && echo logs)
