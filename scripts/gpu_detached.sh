# Sourced by the GPU-host scripts: a `bench run` in a process session of its own, which outlives the call for as
# long as the host stays warm (the next call comes within its idle window), and its collection into $OUT.
# Needs RESULTS (the results folder) and OUT; LOG is the run's log.
LOG="$RESULTS/detached.log"

collect() {  # records and the run's log; the per-example artifacts
  tar czf "$OUT/${COLLECT_NAME}_records.tgz" -C "$RESULTS" records detached.log \
      $(cd "$RESULTS" && ls util.csv load.txt 2>/dev/null)
  # the artifacts in pieces under the 16 MiB a returned file may have
  [ -d "$RESULTS/artifacts" ] && tar cf - -C "$RESULTS" artifacts | split -b 15M - "$OUT/${COLLECT_NAME}_artifacts.tar."
  tail -n 4 "$LOG"
  echo "records: $(find "$RESULTS/records" -name '*.json' 2>/dev/null | wc -l)"
}

for folder in ${ALSO_WAIT:-}; do  # a mistyped folder would hold the host for all of WAIT_S: refuse it first
  [ -f "$folder/detached.log" ] || { echo "ALSO_WAIT: no detached run in $folder (no detached.log)" >&2; exit 2; }
done

all_done() {  # every log named says its run is done
  local log
  for log in "$@"; do grep -q "^DETACHED RUN DONE" "$log" 2>/dev/null || return 1; done
}

wait_run() {  # up to $1 seconds, until the detached run says it is done. ALSO_WAIT="<other results folder>...":
  # until those runs are done too, for runs sharing a host: the call then lasts as long as the slower run needs,
  # not only as long as its own (the host goes back 30 s after a call ends, taking an unfinished run with it).
  local until=$(( $(date +%s) + $1 )) others=() folder
  for folder in ${ALSO_WAIT:-}; do others+=("$folder/detached.log"); done
  while [ "$(date +%s)" -lt "$until" ] && ! all_done "$LOG" "${others[@]}"; do sleep 5; done
  grep "^DETACHED RUN DONE" "$LOG" 2>/dev/null || echo "detached run still going"
  for folder in ${ALSO_WAIT:-}; do all_done "$folder/detached.log" || echo "$folder: its run still going"; done
}

start_mps() {  # MPS=1: CUDA's multi-process service, so the lanes' kernels run side by side instead of taking turns
  if [ -n "${MPS:-}" ] && ! pgrep -x nvidia-cuda-mps >/dev/null && command -v nvidia-cuda-mps-control >/dev/null; then
    nvidia-cuda-mps-control -d && python3 -c "import torch; torch.ones(1, device='cuda')" \
        || { echo quit | nvidia-cuda-mps-control; echo "MPS did not start: lanes take turns"; }
  fi
}

private_copy() {  # cd into a copy of this checkout ($1), so that a later call's upload cannot change a running run.
  # TREE=<tarball of `git archive <commit>`> copies that commit's tree instead: the missing cells of a table then
  # run the code its other records ran (set BENCH_GIT_COMMIT to that commit).
  mkdir -p "$1" || exit 1
  if [ -n "${TREE:-}" ]; then tar xf "$TREE" -C "$1"; else tar cf - --exclude=./.data . | tar xf - -C "$1"; fi
  cd "$1" || exit 1
}

sample_host() {  # sample_host FOLDER: GPU utilisation and load average every 20 s, in benchmarks/run_timeline.py's
  # formats (--util FOLDER/util.csv --load FOLDER/load.txt). Started inside the detached session, so it outlives
  # the call that started it, as the run does.
  while sleep 20; do
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader >> "$1/util.csv" 2>/dev/null
    echo "$(date +%T) $(cut -d' ' -f1-3 /proc/loadavg)" >> "$1/load.txt"
  done
}
export -f sample_host

detach() {  # detach "<bench run args>" START: python3 -m bench.cli run ... in the background, logged to $LOG
  mkdir -p "$RESULTS"
  setsid bash -c "sample_host '$RESULTS' & sampler=\$!; \
    python3 -m bench.cli --results '$RESULTS' run $1 --device ${DEVICE:-cuda} --jobs ${JOBS:-auto}; \
    echo \"DETACHED RUN DONE exit \$? after \$(( \$(date +%s) - $2 )) s\"; kill \$sampler" > "$LOG" 2>&1 < /dev/null &
}
