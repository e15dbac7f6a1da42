import torch

from bench.techniques import Batch
from tests.techniques.conftest import images


def test_r1_and_r2_add_up(linear_stack):
    w = torch.linspace(-0.1, 0.1, 28 * 28)
    real, _ = images(8, 1)
    fake, _ = images(8, 2)

    def d_loss(**keys):
        s = linear_stack(w, **keys)
        D = s.info.D
        return s.d_loss(Batch(real=real, fake=fake, real_logits=D(real), fake_logits=D(fake), real_t=torch.ones(8),
                                fake_t=torch.zeros(8)))

    both, plain = d_loss(r1_gamma=10.0, r2_gamma=4.0), d_loss()
    assert torch.allclose(both - plain, (10.0 + 4.0) / 2 * w.pow(2).sum(), rtol=1e-5)
