"""Leaderboard tables from synthetic records, compared with golden files.

The goldens ``golden/leaderboard.md`` and ``golden/leaderboard.csv`` next to this file are regenerated, never
edited by hand: after an intended change of the output, run

    BENCH_UPDATE_GOLDEN=1 python -m pytest tests/tracks/image_robustness/test_image_table.py

and review the diff of the golden folder before committing it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from bench import leaderboard
from bench.errors import UsageError
from bench.plugins import Facts
from bench.records import write_record
from bench.registry import Registry
from bench.tracks.image_robustness.table import (
    build_tables,
    render_csv,
    render_markdown,
)

GOLDEN = Path(__file__).parent / "golden"
TRACK = "image-robustness"
DATASET = "toy-digits"
HEADLINE = {DATASET: {"linf": (0.1, 0.3)}}
REPORTED = {"pgd-at": {DATASET: {"pgd-linf @ 0.3": (0.89, "Madry et al. 2018")},
                       "other-set": {"x": (0.5, "not shown")}}}
SWEEP = (0.05, 0.1, 0.2, 0.3)
FACTS = Facts(headline=HEADLINE, reported=REPORTED)


def make_record(defense: str, attack: str, seed: int, clean: float, robust: dict[float, float], *,
                profile: str = "quick", dparams: dict | None = None, violations: int = 0, status: str = "ok",
                created: str = "2026-11-29T10:00:00+00:00", eval_s: float = 1.5, n: int = 200) -> dict:
    dparams = {"epochs": 2} if dparams is None else dparams
    config = {"d": defense, "dp": dparams, "a": attack, "s": seed, "p": profile}
    metrics = [{"name": "clean_acc", "value": clean, "n": n}]
    metrics += [{"name": "robust_acc", "norm": "linf", "eps": eps, "value": v, "n": n,
                 "definition": f"{attack}()"} for eps, v in robust.items()]
    config_id = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    record = {
        "key": hashlib.sha256(f"{config_id}-code".encode()).hexdigest(), "config_id": config_id,
        "status": status, "track": TRACK, "profile": profile, "seed": seed,
        "dataset": {"name": DATASET, "params": {}, "origin": "bench 0.1.0"},
        "defense": {"name": defense, "params": dparams, "origin": "bench 0.1.0", "model_key": "m" + str(seed)},
        "attack": {"name": attack, "params": {}, "origin": "bench 0.1.0", "norm": "linf",
                   "definition": f"{attack}()"},
        "metrics": metrics if status == "ok" else [],
        "threat_model": {"norm": "linf", "epsilons": list(robust), "checked": n, "violations": violations},
        "timings": {"train_s": 10.0 + seed, "train_cached": False, "eval_s": eval_s},
        "hardware": {"platform": "Linux", "python": "3.11", "cpu": "x86_64", "threads": 2, "device": "cpu"},
        "packages": {"bench": "0.1.0"}, "git_commit": "abc1234def5678", "bench_version": "0.1.0",
        "created": created,
    }
    if status == "failed":
        record["error"] = {"type": "RuntimeError", "message": "boom", "log": ""}
    if status == "not_certifiable":
        record["error"] = {"type": "NotCertifiable", "message": "not certifiable: Conv2d", "log": ""}
    return record


def certified_record(defense: str, seed: int, clean: float, verified: dict[float, float],
                     empirical: dict[float, float]) -> dict:
    """A certifier's record: verified_acc with its companion attack's robust_acc at each eps."""
    record = make_record(defense, "certified-ibp", seed, clean, empirical)
    record["metrics"] += [{"name": "verified_acc", "norm": "linf", "eps": eps, "value": v, "n": 200,
                           "definition": "certified-ibp()"} for eps, v in verified.items()]
    return record


def synthetic_records() -> list[dict]:
    records = []
    for seed, (clean, fgsm, pgd, worst) in enumerate([
            (0.98, (0.40, 0.05), (0.60, 0.20, 0.02, 0.0), (0.15, 0.0)),
            (0.97, (0.38, 0.04), (0.58, 0.18, 0.01, 0.0), (0.14, 0.0))]):
        created = f"2026-11-2{8 + seed}T10:00:00+00:00"
        records += [make_record("standard", "fgsm", seed, clean, dict(zip((0.1, 0.3), fgsm)), created=created),
                    make_record("standard", "pgd-linf", seed, clean, dict(zip(SWEEP, pgd)), created=created),
                    make_record("standard", "worst-case", seed, clean, dict(zip((0.1, 0.3), worst)),
                                created=created)]
    records += [
        make_record("pgd-at", "fgsm", 0, 0.95, {0.1: 0.90, 0.3: 0.80}, violations=3),
        make_record("pgd-at", "pgd-linf", 0, 0.95, dict(zip(SWEEP, (0.93, 0.91, 0.87, 0.83)))),
        make_record("pgd-at", "worst-case", 0, 0.95, {0.1: 0.90, 0.3: 0.81}),
        make_record("pgd-at", "pgd-linf", 1, 0.5, {0.1: 0.99}, status="failed"),  # must be ignored
        # a certifier: its column shows verified_acc (not the companion's robust_acc); n/c where it cannot run
        certified_record("pgd-at", 0, 0.95, {0.1: 0.70, 0.3: 0.10}, {0.1: 0.91, 0.3: 0.83}),
        make_record("standard", "certified-ibp", 0, 0.98, {}, status="not_certifiable"),
        # smoke: one defense with two hyperparameter sets -> rows labelled by the differing param
        make_record("standard", "fgsm", 0, 0.80, {0.1: 0.30}, profile="smoke", dparams={"epochs": 1, "lr": 0.1}),
        make_record("standard", "fgsm", 0, 0.85, {0.1: 0.35}, profile="smoke", dparams={"epochs": 2, "lr": 0.1}),
    ]
    return records


def results_with(out: Path, records: list[dict]) -> Path:
    for record in records:
        write_record(out / "records", record)
    return out


@pytest.fixture
def synthetic() -> list[dict]:
    return synthetic_records()


def write(records: list[dict], out: Path) -> list[Path]:
    """The image track's files through the leaderboard writer, into the results root ``out``."""
    if not (out / "records").is_dir():
        results_with(out, records)
    return leaderboard.regenerate(Registry(), out, FACTS)


