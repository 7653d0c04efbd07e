"""The text attacks' constraints on hand-made examples (each rule rejects its violation, a synonym swap
passes), the framework's re-check of a plugin's output, and what the table writer makes of the records:
rejections per reason, the samples page, the refusal of a record the † flag cannot be computed for. Uses the
real WordNet, GloVe and MiniLM sentence encoder (installed with the suite); a keyword model as the victim."""
import json

import pytest
import torch
from torch import nn

from bench.context import EvalContext
from bench.plugins import DataSpec, Splits
from bench.tracks.text_robustness.attack import WordAttack, summary
from bench.tracks.text_robustness.constraints import SENTENCE_FLOOR, Constraints, budget
from bench.tracks.text_robustness.data import Texts

TEXT = "this is a really good film with nice actors and a strong script"  # 13 words: 2 may change
WORDS = TEXT.split()
SPEC = DataSpec("toy", (), 2)


def swap(**changes):
    """TEXT with word i replaced: swap(w4="nice")."""
    out = list(WORDS)
    for key, word in changes.items():
        out[int(key[1:])] = word
    return " ".join(out)


class KeywordModel(nn.Module):
    """Positive iff 'good' occurs."""

    def forward(self, texts):
        score = torch.tensor([2.0 if "good" in t.split() else -2.0 for t in texts])
        return torch.stack([-score, score], dim=1)


def _ctx(tmp_path=None):
    return EvalContext(device=torch.device("cpu"), batch_size=16, generator=torch.Generator().manual_seed(0),
                       profile="smoke", model_of=None, artifacts=tmp_path)


@pytest.mark.parametrize("perturbed, rules, reason", [
    (swap(w4="bad"), Constraints(), "antonym"),
    (swap(w4="awful"), Constraints(), "antonym"),  # through good's similar-to cluster
    (swap(w5="quickly"), Constraints(), "part of speech"),  # noun -> adverb
    (swap(w0="that"), Constraints(), "stopword"),
    (swap(w5="carburetor", w12="spaceship"), Constraints(), "sentence similarity"),
    (swap(w1="was", w5="movie", w12="plot"), Constraints(stopwords=False), "word budget"),
    (swap(w5="banana"), Constraints(min_word_cos=0.5), "word embedding"),
    (TEXT + " indeed", Constraints(), "word count"),
])
def test_each_constraint_rejects_its_violation(perturbed, rules, reason):
    verdict = rules.check(TEXT, perturbed)
    assert not verdict.ok and verdict.reason == reason, verdict


def test_a_synonym_swap_passes_every_constraint():
    tight = Constraints(min_word_cos=0.5, min_sentence_sim=0.8, window=15)
    for perturbed in (swap(w5="movie"), swap(w4="nice", w5="movie")):
        assert tight.check(TEXT, perturbed).ok and Constraints().check(TEXT, perturbed).ok
    assert Constraints().check(TEXT, TEXT).ok


def test_repeated_modification_is_refused_during_the_search():
    rules = Constraints()
    current = swap(w5="movie").split()
    again = swap(w5="picture").split()
    assert rules.rule_broken(WORDS, again, current)[0] == "repeated modification"
    assert rules.filter(WORDS, current, [again, swap(w5="movie", w12="book").split()]) == [
        swap(w5="movie", w12="book").split()]


def test_filter_drops_violations_before_the_sentence_encoder_and_keeps_order():
    candidates = [swap(w4="bad").split(), swap(w4="nice").split(), swap(w5="quickly").split(), swap(w4="fine").split()]
    assert Constraints().filter(WORDS, WORDS, candidates) == [candidates[1], candidates[3]]


def test_budget_is_ceil_of_ten_percent_and_the_floor_holds():
    assert [budget(n) for n in (5, 10, 11, 30)] == [1, 1, 2, 3]
    assert Constraints(min_sentence_sim=0.1, stopwords=False).with_floor().min_sentence_sim == SENTENCE_FLOOR
    assert Constraints(stopwords=False).with_floor().stopwords


