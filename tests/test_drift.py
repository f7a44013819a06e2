"""PSI and two-sample KS: known values, scipy agreement, both engines, bad input."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from mlprefs_sdk.services.drift import detect, kolmogorov_sf, ks_2samp, psi

np = pytest.importorskip("numpy")
stats = pytest.importorskip("scipy.stats")

ENGINES = [pytest.param(True, id="numpy"), pytest.param(False, id="python")]


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_psi_of_a_known_shift(use_numpy):
    # reference 0..99 in 4 quantile bins of 25; current 50..149 fills only the top two
    # (25 and 75 values) and leaves two bins empty, which count as a share of 1e-4.
    value = psi(list(range(100)), list(range(50, 150)), bins=4, use_numpy=use_numpy)
    empty = 1e-4
    expected = 2 * (empty - 0.25) * math.log(empty / 0.25) + (0.75 - 0.25) * math.log(3)
    assert value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_psi_of_a_sample_against_itself_is_zero(use_numpy):
    values = np.random.default_rng(1).normal(size=1000)
    assert psi(values, values, use_numpy=use_numpy) == 0.0


def test_psi_engines_agree_on_random_data():
    rng = np.random.default_rng(2)
    ref, cur = rng.normal(size=5000), rng.normal(0.3, 1.2, size=4000)
    assert psi(ref, cur, use_numpy=False) == pytest.approx(psi(ref, cur, use_numpy=True),
                                                           rel=1e-12)


def test_psi_merges_tied_quantiles_of_discrete_data():
    ref = [0] * 90 + [1] * 10
    assert psi(ref, ref) == 0.0
    assert psi(ref, [0] * 50 + [1] * 50) > 0.2


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_ks_statistic_and_p_value_match_scipy(use_numpy):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=3000), rng.normal(0.1, 1, size=2000)
    d, p = ks_2samp(a, b, use_numpy=use_numpy)
    theirs = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(theirs.statistic, abs=1e-12)
    en = 3000 * 2000 / 5000
    assert p == pytest.approx(stats.kstwobign.sf(math.sqrt(en) * d), rel=1e-9)
    assert p == pytest.approx(theirs.pvalue, rel=0.05)


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_ks_with_ties_matches_scipy(use_numpy):
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 5, size=700), rng.integers(0, 6, size=500)
    d, _ = ks_2samp(a.tolist(), b.tolist(), use_numpy=use_numpy)
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_kolmogorov_distribution_matches_scipy():
    for x in [0.05, 0.3, 0.6, 0.9, 1.0, 1.17, 1.19, 1.5, 2.0, 3.0]:
        assert kolmogorov_sf(x) == pytest.approx(stats.kstwobign.sf(x), rel=1e-9, abs=1e-15)


def test_detect_applies_threshold_and_p_value():
    same = list(range(200))
    shifted = [v + 150 for v in same]
    assert not detect(same, same, "psi", 0.2, 0.05).drifted
    assert detect(same, shifted, "psi", 0.2, 0.05).drifted
    result = detect(same, shifted, "ks", 0.2, 0.05)
    assert result.method == "ks" and result.p_value < 0.05 and result.drifted


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="psi, ks"):
        detect([1.0], [1.0], "chi2", 0.2, 0.05)


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_empty_input_is_refused(use_numpy):
    with pytest.raises(ValueError, match="current is empty"):
        psi([1.0, 2.0], [], use_numpy=use_numpy)
    with pytest.raises(ValueError, match="reference is empty"):
        ks_2samp(np.array([]), [1.0], use_numpy=use_numpy)


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_non_numeric_input_names_the_item(use_numpy):
    with pytest.raises(TypeError, match="item 1 is str 'b'"):
        psi([1.0, "b", 3.0], [1.0], use_numpy=use_numpy)
    with pytest.raises(TypeError, match="item 0 is NoneType"):
        ks_2samp([1.0], [None, 2.0], use_numpy=use_numpy)


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_nan_is_refused(use_numpy):
    with pytest.raises(ValueError, match="NaN at index 2"):
        psi([1.0, 2.0, float("nan")], [1.0], use_numpy=use_numpy)


def test_importing_drift_does_not_import_numpy():
    code = ("import sys, mlprefs_sdk.services.drift as d; "
            "assert d.psi([1, 2, 3], [1, 2, 3], use_numpy=False) == 0.0; "
            "assert 'numpy' not in sys.modules, 'numpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("use_numpy", ENGINES)
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), np.float64("inf")])
@pytest.mark.parametrize("which", ["reference", "current"])
def test_an_infinite_value_is_a_value_error_naming_sample_and_item(use_numpy, bad, which):
    samples = {"reference": [1.0, 2.0, 3.0], "current": [1.0, 2.0, 3.0]}
    samples[which] = [1.0, 2.0, bad, 4.0]
    for method in ("psi", "ks"):
        with pytest.raises(ValueError, match=f"{which} item 2 is an infinite value"):
            detect(samples["reference"], samples["current"], method, 0.2, 0.05,
                   use_numpy=use_numpy)


@pytest.mark.parametrize("use_numpy", ENGINES)
@pytest.mark.parametrize("which", ["reference", "current"])
def test_an_int_beyond_float_range_is_a_value_error_naming_sample_and_item(use_numpy, which):
    samples = {"reference": [1, 2, 3], "current": [1, 2, 3]}
    samples[which] = [1, 10 ** 400, 3]
    with pytest.raises(ValueError, match=f"{which} item 1 is a number beyond float range"):
        psi(samples["reference"], samples["current"], use_numpy=use_numpy)
    with pytest.raises(ValueError, match=f"{which} item 1 is a number beyond float range"):
        ks_2samp(samples["reference"], samples["current"], use_numpy=use_numpy)


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_an_infinite_value_in_a_numpy_array_is_named(use_numpy):
    with pytest.raises(ValueError, match="current item 3 is an infinite value"):
        psi(np.arange(5.0), np.array([0.0, 1.0, 2.0, -np.inf]), use_numpy=use_numpy)


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_psi_sees_a_shift_wholly_above_a_constant_reference(use_numpy):
    result = detect([5.0] * 200, [6.0] * 200, "psi", 0.2, 0.05, use_numpy=use_numpy)
    assert result.drifted and result.score > 10
    assert psi([5.0] * 200, [5.0] * 50, use_numpy=use_numpy) == 0.0


@pytest.mark.parametrize("use_numpy", ENGINES)
def test_psi_sees_a_shift_above_a_reference_tied_at_its_maximum(use_numpy):
    ref = [0.0] * 10 + [1.0] * 90
    assert psi(ref, [3.0] * 100, use_numpy=use_numpy) > 10


def test_psi_engines_agree_when_the_current_sample_leaves_the_reference_range():
    ref = [5.0] * 100 + [1.0, 2.0]
    cur = [4.0] * 30 + [9.0] * 70
    assert psi(ref, cur, use_numpy=False) == pytest.approx(psi(ref, cur, use_numpy=True),
                                                           rel=1e-12)
