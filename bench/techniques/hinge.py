"""Hinge loss: D maximises margins, G raises D's score of its samples (Lim & Ye 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.techniques import Technique, register


@register
class Hinge(Technique):
    """Hinge loss for D, relu(1 - D(x)) + relu(1 + D(G(z))), and -D(G(z)) for G (Lim & Ye 2017;
    Miyato et al. 2018 used it with spectral norm).

    D gets no gradient from examples it already separates by the margin of 1, so it stops pushing
    its logits apart. Replaces both losses; D's BCE targets (smoothing, flipping) are unused.
    """

    name = "hinge"
    paper = "Lim & Ye 2017"
    study = "hinge"
    varies_per_member = False  # a choice of function
    fields = {"hinge": (bool, Field(False, description="hinge loss for D and G instead of BCE"))}

    def d_loss(self, b):
        return hinge_d_loss(b.real_logits, b.fake_logits)

    def g_loss(self, b):
        return -b.fake_logits.mean()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
