"""Automatic label-word selection for MVP's prompts, on the training split only (LM-BFF, Gao et al. 2021).

    python -m bench.tracks.text_robustness.label_words --dataset rotten-tomatoes [--n-train 2000] [--out FILE]

Written from the paper's description: with the templates fixed, L(x, v) = mean over templates of
log p(v at [MASK] | template(x)) (MVP's ensemble: the mean of the logits ranks classes the same way);
1. candidates of class c: the top ``k`` eligible words by sum over class-c training texts of L(x, v);
2. one word per class, distinct: the assignment with the highest zero-shot training accuracy (argmax over
   classes of L(x, w_c)), among those that predict every class for at least ``min_share`` of the texts
   (default 0.4 / #classes: 20 % of the texts for two classes, 8 % for five). Exhaustive over the candidates'
   product where it is small (two classes: 100 x 100); beyond that (BBC News' five classes: 100^5) by
   coordinate ascent, which replaces one class's word at a time by its best candidate given the others, from
   the top candidates and from ``restarts`` random starts (seeded): a local search, named as such in the record;
3. the choice between that automatic assignment and the manual label words (``MANUAL``, the class names) is
   made on the same training figures: the manual words are kept when they pass ``min_share`` and are at least
   as accurate. This step is ours, not LM-BFF's (which reports the two side by side).
Eligible words are whole-word alphabetic vocabulary entries (no word pieces, digits or punctuation), as the
classifier's ``single_token`` requires. Only ``Splits.train_x`` / ``train_y`` reach the scoring; the
validation and test splits are never read here. The result (words, training figures, candidates) goes to
``label_words_<dataset>.json`` next to this module; ``MVP_VERBALIZERS`` holds the chosen words.

``--diagnose`` adds, for the current defaults, each template's training accuracy, class shares, the label
words' mean log-probability per class and their rank in the mean [MASK] distribution.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
from pathlib import Path

import torch

RESULT_DIR = Path(__file__).parent
# The manual label words (the class names) the automatic choice is compared with.
MANUAL = {"rotten-tomatoes": ("negative", "positive"),
          "bbc-news": ("technology", "business", "politics", "sport", "entertainment")}


def result_file(dataset: str) -> Path:
    return RESULT_DIR / f"label_words_{dataset}.json"


# ---------------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def mask_log_probs(model, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """(N, T, V) float16 log-probabilities of the vocabulary at each template's [MASK], for a
    ``PromptClassifier`` (its templates, placement and truncation: exactly the sequences MVP scores)."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        batch = model.prepare(chunk)  # every template per text, consecutive
        hidden = model.mlm.base_model(input_ids=batch.ids, attention_mask=batch.mask).last_hidden_state
        rows = torch.arange(len(batch.ids), device=batch.ids.device)
        vocab = model.head(hidden[rows, batch.mask_pos]).float().log_softmax(-1)
        out.append(vocab.view(len(chunk), batch.group, -1).half().cpu())
    return torch.cat(out)


def eligible_words(tokenizer) -> torch.Tensor:
    """(V,) bool: whole-word alphabetic tokens of at least two letters, not special tokens."""
    special = set(tokenizer.all_special_tokens)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return torch.tensor([t not in special and t.isascii() and t.isalpha() and len(t) > 1 for t in tokens])


# ---------------------------------------------------------------------------------------------- selection
def candidates(scores: torch.Tensor, labels: torch.Tensor, eligible: torch.Tensor, k: int) -> list[list[int]]:
    """Per class, the top-``k`` eligible word ids by summed score over that class's texts. scores: (N, V)."""
    out = []
    for c in range(int(labels.max()) + 1):
        total = scores[labels == c].float().sum(0)
        total[~eligible] = -float("inf")
        out.append(total.topk(k).indices.tolist())
    return out


def assignment_figures(scores: torch.Tensor, labels: torch.Tensor, words: tuple[int, ...]) -> dict:
    preds = scores[:, list(words)].float().argmax(1)
    return {"acc": float((preds == labels).float().mean()),
            "class_share": [float((preds == c).float().mean()) for c in range(len(words))]}


def default_min_share(n_classes: int) -> float:
    return 0.4 / n_classes


def _rank_key(fig: dict, min_share: float) -> tuple:
    return (min(fig["class_share"]) >= min_share, fig["acc"], min(fig["class_share"]))


