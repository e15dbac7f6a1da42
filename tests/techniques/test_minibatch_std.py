import torch

from bench.run_config import build_config
from bench.step import build_gan
from bench.techniques import last_linear
from bench.techniques.minibatch_std import MinibatchStdLinear
from tests.techniques.conftest import images


def logit_of_first(D, x):
    return D(x)[0].item()


def test_d_sees_the_batch_spread_only_with_minibatch_std():
    torch.manual_seed(0)
    x, _ = images(8)
    varied = x.clone()
    varied[1:] = images(7, 1)[0]
    same = x.clone()
    same[1:] = x[:1]  # a collapsed batch: every image equal to the first
    for on in (False, True):
        D = build_gan(build_config(overrides={"model.d_minibatch_std": on})).discriminator.eval()
        if on:
            with torch.no_grad():
                last_linear(D)[2].weight[:, -1] = 1.0  # give the new input weight (initialised to 0)
        changed = logit_of_first(D, varied) != logit_of_first(D, same)
        assert changed == on


def test_minibatch_std_keeps_weights_and_separates_real_and_fake_passes(gan_step):
    torch.manual_seed(0)
    cfg = build_config(overrides={"model.d_minibatch_std": True})
    plain = build_gan(build_config())
    torch.manual_seed(0)
    wrapped = build_gan(cfg)
    head = last_linear(wrapped.discriminator)[2]
    assert isinstance(head, MinibatchStdLinear) and head.in_features == last_linear(plain.discriminator)[2].in_features + 1
    assert torch.equal(head.weight[:, :-1], last_linear(plain.discriminator)[2].weight) and head.weight[0, -1] == 0
    step = gan_step(**{"model.d_minibatch_std": True, "train.joint_d": True})
    assert step.settings.joint_d is False  # batch statistics: real and fake need their own passes
    assert torch.isfinite(step.d_step(*images(8))).all()
