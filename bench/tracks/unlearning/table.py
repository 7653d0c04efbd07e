"""The unlearning track's leaderboard: one file per scenario (dataset), one section per profile.

Main table -- rows: ``original`` and ``retrain`` first, then the methods; columns: each accuracy split
(remaining, forget, test...); each membership-inference definition's AUC on the forget set vs class-matched
non-members (``AUC <definition>``); how far the method moved the model (agreement of its forget-set
predictions with the original's and with retrain's, relative weight change); time and its share of retrain's;
two gaps to retrain, never one average: **Acc gap** (mean |method - retrain| over the accuracy columns) and
**Privacy gap** (mean |AUC - retrain's AUC| over the attacks with signal), in percentage points, per seed
against retrain of the same seed, then mean ± std over seeds.

Validity gate: every membership record carries its attack's AUC on the original model (members = the forget
set) with a bootstrap interval. Where that interval does not lie above 0.5 the attack cannot tell members from
non-members on this scenario, so its numbers are shown as ``n.s.`` (no signal), left out of the privacy gap,
and the reason is written under the table. A second table per section gives every attack's AUC, TPR at 1% and
0.1% FPR, the share of the forget set called member at the calibrated threshold and the realised held-out FPR,
with 95% intervals (one seed: bootstrap; several: over seeds).
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict

from bench import stats
from bench.tracks.unlearning.membership import UNATTAINABLE_FPR
from bench.tables import (
    GENERATED,
    budget,
    by_dataset,
    canon,
    ci,
    dedupe,
    fmt,
    md_row,
    provenance,
    stats_footer,
    variant_labels,
    vs_reference,
)

FIRST = ("original", "retrain")
SPLIT_ORDER = ("remain", "forget", "forget-true", "test", "test-retained", "test-forgotten")
MIA_ORDER = ("lira-online", "lira-offline", "u-lira", "confidence-logreg", "softmax-gbdt")
DIAGNOSTICS = {"agree_original": "Agree orig.", "agree_retrain": "Agree retrain", "weight_change": "Δw"}
REFERENCE = "retrain"
FPR_FLOOR = "ᶠ"
DETAIL = (("mia_auc", "AUC"), ("mia_tpr@1%fpr", "TPR@1%FPR"), ("mia_tpr@0.1%fpr", "TPR@0.1%FPR"),
          ("mia_forget", "Member share"), ("mia_fpr_heldout", "Held-out FPR"), ("mia_power_auc", "Gate AUC"))
HEADLINE = "acc forget"  # the column of the 95 % CI and the paired comparison with retrain


def _column(m: dict) -> str | None:
    if m["name"] == "acc":
        return f"acc {m['split']}"
    if m["name"] == "mia_auc" and "split" not in m and "definition_id" in m:
        return f"AUC {m['definition_id']}"
    if m["name"] in DIAGNOSTICS:
        return DIAGNOSTICS[m["name"]]
    return None


def _column_order(column: str) -> tuple:
    if column.startswith("acc "):
        label = column[4:]
        return (0, SPLIT_ORDER.index(label) if label in SPLIT_ORDER else 99, label)
    if column.startswith("AUC "):
        label = column[4:]
        return (1, MIA_ORDER.index(label) if label in MIA_ORDER else 99, label)
    return (2, list(DIAGNOSTICS.values()).index(column), column)


def _section(records: list[dict]):
    """Rows {key: {"cells": {column: {seed: value}}, "time": {seed: s}, "detail": {(def, name, split): {seed:
    value}}}}, the columns, the rows in order, and the gate {(definition, seed): (signal, lo, hi)}."""
    rows: dict[tuple[str, str], dict] = defaultdict(
        lambda: {"cells": defaultdict(dict), "time": {}, "detail": defaultdict(dict), "unattainable": set()})
    columns: set[str] = set()
    gates: dict[tuple[str, int], tuple] = {}
    for r in records:
        key = (r["defense"]["name"], json.dumps(r["defense"].get("params"), sort_keys=True))
        row = rows[key]
        row["time"][r["seed"]] = r["timings"]["train_s"]
        power: dict[str, dict] = defaultdict(dict)
        for m in r["metrics"]:
            column = _column(m)
            if column:
                columns.add(column)
                row["cells"][column][r["seed"]] = m["value"]
            if m["name"].startswith("mia_") and "definition_id" in m:
                row["detail"][(m["definition_id"], m["name"], m.get("split", ""))][r["seed"]] = m["value"]
                if UNATTAINABLE_FPR in m.get("definition", ""):  # too few non-members for the stated FPR
                    row["unattainable"].add((m["definition_id"], m["name"]))
                if m["name"] in ("mia_power_auc", "mia_signal"):
                    power[m["definition_id"]][(m["name"], m.get("split", ""))] = m["value"]
        for definition, values in power.items():
            if ("mia_signal", "") not in values:
                continue
            gate = (values[("mia_signal", "")] >= 0.5, values.get(("mia_power_auc", "lo")),
                    values.get(("mia_power_auc", "hi")), values.get(("mia_power_auc", "")))
            # The original's record decides (all records of a scenario and seed carry the same gate).
            if (definition, r["seed"]) not in gates or r["defense"]["name"] == "original":
                gates[(definition, r["seed"])] = gate
    order = sorted(rows, key=lambda k: (FIRST.index(k[0]) if k[0] in FIRST else len(FIRST), k))
    return rows, sorted(columns, key=_column_order), order, gates


def _signal(gates: dict, definition: str, seed: int) -> bool:
    gate = gates.get((definition, seed))
    return bool(gate and gate[0])


def _gaps(row: dict, reference: dict | None, columns: list[str], gates: dict) -> tuple[list[float], list[float]]:
    """Per seed shared with the reference: (mean |row - reference| over the accuracy columns, the same over the
    AUC columns whose attack has signal on that seed)."""
    if reference is None:
        return [], []
    acc_gaps, privacy_gaps = [], []
    def diffs(cols, seed):
        return [abs(row["cells"][c][seed] - reference["cells"][c][seed]) for c in cols
                if seed in row["cells"].get(c, {}) and seed in reference["cells"].get(c, {})]

    for seed in sorted(set(row["time"]) & set(reference["time"])):
        acc = diffs([c for c in columns if c.startswith("acc ")], seed)
        privacy = diffs([c for c in columns if c.startswith("AUC ") and _signal(gates, c[4:], seed)], seed)
        if acc:
            acc_gaps.append(statistics.fmean(acc))
        if privacy:
            privacy_gaps.append(statistics.fmean(privacy))
    return acc_gaps, privacy_gaps


def _reference(rows: dict, key: tuple[str, str]) -> dict | None:
    """Retrain with the same training fields as the row's (its original's recipe), else the only retrain."""
    retrains = {k: v for k, v in rows.items() if k[0] == REFERENCE}
    params = json.loads(key[1])
    for k, v in retrains.items():
        theirs = json.loads(k[1])
        if all(params.get(f) == theirs[f] for f in theirs):
            return v
    return next(iter(retrains.values())) if len(retrains) == 1 else None


def _interval(values: list[float]) -> tuple[float, float] | None:
    """95% t-interval of the mean over seeds (None for fewer than 2)."""
    return stats.t_interval(values) if len(values) >= 2 else None


def _table_rows(records: list[dict]):
    rows, columns, order, gates = _section(records)
    labels = variant_labels({(name, canon(json.loads(params))) for name, params in rows})
    out = []
    for key in order:
        row = rows[key]
        ref = _reference(rows, key)
        times = [row["time"][s] for s in sorted(row["time"])]
        ratio = [row["time"][s] / ref["time"][s] for s in sorted(row["time"])
                 if ref and s in ref["time"] and ref["time"][s] > 0]
        acc_gap, privacy_gap = _gaps(row, ref, columns, gates)
        cells, marks = {}, {}
        for c in columns:
            seeds = sorted(row["cells"].get(c, {}))
            if c.startswith("AUC "):
                kept = [s for s in seeds if _signal(gates, c[4:], s)]
                marks[c] = "n.s." if seeds and not kept else ("†" if len(kept) < len(seeds) else "")
                seeds = kept
            cells[c] = [row["cells"][c][s] for s in seeds]
        headline = row["cells"].get(HEADLINE, {})
        paired = vs_reference(headline, ref["cells"].get(HEADLINE, {})) if ref and ref is not row else "-"
        out.append({"key": key, "label": labels[(key[0], canon(json.loads(key[1])))], "seeds": len(row["time"]),
                    "paired": paired, "budget": budget(json.loads(key[1]) or {}, None),
                    "cells": cells, "marks": marks, "time": times, "time_ratio": ratio, "acc_gap": acc_gap,
                    "privacy_gap": privacy_gap, "row": row})
    return columns, out, gates


def _cell(values: list[float], mark: str = "") -> str:
    if mark == "n.s.":
        return "n.s."
    return fmt(values) + mark


def _detail_cell(row: dict, definition: str, name: str) -> str:
    """value [lo, hi] in %: one seed, the bootstrap interval; several, mean ± std [95% interval over seeds]."""
    detail = row["detail"]
    point = detail.get((definition, name, ""), {})
    if not point:
        return "-"
    seeds = sorted(point)
    values = [point[s] for s in seeds]
    if len(values) == 1:
        lo, hi = detail.get((definition, name, "lo"), {}), detail.get((definition, name, "hi"), {})
        bounds = f" [{100 * lo[seeds[0]]:.1f}, {100 * hi[seeds[0]]:.1f}]" if seeds[0] in lo and seeds[0] in hi else ""
        return f"{100 * values[0]:.1f}{bounds}"
    interval = _interval(values)
    return fmt(values) + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")


def _detail_cell_marked(row: dict, definition: str, name: str) -> str:
    cell = _detail_cell(row, definition, name)
    return cell + FPR_FLOOR if (definition, name) in row["unattainable"] and cell != "-" else cell


def _notes(columns, rows, gates) -> list[str]:
    notes = []
    definitions = sorted({c[4:] for c in columns if c.startswith("AUC ")},
                         key=lambda d: MIA_ORDER.index(d) if d in MIA_ORDER else 99)
    silent = []
    for d in definitions:
        seeds = sorted(s for (dd, s) in gates if dd == d)
        bad = [s for s in seeds if not gates[(d, s)][0]]
        if bad:
            shown = ", ".join(f"seed {s}: {100 * gates[(d, s)][3]:.1f} [{100 * gates[(d, s)][1]:.1f}, "
                              f"{100 * gates[(d, s)][2]:.1f}]" for s in bad
                              if None not in gates[(d, s)][1:])
            silent.append(f"`{d}` ({shown})" if shown else f"`{d}`")
        elif not seeds:
            silent.append(f"`{d}` (no gate in its records)")
    if silent:
        notes.append("**n.s. = no signal**: on the original model, the attack's AUC of the forget set (members "
                     "there) vs class-matched non-members has a 95% bootstrap interval that does not lie above 50 -- it cannot "
                     "tell members from non-members on this scenario, so its numbers say nothing about "
                     "forgetting; they are shown as n.s. and left out of the privacy gap: " + "; ".join(silent)
                     + ". † = some seeds had no signal and are left out of the mean.")
    return notes


def _auc_interval(row: dict, definition: str) -> tuple[float, float, float] | None:
    """(mean AUC, lo, hi): one seed, its bootstrap interval; several, the 95% interval of the mean over seeds."""
    detail = row["detail"]
    point = detail.get((definition, "mia_auc", ""), {})
    if not point:
        return None
    seeds = sorted(point)
    values = [point[s] for s in seeds]
    if len(values) == 1:
        lo, hi = detail.get((definition, "mia_auc", "lo"), {}), detail.get((definition, "mia_auc", "hi"), {})
        if seeds[0] not in lo or seeds[0] not in hi:
            return None
        return values[0], lo[seeds[0]], hi[seeds[0]]
    interval = _interval(values)
    return statistics.fmean(values), interval[0], interval[1]


def _separation_note(rows_out, gates) -> list[str]:
    """Whether each attack with signal tells the original's forget set from retrain's (intervals apart)."""
    by_name = {r["key"][0]: r for r in rows_out}
    if "original" not in by_name or "retrain" not in by_name:
        return []
    parts = []
    for definition in sorted({d for r in rows_out for (d, _, _) in r["row"]["detail"]},
                             key=lambda d: MIA_ORDER.index(d) if d in MIA_ORDER else 99):
        seeds = [s for (d, s) in gates if d == definition]
        if not seeds or not all(_signal(gates, definition, s) for s in seeds):
            continue
        a, b = _auc_interval(by_name["original"]["row"], definition), _auc_interval(by_name["retrain"]["row"],
                                                                                   definition)
        if a and b:
            apart = a[1] > b[2] or b[1] > a[2]
            parts.append(f"`{definition}` original {100 * a[0]:.1f} [{100 * a[1]:.1f}, {100 * a[2]:.1f}] vs retrain "
                         f"{100 * b[0]:.1f} [{100 * b[1]:.1f}, {100 * b[2]:.1f}]: "
                         + ("told apart" if apart else "intervals overlap, not told apart at this size"))
    if not parts:
        return ["**Original vs retrain**: no attack has signal on every seed here, so none can tell the "
                "original's forget set from retrain's (see n.s. above)."] if gates else []
    return ["**Original vs retrain** (forget-set AUC, 95% intervals): " + "; ".join(parts) + "."]


def _memorisation_note(rows_out, scenario_kind: str) -> list[str]:
    if scenario_kind != "noisy":
        return []
    by_name = {r["key"][0]: r for r in rows_out}
    original, retrain = by_name.get("original"), by_name.get("retrain")
    if not original or not original["cells"].get("acc forget"):
        return []
    rate = statistics.fmean(original["cells"]["acc forget"])
    ref = statistics.fmean(retrain["cells"]["acc forget"]) if retrain and retrain["cells"].get("acc forget") \
        else None
    text = (f"**Memorisation**: the original fits {100 * rate:.1f}% of the noisy forget set's corrupted training "
            f"labels (`acc forget` of `original`)")
    if ref is not None:
        text += f"; retrain, which never saw them, {100 * ref:.1f}%"
    if ref is not None and rate - ref < 0.2:
        text += (". The original barely memorised the noisy labels: `acc forget` cannot rank methods by what "
                 "they undo (a membership attack that tells original from retrain, above, still can).")
    else:
        text += ": there is something to unlearn, and `acc forget` ranks how much of it each method undid."
    return [text]


def _unmoved_note(rows_out) -> list[str]:
    """Methods whose forget-set predictions stay with the original's: they do not forget."""
    by_name = {r["key"][0]: r for r in rows_out}
    retrain = by_name.get("retrain")
    if not retrain or not retrain["cells"].get("Agree orig."):
        return []
    ref = statistics.fmean(retrain["cells"]["Agree orig."])
    notes = []
    for r in rows_out:
        name = r["key"][0]
        agree = r["cells"].get("Agree orig.")
        if name in FIRST or not agree:
            continue
        value = statistics.fmean(agree)
        if value >= (1 + ref) / 2 and value > ref:
            change = r["cells"].get("Δw")
            moved = f", relative weight change {100 * statistics.fmean(change):.1f}%" if change else ""
            why = (" Diagnosis (`bench info laf`): in LAF's alignment loss each forget sample's distance has gradient "
                   "weight ~1/tau against 1 per remaining sample, so aligning the remaining data to the original "
                   "pulls the shared features of the forget set back too (`laf-balanced`, which weighs both "
                   "sides equally, then destroys the remaining accuracy as well).") if name in ("laf", "laf-r") else ""
            notes.append(f"**{r['label']} does not forget**: its forget-set predictions agree with the original's "
                         f"on {100 * value:.1f}% (retrain's: {100 * ref:.1f}%){moved}: it leaves the model "
                         f"where it was.{why}")
    return notes


