"""A damaged, deleted, read-only or full tracking store, a file where a folder belongs, Ctrl-C: each through
the command line, as a user meets it: one line naming the store or file and what to do, exit 2 (130 for
Ctrl-C), no traceback, and nothing that was there is lost."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from bench.cli import main
from bench.studies.storage import default_storage
from tests.conftest import sigint_default, time_limit

STUDY = """
name = "{name}"
description = "two tiny cells"
[base]
model.name = "vanilla"
[space]
"techniques.real_target" = {{ choices = [1.0, 0.9] }}
[objective]
metrics = ["eval/is"]
directions = ["maximize"]
"""


def _error_line(err: str) -> str:
    """The one `gan-bench: error:` line of stderr (no traceback, nothing else that looks like an error)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and lines[0].startswith("gan-bench: error: "), err
    return lines[0]


def _digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its SHA-256: what a command must leave as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def _fake_study(uri: str, name: str, grid: bool = False) -> list[str]:
    """A finished study as `study run` logs it (a parent run, two finished trials with eval/is), without
    training: what `report` reads. `grid`: each trial also logs a sample grid image. Returns the trial run ids."""
    import numpy as np

    from bench.tracking import ensure_experiment

    experiment = ensure_experiment(uri, name)
    c = MlflowClient(uri)
    parent = c.create_run(experiment, run_name=f"study:{name}", tags={
        "role": "parent", "study": name, "objective": "eval/is:maximize", "space_keys": '["techniques.real_target"]'})
    c.set_terminated(parent.info.run_id)
    ids = []
    for i, target in enumerate(("1.0", "0.9")):
        run = c.create_run(experiment, run_name=f"real_target={target},seed=0", tags={
            "role": "trial", "study": name, "config_label": f"real_target={target}", "seed": "0",
            "mlflow.parentRunId": parent.info.run_id})
        now = int(time.time() * 1000)
        c.log_batch(run.info.run_id, metrics=[Metric("eval/is", 2.0 + i + s / 10, now, s) for s in (1, 2)],
                    params=[Param("techniques/real_target", target), Param("seed", "0"), Param("model/name", "vanilla")])
        if grid:
            c.log_image(run.info.run_id, np.zeros((28, 28, 3), dtype=np.uint8), key="samples", step=2)
        c.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return ids


def _uri(folder: Path) -> str:
    # Absolute: MLflow keeps one store object per URI string for the whole process, so a relative URI would
    # reach the previous test's folder.
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


@pytest.fixture(scope="module")
def template_store(tmp_path_factory) -> Path:
    """Two reported studies, `alpha` (with sample grids) and `beta`, made once: a new store costs MLflow's
    whole schema migration."""
    folder = tmp_path_factory.mktemp("template")
    for name in ("alpha", "beta"):
        _fake_study(_uri(folder), name, grid=name == "alpha")
    return folder / "mlruns"


