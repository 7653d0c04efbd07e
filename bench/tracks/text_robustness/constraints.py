"""The constraints a word-substitution attack's text must meet, applied as TextAttack's recipes apply them.

A ``Constraints`` set is declared by each attack plugin (its recipe) and used twice: by the search, to drop
candidates *before* they are queried (the cheap word-level rules first, then one batched sentence-encoder
call), and by the framework (``attack.py``), which re-checks every final adversarial text against the same set
plus the floor every attack shares. A text that fails is "Rejected": never a success; the record counts
rejections per reason.

The rules, with the reason names the records use:
- ``word count``: the text keeps its whitespace-separated words, each changed in place.
- ``word budget``: at most ceil(max_word_change x #words) words differ (TextAttack's MaxWordsPerturbed rounds
  up, so a text of n < 10 words may have 1 word = 1/n of its words changed; the mean over a table's successful
  attacks can exceed 10 %).
- ``stopword``: no stopword is modified (TextAttack's StopwordModification; ``resources.STOPWORDS``).
- ``repeated modification``: a word index is modified at most once during a search (RepeatModification).
  It constrains the search path; a final text shows only its net change per index, so the framework's
  re-check cannot see it and the search-time filter enforces it.
- ``antonym``: the substitute is not a WordNet antonym of the original, including the antonyms of the head
  adjectives of its similar-to cluster and those antonyms' satellites ("excellent" -> "awful" is refused),
  nor an antonym of one of its WordNet synonyms (``are_antonyms``).
- ``part of speech``: if the original word is in WordNet, the substitute must be too and share a part of
  speech with it (adjective satellites count as adjectives). Recipes with character-level edits turn it off.
  Any sense counts (no tagger in context ships offline), so rare senses let some swaps through ("go" ->
  "sure": both adjectives in WordNet); "worth" -> "dlrs" (not in WordNet) is refused.
- ``word embedding``: GloVe 6B 50d cosine(original, substitute) >= ``min_word_cos`` (TextFooler: 0.5);
  a word outside the 50k-word vocabulary fails.
- ``sentence similarity``: cosine of all-MiniLM-L6-v2 sentence embeddings (``sentence_encoder``) between the
  original and the perturbed text, or, with ``window``, between the ``window`` words centred on each changed
  word (the minimum over changed words) >= ``min_sentence_sim``. The thresholds come from
  ``python -m bench.tracks.text_robustness.calibrate`` (its docstring says how).
"""
from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass, replace

MAX_WORD_CHANGE = 0.1  # the shared default: ceil(10 % of the words), as TextAttack's MaxWordsPerturbed rounds
# The sentence-similarity floor every attack's final text must meet, whatever its recipe declares (calibrated:
# see calibrate.py). Recipes may only be stricter.
SENTENCE_FLOOR = 0.60
REASONS = ("word count", "word budget", "stopword", "repeated modification", "antonym", "part of speech",
           "word embedding", "sentence similarity")


def words(text: str) -> list[str]:
    return text.split()


def budget(n_words: int, max_word_change: float = MAX_WORD_CHANGE) -> int:
    """How many words an attack may change in a text of ``n_words`` words: ceil(max_word_change x n)."""
    return math.ceil(n_words * max_word_change - 1e-9)  # 1e-9: 0.1 x 30 is 3.0000000000000004 in floats


def changed(original: list[str], perturbed: list[str]) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(original, perturbed)) if a != b]


def core(token: str) -> str:
    """The lower-cased word inside a token ("Film," -> "film"); a token with no letters gives ""."""
    m = re.fullmatch(r"[^\w]*([A-Za-z]+(?:'[A-Za-z]+)?)[^\w]*", token)
    return m.group(1).lower() if m else re.sub(r"[^A-Za-z0-9']", "", token).lower()


