"""R1: a penalty on the gradient of D at real data (Mescheder et al. 2018)."""

from __future__ import annotations

import torch
from pydantic import Field

from bench.techniques import Technique, register


@register
class R1(Technique):
    """R1 regularisation, gamma / 2 * E[||grad_x D(x)||^2] over real images x, added to D's loss
    (Mescheder et al. 2018): D is pushed to be flat on the data, which makes the GAN game converge
    locally where unregularised training oscillates.
    """

    name = "r1"
    paper = "Mescheder et al. 2018"
    study = "r1"
    fields = {"r1_gamma": (float, Field(0.0, ge=0.0, le=1000.0,
                                        description="R1 penalty weight gamma on real data (0: off)"))}

    def d_penalty(self, b):
        return self.values.r1_gamma / 2 * r1_penalty(self.info.D, b.real, b.real_y)


def r1_penalty(D, real: torch.Tensor, real_y) -> torch.Tensor:
    """E[||grad_x D(x)||^2] over the real batch (D's output summed: each example's gradient is its own)."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x, real_y).float().sum(), x, create_graph=True)
    return grad.flatten(1).float().pow(2).sum(dim=1).mean()
