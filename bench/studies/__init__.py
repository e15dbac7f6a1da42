"""Studies: each technique question as an Optuna search over harness configs, every trial an MLflow run.

- `spec`: the study-file schema and its validation (nothing runs on a bad file);
- `storage`: the Optuna storage (journal repair included), sampler, pruner, opening the study;
- `preparation`: the MLflow parent run, stale trials retried, the budget queued (how trials are handed out);
- `workers`: claiming queued trials, running them (one MLflow child run per seed), the budget;
- `invocation`: one `study run`: its workers, the progress view, the counts;
- `summary`: the trials table, best trial(s) and Optuna plots on the parent run;
- `optuna_adapter`: every use of Optuna's private API, in one place.

The `gan-bench study` commands are in `bench.cli.study`.
"""

from __future__ import annotations

from bench.studies.spec import StudySpec, load_study_file

__all__ = ["StudySpec", "load_study_file"]
