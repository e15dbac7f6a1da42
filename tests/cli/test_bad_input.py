"""Issue 13: bad input and faults, one class at a time, each through the real CLI.

1. a study that a fault could lock or silently mix (cut journal, changed file, huge grid, racing starts);
2. valid syntax, wrong shape; 3. flags taken and ignored; 4. faults that hang or leave things half-done;
5. collapse from the first epoch, and a real divergence; 6. secrets in other URL forms; 7. misleading messages.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from bench.cli import main
from bench.studies import preparation
from bench.studies.storage import default_storage, make_storage
from bench.studies.workers import run_name
from tests.conftest import sigint_default, time_limit

GRID = """
name = "{name}"
description = "two tiny cells"
[base]
model.name = "vanilla"
[space]
"techniques.real_target" = {{ choices = [1.0, 0.9] }}
[objective]
metrics = ["eval/is"]
directions = ["{direction}"]
"""


def _config_file(tmp_path: Path, tiny: dict, **extra) -> Path:
    """The tiny settings as a --config file (so every study run here also checks that --config is read)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in {**tiny, **extra}.items()]
    path = tmp_path / "tiny.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _study(tmp_path: Path, name: str = "cells", direction: str = "maximize") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(GRID.format(name=name, direction=direction))
    return path


def _study_args(path: Path, store: str, config: Path, *extra: str) -> list[str]:
    return ["study", "run", str(path), "--tracking-uri", store, "--config", str(config), "--quiet", *extra]


def _load(store: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(default_storage(store)))


def _runs(store: str, name: str, role: str) -> list:
    c = MlflowClient(store)
    exp = c.get_experiment_by_name(name)
    return c.search_runs([exp.experiment_id], f"tags.role = '{role}'") if exp else []


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("gan-bench: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------
# 1. A study that a fault could lock or silently corrupt


@pytest.mark.slow
def test_cut_journal_is_repaired_and_the_study_goes_on(tmp_path, store, tiny, capsys):
    cfg = _config_file(tmp_path, tiny, **{"model.width": 8})
    path = _study(tmp_path)
    # In a process of its own: a crash leaves a dead worker, whose RUNNING trials the next run recovers.
    done = subprocess.run([sys.executable, "-m", "bench", *_study_args(path, store, cfg)], capture_output=True,
                          text=True, timeout=time_limit(300))
    assert done.returncode == 0, done.stderr[-2000:]
    # --config is honoured: every trial ran with the file's width (not the default 64)
    assert {r.data.params["model/width"] for r in _runs(store, "cells", "trial")} == {"8"}
    journal = Path(default_storage(store))
    data = journal.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(data[:last_start + 30])  # the last record cut 30 bytes in (a crash mid-write)
    capsys.readouterr()

    assert main(["study", "status", "cells", "--tracking-uri", store]) == 0
    out, err = capsys.readouterr()
    assert "do not parse are skipped for reading" in err and "Traceback" not in err
    assert "COMPLETE" in out  # the finished trials are readable
    assert journal.read_bytes() == data[:last_start + 30]  # a command that only reads writes nothing

    assert main(_study_args(path, store, cfg)) == 0  # resumes: whatever the cut record held is redone
    corrupt = journal.with_name(journal.name + ".corrupt")
    assert corrupt.read_bytes() == data[last_start:last_start + 30] + b"\n"  # set aside, not dropped
    study = _load(store, "cells")
    assert sorted(t.params["techniques.real_target"] for t in study.get_trials(states=(TrialState.COMPLETE,))) \
        == [0.9, 1.0]
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert all(r.info.status != "RUNNING" for r in _runs(store, "cells", "parent"))


def test_cut_journal_quick(tmp_path, store, tiny, capsys):
    """The same without training: a study with its queue (`--timeout 0.001` starts no trial), its last record cut."""
    cfg = _config_file(tmp_path, tiny)
    path = _study(tmp_path, "quick")
    assert main(_study_args(path, store, cfg, "--timeout", "0.001")) == 0
    assert [t.state for t in _load(store, "quick").trials] == [TrialState.WAITING] * 2  # the premise: none ran
    journal = Path(default_storage(store))
    data = journal.read_bytes()
    assert b'"op_code":4' in data.rstrip(b"\n").rsplit(b"\n", 1)[-1]  # the last record enqueues the 2nd cell
    journal.write_bytes(data[:-25])  # a crash 25 bytes before the end of the last record
    capsys.readouterr()
    assert main(["study", "status", "quick", "--tracking-uri", store]) == 0
    out, err = capsys.readouterr()
    assert "do not parse are skipped for reading" in err and "Traceback" not in err and "counts:" in out
    assert journal.read_bytes() == data[:-25]  # a command that only reads writes nothing
    assert main(_study_args(path, store, cfg, "--timeout", "0.001")) == 0  # the study opens and writes again
    err = capsys.readouterr().err
    assert "set aside in" in err
    assert journal.with_name(journal.name + ".corrupt").read_bytes() == data[data.rstrip(b"\n").rfind(b"\n") + 1:-25] + b"\n"
    assert [p.read_bytes() for p in journal.parent.glob(journal.name + ".*.orig")] == [data[:-25]]  # kept whole
    assert main(["study", "status", "quick", "--tracking-uri", store]) == 0
    out, err = capsys.readouterr()
    assert "waiting 2" in out and "do not parse" not in err  # repaired once, for good; the lost cell queued again
    assert "running 0" in out


def test_journal_line_with_a_cut_record_then_a_whole_one(tmp_path):
    journal = tmp_path / "j.log"
    good = b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}'
    journal.write_bytes(good + b"\n" + b'{"op_code":5,"wor' + good + b"\n")
    storage = make_storage(str(journal))
    assert journal.read_bytes() == good + b"\n" + good + b"\n"  # the whole record is kept, the cut one set aside
    assert (tmp_path / "j.log.corrupt").read_bytes() == b'{"op_code":5,"wor\n'
    assert storage.get_all_studies()[0].study_name == "s"


