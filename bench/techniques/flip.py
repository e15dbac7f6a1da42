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
        return flip(real_t, self.values.flip_prob), flip(fake_t, self.values.flip_prob)


def flip(labels: torch.Tensor, p: float) -> torch.Tensor:
    """Each 0/1 label swapped with probability p."""
    return torch.where(torch.rand(labels.shape, device=labels.device) < p, 1.0 - labels, labels)
