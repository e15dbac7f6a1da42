import torch

from bench.techniques import Batch
from tests.techniques.conftest import images


def test_feature_matching_loss_is_the_squared_distance_of_mean_d_features(gan_step):
    step = gan_step(**{"techniques.feature_matching": True})
    real, labels = images(16, 1)
    fake, fake_y = images(16, 2)
    info = step.info
    step.D.eval()  # no dropout: both sides of the comparison see the same D
    b = Batch(real=real, fake=fake, real_y=labels, fake_y=fake_y, fake_logits=step.D(fake, fake_y))
    f_real, f_fake = info.d_features(real, labels).mean(0), info.d_features(fake, fake_y).mean(0)
    assert torch.allclose(step.hooks.g_loss(b), (f_real - f_fake).pow(2).sum(), rtol=1e-5)
    # Zero when G reproduces the real batch's features, whatever D's verdict.
    assert step.hooks.g_loss(Batch(real=real, fake=real, real_y=labels, fake_y=labels,
                                    fake_logits=step.D(real, labels))).item() < 1e-10


def test_feature_matching_trains_g(gan_step):
    step = gan_step(**{"techniques.feature_matching": True})
    real, labels = images(16)
    before = [p.clone() for p in step.G.parameters()]
    loss = step.g_step(real, labels)
    assert torch.isfinite(loss) and loss.item() > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, step.G.parameters()))
