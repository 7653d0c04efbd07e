"""What every track's tables share: de-duplication, labels for plugin variants, formatting, provenance, and
the generic table that a track without its own gets (one row per defense and evaluator, one column per metric).
Tables are pure functions of records: identical records give byte-identical text."""
from __future__ import annotations

import json
import statistics
from collections import defaultdict

PROFILE_ORDER = ("full", "quick", "smoke")
LABEL_KEYS = ("split", "domain", "definition_id")  # metric fields that distinguish columns of one name
RUN_STATUSES = ("ok", "not_certifiable", "failed")  # a record in one of these: its cell has been run
GENERATED = "Generated from the result records by `bench leaderboard`; do not edit by hand."


def canon(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def variant(part: dict) -> tuple[str, str]:
    """A record's defense or attack as (name, canonical params): one name may run with several params."""
    return part["name"], canon(part.get("params") or {})


def profile_key(profile: str) -> tuple:
    """Sort key: full, quick, smoke, then any other profile by name."""
    return (PROFILE_ORDER.index(profile) if profile in PROFILE_ORDER else len(PROFILE_ORDER), profile)


def dedupe(records: list[dict], statuses: tuple[str, ...] = ("ok",)) -> list[dict]:
    """One record per (defense variant, attack variant, seed) among those of the given statuses; the newest
    wins (e.g. a rerun with new dataset params)."""
    best: dict[tuple, dict] = {}
    for r in records:
        if r.get("status") not in statuses:
            continue
        k = (variant(r["defense"]), variant(r["attack"]), r["seed"])
        if k not in best or (r.get("created", ""), r["key"]) > (best[k].get("created", ""), best[k]["key"]):
            best[k] = r
    return [best[k] for k in sorted(best)]


def variant_labels(variants: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(name, canonical params) -> name, or ``name [k=v, ...]`` with only the differing params when one
    name ran with several parameter sets."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for name, params in sorted(variants):
        by_name[name].append(params)
    labels = {}
    for name, canons in by_name.items():
        params = [json.loads(c) for c in canons]
        keys = sorted({k for p in params for k in p})
        differing = [k for k in keys if len({canon(p.get(k)) for p in params}) > 1]
        for text_params, p in zip(canons, params):
            text = ", ".join(f"{k}={v if isinstance(v, str) else canon(v)}" for k in differing for v in [p.get(k)])
            labels[(name, text_params)] = name if len(canons) == 1 else f"{name} [{text}]"
    return labels


def fmt(values: list[float], percent: bool = True, digits: int = 1) -> str:
    """mean, or mean ± sample std over seeds; '-' when absent."""
    if not values:
        return "-"
    scale = 100.0 if percent else 1.0
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def seed_values(records: list[dict], metric_name: str, **labels) -> dict[int, float]:
    """{seed: value} of one metric (the first matching each record's labels, e.g. eps=0.1), one value per seed."""
    out = {}
    for r in records:
        for m in r["metrics"]:
            if m["name"] == metric_name and all(m.get(k) == v for k, v in labels.items()):
                out.setdefault(r["seed"], m["value"])
                break
    return out


def ci(values: list[float], n: int | None = None, proportion: bool = True, percent: bool = True) -> str:
    """A cell's 95 % interval text (``bench.stats.interval``): t over seeds, or Wilson over ``n`` examples."""
    from bench import stats

    return stats.format_interval(stats.interval(values, n, proportion), percent=percent)


def vs_reference(row: dict[int, float], reference: dict[int, float] | None, percent: bool = True) -> str:
    """The paired difference of a row against its reference method over their common seeds (paired t),
    ``-`` with fewer than two common seeds or for the reference row itself."""
    from bench import stats

    if reference is None or row is reference:
        return "-"
    return stats.format_paired(stats.paired_seeds(row, reference), percent=percent)


BUDGET_KEYS = (("epochs", "ep"), ("teacher_epochs", "teacher ep"), ("unlearn_epochs", "unlearn ep"),
               ("repair_epochs", "repair ep"), ("vae_epochs", "VAE ep"), ("iterations", "it"),
               ("min_train_batches", "min batches"), ("max_train_batches", "max batches"))


def budget(params: dict, train_s: float | None) -> str:
    """The training budget of a row: its epochs (or iterations, batches) as set in its params, and the mean
    train time, e.g. ``20 ep, 116 s``; a budget left to the profile's default (None) is not shown."""
    parts = [f"{params[k]} {label}" for k, label in BUDGET_KEYS if params.get(k) is not None]
    if train_s is not None:
        parts.append(f"{train_s:.0f} s")
    return ", ".join(parts) or "-"


def train_seconds(records: list[dict]) -> float | None:
    """The mean over seeds of the longest train time of each seed's records (one model per seed)."""
    per_seed: dict[int, float] = {}
    for r in records:
        t = (r.get("timings") or {}).get("train_s")
        if t is not None:
            per_seed[r["seed"]] = max(per_seed.get(r["seed"], 0.0), t)
    return statistics.fmean(per_seed.values()) if per_seed else None


def stats_footer(reference: str | None = None, test: str = "paired t over the common seeds") -> str:
    """The one sentence under every table that says what its numbers mean (the same in every track)."""
    text = ("Statistics: mean ± sample standard deviation over seeds (one seed: the value alone); Seeds = their "
            "count; 95 % CI: `t` = Student's t interval over seeds, `W` = Wilson interval over the test examples "
            "(one seed), `B` = bootstrap over examples (one seed, not a proportion); Budget = the training "
            "budget set in the row's params and its mean train time.")
    if reference:
        text += (f" vs {reference}: the row minus {reference} on the same seeds and examples ({test}), "
                 "[95 % interval] and p-value, `*` p < 0.05; `-` fewer than two common seeds.")
    return text


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _hardware(h: dict) -> str:
    device = h.get("device", "unknown device")
    if h.get("gpu"):
        return f"{device} ({h['gpu']})"
    return f"{device} ({h.get('cpu', '?')}, {h.get('threads', '?')} threads)"


def provenance(records: list[dict]) -> str:
    """One line: how many records, from which commits, bench versions, hardware and dates."""
    def field(label: str, values: set[str]) -> str:
        return f"{label}{'s' if len(values) > 1 else ''} {' / '.join(sorted(values))}"
    commits = {(c[:7] + ("+dirty" if c.endswith("+dirty") else "")) if c else "unknown"
               for c in (r.get("git_commit") for r in records)}
    versions = {r.get("bench_version") or "unknown" for r in records}
    days = sorted({(r.get("created") or "unknown")[:10] for r in records})
    dates = "?" if not days else days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    hardware = " / ".join(sorted({_hardware(r.get("hardware") or {}) for r in records}))
    return (f"Provenance: {len(records)} records, {field('commit', commits)}, {field('bench', versions)}, "
            f"{hardware}, {dates}")


def by_dataset(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """{dataset: {profile: records}}, datasets in name order and profiles in table order (each track writes one
    file per dataset, one section per profile)."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[r["dataset"]["name"]][r["profile"]].append(r)
    return {name: {p: groups[name][p] for p in sorted(groups[name], key=profile_key)} for name in sorted(groups)}


def metric_label(m: dict) -> str:
    labels = [str(m[k]) for k in LABEL_KEYS if k in m]
    return m["name"] + (f" [{', '.join(labels)}]" if labels else "")


def generic_tables(records: list[dict]) -> dict[str, str]:
    """Per dataset and profile: rows (defense, evaluator), one column per metric (name and any split/domain
    label), mean ± sample std over seeds, with the records' provenance."""
    out = {}
    for dataset, profiles in by_dataset(records).items():
        track = next(iter(profiles.values()))[0]["track"]
        lines = [f"# {dataset} ({track})", "", GENERATED, ""]
        for profile, recs in profiles.items():
            recs = dedupe(recs)
            values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            columns: list[str] = []
            for r in recs:
                for m in r["metrics"]:
                    label = metric_label(m)
                    if label not in columns:
                        columns.append(label)
                    values[(r["defense"]["name"], r["attack"]["name"])][label].append(m["value"])
            seeds: dict[tuple[str, str], set[int]] = defaultdict(set)
            for r in recs:
                seeds[(r["defense"]["name"], r["attack"]["name"])].add(r["seed"])
            lines += [f"## {profile} profile", "", md_row(["Defense", "Evaluator"] + columns + ["Seeds"]),
                      md_row(["---", "---"] + ["---:"] * (len(columns) + 1))]
            for (defense, evaluator), cells in sorted(values.items()):
                lines.append(md_row([defense, evaluator] + [fmt(cells.get(c, [])) for c in columns]
                                    + [str(len(seeds[(defense, evaluator)]))]))
            lines += ["", stats_footer(), "", provenance(recs), ""]
        out[f"{dataset}.md"] = "\n".join(lines)
    return out
