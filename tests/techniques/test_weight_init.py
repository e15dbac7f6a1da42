import torch
from torch import nn

from bench.run_config import build_config
from bench.step import build_gan


def test_dcgan_init():
    gan = build_gan(build_config(overrides={"model.d_norm": "batch"}))
    convs = [m for net in (gan.generator, gan.discriminator) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and m.weight.numel() > 10_000]
    assert len(convs) >= 6
    for m in convs:
        assert 0.018 < m.weight.std().item() < 0.022
        assert m.bias is None or (m.bias == 0).all()
    gammas = torch.cat([m.weight for m in gan.discriminator.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(gammas.mean().item() - 1) < 0.01 and 0.01 < gammas.std().item() < 0.03

    plain = build_gan(build_config(overrides={"model.weight_init": False}))
    assert plain.discriminator.head[1].weight.std().item() < 0.01  # PyTorch default: ~1/sqrt(3 * 6272)
