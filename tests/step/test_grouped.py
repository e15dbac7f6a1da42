"""K members trained as one `GroupedStep` equal K sequential runs: same curves, evaluations and checkpoints.

Members differ in seed and learning rate (and in techniques' values), so each has its own RNG stream,
data order and Adam hyperparameters. Member by member (the CPU's form) a group is exactly its sequential
runs. Vmapped (the GPU's form, also run here), tolerances: a grouped convolution rounds differently from K
separate ones (1e-7), and training amplifies that. Adam moves a parameter by about lr whatever the size
of its gradient, so a gradient that is exactly zero in one run and 1e-12 in the other (a hinge beyond its
margin, a bias before batch norm) makes a jump; over 12 iterations curves agree to 1e-2 relative, and D's
accuracies to a few examples. With batch norm (or VBN) after a biased layer that bias's gradient is zero
up to rounding at every step, so there the per-iteration arithmetic is compared tightly (statistics,
gradients, running statistics) and whole runs loosely. A real mistake (a member on another's RNG stream,
rate or data) changes the curves at the first logged step.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.run_config import build_config
from bench.step import build_grouped_step, build_step, grouping_refusal
from bench.train import Checkpoint, Member, train
from tests.conftest import random_data
from tests.test_gpu_path import host_syncs

TINY = {"device": "cpu", "optim.epochs": 2, "optim.batch_size": 16, "model.width": 16, "model.hidden": 32,
        "train.amp": False, "train.log_every": 2, "model.d_dropout": 0.0, "model.d_norm": "none",
        "model.g_norm": "none"}
MEMBERS = [{"seed": 1, "optim.lr": 2e-4}, {"seed": 2, "optim.lr": 1e-3}, {"seed": 3, "optim.lr": 5e-4}]
CASES = {
    "cgan-conv": {"model.name": "cgan-conv"},
    "cgan-mlp-targets-noise-ema": {"model.name": "cgan-mlp", "techniques.real_target": 0.9,
                                   "techniques.flip_prob": 0.1, "techniques.ttur_ratio": 4.0,
                                   "techniques.d_steps": 2, "techniques.instance_noise_std": 0.5,
                                   "techniques.ema_decay": 0.9, "techniques.diffaug": "translation,cutout"},
    "dcgan-hinge": {"model.name": "dcgan", "techniques.hinge": True, "techniques.g_steps": 2},
    "dcgan-report000-uniform": {"model.name": "dcgan-report000", "model.latent_prior": "uniform"},
    "vanilla-saturating": {"model.name": "vanilla", "techniques.g_loss": "saturating"},
    # randomness inside D (dropout masks) and hooks that call D themselves (penalties, feature matching)
    "cgan-conv-dropout2d-r1": {"model.name": "cgan-conv", "model.d_dropout": 0.25, "techniques.r1_gamma": 1.0},
    "vanilla-dropout-wgan-gp": {"model.name": "vanilla", "model.d_dropout": 0.5, "techniques.wgan_gp_lambda": 10.0,
                                "techniques.d_steps": 2},
    "cgan-mlp-dropout-fm-r2": {"model.name": "cgan-mlp", "model.d_dropout": 0.25, "techniques.feature_matching": True,
                               "techniques.r2_gamma": 10.0},
    "dcgan-minibatch-std": {"model.name": "dcgan", "model.d_minibatch_std": True},
}
REL = 1e-2
NORMALIZED = {  # batch norm (report 002's conditional DCGAN) and virtual batch norm, in G and D
    "batch": {"model.name": "cgan-conv", "model.d_norm": "batch", "model.g_norm": "batch"},
    "virtual": {"model.name": "dcgan", "model.g_norm": "virtual", "model.d_norm": "virtual", "model.vbn_ref_size": 8},
}


def configs(case: dict, members=MEMBERS, **extra):
    return [build_config(overrides={**TINY, **case, **m, **extra}) for m in members]


class Recorder:
    """A tracker that keeps what was logged: {key: {step: value}}."""

    def __init__(self):
        self.metrics: dict[str, dict[int, float]] = {}
        self.tags: dict[str, str] = {}

    def log_metrics(self, values, step):
        for k, v in values.items():
            self.metrics.setdefault(k, {})[step] = v

    def set_tags(self, tags):
        self.tags.update({k: str(v) for k, v in tags.items()})

    def __getattr__(self, name):
        return lambda *a, **kw: None


def g_outputs(gan) -> dict[str, float]:
    """A cheap evaluation: G in eval mode on fixed noise (batch-norm statistics and averages included)."""
    G = gan.generator
    G.eval()
    with torch.no_grad():
        z = torch.randn(8, 100, generator=torch.Generator().manual_seed(0))
        out = G(z, torch.arange(8) if gan.conditional else None)
    G.train()
    return {"mean": out.mean().item(), "std": out.std().item()}


def members(cfgs, data, **kw):
    return [Member(c, data, Recorder(), evaluate=g_outputs, **kw) for c in cfgs]


def sequential(cfgs, data):
    out = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        step = build_step(cfg, data)
        (m,) = members([cfg], data)
        (result,) = train(step, [m], progress=False)
        out.append((m.tracker, result, step.state_dict(0)))
    return out


def grouped(cfgs, data):
    step = build_grouped_step(cfgs, [data] * len(cfgs))
    ms = members(cfgs, data)
    results = train(step, ms, progress=False)
    return [(m.tracker, r, step.state_dict(k)) for k, (m, r) in enumerate(zip(ms, results))], step


def assert_close_logs(a: Recorder, b: Recorder, rel: float = REL, abs_: float = 1e-4):
    assert a.metrics.keys() == b.metrics.keys()
    for key in a.metrics:
        if key.startswith("time/"):
            continue
        assert a.metrics[key].keys() == b.metrics[key].keys(), key
        for step, v in a.metrics[key].items():
            tol = 0.1 if "acc" in key else abs_  # an accuracy moves in steps of one example
            assert math.isclose(v, b.metrics[key][step], rel_tol=rel, abs_tol=tol), (key, step, v, b.metrics[key][step])


def assert_close_states(a: dict, b: dict, atol: float):
    for net in ("G", "D"):
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            torch.testing.assert_close(a[net][k], b[net][k], rtol=0, atol=atol, msg=f"{net}.{k}")
    for opt in ("opt_g", "opt_d"):
        assert a[opt]["state"].keys() == b[opt]["state"].keys()
        assert a[opt]["param_groups"][0]["lr"] == b[opt]["param_groups"][0]["lr"]
    assert int(a["iteration"]) == int(b["iteration"])
    assert a["techniques"].keys() == b["techniques"].keys()


def assert_equal_logs(a: Recorder, b: Recorder):
    assert {k: v for k, v in a.metrics.items() if not k.startswith("time/")} == \
        {k: v for k, v in b.metrics.items() if not k.startswith("time/")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_member_by_member_groups_equal_sequential_runs_bit_for_bit(case):
    """The CPU's form: each member's own kernels on its slices, and torch's Adam kernel on its state."""
    cfgs, data = configs(CASES[case], **{"train.group_forward": "member_by_member"}), random_data(96)
    assert grouping_refusal(cfgs) is None
    seq = sequential(cfgs, data)
    grp, step = grouped(cfgs, data)
    for (a_log, a_res, a_state), (b_log, b_res, b_state) in zip(seq, grp):
        assert_equal_logs(a_log, b_log)
        assert a_res.history.steps == b_res.history.steps and a_res.history.epochs == b_res.history.epochs
        assert_close_states(a_state, b_state, atol=0)
    assert b_log.tags["train.group_size"] == "3" and b_log.tags["train.group_forward"] == "member_by_member"
    # the members really differ (their own seeds, data orders and rates)
    curves = [log.metrics["train/loss_d"] for log, _, _ in grp]
    assert curves[0] != curves[1] != curves[2]


