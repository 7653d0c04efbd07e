"""The distillation teachers of ARD and MTARD as defenses of their own, so that the MTARD table shows each
teacher as a row (clean and robust accuracy) and the students are read against them.

Each teacher is its base defense (``standard``, ``pgd-at``, ``trades``) at ``TEACHER_WIDTH`` times the student's
width, trained at the base defense's own budget in every profile (epochs, PGD steps, architecture: the full
budget of that profile, the same as the rows it is compared with). A student asks the runner for the teacher by
this name, so the teacher row and the model distilled from are one cached model.
"""
from __future__ import annotations

from bench_defenses.image_robustness.pgd_at import PGDAT
from bench_defenses.image_robustness.standard import Standard
from bench_defenses.image_robustness.trades import TRADES

TEACHER_WIDTH = 2  # larger than the student: the paper's teachers are bigger networks than its students
TEACHER_OF = {"standard": "standard-teacher", "pgd-at": "pgd-at-teacher", "trades": "trades-teacher"}


def _teacher_profiles(base) -> dict[str, dict]:
    return {profile: {**base.profiles.get(profile, {}), "width": TEACHER_WIDTH}
            for profile in ("smoke", "quick", "full")}


class StandardTeacher(Standard):
    """MTARD's clean teacher: ``standard`` at twice the student's width, its budget in each profile.

    Threat model: none (clean training). Defaults and departures: ``standard``'s, but the width."""

    profiles = _teacher_profiles(Standard)


class PGDATTeacher(PGDAT):
    """The robust teacher of ARD and MTARD (default): ``pgd-at`` at twice the student's width, its budget in
    each profile (full: 20 epochs, 10 PGD steps, the cnn architecture).

    Paper: Madry et al. 2018 (as ``pgd-at``). Threat model: Linf at the dataset's first budget. Defaults and
    departures: ``pgd-at``'s, but the width (the MTARD paper's teachers are larger networks than the student)."""

    profiles = _teacher_profiles(PGDAT)


class TRADESTeacher(TRADES):
    """The alternative robust teacher (``robust_teacher=trades``): ``trades`` at twice the student's width.

    Paper: Zhang et al. 2019 (as ``trades``). Threat model: Linf at the dataset's first budget. Defaults and
    departures: ``trades``'s, but the width."""

    profiles = _teacher_profiles(TRADES)
