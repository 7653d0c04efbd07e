"""Calibrate the MiniLM sentence-similarity thresholds of the text attacks' constraints, on Rotten Tomatoes
*training* snippets only (never validation or test: the attacked texts are test texts).

TextAttack's thresholds are for the Universal Sentence Encoder, which cannot be loaded here; all-MiniLM-L6-v2
has its own scale, so each threshold is set from what it gives on rewrites that the recipe itself would make
and that meet every other constraint. Per snippet (``--n`` of them, the training split's first), ceil(10 %)
of its substitutable words (no stopwords; positions in a seeded random order) are rewritten four ways:

- ``synonym``: each by its first WordNet synonym that passes the word-level rules (PWWS / BERT-Attack moves);
- ``neighbour``: each by its nearest GloVe neighbour (cosine >= 0.5) that passes them (TextFooler's move),
  compared on 15-word windows as TextFooler's constraint is;
- ``bug``: each by a character bug (middle letter deleted; TextBugger's move);
- ``random`` (the reference for meaning lost): each by a random frequent GloVe word (ranks 1,000-20,000).

Rule: a recipe's threshold is the one that best tells its legitimate rewrites from random ones (Youden's J:
the t in 0.00, 0.01, ..., 1.00 that maximises P(legit >= t) - P(random >= t); random rewrites compared the
same way, on windows for TextFooler). The floor for every attack is permissive by design: the lowest 5th
percentile of the legitimate rewrites' similarity (rounded down to 0.01), so 95 % of each recipe's own moves
clear it. The command prints both, with the share of legitimate rewrites kept and of random ones rejected.
The plugins' defaults hold the values this printed (see their docstrings):

    OMP_NUM_THREADS=1 python -m bench.tracks.text_robustness.calibrate --n 400

Run on 2026-12-02 (400 snippets, seed 0; ~2 min on one CPU thread):
    rewrite      p5  median  threshold  legit kept  random rejected
    synonym   0.730   0.910       0.84         80%             74%
    neighbour 0.621   0.890       0.80         75%             82%   (15-word windows)
    bug       0.607   0.867       0.84         58%             74%
    random    0.485   0.779   floor 0.60: rejects 14 % of random rewrites
So TextFooler uses 0.80 on 15-word windows and TextBugger 0.84 on the whole text (their recipes have a USE
constraint); PWWS and BERT-Attack get the floor, 0.60 (TextAttack's PWWS has no sentence constraint and its
BERT-Attack's USE >= 0.2 is below the floor); 0.84 is what a synonym recipe with a sentence constraint would use.
MiniLM similarity is insensitive to polarity ("good film" -> "bad film" keeps 0.88), which is why the WordNet
antonym rule exists; no similarity threshold replaces it.
"""
from __future__ import annotations

import argparse
import math
import random

from bench.tracks.text_robustness.constraints import Constraints, budget, core

QUANTILE = 0.05


def _positions(words: list[str], rng: random.Random) -> list[int]:
    from bench.tracks.text_robustness.resources import STOPWORDS

    pos = [i for i, w in enumerate(words) if core(w).isalpha() and core(w) not in STOPWORDS and len(core(w)) > 2]
    rng.shuffle(pos)
    return pos


def rewrites(words: list[str], rng: random.Random, vocab: list[str]) -> dict[str, list[str] | None]:
    """The four rewrites of one snippet (None where the snippet offers no legitimate move of that kind)."""
    from bench.tracks.text_robustness.attack import split_word, substitute
    from bench.tracks.text_robustness.resources import glove, wordnet_synonyms

    rules, rules_tf = Constraints(), Constraints(min_word_cos=0.5)
    k = budget(len(words))
    out: dict[str, list[str] | None] = {}
    positions = _positions(words, rng)
    for kind in ("synonym", "neighbour", "bug", "random"):
        current, done = list(words), 0
        for i in positions:
            if done == k:
                break
            c = split_word(words[i])
            if c is None:
                continue
            w = c[0].lower()
            if kind == "synonym":
                options = [s for s in wordnet_synonyms(w) if rules.word_reason(w, s) is None]
            elif kind == "neighbour":
                options = [n for n, _ in glove().neighbours(w, 20, 0.5) if rules_tf.word_reason(w, n) is None]
            elif kind == "bug":
                options = [w[:len(w) // 2] + w[len(w) // 2 + 1:]]
            else:
                options = [rng.choice(vocab)]
            if options:
                current, done = substitute(current, i, options[0]), done + 1
        out[kind] = current if done else None
    return out


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.floor(q * (len(s) - 1))))]


def youden(legit: list[float], random_: list[float]) -> float:
    """The threshold (a multiple of 0.01) maximising P(legit >= t) - P(random >= t); the lowest such t."""
    def j(t: float) -> float:
        return sum(s >= t for s in legit) / len(legit) - sum(s >= t for s in random_) / len(random_)

    return max((round(k / 100, 2) for k in range(101)), key=lambda t: (j(t), -t))


def main(argv: list[str] | None = None) -> dict:
    from bench.registry import Registry
    from bench.tracks.text_robustness.resources import STOPWORDS, glove

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="training snippets")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cls = Registry().load("dataset", "rotten-tomatoes")
    data = cls(cls.Params(n_train=args.n, n_val=1, n_test=1)).load()
    texts = list(data.train_x)[:args.n]
    rng = random.Random(args.seed)
    vocab = [w for w in glove().words[1000:20000] if w.isalpha() and w not in STOPWORDS]
    whole, window = Constraints(), Constraints(window=15)
    sims: dict[str, list[float]] = {k: [] for k in ("synonym", "neighbour", "bug", "random", "random-window")}
    for text in texts:
        words = text.split()
        made = rewrites(words, rng, vocab)
        for kind, rewritten in made.items():
            if rewritten is None:
                continue
            rules = window if kind == "neighbour" else whole
            sims[kind].append(rules.similarities(words, [rewritten])[0])
            if kind == "random":
                sims["random-window"].append(window.similarities(words, [rewritten])[0])
    reference = {"synonym": "random", "neighbour": "random-window", "bug": "random"}
    thresholds = {kind: youden(sims[kind], sims[reference[kind]]) for kind in reference}
    floor = min(math.floor(100 * quantile(sims[kind], QUANTILE)) / 100 for kind in reference)
    print(f"{len(texts)} Rotten Tomatoes training snippets; ceil(10 %) of the words rewritten; MiniLM cosine")
    print(f"{'rewrite':<10} {'n':>4} {'p5':>6} {'median':>7}  threshold  legit kept  random rejected")
    for kind, t in thresholds.items():
        ref = sims[reference[kind]]
        kept = sum(s >= t for s in sims[kind]) / len(sims[kind])
        rejected = sum(s < t for s in ref) / len(ref)
        print(f"{kind:<10} {len(sims[kind]):>4} {quantile(sims[kind], QUANTILE):6.3f} {quantile(sims[kind], 0.5):7.3f}"
              f"  {t:9.2f}  {kept:10.0%}  {rejected:14.0%}")
    print(f"random     {len(sims['random']):>4} {quantile(sims['random'], QUANTILE):6.3f} "
          f"{quantile(sims['random'], 0.5):7.3f}   (whole text; 15-word window: median "
          f"{quantile(sims['random-window'], 0.5):.3f})")
    rejected = sum(s < floor for s in sims["random"]) / len(sims["random"])
    print(f"floor (every attack): {floor:.2f}; rejects {rejected:.0%} of random rewrites")
    return {"thresholds": thresholds, "floor": floor}


if __name__ == "__main__":
    main()
