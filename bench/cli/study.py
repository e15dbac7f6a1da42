"""`gan-bench study run|estimate|status`: argument parsing and the commands (`bench.studies` does the work)."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from bench.cli.args import add_run_options, layered_overrides, overrides_from_args, tracking_uri_from_args
from bench.errors import InputError
from bench.studies.spec import StudyError, load_study_file


def add_budget_option(p) -> None:
    p.add_argument("--budget", metavar="DURATION",
                   help="plan the largest scale that fits this much time here (e.g. 20m, 2h): most epochs on the "
                        "whole training set, else one epoch on a balanced subset; --epochs / --train-subset fix "
                        "one side of the plan")
    p.add_argument("--plan-only", action="store_true",
                   help="with --budget: measure, print the plan and stop (nothing trained or kept)")


GPU_GROUP_SIZE = 27  # runs per group on a GPU by default: Table 1's 27 runs at once where shapes allow


def add_group_options(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--group-size", type=int, metavar="K",
                   help="train up to K runs (a trial's seeds, and queued trials with the same shapes and batch "
                        f"size) as one batched model (default: {GPU_GROUP_SIZE} on a GPU; on a CPU a trial's seeds)")
    g.add_argument("--no-group", action="store_true", help="train runs one by one (the sequential path)")


def group_size(args: argparse.Namespace, cfg, seeds: int) -> int:
    """--group-size / --no-group, else the device's default (said once): up to `GPU_GROUP_SIZE` runs on a
    GPU; on a CPU a trial's `seeds`, which finish together as they would one by one (a larger group delays
    every trial's result and, member by member, trains no faster)."""
    from bench.step import resolve_device

    if getattr(args, "no_group", False):
        return 1
    given = getattr(args, "group_size", None)
    if given is not None:
        if given < 1:
            raise InputError(f"--group-size={given}: must be positive")
        return given
    if resolve_device(cfg.device).type == "cuda":
        return GPU_GROUP_SIZE
    if seeds > 1:
        print(f"grouping: on the CPU a trial's {seeds} seeds train together, member by member (about as fast as "
              "one by one, with the same numbers); --group-size K groups up to K runs, --no-group none", flush=True)
    return seeds


def budget_scales(args: argparse.Namespace, specs: list, group: int = 1) -> dict[str, dict]:
    """--budget: the epochs and subset each study trains at, planned to fit the budget on this machine ({}
    without --budget). Throughput is measured as `study estimate` measures it, for runs in groups of up to
    `group` where grouping is on; the plan is printed, and kept beside the store so that the same command,
    run again, resumes at the same scale."""
    import hashlib
    import json

    from bench import experiment
    from bench.perf import budget, estimate
    from bench.studies.storage import default_storage

    if not getattr(args, "budget", None):
        if getattr(args, "plan_only", False):
            raise InputError("--plan-only: only with --budget")
        return {}
    budget_s = budget.parse_duration(args.budget)
    overrides = {k: v for k, v in layered_overrides(args).items() if k not in ("optim.epochs", "data.train_subset")}
    key = json.dumps([sorted(s.name for s in specs), args.budget, args.epochs, args.train_subset, overrides]
                     + ([group] if group > 1 else []), sort_keys=True, default=str)
    kept = Path(default_storage(tracking_uri_from_args(args))).parent / "plans" / \
        f"{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if kept.is_file() and not args.plan_only:
        scales = json.loads(kept.read_text())
        print(f"budget {args.budget}: resuming the plan of this command's first run ({kept}; delete it to plan "
              f"again): " + "; ".join(f"{name}: {s}" for name, s in scales.items()))
        return scales
    t0 = time.perf_counter()
    print(f"budget {args.budget}: measuring this machine's throughput for {len(specs)} stud"
          f"{'y' if len(specs) == 1 else 'ies'}", flush=True)
    ctx = experiment.prepare(estimate.configurations(specs[0], overrides)[0][1], progress=False)
    cache: dict = {}
    rows = {s.name: estimate.estimate(s, overrides, ctx.train_full, ctx.test, cache=cache, progress=not args.quiet,
                                      group_size=group) for s in specs}
    plan = budget.plan([r for rs in rows.values() for r in rs], len(ctx.train_full), budget_s,
                       time.perf_counter() - t0, epochs=args.epochs, train_images=args.train_subset)
    print(plan.text(), flush=True)
    scales = {name: plan.overrides(rs) for name, rs in rows.items()}
    if args.plan_only:
        return scales
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(scales, indent=1))
    return scales


