"""The study file: a declarative TOML description of one question, validated before anything runs.

Example (see README for the full format)::

    name = "label-smoothing"
    description = "Does one-/two-sided label smoothing help the conditional DCGAN?"
    [base]                       # any harness config key
    model.name = "cgan-conv"
    [space]                      # dotted config key -> parameter
    "techniques.real_target" = { choices = [1.0, 0.9, 0.7] }
    "techniques.fake_target" = { choices = [0.0, 0.1] }
    [sampler]
    type = "grid"
    [objective]
    metrics = ["eval/tarr"]
    directions = ["maximize"]
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import tomllib
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.config import ConfigError, RunConfig, build_config, check_key, read_text

# Metrics an objective may name: what every run logs (conditional-only ones are checked per model).
EPOCH_METRICS = ["eval/is", "eval/is_std", "eval/fid", "eval/d_acc_real_test", "eval/d_acc_fake_test"]
CONDITIONAL_METRICS = ["eval/tarr", "eval/class_acc_geomean", *[f"eval/class_acc_{i}" for i in range(10)]]
UNCONDITIONAL_METRICS = ["eval/classes_covered", "eval/class_kl"]
FINAL_METRICS = ["time/train_s", "time/eval_s"]
KNOWN_METRICS = EPOCH_METRICS + CONDITIONAL_METRICS + UNCONDITIONAL_METRICS + FINAL_METRICS
# Optuna's GridSampler and our queue hold every cell (and a trial each) in memory and in the storage.
MAX_GRID_CELLS = 10_000
MAX_TRIALS = 100_000


class StudyError(ConfigError):
    """A malformed study file: names the file, the key and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Scalar = bool | int | float | str | None


class Param(_Strict):
    """One search dimension over a config key. `choices` -> categorical; `low`/`high` -> int or float."""

    type: Literal["categorical", "int", "float"] | None = None
    choices: list[Scalar] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: dict[str, Scalar] | None = Field(None, description="sample only when these params have these values")

    @model_validator(mode="after")
    def _consistent(self) -> "Param":
        if self.type is None:
            self.type = "categorical" if self.choices is not None else "float"
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical parameter needs a non-empty `choices` list")
            if self.low is not None or self.high is not None:
                raise ValueError("give either `choices` or `low`/`high`, not both")
        else:
            if self.choices is not None:
                raise ValueError(f"{self.type} parameter takes `low`/`high`, not `choices`")
            if self.low is None or self.high is None:
                raise ValueError(f"{self.type} parameter needs `low` and `high`")
            if not self.low < self.high:
                raise ValueError(f"empty range: low ({self.low:g}) must be < high ({self.high:g})")
            if self.log and self.low <= 0:
                raise ValueError(f"log scale needs low > 0, got {self.low:g}")
            if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError("int parameter needs integer low/high")
            if self.step is not None:
                if not self.step > 0:
                    raise ValueError(f"step={self.step:g}: must be > 0")
                if self.type == "int" and self.step != int(self.step):
                    raise ValueError(f"step={self.step:g}: an int parameter needs an integer step")
                if self.log:
                    raise ValueError(f"step={self.step:g}: Optuna cannot combine `step` with `log = true`")
        return self

    def grid_count(self) -> int | None:
        """How many values a grid visits, without listing them (None when continuous)."""
        if self.type == "categorical":
            return len(self.choices)
        if self.type == "int" and not self.log:
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
        return None

    def grid_values(self) -> list[Scalar] | None:
        """The values a grid visits (None when the parameter is continuous)."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return None

    def edge_values(self) -> list[Scalar]:
        """Values to check against the config's own ranges before anything runs."""
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class SamplerSpec(_Strict):
    type: Literal["grid", "tpe", "random", "gp"] = "grid"
    seed: int = 0


class PrunerSpec(_Strict):
    type: Literal["none", "median", "hyperband"] = "none"
    n_startup_trials: int = Field(2, ge=0)
    n_warmup_steps: int = Field(0, ge=0, description="epochs before pruning may start")
    patience: int | None = Field(None, ge=1, description="wrap in PatientPruner to tolerate noisy curves")


