"""What a user reads: the run summary shows each track's own headline for a cell (checked against real
committed records of every track, golden file), and `bench list` stays aligned for any name length."""
import json
import os
import types
from pathlib import Path

from bench.registry import Registry
from bench.runner import Runner, format_summary

ROOT = Path(__file__).resolve().parents[2] / "leaderboards" / "records"
GOLDEN = Path(__file__).parent / "golden" / "summary.txt"
# One committed record per track, and the metric the summary must show for it.
CELLS = {
    "image-robustness": ("fashion-mnist/quick/pgd-at/worst-case-s0-", "robust_acc"),
    "unlearning": ("fashion-mnist-random/quick/laf/unlearning-acc-s0-", "acc"),
    "domain-shift": ("digits-dg/quick/advstyle/domain-accuracy-s0-", "accuracy"),
    "text-robustness": ("rotten-tomatoes/quick/mvp/pwws-s0-", "acc_under_attack"),
    "concept-erasure": ("fashion-erase-bag/quick/esd/soft-prompt-s0-", "asr"),
}


def committed(track: str) -> dict:
    prefix, _ = CELLS[track]
    folder, stem = (ROOT / track / prefix).parent, Path(prefix).name
    (path,) = [p for p in folder.glob(f"{stem}*.json")]
    return json.loads(path.read_text())


def summary_row(registry, record: dict) -> dict:
    runner = Runner.__new__(Runner)  # only the summary's formatting is exercised: no device, no folders
    runner.registry = registry
    job = types.SimpleNamespace(dataset=types.SimpleNamespace(name=record["dataset"]["name"]),
                                defense=types.SimpleNamespace(name=record["defense"]["name"]), seed=record["seed"])
    cell = types.SimpleNamespace(attack=types.SimpleNamespace(name=record["attack"]["name"], track=record["track"]))
    return runner._summary_row(job, cell, record)


def test_each_tracks_summary_row_shows_its_headline_from_the_record():
    registry = Registry()
    rows = []
    for track, (_, headline) in CELLS.items():
        record = committed(track)
        row = summary_row(registry, record)
        assert row["headline"], f"{track}: no headline metric in the summary"
        label, value = row["headline"][0]
        assert label.split("@")[0].split(" [")[0] == headline
        wanted = [m["value"] for m in record["metrics"] if m["name"] == headline]
        assert value in wanted
        rows.append(row)
    text = format_summary(rows) + "\n"
    if os.environ.get("BENCH_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), f"{GOLDEN} is out of date (BENCH_UPDATE_GOLDEN=1)"


def test_bench_list_aligns_with_a_fifty_character_name(capsys):
    from bench.cli import cmd_list

    long = "a-plugin-with-a-name-of-exactly-fifty-characters-x"
    assert len(long) == 50
    registry = Registry(extra={"attack": {long: "plugins_for_tests:FailingAttack"}})
    cmd_list(types.SimpleNamespace(kind="attacks", long=False, json=False), registry)
    lines = capsys.readouterr().out.splitlines()[1:]
    starts = {line.index(line.split()[1], len(line.split()[0]) + 2) for line in lines}
    assert len(starts) == 1, "the target column starts at different places"
    assert any(line.split()[0] == long for line in lines)


def test_bench_list_json(capsys):
    from bench.cli import cmd_list

    cmd_list(types.SimpleNamespace(kind=None, long=False, json=True), Registry())
    listing = json.loads(capsys.readouterr().out)
    assert set(listing) == {"tracks", "defenses", "attacks", "datasets"}
    assert {"name": "pgd-at", "target": "bench_defenses.image_robustness.pgd_at:PGDAT"}.items() <= \
        next(d for d in listing["defenses"] if d["name"] == "pgd-at").items()
