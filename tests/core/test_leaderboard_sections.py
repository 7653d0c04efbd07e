"""The sections every track's table file gets from the framework: the suites' cells with no record ("Cells not
run") and the cells whose newest record failed -- each profile on its own, so a quick record never hides a
full cell."""
from bench.leaderboard import failures, not_run

SUITES = {
    "toy-quick": {"defenses": ("a", "b"), "attacks": ("x", "y"), "datasets": ("toy",), "seeds": (0,),
                  "profile": "quick"},
    "toy-full": {"defenses": ("a", "b"), "attacks": ("x", "y"), "datasets": ("toy",), "seeds": (0, 1, 2),
                 "profile": "full"},
    "toy-extra": {"defenses": ("a",), "attacks": ("x", "z"), "datasets": ("toy",), "seeds": (0, 1, 2),
                  "profile": "full"},
    "other-data": {"defenses": ("a",), "attacks": ("x",), "datasets": ("elsewhere",), "seeds": (0,),
                   "profile": "full"},
}


def record(defense, attack, seed, profile="full", status="ok", created="2026-01-01"):
    r = {"defense": {"name": defense}, "attack": {"name": attack}, "dataset": {"name": "toy"}, "seed": seed,
         "profile": profile, "status": status, "key": f"{defense}{attack}{seed}{profile}{created}",
         "created": created}
    return {**r, "error": {"type": "KeyError", "message": "boom", "log": "logs/x.log"}} if status == "failed" else r


def rows(section: list[str]) -> list[str]:
    return [line for line in section if line.startswith("| ") and not line.startswith(("| Profile", "| ---"))]


def test_a_complete_grid_has_no_section():
    records = [record(d, a, s) for d in "ab" for a in "xy" for s in (0, 1, 2)]
    records += [record(d, a, 0, "quick") for d in "ab" for a in "xy"]
    records += [record("a", "z", s) for s in (0, 1, 2)]
    assert not_run(records, SUITES) == []


def test_missing_cells_are_named_per_profile_and_a_missing_job_in_one_line():
    full = [record(d, a, s) for d in "ab" for a in "xy" for s in (0, 1, 2)
            if not (d == "b") and not (a == "y" and s == 1)]
    quick = [record("a", "x", 0, "quick"), record("b", "y", 0, "quick", status="failed")]  # failed = run
    section = not_run(full + quick, SUITES)
    assert section[1] == "## Cells not run"
    assert rows(section) == [
        "| full | toy-full | a | y | 1 |",
        "| full | toy-full | b | all 2 | 0, 1, 2 |",  # the whole model job: one line
        "| full | toy-extra | a | z | 0, 1, 2 |",  # a cell two suites ask for is named once, under the first
        "| quick | toy-quick | a | y | 0 |",
        "| quick | toy-quick | b | x | 0 |",
    ]


def test_a_suite_with_no_record_for_the_dataset_and_profile_is_not_expected():
    records = [record(d, a, s) for d in "ab" for a in "xy" for s in (0, 1, 2)] + [record("a", "z", 0)]
    assert rows(not_run(records, SUITES)) == ["| full | toy-extra | a | z | 1, 2 |"]
    assert not_run(records, {"other-data": SUITES["other-data"]}) == []


def test_a_failed_full_cell_is_named_even_when_a_newer_quick_record_of_it_is_ok():
    records = [record("a", "x", 0, "full", "failed", "2026-01-01"), record("a", "x", 0, "quick", "ok", "2026-01-02")]
    (row,) = rows(failures(records))
    assert row.startswith("| full | a | x | 0 | KeyError: boom |")
    # and the quick record does not count as the full cell having been run
    assert "| full | toy-full | a | x | 1, 2 |" in rows(not_run(records, SUITES))
    assert "| quick | toy-quick | a | y | 0 |" in rows(not_run(records, SUITES))


def test_a_cell_recorded_by_another_track_counts_as_run():
    # domain-full asks for pgd-linf on its models; those records belong to the image-robustness track
    own = [record(d, "x", s) for d in "ab" for s in (0, 1, 2)]
    elsewhere = [record(d, "y", s) for d in "ab" for s in (0, 1, 2)]
    suites = {"toy-full": SUITES["toy-full"]}
    assert rows(not_run(own, suites)) == ["| full | toy-full | a | y | 0, 1, 2 |", "| full | toy-full | b | y | 0, 1, 2 |"]
    assert not_run(own, suites, own + elsewhere) == []