@functools.lru_cache(maxsize=50_000)
def antonyms(word: str) -> frozenset[str]:
    """WordNet antonyms of ``word``: those of its lemmas, of the head adjectives of its similar-to clusters,
    and the satellites of those antonyms (lower case, single words)."""
    from bench.tracks.text_robustness.resources import wordnet

    out: set[str] = set()
    for synset in wordnet().synsets(word):
        heads = [synset] + (synset.similar_tos() if synset.pos() == "s" else [])
        for head in heads:
            for lemma in head.lemmas():
                if head is not synset and lemma.name().lower() == word:
                    continue
                for ant in lemma.antonyms():
                    opposite = ant.synset()
                    out.update(n.lower() for n in opposite.lemma_names())
                    if opposite.pos() in "as":
                        for sat in opposite.similar_tos():
                            out.update(n.lower() for n in sat.lemma_names())
    out.discard(word)
    return frozenset(n for n in out if n.isalpha())


def are_antonyms(a: str, b: str) -> bool:
    """Antonyms directly, or through one WordNet synonym ("funny" -> "boring": "amusing" is an antonym of
    "boring"), which catches sentiment flips WordNet links only through a neighbour (an addition to TextAttack)."""
    from bench.tracks.text_robustness.resources import wordnet_synonyms

    if b in antonyms(a) or a in antonyms(b):
        return True
    return bool({s.lower() for s in wordnet_synonyms(a)} & antonyms(b)
                or {s.lower() for s in wordnet_synonyms(b)} & antonyms(a))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    words_changed: int
    reason: str = ""  # one of REASONS when not ok
    detail: str = ""