@pytest.mark.parametrize("case", sorted(CASES))
def test_vmapped_groups_equal_sequential_runs(case):
    """The GPU's form, run here on the CPU: grouped convolutions round differently (tolerances above)."""
    cfgs, data = configs(CASES[case], **{"train.group_forward": "vmap"}), random_data(96)
    seq = sequential(cfgs, data)
    grp, step = grouped(cfgs, data)
    for (a_log, a_res, a_state), (b_log, b_res, b_state) in zip(seq, grp):
        # abs 2e-4: report 000's DCGAN on uniform noise leaves G's outputs nearly constant after 12 tiny
        # iterations (std 4e-3), where a 0.3% drift of the curves is 1e-4 of that std
        assert_close_logs(a_log, b_log, abs_=2e-4)
        assert a_res.history.steps == b_res.history.steps and a_res.history.epochs == b_res.history.epochs
        assert_close_states(a_state, b_state, atol=1e-2)
    assert b_log.tags["train.group_forward"] == "vmap"


def test_auto_picks_member_by_member_on_the_cpu():
    cfgs = configs(CASES["vanilla-saturating"])
    assert cfgs[0].train.group_forward == "auto"
    assert build_grouped_step(cfgs, [random_data(32)] * 3).tags["train.group_forward"] == "member_by_member"


