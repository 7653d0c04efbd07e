"""Run a plan's model jobs in parallel worker processes on one machine (``bench run --jobs N``).

A job is one (dataset, defense, seed) with its cells. Each worker is a fresh process (the 'spawn' context) that
builds its own Registry and Runner on the same results folder and plans the same selection again, so jobs
travel as indices and results as JSON-able rows: nothing but plain data crosses processes. Records and cached
models land where the sequential runner puts them (atomic writes; a lock per cache key, so a teacher needed by
two jobs is trained once). With CUDA the workers share the visible GPUs as lanes: worker k runs on GPU
k mod #GPUs, pinned with CUDA_VISIBLE_DEVICES; the jobs are partitioned by model, so each lane trains and
evaluates whole models -- unless there are more lanes than jobs: then each job's cells are cut into parts that
run side by side on the one trained model (``split_tasks``).

A job whose worker raises or dies has its unfinished cells recorded as failed; a replacement worker takes the
remaining jobs. A job with a cell that ran out of memory runs once more after the lanes, alone. Rerunning
completes only what is missing, as with the sequential runner.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import queue
import sys
import traceback
from pathlib import Path

from bench.errors import UsageError


class WorkerDied(RuntimeError):
    """A worker process exited (crash, os._exit, out of memory) while running a job."""


def run_parallel(runner, selection, the_plan, jobs: int, extra: dict | None = None) -> int:
    """Run ``the_plan`` (planned from ``selection``) in ``jobs`` worker processes; the parent ``runner`` collects
    the summary rows and counts failures, as ``Runner.execute`` does. ``extra``: the registry's extra entries.
    Returns 0 when every cell succeeded, 1 when some failed."""
    from bench.runner import Plan

    if jobs != "auto" and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}")
    profile = the_plan.profile
    rows: dict[int, list] = {}
    pending = []
    for i, job in enumerate(the_plan.jobs):
        if all(runner.done(job, c, profile) for c in job.cells):
            runner.execute(Plan(profile, [job]))  # only reports "skipped" and reads the records
            rows[(i, -1)], runner.summary = runner.summary, []
        else:
            pending.append(i)

    gpus = _visible_gpus() if runner.device.type == "cuda" else []
    chosen = jobs == "auto"
    if chosen:
        jobs = auto_lanes(runner, the_plan, pending, gpus)
    todo = split_tasks(the_plan, pending, jobs, lambda job, cell: runner.done(job, cell, profile))
    workers = min(jobs, len(todo))
    if chosen and workers <= 1:  # one lane is the sequential run: no worker process to start
        for i in pending:
            runner.execute(Plan(profile, [the_plan.jobs[i]]))
            rows[(i, -1)], runner.summary = runner.summary, []
        runner.summary = [row for i in sorted(rows) for row in rows[i]]
        return 1 if runner.failed else 0
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    if "OMP_NUM_THREADS" in os.environ:  # an explicit cap wins
        threads = min(threads, max(1, int(os.environ["OMP_NUM_THREADS"])))
    spec = json.dumps({"selection": dataclasses.asdict(selection), "extra": extra or {},
                       "results": str(runner.results), "device": runner.device.type, "force": runner.force,
                       "run_id": runner.run_id, "threads": threads})
    if pending:
        where = (f"lanes on GPU {', '.join(gpus[:workers])}, {threads} thread(s) each" if gpus
                 else f"CPU, {threads} thread(s) each")
        split = f", split into {len(todo)} parts" if len(todo) > len(pending) else ""
        runner.say(f"{len(pending)} job(s){split} in {workers} worker process(es) ({where})")

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    pool: dict[int, _Worker] = {}

    def start(slot: int) -> None:
        gpu = gpus[slot % len(gpus)] if gpus else None  # several lanes share a GPU
        with capped_threads(threads):
            pool[slot] = _Worker(ctx, slot, spec, gpu, results)

    def finish(slot: int, job_rows: list, failed: int) -> None:
        rows[_row_key(pool[slot].job)] = job_rows
        runner.failed += failed
        pool[slot].job = None

    def lost(slot: int, why: str) -> None:
        job = task_job(the_plan, pool[slot].job)  # only this task's cells: other lanes may run the rest
        runner.fail_unfinished(job, profile, WorkerDied(why), stage="worker")
        rows[_row_key(pool[slot].job)], runner.summary = runner.summary, []
        pool[slot].job = None

    try:
        for slot in range(workers):
            start(slot)
        while todo or any(w.job is not None for w in pool.values()):
            for slot, w in pool.items():
                if w.job is None and todo:
                    if not w.process.is_alive():
                        start(slot)
                        w = pool[slot]
                    w.send(todo.pop(0))
            try:
                kind, slot, payload = results.get(timeout=0.5)
            except queue.Empty:
                for slot, w in list(pool.items()):
                    if w.job is not None and not w.process.is_alive():
                        _drain(results, finish, lost)
                        if pool[slot].job is not None:  # replaced when the next job is handed out
                            lost(slot, f"worker process exited with code {w.process.exitcode} while running "
                                       f"this job")
                continue
            _handle(kind, slot, payload, finish, lost)
    finally:
        for w in pool.values():
            w.stop()
    # Lanes share a GPU, so a cell can run out of memory at another lane's peak: a job with such a cell runs once
    # more when the lanes are gone, in this process and one job at a time (its model comes from the cache), while
    # any other run on the results folder waits between its steps.
    again = [i for i in pending if runner.unfinished(the_plan.jobs[i], profile)[1]]
    if again:
        runner.say(f"{len(again)} job(s) ran out of memory beside other lanes: running them again, one at a time")
    for i in again:
        runner.failed -= runner.unfinished(the_plan.jobs[i], profile)[0]  # counted again if they fail again
        runner.summary = []
        with runner.cache.alone():  # beside no lane of this run or of another on the same results folder
            runner.execute(Plan(profile, [the_plan.jobs[i]]))
        for key in [k for k in rows if k[0] == i]:  # the whole job's rows replace its parts'
            del rows[key]
        rows[(i, -1)], runner.summary = runner.summary, []
    runner.summary = [row for i in sorted(rows) for row in rows[i]]
    return 1 if runner.failed else 0


def _handle(kind, slot, payload, finish, lost) -> None:
    if kind == "done":
        finish(slot, payload["rows"], payload["failed"])
    else:  # "error": the job raised outside the runner's own per-cell handling; payload is the traceback
        lost(slot, f"the job raised in its worker:\n{payload}")


def _drain(results, finish, lost) -> None:
    """Messages a worker sent just before it exited still count."""
    while True:
        try:
            kind, slot, payload = results.get(timeout=0.2)
        except queue.Empty:
            return
        _handle(kind, slot, payload, finish, lost)


# A lane's GPU memory: the CUDA context and allocator slack, plus room for the activations of an evaluation batch
# (2,000 inputs) taken as a multiple of the weights. Small models are launch-bound, so several lanes share a GPU.
LANE_BASE_GIB = 1.0
ACTIVATIONS_PER_WEIGHT = 64
# At most this many lanes a GPU: without MPS the GPU time-slices between processes' contexts, and past ~8
# launch-bound lanes the gain flattens while each lane still holds a context and a CPU core.
MAX_LANES_PER_GPU = 8


def split_tasks(the_plan, pending: list[int], lanes: int, done) -> list[tuple[int, tuple[int, ...] | None]]:
    """The workers' tasks, as (job index, cell indices or None for the whole job). With at least as many jobs as
    lanes, whole jobs. With more lanes than jobs, each job's unfinished cells are cut into ceil(lanes / jobs)
    consecutive parts of near-equal size (the summary keeps plan order), so that no lane idles while a model has
    cells left: the parts of one model train it once (the cache lock; the others wait, then load it) and
    evaluate the same weights, so the records are the ones a whole job writes. The first part of every job comes
    first, so every model starts training at once."""
    if not pending or lanes <= len(pending):
        return [(i, None) for i in pending]
    parts = -(-lanes // len(pending))
    cells = {i: [k for k, c in enumerate(the_plan.jobs[i].cells) if not done(the_plan.jobs[i], c)] for i in pending}

    def part(todo: list[int], p: int) -> tuple[int, ...]:
        return tuple(todo[len(todo) * p // parts:len(todo) * (p + 1) // parts])

    return [(i, part(cells[i], p)) for p in range(parts) for i in pending if part(cells[i], p)]


def _row_key(task) -> tuple[int, int]:
    """Summary rows in plan order: by job, then by the part's first cell."""
    return task[0], task[1][0] if task[1] else -1


