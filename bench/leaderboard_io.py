"""Glue between the registry and the pure table writer: each dataset's headline eps and each defense's
reported paper numbers come from the plugin classes named in the records."""
from __future__ import annotations

from pathlib import Path

from bench.errors import UsageError
from bench.leaderboard import check_leaderboards, write_leaderboards
from bench.records import iter_records


def _plugin_facts(registry, records_dir: Path) -> tuple[dict, dict]:
    headline, reported = {}, {}
    for record in iter_records(records_dir):
        for kind, name in (("dataset", record["dataset"]["name"]), ("defense", record["defense"]["name"])):
            try:
                cls = registry.load(kind, name)
            except UsageError:
                continue  # a plugin no longer installed: its records still tabulate, with every eps
            if kind == "dataset":
                headline[name] = dict(cls.epsilons)
            elif cls.reported:
                reported[name] = cls.reported
    return headline, reported


def _inputs(registry, results: Path) -> tuple[Path, dict]:
    records = results / "records"
    if not records.is_dir():
        raise UsageError(f"no records under {records}; run `bench run` first")
    headline, reported = _plugin_facts(registry, records)
    return records, {"headline": headline, "reported": reported}


def regenerate(registry, results: Path) -> list[Path]:
    records, facts = _inputs(registry, results)
    return write_leaderboards(records, results, **facts)


def check(registry, results: Path) -> list[str]:
    records, facts = _inputs(registry, results)
    return check_leaderboards(records, results, **facts)
