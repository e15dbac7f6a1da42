"""MLflow tracking: buffered metrics, retries through store hiccups, secrets kept out."""

import pytest
from mlflow import MlflowClient

from bench import tracking


class Flaky:
    """Wraps MlflowClient.log_batch: fails the first `failures` calls."""

    def __init__(self, real, failures):
        self.real, self.failures, self.calls = real, failures, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("store hiccup")
        return self.real(*args, **kwargs)


def test_metrics_are_buffered_and_sent_in_batches(store):
    t = tracking.MlflowTracker(store, "buf")
    calls = []
    real = t.client.log_batch
    t.client.log_batch = lambda *a, **k: (calls.append(k.get("metrics")), real(*a, **k))
    for step in range(10):
        t.log_metrics({"a": step, "b": -step}, step=step)
    assert calls == []  # nothing sent per value
    t.end()
    assert len(calls) == 1 and len(calls[0]) == 20
    assert len(MlflowClient(store).get_metric_history(t.run_id, "a")) == 10


def test_logging_is_retried_through_a_hiccup(store, monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    t = tracking.MlflowTracker(store, "retry")
    t.client.log_batch = Flaky(t.client.log_batch, failures=2)
    t.log_metrics({"a": 1.0}, step=0)
    t.flush()
    assert [m.value for m in MlflowClient(store).get_metric_history(t.run_id, "a")] == [1.0]


def test_persistent_logging_failure_fails_the_run_cleanly(store, monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    t = tracking.MlflowTracker(store, "broken")
    real = t.client.log_batch
    with pytest.raises(ConnectionError):
        with t:
            t.client.log_batch = Flaky(real, failures=100)
            t.log_metrics({"a": 1.0}, step=0)
            t.flush()
    t.client.log_batch = real
    run = MlflowClient(store).get_run(t.run_id)
    assert run.info.status == "FAILED" and "ConnectionError" in run.data.tags["error"]


def test_mask_and_scrub():
    uri = "postgresql+psycopg://gan:hunter2@db:5432/optuna"
    assert tracking.mask_uri(uri) == "postgresql+psycopg://gan:***@db:5432/optuna"
    assert "hunter2" not in tracking.scrub(f"could not connect to {uri}", uri)
    assert tracking.mask_uri("sqlite:///mlruns/mlflow.db") == "sqlite:///mlruns/mlflow.db"


def test_names_cannot_escape_a_folder():
    for bad in ("../../etc", "a/b", "..", "/abs"):
        name = tracking.safe_name(bad)
        assert "/" not in name and ".." not in name


def test_running_run_shows_its_metrics_after_the_flush_interval(store, monkeypatch):
    """Curves reach the store while the run is RUNNING: at most `flush_interval_s` after they are logged."""
    clock = [1000.0]
    monkeypatch.setattr(tracking.time, "monotonic", lambda: clock[0])
    t = tracking.MlflowTracker(store, "live", flush_interval_s=15, system_metrics=False)
    t.log_metrics({"a": 1.0}, step=1)
    assert MlflowClient(store).get_metric_history(t.run_id, "a") == []  # buffered
    clock[0] += 16
    t.log_metrics({"a": 2.0}, step=2)
    run = MlflowClient(store).get_run(t.run_id)
    assert run.info.status == "RUNNING"
    assert [m.value for m in MlflowClient(store).get_metric_history(t.run_id, "a")] == [1.0, 2.0]
    t.log_metrics({"a": 3.0}, step=3)  # just flushed: buffered again
    assert len(MlflowClient(store).get_metric_history(t.run_id, "a")) == 2
    t.end()
    assert len(MlflowClient(store).get_metric_history(t.run_id, "a")) == 3


def test_experiments_open_as_model_training_with_their_description(store):
    c = MlflowClient(store)
    exp = c.get_experiment(tracking.ensure_experiment(store, "labelled", "Does it work?"))
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"] == "Does it work?"
    old = c.create_experiment("made-elsewhere")  # an experiment gan-bench did not create gets the labels
    tracking.ensure_experiment(store, "made-elsewhere", "New description")
    tags = c.get_experiment(old).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development" and tags["mlflow.note.content"] == "New description"
    c.set_experiment_tag(old, "mlflow.experimentKind", "genai_development")  # a kind the user chose is kept
    tracking.ensure_experiment(store, "made-elsewhere")
    assert c.get_experiment(old).tags["mlflow.experimentKind"] == "genai_development"


def test_runs_record_system_metrics(store, monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setattr(tracking, "SYSTEM_METRICS_INTERVAL_S", 0.2)
    with tracking.MlflowTracker(store, "system") as t:
        import time

        time.sleep(1.5)
    keys = set(MlflowClient(store).get_run(t.run_id).data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys, keys


def test_a_run_prints_where_to_watch_it_as_it_starts():
    from bench.experiment import watch_text

    text = watch_text("sqlite:///mlruns/mlflow.db", "3", "abc123")
    assert "abc123" in text and "gan-bench ui" in text and "http://127.0.0.1:5000/#/experiments/3/runs/abc123" in text
    assert "http://10.0.0.5:5000/#/experiments/3/runs/abc123" in watch_text("http://10.0.0.5:5000/", "3", "abc123")
