"""benchmarks/gpu_speed.py at smoke size on the CPU: every method runs, the table and the JSON come out, and
the suite's attack path gives eager's per-example outcomes from the same random start."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_speed_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "speed.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_speed.py"), "--device", "cpu", "--tiny",
                           "--training", "--json", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = result["attacks"]
    assert {(r["model"], r["attack"].split()[0]) for r in rows} == \
        {(m, a) for m in ("cnn", "resnet18") for a in ("PGD-20", "APGD-CE")}
    methods = {r["method"] for r in rows}
    assert {"eager", "suite"} <= methods
    for r in rows:
        assert r["images_per_s"] > 0 and r["median_s"] > 0
        if r["method"] == "suite":
            assert r["same_outcome_as_eager"], r  # same seed, same start: the same outcome per example
    assert "x eager" in done.stdout and result["suites"] == []
    (train,) = result["training"]  # on the CPU both forms are the eager step: the same training
    assert train["eager_steps_per_s"] > 0 and train["max_weight_diff"] == 0.0
    assert train["same_test_prediction_share"] == 1.0
    assert train["gathered_equals_host_batches"]  # the same batches however they are gathered


def test_suite_timing_records_the_command_and_its_exit(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_speed
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = gpu_speed.time_suites(["no-such-suite"], "cpu", "2", tmp_path, timeout=60)
    assert len(rows) == 1 and rows[0]["exit"] == 2  # bench rejects the name before any compute
    assert rows[0]["command"].endswith(f"--suite no-such-suite --device cpu --results {tmp_path / 'no-such-suite'}"
                                       " --jobs 2")
    assert rows[0]["seconds"] > 0


def test_full_attack_cost_runs_tiny_on_the_cpu(tmp_path):
    """Every form of each costly attack runs; the forms that must agree per example (C&W graphed/eager/foolbox,
    FAB-T at either sync interval) do."""
    out = tmp_path / "cost.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "full_attack_cost.py"), "--device", "cpu",
                           "--tiny", "--repeats", "1", "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {r["attack"].split()[0] for r in rows} == {"C&W-L2", "Square", "FAB-T"}
    for r in rows:
        assert r["median_s"] > 0
        if r["attack"].startswith(("C&W", "FAB")):
            assert r["same_outcome_share"] == 1.0, r
