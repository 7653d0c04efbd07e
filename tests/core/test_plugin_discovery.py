"""A real third-party package (tests/example_plugin, its own pyproject with entry points) is installed into a
temporary folder and used through the CLI in a fresh interpreter: discovery works end to end."""
from pathlib import Path

import pytest
from third_party import bench, install

EXAMPLE = Path(__file__).parents[1] / "example_plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return install(EXAMPLE, tmp_path_factory)


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
