import pytest
import torch

from bench.techniques import Batch
from tests.techniques.conftest import images


def test_r1_penalty_is_half_gamma_times_the_squared_gradient_norm_on_real_data(linear_stack):
    w = torch.linspace(-0.1, 0.1, 28 * 28)
    s = linear_stack(w, r1_gamma=10.0)
    real, _ = images(8, 1)
    fake, _ = images(8, 2)
    D = s.info.D
    b = Batch(real=real, fake=fake, real_logits=D(real), fake_logits=D(fake), real_t=torch.ones(8),
              fake_t=torch.zeros(8))
    plain = linear_stack(w).d_loss(b)
    assert torch.allclose(s.d_loss(b) - plain, 10.0 / 2 * w.pow(2).sum(), rtol=1e-5)


@pytest.mark.parametrize("key,on_real", [("r1_gamma", True), ("r2_gamma", False)])
def test_r1_acts_on_real_images_only_and_r2_on_fakes_only(linear_stack, key, on_real):
    # A D whose gradient differs by input: D(x) = sum(x^2) has gradient 2x, so the penalty is
    # gamma / 2 * 4 * mean ||x||^2 over its own side (real for R1, fake for R2), whatever the other side.
    class Square(torch.nn.Module):
        def forward(self, x, y=None):
            return x.flatten(1).pow(2).sum(1)

    s = linear_stack(torch.zeros(1), **{key: 2.0})
    s.info.D = Square()
    own, _ = images(4, 1)

    def batch(seed):
        other = images(4, seed)[0]
        return (Batch(real=own, fake=other, fake_logits=torch.zeros(4)) if on_real
                else Batch(real=other, fake=own, fake_logits=torch.zeros(4)))
    penalties = [s.items[0].d_penalty(batch(seed)) for seed in (2, 3)]
    assert torch.equal(penalties[0], penalties[1])  # the other side plays no part
    assert torch.allclose(penalties[0], 2.0 / 2 * (2 * own).flatten(1).pow(2).sum(1).mean(), rtol=1e-5)


def test_r1_step_trains(gan_step):
    step = gan_step(**{"techniques.r1_gamma": 10.0})
    real, labels = images(16)
    before = [p.clone() for p in step.D.parameters()]
    assert torch.isfinite(step.d_step(real, labels)).all()
    assert any(not torch.equal(a, p) for a, p in zip(before, step.D.parameters()))
