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
