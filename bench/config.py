"""The typed run configuration's static sections, validated once at the edge.

Data, model architecture, optimizer, evaluation and training settings, as pydantic models: each
field is validated, unknown keys are errors. The techniques add their own keys (they declare them
in their registry), so the whole run configuration, `RunConfig`, is assembled one layer up, in
`bench.run_config`; this module imports no torch, no model and no technique.

Also here: reading config files and `--set` values, and `flatten` (nested dicts to flat keys).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from bench.errors import ConfigError

# torch's generators take seeds up to 2**64 - 1; runs derive seed + 1 and seed + k (k < 100 repeats) from
# theirs, and the seed is stored as a signed 64-bit integer: the largest one all of these hold.
MAX_SEED = 2**63 - 1


class Section(BaseModel):
    # Unknown keys are errors, and assignments are validated too (studies set values one by one).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    dataset: Literal["mnist", "fashion-mnist"] = Field("mnist", description="the dataset trained on and scored")
    root: str | None = Field(None, description="data root (torchvision layout); None: $GANBENCH_DATA_ROOT or ./data")
    train_subset: int | None = Field(None, ge=10, description="class-balanced subset of the train split")
    download: bool = Field(True, description="fetch missing files into the data root (every file's SHA-256 is checked)")


class ModelConfig(Section):
    """The GAN's family and architecture (the techniques' architectural keys are added in `bench.run_config`)."""

    name: str = Field("dcgan-report000", description="model family (`gan-bench models` lists them)")
    latent_dim: int = Field(100, ge=1, le=4096, description="size of G's noise vector z")
    latent_prior: Literal["normal", "uniform"] = Field(
        "normal", description="G's noise prior: normal = N(0, I); uniform = U(-1, 1) per coordinate (report 000)")
    embed_dim: int = Field(10, ge=1, le=1024, description="label-embedding size (conditional models)")
    g_depth: int = Field(3, ge=2, le=4, description="transposed convs (dcgan, cgan-conv) or dense layers (vanilla) "
                                                    "in G; each extra conv adds a stride-1 layer at the widest width")
    d_depth: int = Field(3, ge=2, le=4, description="convs (dcgan, cgan-conv) or dense layers (vanilla) in D; "
                                                    "each extra conv adds a stride-1 layer at the widest width")
    width: int = Field(64, ge=4, le=1024, description="channels of the widest conv layer, G and D")
    g_width: int | None = Field(None, ge=4, le=1024, description="G's widest conv layer alone (None: width)")
    d_width: int | None = Field(None, ge=4, le=1024, description="D's widest conv layer alone (None: width)")
    hidden: int = Field(256, ge=8, le=4096, description="units per dense block (MLP models)")
    mlp_blocks: int = Field(3, ge=1, le=8, description="Dense-LeakyReLU-Norm blocks in G and D (cgan-mlp)")

    @property
    def generator_width(self) -> int:
        """G's widest conv layer: `g_width`, else `width`."""
        return self.g_width if self.g_width is not None else self.width

    @property
    def discriminator_width(self) -> int:
        """D's widest conv layer: `d_width`, else `width`."""
        return self.d_width if self.d_width is not None else self.width


class OptimConfig(Section):
    epochs: int = Field(1, ge=1, le=1000, description="passes over the training set")
    batch_size: int = Field(32, ge=2, le=65536, description="images per step (D and G alike)")
    # No practical upper bound: a huge rate is how a run really diverges (the NaN handling is tested with one).
    lr: float = Field(2e-4, gt=0.0, le=1e12, allow_inf_nan=False, description="Adam learning rate of both nets")
    lr_g: float | None = Field(None, gt=0.0, le=1e12, allow_inf_nan=False,
                               description="G's learning rate alone (None: lr)")
    lr_d: float | None = Field(None, gt=0.0, le=1e12, allow_inf_nan=False,
                               description="D's learning rate alone (None: lr)")
    beta1_g: float = Field(0.5, ge=0.0, lt=1.0, description="G's Adam beta1")
    beta2_g: float = Field(0.999, ge=0.0, lt=1.0, description="G's Adam beta2")
    beta1_d: float = Field(0.5, ge=0.0, lt=1.0, description="D's Adam beta1")
    beta2_d: float = Field(0.999, ge=0.0, lt=1.0, description="D's Adam beta2")

    # Read the learning rates through these: lr_g / lr_d are overrides and may be None.
    @property
    def effective_lr_g(self) -> float:
        return self.lr_g if self.lr_g is not None else self.lr

    @property
    def effective_lr_d(self) -> float:
        return self.lr_d if self.lr_d is not None else self.lr