def test_framework_rejects_a_plugin_output_that_breaks_the_constraints():
    class AntonymCheater(WordAttack):
        """Flips the keyword model by an antonym swap (TextAttack's recipes would never propose it)."""

        def search(self, victim, words, label, max_changes, ctx):
            return [("bad" if w == "good" else w) for w in words]

    class Honest(WordAttack):
        def search(self, victim, words, label, max_changes, ctx):
            return [("fine" if w == "good" else w) for w in words]

    x = Texts([TEXT] * 2)
    data = Splits(SPEC, x, torch.tensor([1, 1]), x, torch.tensor([1, 1]), extras={"label_names": ("neg", "pos")})
    metrics = AntonymCheater().evaluate(KeywordModel(), data, _ctx())
    by_name = {m["name"]: m for m in metrics if m["name"] != "rejected_by"}
    reasons = {m["reason"]: m["value"] for m in metrics if m["name"] == "rejected_by"}
    assert by_name["acc_under_attack"]["value"] == 1.0 and by_name["attack_success_rate"]["value"] == 0.0
    assert reasons["antonym"] == 1.0 and sum(reasons.values()) == 1.0
    assert by_name["attack_success_rate"]["examples"] == []
    honest = {m["name"]: m for m in Honest().evaluate(KeywordModel(), data, _ctx()) if m["name"] != "rejected_by"}
    assert honest["attack_success_rate"]["value"] == 1.0
    example = honest["attack_success_rate"]["examples"][0]
    assert example == {"index": 0, "label": 1, "predicted": 0, "original": TEXT, "adversarial": swap(w4="fine")}


def test_textfooler_drops_the_antonym_glove_proposes_before_querying():
    from bench.hparams import resolve
    from bench.registry import Registry

    cls = Registry().load("attack", "textfooler")
    attack = cls(resolve({"textfooler": cls}, "smoke", [])["textfooler"])
    x = Texts([TEXT])
    metrics = attack.evaluate(KeywordModel(), Splits(SPEC, x, torch.tensor([1]), x, torch.tensor([1])), _ctx())
    dropped = {m["reason"]: m["value"] for m in metrics if m["name"] == "candidates_filtered"}
    assert dropped["antonym"] > 0  # "bad" is good's nearest GloVe neighbour
    success = next(m for m in metrics if m["name"] == "attack_success_rate")
    assert all("bad" not in e["adversarial"].split() for e in success["examples"])


def test_long_texts_are_kept_as_aligned_excerpts():
    from bench.tracks.text_robustness.attack import excerpt

    long = " ".join(f"w{i}" for i in range(100))
    cut = excerpt(long, long.replace("w50", "x50"))
    assert cut["original"].split()[0] == "…" and cut["original"].split()[-1] == "…"
    assert len(cut["original"].split()) == len(cut["adversarial"].split()) == 21 + 2
    assert "w40" in cut["original"] and "w39" not in cut["original"] and "x50" in cut["adversarial"]
    assert excerpt(TEXT, swap(w4="fine")) == {"original": TEXT, "adversarial": swap(w4="fine")}


def _record(defense, metrics, key="k"):
    return {"key": key + "0" * 20, "config_id": key + "0" * 20, "track": "text-robustness", "profile": "quick",
            "seed": 0, "status": "ok", "dataset": {"name": "toy"}, "defense": {"name": defense},
            "attack": {"name": "pwws", "params": {"max_word_change": 0.1}}, "git_commit": "x",
            "hardware": {"device": "cpu"}, "created": "2026-01-01T00:00:00+00:00", "metrics": metrics}


def _rows():
    ok = {"index": 0, "result_type": "Successful", "ground_truth_output": 1, "original_output": 1,
          "perturbed_output": 0, "num_queries": 5, "words_changed": 1, "num_words": 13, "original_text": TEXT,
          "perturbed_text": swap(w4="fine")}
    rejected = {**ok, "index": 1, "result_type": "Rejected", "rejected_by": "antonym", "original_output": 0}
    return [ok, rejected]


def test_table_summarises_rejections_writes_samples_and_refuses_records_without_the_flag(tmp_path):
    from bench.leaderboard import MANIFEST, regenerate
    from bench.records import write_record
    from bench.registry import Registry

    metrics = summary(_rows(), "pwws()", 100, label_names=("negative", "positive"))
    legacy = [m for m in metrics if m["name"] != "majority_prediction_rate"]
    for record in (_record("mlp-ft", metrics, "a"), _record("mvp-adv", legacy, "b")):
        write_record(tmp_path / "records", record)
    regenerate(Registry(), tmp_path)
    table = (tmp_path / "text-robustness" / "toy.md").read_text()
    assert "| mlp-ft |" in table and "| mvp-adv" not in table  # refused, not shown unflagged
    assert "refused" in table and "mvp-adv / pwws / seed 0" in table and "majority_prediction_rate" in table
    assert "| mlp-ft | pwws | 1 | antonym 1 |" in table and "ceil(10% of the words)" in table
    samples = (tmp_path / "text-robustness" / "toy-pwws-samples.md").read_text()
    assert "really **good** film" in samples and "really **fine** film" in samples
    assert "| positive | negative |" in samples and "mvp-adv" not in samples
    assert "text-robustness/toy-pwws-samples.md" in json.loads((tmp_path / MANIFEST).read_text())["files"]
