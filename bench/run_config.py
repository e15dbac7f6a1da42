"""The run configuration: `bench.config`'s static sections plus the keys every registered technique declares.

A `RunConfig` is everything one training needs. It is built from defaults, an optional TOML/JSON file
and `--set key=value` overrides; pydantic validates every field, and `ConfigError` carries the bad
field and value so the CLI can exit 2 before anything runs. Inside the package the config is trusted.

This module sits above the registries it reads (`bench.techniques` for the keys and their combination
checks, `bench.models` for the model names), so `bench.config` stays free of torch and plug-ins.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError, create_model, model_validator

from bench import techniques
from bench.config import ModelConfig, RunConfigBase, Section, flatten, format_error
from bench.errors import ConfigError
from bench.models import MODELS

# The techniques' own keys: architectural ones (norms, dropout, init) sit with the model's keys,
# the others in their own section.
ModelSection = create_model("ModelSection", __base__=ModelConfig, __doc__="The GAN's family and architecture.",
                            **techniques.config_fields("model"))
TechniquesSection = create_model("TechniquesSection", __base__=Section, __doc__="Training techniques (tricks).",
                                 **techniques.config_fields("techniques"))


class RunConfig(RunConfigBase):
    model: ModelSection = ModelSection()
    techniques: TechniquesSection = TechniquesSection()

    @model_validator(mode="after")
    def _model_known(self) -> "RunConfig":
        if self.model.name not in MODELS:
            raise ValueError(f"model.name={self.model.name!r}: unknown model; choose one of {sorted(MODELS)}")
        return self

    @model_validator(mode="after")
    def _techniques_combine(self) -> "RunConfig":
        techniques.check(self)
        return self


def all_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key, e.g. `techniques.real_target`."""
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += all_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def check_key(key: str) -> str:
    """Normalise `a/b` to `a.b` and reject unknown keys with a did-you-mean hint."""
    key = key.replace("/", ".")
    known = all_keys()
    if key not in known:
        hint = difflib.get_close_matches(key, known, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"unknown config key {key!r}{extra}")
    return key


