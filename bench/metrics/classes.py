"""Class-level metrics from the evaluator's predictions: TARR, per-class accuracy, class coverage."""

from __future__ import annotations

import math

import torch

_F64 = torch.float64


def _labels(pred: torch.Tensor) -> torch.Tensor:
    """Accept class labels (N,) or scores (N, C); return int64 labels."""
    pred = pred.detach()
    if pred.ndim == 2:
        pred = pred.argmax(dim=1)
    return pred.reshape(-1).long()


def class_accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """(num_classes,) float64 fraction correct per target class; NaN for absent classes."""
    pred, target = _labels(pred), _labels(target)
    total = torch.bincount(target, minlength=num_classes)[:num_classes].to(_F64)
    hits = torch.bincount(target[pred == target], minlength=num_classes)[:num_classes].to(_F64)
    return hits / total  # 0/0 -> NaN marks classes with no samples


def geometric_mean(values: torch.Tensor, eps: float = 1e-12) -> float:
    """Geometric mean ignoring NaNs; any value below eps (e.g. a 0% class) gives 0."""
    v = torch.as_tensor(values, dtype=_F64).reshape(-1)
    v = v[~v.isnan()]
    if v.numel() == 0:
        return math.nan
    # A single dead class should sink the score to 0, not yield NaN from log(0).
    if bool((v < eps).any()):
        return 0.0
    return v.log().mean().exp().item()


def tarr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Target accuracy retrieval rate: fraction of samples classified as the requested label."""
    pred, target = _labels(pred), _labels(target)
    if target.numel() == 0:
        return math.nan
    return (pred == target).to(_F64).mean().item()


def class_histogram(pred: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """(num_classes,) int64 counts of predicted labels."""
    counts = torch.bincount(_labels(pred), minlength=num_classes)
    if counts.numel() > num_classes:
        raise ValueError(f"predictions contain labels >= num_classes={num_classes}")
    return counts.long()


def classes_covered(hist: torch.Tensor, min_fraction: float = 0.01) -> int:
    """Number of classes holding >= min_fraction of predictions (a stray one does not count)."""
    h = torch.as_tensor(hist, dtype=_F64)
    total = h.sum()
    if total <= 0:
        return 0
    return int((h / total >= min_fraction).sum().item())


def kl_to_uniform(hist: torch.Tensor) -> float:
    """KL(p_hist || uniform): 0 for a uniform histogram, log(C) for a single class."""
    h = torch.as_tensor(hist, dtype=_F64)
    total = h.sum()
    if total <= 0:
        return math.nan
    p = h / total
    p = p[p > 0]  # 0 * log 0 = 0
    return (p * (p * h.numel()).log()).sum().item()
