"""The study file: a declarative TOML description of one question, validated before anything runs.

Example (docs/studies.md has the full format)::

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
    directions = ["maximize"]     # optional: each metric's own direction (bench.metrics.registry)

A study whose configurations are not a grid over one space names them as `[variants.<name>]`
(each a set of config overrides); the search then also runs over the categorical parameter
`variant`. `[published]` (or `[[published]]`, one per table) carries a report's numbers per
configuration, beside which `gan-bench report` puts the measured ones.
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

from bench.config import flatten, read_text
from bench.run_config import build_config, check_key, RunConfig
from bench.errors import ConfigError, DataError, StudyError
from bench.metrics import registry

# Metrics an analysis logs on a finished run (`gan-bench analyze NAME`), e.g. analysis/retrain/mix/gen10/test_acc:
# a published row may hold them (report 002 Tables 4-7); they are measured once the runs are analysed.
ANALYSIS_METRIC = re.compile(r"analysis/[a-z_]+/[A-Za-z0-9_./-]+")
# The search parameter that picks one of the `[variants]`; never a config key.
VARIANT_KEY = "variant"
_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
# Optuna's GridSampler and our queue hold every cell (and a trial each) in memory and in the storage.
MAX_GRID_CELLS = 10_000
MAX_TRIALS = 100_000
MAX_INT = 2**63 - 1  # an int parameter's bounds (Optuna's storages hold 64-bit integers)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Scalar = bool | int | float | str | None


class Param(_Strict):
    """One search dimension over a config key. `choices` -> categorical; `low`/`high` -> int or float."""

    type: Literal["categorical", "int", "float"] | None = None
    choices: list[Scalar] | None = None
    # Finite only: an infinite or NaN bound has no integer grid, no sampler range and no config value.
    low: float | None = Field(None, allow_inf_nan=False)
    high: float | None = Field(None, allow_inf_nan=False)
    step: float | None = Field(None, allow_inf_nan=False)
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
            for bound in ("low", "high", "step"):  # beyond int64: no config key or storage holds it
                value = getattr(self, bound)
                if self.type == "int" and value is not None and abs(value) > MAX_INT:
                    raise ValueError(f"{bound}={value:g}: an int parameter's values must lie within ±{MAX_INT}")
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
    seed: int = Field(0, ge=0, le=2**32 - 1, description="the sampler's seed (numpy's RandomState range)")


class PrunerSpec(_Strict):
    type: Literal["none", "median", "hyperband"] = "none"
    n_startup_trials: int = Field(2, ge=0)
    n_warmup_steps: int = Field(0, ge=0, description="epochs before pruning may start")
    patience: int | None = Field(None, ge=1, description="wrap in PatientPruner to tolerate noisy curves")


class ObjectiveSpec(_Strict):
    metrics: list[str] = Field(min_length=1)
    directions: list[Literal["maximize", "minimize"]] | None = Field(
        None, min_length=1, description="per metric; default: the metric's own direction (bench.metrics.registry)")
    intermediate: str | None = Field(None, description="metric reported each epoch for pruning (default: first)")

    @model_validator(mode="after")
    def _check(self) -> "ObjectiveSpec":
        if self.directions is not None and len(self.metrics) != len(self.directions):
            raise ValueError(f"{len(self.metrics)} metrics but {len(self.directions)} directions")
        for m in [*self.metrics, *([self.intermediate] if self.intermediate else [])]:
            registry.get(m)  # ValueError naming the closest known metric
        given = self.directions or [None] * len(self.metrics)
        directions = []
        for m, d in zip(self.metrics, given):
            own = registry.get(m).direction
            if d is None and own.optuna is None:
                raise ValueError(f"{m!r} has no better side ({own.text}): give `directions`")
            if d is not None and own.optuna is not None and d != own.optuna:
                warnings.warn(f"objective {m!r}: direction {d!r} is the opposite of the metric's ({own.text} is "
                              "better)", stacklevel=2)
            directions.append(d or own.optuna)
        self.directions = directions
        if self.intermediate and not registry.get(self.intermediate).per_epoch:
            raise ValueError(f"intermediate metric {self.intermediate!r} is only known at the end")
        return self

    @property
    def watched(self) -> str:
        return self.intermediate or self.metrics[0]


class BudgetSpec(_Strict):
    n_trials: int | None = Field(None, ge=1, le=MAX_TRIALS,
                                 description="total trials of the study (grid: default its size)")
    timeout: float | None = Field(None, gt=0, description="seconds per `study run` invocation")


class PublishedReference(_Strict):
    """The report's own real-data ceiling, measured with the report's own evaluator."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    accuracy: float | None = Field(None, gt=0.0, le=1.0, description="its evaluator's test accuracy on real data")
    is_: float | None = Field(None, alias="is", gt=0.0, le=1000.0, description="its IS of real test images")


