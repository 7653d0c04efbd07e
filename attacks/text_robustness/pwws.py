"""PWWS: Probability Weighted Word Saliency (Ren et al., "Generating Natural Language Adversarial Examples
through Probability Weighted Word Saliency", ACL 2019).

For each substitutable word w_i: its saliency S_i = P(y|x) - P(y|x with w_i -> [UNK]); its best WordNet
synonym w_i* = argmax over synonyms (those that pass the constraints) of the drop in P(y), ΔP_i*. Words are
replaced greedily in decreasing order of softmax(S)_i * ΔP_i* until the prediction changes or the word budget
is spent; a replacement whose combined text breaks the constraints is skipped.
Threat model: word substitution; black-box, scores only; a per-example query budget.
Synonyms: WordNet 3.0 lemmas (single words, any part of speech; Debian wordnet-base through NLTK).
Constraints (``bench.tracks.text_robustness.constraints``; candidates are filtered before they are queried,
and the framework re-checks the final text): TextAttack's PWWS recipe (no stopword modified, each word
modified once) plus the suite's shared rules: at most ceil(10 % of the words) changed, no WordNet antonym,
WordNet part of speech kept, sentence similarity >= 0.60 over the whole text (all-MiniLM-L6-v2; the floor,
calibrated in ``calibrate.py``).
Departures: numbers and punctuation are never substituted; named-entity substitution (the paper's NE
variant) is not used; the antonym, POS and similarity rules are additions to TextAttack's recipe (WordNet
lemmas of rare senses, e.g. "best" -> "bad", otherwise pass).
"""
from __future__ import annotations

import torch

from bench.tracks.text_robustness.attack import WordAttack, split_word, substitute


class PWWS(WordAttack):
    __doc__ = __doc__
    profiles = {"smoke": {"max_queries": 300}}

    def search(self, victim, words, label, max_changes, ctx):
        from bench.tracks.text_robustness.resources import STOPWORDS, wordnet_synonyms

        proposals = {}
        for i, w in enumerate(words):
            core = split_word(w)
            if core and core[0].lower() not in STOPWORDS and (syns := wordnet_synonyms(core[0].lower())):
                proposals[i] = [substitute(words, i, s) for s in syns]
        kept = self.filter_groups(words, words, list(proposals.values()))  # one sentence-encoder batch
        options = {i: cands for i, cands in zip(proposals, kept) if cands}
        if not options:
            return words
        positions = list(options)
        p0 = victim.probs([" ".join(words)])[0, label]
        unk = victim.probs([" ".join([*words[:i], "[UNK]", *words[i + 1:]]) for i in positions])[:, label]
        saliency = torch.softmax(p0 - unk, dim=0)
        best, delta = {}, torch.zeros(len(positions))
        for k, i in enumerate(positions):
            probs = victim.probs([" ".join(c) for c in options[i]])[:, label]
            j = int(probs.argmin())
            best[i], delta[k] = options[i][j][i], p0 - probs[j]
        current, changes = list(words), 0
        for k in torch.argsort(-(saliency * delta), stable=True).tolist():
            if changes >= max_changes:
                break
            i = positions[k]
            proposal = [*current[:i], best[i], *current[i + 1:]]
            if not self.filter(words, current, [proposal]):
                continue  # each synonym passed alone; together with earlier changes the text drifted too far
            current, changes = proposal, changes + 1
            self.best = list(current)
            if int(victim.probs([" ".join(current)])[0].argmax()) != label:
                break
        return current
