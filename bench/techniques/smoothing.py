"""Label smoothing: D's targets 1 -> real_target (one-sided), 0 -> fake_target (two-sided)."""

from __future__ import annotations

import torch
from pydantic import Field

from bench.techniques import Technique, register


@register
class Smoothing(Technique):
    """One-sided label smoothing (Salimans et al. 2016; reports 002, 003); two-sided with fake_target > 0.

    Acts on 0/1 labels wherever they sit (after flipping), so a flipped example gets the other
    side's smoothed target.
    """

    name = "smoothing"
    label_key = "ls"
    paper = "Salimans et al. 2016"
    study = "label-smoothing"
    fields = {
        "real_target": (float, Field(1.0, gt=0.5, le=1.0, description="one-sided label smoothing: D's target "
                                                                       "for real")),
        "fake_target": (float, Field(0.0, ge=0.0, lt=0.5, description="two-sided smoothing: D's target for fake")),
    }

    @classmethod
    def label(cls, cfg):
        t = cfg.techniques
        if (t.real_target, t.fake_target) == (1.0, 0.0):
            return None
        return f"{t.real_target:g}" if t.fake_target == 0.0 else f"{t.real_target:g}/{t.fake_target:g}"

    def d_targets(self, real_t, fake_t):
        v = self.values
        return smooth(real_t, v.real_target, v.fake_target), smooth(fake_t, v.real_target, v.fake_target)


def smooth(labels: torch.Tensor, real_target: float, fake_target: float) -> torch.Tensor:
    """0/1 labels to smoothed targets: 1 -> real_target, 0 -> fake_target."""
    return labels * real_target + (1.0 - labels) * fake_target
