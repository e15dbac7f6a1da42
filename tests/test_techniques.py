import math

import torch

from bench import techniques
from bench.config import build_config


def tech(**kw):
    return build_config(overrides={f"techniques.{k}": v for k, v in kw.items()}).techniques


def test_plain_targets():
    real, fake = techniques.d_targets(4, 3, tech(), torch.device("cpu"))
    assert real.tolist() == [1.0] * 4 and fake.tolist() == [0.0] * 3


def test_one_and_two_sided_smoothing():
    real, fake = techniques.d_targets(5, 5, tech(real_target=0.9, fake_target=0.1), torch.device("cpu"))
    assert torch.allclose(real, torch.full((5,), 0.9)) and torch.allclose(fake, torch.full((5,), 0.1))
    real, fake = techniques.d_targets(5, 5, tech(real_target=0.7), torch.device("cpu"))
    assert torch.allclose(real, torch.full((5,), 0.7)) and fake.sum() == 0


def test_flip_rate():
    gen = torch.Generator().manual_seed(0)
    real, fake = techniques.d_targets(20000, 20000, tech(flip_prob=0.2), torch.device("cpu"), gen)
    assert abs((real == 0).float().mean().item() - 0.2) < 0.02
    assert abs((fake == 1).float().mean().item() - 0.2) < 0.02


def test_flip_happens_before_smoothing():
    # One-sided smoothing must stay one-sided: a flipped real example is trained on the fake target
    # (0), a flipped fake on the smoothed real one (0.9). Smoothing first gave 0.1 and 1.0.
    gen = torch.Generator().manual_seed(0)
    real, fake = techniques.d_targets(4000, 4000, tech(real_target=0.9, flip_prob=0.3), torch.device("cpu"), gen)
    for t in (real, fake):
        assert torch.allclose(t.unique(), torch.tensor([0.0, 0.9]))
    assert abs((real == 0).float().mean().item() - 0.3) < 0.03
    # Two-sided: both sides end on {fake_target, real_target}.
    real, fake = techniques.d_targets(4000, 4000, tech(real_target=0.9, fake_target=0.1, flip_prob=0.3),
                                      torch.device("cpu"), gen)
    for t in (real, fake):
        assert torch.allclose(t.unique(), torch.tensor([0.1, 0.9]))


def test_g_losses():
    logits = torch.tensor([0.0])
    assert math.isclose(techniques.g_loss(logits, tech()).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(techniques.g_loss(logits, tech(g_loss="saturating")).item(), -math.log(2), rel_tol=1e-6)
    # saturating loss has vanishing gradient when D confidently rejects fakes; non-saturating does not
    x = torch.tensor([-8.0], requires_grad=True)
    techniques.g_loss(x, tech(g_loss="saturating")).backward()
    sat = x.grad.abs().item()
    x.grad = None
    techniques.g_loss(x, tech()).backward()
    assert x.grad.abs().item() > 100 * sat


def test_labels():
    cfg = build_config(overrides={"techniques.real_target": 0.9, "model.g_norm": "virtual",
                                  "techniques.d_steps": 5})
    assert techniques.technique_labels(cfg) == {"ls": "0.9", "vbn": "G", "sched": "5:1"}
    assert techniques.technique_labels(build_config()) == {}
