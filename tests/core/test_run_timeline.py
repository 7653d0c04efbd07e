"""benchmarks/run_timeline.py on the committed erasure-full records and host logs: per-defense times, the
GPU/host load summaries and the cut-off training's projection; bad input is one line and exit code 2."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "run_timeline.py"
ERASURE = ROOT / "leaderboards" / "records" / "concept-erasure"
RECORDS = ERASURE / "fashion-erase-bag" / "full"
LOGS = ROOT / "benchmarks" / "results" / "erasure_full_bag_h100"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


def timeline_of(commit: str, logs: Path, out: Path, records: Path = RECORDS) -> dict:
    done = run(records, "--commit", commit, "--util", logs / "util.csv", "--load", logs / "load.txt",
               "--log", logs / "detached.log.gz", "--json", out)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result == json.loads(logs.with_suffix(".json").read_text())
    assert result["git_commit"].startswith(commit)
    assert 0 < result["gpu"]["gpu_util_mean_pct"] <= 100
    return result


def test_timeline_of_the_run_cut_short(tmp_path):
    result = timeline_of("153f688", ROOT / "benchmarks" / "results" / "erasure_full_bag_h100", tmp_path / "t.json")
    esd = result["defenses"]["esd"]
    assert esd["seeds"] == [0, 1, 2] and esd["cells"] == 15 and esd["train_s_mean"] > 60
    assert esd["first_cell_done_s"] <= esd["last_cell_done_s"] <= result["span_s"]
    assert "advunlearn" not in result["defenses"]  # its records came from the later run
    (cut,) = result["unfinished_trainings"]  # only the defense with no record: AdvUnlearn
    assert cut["training"].startswith("advunlearn (") and cut["done"] < cut["of"]
    assert cut["projected_total_s"] > cut["elapsed_s"]


def test_timeline_of_the_run_that_finished_advunlearn(tmp_path):
    result = timeline_of("74ed62b", ROOT / "benchmarks" / "results" / "erasure_full_bag_advunlearn_h100",
                         tmp_path / "t.json")
    assert set(result["defenses"]) == {"advunlearn"} and result["records"] == 15
    assert result["unfinished_trainings"] == []
    # the cut-off run's projection from its own rate undershot the training alone
    assert result["defenses"]["advunlearn"]["train_s_mean"] > 807


def test_a_finished_run_has_no_unfinished_training(tmp_path):
    # the log says the run is done: advunlearn-fast's bar ("advunlearn (sneaker)") is no cut-off AdvUnlearn
    logs = ROOT / "benchmarks" / "results" / "erasure_full_sneaker_h100"
    result = timeline_of("083a750", logs, tmp_path / "t.json", ERASURE / "fashion-erase-sneaker" / "full")
    assert set(result["defenses"]) == {"none", "esd", "advunlearn-fast"} and result["records"] == 45
    assert result["unfinished_trainings"] == []


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for args in ([tmp_path / "missing"], [tmp_path], [RECORDS, "--util", tmp_path / "no.csv"],
                 [RECORDS, "--json", tmp_path / "no" / "t.json"], [RECORDS, "--commit", "0000000"]):
        done = run(*args)
        assert done.returncode == 2 and "error:" in done.stderr.strip().splitlines()[-1], done.stderr
        assert not done.stdout and not (tmp_path / "no").exists()
