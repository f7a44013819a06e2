"""Distribution drift: Population Stability Index and the two-sample Kolmogorov-Smirnov test.

Both take lists or numpy arrays. numpy is imported on first use, never at module import; when
it is not installed a pure-Python path computes the same numbers (sorting plus bisection).

PSI: the reference's quantiles cut `bins` bins (ties merged); each sample's share per bin is
compared, and an empty bin counts as a share of EMPTY_SHARE so the logarithm stays finite.
The top bin is open-ended; when the reference's values in it are all one value (ties at the
maximum, e.g. a constant feature) values above that maximum get a bin of their own, so a
shift wholly beyond the reference's range is seen (5.0s against 6.0s is drift, not PSI 0).
Below the range needs no such bin: the lowest quantile edge is above the minimum, or it is the
minimum and the bin below it holds no reference value.
Every value must be finite and fit a float: NaN, +-inf or an int beyond float range is a
ValueError naming the sample and the item, on both paths.
KS: D = max |F_ref - F_cur| over the pooled values; the p-value is Kolmogorov's asymptotic
distribution at sqrt(n*m/(n+m)) * D (scipy's `kstwobign.sf`).
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
import math
import numbers
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = ["DriftResult", "psi", "ks_2samp", "kolmogorov_sf", "detect", "METHODS"]

METHODS = ("psi", "ks")
DEFAULT_BINS = 10
EMPTY_SHARE = 1e-4


@attrs.frozen
class DriftResult:
    """method "psi" (score = PSI, p_value None) or "ks" (score = D statistic, p_value)."""

    method: str
    score: float
    p_value: float | None
    drifted: bool


@functools.lru_cache(maxsize=1)
def _numpy() -> Any:
    if importlib.util.find_spec("numpy") is None:
        return None
    import numpy

    return numpy


def _engine(use_numpy: bool | None) -> Any:
    """numpy when it is importable (always so for an ndarray input), unless told otherwise."""
    if use_numpy is False:
        return None
    np = _numpy()
    if use_numpy and np is None:
        raise ImportError("use_numpy=True but numpy is not installed")
    return np


# -- input ---------------------------------------------------------------------------------
def _not_a_number(name: str, index: int, value: Any) -> TypeError:
    return TypeError(f"drift: {name} must hold numbers; item {index} is "
                     f"{type(value).__name__} {value!r}")


def _bad_value(name: str, index: int, value: Any) -> ValueError:
    try:
        as_float = float(value)
    except OverflowError:
        as_float = None
    if as_float is not None and math.isnan(as_float):
        return ValueError(f"drift: {name} contains NaN at index {index}; drop or impute "
                          "missing values first")
    what = "a number beyond float range" if as_float is None else "an infinite value"
    return ValueError(f"drift: {name} item {index} is {what} ({value!r}); every value must "
                      "be finite")


def _check_items(name: str, items: Any) -> None:
    """Raise for the first item that is not a finite number representable as a float."""
    for i, v in enumerate(items):
        if not isinstance(v, numbers.Real):
            raise _not_a_number(name, i, v)
        try:
            f = float(v)
        except OverflowError:
            raise _bad_value(name, i, v) from None
        if not math.isfinite(f):
            raise _bad_value(name, i, v)


def _as_array(np: Any, values: Any, name: str) -> Any:
    if not hasattr(values, "__len__"):  # a generator or other one-pass iterable
        values = list(values)
    try:
        arr = np.asarray(values).ravel()
    except OverflowError:  # ints too large even for an object array's conversion
        _check_items(name, values)
        raise
    if arr.size == 0:
        raise ValueError(f"drift: {name} is empty; both samples need at least one value")
    if arr.dtype.kind not in "biuf":  # strings, None, huge ints, or a mixed list (object dtype)
        _check_items(name, arr.tolist() if isinstance(values, np.ndarray) else values)
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _bad_value(name, i, float(arr[i]))
    return arr


def _as_sorted_list(values: Any, name: str) -> list[float]:
    values = list(values)
    if not values:
        raise ValueError(f"drift: {name} is empty; both samples need at least one value")
    try:
        out = list(map(float, values)) if set(map(type, values)) <= {float, int} else None
    except OverflowError:
        out = None
    if out is None or not all(map(math.isfinite, out)):
        _check_items(name, values)
        out = list(map(float, values))
    out.sort()
    return out


# -- PSI -----------------------------------------------------------------------------------
def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default 'linear' method)."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _psi_from_counts(ref_counts: Sequence[int], cur_counts: Sequence[int], n_ref: int,
                     n_cur: int) -> float:
    total = 0.0
    for r, c in zip(ref_counts, cur_counts):
        pr = r / n_ref or EMPTY_SHARE
        pc = c / n_cur or EMPTY_SHARE
        total += (pc - pr) * math.log(pc / pr)
    return total


def psi(reference: Any, current: Any, bins: int = DEFAULT_BINS, *,
        use_numpy: bool | None = None) -> float:
    """Population Stability Index of current against reference (0 = same distribution)."""
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"psi: bins must be an int >= 2, got {bins!r}")
    np = _engine(use_numpy)
    qs = [i / bins for i in range(1, bins)]
    if np is not None:
        ref = np.sort(_as_array(np, reference, "reference"))
        cur = np.sort(_as_array(np, current, "current"))
        edges = np.unique(np.quantile(ref, qs))
        top = ref[-1:] if edges[-1] == ref[-1] else ref[:0]  # split off x > max: see above
        # bin i holds edges[i-1] <= x < edges[i]: counts from positions in the sorted samples
        ref_pos = np.concatenate(([0], np.searchsorted(ref, edges, side="left"),
                                  np.searchsorted(ref, top, side="right"), [ref.size]))
        cur_pos = np.concatenate(([0], np.searchsorted(cur, edges, side="left"),
                                  np.searchsorted(cur, top, side="right"), [cur.size]))
        pr = np.diff(ref_pos) / ref.size
        pc = np.diff(cur_pos) / cur.size
        pr = np.where(pr == 0, EMPTY_SHARE, pr)
        pc = np.where(pc == 0, EMPTY_SHARE, pc)
        return float(np.sum((pc - pr) * np.log(pc / pr)))
    ref_l = _as_sorted_list(reference, "reference")
    cur_l = _as_sorted_list(current, "current")
    edges = sorted(set(_quantile(ref_l, q) for q in qs))
    top = [ref_l[-1]] if edges[-1] == ref_l[-1] else []  # split off x > max: see above
    ref_pos = [0, *(bisect.bisect_left(ref_l, e) for e in edges),
               *(bisect.bisect_right(ref_l, t) for t in top), len(ref_l)]
    cur_pos = [0, *(bisect.bisect_left(cur_l, e) for e in edges),
               *(bisect.bisect_right(cur_l, t) for t in top), len(cur_l)]
    return _psi_from_counts([b - a for a, b in zip(ref_pos, ref_pos[1:])],
                            [b - a for a, b in zip(cur_pos, cur_pos[1:])],
                            len(ref_l), len(cur_l))


# -- KS ------------------------------------------------------------------------------------
def kolmogorov_sf(x: float) -> float:
    """P(K > x) for Kolmogorov's limiting distribution (two series, each fast where used)."""
    if x <= 0:
        return 1.0
    if x < 1.18:  # Jacobi theta form converges fast for small x
        w = math.pi ** 2 / (8 * x * x)
        s = sum(math.exp(-(2 * k - 1) ** 2 * w) for k in range(1, 8))
        return min(1.0, max(0.0, 1.0 - math.sqrt(2 * math.pi) / x * s))
    s = sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 101))
    return min(1.0, max(0.0, 2.0 * s))


