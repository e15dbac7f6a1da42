"""MLflow run lifecycle: store resolution, experiments, buffered metrics, images and artifacts.

We use `MlflowClient` with explicit run ids rather than the fluent `mlflow.start_run` API so
that several trainings (study workers, nested runs) never share a global "active run".
`NullTracker` has the same interface and does nothing (tracking off, benchmarks).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from bench.errors import TrackingError

DEFAULT_STORE = Path("mlruns")
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
MAX_PARAMS_PER_BATCH = 100
# Buffered metrics go out at least this often, so a running run's curves show in the UI while it
# trains (one log_batch per interval: measured overhead in docs/reports.md, "Watching a run").
FLUSH_INTERVAL_S = 15.0
SYSTEM_METRICS_INTERVAL_S = 10.0  # MLflow's default sampling interval for system/* metrics
# MLflow 3 shows an experiment as model training (runs, charts) rather than GenAI (traces,
# judges) by this experiment tag; `mlflow.note.content` is the experiment's description.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
MAX_EXPERIMENT_NAME = 500  # mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH
MAX_RUN_NAME = 250  # the runs.name column (String(250)); SQLite ignores it, PostgreSQL refuses longer


# Tags that tie runs to studies; reports and analyses find runs by them.
TAG_STUDY = "study"              # study name (also the MLflow experiment name)
TAG_ROLE = "role"                # "parent" (one per study) or "trial" (one per trial and seed)
TAG_TRIAL = "trial"              # Optuna trial number
TAG_CONFIG = "config_label"      # the varied parameters, e.g. "real_target=0.9,fake_target=0.1"; seeds pool by it
TAG_CONFIG_ID = "config_id"      # hash of the whole config without the seed
TAG_DIVERGED = "diverged"
# The process that writes a RUNNING run (host, pid and the pid's start time, so a reused pid is not
# taken for it): a run whose process is gone without closing it is marked KILLED by the next command.
TAG_HOST, TAG_PROCESS = "gan_bench.host", "gan_bench.process"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE}/mlflow.db"


# Keys that carry a secret in a URL query (`?password=...`, SQLAlchemy and libpq) or a libpq
# key=value conninfo string (`host=db password=... dbname=x`).
SECRET_KEYS = ("password", "passwd", "pwd", "sslpassword", "token", "access_token", "api_key", "apikey",
               "secret", "client_secret", "sas_token")
_SECRET_VALUE = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(" + "|".join(SECRET_KEYS) + r")(\s*=\s*)('(?:[^'\\]|\\.)*'|[^&;\s#]+)")


def _netloc_password(uri: str) -> str | None:
    try:
        return urlsplit(uri).password
    except ValueError:  # not a URL (e.g. a conninfo string, a bad port): no netloc password
        return None


def mask_uri(uri: str) -> str:
    """Hide every secret in a URL or conninfo string before it is logged or printed.

    `postgresql://user:***@host/db`, `...?password=***`, `host=db password=*** dbname=x`.
    """
    password = _netloc_password(uri)
    if password:
        parts = urlsplit(uri)
        uri = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@", 1)))
    return _SECRET_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", uri)


def secrets_of(uri: str) -> list[str]:
    """The secret values a URL or conninfo string holds, as written and percent-decoded."""
    from urllib.parse import unquote

    found = [_netloc_password(uri) or ""] + [m.group(3).strip("'") for m in _SECRET_VALUE.finditer(uri)]
    out = {v for s in found if s for v in (s, unquote(s))}
    return sorted(out, key=len, reverse=True)  # longest first: a secret that contains another is hidden whole


def scrub(text: str, uri: str) -> str:
    """Remove the URI's secrets from any text (error messages quote URLs verbatim)."""
    for secret in secrets_of(uri):
        text = text.replace(secret, "***")
    return mask_uri(text)


def safe_name(name: str) -> str:
    """A name that cannot escape a folder: no separators, no `..`."""
    cleaned = re.sub(r"[^A-Za-z0-9_.=,:+-]+", "_", name).strip("._") or "unnamed"
    return cleaned.replace("..", "_")


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


