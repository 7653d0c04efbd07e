#!/usr/bin/env bash
# The `full` profile of the image grid on a GPU host with no network, as run for the committed leaderboard:
# wheels (foolbox, eagerpy, GitPython, gitdb, smmap, torchattacks, mlxtend, auto_LiRPA 0.3: `pip download --no-deps
# --python-version 3.12 --only-binary=:all: -d .whl ...`) and the Fashion-MNIST files (.data/FashionMNIST/raw)
# travel with the repository in ignored folders.
# Usage: OUT=<folder for results> BENCH_GIT_COMMIT=<sha> [SUITES="full mtard-full ..."] [PARALLEL_SUITES=1] scripts/gpu_full_run.sh [extra `bench run` args]
# e.g. the image grid's seeds 1 and 2 across calls: RESULTS=/tmp/results DETACH=1 BENCH_TIMEOUT=1500 JOBS=6 ... --seed 1 2,
# then RESULTS=/tmp/results COLLECT=1 ... in each following call (within the host's 30-second idle window).
# Several groups side by side on a host of several GPUs: one call per group with its own CUDA_VISIBLE_DEVICES,
# RESULTS and SUITES, DETACH=1 WAIT_S=0 (return at once), and SKIP_INSTALL=1 for all but the first.
# RESULTS=<folder outside the checkout> keeps records and trained models across calls to a warm host (seeded once
# from the committed records, so finished cells are skipped); a later call resumes where the last one stopped.
# Models across sessions (a fresh host each): KEEP_MODELS="standard pgd-at" brings those defenses' trained models
# back from the cache (models.tar.* pieces, ~3.5 MiB a full-profile cnn); MODELS=<folder of those pieces>, carried
# to a later session's host, puts them back in its cache, so its cells evaluate the same weights.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-leaderboards}
. scripts/gpu_detached.sh  # wait_run, start_mps, sample_host (its own collect below: one archive, logs and cache too)
collect() {  # one file (a call brings back at most 8): records, logs, the detached log and small artifacts; trained
  # models stay (KEEP_CACHE=1 brings them too)
  tar czf "$OUT/full_records.tgz" -C "$RESULTS" records $(test -d "$RESULTS/artifacts" && echo artifacts) \
      $(test -d "$RESULTS/logs" && echo logs) $(cd "$RESULTS" && ls detached.log util.csv load.txt 2>/dev/null) \
      ${KEEP_CACHE:+cache}
  [ -z "${KEEP_MODELS:-}" ] || keep_models
  [ -f "$RESULTS/detached.log" ] && tail -n 3 "$RESULTS/detached.log"
  echo "records: $(find "$RESULTS/records" -name '*.json' | wc -l)"
}
keep_models() {  # the cache entries (weights and metadata) of the defenses KEEP_MODELS names
  python3 - "$RESULTS/cache" $KEEP_MODELS <<'EOF' | tar cf - -C "$RESULTS" -T - | split -b 15M - "$OUT/models.tar."
import json, sys
from pathlib import Path
names, found = set(sys.argv[2:]), set()
for meta in sorted(Path(sys.argv[1]).glob("*.json")):
    if (name := json.loads(meta.read_text()).get("defense", {}).get("name")) in names:
        found.add(name)
        print(f"cache/{meta.stem}.safetensors\ncache/{meta.name}")
if names - found:
    print(f"KEEP_MODELS: no trained model of {' '.join(sorted(names - found))} in {sys.argv[1]}", file=sys.stderr)
EOF
  echo "models kept: $(cat "$OUT"/models.tar.* | tar tf - | grep -c '\.json$') ($KEEP_MODELS)"
}
# COLLECT=1 comes before any install: the detached run's lanes import from /tmp/site
if [ -n "${COLLECT:-}" ]; then
  wait_run "${WAIT_S:-540}"; collect; exit 0
fi
if [ -n "${MODELS:-}" ] && ! ls "$MODELS"/models.tar.* >/dev/null 2>&1; then
  echo "MODELS: no models.tar.* pieces in $MODELS" >&2; exit 2
