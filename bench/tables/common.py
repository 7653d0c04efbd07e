"""Small helpers the track tables share (formatting, de-duplication, provenance)."""
from __future__ import annotations

import json
import statistics
from collections import defaultdict

LABEL_KEYS = ("split", "domain", "definition_id")  # metric fields that distinguish columns of one name


def dedupe(records: list[dict]) -> list[dict]:
    """One ok record per (defense variant, evaluator variant, seed); the newest wins."""
    best: dict[tuple, dict] = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        k = (r["defense"]["name"], json.dumps(r["defense"].get("params"), sort_keys=True),
             r["attack"]["name"], json.dumps(r["attack"].get("params"), sort_keys=True), r["seed"])
        if k not in best or (r.get("created", ""), r["key"]) > (best[k].get("created", ""), best[k]["key"]):
            best[k] = r
    return [best[k] for k in sorted(best)]


def fmt(values: list[float], percent: bool = True, digits: int = 1) -> str:
    """mean, or mean ± sample std over seeds; '-' when absent."""
    if not values:
        return "-"
    scale = 100.0 if percent else 1.0
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def provenance(records: list[dict]) -> str:
    commits = sorted({(r.get("git_commit") or "unknown")[:7] for r in records})
    devices = sorted({(r.get("hardware") or {}).get("gpu") or (r.get("hardware") or {}).get("device", "?")
                      for r in records})
    dates = sorted({(r.get("created") or "")[:10] for r in records})
    return (f"Provenance: {len(records)} records, commit {' / '.join(commits)}, {', '.join(devices)}, "
            f"{dates[-1] if dates else '?'}")


GENERATED = "Generated from the result records by `bench leaderboard`; do not edit by hand."


def by_dataset(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """{dataset: {profile: records}}, datasets in name order (each track writes one file per dataset)."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[r["dataset"]["name"]][r["profile"]].append(r)
    return {name: groups[name] for name in sorted(groups)}
