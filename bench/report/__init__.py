"""Comparison reports: "which technique helps, by how much, and is it real?" from what MLflow holds.

`gan-bench report STUDY [STUDY ...]` reads each study's runs (the parent run tagged `role=parent`,
one child run per trial and seed tagged `role=trial`, see `bench.tracking.TAG_*`) and writes:

- the table: one row per configuration (seeds pooled by the `config_label` tag), mean +/- std,
  a 95% t-interval over seeds, n, the best value per column marked, the difference to the
  baseline row with a Welch t-test p-value, and a reference row computed on real data;
- plots (matplotlib `Figure` objects saved as PNG);
- one self-contained HTML page (images embedded as base64) with each study's question,
  table, plots and a generated verdict;

and logs the same files under `report/` on each study's parent run.

Statistics, stated once (the page repeats them):
- a run's value for a metric is its value at the last logged step (the final epoch);
- std is the sample standard deviation (ddof=1); the 95% CI is `scipy.stats.t.interval`
  with n-1 degrees of freedom around the mean (n/a for n < 2);
- difference to the baseline: mean(config) - mean(baseline); p-value and CI from Welch's
  t-test (`scipy.stats.ttest_ind(equal_var=False)`) when both sides have >= 2 seeds, else
  "n/a" (no test: a bootstrap over 1 seed cannot say anything either).

Only FINISHED runs count, one per seed: where a retried trial trained a seed again, the latest run
counts and the earlier one is listed as superseded. FAILED, KILLED (pruned) and unfinished runs, and seeds that other
configurations have but this one lacks, are listed and marked, never a crash. A diverged run
(tag `diverged=true`) finished with its last finite evaluation: it counts and is marked.


The package, one module per concept (data flows one way, top to bottom):

- `common`: constants, table columns, `ReportError`;
- `load`: reading a study's runs from MLflow, grouped by configuration;
- `stats`: summaries over seeds and Welch's t-test;
- `baseline`: choosing the baseline, matching configurations across studies;
- `table`: the comparison table and the verdict;
- `plots`: matplotlib figures;
- `reference`: the real-data reference row;
- `build`: assembling the report;
- `render`: CSV, Markdown, HTML files and logging to MLflow.

`gan-bench report` itself (argument parsing, the command) is `bench.cli.report`.
"""

from __future__ import annotations

from bench.report.common import (
    CONFIDENCE, ALPHA, NOTE_TAG, PARENT_ID_TAG, LOSS_KEYS, D_OUT_KEYS, IGNORED_KEYS, Column, COLUMNS,
    CORE_METRICS, EVAL_PLOT_METRICS, REFERENCE_MAP, ReportError)
from bench.report.load import (
    RunData, Group, StudyData, param_value, load_study_runs, varied_keys)
from bench.report.stats import (
    Stat, summarize, Diff, compare, final_value)
from bench.report.baseline import (
    parse_params, matching, resolve_baseline, base_config, comparable, combined_groups)
from bench.report.table import (
    Row, Table, columns_for, build_table, verdict)
from bench.report.plots import (
    plot_eval_curves, plot_losses, plot_d_outputs, plot_class_accuracy, plot_heatmap, final_sample_image,
    plot_samples, param_importances, plot_importances, plot_parallel, cmap_mappable, Plot, study_plots)
from bench.report.reference import (
    reference_scores)
from bench.report.build import (
    StudyReport, Report, build_report)
from bench.report.render import (
    table_csv, table_markdown, table_html, CSS, METHODS, render_html, render_markdown, write_report,
    log_report)

__all__ = [
    "CONFIDENCE", "ALPHA", "NOTE_TAG", "PARENT_ID_TAG", "LOSS_KEYS", "D_OUT_KEYS", "IGNORED_KEYS", "Column",
    "COLUMNS", "CORE_METRICS", "EVAL_PLOT_METRICS", "REFERENCE_MAP", "ReportError", "RunData", "Group",
    "StudyData", "param_value", "load_study_runs", "varied_keys", "Stat", "summarize", "Diff", "compare",
    "final_value", "parse_params", "matching", "resolve_baseline", "base_config", "comparable",
    "combined_groups", "Row", "Table", "columns_for", "build_table", "verdict", "plot_eval_curves",
    "plot_losses", "plot_d_outputs", "plot_class_accuracy", "plot_heatmap", "final_sample_image",
    "plot_samples", "param_importances", "plot_importances", "plot_parallel", "cmap_mappable", "Plot",
    "study_plots", "reference_scores", "StudyReport", "Report", "build_report", "table_csv", "table_markdown",
    "table_html", "CSS", "METHODS", "render_html", "render_markdown", "write_report", "log_report"
]
