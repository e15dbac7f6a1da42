"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import time
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `-n K` each worker is one of K processes sharing the cores: one torch thread each (set before
    # torch loads; the subprocesses tests start inherit it). A user's OMP_NUM_THREADS is kept.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real MNIST / Fashion-MNIST data (torchvision layout, read-only).

    $GANBENCH_TEST_DATA if set, else ../shared/data relative to the repo root.
    """
    env = os.environ.get("GANBENCH_TEST_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not root.is_dir():
        if os.environ.get("CI"):  # CI must test on the real data, never skip past it
            pytest.fail(f"test data folder {root} not found (set GANBENCH_TEST_DATA)")
        pytest.skip(
            f"test data folder {root} not found: set GANBENCH_TEST_DATA to a folder "
            "holding MNIST/raw and FashionMNIST/raw (IDX files, .gz or plain)"
        )
    return root


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Evaluators trained by tests go to a per-session cache, never the user's."""
    old = os.environ.get("GANBENCH_CACHE")
    os.environ["GANBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("GANBENCH_CACHE", None)
    else:
        os.environ["GANBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its tables and nothing else, made once: MLflow's migrations take a
    second or two per new store. Tests of a store's first creation use a path of their own."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path, _empty_store) -> str:
    """A fresh local MLflow store (SQLite + artifacts folder) in a temporary folder: `store/mlflow.db`, a copy
    of an empty database (for "nothing written" checks, `new_store`)."""
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copyfile(_empty_store, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def new_store(tmp_path) -> str:
    """A local MLflow store not created yet (`store/` does not exist): a command refused before anything is
    written leaves no `store/`."""
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture(scope="session")
def tiny(data_root) -> dict:
    """Overrides for a run that takes seconds on 2 CPU cores: small data, small eval (the shipped evaluator)."""
    return {
        "data.root": str(data_root), "data.train_subset": 320, "data.download": False,
        "device": "cpu", "optim.epochs": 1, "optim.batch_size": 32,
        "model.width": 16, "model.hidden": 64,
        "eval.n_samples": 200, "eval.n_per_class": 20, "eval.n_real": 200, "eval.splits": 5,
        "train.log_every": 2,
    }


def two_cell_study(name: str, description: str, objective: str = 'metrics = ["eval/tarr"]\ndirections = ["maximize"]') -> str:
    """A study file's text: a conditional MLP GAN, a grid over two real-label targets (1.0, 0.9)."""
    return f"""
name = "{name}"
description = "{description}"
[base]
model.name = "cgan-mlp"
[space]
"techniques.real_target" = {{ choices = [1.0, 0.9] }}
[sampler]
type = "grid"
[objective]
{objective}
"""


def sigint_default() -> None:
    """`preexec_fn` for a child the test stops with SIGINT (Ctrl-C): a suite started in the background
    by a non-interactive shell inherits SIGINT ignored, which its children would keep."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def running_ui(store: str, log: Path):
    """`gan-bench ui` on `store` as a user starts it, its output in `log`: yields (process, url) once it says
    "ready", and stops it with Ctrl-C's SIGINT on the way out (killed if it does not stop in a minute)."""
    import signal
    import subprocess
    import sys

    from bench import ui

    port = ui.free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--port", str(port), "--tracking-uri", store],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=sigint_default)
    try:
        deadline = time.monotonic() + time_limit(120)
        while "ready: " not in log.read_text():
            assert proc.poll() is None, f"gan-bench ui exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the MLflow UI did not come up:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                proc.wait(time_limit(60))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def random_data(n: int = 64, seed: int = 0):
    """A small DeviceDataset of random uint8 digits on the CPU, for steps that need no real data."""
    import torch

    from bench.data import DeviceDataset

    g = torch.Generator().manual_seed(seed)
    return DeviceDataset(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g),
                         torch.randint(10, (n,), generator=g))


# -- time limits that scale with the machine's measured speed --------------------------------------------------

# `calibration_unit()` on the 2-core AMD EPYC (AVX2) where the limits were set, uncontended: its CPU time, the
# least of 15 (wall time there was 1.0 s at load 14)
NOMINAL_UNIT_S = 0.06


def calibration_unit() -> float:
    """Wall seconds for a fixed piece of what tests wait on: small float32 conv steps and interpreter work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core's work: its CPU time on an idle machine is its wall time
    try:
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(32, 1, 28, 28, generator=g), torch.randn(16, 1, 5, 5, generator=g, requires_grad=True)
        start = time.perf_counter()
        for _ in range(10):
            torch.nn.functional.conv2d(x, w).square().mean().backward()
        sum(i * i for i in range(200_000))
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


_slowdown: tuple[float, float] | None = None  # (when measured, value)


def slowdown() -> float:
    """How many times slower than nominal this machine runs now (at least 1): the median of 3 calibration
    units, measured again once a minute (busy neighbours come and go)."""
    global _slowdown
    if _slowdown is None or time.monotonic() - _slowdown[0] > 60:
        unit = statistics.median(calibration_unit() for _ in range(3))
        _slowdown = (time.monotonic(), max(1.0, unit / NOMINAL_UNIT_S))
    return _slowdown[1]


def time_limit(seconds: float) -> float:
    """A limit that is `seconds` on an idle machine like the nominal one, scaled to this machine's speed now."""
    return seconds * slowdown()


class Deadline:
    """`time_limit(seconds)` from now; `progress(marker)` starts it again whenever the marker changes, so a
    process that is slow but advancing is waited for, and one that stalls fails after the limit."""

    def __init__(self, seconds: float):
        self.seconds = time_limit(seconds)
        self._end = time.monotonic() + self.seconds
        self._marker: object = object()

    def progress(self, marker) -> None:
        if marker != self._marker:
            self._marker, self._end = marker, time.monotonic() + self.seconds

    def left(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end