def _ks_statistic_sorted(a: list[float], b: list[float]) -> float:
    """max |F_a - F_b| by walking both sorted samples; tied values step together."""
    n, m = len(a), len(b)
    i = j = 0
    d = 0.0
    while i < n and j < m:
        x = a[i] if a[i] <= b[j] else b[j]
        while i < n and a[i] == x:
            i += 1
        while j < m and b[j] == x:
            j += 1
        diff = abs(i / n - j / m)
        if diff > d:
            d = diff
    return d  # past the end of one sample the gap only narrows toward 0


def ks_2samp(reference: Any, current: Any, *, use_numpy: bool | None = None) -> tuple[float, float]:
    """(D, asymptotic two-sided p-value) of the two-sample Kolmogorov-Smirnov test."""
    np = _engine(use_numpy)
    if np is not None:
        a = np.sort(_as_array(np, reference, "reference"))
        b = np.sort(_as_array(np, current, "current"))
        pooled = np.concatenate((a, b))
        fa = np.searchsorted(a, pooled, side="right") / a.size
        fb = np.searchsorted(b, pooled, side="right") / b.size
        d = float(np.max(np.abs(fa - fb)))
        n, m = a.size, b.size
    else:
        a_l = _as_sorted_list(reference, "reference")
        b_l = _as_sorted_list(current, "current")
        d = _ks_statistic_sorted(a_l, b_l)
        n, m = len(a_l), len(b_l)
    en = n * m / (n + m)
    return d, kolmogorov_sf(math.sqrt(en) * d)


def detect(reference: Any, current: Any, method: str, psi_threshold: float,
           p_value: float, *, use_numpy: bool | None = None) -> DriftResult:
    """Drift by PSI above psi_threshold, or by a KS p-value below p_value."""
    if method == "psi":
        score = psi(reference, current, use_numpy=use_numpy)
        return DriftResult("psi", score, None, score > psi_threshold)
    if method == "ks":
        d, p = ks_2samp(reference, current, use_numpy=use_numpy)
        return DriftResult("ks", d, p, p < p_value)
    raise ValueError(f"drift method must be one of {', '.join(METHODS)}, not {method!r}")