def tables(records: list[dict], reported: dict | None = None) -> dict[str, str]:
    out = {}
    for dataset, profiles in by_dataset(records).items():
        md = [f"# {dataset} (unlearning)", "",
              GENERATED, "",
              "Accuracies, AUCs and agreements in %, mean ± std over seeds. `AUC <attack>`: ROC AUC of the "
              "forget set vs class-matched held-out non-members under that membership-inference attack (50 = "
              "the forget set looks like data never seen; retrain's value is the goal; definitions in the "
              "records). `Agree orig.` / `Agree retrain`: share of the forget set's predictions equal to the "
              "original's / retrain's; `Δw`: ||θ − θ_orig|| / ||θ_orig||. Time: the model's training time in "
              "seconds (for methods that start from the original model, the unlearning step only); `Time (% of "
              "retrain)`: the same as a share of retrain's time. Acc gap: mean |method − retrain| over the "
              "accuracy columns; Privacy gap: mean |AUC − retrain's AUC| over the attacks with signal; both in "
              "percentage points (lower is better; retrain is the goal).", ""]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        header_done = False
        for profile in profiles:
            recs = dedupe(profiles[profile])
            if not recs:
                continue
            columns, rows, gates = _table_rows(recs)
            scenario = _scenario_text(recs)
            n = next((m["n"] for r in recs for m in r["metrics"] if _column(m) == HEADLINE), None)
            head = ["Method"] + columns + ["Time (s)", "Time (% of retrain)", "Acc gap", "Privacy gap",
                                           f"95 % CI ({HEADLINE})", f"vs {REFERENCE} ({HEADLINE})", "Budget", "Seeds"]
            md += [f"## {profile} profile", "", scenario, "", md_row(head), md_row(["---"] + ["---:"] * (len(head) - 1))]
            if not header_done:
                writer.writerow(["profile", "method", "column", "mean", "std", "seeds", "ci95_lo", "ci95_hi"])
                header_done = True
            for row in rows:
                md.append(md_row([row["label"]] + [_cell(row["cells"][c], row["marks"].get(c, "")) for c in columns]
                                 + [fmt(row["time"], percent=False), fmt(row["time_ratio"], digits=0),
                                    fmt(row["acc_gap"]),
                                    fmt(row["privacy_gap"]) if row["privacy_gap"] else "n.s."
                                    if any(row["marks"].get(c) == "n.s." for c in columns) else "-",
                                    ci(row["cells"].get(HEADLINE, []), n), row["paired"], row["budget"],
                                    str(row["seeds"])]))
                series = {**{c: row["cells"].get(c, []) for c in columns}, "time_s": row["time"],
                          "time_ratio": row["time_ratio"], "acc_gap": row["acc_gap"],
                          "privacy_gap": row["privacy_gap"]}
                for column, values in series.items():
                    if values:
                        scale = 1.0 if column == "time_s" else 100.0
                        mean = statistics.fmean(values) * scale
                        std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
                        interval = _interval(values)
                        lo, hi = ((f"{interval[0] * scale:.4f}", f"{interval[1] * scale:.4f}") if interval
                                  else ("", ""))
                        writer.writerow([profile, row["label"], column, f"{mean:.4f}", f"{std:.4f}", len(values),
                                         lo, hi])
            kind = recs[0].get("dataset", {}).get("name", "")
            kind = next((k for k in ("random", "uniform", "class", "noisy") if kind.endswith(k)), "random")
            notes = (_notes(columns, rows, gates) + _separation_note(rows, gates) + _memorisation_note(rows, kind)
                     + _unmoved_note(rows))
            md += [""] + [f"{n}\n" for n in notes]
            md += _detail_tables(columns, rows, gates)
            md += ["", stats_footer(REFERENCE), "", provenance(recs), ""]
        out[f"{dataset}.md"] = "\n".join(md)
        out[f"{dataset}.csv"] = buf.getvalue()
    return out


