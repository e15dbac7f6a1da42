import math

import pytest
import torch
from torch import nn

from bench import techniques
from bench.errors import ConfigError
from bench.run_config import all_keys, build_config
from bench.step import Hooks, build_gan


def stack(**kw):
    cfg = build_config(overrides={f"techniques.{k}": v for k, v in kw.items()})
    return Hooks(cfg, techniques.StepInfo(nn.Identity(), nn.Identity(), torch.device("cpu"), 1))


def d_targets(n_real, n_fake, s, seed=None):
    if seed is not None:
        torch.manual_seed(seed)
    return s.d_targets(n_real, n_fake, torch.device("cpu"))


def g_loss(logits, s):
    return s.g_loss(techniques.Batch(real=None, fake=None, fake_logits=logits))


def test_plain_targets():
    real, fake = d_targets(4, 3, stack())
    assert real.tolist() == [1.0] * 4 and fake.tolist() == [0.0] * 3


def test_one_and_two_sided_smoothing():
    real, fake = d_targets(5, 5, stack(real_target=0.9, fake_target=0.1))
    assert torch.allclose(real, torch.full((5,), 0.9)) and torch.allclose(fake, torch.full((5,), 0.1))
    real, fake = d_targets(5, 5, stack(real_target=0.7))
    assert torch.allclose(real, torch.full((5,), 0.7)) and fake.sum() == 0


def test_flip_rate():
    real, fake = d_targets(20000, 20000, stack(flip_prob=0.2), 0)
    assert abs((real == 0).float().mean().item() - 0.2) < 0.02
    assert abs((fake == 1).float().mean().item() - 0.2) < 0.02


def test_flip_happens_before_smoothing():
    # One-sided smoothing must stay one-sided: a flipped real example is trained on the fake target
    # (0), a flipped fake on the smoothed real one (0.9). Smoothing first gave 0.1 and 1.0.
    real, fake = d_targets(4000, 4000, stack(real_target=0.9, flip_prob=0.3), 0)
    for t in (real, fake):
        assert torch.allclose(t.unique(), torch.tensor([0.0, 0.9]))
    assert abs((real == 0).float().mean().item() - 0.3) < 0.03
    # Two-sided: both sides end on {fake_target, real_target}.
    real, fake = d_targets(4000, 4000, stack(real_target=0.9, fake_target=0.1, flip_prob=0.3), 1)
    for t in (real, fake):
        assert torch.allclose(t.unique(), torch.tensor([0.1, 0.9]))


def test_g_losses():
    logits = torch.tensor([0.0])
    assert math.isclose(g_loss(logits, stack()).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(g_loss(logits, stack(g_loss="saturating")).item(), -math.log(2), rel_tol=1e-6)
    # saturating loss has vanishing gradient when D confidently rejects fakes; non-saturating does not
    x = torch.tensor([-8.0], requires_grad=True)
    g_loss(x, stack(g_loss="saturating")).backward()
    sat = x.grad.abs().item()
    x.grad = None
    g_loss(x, stack()).backward()
    assert x.grad.abs().item() > 100 * sat


def test_labels():
    cfg = build_config(overrides={"techniques.real_target": 0.9, "model.g_norm": "virtual",
                                  "techniques.d_steps": 5})
    assert techniques.technique_labels(cfg) == {"ls": "0.9", "vbn": "G", "sched": "5:1"}
    assert techniques.technique_labels(build_config()) == {}


def test_every_label_and_key_comes_from_the_registry():
    # Each technique's keys are settable config keys, and switching one on gives it a label.
    keys = set(all_keys())
    for t in techniques.TECHNIQUES.values():
        assert t.baseline() and set(t.baseline()) <= keys, t.name
        assert t.label(build_config()) is None, t.name  # the defaults are the baseline
    assert techniques.technique_labels(build_config(overrides={"model.d_dropout": 0.5})) == {"drop": "0.5"}
    assert techniques.technique_labels(build_config(overrides={"model.weight_init": False})) == {"init": "off"}
    two_sided = build_config(overrides={"techniques.real_target": 0.9, "techniques.fake_target": 0.1})
    assert techniques.technique_labels(two_sided) == {"ls": "0.9/0.1"}


def test_a_registered_technique_gets_config_keys_and_a_label():
    from pydantic import Field, create_model

    from bench import config

    class Probe(techniques.Technique):
        name = "probe"
        fields = {"probe_strength": (float, Field(0.0, ge=0.0, description="a test technique"))}

    techniques.register(Probe)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            techniques.register(Probe)
        cls = type("Again", (Probe,), {"name": "again"})
        with pytest.raises(ValueError, match="probe_strength"):
            techniques.register(cls)
        Section = create_model("T", __base__=config.Section, **techniques.config_fields("techniques"))
        assert Section(probe_strength=0.5).probe_strength == 0.5
        with pytest.raises(Exception, match="greater than or equal"):
            Section(probe_strength=-1)
    finally:
        del techniques.TECHNIQUES["probe"]


def test_two_techniques_replacing_one_loss_are_refused():
    class Other(techniques.Technique):
        name = "other_g_loss"
        fields = {}

        @classmethod
        def label(cls, cfg):
            return "on"

        def g_loss(self, b):
            return b.fake_logits.mean()

    techniques.register(Other)
    try:
        with pytest.raises(ConfigError, match="g_loss and other_g_loss both replace G's loss"):
            build_config(overrides={"techniques.g_loss": "saturating"})
        build_config()  # one replacement alone is fine
    finally:
        del techniques.TECHNIQUES["other_g_loss"]


@pytest.mark.parametrize("name,overrides", [("dcgan-report000", {}), ("cgan-conv", {}), ("cgan-mlp", {}),
                                            ("vanilla", {}), ("dcgan", {"model.d_norm": "virtual"})])
def test_d_features_are_the_logit_layers_input(name, overrides):
    cfg = build_config(overrides={"model.name": name, "model.width": 16, "model.vbn_ref_size": 4, **overrides})
    gan = build_gan(cfg)
    if overrides:
        gan.discriminator.set_reference(torch.rand(4, 1, 28, 28), None)
    x, y = torch.rand(3, 1, 28, 28) * 2 - 1, torch.tensor([1, 2, 3])
    gan.discriminator.eval()
    info = techniques.StepInfo(gan.generator, gan.discriminator, torch.device("cpu"), 1)
    feats = info.d_features(x, y)
    _, _, head = techniques.last_linear(gan.discriminator)
    assert feats.shape == (3, head.in_features)
    with torch.no_grad():
        torch.testing.assert_close(head(feats).flatten(), gan.discriminator(x, y))  # the logits come from them


def test_the_technique_table_lists_every_technique_and_key():
    """docs/techniques.md's table (tests/test_docs.py checks the page holds it): a row per technique."""
    table = techniques.markdown_table()
    for t in techniques.TECHNIQUES.values():
        assert f"| `{t.key()}` |" in table and all(f"`{t.section}.{k}`" in table for k in t.fields)
