"""A real third-party package (tests/example_plugin, its own pyproject with entry points) is installed into a
temporary folder and used through the CLI in a fresh interpreter: discovery works end to end."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "example_plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(EXAMPLE)], check=True, capture_output=True,
                   timeout=300)
    return target


def bench(site, *argv, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "BENCH_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_installed_plugins_are_listed_with_their_origin(site, tmp_path):
    out = bench(site, "list", cwd=tmp_path).stdout
    assert "label-smoothing" in out and "random-corner" in out and "bench-example 0.1.0" in out


def test_installed_plugins_run_through_the_cli(site, tmp_path):
    result = bench(site, "--results", tmp_path / "r", "run", "--defense", "label-smoothing", "--attack",
                   "random-corner", "--dataset", "uci-digits", "--profile", "smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "label-smoothing" in result.stdout and "random-corner" in result.stdout
    (record,) = (tmp_path / "r" / "records").rglob("*.json")
    assert '"origin": "bench-example 0.1.0"' in record.read_text()
