"""`gan-bench ui`: the MLflow UI (tracking server) on the project's store, bound to 127.0.0.1.

Runs `mlflow server` in the foreground until Ctrl-C (or SIGTERM), then stops it and every
process it started (they share a new process group). For a local SQLite store the artifact
root is the `artifacts/` folder next to the database, where `bench.tracking` puts each
experiment's artifacts, so the UI shows sample grids, plots and `report/` files.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
READY_TIMEOUT_S = 120.0


def server_command(tracking_uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The `mlflow server` command line for a store (SQLite, file store or a database URL)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", host, "--port", str(port), "--workers", str(workers)]
    if tracking_uri.startswith("sqlite:///"):
        artifacts = Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts"
        cmd += ["--default-artifact-root", artifacts.resolve().as_uri()]
    return cmd


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
    from bench.tracking import mask_uri

    uri = tracking_uri_from_args(args)
    check_args(args, uri)
    port = args.port or free_port(args.host)
    url = url_for(args.host, port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host} exposes the MLflow store to the network", file=sys.stderr)
    print(f"MLflow UI for {mask_uri(uri)} at {url}  (Ctrl-C to stop)", flush=True)
    proc = subprocess.Popen(server_command(uri, args.host, port, args.workers), start_new_session=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        if wait_ready(url, proc):
            print(f"ready: {url}", flush=True)
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
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"interface to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)")
    p.set_defaults(func=cmd_ui)
