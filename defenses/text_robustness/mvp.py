"""MVP: Model-tuning Via Prompts (Raman et al., "Model-tuning Via Prompts Makes NLP Models Adversarially
Robust", EMNLP 2023), and MVP+Adv.

The backbone's own masked-LM head classifies: each of m = 4 templates is spliced into the input (after [CLS];
before the final [SEP] for templates that start with [SEP]; the text is truncated, never the template), and
class c scores s_j(c) = max over its label words w of the MLM logit of w at the template's [MASK];
z(c) = mean_j s_j(c); loss CE(z, y). The whole model is tuned; there is no new randomly initialised head.
Training draws one random template per example; testing averages all four.
MVP+Adv adds one-step L2 PGD in word-embedding space on the prompted sequence, loss on the perturbed input
only: the paper's one step of 1.5 eps, but in a per-token ball of radius eps * ||e_token|| (FreeLB-style) with
eps 0.0025 (``ADV_EPS_MVP``) chosen on validation data (``benchmarks/text_adv_radius.py``; the same rule gives
mlp-ft-adv 0.02: MVP's margins in embedding space are smaller), instead of one L2 ball of radius 1.0 over the
sequence, which on MiniLM (token-embedding norms ~1.1) could erase a sentiment word and made both adversarial
baselines collapse to a constant classifier.

Threat model: none claimed (the paper evaluates against word substitutions). Defaults: the paper's SST-2
templates for rotten-tomatoes, with label words chosen for this backbone on the training split by LM-BFF's
automatic selection (Gao et al. 2021; ``python -m bench.tracks.text_robustness.label_words``: the paper's
{negative, positive} are near-constant "positive" on MiniLM); topic templates and the topic names as
label words for bbc-news (``templates``/``verbalizer`` override both); the embedded MiniLM-L6 backbone with
its restored MLM head (``backbone`` takes any local Hugging Face masked-LM folder); AdamW wd 0.01, linear
decay, batch 32, early stopping on validation accuracy, max 128 tokens.
Departures from the paper: MiniLM-L6 instead of RoBERTa/BERT-base (what ships offline; the paper used RoBERTa),
made a masked LM again by continued masked-LM pretraining on offline corpora
(``python -m bench.tracks.text_robustness.pretrain_mlm``; LoRA adapters + head, gate in every record); CPU-sized budgets in the quick profile
(1 epoch, lr 5e-5, 1,000 snippets; the paper: 20 epochs, lr 1e-5, batch 8); full: 5 epochs, lr 2e-5.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.errors import UsageError
from bench.plugins import DataSpec, Defense, Splits
from bench.tracks.text_robustness import TRACK
from bench.tracks.text_robustness.models import MVP_TEMPLATES, MVP_VERBALIZERS
from bench.tracks.text_robustness.training import ADV_EPS_MVP, PROFILES, TextTrainParams, fine_tune, text_identity

# The prompts live with the classifier (bench.tracks.text_robustness.models): the masked-LM pretraining's gate
# scores zero-shot MVP with the same ones.
TEMPLATES, VERBALIZERS = MVP_TEMPLATES, MVP_VERBALIZERS


@dataclass(frozen=True)
class Params(TextTrainParams):
    templates: tuple[str, ...] = ()  # empty: the dataset's default (TEMPLATES)
    verbalizer: tuple[tuple[str, ...], ...] = ()  # label words per class; empty: the dataset's default


class MVP(Defense):
    __doc__ = __doc__

    track = TRACK
    modality = "text"
    Params = Params
    profiles = PROFILES

    def _prompts(self, spec: DataSpec):
        templates = self.params.templates or TEMPLATES.get(spec.name)
        verbalizer = self.params.verbalizer or VERBALIZERS.get(spec.name)
        if not templates or not verbalizer:
            raise UsageError(f"{self.name}: no default templates/label words for dataset {spec.name}; "
                             f"set {self.name}.templates and {self.name}.verbalizer")
        if len(verbalizer) != spec.num_classes:
            raise UsageError(f"{self.name}.verbalizer has {len(verbalizer)} classes, {spec.name} has "
                             f"{spec.num_classes}")
        return templates, verbalizer

    def identity(self):
        # The backbone's masked-LM gate (held-out MLM loss, zero-shot MVP on RT validation) goes with every record.
        return text_identity(self.params.backbone)

    def build(self, spec: DataSpec):
        from bench.tracks.text_robustness.models import PromptClassifier

        templates, verbalizer = self._prompts(spec)
        return PromptClassifier(self.params.backbone, templates, verbalizer, self.params.max_length)

    def fit(self, model, data: Splits, ctx) -> None:
        fine_tune(model, data, ctx, self.params, num_templates=len(model.templates), desc=self.name)


@dataclass(frozen=True)
class AdvParams(Params):
    adv_eps: float = ADV_EPS_MVP


class MVPAdv(MVP):
    __doc__ = __doc__
    Params = AdvParams
