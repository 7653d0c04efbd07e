"""Automatic label-word selection for MVP's prompts, on the training split only (LM-BFF, Gao et al. 2021).

    python -m bench.tracks.text_robustness.label_words --dataset rotten-tomatoes [--n-train 2000] [--out FILE]

Written from the paper's description: with the templates fixed, L(x, v) = mean over templates of
log p(v at [MASK] | template(x)) (MVP's ensemble: the mean of the logits ranks classes the same way);
1. candidates of class c: the top ``k`` eligible words by sum over class-c training texts of L(x, v);
2. one word per class, distinct: the assignment with the highest zero-shot training accuracy (argmax over
   classes of L(x, w_c)), among those that predict every class for at least ``min_share`` of the texts.
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
from pathlib import Path

import torch

RESULT_DIR = Path(__file__).parent


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


def best_assignments(scores: torch.Tensor, labels: torch.Tensor, cands: list[list[int]], min_share: float,
                     top: int = 10, max_assignments: int = 2_000_000) -> list[dict]:
    """The ``top`` assignments (one distinct word per class) by training accuracy, among those whose every
    class share is >= ``min_share``; exhaustive over the candidates' product."""
    n_total = 1
    for c in cands:
        n_total *= len(c)
    if n_total > max_assignments:
        raise ValueError(f"{n_total} assignments: lower k")
    ranked = []
    for words in itertools.product(*cands):
        if len(set(words)) < len(words):
            continue
        fig = assignment_figures(scores, labels, words)
        if min(fig["class_share"]) >= min_share:
            ranked.append({"word_ids": list(words), **fig})
    ranked.sort(key=lambda r: (-r["acc"], r["word_ids"]))
    return ranked[:top]


def select(scores: torch.Tensor, labels: torch.Tensor, eligible: torch.Tensor, k: int = 100,
           min_share: float = 0.2, top: int = 10) -> dict:
    """LM-BFF's two steps on a (N, V) score matrix (mean over templates of the [MASK] log-probabilities)."""
    cands = candidates(scores, labels, eligible, k)
    ranked = best_assignments(scores, labels, cands, min_share, top)
    if not ranked:
        raise ValueError(f"no assignment predicts every class for >= {min_share:.0%} of the training texts")
    return {"candidates": cands, "ranked": ranked, "best": ranked[0]}


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
    result = select(log_probs.float().mean(1), labels, eligible_words(tok), k, min_share)
    words = lambda ids: tok.convert_ids_to_tokens(ids)  # noqa: E731
    report = {
        "dataset": dataset, "split": "train", "n_train": len(texts), "train_texts_sha256": text_digest(texts),
        "templates": list(templates), "k": k, "min_share": min_share,
        "label_words": words(result["best"]["word_ids"]),
        "train_acc": round(result["best"]["acc"], 4),
        "train_class_share": [round(s, 4) for s in result["best"]["class_share"]],
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
    parser.add_argument("--min-share", type=float, default=0.2, help="least share of texts per predicted class")
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
