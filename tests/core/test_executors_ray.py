"""The Ray executor (``bench run --executor ray``): the same records as a sequential run, failures confined to
their cells, and clear usage errors. The Ray tests skip where Ray is not installed (it is an optional extra)."""
import json
import logging
import os
import sys
from pathlib import Path

import pytest
from test_executors import registry_with

from bench.runner import Runner, Selection, plan

# Not run on the tested model: what differs between two runs of the same grid.
VARYING = ("timings", "hardware", "created", "git_commit")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local two-CPU Ray instance for the module (starting one takes seconds); its workers import what the
    test process imports (the tests' plugins)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                                       "BENCH_PROGRESS": "0"}})
    yield ray
    ray.shutdown()


def records(results):
    out = {}
    for path in sorted((results / "records").rglob("*.json")):
        r = json.loads(path.read_text())
        out[str(path.relative_to(results))] = {k: v for k, v in r.items() if k not in VARYING}
    return out


def test_ray_gives_the_same_records_as_a_sequential_run(ray_cluster, tmp_path, capfd):
    from plugins_for_tests import EXTRA

    from bench.executors_ray import run_ray

    extra, registry = registry_with(EXTRA)
    # needs-teacher trains on standard's cached model; the worst case reuses fgsm's and pgd's per-example results
    # when they run in the same task, which the executor must arrange for the records to match.
    sel = Selection(defenses=("standard", "needs-teacher"), attacks=("fgsm", "pgd-linf", "worst-case"),
                    datasets=("uci-digits",), profile="smoke", sets=('worst-case.attacks=["fgsm", "pgd-linf"]',))
    sequential = Runner(registry, tmp_path / "seq", device="cpu")
    assert sequential.execute(plan(registry, sel)) == 0

    on_ray = Runner(registry, tmp_path / "ray", device="cpu")
    assert run_ray(on_ray, sel, plan(registry, sel), extra=extra) == 0
    seq, ray = records(tmp_path / "seq"), records(tmp_path / "ray")
    assert len(seq) == 6 and all(r["status"] == "ok" for r in seq.values())
    assert ray == seq
    worst = [r for r in ray.values() if r["attack"]["name"] == "worst-case"]
    assert all("per-example AND of fgsm" in m["definition"] for r in worst for m in r["metrics"][1:])
    # needs-teacher's own training task trained it (standard's may find it trained by needs-teacher's, via the lock).
    cached = {json.loads(p.read_text())["timings"]["train_cached"]
              for p in (tmp_path / "ray" / "records").rglob("needs-teacher/*.json")}
    assert cached == {False}
    assert sorted((r["defense"], r["attack"]) for r in on_ray.summary) == \
        sorted((r["defense"], r["attack"]) for r in sequential.summary)

    # A second run finds every cell finished and submits no task.
    capfd.readouterr()
    rerun = Runner(registry, tmp_path / "ray", device="cpu")
    assert run_ray(rerun, sel, plan(registry, sel), extra=extra) == 0
    out = capfd.readouterr().out
    assert "on Ray" not in out and out.count("(skipped)") == 2 and len(rerun.summary) == 6


def test_a_raising_or_dying_task_fails_only_its_cells(ray_cluster, tmp_path, capfd):
    from plugins_for_executors import EXTRA as FAILING
    from plugins_for_tests import EXTRA

    from bench.executors_ray import run_ray

    extra, registry = registry_with(EXTRA, FAILING)
    sel = Selection(defenses=("raises", "dies", "standard"), attacks=("fgsm", "fail"), datasets=("uci-digits",),
                    profile="smoke")
    runner = Runner(registry, tmp_path, device="cpu")
    assert run_ray(runner, sel, plan(registry, sel), extra=extra) == 1
    got = {(r["defense"]["name"], r["attack"]["name"]): r
           for r in (json.loads(p.read_text()) for p in (tmp_path / "records").rglob("*.json"))}
    assert {k: r["status"] for k, r in got.items()} == {
        ("raises", "fgsm"): "failed", ("raises", "fail"): "failed", ("dies", "fgsm"): "failed",
        ("dies", "fail"): "failed", ("standard", "fgsm"): "ok", ("standard", "fail"): "failed"}
    assert runner.failed == 5 and len(runner.summary) == 6
    raised = got[("raises", "fgsm")]["error"]
    assert (raised["stage"], raised["type"]) == ("training", "ValueError") and "cannot train" in raised["message"]
    log = Path(raised["log"]).read_text()
    assert "boom: this defense cannot train" in log and "in fit" in log  # with the remote traceback
    died = got[("dies", "fgsm")]["error"]
    assert (died["stage"], died["type"]) == ("worker", "WorkerDied") and "training task died" in died["message"]
    failed_attack = got[("standard", "fail")]["error"]  # raised inside the runner's per-cell handling
    assert (failed_attack["stage"], failed_attack["type"]) == ("evaluation", "RuntimeError")

    # Rerunning retries only the unfinished cells: two trainings fail again, standard's fgsm is not redone.
    capfd.readouterr()
    runner = Runner(registry, tmp_path, device="cpu")
    assert run_ray(runner, sel, plan(registry, sel), extra=extra) == 1
    out = capfd.readouterr().out
    assert "3 training and 5 evaluation task(s) on Ray" in out
    assert runner.failed == 5 and [r["status"] for r in runner.summary] == ["failed"] * 5


def test_address_without_the_ray_executor_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("--results", tmp_path, "run", "--suite", "smoke", "--address", "auto")
    assert code == 2 and "--address needs --executor ray" in err and not tmp_path.joinpath("records").exists()


def test_ray_executor_without_ray_is_a_usage_error(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    code, _, err = cli("--results", tmp_path, "run", "--suite", "smoke", "--executor", "ray")
    assert code == 2 and "needs Ray" in err and "bench[ray]" in err and len(err.strip().splitlines()) == 1
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_jobs_with_the_ray_executor_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("--results", tmp_path, "run", "--suite", "smoke", "--executor", "ray", "--jobs", "2")
    assert code == 2 and "--jobs is for --executor local" in err