class PublishedRow(BaseModel):
    """One configuration of a report's table: `params` pick it, every other key is a metric's published value."""

    model_config = ConfigDict(extra="allow")
    params: dict[str, Scalar]
    label: str | None = Field(None, description="the row's name in the report, e.g. 'CGAN base (1)'")

    @model_validator(mode="after")
    def _metric_values(self) -> "PublishedRow":
        if not self.model_extra:
            raise ValueError('no published value: add metrics, e.g. "eval/tarr" = 0.98')
        for metric, value in self.model_extra.items():
            if not ANALYSIS_METRIC.fullmatch(metric):
                registry.get(metric)  # ValueError naming the closest known metric
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{metric}: {value!r} is not a finite number")
        return self

    @property
    def values(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.model_extra or {}).items()}


class PublishedTable(_Strict):
    """One table of a report: its values per configuration and the report's real-data reference."""

    report: str = Field(min_length=1, description="which report, e.g. '002'")
    table: str = Field(min_length=1, description="the table's name in the report, e.g. 'Table 1'")
    reference: PublishedReference = PublishedReference()
    grid: list[str] | None = Field(None, min_length=2, max_length=2,
                                   description="[row key, column key]: lay the table out as a grid, as the report does")
    rows: list[PublishedRow] = Field(min_length=1)
    epochs: int | None = Field(None, ge=1, le=1000, description="the report's training epochs for this table "
                                                                 "(default: the study's optim.epochs)")

    def matches(self, report: str) -> bool:
        return same_report(self.report, report)


def same_report(a: str, b: str) -> bool:
    """'002', '2' and 'report 002' name the same report."""
    norm = lambda t: re.sub(r"^report[\s_-]*", "", t.strip().lower()).lstrip("0") or "0"  # noqa: E731
    return norm(a) == norm(b)


def with_report_epochs(tables: list[PublishedTable], base: dict[str, Any]) -> list[PublishedTable]:
    """A published table's training length defaults to the study's base (what the report trained)."""
    epochs = flatten(base, sep=".").get("optim.epochs", 1)
    for t in tables:
        if t.epochs is None:
            t.epochs = epochs
    return tables


