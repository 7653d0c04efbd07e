"""The text-robustness leaderboard, in the MVP paper's shape: per dataset and profile, rows are defenses,
columns clean accuracy and, per attack, accuracy under attack (TextAttack's definition, constraint-checked),
then each attack's success rate, % words perturbed and average queries; mean ± sample std over seeds.
Under each table: the framework's constraint re-check rejections per reason. A ``.csv`` with every metric per
(defense, attack, seed) sits next to the ``.md``, and per attack ``<dataset>-<attack>-samples.md`` shows the
successful adversarial examples the records keep (changed words in bold), so a reader sees what counts as
success.

The † flag (near-constant classifier) needs ``majority_prediction_rate``: a record without it is refused --
left out of the table and named under it -- never shown unflagged."""
from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict

from bench.tables import (GENERATED, budget, by_dataset, ci, dedupe, fmt, md_row, provenance, seed_values,
                          stats_footer, train_seconds, vs_reference)
from bench.tracks.text_robustness.constraints import MAX_WORD_CHANGE, changed

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


def _label(m: dict) -> str:
    return f"{m['name']}[{m['reason']}]" if "reason" in m else m["name"]


def refused(records: list[dict]) -> tuple[list[dict], list[str]]:
    """(records the table may show, one line per refused record): the † flag needs majority_prediction_rate."""
    keep, lines = [], []
    for r in records:
        if _metric(r, "majority_prediction_rate") is None:
            lines.append(f"- {r['defense']['name']} / {r['attack']['name']} / seed {r['seed']} (key "
                         f"{r['key'][:10]}): no majority_prediction_rate, so the near-constant flag (†) cannot be "
                         "computed; rerun the cell.")
        else:
            keep.append(r)
    return keep, lines


def _rejections(records: list[dict], defenses: list[str], attacks: list[str]) -> list[str]:
    """The framework's re-check rejections per (defense, attack), summed over seeds, split by reason."""
    rows = []
    for d in defenses:
        for a in attacks:
            recs = [r for r in records if r["defense"]["name"] == d and r["attack"]["name"] == a]
            total = sum(round(m["value"] * m["n"]) for r in recs for m in r["metrics"] if m["name"] == "rejected_rate")
            if not total:
                continue
            reasons: dict[str, int] = defaultdict(int)
            for r in recs:
                for m in r["metrics"]:
                    if m["name"] == "rejected_by" and m["value"] > 0:
                        reasons[m["reason"]] += round(m["value"] * m["n"])
            split = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "reason not recorded"
            rows.append(md_row([d, a, str(total), split]))
    if not rows:
        lines = ["Constraint re-check: the framework rejected no final adversarial text."]
    else:
        lines = ["Constraint re-check: final adversarial texts the framework rejected (counted as not broken), by "
                 "reason, summed over seeds.", "", md_row(["Defense", "Attack", "Rejected", "By reason"]),
                 md_row(["---", "---", "---:", "---"]), *rows]
    return lines + _filtered(records, attacks)


def _filtered(records: list[dict], attacks: list[str]) -> list[str]:
    """Per attack, the share of its search's candidates each rule dropped before querying (all defenses and
    seeds pooled)."""
    rows, reasons = [], sorted({m["reason"] for r in records for m in r["metrics"] if m["name"] == "candidates_filtered"})
    for a in attacks:
        counts: dict[str, float] = defaultdict(float)
        seen = 0
        for r in records:
            ms = [m for m in r["metrics"] if m["name"] == "candidates_filtered"] if r["attack"]["name"] == a else []
            seen += ms[0]["n"] if ms else 0
            for m in ms:
                counts[m["reason"]] += m["value"] * m["n"]
        if seen:
            rows.append(md_row([a, str(seen)] + [f"{100 * counts[k] / seen:.1f}" for k in reasons]))
    if not rows:
        return []
    return ["", "Candidates dropped before querying (% of the candidate texts the searches generated, all defenses "
                "and seeds):", "", md_row(["Attack", "Candidates", *reasons]),
            md_row(["---", "---:"] + ["---:"] * len(reasons)), *rows]


