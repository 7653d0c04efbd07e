"""benchmarks/autoattack_agreement.py sees what it compares: at the smoke budget the suite's worst case is weak,
and the script must report the examples that only AutoAttack breaks. Bad input: one line, exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.cli import main

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "benchmarks" / "autoattack_agreement.py")


def test_a_weak_worst_case_is_caught_by_autoattack(tmp_path):
    assert main(["--results", str(tmp_path), "run", "--defense", "standard", "--attack", "worst-case",
                 "--dataset", "uci-digits", "--profile", "smoke"]) == 0
    out = tmp_path / "agreement.json"
    done = subprocess.run([sys.executable, SCRIPT, "--results", str(tmp_path), "--dataset", "uci-digits",
                           "--profile", "smoke", "--defenses", "standard", "--n", "50", "--json", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {r["eps"] for r in rows} == {0.1, 0.2}
    for r in rows:
        assert r["autoattack_robust"] < 0.9  # AutoAttack breaks an undefended model
    assert sum(r["only_autoattack_breaks"] for r in rows) > 0, rows  # and finds what a smoke worst case missed


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, "--results", str(tmp_path / "none")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "no records/ folder" in done.stderr.strip().splitlines()[-1]
