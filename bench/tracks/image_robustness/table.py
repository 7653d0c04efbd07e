"""The image-robustness track's table: per dataset, one section per profile; rows are defenses, columns clean
accuracy, the worst cases, verified accuracy, then each attack at each of the dataset's headline eps; mean ±
sample std over seeds; a robustness-curve PNG per profile for attacks evaluated at several eps."""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UsageError
from bench import stats
from bench.records import unpack_bits
from bench.tables import (GENERATED, RUN_STATUSES, budget, by_dataset, canon, ci, dedupe, fmt, md_row, provenance,
                          stats_footer, variant, variant_labels)

WORST_CASE = ("worst-case", "worst-case-l2")  # their columns come right after Clean: the headline number
CURVE_MIN_EPS = 3  # an attack with robust_acc at this many eps is a curve (sweep) attack
MARK = "†"
MASKED = "⚑"  # the record carries gradient-masking flags (listed in the Flags column)
TABLE_SUFFIXES = (".md", ".csv")
# The reference method each row is compared with (paired, issue 22): the first of these the section has.
REFERENCES = ("pgd-at", "erm")


@dataclass(frozen=True)
class Column:
    attack: str  # the attack's name, plus its differing params when it ran with several in one profile
    name: str  # the attack plugin's name
    eps: float
    verified: bool = False  # a certifier's verified accuracy (a lower bound), not an attack's robust accuracy

    @property
    def label(self) -> str:
        return f"{self.attack} (verified) @ {self.eps:g}" if self.verified else f"{self.attack} @ {self.eps:g}"

    @property
    def key(self) -> str:
        return f"{self.attack}@{self.eps:g}"

    def order(self) -> tuple:
        # Worst cases first (the headline empirical number), then verified accuracy, then each attack.
        rank = WORST_CASE.index(self.name) if self.name in WORST_CASE else len(WORST_CASE) + (not self.verified)
        return (rank, self.attack, self.eps)


@dataclass
class Row:
    label: str
    defense: str
    params: dict
    seeds: int
    clean: list[float]  # one value per seed
    cells: dict[Column, list[float]]  # one value per seed
    flagged: set[Column]  # cells from records with threat-model violations
    curves: dict[str, dict[float, list[float]]]  # attack label -> eps -> one value per seed
    train_s: float
    eval_s: float
    n: list[int]
    reported: list[tuple[str, float, str]]
    not_certifiable: set = field(default_factory=set)  # columns whose certifier could not handle the model
    failed: set = field(default_factory=set)  # attacks (labels) whose last run on this row failed
    masking: dict = field(default_factory=dict)  # column -> gradient-masking flags of its records
    by_seed: dict = field(default_factory=dict)  # column (None: clean) -> {seed: value}
    outcomes: dict = field(default_factory=dict)  # column -> {seed: per-example robust bools}, where recorded


@dataclass
class Section:
    profile: str
    columns: list[Column]
    rows: list[Row]
    records: list[dict]
    curve_attacks: list[str]


@dataclass
class Table:
    track: str
    dataset: str
    sections: list[Section]


def _is_headline(headline: dict | None, dataset: str, norm: str | None, eps: float) -> bool:
    wanted = (headline or {}).get(dataset, {}).get(norm)
    return wanted is None or any(abs(eps - w) <= 1e-9 * max(1.0, abs(w)) for w in wanted)


