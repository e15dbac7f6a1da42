"""`gan-bench ui`: the MLflow UI (tracking server) on the project's store, bound to 127.0.0.1.

Runs `mlflow server` in the foreground until Ctrl-C (or SIGTERM), then stops it and every
process it started (they share a new process group). For a local SQLite store the artifact
root is the `artifacts/` folder next to the database, where `bench.tracking` puts each
experiment's artifacts, so the UI shows sample grids, plots and `report/` files.

Small on purpose: one uvicorn worker, no MLflow job runner (its huey consumers serve GenAI
features gan-bench does not use), and this process re-executes itself without the training
libraries the rest of the CLI imports. The server app is MLflow's, opening in the
model-training view (`bench.ui_app`). The command (`gan-bench ui`, its options and checks) is
`bench.cli.ui`.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
READY_TIMEOUT_S = 120.0


OPTIONS_ENV = "GANBENCH_UI"  # what `python -m bench.ui` serves: JSON {uri, host, port, workers}
APP_NAME = "gan-bench"  # the `mlflow.app` entry point: bench.ui_app:create_app
# Off unless the user sets it: the job runner starts ~8 processes (GB of memory) for GenAI jobs.
SERVER_ENV_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_command(tracking_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The `mlflow server` command line for a store (SQLite, file store or a database URL).

    The store's URL is not on it: a command line is readable by every user of the machine (`ps`), and a
    database URL may carry a password. `server_env` passes it as `MLFLOW_BACKEND_STORE_URI`, which
    `mlflow server` reads in place of `--backend-store-uri`.
    """
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--host", host, "--port", str(port), "--workers", str(workers), "--app-name", APP_NAME]
    if tracking_uri.startswith("sqlite:///"):
        artifacts = Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts"
        cmd += ["--default-artifact-root", artifacts.resolve().as_uri()]
    return cmd


def server_env(scratch: Path, tracking_uri: str) -> dict[str, str]:
    """The server's environment: the store, this checkout's `bench` importable, our app registered, no job
    runner.

    An install made before the `mlflow.app` entry point existed lacks it: then a throwaway
    dist-info folder under `scratch` declares it (entry points are read from every sys.path entry).
    """
    env = {**SERVER_ENV_DEFAULTS, **os.environ, "MLFLOW_BACKEND_STORE_URI": tracking_uri}
    paths = [str(Path(__file__).resolve().parents[1])]
    if not any(ep.name == APP_NAME for ep in importlib.metadata.entry_points(group="mlflow.app")):
        info = scratch / "gan_bench_ui-0.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gan-bench-ui\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[mlflow.app]\n{APP_NAME} = bench.ui_app:create_app\n")
        paths.append(str(scratch))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def _ui_base(tracking_uri: str) -> str:
    """The UI that shows a store: the tracking server itself (without any `user:password@`), or
    `gan-bench ui`'s default address."""
    from urllib.parse import urlsplit, urlunsplit

    if not tracking_uri.startswith(("http://", "https://")):
        return url_for(DEFAULT_HOST, DEFAULT_PORT)
    parts = urlsplit(tracking_uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI."""
    return f"{_ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def runs_chart_url(tracking_uri: str, experiment_id: str, search_filter: str) -> str:
    """An experiment's runs that match `search_filter`, in the UI's chart view (the URL carries both; Group by
    is the UI's own state, one click: Group by -> config_label)."""
    from urllib.parse import urlencode

    query = urlencode({"searchFilter": search_filter, "compareRunsMode": "CHART"})
    return f"{_ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?{query}"


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = READY_TIMEOUT_S) -> bool:
    """Poll /health until the server answers (False if it exits or the time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM to the server's process group, SIGKILL if it is still there after `timeout`."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def serve(uri: str, host: str, port: int, workers: int) -> int:
    from bench.tracking import mask_uri

    url = url_for(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {host} exposes the MLflow store to the network", file=sys.stderr)
    print(f"MLflow UI for {mask_uri(uri)} at {url}  (Ctrl-C to stop)", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="gan-bench-ui-"))
    try:
        proc = subprocess.Popen(server_command(uri, host, port, workers), env=server_env(scratch, uri),
                                preexec_fn=os.setsid)  # a process group of its own: `stop` ends all of it
        return _wait(proc, url)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait(proc: subprocess.Popen, url: str) -> int:
    def on_term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        if wait_ready(url, proc):
            print(f"ready: {url}  (Ctrl-C to stop)", flush=True)
        code = proc.wait()
        print(f"mlflow server exited with code {code}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        print("stopping the MLflow UI", file=sys.stderr, flush=True)
        return 0
    finally:
        stop(proc)
        signal.signal(signal.SIGTERM, old)


def main() -> int:
    """`python -m bench.ui`: what `gan-bench ui` re-executes into, its checked options in $GANBENCH_UI as
    JSON (by environment: a command line is readable by every user, and a store URL may carry a password).
    Imports no torch, so the process holding the server stays small."""
    import json

    opts = json.loads(os.environ.pop(OPTIONS_ENV))
    return serve(opts["uri"], opts["host"], opts["port"], opts["workers"])


if __name__ == "__main__":
    sys.exit(main())
