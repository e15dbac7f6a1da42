"""`gan-bench report`: argument parsing and the command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.args import tracking_uri_from_args
from bench.errors import InputError, ReportError, TrackingError
from bench.tracking import mask_uri, safe_name
from bench.report.build import Report, build_report
from bench.report.published import Comparison, verdict_lines
from bench.report.render import log_report, write_report


def cmd_report(args: argparse.Namespace) -> int:
    from bench.tracking import client as make_client

    uri = tracking_uri_from_args(args)
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():
        raise InputError(f"--tracking-uri {uri!r}: no MLflow store at {db} (run a study first, or pass the store)")
    out = Path(args.out) if args.out else Path("reports") / safe_name("+".join(args.studies))
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r}: exists and is not a folder")
    try:
        c = make_client(uri)
        report = build_report(c, args.studies, out_dir=out, runs_filter=args.runs, baseline=args.baseline,
                              data_root=args.data_root, reference=not args.no_reference,
                              progress=lambda m: print(m, file=sys.stderr))
    except ReportError as e:
        raise InputError(str(e), field=e.field) from None
    except (InputError, TrackingError):
        raise
    except Exception as e:
        from mlflow.exceptions import MlflowException

        if isinstance(e, MlflowException):
            raise TrackingError(f"tracking store {mask_uri(uri)!r}: {e.message}") from None
        raise
    files, logged = save_report(c, report, uri, log=not args.no_log)
    for run_id in logged:
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
    print(f"\nreport: {files['html'].resolve()}\ntable: {files['csv']}  markdown: {files['md']}"
          + (f"  published: {files['published_csv']}" if "published_csv" in files else ""))
    return 0


def save_report(c, report: Report, uri: str, log: bool) -> tuple[dict[str, Path], list[str]]:
    """Write the report's files and, when `log`, log them under report/ on each study's parent run.

    Returns the files written (by kind: html, csv, md, published_csv) and the parent runs logged to.
    """
    files = write_report(report, uri)
    return files, (log_report(c, report) if log else [])


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