def test_changed_study_file_is_refused_until_force_new(tmp_path, store, tiny, capsys):
    """`--timeout 0.001` creates or opens the study and its parent run, then starts no trial: no training here."""
    cfg = _config_file(tmp_path, tiny)
    path = _study(tmp_path, "changes")
    quick = ("--timeout", "0.001")
    assert main(_study_args(path, store, cfg, *quick)) == 0
    (old_parent,) = [r.info.run_id for r in _runs(store, "changes", "parent")]

    path.write_text(path.read_text() + "# a comment changes the file, not the question\n")
    assert main(_study_args(path, store, cfg, *quick)) == 0  # same question: resumes
    capsys.readouterr()

    path.write_text(GRID.format(name="changes", direction="minimize"))
    assert main(_study_args(path, store, cfg, *quick)) == 2
    line = _one_line(capsys.readouterr().err)
    assert "different study file (objective changed)" in line and "--force-new" in line
    study = _load(store, "changes")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and len(study.trials) == 2  # untouched
    assert all(r.info.status == "FINISHED" for r in _runs(store, "changes", "parent"))

    assert main(_study_args(path, store, cfg, "--force-new", *quick)) == 0
    assert "--force-new: deleted the Optuna study 'changes'" in capsys.readouterr().err
    study = _load(store, "changes")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and len(study.trials) == 2
    (parent,) = _runs(store, "changes", "parent")  # the old one is soft-deleted, out of every search
    assert parent.info.run_id != old_parent and parent.data.tags["study_spec_sha256"]
    assert MlflowClient(store).get_run(old_parent).info.lifecycle_stage == "deleted"


def test_huge_grid_is_refused_at_validation(tmp_path, capsys):
    path = tmp_path / "huge.toml"
    path.write_text(GRID.format(name="huge", direction="maximize").replace(
        '"techniques.real_target" = { choices = [1.0, 0.9] }',
        '"model.latent_dim" = { type = "int", low = 1, high = 4096 }\n'
        '"model.hidden" = { type = "int", low = 8, high = 4096 }\n'
        '"model.width" = { type = "int", low = 4, high = 1024 }'))
    store_dir = tmp_path / "store"
    t0 = time.time()
    assert main(["study", "run", str(path), "--tracking-uri", f"sqlite:///{store_dir}/mlflow.db"]) == 2
    assert time.time() - t0 < 10  # counted, never built
    line = _one_line(capsys.readouterr().err)
    assert "17,100,263,424 cells" in line and "at most 10,000" in line and str(path) in line
    assert not store_dir.exists()


