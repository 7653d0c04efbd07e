"""The CLI: laziness, every error path (exit 2, one line, nothing written), and a smoke grid end to end."""
import json
import subprocess
import sys

import pytest

SMOKE = ["--dataset", "uci-digits", "--profile", "smoke"]


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv", [["list"], ["list", "attacks"], ["--help"], ["run", "--help"]])
def test_help_and_list_import_neither_torch_nor_plugins(argv):
    code = f"""
import sys
from bench.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
plugins = [m for m in sys.modules if m.split('.')[0] in ('attacks', 'defenses') or m.startswith('bench.datasets')]
assert 'torch' not in sys.modules, 'torch was imported'
assert not plugins, plugins
print('LAZY-OK')
"""
    result = _fresh_python(code)
    assert "LAZY-OK" in result.stdout, result.stderr


def test_list_shows_every_builtin_with_origin(cli):
    code, out, _ = cli("list")
    assert code == 0
    for name in ("standard", "pgd-at", "fgsm", "pgd-linf", "pgd-l2", "cw-l2", "deepfool", "apgd-ce", "apgd-dlr",
                 "worst-case", "fashion-mnist", "mnist-5k", "uci-digits"):
        assert f"  {name} " in out
    assert "bench 0.1.0" in out


def test_list_long_shows_track(cli):
    code, out, _ = cli("list", "defenses", "--long")
    assert code == 0 and "track=image-robustness" in out


def test_info_shows_params_and_profiles(cli):
    code, out, _ = cli("info", "pgd-at")
    assert code == 0
    assert "Madry" in out and "steps = 5" in out and "'full': 10" in out


BAD_RUNS = {
    "unknown defense": (["--defense", "standrd", "--attack", "fgsm", *SMOKE], "did you mean standard"),
    "unknown attack": (["--defense", "standard", "--attack", "pgd-lnf", *SMOKE], "did you mean pgd-linf"),
    "unknown dataset": (["--defense", "standard", "--attack", "fgsm", "--dataset", "cifar100"], "unknown dataset"),
    "unknown suite": (["--suite", "huge"], "unknown suite 'huge'"),
    "bad profile": (["--suite", "smoke", "--profile", "tiny"], "invalid choice"),
    "unknown field": (["--suite", "smoke", "--set", "pgd-at.stepz=3"], "has no hyperparameter 'stepz'"),
    "wrong type": (["--suite", "smoke", "--set", "pgd-at.steps=2.5"], "expected an integer"),
    "negative": (["--suite", "smoke", "--set", "pgd-at.steps=-1"], "is negative"),
    "missing weights folder": (["--suite", "erasure-smoke", "--set", 'none.model="/nonexistent"'],
                               "no model_index.json"),
    "not json": (["--suite", "smoke", "--set", "steps=__import__('os')"], "expected an integer"),
    "bad literal": (["--suite", "smoke", "--set", "optimizer=\"rmsprop\""], "not one of"),
    "not selected": (["--suite", "smoke", "--set", "trades.beta=6"], "not selected"),
    "no such field anywhere": (["--suite", "smoke", "--set", "temperature=2"], "no selected plugin"),
    "missing files": (["--defense", "standard", "--attack", "fgsm", "--dataset", "fashion-mnist",
                       "--data-root", "EMPTY"], "dataset-fashion-mnist"),
    "nothing selected": (["--defense", "standard"], "nothing to run"),
    "bad seed": (["--suite", "smoke", "--seed", "x"], "invalid int value"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, case):
    argv, expected = BAD_RUNS[case]
    argv = [str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
    (tmp_path / "empty").mkdir()
    results = tmp_path / "results"
    code, out, err = cli("--results", results, "run", *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert not results.exists()


def test_unknown_subcommand_is_one_line(cli):
    code, _, err = cli("frobnicate")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_broken_plugin_is_named(registry):
    from bench.errors import PluginImportError

    with pytest.raises(PluginImportError, match="defense plugin 'broken' .*no_such_module_anywhere"):
        registry.load("defense", "broken")


def test_smoke_grid_end_to_end_then_resume_then_leaderboard(cli, tmp_path):
    results = tmp_path / "results"
    grid = ["run", "--defense", "standard", "--attack", "fgsm", "pgd-linf", "worst-case", *SMOKE]
    code, out, _ = cli("--results", results, *grid)
    assert code == 0, out
    records = sorted((results / "records").rglob("*.json"))
    assert len(records) == 3
    record = json.loads(records[0].read_text())
    assert record["status"] == "ok" and record["schema"] == "bench.record/1"
    assert {"hardware", "packages", "git_commit", "timings", "threat_model"} <= set(record)
    assert "standard" in out and "clean" in out  # summary table

    code, out, _ = cli("--results", results, *grid)  # resume: nothing left to do
    assert code == 0 and "skipped" in out and "training" not in out

    code, out, _ = cli("--results", results, "leaderboard")
    assert code == 0
    table = results / "image-robustness" / "uci-digits.md"
    assert table.exists() and "standard" in table.read_text()
    assert cli("--results", results, "leaderboard", "--check")[0] == 0
    table.write_text(table.read_text().replace("standard", "standart"))
    code, out, _ = cli("--results", results, "leaderboard", "--check")
    assert code == 1 and "uci-digits.md" in out
