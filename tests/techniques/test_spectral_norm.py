import torch
from torch import nn

from bench.run_config import build_config
from bench.step import build_gan


def spectral_norms(D: nn.Module) -> list[float]:
    return [torch.linalg.matrix_norm(m.weight.flatten(1).float(), ord=2).item()
            for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_spectral_norm_makes_every_layer_of_d_1_lipschitz():
    torch.manual_seed(0)
    cfg = build_config(overrides={"model.d_spectral_norm": True, "model.weight_init": False})
    D = build_gan(cfg).discriminator.train()
    x = torch.randn(8, 1, 28, 28)
    for _ in range(30):  # one power iteration per forward pass
        D(x)
    sigmas = spectral_norms(D)
    assert len(sigmas) >= 3 and all(abs(s - 1) < 0.05 for s in sigmas), sigmas
    plain = build_gan(build_config(overrides={"model.weight_init": False})).discriminator
    assert max(spectral_norms(plain)) > 1.5  # PyTorch's default init is not normalised


def test_spectral_norm_state_loads_into_a_fresh_build():
    cfg = build_config(overrides={"model.d_spectral_norm": True})
    a, b = build_gan(cfg).discriminator, build_gan(cfg).discriminator
    a(torch.randn(4, 1, 28, 28))
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(a.eval()(x), b.eval()(x))
