"""The text-robustness leaderboard, in the MVP paper's shape: per dataset and profile, rows are defenses,
columns clean accuracy and, per attack, accuracy under attack (TextAttack's definition, constraint-checked),
then each attack's success rate, % words perturbed and average queries; mean ± sample std over seeds.
A ``.csv`` with every metric per (defense, attack, seed) sits next to the ``.md``."""
from __future__ import annotations

import csv
import io
from collections import defaultdict

from bench.tables import (GENERATED, budget, by_dataset, ci, dedupe, fmt, md_row, provenance, seed_values,
                          stats_footer, train_seconds, vs_reference)

DEFENSE_ORDER = ("mlp-ft", "mlp-ft-adv", "mvp", "mvp-adv")
REFERENCE = "mlp-ft"  # MVP's baseline: every row's paired comparison is against it
ATTACK_ORDER = ("pwws", "textfooler", "bert-attack", "textbugger")
# A defense whose clean predictions mostly go to one class has little to flip: its accuracy under attack says
# nothing about robustness, so its row is flagged.
DEGENERATE = 0.9
DETAILS = (("attack_success_rate", "ASR", True), ("words_perturbed", "words %", True),
           ("queries", "queries", False))


def _order(name: str, order: tuple[str, ...]) -> tuple:
    return (order.index(name) if name in order else len(order), name)


def _metric(record: dict, name: str):
    return next((m["value"] for m in record["metrics"] if m["name"] == name), None)


def _section(profile: str, records: list[dict]) -> list[str]:
    attacks = sorted({r["attack"]["name"] for r in records}, key=lambda a: _order(a, ATTACK_ORDER))
    defenses = sorted({r["defense"]["name"] for r in records}, key=lambda d: _order(d, DEFENSE_ORDER))
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    clean: dict[str, dict[int, float]] = defaultdict(dict)
    n_examples: set[int] = set()
    for r in records:
        d, a = r["defense"]["name"], r["attack"]["name"]
        for m in r["metrics"]:
            cells[(d, a, m["name"])].append(m["value"])
            if m["name"] == "query_budget_used":  # stored as a fraction of the budget: back to a count
                cells[(d, a, "queries")].append(m["value"] * m["max_queries"])
            if m["name"] == "clean_acc_attacked":
                clean[d].setdefault(r["seed"], m["value"])
                n_examples.add(m["n"])
    head = ["Defense", "Clean"] + [f"{a} AuA" for a in attacks] \
        + [f"{a} {label}" for _, label, _ in DETAILS for a in attacks] + _stats_head(attacks, defenses)
    lines = [f"## {profile} profile", "",
             f"Accuracy (%) on {', '.join(map(str, sorted(n_examples)))} test examples, clean and under attack "
             "(AuA: correct and not broken by a constraint-checked attack, at most 10% of words changed); "
             "ASR: attack success rate (%) over clean-correct examples; words %: words changed in successful "
             "attacks; queries: mean model queries per attacked example.", "",
             md_row(head), md_row(["---"] + ["---:"] * (len(head) - 1))]
    degenerate = sorted({r["defense"]["name"] for r in records
                         if (_metric(r, "majority_prediction_rate") or 0.0) >= DEGENERATE})
    for d in defenses:
        row = [d + (" †" if d in degenerate else ""), fmt(list(clean[d].values()))]
        row += [fmt(cells.get((d, a, "acc_under_attack"), [])) for a in attacks]
        for name, _, percent in DETAILS:
            row += [fmt(cells.get((d, a, name), []), percent=percent) for a in attacks]
        lines.append(md_row(row + _stats_cells(records, d, attacks, defenses, n_examples)))
    if degenerate:
        lines += ["", f"† near-constant classifier: at least {DEGENERATE:.0%} of its clean predictions go to one "
                      "class, so its accuracy under attack is not evidence of robustness."]
    return lines + ["", stats_footer(REFERENCE if REFERENCE in defenses else None), "", provenance(records), ""]


def _stats_head(attacks: list[str], defenses: list[str]) -> list[str]:
    """The framework's columns (issue 22), about the first attack's AuA: its 95 % CI, the paired difference
    from the reference, the budget and the seeds."""
    about = f"{attacks[0]} AuA" if attacks else "Clean"
    return [f"95 % CI ({about})", *([f"vs {REFERENCE} ({about})"] if REFERENCE in defenses else []), "Budget",
            "Seeds"]


def _stats_cells(records: list[dict], defense: str, attacks: list[str], defenses: list[str], n: set[int]) -> list:
    def values(d):
        recs = [r for r in records if r["defense"]["name"] == d and (not attacks or r["attack"]["name"] == attacks[0])]
        return seed_values(recs, "acc_under_attack" if attacks else "clean_acc_attacked")
    own = [r for r in records if r["defense"]["name"] == defense]
    row = values(defense)
    ref = [vs_reference(row, values(REFERENCE)) if defense != REFERENCE else "-"] if REFERENCE in defenses else []
    return [ci(list(row.values()), min(n) if n else None), *ref,
            budget(own[0]["defense"].get("params") or {}, train_seconds(own)), str(len({r["seed"] for r in own}))]


def tables(records: list[dict], reported: dict | None = None) -> dict[str, str]:
    out = {}
    for dataset, profiles in by_dataset(records).items():
        lines = [f"# {dataset} (text-robustness)", "",
                 GENERATED, ""]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["profile", "defense", "attack", "seed", "metric", "value", "n"])
        for profile in profiles:
            recs = dedupe(profiles[profile])
            if not recs:
                continue
            lines += _section(profile, recs)
            for r in recs:
                for m in r["metrics"]:
                    writer.writerow([profile, r["defense"]["name"], r["attack"]["name"], r["seed"], m["name"],
                                     repr(float(m["value"])), m["n"]])
        out[f"{dataset}.md"] = "\n".join(lines)
        out[f"{dataset}.csv"] = buf.getvalue()
    return out
