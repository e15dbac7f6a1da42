"""A study trained in groups gives what the same study trained run by run gives: the same Optuna trials
(params, values) and the same MLflow runs (params, metrics and curves, tags, artifacts), plus tags naming
each run's group. On the CPU (member by member) the numbers are the same bit for bit."""

import optuna
import pytest
from mlflow import MlflowClient

from bench.cli import main
from tests.studies.test_runner import load, study_args, write

COMMON = """
[base]
model.name = "cgan-mlp"
model.g_norm = "none"
model.d_norm = "none"
model.d_dropout = 0.0
[objective]
metrics = ["eval/tarr"]
directions = ["maximize"]
"""
GRID = """
name = "grouped"
description = "two learning rates x two real targets, two seeds each: 8 runs, one group"
repeats = 2
""" + COMMON + """
[space]
"optim.lr" = { choices = [2e-4, 1e-3] }
"techniques.real_target" = { choices = [1.0, 0.9] }
[sampler]
type = "grid"
"""
# Tags that differ between any two runs of the same configuration (ids, times, machine load).
SMALLER = {"data.train_subset": 128, "eval.n_samples": 100, "eval.n_per_class": 10, "eval.n_real": 100,
           "eval.splits": 2}  # 16 runs in all: each as small as it can be and still evaluate
GROUP_TAGS = {"train.group_size", "train.group", "train.group_member", "train.group_forward"}
VOLATILE = {"mlflow.runName", "mlflow.parentRunId", "host", "mlflow.source.git.commit", *GROUP_TAGS}


def _trials(store):
    study = load(store, "grouped")
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return {tuple(sorted(t.params.items())): t.values[0] for t in study.trials}


def _runs(store):
    c = MlflowClient(store)
    exp = c.get_experiment_by_name("grouped")
    runs = c.search_runs([exp.experiment_id], filter_string="tags.role = 'trial'")
    out = {}
    for r in runs:
        key = (r.data.tags["config_label"], r.data.tags["seed"])
        artifacts = sorted(f.path for f in c.list_artifacts(r.info.run_id))
        curve = [m.value for m in c.get_metric_history(r.info.run_id, "train/loss_d")]
        out[key] = (r, artifacts, curve)
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory, tiny):
    tiny = {**tiny, **SMALLER}
    stores = {}
    for mode, flag in (("sequential", "--no-group"), ("grouped", "--group-size=8")):
        tmp = tmp_path_factory.mktemp(mode)
        store = f"sqlite:///{tmp / 'store' / 'mlflow.db'}"
        assert main(study_args(write(tmp, GRID), store, tiny, flag)) == 0
        stores[mode] = store
    return stores


@pytest.mark.slow  # with `both`: 16 runs, about 45 s
def test_the_same_trials(both):
    seq, grp = _trials(both["sequential"]), _trials(both["grouped"])
    assert seq.keys() == grp.keys() and len(seq) == 4
    assert seq == grp  # member by member (the CPU's form): the same numbers


@pytest.mark.slow  # with `both`: 16 runs, about 45 s
def test_the_same_runs(both):
    seq, grp = _runs(both["sequential"]), _runs(both["grouped"])
    assert seq.keys() == grp.keys() and len(seq) == 8
    for key, (a, a_files, a_curve) in seq.items():
        b, b_files, b_curve = grp[key]
        assert b.data.tags["train.group_size"] == "8" and not GROUP_TAGS & a.data.tags.keys()
        assert {k: v for k, v in a.data.tags.items() if k not in VOLATILE} == \
               {k: v for k, v in b.data.tags.items() if k not in VOLATILE}
        assert a.data.params == b.data.params
        logged = lambda run: {k for k in run.data.metrics if not k.startswith("system/")}  # noqa: E731 (sampled by time)
        assert logged(a) == logged(b)
        values = lambda run: {k: v for k, v in run.data.metrics.items()  # noqa: E731
                              if not k.startswith(("system/", "time/"))}
        assert values(a) == values(b)  # every evaluation too
        assert a_files == b_files and "checkpoints" in a_files
        assert a_curve == b_curve, key


