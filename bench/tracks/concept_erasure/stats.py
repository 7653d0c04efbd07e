"""Statistics of the concept-erasure track, on per-case outcomes (numpy only: the tables use them too). The
Wilson interval and McNemar's test are the framework's (``bench.stats``); what is specific here is the prompt
clustering.

A cell's outcomes form an array ``(erasure seeds, prompts, sampling seeds)`` of 0/1: the generations of one
prompt share its wording, so they are correlated (a cluster), and one erasure seed is one trained model.

- ``interval``: the percentile bootstrap over the clusters -- prompts resampled with all their sampling seeds,
  and, with several erasure seeds, the seeds resampled independently (a crossed design) -- joined with the Wilson
  interval at the Kish effective sample size n / deff, deff = 1 + (m - 1) ICC (the ANOVA intra-prompt
  correlation, clipped to [0, 1]): the bootstrap alone is degenerate for an all-0 or all-1 cell and
  optimistic with few prompts; the Wilson part alone ignores the clustering.
- ``paired``: method A minus method B on the same prompts x sampling seeds: the difference in rates, its paired
  bootstrap interval (the same prompt resample for both; each method's erasure seeds resampled on their own) --
  or, when every resample gives the same difference (few prompts, all alike), Newcombe's interval from the two
  Kish-Wilson intervals (which ignores the pairing, so errs wide) -- and McNemar's exact two-sided p-value on the
  discordant (case, seed index) pairs (which ignores the clustering).
"""
from __future__ import annotations

import math

import numpy as np

from bench.stats import BOOTSTRAP, SEED, mcnemar, wilson  # noqa: F401 (shared; wilson re-exported for the track)


def as_cells(outcomes: str | list[str], cluster_size: int) -> np.ndarray:
    """'0110...' strings (one per erasure seed, cases prompt-major with ``cluster_size`` seeds per prompt) ->
    a (seeds, prompts, sampling seeds) array."""
    rows = [outcomes] if isinstance(outcomes, str) else list(outcomes)
    arr = np.array([[c == "1" for c in r] for r in rows], dtype=float)
    return arr.reshape(len(rows), -1, cluster_size)


def icc(cells: np.ndarray) -> float:
    """The one-way ANOVA intra-class correlation of binary outcomes with prompts as groups (erasure seeds and
    sampling seeds pooled within a prompt); 0 when it cannot be estimated."""
    groups = cells.transpose(1, 0, 2).reshape(cells.shape[1], -1)
    k, m = groups.shape
    if k < 2 or m < 2:
        return 0.0
    means, grand = groups.mean(1), groups.mean()
    msb = m * ((means - grand) ** 2).sum() / (k - 1)
    msw = ((groups - means[:, None]) ** 2).sum() / (k * (m - 1))
    if msb + (m - 1) * msw <= 0:
        return 0.0
    return float(min(1.0, max(0.0, (msb - msw) / (msb + (m - 1) * msw))))


def _resample(rng, shape, draws):
    seeds, prompts = shape[0], shape[1]
    return rng.integers(0, seeds, (draws, seeds)), rng.integers(0, prompts, (draws, prompts))


def bootstrap_rates(cells: np.ndarray, prompt_idx: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:
    per = cells.mean(2)  # (seeds, prompts): rate per model and prompt
    return np.array([per[np.ix_(s, p)].mean() for s, p in zip(seed_idx, prompt_idx)])


def interval(cells: np.ndarray, draws: int = BOOTSTRAP) -> dict:
    """{"value", "ci_low", "ci_high", "wilson_low", "wilson_high", "boot_low", "boot_high", "deff"}."""
    value = float(cells.mean())
    n = cells.size
    rng = np.random.default_rng(SEED)
    seed_idx, prompt_idx = _resample(rng, cells.shape, draws)
    boot = bootstrap_rates(cells, prompt_idx, seed_idx)
    b_low, b_high = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))
    m = n / cells.shape[1]
    deff = 1 + (m - 1) * icc(cells)
    w_low, w_high = wilson(value * n / deff, n / deff)
    return {"value": value, "ci_low": min(b_low, w_low), "ci_high": max(b_high, w_high), "wilson_low": w_low,
            "wilson_high": w_high, "boot_low": b_low, "boot_high": b_high, "deff": deff}


def paired(a: np.ndarray, b: np.ndarray, draws: int = BOOTSTRAP) -> dict:
    """A - B on the same cases: arrays (seeds_a, prompts, m) and (seeds_b, prompts, m)."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError("paired comparison of different case sets")
    rng = np.random.default_rng(SEED)
    diff = float(a.mean() - b.mean())
    prompt_idx = rng.integers(0, a.shape[1], (draws, a.shape[1]))
    seeds_a = rng.integers(0, a.shape[0], (draws, a.shape[0]))
    seeds_b = rng.integers(0, b.shape[0], (draws, b.shape[0]))
    boot = bootstrap_rates(a, prompt_idx, seeds_a) - bootstrap_rates(b, prompt_idx, seeds_b)
    low, high = float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))
    if high - low < 1e-12:  # every resample alike (few prompts): Newcombe's interval from the two Kish-Wilson ones
        ia, ib = interval(a, draws), interval(b, draws)
        low = diff - math.hypot(ia["value"] - ia["wilson_low"], ib["wilson_high"] - ib["value"])
        high = diff + math.hypot(ia["wilson_high"] - ia["value"], ib["value"] - ib["wilson_low"])
    k = min(a.shape[0], b.shape[0])  # McNemar pairs erasure seed i of A with seed i of B, case by case
    p = mcnemar(a[:k].ravel(), b[:k].ravel())
    return {"diff": diff, "ci_low": low, "ci_high": high, "p_mcnemar": p, "pairs": int(a[:k].size)}
