"""A fixed-seed run logs exactly what it logged before the training step was refactored.

`tests/references/reference_runs.json` was written by this file (`python tests/test_reference_runs.py DATA_ROOT`)
at aab8c40, before the loop and the step were split. Each case is a tiny CPU run in fp32 that switches
on a different set of techniques, so together they exercise every technique's arithmetic. A refactor
that changes the order of random draws, a target, a penalty or an optimizer setting changes these curves.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REFERENCE = Path(__file__).parent / "references" / "reference_runs.json"
REL_TOL = 1e-5

TINY = {"data.train_subset": 320, "data.download": False, "device": "cpu", "optim.epochs": 2,
        "optim.batch_size": 32, "model.width": 16, "model.hidden": 64, "eval.n_samples": 200,
        "eval.n_per_class": 20, "eval.n_real": 200, "eval.splits": 5, "train.log_every": 2, "train.amp": False,
        "seed": 3}

CASES = {
    "dcgan-baseline": {"model.name": "dcgan-report000"},
    "cgan-conv-bn-targets": {"model.name": "cgan-conv", "model.d_norm": "batch", "techniques.real_target": 0.9,
                             "techniques.fake_target": 0.1, "techniques.flip_prob": 0.1, "techniques.d_steps": 2,
                             "techniques.ttur_ratio": 4.0, "techniques.instance_noise_std": 0.5,
                             "techniques.ema_decay": 0.9},
    "cgan-mlp-wgan-gp": {"model.name": "cgan-mlp", "techniques.wgan_gp_lambda": 10.0,
                         "techniques.hist_avg_lambda": 0.01, "techniques.diffaug": "translation,cutout",
                         "techniques.g_steps": 2},
    "dcgan-vbn-r1-fm": {"model.name": "dcgan", "model.g_norm": "virtual", "model.d_norm": "virtual",
                        "model.vbn_ref_size": 16, "techniques.r1_gamma": 1.0, "techniques.feature_matching": True,
                        "model.d_dropout": 0.5},
    "vanilla-hinge-sn-mbstd": {"model.name": "vanilla", "techniques.hinge": True, "model.d_spectral_norm": True,
                               "model.d_minibatch_std": True},
    "dcgan-saturating-noinit": {"model.name": "dcgan", "techniques.g_loss": "saturating",
                                "model.weight_init": False},
}


def logged(case: str, data_root) -> dict:
    """What a run of `case` logs: the per-step curves and the per-epoch evaluation."""
    from bench.experiment import run
    from bench.run_config import build_config

    cfg = build_config(overrides={**TINY, **CASES[case], "data.root": str(data_root)})
    result = run(cfg, tracking_uri=None, progress=False).result
    h = result.history
    return {"steps": h.steps, "train": h.train, "epochs": h.epochs, "eval": h.eval, "diverged": result.diverged}


def close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-7)
    return a == b


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_fixed_seed_run_logs_what_it_logged_before_the_refactor(case, data_root):
    reference = json.loads(REFERENCE.read_text())[case]
    now = logged(case, data_root)
    for key in reference:
        assert close(now[key], reference[key]), f"{case}: {key} differs\nnow: {now[key]}\nref: {reference[key]}"


def test_the_comparison_can_fail():
    assert close({"a": [1.0, 2.0]}, {"a": [1.0, 2.0 * (1 + 1e-6)]})
    assert not close({"a": [1.0, 2.0]}, {"a": [1.0, 2.0 * (1 + 1e-4)]})
    assert not close({"a": [1.0]}, {"a": [1.0, 2.0]})


if __name__ == "__main__":  # regenerate: python tests/test_reference_runs.py DATA_ROOT
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({c: logged(c, Path(sys.argv[1])) for c in sorted(CASES)}, indent=1) + "\n")
