"""Argument helpers every command group shares: run options, overrides, typed argparse values."""

from __future__ import annotations

import argparse
from typing import Any

from bench.config import flatten, load_file, parse_value
from bench.errors import ConfigError
from bench.run_config import build_config

DATASETS = ("mnist", "fashion-mnist")


def add_run_options(p: argparse.ArgumentParser, model_required: bool = False, training: bool = True) -> None:
    """Options every training-like command shares (train, study run, perf).

    `training=False` (the evaluator) leaves out what only a GAN training reads (epochs, subset, seed,
    the tracking store), so no flag is accepted and then ignored.
    """
    p.add_argument("--config", help="TOML or JSON file with config sections (data, model, techniques, optim, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set techniques.real_target=0.9 (repeatable)")
    if training:
        p.add_argument("--epochs", type=int, help="shortcut for --set optim.epochs=N")
        p.add_argument("--train-subset", type=int, help="class-balanced subset of N training images")
        p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", help="data root in torchvision layout (default: $GANBENCH_DATA_ROOT or ./data)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"])
    if training:
        p.add_argument("--tracking-uri",
                       help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)")


def int_at_least(minimum: int):
    """An argparse `type` for integers >= minimum (argparse then exits 2 with the value named)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be >= {minimum}")
        return value
    parse.__name__ = "int"  # argparse shows it as "invalid int value"
    return parse


positive_int = int_at_least(1)


def dataset_name(text: str) -> str:
    if text not in DATASETS:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown dataset; choose one of {', '.join(DATASETS)}")
    return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_value(value)
    return out


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted overrides an argparse namespace asks for (shortcuts after --set, so they win)."""
    overrides = parse_overrides(args.overrides)
    shortcuts = {"model.name": "model", "optim.epochs": "epochs", "data.train_subset": "train_subset",
                 "seed": "seed", "device": "device", "data.root": "data_root", "data.dataset": "dataset"}
    values = {key: getattr(args, attr, None) for key, attr in shortcuts.items()}
    overrides.update({k: v for k, v in values.items() if v is not None})
    return overrides


def layered_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--config FILE, then --set and the shortcuts, as dotted overrides of another base (a study's)."""
    from_file = config_file_overrides(args.config) if getattr(args, "config", None) else {}
    return {**from_file, **overrides_from_args(args)}


def config_file_overrides(path: str) -> dict[str, Any]:
    """A --config file as dotted overrides (for commands whose base is something else, e.g. a study)."""
    out = flatten(load_file(path), sep=".")
    try:
        build_config({}, out)  # bad keys or values: blame the file, not the study
    except ConfigError as e:
        raise ConfigError(f"config file {path!r}: {e}") from None
    return out


def config_from_args(args: argparse.Namespace):
    from bench.run_config import check_sizes

    base = load_file(args.config) if args.config else {}
    try:
        cfg = build_config(base, overrides_from_args(args))
    except ConfigError as e:
        if not base:
            raise
        try:
            build_config(base)
        except ConfigError:  # the file alone is already wrong: name it
            raise ConfigError(f"config file {args.config!r}: {e}") from None
        raise
    check_sizes(cfg)  # against the data and this machine's memory, before anything runs
    return cfg


def tracking_uri_from_args(args: argparse.Namespace) -> str:
    from bench.tracking import default_tracking_uri

    return args.tracking_uri or default_tracking_uri()


def print_table(rows: dict[str, Any], title: str | None = None) -> None:
    if title:
        print(title)
    width = max((len(k) for k in rows), default=0)
    for k, v in rows.items():
        text = f"{v:.4f}" if isinstance(v, float) else str(v)
        print(f"  {k:<{width}}  {text}")