@pytest.mark.parametrize("norm", sorted(NORMALIZED))
def test_with_batch_norm_one_vmapped_iteration_has_the_same_statistics_and_gradients(norm):
    """Per-member statistics, D's gradients and its running statistics after one D step."""
    cfgs = configs(NORMALIZED[norm], **{"train.group_forward": "vmap"})
    data = random_data(96)
    real, labels = data.sample(16, torch.Generator().manual_seed(5))
    expected = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        s = build_step(cfg, data)
        stats = s.d_step(real, labels)
        expected.append((stats, {n: p.grad.clone() for n, p in s.D.named_parameters()},
                         {n: b.clone() for n, b in s.D.named_buffers()}))
    step = build_grouped_step(cfgs, [data] * 3)
    stats = step.d_step(real.expand(3, *real.shape).contiguous(), labels.expand(3, 16).contiguous())
    for k, (s_stats, grads, buffers) in enumerate(expected):
        torch.testing.assert_close(stats[k], s_stats, rtol=1e-5, atol=1e-6)
        scale = max(g.abs().max() for g in grads.values())  # D's largest gradient
        for n, g in grads.items():
            assert (step.d_params[n].grad[k] - g).abs().max() <= 1e-5 * scale, n
        for n, b in buffers.items():  # batch norm's running statistics, per member
            torch.testing.assert_close(dict(step.steps[k].D.named_buffers())[n], b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["member_by_member", "vmap"])
@pytest.mark.parametrize("norm", sorted(NORMALIZED))
def test_with_batch_norm_whole_runs_agree(norm, form):
    cfgs = configs(NORMALIZED[norm], **{"train.group_forward": form})
    data = random_data(96)
    seq, (grp, _) = sequential(cfgs, data), grouped(cfgs, data)
    for (a_log, _, a_state), (b_log, _, b_state) in zip(seq, grp):
        if form == "member_by_member":
            assert_equal_logs(a_log, b_log)
            assert_close_states(a_state, b_state, atol=0)
        else:
            assert_close_logs(a_log, b_log, rel=5e-2, abs_=1e-3)


@pytest.mark.parametrize("form", ["member_by_member", "vmap"])
def test_a_diverging_member_leaves_the_others_unchanged(form):
    cfgs, data = configs(CASES["cgan-conv"], **{"train.group_forward": form}), random_data(96)
    clean, _ = grouped(cfgs, data)
    step = build_grouped_step(cfgs, [data] * 3)
    with torch.no_grad():
        next(step.steps[1].D.parameters()).fill_(float("nan"))  # member 1 diverges at its first step
    ms = members(cfgs, data)
    results = train(step, ms, progress=False)
    assert results[1].diverged and "non-finite" in results[1].stop_reason
    assert not results[0].diverged and not results[2].diverged
    for k in (0, 2):
        assert ms[k].tracker.metrics["train/loss_d"] == clean[k][0].metrics["train/loss_d"]  # bit for bit
        assert ms[k].tracker.metrics["eval/mean"] == clean[k][0].metrics["eval/mean"]


