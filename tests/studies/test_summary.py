"""What a finished study leaves on its MLflow parent run."""

import optuna
from mlflow import MlflowClient

from bench.studies.spec import load_study_file
from bench.studies.summary import log_to_parent
from tests.conftest import two_cell_study

STUDY = two_cell_study("two-objectives", "two objectives", 'metrics = ["eval/tarr", "eval/fid"]')


def test_a_multi_objective_study_with_one_pareto_optimal_trial_logs_its_values(tmp_path, store):
    path = tmp_path / "s.toml"
    path.write_text(STUDY)
    spec, _ = load_study_file(path)
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = optuna.distributions.CategoricalDistribution([1.0, 0.9])
    for target, values in ((1.0, [0.8, 100.0]), (0.9, [0.5, 200.0])):  # the first dominates
        study.add_trial(optuna.trial.create_trial(params={"techniques.real_target": target},
                                                  distributions={"techniques.real_target": dist}, values=values))
    client = MlflowClient(store)
    parent = client.create_run(client.create_experiment("two-objectives")).info.run_id
    log_to_parent(study, spec, store, parent, complete=True)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["best_trial"] == "0"
    assert run.data.metrics == {"best/eval/tarr": 0.8, "best/eval/fid": 100.0}