def _open_store(uri, barrier, results):
    from bench.tracking import ensure_experiment

    barrier.wait()  # all at the same moment
    try:
        results.put(ensure_experiment(uri, "race"))
    except Exception as e:
        results.put(f"error: {e}"[:300])


def test_first_store_creation_is_serialised(tmp_path):
    """Three processes open one fresh SQLite store at once: without the lock MLflow's migration races
    (`table ... already exists`, `Online migration expected to match one row`) in nearly every try."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # fast: mlflow is already imported
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=time_limit(120))
    ids = [results.get(timeout=time_limit(5)) for _ in procs]
    assert len(set(ids)) == 1 and not ids[0].startswith("error"), ids  # one experiment, the same id everywhere


@pytest.mark.slow
def test_two_first_study_runs_at_once(tmp_path, store, tiny):
    """The README's promise: workers may start together, even in a fresh directory."""
    cfg = _config_file(tmp_path, tiny)
    path = _study(tmp_path, "together")
    args = [sys.executable, "-m", "bench", *_study_args(path, store, cfg)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=time_limit(300)) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in results]
    study = _load(store, "together")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2 and len(study.trials) == 2
    assert len(_runs(store, "together", "parent")) == 1


# ---------------------------------------------------------------------------
# 2. Valid syntax, wrong shape; 3. flags; 6. secrets; 7. messages: one line, exit 2, nothing written

STUDY = GRID.format(name="shape", direction="maximize")
INT_SPACE = STUDY.replace('"techniques.real_target" = { choices = [1.0, 0.9] }',
                          '"techniques.d_steps" = { type = "int", low = 1, high = 3, step = STEP }')