@contextlib.contextmanager
def no_download_bars():
    """No MLflow progress bar per downloaded artifact inside the block (a few tiny files do not need them);
    the variable is put back as it was (unset included) on leaving."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def ensure_experiment(tracking_uri: str, name: str, description: str | None = None) -> str:
    """Create the store (once, in the calling process) and the experiment; return its id.

    For a local SQLite store, artifacts go under `<store folder>/artifacts/<experiment>`,
    next to the database, so one folder (`mlruns/`) holds everything. Every experiment is
    labelled model training, with `description` (a study's) as its description.
    """
    if len(name) > MAX_EXPERIMENT_NAME:
        raise TrackingError(f"experiment name {name[:30]!r}... is {len(name)} characters; MLflow allows at most "
                            f"{MAX_EXPERIMENT_NAME}")
    db = _sqlite_path(tracking_uri)
    artifact_location = None
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            why = "a file, not a folder: move it aside" if db.parent.is_file() else e.strerror
            raise TrackingError(f"tracking store {tracking_uri!r}: cannot create {db.parent} ({why})") from None
        artifact_location = (db.parent / "artifacts" / safe_name(name)).resolve().as_uri()
        with _store_init_lock(db):  # the first connection creates the tables: one process at a time
            return _ensure_experiment(tracking_uri, name, artifact_location, description)
    check_reachable(tracking_uri)
    return _ensure_experiment(tracking_uri, name, artifact_location, description)


@contextlib.contextmanager
def _store_init_lock(db: Path):
    """An flock beside a SQLite store: MLflow's first-use migration is not safe when two processes race it."""
    import fcntl

    with open(db.with_name(db.name + ".init.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


HTTP_CHECK_TIMEOUT_S = 5.0


def check_reachable(tracking_uri: str, timeout: float = HTTP_CHECK_TIMEOUT_S) -> None:
    """An HTTP(S) tracking server must answer within seconds (MLflow's own client retries for minutes).

    Any HTTP answer counts (a proxy asking for credentials is reachable); only a refused or
    timed-out connection stops the command, naming the (masked) URL and what to check.
    """
    if not tracking_uri.lower().startswith(("http://", "https://")):
        return
    import requests

    parts = urlsplit(tracking_uri)
    url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/health", query="", fragment=""))
    try:
        requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as e:
        reason = type(e).__name__
        raise TrackingError(
            f"tracking server {mask_uri(tracking_uri)} did not answer within {timeout:g} s ({reason}): check that "
            "`mlflow server` runs there, the host and port, and any firewall or VPN in between") from None


def _ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None,
                       description: str | None = None) -> str:
    from mlflow.exceptions import MlflowException

    try:
        c = client(tracking_uri)
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            label_experiment(c, exp, description)
            for run_id in close_orphans(tracking_uri, exp.experiment_id):
                print(f"gan-bench: run {run_id} was left RUNNING by a process that is gone: marked KILLED",
                      file=sys.stderr)
            return exp.experiment_id
        try:
            return c.create_experiment(name, artifact_location=artifact_location,
                                       tags=experiment_labels(description))
        except MlflowException:  # another process created it first
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            label_experiment(c, exp, description)
            return exp.experiment_id
    except TrackingError:
        raise
    except MlflowException as e:
        if e.error_code == "INVALID_PARAMETER_VALUE":  # MLflow refused the name, not the store
            raise TrackingError(scrub(f"experiment name {name[:60]!r}: {e.message}", tracking_uri)) from None
        raise store_fault(e, tracking_uri) or TrackingError(scrub(
            f"tracking store {mask_uri(tracking_uri)!r} is not usable: {_first_line(e)}", tracking_uri)) from None
    except Exception as e:  # any backend failure: say which store and why, before training starts
        raise store_fault(e, tracking_uri) or TrackingError(scrub(
            f"tracking store {mask_uri(tracking_uri)!r} is not usable: {_first_line(e)}", tracking_uri)) from None


def store_fault(error: BaseException, tracking_uri: str) -> TrackingError | None:
    """What `error`, or an error it was raised from, says is wrong with the store: damaged, read-only,
    full, or without a run it was asked for. A TrackingError naming the store and what to do; None when
    the error says none of these."""
    import errno

    where = str(_sqlite_path(tracking_uri) or mask_uri(tracking_uri))
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for e in chain:
        reason = scrub(_first_line(e), tracking_uri)
        text = reason.lower()
        code = e.errno if isinstance(e, OSError) and _inside(e.filename, tracking_uri) else None
        if "malformed" in text or "not a database" in text:
            return TrackingError(f"MLflow store {where} is damaged ({reason}): restore it from a backup, or move it "
                                 "aside to start a new store in its place")
        if code == errno.ENOSPC or "disk is full" in text:
            return TrackingError(f"no space left for MLflow store {where} ({reason}): free disk space and run the "
                                 "command again (a run it could not close is marked KILLED by the next command)")
        db = _sqlite_path(tracking_uri)
        if "readonly database" in text and db is not None and not db.exists():  # SQLite's word for an unlinked file
            return TrackingError(f"MLflow store {where} was deleted while this command used it ({reason})")
        if code == errno.EROFS or "readonly database" in text:
            return TrackingError(f"MLflow store {where} is read-only ({reason}): this command writes to it; "
                                 "`report`, `study status` and `ui` only read it, or use a writable copy")
        missing = re.search(r"Run with id=(\w+) not found", reason)
        if missing:
            return TrackingError(f"MLflow store {where} has no run {missing[1]} (deleted, or the run was logged to "
                                 "another store)", field="force_new")
    return None


def _inside(filename, tracking_uri: str) -> bool:
    """Whether an OSError's file is the store's or beside it (its folder: locks, journal, artifacts)."""
    db = _sqlite_path(tracking_uri)
    if filename is None or db is None:
        return filename is None
    folder = db.parent.resolve()
    return folder == Path(os.fsdecode(filename)).resolve() or folder in Path(os.fsdecode(filename)).resolve().parents


def read_only(tracking_uri: str) -> bool:
    """Whether a local SQLite store (its database and its folder) cannot be written, e.g. on a read-only mount."""
    db = _sqlite_path(tracking_uri)
    return db is not None and db.exists() and not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK))