class ObjectiveSpec(_Strict):
    metrics: list[str] = Field(min_length=1)
    directions: list[Literal["maximize", "minimize"]] = Field(min_length=1)
    intermediate: str | None = Field(None, description="metric reported each epoch for pruning (default: first)")

    @model_validator(mode="after")
    def _check(self) -> "ObjectiveSpec":
        if len(self.metrics) != len(self.directions):
            raise ValueError(f"{len(self.metrics)} metrics but {len(self.directions)} directions")
        for m in [*self.metrics, *([self.intermediate] if self.intermediate else [])]:
            if m not in KNOWN_METRICS:
                import difflib

                hint = difflib.get_close_matches(m, KNOWN_METRICS, n=1)
                raise ValueError(f"unknown metric {m!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        if self.intermediate and self.intermediate in FINAL_METRICS:
            raise ValueError(f"intermediate metric {self.intermediate!r} is only known at the end")
        return self

    @property
    def watched(self) -> str:
        return self.intermediate or self.metrics[0]


class BudgetSpec(_Strict):
    n_trials: int | None = Field(None, ge=1, le=MAX_TRIALS,
                                 description="total trials of the study (grid: default its size)")
    timeout: float | None = Field(None, gt=0, description="seconds per `study run` invocation")


class StudySpec(_Strict):
    name: str
    description: str
    reproduces: str | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param]
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    objective: ObjectiveSpec
    budget: BudgetSpec = BudgetSpec()
    repeats: int = Field(1, ge=1, le=100, description="seeds per configuration; the objective is their mean")
    baseline: dict[str, Scalar] | None = Field(None, description="the configuration reports compare against")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # The name becomes an experiment, a folder and a storage key: it must not escape a folder.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v) or ".." in v:
            raise ValueError(f"{v!r}: use letters, digits, '-', '_' and '.', no path separators or '..'")
        return v

    @field_validator("space")
    @classmethod
    def _non_empty(cls, v: dict) -> dict:
        if not v:
            raise ValueError("the search space is empty")
        return v

    @property
    def multi_objective(self) -> bool:
        return len(self.objective.metrics) > 1

    def grid(self) -> list[dict[str, Scalar]]:
        """Every cell of a grid study, in file order."""
        keys = list(self.space)
        values = [self.space[k].grid_values() for k in keys]
        return [dict(zip(keys, combo)) for combo in itertools.product(*values)]

    def grid_size(self) -> int:
        """Cells of a grid study, counted without building them."""
        return math.prod(self.space[k].grid_count() or 0 for k in self.space)

    @property
    def n_trials(self) -> int:
        if self.sampler.type == "grid":
            return self.budget.n_trials or self.grid_size()
        return self.budget.n_trials  # validated present

    def short_label(self, params: dict[str, Any]) -> str:
        """`real_target=0.9,fake_target=0.1`: the varied params by their last key part."""
        return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items())


