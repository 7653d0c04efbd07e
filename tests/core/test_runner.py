"""The runner's guarantees: threat model enforced, failures contained, resume after interruption, corrupt
cache rebuilt, defenses can ask for other defenses' models, refusal of incompatible pairs, determinism."""
import json
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.runner import Runner, Selection, plan


def run_grid(registry, results, attacks, defenses=("standard",), **kw):
    sel = Selection(defenses=tuple(defenses), attacks=tuple(attacks), datasets=("uci-digits",),
                    profile="smoke", **kw)
    runner = Runner(registry, results, device="cpu")
    code = runner.execute(plan(registry, sel))
    return code, runner


def records(results):
    return {p.name.split("-s")[0]: json.loads(p.read_text()) for p in (results / "records").rglob("*.json")}


def test_cheating_attack_is_clipped_and_flagged(registry, tmp_path):
    code, _ = run_grid(registry, tmp_path, ["cheat", "fgsm"])
    assert code == 0
    recs = records(tmp_path)
    assert recs["cheat"]["threat_model"]["violations"] > 0
    assert recs["fgsm"]["threat_model"]["violations"] == 0
    clean = recs["cheat"]["metrics"][0]["value"]
    assert all(m["value"] <= clean for m in recs["cheat"]["metrics"])


def test_failing_plugin_fails_its_cell_not_the_grid(registry, tmp_path, capsys):
    code, runner = run_grid(registry, tmp_path, ["fail", "fgsm"])
    assert code == 1 and runner.failed == 1
    recs = records(tmp_path)
    assert recs["fail"]["status"] == "failed" and "boom" in recs["fail"]["error"]["message"]
    assert recs["fgsm"]["status"] == "ok"
    log = tmp_path / "logs"
    assert "Traceback" in next(log.rglob("*.log")).read_text()
    # The failed cell is retried on the next run; the finished one is not.
    capsys.readouterr()
    code, runner = run_grid(registry, tmp_path, ["fail", "fgsm"])
    assert code == 1 and "training" not in capsys.readouterr().out


def test_interrupted_run_leaves_no_partial_record_and_resumes(registry, tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        run_grid(registry, tmp_path, ["fgsm", "interrupt", "pgd-linf"])
    recs = records(tmp_path)
    assert set(recs) == {"fgsm"}
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".tmp"]
    capsys.readouterr()
    code, _ = run_grid(registry, tmp_path, ["fgsm", "pgd-linf"])
    out = capsys.readouterr().out
    assert code == 0 and "1 of 2 cells to run" in out and "training" not in out  # model from the cache
    assert set(records(tmp_path)) == {"fgsm", "pgd-linf"}


def test_corrupt_cache_is_detected_and_rebuilt(registry, tmp_path, capsys):
    run_grid(registry, tmp_path, ["fgsm"])
    first = records(tmp_path)["fgsm"]["metrics"]
    (weights,) = (tmp_path / "cache").glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:-100] + b"\0" * 100)
    code, _ = run_grid(registry, tmp_path, ["pgd-linf"])
    out = capsys.readouterr().out
    assert code == 0 and "rebuilding" in out and "training standard" in out
    run_grid(registry, tmp_path, ["fgsm"], )
    assert records(tmp_path)["fgsm"]["metrics"] == first  # retrained model is identical under the seed


def test_defense_gets_another_defenses_model_trained_first(registry, tmp_path, capsys):
    code, _ = run_grid(registry, tmp_path, ["fgsm"], defenses=("needs-teacher",))
    out = capsys.readouterr().out
    assert code == 0
    assert out.index("training needs-teacher") < out.index("training standard")
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    code, _ = run_grid(registry, tmp_path, ["fgsm"], defenses=("standard",))
    assert "training" not in capsys.readouterr().out  # the teacher is the cached standard model


def test_incompatible_pair_refused_before_compute(registry, tmp_path):
    sel = Selection(defenses=("text-only",), attacks=("fgsm",), datasets=("uci-digits",), profile="smoke")
    # The suggestion names the registered text datasets (the text-robustness track's own).
    with pytest.raises(UsageError, match="track text-robustness.*datasets compatible with text-only: .*rotten-tomatoes"):
        plan(registry, sel)


def test_duplicate_plugin_names_raise():
    from bench.registry import Registry

    with pytest.raises(UsageError, match="duplicate attack name 'fgsm'"):
        Registry(extra={"attack": {"fgsm": "plugins_for_tests:CheatingAttack"}})


def test_same_seed_same_numbers_in_separate_runs(registry, tmp_path):
    run_grid(registry, tmp_path / "a", ["pgd-linf", "apgd-ce"])
    run_grid(registry, tmp_path / "b", ["pgd-linf", "apgd-ce"])
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    for name in a:
        assert a[name]["metrics"] == b[name]["metrics"]
        assert a[name]["key"] == b[name]["key"]


