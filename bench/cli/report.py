"""`gan-bench report`: argument parsing and printing; `bench.api.report` does the work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report.published import Comparison, verdict_lines


def cmd_report(args: argparse.Namespace) -> int:
    from bench import api

    report = api.report(args.studies, tracking_uri=args.tracking_uri, out_dir=args.out, runs_filter=args.runs,
                        baseline=args.baseline, data_root=args.data_root, reference=not args.no_reference,
                        log=not args.no_log)
    for run_id in report.logged_to:
        print(f"logged to parent run {run_id} under report/")
    for sr in report.studies:
        print(f"\n== {sr.study.name} ==")
        if sr.study.question:
            print(sr.study.question)
        for line in sr.verdict:
            print(f"  - {line}")
        print_verdicts(sr.published)
    if report.comparison is not None:
        print("\n== comparison ==")
        for line in report.comparison[1]:
            print(f"  - {line}")
    elif report.comparison_note:
        print(f"\n{report.comparison_note}")
    files = report.files
    print(f"\nreport: {files['html'].resolve()}\ntable: {files['csv']}  markdown: {files['md']}"
          + (f"  published: {files['published_csv']}" if "published_csv" in files else ""))
    for line in report.left_out:
        print(f"gan-bench: error: {line}", file=sys.stderr)
    return 2 if report.left_out else 0


def print_verdicts(comparisons: list[Comparison]) -> None:
    """Each published table beside ours: its verdict lines, indented."""
    for comparison in comparisons:
        for line in verdict_lines(comparison):
            print(f"  - {line}")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="comparison tables, plots and an HTML page for one or more studies",
        description="Tables with confidence intervals and p-values, curves, sample grids and a verdict per study, "
                    "from the runs in MLflow; written to --out (CSV, Markdown, PNG, one self-contained HTML) and "
                    "logged under report/ on each study's parent run.")
    p.add_argument("studies", nargs="+", metavar="STUDY", help="study name(s) (= MLflow experiment names)")
    p.add_argument("--runs", metavar="FILTER",
                   help="MLflow search filter for the trial runs, e.g. \"tags.seed != '2'\" or "
                        "\"params.`optim/epochs` = '5'\"")
    p.add_argument("--baseline", metavar="PARAMS",
                   help="the baseline configuration, e.g. techniques.real_target=1.0 (several: comma-separated; "
                        "default: the study's `baseline` tag, else the best configuration)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: reports/<study names>)")
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)")
    p.add_argument("--data-root", help="data for the real-data reference row (default: the runs' data root)")
    p.add_argument("--no-reference", action="store_true", help="no real-data reference row")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the parent runs")
    p.set_defaults(func=cmd_report)
