import torch

from bench.techniques import Batch
from tests.techniques.conftest import images


def test_r1_penalty_is_half_gamma_times_the_squared_gradient_norm_on_real_data(linear_stack):
    w = torch.linspace(-0.1, 0.1, 28 * 28)
    s = linear_stack(w, r1_gamma=10.0)
    real, _ = images(8, 1)
    fake, _ = images(8, 2)
    D = s.info.D
    b = Batch(real, fake, None, None, D(fake), D(real), torch.ones(8), torch.zeros(8))
    plain = linear_stack(w).d_loss(Batch(real, fake, None, None, D(fake), D(real), torch.ones(8), torch.zeros(8)))
    assert torch.allclose(s.d_loss(b) - plain, 10.0 / 2 * w.pow(2).sum(), rtol=1e-5)


def test_r1_acts_on_real_images_only(linear_stack):
    # A D whose gradient differs by input: D(x) = sum(x^2) has gradient 2x, so the penalty is
    # 4 * mean ||x_real||^2 and does not depend on the fakes.
    class Square(torch.nn.Module):
        def forward(self, x, y=None):
            return x.flatten(1).pow(2).sum(1)

    s = linear_stack(torch.zeros(1), r1_gamma=2.0)
    s.info.D = Square()
    real, _ = images(4, 1)
    r1 = s.items[0]
    penalties = [r1.d_penalty(Batch(real, images(4, seed)[0], None, None, torch.zeros(4))) for seed in (2, 3)]
    assert torch.equal(penalties[0], penalties[1])  # the fakes play no part
    assert torch.allclose(penalties[0], 2.0 / 2 * 4 * real.flatten(1).pow(2).sum(1).mean(), rtol=1e-5)


def test_r1_step_trains(gan_step):
    step = gan_step(**{"techniques.r1_gamma": 10.0})
    real, labels = images(16)
    before = [p.clone() for p in step.D.parameters()]
    assert torch.isfinite(step.d_step(real, labels)).all()
    assert any(not torch.equal(a, p) for a, p in zip(before, step.D.parameters()))
