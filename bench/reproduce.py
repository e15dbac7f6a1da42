"""`gan-bench reproduce REPORT`: run every study whose `[published]` names that report, then write one
report with the report's tables in its own layout, published beside measured, with verdicts.

The studies run through the study runner exactly as `gan-bench study run` runs them (same storage,
resumption and options), so a reproduction that was interrupted resumes with what is left; the report
is `gan-bench report` over those studies, led by the published tables of that report only.
The command itself (arguments, the run of each study) is `bench.cli.reproduce`.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from bench.errors import InputError
from bench.studies.spec import StudySpec, load_study_file, same_report


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
    if not folder.is_dir():
        raise InputError(f"studies folder {str(folder)!r}: not a folder")
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
    return [(path, load_study_file(path, overrides)[0]) for path in chosen]


def needed_analyses(tables) -> dict[str, list[dict]]:
    """analysis name -> the params of the published rows that hold its metrics (analysis/<name>/...)."""
    out: dict[str, list[dict]] = {}
    for t in tables:
        for row in t.rows:
            for name in {m.split("/")[1] for m in row.values if m.startswith("analysis/")}:
                if row.params not in out.setdefault(name, []):
                    out[name].append(dict(row.params))
    return out


def run_analyses(uri: str, study_name: str, tables, options: dict[str, dict], data_root: str | None,
                 device: str, progress: bool) -> int:
    """Analyse every finished run of the configurations whose published rows hold analysis metrics.

    Runs that already carry the analysis' metrics are skipped, so a rerun only does what is missing."""
    import importlib

    from bench.analysis import common
    from bench.report.baseline import matching
    from bench.report.load import load_study_runs

    done = 0
    client = common.open_store(uri)
    study = load_study_runs(client, study_name)
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


__all__ = ["default_studies_dir", "find_studies", "needed_analyses", "run_analyses"]
