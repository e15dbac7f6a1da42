"""Estimates and budgets count grouped training where it is on: runs are packed into groups as the study
runner packs them, each group is timed as one batched step, and each run is charged its share."""

import textwrap

import pytest

from bench.perf import estimate
from bench.studies.spec import load_study_file
from tests.conftest import random_data

GRID = """
name = "groups"
description = "batch 32 / 64 x two learning rates, two seeds each"
repeats = 2
[base]
model.name = "cgan-mlp"
model.hidden = 16
model.d_dropout = 0.0
[space]
"optim.batch_size" = { choices = [32, 64] }
"optim.lr" = { choices = [2e-4, 2e-3] }
[sampler]
type = "grid"
[objective]
metrics = ["eval/tarr"]
directions = ["maximize"]
"""
SEQUENTIAL_ITER_S = 1.0  # what the faked sequential timing gives every configuration
GROUP_ITER_S = 2.0  # what the faked group timing gives every group, whatever its size


@pytest.fixture
def timed(monkeypatch):
    """Fake timings, and the groups the estimate asked to time (their batch sizes, one list per group)."""
    groups = []

    def group_loop(cfgs, data, steps, warmup):
        groups.append([c.optim.batch_size for c in cfgs])
        return {"seconds": GROUP_ITER_S * steps, "steps": steps}

    monkeypatch.setattr(estimate, "harness_loop", lambda cfg, data, steps, warmup: {
        "seconds": SEQUENTIAL_ITER_S * steps, "steps": steps})
    monkeypatch.setattr(estimate, "group_loop", group_loop)
    monkeypatch.setattr(estimate, "_eval_seconds", lambda cfg, train_full, test: 3.0)
    return groups


def study(tmp_path, text=GRID):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(text))
    return load_study_file(path, {"device": "cpu"})[0]


def rows(tmp_path, group_size, text=GRID):
    data = random_data(256)
    return estimate.estimate(study(tmp_path, text), {"device": "cpu"}, data, data, progress=False,
                             group_size=group_size)


def test_one_by_one_without_grouping(tmp_path, timed):
    out = rows(tmp_path, 1)
    assert [r.iter_s for r in out] == [SEQUENTIAL_ITER_S] * 4 and {r.group for r in out} == {1}
    assert timed == []


def test_cells_of_one_batch_size_share_a_group_and_its_time(tmp_path, timed):
    out = rows(tmp_path, 4)
    # One group per batch size, each its two cells' four runs; the batch sizes never mix.
    assert sorted(timed) == [[32] * 4, [64] * 4]
    assert [r.group for r in out] == [4] * 4
    assert [r.iter_s for r in out] == [GROUP_ITER_S / 4] * 4


def test_a_trial_that_does_not_fit_starts_its_own_group(tmp_path, timed):
    out = rows(tmp_path, 3)  # a trial's 2 seeds fit; a second trial's 2 more do not
    assert [r.group for r in out] == [2] * 4
    assert [r.iter_s for r in out] == [GROUP_ITER_S / 2] * 4
    assert sorted(timed) == [[32] * 2, [64] * 2]  # cells differing only in lr share a timing


def test_refused_techniques_keep_the_sequential_time(tmp_path, timed):
    out = rows(tmp_path, 8, GRID.replace('model.d_dropout = 0.0', 'model.d_dropout = 0.0\nmodel.d_spectral_norm = true'))
    assert [r.iter_s for r in out] == [SEQUENTIAL_ITER_S] * 4 and {r.group for r in out} == {1}
    assert timed == []


def test_the_table_shows_the_group(tmp_path, timed):
    table = estimate.format_table(study(tmp_path), rows(tmp_path, 4), "cpu")
    assert "group" in table.splitlines()[1] and all(" 4 " in line for line in table.splitlines()[2:])


def test_a_budget_plan_says_runs_train_in_groups(tmp_path, timed):
    from bench.perf.budget import plan

    text = plan(rows(tmp_path, 4), 256, 3600.0).text()
    assert "runs train in groups of up to 4 (timed as groups)" in text
    assert "groups" not in plan(rows(tmp_path, 1), 256, 3600.0).text()


def test_groups_not_timed_by_the_deadline_keep_one_by_one_times(tmp_path, timed, monkeypatch):
    from types import SimpleNamespace

    from bench.perf.budget import plan

    monkeypatch.setattr(estimate, "time", SimpleNamespace(perf_counter=lambda: 100.0))
    data = random_data(256)
    out = estimate.estimate(study(tmp_path), {"device": "cpu"}, data, data, progress=False, group_size=4,
                            timings=estimate.Timings(deadline=50.0))  # past: only the needed first timings
    # batch 64 untimed: batch 32's one-by-one time per image
    assert timed == [] and [r.iter_s for r in out] == [SEQUENTIAL_ITER_S * r.batch_size / 32 for r in out]
    assert [r.group for r in out] == [4] * 4 and not any(r.group_timed for r in out)
    assert "groups of up to 4 (groups not all timed: those charged one-by-one times)" in plan(out, 256, 3600.0).text()
