"""The same records whatever the run history (split grids, a process that died mid-grid), damaged records named
and never trusted, numbers only from the framework's path, user files left alone."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import Runner, Selection, plan

TESTS = Path(__file__).resolve().parents[1]
GRID = ("fgsm", "pgd-linf", "deepfool", "apgd-ce", "worst-case", "certified-ibp")


def run(registry, results, attacks, defenses=("standard",)):
    sel = Selection(defenses=tuple(defenses), attacks=tuple(attacks), datasets=("uci-digits",), profile="smoke")
    runner = Runner(registry, results, device="cpu")
    return runner.execute(plan(registry, sel)), runner


def outcomes(results: Path) -> dict[str, dict]:
    """What a record says, without timings, dates and hardware: the part that must not depend on history."""
    out = {}
    for path in sorted((results / "records").rglob("*.json")):
        r = json.loads(path.read_text())
        out[path.relative_to(results).as_posix()] = {k: r.get(k) for k in (
            "key", "status", "metrics", "per_example", "threat_model")}
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from plugins_for_tests import EXTRA

    from bench.registry import Registry

    results = tmp_path_factory.mktemp("whole")
    code, _ = run(Registry(extra=EXTRA), results, GRID)
    assert code == 0
    return outcomes(results)


def test_a_split_grid_gives_the_records_of_an_uninterrupted_one(registry, tmp_path, uninterrupted):
    run(registry, tmp_path, ("worst-case",))  # the composite first, its components later, apart
    run(registry, tmp_path, ("fgsm", "deepfool"))
    run(registry, tmp_path, GRID)
    assert outcomes(tmp_path) == uninterrupted


def test_a_process_that_dies_mid_grid_loses_nothing_and_the_rerun_gives_the_same_records(
        registry, tmp_path, uninterrupted):
    """A plugin that kills its process (os._exit, as a crashing extension would) ends a sequential run: the
    cells finished before it are saved, and rerunning completes the grid with the records of a run that never
    died (here: the death happens in the middle of the grid, between two attacks)."""
    script = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]);"
              "from bench.registry import Registry; from plugins_for_tests import EXTRA;"
              "from bench.runner import Runner, Selection, plan;"
              "r = Registry(extra=EXTRA);"
              "sel = Selection(defenses=('standard',), attacks=('fgsm', 'exits-once', 'pgd-linf'),"
              " datasets=('uci-digits',), profile='smoke');"
              "Runner(r, Path(sys.argv[1]), device='cpu').execute(plan(r, sel))")
    env = {**os.environ, "BENCH_TEST_EXIT_MARKER": str(tmp_path / "exited"), "BENCH_PROGRESS": "0"}
    died = subprocess.run([sys.executable, "-c", script, str(tmp_path / "r"), str(TESTS)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert died.returncode == 137, died.stderr
    finished = outcomes(tmp_path / "r")
    assert len(finished) == 1 and all(r["status"] == "ok" for r in finished.values())  # fgsm, kept whole
    os.environ["BENCH_TEST_EXIT_MARKER"] = str(tmp_path / "exited")
    try:
        run(registry, tmp_path / "r", GRID)
    finally:
        del os.environ["BENCH_TEST_EXIT_MARKER"]
    assert outcomes(tmp_path / "r") == uninterrupted


@pytest.mark.parametrize("damage", ["garbage", "empty", "skeleton", "robust above clean", "out of range",
                                    "nan", "bad checksum"])
def test_a_damaged_record_is_named_rerun_and_kept_out_of_tables(registry, cli, tmp_path, damage):
    results = tmp_path / "r"
    run(registry, results, ("fgsm",))
    (path,) = (results / "records").rglob("*.json")
    good = path.read_text()
    record = json.loads(good)
    if damage == "garbage":
        path.write_text("{not json")
    elif damage == "empty":
        path.write_text("")
    elif damage == "skeleton":
        path.write_text('{"schema": "bench.record/1", "status": "ok"}')
    else:
        robust = record["metrics"][1]
        if damage == "robust above clean":
            robust["value"] = 0.99
        elif damage == "out of range":
            robust["value"] = 5.0
        elif damage == "nan":
            robust["value"] = float("nan")
        else:
            record["per_example"][0]["robust"] = "AAAA" + record["per_example"][0]["robust"][4:]
        path.write_text(json.dumps(record))
    code, out, err = cli("--results", results, "leaderboard", "--check")
    assert code == 1 and "damaged record" in out and path.name in out
    code, out, err = cli("--results", results, "leaderboard")
    assert code == 0 and "damaged record" in err
    table = (results / "image-robustness" / "uci-digits.md")
    assert not table.exists() or "fgsm" not in table.read_text()
    _, runner = run(registry, results, ("fgsm",))  # the cell is run again, and the record is whole
    assert json.loads(path.read_text())["metrics"] == json.loads(good)["metrics"]


def test_an_attack_cannot_report_its_own_robustness(registry, tmp_path):
    """The framework owns the path from an attack's output to the number: a ``robust`` method is never asked."""
    code, _ = run(registry, tmp_path, ("claims-robustness",))
    assert code == 0
    (path,) = (tmp_path / "records").rglob("*.json")
    record = json.loads(path.read_text())
    clean, robust = record["metrics"][0]["value"], record["metrics"][1]["value"]
    assert robust < clean  # random sign noise at eps 0.1 breaks some of a smoke-trained model's examples