# (case, argv after `gan-bench` (FILE: the written file), file name, file bytes or None, text in the error)
SHAPES = [
    ("config: top level is a list", ["train", "--config", "FILE"], "c.json", b"[1, 2]", "top level must be a table"),
    ("config: top level is a string", ["train", "--config", "FILE"], "c.json", b'"abc"', "got str 'abc'"),
    ("config: section is a number", ["train", "--config", "FILE"], "c.toml", b"optim = 3\n", "optim=3: a section"),
    ("config: not UTF-8", ["train", "--config", "FILE"], "c.toml", b"\xff\xfeoptim", "not UTF-8"),
    ("config: bad key in the file", ["train", "--config", "FILE"], "c.toml", b"optim.epochz = 3\n", "optim.epochz"),
    ("study: not UTF-8", ["study", "run", "FILE"], "s.toml", b"name = '\xff'\n", "not UTF-8"),
    ("study: section is a number", ["study", "run", "FILE"], "s.toml",
     ("space = 3\n" + STUDY.replace('[space]\n"techniques.real_target" = { choices = [1.0, 0.9] }', "")).encode(),
     "space: Input should be a valid dictionary"),
    ("study: base section is a number", ["study", "run", "FILE"], "s.toml",
     ("base = 7\n" + STUDY.replace('[base]\nmodel.name = "vanilla"', "")).encode(),
     "base: Input should be a valid dictionary (got 7)"),
    ("study: base key is a number", ["study", "run", "FILE"], "s.toml",
     STUDY.replace('model.name = "vanilla"', "model = 3").encode(), "model=3"),
    ("study: int step 0", ["study", "run", "FILE"], "s.toml", INT_SPACE.replace("STEP", "0").encode(),
     "step=0: must be > 0"),
    ("study: int step -1", ["study", "run", "FILE"], "s.toml", INT_SPACE.replace("STEP", "-1").encode(),
     "step=-1: must be > 0"),
    ("study: int step 0.5", ["study", "run", "FILE"], "s.toml", INT_SPACE.replace("STEP", "0.5").encode(),
     "integer step"),
    ("study: subset in the space too large", ["study", "run", "FILE"], "s.toml",
     STUDY.replace('"techniques.real_target" = { choices = [1.0, 0.9] }',
                   '"data.train_subset" = { choices = [100, 70000] }').encode(), "data.train_subset=70000"),
    ("study: batch in the space larger than the subset", ["study", "run", "FILE"], "s.toml",
     STUDY.replace('model.name = "vanilla"', 'model.name = "vanilla"\ndata.train_subset = 100')
     .replace('"techniques.real_target" = { choices = [1.0, 0.9] }',
              '"optim.batch_size" = { choices = [32, 128] }').encode(), "optim.batch_size=128"),
    ("study: n_trials of a billion", ["study", "run", "FILE"], "s.toml",
     (STUDY + "[budget]\nn_trials = 1000000000\n").replace('[sampler]', '').replace(
         "[objective]", "[sampler]\ntype = 'random'\n[objective]").encode(), "budget.n_trials"),
    ("study: --config with a bad value", ["study", "run", "STUDY", "--config", "FILE"], "c.toml",
     b"optim.epochs = 0\n", "optim.epochs=0"),
    ("train: subset larger than MNIST", ["train", "--train-subset", "100000"], None, None,
     "data.train_subset=100000: larger than the mnist train split (60000"),
    ("train: batch larger than the subset", ["train", "--train-subset", "20", "--set", "optim.batch_size=64"],
     None, None, "optim.batch_size=64"),
    ("train: D steps x batch larger than the subset",
     ["train", "--train-subset", "64", "--set", "techniques.d_steps=5"], None, None, "techniques.d_steps=5"),
    ("train: data root is a file", ["train", "--data-root", "FILE"], "root", b"x", "is a file, not a folder"),
    ("study: data root is a file", ["study", "run", "STUDY", "--data-root", "FILE"], "root", b"x", "not a folder"),
    ("data fetch: data root is a file", ["data", "fetch", "--data-root", "FILE"], "root", b"x", "not a folder"),
    ("train: lr is inf", ["train", "--set", "optim.lr_g=Infinity"], None, None, "optim.lr_g=inf"),
    ("evaluator: --epochs is not taken", ["evaluator", "--epochs", "3"], None, None, "--epochs"),
    ("evaluator: --tracking-uri is not taken", ["evaluator", "--tracking-uri", "sqlite:///x.db"], None, None,
     "--tracking-uri"),
    ("train: unknown model names the field", ["train", "--model", "stylegan"], None, None,
     "model.name='stylegan': unknown model; choose one of"),
    ("train: experiment name too long", ["train", "--experiment", "x" * 600], None, None,
     "--experiment='xxxxx"),
    ("train: run name too long", ["train", "--run-name", "r" * 300], None, None, "at most 250"),
    ("status: conninfo string with a password", ["study", "status", "s", "--storage",
                                                 "host=127.0.0.1 port=1 password=s3cret dbname=x"], None, None,
     "password=***"),
    ("status: password in a query parameter", ["study", "status", "s", "--storage",
                                               "postgresql+psycopg://u@127.0.0.1:1/db?password=s3cret"], None, None,
     "password=***"),
    ("status: no journal there", ["study", "status", "s"], None, None, "no Optuna journal"),
    ("run: storage URL with a password parameter", ["study", "run", "STUDY", "--storage",
                                                    "postgresql+psycopg://u@127.0.0.1:1/db?password=s3cret"],
     None, None, "password=***"),
    ("run: storage as a conninfo string", ["study", "run", "STUDY", "--storage",
                                           "host=127.0.0.1 password='s3cret' dbname=x"], None, None, "password=***"),
    ("run: --timeout nan", ["study", "run", "STUDY", "--timeout", "nan"], None, None,
     "timeout=nan: must be positive (--timeout)"),
    ("perf: a parity option to the benchmark", ["perf", "bench", "--seeds", "2"], None, None,
     "unrecognized arguments: --seeds 2"),
    ("perf: a benchmark option to parity", ["perf", "parity", "--steps", "3"], None, None,
     "unrecognized arguments: --steps 3"),
    ("perf: negative warmup", ["perf", "bench", "--warmup", "-1"], None, None, "--warmup"),
    # Issue 33: values past what torch, Optuna, the data or this machine's memory can take
    ("train: seed of 2**70", ["train", "--seed", str(2**70)], None, None,
     f"seed={2**70}: Input should be less than or equal to {2**63 - 1}"),
    ("study: int high = inf", ["study", "run", "FILE"], "s.toml",
     INT_SPACE.replace("high = 3", "high = inf").replace("STEP", "1").encode(),
     "space.techniques.d_steps.high: Input should be a finite number (got inf)"),
    ("study: int high = nan", ["study", "run", "FILE"], "s.toml",
     INT_SPACE.replace("high = 3", "high = nan").replace("STEP", "1").encode(), "high: Input should be a finite number"),
    ("study: int step = inf", ["study", "run", "FILE"], "s.toml", INT_SPACE.replace("STEP", "inf").encode(),
     "space.techniques.d_steps.step: Input should be a finite number (got inf)"),
    ("study: float low = -inf", ["study", "run", "FILE"], "s.toml",
     STUDY.replace('"techniques.real_target" = { choices = [1.0, 0.9] }',
                   '"techniques.real_target" = { low = -inf, high = 1.0 }').encode(), "low: Input should be a finite"),
    ("study: int high beyond 64 bits", ["study", "run", "FILE"], "s.toml",
     INT_SPACE.replace("high = 3", "high = 1e300").replace("STEP", "1").encode(), "high=1e+300: an int parameter"),
    ("study: sampler seed of 2**70", ["study", "run", "FILE"], "s.toml",
     (STUDY + f"[sampler]\nseed = {2**70}\n").encode(), "sampler.seed: Input should be less than or equal to 4294967295"),
    ("train: n_real larger than the test split", ["train", "--set", "eval.n_real=20000"], None, None,
     "eval.n_real=20000: larger than the mnist test split (10000 images)"),
    ("train: evaluator subset larger than the train split", ["train", "--set", "eval.evaluator_subset=100000"],
     None, None, "eval.evaluator_subset=100000: larger than the mnist train split (60000 images)"),
    ("train: VBN reference larger than the subset",
     ["train", "--model", "dcgan", "--train-subset", "20", "--set", "optim.batch_size=2", "--set",
      "model.g_norm=virtual"], None, None, "model.vbn_ref_size=64: the reference batch is drawn from the training set"),
    ("train: 200 million generated images", ["train", "--set", "eval.n_samples=200000000"], None, None,
     "eval.n_samples=200000000: the run needs at least"),
    ("study: 200 million generated images in the space", ["study", "run", "FILE"], "s.toml",
     STUDY.replace('"techniques.real_target" = { choices = [1.0, 0.9] }',
                   '"eval.n_samples" = { choices = [200, 200000000] }').encode(),
     "the space's largest trial (n_samples=200000000): eval.n_samples=200000000: the run needs at least"),
]


