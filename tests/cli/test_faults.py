"""Faults and bad input: kill -9 mid-trial, unreachable stores, and a table of malformed inputs."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from bench.cli import main
from bench.studies.storage import default_storage, make_storage
from tests.conftest import Deadline

KILL_GRID = """
name = "killme"
description = "kill -9 in the middle of a trial"
[base]
model.name = "cgan-mlp"
optim.epochs = 3
data.train_subset = 960
[space]
"techniques.real_target" = { choices = [1.0, 0.9, 0.8] }
[sampler]
type = "grid"
[objective]
metrics = ["eval/tarr"]
directions = ["maximize"]
"""


def _args(path, store, tiny):
    args = ["study", "run", str(path), "--tracking-uri", store, "--quiet"]
    for k, v in tiny.items():
        if k not in ("optim.epochs", "data.train_subset"):
            args += ["--set", f"{k}={v}"]
    return args


def test_kill_9_mid_trial_then_resume(tmp_path, store, tiny):
    path = tmp_path / "killme.toml"
    path.write_text(KILL_GRID)
    proc = subprocess.Popen([sys.executable, "-m", "bench", *_args(path, store, tiny)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = default_storage(store)
    deadline = Deadline(180)  # at nominal speed, for each stage: start-up, trial 0, trial 1
    study = None
    try:
        while not deadline.expired():  # wait for one finished trial and one running
            time.sleep(0.5)
            if not Path(storage).exists():
                continue
            try:
                study = optuna.load_study(study_name="killme", storage=make_storage(storage))
            except KeyError:
                continue
            states = [t.state for t in study.get_trials(deepcopy=False)]
            deadline.progress(tuple(states))
            running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
            if TrialState.COMPLETE in states and running and running[0].user_attrs.get("mlflow_run_ids"):
                break
        else:
            pytest.fail(f"the study never had a finished and a running trial (nothing changed for "
                        f"{deadline.seconds:.0f} s)")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {s: len(study.get_trials(states=(s,))) for s in (TrialState.COMPLETE, TrialState.RUNNING)}
    assert before[TrialState.RUNNING] == 1
    killed = study.get_trials(states=(TrialState.RUNNING,))[0]

    assert main(_args(path, store, tiny)) == 0
    study = optuna.load_study(study_name="killme", storage=make_storage(storage))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["techniques.real_target"] for t in complete) == [0.8, 0.9, 1.0]  # once each
    dead = study.trials[killed.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["retried"] is True
    c = MlflowClient(store)
    assert c.get_run(killed.user_attrs["mlflow_run_ids"][0]).info.status == "KILLED"
    exp = c.get_experiment_by_name("killme")
    finished = c.search_runs([exp.experiment_id], "tags.role = 'trial' and attributes.status = 'FINISHED'")
    assert len(finished) == 3


def test_unwritable_store_exit_2_before_training(tmp_path, capsys, tiny):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = ["train", "--tracking-uri", f"sqlite:///{blocker}/sub/mlflow.db", "--quiet"]
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 2
    assert "tracking store" in capsys.readouterr().err


def test_unreachable_tracking_server_exit_2(tmp_path, capsys, tiny, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    args = ["train", "--tracking-uri", "http://127.0.0.1:9", "--quiet"]  # nothing listens on port 9
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 2
    assert "127.0.0.1:9" in capsys.readouterr().err


def test_password_is_masked(tmp_path, capsys, tiny, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    args = ["train", "--tracking-uri", "http://user:s3cret@127.0.0.1:9", "--quiet"]
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "user:***@127.0.0.1" in err


# ---------------------------------------------------------------------------
# The bad-input table: every case exits 2, names the field and the value, writes nothing.

STUDY = """
name = "ok"
description = "x"
[space]
"techniques.real_target" = { choices = [1.0, 0.9] }
[objective]
metrics = ["eval/is"]
directions = ["maximize"]
"""

# (case, argv after `gan-bench`, study text or None, text that must appear in the error)
BAD_INPUT = [
    ("train: unknown model", ["train", "--model", "stylegan"], None, "stylegan"),
    ("train: negative lr", ["train", "--set", "optim.lr_d=-0.1"], None, "optim.lr_d=-0.1"),
    ("train: zero lr", ["train", "--set", "optim.lr_g=0"], None, "optim.lr_g=0"),
    ("train: depth 7", ["train", "--set", "model.g_depth=7"], None, "model.g_depth=7"),
    ("train: depth 1", ["train", "--set", "model.d_depth=1"], None, "model.d_depth=1"),
    ("train: smoothing 1.5", ["train", "--set", "techniques.real_target=1.5"], None, "real_target=1.5"),
    ("train: fake target 0.7", ["train", "--set", "techniques.fake_target=0.7"], None, "fake_target=0.7"),
    ("train: flip 0.9", ["train", "--set", "techniques.flip_prob=0.9"], None, "flip_prob=0.9"),
    ("train: dropout 1.0", ["train", "--set", "model.d_dropout=1.0"], None, "d_dropout=1.0"),
    ("train: norm typo", ["train", "--set", "model.g_norm=vbn"], None, "model.g_norm='vbn'"),
    ("train: g_loss typo", ["train", "--set", "techniques.g_loss=wgan"], None, "wgan"),
    ("train: unknown key", ["train", "--set", "optim.learning_rate=0.1"], None, "optim.learning_rate"),
    ("train: key typo hint", ["train", "--set", "model.latnt_dim=3"], None, "did you mean 'model.latent_dim'"),
    ("train: --set without =", ["train", "--set", "optim.epochs"], None, "optim.epochs"),
    ("train: string for int", ["train", "--set", "optim.epochs=many"], None, "optim.epochs='many'"),
    ("train: zero epochs", ["train", "--epochs", "0"], None, "optim.epochs=0"),
    ("train: tiny subset", ["train", "--train-subset", "3"], None, "data.train_subset=3"),
    ("train: batch 1", ["train", "--set", "optim.batch_size=1"], None, "optim.batch_size=1"),
    ("train: beta 1.0", ["train", "--set", "optim.beta2_g=1.0"], None, "beta2_g=1.0"),
    ("train: splits > samples", ["train", "--set", "eval.n_samples=20", "--set", "eval.splits=50"], None, "splits"),
    ("train: missing config file", ["train", "--config", "/nonexistent/cfg.toml"], None, "/nonexistent/cfg.toml"),
    ("study: unknown top key", None, STUDY + "colour = 1\n", "colour"),
    ("study: unknown space key", None, STUDY.replace("real_target", "real_targt"), "did you mean"),
    ("study: unknown base key", None, STUDY + "[base]\nmodel.widht = 3\n", "widht"),
    ("study: value out of range", None, STUDY.replace("[1.0, 0.9]", "[1.0, 1.2]"), "1.2"),
    ("study: empty choices", None, STUDY.replace("[1.0, 0.9]", "[]"), "choices"),
    ("study: empty space", None, STUDY.replace('"techniques.real_target" = { choices = [1.0, 0.9] }', ""),
     "space"),
    ("study: low >= high", None, STUDY.replace("choices = [1.0, 0.9]", "low = 0.9, high = 0.8") +
     "[sampler]\ntype='tpe'\n[budget]\nn_trials=3\n", "low"),
    ("study: log scale with 0", None, STUDY.replace('"techniques.real_target" = { choices = [1.0, 0.9] }',
                                                     '"optim.lr_g" = { low = 0.0, high = 0.1, log = true }') +
     "[sampler]\ntype='tpe'\n[budget]\nn_trials=3\n", "log"),
    ("study: grid with float range", None, STUDY.replace("choices = [1.0, 0.9]", "low = 0.8, high = 0.9"),
     "grid"),
    ("study: wrong type", None, STUDY.replace('description = "x"', "description = 3"), "description"),
    ("study: unknown metric", None, STUDY.replace('"eval/is"', '"eval/inception"'), "eval/inception"),
    ("study: directions mismatch", None, STUDY.replace('directions = ["maximize"]', 'directions = []'),
     "directions"),
    ("study: unknown sampler", None, STUDY + "[sampler]\ntype = 'cmaes2'\n", "sampler.type"),
    ("study: unknown pruner", None, STUDY + "[pruner]\ntype = 'asha'\n", "pruner.type"),
    ("study: multi-objective pruning", None,
     STUDY.replace('metrics = ["eval/is"]', 'metrics = ["eval/is", "eval/fid"]')
     .replace('directions = ["maximize"]', 'directions = ["maximize", "minimize"]') + "[pruner]\ntype='median'\n",
     "multi-objective"),
    ("study: tpe without budget", None, STUDY + "[sampler]\ntype = 'tpe'\n", "n_trials"),
    ("study: path in name", None, STUDY.replace('name = "ok"', 'name = "a/../../etc"'), "name"),
    ("study: when on unknown param", None,
     STUDY.replace('"techniques.real_target" = { choices = [1.0, 0.9] }',
                   '"techniques.real_target" = { choices = [1.0, 0.9], when = { "model.g_norm" = "virtual" } }')
     + "[sampler]\ntype='tpe'\n[budget]\nn_trials=3\n", "when"),
    ("study: TARR on unconditional model", None, STUDY.replace('"eval/is"', '"eval/tarr"'), "conditional"),
    ("study: not TOML", None, "name = = 3\n", "TOML"),
    ("study: repeats 0", None, "repeats = 0\n" + STUDY, "repeats"),
    ("study: negative n-trials flag", ["--n-trials", "0"], STUDY, "--n-trials"),
    ("study: zero workers", ["--workers", "0"], STUDY, "--workers"),
]


@pytest.mark.parametrize("case,argv,study,needle", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_table(case, argv, study, needle, tmp_path, capsys):
    store_dir = tmp_path / "store"
    uri = f"sqlite:///{store_dir}/mlflow.db"
    if study is not None:
        path = tmp_path / "study.toml"
        path.write_text(textwrap.dedent(study))
        full = ["study", "run", str(path), "--tracking-uri", uri, "--quiet", *(argv or [])]
    else:
        full = [*argv, "--tracking-uri", uri, "--quiet"]
    code = main(full)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err, err
    if study is not None and argv is None:
        assert str(path) in err  # names the file
    assert not store_dir.exists()  # nothing written


def test_grid_larger_than_budget_warns(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text(STUDY + "[budget]\nn_trials = 1\n")
    from bench.studies import load_study_file

    with pytest.warns(UserWarning, match="smaller than the grid"):
        load_study_file(path)


@pytest.mark.slow  # two workers: tests/studies/test_runner.py::test_two_workers_complete_the_grid_once
def test_four_workers_eight_trials_no_duplicate_no_loss(tmp_path, store, tiny):
    path = tmp_path / "many.toml"
    path.write_text(textwrap.dedent("""
        name = "many"
        description = "4 workers share 8 tiny trials on the default journal storage"
        [base]
        model.name = "vanilla"
        data.train_subset = 64
        [space]
        "techniques.real_target" = { type = "float", low = 0.7, high = 1.0 }
        [sampler]
        type = "random"
        [budget]
        n_trials = 8
        [objective]
        metrics = ["eval/is"]
        directions = ["maximize"]
    """))
    small = {k: v for k, v in tiny.items() if k != "data.train_subset"}
    assert main([*_args(path, store, small), "--workers", "4"]) == 0
    study = optuna.load_study(study_name="many", storage=make_storage(default_storage(store)))
    assert len(study.trials) == 8
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("many").experiment_id], "tags.role = 'trial'", max_results=100)
    assert sorted(int(r.data.tags["trial"]) for r in runs) == list(range(8))
    assert all(r.info.status == "FINISHED" for r in runs)