def test_non_finite_logits_fail_the_cell_with_a_clear_line(registry, tmp_path, capsys):
    code, runner = run(registry, tmp_path, ("fgsm",), defenses=("nan-model",))
    assert code == 1
    (path,) = (tmp_path / "records").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and "non-finite logits" in record["error"]["message"]
    assert "non-finite logits" in capsys.readouterr().out


def test_two_runs_on_one_results_folder_compute_each_cell_once(registry, tmp_path, monkeypatch):
    """Overlapping grids started together: the per-cell lock and a second look write each cell once, and
    both summaries agree with what is on disk."""
    import threading

    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("BENCH_TEST_CALLS", str(calls))
    run(registry, tmp_path / "warm", ("fgsm",))  # trains nothing below: both runs share one cached model
    (tmp_path / "shared").mkdir()
    import shutil

    shutil.copytree(tmp_path / "warm" / "cache", tmp_path / "shared" / "cache")
    import bench.runner

    writes, real_write = [], bench.runner.write_record
    monkeypatch.setattr(bench.runner, "write_record", lambda root, rec: writes.append(rec["attack"]["name"])
                        or real_write(root, rec))
    runners = []

    def one():
        runners.append(run(registry, tmp_path / "shared", ("counts-calls", "fgsm"))[1])

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alone = tmp_path / "alone_calls.txt"
    monkeypatch.setenv("BENCH_TEST_CALLS", str(alone))
    run(registry, tmp_path / "alone", ("counts-calls",))
    assert calls.read_text() == alone.read_text()  # the cell was computed by one of the two runs only
    assert sorted(writes) == ["counts-calls", "counts-calls", "fgsm"]  # the two above, then "alone"'s
    on_disk = outcomes(tmp_path / "shared")
    assert len(on_disk) == 2
    for runner in runners:
        assert {r["status"] for r in runner.summary} == {"ok"} and len(runner.summary) == 2


def test_records_carry_the_sha256_of_the_data_files_and_the_machine(registry, tmp_path):
    import hashlib

    run(registry, tmp_path, ("fgsm",))
    (path,) = (tmp_path / "records").rglob("*.json")
    record = json.loads(path.read_text())
    from bench.registry import Registry

    dataset = Registry().load("dataset", "uci-digits")()
    (data_file,) = dataset.files()
    assert record["data_files"] == {data_file.name: hashlib.sha256(data_file.read_bytes()).hexdigest()}
    assert {"cpu_model", "torch_build", "threads"} <= set(record["hardware"])


