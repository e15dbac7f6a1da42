"""`gan-bench study run|estimate|status|extend`: argument parsing and printing; `bench.api` does the work."""

from __future__ import annotations

import argparse
import sys

from bench.cli.args import add_run_options, layered_overrides, overrides_from_args
from bench.errors import InputError
from bench.studies.spec import load_study_file


def add_budget_option(p) -> None:
    p.add_argument("--budget", metavar="DURATION",
                   help="plan the largest scale that fits this much time here (e.g. 20m, 2h): most epochs on the "
                        "whole training set, else one epoch on a balanced subset; --epochs / --train-subset fix "
                        "one side of the plan")
    p.add_argument("--plan-only", action="store_true",
                   help="with --budget: measure, print the plan and stop (nothing trained or kept)")


def add_group_options(p) -> None:
    from bench.studies.invocation import GPU_GROUP_SIZE

    g = p.add_mutually_exclusive_group()
    g.add_argument("--group-size", type=int, metavar="K",
                   help="train up to K runs (a trial's seeds, and queued trials with the same shapes and batch "
                        f"size) as one batched model (default: {GPU_GROUP_SIZE} on a GPU; on a CPU a trial's seeds)")
    g.add_argument("--no-group", action="store_true", help="train runs one by one (the sequential path)")


def requested_group(args: argparse.Namespace) -> int | None:
    """--no-group / --group-size as the library's `group_size` (None: the device's default)."""
    return 1 if args.no_group else args.group_size


def budget_args(args: argparse.Namespace) -> dict:
    """--budget / --plan-only as the library's keywords (--plan-only needs --budget)."""
    if args.plan_only and not args.budget:
        raise InputError("--plan-only: only with --budget")
    return {"budget": args.budget, "epochs": args.epochs, "train_subset": args.train_subset}


def cmd_run(args: argparse.Namespace) -> int:
    from bench import api

    overrides = layered_overrides(args)  # --config FILE, then --set and the shortcuts
    if args.plan_only:
        budget_args(args)
        api.plan_budget([args.file], args.budget, overrides=overrides, tracking_uri=args.tracking_uri,
                        group_size=requested_group(args), epochs=args.epochs, train_subset=args.train_subset,
                        keep=False, progress=not args.quiet)
        return 0
    try:
        outcome = api.run_study(args.file, overrides=overrides, storage=args.storage, tracking_uri=args.tracking_uri,
                                workers=args.workers, n_trials=args.n_trials, timeout=args.timeout,
                                group_size=requested_group(args), force_new=args.force_new,
                                progress=not args.quiet, **budget_args(args))
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return print_outcome(outcome)


def print_outcome(outcome) -> int:
    """The trials table, the best value and what failed; 1 when a trial failed or a worker died."""
    from bench.studies import summary
    from bench.studies.invocation import best_text

    c = outcome.counts
    print(summary.format_table(summary.trials_table(outcome.study)))
    if c["running"]:
        note = f"  ({c['running']} trial(s) still running in other workers)"
    else:
        note = "" if outcome.finished else "  (study not finished: run again to resume)"
    print(f"best: {best_text(outcome.study)}{note}")
    for number, error in outcome.failed:
        print(f"trial {number} failed: {error}", file=sys.stderr)
    if outcome.failed:
        print(f"{len(outcome.failed)} trial(s) failed; fix the cause and run the same command again: it retries "
              "them with the same parameters", file=sys.stderr)
    if outcome.died:
        print(f"{outcome.died} worker(s) died; their trials were queued again: run the same command again to "
              "resume", file=sys.stderr)
    return 0 if outcome.ok else 1


def cmd_extend(args: argparse.Namespace) -> int:
    from bench import api

    try:
        result = api.extend_study(args.study, args.epochs, storage=args.storage, tracking_uri=args.tracking_uri,
                                  runs=set(args.run) if args.run else None, progress=not args.quiet)
    except KeyboardInterrupt:
        print("interrupted: the runs being extended keep their last finished epoch; run the same command again to "
              "continue them", file=sys.stderr)
        return 130
    print(result.text())
    return 1 if result.refused else 0


