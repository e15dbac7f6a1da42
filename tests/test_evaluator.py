"""The evaluator: the shipped, versioned MNIST classifier and self-trained ones for other datasets."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from mlflow import MlflowClient

from bench import evaluator as ev
from bench.evaluator import shipped
from bench.cli import main
from bench.config import EvalConfig
from bench.errors import ConfigError, EvaluatorError
from bench.run_config import build_config
from bench.data import load_dataset
from bench.experiment import run
from bench.models import LeNet


def test_shipped_manifest_matches_its_weights():
    entry = ev.shipped_entry("mnist")
    assert entry is not None, "no shipped MNIST evaluator in bench/weights/evaluators.json"
    path = ev.WEIGHTS_DIR / entry["file"]
    assert ev.sha256_file(path) == entry["sha256"]
    assert entry["version"] and entry["test_accuracy"] >= 0.993 and entry["real_test_is"] >= 9.85
    loaded = ev.load_shipped("mnist")
    assert loaded.meta["version"] == entry["version"] and loaded.meta["source"] == "shipped"


def test_shipped_evaluator_scores_real_test_digits_as_published(data_root):
    """The manifest's figures are what the weights score here: accuracy >= 0.993 and real IS >= 9.85."""
    test = load_dataset(data_root, "mnist", "test", "cpu", download=False)
    scorer = ev.load_shipped("mnist")
    images, labels = test.head(len(test))
    probs, _ = scorer(images)
    acc = (probs.argmax(1) == labels).double().mean().item()
    from bench.metrics import inception_score
    entry = ev.shipped_entry("mnist")
    assert acc == pytest.approx(entry["test_accuracy"], abs=1e-4) and acc >= 0.993
    assert inception_score(probs, 10)[0] == pytest.approx(entry["real_test_is"], abs=2e-3)


def test_damaged_weights_are_refused(tmp_path, monkeypatch):
    entry = ev.shipped_entry("mnist")
    shutil.copy(ev.MANIFEST, tmp_path / "evaluators.json")
    blob = bytearray((ev.WEIGHTS_DIR / entry["file"]).read_bytes())
    blob[-100] ^= 0xFF  # one flipped byte inside the tensors
    (tmp_path / entry["file"]).write_bytes(bytes(blob))
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path)  # where load_shipped reads them
    monkeypatch.setattr(shipped, "MANIFEST", tmp_path / "evaluators.json")
    with pytest.raises(EvaluatorError, match="SHA-256 .* expected " + entry["sha256"]):
        ev.load_shipped("mnist")


def test_which_evaluator_a_config_uses():
    assert ev.uses_shipped("mnist", EvalConfig())
    assert not ev.uses_shipped("mnist", EvalConfig(evaluator="train"))
    assert not ev.uses_shipped("mnist", EvalConfig(evaluator_epochs=2))  # asking for a recipe means your own
    assert not ev.uses_shipped("fashion-mnist", EvalConfig())  # nothing shipped: trained here
    with pytest.raises(ConfigError, match="ships no evaluator for dataset 'fashion-mnist'"):
        ev.uses_shipped("fashion-mnist", EvalConfig(evaluator="shipped"))
    with pytest.raises(ConfigError, match="eval"):
        build_config(overrides={"eval.evaluator": "shipped", "eval.evaluator_epochs": 3})


def test_a_fresh_run_trains_no_classifier_and_tags_the_evaluator(tiny, store, tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "empty-cache"))
    overrides = {k: v for k, v in tiny.items() if not k.startswith("eval.evaluator")}
    cfg = build_config(overrides={**overrides, "model.name": "cgan-mlp"})
    result = run(cfg, tracking_uri=store, experiment="evaluator-tags", progress=False)
    assert not (tmp_path / "empty-cache" / "evaluators").exists()  # nothing trained, nothing cached
    tags = MlflowClient(store).get_run(result.run_id).data.tags
    entry = ev.shipped_entry("mnist")
    assert tags["evaluator.version"] == entry["version"]
    assert tags["evaluator.sha256"] == entry["sha256"]
    assert tags["evaluator.source"] == "shipped"


def test_self_trained_evaluator_is_cached_and_says_so(tiny, store, tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    cfg = build_config(overrides={**tiny, "model.name": "cgan-mlp", "eval.evaluator_epochs": 1,
                                  "eval.evaluator_subset": 500})
    result = run(cfg, tracking_uri=store, experiment="own-evaluator", progress=False)
    cached = list((tmp_path / "cache" / "evaluators").glob("*.pt"))
    assert len(cached) == 1
    tags = MlflowClient(store).get_run(result.run_id).data.tags
    assert tags["evaluator.source"] == "trained"
    assert tags["evaluator.version"] == cached[0].stem
    assert tags["evaluator.sha256"] == ev.sha256_file(cached[0])


def test_evaluator_command_prints_version_and_reference_row(data_root, capsys):
    assert main(["evaluator", "--data-root", str(data_root), "--device", "cpu", "--set", "data.download=false",
                 "--set", "eval.n_real=2000"]) == 0
    out = capsys.readouterr().out
    entry = ev.shipped_entry("mnist")
    assert f"evaluator: {entry['version']} (shipped), sha256 {entry['sha256']}" in out
    acc = float(next(line for line in out.splitlines() if "real/test_accuracy" in line).split()[-1])
    assert acc >= 0.993


def test_train_reference_writes_weights_and_manifest(data_root, tmp_path, capsys):
    out_dir = tmp_path / "weights"
    assert main(["evaluator", "--data-root", str(data_root), "--device", "cpu", "--set", "data.download=false",
                 "--set", "eval.evaluator_epochs=1", "--set", "eval.evaluator_subset=600",
                 "--train-reference", str(out_dir)]) == 0
    manifest = json.loads((out_dir / "evaluators.json").read_text())["mnist"]
    weights = out_dir / manifest["file"]
    assert ev.sha256_file(weights) == manifest["sha256"]
    assert manifest["recipe"]["epochs"] == 1 and manifest["recipe"]["subset"] == 600
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(LeNet().state_dict())
