"""Precision / recall / density / coverage (bench.metrics.manifold) and per-class FID (bench.metrics.fid)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.metrics import Manifold, class_moments, fid_from_features, knn_radii, per_class_fid, prdc


def _brute_force(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    """The definitions, written out with full distance matrices (as in Naeem et al.'s reference code)."""
    def dists(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(x, k):
        return np.sort(dists(x, x), axis=1)[:, k]  # column 0 is the point itself

    d = dists(real, fake)  # (n_real, n_fake)
    r_real_pr, r_real_dc, r_fake_pr = radii(real, k_pr), radii(real, k_dc), radii(fake, k_pr)
    return {"precision": (d < r_real_pr[:, None]).any(axis=0).mean(),
            "recall": (d < r_fake_pr[None, :]).any(axis=1).mean(),
            "density": (d < r_real_dc[:, None]).sum(axis=0).mean() / k_dc,
            "coverage": (d.min(axis=1) < r_real_dc).mean()}


def test_identical_sets_score_one():
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    out = prdc(x, x.clone())
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    # each real ball (k-th neighbour radius, strict <) holds the point itself and its k-1 nearest: density k/k
    assert out["density"] == pytest.approx(1.0, abs=1e-12)


def test_far_apart_sets_score_zero():
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(200, 8, generator=gen), torch.randn(150, 8, generator=gen) + 100.0
    assert prdc(real, fake) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


@pytest.mark.parametrize("block", [7, 1024])
def test_matches_brute_force_numpy(block):
    """Blocks of 7 rows (many, ragged) and one block give the brute-force values exactly."""
    gen = torch.Generator().manual_seed(2)
    real = torch.randn(61, 5, generator=gen)
    fake = 1.3 * torch.randn(47, 5, generator=gen) + 0.5  # overlapping but different: values strictly in (0, 1)
    want = _brute_force(real.double().numpy(), fake.double().numpy(), 3, 5)
    got = prdc(real, fake, block=block)
    assert all(0.0 < want[k] for k in want) and want["precision"] < 1.0 and want["coverage"] < 1.0
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_other_k_and_cached_manifold_agree_with_brute_force():
    gen = torch.Generator().manual_seed(3)
    real, fake = torch.randn(40, 3, generator=gen), torch.randn(30, 3, generator=gen) * 1.5
    want = _brute_force(real.double().numpy(), fake.double().numpy(), 2, 4)
    cached = Manifold.of(real, (2, 4), block=5)
    assert prdc(cached, fake, k_pr=2, k_dc=4, block=5) == pytest.approx(want, abs=1e-12)
    # a manifold without the radii asked for computes them rather than failing
    assert prdc(Manifold.of(real, (3,)), fake, k_pr=2, k_dc=4) == pytest.approx(want, abs=1e-12)


def test_knn_radii_are_kth_neighbour_distances():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    r = knn_radii(x, (1, 2), block=3)
    assert r[1].tolist() == [1.0, 1.0, 2.0, 3.0] and r[2].tolist() == [3.0, 2.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="k=4 need more than 4 points"):
        knn_radii(x, (4,))


def test_mode_collapse_keeps_precision_and_loses_recall_and_coverage():
    """The point of the split: generated images all near one real cluster are precise but cover little."""
    gen = torch.Generator().manual_seed(4)
    centers = torch.randn(10, 16, generator=gen) * 10
    real = centers.repeat_interleave(100, 0) + torch.randn(1000, 16, generator=gen)
    collapsed = centers[:1] + torch.randn(1000, 16, generator=gen)
    out = prdc(real, collapsed)
    assert out["precision"] > 0.7 and out["recall"] < 0.15 and out["coverage"] < 0.15


def test_per_class_fid_is_fid_within_each_class():
    gen = torch.Generator().manual_seed(5)
    real = torch.randn(90, 4, generator=gen, dtype=torch.float64)
    real_labels = torch.arange(3).repeat_interleave(30)
    fake = torch.randn(60, 4, generator=gen, dtype=torch.float64) + torch.tensor([0.0, 1.0, 0.0, 0.0],
                                                                                 dtype=torch.float64)
    fake_labels = torch.arange(2).repeat_interleave(30)  # class 2 never generated
    per_class = per_class_fid(fake, fake_labels, class_moments(real, real_labels, 3), 3)
    for c in range(2):
        assert per_class[c].item() == pytest.approx(
            fid_from_features(fake[fake_labels == c], real[real_labels == c]), rel=1e-10)
    assert math.isnan(per_class[2].item())
    same = per_class_fid(real, real_labels, class_moments(real, real_labels, 3), 3)
    assert same.abs().max().item() < 1e-8
