"""Assembling the report: per-study tables, verdicts and plots, and the cross-study comparison."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import ReportError
from bench.report.load import Group, StudyData, load_study_runs
from bench.report.baseline import (combined_groups, comparable, matching, objective_best, parse_params,
                                   resolve_baseline)
from bench.report.table import Table, build_table, verdict
from bench.report.plots import Plot, study_plots
from bench.report.reference import reference_scores
from bench.report.published import Comparison, compare_study, published_from_parent


@dataclass
class StudyReport:
    study: StudyData
    table: Table
    verdict: list[str]
    plots: list[Plot]
    published: list[Comparison] = field(default_factory=list)  # the study file's [published] tables, compared


@dataclass
class Report:
    studies: list[StudyReport]
    comparison: tuple[Table, list[str]] | None  # (table, verdict)
    comparison_note: str
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    logged_to: list[str] = field(default_factory=list)
    reproduces: str | None = None  # `gan-bench reproduce`: the report whose tables lead the page
    left_out: list[str] = field(default_factory=list)  # studies a damaged store could not read, and why


def build_report(client, names: list[str], *, out_dir: Path, runs_filter: str | None = None,
                 baseline: str | None = None, data_root: str | None = None, reference: bool = True,
                 progress=print, published: dict[str, list] | None = None) -> Report:
    """`published`: study name -> its [published] tables (default: read from the study.toml on its parent run)."""
    wanted = parse_params(baseline) if baseline else None
    studies = [load_study_runs(client, n, runs_filter) for n in names]
    if wanted is not None and not any(matching(s.groups, wanted) for s in studies):
        labels = "; ".join(f"{s.name}: " + ", ".join(g.label for g in s.groups) for s in studies)
        raise ReportError(f"baseline {baseline!r}: matches no configuration (configurations: {labels or 'none'})",
                          field="baseline")
    ref_cache: dict = {}
    reports = []
    baselines: dict[str, list[Group]] = {}
    for s in studies:
        progress(f"{s.name}: {len(s.runs)} runs in {len(s.groups)} configurations")
        bases, note = resolve_baseline(s, wanted, baseline)
        baselines[s.name] = bases
        ref, ref_note = (reference_scores(s.groups, data_root, ref_cache, progress) if reference
                         else (None, "reference row skipped (--no-reference)"))
        table = build_table(s.name, s.groups, s.objectives, bases, note, ref, ref_note)
        plots = study_plots(client, s, ref)
        if published is not None and s.name in published:
            specs = published[s.name]
        else:
            specs, why = published_from_parent(client, s)
            s.notes += [why] if why else []
        reports.append(StudyReport(s, table, verdict(table, s.objectives), plots, compare_study(s, table, specs)))

    comparison, comparison_note = None, ""
    with_runs = [s for s in studies if any(g.usable for g in s.groups)]
    if len(studies) > 1 and len(with_runs) < 2:
        comparison_note = "No combined table: fewer than two of the studies have finished runs."
    elif len(studies) > 1:
        studies = with_runs
        diffs = comparable(studies)
        if diffs:
            comparison_note = ("No combined table: the studies do not share a base configuration ("
                               + "; ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "") + ").")
        else:
            groups = combined_groups(studies)
            objectives = studies[0].objectives
            chosen = [baselines[s.name] for s in studies]
            base_ids = {b.config_id for bases in chosen for b in bases}
            base = None
            if wanted is not None:
                found = matching(groups, wanted)
                base = found[0] if found else None
                note = f"baseline: {base.label} (--baseline {baseline})" if base else ""
            elif len(base_ids) == 1 and None not in base_ids and all(chosen):
                base = next(g for g in groups if g.config_id in base_ids)
                note = f"baseline: {base.label} (every study's baseline is this configuration)"
            if base is None:
                base = objective_best(groups, *objectives[0])
                note = f"differences are to the best configuration by {objectives[0][0]}"
            ref = next((r.table.rows[-1].reference for r in reports if r.table.rows and r.table.rows[-1].reference),
                       None)
            table = build_table("comparison", groups, objectives, [base] if base else [], note, ref)
            comparison = (table, verdict(table, objectives))
            comparison_note = ("The studies share a base configuration (they differ only in the keys each varies); "
                               "identical configurations are pooled across studies, one run per seed.")
    return Report(reports, comparison, comparison_note, out_dir)
