"""Studies end to end on CPU with tiny budgets: grids, resumption, workers, pruning, failures, bad files."""

import textwrap
from pathlib import Path

import optuna
from mlflow import MlflowClient

from bench.cli import main
from bench.studies.storage import default_storage, make_storage

GRID = """
name = "{name}"
description = "test grid"
[base]
model.name = "cgan-mlp"
[space]
"techniques.real_target" = {{ choices = [1.0, 0.9] }}
"model.d_dropout" = {{ choices = [0.25, 0.5] }}
[sampler]
type = "grid"
[objective]
metrics = ["eval/tarr"]
directions = ["maximize"]
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def study_args(path, store, tiny, *extra):
    args = ["study", "run", str(path), "--tracking-uri", store, "--quiet"]
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def child_runs(store, name):
    c = MlflowClient(store)
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id], filter_string="tags.role = 'trial'")
    return c, exp, runs


def load(store, name):
    return optuna.load_study(study_name=name, storage=make_storage(default_storage(store)))


def cells(study):
    return sorted((t.params["techniques.real_target"], t.params["model.d_dropout"])
                  for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)


ALL_CELLS = [(0.9, 0.25), (0.9, 0.5), (1.0, 0.25), (1.0, 0.5)]


def test_grid_end_to_end_nested_runs_and_rerun_adds_nothing(tmp_path, store, tiny, capsys):
    path = write(tmp_path, GRID.format(name="grid"))
    assert main(study_args(path, store, tiny)) == 0
    c, exp, runs = child_runs(store, "grid")
    assert len(runs) == 4
    parents = c.search_runs([exp.experiment_id], filter_string="tags.role = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["study"] == "grid" and parent.data.tags["sampler"] == "grid"
    assert "study_file_sha256" in parent.data.tags
    for r in runs:
        t = r.data.tags
        assert t["mlflow.parentRunId"] == parent.info.run_id
        assert t["study"] == "grid" and t["seed"] == "0" and r.info.status == "FINISHED"
        assert "param.techniques.real_target" in t and "param.model.d_dropout" in t
        assert t["config_label"].startswith("real_target=")
    assert sorted(int(r.data.tags["trial"]) for r in runs) == [0, 1, 2, 3]
    # Optuna knows the MLflow runs; the parent holds the trials table and the best trial
    study = load(store, "grid")
    assert all(t.user_attrs["mlflow_run_ids"] for t in study.trials)
    files = [f.path for f in c.list_artifacts(parent.info.run_id)]
    assert {"trials.csv", "best_trials.json", "study.toml"} <= set(files)
    assert cells(study) == ALL_CELLS

    capsys.readouterr()
    assert main(study_args(path, store, tiny)) == 0
    assert "already finished" in capsys.readouterr().out
    assert len(child_runs(store, "grid")[2]) == 4
    assert len(load(store, "grid").trials) == 4


def test_interrupted_study_resumes_without_duplicates(tmp_path, store, tiny):
    path = write(tmp_path, GRID.format(name="resume"))
    assert main(study_args(path, store, tiny, "--n-trials", "2")) == 0
    assert len(load(store, "resume").get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2
    assert main(study_args(path, store, tiny)) == 0
    study = load(store, "resume")
    assert len(study.trials) == 4 and cells(study) == ALL_CELLS
    assert len(child_runs(store, "resume")[2]) == 4


def test_two_workers_complete_the_grid_once(tmp_path, store, tiny):
    path = write(tmp_path, GRID.format(name="workers"))
    assert main(study_args(path, store, tiny, "--workers", "2")) == 0
    study = load(store, "workers")
    assert len(study.trials) == 4 and cells(study) == ALL_CELLS
    runs = child_runs(store, "workers")[2]
    assert len(runs) == 4 and len({r.data.tags["trial"] for r in runs}) == 4


def test_median_pruner_prunes_a_clearly_worse_config(tmp_path, store, tiny):
    # lr_g = 1e-8 leaves G at its initialisation: its FID after epoch 1 is far above the good run's
    path = write(tmp_path, """
        name = "prune"
        description = "pruning"
        [base]
        model.name = "cgan-mlp"
        optim.epochs = 3
        data.train_subset = 640
        [space]
        "optim.lr_g" = { choices = [2e-3, 1e-8] }
        [sampler]
        type = "grid"
        [pruner]
        type = "median"
        n_startup_trials = 1
        [objective]
        metrics = ["eval/fid"]
        directions = ["minimize"]
    """)
    small = {k: v for k, v in tiny.items() if k not in ("optim.epochs", "data.train_subset")}
    assert main(study_args(path, store, small)) == 0
    study = load(store, "prune")
    states = {t.params["optim.lr_g"]: t.state for t in study.trials}
    assert states == {2e-3: optuna.trial.TrialState.COMPLETE, 1e-8: optuna.trial.TrialState.PRUNED}
    pruned = [r for r in child_runs(store, "prune")[2] if r.data.tags["param.optim.lr_g"] == "1e-08"]
    assert pruned[0].info.status == "KILLED"


def test_failing_trial_is_recorded_and_study_completes(tmp_path, store, tiny, monkeypatch):
    # batch 640 > the 320-image subset is now refused at validation: make that trial raise inside training instead
    from bench import experiment

    train = experiment.train

    def crashing(step, members, **kwargs):
        if members[0].cfg.optim.batch_size == 64:
            raise ValueError("batch_size 64: a crash inside training")
        return train(step, members, **kwargs)
    monkeypatch.setattr(experiment, "train", crashing)
    path = write(tmp_path, """
        name = "crash"
        description = "a crashing trial"
        [base]
        model.name = "cgan-mlp"
        [space]
        "optim.batch_size" = { choices = [64, 32] }
        [sampler]
        type = "grid"
        [objective]
        metrics = ["eval/tarr"]
        directions = ["maximize"]
    """)
    assert main(study_args(path, store, tiny)) == 1  # the other trial completes; the command says one failed
    study = load(store, "crash")
    states = {t.params["optim.batch_size"]: t.state for t in study.trials}
    assert states == {64: optuna.trial.TrialState.FAIL, 32: optuna.trial.TrialState.COMPLETE}
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL][0]
    assert "batch_size" in failed.user_attrs["error"]
    runs = {r.data.tags["param.optim.batch_size"]: r for r in child_runs(store, "crash")[2]}
    assert runs["64"].info.status == "FAILED" and "batch_size" in runs["64"].data.tags["error"]
    assert runs["32"].info.status == "FINISHED"


# Malformed study files: see the bad-input table in tests/cli/test_faults.py.


def test_catalogue_files_are_valid():
    from bench.studies import load_study_file

    files = sorted(Path(__file__).resolve().parents[2].joinpath("studies").glob("*.toml"))
    assert files, "no study files"
    for f in files:
        spec, _ = load_study_file(f)
        assert spec.name == f.stem


VARIANTS = """
name = "variants"
description = "variants that set their own epochs and batch size"
[variants.long]
optim.epochs = 3
optim.batch_size = 16
[variants.other]
optim.epochs = 4
model.d_dropout = 0.5
[space]
"techniques.real_target" = {{ choices = [1.0] }}
[sampler]
type = "grid"
[objective]
metrics = ["eval/tarr"]
"""


def test_the_command_line_shrinks_every_variant_but_never_a_searched_key(tmp_path, store, tiny):
    path = write(tmp_path, VARIANTS.format())
    model = {"model.name": "cgan-mlp", "model.hidden": 32}
    args = study_args(path, store, {**tiny, **model}, "--set", "techniques.real_target=0.9")
    assert main(args) == 0  # tiny has optim.epochs=1, optim.batch_size=32
    _, _, runs = child_runs(store, "variants")
    params = {r.data.tags["variant"]: r.data.params for r in runs}
    assert set(params) == {"long", "other"}
    for p in params.values():
        assert (p["optim/epochs"], p["optim/batch_size"]) == ("1", "32")  # the command line won over the variants
        assert p["techniques/real_target"] == "1.0"  # the searched value won over --set
    assert params["other"]["model/d_dropout"] == "0.5"  # what the command line leaves alone stays the variant's