def task_job(the_plan, task: tuple[int, tuple[int, ...] | None]):
    """The job a task runs: the plan's job, or a copy holding only the task's cells."""
    i, cells = task
    job = the_plan.jobs[i]
    return job if cells is None else dataclasses.replace(job, cells=[job.cells[k] for k in cells], whole=job.cells)


def lane_memory_bytes(weight_bytes: int) -> int:
    """The estimated peak GPU memory of one lane whose largest model has ``weight_bytes`` of parameters."""
    return int(LANE_BASE_GIB * 2**30 + ACTIVATIONS_PER_WEIGHT * weight_bytes)


# A measured peak (a record's timings.gpu_peak_mib) is a peak of one run: lanes are sized with this margin.
MEASURED_MARGIN = 1.25


def choose_lanes(free_bytes: list[int], weight_bytes: int, models: int, cores: int,
                 measured: list[int] = ()) -> int:
    """The rule behind ``--jobs auto`` with CUDA (and the default of ``bench run --device cuda``): as many lanes
    as the GPUs' free memory holds at ``lane_memory_bytes`` each -- or, where an earlier run measured a larger
    peak for these cells (``measured``: one peak per kind of cell in the grid, 0 where none was measured), at
    the largest such peak times ``MEASURED_MARGIN`` --, at most ``MAX_LANES_PER_GPU`` a GPU, one per model job
    and one per core; at least 1.
    A kind of cell whose peak (with the margin) leaves room for fewer than two lanes on the largest GPU does not
    size the lanes while the grid has lighter kinds: it cannot share a GPU whatever their number (CROWN on the
    full cnn: ~70 GiB), and letting it decide would run the whole grid in one lane; beside the lanes it runs out
    of memory and runs again alone after them (``run_parallel``). A grid of heavy kinds only runs in one lane."""
    gpu = max(free_bytes, default=0)
    shareable = [m for m in measured if 2 * MEASURED_MARGIN * m <= gpu]
    sizing = max(shareable) if shareable else max(measured, default=0)
    lane = max(lane_memory_bytes(weight_bytes), int(MEASURED_MARGIN * sizing))
    fits = int(sum(free_bytes) // lane)
    return max(1, min(fits, MAX_LANES_PER_GPU * len(free_bytes), models, cores))


def measured_peaks(results: Path, the_plan, pending: list[int]) -> dict[tuple, int]:
    """The largest GPU memory peak that records in ``results`` report for each kind of the pending jobs' cells
    (dataset, profile, defense and attack: one model's seeds are alike); 0 for a kind no record measured."""
    wanted = {(job.dataset.name, the_plan.profile, job.defense.name, cell.attack.name)
              for job in (the_plan.jobs[i] for i in pending) for cell in job.cells}
    peaks = dict.fromkeys(wanted, 0)
    for path in (Path(results) / "records").rglob("*.json"):
        try:
            r = json.loads(path.read_text())
            mib = (r.get("timings") or {}).get("gpu_peak_mib")
            kind = (r["dataset"]["name"], r["profile"], r["defense"]["name"], r["attack"]["name"])
        except (OSError, ValueError, KeyError, TypeError):  # the runner reports damaged records itself
            continue
        if mib and kind in wanted:
            peaks[kind] = max(peaks[kind], int(mib) * 2**20)
    return peaks


def auto_lanes(runner, the_plan, pending: list[int], gpus: list[str]) -> int:
    """How many worker processes to run: one per core (and per pending job) on the CPU; with CUDA,
    ``choose_lanes`` for the largest pending model, the peaks earlier runs measured for these cells and the
    visible GPUs' free memory now."""
    cores = os.cpu_count() or 1
    if not gpus:
        return max(1, min(cores, len(pending)))
    import torch

    largest, seen = 0, set()
    for i in pending:
        job = the_plan.jobs[i]
        kind = (job.defense.name, repr(job.defense.params), job.dataset.name, repr(job.dataset.params))
        if kind in seen:  # seeds of one model: the same size, built once
            continue
        seen.add(kind)
        try:
            model = job.defense.build(job.dataset.spec())
        except Exception:  # sizing is a guess: the job itself will report why it cannot build its model
            continue
        largest = max(largest, sum(p.numel() * p.element_size() for p in model.parameters()))
    free = [torch.cuda.mem_get_info(i)[0] for i in range(len(gpus))]
    measured = measured_peaks(runner.results, the_plan, pending) if getattr(runner, "results", None) else {}
    return choose_lanes(free, largest, len(pending), cores, list(measured.values()))


def _visible_gpus() -> list[str]:
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()][:torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


# Native thread pools (OpenMP, OpenBLAS, MKL) size themselves when their library loads, before any line of the
# worker runs, so the per-lane cap must be in the environment a worker starts with. Unset, every lane starts one
# thread per core and they spin against each other: numpy's GloVe look-ups of the text attacks ran 3.1x slower
# in 2 lanes on 2 cores (benchmarks/lane_threads.py).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def capped_threads(threads: int):
    """The block's child processes start with at most ``threads`` native threads each (a lower value already
    in the environment is kept); this process's environment is restored after it."""
    saved = {name: os.environ.get(name) for name in THREAD_VARS}
    for name, value in saved.items():
        os.environ[name] = str(min(threads, int(value))) if value and value.isdigit() and int(value) > 0 \
            else str(threads)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Worker:
    def __init__(self, ctx, slot: int, spec: str, gpu: str | None, results):
        self.tasks = ctx.Queue()
        self.job: tuple | None = None  # the task being run: (job index, cell indices or None)
        self.process = ctx.Process(target=_work, args=(slot, spec, gpu, self.tasks, results),
                                   name=f"bench-worker-{slot}", daemon=True)
        self.process.start()

    def send(self, job: tuple) -> None:
        self.job = job
        self.tasks.put(job)

    def stop(self) -> None:
        if self.process.is_alive():
            self.tasks.put(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


class _Prefixed:
    """The worker's log lines, each prefixed with its slot (workers share the terminal)."""

    def __init__(self, prefix: str):
        self.prefix, self.at_line_start = prefix, True

    def write(self, text: str) -> None:
        for part in text.splitlines(keepends=True):
            sys.stdout.write((self.prefix if self.at_line_start else "") + part)
            self.at_line_start = part.endswith("\n")

    def flush(self) -> None:
        sys.stdout.flush()


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``),
    so that a killed ``bench run`` leaves no workers behind; elsewhere, the worker notices a closed task queue."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


def _work(slot: int, spec_json: str, gpu: str | None, tasks, results) -> None:
    """A worker process: run the jobs it is sent until it gets None. An exception fails the job, not the
    worker; the parent notices a worker that dies, and the worker dies with the parent."""
    die_with_parent()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before torch initialises CUDA
    spec = json.loads(spec_json)
    runner = the_plan = None
    while (job := tasks.get()) is not None:
        try:
            if runner is None:
                runner, the_plan = _setup(slot, spec)
            from bench.runner import Plan

            runner.summary, runner.failed = [], 0
            runner.execute(Plan(the_plan.profile, [task_job(the_plan, tuple(job))]))
            results.put(("done", slot, {"rows": runner.summary, "failed": runner.failed}))
        except Exception:
            results.put(("error", slot, traceback.format_exc()))


def _setup(slot: int, spec: dict):
    """The worker's own Registry and Runner, and the same plan as the parent's (planning is deterministic)."""
    import torch

    from bench.registry import Registry
    from bench.runner import Runner, Selection, plan

    torch.set_num_threads(spec["threads"])
    registry = Registry(extra=spec["extra"])
    selection = Selection(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["selection"].items()})
    runner = Runner(registry, Path(spec["results"]), device=spec["device"], force=spec["force"],
                    out=_Prefixed(f"[w{slot}] "), run_id=spec["run_id"])
    return runner, plan(registry, selection)
