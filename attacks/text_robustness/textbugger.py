"""TextBugger, black-box (Li et al., "TextBugger: Generating Adversarial Text Against Real-world
Applications", NDSS 2019).

Word importance by deletion; for each important word, five bugs are generated -- insert a character, delete a
middle character, swap two adjacent middle characters, substitute a visually similar character (o->0, l->1,
a->@, ...), and substitute a word-embedding nearest neighbour (Sub-W, top 5) -- and the bug that most lowers
the true class's probability is kept, until the prediction flips or the word budget is spent.
Threat model: character and word edits; black-box, scores only; per-example query budget.
Constraints (TextAttack's recipe, ``bench.tracks.text_robustness.constraints``; candidates are filtered before
they are queried, and the framework re-checks the final text): at most ceil(10 % of the words) changed (a
bugged word counts as changed); no stopword modified; each word modified once; no WordNet antonym (Sub-W can
propose one); sentence similarity >= 0.84 over the whole text (TextAttack: USE >= 0.8; the MiniLM threshold
is calibrated, see ``calibrate.py``). No part-of-speech rule: a bugged word is not a word.
Departures: the inserted character is a random letter (the paper inserts a space, which would split the word
and change the word count the shared constraint is defined on); GloVe 6B 50d neighbours for Sub-W; no sentence
ranking step; all-MiniLM-L6-v2 instead of USE (a hub download).
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

VISUAL = {"o": "0", "l": "1", "i": "1", "a": "@", "e": "3", "s": "$", "g": "9", "b": "6", "t": "7", "z": "2"}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Params(WordAttackParams):
    k: int = 5  # Sub-W neighbours
    min_cos: float = 0.5  # Sub-W candidates' GloVe cosine (generation only: bugged words have no vector)
    min_sentence_sim: float = 0.84  # MiniLM, whole text (calibrate.py)


def bugs(word: str, generator) -> list[str]:
    """The character-level bugs of ``word`` (deterministic given ``generator``)."""
    import torch

    out = []
    if len(word) >= 2:
        pos = int(torch.randint(1, len(word), (1,), generator=generator))
        out.append(word[:pos] + LETTERS[int(torch.randint(26, (1,), generator=generator))] + word[pos:])
    if len(word) >= 3:
        mid = len(word) // 2
        out.append(word[:mid] + word[mid + 1:])
    if len(word) >= 4:
        mid = len(word) // 2
        out.append(word[:mid - 1] + word[mid] + word[mid - 1] + word[mid + 1:])
    for j, ch in enumerate(word):
        if ch.lower() in VISUAL:
            out.append(word[:j] + VISUAL[ch.lower()] + word[j + 1:])
            break
    return [b for b in dict.fromkeys(out) if b != word]


class TextBugger(WordAttack):
    __doc__ = __doc__
    Params = Params
    profiles = {"smoke": {"max_queries": 300}}
    part_of_speech = False

    def search(self, victim, words, label, max_changes, ctx):
        from bench.tracks.text_robustness.resources import STOPWORDS, glove

        emb, p = glove(), self.params
        positions = [i for i, w in enumerate(words) if split_word(w) and split_word(w)[0].lower() not in STOPWORDS]
        order = deletion_importance(victim, words, label, positions)

        def candidates(current, i):
            core, tail = split_word(words[i])
            options = [[*current[:i], b + tail, *current[i + 1:]] for b in bugs(core, ctx.generator)]
            return options + [substitute(current, i, n) for n, _ in emb.neighbours(core.lower(), p.k, p.min_cos)]

        return greedy_substitute(self, victim, words, label, max_changes, order, candidates)
