"""A plain table for any track: per dataset and profile, rows (defense, evaluator), one column per metric
(name and any split/domain label), mean ± sample std over seeds, with the records' provenance."""
from __future__ import annotations

import statistics
from collections import defaultdict

from bench.tables.common import GENERATED, LABEL_KEYS, by_dataset, dedupe, fmt, md_row, provenance


def metric_label(m: dict) -> str:
    labels = [str(m[k]) for k in LABEL_KEYS if k in m]
    return m["name"] + (f" [{', '.join(labels)}]" if labels else "")


def tables(records: list[dict], reported: dict | None = None) -> dict[str, str]:
    out = {}
    for dataset, profiles in by_dataset(records).items():
        track = next(iter(profiles.values()))[0]["track"]
        lines = [f"# {dataset} ({track})", "", GENERATED, ""]
        for profile in sorted(profiles, key=lambda p: ("full", "quick", "smoke").index(p)
                              if p in ("full", "quick", "smoke") else 9):
            recs = dedupe(profiles[profile])
            values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            columns: list[str] = []
            for r in recs:
                for m in r["metrics"]:
                    label = metric_label(m)
                    if label not in columns:
                        columns.append(label)
                    values[(r["defense"]["name"], r["attack"]["name"])][label].append(m["value"])
            lines += [f"## {profile} profile", "", md_row(["Defense", "Evaluator"] + columns),
                      md_row(["---", "---"] + ["---:"] * len(columns))]
            for (defense, evaluator), cells in sorted(values.items()):
                lines.append(md_row([defense, evaluator] + [fmt(cells.get(c, [])) for c in columns]))
            lines += ["", provenance(recs), ""]
        out[f"{dataset}.md"] = "\n".join(lines)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