def set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = check_key(key).split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def build_config(base: dict | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- base tree (a file's content) <- dotted overrides; validated."""
    tree: dict = json.loads(json.dumps(base or {}))  # deep copy, plain types
    for key, value in (overrides or {}).items():
        set_dotted(tree, key, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_error(e)) from None


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    return build_config(cfg.model_dump(), overrides)


def params(cfg: RunConfig) -> dict[str, Any]:
    """The whole config as flat `section/key` params (the form MLflow shows)."""
    return flatten(cfg.model_dump())


# ---------------------------------------------------------------------------
# Sizes against the data and this machine's memory

_PIXELS = 28 * 28
_CDIST_BLOCK = 1024  # rows of one block of k-NN distances (bench.metrics.manifold.BLOCK)


def check_sizes(cfg: RunConfig, available: int | None = None) -> None:
    """Every size key fits the data it draws from and this machine's memory, before anything runs.

    The training subset and one iteration's batches, the real test images (`eval.n_real`), a
    self-trained evaluator's subset and VBN's reference batch are checked against the split they come
    from (DataError); then `memory_needed` against `available` bytes (default: the memory free now),
    a ConfigError naming the key that takes the most and the largest value that fits.
    """
    from bench.data import DATASETS, check_fit
    from bench.errors import DataError

    spec = DATASETS[cfg.data.dataset]
    check_fit(cfg.data.dataset, cfg.data.train_subset, cfg.optim.batch_size, cfg.techniques.d_steps)
    if cfg.eval.n_real > spec.test_size:
        raise DataError(f"eval.n_real={cfg.eval.n_real}: larger than the {spec.name} test split "
                        f"({spec.test_size} images)")
    subset = cfg.eval.evaluator_subset
    if cfg.eval.trains_evaluator and subset is not None and subset > spec.train_size:
        raise DataError(f"eval.evaluator_subset={subset}: larger than the {spec.name} train split "
                        f"({spec.train_size} images)")
    nets = net_sizes(cfg)
    n_train = cfg.data.train_subset or spec.train_size
    if (nets.g_ref or nets.d_ref) and cfg.model.vbn_ref_size > n_train:
        what = f"data.train_subset={n_train}" if cfg.data.train_subset else f"the {spec.name} train split"
        raise DataError(f"model.vbn_ref_size={cfg.model.vbn_ref_size}: the reference batch is drawn from the "
                        f"training set, but {what} holds {n_train} images; use a smaller reference or a larger subset")
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    _check_memory(cfg, nets, available)


@dataclass(frozen=True)
class NetSizes:
    """What the nets cost per batch row: the elements their layers with weights output (kept for the
    backward pass), per row of G and of D; the reference rows VBN adds to each of their passes; their
    parameters; the evaluator's features and classes per image."""

    g_row: int
    d_row: int
    g_ref: int
    d_ref: int
    params: int
    features: int
    classes: int


def net_sizes(cfg: RunConfig) -> NetSizes:
    """G, D and the evaluator's net built on PyTorch's meta device (shapes only: nothing is allocated),
    one row passed through each."""
    import torch

    from bench.models import LeNet, build_nets, uses_reference

    def per_row(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> tuple[int, int]:
        ref = cfg.model.vbn_ref_size if uses_reference(net) else 0
        if ref:
            net.set_reference(x.expand(ref, *x.shape[1:]), None if y is None else y.expand(ref))
        count = [0]

        def hook(_module, _inputs, output) -> None:
            count[0] += output.numel() if isinstance(output, torch.Tensor) else 0
        weighted = [m for m in net.modules() if next(m.parameters(recurse=False), None) is not None]
        handles = [m.register_forward_hook(hook) for m in weighted]
        try:
            net.eval()(x, y)  # eval mode: batch norm takes a single row; the shapes are training's
        finally:
            for h in handles:
                h.remove()
        return count[0] // (1 + ref), ref

    with torch.device("meta"):
        gan = build_nets(cfg.model)
        y = torch.zeros(1, dtype=torch.int64) if gan.conditional else None
        g_row, g_ref = per_row(gan.generator, torch.empty(1, cfg.model.latent_dim), y)
        d_row, d_ref = per_row(gan.discriminator, torch.empty(1, 1, 28, 28), y)
        features = LeNet().features(torch.empty(1, 1, 28, 28)).shape[1]
    params = sum(p.numel() for net in (gan.generator, gan.discriminator) for p in net.parameters())
    return NetSizes(g_row, d_row, g_ref, d_ref, params, features, gan.num_classes)


def memory_needed(cfg: RunConfig, nets: NetSizes | None = None, batch_size: int | None = None,
                  n_generated: int | None = None) -> dict[str, int]:
    """A lower bound of the bytes one run holds at once, by part: `data` (both splits as uint8), `training`
    (weights, gradients and Adam's two moments in fp32; one iteration's layer outputs, kept for the
    backward pass: D on a real and a fake batch, or G and D on one), `evaluation` (the generated and real
    test images, their features and class probabilities, one block of k-NN distances).

    Allocator overhead, temporaries and what PyTorch itself holds come on top: a run needs more.
    `batch_size` / `n_generated` (the images one evaluation generates) replace the config's.
    """
    from bench.data import DATASETS

    nets = nets or net_sizes(cfg)
    spec = DATASETS[cfg.data.dataset]
    batch = cfg.optim.batch_size if batch_size is None else batch_size
    act = 2 if cfg.train.amp else 4  # bf16 autocast halves the layer outputs where it runs
    d_pass, g_pass = nets.d_row * (batch + nets.d_ref), nets.g_row * (batch + nets.g_ref)
    n_gen = generated(cfg, nets.classes) if n_generated is None else n_generated
    per_image = 4 * (_PIXELS + nets.features + nets.classes)
    return {"data": (spec.train_size + spec.test_size) * (_PIXELS + 8),
            "training": 16 * nets.params + act * max(2 * d_pass, g_pass + d_pass),
            "evaluation": (n_gen + cfg.eval.n_real) * per_image
                          + 4 * min(_CDIST_BLOCK, n_gen) * max(n_gen, cfg.eval.n_real)}


def generated(cfg: RunConfig, classes: int = 10) -> int:
    """Images one evaluation generates: n_per_class per class (conditional models), else n_samples."""
    return cfg.eval.n_per_class * classes if MODELS[cfg.model.name].conditional else cfg.eval.n_samples


def _check_memory(cfg: RunConfig, nets: NetSizes, available: int) -> None:
    import torch

    parts = memory_needed(cfg, nets)
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        parts = {"data": parts["data"]}  # the nets and the evaluation live in GPU memory, not read here
    total = sum(parts.values())
    if total <= available:
        return
    if "training" not in parts:
        raise ConfigError(f"data.dataset={cfg.data.dataset!r}: its splits need at least {_size(total)} of memory, "
                          f"but {_size(available)} is available")
    if parts["training"] >= parts["evaluation"]:
        key, value, smallest = "optim.batch_size", cfg.optim.batch_size, 2
        need = lambda v: memory_needed(cfg, nets, batch_size=v)  # noqa: E731
    else:
        conditional = MODELS[cfg.model.name].conditional
        key = "eval.n_per_class" if conditional else "eval.n_samples"
        value, smallest = (cfg.eval.n_per_class, 2) if conditional else (cfg.eval.n_samples, 20)
        need = lambda v: memory_needed(cfg, nets, n_generated=v * (nets.classes if conditional else 1))  # noqa: E731
    largest = _largest(lambda v: sum(need(v).values()) <= available, smallest, value)
    hint = f"use {key} <= {largest}" if largest else "free memory or use a smaller model"
    shares = ", ".join(f"{part} {_size(n)}" for part, n in parts.items())
    raise ConfigError(f"{key}={value}: the run needs at least {_size(total)} of memory ({shares}), but "
                      f"{_size(available)} is available; {hint}")


def _largest(fits, low: int, high: int) -> int | None:
    """The largest v in [low, high) with fits(v), fits being monotone; None when not even `low` fits."""
    if not fits(low):
        return None
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def _size(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB"