class Killed(BaseException):
    pass


def test_a_killed_group_resumes_from_its_members_checkpoints(tmp_path):
    cfgs, data = configs(CASES["cgan-mlp-targets-noise-ema"]), random_data(96)
    uninterrupted, _ = grouped(cfgs, data)

    def kill(epoch, metrics):
        raise Killed

    step = build_grouped_step(cfgs, [data] * 3)
    checkpoints = [Checkpoint(tmp_path / f"m{k}.pt") for k in range(3)]
    first = [Member(c, data, Recorder(), evaluate=g_outputs, checkpoint=ck, hooks=[kill] if k == 2 else [])
             for k, (c, ck) in enumerate(zip(cfgs, checkpoints))]
    with pytest.raises(Killed):  # the process dies after epoch 1 (every member's checkpoint is saved by then)
        train(step, first, progress=False)
    assert all(ck.path.exists() for ck in checkpoints)
    step = build_grouped_step(cfgs, [data] * 3)
    second = [Member(c, data, Recorder(), evaluate=g_outputs, checkpoint=ck) for c, ck in zip(cfgs, checkpoints)]
    resumed = train(step, second, progress=False)
    for k, m in enumerate(second):
        assert m.tracker.tags["resumed_from_epoch"] == "1"
        assert_close_logs(uninterrupted[k][0], m.tracker, rel=1e-6)
        assert_close_states(uninterrupted[k][2], step.state_dict(k), atol=1e-6)
        assert resumed[k].history.epochs == [1, 2]


def test_a_grouped_members_checkpoint_resumes_as_a_sequential_run(tmp_path):
    """Checkpoints have the sequential format: a member can go on alone (e.g. with --no-group)."""
    cfgs, data = configs(CASES["cgan-conv"]), random_data(96)
    step = build_grouped_step(cfgs, [data] * 3)
    train(step, members(cfgs, data), progress=False)
    state = step.state_dict(1)
    torch.manual_seed(99)
    alone = build_step(cfgs[1], data)
    alone.load_state_dict(0, state)
    assert_close_states(state, alone.state_dict(0), atol=0)
    assert alone.opt_d.state_dict()["state"][0]["exp_avg"].shape == state["opt_d"]["state"][0]["exp_avg"].shape


@pytest.mark.parametrize("form", ["member_by_member", "vmap"])
def test_no_host_sync_inside_a_grouped_iteration(form):
    cfgs, data = configs(CASES["cgan-mlp-targets-noise-ema"], **{"train.group_forward": form}), random_data(96)
    step = build_grouped_step(cfgs, [data] * 3)
    gens = [torch.Generator().manual_seed(k) for k in range(3)]
    feeds = [data.epoch(16, g) for g in gens]
    step.iteration(feeds)  # the first one creates optimizer state
    with host_syncs() as syncs:
        for _ in range(2):
            step.iteration(feeds)
    assert syncs == []


@pytest.mark.parametrize("change, reason", [
    ({"techniques.hist_avg_lambda": 1.0}, "technique historical_averaging"),
    ({"model.d_spectral_norm": True}, "technique spectral_norm"),
])
def test_what_cannot_be_grouped_says_why(change, reason):
    assert reason in grouping_refusal(configs(CASES["cgan-conv"], **change))


def test_members_must_share_shapes_and_the_loop():
    base = configs(CASES["cgan-conv"])
    wider = build_config(overrides={**TINY, **CASES["cgan-conv"], "model.width": 32})
    assert "model sections differ" in grouping_refusal([base[0], wider])
    other_batch = build_config(overrides={**TINY, **CASES["cgan-conv"], "optim.batch_size": 32})
    assert "optim.batch_size" in grouping_refusal([base[0], other_batch])
    more_d = build_config(overrides={**TINY, **CASES["cgan-conv"], "techniques.d_steps": 2})
    assert "update_schedule" in grouping_refusal([base[0], more_d])
    with pytest.raises(ValueError, match="cannot train as one group"):
        build_grouped_step([base[0], wider], [random_data(32)] * 2)
