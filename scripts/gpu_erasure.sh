#!/usr/bin/env bash
# The concept-erasure track's full profile on a GPU host with no network (as run for the committed leaderboard):
# unpack the kit of scripts/erasure_gpu_kit.py (carried in .data/gpu_erasure), train the base text-to-image model
# unless its weights are shipped, then one `bench run` lane per concept side by side on the GPU.
# Usage: OUT=<folder> [BUDGET=s] [PROFILES="full"] [RESULTS=leaderboards] [DEVICE=cuda] scripts/gpu_erasure.sh "<lane 1's bench run args>" ...
# e.g. scripts/gpu_erasure.sh "--suite erasure-full --dataset fashion-erase-bag --seed 0" "--suite erasure-quick"
set -uo pipefail
cd "$(dirname "$0")/.."
end=$(( $(date +%s) + ${BUDGET:-570} ))  # everything, the results' packing included, ends by then
results=${RESULTS:-leaderboards} device=${DEVICE:-cuda} kit=.data/gpu_erasure site=${SITE:-/tmp/site}
mkdir -p "$site" /tmp/minilm
tar xJf $kit/diffusers.tar.xz -C "$site" && tar xJf $kit/minilm.tar.xz -C /tmp/minilm && tar xJf $kit/fashion.tar.xz -C .data || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . || exit 1
export PYTHONPATH="$site" BENCH_DATA="$PWD/.data" BENCH_MINILM=/tmp/minilm BENCH_PROGRESS=0 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
[ "$device" = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# The base model: the shipped float16 weights when their recipe matches, else trained here; either way the
# lanes use the float16 file that ships (written into the installed package before they start).
for profile in ${PROFILES:-full}; do
  shipped="$site/bench/tracks/concept_erasure/weights/$profile.safetensors"; mkdir -p "$(dirname "$shipped")"
  half=$([ "$profile" = full ] && echo --half)
  timeout $(( end - $(date +%s) - 60 )) python3 -m bench.tracks.concept_erasure.train --profile "$profile" --device "$device" $half \
      --out "/tmp/$profile.safetensors" 2>&1 | grep -v '^\s*$' | tail -n 15
  cp "/tmp/$profile.safetensors" "$shipped" || { echo "no base model"; exit 1; }
done
i=0
for lane in "$@"; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  ( start=$(date +%s); timeout $(( end - start - 15 )) python3 -m bench.cli --results "$results" run $lane --device "$device"
    echo "lane $i exit $? after $(( $(date +%s) - start )) s: $lane" ) > "$OUT/lane$i.log" 2>&1 &
done
wait
tail -n 3 "$OUT"/lane*.log
tar czf "$OUT/erasure_records.tgz" -C "$results" records $(test -d "$results/artifacts" && echo artifacts)
