"""GAN training techniques as plug-ins: one file per technique, registered by name.

A technique is a `Technique` subclass in its own module of this package. It has two parts.

Its declaration, read from a run's config:

* `fields`: its config keys (pydantic fields) in `section` ("techniques" or "model");
  `bench.run_config` builds the run configuration from them, so validation, `--set`, study spaces
  and MLflow params know every key without a second list;
* `label(cfg)`: its short label for run names and tags (None: off, i.e. the baseline);
  `baseline()` gives the keys that switch it off;
* `check(cfg)`: combinations it refuses (raise ValueError naming the keys);
* `wrap_models(gan, cfg)`: changes to the built nets (layer wrappers, init);
* `varies_per_member`: whether its values may differ between the members a grouped step trains
  together (False when they change the nets' structure: then the members must agree);
  `groupable`: False when it re-parametrizes the nets' weights (spectral norm) or keeps its own
  copy of them (historical averaging), which a grouped step cannot batch: such runs train one by one.

Its kernels: module-level functions with the arithmetic it adds to a step, every hyperparameter
passed in as a plain float, and hooks that call them at the places GAN tricks act. The step calls the hooks (`bench.step.hooks`); it names no technique.

  ====================  ====================================================================
  `d_input(x, real)`    every image D sees, real or fake, in D's and G's steps (noise, augmentation)
  `d_targets(rt, ft)`   D's BCE targets for real and fake
  `d_loss(b)`           replaces D's loss (BCE on the targets); at most one active technique
  `d_penalty(b)`        extra terms added to D's loss (gradient penalties, averaging)
  `g_loss(b)`           replaces G's loss; at most one active technique
  `g_penalty(b)`        extra terms added to G's loss
  `learning_rates(g, d)`  the two Adam learning rates
  `after_step(net)`     after each optimizer step of "d" or "g" (weight averages)
  `eval_generator()`    the generator to evaluate and keep (e.g. averaged weights), or None
  ====================  ====================================================================

A hook reads its hyperparameters from `self.values` (its fields' values, taken from the config once
when the step is built) and the training state from `self.info`; per-run state (averages) lives on
the instance, and `state_dict` / `load_state_dict` carry it through checkpoints.

Adding a technique: a new module here with one `@register` class, plus its line in `_MODULES`.
"""

from __future__ import annotations

import collections
import functools
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from bench.config import RunConfigBase as RunConfig
    from bench.models import GAN


@dataclass(kw_only=True)
class Batch:
    """What the loss hooks see in one step (built by keyword: no two fields can be swapped unseen).
    Logits are float32; images are what D saw (after `d_input`)."""

    real: torch.Tensor
    fake: torch.Tensor
    real_y: torch.Tensor | None = None  # labels: conditional models only
    fake_y: torch.Tensor | None = None
    real_logits: torch.Tensor | None = None  # D step only
    fake_logits: torch.Tensor
    real_t: torch.Tensor | None = None       # D step only: the targets after `d_targets`
    fake_t: torch.Tensor | None = None


