"""Studies across machines on a real PostgreSQL server (issue 7, scale-out).

Everything a two-machine setup has, on one machine: PostgreSQL on loopback holds the Optuna
study (RDBStorage) and the MLflow tracking server's backend store; `mlflow server` serves
runs and artifacts over HTTP; each "machine" is a separate `python -m bench study run`
process in its own working directory, sharing nothing with the other but the two URLs.

Needs a PostgreSQL server that `su postgres -c psql` (as root) or `psql` (as a superuser
role) can administer; `.ci/run` installs and starts Debian's `postgresql`. Without one the
tests skip, unless `CI` is set: then they fail. Each test module run creates its own role
and databases (random names, random password) and drops them at the end.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import time_limit

from .test_runner import ALL_CELLS, GRID  # the same 2x2 grid as the single-machine tests

# About a minute and a half on 2 CPU cores (workers that start torch and MLflow); .ci/run runs them.
pytestmark = pytest.mark.slow
WORKER_TIMEOUT_S = 300


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str):
    if _in_ci():
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


def _psql(sql: str, db: str = "postgres") -> subprocess.CompletedProcess:
    """Run one SQL statement as the PostgreSQL superuser (local socket, peer authentication)."""
    cmd = f"psql -X -q -v ON_ERROR_STOP=1 -d {shlex.quote(db)} -Atc {shlex.quote(sql)}"
    if os.geteuid() == 0:
        argv = ["su", "postgres", "-c", cmd]
    else:
        argv = shlex.split(cmd)
    return subprocess.run(argv, capture_output=True, text=True, timeout=time_limit(60))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A fresh role and two databases (Optuna, MLflow) on the local server; dropped afterwards."""
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql+psycopg://)
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[dev]' or '.[postgres]')")
    if shutil.which("psql") is None:
        _unavailable("no PostgreSQL client (psql) on PATH: install Debian's `postgresql` (.ci/run does)")
    try:
        probe = _psql("SHOW port")
    except (OSError, subprocess.TimeoutExpired) as e:
        _unavailable(f"cannot run psql as the PostgreSQL superuser: {e}")
    if probe.returncode != 0:
        _unavailable(f"no PostgreSQL server reachable ({probe.stderr.strip() or probe.stdout.strip()}); "
                     "start it with `pg_ctlcluster <version> main start` (.ci/run does)")
    port = int(probe.stdout.strip())
    tag = secrets.token_hex(4)
    role, password = f"ganbench_{tag}", f"pw{secrets.token_hex(12)}"
    dbs = {"optuna": f"ganbench_{tag}_optuna", "mlflow": f"ganbench_{tag}_mlflow"}
    created = []

    def run(sql: str) -> None:
        r = _psql(sql)
        assert r.returncode == 0, f"{sql.replace(password, '***')}: {r.stderr}"

    try:
        run(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        created.append(("ROLE", role))
        for db in dbs.values():
            run(f"CREATE DATABASE {db} OWNER {role}")
            created.append(("DATABASE", db))
        base = f"postgresql+psycopg://{role}:{password}@127.0.0.1:{port}"
        yield {"password": password, "optuna": f"{base}/{dbs['optuna']}", "mlflow": f"{base}/{dbs['mlflow']}"}
    finally:
        for kind, name in reversed(created):
            if kind == "DATABASE" and _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)").returncode != 0:
                _psql(f"DROP DATABASE IF EXISTS {name}")  # PostgreSQL < 13 has no FORCE
            elif kind == "ROLE":
                _psql(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` on the PostgreSQL backend store, proxying artifacts to a local folder."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres["mlflow"],
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no GenAI job runners
    uri = f"http://127.0.0.1:{port}"
    try:
        limit = time_limit(120)
        deadline = time.time() + limit
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{_tail(folder / 'server.log')}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"mlflow server did not answer /health in {limit:.0f} s:\n{_tail(folder / 'server.log')}")
            time.sleep(0.5)
        yield uri
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers: our own group
            proc.wait(timeout=time_limit(30))
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@pytest.fixture
def spawned():
    """Worker processes a test starts; any still alive when it ends (a failed test) are killed."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


class Machine:
    """One 'machine': its own working directory and copy of the study file, the shared URLs."""

    def __init__(self, folder: Path, study: str, storage: str, tracking_uri: str, overrides: dict,
                 spawned: list):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.file = folder / "study.toml"
        self.file.write_text(textwrap.dedent(study))
        self.argv = [sys.executable, "-m", "bench", "study", "run", str(self.file), "--storage", storage,
                     "--tracking-uri", tracking_uri, "--quiet"]
        for k, v in overrides.items():
            self.argv += ["--set", f"{k}={v}"]
        # One core per "machine" (2 processes share this box's cores); the evaluator cache is shared.
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.runs = 0
        self.spawned = spawned

    def start(self) -> subprocess.Popen:
        self.runs += 1
        self.log = self.folder / f"worker-{self.runs}.log"
        with open(self.log, "w") as out:
            proc = subprocess.Popen(self.argv, cwd=self.folder, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.spawned.append(proc)
        return proc

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _finish(proc: subprocess.Popen, machine: Machine) -> str:
    limit = time_limit(WORKER_TIMEOUT_S)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"worker in {machine.folder} did not finish in {limit:.0f} s:\n{machine.output()[-4000:]}")
    out = machine.output()
    assert proc.returncode == 0, f"worker in {machine.folder} exited {proc.returncode}:\n{out[-4000:]}"
    return out


def _overrides(tiny: dict, **extra) -> dict:
    return {**tiny, **extra}


def _warm_evaluator(overrides: dict) -> None:
    """Train the tiny evaluator once in this process, so the workers find it in the shared cache."""
    from bench import experiment
    from bench.run_config import build_config

    experiment.prepare(build_config({"model": {"name": "cgan-mlp"}}, overrides), progress=False)


def _study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(storage))


def _cell(params: dict) -> tuple:
    return params["techniques.real_target"], params["model.d_dropout"]


def _state_counts(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return dict(sorted(out.items()))


def _check_grid_once(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(_cell(t.params) for t in complete) == ALL_CELLS, _state_counts(study)
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))
    return complete


def _check_mlflow(tracking_uri: str, name: str, complete: list) -> tuple:
    """One parent run; one FINISHED child per cell, nested under it; Optuna points at those runs."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=tracking_uri)
    exp = c.get_experiment_by_name(name)
    assert exp is not None, f"experiment {name!r} not in the MLflow server"
    parents = c.search_runs([exp.experiment_id], filter_string="tags.role = 'parent'")
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    children = c.search_runs([exp.experiment_id], filter_string="tags.role = 'trial'", max_results=1000)
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == len(ALL_CELLS), [(r.info.run_name, r.info.status) for r in children]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert sorted((float(r.data.tags["param.techniques.real_target"]), float(r.data.tags["param.model.d_dropout"]))
                  for r in finished) == ALL_CELLS
    assert {r.info.run_id for r in finished} == {rid for t in complete for rid in t.user_attrs["mlflow_run_ids"]}
    return c, parent, children


def test_two_machines_complete_one_grid_once(postgres, mlflow_server, tiny, tmp_path, spawned):
    name = f"pg-grid-{secrets.token_hex(3)}"
    overrides = _overrides(tiny)
    _warm_evaluator(overrides)
    machines = [Machine(tmp_path / m, GRID.format(name=name), postgres["optuna"], mlflow_server, overrides, spawned)
                for m in ("machine-a", "machine-b")]
    # Both start at once; when this test runs first they also meet an empty database.
    t0 = time.time()
    procs = [m.start() for m in machines]
    outputs = [_finish(p, m) for p, m in zip(procs, machines)]
    print(f"\n[postgres] two workers finished the 2x2 grid in {time.time() - t0:.1f} s")

    study = _study(postgres["optuna"], name)
    complete = _check_grid_once(study)
    assert len(study.trials) == len(ALL_CELLS), _state_counts(study)
    per_pid = {p.pid: sum(t.user_attrs["worker_pid"] == p.pid for t in complete) for p in procs}
    print(f"[postgres] trials per worker process: {per_pid}")
    assert all(per_pid.values()), f"both machines should have run trials: {per_pid}"
    for m in machines:  # nothing went to a local store by mistake
        assert not list(m.folder.rglob("mlflow.db")) and not list(m.folder.rglob("optuna-journal.log"))
    c, parent, _ = _check_mlflow(mlflow_server, name, complete)
    # the storage URL's password is masked in what was printed and in what MLflow holds
    assert all(postgres["password"] not in out for out in outputs)
    assert "***" in parent.data.tags["optuna_storage"]
    assert postgres["password"] not in str(parent.data.tags) + str(parent.data.params)
    assert "study.toml" in {f.path for f in c.list_artifacts(parent.info.run_id)}


def test_kill_9_one_machine_then_resume(postgres, mlflow_server, tiny, tmp_path, spawned):
    name = f"pg-kill-{secrets.token_hex(3)}"
    # 3 epochs on 640 images: long enough to be killed in the middle of a trial
    overrides = _overrides(tiny, **{"optim.epochs": 3, "data.train_subset": 640})
    _warm_evaluator(overrides)
    storage = optuna.storages.RDBStorage(postgres["optuna"])  # before the workers: this creates no race
    machines = [Machine(tmp_path / m, GRID.format(name=name), postgres["optuna"], mlflow_server, overrides, spawned)
                for m in ("machine-a", "machine-b")]
    procs = [m.start() for m in machines]
    by_pid = {p.pid: (p, m) for p, m in zip(procs, machines)}

    # Wait until a trial is COMPLETE and a worker is in the middle of another one (its MLflow run started).
    victim = None
    deadline = time.time() + time_limit(WORKER_TIMEOUT_S)
    while victim is None:
        for p, m in by_pid.values():
            if p.poll() is not None:
                pytest.fail(f"worker in {m.folder} exited ({p.returncode}) before the kill:\n{m.output()[-4000:]}")
        if time.time() > deadline:
            pytest.fail("no trial completed while another one was running")
        try:
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        except KeyError:  # not created yet
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("worker_pid") in by_pid
                   and t.user_attrs.get("mlflow_run_ids")]
        if any(t.state == TrialState.COMPLETE for t in trials) and running:
            victim = max(running, key=lambda t: t.datetime_start)  # the youngest: far from finishing
        else:
            time.sleep(0.25)
    victim_proc, _ = by_pid[victim.user_attrs["worker_pid"]]
    victim_proc.send_signal(signal.SIGKILL)
    victim_proc.wait()
    survivor, survivor_machine = next(v for pid, v in by_pid.items() if pid != victim_proc.pid)
    _finish(survivor, survivor_machine)

    study = _study(postgres["optuna"], name)
    before = _state_counts(study)
    killed = study.trials[victim.number]
    assert killed.state == TrialState.RUNNING, f"the killed trial should be left RUNNING: {killed.state}"
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=mlflow_server)
    killed_runs = killed.user_attrs["mlflow_run_ids"]
    # RUNNING, or KILLED when a later trial of the survivor (same host) found its process gone
    assert {c.get_run(r).info.status for r in killed_runs} <= {"RUNNING", "KILLED"}

    # Run the same command again (on the machine whose worker died): recovery, retry, budget reached.
    rerun_machine = by_pid[victim_proc.pid][1]
    out = _finish(rerun_machine.start(), rerun_machine)
    assert f"retrying trials left running by a dead worker: [{victim.number}]" in out, out[-4000:]

    study = _study(postgres["optuna"], name)
    after = _state_counts(study)
    print(f"\n[postgres] kill -9 of trial {victim.number}: before resume {before}; after resume {after}")
    complete = _check_grid_once(study)
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL and killed.user_attrs.get("retried") is True
    retry = [t for t in complete if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and _cell(retry[0].params) == _cell(killed.params)
    # the budget is reached: every cell COMPLETE, and the only other trial is the retried failure
    assert after == {"COMPLETE": len(ALL_CELLS), "FAIL": 1}
    _, _, children = _check_mlflow(mlflow_server, name, complete)
    assert [c.get_run(r).info.status for r in killed_runs] == ["KILLED"] * len(killed_runs)
    assert len(children) == len(ALL_CELLS) + len(killed_runs)
