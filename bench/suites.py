"""Predefined grids for ``bench run --suite NAME``."""
from __future__ import annotations

IMAGE_ATTACKS = ("fgsm", "pgd-linf", "pgd-l2", "cw-l2", "deepfool", "apgd-ce", "apgd-dlr",
                 "worst-case", "worst-case-l2")

SUITES: dict[str, dict] = {
    # The README's main job: the image grid on the embedded Fashion-MNIST, CPU-sized.
    "quick": {"defenses": ("standard", "pgd-at"), "attacks": IMAGE_ATTACKS, "datasets": ("fashion-mnist",),
              "seeds": (0,), "profile": "quick"},
    # Paper-like budgets, for a GPU.
    "full": {"defenses": ("standard", "pgd-at"), "attacks": IMAGE_ATTACKS, "datasets": ("fashion-mnist",),
             "seeds": (0,), "profile": "full"},
    # Every embedded image dataset, CPU-sized.
    "image": {"defenses": ("standard", "pgd-at"), "attacks": IMAGE_ATTACKS,
              "datasets": ("fashion-mnist", "mnist-5k", "uci-digits"), "seeds": (0,), "profile": "quick"},
    # Seconds: the whole path end to end, for tests.
    "smoke": {"defenses": ("standard", "pgd-at"), "attacks": IMAGE_ATTACKS, "datasets": ("uci-digits",),
              "seeds": (0,), "profile": "smoke"},
}
