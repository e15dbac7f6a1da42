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
    from bench.errors import ConfigError
    with pytest.raises(ConfigError, match="ema_decay"):
        build_config(overrides={"techniques.ema_decay": 1.0})


def _bn_generator() -> torch.nn.Module:
    """A net with parameters and buffers of both kinds (batch norm's running statistics and int64 step count)."""
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))


def _ema_of(G: torch.nn.Module, decay: float):
    from types import SimpleNamespace

    from bench.techniques import StepInfo
    from bench.techniques.ema import Ema

    return Ema(SimpleNamespace(ema_decay=decay), StepInfo(G, torch.nn.Identity(), torch.device("cpu"), 1))


def test_ema_equals_torchs_averaged_model_with_buffers_and_reads_and_writes_its_checkpoints():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    G = _bn_generator()
    ema = _ema_of(G, 0.9)
    reference = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(5):
        G(torch.randn(16, 4))  # train mode: the running statistics and step count move
        with torch.no_grad():
            for p in G.parameters():
                p.add_(torch.randn_like(p))
        ema.after_step("d")  # only G's steps count
        ema.after_step("g")
        reference.update_parameters(G)
    mine, theirs = ema.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys() and mine["n_averaged"].device.type == "cpu"
    for k in theirs:
        torch.testing.assert_close(mine[k], theirs[k], msg=k)
    assert ema.eval_generator() is not G and isinstance(ema.eval_generator(), torch.nn.Sequential)

    # An AveragedModel's checkpoint loads (and goes on averaging the same way), and the other way round.
    old = _ema_of(_bn_generator(), 0.9)
    old.load_state_dict(theirs)
    assert old.n_averaged == 5
    for k, v in old.state_dict().items():
        torch.testing.assert_close(v, theirs[k], msg=k)
    AveragedModel(_bn_generator(), use_buffers=True).load_state_dict(mine)
