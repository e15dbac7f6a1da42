import math

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.metrics import (
    BinaryAccuracy,
    FeatureMoments,
    class_accuracy,
    class_histogram,
    classes_covered,
    fid_from_features,
    frechet_distance,
    geometric_mean,
    inception_score,
    kl_to_uniform,
    tarr,
)


def _sorted_one_hot(per_class=100, c=10):
    labels = torch.arange(c).repeat_interleave(per_class)  # class-sorted, like conditional samples
    return torch.nn.functional.one_hot(labels, c).double()


def _split_is(part):
    """Reference IS of one split (no shuffling), in numpy."""
    p = part.numpy()
    py = p.mean(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(p) - np.log(py)), 0.0).sum(1)
    return float(np.exp(kl.mean()))


# ---------------------------------------------------------------------------- IS


def test_is_uniform_one_hot_is_num_classes():
    probs = _sorted_one_hot()
    mean, std = inception_score(probs, splits=1)
    assert mean == pytest.approx(10.0, abs=1e-6)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_is_shuffle_matters_for_class_sorted_input():
    probs = _sorted_one_hot()
    # Unshuffled 10 splits of class-sorted rows: each split holds one class -> IS 1.
    naive = [_split_is(part) for part in torch.tensor_split(probs, 10)]
    assert np.mean(naive) == pytest.approx(1.0, abs=1e-9)
    # Shuffled splits see ~all classes; a random split of 100 cannot be exactly
    # uniform, so IS is a bit below 10 (expected ~9.5), but nowhere near 1.
    mean, std = inception_score(probs, splits=10, seed=0)
    assert 9.0 < mean <= 10.0 + 1e-9
    assert std < 0.5
    # Our per-split numbers match the numpy reference after the same permutation.
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    ref = [_split_is(part) for part in torch.tensor_split(probs[perm], 10)]
    assert mean == pytest.approx(np.mean(ref), rel=1e-12)
    assert std == pytest.approx(np.std(ref), rel=1e-9)


def test_is_seed_deterministic():
    probs = torch.softmax(torch.randn(500, 10, generator=torch.Generator().manual_seed(1)) * 3, 1)
    assert inception_score(probs, 5, seed=3) == inception_score(probs, 5, seed=3)
    assert inception_score(probs, 5, seed=3) != inception_score(probs, 5, seed=4)


def test_is_constant_predictions_is_one():
    probs = torch.zeros(300, 10)
    probs[:, 4] = 1.0  # zero probabilities elsewhere must not produce NaN
    mean, std = inception_score(probs, splits=3)
    assert mean == pytest.approx(1.0, abs=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)
    mean, _ = inception_score(torch.full((50, 10), 0.1), splits=5)
    assert mean == pytest.approx(1.0, abs=1e-9)


def test_is_splits_validation():
    with pytest.raises(ValueError):
        inception_score(torch.full((5, 10), 0.1), splits=6)


# --------------------------------------------------------------------------- FID


def _scipy_fid(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_identical_is_zero():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(fid_from_features(x, x)) < 1e-6


def test_fid_matches_scipy_reference():
    rng = np.random.default_rng(0)
    d = 16
    a1, a2 = rng.normal(size=(d, d)), rng.normal(size=(d, d)) * 0.5
    x = rng.normal(size=(500, d)) @ a1 + 1.0
    y = rng.normal(size=(500, d)) @ a2 - 0.5
    ref = _scipy_fid(x, y)
    assert ref > 1.0
    got = fid_from_features(torch.from_numpy(x), torch.from_numpy(y))
    assert got == pytest.approx(ref, rel=1e-5)
    # float32 input is promoted to float64 internally
    got32 = fid_from_features(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    assert got32 == pytest.approx(ref, rel=1e-4)


def test_fid_rank_deficient_is_finite():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 64, generator=g, dtype=torch.float64)
    y = torch.randn(20, 64, generator=g, dtype=torch.float64) + 0.3
    fd = fid_from_features(x, y)
    assert math.isfinite(fd) and fd >= 0
    assert fd > 1.0  # different sets are really far apart
    same = fid_from_features(x, x)
    assert math.isfinite(same) and 0 <= same < 1e-6


def test_frechet_distance_gaussians_closed_form():
    # Diagonal covariances: tr sqrt(s1 s2) = sum sqrt(a_i b_i).
    a, b = torch.tensor([1.0, 4.0, 0.0]), torch.tensor([9.0, 1.0, 2.0])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = 5.0 + a.sum() + b.sum() - 2 * (a * b).sqrt().sum()
    got = frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected.item(), rel=1e-12)


