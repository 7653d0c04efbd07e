"""The concept-erasure track's text-to-image model: a small diffusers UNet conditioned on MiniLM token states
(trained here on Fashion-MNIST captions), or a real Stable Diffusion pipeline from a local diffusers folder.
It borrows the text track's MiniLM backbone and the image track's Fashion-MNIST and judge classifier."""
from __future__ import annotations

from bench.plugins import Track

TRACK = "concept-erasure"
MODALITY = "text-to-image"

# `none` first: the erasure methods start from its (cached) model, so their times measure the erasure alone.
DEFENSES = ("none", "esd", "advunlearn", "advunlearn-fast")
EVALUATORS = ("concept-prompts", "unlearndiffatk", "soft-prompt", "concept-inversion", "erasure-utility")
# Concepts the quick base model draws recognisably (16x16: the judge finds few of its sneakers; see README).
DATASETS = ("fashion-erase-bag", "fashion-erase-trouser")
FULL_DATASETS = DATASETS + ("fashion-erase-sneaker",)  # the 28x28 model may draw sneakers


class ConceptErasure(Track):
    """Attack success rates of prompt attacks against erased text-to-image models, and the utility kept."""

    classifies = False  # a text-to-image model has no test-set predictions
    suites = {
        "erasure-quick": {"defenses": DEFENSES, "attacks": EVALUATORS, "datasets": DATASETS, "seeds": (0,),
                          "profile": "quick"},
        # Erasure seeds 0, 1, 2 of the one base model (the `none` defense trains it with its own seed, 0).
        "erasure-full": {"defenses": DEFENSES, "attacks": EVALUATORS, "datasets": FULL_DATASETS, "seeds": (0, 1, 2),
                         "profile": "full"},
        "erasure-smoke": {"defenses": DEFENSES, "attacks": EVALUATORS, "datasets": ("fashion-erase-sneaker",),
                          "seeds": (0,), "profile": "smoke"},
    }
    # Prompts in, images out: the same properties are checked in tests/tracks/concept_erasure/.
    contract = {"dataset": "fashion-erase-sneaker", "defense": "none", "inputs": "own"}
    summary_metrics = ("asr", "pre_asr [all]", "retain_acc", "frechet")

    def tables(self, records, facts):
        from bench.tracks.concept_erasure import table

        return table.tables(records, facts.reported)