def _section(profile: str, records: list[dict]) -> list[str]:
    attacks = sorted({r["attack"]["name"] for r in records}, key=lambda a: _order(a, ATTACK_ORDER))
    defenses = sorted({r["defense"]["name"] for r in records}, key=lambda d: _order(d, DEFENSE_ORDER))
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    clean: dict[str, dict[int, float]] = defaultdict(dict)
    n_examples: set[int] = set()
    for r in records:
        d, a = r["defense"]["name"], r["attack"]["name"]
        for m in r["metrics"]:
            cells[(d, a, _label(m))].append(m["value"])
            if m["name"] == "query_budget_used":  # stored as a fraction of the budget: back to a count
                cells[(d, a, "queries")].append(m["value"] * m["max_queries"])
            if m["name"] == "clean_acc_attacked":
                clean[d].setdefault(r["seed"], m["value"])
                n_examples.add(m["n"])
    budgets = sorted({r["attack"].get("params", {}).get("max_word_change", MAX_WORD_CHANGE) for r in records})
    word_budget = " or ".join(f"ceil({b:.0%} of the words)" for b in budgets)
    head = ["Defense", "Clean"] + [f"{a} AuA" for a in attacks] \
        + [f"{a} {label}" for _, label, _ in DETAILS for a in attacks] + _stats_head(attacks, defenses)
    lines = [f"## {profile} profile", "",
             f"Accuracy (%) on {', '.join(map(str, sorted(n_examples)))} test examples, clean and under attack "
             f"(AuA: correct and not broken by a constraint-checked attack, at most {word_budget} changed, so a text "
             "under 10 words may have 1 word changed); "
             "ASR: attack success rate (%) over clean-correct examples; words %: words changed in successful "
             "attacks; queries: mean model queries per attacked example.", "", *_gate(records), *_precision(records),
             md_row(head), md_row(["---"] + ["---:"] * (len(head) - 1))]
    degenerate = sorted({r["defense"]["name"] for r in records
                         if (_metric(r, "majority_prediction_rate") or 0.0) >= DEGENERATE})
    for d in defenses:
        row = [d + (" †" if d in degenerate else ""), fmt(list(clean[d].values()))]
        row += [fmt(cells.get((d, a, "acc_under_attack"), [])) for a in attacks]
        for name, _, percent in DETAILS:
            row += [fmt(cells.get((d, a, name), []), percent=percent) for a in attacks]
        lines.append(md_row(row + _stats_cells(records, d, attacks, defenses, n_examples)))
    lines += _paired(records, defenses, attacks)
    if degenerate:
        lines += ["", f"† near-constant classifier: at least {DEGENERATE:.0%} of its clean predictions go to one "
                      "class, so its accuracy under attack is not evidence of robustness."]
    return lines + ["", *_rejections(records, defenses, attacks), "",
                    stats_footer(REFERENCE if REFERENCE in defenses else None), "", provenance(records), ""]


def _precision(records: list[dict]) -> list[str]:
    """Where and at what precision the attacks' model queries ran (``attack.params.cuda_precision``; records
    written before the parameter existed ran float32)."""
    seen = Counter()
    for r in records:
        hw = r.get("hardware") or {}
        on_gpu = hw.get("device") == "cuda"
        precision = (r["attack"].get("params") or {}).get("cuda_precision", "float32") if on_gpu else "float32"
        seen[(hw.get("gpu") if on_gpu else "CPU", precision)] += 1
    parts = [f"{precision} on {device} ({n} cells)" for (device, precision), n in sorted(seen.items())]
    return [f"Attack-time queries of the victim and the sentence encoder: {'; '.join(parts)}.", ""]


def _gate(records: list[dict]) -> list[str]:
    """The backbone's masked-LM gate as the records carry it (``defense.identity.masked_lm``), one line per
    distinct backbone: MVP's premise is a masked LM that fills masks, so its figures head the table."""
    gates = {}
    for r in records:
        g = ((r["defense"].get("identity") or {}).get("masked_lm")) or {}
        gates.setdefault(g.get("sha256") or g.get("backbone") or "", g)
    lines = []
    for g in gates.values():
        if "heldout_mlm_loss" not in g:
            lines.append("Masked-LM gate: not recorded for this backbone.")
            continue
        goals, share = g.get("goals", {}), g.get("zero_shot_class_share", [])
        lines.append(
            f"Masked-LM gate ({g.get('backbone')}, {g.get('file') or 'no adapters'}"
            f"{', sha256 ' + g['sha256'][:12] if g.get('sha256') else ''}): held-out MLM loss "
            f"{g['heldout_mlm_loss']:.2f} nats (goal <= {goals.get('heldout_mlm_loss_max', '?')}), zero-shot MVP on "
            f"rotten-tomatoes validation {100 * g['zero_shot_mvp_acc_rt_val']:.1f} % (goal >= "
            f"{100 * goals.get('zero_shot_acc_min', 0):.0f} %) with {' / '.join(f'{100 * x:.1f}' for x in share)} % "
            f"of the predictions per class (each >= {100 * goals.get('class_share_min', 0):.0f} %): "
            f"{'passes' if g.get('passes') else 'FAILS'}.")
    return [*lines, ""] if lines else []


