"""The training loop: the D:G schedule, divergence, collapse, and resuming from a checkpoint."""

import math

import pytest
import torch

from bench.run_config import build_config
from bench.experiment import run
from bench.step import hooks
from bench.train import collapsed
from bench.tracking import NullTracker


@pytest.fixture
def cfg(tiny):
    return build_config(overrides={**tiny, "model.name": "cgan-mlp"})


def optimizer_steps(cfg, **overrides) -> dict[str, int]:
    """Train one epoch and count optimizer steps per network (a global optimizer hook)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from bench.experiment import prepare
    from bench.step import build_step
    from bench.train import Member, train

    c = build_config(cfg.model_dump(), overrides)
    data = prepare(c, progress=False).train_full.subset(320)  # may train the evaluator: not counted
    step = build_step(c, data)
    gan = step.gan
    d_params = {id(p) for p in gan.discriminator.parameters()}
    counts = {"d": 0, "g": 0}

    def count(opt, args, kwargs):
        counts["d" if id(opt.param_groups[0]["params"][0]) in d_params else "g"] += 1

    handle = register_optimizer_step_post_hook(count)
    try:
        train(step, [Member(c, data, NullTracker())], progress=False)
    finally:
        handle.remove()
    return counts


def test_schedule_5_to_1_makes_5_d_steps_per_g_step(cfg):
    assert optimizer_steps(cfg, **{"techniques.d_steps": 5}) == {"d": 10, "g": 2}  # 320 images / batch 32
    assert optimizer_steps(cfg, **{"techniques.g_steps": 2}) == {"d": 10, "g": 20}


def test_non_finite_loss_stops_with_last_finite_evaluation(monkeypatch, cfg):
    calls = {"n": 0}
    real = hooks.bce_d_loss

    def exploding(*a):
        calls["n"] += 1
        loss = real(*a)
        return loss * float("nan") if calls["n"] > 12 else loss  # NaN from the 2nd epoch on

    monkeypatch.setattr(hooks, "bce_d_loss", exploding)
    c = build_config(cfg.model_dump(), {"optim.epochs": 3})
    result = run(c, tracking_uri=None, progress=False).result
    assert result.diverged and "non-finite" in result.stop_reason
    assert result.history.epochs == [1]  # epoch 1's evaluation is the last finite state
    assert all(math.isfinite(v) for v in result.metrics.values())


def test_diverged_run_is_tagged(monkeypatch, cfg, store):
    from mlflow import MlflowClient

    monkeypatch.setattr(hooks, "bce_d_loss", lambda *a: torch.tensor(float("nan"), requires_grad=True))
    res = run(cfg, tracking_uri=store, experiment="div", progress=False)
    tags = MlflowClient(store).get_run(res.run_id).data.tags
    assert tags["diverged"] == "true" and "non-finite" in tags["diverged_reason"]
    # diverged in epoch 1: the initial weights were evaluated instead (step 0), never NaN
    assert res.result.history.epochs == [0] and math.isfinite(res.metrics["eval/tarr"])


def test_collapse_rule():
    assert not collapsed([0.002], 0.01)  # a fresh G is nearly constant: not a collapse
    assert not collapsed([0.002, 0.004], 0.01)
    assert collapsed([0.002, 0.3, 0.001], 0.01)
    assert not collapsed([0.3, 0.2], 0.01)


def test_resume_from_checkpoint_matches_uninterrupted_run(cfg, tmp_path):
    c = build_config(cfg.model_dump(), {"optim.epochs": 3})
    full = run(c, tracking_uri=None, progress=False).metrics

    ckpt = tmp_path / "ckpt.pt"

    def kill_after_2(epoch, _metrics):
        if epoch == 2:
            raise KeyboardInterrupt  # as if the worker died after saving epoch 2

    with pytest.raises(KeyboardInterrupt):
        run(c, tracking_uri=None, progress=False, hooks=[kill_after_2], checkpoint_path=ckpt)
    assert ckpt.exists()
    seen = []
    resumed = run(c, tracking_uri=None, progress=False, checkpoint_path=ckpt,
                  hooks=[lambda e, m: seen.append(e)])
    assert seen == [3]  # epochs 1 and 2 were not trained again
    assert resumed.result.history.epochs == [1, 2, 3]
    drop = ("time/train_s", "time/eval_s")
    assert {k: v for k, v in resumed.metrics.items() if k not in drop} == \
           pytest.approx({k: v for k, v in full.items() if k not in drop}, rel=1e-6)
    assert not ckpt.exists()  # removed once the run completed


def test_sample_steps_log_the_grid_exactly_at_those_steps(cfg, store):
    """320 images / batch 32 = 10 steps an epoch: steps 3 and 12 exist, 500 never comes."""
    import re

    from mlflow import MlflowClient

    c = build_config(cfg.model_dump(), {"optim.epochs": 2, "train.sample_steps": [12, 3, 500]})
    res = run(c, tracking_uri=store, experiment="sample-steps", progress=False)
    files = [f.path for f in MlflowClient(store).list_artifacts(res.run_id, "images")]
    steps = sorted(int(m.group(1)) for f in files if (m := re.match(r"images/samples_at_step\+step\+(\d+)\+.*\.png$", f)))
    assert steps == [3, 12]
    assert any(f.startswith("images/samples+step+") for f in files)  # the per-epoch grid is still there


def test_sample_steps_grids_come_from_the_current_generator(cfg):
    from bench.experiment import prepare
    from bench.step import build_step
    from bench.train import Member, train

    class Images(NullTracker):
        def __init__(self):
            self.logged = []

        def log_image(self, image, key, step):
            self.logged.append((key, step, image))

    c = build_config(cfg.model_dump(), {"train.sample_steps": [1, 9]})
    data = prepare(c, progress=False).train_full.subset(320)
    step = build_step(c, data)
    gan = step.gan
    z = torch.randn(4, c.model.latent_dim, generator=torch.Generator().manual_seed(0))
    y = torch.arange(4)

    def grid():
        with torch.no_grad():
            return gan.generator.eval()(z, y).clone()  # eval for the grid; train mode back below

    def samples(_gan):
        out = grid()
        gan.generator.train()
        return out

    tracker = Images()
    train(step, [Member(c, data, tracker, samples=samples)], progress=False)
    assert [(k, s) for k, s, _ in tracker.logged] == [("samples_at_step", 1), ("samples_at_step", 9), ("samples", 1)]
    assert not torch.equal(tracker.logged[0][2], tracker.logged[1][2])  # G kept training between them
    assert not torch.equal(tracker.logged[1][2], grid())  # and after step 9 (step 10 ends the epoch)


@pytest.mark.parametrize("bad", [[0], [-3], ["200"], [1.5], 7])
def test_sample_steps_must_be_positive_ints(bad):
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="train.sample_steps"):
        build_config(overrides={"train.sample_steps": bad})
