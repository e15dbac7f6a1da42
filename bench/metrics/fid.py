"""Frechet distance between feature distributions (FID), from running float64 moments."""

from __future__ import annotations

import torch

_F64 = torch.float64


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


def feature_moments(feats: torch.Tensor) -> FeatureMoments:
    """The moments of one (N, D) set of features, taken in one update."""
    m = FeatureMoments()
    m.update(feats)
    return m


def fid_from_features(feats1: torch.Tensor, feats2: torch.Tensor) -> float:
    return frechet_distance(*feature_moments(feats1).compute(), *feature_moments(feats2).compute())


def per_class_fid(feats: torch.Tensor, labels: torch.Tensor, real: dict[int, FeatureMoments],
                  num_classes: int) -> torch.Tensor:
    """(num_classes,) float64 FID between the features of class c and `real[c]` (real images of class c).

    NaN for a class with fewer than 2 samples on either side (no covariance). The mean over classes is
    the intra-class FID of class-conditional GANs (e.g. Miyato & Koyama 2018).
    """
    labels = labels.reshape(-1).to(feats.device)
    out = torch.full((num_classes,), float("nan"), dtype=_F64)
    for c in range(num_classes):
        fake = feats[labels == c]
        if fake.shape[0] < 2 or c not in real or real[c].n < 2:
            continue
        out[c] = frechet_distance(*feature_moments(fake).compute(), *real[c].compute())
    return out


def class_moments(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[int, FeatureMoments]:
    """Feature moments per class (e.g. of the real test images, cached once per evaluator)."""
    labels = labels.reshape(-1).to(feats.device)
    return {c: feature_moments(feats[labels == c]) for c in range(num_classes) if bool((labels == c).any())}