def coordinate_ascent(scores: torch.Tensor, labels: torch.Tensor, cands: list[list[int]], min_share: float,
                      top: int = 10, restarts: int = 20, seed: int = 0) -> list[dict]:
    """Local optima of the assignment (one distinct word per class), feasible ones first, by training accuracy:
    from the top candidates and from ``restarts`` random starts, each class's word in turn is replaced by its
    best candidate given the others, until a whole sweep changes nothing."""
    g = torch.Generator().manual_seed(seed)
    starts = [[c[0] for c in cands]] + [[c[int(torch.randint(len(c), (1,), generator=g))] for c in cands]
                                        for _ in range(restarts)]
    found: dict[tuple, dict] = {}
    for words in starts:
        if len(set(words)) < len(words):
            continue
        best = assignment_figures(scores, labels, tuple(words))
        changed = True
        while changed:
            changed = False
            for c, options in enumerate(cands):
                for w in options:
                    if w in words:
                        continue
                    trial = words[:c] + [w] + words[c + 1:]
                    fig = assignment_figures(scores, labels, tuple(trial))
                    if _rank_key(fig, min_share) > _rank_key(best, min_share):
                        words, best, changed = trial, fig, True
        if min(best["class_share"]) >= min_share:
            found[tuple(words)] = {"word_ids": list(words), **best}
    ranked = sorted(found.values(), key=lambda r: (-r["acc"], r["word_ids"]))
    return ranked[:top]


def best_assignments(scores: torch.Tensor, labels: torch.Tensor, cands: list[list[int]], min_share: float,
                     top: int = 10, max_assignments: int = 2_000_000) -> list[dict]:
    """The ``top`` assignments (one distinct word per class) by training accuracy, among those whose every
    class share is >= ``min_share``; exhaustive over the candidates' product up to ``max_assignments``, else
    by ``coordinate_ascent``."""
    if _assignments(cands) > max_assignments:
        return coordinate_ascent(scores, labels, cands, min_share, top)
    ranked = []
    for words in itertools.product(*cands):
        if len(set(words)) < len(words):
            continue
        fig = assignment_figures(scores, labels, words)
        if min(fig["class_share"]) >= min_share:
            ranked.append({"word_ids": list(words), **fig})
    ranked.sort(key=lambda r: (-r["acc"], r["word_ids"]))
    return ranked[:top]


def _assignments(cands: list[list[int]]) -> int:
    return math.prod(len(c) for c in cands)


def search_name(cands: list[list[int]], max_assignments: int = 2_000_000) -> str:
    return "exhaustive" if _assignments(cands) <= max_assignments else "coordinate ascent (20 random restarts)"


def select(scores: torch.Tensor, labels: torch.Tensor, eligible: torch.Tensor, k: int = 100,
           min_share: float | None = None, top: int = 10) -> dict:
    """LM-BFF's two steps on a (N, V) score matrix (mean over templates of the [MASK] log-probabilities)."""
    min_share = default_min_share(int(labels.max()) + 1) if min_share is None else min_share
    cands = candidates(scores, labels, eligible, k)
    ranked = best_assignments(scores, labels, cands, min_share, top)
    if not ranked:
        raise ValueError(f"no assignment predicts every class for >= {min_share:.0%} of the training texts")
    return {"candidates": cands, "ranked": ranked, "best": ranked[0], "search": search_name(cands),
            "min_share": min_share}


def choose(automatic: dict, manual: dict, min_share: float) -> str:
    """'manual' when the manual words pass ``min_share`` and are at least as accurate on the training texts."""
    ok = min(manual["class_share"]) >= min_share and manual["acc"] >= automatic["acc"]
    return "manual" if ok else "automatic"


# ---------------------------------------------------------------------------------------------- data
def training_split(dataset: str, n_train: int | None):
    """(texts, labels) of the dataset's *training* split (class-balanced prefix of ``n_train``), nothing else."""
    from bench.tracks.text_robustness.bbc_news import BBCNews
    from bench.tracks.text_robustness.rotten_tomatoes import RottenTomatoes

    cls = {"rotten-tomatoes": RottenTomatoes, "bbc-news": BBCNews}[dataset]
    splits = cls(cls.Params(n_train=n_train)).load()
    return list(splits.train_x), splits.train_y.clone()