@pytest.mark.slow  # with `both`: 16 runs, about 45 s
def test_a_groups_runs_name_it_and_their_place_in_it(both):
    runs = [r for r, _, _ in _runs(both["grouped"]).values()]
    groups = {r.data.tags["train.group"] for r in runs}
    assert len(groups) == 1 and groups <= {r.info.run_id for r in runs}  # the first member's run id
    assert sorted(int(r.data.tags["train.group_member"]) for r in runs) == list(range(8))


def test_on_the_cpu_a_trials_seeds_train_together_by_default_and_it_says_so(tmp_path, store, tiny, capsys):
    path = write(tmp_path, GRID.replace('choices = [1.0, 0.9]', 'choices = [1.0]'))  # 2 trials x 2 seeds
    assert main(study_args(path, store, {**tiny, **SMALLER})) == 0
    assert "grouping: on the CPU a trial's 2 seeds train together, member by member" in capsys.readouterr().out
    assert _group_sizes(store) == ["2"] * 4


def test_no_group_trains_run_by_run(tmp_path, store, tiny, capsys):
    path = write(tmp_path, GRID.replace('choices = [1.0, 0.9]', 'choices = [1.0]'))
    assert main(study_args(path, store, {**tiny, **SMALLER}, "--no-group")) == 0
    assert "grouping:" not in capsys.readouterr().out
    assert _group_sizes(store) == ["1"] * 4


def test_a_bad_group_size_is_refused_before_anything_is_written(tmp_path, new_store, tiny, capsys):
    path = write(tmp_path, GRID)
    assert main(study_args(path, new_store, tiny, "--group-size=0")) == 2
    err = capsys.readouterr().err
    assert "group_size=0" in err and "--group-size" in err
    assert not (tmp_path / "store").exists()


def test_a_group_that_fails_as_a_whole_is_trained_again_run_by_run(tmp_path, store, tiny, monkeypatch, capsys):
    from bench import experiment

    def broken(*args, **kwargs):
        raise RuntimeError("a kernel the group needs is missing")

    monkeypatch.setattr(experiment, "build_grouped_step", broken)
    path = write(tmp_path, GRID.replace('choices = [1.0, 0.9]', 'choices = [1.0]').replace("repeats = 2", "repeats = 1"))
    assert main(study_args(path, store, tiny, "--group-size=2")) == 0
    study = load(store, "grouped")
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert "failed (RuntimeError: a kernel the group needs is missing); training them one by one" in capsys.readouterr().err


TPE = """
name = "grouped"
description = "TPE over the learning rate (and the batch size): its trials are asked for K at once"
repeats = 1
""" + COMMON + """
[space]
"optim.lr" = { type = "float", low = 1e-4, high = 1e-3, log = true }
"optim.batch_size" = { choices = [BATCHES] }
[sampler]
type = "tpe"
[budget]
n_trials = 3
"""


def _group_sizes(store) -> list[str]:
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("grouped").experiment_id], filter_string="tags.role = 'trial'")
    return sorted(r.data.tags.get("train.group_size", "1") for r in runs)


def test_a_sampled_study_asks_for_a_group_of_trials_at_once(tmp_path, store, tiny):
    tiny = {**tiny, **SMALLER}
    assert main(study_args(write(tmp_path, TPE.replace("BATCHES", "32")), store, tiny, "--group-size=3")) == 0
    study = load(store, "grouped")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert len({t.params["optim.lr"] for t in study.trials}) == 3  # three configurations, each its own trial
    assert _group_sizes(store) == ["3", "3", "3"]


def test_a_sampled_trial_that_does_not_fit_the_group_trains_after_it(tmp_path, store, tiny, monkeypatch):
    from bench.studies import workers

    real_suggest = workers.suggest

    def suggest(trial, spec):  # trial 0 trains at another batch size than trials 1 and 2
        return {**real_suggest(trial, spec), "optim.batch_size": 16 if trial.number == 0 else 32}

    monkeypatch.setattr(workers, "suggest", suggest)
    tiny = {**tiny, **SMALLER}
    assert main(study_args(write(tmp_path, TPE.replace("BATCHES", "32")), store, tiny, "--group-size=3")) == 0
    study = load(store, "grouped")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert _group_sizes(store) == ["1", "2", "2"]
