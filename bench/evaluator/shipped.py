"""Which evaluator scores a run: the shipped, checksummed one, or one trained here and cached.

The shipped weights lie in `bench/weights/` (package data), named with their version and SHA-256 by
`evaluators.json`; the SHA-256 is checked on every load. Self-trained evaluators are cached under
`$GANBENCH_CACHE` (default ~/.cache/gan-bench), keyed by dataset, architecture and recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from bench.config import EvalConfig
from bench.data import DeviceDataset
from bench.errors import ConfigError, EvaluatorError
from bench.evaluator.classifier import REFERENCE_RECIPE, Evaluator, accuracy, train_reference
from bench.models import LeNet

ARCH_VERSION = "lenet-v1"  # bump when LeNet changes, so stale caches are not reused
WEIGHTS_DIR = Path(__file__).parent.parent / "weights"  # bench/weights/ (package data)
MANIFEST = WEIGHTS_DIR / "evaluators.json"


def cache_dir() -> Path:
    return Path(os.environ.get("GANBENCH_CACHE") or Path.home() / ".cache" / "gan-bench")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def shipped_entry(dataset: str) -> dict | None:
    """The manifest entry of the evaluator shipped for `dataset`, or None."""
    if not MANIFEST.exists():
        return None
    return json.loads(MANIFEST.read_text()).get(dataset)


def evaluator_key(dataset: str, cfg: EvalConfig) -> str:
    """Cache key of a self-trained evaluator (dataset, architecture, recipe)."""
    spec = {"dataset": dataset, "arch": ARCH_VERSION, "epochs": _epochs(cfg), "subset": cfg.evaluator_subset,
            "recipe": REFERENCE_RECIPE}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{dataset}-{ARCH_VERSION}-{digest}"


def _epochs(cfg: EvalConfig) -> int:
    return cfg.evaluator_epochs or REFERENCE_RECIPE["epochs"]


def uses_shipped(dataset: str, cfg: EvalConfig) -> bool:
    """Whether runs of this dataset and eval config are scored by the shipped evaluator."""
    if cfg.evaluator == "shipped":
        if shipped_entry(dataset) is None:
            raise ConfigError(f"eval.evaluator='shipped': gan-bench ships no evaluator for dataset {dataset!r}; "
                              "use eval.evaluator='auto' or 'train'")
        return True
    return not cfg.trains_evaluator and shipped_entry(dataset) is not None


def evaluator_path(dataset: str, cfg: EvalConfig) -> Path:
    """Where the evaluator for this dataset and config lies (the shipped file or the cache entry)."""
    if uses_shipped(dataset, cfg):
        return WEIGHTS_DIR / shipped_entry(dataset)["file"]
    return cache_dir() / "evaluators" / f"{evaluator_key(dataset, cfg)}.pt"


def load_shipped(dataset: str, num_classes: int = 10, device="cpu") -> Evaluator:
    """The shipped evaluator for `dataset`, its weights checked against the manifest's SHA-256."""
    entry = shipped_entry(dataset)
    if entry is None:
        raise EvaluatorError(f"gan-bench ships no evaluator for dataset {dataset!r}")
    path = WEIGHTS_DIR / entry["file"]
    if not path.exists():
        raise EvaluatorError(f"shipped evaluator {entry['version']}: {path} is missing; reinstall gan-bench")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise EvaluatorError(f"shipped evaluator {entry['version']}: {path} has SHA-256 {actual}, expected "
                             f"{entry['sha256']}; the file is damaged, reinstall gan-bench")
    net = LeNet(num_classes=num_classes)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    meta = {"dataset": dataset, "version": entry["version"], "sha256": actual, "source": "shipped",
            "test_accuracy": entry.get("test_accuracy")}
    return Evaluator(net, meta).to(device)


def load_or_train(dataset: str, train: DeviceDataset, test: DeviceDataset, cfg: EvalConfig,
                  progress: bool = True) -> Evaluator:
    """The shipped evaluator when the config uses it; else the cached self-trained one (trained on first use)."""
    device = train.device
    if uses_shipped(dataset, cfg):
        return load_shipped(dataset, train.num_classes, device)
    path = evaluator_path(dataset, cfg)
    if path.exists():
        blob = torch.load(path, map_location=device, weights_only=True)
        net = LeNet(num_classes=train.num_classes).to(device)
        net.load_state_dict(blob["state_dict"])
        return Evaluator(net, {**blob["meta"], "sha256": sha256_file(path)})
    if progress:
        print(f"Training your own {dataset} evaluator once ({_epochs(cfg)} epochs); cached at {path}")
    net = train_reference(train, cfg.evaluator_epochs, cfg.evaluator_subset, progress=progress)
    evaluator = Evaluator(net)
    evaluator.meta = {"dataset": dataset, "version": path.stem, "source": "trained", "key": path.stem,
                      "test_accuracy": accuracy(evaluator, test)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # one temp file per process: concurrent trainers never share it
    torch.save({"state_dict": net.state_dict(), "meta": evaluator.meta}, tmp)
    tmp.replace(path)  # atomic: concurrent workers never read a half-written file
    evaluator.meta["sha256"] = sha256_file(path)
    return evaluator
