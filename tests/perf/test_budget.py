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
    with pytest.raises(InputError, match=r"--budget=.*too small.*not even one configuration.*need about"):
        plan(ROWS, FULL, budget_s=0.1)


def test_a_budget_under_the_smallest_scale_trains_what_fits():
    smallest = Scale(1, MIN_IMAGES, 0.1)  # evaluation at its floor too
    one = seconds_at(ROWS[1:], smallest, FULL)  # batch 128: the cheaper configuration
    p = plan(ROWS, FULL, budget_s=one * 1.1)
    assert p.partial and p.scale == smallest and p.estimated_s > one * 1.1
    assert "rest stay queued" in p.text()
    assert not plan(ROWS, FULL, budget_s=seconds_at(ROWS, Scale(1, MIN_IMAGES), FULL)).partial
    with pytest.raises(InputError, match="too small"):
        plan(ROWS, FULL, budget_s=one * 0.9)


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


# -- measuring to a deadline ------------------------------------------------------------------------------------

DEADLINE_GRID = """
name = "deadline"
description = "batch 32 / 64 x two widths, one model family"
repeats = 1
[base]
model.name = "cgan-mlp"
model.d_dropout = 0.0
optim.epochs = 10
[space]
"optim.batch_size" = { choices = [32, 64] }
"model.hidden" = { choices = [16, 32] }
[sampler]
type = "grid"
[objective]
metrics = ["eval/tarr"]
directions = ["maximize"]
"""
STEP_COST_S, EVAL_COST_S = 10.0, 5.0  # fake seconds each timing takes on the fake clock


@pytest.fixture
def fake_clock(monkeypatch):
    """A clock that moves only when something is timed: each training timing costs STEP_COST_S, each
    evaluation timing EVAL_COST_S. Seconds per iteration: 1 ms per image, twice that at hidden 32."""
    from types import SimpleNamespace

    from bench.perf import budget, estimate

    clock = SimpleNamespace(now=1000.0, steps=[])
    fake_time = SimpleNamespace(perf_counter=lambda: clock.now)

    def harness_loop(cfg, data, steps, warmup):
        clock.now += STEP_COST_S
        clock.steps.append((cfg.optim.batch_size, cfg.model.hidden))
        return {"seconds": steps * cfg.optim.batch_size * cfg.model.hidden / 16_000, "steps": steps}

    def eval_seconds(cfg, train_full, test):
        clock.now += EVAL_COST_S
        return 3.0

    monkeypatch.setattr(estimate, "time", fake_time)
    monkeypatch.setattr(budget, "time", fake_time)
    monkeypatch.setattr(estimate, "harness_loop", harness_loop)
    monkeypatch.setattr(estimate, "_eval_seconds", eval_seconds)
    return clock


def _study(tmp_path, text=DEADLINE_GRID):
    import textwrap

    from bench.studies.spec import load_study_file

    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(text))
    return load_study_file(path, {"device": "cpu"})[0]


def test_measuring_stops_at_the_deadline_and_estimates_every_configuration(tmp_path, fake_clock):
    from bench.perf import estimate
    from tests.conftest import random_data

    data = random_data(256)
    timings = estimate.Timings(deadline=fake_clock.now + 12)  # the first training and evaluation timing pass it
    rows = estimate.estimate(_study(tmp_path), {"device": "cpu"}, data, data, progress=False, timings=timings)
    assert fake_clock.steps == [(32, 16)]  # nothing timed after the deadline but the first of each kind
    by = {r.label: r for r in rows}
    assert len(rows) == 4 and all(r.iter_s > 0 and r.eval_s == 3.0 for r in rows)
    timed = [r for r in rows if not r.estimated_from]
    assert [(r.batch_size, r.iter_s) for r in timed] == [(32, pytest.approx(0.032))]
    same = [r for r in rows if r.estimated_from == estimate.SIMILAR]  # batch 32 at hidden 32: the batch-32 timing
    assert [(r.batch_size, r.iter_s) for r in same] == [(32, pytest.approx(0.032))]
    per_image = [r for r in rows if r.estimated_from == estimate.PER_IMAGE]  # batch 64: 1 ms per image, x 64
    assert sorted((r.batch_size, r.iter_s) for r in per_image) == [(64, pytest.approx(0.064))] * 2
    assert set(by) == {r.label for r in timed + same + per_image}
    text = plan(rows, FULL, 1e9).text()
    assert "1 of 4 configurations timed; the rest estimated from the same model and batch size (1) and from the " \
           "slowest timed, per image (2)" in text


def test_each_kind_is_timed_first_and_without_a_deadline_everything(tmp_path, fake_clock):
    from bench.perf import estimate
    from tests.conftest import random_data

    data = random_data(256)
    longest = max(STEP_COST_S, EVAL_COST_S)  # no timing starts that would end after the deadline
    timings = estimate.Timings(deadline=fake_clock.now + STEP_COST_S + EVAL_COST_S + longest + 1)  # one more
    estimate.estimate(_study(tmp_path), {"device": "cpu"}, data, data, progress=False, timings=timings)
    assert fake_clock.steps == [(32, 16), (64, 16)]  # batch 64 before batch 32's second width
    fake_clock.steps.clear()
    timings = estimate.Timings(deadline=fake_clock.now + STEP_COST_S + EVAL_COST_S + 1)  # 1 s left after the first
    estimate.estimate(_study(tmp_path), {"device": "cpu"}, data, data, progress=False, timings=timings)
    assert fake_clock.steps == [(32, 16)]  # a second timing would end 9 s after the deadline: not started
    fake_clock.steps.clear()
    rows = estimate.estimate(_study(tmp_path), {"device": "cpu"}, data, data, progress=False)
    assert len(fake_clock.steps) == 4 and not any(r.estimated_from for r in rows)
    assert "configurations timed" not in plan(rows, FULL, 1e9).text()


def test_a_budget_plan_measures_a_tenth_of_it_and_plans_the_rest(tmp_path, fake_clock, monkeypatch, capsys):
    from types import SimpleNamespace

    from bench import experiment
    from bench.perf import budget
    from tests.conftest import random_data

    data = random_data(256)
    monkeypatch.setattr(experiment, "prepare", lambda cfg, progress: SimpleNamespace(train_full=data, test=data))
    plans = []
    real_plan = budget.plan
    monkeypatch.setattr(budget, "plan", lambda *a, **k: plans.append(real_plan(*a, **k)) or plans[-1])
    budget.plan_scales([_study(tmp_path)], "120s", {"device": "cpu"}, tmp_path / "plans", progress=False)
    (chosen,) = plans
    assert fake_clock.steps == [(32, 16)]  # 12 s allowed: the first timings take 15 s, then measuring stops
    assert chosen.spent_s == STEP_COST_S + EVAL_COST_S
    assert chosen.estimated_s <= 120 - chosen.spent_s < seconds_at(chosen.rows, Scale(chosen.scale.epochs + 1), 256)
    assert real_plan(chosen.rows, 256, 120).scale.epochs > chosen.scale.epochs  # measuring took an epoch's time
    out = capsys.readouterr().out
    assert "(at most 12 s)" in out and "15 s spent measuring" in out and "1 of 4 configurations timed" in out