def _detail_tables(columns, rows, gates) -> list[str]:
    definitions = sorted({d for r in rows for (d, _, _) in r["row"]["detail"]},
                         key=lambda d: MIA_ORDER.index(d) if d in MIA_ORDER else 99)
    if not definitions:
        return []
    lines = ["### Membership inference, per attack", "",
             "In %. One seed: value [bootstrap 95% interval]; several seeds: mean ± std [95% interval of the mean "
             "over seeds]. `Member share`: share of the forget set called member at the threshold calibrated on "
             "held-out non-members to the stated FPR (in the records' definitions); `Held-out FPR`: the share of "
             "other held-out non-members that threshold lets through (it should be near the stated FPR); `Gate "
             "AUC`: the attack's AUC on the original model (its power; interval not above 50: n.s.).", ""]
    head = ["Attack", "Method"] + [label for _, label in DETAIL] + ["Signal"]
    lines += [md_row(head), md_row(["---", "---"] + ["---:"] * (len(head) - 2))]
    for d in definitions:
        for r in rows:
            if not any(k[0] == d for k in r["row"]["detail"]):
                continue
            seeds = sorted(r["row"]["detail"].get((d, "mia_auc", ""), {}))
            signal = [_signal(gates, d, s) for s in seeds]
            text = "yes" if signal and all(signal) else "n.s." if not any(signal) else \
                f"{sum(signal)}/{len(signal)} seeds"
            lines.append(md_row([d, r["label"]] + [_detail_cell_marked(r["row"], d, name) for name, _ in DETAIL]
                                + [text]))
    if any(r["row"]["unattainable"] for r in rows):
        lines += ["", f"{FPR_FLOOR} Fewer held-out non-members than 1 / FPR: no threshold passes that few, so the "
                      "cell is the TPR at the strictest threshold there is (FPR 0, above every non-member), "
                      "not at the stated FPR; it cannot be compared with a TPR measured at that FPR."]
    return lines + [""]


def _epochs_text(records: list[dict], p: dict) -> str:
    """How long the original trained: its own ``epochs`` when set, else the scenario's ``train_epochs``."""
    own = sorted({r["defense"].get("params", {}).get("epochs") for r in records if r["defense"]["name"] == "original"}
                 - {None})
    epochs = own[0] if len(own) == 1 else p.get("train_epochs")
    return f"original trained {epochs} epochs" if epochs else ""


def _scenario_text(records: list[dict]) -> str:
    p = records[0]["dataset"]["params"]
    kind = {"random": "random data removal", "class": "class removal", "noisy": "noisy-label removal"}
    name = records[0]["dataset"]["name"]
    what = next((v for k, v in kind.items() if name.endswith(k)), "random data removal")
    parts = [f"fraction {p['fraction']:g}" if "fraction" in p and what != "class removal" else "",
             f"classes {p['classes']}" if p.get("classes") else "all classes",
             f"scenario seed {p.get('seed')}", f"n_train {p.get('n_train') or 'all'}",
             f"n_test {p.get('n_test') or 'all'}",
             _epochs_text(records, p)]
    return f"Scenario: {what}; " + ", ".join(x for x in parts if x) + "."