class EvalConfig(Section):
    n_samples: int = Field(10_000, ge=20, description="generated images for IS / FID / class histogram")
    n_per_class: int = Field(1_000, ge=2, description="generated images per class for TARR")
    splits: int = Field(10, ge=1, le=100, description="IS splits")
    n_real: int = Field(10_000, ge=20, description="real test images for FID and D's test accuracy")
    every: int = Field(1, ge=1, description="evaluate every N epochs (the last epoch always)")
    evaluator: Literal["auto", "shipped", "train"] = Field(
        "auto", description="auto: the evaluator shipped with gan-bench for the dataset (MNIST) unless "
                            "evaluator_epochs / evaluator_subset ask for your own; shipped: only the shipped one; "
                            "train: train your own (cached per dataset and recipe)")
    evaluator_epochs: int | None = Field(None, ge=1, le=100,
                                         description="train your own evaluator for this many epochs (default 12)")
    evaluator_subset: int | None = Field(None, ge=100, description="train your own evaluator on a subset (tests)")

    @model_validator(mode="after")
    def _splits_fit(self) -> "EvalConfig":
        if self.splits > self.n_samples:
            raise ValueError(f"splits ({self.splits}) must be <= n_samples ({self.n_samples})")
        return self

    @model_validator(mode="after")
    def _training_options_need_training(self) -> "EvalConfig":
        if self.evaluator == "shipped" and (self.evaluator_epochs is not None or self.evaluator_subset is not None):
            raise ValueError("evaluator_epochs / evaluator_subset train your own evaluator; they cannot be "
                             "used with evaluator='shipped' (use evaluator='train' or 'auto')")
        return self

    @property
    def trains_evaluator(self) -> bool:
        """Whether this config asks for a self-trained evaluator rather than the shipped one."""
        return self.evaluator == "train" or self.evaluator_epochs is not None or self.evaluator_subset is not None


class TrainConfig(Section):
    log_every: int = Field(20, ge=1, description="steps per logged point of the per-step metrics")
    fast: bool = Field(True, description="the fast path: no per-step host sync, no unused D gradients in the "
                                         "G step, fused Adam (false: the plain textbook step)")
    amp: bool = Field(True, description="bf16 autocast where the device runs bf16 natively (else fp32): about 1.6x "
                                        "on a bf16 CPU, same TARR/IS/FID as fp32 within the seed spread")
    channels_last: bool = Field(True, description="channels-last (NHWC) memory format for G and D")
    joint_d: bool = Field(True, description="with fast: one D pass over real+fake when D has no batch norm")
    collapse_std: float = Field(0.01, ge=0.0, description="stop when generated images vary less than this "
                                                          "(per-pixel std over samples); 0: never")
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off", description="CUDA only (ignored on CPU): torch.compile mode for G and D in the training step")
    cuda_graph: bool = Field(True, description="CUDA only: replay each training iteration from a CUDA graph (with "
                                               "fast and compile off; falls back to eager where capture fails)")
    group_forward: Literal["auto", "vmap", "member_by_member"] = Field(
        "auto", description="how a group of runs trained together runs its members' forward passes: vmap (one batched "
                            "pass) or member by member (a sequential run's kernels, equal to it bit for bit); auto: "
                            "vmap on CUDA, member by member on CPU (measured faster there)")
    sample_steps: list[Annotated[StrictInt, Field(ge=1)]] = Field(
        default_factory=list, max_length=100,
        description="global steps at which the fixed-noise sample grid is logged (image key samples_at_step)")


class RunConfigBase(Section):
    """The sections every run has; `bench.run_config.RunConfig` adds the techniques' keys to `model` and
    `techniques`. Code below the registries (models, techniques) reads a run's config through this type."""

    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds the nets' initialisation, the batches and the noise")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else the CPU")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    techniques: Section = Section()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    train: TrainConfig = TrainConfig()


# ---------------------------------------------------------------------------
# Reading config files and values


def format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        value = e.get("input")
        msg = e["msg"].removeprefix("Value error, ")
        if loc:
            lines.append(f"{loc}={value!r}: {msg}")
        elif isinstance(value, dict):  # a whole-config check: its message names the field, not the tree
            lines.append(msg)
        else:
            lines.append(f"value {value!r}: {msg}")
    return "; ".join(lines)


def parse_value(text: str) -> Any:
    """`--set` values: JSON/TOML literals (numbers, true/false, null, lists), else the raw string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_text(path: Path, what: str) -> str:
    """A file's text as UTF-8, or an error naming the file (and the first bad byte)."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{what} {str(path)!r}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {str(path)!r}: not UTF-8 text (byte 0x{e.object[e.start]:02x} "
                          f"at offset {e.start}); save it as UTF-8") from None


def load_file(path: str | Path) -> dict:
    path = Path(path)
    text = read_text(path, "config file")
    try:
        tree = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r}: {e}") from None
    _check_shape(tree, f"config file {str(path)!r}")
    return tree


def _check_shape(tree: Any, where: str) -> None:
    """The top level is a table and each section (data, model, ...) is a table too."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{where}: the top level must be a table of sections "
                          f"(data, model, ...), got {type(tree).__name__} {tree!r:.60}")
    for name, field in RunConfigBase.model_fields.items():
        ann = field.annotation
        if name in tree and isinstance(ann, type) and issubclass(ann, BaseModel) and not isinstance(tree[name], dict):
            keys = f" with keys such as {', '.join(list(ann.model_fields)[:3])}" if ann.model_fields else ""
            raise ConfigError(f"{where}: {name}={tree[name]!r:.60}: a section must be a table ([{name}]{keys})")




def flatten(tree: Mapping[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested tables as flat keys: {"optim": {"lr": 1}} -> {"optim/lr": 1} (the form MLflow params take)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, sep, f"{prefix}{k}{sep}"))
        else:
            out[prefix + k] = v
    return out