def _row(label: str, records: list[dict], attack_labels: dict, dataset: str, headline, reported) -> Row:
    by_seed: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        by_seed[r["seed"]].append(r)
    clean, train, evals, n = [], [], [], set()
    cells, flagged, not_certifiable, masking = defaultdict(list), set(), set(), {}
    by_seed_cells: dict = defaultdict(dict)
    outcomes: dict = defaultdict(dict)
    curves: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for seed in sorted(by_seed):
        recs = by_seed[seed]
        # Every record of one seed evaluates the same model: average its clean_acc, count training once.
        values = [m["value"] for r in recs for m in r["metrics"] if m["name"] == "clean_acc"]
        if values:
            clean.append(statistics.fmean(values))
            by_seed_cells[None][seed] = clean[-1]
        train.append(max((r.get("timings") or {}).get("train_s", 0.0) for r in recs))
        evals.append(sum((r.get("timings") or {}).get("eval_s", 0.0) for r in recs))
        for r in recs:
            attack = attack_labels[variant(r["attack"])]
            violated = ((r.get("threat_model") or {}).get("violations") or 0) > 0
            flags = set((r.get("masking") or {}).get("flags") or ())
            if r.get("status") == "not_certifiable":
                norm = r["attack"].get("norm")
                for eps in ((headline or {}).get(dataset, {}).get(norm) or ()):
                    not_certifiable.add(Column(attack, r["attack"]["name"], float(f"{eps:.10g}"), True))
                continue
            # A certifier's record also carries its companion attack's robust_acc: its column is verified_acc.
            verified = any(m["name"] == "verified_acc" for m in r["metrics"])
            for m in r["metrics"]:
                n.add(m["n"])
                if m["name"] != ("verified_acc" if verified else "robust_acc"):
                    continue
                eps = float(f"{m['eps']:.10g}")  # merge float noise like 0.30000000000000004
                curves[attack][eps].append(m["value"])
                if _is_headline(headline, dataset, m.get("norm") or r["attack"].get("norm"), eps):
                    column = Column(attack, r["attack"]["name"], eps, verified)
                    cells[column].append(m["value"])
                    by_seed_cells[column][seed] = m["value"]
                    entry = next((e for e in r.get("per_example") or () if abs(e["eps"] - m["eps"]) <= 1e-9
                                  and e["definition"] == r["attack"].get("definition")), None)
                    if entry is not None and not verified:
                        outcomes[column][seed] = unpack_bits(entry)
                    if violated:
                        flagged.add(column)
                    if flags:
                        masking.setdefault(column, set()).update(flags)
    name = records[0]["defense"]["name"]
    paper = []
    for column, (value, source) in sorted(((reported or {}).get(name) or {}).get(dataset, {}).items()):
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{name}: reported {column!r} on {dataset} is {value}; give a fraction in [0, 1]")
        paper.append((column, value, source))
    return Row(label, name, records[0]["defense"].get("params") or {}, len(by_seed), clean, dict(cells),
               flagged, {a: dict(pts) for a, pts in curves.items()}, statistics.fmean(train),
               statistics.fmean(evals), sorted(n), paper, not_certifiable, masking=masking,
               by_seed=dict(by_seed_cells), outcomes=dict(outcomes))


def _row_order(columns: list[Column]):
    worst = next((c for c in columns if c.name in WORST_CASE), None)

    def key(row: Row) -> tuple:
        if worst is not None and row.cells.get(worst):
            return (0, -statistics.fmean(row.cells[worst]), row.label)
        return (1, 0.0, row.label)
    return key


def _section(dataset: str, profile: str, records: list[dict], headline, reported) -> Section:
    newest = dedupe(records, statuses=("ok", "not_certifiable", "failed"))
    failed = {(variant(r["defense"]), variant(r["attack"])) for r in newest if r["status"] == "failed"}
    records = [r for r in newest if r["status"] != "failed"]
    defense_labels = variant_labels({variant(r["defense"]) for r in records})
    # A row the user named (e.g. an evaluated checkpoint's ``label`` param) keeps that name.
    defense_labels = {v: json.loads(v[1]).get("label") or text for v, text in defense_labels.items()}
    attack_labels = variant_labels({variant(r["attack"]) for r in records})
    by_row: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        by_row[variant(r["defense"])].append(r)
    rows = [_row(defense_labels[v], recs, attack_labels, dataset, headline, reported)
            for v, recs in sorted(by_row.items())]
    for v, row in zip(sorted(by_row), rows):
        row.failed = {attack_labels[a] for d, a in failed if d == v and a in attack_labels}
    columns = sorted({c for row in rows for c in (*row.cells, *row.not_certifiable)}, key=Column.order)
    rows.sort(key=_row_order(columns))
    eps_seen: dict[str, set[float]] = defaultdict(set)
    for row in rows:
        for attack, points in row.curves.items():
            eps_seen[attack].update(points)
    curve_attacks = sorted(a for a, eps in eps_seen.items() if len(eps) >= CURVE_MIN_EPS)
    return Section(profile, columns, rows, records, curve_attacks)


def build_tables(records: list[dict], *, headline: dict | None = None,
                 reported: dict | None = None) -> dict[str, Table]:
    """{dataset: Table}, one section per profile with a result (full, quick, smoke, then others); cells whose
    last run failed read "failed"."""
    tables = {}
    for dataset, profiles in by_dataset([r for r in records if r.get("status") in RUN_STATUSES]).items():
        sections = [_section(dataset, p, recs, headline, reported) for p, recs in profiles.items()
                    if any(r["status"] != "failed" for r in recs)]
        if sections:
            tables[dataset] = Table(next(iter(profiles.values()))[0]["track"], dataset, sections)
    return tables


def tables(records: list[dict], facts) -> dict[str, str]:
    """The track's files: ``<dataset>.md`` and ``<dataset>.csv``."""
    out = {}
    for dataset, table in build_tables(records, headline=facts.headline, reported=facts.reported).items():
        out[f"{dataset}.md"] = render_markdown(table)
        out[f"{dataset}.csv"] = render_csv(table)
    return out


