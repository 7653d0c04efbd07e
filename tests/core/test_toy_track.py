"""A new track is one folder plus entry-point lines: the toy track (tests/toy_track, a third-party package with
its own track, suite, table, dataset, defense and evaluator) is installed into a temporary folder and driven
through the CLI in a fresh interpreter -- nothing in bench's core knows about it."""
from pathlib import Path

import pytest
from third_party import bench, install

TOY = Path(__file__).parents[1] / "toy_track"


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory):
    return install(TOY, tmp_path_factory)


def test_toy_track_is_listed_with_its_origin(toy_site, tmp_path):
    result = bench(toy_site, "list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    tracks = lines[lines.index("tracks:") + 1:lines.index("defenses:")]
    (toy,) = [line for line in tracks if line.split()[0] == "toy-track"]
    assert toy.rstrip().endswith("bench-toy-track 0.1.0")
    for kind, name in (("datasets", "toy-blobs"), ("defenses", "toy-linear"), ("attacks", "toy-accuracy")):
        assert any(line.split()[:1] == [name] and "bench-toy-track 0.1.0" in line for line in lines), (kind, name)


def test_toy_suite_runs_and_tabulates_with_the_toy_table(toy_site, tmp_path):
    results = tmp_path / "r"
    run = bench(toy_site, "--results", results, "run", "--suite", "toy-smoke", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "toy-linear" in run.stdout and "toy-accuracy" in run.stdout
    (record,) = (results / "records" / "toy-track").rglob("*.json")
    assert '"origin": "bench-toy-track 0.1.0"' in record.read_text()

    board = bench(toy_site, "--results", results, "leaderboard", cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    table = results / "toy-track" / "toy-blobs.md"
    text = table.read_text()
    assert text.startswith("# Toy leaderboard: toy-blobs\n")
    assert "| toy-linear | toy-accuracy | test_acc |" in text
    assert "| toy-linear | toy-accuracy | confident_acc |" in text
    assert (results / "written-by-bench.json").is_file()

    check = bench(toy_site, "--results", results, "leaderboard", "--check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