def missing_artifacts(client, run_id: str) -> str | None:
    """The outermost missing folder of the run's local artifact folder when it is gone (moved or deleted,
    e.g. `mlruns/artifacts`); None when it is there or not local."""
    from urllib.parse import unquote

    uri = client.get_run(run_id).info.artifact_uri or ""
    folder = Path(unquote(urlsplit(uri).path))
    if not uri.startswith("file:") or folder.exists():
        return None
    while not folder.parent.exists():
        folder = folder.parent
    return str(folder)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the writer of a run (see `close_orphans`)."""
    import socket

    return {TAG_HOST: socket.gethostname(), TAG_PROCESS: _process_key(os.getpid()) or str(os.getpid())}


def _process_key(pid: int) -> str | None:
    """`<pid>:<start time>` of a live process, None when there is no such process."""
    import psutil

    try:
        return f"{pid}:{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return None


def close_orphans(tracking_uri: str, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this host whose process is gone (a kill -9, a closed terminal):
    MLflow leaves them RUNNING, with no end time, for ever. Returns their run ids."""
    import socket

    c = client(tracking_uri)
    found = c.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = "
                                           f"'{socket.gethostname()}'", max_results=1000)
    closed = []
    for run in found:
        key = run.data.tags.get(TAG_PROCESS, "")
        pid = key.split(":")[0]
        if not pid.isdigit():
            continue
        now = _process_key(int(pid))
        if now is not None and (now == key or ":" not in key):
            continue  # its process still runs
        c.set_tag(run.info.run_id, "error", f"its process ({key}) ended without closing the run (killed)")
        c.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


def experiment_labels(description: str | None = None) -> dict[str, str]:
    """The experiment tags that make the MLflow UI open it as model training, with its description."""
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING, **({DESCRIPTION_TAG: description} if description else {})}


def label_experiment(c, exp, description: str | None = None) -> None:
    """Add the labels an existing experiment lacks (created by an older gan-bench, or by hand)."""
    for key, value in experiment_labels(description).items():
        if exp.tags.get(key) != value and not (key == EXPERIMENT_KIND_TAG and key in exp.tags):
            c.set_experiment_tag(exp.experiment_id, key, value)  # a kind the user chose is kept


