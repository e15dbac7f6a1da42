import pytest
import torch

from bench.errors import ConfigError
from bench.run_config import build_config
from bench.techniques import Batch
from tests.techniques.conftest import images


def test_gradient_penalty_of_a_linear_critic_is_closed_form(linear_stack):
    # D(x) = <w, x> has gradient w at every interpolate: the penalty is lambda * (|w| - 1)^2.
    w = torch.full((1 * 28 * 28,), 0.1)
    s = linear_stack(w, wgan_gp_lambda=10.0)
    real, _ = images(8, 1)
    fake, _ = images(8, 2)
    D = s.info.D
    b = Batch(real=real, fake=fake, real_logits=D(real), fake_logits=D(fake))
    expected = (D(fake).mean() - D(real).mean()) + 10.0 * (w.norm() - 1) ** 2
    assert torch.allclose(s.d_loss(b), expected, rtol=1e-5)
    # The penalty's gradient reaches the critic's weights (it pulls |w| towards 1).
    s.d_loss(b).backward()
    assert D.w.grad.norm() > 0
    assert s.g_loss(Batch(real=None, fake=None, fake_logits=torch.tensor([1.0, 2.0]))).item() == -1.5


def test_wgan_gp_refuses_batch_norm_in_the_critic():
    with pytest.raises(ConfigError, match="d_norm"):
        build_config(overrides={"techniques.wgan_gp_lambda": 10.0, "model.d_norm": "batch"})
    build_config(overrides={"techniques.wgan_gp_lambda": 10.0, "model.d_norm": "none"})


def test_wgan_gp_step_on_a_conditional_gan(gan_step):
    step = gan_step(**{"techniques.wgan_gp_lambda": 10.0})
    real, labels = images(16)
    stats = step.d_step(real, labels)
    assert torch.isfinite(stats).all() and stats[0].item() > 0  # the penalty dominates at init: |grad| << 1
