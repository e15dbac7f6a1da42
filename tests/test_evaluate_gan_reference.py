"""`evaluate_gan` and `real_scores` give what they gave before bench/evaluator.py became a package.

`tests/references/evaluate_gan.json` was written by this file
(`python tests/test_evaluate_gan_reference.py DATA_ROOT`) at e0771f7, before the split. Each case scores a tiny untrained GAN (fixed seed, CPU, G's weights scaled up) with the
shipped evaluator on real MNIST test digits; the sample counts pass EVAL_BATCH (2000), so the batched
paths (generation, the evaluator's chunks, D's accuracy) are crossed too. On a machine like the one
that recorded them (same torch, same CPU capability, same thread count) the values must be equal bit
for bit; elsewhere float32 kernels may round differently, and they must agree to REL_TOL.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).parent / "references" / "evaluate_gan.json"
REL_TOL = 1e-5
G_SCALE = 4.0  # an untrained G draws one grey blur; with its weights scaled up, varied images of several classes

SMALL = {"data.download": False, "device": "cpu", "model.width": 8, "model.hidden": 32, "seed": 0}
CASES = {
    "cgan-mlp": {"model.name": "cgan-mlp", "eval.n_per_class": 210, "eval.n_real": 2100, "eval.splits": 5},
    "vanilla": {"model.name": "vanilla", "eval.n_samples": 2300, "eval.n_real": 2100, "eval.splits": 10},
    "dcgan-dropout": {"model.name": "dcgan", "model.d_dropout": 0.5, "eval.n_samples": 300, "eval.n_real": 300,
                      "eval.splits": 3},
}


def machine() -> dict:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


def scored(data_root) -> dict:
    """What `evaluate_gan` (twice: the real reference is then cached) and `real_scores` return per case."""
    from bench.run_config import build_config
    from bench.data import load_dataset
    from bench.evaluator import evaluate_gan, load_shipped, real_scores
    from bench.step import build_gan

    test = load_dataset(data_root, "mnist", "test", "cpu", download=False)
    train = load_dataset(data_root, "mnist", "train", "cpu", subset=600, download=False)
    scorer = load_shipped("mnist")  # one, as in a run: its real reference is computed once, then reused
    out = {}
    for case, overrides in CASES.items():
        cfg = build_config(overrides={**SMALL, **overrides, "data.root": str(data_root)})
        torch.manual_seed(cfg.seed)
        gan = build_gan(cfg, num_classes=test.num_classes)
        with torch.no_grad():
            for p in gan.generator.parameters():
                p.mul_(G_SCALE)
        first = evaluate_gan(gan, scorer, test, cfg.eval, cfg.model.latent_dim, seed=cfg.seed)
        again = evaluate_gan(gan, scorer, test, cfg.eval, cfg.model.latent_dim, seed=cfg.seed + 1)
        out[case] = {"eval": first, "eval_seed1": again}
    cfg = build_config(overrides={**SMALL, "eval.n_real": 600, "eval.splits": 5, "data.root": str(data_root)})
    out["real_scores"] = real_scores(scorer, train, test.subset(1000), cfg.eval)
    return out


def differences(now, ref, exact: bool, where: str = "") -> list[str]:
    if isinstance(ref, dict):
        if now.keys() != ref.keys():
            return [f"{where}: keys {sorted(now)} != {sorted(ref)}"]
        return [d for k in ref for d in differences(now[k], ref[k], exact, f"{where}/{k}")]
    if math.isnan(ref) and math.isnan(now):
        return []
    same = now == ref if exact else math.isclose(now, ref, rel_tol=REL_TOL, abs_tol=1e-9)
    return [] if same else [f"{where}: {now!r} != {ref!r}"]


def test_evaluate_gan_scores_what_it_scored_before_the_split(data_root):
    reference = json.loads(REFERENCE.read_text())
    exact = reference["machine"] == machine()
    diffs = differences(scored(data_root), reference["scores"], exact)
    assert not diffs, ("bit for bit" if exact else f"rel_tol={REL_TOL}") + ":\n" + "\n".join(diffs)


def test_the_comparison_can_fail():
    assert not differences({"a": {"b": 1.0}}, {"a": {"b": 1.0}}, exact=True)
    assert differences({"a": {"b": 1.0 + 1e-15}}, {"a": {"b": 1.0}}, exact=True)
    assert not differences({"a": {"b": 1.0 + 1e-7}}, {"a": {"b": 1.0}}, exact=False)
    assert differences({"a": {"b": 1.0 + 1e-4}}, {"a": {"b": 1.0}}, exact=False)
    assert differences({"a": {"c": 1.0}}, {"a": {"b": 1.0}}, exact=False)


if __name__ == "__main__":  # regenerate: python tests/test_evaluate_gan_reference.py DATA_ROOT
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({"machine": machine(), "scores": scored(Path(sys.argv[1]))}, indent=1) + "\n")


@pytest.mark.parametrize("case", ["cgan-mlp", "vanilla"])
def test_a_group_evaluated_together_scores_what_each_scores_alone(data_root, case):
    """`evaluate_gans` (one batched generator pass, one evaluator pass) equals `evaluate_gan` per GAN:
    three GANs of the same shapes with their own weights and seeds; larger batches only round differently."""
    from bench.data import load_dataset
    from bench.evaluator import Evaluation, evaluate_gan, evaluate_gans, load_shipped
    from bench.run_config import build_config
    from bench.step import build_gan

    test = load_dataset(data_root, "mnist", "test", "cpu", download=False)
    scorer = load_shipped("mnist")
    overrides = {**SMALL, **CASES[case], "data.root": str(data_root), "eval.n_per_class": 30, "eval.n_samples": 300,
                 "eval.n_real": 300, "model.g_norm": "batch"}
    gans, evaluations = [], []
    for seed in (0, 1, 2):
        cfg = build_config(overrides={**overrides, "seed": seed})
        torch.manual_seed(seed)
        gan = build_gan(cfg, num_classes=test.num_classes)
        with torch.no_grad():
            for p in gan.generator.parameters():
                p.mul_(G_SCALE)
        gans.append(gan)
        evaluations.append(Evaluation(scorer, test, cfg.eval, cfg.model.latent_dim, seed=seed))
    together = evaluate_gans(gans, evaluations)
    alone = [evaluate_gan(g, scorer, test, e.cfg, e.latent_dim, seed=e.seed) for g, e in zip(gans, evaluations)]
    for k in range(3):
        diffs = [f"{key}: {together[k][key]} != {v}" for key, v in alone[k].items()
                 if not (math.isnan(v) and math.isnan(together[k][key]))
                 and not math.isclose(together[k][key], v, rel_tol=1e-4, abs_tol=1e-6)]
        assert not diffs, f"GAN {k}:\n" + "\n".join(diffs)
    assert together[0]["is"] != together[1]["is"]  # three different GANs, not one scored three times
    assert all(g.generator.training for g in gans)  # back in training mode


@pytest.mark.parametrize("batched", [False, True])
def test_a_groups_generators_draw_what_each_draws_alone(batched):
    """`generate_many`: one batched pass over the stacked generators (CUDA's way), or one pass each (the CPU's)."""
    from bench.evaluator.scoring import generate, generate_many
    from bench.run_config import build_config
    from bench.step import build_gan

    gans = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        gans.append(build_gan(build_config(overrides={**SMALL, "model.name": "cgan-conv", "model.g_norm": "batch",
                                                      "seed": seed}), num_classes=10))
    labels = torch.arange(40) % 10
    gens = lambda: [torch.Generator().manual_seed(100 + k) for k in range(3)]  # noqa: E731
    together = generate_many(gans, 40, 100, "cpu", gens(), labels, batched=batched)
    for k, (gan, gen) in enumerate(zip(gans, gens())):
        alone = generate(gan, 40, 100, "cpu", gen, labels)
        if batched:  # grouped convolutions round differently
            torch.testing.assert_close(together[k], alone, rtol=1e-4, atol=1e-5)
        else:
            assert torch.equal(together[k], alone)
    assert not torch.allclose(together[0], together[1])