def test_feature_moments_batched_matches_numpy():
    rng = np.random.default_rng(1)
    # Large offset: checks the accumulation does not cancel catastrophically.
    x = rng.normal(size=(257, 8)) @ rng.normal(size=(8, 8)) + 1e6
    fm = FeatureMoments()
    for chunk in np.array_split(x, 5):
        fm.update(torch.from_numpy(chunk))
    mu, sigma = fm.compute()
    assert fm.n == 257
    assert mu.dtype == torch.float64 and sigma.shape == (8, 8)
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-10)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x, rowvar=False), rtol=1e-7, atol=1e-9)
    fm.reset()
    assert fm.n == 0
    with pytest.raises(ValueError):
        fm.compute()


# ------------------------------------------------------- classification metrics


def test_class_accuracy_tarr_geomean():
    target = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 1, 0, 2, 2])
    acc = class_accuracy(pred, target, num_classes=4)
    assert acc.dtype == torch.float64 and acc.shape == (4,)
    np.testing.assert_allclose(acc[:3].numpy(), [0.5, 0.75, 1.0])
    assert torch.isnan(acc[3])  # no samples of class 3
    assert geometric_mean(acc) == pytest.approx((0.5 * 0.75 * 1.0) ** (1 / 3))
    assert tarr(pred, target) == pytest.approx(6 / 8)
    # scores (N, C) are argmaxed
    scores = torch.nn.functional.one_hot(pred, 4).float()
    assert tarr(scores, target) == pytest.approx(6 / 8)


def test_geomean_zero_class_gives_zero():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 0, 0])  # class 1 never retrieved
    acc = class_accuracy(pred, target, num_classes=2)
    g = geometric_mean(acc)
    assert g == 0.0 and not math.isnan(g)
    assert geometric_mean(torch.tensor([0.25, 1.0, float("nan")])) == pytest.approx(0.5)


def test_histogram_coverage_kl():
    pred = torch.cat([torch.full((500,), 3), torch.full((499,), 7), torch.tensor([1])])
    hist = class_histogram(pred, 10)
    assert hist.dtype == torch.int64
    assert hist.tolist() == [0, 1, 0, 500, 0, 0, 0, 499, 0, 0]
    assert classes_covered(hist) == 2  # the single stray "1" is not coverage
    assert classes_covered(hist, min_fraction=0.0005) == 3
    uniform = class_histogram(torch.arange(10).repeat(7), 10)
    assert classes_covered(uniform) == 10
    assert kl_to_uniform(uniform) == pytest.approx(0.0, abs=1e-12)
    one = class_histogram(torch.full((50,), 2), 10)
    assert kl_to_uniform(one) == pytest.approx(math.log(10), rel=1e-12)
    assert kl_to_uniform(hist) == pytest.approx(
        sum(p * math.log(p * 10) for p in (0.001, 0.5, 0.499)), rel=1e-12
    )
    with pytest.raises(ValueError):
        class_histogram(torch.tensor([10]), 10)


def test_binary_accuracy():
    ba = BinaryAccuracy()
    ba.update(torch.tensor([2.0, -1.0, 0.0]), real=True)  # 0 is not "real"
    ba.update(torch.tensor([[3.0]]), real=True)
    ba.update(torch.tensor([-2.0, 1.0]), real=False)
    out = ba.compute()
    assert out["acc_real"] == pytest.approx(2 / 4)
    assert out["acc_fake"] == pytest.approx(1 / 2)
    sig = torch.sigmoid
    assert out["mean_real"] == pytest.approx(sig(torch.tensor([2.0, -1.0, 0.0, 3.0])).mean().item())
    assert out["mean_fake"] == pytest.approx(sig(torch.tensor([-2.0, 1.0])).mean().item())
    assert all(isinstance(v, float) for v in out.values())
    ba.reset()
    ba.update(torch.tensor([1.0]), real=True)
    out = ba.compute()
    assert out["acc_real"] == 1.0 and math.isnan(out["acc_fake"]) and math.isnan(out["mean_fake"])
