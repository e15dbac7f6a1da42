"""Helpers for the technique tests: a D whose input gradient is known, and a training step on a small GAN."""

import pytest
import torch
from torch import nn

from bench import techniques
from bench.run_config import build_config
from bench.step import Hooks, build_step
from tests.conftest import random_data


class LinearD(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so gradient penalties have closed forms."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.flatten())

    def forward(self, x, y=None):
        return x.flatten(1) @ self.w


@pytest.fixture
def linear_stack():
    """`linear_stack(w, **technique keys)`: the active techniques of a run whose D is LinearD(w)."""
    def make(w, **keys):
        cfg = build_config(overrides={f"techniques.{k}": v for k, v in keys.items()})
        return Hooks(cfg, techniques.StepInfo(nn.Identity(), LinearD(w), torch.device("cpu"), 1))
    return make


@pytest.fixture
def gan_step():
    """`gan_step(**overrides)`: the step of a small conditional MLP GAN on CPU, fp32."""
    def make(**overrides):
        torch.manual_seed(0)
        cfg = build_config(overrides={"model.name": "cgan-mlp", "model.hidden": 32, "device": "cpu",
                                      "train.amp": False, **overrides})
        return build_step(cfg, random_data(320))  # 10 iterations of batch 32
    return make


def images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.randint(10, (n,), generator=g)
