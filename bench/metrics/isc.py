"""Inception Score with the evaluator's class probabilities."""

from __future__ import annotations

import torch

_F64 = torch.float64


def inception_score(probs: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split; returns (mean, std) over splits.

    ``probs`` is (N, C) class probabilities from the evaluator classifier.
    """
    probs = probs.detach().to(_F64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {tuple(probs.shape)}")
    n = probs.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, N={n}], got {splits}")
    # Conditional samples arrive class-sorted; without a shuffle each split sees
    # only 2-3 classes, p(y) is peaked and IS collapses towards 1.
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).to(probs.device)
    probs = probs[perm]

    eps = 1e-12  # clamp inside log so zero probabilities contribute 0 * finite = 0
    scores = []
    for part in torch.tensor_split(probs, splits):
        py = part.mean(dim=0, keepdim=True)
        kl = (part * (part.clamp_min(eps).log() - py.clamp_min(eps).log())).sum(dim=1)
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    # Population std, as in the original IS code.
    return s.mean().item(), s.std(unbiased=False).item()