@pytest.mark.parametrize("times,status", [(1, "ok"), (3, "failed")])
def test_a_cell_out_of_memory_is_tried_again_then_fails(registry, tmp_path, monkeypatch, times, status):
    """Out of memory on a shared GPU is often another lane's passing peak: the cell is tried again (twice);
    a third failure fails the cell, with the error in its record. Other errors are not retried (the other
    tests of this file)."""
    import bench.runner

    monkeypatch.setattr(bench.runner, "OOM_WAIT_S", 0.0)
    monkeypatch.setenv("BENCH_TEST_OOM_COUNTER", str(tmp_path / "count"))
    monkeypatch.setenv("BENCH_TEST_OOM_TIMES", str(times))
    code, _ = run(registry, tmp_path / "r", ("oom-once",))
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "records").rglob("*.json")]
    assert record["status"] == status and code == (0 if status == "ok" else 1)
    assert int((tmp_path / "count").read_text()) == min(times, 3)


def test_out_of_memory_is_told_from_other_errors():
    from bench.errors import out_of_memory

    assert out_of_memory(RuntimeError("... RuntimeError: CUDA out of memory. Tried to allocate 6.12 GiB."))
    assert out_of_memory(MemoryError())
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not out_of_memory(ValueError("out of memory"))  # not an allocator's error type


def test_cells_made_on_other_weights_of_a_model_are_run_again(registry, tmp_path, capsys):
    """A model trained again (its cache gone, as on a fresh GPU host, where training is not bit-reproducible)
    gets new weights: a grid that has to train it runs every cell of that model again, so that no row mixes
    two trainings; the records then name the new weights."""
    import shutil

    run(registry, tmp_path, ("fgsm",))
    (first,) = [json.loads(p.read_text()) for p in (tmp_path / "records").rglob("*.json")]
    assert first["defense"]["weights_sha256"]
    shutil.rmtree(tmp_path / "cache")
    first_path = next((tmp_path / "records").rglob("*.json"))
    rec = json.loads(first_path.read_text())
    rec["defense"]["weights_sha256"] = "f" * 64  # the record now names weights the new training will not have
    first_path.write_text(json.dumps(rec))
    capsys.readouterr()
    code, runner = run(registry, tmp_path, ("fgsm", "pgd-linf"))
    assert code == 0
    assert "1 finished cell(s) were made on other weights" in capsys.readouterr().out
    recs = [json.loads(p.read_text()) for p in (tmp_path / "records").rglob("*.json")]
    assert len(recs) == 2 and len({r["defense"]["weights_sha256"] for r in recs}) == 1
    assert all(r["defense"]["weights_sha256"] != "f" * 64 for r in recs)


def test_cells_of_a_model_outside_the_run_on_other_weights_are_named_and_rerun_on_the_cached_ones(
        registry, tmp_path, capsys):
    """A run that evaluates a model names the finished cells of that model it does not hold (another grid's)
    made on other weights -- their table mixes two trainings -- with the command that reruns them; that command
    runs them on the cached weights, because a record made on weights other than the cache's is not done."""
    run(registry, tmp_path, ("fgsm", "pgd-linf"))
    paths = {p.name.split("-s")[0]: p for p in (tmp_path / "records").rglob("*.json")}
    paths["fgsm"].unlink()
    capsys.readouterr()
    run(registry, tmp_path, ("fgsm",))
    assert "warning" not in capsys.readouterr().out  # the same weights: nothing to say
    rec = json.loads(paths["pgd-linf"].read_text())
    rec["defense"]["weights_sha256"] = "f" * 64  # as if made on another training of this model
    paths["pgd-linf"].write_text(json.dumps(rec))
    paths["fgsm"].unlink()
    run(registry, tmp_path, ("fgsm",))
    out = capsys.readouterr().out
    assert "warning: 1 finished cell(s) of this model outside this run were made on other weights" in out
    command = out.split("to run them on these: ")[1].splitlines()[0]
    assert command.endswith("--profile smoke --dataset uci-digits --defense standard --seed 0 --attack pgd-linf")
    code, runner = run(registry, tmp_path, ("pgd-linf",))  # what the command asks for
    assert code == 0 and runner.summary
    recs = [json.loads(p.read_text()) for p in (tmp_path / "records").rglob("*.json")]
    assert len(recs) == 2 and len({r["defense"]["weights_sha256"] for r in recs}) == 1
    assert all(r["defense"]["weights_sha256"] != "f" * 64 for r in recs)