def test_invariant_violation_is_an_error(tmp_path):
    from bench.errors import InvariantViolation
    from bench.records import write_record

    record = {"key": "k" * 64, "config_id": "c" * 64, "status": "ok", "track": "t", "profile": "smoke",
              "seed": 0, "dataset": {"name": "d"}, "defense": {"name": "x"}, "attack": {"name": "a"},
              "metrics": [{"name": "clean_acc", "value": 0.5, "n": 10},
                          {"name": "robust_acc", "eps": 0.1, "value": 0.6, "n": 10}]}
    with pytest.raises(InvariantViolation, match="robust_acc 0.6000 > clean_acc 0.5000"):
        write_record(tmp_path, record)
    record["metrics"][1].update(value=0.4)
    record["metrics"].append({"name": "verified_acc", "eps": 0.1, "value": 0.45, "n": 10})
    with pytest.raises(InvariantViolation, match="verified_acc"):
        write_record(tmp_path, record)
    assert not list(tmp_path.rglob("*.json"))


def test_worst_case_combines_attacks_run_on_the_same_model(registry, tmp_path):
    attacks = ["worst-case", "apgd-ce", "apgd-dlr", "pgd-linf", "fgsm", "deepfool"]  # composite listed first
    code, _ = run_grid(registry, tmp_path / "combined", attacks)
    assert code == 0
    recs = records(tmp_path / "combined")
    combined = {m["eps"]: m for m in recs["worst-case"]["metrics"] if m["name"] == "robust_acc"}
    for eps, m in combined.items():
        assert "per-example AND of apgd-ce(" in m["definition"]
        parts = [next(p for p in recs[a]["metrics"] if p.get("eps") == eps) for a in attacks[1:]]
        assert m["value"] <= min(p["value"] for p in parts)
    # Alone, or after its components were finished by another run, the worst case is the same per-example AND:
    # the same numbers whatever was run before.
    run_grid(registry, tmp_path / "alone", ["worst-case", "fgsm"])
    run_grid(registry, tmp_path / "split", ["fgsm", "pgd-linf"])
    run_grid(registry, tmp_path / "split", ["worst-case"])
    for other in ("alone", "split"):
        again = records(tmp_path / other)["worst-case"]
        assert again["metrics"] == recs["worst-case"]["metrics"]
        assert again["per_example"] == recs["worst-case"]["per_example"]


def test_certifier_records_verified_next_to_empirical(registry, tmp_path):
    code, _ = run_grid(registry, tmp_path, ["certifies-nothing", "pgd-linf"])
    assert code == 0
    metrics = records(tmp_path)["certifies-nothing"]["metrics"]
    names = [m["name"] for m in metrics]
    assert names.count("verified_acc") == names.count("robust_acc") == 2  # at eps 0.1 and 0.2
    pgd = {m["eps"]: m["value"] for m in records(tmp_path)["pgd-linf"]["metrics"] if m["name"] == "robust_acc"}
    for m in metrics:
        if m["name"] == "robust_acc":
            assert m["value"] == pgd[m["eps"]]  # the companion's mask, reused from the pgd-linf cell


def test_unsound_certifier_fails_its_cell(registry, tmp_path):
    code, runner = run_grid(registry, tmp_path, ["claims-everything"])
    assert code == 1
    record = records(tmp_path)["claims-everything"]
    assert record["status"] == "failed" and "unsound" in record["error"]["message"]


def test_not_certifiable_is_a_record_not_a_crash(registry, tmp_path, capsys):
    code, _ = run_grid(registry, tmp_path, ["refuses-conv"])
    assert code == 0
    record = records(tmp_path)["refuses-conv"]
    assert record["status"] == "not_certifiable" and record["error"]["message"] == "not certifiable: Conv2d"
    capsys.readouterr()
    run_grid(registry, tmp_path, ["refuses-conv"])
    assert "skipped" in capsys.readouterr().out


def test_evaluator_writes_its_metrics_beside_attacks_on_the_same_model(registry, tmp_path):
    code, _ = run_grid(registry, tmp_path, ["per-class", "fgsm", "no-definition"])
    assert code == 1  # only the evaluator whose metric has no definition fails
    recs = records(tmp_path)
    assert recs["no-definition"]["status"] == "failed" and "definition" in recs["no-definition"]["error"]["message"]
    rec = recs["per-class"]
    assert rec["status"] == "ok" and "threat_model" not in rec
    names = [(m["name"], m.get("split")) for m in rec["metrics"]]
    assert names == [("clean_acc", None), ("class_acc", "class 0"), ("class_acc", "class 1")]
    assert rec["defense"]["model_key"] == recs["fgsm"]["defense"]["model_key"]  # trained once
    assert 0.0 <= rec["metrics"][1]["value"] <= 1.0


def test_tracks_without_their_own_tables_get_the_generic_table(registry, tmp_path):
    from bench.tables import generic_tables

    run_grid(registry, tmp_path, ["per-class"])
    recs = [dict(r, track="some-track") for r in records(tmp_path).values()]
    md = generic_tables(recs)["uci-digits.md"]
    assert "| standard | per-class |" in md and "class_acc [class 1]" in md and "smoke profile" in md


