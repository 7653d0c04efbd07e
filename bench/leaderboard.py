"""Leaderboard tables as a pure function of result records.

Layout: ``out_dir/<track>/<dataset>.md`` and ``.csv``, plus ``<dataset>-<profile>.png`` robustness curves.
Only records with status "ok" count. This module imports no plugins; the caller passes in
  headline: {dataset: {norm: (eps, ...)}}  the eps that get a column (dataset or norm absent: every eps seen)
  reported: {defense: {dataset: {column: (value, source)}}}  paper numbers, fractions in [0, 1] like ours,
            shown in their own column and never mixed into ours.
Identical records give byte-identical md and csv: no generation timestamps, fixed float formats, all sorted.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UsageError
from bench.plugins import IMAGE_TRACK
from bench.records import iter_records

PROFILE_ORDER = ("full", "quick", "smoke")
WORST_CASE = ("worst-case", "worst-case-l2")  # their columns come right after Clean: the headline number
CURVE_MIN_EPS = 3  # an attack with robust_acc at this many eps is a curve (sweep) attack
MARK = "†"
TABLE_SUFFIXES = (".md", ".csv")


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


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _labels(variants: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(name, canonical params) -> name, or ``name [k=v, ...]`` with only the differing params when one
    name ran with several parameter sets."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for name, canon in sorted(variants):
        by_name[name].append(canon)
    labels = {}
    for name, canons in by_name.items():
        params = [json.loads(c) for c in canons]
        keys = sorted({k for p in params for k in p})
        differing = [k for k in keys if len({_canon(p.get(k)) for p in params}) > 1]
        for canon, p in zip(canons, params):
            text = ", ".join(f"{k}={v if isinstance(v, str) else _canon(v)}" for k in differing
                             for v in [p.get(k)])
            labels[(name, canon)] = name if len(canons) == 1 else f"{name} [{text}]"
    return labels


def _variant(part: dict) -> tuple[str, str]:
    return part["name"], _canon(part.get("params") or {})


def _is_headline(headline: dict | None, dataset: str, norm: str | None, eps: float) -> bool:
    wanted = (headline or {}).get(dataset, {}).get(norm)
    return wanted is None or any(abs(eps - w) <= 1e-9 * max(1.0, abs(w)) for w in wanted)


def _dedupe(records: list[dict]) -> list[dict]:
    """One record per (defense, attack, seed) variant; the newest wins (e.g. a rerun with new dataset params)."""
    best: dict[tuple, dict] = {}
    for r in records:
        k = (_variant(r["defense"]), _variant(r["attack"]), r["seed"])
        if k not in best or (r.get("created", ""), r["key"]) > (best[k].get("created", ""), best[k]["key"]):
            best[k] = r
    return [best[k] for k in sorted(best)]


def _row(label: str, records: list[dict], attack_labels: dict, dataset: str, headline, reported) -> Row:
    by_seed: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        by_seed[r["seed"]].append(r)
    clean, train, evals, n = [], [], [], set()
    cells, flagged, not_certifiable = defaultdict(list), set(), set()
    curves: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for seed in sorted(by_seed):
        recs = by_seed[seed]
        # Every record of one seed evaluates the same model: average its clean_acc, count training once.
        values = [m["value"] for r in recs for m in r["metrics"] if m["name"] == "clean_acc"]
        if values:
            clean.append(statistics.fmean(values))
        train.append(max((r.get("timings") or {}).get("train_s", 0.0) for r in recs))
        evals.append(sum((r.get("timings") or {}).get("eval_s", 0.0) for r in recs))
        for r in recs:
            attack = attack_labels[_variant(r["attack"])]
            violated = ((r.get("threat_model") or {}).get("violations") or 0) > 0
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
                    if violated:
                        flagged.add(column)
    name = records[0]["defense"]["name"]
    paper = []
    for column, (value, source) in sorted(((reported or {}).get(name) or {}).get(dataset, {}).items()):
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{name}: reported {column!r} on {dataset} is {value}; give a fraction in [0, 1]")
        paper.append((column, value, source))
    return Row(label, name, records[0]["defense"].get("params") or {}, len(by_seed), clean, dict(cells),
               flagged, {a: dict(pts) for a, pts in curves.items()}, statistics.fmean(train),
               statistics.fmean(evals), sorted(n), paper, not_certifiable)


def _row_order(columns: list[Column]):
    worst = next((c for c in columns if c.name in WORST_CASE), None)

    def key(row: Row) -> tuple:
        if worst is not None and row.cells.get(worst):
            return (0, -statistics.fmean(row.cells[worst]), row.label)
        return (1, 0.0, row.label)
    return key


def _section(dataset: str, profile: str, records: list[dict], headline, reported) -> Section:
    records = _dedupe(records)
    defense_labels = _labels({_variant(r["defense"]) for r in records})
    attack_labels = _labels({_variant(r["attack"]) for r in records})
    by_row: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        by_row[_variant(r["defense"])].append(r)
    rows = [_row(defense_labels[v], recs, attack_labels, dataset, headline, reported)
            for v, recs in sorted(by_row.items())]
    columns = sorted({c for row in rows for c in (*row.cells, *row.not_certifiable)}, key=Column.order)
    rows.sort(key=_row_order(columns))
    eps_seen: dict[str, set[float]] = defaultdict(set)
    for row in rows:
        for attack, points in row.curves.items():
            eps_seen[attack].update(points)
    curve_attacks = sorted(a for a, eps in eps_seen.items() if len(eps) >= CURVE_MIN_EPS)
    return Section(profile, columns, rows, records, curve_attacks)


def build_tables(records: list[dict], *, headline: dict | None = None,
                 reported: dict | None = None) -> dict[tuple[str, str], Table]:
    """{(track, dataset): Table}, one section per profile present (full, quick, smoke, then others)."""
    groups: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("status") in ("ok", "not_certifiable"):
            groups[(r["track"], r["dataset"]["name"])][r["profile"]].append(r)
    tables = {}
    for (track, dataset), profiles in sorted(groups.items()):
        order = sorted(profiles, key=lambda p: (PROFILE_ORDER.index(p) if p in PROFILE_ORDER else 99, p))
        tables[(track, dataset)] = Table(track, dataset, [_section(dataset, p, profiles[p], headline, reported)
                                                          for p in order])
    return tables


# ---- rendering -------------------------------------------------------------------------------------------

def _pct(values: list[float]) -> str:
    if not values:
        return "-"
    text = f"{100 * statistics.fmean(values):.1f}"
    return text if len(values) == 1 else f"{text} ± {100 * statistics.stdev(values):.1f}"


def _frac(values: list[float]) -> list[str]:
    """[mean, std] as fractions with 6 decimals; std empty below two seeds."""
    if not values:
        return ["", ""]
    std = f"{statistics.stdev(values):.6f}" if len(values) > 1 else ""
    return [f"{statistics.fmean(values):.6f}", std]


def _reported(row: Row, percent: bool) -> str:
    return "; ".join(f"{col}: {100 * v:.1f} ({src})" if percent else f"{col}: {v:g} ({src})"
                     for col, v, src in row.reported)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _hardware(h: dict) -> str:
    device = h.get("device", "unknown device")
    if h.get("gpu"):
        return f"{device} ({h['gpu']})"
    return f"{device} ({h.get('cpu', '?')}, {h.get('threads', '?')} threads)"


def _provenance(records: list[dict]) -> str:
    def field(label: str, values: set[str]) -> str:
        return f"{label}{'s' if len(values) > 1 else ''} {' / '.join(sorted(values))}"
    commits = {(c[:7] + ("+dirty" if c.endswith("+dirty") else "")) if c else "unknown"
               for c in (r.get("git_commit") for r in records)}
    versions = {r.get("bench_version") or "unknown" for r in records}
    days = sorted({(r.get("created") or "unknown")[:10] for r in records})
    dates = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    hardware = " / ".join(sorted({_hardware(r.get("hardware") or {}) for r in records}))
    return (f"Provenance: {len(records)} records, {field('commit', commits)}, {field('bench', versions)}, "
            f"{hardware}, {dates}")


def render_markdown(table: Table) -> str:
    out = [f"# {table.dataset} ({table.track})", "",
           "Generated from the result records by `bench leaderboard`; do not edit by hand.", ""]
    for s in table.sections:
        head = ["Defense", "Clean", *(c.label for c in s.columns), "Train (s)", "Eval (s)", "Seeds", "Reported"]
        out += [f"## {s.profile} profile", "", _md_row(head),
                "| --- | " + "---: | " * (len(head) - 2) + "--- |"]
        for row in s.rows:
            robust = ["n/c" if c in row.not_certifiable else _pct(row.cells.get(c, [])) + (MARK if c in row.flagged
                      else "") for c in s.columns]
            out.append(_md_row([row.label, _pct(row.clean), *robust, f"{row.train_s:.1f}", f"{row.eval_s:.1f}",
                                str(row.seeds), _reported(row, percent=True)]))
        n = sorted({k for row in s.rows for k in row.n})
        out += ["", f"n = {' / '.join(map(str, n))} test examples; accuracy in %, mean ± sample std over seeds "
                    "where there are several; robust columns are `attack @ eps`; `(verified)` columns are "
                    "certified lower bounds (n/c: the certifier cannot handle the model); Reported = published "
                    "numbers, not ours.", "", _provenance(s.records)]
        clipped = sum((r.get("threat_model") or {}).get("violations") or 0 for r in s.records)
        if clipped:
            out += ["", f"{MARK} An attack returned perturbations outside the threat model ({clipped} examples "
                        "in this profile); the framework clipped them back into the eps-ball and data bounds "
                        "before scoring."]
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
                     "train_s", "eval_s", "n", "reported", "clipped"])
    for s in table.sections:
        for row in s.rows:
            robust = [v for c in columns for v in _frac(row.cells.get(c, []))]
            writer.writerow([s.profile, row.defense, _canon(row.params), row.seeds, *_frac(row.clean), *robust,
                             f"{row.train_s:.6f}", f"{row.eval_s:.6f}", ";".join(map(str, row.n)),
                             _reported(row, percent=False),
                             ";".join(c.key for c in sorted(row.flagged, key=Column.order))])
    return buf.getvalue()


def plot_curves(table: Table, section: Section, path: Path) -> None:
    """One PNG, one subplot per curve attack: robust accuracy (%) vs eps, one line per defense row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only writing needs matplotlib
    from matplotlib.figure import Figure

    attacks = section.curve_attacks
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
                ax.errorbar(eps, means, yerr=stds, marker="o", capsize=3, label=row.label)
            else:
                ax.plot(eps, means, marker="o", label=row.label)
        ax.set_title(f"{table.dataset} ({section.profile}): robust accuracy vs eps ({attack})", fontsize=9)
        ax.set_xlabel("eps")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


