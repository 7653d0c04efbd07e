"""The provenance rule of `bench leaderboard --check` (bench.provenance): a table fails on a record of a dirty
commit and on records of more than one code version; it passes on clean records of one code version, also
across commits when the code hashes agree."""
import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.provenance import table_problems

SOURCE = Path(__file__).resolve().parents[2] / "leaderboards" / "records" / "text-robustness" / "rotten-tomatoes"
CODE = {"bench.evaluate": "aaaa", "bench_defenses.text_robustness.mlp_ft": "bbbb"}


def _record(commit="a" * 40, code=None, seed=0, defense="d"):
    return {"track": "t", "dataset": {"name": "x"}, "profile": "quick", "seed": seed, "status": "ok",
            "defense": {"name": defense}, "attack": {"name": "a"}, "key": f"{defense}{seed}", "git_commit": commit,
            **({"code": code} if code is not None else {})}


def test_rule_on_hand_made_records():
    assert table_problems([_record(), _record(seed=1)]) == []
    assert "dirty" in table_problems([_record(), _record("b" * 40 + "+dirty", seed=1)])[0]
    assert "dirty or unknown" in table_problems([_record(None)])[0]
    # Two commits without code hashes: cannot tell the code apart, so it fails.
    assert "2 commits" in table_problems([_record(), _record("b" * 40, seed=1)])[0]
    # Two commits with identical code hashes: fine; a module with two hashes: not.
    assert table_problems([_record(code=CODE), _record("b" * 40, code=CODE, seed=1)]) == []
    other = {**CODE, "bench.evaluate": "cccc"}
    assert "bench.evaluate" in table_problems([_record(code=CODE), _record("b" * 40, code=other, seed=1)])[0]


@pytest.fixture
def results(tmp_path):
    if not SOURCE.is_dir():
        pytest.skip("no committed rotten-tomatoes records")
    target = tmp_path / "records" / "text-robustness" / "rotten-tomatoes"
    shutil.copytree(SOURCE, target)
    for path in target.rglob("*.json"):  # one clean commit, one code version
        record = json.loads(path.read_text())
        record.update(git_commit="c" * 40, code=dict(CODE))
        path.write_text(json.dumps(record))
    assert main(["leaderboard", "--results", str(tmp_path)]) == 0
    return tmp_path


def _edit(results: Path, **fields):
    """Change one quick-profile record and regenerate the tables: only the provenance rule can fail then."""
    path = sorted(p for p in (results / "records").rglob("*.json") if p.parent.parent.name == "quick")[0]
    record = json.loads(path.read_text())
    record.update(fields)
    path.write_text(json.dumps(record))
    assert main(["leaderboard", "--results", str(results)]) == 0


def test_check_passes_on_clean_records(results, capsys):
    assert main(["leaderboard", "--check", "--results", str(results)]) == 0, capsys.readouterr().out


def test_check_fails_on_a_dirty_commit(results, capsys):
    _edit(results, git_commit="d" * 40 + "+dirty")
    assert main(["leaderboard", "--check", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert "provenance: text-robustness/rotten-tomatoes.md (quick profile)" in out and "+dirty" in out
    assert main(["leaderboard", "--check", "--no-provenance", "--results", str(results)]) == 0


def test_check_fails_on_mixed_code_versions(results, capsys):
    _edit(results, git_commit="e" * 40, code={**CODE, "bench.evaluate": "ffff"})
    assert main(["leaderboard", "--check", "--results", str(results)]) == 1
    assert "more than one code version of bench.evaluate" in capsys.readouterr().out


def test_check_fails_on_table_drift(results, capsys):
    table = results / "text-robustness" / "rotten-tomatoes.md"
    table.write_text(table.read_text().replace("mlp-ft", "mlp-ft (edited)", 1))
    assert main(["leaderboard", "--check", "--results", str(results)]) == 1
    assert "rotten-tomatoes.md (differs from the records)" in capsys.readouterr().out


def test_a_table_that_mixes_two_trainings_of_one_model_fails():
    """Same code, same commit, but the cells of one model key evaluated two different weight files (a model
    trained again on another GPU host): the table does not describe one model."""
    from bench.provenance import table_problems

    def record(attack, weights):
        return {"git_commit": "a" * 40, "code": {"m": "1"}, "attack": {"name": attack},
                "defense": {"name": "pgd-at", "model_key": "k" * 64, "weights_sha256": weights}}

    assert table_problems([record("fgsm", "w1"), record("pgd-linf", "w1")]) == []
    (problem,) = table_problems([record("fgsm", "w1"), record("pgd-linf", "w2")])
    assert "different trainings" in problem
