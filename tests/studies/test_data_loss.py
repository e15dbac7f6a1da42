"""What a user did not ask to change is never rewritten, and nothing a fault touched stays lost:
a file given as --storage that is not a journal, a journal only read, failed cells after their cause
is fixed, an unreadable checkpoint, a killed `train`, a password on the UI's command lines."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from bench.cli import main
from bench.studies.storage import default_storage, make_storage
from tests.conftest import time_limit, two_cell_study

GRID = two_cell_study("retry-me", "two cells that fail while the data is damaged")


def study_args(path: Path, store: str, tiny: dict, *extra: str) -> list[str]:
    args = ["study", "run", str(path), "--tracking-uri", store, "--quiet", *extra]
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    return args


@pytest.fixture
def grid(tmp_path) -> Path:
    path = tmp_path / "retry-me.toml"
    path.write_text(GRID)
    return path


@pytest.mark.parametrize("kind", ["text", "mlflow-store", "folder-file"])
def test_a_file_that_is_not_a_journal_is_left_byte_for_byte(kind, grid, tmp_path, store, tiny, capsys):
    if kind == "mlflow-store":  # the store's own database, a real SQLite file
        from bench.tracking import ensure_experiment

        ensure_experiment(store, "elsewhere")
        target = Path(store.removeprefix("sqlite:///"))
    else:
        target = tmp_path / ("notes.txt" if kind == "text" else "x.bin")
        target.write_bytes(b"my notes\nnot json\n" if kind == "text" else bytes(range(256)) * 4)
    before = target.read_bytes()
    for argv in (study_args(grid, store, tiny, "--storage", str(target)),
                 ["study", "status", "retry-me", "--storage", str(target)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(target) in err and "not a journal" in err.replace("not an Optuna journal", "not a journal")
        assert target.read_bytes() == before
    assert not list(tmp_path.glob(f"{target.name}.*"))  # no .corrupt, no lock, no copy beside it


def test_reading_a_damaged_journal_writes_nothing(grid, store, tiny, capsys):
    assert main(study_args(grid, store, {**tiny, "data.train_subset": 160}, "--n-trials", "1")) == 0
    journal = Path(default_storage(store))
    journal.write_bytes(journal.read_bytes() + b'{"op_code": 5, "worker_id": "cut sh')  # a crash mid-write
    before = journal.read_bytes()
    folder = sorted(p.name for p in journal.parent.iterdir())
    capsys.readouterr()
    assert main(["study", "status", "retry-me", "--tracking-uri", store]) == 0
    out = capsys.readouterr()
    assert "complete 1" in out.out and "skipped for reading" in out.err
    assert journal.read_bytes() == before and sorted(p.name for p in journal.parent.iterdir()) == folder


def test_repair_keeps_the_whole_file_as_it_was(grid, store, tiny, capsys):
    assert main(study_args(grid, store, {**tiny, "data.train_subset": 160}, "--n-trials", "1")) == 0
    journal = Path(default_storage(store))
    damaged = journal.read_bytes() + b'{"op_code": 5, "worker_id": "cut sh'
    journal.write_bytes(damaged)
    make_storage(str(journal))  # what `study run` opens
    (original,) = journal.parent.glob(f"{journal.name}.*.orig")
    assert original.read_bytes() == damaged
    assert journal.read_bytes() == damaged[:damaged.rindex(b"\n") + 1]
    assert "the file as it was is in" in capsys.readouterr().err


def test_failed_cells_train_again_once_the_cause_is_fixed(grid, tmp_path, store, tiny, data_root, capsys):
    broken = tmp_path / "data"
    shutil.copytree(data_root / "MNIST", broken / "MNIST")
    images = next((broken / "MNIST" / "raw").glob("train-images*"))
    good = images.read_bytes()
    images.write_bytes(good[: len(good) // 2])  # a damaged data file
    overrides = {**tiny, "data.root": str(broken), "data.train_subset": 160}

    assert main(study_args(grid, store, overrides)) == 1  # all cells failed: not a success
    err = capsys.readouterr().err
    assert "2 trial(s) failed" in err and "run the same command again" in err

    images.write_bytes(good)  # the cause is fixed
    assert main(study_args(grid, store, overrides)) == 0
    out = capsys.readouterr().out
    assert "retrying trials that failed in an earlier run: [0, 1]" in out
    study = optuna.load_study(study_name="retry-me", storage=make_storage(default_storage(store)))
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["techniques.real_target"] for t in done) == [0.9, 1.0]
    assert sorted(t.user_attrs["retries"] for t in done) == [0, 1]

    assert main(study_args(grid, store, overrides)) == 0  # finished: nothing retried again
    assert "already finished (2 complete, 0 pruned)" in capsys.readouterr().out


def test_an_unreadable_checkpoint_is_removed_and_training_starts_over(tmp_path, capsys):
    from bench.train import Checkpoint

    path = tmp_path / "run.pt"
    Checkpoint(path).save({"epoch": 1})
    path.write_bytes(path.read_bytes()[:40])  # cut short by a crash
    assert Checkpoint(path).load() is None
    assert not path.exists() and "cannot be read" in capsys.readouterr().err


def test_a_killed_train_is_marked_killed_by_the_next_command(tmp_path, store, tiny):
    args = ["train", "--tracking-uri", store, "--quiet", "--experiment", "killed"]
    for k, v in {**tiny, "optim.epochs": 50}.items():
        args += ["--set", f"{k}={v}"]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client = MlflowClient(store)
    try:
        for _ in range(600):  # until its run exists (seconds; the import of torch dominates)
            time.sleep(0.2)
            exp = client.get_experiment_by_name("killed") if Path(store.removeprefix("sqlite:///")).exists() else None
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs:
                break
        else:
            pytest.fail("the run never started")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (run,) = runs
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    small = [a if a != "optim.epochs=50" else "optim.epochs=1" for a in args]
    assert main(small) == 0
    killed = client.get_run(run.info.run_id)
    assert killed.info.status == "KILLED" and killed.info.end_time
    assert "ended without closing the run" in killed.data.tags["error"]


def test_the_ui_puts_no_password_on_any_command_line(tmp_path):
    secret = "s3cretpw"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"postgresql+psycopg://user:{secret}@127.0.0.1:9/db"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--port", "0"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    seen_server, leaked = False, []
    try:
        deadline = time.monotonic() + time_limit(60)
        while time.monotonic() < deadline and not seen_server:
            for p in psutil.process_iter(["cmdline"]):
                line = " ".join(p.info["cmdline"] or [])
                if secret in line:
                    leaked.append(line)
                seen_server |= "mlflow" in line and " server" in line and p.pid != os.getpid()
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert seen_server, "the scan never saw `mlflow server` (it cannot have checked its command line)"
    assert not leaked