# ---- files -----------------------------------------------------------------------------------------------

def _expected(records_dir: Path, headline, reported) -> tuple[dict, dict[str, str]]:
    """The image track's tables (for its curves) and every track's files: {"<track>/<file>": text}."""
    from bench.tables import tables_for

    by_track: dict[str, list[dict]] = defaultdict(list)
    for r in iter_records(records_dir):
        by_track[r["track"]].append(r)
    tables = build_tables(by_track.pop(IMAGE_TRACK, []), headline=headline, reported=reported)
    texts = {}
    for t in tables.values():
        texts[f"{t.track}/{t.dataset}.md"] = render_markdown(t)
        texts[f"{t.track}/{t.dataset}.csv"] = render_csv(t)
    for track, records in sorted(by_track.items()):
        for rel, text in tables_for(track)(records, reported).items():
            texts[f"{track}/{rel}"] = text
    return tables, texts


def _generated(out_dir: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files of ours: out_dir/<track>/*.{md,csv,png}; files directly in out_dir (a README) are left alone."""
    return sorted(p for p in out_dir.glob("*/*") if p.is_file() and p.suffix in suffixes)


def _track_figures(records_dir: Path, out_dir: Path) -> list[Path]:
    """PNGs drawn by a track's own table module (its optional ``figures`` hook, e.g. sample grids)."""
    from bench.tables import figures_for

    by_track: dict[str, list[dict]] = defaultdict(list)
    for r in iter_records(records_dir):
        by_track[r["track"]].append(r)
    return [p for track, records in sorted(by_track.items()) if (draw := figures_for(track))
            for p in draw(records, out_dir / track)]


def write_leaderboards(records_dir: Path, out_dir: Path, *, headline: dict | None = None,
                       reported: dict | None = None) -> list[Path]:
    """Write every table and curve; remove stale generated files so the folder matches the records."""
    tables, texts = _expected(records_dir, headline, reported)
    written = []
    for rel, text in texts.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    for t in tables.values():
        for s in t.sections:
            if s.curve_attacks:
                path = out_dir / t.track / f"{t.dataset}-{s.profile}.png"
                plot_curves(t, s, path)
                written.append(path)
    written += _track_figures(records_dir, out_dir)
    for stale in set(_generated(out_dir, TABLE_SUFFIXES + (".png",))) - set(written):
        stale.unlink()
    return sorted(written)


def check_leaderboards(records_dir: Path, out_dir: Path, *, headline: dict | None = None,
                       reported: dict | None = None) -> list[str]:
    """Tables (md, csv; PNG bytes vary across matplotlib versions) that are out of date, missing or extra,
    as ``"<track>/<file> (reason)"``; empty when the folder matches the records."""
    _, texts = _expected(records_dir, headline, reported)
    present = {p.relative_to(out_dir).as_posix() for p in _generated(out_dir, TABLE_SUFFIXES)}
    problems = []
    for rel in sorted(set(texts) | present):
        if rel not in present:
            problems.append(f"{rel} (missing)")
        elif rel not in texts:
            problems.append(f"{rel} (extra: no records give it)")
        elif (out_dir / rel).read_bytes() != texts[rel].encode("utf-8"):
            problems.append(f"{rel} (differs from the records)")
    return problems
