"""Planning to a budget: full data with fewer epochs first, a subset only when one epoch does not fit."""

import pytest

from bench.errors import InputError
from bench.perf.budget import MIN_IMAGES, Scale, parse_duration, plan, report_fraction, seconds_at
from bench.perf.estimate import Estimate

FULL = 60_000


def row(batch: int, iter_s: float = 0.01, eval_s: float = 0.5, epochs: int = 10, runs: int = 3) -> Estimate:
    iters = FULL // batch
    return Estimate(f"batch {batch}", runs, iter_s, iters, epochs, eval_s, epochs, batch_size=batch)


ROWS = [row(32), row(128)]  # batch 32: 1875 iterations per epoch, batch 128: 468


@pytest.fixture(autouse=True)
def no_fixed_costs(monkeypatch):
    """The arithmetic below counts iterations and evaluations only; one test puts the fixed costs back."""
    from bench.perf import budget

    monkeypatch.setattr(budget, "RUN_OVERHEAD_S", 0.0)
    monkeypatch.setattr(budget, "REPORT_S", 0.0)


def test_seconds_at_counts_iterations_and_evaluations():
    one_epoch = 3 * (1875 * 0.01 + 0.5) + 3 * (468 * 0.01 + 0.5)
    assert seconds_at(ROWS, Scale(1), FULL) == pytest.approx(one_epoch)
    assert seconds_at(ROWS, Scale(1, 6000), FULL) == pytest.approx(3 * (187 * 0.01 + 0.5) + 3 * (46 * 0.01 + 0.5))
    assert seconds_at(ROWS, Scale(1, 6000, 0.5), FULL) == pytest.approx(3 * (187 * 0.01 + 0.25) + 3 * (46 * 0.01 + 0.25))


def test_the_whole_set_with_fewer_epochs_comes_before_a_subset():
    two_epochs = seconds_at(ROWS, Scale(2), FULL)
    p = plan(ROWS, FULL, budget_s=two_epochs + 1)
    assert p.scale == Scale(2) and p.estimated_s <= two_epochs + 1
    assert p.overrides(ROWS) == {"optim.epochs": 2}
    assert report_fraction(ROWS[0], p.scale, FULL) == pytest.approx(0.2)
    # every cell keeps the report's relative number of steps: batch 32 still takes 4x the steps of 128
    assert (FULL // 32) / (FULL // 128) == pytest.approx(4, rel=0.01)


def test_a_subset_only_when_one_epoch_does_not_fit():
    one_epoch = seconds_at(ROWS, Scale(1), FULL)
    p = plan(ROWS, FULL, budget_s=one_epoch * 0.6)
    assert p.scale.epochs == 1 and MIN_IMAGES <= p.scale.train_images < FULL
    assert p.estimated_s <= one_epoch * 0.6
    assert seconds_at(ROWS, Scale(1, p.scale.train_images + 200), FULL) > one_epoch * 0.6  # the largest that fits
    assert p.overrides(ROWS) == {"optim.epochs": 1, "data.train_subset": p.scale.train_images}


def test_measuring_counts_against_the_budget():
    two_epochs = seconds_at(ROWS, Scale(2), FULL)
    assert plan(ROWS, FULL, budget_s=two_epochs + 1, spent_s=60).scale == Scale(1)


def test_a_study_never_trains_longer_than_its_report():
    short = [row(64, epochs=3)]
    p = plan(short, FULL, budget_s=1e9)
    assert p.scale == Scale(3) and p.overrides(short) == {"optim.epochs": 3}
    assert report_fraction(short[0], p.scale, FULL) == 1.0


def test_explicit_epochs_or_images_are_kept():
    p = plan(ROWS, FULL, budget_s=1e9, epochs=1)
    assert p.scale == Scale(1)
    p = plan(ROWS, FULL, budget_s=seconds_at(ROWS, Scale(1), FULL) * 0.5, epochs=1)
    assert p.scale.epochs == 1 and p.scale.train_images < FULL
    assert plan(ROWS, FULL, budget_s=1e9, train_images=6000).scale == Scale(10, 6000)
    assert plan(ROWS, FULL, budget_s=seconds_at(ROWS, Scale(2, 6000), FULL), train_images=6000).scale == Scale(2, 6000)
    over = plan(ROWS, FULL, budget_s=1, train_images=6000).scale  # as asked, over the budget
    assert (over.epochs, over.train_images) == (1, 6000)


def test_a_budget_too_small_is_an_error_naming_the_flag_and_the_need():
    with pytest.raises(InputError, match=r"--budget=.*too small.*needs about"):
        plan(ROWS, FULL, budget_s=1)


@pytest.mark.parametrize("text,seconds", [("20m", 1200), ("2h", 7200), ("1.5h", 5400), ("90s", 90), ("45", 45),
                                          ("10 min", 600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "0m", "-5m", "twenty", "5 weeks"])
def test_parse_duration_names_the_flag(bad):
    with pytest.raises(InputError, match="--budget"):
        parse_duration(bad)


def test_evaluation_shrinks_to_a_third_of_the_time_before_training_does():
    rows = [row(128, iter_s=0.001, eval_s=60.0, runs=10)]  # one evaluation per run: 600 s of a 900 s budget
    p = plan(rows, FULL, budget_s=900)
    assert p.scale.eval_fraction == 0.5  # 300 s of evaluation: a third of 900 s
    assert p.overrides(rows)["eval.n_samples"] == 5000 and p.overrides(rows)["eval.n_per_class"] == 500
    assert p.estimated_s <= 900
    assert plan(rows, FULL, budget_s=1e6).scale.eval_fraction == 1.0
    assert plan([row(128, iter_s=0.0001, eval_s=1000.0)], FULL, budget_s=900).scale.eval_fraction == 0.1  # the floor
    with pytest.raises(InputError, match="evaluated on 10% of the study's samples"):
        plan([row(128, iter_s=0.0001, eval_s=6000.0)], FULL, budget_s=900)  # not even at the floor


def test_each_run_and_the_report_cost_a_fixed_time_too(monkeypatch):
    from bench.perf import budget

    bare = seconds_at(ROWS, Scale(1), FULL)
    monkeypatch.setattr(budget, "RUN_OVERHEAD_S", 4.0)
    monkeypatch.setattr(budget, "REPORT_S", 60.0)
    assert seconds_at(ROWS, Scale(1), FULL) == pytest.approx(bare + 6 * 4.0 + 60.0)
