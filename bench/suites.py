"""Predefined grids for ``bench run --suite NAME``."""
from __future__ import annotations

IMAGE_ATTACKS = ("fgsm", "pgd-linf", "pgd-l2", "cw-l2", "deepfool", "apgd-ce", "apgd-dlr",
                 "worst-case", "worst-case-l2")
IMAGE_DEFENSES = ("standard", "pgd-at", "lirpa")
# CROWN costs ~0.1 s per example on these CPUs: verified accuracy by IBP on the CPU, by both on a GPU.
CPU_CERTIFIERS = ("certified-ibp",)
GPU_CERTIFIERS = ("certified-ibp", "certified-crown")

MTARD_DEFENSES = ("standard", "pgd-at", "trades", "ard", "mtard")
MTARD_ATTACKS = ("fgsm", "pgd-linf", "cw-linf", "worst-case")

UNLEARNING_DEFENSES = ("original", "retrain", "finetune", "neggrad", "random-label", "laf", "laf-r")
UNLEARNING_EVALUATORS = ("unlearning-acc", "mia")
UNLEARNING_SCENARIOS = ("fashion-mnist-random", "fashion-mnist-uniform", "fashion-mnist-class",
                        "fashion-mnist-noisy")

DOMAIN_DEFENSES = ("erm", "dsu", "mixstyle", "advstyle-noise", "advstyle")
DOMAIN_ATTACKS = ("domain-accuracy",)
# On a GPU the same models also enter the image-robustness grid (on the shared CPUs PGD cost ~90 s a model).
DOMAIN_GPU_ATTACKS = ("domain-accuracy", "pgd-linf")
DOMAIN_DATASETS = ("digits-dg", "fashion-dg")

# `none` first: the erasure methods start from its (cached) model, so their times measure the erasure alone.
ERASURE_DEFENSES = ("none", "esd", "advunlearn", "advunlearn-fast")
ERASURE_EVALUATORS = ("concept-prompts", "unlearndiffatk", "soft-prompt", "erasure-utility")
# Concepts the quick base model draws recognisably (16x16: the judge finds few of its sneakers; see README).
ERASURE_DATASETS = ("fashion-erase-bag", "fashion-erase-trouser")
ERASURE_FULL_DATASETS = ERASURE_DATASETS + ("fashion-erase-sneaker",)  # the 28x28 model may draw sneakers

TEXT_DEFENSES = ("mlp-ft", "mlp-ft-adv", "mvp", "mvp-adv")
TEXT_ATTACKS = ("pwws", "textfooler", "bert-attack", "textbugger")

SUITES: dict[str, dict] = {
    # Text robustness (MVP vs MLP-FT), CPU-sized: MiniLM-L6, 1,000 training snippets, 50 attacked examples.
    "text-quick": {"defenses": ("mlp-ft", "mvp"), "attacks": ("pwws", "textfooler"), "datasets": ("rotten-tomatoes",),
                   "seeds": (0,), "profile": "quick"},
    "text-full": {"defenses": TEXT_DEFENSES, "attacks": TEXT_ATTACKS, "datasets": ("rotten-tomatoes", "bbc-news"),
                  "seeds": (0,), "profile": "full"},
    # The README's main job: the image grid on the embedded Fashion-MNIST, CPU-sized.
    "quick": {"defenses": IMAGE_DEFENSES, "attacks": IMAGE_ATTACKS + CPU_CERTIFIERS,
              "datasets": ("fashion-mnist",), "seeds": (0,), "profile": "quick"},
    # Paper-like budgets, for a GPU.
    "full": {"defenses": IMAGE_DEFENSES, "attacks": IMAGE_ATTACKS + GPU_CERTIFIERS,
             "datasets": ("fashion-mnist",), "seeds": (0,), "profile": "full"},
    # Every embedded image dataset, CPU-sized.
    "image": {"defenses": IMAGE_DEFENSES, "attacks": IMAGE_ATTACKS + CPU_CERTIFIERS,
              "datasets": ("fashion-mnist", "mnist-5k", "uci-digits"), "seeds": (0,), "profile": "quick"},
    # Seconds: the whole path end to end, for tests.
    "smoke": {"defenses": IMAGE_DEFENSES, "attacks": IMAGE_ATTACKS + CPU_CERTIFIERS, "datasets": ("uci-digits",),
              "seeds": (0,), "profile": "smoke"},
    # MTARD (issue 4): multi-teacher distillation against its baselines, one student architecture per profile.
    "mtard-quick": {"defenses": MTARD_DEFENSES, "attacks": MTARD_ATTACKS, "datasets": ("fashion-mnist",),
                    "seeds": (0,), "profile": "quick"},
    "mtard-full": {"defenses": MTARD_DEFENSES, "attacks": MTARD_ATTACKS, "datasets": ("fashion-mnist",),
                   "seeds": (0,), "profile": "full"},
    # Unlearning (issue 5): `original` first, so the methods' times measure the unlearning step only.
    "unlearning-quick": {"defenses": UNLEARNING_DEFENSES, "attacks": UNLEARNING_EVALUATORS,
                         "datasets": UNLEARNING_SCENARIOS, "seeds": (0,), "profile": "quick"},
    "unlearning-full": {"defenses": UNLEARNING_DEFENSES, "attacks": UNLEARNING_EVALUATORS,
                        "datasets": UNLEARNING_SCENARIOS, "seeds": (0, 1), "profile": "full"},
    "unlearning-smoke": {"defenses": UNLEARNING_DEFENSES, "attacks": UNLEARNING_EVALUATORS,
                         "datasets": ("uci-digits-random",), "seeds": (0,), "profile": "smoke"},
    # Single-source domain generalisation (issue 6).
    "domain-quick": {"defenses": DOMAIN_DEFENSES, "attacks": DOMAIN_ATTACKS, "datasets": DOMAIN_DATASETS,
                     "seeds": (0, 1, 2), "profile": "quick"},
    "domain-full": {"defenses": DOMAIN_DEFENSES, "attacks": DOMAIN_GPU_ATTACKS, "datasets": DOMAIN_DATASETS,
                    "seeds": (0, 1), "profile": "full"},
    # Concept erasure (issue 8): ESD and AdvUnlearn on a small text-to-image model, under prompt attacks.
    "erasure-quick": {"defenses": ERASURE_DEFENSES, "attacks": ERASURE_EVALUATORS, "datasets": ERASURE_DATASETS,
                      "seeds": (0,), "profile": "quick"},
    "erasure-full": {"defenses": ERASURE_DEFENSES, "attacks": ERASURE_EVALUATORS, "datasets": ERASURE_FULL_DATASETS,
                     "seeds": (0,), "profile": "full"},
    "erasure-smoke": {"defenses": ERASURE_DEFENSES, "attacks": ERASURE_EVALUATORS,
                      "datasets": ("fashion-erase-sneaker",), "seeds": (0,), "profile": "smoke"},
}
