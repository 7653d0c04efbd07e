"""What every membership-inference evaluator of the unlearning track reports, computed one way.

An attack gives each example a score (higher: more likely a member). On the evaluated model it scores the
forget set and the class-matched non-members (``scenarios.membership_sets``); on the original model it scores
the same sets, which measures the attack's own power (the forget set *was* trained on there): the validity gate.

Per attack definition (``definition_id``), the metrics are:

- ``mia_auc``: ROC AUC of forget set vs the ``eval`` non-members on the evaluated model, with its bootstrap 95%
  interval as ``split`` "lo" / "hi" (retrain's value is the goal; 0.5 = the forget set looks like unseen data);
- ``mia_tpr@1%fpr``, ``mia_tpr@0.1%fpr``: the share of the forget set above the threshold that lets at most that
  share of the ``eval`` non-members through (a strict inequality, so ties never count), with intervals;
- ``mia_forget``: the share of the forget set called "member" at a threshold calibrated on the held-out
  ``cal`` non-members to the stated false-positive rate (``member_fpr``), with an interval;
  ``mia_fpr_heldout``: the share of the ``eval`` non-members that threshold calls members (calibration check);
- ``mia_power_auc`` (+ "lo" / "hi"): the same AUC on the original model -- the attack's power;
  ``mia_signal``: 1 when that interval lies above 0.5, else 0 (tables then show the attack's numbers as "n.s.");
  an interval below 0.5 is no power either: the attack ranks the members it should find *lower*.

Intervals: percentile bootstrap over examples (forget set and non-members resampled separately; the threshold
re-calibrated in each resample), ``resamples`` times, seeded by ``seed`` and the definition id alone, so every
record of a scenario resamples alike. The shadow models are not resampled (their variance is not in the
interval).
"""
from __future__ import annotations

import zlib

import numpy as np

FPRS = ((0.01, "1%"), (0.001, "0.1%"))
UNATTAINABLE_FPR = "the lowest attainable FPR is 0"  # in a TPR's definition; the table marks such cells


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a member > score of a non-member) + half the ties (Mann-Whitney)."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return 0.5
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def threshold_at_fpr(neg: np.ndarray, fpr: float) -> float:
    """The threshold t such that at most ``floor(fpr * n)`` of ``neg`` have a score > t (the (k+1)-th largest)."""
    neg = np.sort(np.asarray(neg, float))[::-1]
    k = int(np.floor(fpr * len(neg) + 1e-9))
    return float(neg[min(k, len(neg) - 1)]) if len(neg) else float("inf")


def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    return float((np.asarray(pos) > threshold_at_fpr(neg, fpr)).mean()) if len(pos) else 0.0


