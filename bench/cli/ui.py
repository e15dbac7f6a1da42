"""`gan-bench ui`: argument parsing, the checks and the command (`bench.ui` runs the server).

`cmd_ui` re-executes itself as `python -m bench.ui` when the training libraries are already
imported, so the long-running process holding the server stays small (no torch).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from pathlib import Path

from bench.cli.args import tracking_uri_from_args
from bench.errors import InputError
from bench.ui import DEFAULT_HOST, DEFAULT_PORT, OPTIONS_ENV, free_port, port_in_use, serve


def check_args(args: argparse.Namespace, tracking_uri: str) -> None:
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
    uri = tracking_uri_from_args(args)
    check_args(args, uri)
    port = args.port or free_port(args.host)
    if "torch" in sys.modules:  # the whole CLI was imported: serve from a fresh, small process (`bench.ui`)
        sys.stdout.flush()  # the store goes by environment: a command line is readable by all (`ps`)
        opts = json.dumps({"uri": uri, "host": args.host, "port": port, "workers": args.workers})
        os.execve(sys.executable, [sys.executable, "-m", "bench.ui"], {**os.environ, OPTIONS_ENV: opts})
    return serve(uri, args.host, port, args.workers)


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
