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
