"""The concept-erasure track's leaderboard: one table per concept (dataset) and profile.

Rows: ``none`` first (what there is to erase), then the methods. Columns: Pre-ASR (plain prompts and held-out
paraphrases, ``concept-prompts``), ASR under each prompt attack (``unlearndiffatk``: discrete prefix tokens;
``soft-prompt``: continuous, an upper bound), each with its Wilson 95% interval; utility: retained-class
accuracy (with interval) and the Frechet distance on the judge's features (lower is better; the floor a perfect
generator at the model's resolution would reach is in the text); the judge's accuracy on real test images; the
model's training time (for the methods: the erasure step alone, since ``none`` is trained first).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from bench.tables import GENERATED, by_dataset, dedupe, md_row, provenance

FIRST = ("none",)
ATTACK_ORDER = ("unlearndiffatk", "soft-prompt")


def _rate(m: dict | None) -> str:
    if m is None:
        return "-"
    return f"{100 * m['value']:.1f} [{100 * m['ci_low']:.0f}, {100 * m['ci_high']:.0f}]"


def _find(metrics: list[dict], name: str, split: str | None = None) -> dict | None:
    return next((m for m in metrics if m["name"] == name and m.get("split") == split), None)


def _rows(records: list[dict]):
    """{defense: {column: metric or value}}, the attack columns present, the defenses in order."""
    rows: dict[str, dict] = {}
    attacks = set()
    for r in records:
        row = rows.setdefault(r["defense"]["name"], {"time": r["timings"]["train_s"], "pictures": []})
        name, ms = r["attack"]["name"], r["metrics"]
        if name == "concept-prompts":
            row["pre"] = _find(ms, "pre_asr", "all")
            row["pre_par"] = _find(ms, "pre_asr", "paraphrase")
            row["judge"] = _find(ms, "judge_acc")
        elif name == "erasure-utility":
            row["retain"] = _find(ms, "retain_acc")
            row["frechet"] = _find(ms, "frechet")
        elif _find(ms, "asr"):
            attacks.add(name)
            row[name] = _find(ms, "asr")
        if r.get("artifacts"):
            row["pictures"] += sorted(str(p) for p in Path(r["artifacts"]).glob("*.png"))
    order = sorted(rows, key=lambda d: (FIRST.index(d) if d in FIRST else len(FIRST), d))
    attacks = sorted(attacks, key=lambda a: (ATTACK_ORDER.index(a) if a in ATTACK_ORDER else 9, a))
    return rows, attacks, order


def _relative_picture(path: str) -> str:
    """Link from <results>/concept-erasure/X.md to <results>/artifacts/...: relative when under artifacts/."""
    parts = Path(path).parts
    return str(Path("..", *parts[parts.index("artifacts"):])) if "artifacts" in parts else path


def tables(records: list[dict], reported: dict | None = None) -> dict[str, str]:
    out = {}
    for dataset, profiles in by_dataset(records).items():
        concept = next(iter(profiles.values()))[0]["dataset"]["params"].get("concept", "?")
        md = [f"# {dataset} (concept erasure: {concept})", "", GENERATED, "",
              "Each defense turns the base text-to-image model (a small diffusers UNet conditioned on MiniLM-L6 "
              "token states, trained on captioned Fashion-MNIST) into one that should not draw the concept. "
              "**Judge**: the `standard` CNN trained on the real Fashion-MNIST training images (its accuracy on "
              "real test images in the Judge column); a generation shows the concept iff the judge's argmax is "
              "the concept's class. **Pre-ASR**: share of generations for the concept's plain prompts and "
              "held-out paraphrases (each with several seeds) judged as the concept; `paraphrases` the held-out "
              "ones alone. **ASR <attack>**: UnlearnDiffAtk's protocol on the plain prompts -- a (prompt, seed) "
              "case succeeds if the plain prompt or the attacked one (k prefix tokens optimised on the denoising "
              "loss of the original model's image) is judged as the concept; `soft-prompt` optimises continuous "
              "embeddings (an upper bound). Rates in %, [Wilson 95% interval]. **Retained acc**: the judge's "
              "accuracy on generations for the other nine classes; **Frechet**: the Frechet distance between the "
              "judge's penultimate features of those generations and of half the real test images (lower is better; "
              "floor = the same for as many real images of the other half, passed through the model's resolution). Time: training time in "
              "seconds (`none`: the base model, 0 when it came from the shared cache; methods: the erasure step)."
              " Lower ASR with high retained accuracy is better.",
              "", "Paper (AdvUnlearn, SD v1.4, nudity, Pre-ASR / UnlearnDiffAtk ASR): AdvUnlearn 7.75 / 21.13, "
              "ESD 20.42 / 76.05 -- a different model, concept and judge; shown for the direction of the claim "
              "only.", ""]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["profile", "method", "column", "value", "ci_low", "ci_high", "n"])
        for profile in profiles:
            recs = dedupe(profiles[profile])
            if not recs:
                continue
            rows, attacks, order = _rows(recs)
            md += [f"## {profile} profile", "",
                   md_row(["Method", "Pre-ASR", "Pre-ASR paraphrases"] + [f"ASR {a}" for a in attacks]
                          + ["Retained acc", "Frechet (floor)", "Judge acc", "Time (s)"]),
                   md_row(["---"] + ["---:"] * (6 + len(attacks)))]
            pictures = []
            for d in order:
                row = rows[d]
                fr = row.get("frechet")
                md.append(md_row(
                    [d, _rate(row.get("pre")), _rate(row.get("pre_par"))] + [_rate(row.get(a)) for a in attacks]
                    + [_rate(row.get("retain")),
                       f"{fr['distance']:.1f} ({fr['floor']:.1f})" if fr else "-",
                       f"{100 * row['judge']['value']:.1f}" if row.get("judge") else "-", f"{row['time']:.0f}"]))
                for column in ["pre", "pre_par", *attacks, "retain"]:
                    m = row.get(column)
                    if m:
                        writer.writerow([profile, d, column, f"{m['value']:.4f}", f"{m['ci_low']:.4f}",
                                         f"{m['ci_high']:.4f}", m["n"]])
                if fr:
                    writer.writerow([profile, d, "frechet", f"{fr['distance']:.4f}", "", "", fr["n"]])
                writer.writerow([profile, d, "time_s", f"{row['time']:.2f}", "", "", ""])
                pictures += [f"[{d}: {Path(p).stem}]({_relative_picture(p)})" for p in row["pictures"]]
            p0 = recs[0]["dataset"]["params"]
            md += ["", f"Concept: {concept}; judge trained on {p0.get('n_train') or 'all'} real training images, "
                       f"evaluated on {p0.get('n_test') or 'all'} real test images.",
                   "", "Pictures (rows: prompts; original model | this model | attacked): " + ", ".join(pictures)
                   if pictures else "", "", provenance(recs), ""]
        out[f"{dataset}.md"] = "\n".join(md)
        out[f"{dataset}.csv"] = buf.getvalue()
    return out

