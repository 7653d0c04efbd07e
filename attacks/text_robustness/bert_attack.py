"""BERT-Attack (Li et al., "BERT-ATTACK: Adversarial Attack Against BERT Using BERT", EMNLP 2020).

Word importance by masking (the drop of the true class's probability when the word is replaced by [MASK]);
candidates for each word are the top-K predictions of a masked language model run once on the *unmasked*
sentence at the word's first sub-token (whole-word tokens only, no sub-words, no stopwords, not the word
itself); words are visited in decreasing importance and substituted greedily, taking the first candidate that
flips the prediction, else the one that most lowers the true class's probability.
Threat model: word substitution; black-box access to the victim (scores only), the candidate MLM is
separate; per-example query budget.
Constraints (``bench.tracks.text_robustness.constraints``; candidates are filtered before they are queried,
and the framework re-checks the final text): at most ceil(10 % of the words) changed (the MVP paper's budget;
TextAttack's recipe allows 40 %); no stopword modified; each word modified once; WordNet part of speech kept;
no WordNet antonym; sentence similarity >= 0.60 over the whole text (the suite's floor; TextAttack's recipe
uses USE >= 0.2, which lets "fantastic." -> "bad." through).
Defaults: the embedded MiniLM-L6 masked LM with its restored head (``mlm`` takes any local masked-LM folder),
K = 48 (quick: 16). Departures: single-token candidates only (no BPE-combination search for multi-piece
words); the all-MiniLM-L6-v2 sentence encoder instead of USE, at the floor; the POS and antonym rules are
additions (an MLM ranks antonyms highly); the restored MiniLM head is weaker than BERT-base's, so candidates
are noisier than the paper's.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from bench.tracks.text_robustness.attack import WordAttack, WordAttackParams, greedy_substitute, split_word, substitute
from bench.tracks.text_robustness.backbone import DEFAULT_BACKBONE


@dataclass(frozen=True)
class Params(WordAttackParams):
    k: int = 48
    mlm: str = DEFAULT_BACKBONE


@functools.lru_cache(maxsize=2)
def _mlm(name: str):
    from bench.tracks.text_robustness.backbone import load_mlm

    return load_mlm(name)


class BertAttack(WordAttack):
    __doc__ = __doc__
    Params = Params
    profiles = {"smoke": {"k": 8, "max_queries": 300}, "quick": {"k": 16}}

    @torch.no_grad()
    def _candidates(self, words: list[str]) -> dict[int, list[str]]:
        from bench.tracks.text_robustness.resources import STOPWORDS

        mlm, tokenizer = _mlm(self.params.mlm)
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=256, return_tensors="pt")
        logits = mlm(**enc).logits[0]
        first: dict[int, int] = {}
        for pos, w in enumerate(enc.word_ids()):
            if w is not None and w not in first:
                first[w] = pos
        out = {}
        for i, pos in first.items():
            core = split_word(words[i])
            if not core or core[0].lower() in STOPWORDS:
                continue
            tokens = tokenizer.convert_ids_to_tokens(logits[pos].topk(self.params.k + 20).indices.tolist())
            clean = [t.lstrip("Ġ▁") for t in tokens]
            out[i] = [t for t in clean if t.isalpha() and t.lower() != core[0].lower()
                      and t.lower() not in STOPWORDS][:self.params.k]
        return out

    def search(self, victim, words, label, max_changes, ctx):
        options = self._candidates(words)
        positions = [i for i in options if options[i]]
        if not positions:
            return words
        p0 = victim.probs([" ".join(words)])[0, label]
        masked = victim.probs([" ".join([*words[:i], "[MASK]", *words[i + 1:]]) for i in positions])[:, label]
        order = [positions[j] for j in torch.argsort(-(p0 - masked), stable=True).tolist()]
        return greedy_substitute(self, victim, words, label, max_changes, order,
                                 lambda current, i: [substitute(current, i, c) for c in options[i]])
