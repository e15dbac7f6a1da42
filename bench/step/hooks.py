"""The active techniques of one step, in registry order, behind one call per hook."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bench.techniques import TECHNIQUES, Batch, StepInfo, Technique
from bench.step.losses import bce_d_loss, non_saturating_g_loss


class Hooks:
    """Each hook of the active techniques, chained; where none replaces a loss, the plain GAN's applies."""

    def __init__(self, cfg, info: StepInfo):
        self.info = info
        self.items = [t(t.read_values(cfg), info) for t in TECHNIQUES.values() if t.active(cfg)]
        self.couples_batch = any(t.couples_batch for t in self.items)
        self._d_input = [t for t in self.items if _overrides(t, "d_input")]

    def d_input(self, x: torch.Tensor, real: bool) -> torch.Tensor:
        for t in self._d_input:
            x = t.d_input(x, real)
        return x

    def d_targets(self, n_real: int, n_fake: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        real_t, fake_t = torch.ones(n_real, device=device), torch.zeros(n_fake, device=device)
        for t in self.items:
            real_t, fake_t = t.d_targets(real_t, fake_t)
        return real_t, fake_t

    def d_loss(self, b: Batch) -> torch.Tensor:
        loss = _first(t.d_loss(b) for t in self.items)
        if loss is None:
            loss = bce_d_loss(b.real_logits, b.fake_logits, b.real_t, b.fake_t)
        return _add(loss, (t.d_penalty(b) for t in self.items))

    def g_loss(self, b: Batch) -> torch.Tensor:
        loss = _first(t.g_loss(b) for t in self.items)
        if loss is None:
            loss = non_saturating_g_loss(b.fake_logits)
        return _add(loss, (t.g_penalty(b) for t in self.items))

    def learning_rates(self, lr_g: float, lr_d: float) -> tuple[float, float]:
        for t in self.items:
            lr_g, lr_d = t.learning_rates(lr_g, lr_d)
        return lr_g, lr_d

    def after_step(self, net: str) -> None:
        for t in self.items:
            t.after_step(net)

    def eval_generator(self) -> nn.Module | None:
        return _first(t.eval_generator() for t in self.items)

    def state_dict(self) -> dict:
        return {type(t).name: t.state_dict() for t in self.items}

    def load_state_dict(self, state: dict) -> None:
        for t in self.items:
            t.load_state_dict(state.get(type(t).name, {}))


def _overrides(t: Technique, hook: str) -> bool:
    return getattr(type(t), hook) is not getattr(Technique, hook)


def _first(values: Iterator) -> Any:
    return next((v for v in values if v is not None), None)


def _add(loss: torch.Tensor, extra: Iterator) -> torch.Tensor:
    for term in extra:
        if term is not None:
            loss = loss + term
    return loss
