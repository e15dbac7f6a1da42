"""`gan-bench reproduce REPORT`: argument parsing and the command (`bench.reproduce` finds the studies)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.args import add_run_options, overrides_from_args, parse_overrides, tracking_uri_from_args
from bench.cli.report import print_verdicts, save_report
from bench.cli.study import add_budget_option, add_group_options, budget_scales, cmd_run, group_size
from bench.errors import InputError
from bench.reproduce import default_studies_dir, find_studies, needed_analyses, run_analyses


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
    from bench.report.build import build_report
    from bench.run_config import build_config
    from bench.report.common import ReportError
    from bench.report.published import claim_counts, summary_counts
    from bench.tracking import client as make_client, safe_name

    if args.workers <= 0:
        raise InputError(f"--workers={args.workers}: must be positive")
    overrides = overrides_from_args(args)
    folder = Path(args.studies) if args.studies else default_studies_dir()
    studies = find_studies(folder, args.report, overrides)
    tables = {spec.name: [t for t in spec.published if t.matches(args.report)] for _, spec in studies}
    needed = sorted({n for ts in tables.values() for n in needed_analyses(ts)})
    options = analysis_options(args.analysis_set, needed) if args.analyze else {}
    if args.analysis_set and not args.analyze:
        raise InputError("--analysis-set: only with --analyze")
    out = Path(args.out) if args.out else Path("reports") / safe_name(f"reproduce-{args.report}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r}: exists and is not a folder")
    print(f"report {args.report}: {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}: "
          + ", ".join(f"{s.name} ({', '.join(t.table for t in s.published if t.matches(args.report))})"
                      for _, s in studies))
    size = group_size(args, build_config(studies[0][1].base, overrides),  # decided (and said) once for all studies
                      max(spec.repeats for _, spec in studies))
    scales = budget_scales(args, [spec for _, spec in studies], size)
    if args.plan_only:
        return 0
    for path, spec in studies:
        print(f"\n== study {spec.name} ({path}) ==")
        scale = scales.get(spec.name, {})
        run_args = argparse.Namespace(**{**vars(args), "file": str(path), "n_trials": None, "timeout": None,
                                        "force_new": False, "budget": None, "group_size": size, "no_group": False,
                                        "epochs": scale.get("optim.epochs", args.epochs),
                                        "train_subset": scale.get("data.train_subset", args.train_subset),
                                        "overrides": [*args.overrides, *(f"{k}={v}" for k, v in scale.items()
                                                                         if k.startswith("eval."))]})
        code = cmd_run(run_args)
        if code != 0:
            return code
        if args.analyze and needed_analyses(tables[spec.name]):
            n = run_analyses(tracking_uri_from_args(args), spec.name, tables[spec.name], options, args.data_root,
                             args.device or "auto", not args.quiet)
            print(f"{spec.name}: {n} run(s) analysed")

    uri = tracking_uri_from_args(args)
    published = tables
    c = make_client(uri)
    try:
        report = build_report(c, list(published), out_dir=out, data_root=args.data_root,
                              reference=not args.no_reference, progress=lambda m: print(m, file=sys.stderr),
                              published=published)
    except ReportError as e:
        raise InputError(str(e)) from None
    report.reproduces = args.report
    files, _ = save_report(c, report, uri, log=not args.no_log)
    comparisons = [cmp for sr in report.studies for cmp in sr.published]
    print(f"\n== report {args.report}: published beside measured ==")
    print_verdicts(comparisons)
    counts = summary_counts(comparisons)
    print("verdicts: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"))
    judged, beyond = claim_counts(comparisons)
    print(f"claims: {judged} judged, {beyond} not judgeable at this scale")
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
    add_group_options(p)
    p.set_defaults(func=cmd_reproduce)