def test_memory_bound_is_the_largest_value_that_fits():
    """The bound a memory refusal names is exact for the estimate: it fits, one more does not."""
    from bench.errors import ConfigError
    from bench.run_config import build_config, check_sizes, memory_needed

    for key, value in (("eval.n_samples", 300_000), ("optim.batch_size", 4096)):
        cfg = build_config({}, {"device": "cpu", "model.name": "dcgan", key: value})
        available = sum(memory_needed(cfg).values()) - 1
        with pytest.raises(ConfigError) as refused:
            check_sizes(cfg, available=available)
        text = str(refused.value)
        assert text.startswith(f"{key}={value}: the run needs at least") and "is available; use " in text, text
        bound = int(text.rsplit("<= ", 1)[1])
        assert 2 <= bound < value
        check_sizes(build_config({}, {"device": "cpu", "model.name": "dcgan", key: bound}), available=available)
        with pytest.raises(ConfigError):
            check_sizes(build_config({}, {"device": "cpu", "model.name": "dcgan", key: bound + 1}), available=available)


@pytest.mark.parametrize("case,argv,name,content,needle", SHAPES, ids=[c[0] for c in SHAPES])
def test_wrong_shape_one_line_exit_2_nothing_written(case, argv, name, content, needle, tmp_path, capsys,
                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    store_dir = tmp_path / "store"
    argv = list(argv)
    if name is not None:
        path = tmp_path / name
        path.write_bytes(content)
        argv = [str(path) if a == "FILE" else a for a in argv]
    if "STUDY" in argv:
        study = tmp_path / "s.toml"
        study.write_text(STUDY)
        argv = [str(study) if a == "STUDY" else a for a in argv]
    if argv[0] in ("train", "study"):
        argv += ["--tracking-uri", f"sqlite:///{store_dir}/mlflow.db"]
    before = set(tmp_path.iterdir())
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refusing a flag
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert needle in err, err
    assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err
    if name is not None and argv[0] != "data" and "root" not in name:
        assert name in err  # names the file
    assert "s3cret" not in err
    assert set(tmp_path.iterdir()) == before  # nothing written: no store, no journal, no lock file


def test_python_m_bench_cli_reports_input_errors_of_command_modules(tmp_path):
    """`python -m bench.cli` (the README's form) runs cli.py as __main__: errors raised elsewhere are still caught."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "bench.cli", "perf", "bench", "--set", "train.nonsense=1"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=time_limit(120))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-1500:]
    assert done.stderr.startswith("gan-bench: error: unknown config key 'train.nonsense'")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("uri,masked", [
    ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
    ("postgresql://h/db?user=u&password=s3cret&sslmode=require", "postgresql://h/db?user=u&password=***&sslmode=require"),
    ("postgresql://h/db?sslpassword=s3cret", "postgresql://h/db?sslpassword=***"),
    ("host=db password=s3cret dbname=x", "host=db password=*** dbname=x"),
    ("host=db password = 's3 cret' dbname=x", "host=db password = *** dbname=x"),
    ("https://h/?token=s3cret&x=1", "https://h/?token=***&x=1"),
    ("http://u:p%40ss@h:5000", "http://u:***@h:5000"),
    ("sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db"),
])
def test_every_secret_form_is_masked(uri, masked):
    from bench.tracking import mask_uri, scrub

    from urllib.parse import unquote

    assert mask_uri(uri) == masked
    secrets = [s for s in ("s3cret", "s3 cret", "p%40ss", "p@ss", "pw") if s in unquote(uri)]
    text = scrub(f"could not connect to {uri}; the server said: wrong password {', '.join(secrets)}", uri)
    assert not [s for s in secrets if s in text], text


def test_long_study_labels_fit_mlflow_run_names():
    label = ",".join(f"param_{i}=0.{i}" for i in range(40))
    name = run_name(label, 3)
    assert len(name) <= 250 and name.endswith("...,seed=3") and name.startswith("param_0=0.0,")
    assert run_name("real_target=0.9", 1) == "real_target=0.9,seed=1"


def test_data_fetch_without_a_dataset_uses_the_default(data_root, capsys):
    assert main(["data", "fetch", "--data-root", str(data_root)]) == 0
    assert "mnist: already present and verified" in capsys.readouterr().out


def _corrupt_copy(data_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    shutil.copytree(data_root / "MNIST", root / "MNIST")
    bad = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(bad.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # still a valid IDX file, one label changed
    os.chmod(bad, 0o644)
    bad.write_bytes(gzip.compress(bytes(raw)))
    return root, bad


def test_local_checksum_mismatch_is_not_a_download_failure(data_root, tmp_path, capsys, tiny):
    root, bad = _corrupt_copy(data_root, tmp_path)
    assert main(["data", "fetch", "mnist", "--data-root", str(root)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(bad) in line and "expected ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" in line
    assert "torchvision" not in line and "could not fetch" not in line
    store_dir = tmp_path / "store"
    args = ["train", "--tracking-uri", f"sqlite:///{store_dir}/mlflow.db", "--quiet"]
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    assert main([*args, "--data-root", str(root)]) == 2
    assert "checksum mismatch" in _one_line(capsys.readouterr().err)
    assert not store_dir.exists()


# ---------------------------------------------------------------------------
# 4. Faults that hang or leave things half-done


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "http://u:s3cret@127.0.0.1:9/?password=s3cret&x=1"])
def test_unreachable_server_fails_in_seconds(uri, tmp_path, capsys, tiny, monkeypatch):
    for var in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)  # MLflow's defaults: 7 retries, minutes of backoff
    monkeypatch.chdir(tmp_path)
    t0 = time.time()
    args = ["train", "--tracking-uri", uri, "--quiet"]
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 2
    assert time.time() - t0 < 20
    line = _one_line(capsys.readouterr().err)
    assert "127.0.0.1:9" in line and "mlflow server" in line and "s3cret" not in line
    study = _study(tmp_path, "far")
    assert main(["study", "run", str(study), "--tracking-uri", uri, "--quiet"]) == 2
    assert "did not answer" in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.toml"]  # no ./mlruns journal or lock left


KILL_GRID = GRID.replace('model.name = "vanilla"', 'model.name = "cgan-mlp"\noptim.epochs = 3') \
    .replace('"eval/is"', '"eval/tarr"')


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_ctrl_c_marks_the_trial_and_kills_its_run(workers, tmp_path, store, tiny):
    """SIGINT to the `study run` process only (with workers, it passes it on to them)."""
    cfg = _config_file(tmp_path, {k: v for k, v in tiny.items() if k != "optim.epochs"},
                       **{"data.train_subset": 960})
    path = tmp_path / "ctrlc.toml"
    path.write_text(KILL_GRID.format(name="ctrlc", direction="maximize"))
    proc = subprocess.Popen([sys.executable, "-m", "bench", *_study_args(path, store, cfg, "--workers", str(workers))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    journal = Path(default_storage(store))
    deadline = time.time() + time_limit(180)
    try:
        while time.time() < deadline:  # wait for a running trial with its MLflow run
            time.sleep(0.5)
            if not journal.exists():
                continue
            try:
                running = _load(store, "ctrlc").get_trials(states=(TrialState.RUNNING,))
            except KeyError:
                continue
            if running and running[0].user_attrs.get("mlflow_run_ids"):
                break
        else:
            pytest.fail("no trial started")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=time_limit(60))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    study = _load(store, "ctrlc")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    interrupted = study.trials[running[0].number]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["retried"] is True
    assert "Ctrl-C" in interrupted.user_attrs["error"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert any(t.system_attrs.get("fixed_params") == interrupted.params for t in waiting)  # queued again
    c = MlflowClient(store)
    assert c.get_run(running[0].user_attrs["mlflow_run_ids"][0]).info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in [*_runs(store, "ctrlc", "parent"), *_runs(store, "ctrlc", "trial")])


def test_failed_preparation_closes_the_parent_run(tmp_path, store, tiny, monkeypatch, capsys):
    cfg = _config_file(tmp_path, tiny)
    path = _study(tmp_path, "halfway")

    def boom(spec, study):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(preparation, "enqueue_budget", boom)
    assert main(_study_args(path, store, cfg)) == 2  # a full disk is named in one line, no traceback
    assert "no space left" in _one_line(capsys.readouterr().err)
    (parent,) = _runs(store, "halfway", "parent")
    assert parent.info.status == "FAILED" and "No space left" in parent.data.tags["error"]


# ---------------------------------------------------------------------------
# 5. Collapse from the first epoch, and a run that really diverges


def _train(store: str, tiny: dict, *extra: str) -> list[str]:
    args = ["train", "--tracking-uri", store, "--quiet", "--model", "vanilla"]
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    return [*args, *extra]


def _only_run(store: str):
    c = MlflowClient(store)
    (run,) = c.search_runs([c.get_experiment_by_name("gan-bench").experiment_id])
    return c, run


def test_generator_constant_from_the_first_epoch_is_a_collapse(store, tiny, monkeypatch):
    """G's output layer dies in its first step (tanh saturated: one image for every z) and never varies."""
    from bench.step import GANStep

    g_step = GANStep.g_step

    def dying_g_step(self, *args):
        loss = g_step(self, *args)
        last = [m for m in self.G.modules() if getattr(m, "bias", None) is not None][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(-8.0)
        return loss
    monkeypatch.setattr(GANStep, "g_step", dying_g_step)
    assert main(_train(store, tiny, "--epochs", "3")) == 0
    c, run = _only_run(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["diverged"] == "true"
    assert run.data.tags["diverged_reason"].startswith("generator collapsed at epoch 1")
    assert [m.step for m in c.get_metric_history(run.info.run_id, "eval/sample_std")] == [1]  # stopped there


def test_huge_learning_rate_really_diverges_and_keeps_the_last_finite_evaluation(store, tiny, capsys):
    assert main(_train(store, tiny, "--epochs", "2", "--set", "optim.lr_g=1e10", "--set", "optim.lr_d=1e10")) == 0
    c, run = _only_run(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["diverged"] == "true" and "non-finite loss at step" in run.data.tags["diverged_reason"]
    history = c.get_metric_history(run.info.run_id, "eval/is")
    assert [m.step for m in history] == [0]  # the weights before the failing epoch were evaluated, nothing after
    assert all(v == v and abs(v) != float("inf") for v in run.data.metrics.values())
    assert "nan" not in capsys.readouterr().out.lower()