fi
if [ ! -d "$RESULTS/records" ]; then mkdir -p "$RESULTS" && cp -r leaderboards/records leaderboards/artifacts "$RESULTS"/; fi
[ -z "${MODELS:-}" ] || cat "$MODELS"/models.tar.* | tar xf - -C "$RESULTS" || exit 1
# SKIP_INSTALL=1: a later group on a host where an earlier one installed (its lanes import from /tmp/site).
if [ -z "${SKIP_INSTALL:-}" ]; then
[ -d /tmp/site/bench ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
# matplotlib (MTARD's trajectory plot, the SYN digits' fonts) if the host lacks it: wheels in .data/mpl
python3 -c "import matplotlib" 2>/dev/null || [ -d /tmp/site/matplotlib ] || python3 -m pip install -q --no-index --no-deps --target /tmp/site .data/mpl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target /tmp/site .
fi
export PYTHONPATH=/tmp/site BENCH_DATA="$PWD/.data" BENCH_PROGRESS=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start_mps  # MPS=1 (on the H200: 8 lanes of the image and domain grids, each about as fast as one of 3 without it)
# SETUP_ONLY=1: install and stop (for callers that run their own commands, e.g. benchmarks/gpu_speed.py --suites).
[ -z "${SETUP_ONLY:-}" ] || exit 0
[ -n "${SKIP_BENCH:-}" ] || python3 benchmarks/gpu_speed.py --json "$OUT/gpu_speed.json" || true
# SUITES: the suites to run in order (default: the image grid); BENCH_TIMEOUT bounds them all together. Each
# suite runs as lanes on the GPU (bench's default with CUDA: --jobs auto); JOBS=N fixes the number of lanes.
# DETACH=1: the suites run in a process session of their own (setsid), which outlives this call for as long as the
# host stays warm (the next call comes within its idle window); this call then waits WAIT_S seconds (default
# 540) and returns what is done. A later call with COLLECT=1 waits up to WAIT_S for that run and returns again.
# PARALLEL_SUITES=1: the suites run side by side, not in turn (JOBS lanes each), so one suite's idle lanes do not
# wait for the other's; two grids that share models (`full` and `mtard-full`: standard, pgd-at) train each once
# (the cache lock) and write each cell once (the cell lock). Their output lines start with [suite].
# SUITE_JOBS="full:4 mtard-full:3": lanes per suite, overriding JOBS (side by side, the suite whose longest
# model takes longest gets more lanes: its models' cells are then cut into parts).
suite_jobs() {
  local pair
  for pair in ${SUITE_JOBS:-}; do [ "${pair%%:*}" != "$1" ] || { echo "${pair#*:}"; return; }; done
  echo "${JOBS:-}"
}
run_suite() {
  local suite=$1 left jobs; shift
  jobs=$(suite_jobs "$suite")
  left=$(( end - $(date +%s) ))
  [ "$left" -gt 10 ] || { echo "no time left for suite $suite"; return 1; }
  echo "== suite $suite ($left s left) at $(date -u +%H:%M:%S)"
  timeout "$left" python3 -m bench.cli --results "$RESULTS" run --suite "$suite" --device cuda \
      ${jobs:+--jobs "$jobs"} "$@"
  echo "bench exit ($suite): $? at $(date -u +%H:%M:%S)"
}
run_suites() {
  end=$(( $(date +%s) + ${BENCH_TIMEOUT:-480} ))
  local suite pids=()
  for suite in ${SUITES:-full}; do
    if [ -n "${PARALLEL_SUITES:-}" ]; then
      run_suite "$suite" "$@" 2>&1 | sed -u "s/^/[$suite] /" &
      pids+=($!)
    else
      run_suite "$suite" "$@" || break
    fi
  done
  # only the suites: in the detached session the host sampler is a background job too, and never ends
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
}
if [ -n "${DETACH:-}" ]; then
  export -f run_suites run_suite suite_jobs
  export RESULTS SUITES JOBS SUITE_JOBS BENCH_TIMEOUT PARALLEL_SUITES
  setsid bash -c 'sample_host "$RESULTS" & sampler=$!; run_suites "$@"; echo "DETACHED RUN DONE $(date -u +%H:%M:%S)"
      kill $sampler' _ "$@" \
      > "$RESULTS/detached.log" 2>&1 < /dev/null &
  wait_run "${WAIT_S:-540}"; collect; exit 0
fi
run_suites "$@"
pkill -f "bench.cli" 2>/dev/null  # lanes of a suite cut short: the next call reruns their cells
collect
