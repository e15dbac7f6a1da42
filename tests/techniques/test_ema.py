import pytest
import torch

from bench.run_config import build_config
from bench.experiment import prepare
from bench.step import build_step
from bench.tracking import NullTracker
from bench.train import Member, train
from tests.techniques.conftest import images


def test_ema_weights_follow_the_exponential_average_of_g(gan_step):
    step = gan_step(**{"techniques.ema_decay": 0.9})
    real, labels = images(16)
    ema = step.hooks.eval_generator()
    for k in range(3):
        step.d_step(real, labels)
        step.g_step(real, labels)
        params = [p.detach().clone() for p in step.G.parameters()]
        # The first update copies G; later ones average: ema <- 0.9 * ema + 0.1 * theta.
        expected = params if k == 0 else [0.9 * e + 0.1 * p for e, p in zip(expected, params)]
    got = list(ema.parameters())
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(got, expected))
    assert any(not torch.allclose(g, p) for g, p in zip(got, step.G.parameters()))


def test_the_averaged_generator_is_the_one_evaluated_and_kept(tiny):
    cfg = build_config(overrides={**tiny, "model.name": "cgan-mlp", "techniques.ema_decay": 0.99})
    data = prepare(cfg, progress=False).train_full.subset(320)
    step = build_step(cfg, data)
    raw = step.gan.generator
    seen = []
    (result,) = train(step, [Member(cfg, data, NullTracker(), evaluate=lambda g: seen.append(g.generator) or {"is": 1.0})],
                      progress=False)
    assert seen and seen[0] is not raw and result.gan.generator is seen[0]
    raw_w, ema_w = next(raw.parameters()), next(result.gan.generator.parameters())
    assert not torch.allclose(raw_w, ema_w)


def test_ema_decay_is_validated():
    from bench.config import ConfigError
    with pytest.raises(ConfigError, match="ema_decay"):
        build_config(overrides={"techniques.ema_decay": 1.0})
