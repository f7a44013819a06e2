"""The A/B statistics against textbook cases and scipy."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlprefs_sdk.services import stats as S

scipy_stats = pytest.importorskip("scipy.stats")

# Welch's example on Wikipedia ("Welch's t-test", example 1): t = -2.46, df = 25.0, p = 0.021.
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def test_welch_ttest_reproduces_the_textbook_example():
    result = S.welch_ttest(control=S.Moments.of(A2), treatment=S.Moments.of(A1))  # A1 - A2
    assert result.statistic == pytest.approx(-2.46, abs=0.005)
    assert result.df == pytest.approx(25.0, abs=0.05)
    assert result.p_value == pytest.approx(0.021, abs=0.0005)


def test_welch_ttest_matches_scipy_on_the_same_data():
    rng = random.Random(7)
    control = [rng.gauss(10, 2) for _ in range(40)]
    treatment = [rng.gauss(11, 5) for _ in range(25)]
    ours = S.welch_ttest(S.Moments.of(control), S.Moments.of(treatment))
    ref = scipy_stats.ttest_ind(treatment, control, equal_var=False)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert ours.df == pytest.approx(ref.df, rel=1e-9)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-6)


@settings(max_examples=300, deadline=None)
@given(t=st.floats(-60, 60), df=st.floats(1.0, 2e6))
def test_t_tail_probability_matches_scipy_to_1e_6_relative(t, df):
    expected = scipy_stats.t.sf(t, df)
    if expected > 1e-290:
        assert S.t_sf(t, df) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("df", [1, 1.5, 2, 3, 7.3, 30, 250, 10_000, 1_000_000])
@pytest.mark.parametrize("q", [0.6, 0.9, 0.95, 0.975, 0.995, 0.9995])
def test_t_quantile_matches_scipy(df, q):
    assert S.t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-9)
    assert S.t_ppf(1 - q, df) == pytest.approx(scipy_stats.t.ppf(1 - q, df), rel=1e-9)


@pytest.mark.parametrize("df", [S.T_AS_NORMAL_DF * (1 + 1e-12), 1.5e7, 1e8, 1e10])
def test_t_tail_above_the_normal_threshold_is_within_1e_8_of_scipy(df):
    assert df > S.T_AS_NORMAL_DF  # the large-df branch is the one tested
    worst = max(abs(S.t_sf(t / 100, df) - scipy_stats.t.sf(t / 100, df))
                for t in range(-1500, 1501))
    assert worst < 1e-8


@pytest.mark.parametrize("df", [S.T_AS_NORMAL_DF * (1 + 1e-12), 1e9])
@pytest.mark.parametrize("q", [0.6, 0.975, 0.9995])
def test_t_quantile_above_the_normal_threshold_matches_scipy(df, q):
    assert S.t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-12)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 30])
@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 3.84, 10.0, 40.0, 200.0])
def test_chi_square_tail_matches_scipy(df, x):
    assert S.chi2_sf(x, df) == pytest.approx(scipy_stats.chi2.sf(x, df), rel=1e-9)


def test_two_proportion_ztest_reproduces_a_hand_computed_case():
    # 200/1000 vs 250/1000: pooled p = 0.225, se = sqrt(0.225 * 0.775 * 2 / 1000) = 0.018675
    result = S.two_proportion_ztest(200, 1000, 250, 1000)
    assert result.statistic == pytest.approx(0.05 / math.sqrt(0.225 * 0.775 * 0.002), rel=1e-12)
    assert result.statistic == pytest.approx(2.6774, abs=1e-4)
    assert result.p_value == pytest.approx(2 * scipy_stats.norm.sf(result.statistic), rel=1e-9)
    assert result.p_value == pytest.approx(0.00742, abs=1e-5)


def test_two_proportion_ztest_keeps_tiny_p_values():
    result = S.two_proportion_ztest(1000, 100_000, 2000, 100_000)
    assert 0 < result.p_value < 1e-50
    assert result.p_value == pytest.approx(2 * scipy_stats.norm.sf(result.statistic), rel=1e-9)


def test_srm_reproduces_a_textbook_mismatch():
    # 50,000 vs 51,000 units on a 50/50 split: chi2 = 9.90, p = 0.00165 (flagged only below 0.001)
    result = S.srm_test([(50_000, 51_000, 0.5)])
    ref = scipy_stats.chisquare([50_000, 51_000], [50_500, 50_500])
    assert result.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert result.p_value == pytest.approx(0.00165, abs=1e-5)


def test_srm_adds_one_degree_of_freedom_per_traffic_period():
    groups = [(900, 100, 0.1), (500, 520, 0.5)]
    result = S.srm_test(groups)
    first = scipy_stats.chisquare([900, 100], [900, 100]).statistic
    second = scipy_stats.chisquare([500, 520], [510, 510]).statistic
    assert result.df == 2
    assert result.p_value == pytest.approx(scipy_stats.chi2.sf(first + second, 2), rel=1e-9)


def test_sample_size_for_half_a_standard_deviation_is_the_textbook_63():
    control, treatment = S.Moments(100, 0.0, 1.0), S.Moments(100, 0.5, 1.0)
    assert S.sample_size_per_arm("mean", control, treatment, alpha=0.05) == (63, 63)


def test_sample_size_for_a_conversion_lift_follows_the_unpooled_formula():
    control, treatment = S.Moments(10, 0.10, 0.0), S.Moments(10, 0.12, 0.0)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    expected = math.ceil(z * z * (0.1 * 0.9 + 0.12 * 0.88) / 0.02 ** 2)
    assert expected == 3839
    assert S.sample_size_per_arm("conversion", control, treatment, alpha=0.05) == (3839, 3839)


def test_sample_size_accounts_for_an_uneven_split():
    control, treatment = S.Moments(900, 0.0, 1.0), S.Moments(100, 0.5, 1.0)
    n_c, n_t = S.sample_size_per_arm("mean", control, treatment, alpha=0.05, ratio=1 / 9)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert n_c == math.ceil(z * z * (1 + 9) / 0.25)
    assert n_t == math.ceil(n_c / 9)


def test_sample_size_is_none_without_an_effect():
    same = S.Moments(50, 1.0, 1.0)
    assert S.sample_size_per_arm("mean", same, same, alpha=0.05) is None


def test_welch_interval_matches_scipy():
    rng = random.Random(3)
    control = [rng.gauss(5, 1) for _ in range(30)]
    treatment = [rng.gauss(5.5, 2) for _ in range(20)]
    cmp = S.compare("mean", S.Moments.of(control), S.Moments.of(treatment), alpha=0.1)
    ref = scipy_stats.ttest_ind(treatment, control, equal_var=False).confidence_interval(0.9)
    assert cmp.ci[0] == pytest.approx(ref.low, rel=1e-9)
    assert cmp.ci[1] == pytest.approx(ref.high, rel=1e-9)


def test_intervals_cover_the_true_difference_at_the_nominal_rate():
    rng = random.Random(11)
    covered = 0
    for _ in range(1000):
        control = S.Moments.of([rng.gauss(0, 1) for _ in range(12)])
        treatment = S.Moments.of([rng.gauss(0.3, 3) for _ in range(8)])
        low, high = S.compare("mean", control, treatment, alpha=0.05).ci
        covered += low <= 0.3 <= high
    assert 930 <= covered <= 970  # 95% +- 3.5 binomial standard errors


def test_moments_from_shifted_sums_keep_precision_far_from_zero():
    rng = random.Random(5)
    values = [1e9 + rng.gauss(0, 0.01) for _ in range(1000)]
    m = S.Moments.of(values)
    assert m.mean == pytest.approx(statistics.fmean(values), rel=1e-15)
    assert m.variance == pytest.approx(statistics.variance(values), rel=1e-6)


def test_identical_constant_arms_have_no_detectable_difference():
    same = S.Moments(10, 3.0, 0.0)
    assert S.welch_ttest(same, same).p_value == 1.0
    assert S.two_proportion_ztest(0, 100, 0, 100).p_value == 1.0


def test_relative_interval_uses_the_delta_method():
    control, treatment = S.Moments(1000, 0.10, 0.09), S.Moments(1000, 0.12, 0.1056)
    cmp = S.compare("conversion", control, treatment, alpha=0.05)
    se = math.sqrt(0.12 * 0.88 / 1000 / 0.01 + 0.12 ** 2 * 0.1 * 0.9 / 1000 / 0.1 ** 4)
    assert cmp.relative_effect == pytest.approx(0.2)
    assert cmp.relative_ci[1] - cmp.relative_effect == pytest.approx(
        scipy_stats.norm.ppf(0.975) * se, rel=1e-9)