def cmd_status(args: argparse.Namespace) -> int:
    from bench import api
    from bench.studies import summary
    from bench.studies.invocation import counts

    study = api.study_status(args.study, storage=args.storage, tracking_uri=args.tracking_uri)
    print(summary.format_table(summary.trials_table(study)))
    print("counts:", ", ".join(f"{k} {v}" for k, v in counts(study).items()))
    for t in summary.best_trials(study):
        print(f"best: trial {t.number} values={t.values} params={t.params}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from bench.perf import estimate
    from bench.studies.invocation import group_size

    if args.steps < 1:
        raise InputError(f"--steps={args.steps}: must be positive")
    overrides = overrides_from_args(args)
    specs = [load_study_file(f, overrides)[0] for f in args.files]  # every file validated before timing any
    size = group_size(estimate.configurations(specs[0], overrides)[0][1].device,  # decided (and said) once
                      max(s.repeats for s in specs), requested_group(args))
    grand = 0.0
    for spec, rows, device in estimate.estimate_studies(specs, overrides, steps=args.steps, group_size=size):
        print(estimate.format_table(spec, rows, device), flush=True)
        grand += estimate.total_seconds(rows)
    if len(specs) > 1:
        print(f"all {len(specs)} studies: estimated {estimate.fmt_duration(grand)}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("study", help="run Optuna studies over technique spaces (studies/*.toml)")
    sub = p.add_subparsers(dest="study_command", required=True, metavar="ACTION")

    r = sub.add_parser("run", help="create or resume a study and run its trials",
                       description="Create the study (or resume it: same name, same storage) and run trials.")
    r.add_argument("file", help="study file (TOML), e.g. studies/smoke.toml")
    r.add_argument("--n-trials", type=int, help="run at most N trials in this invocation (all workers together)")
    r.add_argument("--timeout", type=float, help="stop starting new trials after S seconds")
    r.add_argument("--storage", help="Optuna storage URL (postgresql://...) or journal file "
                                     "(default: optuna-journal.log next to the MLflow store)")
    r.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (and the GPU)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--force-new", action="store_true",
                   help="the study file changed since the study was created: delete the old Optuna study and "
                        "its MLflow runs (soft delete), then start again")
    add_run_options(r)
    add_budget_option(r)
    add_group_options(r)
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("estimate", help="how long study files will take on this machine (measured throughput)",
                       description="Time a few training iterations and one (scaled-down) evaluation of every "
                                   "configuration a study trains, and extrapolate to the whole study. Nothing is "
                                   "logged; the same overrides as `study run` apply.")
    e.add_argument("files", nargs="+", help="study files (TOML)")
    e.add_argument("--steps", type=int, default=6, help="timed training iterations per configuration (default 6)")
    add_run_options(e)
    add_group_options(e)
    e.set_defaults(func=cmd_estimate)

    s = sub.add_parser("status", help="print a study's trials table and best trial(s)")
    s.add_argument("study", help="study file or study name")
    s.add_argument("--storage")
    s.add_argument("--tracking-uri")
    s.set_defaults(func=cmd_status)

    x = sub.add_parser("extend", help="train a finished study's runs on, from their last checkpoints, to more epochs",
                       description="Continue every finished run of the study from its last checkpoint to N epochs: "
                                   "the same MLflow runs (tag extended_to_epochs) and, for each extended trial, a new "
                                   "Optuna trial with the same parameters (user attribute `extends`). Runs that "
                                   "cannot be extended are named with the reason and left as they are (exit 1).")
    x.add_argument("study", help="study file or study name")
    x.add_argument("--epochs", type=int, required=True, metavar="N", help="the epochs every run has afterwards")
    x.add_argument("--run", action="append", metavar="RUN_ID",
                   help="only the trial with this MLflow run (its seeds extend together; repeatable)")
    x.add_argument("--storage")
    x.add_argument("--tracking-uri")
    x.add_argument("--quiet", action="store_true", help="no progress bars")
    x.set_defaults(func=cmd_extend)
