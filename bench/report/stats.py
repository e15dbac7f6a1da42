"""Statistics over seeds: mean, sample std, t-interval, and Welch's t-test against the baseline."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from bench.report.common import CONFIDENCE


@dataclass
class Stat:
    """Summary of one metric over seeds."""

    values: list[float]
    mean: float = math.nan
    std: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan

    @property
    def n(self) -> int:
        return len(self.values)


def summarize(values: list[float]) -> Stat:
    """Mean, sample std (ddof=1) and the 95% t-interval over seeds (n/a below 2 seeds)."""
    from scipy import stats

    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    s = Stat(vals)
    if not vals:
        return s
    arr = np.asarray(vals, dtype=np.float64)
    s.mean = float(arr.mean())
    if len(arr) >= 2:
        s.std = float(arr.std(ddof=1))
        if s.std > 0:
            lo, hi = stats.t.interval(CONFIDENCE, len(arr) - 1, loc=s.mean, scale=stats.sem(arr))
            s.ci_low, s.ci_high = float(lo), float(hi)
        else:
            s.ci_low = s.ci_high = s.mean
    return s


@dataclass
class Diff:
    """A configuration minus the baseline, with the test that says whether it is real."""

    diff: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p: float = math.nan
    test: str = "n/a"
    n: tuple[int, int] = (0, 0)

    @property
    def tested(self) -> bool:
        return math.isfinite(self.p)


def compare(a: Stat, b: Stat) -> Diff:
    """a - b; Welch's t-test (unequal variances) when both have >= 2 values, else no test."""
    from scipy import stats

    d = Diff(n=(a.n, b.n))
    if a.n == 0 or b.n == 0:
        d.test = "n/a (no finished runs)"
        return d
    d.diff = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        d.test = "n/a (fewer than 2 seeds)"
        return d
    if a.std == 0 and b.std == 0:
        d.test = "n/a (no variance)"
        return d
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a.values, b.values, equal_var=False)
        ci = res.confidence_interval(CONFIDENCE)
    d.p, d.ci_low, d.ci_high = float(res.pvalue), float(ci.low), float(ci.high)
    d.test = "Welch"
    return d


def final_value(history) -> float | None:
    """The value at the last logged step (latest timestamp breaks ties), from a metric history."""
    if not history:
        return None
    return max(history, key=lambda m: (m.step, m.timestamp)).value