def candidate_parts(ms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of [forget, cal, eval] in an attack's scores laid out as the forget set then the non-members
    (``scenarios.membership_sets``), as numpy arrays: a one-element torch index into a numpy array would give a
    scalar, not a set of one."""
    n_f = len(ms.forget)
    return np.arange(n_f), n_f + ms.cal.numpy(), n_f + ms.eval.numpy()


def _rng(seed: int, definition_id: str, what: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(definition_id.encode()), zlib.crc32(what.encode())])


def bootstrap(stat, arrays: list[np.ndarray], resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95% interval of ``stat(*arrays)`` with each array resampled (with replacement) on its own."""
    values = np.empty(resamples)
    for i in range(resamples):
        values[i] = stat(*[a[rng.integers(0, len(a), len(a))] if len(a) else a for a in arrays])
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def _clip(v: float) -> float:
    return float(min(1.0, max(0.0, v)))


def attack_metrics(definition_id: str, text: str, forget: np.ndarray, cal: np.ndarray, ev: np.ndarray,
                   power_forget: np.ndarray, power_ev: np.ndarray, member_fpr: float, resamples: int,
                   seed: int) -> list[dict]:
    """The metrics of one attack definition (see the module docstring). ``forget``, ``cal``, ``ev``: scores on
    the evaluated model; ``power_forget``, ``power_ev``: on the original model."""
    base = {"definition_id": definition_id}
    out = []

    def add(name, value, n, what, interval=None):
        out.append({"name": name, "value": _clip(value), "n": int(n), **base, "definition": f"{text}; {what}"})
        if interval is not None:
            for label, bound in zip(("lo", "hi"), interval):
                out.append({"name": name, "split": label, "value": _clip(bound), "n": int(n), **base,
                            "definition": f"{text}; {what}: bootstrap 95% interval, {label} end "
                                          f"({resamples} resamples)"})

    n_auc = len(forget) + len(ev)
    add("mia_auc", auc(forget, ev), n_auc, "ROC AUC, forget set vs held-out class-matched non-members",
        bootstrap(auc, [forget, ev], resamples, _rng(seed, definition_id, "auc")))
    for fpr, label in FPRS:
        floor = "" if fpr * len(ev) >= 1 else f" (with {len(ev)} non-members {UNATTAINABLE_FPR})"
        add(f"mia_tpr@{label}fpr", tpr_at_fpr(forget, ev, fpr), n_auc,
            f"share of the forget set above the threshold passing at most {label} of the held-out non-members"
            + floor, bootstrap(lambda p, n, f=fpr: tpr_at_fpr(p, n, f), [forget, ev], resamples,
                               _rng(seed, definition_id, f"tpr{fpr}")))
    threshold = threshold_at_fpr(cal, member_fpr)
    add("mia_forget", float((forget > threshold).mean()) if len(forget) else 0.0, len(forget),
        f"share of the forget set called member at a threshold calibrated on {len(cal)} held-out non-members "
        f"to a false-positive rate of {member_fpr:g}",
        bootstrap(lambda f, c: float((f > threshold_at_fpr(c, member_fpr)).mean()), [forget, cal], resamples,
                  _rng(seed, definition_id, "forget")))
    add("mia_fpr_heldout", float((ev > threshold).mean()) if len(ev) else 0.0, len(ev),
        f"share of {len(ev)} other held-out non-members called member at that threshold (stated FPR "
        f"{member_fpr:g}: the calibration check)")
    power = auc(power_forget, power_ev)
    interval = bootstrap(auc, [power_forget, power_ev], resamples, _rng(seed, definition_id, "power"))
    add("mia_power_auc", power, len(power_forget) + len(power_ev),
        "validity gate: the attack's ROC AUC on the ORIGINAL model, forget set (members there) vs held-out "
        "class-matched non-members", interval)
    signal = interval[0] > 0.5
    add("mia_signal", 1.0 if signal else 0.0, len(power_forget) + len(power_ev),
        "1 when the validity gate's interval lies above 0.5 (the attack tells members from non-members on the "
        "original model), else 0: its numbers then mean nothing ('n.s.' in tables)")
    return out


def phi(logits, labels) -> np.ndarray:
    """LiRA's logit-scaled confidence of the given label: log p_y - log(1 - p_y), computed stably as
    z_y - logsumexp_{j != y} z_j (float64)."""
    import torch

    z = logits.double()
    zy = z.gather(1, labels[:, None]).squeeze(1)
    others = z.scatter(1, labels[:, None], float("-inf"))
    return (zy - torch.logsumexp(others, dim=1)).numpy()


def gaussians(values: np.ndarray, inside: np.ndarray, variance: str):
    """Per-example Gaussians of shadow statistics ``values`` (n_shadows, n) split by ``inside`` (bool, same
    shape): (mu_in, sd_in, mu_out, sd_out), each (n,). Means are medians (LiRA's code); variance
    "per-example" or "global" (the pooled within-example variance, one per side)."""
    out = []
    for mask in (inside, ~inside):
        masked = np.where(mask, values, np.nan)
        mu = np.nanmedian(masked, axis=0)
        if variance == "per-example":
            sd = np.nanstd(masked, axis=0)
        else:
            dev = np.where(mask, values - np.nanmean(masked, axis=0), 0.0)
            dof = max(1, int(mask.sum()) - int(mask.any(axis=0).sum()))
            sd = np.full(values.shape[1], np.sqrt((dev ** 2).sum() / dof))
        out += [mu, np.maximum(sd, 1e-3)]
    return tuple(out)


def log_normal(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)


def online_score(target: np.ndarray, fit) -> np.ndarray:
    mu_in, sd_in, mu_out, sd_out = fit
    return log_normal(target, mu_in, sd_in) - log_normal(target, mu_out, sd_out)


def offline_score(target: np.ndarray, fit) -> np.ndarray:
    """One-sided: log P(OUT statistic <= target), higher for examples more confident than the OUT shadows."""
    from scipy.stats import norm

    _, _, mu_out, sd_out = fit
    return norm.logcdf((target - mu_out) / sd_out)
