"""The framework's statistics (bench.stats) against values worked out by hand."""
import math

import numpy as np
import pytest

from bench import stats


def test_t_interval_of_one_two_three():
    # mean 2, sample std 1, k = 3: 2 +- t(0.975, 2) / sqrt(3) = 2 +- 4.3027 / 1.7321 = 2 +- 2.4841
    low, high = stats.t_interval([1, 2, 3])
    assert low == pytest.approx(2 - 4.3027 / math.sqrt(3), abs=1e-4)
    assert high == pytest.approx(-0.4841 + 4.9682, abs=1e-3)
    assert stats.mean_std([1, 2, 3]) == (2.0, 1.0, 3)


def test_t_quantiles_large_df_close_to_tables():
    assert stats.t975(1) == 12.7062 and stats.t975(30) == 2.0423
    assert stats.t975(40) == pytest.approx(2.0211, abs=2e-4)  # the table value; Cornish-Fisher above 30
    assert stats.t975(120) == pytest.approx(1.9799, abs=2e-4)


def test_wilson_five_of_ten():
    # p = 0.5, n = 10, z = 1.96: centre 0.5, half = 1.96 sqrt(0.025 + 0.0096) / 1.3842 = 0.2366
    low, high = stats.wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)


def test_interval_says_which_method():
    assert stats.interval([0.5], n=10)["method"] == "W"
    assert stats.interval([0.1, 0.2, 0.3])["method"] == "t"
    assert stats.interval([0.01, 0.02], proportion=True)["low"] == 0.0  # clipped to [0, 1]
    boot = stats.interval([3.0], proportion=False, samples=[1.0, 3.0, 5.0])
    assert boot["method"] == "B" and 1.0 <= boot["low"] <= 3.0 <= boot["high"] <= 5.0
    assert stats.interval([3.0], proportion=False) is None and stats.interval([]) is None
    assert stats.format_interval(stats.interval([0.5], n=10)) == "[23.7, 76.3] W"


def test_mcnemar_by_hand():
    # 6 discordant pairs, 5 for A and 1 for B: p = 2 (C(6,0) + C(6,1)) / 2^6 = 14 / 64
    a = np.array([1, 1, 1, 1, 1, 0, 1, 0])
    b = np.array([0, 0, 0, 0, 0, 1, 1, 0])
    assert stats.mcnemar(a, b) == pytest.approx(14 / 64)
    assert stats.mcnemar(a, a) == 1.0


def test_paired_outcomes_on_a_hand_made_case():
    a = [[1, 1, 1, 1, 1, 0, 1, 0]]
    b = [[0, 0, 0, 0, 0, 1, 1, 0]]
    r = stats.paired_outcomes(a, b)
    assert r["diff"] == pytest.approx(4 / 8) and r["p"] == pytest.approx(14 / 64) and r["pairs"] == 8
    assert r["low"] <= r["diff"] <= r["high"]
    with pytest.raises(ValueError):
        stats.paired_outcomes([[1, 0]], [[1, 0, 1]])


def test_paired_seeds_by_hand():
    # differences 0.1, 0.2, 0.3 over seeds 0-2 (seed 3 only in A: left out): mean 0.2, std 0.1,
    # t = 0.2 / (0.1 / sqrt 3) = 3.464 on 2 df: two-sided p = 0.0742 (tables)
    r = stats.paired_seeds({0: 0.6, 1: 0.7, 2: 0.8, 3: 0.9}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert r["diff"] == pytest.approx(0.2) and r["pairs"] == 3
    assert r["low"] == pytest.approx(0.2 - 4.3027 * 0.1 / math.sqrt(3), abs=1e-4)
    assert r["p"] == pytest.approx(0.0742, abs=5e-4)
    assert stats.paired_seeds({0: 0.6}, {0: 0.5}) is None
    assert stats.format_paired(r) == "+20.0 [-4.8, 44.8] p=0.074"
