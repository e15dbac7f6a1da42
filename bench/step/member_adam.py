"""Adam for parameters stacked along a leading member dimension: K models' weights in one tensor each.

A grouped step trains K members whose parameters are stacked, shape (K, ...). Each member keeps its
own learning rate and betas. The state is stacked as the parameters are, and member k's slices are
updated by torch's own Adam kernel (`torch.optim.adam.adam`, fused where the member's Adam is fused)
with member k's hyperparameters, so a member moves exactly as a separate Adam would move it (the test
compares it with K separate Adams). One kernel call per member, not one broadcast over all members:
on a 2-core CPU the broadcast form's temporaries made the group's optimizer steps 8x slower than K
fused steps (torch.profiler, report 002's CGAN, K = 9, 5 iterations: 1.6 s against 0.19 s). The step
counts live on the device, and on CUDA the update is capturable, so a step never syncs with the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.optim.adam import adam


class MemberAdam(torch.optim.Optimizer):
    def __init__(self, params: Iterable[torch.Tensor], lr: Sequence[float], betas: Sequence[tuple[float, float]],
                 eps: float = 1e-8, fused: bool | None = None, foreach: bool | None = None, capturable: bool = False):
        params = list(params)
        k = len(lr)
        if len(betas) != k:
            raise ValueError(f"lr and betas must give one value per member, got {k} rates and {len(betas)} betas")
        bad = [tuple(p.shape) for p in params if p.ndim == 0 or p.shape[0] != k]
        if bad:
            raise ValueError(f"every parameter must be stacked along a first dimension of {k} members, got {bad}")
        super().__init__(params, {"lr": list(lr), "betas": list(betas), "eps": eps, "fused": fused,
                                  "foreach": foreach, "capturable": capturable, "live": [True] * k})
        for p in params:  # made now, not at the first step: a member's checkpoint may be loaded into it first
            self.state[p] = {"step": torch.zeros(k, dtype=torch.float32, device=p.device),
                             "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                             "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}

    def stop(self, member: int) -> None:
        """Member `member` is no longer updated (its slices and state stay as they are)."""
        for group in self.param_groups:
            group["live"][member] = False

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            states = [self.state[p] for p in params]
            for k, (lr, (beta1, beta2), live) in enumerate(zip(group["lr"], group["betas"], group["live"])):
                if not live:
                    continue
                adam([p[k] for p in params], [p.grad[k] for p in params], [s["exp_avg"][k] for s in states],
                     [s["exp_avg_sq"][k] for s in states], [], [s["step"][k] for s in states],
                     fused=group["fused"], foreach=group["foreach"], capturable=group["capturable"],
                     amsgrad=False, beta1=beta1, beta2=beta2, lr=lr, weight_decay=0.0, eps=group["eps"],
                     maximize=False)
        return loss
