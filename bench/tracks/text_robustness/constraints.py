"""The constraints every text attack's output is checked against, by the framework, the same for every
defense: an adversarial text must keep the original's words (whitespace-separated) except at most
ceil(max_word_change * #words) of them, each changed in place (same word count, no empty word). A text that
breaks them is rejected: it never counts as a successful attack, and the record counts the rejections."""
from __future__ import annotations

import math
from dataclasses import dataclass

MAX_WORD_CHANGE = 0.1  # the shared default: at most 10% of the words (rounded up, as TextAttack's MaxWordsPerturbed)


def words(text: str) -> list[str]:
    return text.split()


def budget(n_words: int, max_word_change: float = MAX_WORD_CHANGE) -> int:
    """How many words an attack may change in a text of ``n_words`` words."""
    return math.ceil(n_words * max_word_change)


def changed(original: list[str], perturbed: list[str]) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(original, perturbed)) if a != b]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    words_changed: int
    reason: str = ""


def check(original: str, perturbed: str, max_word_change: float = MAX_WORD_CHANGE) -> Verdict:
    a, b = words(original), words(perturbed)
    if len(a) != len(b):
        return Verdict(False, -1, f"word count changed ({len(a)} -> {len(b)})")
    diff = changed(a, b)
    if len(diff) > budget(len(a), max_word_change):
        return Verdict(False, len(diff), f"{len(diff)} of {len(a)} words changed (at most "
                                         f"{budget(len(a), max_word_change)} allowed)")
    return Verdict(True, len(diff))
