"""The parallel executor (``bench run --jobs N``): same records as the sequential runner, a shared teacher
trained once, and a worker that dies fails only its own job's cells."""
import json

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


def test_parallel_gives_the_same_records_and_trains_a_shared_teacher_once(tmp_path, capfd):
    from plugins_for_tests import EXTRA

    extra, registry = registry_with(EXTRA)
    sel = grid(("standard", "needs-teacher"), ("fgsm", "pgd-linf"))  # both jobs need the standard model
    sequential = Runner(registry, tmp_path / "seq", device="cpu")
    assert sequential.execute(plan(registry, sel)) == 0
    capfd.readouterr()

    parallel = Runner(registry, tmp_path / "par", device="cpu")
    assert run_parallel(parallel, sel, plan(registry, sel), jobs=2, extra=extra) == 0
    out = capfd.readouterr().out
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


def test_jobs_below_one_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("--results", tmp_path, "run", "--suite", "smoke", "--jobs", "0")
    assert code == 2 and "--jobs must be at least 1" in err and not tmp_path.joinpath("records").exists()
