import torch

from bench import techniques
from bench.techniques import Batch
from tests.techniques.conftest import images


def test_hinge_d_loss_ignores_examples_beyond_the_margin(linear_stack):
    s = linear_stack(torch.zeros(4), hinge=True)
    real = torch.tensor([2.0, 0.5], requires_grad=True)   # 2.0 is past the margin of 1
    fake = torch.tensor([-2.0, 0.0], requires_grad=True)  # so is -2.0
    loss = s.d_loss(Batch(real=None, fake=None, real_logits=real, fake_logits=fake, real_t=torch.ones(2),
                          fake_t=torch.zeros(2)))
    assert loss.item() == torch.tensor((0 + 0.5) / 2 + (0 + 1.0) / 2).item()
    loss.backward()
    assert real.grad.tolist() == [0.0, -0.5] and fake.grad.tolist() == [0.0, 0.5]
    g = s.g_loss(Batch(real=None, fake=None, fake_logits=torch.tensor([1.0, 3.0])))
    assert g.item() == -2.0  # -mean D(G(z))


def test_hinge_trains_and_replaces_the_bce_losses(gan_step):
    step = gan_step(**{"techniques.hinge": True})
    assert [type(t).name for t in step.hooks.items] == ["hinge"]
    real, labels = images(16)
    d_loss = step.d_step(real, labels)[0].item()
    assert 0.0 <= d_loss <= 4.0  # BCE-free: hinge terms are >= 0 and near 2 at the start
    assert torch.isfinite(step.g_step(real, labels))


def test_hinge_and_the_saturating_g_loss_cannot_both_replace_g_loss():
    import pytest

    from bench.errors import ConfigError
    from bench.run_config import build_config
    with pytest.raises(ConfigError, match="replace G's loss"):
        build_config(overrides={"techniques.hinge": True, "techniques.g_loss": "saturating"})
    assert techniques.technique_labels(build_config(overrides={"techniques.hinge": True})) == {"hinge": "on"}
