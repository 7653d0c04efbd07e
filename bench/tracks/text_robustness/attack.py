"""The loop every word-substitution attack shares (TextAttack's shape): per test example, a query-counting
``Victim`` with a query budget, the attack's ``search`` (whose candidates pass the attack's ``Constraints``
before they are queried), then the framework's own verdict -- the final text is re-checked against the
attack's constraints plus the floor every attack shares (``Constraints.with_floor``) and re-classified by the
model; only a validated text that the model misclassifies counts as a success. Writes a per-example CSV
(``ctx.artifacts/results.csv``) and returns TextAttack's summary metrics, the rejections per reason and a
sample of successful examples (kept in the record, for the leaderboard's samples page)."""
from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass

import torch

from bench.plugins import Evaluator
from bench.progress import progress
from bench.tracks.text_robustness import TRACK, constraints, precision


class BudgetExhausted(Exception):
    """The example's query budget is spent: the search stops with what it has."""


class Victim:
    """The model as an attack sees it: class probabilities for texts, counting one query per distinct text
    (repeats are served from a cache, as in TextAttack), refusing to exceed ``max_queries``."""

    def __init__(self, model, batch_size: int, max_queries: int):
        self.model, self.batch_size, self.max_queries = model, batch_size, max_queries
        self.queries = 0
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def probs(self, texts: list[str]) -> torch.Tensor:
        from bench.tracks.text_robustness.data import Texts

        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if self.queries + len(new) > self.max_queries:
            raise BudgetExhausted
        self.queries += len(new)
        for i in range(0, len(new), self.batch_size):
            chunk = new[i:i + self.batch_size]
            out = self.model(Texts(chunk)).float().softmax(dim=1).cpu()
            self._cache.update(zip(chunk, out))
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.empty(0)


@dataclass(frozen=True)
class WordAttackParams:
    max_word_change: float = constraints.MAX_WORD_CHANGE  # ceil(10 % of the words); the framework checks it
    # MiniLM sentence similarity (see calibrate.py); the framework never accepts less than SENTENCE_FLOOR.
    min_sentence_sim: float = constraints.SENTENCE_FLOOR
    max_queries: int = 2000  # per example
    n_examples: int | None = None  # the first n test examples; None: all
    batch_size: int = 64
    # Model queries on CUDA (victim and sentence encoder; ``precision``); the CPU is always float32.
    cuda_precision: precision.Precision = "float32"


RESULT_FIELDS = ("index", "result_type", "ground_truth_output", "original_output", "perturbed_output",
                 "original_score", "perturbed_score", "num_queries", "words_changed", "num_words",
                 "original_text", "perturbed_text", "rejected_by", "note")
SAMPLE_SIZE = 20  # successful examples kept in the record for the samples page
EXCERPT_OVER = 60  # words: longer texts (BBC News articles) are kept as windows around the changes
EXCERPT_CONTEXT = 10  # words kept on each side of a change


def excerpt(original: str, perturbed: str) -> dict[str, str]:
    """``{"original", "adversarial"}``: both texts, or for texts over ``EXCERPT_OVER`` words the same windows
    of both (``EXCERPT_CONTEXT`` words around each change, gaps shown as "…"), so records stay small."""
    a, b = original.split(), perturbed.split()
    if len(a) <= EXCERPT_OVER or len(a) != len(b):
        return {"original": original, "adversarial": perturbed}
    keep = sorted({j for i in constraints.changed(a, b)
                   for j in range(max(0, i - EXCERPT_CONTEXT), min(len(a), i + EXCERPT_CONTEXT + 1))})
    parts_a, parts_b, last = [], [], -1
    for j in keep:
        if j != last + 1:
            parts_a.append("…")
            parts_b.append("…")
        parts_a.append(a[j])
        parts_b.append(b[j])
        last = j
    if last != len(a) - 1:
        parts_a.append("…")
        parts_b.append("…")
    return {"original": " ".join(parts_a), "adversarial": " ".join(parts_b)}


