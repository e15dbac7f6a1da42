"""`gan-bench report`: argument parsing and the command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.args import tracking_uri_from_args
from bench.errors import InputError, ReportError, TrackingError
from bench.tracking import mask_uri, read_only, safe_name, store_fault
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
        report, left_out = build_readable(c, args, out, uri)
    except ReportError as e:
        raise InputError(str(e), field=e.field) from None
    except (InputError, TrackingError):
        raise
    except Exception as e:
        from mlflow.exceptions import MlflowException

        if isinstance(e, MlflowException) and store_fault(e, uri) is None:
            raise TrackingError(f"tracking store {mask_uri(uri)!r}: {e.message}") from None
        raise
    log = not args.no_log
    if log and read_only(uri):
        print(f"not logged to the parent runs: the MLflow store {uri[len('sqlite:///'):]} is read-only",
              file=sys.stderr)
        log = False
    files, logged = save_report(c, report, uri, log=log)
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
    for line in left_out:
        print(f"gan-bench: error: {line}", file=sys.stderr)
    return 2 if left_out else 0


def build_readable(c, args: argparse.Namespace, out: Path, uri: str) -> tuple[Report, list[str]]:
    """The report of every study the store can read. Where it fails on some studies' runs (a damaged part
    of the store), the others are reported alone: returns the report and a line per study left out."""
    from bench.report.load import load_study_runs

    def build(names: list[str]) -> Report:
        return build_report(c, names, out_dir=out, runs_filter=args.runs, baseline=args.baseline,
                            data_root=args.data_root, reference=not args.no_reference,
                            progress=lambda m: print(m, file=sys.stderr))

    try:
        return build(args.studies), []
    except Exception as e:
        if len(args.studies) == 1 or store_fault(e, uri) is None:
            raise
    readable, left_out = [], []
    for name in args.studies:
        try:
            load_study_runs(c, name, args.runs)
            readable.append(name)
        except Exception as e:
            fault = store_fault(e, uri)
            if fault is None or len(left_out) == len(args.studies) - 1:  # none readable: that is the error
                raise
            left_out.append(f"study {name!r} is not in this report: {fault}")
    return build(readable), left_out


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