def figures(records: list[dict], out_dir: Path, facts) -> list[Path]:
    """``<dataset>-<profile>.png``: robustness curves, for sections with an attack at several eps."""
    paths = []
    for table in build_tables(records, headline=facts.headline, reported=facts.reported).values():
        for section in table.sections:
            if section.curve_attacks:
                path = out_dir / f"{table.dataset}-{section.profile}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                plot_curves(table, section, path)
                paths.append(path)
    return paths


# ---- rendering -------------------------------------------------------------------------------------------

def _frac(values: list[float]) -> list[str]:
    """[mean, std] as fractions with 6 decimals; std empty below two seeds."""
    if not values:
        return ["", ""]
    std = f"{statistics.stdev(values):.6f}" if len(values) > 1 else ""
    return [f"{statistics.fmean(values):.6f}", std]


def _reported(row: Row, percent: bool) -> str:
    return "; ".join(f"{col}: {100 * v:.1f} ({src})" if percent else f"{col}: {v:g} ({src})"
                     for col, v, src in row.reported)


def _flags(row: Row) -> str:
    """Every masking flag of the row's records, each once, without the eps it was seen at."""
    return ", ".join(sorted({f.split("@")[0] for flags in row.masking.values() for f in flags}))


def headline(section: Section) -> Column | None:
    """The column the CI and the paired comparison are about: the first (the worst case, where there is one)."""
    return next((c for c in section.columns if not c.verified), None)


def reference(section: Section) -> Row | None:
    return next((row for name in REFERENCES for row in section.rows if row.label == name), None)


def compare(row: Row, ref: Row | None, column: Column | None) -> dict | None:
    """Row minus reference on ``column`` (None: clean): McNemar over examples where both rows recorded
    per-example outcomes on the same seeds, else a paired t over the common seeds."""
    if ref is None or row is ref:
        return None
    a, b = row.outcomes.get(column, {}), ref.outcomes.get(column, {})
    seeds = sorted(set(a) & set(b))
    if seeds and seeds == sorted(row.by_seed.get(column, {})) and all(len(a[s]) == len(b[s]) for s in seeds):
        return stats.paired_outcomes([a[s] for s in seeds], [b[s] for s in seeds])
    return stats.paired_seeds(row.by_seed.get(column, {}), ref.by_seed.get(column, {}))


def _fewer_seeds(row: Row, column) -> str:
    k = len(row.cells.get(column, []))
    return f" ({k} seeds)" if 0 < k < row.seeds else ""


def _budget(row: Row) -> str:
    return budget(row.params, None)


def render_markdown(table: Table) -> str:
    out = [f"# {table.dataset} ({table.track})", "", GENERATED, ""]
    for s in table.sections:
        main, ref = headline(s), reference(s)
        about = main.label if main else "Clean"
        head = ["Defense", "Clean", *(c.label for c in s.columns), f"95 % CI ({about})",
                *([f"vs {ref.label} ({about})"] if ref else []), "Budget", "Train (s)", "Eval (s)", "Seeds",
                "Flags", "Reported"]
        out += [f"## {s.profile} profile", "", md_row(head),
                "| --- | " + "---: | " * (len(head) - 2) + "--- |"]
        for row in s.rows:
            robust = ["n/c" if c in row.not_certifiable else "failed" if c.attack in row.failed and not row.cells.get(c)
                      else fmt(row.cells.get(c, [])) + _fewer_seeds(row, c) + (MARK if c in row.flagged else "")
                      + (MASKED if c in row.masking else "") for c in s.columns]
            n_main = min(row.n) if row.n else None
            interval = ci(row.cells.get(main, []) if main else row.clean, n_main)
            paired = [stats.format_paired(compare(row, ref, main))] if ref else []
            out.append(md_row([row.label, fmt(row.clean), *robust, interval, *paired, _budget(row),
                               f"{row.train_s:.1f}", f"{row.eval_s:.1f}", str(row.seeds), _flags(row),
                               _reported(row, percent=True)]))
        n = sorted({k for row in s.rows for k in row.n})
        out += ["", f"n = {' / '.join(map(str, n))} test examples; accuracy in %, mean ± sample std over seeds "
                    "where there are several; robust columns are `attack @ eps`; `(verified)` columns are "
                    "certified lower bounds (n/c: the certifier cannot handle the model); Reported = published "
                    "numbers, not ours.", "",
                stats_footer(ref.label if ref else None,
                             "McNemar over the examples where per-example outcomes are recorded, else paired t "
                             "over the common seeds"), "", provenance(s.records)]
        if any(_fewer_seeds(row, c) for row in s.rows for c in s.columns):
            out += ["", "(k seeds): a cell with fewer seeds than its row, whose other seeds failed (Failed cells): "
                        "its mean is over those k seeds only."]
        if len({_budget(row) for row in s.rows}) > 1:  # e.g. mnist-5k: lirpa's batch floor vs standard's epochs
            out += ["", "Budgets differ between rows (Budget, Train (s)): part of a gap between such rows is a "
                        "budget effect, not the method's."]
        clipped = sum((r.get("threat_model") or {}).get("violations") or 0 for r in s.records)
        if clipped:
            out += ["", f"{MARK} An attack returned perturbations outside the threat model ({clipped} examples "
                        "in this profile); the framework clipped them back into the eps-ball and data bounds "
                        "before scoring."]
        if any(row.masking for row in s.rows):
            out += ["", f"{MASKED} The record carries gradient-masking flags (Flags column; README, \"Gradient-masking "
                        "flags\"): the number may overestimate robustness."]
        if s.curve_attacks:
            out += ["", f"![robustness curve]({table.dataset}-{s.profile}.png)"]
        out.append("")
    return "\n".join(out)


