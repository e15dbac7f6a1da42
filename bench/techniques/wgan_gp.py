"""WGAN-GP: the Wasserstein critic loss with a gradient penalty on interpolates (Gulrajani et al. 2017)."""

from __future__ import annotations

import torch
from pydantic import Field

from bench.techniques import Technique, register


@register
class WganGp(Technique):
    """Wasserstein loss, D(G(z)) - D(x) for D (the critic) and -D(G(z)) for G, with the penalty
    lambda * (||grad D(x_hat)|| - 1)^2 on random interpolates x_hat of real and fake images
    (Gulrajani et al. 2017), which keeps the critic close to 1-Lipschitz.

    The paper's critic has no batch norm (it would couple the per-example gradients): refused with
    `model.d_norm = "batch"`. Its 5:1 schedule and Adam(0, 0.9) are separate keys
    (`techniques.d_steps`, `optim.beta1_d` ...), left to the study.
    """

    name = "wgan_gp"
    label_key = "wgan-gp"
    paper = "Gulrajani et al. 2017"
    study = "wgan-gp"
    fields = {"wgan_gp_lambda": (float, Field(0.0, ge=0.0, le=1000.0,
                                              description="WGAN-GP: gradient penalty weight (0: off; paper: 10)"))}

    @classmethod
    def check(cls, cfg):
        if cls.active(cfg) and cfg.model.d_norm == "batch":
            raise ValueError("techniques.wgan_gp_lambda > 0 with model.d_norm = 'batch': the gradient penalty "
                             "is per example, batch norm couples examples; set model.d_norm to 'none'")

    def d_loss(self, b):
        return wasserstein_d_loss(b.real_logits, b.fake_logits)

    def d_penalty(self, b):
        return self.values.wgan_gp_lambda * gradient_penalty(self.info.D, b.real, b.fake, b.real_y, b.fake_y)

    def g_loss(self, b):
        return -b.fake_logits.mean()


def wasserstein_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The critic's loss, D(G(z)) - D(x) on average."""
    return fake_logits.mean() - real_logits.mean()


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor, real_y, fake_y) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat = eps * real + (1 - eps) * fake, eps ~ U(0, 1) per example.

    A conditional D sees the real labels with the interpolates (the common choice for conditional WGAN-GP).
    """
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = D(x_hat, real_y if real_y is not None else fake_y)
    (grad,) = torch.autograd.grad(out.float().sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).float().norm(dim=1) - 1) ** 2).mean()
