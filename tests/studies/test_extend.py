"""Extending a finished study: a run trained 1 epoch and extended to 2 is the run trained 2 epochs from the start
(losses, evaluations, trial values), alone and in a group; the same MLflow runs, a new Optuna trial that names the
one it extends; what cannot be extended is said per run and left as it was."""

import inspect
from pathlib import Path
from urllib.parse import unquote, urlparse

import optuna
import pytest
import torch

from bench import experiment
from bench.cli import main
from bench.errors import InputError
from bench.run_config import build_config
from bench.studies.extend import extend_study
from bench.studies.invocation import counts
from bench.studies.summary import best_trials, trials_table
from tests.studies.test_runner import child_runs, load, study_args, write

STUDY = """
name = "{name}"
description = "one configuration, {repeats} seed(s)"
repeats = {repeats}
[base]
model.name = "cgan-mlp"
model.g_norm = "none"
model.d_norm = "none"
[space]
"techniques.instance_noise_std" = {{ choices = {noise} }}
[sampler]
type = "{sampler}"
[budget]
n_trials = {n}
[objective]
metrics = ["eval/tarr"]
directions = ["maximize"]
"""
SMALL = {"data.train_subset": 128, "eval.n_samples": 100, "eval.n_per_class": 10, "eval.n_real": 100,
         "eval.splits": 2}  # 4 iterations an epoch
