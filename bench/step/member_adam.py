"""Adam for parameters stacked along a leading member dimension: K models' weights in one tensor each.

A grouped step trains K members whose parameters are stacked, shape (K, ...). Each member keeps its
own learning rate and betas, given as tensors of shape (K,); the update is torch.optim.Adam's,
broadcast over the member dimension, so member k's slice moves exactly as a separate Adam with
member k's hyperparameters would move it (the test compares it with K separate Adams). The step
count and the hyperparameters live on the device, so a step never syncs with the host.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class MemberAdam(torch.optim.Optimizer):
    def __init__(self, params: Iterable[torch.Tensor], lr: torch.Tensor, betas: tuple[torch.Tensor, torch.Tensor],
                 eps: float = 1e-8):
        params = list(params)
        k = lr.shape[0]
        if lr.ndim != 1 or any(b.shape != (k,) for b in betas):
            raise ValueError(f"lr and betas must be per-member tensors of one shape (K,), got {tuple(lr.shape)} and "
                             f"{[tuple(b.shape) for b in betas]}")
        bad = [tuple(p.shape) for p in params if p.ndim == 0 or p.shape[0] != k]
        if bad:
            raise ValueError(f"every parameter must be stacked along a first dimension of {k} members, got {bad}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        for p in params:  # made now, not at the first step: a member's checkpoint may be loaded into it first
            self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                             "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                             "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                shape = (-1,) + (1,) * (p.ndim - 1)  # the member dimension broadcast over the rest
                b1, b2, lr_k = beta1.view(shape), beta2.view(shape), lr.view(shape)
                g, m, v = p.grad, state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                m.lerp_(g, 1 - b1)
                v.mul_(b2).add_((1 - b2) * g * g)
                bias_correction1 = 1 - b1 ** state["step"]
                bias_correction2_sqrt = (1 - b2 ** state["step"]).sqrt()
                denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
                p.sub_(lr_k / bias_correction1 * m / denom)
        return loss
