"""Every study file in studies/ runs what it declares, and what its report ran.

Generic over the folder, so a study added later is checked too:

* it validates and every configuration it can run builds (grid: every cell; other samplers:
  each parameter's edge values on the baseline);
* it runs at least 3 seeds per configuration (only `smoke`, a pipeline check, may run one);
* the model it builds matches its declared settings: a conv G / D has `g_depth` / `d_depth`
  (transposed) convs, and a study that varies a capacity key (depth, width, blocks) builds a
  strictly bigger net for a bigger value while the other net stays the same;
* the setup of the report it names first in `reproduces` (batch size, both learning rates,
  batch norm in a conv D, latent prior) holds in its baseline configuration, for every key the
  study does not vary itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from torch import nn

from bench.run_config import build_config, RunConfig
from bench.models import MODELS, build_nets, count_params
from bench.studies.spec import StudySpec, load_study_file

STUDY_DIR = Path(__file__).resolve().parents[2] / "studies"
STUDY_FILES = sorted(STUDY_DIR.glob("*.toml"))
PIPELINE_CHECKS = {"smoke"}  # not a question: allowed a single seed
CONV_MODELS = {"dcgan", "cgan-conv"}

# key varied -> which nets must grow ("g", "d"); the other must not change
CAPACITY_KEYS = {
    "model.g_depth": {"g"}, "model.d_depth": {"d"},
    "model.g_width": {"g"}, "model.d_width": {"d"},
    "model.width": {"g", "d"}, "model.mlp_blocks": {"g", "d"}, "model.hidden": {"g", "d"},
}

# What each report ran (report 000 section 1.2; report 001's DCGAN / CGAN sections; report 002
# sections 1.1 and 2.1), checked where a study names the report first in `reproduces`.
REPORT_SETUPS = {
    "000": {"optim.batch_size": 32, "lr": 2e-4, "model.latent_prior": "uniform", "model.latent_dim": 100},
    "001": {"optim.batch_size": 128, "lr": 0.002, "optim.beta1_g": 0.5, "optim.beta1_d": 0.5,
            "model.latent_prior": "normal", "conv_d_norm": "batch", "widens": "model.g_width"},
    "002": {"optim.batch_size": 128, "lr": 2e-4, "model.latent_prior": "normal", "conv_d_norm": "batch"},
    "004": {"conditional": False},  # its nz sweep is on the unconditional GAN
}


def load(path: Path) -> StudySpec:
    return load_study_file(path)[0]


def baseline_overrides(spec: StudySpec) -> dict:
    """The baseline configuration's overrides: `baseline`, else the first value of each varied key
    (a `variant` replaced by its own overrides)."""
    first = {k: (p.choices[0] if p.choices else p.low) for k, p in spec.search_space.items() if not p.when}
    return spec.config_overrides({**first, **(spec.baseline or {})})


def configs(spec: StudySpec) -> list[RunConfig]:
    if spec.sampler.type == "grid":
        return [build_config(spec.base, spec.config_overrides(cell)) for cell in spec.grid()]
    base = baseline_overrides(spec)
    out = [build_config(spec.base, base)]
    for key, param in spec.space.items():
        if not param.when:
            out += [build_config(spec.base, {**base, key: v}) for v in param.edge_values()]
    return out


def param_counts(cfg: RunConfig) -> tuple[int, int]:
    gan = build_nets(cfg.model)
    return count_params(gan.generator), count_params(gan.discriminator)


def get(cfg: RunConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def first_report(spec: StudySpec) -> str | None:
    found = re.search(r"reports? (00\d)", spec.reproduces or "")
    return found.group(1) if found else None


@pytest.fixture(params=STUDY_FILES, ids=[p.stem for p in STUDY_FILES])
def study(request) -> StudySpec:
    return load(request.param)


def test_the_catalogue_is_here():
    assert len(STUDY_FILES) >= 10


def test_validates_and_every_configuration_builds(study):
    for cfg in configs(study):
        g, d = param_counts(cfg)
        assert g > 0 and d > 0


def test_at_least_three_seeds(study):
    if study.name not in PIPELINE_CHECKS:
        assert study.repeats >= 3, f"{study.name}: repeats = {study.repeats}; a verdict needs >= 3 seeds"


def test_reproduces_names_a_report(study):
    if study.reproduces is not None:
        assert first_report(study), f"{study.name}: reproduces = {study.reproduces!r} names no report 00N"


def test_conv_depth_is_the_number_of_conv_layers(study):
    for cfg in configs(study):
        if cfg.model.name not in CONV_MODELS:
            continue
        gan = build_nets(cfg.model)
        g_convs = sum(type(m) is nn.ConvTranspose2d for m in gan.generator.modules())
        d_convs = sum(type(m) is nn.Conv2d for m in gan.discriminator.modules())
        assert (g_convs, d_convs) == (cfg.model.g_depth, cfg.model.d_depth), cfg.model


def test_capacity_keys_grow_the_net_they_name_only(study):
    varied = [k for k in study.space if k in CAPACITY_KEYS and study.space[k].choices]
    if not varied:
        pytest.skip("varies no capacity key")
    base = baseline_overrides(study)
    for key in varied:
        values = sorted(study.space[key].choices)
        counts = [param_counts(build_config(study.base, {**base, key: v})) for v in values]
        cfg = build_config(study.base, base).model
        for i, net in enumerate("gd"):
            sizes = [c[i] for c in counts]
            if net in CAPACITY_KEYS[key]:
                assert all(a < b for a, b in zip(sizes, sizes[1:])), f"{study.name}: {key} {values} -> {net} {sizes}"
                if key.endswith("_depth") and cfg.name in CONV_MODELS:
                    # each extra layer is a whole 3x3 conv at the net's widest width, not a thin one
                    width = cfg.generator_width if net == "g" else cfg.discriminator_width
                    steps = [b - a for a, b in zip(sizes, sizes[1:])]
                    assert min(steps) >= 9 * width ** 2, f"{study.name}: {key} adds only {steps} to {net}"
            else:
                assert len(set(sizes)) == 1, f"{study.name}: {key} {values} changes {net}: {sizes}"


def test_report_setup_holds_in_the_baseline(study):
    report = first_report(study)
    if report not in REPORT_SETUPS:
        pytest.skip(f"no setup recorded for report {report}")
    cfg = build_config(study.base, baseline_overrides(study))
    for key, want in REPORT_SETUPS[report].items():
        if key == "lr":
            if not {"optim.lr", "optim.lr_g", "optim.lr_d"} & set(study.space):
                assert (cfg.optim.effective_lr_g, cfg.optim.effective_lr_d) == (want, want), study.name
        elif key == "widens":  # report 001 widened G only
            widths = {"model.width", "model.g_width", "model.d_width"} & set(study.space)
            assert widths <= {want}, f"{study.name}: varies {widths}; report {report} varied {want} only"
        elif key == "conditional":
            names = study.space["model.name"].choices if "model.name" in study.space else [cfg.model.name]
            assert {MODELS[n].conditional for n in names} == {want}, f"{study.name}: report {report}'s GAN"
        elif key == "conv_d_norm":
            if cfg.model.name in CONV_MODELS and "model.d_norm" not in study.space:
                assert cfg.model.d_norm == want, f"{study.name}: report {report}'s conv D has batch norm"
        elif key not in study.space:
            assert get(cfg, key) == want, f"{study.name}: {key} = {get(cfg, key)!r}, report {report} ran {want!r}"


# ---------------------------------------------------------------------------
# The checks themselves can fail: a study that says "deeper D" but builds the same D is caught.


def test_capacity_check_catches_a_depth_that_adds_nothing(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\ndescription = "x"\nrepeats = 3\n[base]\nmodel.name = "dcgan"\n'
                    '[space]\n"model.mlp_blocks" = { choices = [1, 3] }\n[sampler]\ntype = "grid"\n'
                    '[objective]\nmetrics = ["eval/is"]\ndirections = ["maximize"]\n')
    with pytest.raises(AssertionError, match="mlp_blocks"):
        test_capacity_keys_grow_the_net_they_name_only(load(path))  # dcgan has no dense blocks


def test_report_check_catches_a_wrong_batch_size(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\ndescription = "x"\nreproduces = "report 002 section 1.2"\nrepeats = 3\n'
                    '[base]\nmodel.name = "dcgan"\nmodel.d_norm = "batch"\noptim.lr = 2e-4\n'
                    '[space]\n"model.d_depth" = { choices = [2, 4] }\n[sampler]\ntype = "grid"\n'
                    '[objective]\nmetrics = ["eval/is"]\ndirections = ["maximize"]\n')
    with pytest.raises(AssertionError, match="batch_size"):
        test_report_setup_holds_in_the_baseline(load(path))


def test_every_model_named_is_registered(study):
    for cfg in configs(study):
        assert cfg.model.name in MODELS


# ---------------------------------------------------------------------------
# Technique studies: every registered technique names a study; those of the tricks the reports
# left out compare the technique with its baseline on both models, each with its own baseline.
TRICKS = {"hinge", "wgan_gp", "r1", "ttur", "spectral_norm", "ema", "instance_noise", "diffaug",
          "feature_matching", "minibatch_std", "historical_averaging"}


def test_every_technique_names_a_study_that_varies_its_keys():
    from bench.techniques import TECHNIQUES

    for t in TECHNIQUES.values():
        if t.study is None:
            continue
        spec = load(STUDY_DIR / f"{t.study}.toml")
        keys = set(spec.space) | {k for v in spec.variants.values() for k in v}
        assert keys & set(t.baseline()), f"{t.name}: studies/{t.study}.toml varies none of {sorted(t.baseline())}"
        if t.name in TRICKS:
            assert spec.reproduces is None and spec.repeats >= 3
            models = {v.get("model.name") for v in spec.variants.values()}
            assert models == {"dcgan-report000", "cgan-conv"}, f"{t.study}: runs on {models}"
            assert spec.baseline == {k: v for k, v in t.baseline().items() if k in spec.space}, t.study
            off = build_config(spec.base, spec.config_overrides({"variant": "dcgan", **spec.baseline}))
            assert t.label(off) is None, f"{t.study}: the baseline does not switch {t.name} off"