def render_csv(table: Table) -> str:
    columns = sorted({c for s in table.sections for c in s.columns}, key=Column.order)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["profile", "defense", "params", "seeds", "clean_acc_mean", "clean_acc_std",
                     *(f"{c.key}_{x}" for c in columns for x in ("mean", "std")),
                     "headline", "ci_low", "ci_high", "ci_method", "reference", "vs_reference_diff",
                     "vs_reference_low", "vs_reference_high", "vs_reference_p", "vs_reference_test", "budget",
                     "train_s", "eval_s", "n", "reported", "clipped", "masking_flags"])
    for s in table.sections:
        main, ref = headline(s), reference(s)
        for row in s.rows:
            robust = [v for c in columns for v in _frac(row.cells.get(c, []))]
            interval = stats.interval(row.cells.get(main, []) if main else row.clean, min(row.n) if row.n else None)
            paired = compare(row, ref, main)
            summary = [main.key if main else "clean_acc",
                       *([f"{interval['low']:.6f}", f"{interval['high']:.6f}", interval["method"]] if interval
                         else ["", "", ""]),
                       ref.label if ref else "",
                       *([f"{paired[k]:.6f}" for k in ("diff", "low", "high", "p")] + [paired["test"]] if paired
                         else [""] * 5), _budget(row)]
            writer.writerow([s.profile, row.defense, canon(row.params), row.seeds, *_frac(row.clean), *robust,
                             *summary,
                             f"{row.train_s:.6f}", f"{row.eval_s:.6f}", ";".join(map(str, row.n)),
                             _reported(row, percent=False),
                             ";".join(c.key for c in sorted(row.flagged, key=Column.order)),
                             ";".join(f"{c.key}:{'+'.join(sorted(row.masking[c]))}"
                                      for c in sorted(row.masking, key=Column.order))])
    return buf.getvalue()


def plot_curves(table: Table, section: Section, path: Path) -> None:
    """One PNG, one subplot per curve attack: robust accuracy (%) vs eps, one line per defense row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only writing needs matplotlib
    from matplotlib.figure import Figure

    attacks = section.curve_attacks
    # One colour and marker per defense in every figure of the table, whichever rows a section has.
    labels = sorted({row.label for s in table.sections for row in s.rows})
    style = {label: {"color": f"C{i % 10}", "marker": "osD^v<>ph*"[i % 10]} for i, label in enumerate(labels)}
    fig = Figure(figsize=(6.4 * len(attacks), 4.8))
    FigureCanvasAgg(fig)
    for ax, attack in zip(fig.subplots(1, len(attacks), squeeze=False)[0], attacks):
        for row in section.rows:
            points = row.curves.get(attack)
            if not points:
                continue
            eps = sorted(points)
            means = [100 * statistics.fmean(points[e]) for e in eps]
            if any(len(points[e]) > 1 for e in eps):
                stds = [100 * statistics.stdev(points[e]) if len(points[e]) > 1 else 0.0 for e in eps]
                ax.errorbar(eps, means, yerr=stds, capsize=3, label=f"{row.label} ({row.seeds} seeds)",
                            **style[row.label])
            else:
                ax.plot(eps, means, label=f"{row.label} (1 seed)", **style[row.label])
        n = "/".join(map(str, sorted({k for row in section.rows for k in row.n})))
        ax.set_title(f"{table.dataset} ({section.profile}, n = {n}): robust accuracy vs eps ({attack})", fontsize=9)
        ax.set_xlabel("eps")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