@dataclass
class StepInfo:
    """The training state a hook may read: the nets, where training is, and D's features.

    `iteration` counts finished iterations on the device (the step advances it), so reading the
    progress never syncs with the host and a captured graph sees it change.
    """

    G: nn.Module
    D: nn.Module
    device: torch.device
    total_steps: int
    iteration: torch.Tensor = None  # type: ignore[assignment]  # a 0-dim int64 tensor on `device`

    def __post_init__(self) -> None:
        if self.iteration is None:
            self.iteration = torch.zeros((), dtype=torch.int64, device=self.device)

    @property
    def progress(self) -> torch.Tensor:
        """Fraction of training done, 0 at the start and 1 at the end (for annealing): a 0-dim device tensor,
        float64 as a Python float would be (a kernel's arithmetic with it then rounds once, to the images' dtype)."""
        return (self.iteration.double() / max(1, self.total_steps)).clamp(max=1.0)

    def d_features(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """D's penultimate features (the input of its last linear layer) for x, shape (B, F)."""
        return penultimate_features(self.D, x, y)


class Technique:
    """Base class: every hook is a no-op, so a technique overrides only what it changes."""

    name: ClassVar[str]                   # registry key (also the label key unless `label_key`)
    label_key: ClassVar[str | None] = None
    section: ClassVar[str] = "techniques"
    fields: ClassVar[dict[str, tuple[Any, Any]]] = {}  # key -> (annotation, pydantic Field(...))
    paper: ClassVar[str] = ""             # where it comes from
    study: ClassVar[str | None] = None    # the study file comparing it with the baseline
    couples_batch: ClassVar[bool] = False  # D looks across the batch: real and fake need separate passes
    varies_per_member: ClassVar[bool] = True  # its values may differ between the members of one group
    groupable: ClassVar[bool] = True  # False: it re-parametrizes or copies the weights, so runs train one by one
    # True: its hooks read `info.progress`, so what it does at an iteration depends on how long the run is set to
    # train; such a run extended to more epochs is not that run trained longer from the start (not extended).
    anneals: ClassVar[bool] = False

    def __init__(self, values: tuple, info: StepInfo):
        self.values, self.info = values, info

    # -- declaration -------------------------------------------------------------------------

    @classmethod
    def key(cls) -> str:
        return cls.label_key or cls.name

    @classmethod
    def options(cls, cfg: RunConfig) -> Any:
        """The config section holding this technique's keys."""
        return getattr(cfg, cls.section)

    @classmethod
    def read_values(cls, cfg: RunConfig) -> tuple:
        """This technique's hyperparameters in `cfg`, as its hooks read them (`self.values.<key>`, read-only)."""
        return _values_type(cls)(**{k: getattr(cls.options(cfg), k) for k in cls.fields})

    @classmethod
    def label(cls, cfg: RunConfig) -> str | None:
        """Short label when the technique is on (differs from its defaults), else None."""
        values = [getattr(cls.options(cfg), k) for k in cls.fields]
        defaults = [f.default for _, f in cls.fields.values()]
        if values == defaults:
            return None
        return "/".join(_short(v) for v, d in zip(values, defaults) if v != d)

    @classmethod
    def active(cls, cfg: RunConfig) -> bool:
        return cls.label(cfg) is not None

    @classmethod
    def baseline(cls) -> dict[str, Any]:
        """The dotted config keys and values that switch this technique off."""
        return {f"{cls.section}.{k}": f.default for k, (_, f) in cls.fields.items()}

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """Raise ValueError for a combination this technique cannot run with."""

    @classmethod
    def wrap_models(cls, gan: GAN, cfg: RunConfig) -> None:
        """Change the freshly built nets (called for every build from a config, active or not)."""

    # -- training hooks ----------------------------------------------------------------------

    def d_input(self, x: torch.Tensor, real: bool) -> torch.Tensor:
        return x

    def d_targets(self, real_t: torch.Tensor, fake_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return real_t, fake_t

    def d_loss(self, b: Batch) -> torch.Tensor | None:
        return None

    def d_penalty(self, b: Batch) -> torch.Tensor | None:
        return None

    def g_loss(self, b: Batch) -> torch.Tensor | None:
        return None

    def g_penalty(self, b: Batch) -> torch.Tensor | None:
        return None

    def learning_rates(self, lr_g: float, lr_d: float) -> tuple[float, float]:
        return lr_g, lr_d

    def after_step(self, net: str) -> None:
        pass

    def eval_generator(self) -> nn.Module | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _short(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# ---------------------------------------------------------------------------
# The registry

TECHNIQUES: dict[str, type[Technique]] = {}  # registration order is application order


def register(cls: type[Technique]) -> type[Technique]:
    if cls.name in TECHNIQUES:
        raise ValueError(f"technique {cls.name!r} is registered twice")
    keys = {(t.section, k) for t in TECHNIQUES.values() for k in t.fields}
    clash = sorted(k for s, k in keys if s == cls.section and k in cls.fields)
    if clash:
        raise ValueError(f"technique {cls.name!r}: config keys {clash} belong to another technique")
    TECHNIQUES[cls.name] = cls
    return cls


def config_fields(section: str) -> dict[str, tuple[Any, Any]]:
    """Every registered technique's fields in `section`, for `bench.run_config` to build its sections from."""
    return {k: spec for t in TECHNIQUES.values() if t.section == section for k, spec in t.fields.items()}


def check(cfg: RunConfig) -> None:
    """Every technique's own combination checks, then: at most one replaces each loss."""
    for t in TECHNIQUES.values():
        t.check(cfg)
    for hook in ("d_loss", "g_loss"):
        owners = [t.name for t in TECHNIQUES.values() if t.active(cfg) and hook in t.__dict__]
        if len(owners) > 1:
            raise ValueError(f"{' and '.join(owners)} both replace {hook[0].upper()}'s loss; switch one off")


def technique_labels(cfg: RunConfig) -> dict[str, str]:
    """Techniques that differ from the plain GAN, e.g. {"ls": "0.9", "vbn": "G"}."""
    labels = {t.key(): t.label(cfg) for t in TECHNIQUES.values()}
    return {k: v for k, v in labels.items() if v is not None}


def markdown_table() -> str:
    """docs/techniques.md's table (written by `python -m bench.docs`, checked by tests/test_docs.py)."""
    lines = ["| technique | config keys (default) | what it does | paper | study |", "|---|---|---|---|---|"]
    for t in TECHNIQUES.values():
        keys = "<br>".join(f"`{t.section}.{k}` ({_short(f.default)}): {f.description}" for k, (_, f) in t.fields.items())
        what = " ".join((t.__doc__ or "").strip().split("\n\n")[0].split())  # the docstring's first paragraph
        study = f"`studies/{t.study}.toml`" if t.study else "—"
        lines.append(f"| `{t.key()}` | {keys} | {what} | {t.paper or '—'} | {study} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# D's features, for techniques that read them (feature matching) or act on them (minibatch std)


def last_linear(D: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """D's logit layer: the last `nn.Linear` of every family (parent module, attribute name, layer)."""
    found = None
    for parent in D.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear) or getattr(child, "is_logit_head", False):
                found = (parent, name, child)
    if found is None:
        raise ValueError(f"{type(D).__name__} has no linear logit layer")
    return found


def penultimate_features(D: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """The input of D's logit layer for x (VBN's reference rows dropped: they come first)."""
    captured: list[torch.Tensor] = []
    _, _, head = last_linear(D)
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        D(x, y)
    finally:
        handle.remove()
    return captured[-1].flatten(1)[-x.shape[0]:]


# Importing a module registers its technique; the order here is the order hooks run in.
# Flip before smoothing: a flipped real example then gets the (smoothed) fake target.
_MODULES = (
    "flip",
    "smoothing",
    "update_schedule",
    "g_loss",
    "vbn",
    "dropout",
    "weight_init",
    "hinge",
    "wgan_gp",
    "r1",
    "r2",
    "ttur",
    "spectral_norm",
    "ema",
    "instance_noise",
    "diffaug",
    "feature_matching",
    "minibatch_std",
    "historical_averaging",
)
for _name in _MODULES:
    importlib.import_module(f"{__name__}.{_name}")


@functools.cache
def _values_type(technique: type) -> type:
    """A named tuple of a technique's keys: its hyperparameters, immutable, one class per technique."""
    return collections.namedtuple(f"{technique.__name__}Values", list(technique.fields))