def check(records: list[dict], out: Path) -> list[str]:
    return leaderboard.check(Registry(), out, FACTS)


def test_matches_golden(synthetic, tmp_path):
    out = tmp_path / "out"
    write(synthetic, out)
    for suffix in ("md", "csv"):
        produced = (out / TRACK / f"{DATASET}.{suffix}").read_text(encoding="utf-8")
        golden = GOLDEN / f"leaderboard.{suffix}"
        if os.environ.get("BENCH_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(produced, encoding="utf-8")
        assert produced == golden.read_text(encoding="utf-8"), f"{golden} is out of date (BENCH_UPDATE_GOLDEN=1)"


def test_check_is_clean_after_writing_and_names_an_edited_table(synthetic, tmp_path):
    out = tmp_path / "out"
    write(synthetic, out)
    assert check(synthetic, out) == []
    md = out / TRACK / f"{DATASET}.md"
    md.write_text(md.read_text(encoding="utf-8").replace("97.5", "99.9"), encoding="utf-8")
    assert check(synthetic, out) == [f"{TRACK}/{DATASET}.md (differs from the records)"]


def test_check_reports_missing_and_extra_tables_and_leaves_other_files_alone(synthetic, tmp_path):
    out = tmp_path / "out"
    records = synthetic + [make_record("standard", "fgsm", 0, 0.9, {0.1: 0.5}) | {
        "dataset": {"name": "gone", "params": {}, "origin": "bench 0.1.0"}}]
    write(records, out)
    (out / TRACK / f"{DATASET}.csv").unlink()
    for path in (out / "records").rglob("*.json"):  # the records of dataset "gone" disappear
        if '"name": "gone"' in path.read_text():
            path.unlink()
    user_files = [out / "README.md", out / TRACK / "notes.md", out / "notes" / "analysis.md", out / "data.csv"]
    for path in user_files:  # not the suite's: never reported, never removed
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine\n", encoding="utf-8")
    assert check(records, out) == [f"{TRACK}/gone.csv (extra: no records give it)",
                                   f"{TRACK}/gone.md (extra: no records give it)",
                                   f"{TRACK}/{DATASET}.csv (missing)"]
    write(records, out)  # rewriting removes the stale tables and restores the missing one
    assert check(records, out) == []
    assert not (out / TRACK / "gone.md").exists()
    assert all(path.read_text(encoding="utf-8") == "mine\n" for path in user_files)


def test_png_written_and_linked(synthetic, tmp_path):
    out = tmp_path / "out"
    written = write(synthetic, out)
    png = out / TRACK / f"{DATASET}-quick.png"
    assert png in written
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert not (out / TRACK / f"{DATASET}-smoke.png").exists()  # smoke has no sweep attack
    assert f"![robustness curve]({DATASET}-quick.png)" in (out / TRACK / f"{DATASET}.md").read_text("utf-8")


def test_output_is_deterministic(synthetic, tmp_path):
    write(synthetic, tmp_path / "a")
    write(synthetic, tmp_path / "b")
    for suffix in ("md", "csv"):
        rel = Path(TRACK) / f"{DATASET}.{suffix}"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    forward = build_tables(synthetic_records(), headline=HEADLINE, reported=REPORTED)
    backward = build_tables(synthetic_records()[::-1], headline=HEADLINE, reported=REPORTED)
    key = DATASET
    assert render_markdown(forward[key]) == render_markdown(backward[key])
    assert render_csv(forward[key]) == render_csv(backward[key])


def test_mean_and_sample_std_by_hand():
    # clean 0.90, 0.92, 0.94 -> mean 92.0, sample std 2.0; robust 0.50, 0.60, 0.70 -> 60.0 +- 10.0
    records = [make_record("standard", "worst-case", seed, clean, {0.3: robust}, eval_s=2.0)
               for seed, (clean, robust) in enumerate([(0.90, 0.50), (0.92, 0.60), (0.94, 0.70)])]
    table = build_tables(records, headline=HEADLINE)[DATASET]
    md = render_markdown(table)
    # 95 % t interval over the 3 seeds: 60 +- 4.3027 * 10 / sqrt(3) = 60 +- 24.8
    assert "| standard | 92.0 ± 2.0 | 60.0 ± 10.0 | [35.2, 84.8] t | 2 ep | 11.0 | 2.0 | 3 |  |" in md
    header, row = render_csv(table).splitlines()
    assert header.split(",")[4:8] == ["clean_acc_mean", "clean_acc_std", "worst-case@0.3_mean", "worst-case@0.3_std"]
    assert row.split(",")[4:8] == ["0.920000", "0.020000", "0.600000", "0.100000"]


def test_a_cell_with_fewer_seeds_than_its_row_says_so():
    records = [make_record("pgd-at", "worst-case", seed, 0.9, {0.3: 0.5 + seed / 10}) for seed in range(3)]
    records += [make_record("pgd-at", "fgsm", seed, 0.9, {0.3: 0.7}) for seed in (0, 2)]
    records += [make_record("pgd-at", "fgsm", 1, 0.9, {0.3: 0.7}, status="failed")]
    md = render_markdown(build_tables(records, headline=HEADLINE)[DATASET])
    assert "| pgd-at | 90.0 ± 0.0 | 60.0 ± 10.0 | 70.0 ± 0.0 (2 seeds) |" in md
    assert "(k seeds): a cell with fewer seeds than its row" in md
    full = render_markdown(build_tables(records[:3] + records[3:5] + [make_record("pgd-at", "fgsm", 1, 0.9, {0.3: 0.7})],
                                        headline=HEADLINE)[DATASET])
    assert "(2 seeds)" not in full and "(k seeds)" not in full


def test_failed_records_are_ignored_and_no_headline_means_every_eps():
    failed = make_record("pgd-at", "pgd-linf", 0, 0.5, {0.1: 0.4}, status="failed")
    assert build_tables([failed]) == {}
    table = build_tables(synthetic_records())[DATASET]
    assert [s.profile for s in table.sections] == ["quick", "smoke"]
    quick = table.sections[0]
    assert [c.label for c in quick.columns] == ["worst-case @ 0.1", "worst-case @ 0.3",
                                                "certified-ibp (verified) @ 0.1", "certified-ibp (verified) @ 0.3",
                                                "fgsm @ 0.1", "fgsm @ 0.3",
                                                "pgd-linf @ 0.05", "pgd-linf @ 0.1", "pgd-linf @ 0.2",
                                                "pgd-linf @ 0.3"]
    assert [row.seeds for row in quick.rows] == [1, 2]  # pgd-at's failed seed-1 record adds no seed


def test_reported_numbers_must_be_fractions():
    records = [make_record("pgd-at", "fgsm", 0, 0.9, {0.1: 0.5})]
    with pytest.raises(UsageError, match="fraction"):
        build_tables(records, reported={"pgd-at": {DATASET: {"fgsm @ 0.1": (89.0, "paper")}}})


@pytest.mark.parametrize("mask, flag", [("quantize", "zero-gradients"), ("saturate", "zero-gradients"),
                                        ("noise", "stochastic")])
def test_gradient_masking_flags_fire_on_masked_models_and_reach_the_table(registry, tmp_path, mask, flag):
    from bench.runner import Runner, Selection, plan

    sel = Selection(defenses=("masked", "standard"), attacks=("fgsm",), datasets=("uci-digits",), profile="smoke",
                    sets=(f'masked.mask="{mask}"',))
    Runner(registry, tmp_path, device="cpu").execute(plan(registry, sel))
    flags = {}
    for path in (tmp_path / "records").rglob("*.json"):
        record = json.loads(path.read_text())
        flags[record["defense"]["name"]] = record["masking"]["flags"]
    assert flag in flags["masked"] and flags["standard"] == []
    leaderboard.regenerate(registry, tmp_path)
    md = (tmp_path / TRACK / "uci-digits.md").read_text()
    (masked_row,) = [line for line in md.splitlines() if line.startswith("| masked |")]
    assert flag in masked_row and "⚑" in masked_row


def test_the_worst_case_breaks_a_quantised_model_and_flags_the_black_box_win(registry, tmp_path):
    """Zero input gradients blind FGSM and PGD; Square needs none: the worst case still breaks the model, and
    its record says a black-box attack beat every white-box one."""
    from bench.runner import Runner, Selection, plan

    components = '["fgsm", "pgd-linf", "square"]'
    sel = Selection(defenses=("masked",), attacks=("worst-case", "fgsm", "pgd-linf", "square"),
                    datasets=("uci-digits",), profile="smoke",
                    sets=('masked.mask="quantize"', f"worst-case.attacks={components}"))
    Runner(registry, tmp_path, device="cpu").execute(plan(registry, sel))
    recs = {p.name.split("-s0")[0]: json.loads(p.read_text()) for p in (tmp_path / "records").rglob("*.json")}
    at = {name: {m["eps"]: m["value"] for m in r["metrics"] if m["name"] == "robust_acc"} for name, r in recs.items()}
    eps = 0.2
    assert at["worst-case"][eps] < min(at["fgsm"][eps], at["pgd-linf"][eps])
    assert at["worst-case"][eps] <= at["square"][eps]  # the same square (components take the profile's budget)
    assert f"black-box-beats-white-box@{eps:g}" in recs["worst-case"]["masking"]["flags"]
    assert "zero-gradients" in recs["worst-case"]["masking"]["flags"]


def test_paired_comparison_with_pgd_at_uses_per_example_outcomes():
    """Where both rows recorded per-example outcomes on the same seeds, the paired column is McNemar's test over
    the examples; without them, a paired t over the common seeds."""
    from bench.records import pack_mask

    # 8 examples: the row wins 5 and loses 1 against pgd-at (the hand-made case of tests/core/test_stats.py)
    row_mask, ref_mask = [1, 1, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 1, 1, 0]
    records = []
    for defense, mask in (("mtard", row_mask), ("pgd-at", ref_mask)):
        r = make_record(defense, "worst-case", 0, 0.9, {0.1: sum(mask) / 8}, n=8)
        r["per_example"] = [pack_mask([bool(b) for b in mask], "worst-case()", 0.1)]
        records.append(r)
    md = render_markdown(build_tables(records, headline=HEADLINE)[DATASET])
    assert "vs pgd-at (worst-case @ 0.1)" in md
    mtard = next(line for line in md.splitlines() if line.startswith("| mtard |"))
    assert "+50.0 [" in mtard and "p=0.22" in mtard  # diff 4/8, McNemar p = 14/64
    pgd_at = next(line for line in md.splitlines() if line.startswith("| pgd-at |"))
    assert "| - |" in pgd_at  # the reference itself
