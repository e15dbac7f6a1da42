"""`gan-bench dashboard STUDY`: optuna-dashboard on a study's storage, bound to 127.0.0.1.

optuna-dashboard is an optional extra (`pip install -e '.[dashboard]'`). It reads the same
storage `gan-bench study run` writes (the journal file next to the MLflow store, or `--storage`),
so it shows the trials live, with the objectives named (`eval/tarr`) and the study's description.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.args import tracking_uri_from_args
from bench.errors import InputError

DEFAULT_PORT = 8080


def cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna

    from bench.studies import load_study_file
    from bench.studies.storage import default_storage, read_storage
    from bench.tracking import mask_uri
    from bench.cli.ui import check_args
    from bench.ui import free_port, url_for

    try:
        import optuna_dashboard
    except ImportError:
        raise InputError("optuna-dashboard is not installed: pip install -e '.[dashboard]' "
                         "(or pip install optuna-dashboard)") from None
    args.workers = 1  # the shared checks of `gan-bench ui` (host, port)
    uri = tracking_uri_from_args(args)
    check_args(args, "")
    name = load_study_file(args.study)[0].name if Path(args.study).is_file() else args.study
    storage = args.storage or default_storage(uri)
    try:
        backend = read_storage(storage)  # reads: never repairs or creates the journal
        study = optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        raise InputError(f"study {name!r} not found in storage {mask_uri(storage)!r}") from None
    port = args.port or free_port(args.host)
    url = f"{url_for(args.host, port)}/dashboard/studies/{backend.get_study_id_from_name(study.study_name)}"
    print(f"optuna-dashboard for study {name!r} ({mask_uri(storage)}) at {url}  (Ctrl-C to stop)", flush=True)
    try:
        optuna_dashboard.run_server(backend, host=args.host, port=port)
    except KeyboardInterrupt:
        print("stopping optuna-dashboard", file=sys.stderr)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("dashboard", help="browse a study in optuna-dashboard (optional extra; 127.0.0.1)",
                              description="Start optuna-dashboard on the study's Optuna storage and stay in the "
                                          "foreground until Ctrl-C.")
    p.add_argument("study", help="study file or study name")
    p.add_argument("--storage", help="Optuna storage (default: the journal file next to the MLflow store)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI whose folder holds the default journal")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.set_defaults(func=cmd_dashboard)
