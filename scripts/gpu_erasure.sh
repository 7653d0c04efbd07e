#!/usr/bin/env bash
# The concept-erasure track's full profile on a GPU host with no network (as run for the committed leaderboard):
# unpack the kit of scripts/erasure_gpu_kit.py (carried in .data/gpu_erasure), find (or train) the base
# text-to-image model, then `bench run --suite erasure-full` as lanes on the GPU, detached (scripts/gpu_detached.sh).
# Each call waits up to WAIT_S seconds and brings back what is done.
# Usage, first call:  OUT=<folder> BENCH_GIT_COMMIT=<sha> [JOBS=16] [MPS=1] [WAIT_S=540] [PROFILES=full] [TREE=<git archive>] scripts/gpu_erasure.sh [bench run args]
#        each later:  OUT=<folder> COLLECT=1 [WAIT_S=540] scripts/gpu_erasure.sh
# Sharing the host with another detached run, ALSO_WAIT=<its results folder> (e.g. /tmp/text-results) makes each call wait
# for that run too, so the host stays held until both are done.
# e.g. scripts/gpu_erasure.sh --suite erasure-full --dataset fashion-erase-bag
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-/tmp/erasure-results} COLLECT_NAME=erasure
. scripts/gpu_detached.sh
if [ -n "${COLLECT:-}" ]; then wait_run "${WAIT_S:-540}"; collect; exit 0; fi
# The kit unpacks under a folder of this script's own, so a text run can share the host.
start=$(date +%s) device=${DEVICE:-cuda} kit=.data/gpu_erasure host=/tmp/erasure-host
if [ ! -d "$host/site/diffusers" ]; then
  mkdir -p "$host/site" "$host/minilm" "$host/data"
  tar xJf $kit/diffusers.tar.xz -C "$host/site" && tar xJf $kit/minilm.tar.xz -C "$host/minilm" \
      && tar xJf $kit/fashion.tar.xz -C "$host/data" || exit 1
fi
private_copy "/tmp/erasure-tree-$start"
# The package's dist-info carries the entry points; the code itself is imported from this copy.
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$host/site" . || exit 1
export PYTHONPATH="$PWD:$host/site" BENCH_DATA=$host/data BENCH_MINILM=$host/minilm BENCH_PROGRESS=0 PYTHONUNBUFFERED=1
[ "$device" = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# The base model: the shipped weights when their recipe matches (a second, no training), else trained here once
# and cached under $BENCH_DATA for every lane.
for profile in ${PROFILES:-full}; do
  python3 -m bench.tracks.concept_erasure.train --profile "$profile" --device "$device" 2>&1 | grep -v '^\s*$' | tail -n 3
done
start_mps
detach "${*:---suite erasure-full}" "$start"
wait_run $(( ${WAIT_S:-540} - ($(date +%s) - start) ))
collect