def cmd_run(args: argparse.Namespace) -> int:
    from bench.studies import summary
    from bench.studies.invocation import best_text, counts, run_study
    from bench.run_config import build_config
    from bench.studies.preparation import Plan, prepare
    from bench.studies.storage import default_storage
    from bench.tracking import mask_uri

    for flag, value in (("--n-trials", args.n_trials), ("--workers", args.workers), ("--timeout", args.timeout)):
        if value is not None and not value > 0:  # nan too
            raise InputError(f"{flag}={value}: must be positive")
    overrides = layered_overrides(args)  # --config FILE, then --set and the shortcuts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec, text = load_study_file(args.file, overrides)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    size = group_size(args, build_config(spec.base, overrides), spec.repeats)
    if getattr(args, "budget", None) or getattr(args, "plan_only", False):
        scales = budget_scales(args, [spec], size)  # refuses --plan-only alone
        if args.plan_only:
            return 0
        overrides.update(scales.popitem()[1])
        spec, text = load_study_file(args.file, overrides)
    uri = tracking_uri_from_args(args)
    storage = args.storage or default_storage(uri)
    started = time.time()  # --timeout counts from here, once for all workers
    prepared = prepare(spec, text, storage, uri, force_new=args.force_new)
    study, parent_id = prepared.study, prepared.parent_run_id
    if prepared.stale:
        print(f"retrying trials left running by a dead worker: {prepared.stale}")
    if prepared.failed:
        print(f"retrying trials that failed in an earlier run: {prepared.failed}")
    before = counts(study)
    if before["waiting"] == 0:
        if before["running"]:
            print(f"study {spec.name!r}: nothing left to start; {before['running']} trial(s) still running "
                  "in other workers.")
            return 0
        print(f"study {spec.name!r} is already finished ({before['complete']} complete, "
              f"{before['pruned']} pruned); nothing to do.")
        summary.log_to_parent(study, spec, uri, parent_id, complete=True)
        return 0
    print(f"study {spec.name!r}: {before['waiting']} trials to run, {args.workers} worker(s); "
          f"storage {mask_uri(storage)}; MLflow {mask_uri(uri)} (parent run {parent_id})")
    plan = Plan(spec=spec, storage_url=storage, tracking_uri=uri, overrides=overrides,
                parent_run_id=parent_id, max_trials=args.n_trials, timeout=args.timeout or spec.budget.timeout,
                workers=args.workers, group_size=size,
                progress=not args.quiet, started=started)
    try:
        after = run_study(plan, study)
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; run the same command again to resume", file=sys.stderr)
        summary.log_to_parent(study, spec, uri, parent_id, complete=False)
        return 130
    complete = after["waiting"] == 0 and after["running"] == 0
    summary.log_to_parent(study, spec, uri, parent_id, complete=complete)
    print(summary.format_table(summary.trials_table(study)))
    if after["running"]:
        note = f"  ({after['running']} trial(s) still running in other workers)"
    else:
        note = "" if complete else "  (study not finished: run again to resume)"
    print(f"best: {best_text(study)}{note}")
    return _failures(study, after)


def _failures(study, after: dict[str, int]) -> int:
    """1, with the failed trials and their errors, when trials failed or a worker died; else 0."""
    from optuna.trial import TrialState

    from bench.studies.preparation import retried

    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    failed = [t for t in trials if t.state == TrialState.FAIL and t.number not in again]
    for t in failed:
        print(f"trial {t.number} failed: {t.user_attrs.get('error', 'no error recorded')}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} trial(s) failed; fix the cause and run the same command again: it retries them "
              "with the same parameters", file=sys.stderr)
    if after.get("died"):
        print(f"{after['died']} worker(s) died; their trials were queued again: run the same command again to "
              "resume", file=sys.stderr)
    return 1 if failed or after.get("died") else 0


def cmd_status(args: argparse.Namespace) -> int:
    import optuna

    from bench.studies import summary
    from bench.studies.invocation import counts
    from bench.studies.storage import default_storage, read_storage
    from bench.tracking import mask_uri

    name = args.study
    if Path(name).is_file():
        name = load_study_file(name)[0].name
    uri = tracking_uri_from_args(args)
    storage = args.storage or default_storage(uri)
    try:
        study = optuna.load_study(study_name=name, storage=read_storage(storage))
    except KeyError:
        raise StudyError(f"study {name!r} not found in storage {mask_uri(storage)!r}") from None
    print(summary.format_table(summary.trials_table(study)))
    print("counts:", ", ".join(f"{k} {v}" for k, v in counts(study).items()))
    for t in summary.best_trials(study):
        print(f"best: trial {t.number} values={t.values} params={t.params}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from bench import experiment
    from bench.perf import estimate

    if args.steps < 1:
        raise InputError(f"--steps={args.steps}: must be positive")
    overrides = overrides_from_args(args)
    specs = [load_study_file(f, overrides)[0] for f in args.files]  # every file validated before timing any
    size = group_size(args, estimate.configurations(specs[0], overrides)[0][1],  # decided (and said) once
                      max(s.repeats for s in specs))
    contexts: dict = {}
    grand = 0.0
    for spec in specs:
        cfg = estimate.configurations(spec, overrides)[0][1]
        key = (cfg.device, cfg.data.dataset, cfg.data.root)
        if key not in contexts:
            contexts[key] = experiment.prepare(cfg, progress=False)
        ctx = contexts[key]
        rows = estimate.estimate(spec, overrides, ctx.train_full, ctx.test, steps=args.steps, group_size=size)
        print(estimate.format_table(spec, rows, ctx.device), flush=True)
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
