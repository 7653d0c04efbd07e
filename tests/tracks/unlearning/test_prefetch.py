"""The prefetch script keys its helpers exactly as the evaluators ask for them: after it, a grid trains only
the method itself."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_prefetched_helpers_are_the_ones_the_grid_uses(tmp_path):
    common = ["--dataset", "uci-digits-noisy", "--profile", "smoke"]
    prefetch = subprocess.run([sys.executable, str(ROOT / "scripts" / "prefetch_unlearning_models.py"),
                               "--results", str(tmp_path), "--defense", "laf-balanced", "--seed", "0",
                               "--device", "cpu", "--lanes", "2", *common],
                              capture_output=True, text=True, timeout=300)
    assert prefetch.returncode == 0, prefetch.stderr[-2000:]
    assert prefetch.stdout.count("training shadow") >= 2 and "training original" in prefetch.stdout
    grid = subprocess.run([sys.executable, "-m", "bench.cli", "--results", str(tmp_path), "run", "--defense",
                           "laf-balanced", "--attack", "unlearning-acc", "lira", "--seed", "0", "--device", "cpu",
                           *common], capture_output=True, text=True, timeout=300)
    assert grid.returncode == 0, grid.stderr[-2000:]
    trained = [line.split()[1] for line in grid.stdout.splitlines() if line.strip().startswith("training ")]
    assert trained == ["laf-balanced"], trained


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "prefetch_unlearning_models.py"), "--results",
                           str(tmp_path / "r"), "--dataset", "no-such-scenario"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "unknown dataset" in done.stderr and not (tmp_path / "r").exists()
