"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh local MLflow store (SQLite + artifacts folder) in a temporary folder."""
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


def sigint_default() -> None:
    """`preexec_fn` for a child the test stops with SIGINT (Ctrl-C): a suite started in the background
    by a non-interactive shell inherits SIGINT ignored, which its children would keep."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def random_data(n: int = 64, seed: int = 0):
    """A small DeviceDataset of random uint8 digits on the CPU, for steps that need no real data."""
    import torch

    from bench.data import DeviceDataset

    g = torch.Generator().manual_seed(seed)
    return DeviceDataset(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g),
                         torch.randint(10, (n,), generator=g))
