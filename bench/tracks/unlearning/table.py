"""The unlearning track's leaderboard: one table per scenario (dataset), in the field's convention.

Rows: ``original`` and ``retrain`` first, then the methods. Columns: each accuracy split (remaining, forget,
test...), each membership-inference definition's rate on the forget set, the method's time (the cached
model's training time: for methods that start from the original model, the unlearning step only) and its
fraction of retrain's time, and **gap**: the mean absolute difference to retrain over the accuracy and MIA
columns, in percentage points, computed per seed against retrain of the same seed. Mean ± std over seeds.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict

from bench.tables import GENERATED, by_dataset, canon, dedupe, fmt, md_row, provenance, variant_labels

FIRST = ("original", "retrain")
SPLIT_ORDER = ("remain", "forget", "forget-true", "test", "test-retained", "test-forgotten")
REFERENCE = "retrain"


def _column(m: dict) -> str | None:
    if m["name"] == "acc":
        return f"acc {m['split']}"
    if m["name"] == "mia_forget":
        return f"MIA {m['definition_id']}"
    return None  # clean_acc repeats "acc test"; mia_attack_acc is a diagnostic kept in the records


def _column_order(column: str) -> tuple:
    kind, label = column.split(" ", 1)
    return (kind != "acc", SPLIT_ORDER.index(label) if label in SPLIT_ORDER else 99, label)


def _section(records: list[dict]):
    """{row: {"cells": {column: {seed: value}}, "time": {seed: s}}}, the columns, the rows in order."""
    rows: dict[tuple[str, str], dict] = defaultdict(lambda: {"cells": defaultdict(dict), "time": {}})
    columns: set[str] = set()
    for r in records:
        key = (r["defense"]["name"], json.dumps(r["defense"].get("params"), sort_keys=True))
        row = rows[key]
        row["time"][r["seed"]] = r["timings"]["train_s"]
        for m in r["metrics"]:
            column = _column(m)
            if column:
                columns.add(column)
                row["cells"][column][r["seed"]] = m["value"]
    order = sorted(rows, key=lambda k: (FIRST.index(k[0]) if k[0] in FIRST else len(FIRST), k))
    return rows, sorted(columns, key=_column_order), order


def _gaps(row: dict, reference: dict | None, columns: list[str]) -> list[float]:
    """Per seed shared with the reference: mean |row - reference| over the columns both have."""
    if reference is None:
        return []
    gaps = []
    for seed in sorted(set(row["time"]) & set(reference["time"])):
        diffs = [abs(row["cells"][c][seed] - reference["cells"][c][seed]) for c in columns
                 if seed in row["cells"].get(c, {}) and seed in reference["cells"].get(c, {})]
        if diffs:
            gaps.append(statistics.fmean(diffs))
    return gaps


def _reference(rows: dict, key: tuple[str, str]) -> dict | None:
    """Retrain with the same training fields as the row's (its original's recipe), else the only retrain."""
    retrains = {k: v for k, v in rows.items() if k[0] == REFERENCE}
    params = json.loads(key[1])
    for k, v in retrains.items():
        theirs = json.loads(k[1])
        if all(params.get(f) == theirs[f] for f in theirs):
            return v
    return next(iter(retrains.values())) if len(retrains) == 1 else None


def _table_rows(records: list[dict]):
    rows, columns, order = _section(records)
    # A method run with several parameter sets: its label names the differing ones.
    labels = variant_labels({(name, canon(json.loads(params))) for name, params in rows})
    out = []
    for key in order:
        row = rows[key]
        ref = _reference(rows, key)
        times = [row["time"][s] for s in sorted(row["time"])]
        ratio = [row["time"][s] / ref["time"][s] for s in sorted(row["time"])
                 if ref and s in ref["time"] and ref["time"][s] > 0]
        out.append({"label": labels[(key[0], canon(json.loads(key[1])))], "seeds": len(row["time"]),
                    "cells": {c: [row["cells"][c][s] for s in sorted(row["cells"][c])] for c in columns},
                    "time": times, "time_ratio": ratio, "gap": _gaps(row, ref, columns)})
    return columns, out


def tables(records: list[dict], reported: dict | None = None) -> dict[str, str]:
    out = {}
    for dataset, profiles in by_dataset(records).items():
        md = [f"# {dataset} (unlearning)", "",
              GENERATED, "",
              "Accuracies and MIA rates in %, mean ± std over seeds. `MIA <definition>`: the fraction of the "
              "forget set the attack calls members (definitions in the records). Time: the model's training "
              "time in seconds (for methods that start from the original model, the unlearning step only); "
              "`Time (% of retrain)`: the same as a share of retrain's time. Gap: mean |method - retrain| over the accuracy and "
              "MIA columns, percentage points (lower is better; retrain is the goal).", ""]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        header_done = False
        for profile in profiles:
            recs = dedupe(profiles[profile])
            if not recs:
                continue
            columns, rows = _table_rows(recs)
            scenario = _scenario_text(recs)
            md += [f"## {profile} profile", "", scenario, "",
                   md_row(["Method"] + columns + ["Time (s)", "Time (% of retrain)", "Gap", "Seeds"]),
                   md_row(["---"] + ["---:"] * (len(columns) + 4))]
            if not header_done:
                writer.writerow(["profile", "method", "column", "mean", "std", "seeds"])
                header_done = True
            for row in rows:
                md.append(md_row([row["label"]] + [fmt(row["cells"][c]) for c in columns]
                                 + [fmt(row["time"], percent=False), fmt(row["time_ratio"], digits=0),
                                    fmt(row["gap"]), str(row["seeds"])]))
                for column in columns + ["time_s", "time_ratio", "gap"]:
                    values = {"time_s": row["time"], "time_ratio": row["time_ratio"],
                              "gap": row["gap"]}.get(column, row["cells"].get(column, []))
                    if values:
                        scale = 1.0 if column == "time_s" else 100.0
                        mean = statistics.fmean(values) * scale
                        std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
                        writer.writerow([profile, row["label"], column, f"{mean:.4f}", f"{std:.4f}", len(values)])
            md += ["", provenance(recs), ""]
        out[f"{dataset}.md"] = "\n".join(md)
        out[f"{dataset}.csv"] = buf.getvalue()
    return out


def _scenario_text(records: list[dict]) -> str:
    p = records[0]["dataset"]["params"]
    kind = {"random": "random data removal", "class": "class removal", "noisy": "noisy-label removal"}
    name = records[0]["dataset"]["name"]
    what = next((v for k, v in kind.items() if name.endswith(k)), "random data removal")
    parts = [f"fraction {p['fraction']:g}" if "fraction" in p and what != "class removal" else "",
             f"classes {p['classes']}" if p.get("classes") else "all classes",
             f"scenario seed {p.get('seed')}", f"n_train {p.get('n_train') or 'all'}",
             f"n_test {p.get('n_test') or 'all'}"]
    return f"Scenario: {what}; " + ", ".join(x for x in parts if x) + "."