class WordAttack(Evaluator):
    """Base of the text attacks: implement ``search``."""

    track = TRACK
    modality = "text"
    Params = WordAttackParams
    # The recipe's structural rules (thresholds come from the params); subclasses override.
    part_of_speech = True
    sentence_window: int | None = None

    @property
    def constraints(self) -> constraints.Constraints:
        """The recipe's constraint set, which the search filters candidates with."""
        p = self.params
        return constraints.Constraints(max_word_change=p.max_word_change, pos=self.part_of_speech,
                                       min_word_cos=getattr(p, "min_word_cos", None),
                                       min_sentence_sim=p.min_sentence_sim, window=self.sentence_window)

    def filter(self, original: list[str], current: list[str], candidates: list[list[str]]) -> list[list[str]]:
        """``self.constraints.filter``, tallied per reason for the record (``candidates_filtered``)."""
        return self.filter_groups(original, current, [candidates])[0]

    def filter_groups(self, original: list[str], current: list[str], groups: list[list[list[str]]]):
        if not hasattr(self, "filtered"):
            self.filtered = Counter()
        return self.constraints.filter_groups(original, current, groups, self.filtered)

    def search(self, victim: Victim, words: list[str], label: int, max_changes: int, ctx) -> list[str]:
        """The best perturbed word list found (same length as ``words``, at most ``max_changes`` words
        changed); raise nothing on failure, return it anyway. ``victim.probs`` may raise ``BudgetExhausted``,
        which ends the search with ``self.best``."""
        raise NotImplementedError

    def evaluate(self, model, data, ctx):
        p = self.params
        n = len(data.test_y) if p.n_examples is None else min(p.n_examples, len(data.test_y))
        self.filtered = Counter()
        with precision.cuda_queries(p.cuda_precision):
            rows = [self._attack_one(model, data.test_x[i], int(data.test_y[i]), i, ctx)
                    for i in progress(range(n), desc=self.name)]
        if ctx.artifacts is not None:
            ctx.artifacts.mkdir(parents=True, exist_ok=True)
            with open(ctx.artifacts / "results.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=RESULT_FIELDS)
                writer.writeheader()
                writer.writerows(rows)
        return summary(rows, self.describe(), p.max_queries, self.constraints.with_floor().describe(),
                       data.extras.get("label_names", ()), self.filtered)

    def _attack_one(self, model, text: str, label: int, index: int, ctx) -> dict:
        p = self.params
        victim = Victim(model, p.batch_size, p.max_queries)
        original = victim.probs([text])[0]
        row = {"index": index, "ground_truth_output": label, "original_output": int(original.argmax()),
               "original_score": float(original[label]), "original_text": text, "num_words": len(text.split()),
               "rejected_by": "", "note": ""}
        if row["original_output"] != label:
            return {**row, "result_type": "Skipped", "perturbed_output": row["original_output"],
                    "perturbed_score": row["original_score"], "num_queries": victim.queries,
                    "words_changed": 0, "perturbed_text": text}
        words = text.split()
        self.best = list(words)
        try:
            self.best = self.search(victim, words, label, constraints.budget(len(words), p.max_word_change), ctx)
        except BudgetExhausted:
            row["note"] = "query budget exhausted"
        perturbed = " ".join(self.best)
        verdict = self.constraints.with_floor().check(text, perturbed)  # the plugin's output is not trusted
        with torch.no_grad():  # the framework's own classification of the final text, not the attack's claim
            from bench.tracks.text_robustness.data import Texts
            out = model(Texts([perturbed])).float().softmax(dim=1)[0].cpu()
        if not verdict.ok:
            result = "Rejected"
            row["rejected_by"], row["note"] = verdict.reason, verdict.detail
        else:
            result = "Successful" if int(out.argmax()) != label else "Failed"
        return {**row, "result_type": result, "perturbed_output": int(out.argmax()),
                "perturbed_score": float(out[label]), "num_queries": victim.queries,
                "words_changed": max(verdict.words_changed, 0), "perturbed_text": perturbed}


def summary(rows: list[dict], definition: str, max_queries: int, constraint_set: str = "",
            label_names: tuple[str, ...] = (), filtered: Counter | None = None) -> list[dict]:
    """TextAttack's summary, as fractions (records hold values in [0, 1]): accuracy under attack counts an
    example only if it is classified correctly and the validated attack on it failed; success rate, queries
    and rejections are over the attacked (clean-correct) examples, words perturbed over the successful ones.
    Average queries are stored as a fraction of the per-example budget (x ``max_queries`` gives the count);
    metrics over zero examples are left out. ``rejected_by`` (one per reason in ``constraints.REASONS``, label
    ``reason``) splits ``rejected_rate``; ``attack_success_rate`` carries ``examples``, the first
    ``SAMPLE_SIZE`` successful examples (what the leaderboard's samples page shows). ``candidates_filtered``
    (label ``reason``): the share of the search's candidates each rule dropped before any query."""
    n = len(rows)
    attacked = [r for r in rows if r["result_type"] != "Skipped"]
    success = [r for r in attacked if r["result_type"] == "Successful"]
    rejected = [r for r in attacked if r["result_type"] == "Rejected"]
    d = definition
    checked = f" ({constraint_set})" if constraint_set else ""
    out = [
        {"name": "clean_acc_attacked", "value": len(attacked) / n, "n": n,
         "definition": f"clean accuracy on the {n} examples given to {d}"},
        {"name": "acc_under_attack", "value": (len(attacked) - len(success)) / n, "n": n,
         "definition": f"fraction classified correctly and not broken by {d} (constraint-checked{checked})"},
        # A near-constant classifier looks "robust" (nothing to flip): the table flags it with this.
        {"name": "majority_prediction_rate", "n": n,
         "value": max(Counter(r["original_output"] for r in rows).values()) / n,
         "definition": "share of the clean predictions that go to the most predicted class"},
    ]
    if attacked:
        examples = [{"index": r["index"], "label": r["ground_truth_output"], "predicted": r["perturbed_output"],
                     **excerpt(r["original_text"], r["perturbed_text"])} for r in success[:SAMPLE_SIZE]]
        out += [
            {"name": "attack_success_rate", "value": len(success) / len(attacked), "n": len(attacked),
             "definition": "successful / attacked (clean-correct) examples", "examples": examples,
             "label_names": list(label_names)},
            {"name": "query_budget_used", "value": sum(r["num_queries"] for r in attacked) / len(attacked)
             / max_queries, "n": len(attacked), "max_queries": max_queries,
             "definition": f"mean distinct model queries per attacked example (incl. the clean query) / "
                           f"{max_queries} (the per-example budget)"},
            {"name": "rejected_rate", "value": len(rejected) / len(attacked), "n": len(attacked),
             "definition": "attacked examples whose final text broke the constraints in the framework's "
                           "re-check (never counted as successful)"},
        ]
        by_reason = Counter(r.get("rejected_by") or "unspecified" for r in rejected)
        out += [{"name": "rejected_by", "reason": reason, "value": by_reason.get(reason, 0) / len(attacked),
                 "n": len(attacked), "definition": f"attacked examples whose final text the framework rejected "
                                                   f"for: {reason}"}
                for reason in (*constraints.REASONS, *sorted(set(by_reason) - set(constraints.REASONS)))]
    seen = (filtered or Counter())["candidates"]
    if seen:
        out += [{"name": "candidates_filtered", "reason": reason, "value": filtered[reason] / seen, "n": seen,
                 "definition": f"share of the search's candidate texts dropped before querying for: {reason}"}
                for reason in constraints.REASONS if reason != "word count"]
    if success:
        out.append({"name": "words_perturbed", "value": sum(r["words_changed"] / r["num_words"] for r in success)
                    / len(success), "n": len(success),
                    "definition": "mean fraction of words changed over successful attacks"})
    return out


def split_word(token: str) -> tuple[str, str] | None:
    """(alphabetic core, trailing punctuation) of a substitutable token ("film", "said." -> ("said", ".")),
    or None (numbers, punctuation, mixed tokens are never substituted)."""
    m = re.fullmatch(r"([A-Za-z]+)([^\w\s]*)", token)
    return (m.group(1), m.group(2)) if m else None


def substitute(words: list[str], i: int, new_core: str) -> list[str]:
    """``words`` with the core of word ``i`` replaced (its capitalisation and trailing punctuation kept)."""
    core, tail = split_word(words[i])
    new = new_core.capitalize() if core[0].isupper() else new_core.lower()
    return [*words[:i], new + tail, *words[i + 1:]]


def deletion_importance(victim: Victim, words: list[str], label: int, positions: list[int]) -> list[int]:
    """``positions`` ordered by how much deleting the word lowers the true class's probability (plus how much
    it raises a new winning class's, as in TextFooler), most important first."""
    if not positions:
        return []
    p0 = victim.probs([" ".join(words)])[0]
    probs = victim.probs([" ".join(words[:i] + words[i + 1:]) for i in positions])
    score = p0[label] - probs[:, label]
    flipped = probs.argmax(1) != label
    gain = probs.gather(1, probs.argmax(1, keepdim=True)).squeeze(1) - p0[probs.argmax(1)]
    score = score + flipped.float() * gain
    return [positions[j] for j in torch.argsort(-score, stable=True).tolist()]


def greedy_substitute(attack, victim: Victim, words: list[str], label: int, max_changes: int,
                      order: list[int], candidates) -> list[str]:
    """The search TextFooler, BERT-Attack and TextBugger share: visit words in ``order``; for each, query all
    candidate texts (``candidates(current, i)`` -> list of word lists); stop at the first success (the
    earliest candidate, i.e. the most similar one), else keep the candidate that most lowers the true class's
    probability if it lowers it. Candidates pass ``attack.filter`` (the constraints) before they are queried.
    ``attack.best`` always holds the current text (for budget exhaustion)."""
    current = list(words)
    p_true = float(victim.probs([" ".join(current)])[0][label])
    changes = 0
    for i in order:
        if changes >= max_changes:
            break
        options = attack.filter(words, current, [c for c in candidates(current, i) if c != current])
        if not options:
            continue
        probs = victim.probs([" ".join(c) for c in options])
        wins = (probs.argmax(1) != label).nonzero().flatten()
        if len(wins):
            attack.best = options[int(wins[0])]
            return attack.best
        j = int(probs[:, label].argmin())
        if float(probs[j, label]) < p_true:
            current, p_true, changes = options[j], float(probs[j, label]), changes + 1
            attack.best = current
    return current
