"""Report statistics (bench.report.stats) against scipy, and the baseline parameter parser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.errors import ReportError
from bench.report.baseline import parse_params
from bench.report.stats import compare, summarize




def test_summarize_and_compare_match_scipy():
    a, b = [0.91, 0.93, 0.95], [0.90, 0.91]
    s = summarize(a)
    assert s.mean == pytest.approx(np.mean(a)) and s.std == pytest.approx(np.std(a, ddof=1))
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(a), scale=stats.sem(a))
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi))
    d = compare(s, summarize(b))
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert d.test == "Welch" and d.p == pytest.approx(ref.pvalue)
    assert (d.ci_low, d.ci_high) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert d.diff == pytest.approx(np.mean(a) - np.mean(b))
    # n = 1: a mean, no std, no CI, no test (said so)
    one = compare(summarize([0.9]), summarize(b))
    assert math.isnan(summarize([0.9]).std) and not one.tested and "fewer than 2" in one.test
    assert one.diff == pytest.approx(0.9 - np.mean(b))
    assert "no finished" in compare(summarize([]), s).test
    assert "no variance" in compare(summarize([1.0, 1.0]), summarize([1.0, 1.0])).test


def test_baseline_params_parse_and_reject():
    assert parse_params("real_target=0.9,techniques/fake_target=0.1") == {
        "techniques.real_target": 0.9, "techniques.fake_target": 0.1}
    assert parse_params('{"model.d_depth": 3}') == {"model.d_depth": 3}
    with pytest.raises(ReportError, match="real_targt"):
        parse_params("real_targt=0.9")
    with pytest.raises(ReportError, match="KEY=VALUE"):
        parse_params("0.9")
