"""The image-robustness track: image classifiers under Linf/L2 attacks, and certified (verified) accuracy.

Folders: datasets, shared models, the training loop and the PGD core here; attacks in ``attacks/image_robustness/``
(installed as ``bench_attacks.image_robustness``), defenses in ``defenses/image_robustness/``. The unlearning and
domain-shift tracks build their classifiers with this track's models and training loop.
"""
from __future__ import annotations

from bench.plugins import Track

TRACK = "image-robustness"

ATTACKS = ("fgsm", "pgd-linf", "pgd-l2", "cw-l2", "deepfool", "apgd-ce", "apgd-dlr", "worst-case", "worst-case-l2")
DEFENSES = ("standard", "pgd-at", "lirpa")
# AutoAttack's standard components (Croce & Hein 2020), Linf and L2: the full worst case's first attacks, and
# columns of their own in the full grid.
AUTOATTACK = ("apgd-t", "fab-t", "square", "apgd-ce-l2", "apgd-t-l2", "fab-t-l2", "square-l2")
# CROWN costs ~0.1 s per example on these CPUs: verified accuracy by IBP on the CPU, by both on a GPU.
CPU_CERTIFIERS = ("certified-ibp",)
GPU_CERTIFIERS = ("certified-ibp", "certified-crown")
# Multi-teacher distillation against its baselines, one student architecture per profile.
# The teachers are rows too (larger than the student, at the full budget): the students are read against them.
# Jobs start in this order: the distilled students first, so that their lanes train the two teachers side by side
# (mtard asks for the clean one first, ard for the robust one), and the rows the image grid shares last, so that
# beside a running `full` grid their cells are mostly found finished rather than computed twice.
MTARD_DEFENSES = ("mtard", "ard", "trades", "standard-teacher", "pgd-at-teacher", "standard", "pgd-at")
MTARD_ATTACKS = ("fgsm", "pgd-linf", "cw-linf", "worst-case")


# Every full row runs three seeds: a t interval over seeds needs at least two degrees of freedom to be useful.
FULL_SEEDS = (0, 1, 2)


def _grid(defenses, attacks, datasets, profile, seeds=(0,), sets=()):
    grid = {"defenses": defenses, "attacks": attacks, "datasets": datasets, "seeds": seeds, "profile": profile}
    return {**grid, "sets": sets} if sets else grid


class ImageRobustness(Track):
    """Robust accuracy at the dataset's conventional eps per norm, the per-example worst case over attacks,
    verified accuracy, robustness curves."""

    suites = {
        # The README's main job: the image grid on the embedded Fashion-MNIST, CPU-sized.
        "quick": _grid(DEFENSES, ATTACKS + CPU_CERTIFIERS, ("fashion-mnist",), "quick"),
        "full": _grid(DEFENSES, ATTACKS + AUTOATTACK + GPU_CERTIFIERS, ("fashion-mnist",), "full", FULL_SEEDS),  # GPU
        # RobustBench's shape for users who have CIFAR-10 (binary version, --data-root): ResNet-18, eps 8/255 and
        # 0.5; CROWN is left out (auto_LiRPA 0.3 cannot bound residual blocks), IBP stays.
        "cifar10-full": _grid(DEFENSES, ATTACKS + AUTOATTACK + CPU_CERTIFIERS, ("cifar10",), "full", FULL_SEEDS,
                              sets=("arch=resnet18",)),
        # Every embedded image dataset, CPU-sized.
        "image": _grid(DEFENSES, ATTACKS + CPU_CERTIFIERS, ("fashion-mnist", "mnist-5k", "uci-digits"), "quick"),
        # Seconds: the whole path end to end, for tests.
        "smoke": _grid(DEFENSES, ATTACKS + CPU_CERTIFIERS, ("uci-digits",), "smoke"),
        "mtard-quick": _grid(MTARD_DEFENSES, MTARD_ATTACKS, ("fashion-mnist",), "quick"),
        "mtard-full": _grid(MTARD_DEFENSES, MTARD_ATTACKS, ("fashion-mnist",), "full", FULL_SEEDS),
    }
    contract = {"dataset": "uci-digits", "defense": "standard", "inputs": "tensors"}
    summary_metrics = ("verified_acc", "robust_acc")  # a certifier: verified, then its companion's robust

    def tables(self, records, facts):
        from bench.tracks.image_robustness import table

        return table.tables(records, facts)

    def figures(self, records, out_dir, facts):
        from bench.tracks.image_robustness import table

        return table.figures(records, out_dir, facts)