def test_a_plugins_helper_modules_enter_its_cache_key():
    from bench.hashing import code_modules, helper_modules

    # advstyle's numbers depend on the style layers and the DG training loop in their own modules
    assert {"bench.tracks.domain_shift.style", "bench.tracks.domain_shift.training"} <= set(
        helper_modules("bench_defenses.domain_shift.advstyle"))
    assert "bench.tracks.image_robustness.lirpa_compat" in code_modules("bench_attacks.image_robustness.certified")
    assert "bench.data" in code_modules("bench.tracks.image_robustness.fashion_mnist")  # numerical core
    pgd_at = code_modules("bench_defenses.image_robustness.pgd_at")
    assert "bench.plugins" not in pgd_at  # interfaces, not numbers
    assert "bench.tracks.image_robustness" not in pgd_at  # a track's __init__ declares (suites), computes nothing


def test_cache_keys_depend_on_the_code_not_on_where_it_sits_or_its_comments():
    from bench.hashing import _normalised

    code = "import torch\nfrom bench.tracks.image_robustness.models import build_model\n\n" \
           "def f(x):\n    \"\"\"Doc.\"\"\"\n    from a.b import c  # why\n    return c(x) + 1\n"
    moved = code.replace("bench.tracks.image_robustness.models", "elsewhere.models").replace("a.b", "a.z")
    edited = code.replace("# why", "# another reason").replace("Doc.", "Other doc.")
    changed = code.replace("+ 1", "+ 2")
    assert _normalised(code) == _normalised(moved) == _normalised(edited) != _normalised(changed)


def test_cache_keys_ignore_layout_and_are_the_same_on_every_python():
    """ast.unparse prints f-strings differently from Python 3.12 on: a hash built on it differed between a 3.11
    machine and a 3.12 GPU host for the same file. The tokens of the source are the same everywhere."""
    import shutil
    import subprocess
    import sys

    from bench.hashing import _normalised

    code = 'def f(x, y):\n    return f"{x!r:>{y}} {\', \'.join(map(str, x))} {{raw}} {f\'{y}\'}" + "±"\n'
    wrapped = code.replace("(x, y)", "(\n    x,  # a comment\n    y\n)")
    assert _normalised(code) == _normalised(wrapped) != _normalised(code.replace("{y}} ", "{y}}!"))
    assert 'f"{x!r:>{y}}' in _normalised(code)  # the literal as written
    others = [p for p in (shutil.which(f"python3.{minor}") for minor in range(8, 20)) if p]
    others += [str(p) for p in Path.home().glob(".pyenv/versions/3.*/bin/python3")]
    for python in others:
        if subprocess.run([python, "-c", "import sys; assert sys.version_info >= (3, 8)"]).returncode:
            continue
        out = subprocess.run([python, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                              "from bench.hashing import _normalised; print(_normalised(sys.stdin.read()))",
                              str(Path(__file__).parents[2])], input=code, capture_output=True, text=True)
        if out.returncode == 0:  # an interpreter too old for bench's own syntax cannot say
            assert out.stdout.rstrip("\n") == _normalised(code), python


def test_a_worst_case_s_key_and_code_name_its_components(registry, tmp_path):
    """A worst case is computed from its components' outcomes: a change of a component's hyperparameters or
    code must make it a new cell (not a finished one), and its record names the components' modules."""
    import dataclasses

    from bench.runner import components, make_cell

    sel = Selection(defenses=("standard",), attacks=("worst-case",), datasets=("uci-digits",), profile="smoke")
    job = plan(registry, sel).jobs[0]
    (cell,) = job.cells
    parts = components(registry, cell.attack, "smoke")
    assert [p.name for p in parts] == list(cell.attack.params.attacks)
    again = make_cell("smoke", job.seed, job.dataset, job.defense, cell.attack, parts)
    assert again.key == cell.key
    changed = [type(parts[0])(dataclasses.replace(parts[0].params, steps=7))] + parts[1:]
    assert make_cell("smoke", job.seed, job.dataset, job.defense, cell.attack, changed).key != cell.key
    assert make_cell("smoke", job.seed, job.dataset, job.defense, cell.attack).key != cell.key  # code of the parts
    runner = Runner(registry, tmp_path, device="cpu")
    assert runner.execute(plan(registry, sel)) == 0
    (path,) = [p for p in (tmp_path / "records").rglob("*.json") if "/worst-case-" in p.as_posix()]
    code = json.loads(path.read_text())["code"]
    assert {type(p).__module__ for p in parts} <= set(code)


def test_the_cache_tells_a_lock_held_elsewhere(tmp_path):
    import fcntl

    from bench.cache import ModelCache

    cache = ModelCache(tmp_path)
    assert not cache.busy("k")
    with cache.lock("k"):
        assert cache.busy("k"), "held by another open of the lock file (another lane)"
    assert not cache.busy("k")
    with open(tmp_path / "k.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert cache.busy("k")
