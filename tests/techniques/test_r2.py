import torch

from bench.techniques import Batch
from tests.techniques.conftest import images


def test_r2_penalty_is_half_gamma_times_the_squared_gradient_norm_on_fakes_only(linear_stack):
    # D(x) = sum(x^2) has gradient 2x: the penalty is gamma / 2 * 4 * mean ||x_fake||^2, whatever the real batch.
    class Square(torch.nn.Module):
        def forward(self, x, y=None):
            return x.flatten(1).pow(2).sum(1)

    s = linear_stack(torch.zeros(1), r2_gamma=2.0)
    s.info.D = Square()
    fake, _ = images(4, 1)
    r2 = s.items[0]
    penalties = [r2.d_penalty(Batch(images(4, seed)[0], fake, None, None, torch.zeros(4))) for seed in (2, 3)]
    assert torch.equal(penalties[0], penalties[1])  # the real images play no part
    expected = 2.0 / 2 * (2 * fake).flatten(1).pow(2).sum(1).mean()
    assert torch.allclose(penalties[0], expected, rtol=1e-5)


def test_r1_and_r2_add_up(linear_stack):
    w = torch.linspace(-0.1, 0.1, 28 * 28)
    real, _ = images(8, 1)
    fake, _ = images(8, 2)

    def d_loss(**keys):
        s = linear_stack(w, **keys)
        D = s.info.D
        return s.d_loss(Batch(real, fake, None, None, D(fake), D(real), torch.ones(8), torch.zeros(8)))

    both, plain = d_loss(r1_gamma=10.0, r2_gamma=4.0), d_loss()
    assert torch.allclose(both - plain, (10.0 + 4.0) / 2 * w.pow(2).sum(), rtol=1e-5)
