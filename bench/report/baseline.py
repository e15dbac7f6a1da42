"""Choosing the baseline configuration, and matching configurations across studies."""

from __future__ import annotations

import json
import math
from typing import Any

from bench.errors import ReportError
from bench.report.common import IGNORED_KEYS
from bench.report.load import Group, StudyData, dotted_key, json_tag, param_value, varied_keys
from bench.report.stats import summarize


def parse_params(text: str, option: str = "baseline") -> dict[str, Any]:
    """`key=value[,key=value]` (dotted or `a/b` keys, or a leaf name like real_target) or a JSON dict."""
    from bench.config import parse_value
    from bench.errors import ConfigError
    from bench.run_config import all_keys, check_key
    from bench.studies.spec import VARIANT_KEY

    text = text.strip()
    if text.startswith("{"):
        try:
            items = list(json.loads(text).items())
        except (json.JSONDecodeError, AttributeError) as e:
            raise ReportError(f"{option} {text!r}: not a JSON object ({e})", field=option) from None
    else:
        items = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ReportError(f"{option} {text!r}: expected KEY=VALUE[,KEY=VALUE], got {part!r}", field=option)
            items.append((key.strip(), parse_value(value.strip())))
    if not items:
        raise ReportError(f"{option} {text!r}: no KEY=VALUE pairs", field=option)
    leaves: dict[str, list[str]] = {}
    for k in all_keys():
        leaves.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    out = {}
    for key, value in items:
        key = dotted_key(str(key))
        if key == VARIANT_KEY:  # a study's [variants] name, not a config key
            out[key] = value
            continue
        if "." not in key and len(leaves.get(key, [])) == 1:
            key = leaves[key][0]
        try:
            out[check_key(key)] = value
        except ConfigError as e:
            raise ReportError(f"{option} {text!r}: {e}", field=option) from None
    return out


def _same(logged: str | None, wanted: Any) -> bool:
    if logged is None:
        return False
    got = param_value(logged)
    num = (int, float)
    if isinstance(got, num) and isinstance(wanted, num) and not isinstance(got, bool) and not isinstance(wanted, bool):
        return math.isclose(float(got), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return got == wanted or str(got).lower() == str(wanted).lower()


def matching(groups: list[Group], wanted: dict[str, Any]) -> list[Group]:
    return [g for g in groups if g.runs and all(_same(g.params.get(k), v) for k, v in wanted.items())]


def objective_best(groups: list[Group], metric: str, direction: str) -> Group | None:
    """The group with the best mean of `metric` in `direction` (finite means only), or None."""
    scored = [(summarize(g.values(metric)).mean, g) for g in groups]
    scored = [(m, g) for m, g in scored if math.isfinite(m)]
    if not scored:
        return None
    return (max if direction == "maximize" else min)(scored, key=lambda t: t[0])[1]


def resolve_baseline(study: StudyData, wanted: dict[str, Any] | None,
                     text: str | None) -> tuple[list[Group], str]:
    """The baseline groups (none or one, usually) and a sentence saying where they came from.

    A baseline that leaves out some of the varied keys (e.g. a technique study over two models whose
    baseline names only the technique's keys) gives one baseline per value of those keys, each
    configuration compared with the one that shares its other keys (`baseline_of`).
    """
    sources = []
    if wanted:
        sources.append((wanted, f"--baseline {text}"))
    tag = json_tag(study.tag("baseline"), None)
    if isinstance(tag, dict) and tag:
        sources.append(({dotted_key(k): v for k, v in tag.items()}, "the study's baseline"))
    for params, where in sources:
        found = matching(study.groups, params)
        if len(found) > 1:
            strata = varied_keys(found)  # the baseline's own keys are equal in every match
            distinct = len({tuple(str(g.params.get(k)) for k in strata) for g in found}) == len(found)
            if not distinct or len(found) == len(study.groups):  # ambiguous, or nothing left to compare
                raise ReportError(f"{where}: matches {len(found)} configurations of study {study.name!r} "
                                  f"({'; '.join(g.label for g in found)}); add keys to pick one")
            return found, (f"baselines: {'; '.join(g.label for g in found)} ({where}; each configuration is "
                           f"compared with the baseline of the same {', '.join(strata)})")
        if found:
            return found, f"baseline: {found[0].label} ({where})"
        study.notes.append(f"{where} ({json.dumps(params)}) matches no configuration of this study")
    metric, direction = study.objectives[0]
    best = objective_best(study.groups, metric, direction)
    if best is None:
        return [], "no baseline: no configuration has finished runs"
    return [best], (f"no baseline given: differences are to the best configuration by {metric} ({best.label}); "
                  "pass --baseline KEY=VALUE to compare with a baseline")


def baseline_of(group: Group, bases: list[Group], strata: list[str]) -> Group | None:
    """The baseline `group` is compared with: the one sharing its values of `strata`, the keys on
    which the baselines differ (`varied_keys(bases)`; none when there is one baseline)."""
    return next((b for b in bases if all(_same(group.params.get(k), param_value(b.params[k])) for k in strata)),
                None)


def base_config(study: StudyData) -> dict[str, str]:
    from bench.run_config import all_keys

    known = set(all_keys())
    varied = set(study.space_keys) | set(varied_keys(study.groups)) | IGNORED_KEYS
    params = max((g.params for g in study.groups), key=len, default={})  # a pruned stub may lack params
    return {k: v for k, v in params.items() if k in known and k not in varied}


def comparable(studies: list[StudyData]) -> list[str]:
    """Keys that two studies fix to different values (empty: they share a base configuration)."""
    diffs = []
    bases = [(s.name, base_config(s)) for s in studies]
    for i, (na, a) in enumerate(bases):
        for nb, b in bases[i + 1:]:
            for k in sorted(set(a) & set(b)):
                if not _same(a[k], param_value(b[k])):
                    diffs.append(f"{k}: {a[k]} ({na}) vs {b[k]} ({nb})")
    return diffs


def combined_groups(studies: list[StudyData]) -> list[Group]:
    """Every study's configurations; identical configurations (same config_id) pooled, one run per seed."""
    pooled: dict[str, Group] = {}
    for s in studies:
        for g in s.groups:
            key = g.config_id or f"{s.name}:{g.label}"
            label = f"{s.name}: {g.label}"
            if key not in pooled:
                pooled[key] = Group(label=label, runs=list(g.runs), config_id=g.config_id, study=s.name,
                                    missing_seeds=list(g.missing_seeds))
                continue
            p = pooled[key]
            p.label += f" = {label}"
            seeds = {r.seed for r in p.usable}
            p.runs += [r for r in g.runs if not (r.usable and r.seed in seeds)]
    return list(pooled.values())
