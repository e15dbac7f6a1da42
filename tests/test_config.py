import pytest

from bench.config import ConfigError, build_config, check_key, flatten, parse_value


def test_defaults_are_report000():
    cfg = build_config()
    assert cfg.model.name == "dcgan-report000"
    assert (cfg.optim.batch_size, cfg.optim.lr_g, cfg.optim.beta1_g) == (32, 2e-4, 0.5)


@pytest.mark.parametrize("key,value,field", [
    ("model.name", "nope", "nope"),
    ("optim.lr_g", -0.1, "optim.lr_g"),
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


def test_slash_keys_and_flatten_roundtrip():
    cfg = build_config(overrides={"techniques/real_target": 0.9, "optim.epochs": 3})
    flat = flatten(cfg)
    assert flat["techniques/real_target"] == 0.9 and flat["optim/epochs"] == 3
    assert "model/name" in flat and "seed" in flat


def test_parse_value():
    assert parse_value("0.9") == 0.9 and parse_value("true") is True
    assert parse_value("none") is None and parse_value("virtual") == "virtual"
    assert parse_value("[1, 2]") == [1, 2]
