"""`gan-bench reproduce REPORT`: run every study whose `[published]` names that report, then write one
report with the report's tables in its own layout, published beside measured, with verdicts.

The studies run through the study runner exactly as `gan-bench study run` runs them (same storage,
resumption and options), so a reproduction that was interrupted resumes with what is left; the report
is `gan-bench report` over those studies, led by the published tables of that report only.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from bench.studies.spec import StudySpec, load_study, same_report


def default_studies_dir() -> Path:
    """./studies when run from a checkout, else the one next to the package."""
    here = Path("studies")
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "studies"


def _names_report(raw: dict, report: str) -> bool:
    tables = raw.get("published")
    tables = [tables] if isinstance(tables, dict) else tables if isinstance(tables, list) else []
    return any(isinstance(t, dict) and same_report(str(t.get("report", "")), report) for t in tables)


def find_studies(folder: Path, report: str, overrides: dict) -> list[tuple[Path, StudySpec]]:
    """The study files in `folder` whose [published] names `report`, each fully validated (nothing runs before)."""
    from bench.cli import InputError

    if not folder.is_dir():
        raise InputError(f"--studies {str(folder)!r}: not a folder")
    chosen, reports = [], set()
    for path in sorted(folder.glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            print(f"warning: {path}: skipped, not readable as TOML ({e})", file=sys.stderr)
            continue
        tables = raw.get("published")
        for t in [tables] if isinstance(tables, dict) else tables if isinstance(tables, list) else []:
            if isinstance(t, dict) and "report" in t:
                reports.add(str(t["report"]))
        if _names_report(raw, report):
            chosen.append(path)
    if not chosen:
        raise InputError(f"report {report!r}: no study in {folder} has a [published] table for it "
                         f"(reports with published tables: {', '.join(sorted(reports)) or 'none'})")
    return [(path, load_study(path, overrides)[0]) for path in chosen]


def needed_analyses(tables) -> dict[str, list[dict]]:
    """analysis name -> the params of the published rows that hold its metrics (analysis/<name>/...)."""
    out: dict[str, list[dict]] = {}
    for t in tables:
        for row in t.rows:
            for name in {m.split("/")[1] for m in row.values if m.startswith("analysis/")}:
                if row.params not in out.setdefault(name, []):
                    out[name].append(dict(row.params))
    return out


def analysis_options(items: list[str], names: list[str]) -> dict[str, dict]:
    """`--analysis-set KEY=VALUE` as each needed analysis's Options (unknown keys: exit 2)."""
    import importlib
    from dataclasses import fields

    from bench.cli import InputError, parse_overrides

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


def run_analyses(uri: str, study_name: str, tables, options: dict[str, dict], data_root: str | None,
                 device: str, progress: bool) -> int:
    """Analyse every finished run of the configurations whose published rows hold analysis metrics.

    Runs that already carry the analysis' metrics are skipped, so a rerun only does what is missing."""
    import importlib

    from bench.analysis import common
    from bench.report.baseline import matching
    from bench.report.load import load_study as load_runs

    done = 0
    client = common.open_store(uri)
    study = load_runs(client, study_name)
    for name, rows in needed_analyses(tables).items():
        module = importlib.import_module(f"bench.analysis.{name}")
        opts = module.Options(**options.get(name, {}))
        for params in rows:
            for group in matching(study.groups, params):
                for r in group.usable:
                    if any(m.startswith(f"analysis/{name}/") for m in r.final):
                        continue
                    print(f"analysing {group.label}, seed {r.seed} ({name}, run {r.run_id})")
                    run = common.load_run(r.run_id, uri, data_root=data_root, device=device, progress=progress)
                    common.publish(client, r.run_id, module.analyze(run, opts, progress=progress))
                    done += 1
    return done


def cmd_reproduce(args: argparse.Namespace) -> int:
    from bench.cli import InputError, overrides_from_args, tracking_uri_from_args
    from bench.report.build import build_report
    from bench.report.common import ReportError
    from bench.report.published import summary_counts, verdict_lines
    from bench.report.render import log_report, write_report
    from bench.studies import cmd_run
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
    for path, spec in studies:
        print(f"\n== study {spec.name} ({path}) ==")
        run_args = argparse.Namespace(**{**vars(args), "file": str(path), "n_trials": None, "timeout": None,
                                        "force_new": False})
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
    files = write_report(report, uri)
    if not args.no_log:
        log_report(c, report)
    comparisons = [cmp for sr in report.studies for cmp in sr.published]
    print(f"\n== report {args.report}: published beside measured ==")
    for cmp in comparisons:
        for line in verdict_lines(cmp):
            print(f"  - {line}")
    counts = summary_counts(comparisons)
    print("verdicts: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"))
    print(f"\nreport: {files['html'].resolve()}\nmarkdown: {files['md']}  published: "
          f"{files.get('published_csv', '-')}  table: {files['csv']}")
    return 0


def register_cli(subparsers) -> None:
    from bench.cli import add_run_options

    p = subparsers.add_parser(
        "reproduce", help="run every study that reproduces a report; one report with its tables beside ours",
        description="Run every study file whose [published] section names REPORT (through the study runner: "
                    "resumable, same options as `study run`), then write one report: the report's tables in its "
                    "own layout, published beside measured, as fractions of each evaluator's real-data value, "
                    "with a verdict per comparison. Scale down on a CPU with --epochs and --train-subset.")
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
    p.set_defaults(func=cmd_reproduce)


__all__ = ["cmd_reproduce", "default_studies_dir", "find_studies", "register_cli"]