@pytest.fixture
def two_studies(template_store, tmp_path, monkeypatch) -> tuple[str, Path]:
    """A copy of the template store in ./mlruns of a fresh working folder: its (uri, folder). Its runs' artifacts
    stay in the template's folder, which no test changes."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(template_store, tmp_path / "mlruns", ignore=shutil.ignore_patterns("*.lock"))
    return _uri(tmp_path), tmp_path / "mlruns"


def _report(uri: str, *studies: str, out: str = "out") -> list[str]:
    return ["report", *studies, "--tracking-uri", uri, "--no-reference", "--no-log", "--out", out]


# ---------------------------------------------------------------------------
# A damaged store


def test_truncated_store_is_named_damaged_for_every_command(two_studies, tmp_path, tiny, capsys):
    uri, store = two_studies
    db = store / "mlflow.db"
    db.write_bytes(db.read_bytes()[:db.stat().st_size // 2])  # a copy cut short, a crash mid-write
    before = _digest(store)
    study = tmp_path / "alpha.toml"
    study.write_text(STUDY.format(name="alpha"))
    sets = [a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]
    for argv in (_report(uri, "alpha"),
                 ["study", "run", str(study), "--quiet", "--timeout", "0.001", "--tracking-uri", uri, *sets],
                 ["train", "--quiet", "--tracking-uri", uri, *sets]):
        assert main(argv) == 2, argv
        line = _error_line(capsys.readouterr().err)
        assert f"MLflow store {db} is damaged" in line and "malformed" in line, line
        assert "restore it from a backup" in line
    assert _digest(store) == before  # the damaged file is left as it was, for the user to recover
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # the in-process test above covers the same path
def test_truncated_store_as_the_user_sees_it(two_studies, tmp_path):
    _, store = two_studies
    db = store / "mlflow.db"
    db.write_bytes(db.read_bytes()[:db.stat().st_size // 2])
    done = subprocess.run([sys.executable, "-m", "bench", "report", "alpha"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=time_limit(120))
    assert done.returncode == 2
    assert done.stderr.startswith("gan-bench: error: MLflow store mlruns/mlflow.db is damaged"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_study_the_store_cannot_read_leaves_the_others_reported(two_studies, tmp_path, capsys, monkeypatch):
    """A damaged part of the store (a test double: reading beta's runs fails as SQLite does on a bad page):
    alpha is still reported, beta is named, and the command exits 2."""
    import sqlite3

    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    uri, _ = two_studies
    beta = MlflowClient(uri).get_experiment_by_name("beta").experiment_id
    search = MlflowClient.search_runs

    def damaged_page(self, experiment_ids, *args, **kwargs):
        if beta in experiment_ids:
            cause = sqlalchemy.exc.DatabaseError("SELECT ...", {}, sqlite3.DatabaseError(
                "database disk image is malformed"))
            raise MlflowException(str(cause)) from cause
        return search(self, experiment_ids, *args, **kwargs)
    monkeypatch.setattr(MlflowClient, "search_runs", damaged_page)

    assert main(_report(uri, "alpha", "beta")) == 2
    out, err = capsys.readouterr()
    line = _error_line(err)
    assert line.startswith("gan-bench: error: study 'beta' is not in this report: MLflow store") and "damaged" in line
    assert "== alpha ==" in out and "== beta ==" not in out
    assert "alpha" in (tmp_path / "out" / "table.csv").read_text()


# ---------------------------------------------------------------------------
# The journal's trials point at runs the store does not hold


def _study_run(tmp_path: Path, tiny: dict, *extra: str) -> list[str]:
    """`study run` of a two-cell study that queues its cells and trains none (`--timeout 0.001`)."""
    study = tmp_path / "cells.toml"
    study.write_text(STUDY.format(name="cells"))
    sets = [a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]
    if "--tracking-uri" not in extra:
        extra = ("--tracking-uri", _uri(tmp_path), *extra)
    return ["study", "run", str(study), "--quiet", "--timeout", "0.001", *sets, *extra]


# "store deleted" needs a second process (this one keeps the deleted file open); "another store" meets the same
# check in this process.
@pytest.mark.parametrize("how", [pytest.param("store deleted", marks=pytest.mark.slow), "another store"])
def test_journal_pointing_at_runs_not_in_the_store_offers_force_new(how, tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_study_run(tmp_path, tiny)) == 0
    journal = Path(default_storage(_uri(tmp_path)))
    extra: tuple[str, ...] = ()
    if how == "store deleted":
        os.remove(tmp_path / "mlruns" / "mlflow.db")
    else:  # the same journal, shared, with another folder's store
        extra = ("--storage", str(journal), "--tracking-uri", f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}")
    kept = journal.read_bytes()
    capsys.readouterr()

    if how == "store deleted":  # a new process, as a user's next command (this one still holds the old file open)
        done = subprocess.run([sys.executable, "-m", "bench", *_study_run(tmp_path, tiny)], capture_output=True,
                              text=True, timeout=time_limit(300))
        code, err = done.returncode, done.stderr
    else:
        code, err = main(_study_run(tmp_path, tiny, *extra)), capsys.readouterr().err
    assert code == 2, err[-2000:]
    line = _error_line(err)
    assert "has no run" in line and "runs are not in this store" in line and "--force-new" in line, line
    assert journal.read_bytes() == kept  # the journal's trials are left as they were
    if how == "another store":
        assert main(_study_run(tmp_path, tiny, *extra, "--force-new")) == 0  # what the message offers works


# ---------------------------------------------------------------------------
# A read-only store


def _read_only_prefix(folder: Path) -> list[str] | None:
    """A command prefix that runs what follows with `folder` on a read-only mount (EROFS, as on a read-only
    disk or NFS export): a private mount namespace, for root where `unshare` may make one. None elsewhere."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script + " 2>/dev/null", str(folder), "true"],
                           capture_output=True)
    # remount fails where the container may not mount: no read-only store to test then
    return ["unshare", "-m", "sh", "-c", script, str(folder)] if probe.returncode == 0 else None


