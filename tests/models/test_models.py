"""Model families, the registry, virtual batch norm and the evaluator's LeNet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.errors import ConfigError
from bench.run_config import ModelSection as ModelConfig  # the model section with the techniques' keys
from bench.run_config import build_config
from bench.models import (MODELS, LeNet, VirtualBatchNorm, WithReference, build_nets, count_params, sample_latent,
                          summary, uses_reference)
from bench.models.common import UnconditionalNet

SMALL = dict(latent_dim=8, embed_dim=4, width=16, hidden=32, mlp_blocks=2)
B = 5


def small_cfg(**overrides) -> ModelConfig:
    return ModelConfig(**{**SMALL, **overrides})


def inputs(cfg: ModelConfig, n: int, conditional: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cfg.latent_dim, generator=gen)
    x = torch.rand(n, 1, 28, 28, generator=gen) * 2 - 1
    y = torch.randint(10, (n,), generator=gen) if conditional else None
    return z, x, y


def set_references(gan, cfg: ModelConfig, n_ref: int = 4) -> None:
    z, x, y = inputs(cfg, n_ref, gan.conditional, seed=123)
    if uses_reference(gan.generator):
        gan.generator.set_reference(z, y)
    if uses_reference(gan.discriminator):
        gan.discriminator.set_reference(x, y)


# ---------------------------------------------------------------------------
# Registry and report 000


def test_registry_has_every_family():
    assert {"dcgan-report000", "dcgan", "cgan-mlp", "cgan-conv", "vanilla"} <= set(MODELS)
    assert MODELS["cgan-mlp"].conditional and MODELS["cgan-conv"].conditional
    assert not MODELS["dcgan"].conditional and not MODELS["vanilla"].conditional
    assert all(spec.description for spec in MODELS.values())


def test_run_config_validates_model_name():
    assert build_config(overrides={"model.name": "cgan-conv"}).model.name == "cgan-conv"
    with pytest.raises(ConfigError, match="unknown model"):
        build_config(overrides={"model.name": "no-such-gan"})
    with pytest.raises(KeyError, match="unknown model"):
        build_nets(ModelConfig(name="no-such-gan"))


@pytest.mark.parametrize("weight_init", [True, False])
def test_report000_exact_parameter_counts(weight_init):
    gan = build_nets(ModelConfig(weight_init=weight_init))  # the defaults are report 000's
    assert count_params(gan.generator) == 377_121
    assert count_params(gan.discriminator) == 246_497


def test_report000_honours_norms_dropout_and_latent():
    gan = build_nets(ModelConfig(g_norm="none", d_norm="batch", d_dropout=0.0, latent_dim=10))
    g_bn = sum(isinstance(m, nn.BatchNorm2d) for m in gan.generator.modules())
    d_bn = sum(isinstance(m, nn.BatchNorm2d) for m in gan.discriminator.modules())
    assert (g_bn, d_bn) == (0, 3)  # D: a norm after each conv but the first
    assert not any(isinstance(m, nn.Dropout2d) for m in gan.discriminator.modules())
    assert count_params(gan.generator) == 377_121 - 224 - 90 * 3136  # no BN, 90 fewer latent inputs
    assert gan.generator(torch.randn(2, 10)).shape == (2, 1, 28, 28)


# ---------------------------------------------------------------------------
# Every model x a few configurations

CONFIGS = {
    "d2-batch": dict(g_depth=2, d_depth=2, g_norm="batch", d_norm="none", d_dropout=0.25),
    "d4-virtual": dict(g_depth=4, d_depth=4, g_norm="virtual", d_norm="virtual", d_dropout=0.0),
    "d3-mixed": dict(g_depth=3, d_depth=2, g_norm="none", d_norm="batch", d_dropout=0.5),
}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_shapes_range_and_backprop(name, config):
    cfg = small_cfg(name=name, **CONFIGS[config])
    gan = build_nets(cfg)
    assert uses_reference(gan.generator) == (cfg.g_norm == "virtual")
    set_references(gan, cfg)
    z, x, y = inputs(cfg, B, gan.conditional)

    fake = gan.generator(z, y)
    assert fake.shape == (B, 1, 28, 28)
    assert fake.min() >= -1 and fake.max() <= 1
    logits_real, logits_fake = gan.discriminator(x, y), gan.discriminator(fake, y)
    assert logits_real.shape == logits_fake.shape == (B,)

    (logits_fake.mean() - logits_real.mean()).backward()
    for net in (gan.generator, gan.discriminator):
        for pname, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in gan.generator.parameters())


def conv_layers(net: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in net.modules() if type(m) is kind]


@pytest.mark.parametrize("name", ["dcgan", "cgan-conv"])
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_conv_depth_counts_layers_and_widths_are_per_net(name, depth):
    cfg = small_cfg(name=name, g_depth=depth, d_depth=6 - depth, g_width=32, d_width=16)
    gan = build_nets(cfg)
    g_convs = conv_layers(gan.generator, nn.ConvTranspose2d)
    d_convs = conv_layers(gan.discriminator, nn.Conv2d)
    assert (len(g_convs), len(d_convs)) == (depth, cfg.d_depth)
    label_channel = 1 if gan.conditional else 0  # cgan-conv: the 7x7 / 28x28 label map
    assert g_convs[0].in_channels == 32 + label_channel and max(m.out_channels for m in d_convs) == 16
    assert g_convs[-1].out_channels == 1 and d_convs[0].in_channels == 1 + label_channel
    # Two stride-2 layers resize 7 <-> 28; every other layer is stride 1.
    assert [m.stride[0] for m in g_convs].count(2) == [m.stride[0] for m in d_convs].count(2) == 2


@pytest.mark.parametrize("name", ["dcgan", "cgan-conv"])
@pytest.mark.parametrize("net", ["g", "d"])
def test_depth_adds_capacity_to_that_net_only(name, net):
    """A deeper D is a stronger D (and G is untouched); likewise for G."""
    counts = []
    for depth in (2, 3, 4):
        gan = build_nets(ModelConfig(name=name, **{f"{net}_depth": depth}))
        counts.append((count_params(gan.generator), count_params(gan.discriminator)))
    grown = [c[0 if net == "g" else 1] for c in counts]
    other = {c[1 if net == "g" else 0] for c in counts}
    assert len(other) == 1
    # Each extra layer is a whole 3x3 conv at the widest width (64), not a thinner one: the old
    # halving widths grew D by only 4,480 and 1,088 parameters (21,953 / 26,433 / 27,521).
    assert grown[1] - grown[0] >= 9 * 64 ** 2 and grown[2] - grown[1] >= 9 * 64 ** 2


@pytest.mark.parametrize("name", ["dcgan", "cgan-conv"])
def test_g_width_changes_g_only(name):
    counts = [(count_params(g.generator), count_params(g.discriminator))
              for g in (build_nets(ModelConfig(name=name, g_width=w)) for w in (128, 256, 512))]
    assert counts[0][0] < counts[1][0] < counts[2][0]
    assert len({c[1] for c in counts}) == 1
    d_only = build_nets(ModelConfig(name=name, d_width=128))
    assert count_params(d_only.generator) == count_params(build_nets(ModelConfig(name=name)).generator)


def test_report001_generator_is_conv128_conv64():
    gan = build_nets(ModelConfig(name="dcgan", g_depth=3, g_width=128))
    assert [m.out_channels for m in conv_layers(gan.generator, nn.ConvTranspose2d)] == [128, 64, 1]


def test_mlp_blocks_are_dense_leakyrelu_norm_blocks():
    for blocks in (1, 3, 5):
        gan = build_nets(ModelConfig(name="cgan-mlp", mlp_blocks=blocks))
        linears = conv_layers(gan.generator, nn.Linear)
        assert len(linears) == blocks + 1  # the blocks, then the 784-pixel output layer
        assert len(conv_layers(gan.generator, nn.BatchNorm1d)) == blocks


# ---------------------------------------------------------------------------
# The latent prior


@pytest.mark.parametrize("prior,norm", [("normal", 10.0), ("uniform", (100 / 3) ** 0.5)])
def test_latent_prior_statistics(prior, norm):
    z = sample_latent(20_000, 100, prior, generator=torch.Generator().manual_seed(0))
    assert z.shape == (20_000, 100)
    assert abs(z.norm(dim=1).mean().item() - norm) < 0.05 * norm
    if prior == "uniform":
        assert z.min() >= -1 and z.max() <= 1 and abs(z.mean().item()) < 0.01
        assert abs(z.var().item() - 1 / 3) < 0.01  # U(-1, 1): report 000's norms 5.4-5.8 at dim 100
    else:
        assert z.abs().max() > 3  # unbounded tails


def test_latent_draws_are_seeded_and_checked():
    a = sample_latent(4, 3, "uniform", generator=torch.Generator().manual_seed(1))
    b = sample_latent(4, 3, "uniform", generator=torch.Generator().manual_seed(1), device="cpu")
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="latent prior"):
        sample_latent(2, 3, "cauchy")


def test_gan_carries_its_prior_and_the_evaluator_feeds_it():
    from bench.evaluator import generate

    gan = build_nets(small_cfg(name="dcgan", latent_prior="uniform", latent_dim=100))
    assert gan.latent_prior == "uniform"
    seen = []
    gan.generator = lambda z, y=None: seen.append(z) or z  # G that returns its noise
    generate(gan, 300, 100, "cpu", torch.Generator().manual_seed(0))
    z = torch.cat(seen)
    assert z.min() >= -1 and z.max() <= 1 and z.norm(dim=1).mean() < 7


@pytest.mark.parametrize("name", ["cgan-mlp", "cgan-conv"])
def test_conditional_models_require_labels_and_use_them(name):
    cfg = small_cfg(name=name, d_dropout=0.0)
    gan = build_nets(cfg)
    gan.generator.eval()
    z, x, _ = inputs(cfg, 2, conditional=False)
    with pytest.raises(ValueError, match="labels"):
        gan.generator(z)
    with pytest.raises(ValueError, match="labels"):
        gan.discriminator(x)
    zeros, ones = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    assert not torch.allclose(gan.generator(z, zeros), gan.generator(z, ones))
    assert not torch.allclose(gan.discriminator(x, zeros), gan.discriminator(x, ones))


def test_unconditional_models_ignore_labels():
    gan = build_nets(small_cfg(name="dcgan"))
    gan.generator.eval()
    z = torch.randn(3, 8)
    torch.testing.assert_close(gan.generator(z), gan.generator(z, torch.arange(3)))


# ---------------------------------------------------------------------------
# Virtual batch norm


def vbn_layer(features: int, n_ref: int) -> VirtualBatchNorm:
    vbn = VirtualBatchNorm(features)
    vbn.n_ref = n_ref
    with torch.no_grad():  # non-trivial affine parameters
        vbn.weight.uniform_(0.5, 1.5)
        vbn.bias.uniform_(-0.5, 0.5)
    return vbn


@pytest.mark.parametrize("shape", [(6,), (3, 5, 5)])
def test_vbn_example_output_independent_of_its_batch(shape):
    torch.manual_seed(0)
    n_ref = 8
    ref, batch = torch.randn(n_ref, *shape), torch.randn(7, *shape) * 3 + 1
    vbn = vbn_layer(shape[0], n_ref)
    alone = vbn(torch.cat([ref, batch[:1]]))[n_ref:]
    together = vbn(torch.cat([ref, batch]))[n_ref:n_ref + 1]
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)

    # Batch norm, by contrast, depends on the rest of the batch (so this test can fail).
    bn = nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])
    bn_alone = bn(torch.cat([ref, batch[:1]]))[n_ref:]
    bn_together = bn(torch.cat([ref, batch]))[n_ref:n_ref + 1]
    assert not torch.allclose(bn_alone, bn_together, atol=1e-3)


def test_vbn_matches_the_tf_gan_formula():
    torch.manual_seed(1)
    n_ref, c = 4, 3
    x = torch.randn(n_ref + 2, c, 5, 5)
    layer = vbn_layer(c, n_ref)
    out = layer(x)
    ref_mean = x[:n_ref].mean((0, 2, 3))
    ref_sq = x[:n_ref].square().mean((0, 2, 3))
    gamma, beta = layer.weight.view(1, c, 1, 1), layer.bias.view(1, c, 1, 1)
    ref_out = (x[:n_ref] - ref_mean.view(1, c, 1, 1)) / (ref_sq - ref_mean ** 2 + 1e-5).sqrt().view(1, c, 1, 1)
    torch.testing.assert_close(out[:n_ref], ref_out * gamma + beta, atol=1e-5, rtol=1e-5)
    coeff = 1 / (n_ref + 1)
    mean = coeff * x[n_ref:].mean((2, 3)) + (1 - coeff) * ref_mean
    sq = coeff * x[n_ref:].square().mean((2, 3)) + (1 - coeff) * ref_sq
    std = (sq - mean ** 2 + 1e-5).sqrt()
    expected = (x[n_ref:] - mean[..., None, None]) / std[..., None, None] * gamma + beta
    torch.testing.assert_close(out[n_ref:], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["dcgan", "cgan-mlp", "vanilla"])
def test_vbn_network_output_independent_of_its_batch(name):
    cfg = small_cfg(name=name, g_norm="virtual", d_norm="virtual", d_dropout=0.0)
    gan = build_nets(cfg)
    set_references(gan, cfg)
    z, x, y = inputs(cfg, 6, gan.conditional)
    first = slice(0, 1)
    for net, data in ((gan.generator, z), (gan.discriminator, x)):
        alone = net(data[first], None if y is None else y[first])
        together = net(data, y)[first]
        torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)


def test_vbn_statistics_follow_the_current_weights():
    # Linear -> VBN: shifting the Linear's bias shifts the reference activations too, and fresh
    # statistics absorb the shift; statistics cached from an earlier pass would not.
    torch.manual_seed(2)
    net = WithReference(UnconditionalNet(nn.Linear(4, 6), VirtualBatchNorm(6)), conditional=False)
    net.set_reference(torch.randn(16, 4))
    x = torch.randn(3, 4)
    before = net(x)
    with torch.no_grad():
        net.net[0].bias += 5.0
    torch.testing.assert_close(net(x), before, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # ... while a real weight change changes the output
        net.net[0].weight.mul_(torch.rand_like(net.net[0].weight))
    assert not torch.allclose(net(x), before, atol=1e-3)


def test_vbn_gradient_flows_through_reference_statistics():
    n_ref = 4
    x = torch.randn(n_ref + 2, 3, 4, 4, requires_grad=True)
    vbn_layer(3, n_ref)(x)[n_ref:].square().sum().backward()
    assert x.grad[:n_ref].abs().sum() > 0


def test_vbn_without_reference_raises():
    with pytest.raises(RuntimeError, match="reference"):
        VirtualBatchNorm(3)(torch.randn(4, 3))
    gan = build_nets(small_cfg(name="dcgan", g_norm="virtual"))
    assert uses_reference(gan.generator) and not uses_reference(gan.discriminator)
    with pytest.raises(RuntimeError, match="set_reference"):
        gan.generator(torch.randn(2, 8))
    cgan = build_nets(small_cfg(name="cgan-conv", g_norm="virtual"))
    with pytest.raises(ValueError, match="labels"):
        cgan.generator.set_reference(torch.randn(4, 8))  # conditional: labels required


def test_vbn_has_batchnorm_parameters_and_no_buffers():
    vbn, bn = VirtualBatchNorm(12), nn.BatchNorm2d(12)
    assert count_params(vbn) == count_params(bn) == 24
    assert list(vbn.buffers()) == []
    virtual = build_nets(ModelConfig(g_norm="virtual", d_norm="virtual"))
    batch = build_nets(ModelConfig(g_norm="batch", d_norm="batch"))
    assert count_params(virtual.generator) == count_params(batch.generator) == 377_121
    assert count_params(virtual.discriminator) == count_params(batch.discriminator)


def test_vbn_reference_is_saved_and_restored():
    cfg = small_cfg(name="cgan-conv", g_norm="virtual")
    gan = build_nets(cfg)
    set_references(gan, cfg)
    z, _, y = inputs(cfg, 3, conditional=True)
    expected = gan.generator(z, y)
    fresh = build_nets(cfg).generator  # reference never set: the load must bring it
    fresh.load_state_dict(gan.generator.state_dict())
    torch.testing.assert_close(fresh(z, y), expected)


def test_vbn_in_eval_mode_and_bf16():
    cfg = small_cfg(name="dcgan", g_norm="virtual")
    gan = build_nets(cfg)
    set_references(gan, cfg)
    z = torch.randn(2, 8)
    train_out = gan.generator(z)
    torch.testing.assert_close(gan.generator.eval()(z), train_out)  # no running statistics
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = gan.generator(z)
    assert torch.isfinite(low).all() and (low.float() - train_out).abs().max() < 0.1


# ---------------------------------------------------------------------------
# Init, summary, LeNet


def test_summary_lists_layers_and_totals():
    gan = build_nets(ModelConfig())
    text = summary(gan.generator, torch.randn(2, 100))
    assert "Total params: 377,121" in text
    assert "ConvTranspose2d" in text and "(2, 1, 28, 28)" in text and "316,736" in text
    d_text = summary(gan.discriminator, torch.randn(2, 1, 28, 28), None)
    assert "Total params: 246,497" in d_text and "(2,)" in d_text
    assert gan.generator.training  # mode restored

    cfg = small_cfg(name="cgan-conv", g_norm="virtual")
    cgan = build_nets(cfg)
    set_references(cgan, cfg)
    c_text = summary(cgan.generator, torch.randn(2, 8), torch.tensor([1, 2]))
    assert f"Total params: {count_params(cgan.generator):,}" in c_text and "VirtualBatchNorm" in c_text


def test_lenet_shapes():
    net = LeNet(num_classes=10)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    assert net(x).shape == (4, 10)
    assert net.features(x).shape == (4, 128)
    net.eval()
    torch.testing.assert_close(net.head(net.features(x)), net(x))
