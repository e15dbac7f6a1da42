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

- `common`: constants and table columns;
- `load`: reading a study's runs from MLflow, grouped by configuration;
- `stats`: summaries over seeds and Welch's t-test;
- `baseline`: choosing the baseline, matching configurations across studies;
- `judge`: whether this scale can test a published claim (chance floors, what counts as settled);
- `trajectory`: verdicts over training, one per evaluated epoch;
- `table`: the comparison table and the verdict;
- `published`: a report's published numbers beside ours, with a verdict per published comparison;
- `plots`: matplotlib figures;
- `reference`: the real-data reference row;
- `build`: assembling the report;
- `render`: CSV, Markdown, HTML files and logging to MLflow.

Import from the module that defines a name (`from bench.report.build import build_report`); the
errors are in `bench.errors` (`ReportError`). `gan-bench report` itself (argument parsing, the
command) is `bench.cli.report`.
"""
