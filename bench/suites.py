"""Predefined grids for ``bench run --suite NAME``."""
from __future__ import annotations

IMAGE_ATTACKS = ("fgsm", "pgd-linf", "pgd-l2", "cw-l2", "deepfool", "apgd-ce", "apgd-dlr",
                 "worst-case", "worst-case-l2")
IMAGE_DEFENSES = ("standard", "pgd-at", "lirpa")
# CROWN costs ~0.1 s per example on these CPUs: verified accuracy by IBP on the CPU, by both on a GPU.
CPU_CERTIFIERS = ("certified-ibp",)
GPU_CERTIFIERS = ("certified-ibp", "certified-crown")

SUITES: dict[str, dict] = {
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
}