RUN_ALL = """
import contextlib, io, json, sys
from bench.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_read_only_store_serves_reading_commands_and_refuses_writing_ones(two_studies, tmp_path, tiny):
    """The store on a read-only mount (a real one: `unshare` gives this test a private mount namespace).
    `report` and `study status` work and write nothing; `train` and `study run` say the store is read-only."""
    uri, store = two_studies
    prefix = _read_only_prefix(store)
    if prefix is None:
        pytest.skip("no read-only mount here: needs root and a mount namespace (unshare)")
    for lock in store.glob("*.lock"):
        lock.unlink()
    assert main(_study_run(tmp_path, tiny)) == 0  # an Optuna journal beside the store, for `study status`
    for lock in store.glob("*.lock"):
        lock.unlink()
    before = _digest(store)
    sets = [a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]
    commands = [["report", "alpha", "--no-reference", "--out", str(tmp_path / "out")], ["study", "status", "cells"],
                _study_run(tmp_path, tiny), ["train", "--quiet", *sets]]  # the default store: ./mlruns
    done = subprocess.run([*prefix, sys.executable, "-c", RUN_ALL, json.dumps(commands)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=time_limit(300),
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr[-3000:]
    (report, report_err), (status, status_err), (run, run_err), (train, train_err) = json.loads(done.stdout)
    assert report == 0 and "not logged to the parent runs" in report_err and "read-only" in report_err, report_err
    assert (tmp_path / "out" / "report.html").exists()
    assert status == 0 and "Traceback" not in status_err, status_err
    for code, err in ((run, run_err), (train, train_err)):
        assert code == 2
        line = _error_line(err)
        assert "is read-only" in line and "Read-only file system" in line, line
    assert _digest(store) == before
    assert not list(store.glob("*.lock"))  # not even a lock file


@pytest.mark.slow
def test_ui_serves_a_read_only_store(two_studies, tmp_path):
    import urllib.request

    _, store = two_studies
    prefix = _read_only_prefix(store)
    if prefix is None:
        pytest.skip("no read-only mount here: needs root and a mount namespace (unshare)")
    for lock in store.glob("*.lock"):
        lock.unlink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "ui.log"
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "bench", "ui", "--port", str(port)], cwd=tmp_path,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + time_limit(120)
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                                                 data=b'{"max_results": 10}', method="POST",
                                                 headers={"Content-Type": "application/json"})
                body = json.loads(urllib.request.urlopen(request, timeout=5).read())
                break
            except OSError:
                time.sleep(1)
        assert body is not None, f"exit code {proc.poll()}; its output:\n{log.read_text()[-3000:]}"
        assert {"alpha", "beta"} <= {e["name"] for e in body["experiments"]}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert not list(store.glob("*.lock"))


# ---------------------------------------------------------------------------
# A file where the store's folder belongs; a full disk


def test_store_folder_that_is_a_file(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mlruns").write_text("notes\n")
    sets = [a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]
    for argv in (["train", "--quiet", *sets], _study_run(tmp_path, tiny)):
        assert main(argv) == 2
        line = _error_line(capsys.readouterr().err)
        assert "mlruns" in line and "move it aside" in line, line
    assert Path("mlruns").read_text() == "notes\n"


def test_disk_full_while_logging_fails_the_run_cleanly(tmp_path, tiny, capsys, monkeypatch):
    """A test double for a full disk: every `log_batch` (the tracker's writes of params, tags and metrics)
    raises OSError(ENOSPC) chained into MLflow's error, as SQLite's "database or disk is full" arrives.
    The command names the store and the cause; the run is closed as FAILED, with the error as a tag."""
    import bench.tracking
    from mlflow.exceptions import MlflowException

    monkeypatch.chdir(tmp_path)

    def full(self, run_id, *args, **kwargs):
        cause = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "mlruns" / "mlflow.db-journal"))
        raise MlflowException("(sqlite3.OperationalError) database or disk is full") from cause
    monkeypatch.setattr(MlflowClient, "log_batch", full)
    monkeypatch.setattr(bench.tracking, "with_retries", lambda call, **kw: call())  # no waiting between tries
    sets = [a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", "--quiet", "--tracking-uri", _uri(tmp_path), *sets]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"no space left for MLflow store {tmp_path / 'mlruns'}" in line and "disk is full" in line, line
    monkeypatch.undo()
    c = MlflowClient(_uri(tmp_path))
    (run,) = c.search_runs([c.get_experiment_by_name("gan-bench").experiment_id])
    assert run.info.status == "FAILED" and "disk is full" in run.data.tags["error"]


# ---------------------------------------------------------------------------
# Ctrl-C during training


def test_ctrl_c_during_train_is_one_line_exit_130_and_the_run_killed(tmp_path, tiny):
    sets = [a for k, v in {**tiny, "optim.epochs": 50}.items() for a in ("--set", f"{k}={v}")]
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "train", "--quiet", "--tracking-uri", uri, *sets],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    try:
        line = ""
        deadline = time.monotonic() + time_limit(180)
        while time.monotonic() < deadline and " started; watch it " not in line:  # the run exists
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()[-2000:]
        run_id = line.split()[1]
        time.sleep(1)  # inside the training loop
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=time_limit(60))
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("gan-bench: interrupted"), err
    assert stopped_s < time_limit(10)
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"


# ---------------------------------------------------------------------------
# Artifacts deleted


def test_report_says_the_artifacts_are_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fake_study(_uri(tmp_path), "alpha", grid=True)
    store = tmp_path / "mlruns"
    shutil.rmtree(store / "artifacts")
    assert main(_report(_uri(tmp_path), "alpha")) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"the artifact folder {(store / 'artifacts').resolve()} is missing" in text
    assert "no finished run logged a sample grid" not in text


def test_report_with_artifacts_shows_the_sample_grid(two_studies, tmp_path):
    """The premise of the case above: with its artifacts, alpha's report has its sample grids."""
    assert main(_report(two_studies[0], "alpha")) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "is missing" not in text and "no sample grid" not in text


# ---------------------------------------------------------------------------
# The data folder a symlink loop


def test_data_folder_that_is_a_symlink_loop(tmp_path, capsys):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.parent.mkdir(parents=True)
    raw.symlink_to("raw")  # raw -> raw
    assert main(["data", "fetch", "--data-root", str(tmp_path / "data")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(raw) in line and "symbolic link that leads nowhere" in line, line
    assert os.readlink(raw) == "raw"  # left as it was