def _paired(records: list[dict], defenses: list[str], attacks: list[str]) -> list[str]:
    """Every row against the reference on every column: the test examples are the same for every defense, so a
    difference on common seeds is paired over seeds and examples (paired t over the seeds)."""
    if REFERENCE not in defenses or len(defenses) < 2:
        return []

    def values(d, a, metric):
        return seed_values([r for r in records if r["defense"]["name"] == d and r["attack"]["name"] == a], metric)

    columns = [(attacks[0], "clean_acc_attacked", "Clean")] + [(a, "acc_under_attack", f"{a} AuA") for a in attacks]
    cells = {d: [vs_reference(values(d, a, m), values(REFERENCE, a, m)) for a, m, _ in columns]
             for d in defenses if d != REFERENCE}
    if all(c == "-" for row in cells.values() for c in row):  # fewer than two common seeds everywhere
        return []
    rows = [md_row([d, *row]) for d, row in cells.items()]
    return ["", f"Paired difference from {REFERENCE} (points; same seeds and test examples, paired t over the "
                "seeds: [95 % interval], p-value, `*` p < 0.05):", "",
            md_row(["Defense"] + [label for *_, label in columns]), md_row(["---"] + ["---:"] * len(columns)), *rows]


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
            _budget(own[0]["defense"].get("params") or {}, train_seconds(own)), str(len({r["seed"] for r in own}))]


def _budget(params: dict, train_s: float | None) -> str:
    """The shared budget cell, plus the adversarial rows' training radius (relative, per token), which differs
    between the adversarial baselines and is what their robustness is bought with."""
    text = budget(params, train_s)
    return f"adv eps {params['adv_eps']:g}, {text}" if params.get("adv_eps") else text


def tables(records: list[dict], reported: dict | None = None) -> dict[str, str]:
    out = {}
    for dataset, profiles in by_dataset(records).items():
        lines = [f"# {dataset} (text-robustness)", "",
                 GENERATED, ""]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["profile", "defense", "attack", "seed", "metric", "value", "n"])
        for profile in profiles:
            recs, refusals = refused(dedupe(profiles[profile]))
            if recs:
                lines += _section(profile, recs)
            if refusals:
                lines += ([f"## {profile} profile", ""] if not recs else []) + [
                    "Records refused by the table writer:", "", *refusals, ""]
            for r in recs:
                for m in r["metrics"]:
                    writer.writerow([profile, r["defense"]["name"], r["attack"]["name"], r["seed"], _label(m),
                                     repr(float(m["value"])), m["n"]])
        out[f"{dataset}.md"] = "\n".join(lines)
        out[f"{dataset}.csv"] = buf.getvalue()
        out.update(samples(dataset, profiles))
    return out


def _escape(word: str) -> str:
    return "".join("\\" + ch if ch in "\\*_`[]<>" else ch for ch in word)


def marked(text: str, other: str) -> str:
    """``text`` with the words that differ from ``other`` (same position) in bold, markdown-escaped."""
    a, b = text.split(), other.split()
    diff = set(changed(a, b)) if len(a) == len(b) else set(range(len(a)))
    return " ".join(f"**{_escape(w)}**" if i in diff else _escape(w) for i, w in enumerate(a))


def samples(dataset: str, profiles: dict[str, list[dict]]) -> dict[str, str]:
    """``<dataset>-<attack>-samples.md``: per profile and defense (lowest seed), the successful adversarial
    examples its record keeps (``attack_success_rate``'s ``examples``: the first 20)."""
    by_attack: dict[str, list[str]] = defaultdict(list)
    for profile, recs in profiles.items():
        recs, _ = refused(dedupe(recs))
        for r in sorted(recs, key=lambda r: (_order(r["attack"]["name"], ATTACK_ORDER),
                                             _order(r["defense"]["name"], DEFENSE_ORDER), r["seed"])):
            m = next((m for m in r["metrics"] if m["name"] == "attack_success_rate" and "examples" in m), None)
            a, d = r["attack"]["name"], r["defense"]["name"]
            if m is None or any(line.startswith(f"## {profile} profile, {d} ") for line in by_attack.get(a, [])):
                continue  # an older record keeps no examples; the lowest seed's are shown
            lines = by_attack[a]
            names = m.get("label_names") or []
            name = (lambda c: names[c] if c < len(names) else str(c))
            lines += [f"## {profile} profile, {d} (seed {r['seed']})", "",
                      f"{len(m['examples'])} of {round(m['value'] * m['n'])} successful attacks (the first, in "
                      f"test order) out of {m['n']} attacked examples; changed words in bold; texts over 60 words "
                      "shown as the 10 words around each change.", "",
                      md_row(["#", "Original", "Adversarial", "True label", "Predicted after attack"]),
                      md_row(["---:", "---", "---", "---", "---"])]
            lines += [md_row([str(e["index"]), marked(e["original"], e["adversarial"]),
                              marked(e["adversarial"], e["original"]), name(e["label"]), name(e["predicted"])])
                      for e in m["examples"]]
            lines.append("")
    return {f"{dataset}-{a}-samples.md": "\n".join([f"# {dataset}: successful {a} adversarial examples", "",
                                                    GENERATED, "", *lines]) for a, lines in by_attack.items()}
