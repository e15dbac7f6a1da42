"""`gan-bench reproduce REPORT`: argument parsing and printing; `bench.api.reproduce` does the work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.args import add_run_options, overrides_from_args, parse_overrides
from bench.cli.report import print_verdicts
from bench.cli.study import add_budget_option, add_group_options, budget_args, print_outcome, requested_group
from bench.errors import InputError
from bench.reproduce import needed_analyses


def analysis_options(items: list[str], names: list[str]) -> dict[str, dict]:
    """`--analysis-set KEY=VALUE` as each needed analysis's Options (unknown keys: exit 2)."""
    import importlib
    from dataclasses import fields

    given = parse_overrides(items) if items else {}
    out = {}
    for name in names:
        module = importlib.import_module(f"bench.analysis.{name}")
        known = {f.name for f in fields(module.Options)}
        unknown = [k for k in given if k not in known]
        if unknown:
            raise InputError(f"--analysis-set {unknown[0]}: not an option of the {name} analysis "
                             f"({', '.join(sorted(known))})")
        out[name] = given
    return out


def cmd_reproduce(args: argparse.Namespace) -> int:
    from bench import api
    from bench.report.published import claims_line, summary_counts
    from bench.reproduce import default_studies_dir, find_studies

    if args.workers <= 0:
        raise InputError(f"--workers={args.workers}: must be positive")
    if args.analysis_set and not args.analyze:
        raise InputError("--analysis-set: only with --analyze")
    overrides = overrides_from_args(args)
    if args.plan_only:
        budget_args(args)
        studies = find_studies(Path(args.studies) if args.studies else default_studies_dir(), args.report, overrides)
        api.plan_budget([p for p, _ in studies], args.budget, overrides=overrides, tracking_uri=args.tracking_uri,
                        group_size=requested_group(args), epochs=args.epochs, train_subset=args.train_subset,
                        keep=False, progress=not args.quiet)
        return 0
    options = None
    if args.analyze:
        studies = find_studies(Path(args.studies) if args.studies else default_studies_dir(), args.report, overrides)
        tables = [t for _, spec in studies for t in spec.published if t.matches(args.report)]
        options = analysis_options(args.analysis_set, sorted(needed_analyses(tables)))
    try:
        outcome = api.reproduce(args.report, studies_dir=args.studies, out_dir=args.out, overrides=overrides,
                                storage=args.storage, tracking_uri=args.tracking_uri, workers=args.workers,
                                group_size=requested_group(args), analyze=args.analyze, analysis_options=options,
                                reference=not args.no_reference, log=not args.no_log, progress=not args.quiet,
                                uniform=args.uniform, **budget_args(args))
    except KeyboardInterrupt:
        print("interrupted: finished trials and rounds are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    if outcome.report is None:  # a study failed: its table says which trials and why
        return print_outcome(outcome.studies[-1])
    files, comparisons = outcome.report.files, outcome.comparisons
    print(f"\n== report {args.report}: published beside measured ==")
    print_verdicts(comparisons)
    counts = summary_counts(comparisons)
    print("verdicts: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"))
    print(claims_line(comparisons))
    for r in outcome.rounds:
        print(f"round {r['round']}: epochs {r['epochs']}; {r['claims']}")
    print(f"\nreport: {files['html'].resolve()}\nmarkdown: {files['md']}  published: "
          f"{files.get('published_csv', '-')}  table: {files['csv']}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="run every study that reproduces a report; one report with its tables beside ours",
        description="Run every study file whose [published] section names REPORT (through the study runner: "
                    "resumable, same options as `study run`), then write one report: the report's tables in its "
                    "own layout, published beside measured, as fractions of each evaluator's real-data value, "
                    "with a verdict per comparison, or 'not judgeable at this scale' where the runs did not train "
                    "enough to test the claim. On a CPU give a --budget (e.g. 2h): the largest scale that fits is "
                    "planned from this machine's measured throughput.")
    p.add_argument("report", help="the report, e.g. 002")
    p.add_argument("--studies", metavar="DIR", help="folder of study files (default: ./studies)")
    p.add_argument("--out", metavar="DIR", help="report folder (default: reports/reproduce-REPORT)")
    p.add_argument("--storage", help="Optuna storage URL or journal file (default: next to the MLflow store)")
    p.add_argument("--workers", type=int, default=1, help="worker processes per study")
    p.add_argument("--no-reference", action="store_true", help="no real-data reference row (no fractions of ours)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the parent runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--analyze", action="store_true",
                   help="run the analyses that published rows need (analysis/<name>/... metrics, e.g. report 002 "
                        "Tables 4, 5, 7: retrain) on every finished run of those configurations (skips runs done)")
    p.add_argument("--analysis-set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --analyze: an option of the analysis, e.g. epochs=10 or real_size=6000 (repeatable)")
    add_run_options(p)
    add_budget_option(p)
    p.add_argument("--uniform", action="store_true",
                   help="with --budget: one scale for every run, the largest that fits, trained once (default: "
                        "rounds that extend the studies whose claims are still open)")
    add_group_options(p)
    p.set_defaults(func=cmd_reproduce)

