"""The parallel executor (``bench run --jobs N``): same records as the sequential runner, a shared teacher
trained once, and a worker that dies fails only its own job's cells."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.executors import run_parallel
from bench.registry import Registry
from bench.runner import Runner, Selection, plan


def registry_with(*extras):
    merged = {}
    for extra in extras:
        for kind, items in extra.items():
            merged.setdefault(kind, {}).update(items)
    return merged, Registry(extra=merged)


def grid(defenses, attacks):
    return Selection(defenses=tuple(defenses), attacks=tuple(attacks), datasets=("uci-digits",), profile="smoke")


def comparable(results):
    """Every record by path, without what legitimately differs between runs (timings, hardware, dates)."""
    out = {}
    for path in sorted((results / "records").rglob("*.json")):
        r = json.loads(path.read_text())
        out[str(path.relative_to(results))] = {k: r.get(k) for k in ("key", "config_id", "status", "metrics")}
    return out


def sequential_then_parallel(registry, extra, sel, tmp_path, capfd, jobs, name="par"):
    """``sel`` run sequentially into tmp_path/seq, then by ``run_parallel`` with ``jobs`` into tmp_path/name:
    (sequential runner, parallel runner, the parallel run's output)."""
    sequential = Runner(registry, tmp_path / "seq", device="cpu")
    assert sequential.execute(plan(registry, sel)) == 0
    capfd.readouterr()
    parallel = Runner(registry, tmp_path / name, device="cpu")
    assert run_parallel(parallel, sel, plan(registry, sel), jobs=jobs, extra=extra) == 0
    return sequential, parallel, capfd.readouterr().out


def test_parallel_gives_the_same_records_and_trains_a_shared_teacher_once(tmp_path, capfd):
    from plugins_for_tests import EXTRA

    extra, registry = registry_with(EXTRA)
    sel = grid(("standard", "needs-teacher"), ("fgsm", "pgd-linf"))  # both jobs need the standard model
    sequential, parallel, out = sequential_then_parallel(registry, extra, sel, tmp_path, capfd, jobs=2)
    assert "2 job(s) in 2 worker process(es)" in out
    assert out.count("training standard") == 1  # the cache lock: one worker trains, the other loads
    seq, par = comparable(tmp_path / "seq"), comparable(tmp_path / "par")
    assert len(seq) == 4 and all(r["status"] == "ok" for r in seq.values())
    assert par == seq
    assert [(r["defense"], r["attack"]) for r in parallel.summary] == \
        [(r["defense"], r["attack"]) for r in sequential.summary]  # rows in plan order

    # A second run finds everything done and starts no worker.
    rerun = Runner(registry, tmp_path / "par", device="cpu")
    assert run_parallel(rerun, sel, plan(registry, sel), jobs=2, extra=extra) == 0
    out = capfd.readouterr().out
    assert "worker" not in out and out.count("(skipped)") == 2


def test_a_dying_worker_fails_its_job_and_the_others_finish(tmp_path, capfd):
    from plugins_for_executors import EXTRA as DYING
    from plugins_for_tests import EXTRA

    extra, registry = registry_with(EXTRA, DYING)
    sel = grid(("dies", "standard", "needs-teacher"), ("fgsm",))  # 3 jobs, 2 workers: one is replaced
    runner = Runner(registry, tmp_path, device="cpu")
    assert run_parallel(runner, sel, plan(registry, sel), jobs=2, extra=extra) == 1
    assert runner.failed == 1
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").rglob("*.json")]
    records = {r["defense"]["name"]: r for r in records}
    assert records["dies"]["status"] == "failed" and records["dies"]["error"]["type"] == "WorkerDied"
    assert "exited with code 3" in records["dies"]["error"]["message"]
    assert records["standard"]["status"] == "ok" and records["needs-teacher"]["status"] == "ok"
    assert {r["defense"]: r["status"] for r in runner.summary} == \
        {"dies": "failed", "standard": "ok", "needs-teacher": "ok"}

    # Rerunning retries only the failed job.
    capfd.readouterr()
    runner = Runner(registry, tmp_path, device="cpu")
    assert run_parallel(runner, sel, plan(registry, sel), jobs=2, extra=extra) == 1
    out = capfd.readouterr().out
    assert "1 job(s) in 1 worker process(es)" in out and out.count("(skipped)") == 2


def test_a_job_that_ran_out_of_memory_in_a_lane_runs_again_alone_and_other_failures_do_not(tmp_path, capfd):
    from plugins_for_executors import EXTRA as FAILING
    from plugins_for_tests import EXTRA

    extra, registry = registry_with(EXTRA, FAILING)
    sel = grid(("oom-in-lanes", "raises", "standard"), ("fgsm", "pgd-linf"))
    runner = Runner(registry, tmp_path, device="cpu")
    assert run_parallel(runner, sel, plan(registry, sel), jobs=2, extra=extra) == 1
    assert runner.failed == 2  # raises' two cells; oom-in-lanes' are not counted twice
    out = capfd.readouterr().out
    assert "1 job(s) ran out of memory beside other lanes" in out
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").rglob("*.json")]
    status = {(r["defense"]["name"], r["attack"]["name"]): r["status"] for r in records}
    assert status == {("oom-in-lanes", "fgsm"): "ok", ("oom-in-lanes", "pgd-linf"): "ok",
                      ("raises", "fgsm"): "failed", ("raises", "pgd-linf"): "failed",
                      ("standard", "fgsm"): "ok", ("standard", "pgd-linf"): "ok"}
    assert [(r["defense"], r["status"]) for r in runner.summary] == \
        [("oom-in-lanes", "ok")] * 2 + [("raises", "failed")] * 2 + [("standard", "ok")] * 2


def test_a_process_alone_waits_for_running_steps_and_holds_new_ones_back(tmp_path):
    """The after-lanes pass runs with the device to itself even beside another run on the same results folder
    (two grids side by side): its ``cache.alone()`` waits for the step another run is in, no step starts until it
    ends, and its own steps pass. Threads stand in for processes: each lock is a file lock of its own."""
    import threading
    import time

    lane, solo = Runner(Registry(), tmp_path, device="cpu"), Runner(Registry(), tmp_path, device="cpu")
    events, in_step = [], threading.Event()

    def step(name, hold=0.0):
        with lane.cache.turn():
            events.append(f"{name} begins")
            in_step.set()
            time.sleep(hold)
            events.append(f"{name} ends")

    first = threading.Thread(target=step, args=("step", 0.5))
    first.start()
    assert in_step.wait(10)
    with solo.cache.alone():
        events.append("alone begins")
        second = threading.Thread(target=step, args=("next step",))
        second.start()
        with solo.cache.turn():  # its own steps do not wait for itself
            events.append("own step")
        time.sleep(0.5)
        events.append("alone ends")
    for t in (first, second):
        t.join(10)
        assert not t.is_alive(), "a step or alone() never got its turn"
    assert events == ["step begins", "step ends", "alone begins", "own step", "alone ends", "next step begins",
                      "next step ends"]


def test_jobs_below_one_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("--results", tmp_path, "run", "--suite", "smoke", "--jobs", "0")
    assert code == 2 and "--jobs must be at least 1" in err and not tmp_path.joinpath("records").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the death signal is Linux's prctl")
def test_workers_die_with_a_killed_parent(tmp_path):
    """kill -9 of a `--jobs 2` parent leaves no worker behind (each asked the kernel for a death signal)."""
    import signal
    import time

    env = {**os.environ, "BENCH_PROGRESS": "0"}
    parent = subprocess.Popen([sys.executable, "-m", "bench.cli", "--results", str(tmp_path / "r"), "run",
                               "--defense", "standard", "pgd-at", "--attack", "fgsm", "--dataset", "uci-digits",
                               "--profile", "smoke", "--set", "epochs=200", "--jobs", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline and len(children) < 2:
        time.sleep(0.5)
        try:
            text = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text()
        except OSError:
            break
        children = [int(p) for p in text.split()]
    assert len(children) >= 2, "the workers did not start"
    time.sleep(3)  # let the workers get past their start-up
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() and
                                         "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2:3]
                                         for pid in children):
        time.sleep(0.5)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
    assert not alive, f"workers {alive} outlived their parent"


def test_jobs_auto_takes_one_lane_per_core_on_the_cpu_and_sizes_gpu_lanes_by_memory(registry, monkeypatch):
    import types

    from bench import executors

    sel = Selection(defenses=("standard", "pgd-at"), attacks=("fgsm",), datasets=("uci-digits",), seeds=(0, 1, 2),
                    profile="smoke")
    the_plan = plan(registry, sel)
    pending = list(range(len(the_plan.jobs)))
    monkeypatch.setattr(executors.os, "cpu_count", lambda: 4)
    assert executors.auto_lanes(None, the_plan, pending, []) == 4
    assert executors.auto_lanes(None, the_plan, pending[:2], []) == 2
    # One GPU with 3.5 GiB free and ~1 GiB a lane (the smoke CNN is small): three lanes.
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (int(3.5 * 2**30), 80 * 2**30))
    assert executors.auto_lanes(types.SimpleNamespace(), the_plan, pending, ["0"]) == 3


def test_gpu_lanes_are_sized_by_the_peaks_earlier_records_measured(registry, monkeypatch, tmp_path):
    import types

    import torch

    from bench import executors

    sel = Selection(defenses=("standard",), attacks=("fgsm", "pgd-linf"), datasets=("uci-digits",),
                    seeds=(0, 1, 2, 3), profile="smoke")
    the_plan = plan(registry, sel)
    pending = list(range(len(the_plan.jobs)))
    monkeypatch.setattr(executors.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (int(10.5 * 2**30), 80 * 2**30))
    runner = types.SimpleNamespace(results=tmp_path)
    assert executors.auto_lanes(runner, the_plan, pending, ["0"]) == 4  # no measurement: ~1 GiB a lane
    record = {"dataset": {"name": "uci-digits"}, "profile": "smoke", "defense": {"name": "standard"},
              "attack": {"name": "pgd-linf"}, "timings": {"gpu_peak_mib": 4096}}
    other = {**record, "attack": {"name": "square"}, "timings": {"gpu_peak_mib": 60_000}}  # not in this grid
    (tmp_path / "records").mkdir()
    for name, r in (("a.json", record), ("b.json", other)):
        (tmp_path / "records" / name).write_text(json.dumps(r))
    (tmp_path / "records" / "damaged.json").write_text("{")
    peaks = executors.measured_peaks(tmp_path, the_plan, pending)
    assert peaks == {("uci-digits", "smoke", "standard", "pgd-linf"): 4096 * 2**20,
                     ("uci-digits", "smoke", "standard", "fgsm"): 0}  # measured by no record
    assert executors.auto_lanes(runner, the_plan, pending, ["0"]) == 2  # 10.5 GiB / (1.25 x 4 GiB)
    # a kind of cell that cannot share the GPU (as CROWN's ~70 GiB on an 80 GB card) does not size the lanes
    heavy = {**record, "attack": {"name": "fgsm"}, "timings": {"gpu_peak_mib": 8192}}
    (tmp_path / "records" / "c.json").write_text(json.dumps(heavy))
    assert executors.auto_lanes(runner, the_plan, pending, ["0"]) == 2  # still 1.25 x 4 GiB a lane


def test_the_gpu_lane_rule_is_memory_over_lane_peak_capped_at_8_a_gpu_the_models_and_the_cores():
    from bench.executors import MAX_LANES_PER_GPU, choose_lanes, lane_memory_bytes

    gib = 2**30
    cnn = 4 * 450_000  # the suite's cnn: ~0.45 M float32 parameters, so a lane is ~1.1 GiB
    assert lane_memory_bytes(cnn) == gib + 64 * cnn
    assert choose_lanes([int(5.5 * gib)], cnn, models=20, cores=16) == 4  # memory decides
    assert choose_lanes([139 * gib], cnn, models=20, cores=16) == MAX_LANES_PER_GPU == 8  # the cap a GPU
    assert choose_lanes([139 * gib, 139 * gib], cnn, models=20, cores=32) == 16  # two GPUs, 8 each
    assert choose_lanes([139 * gib], cnn, models=3, cores=16) == 3  # no more lanes than model jobs
    assert choose_lanes([139 * gib], cnn, models=20, cores=2) == 2  # nor than cores
    resnet18 = 4 * 11_200_000  # ~45 MB of weights: 1 GiB + 2.7 GiB a lane
    assert choose_lanes([10 * gib], resnet18, models=20, cores=16) == 2
    assert choose_lanes([gib // 2], cnn, models=20, cores=16) == 1  # a full GPU still runs, in one lane


def test_a_cell_kind_that_cannot_share_a_gpu_does_not_size_the_lanes_unless_all_are_such():
    from bench.executors import choose_lanes

    gib = 2**30
    cnn = 4 * 450_000
    # the image full grid on an H100: lanes of ~12 GiB measured, CROWN ~70 GiB (it runs alone after the lanes)
    assert choose_lanes([79 * gib], cnn, models=9, cores=16, measured=[12 * gib, 70 * gib, 0]) == 5
    assert choose_lanes([79 * gib], cnn, models=9, cores=16, measured=[70 * gib, 0]) == 8  # an unmeasured kind
    # a grid of heavy kinds only (the domain-shift grid's ~60 GiB) runs in one lane, as the measurement says
    assert choose_lanes([79 * gib], cnn, models=9, cores=16, measured=[60 * gib, 66 * gib]) == 1
    # where a heavy kind fits twice, it sizes the lanes as any other
    assert choose_lanes([139 * gib], cnn, models=9, cores=16, measured=[12 * gib, 50 * gib]) == 2


def test_jobs_default_to_1_on_the_cpu_and_to_auto_with_cuda():
    from bench.cli import default_jobs

    assert default_jobs(None, "cpu") == 1  # CPU runs unchanged: sequential, in this process
    assert default_jobs(None, "auto") == 1  # the same processes whatever the machine has
    assert default_jobs(None, "cuda") == "auto"
    assert default_jobs(None, "cuda", sequential_only=True) == 1  # --no-budget-cap needs one process
    assert default_jobs(3, "cuda") == 3 and default_jobs(1, "cuda") == 1 and default_jobs("auto", "cpu") == "auto"


def test_auto_with_one_lane_runs_in_this_process_with_the_sequential_records(tmp_path, capfd):
    from plugins_for_tests import EXTRA

    extra, registry = registry_with(EXTRA)
    sel = grid(("standard",), ("fgsm",))  # one model job: one lane
    _, lanes, out = sequential_then_parallel(registry, extra, sel, tmp_path, capfd, jobs="auto", name="auto")
    assert "worker process" not in out
    assert comparable(tmp_path / "auto") == comparable(tmp_path / "seq")
    assert [r["status"] for r in lanes.summary] == ["ok"]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_gpu_lanes_by_default_give_the_sequential_records(cli, tmp_path):
    """`bench run --device cuda` (lanes chosen automatically) against `--jobs 1`: same cells, keys and statuses;
    metrics equal up to cuDNN's run-to-run float differences in training (not made deterministic)."""
    args = ("run", "--defense", "standard", "pgd-at", "--attack", "fgsm", "pgd-linf", "--dataset", "uci-digits",
            "--profile", "smoke", "--device", "cuda")
    code, out, _ = cli("--results", tmp_path / "lanes", *args)
    assert code == 0 and "worker process(es) (lanes on GPU" in out
    assert cli("--results", tmp_path / "seq", *args, "--jobs", "1")[0] == 0
    lanes, seq = comparable(tmp_path / "lanes"), comparable(tmp_path / "seq")
    assert lanes.keys() == seq.keys() and len(seq) == 4
    for path, record in seq.items():
        assert {k: lanes[path][k] for k in ("key", "config_id", "status")} == \
            {k: record[k] for k in ("key", "config_id", "status")}
        for ours, theirs in zip(lanes[path]["metrics"], record["metrics"]):
            assert ours["name"] == theirs["name"] and abs(ours["value"] - theirs["value"]) <= 0.02
    for path in (tmp_path / "lanes" / "records").rglob("*.json"):  # each cell's memory peak, for sizing lanes
        assert json.loads(path.read_text())["timings"]["gpu_peak_mib"] > 0


def test_bench_run_on_cuda_takes_lanes_by_default_and_the_cpu_stays_sequential(cli, tmp_path, monkeypatch):
    """The CLI's wiring, on a machine without a GPU: CUDA is faked as present, and the executors are stubbed
    (nothing runs), so what is checked is which path `bench run` takes with which --jobs."""
    import torch

    from bench import executors
    from bench.runner import Runner

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(executors, "run_parallel", lambda runner, sel, the_plan, jobs, extra=None:
                        calls.append((runner.device.type, jobs)) or 0)
    monkeypatch.setattr(Runner, "execute", lambda self, the_plan: calls.append((self.device.type, "in-process")) or 0)
    base = ("--results", tmp_path, "run", "--defense", "standard", "--attack", "fgsm", "--dataset", "uci-digits",
            "--profile", "smoke")
    for extra, expected in ((("--device", "cuda"), ("cuda", "auto")),
                            (("--device", "cuda", "--jobs", "3"), ("cuda", 3)),
                            (("--device", "cuda", "--jobs", "1"), ("cuda", "in-process")),
                            (("--device", "cuda", "--no-budget-cap"), ("cuda", "in-process")),
                            (("--device", "cpu"), ("cpu", "in-process")),
                            ((), ("cuda", "in-process")),  # --device auto, resolved to the (faked) GPU
                            (("--device", "cpu", "--jobs", "2"), ("cpu", 2))):
        calls.clear()
        code, _, err = cli(*base, *extra)
        assert code == 0, err
        assert calls == [expected], extra


def test_more_lanes_than_jobs_split_a_job_and_give_the_same_records(tmp_path, capfd):
    from bench.executors import split_tasks

    extra, registry = registry_with({})
    sel = grid(("standard",), ("fgsm", "pgd-linf", "pgd-l2"))
    the_plan = plan(registry, sel)
    assert split_tasks(the_plan, [0], 1, lambda job, cell: False) == [(0, None)]
    assert split_tasks(the_plan, [0], 2, lambda job, cell: False) == [(0, (0,)), (0, (1, 2))]
    assert split_tasks(the_plan, [0], 3, lambda job, cell: cell.attack.name == "fgsm") == [(0, (1,)), (0, (2,))]

    sequential, parallel, out = sequential_then_parallel(registry, extra, sel, tmp_path, capfd, jobs=3)
    assert "1 job(s), split into 3 parts in 3 worker process(es)" in out
    assert out.count("training standard") == 1  # one part trains, the others wait for the cache, then load
    assert comparable(tmp_path / "par") == comparable(tmp_path / "seq")
    weights = {json.loads(p.read_text())["defense"]["weights_sha256"]
               for p in (tmp_path / "par" / "records").rglob("*.json")}
    assert len(weights) == 1  # every cell evaluated the same trained model
    assert [r["attack"] for r in parallel.summary] == [r["attack"] for r in sequential.summary]


def test_a_split_job_runs_its_finished_cells_made_on_other_weights_again(tmp_path, capfd):
    """On a fresh host (no cache) a part that trains the model runs again the job's finished cells made on other
    weights, though they belong to no part: the job's records then name one training, as a whole job's do."""
    import shutil

    extra, registry = registry_with({})
    sel = grid(("standard",), ("fgsm", "pgd-linf", "pgd-l2"))
    results = tmp_path / "r"
    assert Runner(registry, results, device="cpu").execute(plan(registry, sel)) == 0
    paths = {p.name.split("-s")[0]: p for p in (results / "records").rglob("*.json")}
    shutil.rmtree(results / "cache")
    paths["pgd-l2"].unlink()  # the missing cell that makes the job train
    rec = json.loads(paths["fgsm"].read_text())
    rec["defense"]["weights_sha256"] = "f" * 64  # made on another training
    paths["fgsm"].write_text(json.dumps(rec))
    capfd.readouterr()
    assert run_parallel(Runner(registry, results, device="cpu"), sel, plan(registry, sel), jobs=2, extra=extra) == 0
    assert "1 finished cell(s) were made on other weights of this model" in capfd.readouterr().out
    weights = {json.loads(p.read_text())["defense"]["weights_sha256"] for p in (results / "records").rglob("*.json")}
    assert len(list((results / "records").rglob("*.json"))) == 3 and len(weights) == 1 and "f" * 64 not in weights


def test_force_under_lanes_trains_each_model_once_per_run(tmp_path, capfd):
    """--force retrains a model once per run: the parts of a split job and a student that needs it as a teacher
    load that training (the run's id is in the cache's metadata), so a job's records name one training."""
    from plugins_for_tests import EXTRA

    extra, registry = registry_with(EXTRA)
    sel = grid(("standard", "needs-teacher"), ("fgsm", "pgd-linf"))
    results = tmp_path / "r"
    assert Runner(registry, results, device="cpu").execute(plan(registry, sel)) == 0
    capfd.readouterr()
    forced = Runner(registry, results, device="cpu", force=True)
    assert run_parallel(forced, sel, plan(registry, sel), jobs=4, extra=extra) == 0
    out = capfd.readouterr().out
    assert "2 job(s), split into 4 parts in 4 worker process(es)" in out
    assert out.count("training standard") == 1 and out.count("training needs-teacher") == 1
    assert len(forced.summary) == 4 and all(r["status"] == "ok" for r in comparable(results).values())


def test_workers_start_with_their_share_of_native_threads(monkeypatch):
    from bench.executors import THREAD_VARS, capped_threads

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a lower cap the user set is kept
    monkeypatch.setenv("MKL_NUM_THREADS", "64")
    probe = "import os; print(' '.join(os.environ[n] for n in %r))" % (THREAD_VARS,)
    with capped_threads(3):
        seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert seen.split() == ["1", "3", "3"]  # OMP, OpenBLAS, MKL in a child started inside the block
    assert "OPENBLAS_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "64"


def test_two_runs_of_overlapping_grids_on_one_results_folder_train_and_write_each_once(tmp_path):
    """Two `bench run`s side by side (as the GPU script's PARALLEL_SUITES=1 starts `full` and `mtard-full`, which
    share models): the shared model is trained once, the shared cell written once, and both runs succeed."""
    env = {**os.environ, "BENCH_PROGRESS": "0"}
    common = [sys.executable, "-m", "bench.cli", "--results", str(tmp_path / "r"), "run", "--dataset", "uci-digits",
              "--profile", "smoke", "--set", "epochs=30"]
    runs = [subprocess.Popen(common + ["--defense", "standard", "--attack", "fgsm", "pgd-linf"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            subprocess.Popen(common + ["--defense", "standard", "pgd-at", "--attack", "fgsm", "deepfool"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    outs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outs
    assert sum(out.count("training standard") for out in outs) == 1, outs  # the other waited and loaded it
    records = [json.loads(p.read_text()) for p in (tmp_path / "r" / "records").rglob("*.json")]
    cells = sorted((r["defense"]["name"], r["attack"]["name"]) for r in records)
    assert cells == [("pgd-at", "deepfool"), ("pgd-at", "fgsm"), ("standard", "deepfool"), ("standard", "fgsm"),
                     ("standard", "pgd-linf")]  # the shared cell (standard, fgsm) once
    assert all(r["status"] == "ok" for r in records)
    weights = {r["defense"]["weights_sha256"] for r in records if r["defense"]["name"] == "standard"}
    assert len(weights) == 1 and None not in weights  # every standard cell evaluated the one training


def test_a_job_rerun_alone_beside_another_run_on_the_folder_finishes_and_so_does_the_other(tmp_path, capfd):
    """The after-lanes pass (``cache.alone()``) of one run while another `bench run` works on the same results
    folder: neither waits for ever, and both grids are complete."""
    from plugins_for_executors import EXTRA as FAILING
    from plugins_for_tests import EXTRA

    env = {**os.environ, "BENCH_PROGRESS": "0"}
    other = subprocess.Popen([sys.executable, "-m", "bench.cli", "--results", str(tmp_path), "run", "--dataset",
                              "uci-digits", "--profile", "smoke", "--defense", "standard", "pgd-at", "--attack",
                              "fgsm", "deepfool"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    extra, registry = registry_with(EXTRA, FAILING)
    sel = grid(("oom-in-lanes", "standard"), ("fgsm", "pgd-linf"))
    runner = Runner(registry, tmp_path, device="cpu")
    assert run_parallel(runner, sel, plan(registry, sel), jobs=2, extra=extra) == 0
    assert "1 job(s) ran out of memory beside other lanes" in capfd.readouterr().out
    out = other.communicate(timeout=600)[0]
    assert other.returncode == 0, out
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").rglob("*.json")]
    assert sorted((r["defense"]["name"], r["attack"]["name"]) for r in records if r["status"] == "ok") == [
        ("oom-in-lanes", "fgsm"), ("oom-in-lanes", "pgd-linf"), ("pgd-at", "deepfool"), ("pgd-at", "fgsm"),
        ("standard", "deepfool"), ("standard", "fgsm"), ("standard", "pgd-linf")]
