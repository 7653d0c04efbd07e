"""MLP-FT: standard fine-tuning of a masked-LM encoder with a new MLP head on [CLS] -- the baseline of MVP
(Raman et al., "Model-tuning Via Prompts Makes NLP Models Adversarially Robust", EMNLP 2023) -- and its
embedding-space adversarial-training variant.

Threat model: none claimed (mlp-ft); mlp-ft-adv trains against L2 perturbations of the word embeddings
(one normalised-gradient step of 1.5 eps from zero in a per-token ball of radius eps * ||e_token||, loss on the
perturbed input only: the recipe of MVP+Adv, so "prompting vs adversarial training" compares like with like).
eps 0.02 (``ADV_EPS_MLP_FT``) is chosen on validation data by the rule that gives MVP+Adv 0.0025
(``benchmarks/text_adv_radius.py``).
Defaults: the embedded MiniLM-L6 backbone (``backbone`` takes any local Hugging Face masked-LM folder), head
Linear(H, H)-Tanh-Dropout(0.1)-Linear(H, C), AdamW wd 0.01 with linear decay, batch 32, early stopping on
validation accuracy (best epoch kept), max 128 tokens.
Departures from the paper: CPU-sized budgets in the quick profile (1 epoch, lr 5e-5 on a 1,000-snippet
subset; the paper trains 20 epochs at lr 1e-5, batch 8); the full profile trains 5 epochs at lr 2e-5, batch 32.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.plugins import DataSpec, Defense, Splits
from bench.tracks.text_robustness import TRACK
from bench.tracks.text_robustness.training import ADV_EPS_MLP_FT, PROFILES, TextTrainParams, fine_tune, text_identity


@dataclass(frozen=True)
class Params(TextTrainParams):
    dropout: float = 0.1


class MLPFT(Defense):
    __doc__ = __doc__

    track = TRACK
    modality = "text"
    Params = Params
    profiles = PROFILES

    def identity(self):
        # The backbone's masked-LM gate (held-out MLM loss, zero-shot MVP on RT validation) goes with every record.
        return text_identity(self.params.backbone)

    def build(self, spec: DataSpec):
        from bench.tracks.text_robustness.models import MLPClassifier

        return MLPClassifier(self.params.backbone, spec.num_classes, self.params.max_length, self.params.dropout)

    def fit(self, model, data: Splits, ctx) -> None:
        fine_tune(model, data, ctx, self.params, desc=self.name)


@dataclass(frozen=True)
class AdvParams(Params):
    adv_eps: float = ADV_EPS_MLP_FT


class MLPFTAdv(MLPFT):
    __doc__ = __doc__
    Params = AdvParams
