"""TextBugger, black-box (Li et al., "TextBugger: Generating Adversarial Text Against Real-world
Applications", NDSS 2019).

Word importance by deletion; for each important word, five bugs are generated -- insert a character, delete a
middle character, swap two adjacent middle characters, substitute a visually similar character (o->0, l->1,
a->@, ...), and substitute a word-embedding nearest neighbour (Sub-W, top 5) -- and the bug that most lowers
the true class's probability is kept, until the prediction flips or the word budget is spent.
Threat model: at most 10% of the words changed (a bugged word counts as changed; checked by the framework);
black-box, scores only; per-example query budget.
Departures: the inserted character is a random letter (the paper inserts a space, which would split the word
and change the word count the shared constraint is defined on); GloVe 6B 50d neighbours for Sub-W; no sentence
ranking step and no USE similarity filter.
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
    min_cos: float = 0.5


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

    def search(self, victim, words, label, max_changes, ctx):
        from bench.tracks.text_robustness.resources import glove

        emb, p = glove(), self.params
        positions = [i for i, w in enumerate(words) if split_word(w)]
        order = deletion_importance(victim, words, label, positions)

        def candidates(current, i):
            core, tail = split_word(words[i])
            options = [[*current[:i], b + tail, *current[i + 1:]] for b in bugs(core, ctx.generator)]
            return options + [substitute(current, i, n) for n, _ in emb.neighbours(core.lower(), p.k, p.min_cos)]

        return greedy_substitute(self, victim, words, label, max_changes, order, candidates)
