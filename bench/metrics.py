"""GAN evaluation metrics: pure tensor functions plus small accumulators.

Accumulators follow the torchmetrics shape (``update`` per batch, ``compute`` at
the end, ``reset``) without depending on torchmetrics. State lives on the device
of the first ``update`` and is only synchronised with the host in ``compute``.
All sums are float64 so long evaluations do not drift.
"""

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


# --------------------------------------------------------------------------- IS


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


class InceptionScore:
    """Accumulates probabilities (N x C is small) and computes IS at the end."""

    def __init__(self, splits: int = 10, seed: int = 0):
        self.splits, self.seed = splits, seed
        self.reset()

    def reset(self) -> None:
        self._probs: list[torch.Tensor] = []

    def update(self, probs: torch.Tensor) -> None:
        self._probs.append(probs.detach().to(_F64))

    def compute(self) -> tuple[float, float]:
        if not self._probs:
            raise ValueError("InceptionScore.compute() called before update()")
        return inception_score(torch.cat(self._probs), self.splits, self.seed)


# -------------------------------------------------------------------------- FID


class FeatureMoments:
    """Running mean and unbiased covariance of (B, D) features, in float64."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self._shift = self._sum = self._outer = None

    def update(self, features: torch.Tensor) -> None:
        x = features.detach().to(_F64).reshape(features.shape[0], -1)
        if x.shape[0] == 0:
            return
        if self._shift is None:
            # Sums are taken around the first batch's mean: the sum-of-outer-products
            # formula cancels catastrophically when |mean| >> std (e.g. post-ReLU features).
            self._shift = x.mean(dim=0)
            d = x.shape[1]
            self._sum = torch.zeros(d, dtype=_F64, device=x.device)
            self._outer = torch.zeros(d, d, dtype=_F64, device=x.device)
        x = x.to(self._shift.device) - self._shift
        self._sum += x.sum(dim=0)
        self._outer += x.T @ x
        self.n += x.shape[0]  # host int from the shape: no device sync

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, have {self.n}")
        m = self._sum / self.n
        sigma = (self._outer - self.n * torch.outer(m, m)) / (self.n - 1)
        return m + self._shift, (sigma + sigma.T) / 2


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1-mu2||^2 + tr(s1) + tr(s2) - 2 tr(sqrt(s1 s2)), in float64, clamped >= 0."""
    mu1 = torch.as_tensor(mu1, dtype=_F64)
    dev = mu1.device
    mu2, sigma1, sigma2 = (torch.as_tensor(t, dtype=_F64).to(dev) for t in (mu2, sigma1, sigma2))
    # tr sqrt(s1 s2) = tr sqrt(sqrt(s1) s2 sqrt(s1)); the latter is symmetric PSD, so
    # eigh + clamping stays real and NaN-free even for rank-deficient (N < D) covariances,
    # where scipy.linalg.sqrtm returns complex/NaN garbage.
    r1 = _sqrt_psd(sigma1)
    m = r1 @ sigma2 @ r1
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    fd = diff @ diff + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    return max(fd.item(), 0.0)


def fid_from_features(feats1: torch.Tensor, feats2: torch.Tensor) -> float:
    a, b = FeatureMoments(), FeatureMoments()
    a.update(feats1)
    b.update(feats2)
    return frechet_distance(*a.compute(), *b.compute())


class FrechetDistance:
    """FID accumulator: ``update(features, real=True/False)``, ``compute() -> float``."""

    def __init__(self):
        self.real, self.fake = FeatureMoments(), FeatureMoments()

    def reset(self) -> None:
        self.real.reset()
        self.fake.reset()

    def update(self, features: torch.Tensor, real: bool) -> None:
        (self.real if real else self.fake).update(features)

    def compute(self) -> float:
        return frechet_distance(*self.real.compute(), *self.fake.compute())


# -------------------------------------------------------- class-conditional metrics


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


class ClassAccuracy:
    """Per-class accuracy of the evaluator on conditional samples."""

    def __init__(self, num_classes: int = 10):
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self._total = self._hits = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = _labels(pred), _labels(target)
        if self._total is None:
            self._total = torch.zeros(self.num_classes, dtype=_F64, device=target.device)
            self._hits = torch.zeros_like(self._total)
        target = target.to(self._total.device)
        # index_add_ has a fixed output size, unlike bincount, so no host sync on CUDA.
        self._total.index_add_(0, target, torch.ones_like(target, dtype=_F64))
        self._hits.index_add_(0, target, (pred.to(target.device) == target).to(_F64))

    def compute(self) -> dict:
        if self._total is None:
            raise ValueError("ClassAccuracy.compute() called before update()")
        total, hits = self._total.cpu(), self._hits.cpu()
        acc = hits / total
        return {
            "tarr": (hits.sum() / total.sum()).item(),
            "class_acc": acc,
            "geomean": geometric_mean(acc),
        }


class BinaryAccuracy:
    """Discriminator accuracy and mean D(x), D(G(z)); logit > 0 means "real"."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        # per side: [sample count (host int), correct (device f64), sum sigmoid (device f64)]
        self._n = {True: 0, False: 0}
        self._correct: dict[bool, torch.Tensor | float] = {True: 0.0, False: 0.0}
        self._prob: dict[bool, torch.Tensor | float] = {True: 0.0, False: 0.0}

    def update(self, logits: torch.Tensor, real: bool) -> None:
        x = logits.detach().to(_F64).reshape(-1)
        real = bool(real)
        correct = (x > 0) if real else (x <= 0)
        self._n[real] += x.numel()
        self._correct[real] = self._correct[real] + correct.to(_F64).sum()
        self._prob[real] = self._prob[real] + torch.sigmoid(x).sum()

    def compute(self) -> dict:
        out = {}
        for real, name in ((True, "real"), (False, "fake")):
            n = self._n[real]
            out[f"acc_{name}"] = float(self._correct[real]) / n if n else math.nan
            out[f"mean_{name}"] = float(self._prob[real]) / n if n else math.nan
        return out