CURVES = ("train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "eval/tarr", "eval/fid", "eval/sample_std")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module's studies (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('extend') / 'store' / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _quick(monkeypatch):
    """One thread (a shared CPU's spinning threads cost more than they give at this size), and no figures (seconds
    of matplotlib each: a run's curves, a study's Optuna plots; the curves themselves are compared here)."""
    from bench.studies import summary

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(experiment, "curves_figure", lambda history: {})
    monkeypatch.setattr(summary, "_plots", lambda study, spec: {})
    yield
    torch.set_num_threads(threads)


def _finished(tmp_path, store, tiny, name, repeats=1, noise="[0.0]", *flags):
    cells = noise.count(",") + 1  # a grid of one cell: the random sampler (Optuna's grid sampler needs two)
    path = write(tmp_path, STUDY.format(name=name, repeats=repeats, noise=noise, n=cells,
                                        sampler="grid" if cells > 1 else "random"))
    assert main(study_args(path, store, {**tiny, **SMALL}, *flags)) == 0
    return path


def _history(c, run_id, key):
    return [(m.step, m.value) for m in sorted(c.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


def _snapshot(c, runs):
    """Everything an extension could change on these runs."""
    return {r.info.run_id: (c.get_run(r.info.run_id).info.status, c.get_run(r.info.run_id).data.tags,
                            c.get_run(r.info.run_id).data.params, {k: _history(c, r.info.run_id, k) for k in CURVES},
                            sorted(f.path for f in c.list_artifacts(r.info.run_id, "checkpoints")))
            for r in runs}


def _from_the_start(c, runs, tmp_path):
    """The same runs trained 2 epochs from the start (untracked; together when they trained together)."""
    import json

    configs = [json.loads(Path(c.download_artifacts(r.info.run_id, "config.json", str(tmp_path))).read_text())
               for r in runs]
    members = [experiment.MemberRun(build_config(tree, {"optim.epochs": 2})) for tree in configs]
    return [res.result.history for res in experiment.run_group(members, tracking_uri=None, progress=False)]


def _same_curves(c, run_id, history):
    """The run's MLflow curves are the history's, each step once (1e-5 relative: CPU fp32)."""
    for key in CURVES:
        got = _history(c, run_id, key)
        kind, name = key.split("/")
        steps = history.steps if kind == "train" else history.epochs
        want = list(zip(steps, getattr(history, kind)[name]))
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5, abs=1e-7), key


def test_cli_extends_a_finished_run_to_what_two_epochs_from_the_start_give(tmp_path, store, tiny, capsys):
    _finished(tmp_path, store, tiny, "ext-one")
    c, exp, (before,) = child_runs(store, "ext-one")
    one_epoch = load(store, "ext-one").trials[0].values
    capsys.readouterr()
    assert main(["study", "extend", "ext-one", "--epochs", "2", "--tracking-uri", store, "--quiet"]) == 0
    assert "trial 0: 1 run(s) extended from 1 to 2 epochs, recorded as trial 1" in capsys.readouterr().out

    c, exp, runs = child_runs(store, "ext-one")
    assert [r.info.run_id for r in runs] == [before.info.run_id]  # the same MLflow run, none added
    (run,) = runs
    assert run.info.status == "FINISHED" and run.data.tags["extended_to_epochs"] == "2"
    assert run.data.params["optim/epochs"] == "1" and run.data.tags["trial"] == "1"
    (want,) = _from_the_start(c, runs, tmp_path)
    _same_curves(c, run.info.run_id, want)

    study = load(store, "ext-one")
    old, new = study.trials
    assert old.values == one_epoch and old.user_attrs["mlflow_run_ids"] == [run.info.run_id]
    assert new.state == optuna.trial.TrialState.COMPLETE and new.params == old.params
    assert new.user_attrs["extends"] == 0 and new.user_attrs["epochs"] == 2
    assert new.user_attrs["mlflow_run_ids"] == [run.info.run_id]
    assert new.values == pytest.approx([want.eval["tarr"][-1]], rel=1e-5)
    assert counts(study)["complete"] == 1 and [t.number for t in best_trials(study)] == [1]
    assert [r["note"] for r in trials_table(study)] == ["extended by trial 1", "extends trial 0 (2 epochs)"]

    from bench.report.load import load_study_runs

    data = load_study_runs(c, "ext-one")  # what a report reads: one run per seed, at 2 epochs
    assert [[r.run_id for r in g.usable] for g in data.groups] == [[run.info.run_id]]
    assert data.groups[0].usable[0].history["eval/tarr"][-1][0] == 2

    assert main(["study", "extend", "ext-one", "--epochs", "2", "--tracking-uri", store, "--quiet"]) == 0
    assert "already at 2 epochs or more: trial(s) [1]" in capsys.readouterr().out
    assert len(load(store, "ext-one").trials) == 2
    assert main(["study", "extend", "ext-one", "--epochs", "0", "--tracking-uri", store]) == 2
    assert "epochs=0" in capsys.readouterr().err
    assert main(["study", "extend", "no-such-study", "--epochs", "2", "--tracking-uri", store]) == 2
    assert "'no-such-study' not found" in capsys.readouterr().err


def test_a_trials_seeds_trained_as_a_group_extend_as_a_group(tmp_path, store, tiny, monkeypatch):
    _finished(tmp_path, store, tiny, "ext-group", 2)  # on the CPU a trial's seeds train as one group
    c, exp, runs = child_runs(store, "ext-group")
    assert {r.data.tags["train.group_size"] for r in runs} == {"2"}
    runs = sorted(runs, key=lambda r: int(r.data.tags["seed"]))
    built = []
    grouped = experiment.build_grouped_step
    monkeypatch.setattr(experiment, "build_grouped_step", lambda *a, **k: built.append(1) or grouped(*a, **k))

    result = extend_study("ext-group", 2, tracking_uri=store, progress=False)
    assert not result.refused and [(e.trial, e.new_trial) for e in result.extended] == [(0, 1)]
    assert built == [1]  # both seeds in one grouped step

    wants = _from_the_start(c, runs, tmp_path)
    for run, want in zip(runs, wants):
        assert c.get_run(run.info.run_id).info.status == "FINISHED"
        _same_curves(c, run.info.run_id, want)
    new = load(store, "ext-group").trials[1]
    assert new.user_attrs["extends"] == 0 and sorted(new.user_attrs["mlflow_run_ids"]) == \
        sorted(r.info.run_id for r in runs)
    assert new.values == pytest.approx([sum(w.eval["tarr"][-1] for w in wants) / 2], rel=1e-5)


def test_only_the_trials_with_the_given_runs_extend(tmp_path, store, tiny):
    """A racing reproduction extends the runs behind open claims only; the others keep their epochs."""
    _finished(tmp_path, store, tiny, "ext-some", 1, "[0.0, 0.1]")
    c, exp, runs = child_runs(store, "ext-some")
    grow, keep = sorted(runs, key=lambda r: r.data.params["techniques/instance_noise_std"])  # noise anneals: 0 extends
    result = extend_study("ext-some", 2, tracking_uri=store, runs={grow.info.run_id}, progress=False)
    assert [e.run_ids for e in result.extended] == [[grow.info.run_id]] and not result.refused
    after = {r.info.run_id: r for r in child_runs(store, "ext-some")[2]}
    assert after[grow.info.run_id].data.tags["extended_to_epochs"] == "2"
    assert "extended_to_epochs" not in after[keep.info.run_id].data.tags
    assert _history(c, keep.info.run_id, "eval/tarr") == _history(c, keep.info.run_id, "eval/tarr")[:1]
    with pytest.raises(InputError, match="run='nope': not a run of study 'ext-some'"):
        extend_study("ext-some", 3, tracking_uri=store, runs={"nope"}, progress=False)


def _state_file(run) -> Path:
    return Path(unquote(urlparse(run.info.artifact_uri).path)) / "checkpoints" / "state.pt"


def test_runs_that_cannot_be_extended_are_named_with_the_reason_and_left_as_they_were(tmp_path, store, tiny,
                                                                                       capsys):
    _finished(tmp_path, store, tiny, "ext-no", 1, "[0.0, 0.1]")  # trial 1 anneals its instance noise
    c, exp, runs = child_runs(store, "ext-no")
    plain = next(r for r in runs if r.data.tags["param.techniques.instance_noise_std"] == "0.0")
    trial, noisy = int(plain.data.tags["trial"]), 1 - int(plain.data.tags["trial"])
    state_file = _state_file(plain)
    kept = torch.load(state_file, weights_only=True)
    assert kept["epoch"] == 1 and kept["config"]["optim"]["epochs"] == 1
    before = _snapshot(c, runs)

    state_file.unlink()  # a run that kept no checkpoint
    capsys.readouterr()
    assert main(["study", "extend", "ext-no", "--epochs", "2", "--tracking-uri", store, "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"trial {trial}, run {plain.info.run_id} (seed 0): not extended: it kept no checkpoint" in out
    assert f"trial {noisy}, run" in out and "technique instance_noise anneals over the run's planned length" in out

    torch.save({**kept, "format": 0}, state_file)  # a checkpoint of another version
    (refused,) = [r for r in extend_study("ext-no", 2, tracking_uri=store, progress=False).refused if r.trial == trial]
    assert "its checkpoint has format 0, from another version of gan-bench" in refused.reason

    other = {**kept["config"], "model": {**kept["config"]["model"], "hidden": 32}}
    torch.save({**kept, "config": other}, state_file)  # a checkpoint of another configuration
    (refused,) = [r for r in extend_study("ext-no", 2, tracking_uri=store, progress=False).refused if r.trial == trial]
    assert "trained with another configuration (differs in model/hidden)" in refused.reason

    torch.save(kept, state_file)
    assert _snapshot(c, runs) == before  # statuses, tags, params, curves, artifacts: as they were
    assert [t.number for t in load(store, "ext-no").trials] == [0, 1]  # no trial recorded
    assert not list((Path(store[len("sqlite:///"):]).parent / "checkpoints" / "ext-no").rglob("*.pt"))  # none left


def test_every_technique_that_reads_the_runs_progress_says_it_anneals():
    from bench.techniques import TECHNIQUES

    readers = {name for name, t in TECHNIQUES.items() if "info.progress" in inspect.getsource(t)}
    assert "instance_noise" in readers
    assert readers == {name for name, t in TECHNIQUES.items() if t.anneals}