def with_retries(call, attempts: int = 4, first_wait_s: float = 0.5):
    """Retry a logging call through a passing store hiccup (locked database, dropped connection).

    If it keeps failing the error propagates: the run is marked FAILED and a study moves on.
    """
    for attempt in range(attempts):
        try:
            return call()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(first_wait_s * 2 ** attempt)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class MlflowTracker:
    """One MLflow run. Metrics are buffered and sent with `log_batch`, never one call per value.

    `run_id`: continue that run instead of creating one, as `mlflow.start_run(run_id=...)` does: it is
    RUNNING again, keeps its params and curves, and gets `tags` (this process as its writer included).
    """

    def __init__(self, tracking_uri: str, experiment: str, run_name: str | None = None,
                 tags: dict[str, Any] | None = None, parent_run_id: str | None = None,
                 flush_every: int = MAX_METRICS_PER_BATCH,
                 killed_on: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
                 flush_interval_s: float | None = None, system_metrics: bool = True, run_id: str | None = None):
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        self.tracking_uri = tracking_uri
        self.client = client(tracking_uri)
        experiment_id = ensure_experiment(tracking_uri, experiment)
        all_tags = {**owner_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        if run_id is None:
            run = with_retries(lambda: self.client.create_run(experiment_id, run_name=run_name, tags=all_tags))
        else:  # its writer first: `close_orphans` must never see it RUNNING under a gone process
            from mlflow.entities import RunTag

            with_retries(lambda: self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in all_tags.items()]))
            with_retries(lambda: self.client.update_run(run_id, status="RUNNING"))
            run = with_retries(lambda: self.client.get_run(run_id))
            experiment_id = run.info.experiment_id
        self.run_id = run.info.run_id
        self.experiment_id = experiment_id
        self.artifact_uri = run.info.artifact_uri
        self._buffer: list = []
        self._flush_every = flush_every
        self._flush_interval_s = FLUSH_INTERVAL_S if flush_interval_s is None else flush_interval_s
        self._last_flush = time.monotonic()
        self._killed_on = killed_on  # exceptions that mean "stopped on purpose" (Ctrl-C, a pruned trial)
        self._system = start_system_metrics(self.run_id, tracking_uri) if system_metrics else None

    # -- values ------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, "None" if v is None else str(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            chunk = items[i:i + MAX_PARAMS_PER_BATCH]
            with_retries(lambda: self.client.log_batch(self.run_id, params=chunk))

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        with_retries(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if (len(self._buffer) >= self._flush_every
                or time.monotonic() - self._last_flush >= self._flush_interval_s):
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            with_retries(lambda: self.client.log_batch(self.run_id, metrics=chunk))
            self._buffer = self._buffer[MAX_METRICS_PER_BATCH:]

    # -- files ---------------------------------------------------------------
    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """An image series: the MLflow UI shows it with a step slider."""
        with_retries(lambda: self.client.log_image(self.run_id, image, key=key, step=step))

    def log_figure(self, figure, artifact_file: str) -> None:
        with_retries(lambda: self.client.log_figure(self.run_id, figure, artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        with_retries(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_dict(self, data: dict, artifact_file: str) -> None:
        with_retries(lambda: self.client.log_dict(self.run_id, data, artifact_file))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with_retries(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_torch(self, obj: Any, artifact_file: str) -> None:
        import torch

        folder, name = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(obj, Path(tmp) / name)
            self.log_artifact(Path(tmp) / name, folder or None)

    # -- lifecycle ---------------------------------------------------------
    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.stop_system_metrics()
        with_retries(lambda: self.client.set_terminated(self.run_id, status=status))

    def stop_system_metrics(self) -> None:
        if self._system is not None:
            self._system.finish()
            self._system = None

    def __enter__(self) -> "MlflowTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
            return
        # Each step on its own, so a store that keeps failing still gets as much as it accepts,
        # and the original error is never hidden behind a logging one.
        killed = issubclass(exc_type, self._killed_on)
        steps = [self.flush, self.stop_system_metrics]
        if not killed:
            error = f"{exc_type.__name__}: {exc}"[:5000]
            steps.append(lambda: with_retries(lambda: self.client.set_tag(self.run_id, "error", error)))
        status = "KILLED" if killed else "FAILED"
        steps.append(lambda: with_retries(lambda: self.client.set_terminated(self.run_id, status=status)))
        for step in steps:
            try:
                step()
            except Exception:
                pass


def start_system_metrics(run_id: str, tracking_uri: str):
    """MLflow's system metrics (system/cpu_utilization_percentage, memory, GPU with nvidia-ml-py)
    sampled every 10 s in a thread into the run; None where psutil is missing."""
    try:
        import psutil  # noqa: F401  (MLflow's CPU and memory monitor needs it)
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        return None
    import logging

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no "Started monitoring" per run
    monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


class NullTracker:
    """Tracking off: the same interface, nothing written."""

    run_id = None
    experiment_id = None
    artifact_uri = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def figure_to_png(figure) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()
