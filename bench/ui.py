"""`gan-bench ui`: the MLflow UI (tracking server) on the project's store, bound to 127.0.0.1.

Runs `mlflow server` in the foreground until Ctrl-C (or SIGTERM), then stops it and every
process it started (they share a new process group). For a local SQLite store the artifact
root is the `artifacts/` folder next to the database, where `bench.tracking` puts each
experiment's artifacts, so the UI shows sample grids, plots and `report/` files.

Small on purpose: one uvicorn worker, no MLflow job runner (its huey consumers serve GenAI
features gan-bench does not use), and this process re-executes itself without the training
libraries the rest of the CLI imports. The server app is MLflow's, opening in the
model-training view (`bench.ui_app`).
"""

from __future__ import annotations

import argparse
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


APP_NAME = "gan-bench"  # the `mlflow.app` entry point: bench.ui_app:create_app
# Off unless the user sets it: the job runner starts ~8 processes (GB of memory) for GenAI jobs.
SERVER_ENV_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_command(tracking_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The `mlflow server` command line for a store (SQLite, file store or a database URL)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port), "--workers", str(workers), "--app-name", APP_NAME]
    if tracking_uri.startswith("sqlite:///"):
        artifacts = Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts"
        cmd += ["--default-artifact-root", artifacts.resolve().as_uri()]
    return cmd


def server_env(scratch: Path) -> dict[str, str]:
    """The server's environment: this checkout's `bench` importable, our app registered, no job runner.

    An install made before the `mlflow.app` entry point existed lacks it: then a throwaway
    dist-info folder under `scratch` declares it (entry points are read from every sys.path entry).
    """
    env = {**SERVER_ENV_DEFAULTS, **os.environ}
    paths = [str(Path(__file__).resolve().parents[1])]
    if not any(ep.name == APP_NAME for ep in importlib.metadata.entry_points(group="mlflow.app")):
        info = scratch / "gan_bench_ui-0.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gan-bench-ui\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[mlflow.app]\n{APP_NAME} = bench.ui_app:create_app\n")
        paths.append(str(scratch))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page: on the tracking server itself, or on `gan-bench ui`'s default address."""
    base = (tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://"))
            else url_for(DEFAULT_HOST, DEFAULT_PORT))
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


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


def check_args(args: argparse.Namespace, tracking_uri: str) -> None:
    from bench.cli import InputError

    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be at least 1")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: must be in 0..65535 (0: any free port)")
    try:
        ipaddress.ip_address(args.host)
    except ValueError:
        if args.host != "localhost":
            raise InputError(f"--host {args.host!r}: not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)") from None
    if args.port and port_in_use(args.host, args.port):
        raise InputError(f"--port {args.port}: already in use on {args.host}; pick another or --port 0")
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.exists():
            raise InputError(f"--tracking-uri {tracking_uri!r}: no MLflow store at {db} "
                             "(train or run a study first, or pass --tracking-uri)")


def cmd_ui(args: argparse.Namespace) -> int:
    from bench.cli import tracking_uri_from_args

    uri = tracking_uri_from_args(args)
    check_args(args, uri)
    port = args.port or free_port(args.host)
    if "torch" in sys.modules:  # the whole CLI was imported: serve from a fresh, small process
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "bench.ui", "--host", args.host, "--port", str(port),
                                  "--workers", str(args.workers), "--tracking-uri", uri])
    return serve(uri, args.host, port, args.workers)


def serve(uri: str, host: str, port: int, workers: int) -> int:
    from bench.tracking import mask_uri

    url = url_for(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {host} exposes the MLflow store to the network", file=sys.stderr)
    print(f"MLflow UI for {mask_uri(uri)} at {url}  (Ctrl-C to stop)", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="gan-bench-ui-"))
    try:
        proc = subprocess.Popen(server_command(uri, host, port, workers), start_new_session=True,
                                env=server_env(scratch))
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


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("ui", help="browse the runs in the MLflow UI (bound to 127.0.0.1)",
                              description="Start the MLflow UI and REST API on the project's store and stay in the "
                                          "foreground until Ctrl-C.")
    add_options(p)
    p.set_defaults(func=cmd_ui)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"interface to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)")


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.ui`: what `gan-bench ui` re-executes into (options already checked)."""
    parser = argparse.ArgumentParser(prog="gan-bench ui")
    add_options(parser)
    args = parser.parse_args(argv)
    return serve(args.tracking_uri, args.host, args.port, args.workers)


if __name__ == "__main__":
    sys.exit(main())
