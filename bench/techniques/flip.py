"""Label flipping: each example's real/fake label is swapped with probability `flip_prob`."""

from __future__ import annotations

import torch
from pydantic import Field

from bench.techniques import Technique, register


@register
class Flip(Technique):
    """Noisy labels for D (Salimans et al. 2016, "Improved techniques for training GANs"; reports 002, 003).

    Flipping acts on the hard 0/1 labels, before smoothing: a flipped real example is then
    trained on the (smoothed) fake target, and one-sided smoothing stays one-sided.
    """

    name = "flip"
    paper = "Salimans et al. 2016"
    study = "joint-tpe"
    fields = {"flip_prob": (float, Field(0.0, ge=0.0, lt=0.5, description="probability of swapping real/fake "
                                                                         "targets (before smoothing)"))}

    def d_targets(self, real_t, fake_t):
        p = self.cfg.techniques.flip_prob
        flip_r = torch.rand(real_t.shape, device=real_t.device) < p
        flip_f = torch.rand(fake_t.shape, device=fake_t.device) < p
        return torch.where(flip_r, 1.0 - real_t, real_t), torch.where(flip_f, 1.0 - fake_t, fake_t)
