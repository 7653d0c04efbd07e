"""The statistics every track's tables share (numpy only, no scipy: tables stay a light, pure function of records).

What a table cell reports, in every track (``tables.stats_footer`` writes it under each table):

- ``mean ± std``: the mean over seeds and the *sample* standard deviation over seeds (n - 1 in the denominator),
  never a standard error; one seed shows the value alone.
- a 95 % interval: with k >= 2 seeds, Student's t interval over the seeds, mean ± t(0.975, k - 1) std / sqrt(k)
  (``t``); with one seed, over the test examples: Wilson's score interval for a proportion (``W``), or a
  percentile bootstrap of the mean for a metric that is not a proportion (``B``).
- a paired comparison against the row's reference method (e.g. PGD-AT for MTARD) on the same seeds and
  examples: with per-example outcomes (0/1 per test example and seed), McNemar's exact test on the discordant
  pairs pooled over seeds and a paired bootstrap interval of the difference over examples; without them, a
  paired t test over the common seeds (k >= 2). ``*`` marks p < 0.05.
"""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.959964
BOOTSTRAP = 2000
SEED = 20240601
ALPHA = 0.05
# Student's t 0.975 quantiles, df 1..30 (standard tables); above 30 the Cornish-Fisher expansion below.
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
        2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
        2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("a t quantile needs at least one degree of freedom")
    if df <= len(T975):
        return T975[df - 1]
    z = Z95
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def _t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t, by numerically integrating its density (df small, accuracy ~1e-6)."""
    x = abs(t)
    grid = np.linspace(0.0, x, 4001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    dens = np.exp(log_c - (df + 1) / 2 * np.log1p(grid ** 2 / df))
    integrate = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
    half = float(integrate(dens, grid))
    return 0.5 + math.copysign(half, t)


def mean_std(values) -> tuple[float, float | None, int]:
    """(mean, sample std or None below two values, count)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None), int(v.size)


def t_interval(values) -> tuple[float, float]:
    """Student's 95 % t interval of the mean of ``values`` (at least two)."""
    mean, std, k = mean_std(values)
    if std is None:
        raise ValueError("a t interval needs at least two values")
    half = t975(k - 1) * std / math.sqrt(k)
    return mean - half, mean + half


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95% by default); ``n`` may be fractional."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean(samples, draws: int = BOOTSTRAP) -> tuple[float, float]:
    """The 95 % percentile bootstrap interval of the mean of per-example ``samples`` (fixed seed)."""
    x = np.asarray(samples, dtype=float)
    rng = np.random.default_rng(SEED)
    means = x[rng.integers(0, x.size, (draws, x.size))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def interval(values, n: int | None = None, proportion: bool = True, samples=None) -> dict | None:
    """The 95 % interval of a table cell: ``{"low", "high", "method"}`` with method ``t`` (over seeds),
    ``W`` (Wilson over ``n`` examples, one seed) or ``B`` (bootstrap over per-example ``samples``, one seed);
    None when there is nothing to go on (no value, or one seed of a non-proportion without samples)."""
    values = list(values)
    if len(values) >= 2:
        low, high = t_interval(values)
        if proportion:  # a rate cannot leave [0, 1]: the t interval of few seeds can
            low, high = max(0.0, low), min(1.0, high)
        return {"low": low, "high": high, "method": "t"}
    if len(values) == 1 and proportion and n:
        low, high = wilson(values[0] * n, n)
        return {"low": low, "high": high, "method": "W"}
    if len(values) == 1 and samples is not None and len(samples):
        low, high = bootstrap_mean(samples)
        return {"low": low, "high": high, "method": "B"}
    return None


def mcnemar(a, b) -> float:
    """Exact two-sided McNemar p-value of paired 0/1 outcomes (binomial test on the discordant pairs)."""
    a, b = np.asarray(a), np.asarray(b)
    up, down = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    n = up + down
    if n == 0:
        return 1.0
    k = min(up, down)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def paired_outcomes(a, b, draws: int = BOOTSTRAP) -> dict:
    """Method A minus method B on the same examples: ``a``, ``b`` are (seeds, examples) 0/1 arrays, row i of
    each from seed i. {"diff", "low", "high", "p", "test": "McNemar", "pairs"}: the difference of the mean rates,
    its paired percentile bootstrap over examples (one resample of examples for both methods and every seed),
    McNemar's exact p-value on the discordant (seed, example) pairs."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired comparison of different seeds or examples: {a.shape} vs {b.shape}")
    per_example = (a - b).mean(0)  # the seed-averaged difference of each example
    rng = np.random.default_rng(SEED)
    boot = per_example[rng.integers(0, per_example.size, (draws, per_example.size))].mean(1)
    return {"diff": float(per_example.mean()), "low": float(np.quantile(boot, 0.025)),
            "high": float(np.quantile(boot, 0.975)), "p": mcnemar(a.ravel(), b.ravel()), "test": "McNemar",
            "pairs": int(a.size)}


def paired_seeds(a: dict, b: dict) -> dict | None:
    """Method A minus method B over their common seeds (``{seed: value}`` each): the mean difference, its t
    interval and the two-sided paired t test's p-value; None below two common seeds."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    low, high = t_interval(d)
    mean, std, k = mean_std(d)
    if std == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = 2 * (1 - _t_cdf(abs(mean) / (std / math.sqrt(k)), k - 1))
    return {"diff": mean, "low": low, "high": high, "p": float(min(1.0, max(0.0, p))), "test": "paired t",
            "pairs": k}


def format_interval(ci: dict | None, percent: bool = True, digits: int = 1) -> str:
    """``[low, high] t`` (or ``W``, ``B``); ``-`` when absent."""
    if ci is None:
        return "-"
    s = 100.0 if percent else 1.0
    return f"[{ci['low'] * s:.{digits}f}, {ci['high'] * s:.{digits}f}] {ci['method']}"


def format_paired(result: dict | None, percent: bool = True, digits: int = 1) -> str:
    """``+1.2 [-0.3, 2.6] p=0.12`` with ``*`` when p < 0.05; ``-`` when there is no comparison."""
    if result is None:
        return "-"
    s = 100.0 if percent else 1.0
    star = "*" if result["p"] < ALPHA else ""
    return (f"{result['diff'] * s:+.{digits}f} [{result['low'] * s:.{digits}f}, {result['high'] * s:.{digits}f}] "
            f"p={result['p']:.2g}{star}")
