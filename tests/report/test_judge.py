"""The rule that decides whether a scale can test a published claim, on hand-made cases."""

import pytest

from bench.report.judge import IS_FLOOR, Scale, at_floor, floor, untestable

ONE = Scale(1, 6000)
FULL = Scale(10, 60000)


def test_floors():
    assert floor("eval/tarr") == pytest.approx(0.15) and floor("eval/class_acc_3") == pytest.approx(0.15)
    assert floor("eval/is") == IS_FLOOR and floor("eval/class_acc_geomean") == pytest.approx(0.15)
    assert floor("eval/fid") is None and floor("eval/class_acc_geomean_x") is None
    assert at_floor("eval/tarr", 0.101) and not at_floor("eval/tarr", 0.2)
    assert at_floor("eval/class_acc_geomean", 0.0) and not at_floor("eval/class_acc_geomean", 0.5)
    assert not at_floor("eval/fid", 0.0) and not at_floor("eval/tarr", float("nan"))


def test_everything_at_chance_is_not_judgeable():
    """Report 002 Table 1 after 1 epoch on 6,000 images: TARR 0.10 in every cell."""
    assert untestable("eval/tarr", 0.977, 0.988, 0.101, 0.100, ONE, FULL).startswith("nothing learned")
    assert untestable("eval/class_acc_geomean", 0.9, 0.95, 0.0, 0.0, ONE, FULL).startswith("nothing learned")
    # Report 002 Table 3 after 1 epoch on 60,000 images: every class near chance, geometric mean 0.086-0.089
    assert untestable("eval/class_acc_geomean", 0.989, 0.987, 0.089, 0.087, ONE, FULL).startswith("nothing learned")


def test_a_row_that_has_not_learned_what_the_report_s_row_learned():
    assert untestable("eval/tarr", 0.977, 0.988, 0.10, 0.90, ONE, FULL).startswith("nothing learned")
    assert untestable("eval/is", 9.71, 9.81, 1.12, 3.97, ONE, FULL).startswith("nothing learned")


def test_a_learned_comparison_is_judged():
    assert untestable("eval/tarr", 0.977, 0.988, 0.85, 0.90, ONE, FULL) is None
    assert untestable("eval/fid", 20.0, 10.0, 1400.0, 1400.0, ONE, FULL) is None  # no floor: always judged


def test_a_published_collapse_needs_the_report_s_epochs():
    """Table 1's lr 2e-3 cells: collapsed (TARR 0.100) after 10 epochs, learning fast after 1."""
    reason = untestable("eval/tarr", 0.100, 0.988, 0.85, 0.90, Scale(1, 60000), FULL)
    assert reason and "needs the report's 10 epochs" in reason
    assert untestable("eval/tarr", 0.100, 0.988, 0.97, 0.98, Scale(10, 60000), FULL) is None  # not collapsed: reversed
    assert untestable("eval/tarr", 0.100, 0.988, 0.10, 0.90, Scale(1, 60000), FULL) is None  # collapsed already: held


def test_scale_fraction_and_text():
    assert ONE.fraction_of(FULL) == pytest.approx(0.01)
    assert ONE.text() == "1 epoch on 6,000 images" and FULL.text() == "10 epochs on 60,000 images"
