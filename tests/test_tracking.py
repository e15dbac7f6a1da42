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


class LockedEveryOtherCall:
    """An MlflowClient whose writes fail with SQLite's "database is locked" on every other call (the first
    of each pair), as when several study workers share one store; reads and everything else pass through."""

    WRITES = ("create_run", "log_batch", "set_tag", "set_terminated", "log_text", "log_dict", "log_artifact",
              "log_figure", "log_image")

    def __init__(self, real):
        self.real = real
        self.calls = dict.fromkeys(self.WRITES, 0)

    def __getattr__(self, name):
        method = getattr(self.real, name)
        if name not in self.WRITES:
            return method

        def call(*args, **kwargs):
            from mlflow.exceptions import MlflowException

            self.calls[name] += 1
            if self.calls[name] % 2:
                raise MlflowException("(sqlite3.OperationalError) database is locked")
            return method(*args, **kwargs)
        return call


def test_every_write_of_a_run_is_retried_through_a_locked_database(store, monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    clients = []
    real_client = tracking.client
    monkeypatch.setattr(tracking, "client", lambda uri: clients.append(LockedEveryOtherCall(real_client(uri)))
                        or clients[-1])
    t = tracking.MlflowTracker(store, "locked", system_metrics=False)
    locked = t.client
    t.log_params({"lr": 0.1})
    t.set_tags({"kind": "test"})
    t.log_metrics({"a": 1.0}, step=0)
    t.flush()
    t.log_text("hello", "notes.txt")
    t.log_dict({"k": 1}, "d.json")
    (tmp_path / "f.txt").write_text("x")
    t.log_artifact(tmp_path / "f.txt")
    fig = plt.figure()
    t.log_figure(fig, "fig.png")
    plt.close(fig)
    t.end()
    assert locked.calls == {"create_run": 2, "log_batch": 6, "set_tag": 0, "set_terminated": 2, "log_text": 2,
                            "log_dict": 2, "log_artifact": 2, "log_figure": 2, "log_image": 0}
    run = MlflowClient(store).get_run(t.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"} and run.data.tags["kind"] == "test"
    assert run.data.metrics == {"a": 1.0}
    assert {f.path for f in MlflowClient(store).list_artifacts(t.run_id)} == {"notes.txt", "d.json", "f.txt",
                                                                              "fig.png"}

    # A failing run: its error tag and FAILED status get through the lock too.
    with pytest.raises(ValueError):
        with tracking.MlflowTracker(store, "locked", system_metrics=False) as failing:
            raise ValueError("boom")
    assert failing.client.calls["set_tag"] == 2 and failing.client.calls["set_terminated"] == 2
    run = MlflowClient(store).get_run(failing.run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "ValueError: boom"