@dataclass(frozen=True)
class Constraints:
    """One recipe's constraint set (see the module docstring for each rule)."""

    max_word_change: float = MAX_WORD_CHANGE
    stopwords: bool = True
    repeat: bool = True
    antonyms: bool = True
    pos: bool = True
    min_word_cos: float | None = None
    min_sentence_sim: float = SENTENCE_FLOOR
    window: int | None = None  # words around each change compared by the sentence encoder; None: whole text

    def with_floor(self) -> "Constraints":
        """This set with the rules every attack shares forced on (the framework's re-check uses it)."""
        return replace(self, stopwords=True, antonyms=True,
                       min_sentence_sim=max(self.min_sentence_sim, SENTENCE_FLOOR))

    def describe(self) -> str:
        rules = [f"<= ceil({self.max_word_change:g} x words) changed"]
        rules += [r for r, on in (("no stopword changed", self.stopwords), ("each word changed once", self.repeat),
                                  ("no WordNet antonym", self.antonyms), ("WordNet POS kept", self.pos)) if on]
        if self.min_word_cos is not None:
            rules.append(f"GloVe cos >= {self.min_word_cos:g}")
        where = f" on {self.window}-word windows" if self.window else ""
        rules.append(f"MiniLM sentence sim >= {self.min_sentence_sim:g}{where}")
        return "; ".join(rules)

    # ---- word-level rules: no model, checked first ------------------------------------------------------
    def word_reason(self, original: str, substitute: str) -> str | None:
        """Why replacing token ``original`` by ``substitute`` breaks a word-level rule, or None."""
        from bench.tracks.text_robustness.resources import STOPWORDS, glove, wordnet_pos

        a, b = core(original), core(substitute)
        if self.stopwords and a in STOPWORDS:
            return "stopword"
        if self.antonyms and a.isalpha() and b.isalpha() and are_antonyms(a, b):
            return "antonym"
        if self.pos and a.isalpha() and (pa := wordnet_pos(a)):
            if not (b.isalpha() and pa & wordnet_pos(b)):
                return "part of speech"
        if self.min_word_cos is not None and glove().cosine(a, b) < self.min_word_cos:
            return "word embedding"
        return None

    def rule_broken(self, original: list[str], perturbed: list[str],
                    current: list[str] | None = None) -> tuple[str, str] | None:
        """(reason, detail) of the first model-free rule ``perturbed`` breaks (``current``: the text it was
        derived from during a search, for the repeated-modification rule), or None."""
        if len(original) != len(perturbed) or any(not w for w in perturbed):
            return "word count", f"word count changed ({len(original)} -> {len(perturbed)})"
        diff = changed(original, perturbed)
        allowed = budget(len(original), self.max_word_change)
        if len(diff) > allowed:
            return "word budget", f"{len(diff)} of {len(original)} words changed (at most {allowed} allowed)"
        if self.repeat and current is not None:
            done = set(changed(original, current))
            again = [i for i in changed(current, perturbed) if i in done]
            if again:
                return "repeated modification", f"word {again[0]} ({current[again[0]]!r}) modified again"
        for i in diff:
            if reason := self.word_reason(original[i], perturbed[i]):
                return reason, f"{original[i]!r} -> {perturbed[i]!r}"
        return None

    # ---- sentence similarity: one batched encoder call ---------------------------------------------------
    def _pairs(self, original: list[str], perturbed: list[str]) -> list[tuple[str, str]]:
        diff = changed(original, perturbed)
        if not self.window:
            return [(" ".join(original), " ".join(perturbed))] if diff else []
        half = self.window // 2
        return [(" ".join(original[max(0, i - half):i + half + 1]), " ".join(perturbed[max(0, i - half):i + half + 1]))
                for i in diff]

    def similarities(self, original: list[str], candidates: list[list[str]]) -> list[float]:
        """Each candidate's sentence similarity to ``original`` (1.0 for an unchanged text)."""
        from bench.tracks.text_robustness.sentence_encoder import similarity

        pairs = [self._pairs(original, c) for c in candidates]
        flat = [p for ps in pairs for p in ps]
        sims = similarity([a for a, _ in flat], [b for _, b in flat]) if flat else []
        out, k = [], 0
        for ps in pairs:
            out.append(min(sims[k:k + len(ps)], default=1.0))
            k += len(ps)
        return out

    # ---- the two entry points -------------------------------------------------------------------------
    def filter(self, original: list[str], current: list[str], candidates: list[list[str]],
               tally: Counter | None = None) -> list[list[str]]:
        """The candidates (word lists derived from ``current``, itself derived from ``original``) that meet
        every rule, in their order; word-level rules before the sentence encoder, so it sees only survivors.
        ``tally`` counts the candidates seen ("candidates") and those dropped, per reason."""
        return self.filter_groups(original, current, [candidates], tally)[0]

    def filter_groups(self, original: list[str], current: list[str], groups: list[list[list[str]]],
                      tally: Counter | None = None) -> list[list[list[str]]]:
        """``filter`` of several candidate lists with one sentence-encoder call (larger batches are cheaper)."""
        tally = Counter() if tally is None else tally
        kept: list[list[list[str]]] = []
        for candidates in groups:
            tally["candidates"] += len(candidates)
            kept.append([])
            for c in candidates:
                broken = self.rule_broken(original, c, current)
                if broken is None:
                    kept[-1].append(c)
                else:
                    tally[broken[0]] += 1
        sims = iter(self.similarities(original, [c for g in kept for c in g]))
        out = []
        for g in kept:
            passed = [c for c in g if next(sims) >= self.min_sentence_sim]
            tally["sentence similarity"] += len(g) - len(passed)
            out.append(passed)
        return out

    def check(self, original: str, perturbed: str) -> Verdict:
        """The verdict on a final text (every rule but the search-path one, ``repeated modification``)."""
        a, b = words(original), words(perturbed)
        if found := self.rule_broken(a, b):
            return Verdict(False, len(changed(a, b)) if len(a) == len(b) else -1, *found)
        n = len(changed(a, b))
        if n and (sim := self.similarities(a, [b])[0]) < self.min_sentence_sim:
            return Verdict(False, n, "sentence similarity", f"similarity {sim:.3f} < {self.min_sentence_sim:g}")
        return Verdict(True, n)


def check(original: str, perturbed: str, max_word_change: float = MAX_WORD_CHANGE) -> Verdict:
    """The shared floor alone (no recipe): ``Constraints(max_word_change).check``."""
    return Constraints(max_word_change=max_word_change).check(original, perturbed)