def _fail(path: str, key: str, reason: str) -> StudyError:
    return StudyError(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")


def _semantic_checks(spec: StudySpec, path: str, overrides: dict[str, Any]) -> RunConfig:
    """Checks that need the harness config: keys exist, values are in range, the space is coherent."""
    try:
        base_cfg = build_config(spec.base, overrides)
    except ConfigError as e:
        raise _fail(path, "base", str(e)) from None
    for key, param in spec.space.items():
        try:
            check_key(key)
        except ConfigError as e:
            raise _fail(path, f"space.{key}", str(e)) from None
        for value in param.edge_values():
            try:
                build_config(spec.base, {**overrides, key: value})
            except ConfigError as e:
                raise _fail(path, f"space.{key}", f"value {value!r} is invalid: {e}") from None
        for other, wanted in (param.when or {}).items():
            if other not in spec.space or other == key:
                raise _fail(path, f"space.{key}.when", f"refers to {other!r}, which is not another space key")
            if wanted not in spec.space[other].edge_values():
                raise _fail(path, f"space.{key}.when", f"{other}={wanted!r} is not among {other}'s choices")
    _check_fit(spec, base_cfg, path)
    for key, value in (spec.baseline or {}).items():
        if key not in spec.space:
            raise _fail(path, f"baseline.{key}", "not a key of the search space")
        if spec.space[key].type == "categorical" and value not in spec.space[key].choices:
            raise _fail(path, f"baseline.{key}", f"{value!r} is not among the choices {spec.space[key].choices}")
    if spec.sampler.type == "grid":
        for key, param in spec.space.items():
            if param.grid_values() is None:
                raise _fail(path, f"space.{key}", "a grid needs categorical or linear int parameters")
            if param.when:
                raise _fail(path, f"space.{key}.when", "conditional parameters need a non-grid sampler")
        size = spec.grid_size()
        if size > MAX_GRID_CELLS:
            counts = " x ".join(f"{spec.space[k].grid_count()} ({k})" for k in spec.space)
            raise _fail(path, "space", f"the grid has {size:,} cells ({counts}); at most {MAX_GRID_CELLS:,}: "
                                       "use fewer values, a `step`, or a tpe/random sampler with budget.n_trials")
        if spec.budget.n_trials is not None and spec.budget.n_trials < size:
            warnings.warn(f"{path}: budget.n_trials={spec.budget.n_trials} is smaller than the grid "
                          f"({size} cells): only the first {spec.budget.n_trials} cells will run", stacklevel=2)
    elif spec.budget.n_trials is None:
        raise _fail(path, "budget.n_trials", f"required for the {spec.sampler.type!r} sampler")
    if spec.multi_objective and spec.pruner.type != "none":
        raise _fail(path, "pruner.type", "Optuna cannot prune multi-objective studies; use 'none'")
    conditional = _conditional_models(spec, base_cfg)
    for m in [*spec.objective.metrics, spec.objective.watched]:
        if m in CONDITIONAL_METRICS and not all(conditional):
            raise _fail(path, "objective.metrics", f"{m!r} needs a conditional model in every trial")
        if m in UNCONDITIONAL_METRICS and any(conditional):
            raise _fail(path, "objective.metrics", f"{m!r} needs an unconditional model in every trial")
    return base_cfg


def _check_fit(spec: StudySpec, base_cfg: RunConfig, path: str) -> None:
    """The smallest training set of the space holds its largest iteration (batch x D steps), and the
    data root is a folder (a study must not start trials that can only fail)."""
    from bench.data import DataError, check_fit, resolve_root

    def values(key: str, default: Any) -> list:
        return spec.space[key].edge_values() if key in spec.space else [default]

    try:
        for root in values("data.root", base_cfg.data.root):
            resolve_root(root)
    except DataError as e:
        raise _fail(path, "", str(e)) from None

    subsets = values("data.train_subset", base_cfg.data.train_subset)
    smallest = min(subsets, key=lambda v: math.inf if v is None else v)
    try:
        for dataset in values("data.dataset", base_cfg.data.dataset):
            for subset in {smallest, *(v for v in subsets if v is not None)}:  # each alone, and the smallest
                check_fit(dataset, subset, 2, 1)
            check_fit(dataset, smallest, max(values("optim.batch_size", base_cfg.optim.batch_size)),
                      max(values("techniques.d_steps", base_cfg.techniques.d_steps)))
    except DataError as e:
        raise _fail(path, "", str(e)) from None


def _conditional_models(spec: StudySpec, base_cfg: RunConfig) -> list[bool]:
    from bench.models import MODELS

    names = spec.space["model.name"].edge_values() if "model.name" in spec.space else [base_cfg.model.name]
    return [MODELS[n].conditional for n in names]


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[StudySpec, str]:
    """Parse and validate a study file; returns the spec and the file's text. Raises StudyError."""
    path = Path(path)
    try:
        text = read_text(path, "study file")
    except ConfigError as e:
        raise StudyError(str(e)) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path}: not valid TOML: {e}") from None
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        value = first.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        raise _fail(str(path), key, first["msg"].removeprefix("Value error, ") + shown) from None
    for value in _leaves(spec.space):
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(str(path), "space", f"non-finite value {value!r}")
    _semantic_checks(spec, str(path), overrides or {})
    return spec, text


def _leaves(space: dict[str, Param]):
    for p in space.values():
        yield from (p.choices or [])
        yield from (v for v in (p.low, p.high) if v is not None)


def file_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
