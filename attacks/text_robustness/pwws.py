"""PWWS: Probability Weighted Word Saliency (Ren et al., "Generating Natural Language Adversarial Examples
through Probability Weighted Word Saliency", ACL 2019).

For each substitutable word w_i: its saliency S_i = P(y|x) - P(y|x with w_i -> [UNK]); its best WordNet
synonym w_i* = argmax over synonyms of the drop in P(y), ΔP_i*. Words are replaced greedily in decreasing
order of softmax(S)_i * ΔP_i* until the prediction changes or the word budget is spent.
Threat model: word substitution, at most 10% of the words (the framework checks every output, see
``bench.tracks.text_robustness.constraints``); black-box, scores only; a per-example query budget.
Synonyms: WordNet 3.0 lemmas (single words, any part of speech; Debian wordnet-base through NLTK).
Stopwords are never substituted (TextAttack's PWWS recipe).
Departures: numbers and punctuation are never substituted; named-entity substitution (the paper's NE
variant) is not used.
"""
from __future__ import annotations

import torch

from bench.tracks.text_robustness.attack import WordAttack, split_word, substitute


class PWWS(WordAttack):
    __doc__ = __doc__
    profiles = {"smoke": {"max_queries": 300}}

    def search(self, victim, words, label, max_changes, ctx):
        from bench.tracks.text_robustness.resources import STOPWORDS, wordnet_synonyms

        options = {}
        for i, w in enumerate(words):
            core = split_word(w)
            if core and core[0].lower() not in STOPWORDS and (syns := wordnet_synonyms(core[0].lower())):
                options[i] = syns
        if not options:
            return words
        positions = list(options)
        p0 = victim.probs([" ".join(words)])[0, label]
        unk = victim.probs([" ".join([*words[:i], "[UNK]", *words[i + 1:]]) for i in positions])[:, label]
        saliency = torch.softmax(p0 - unk, dim=0)
        best, delta = {}, torch.zeros(len(positions))
        for k, i in enumerate(positions):
            cands = [substitute(words, i, s) for s in options[i]]
            probs = victim.probs([" ".join(c) for c in cands])[:, label]
            j = int(probs.argmin())
            best[i], delta[k] = cands[j][i], p0 - probs[j]
        current = list(words)
        for k in torch.argsort(-(saliency * delta), stable=True).tolist()[:max_changes]:
            i = positions[k]
            current[i] = best[i]
            self.best = list(current)
            if int(victim.probs([" ".join(current)])[0].argmax()) != label:
                break
        return current