def text_digest(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def diagnose(log_probs: torch.Tensor, labels: torch.Tensor, label_ids: list[int], templates, tokenizer) -> dict:
    """Why the current label words fail: per template, accuracy, class shares, the label words' mean
    log-probability over each class's texts and their rank in the mean [MASK] distribution."""
    out = []
    for j, template in enumerate([*templates, "mean of the templates"]):
        lp = log_probs[:, j].float() if j < len(templates) else log_probs.float().mean(1)
        fig = assignment_figures(lp, labels, tuple(label_ids))
        mean_lp = [[round(float(lp[labels == c, w].mean()), 3) for w in label_ids]
                   for c in range(int(labels.max()) + 1)]
        mean_dist = lp.mean(0)
        rank = [int((mean_dist > mean_dist[w]).sum()) + 1 for w in label_ids]
        top = tokenizer.convert_ids_to_tokens(mean_dist.topk(10).indices.tolist())
        out.append({"template": template, "acc": round(fig["acc"], 4),
                    "class_share": [round(s, 4) for s in fig["class_share"]],
                    "label_word_mean_log_prob_by_class": mean_lp, "label_word_rank": rank, "top_words": top})
    return {"per_template": out}


def run(dataset: str, n_train: int | None, k: int, min_share: float, batch_size: int, do_diagnose: bool,
        loaded=None) -> dict:
    from bench.tracks.text_robustness.backbone import DEFAULT_BACKBONE, load_mlm
    from bench.tracks.text_robustness.models import MVP_TEMPLATES, MVP_VERBALIZERS, PromptClassifier

    texts, labels = training_split(dataset, n_train)
    mlm, tok = loaded if loaded is not None else load_mlm(DEFAULT_BACKBONE)
    templates = MVP_TEMPLATES[dataset]
    model = PromptClassifier(None, templates, MVP_VERBALIZERS[dataset], loaded=(mlm, tok))
    log_probs = mask_log_probs(model, texts, batch_size)
    scores = log_probs.float().mean(1)
    result = select(scores, labels, eligible_words(tok), k, min_share)
    min_share = result["min_share"]
    words = lambda ids: tok.convert_ids_to_tokens(ids)  # noqa: E731
    manual_ids = tok.convert_tokens_to_ids(list(MANUAL[dataset]))
    if tok.unk_token_id in manual_ids:
        raise ValueError(f"a manual label word of {dataset} is not one token: {MANUAL[dataset]}")
    manual = assignment_figures(scores, labels, tuple(manual_ids))
    chosen = choose(result["best"], manual, min_share)
    best = {"word_ids": manual_ids, **manual} if chosen == "manual" else result["best"]
    report = {
        "dataset": dataset, "split": "train", "n_train": len(texts), "train_texts_sha256": text_digest(texts),
        "templates": list(templates), "k": k, "min_share": round(min_share, 4), "search": result["search"],
        "chosen": chosen,
        "label_words": words(best["word_ids"]),
        "train_acc": round(best["acc"], 4),
        "train_class_share": [round(s, 4) for s in best["class_share"]],
        "automatic": {"label_words": words(result["best"]["word_ids"]), "train_acc": round(result["best"]["acc"], 4),
                      "train_class_share": [round(s, 4) for s in result["best"]["class_share"]]},
        "manual": {"label_words": list(MANUAL[dataset]), "train_acc": round(manual["acc"], 4),
                   "train_class_share": [round(s, 4) for s in manual["class_share"]]},
        "ranked": [{"words": words(r["word_ids"]), "acc": round(r["acc"], 4),
                    "class_share": [round(s, 4) for s in r["class_share"]]} for r in result["ranked"]],
        "candidates_top20": [words(c[:20]) for c in result["candidates"]],
    }
    previous = [w for words_of_class in MVP_VERBALIZERS[dataset] for w in words_of_class[:1]]
    prev_ids = [model.label_ids[c, 0].item() for c in range(model.label_ids.shape[0])]
    prev = assignment_figures(log_probs.float().mean(1), labels, tuple(prev_ids))
    report["previous"] = {"label_words": previous, "train_acc": round(prev["acc"], 4),
                          "train_class_share": [round(s, 4) for s in prev["class_share"]]}
    if do_diagnose:
        report["diagnosis"] = diagnose(log_probs, labels, prev_ids, templates, tok)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracks.text_robustness.label_words",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="rotten-tomatoes", choices=("rotten-tomatoes", "bbc-news"))
    parser.add_argument("--n-train", type=int, default=2000, help="class-balanced training texts (0: all)")
    parser.add_argument("--k", type=int, default=100, help="candidate words per class")
    parser.add_argument("--min-share", type=float, default=None,
                        help="least share of texts per predicted class (default: 0.4 / #classes)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--diagnose", action="store_true")
    parser.add_argument("--out", default=None, help=f"default: {result_file('DATASET').name} next to this module")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the suite's CPU budget (2 shared cores)
    report = run(args.dataset, args.n_train or None, args.k, args.min_share, args.batch_size, args.diagnose)
    out = Path(args.out) if args.out else result_file(args.dataset)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("label_words", "train_acc", "train_class_share", "previous")}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