class StudySpec(_Strict):
    name: str
    description: str
    reproduces: str | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                description="named sets of config overrides, searched as `variant`")
    published: list[PublishedTable] = Field(default_factory=list, description="a report's numbers per configuration")
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

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict) -> dict:
        for name, overrides in v.items():
            if not re.fullmatch(_NAME_RE, name):
                raise ValueError(f"variant name {name!r}: use letters, digits, '-', '_' and '.'")
            for key, value in flatten(overrides, sep=".").items():
                if not isinstance(value, (bool, int, float, str)) or (isinstance(value, float) and not math.isfinite(value)):
                    raise ValueError(f"variant {name!r}: {key} = {value!r} is not a finite scalar")
        return {name: flatten(overrides, sep=".") for name, overrides in v.items()}

    @field_validator("published", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v  # `[published]` (one table) or `[[published]]` (several)

    @model_validator(mode="after")
    def _published_epochs(self) -> "StudySpec":
        with_report_epochs(self.published, self.base)
        return self

    @model_validator(mode="after")
    def _non_empty(self) -> "StudySpec":
        if not self.space and not self.variants:
            raise ValueError("the search space is empty: give [space] or [variants.<name>] sections")
        if VARIANT_KEY in self.space:
            raise ValueError(f"space.{VARIANT_KEY}: reserved for the [variants] names; use [variants.<name>]")
        return self

    @property
    def search_space(self) -> dict[str, Param]:
        """What the sampler searches: `variant` over the variant names (first), then `[space]`."""
        if not self.variants:
            return self.space
        return {VARIANT_KEY: Param(type="categorical", choices=list(self.variants)), **self.space}

    def config_overrides(self, params: dict[str, Any], user: dict[str, Any] | None = None) -> dict[str, Any]:
        """A trial's parameters as config overrides: `variant` replaced by that variant's overrides.

        `user` (the command line's `--set`, `--epochs`, ...) wins over a variant's settings, so
        `--epochs 1` shrinks every variant, but never over a searched key.
        """
        out = dict(self.variants.get(params[VARIANT_KEY], {})) if VARIANT_KEY in params else {}
        out.update(user or {})
        out.update({k: v for k, v in params.items() if k != VARIANT_KEY})
        return out

    @property
    def multi_objective(self) -> bool:
        return len(self.objective.metrics) > 1

    def grid(self) -> list[dict[str, Scalar]]:
        """Every cell of a grid study, in file order."""
        space = self.search_space
        keys = list(space)
        values = [space[k].grid_values() for k in keys]
        return [dict(zip(keys, combo)) for combo in itertools.product(*values)]

    def grid_size(self) -> int:
        """Cells of a grid study, counted without building them."""
        space = self.search_space
        return math.prod(space[k].grid_count() or 0 for k in space)

    @property
    def n_trials(self) -> int:
        if self.sampler.type == "grid":
            return self.budget.n_trials or self.grid_size()
        return self.budget.n_trials  # validated present

    def short_label(self, params: dict[str, Any]) -> str:
        return short_label(params)


def short_label(params: dict[str, Any]) -> str:
    """`real_target=0.9,fake_target=0.1`: the varied params by their last key part; a variant by its name."""
    return ",".join(str(v) if k == VARIANT_KEY else f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items())


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
            if other not in spec.search_space or other == key:
                raise _fail(path, f"space.{key}.when", f"refers to {other!r}, which is not another space key")
            if wanted not in spec.search_space[other].edge_values():
                raise _fail(path, f"space.{key}.when", f"{other}={wanted!r} is not among {other}'s choices")
    for name, variant in spec.variants.items():
        for key in variant:
            try:
                check_key(key)
            except ConfigError as e:
                raise _fail(path, f"variants.{name}.{key}", str(e)) from None
            if key in spec.space:
                raise _fail(path, f"variants.{name}.{key}", "also a key of [space]: set it in one place")
        try:
            build_config(spec.base, {**variant, **overrides})
        except ConfigError as e:
            raise _fail(path, f"variants.{name}", str(e)) from None
    space = spec.search_space
    _check_fit(spec, base_cfg, path, overrides)
    for key, value in (spec.baseline or {}).items():
        if key not in space:
            raise _fail(path, f"baseline.{key}", "not a key of the search space" + (
                f" (a variant is named by `{VARIANT_KEY} = \"<name>\"`)" if spec.variants else ""))
        if space[key].type == "categorical" and value not in space[key].choices:
            raise _fail(path, f"baseline.{key}", f"{value!r} is not among the choices {space[key].choices}")
    if spec.sampler.type == "grid":
        for key, param in space.items():
            if param.grid_values() is None:
                raise _fail(path, f"space.{key}", "a grid needs categorical or linear int parameters")
            if param.when:
                raise _fail(path, f"space.{key}.when", "conditional parameters need a non-grid sampler")
        size = spec.grid_size()
        if size > MAX_GRID_CELLS:
            counts = " x ".join(f"{space[k].grid_count()} ({k})" for k in space)
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
        reason = _model_mismatch(m, conditional)
        if reason:
            raise _fail(path, "objective.metrics", f"{m!r} {reason}")
    _check_published(spec, path, conditional)
    return base_cfg


def _check_fit(spec: StudySpec, base_cfg: RunConfig, path: str, overrides: dict[str, Any]) -> None:
    """The smallest training set of the space holds its largest iteration (batch x D steps), the data
    root is a folder, and the space's largest trial fits the data and this machine's memory (a study
    must not start trials that can only fail)."""
    from bench.data import check_fit, resolve_root

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
    _check_largest_trial(spec, path, overrides)


# Keys whose larger values need more memory or more data (data.train_subset: the smaller, the tighter).
SIZE_KEYS = ("optim.batch_size", "techniques.d_steps", "eval.n_samples", "eval.n_per_class", "eval.n_real",
             "eval.evaluator_subset", "model.vbn_ref_size", "model.latent_dim", "model.embed_dim", "model.width",
             "model.g_width", "model.d_width", "model.hidden", "model.mlp_blocks", "model.g_depth", "model.d_depth")


def _check_largest_trial(spec: StudySpec, path: str, overrides: dict[str, Any]) -> None:
    """`check_sizes` on the trial with every size key of the space at its largest (the training subset at
    its smallest), once per variant."""
    from bench.run_config import check_sizes

    def numbers(key: str) -> list:
        return [v for v in spec.space[key].edge_values() if isinstance(v, (int, float)) and not isinstance(v, bool)]

    corner = {k: max(numbers(k)) for k in SIZE_KEYS if k in spec.space and numbers(k)}
    if "data.train_subset" in spec.space and numbers("data.train_subset"):
        corner["data.train_subset"] = min(numbers("data.train_subset"))
    for variant in list(spec.variants) or [None]:
        params = {**({VARIANT_KEY: variant} if variant else {}), **corner}
        try:
            cfg = build_config(spec.base, spec.config_overrides(params, overrides))
        except ConfigError:
            continue  # values no trial combines (each one alone was checked)
        try:
            check_sizes(cfg)
        except (DataError, ConfigError) as e:
            where = f"the space's largest trial ({short_label(params)}): " if params else ""
            raise _fail(path, "", f"{where}{e}") from None


def _model_mismatch(key: str, conditional: list[bool]) -> str | None:
    """Why the study's models cannot log metric `key` (a conditional-only metric on an unconditional model...)."""
    metric = registry.lookup(key)
    if metric is None:  # an analysis metric
        return None
    if registry.Needs.CONDITIONAL in metric.needs and not all(conditional):
        return (f"({metric.label}) needs a conditional model in every trial; "
                f"{conditional.count(False)} of the {len(conditional)} model(s) the study trains are unconditional")
    if registry.Needs.UNCONDITIONAL in metric.needs and any(conditional):
        return (f"({metric.label}) needs an unconditional model in every trial; "
                f"{conditional.count(True)} of the {len(conditional)} model(s) the study trains are conditional")
    return None


def _conditional_models(spec: StudySpec, base_cfg: RunConfig) -> list[bool]:
    from bench.models import MODELS

    if "model.name" in spec.space:
        names = spec.space["model.name"].edge_values()
    else:
        names = [v.get("model.name", base_cfg.model.name) for v in spec.variants.values()] or [base_cfg.model.name]
    return [MODELS[n].conditional for n in names]


def _check_published(spec: StudySpec, path: str, conditional: list[bool]) -> None:
    """Each published row names one configuration of the study, by every searched key; metrics it can log."""
    space = spec.search_space
    for i, table in enumerate(spec.published):
        where = f"published[{i}]" if len(spec.published) > 1 else "published"
        for key in table.grid or []:
            if key not in space:
                raise _fail(path, f"{where}.grid", f"{key!r} is not a key of the search space ({', '.join(space)})")
        if table.grid and table.grid[0] == table.grid[1]:
            raise _fail(path, f"{where}.grid", "row and column keys must differ")
        seen: dict[str, int] = {}
        for j, row in enumerate(table.rows):
            at = f"{where}.rows[{j}]"
            for key, value in row.params.items():
                if key not in space:
                    raise _fail(path, f"{at}.params.{key}", "not a key of the search space ("
                                + ", ".join(space) + ")")
                p = space[key]
                if p.type == "categorical" and value not in p.choices:
                    raise _fail(path, f"{at}.params.{key}", f"{value!r} is not among the choices {p.choices}")
                if p.type != "categorical" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                                or not p.low <= value <= p.high):
                    raise _fail(path, f"{at}.params.{key}", f"{value!r} is outside [{p.low:g}, {p.high:g}]")
            missing = [k for k in space if k not in row.params]
            if missing:
                raise _fail(path, f"{at}.params", f"missing {', '.join(missing)}: a row names every searched key, "
                                                  "so that it picks one configuration")
            for metric in row.values:
                reason = _model_mismatch(metric, conditional)
                if reason:
                    raise _fail(path, f"{at}.{metric}", reason)
            cell = repr(sorted(row.params.items()))
            if cell in seen:
                raise _fail(path, f"{at}.params", f"the same configuration as rows[{seen[cell]}]")
            seen[cell] = j


def load_study_file(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[StudySpec, str]:
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
