import pytest

from bench.config import flatten, parse_value
from bench.errors import ConfigError
from bench.run_config import build_config, check_key, params


def test_defaults_are_report000():
    cfg = build_config()
    assert cfg.model.name == "dcgan-report000"
    assert (cfg.optim.batch_size, cfg.optim.lr, cfg.optim.beta1_g) == (32, 2e-4, 0.5)
    assert (cfg.optim.effective_lr_g, cfg.optim.effective_lr_d) == (2e-4, 2e-4)
    assert cfg.model.latent_prior == "normal"


def test_lr_sets_both_nets_and_lr_g_lr_d_override_it():
    cfg = build_config(overrides={"optim.lr": 2e-3})
    assert (cfg.optim.effective_lr_g, cfg.optim.effective_lr_d) == (2e-3, 2e-3)
    cfg = build_config(overrides={"optim.lr": 2e-3, "optim.lr_d": 1e-4})
    assert (cfg.optim.effective_lr_g, cfg.optim.effective_lr_d) == (2e-3, 1e-4)
    # Old files that set lr_g / lr_d only keep their meaning.
    cfg = build_config({"optim": {"lr_g": 1e-3, "lr_d": 5e-4}})
    assert (cfg.optim.effective_lr_g, cfg.optim.effective_lr_d) == (1e-3, 5e-4)
    # An override left None follows a later change of lr (studies set keys one by one).
    cfg = build_config(overrides={"optim.lr_g": 1e-3})
    cfg.optim.lr = 5e-3
    assert (cfg.optim.effective_lr_g, cfg.optim.effective_lr_d) == (1e-3, 5e-3)


def test_per_net_widths_default_to_width():
    cfg = build_config(overrides={"model.width": 32}).model
    assert (cfg.generator_width, cfg.discriminator_width) == (32, 32)
    cfg = build_config(overrides={"model.width": 32, "model.g_width": 256}).model
    assert (cfg.generator_width, cfg.discriminator_width) == (256, 32)


@pytest.mark.parametrize("key,value,field", [
    ("model.name", "nope", "nope"),
    ("optim.lr_g", -0.1, "optim.lr_g"),
    ("optim.lr", 0, "optim.lr"),
    ("optim.lr_d", 2e12, "optim.lr_d"),
    ("model.latent_prior", "cauchy", "model.latent_prior"),
    ("model.g_width", 2, "model.g_width"),
    ("model.d_width", 4096, "model.d_width"),
    ("model.g_depth", 7, "model.g_depth"),
    ("techniques.real_target", 1.5, "techniques.real_target"),
    ("techniques.d_steps", 0, "techniques.d_steps"),
    ("model.g_norm", "layer", "model.g_norm"),
])
def test_bad_values_name_the_field(key, value, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build_config(overrides={key: value})


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match="did you mean 'techniques.real_target'"):
        check_key("techniques.real_targt")


def test_slash_keys_and_params_roundtrip():
    cfg = build_config(overrides={"techniques/real_target": 0.9, "optim.epochs": 3})
    flat = params(cfg)
    assert flat["techniques/real_target"] == 0.9 and flat["optim/epochs"] == 3
    assert "model/name" in flat and "seed" in flat
    assert build_config(overrides={k.replace("/", "."): v for k, v in flat.items()}) == cfg


def test_flatten_nests_any_depth_with_any_separator():
    assert flatten({"a": {"b": {"c": 1}, "d": 2}, "e": 3}, sep=".") == {"a.b.c": 1, "a.d": 2, "e": 3}
    assert flatten({}) == {}


def test_parse_value():
    assert parse_value("0.9") == 0.9 and parse_value("true") is True
    assert parse_value("none") is None and parse_value("virtual") == "virtual"
    assert parse_value("[1, 2]") == [1, 2]


def test_lr_and_latent_prior_reach_the_training_step():
    from bench.step import build_step
    from tests.conftest import random_data

    def step(overrides):
        cfg = build_config(overrides={"model.name": "dcgan", "model.width": 8, "train.fast": False, **overrides})
        return build_step(cfg, random_data())

    s = step({"optim.lr": 2e-3})
    assert s.opt_g.param_groups[0]["lr"] == s.opt_d.param_groups[0]["lr"] == 2e-3
    s = step({"optim.lr": 2e-3, "optim.lr_g": 1e-4})
    assert (s.opt_g.param_groups[0]["lr"], s.opt_d.param_groups[0]["lr"]) == (1e-4, 2e-3)
    z, _ = step({"model.latent_prior": "uniform"}).noise(2000)
    assert z.min() >= -1 and z.max() <= 1 and abs(z.norm(dim=1).mean().item() - 5.77) < 0.2
    z, _ = step({}).noise(2000)
    assert abs(z.norm(dim=1).mean().item() - 10) < 0.3
