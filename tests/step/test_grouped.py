"""K members trained as one `GroupedStep` equal K sequential runs: same curves, evaluations and checkpoints.

Members differ in seed and learning rate (and in techniques' values), so each has its own RNG stream,
data order and Adam hyperparameters. Member by member (the CPU's form) a group is exactly its sequential
runs. Vmapped (the GPU's form, also run here), a grouped convolution does the same float32 sums in another
order, and training amplifies the difference: Adam moves a parameter by about lr whatever the size of its
gradient, so a gradient that is exactly zero in one run and 1e-12 in the other (a hinge beyond its margin, a
bias before batch norm) makes a jump. So the tolerances come from the runs themselves: each sequential run is
repeated with its nets computing in float64 (`float64_nets`), and the vmapped run may differ from the
sequential one by (1 + REORDERED) times the sequential runs' own gap to those twins, step by step and net by
net (REORDERED: how much worse another order of the same float32 sums may round). One D step with batch norm
or VBN is compared the same way: statistics, gradients, running statistics.
A real mistake (a member on another's RNG stream, rate or data) changes the curves at the first logged step,
far beyond rounding.
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
EPS32 = torch.finfo(torch.float32).eps
# The grouped path does the same float32 sums as the sequential one in another order (a grouped convolution
# blocks them differently, a vmapped reduction runs over another layout). A float32 sum of n terms is off by about
# sqrt(n) eps in a balanced order and by up to n eps in the worst, so the grouped path's error may exceed the
# sequential one's by sqrt(n) for the longest sum of a step: a weight gradient over a batch of 28x28 images.
# Grouped and sequential results may then differ by up to (1 + REORDERED) times the sequential path's error.
# (Measured: up to 15x for vmapped VBN with ATen and oneDNN capped at SSE4.1, up to 5x elsewhere.)
REORDERED = math.sqrt(16 * 28 * 28)
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


def widen(x):
    return x.double() if torch.is_tensor(x) and x.is_floating_point() else x


def narrow(x):
    return x.float() if torch.is_tensor(x) and x.dtype == torch.float64 else x


def float64_nets(step):
    """`step` (a sequential one) with both nets (and the techniques' copies of them, an EMA's G) computing in
    float64 inside and float32 at their edges: the losses and every random draw stay as in the float32 run
    (same streams, same dtypes), so the two runs differ by the nets' float32 rounding (and the Adam steps on it)."""
    copies = [v for t in step.hooks.items for v in vars(t).values() if isinstance(v, torch.nn.Module)]
    for net in (step.G, step.D, *copies):
        net.double()
        for module in net.modules():  # also the inner modules that techniques call directly (D's features)
            module.register_forward_pre_hook(lambda m, args: tuple(widen(a) for a in args))
        net.register_forward_hook(lambda m, args, out: tuple(map(narrow, out)) if isinstance(out, tuple)
                                  else narrow(out))
    return step


def sequential(cfgs, data, float64: bool = False):
    out = []
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        step = build_step(cfg, data)
        if float64:
            float64_nets(step)
        (m,) = members([cfg], data)
        (result,) = train(step, [m], progress=False)
        out.append((m.tracker, result, step.state_dict(0)))
    return out


def grouped(cfgs, data):
    step = build_grouped_step(cfgs, [data] * len(cfgs))
    ms = members(cfgs, data)
    results = train(step, ms, progress=False)
    return [(m.tracker, r, step.state_dict(k)) for k, (m, r) in enumerate(zip(ms, results))], step


def assert_within_rounding_logs(seq: list[Recorder], twins: list[Recorder], grp: list[Recorder], batch: int):
    """Each member's logged curves in the grouped run are within (1 + REORDERED) times the sequential runs' own
    rounding error at that step (their largest gap to the float64 twins over the members: training amplifies
    rounding step by step), and at least one rounding (one example, for an accuracy)."""
    for a, b in zip(seq, grp):
        assert a.metrics.keys() == b.metrics.keys() and all(a.metrics[k].keys() == b.metrics[k].keys()
                                                            for k in a.metrics)
    for key in seq[0].metrics:
        if key.startswith("time/"):
            continue
        a, x, b = (torch.tensor([[log.metrics[key][i] for i in seq[0].metrics[key]] for log in logs],
                                dtype=torch.float64) for logs in (seq, twins, grp))  # (members, steps)
        floor = torch.full_like(x[0], 1 / batch) if "acc" in key else EPS32 * x.abs().amax(0)
        bound = (1 + REORDERED) * torch.maximum((a - x).abs().amax(0), floor)
        assert ((b - a).abs() <= bound).all(), (key, a.tolist(), b.tolist(), bound.tolist())


def assert_within_rounding_states(seq: list[dict], twins: list[dict], grp: list[dict]):
    """As `assert_within_rounding_logs` for each net's weights, with the net's largest rounding error as scale."""
    for net in ("G", "D"):
        floats = [k for k in seq[0][net] if seq[0][net][k].is_floating_point()]
        bound = (1 + REORDERED) * max(rounding_error([a[net][k] for k in floats], [x[net][k] for k in floats])
                                      for a, x in zip(seq, twins))
        for m, (a, b) in enumerate(zip(seq, grp)):
            for k in a[net]:
                assert (b[net][k] - a[net][k]).abs().max() <= bound, (m, f"{net}.{k}", bound)


def assert_close_states(a: dict, b: dict, atol: float | None):
    """The same nets (weights within `atol`; None: not compared), optimizer state, iteration and techniques."""
    for net in ("G", "D"):
        assert a[net].keys() == b[net].keys()
        for k in a[net] if atol is not None else ():
            torch.testing.assert_close(a[net][k], b[net][k], rtol=0, atol=atol, msg=f"{net}.{k}")
    for opt in ("opt_g", "opt_d"):
        assert a[opt]["state"].keys() == b[opt]["state"].keys()
        assert a[opt]["param_groups"][0]["lr"] == b[opt]["param_groups"][0]["lr"]
    assert int(a["iteration"]) == int(b["iteration"])
    assert a["techniques"].keys() == b["techniques"].keys()


def assert_equal_logs(a: Recorder, b: Recorder):
    assert {k: v for k, v in a.metrics.items() if not k.startswith("time/")} == \
        {k: v for k, v in b.metrics.items() if not k.startswith("time/")}


# The report-000 DCGAN's case takes 15-25 s; the others cover the same code in a few seconds each.
CASE_PARAMS = [pytest.param(c, marks=pytest.mark.slow) if c == "dcgan-report000-uniform" else c for c in sorted(CASES)]


@pytest.mark.parametrize("case", CASE_PARAMS)
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


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_vmapped_groups_equal_sequential_runs(case):
    """The GPU's form, run here on the CPU: grouped convolutions round differently (tolerances above)."""
    cfgs, data = configs(CASES[case], **{"train.group_forward": "vmap"}), random_data(96)
    seq, twins = sequential(cfgs, data), sequential(cfgs, data, float64=True)
    grp, step = grouped(cfgs, data)
    assert step.tags["train.group_forward"] == "vmap"
    assert_within_rounding_logs(*([log for log, _, _ in runs] for runs in (seq, twins, grp)),
                                batch=cfgs[0].optim.batch_size)
    assert_within_rounding_states(*([state for _, _, state in runs] for runs in (seq, twins, grp)))
    for (_, a_res, a_state), (_, b_res, b_state) in zip(seq, grp):
        assert a_res.history.steps == b_res.history.steps and a_res.history.epochs == b_res.history.epochs
        assert_close_states(a_state, b_state, atol=None)


def test_auto_picks_member_by_member_on_the_cpu():
    cfgs = configs(CASES["vanilla-saturating"])
    assert cfgs[0].train.group_forward == "auto"
    assert build_grouped_step(cfgs, [random_data(32)] * 3).tags["train.group_forward"] == "member_by_member"


def one_d_step(cfg, data, real, labels, float64: bool = False):
    """One sequential D step from the member's first state: its statistics, D's gradients and buffers, and D's
    logits (real, then fake); with `float64`, the nets' float64 twin (`float64_nets`)."""
    torch.manual_seed(cfg.seed)
    s = build_step(cfg, data)
    if float64:
        float64_nets(s)
    logits = []
    s.D.register_forward_hook(lambda m, args, out: logits.append(out.detach()))
    stats = s.d_step(real, labels)
    return (stats, {n: p.grad.clone() for n, p in s.D.named_parameters()},
            {n: b.clone() for n, b in s.D.named_buffers()}, logits)


def rounding_error(f32, f64) -> float:
    """The float32 path's largest error against its float64 twin over a set of tensors (sequences or dicts),
    and at least one rounding of the largest value."""
    pairs = zip(f32.values(), f64.values()) if isinstance(f32, dict) else zip(f32, f64)
    return max(max((a.double() - b).abs().max().item(), EPS32 * b.abs().max().item()) for a, b in pairs)


@pytest.mark.parametrize("norm", sorted(NORMALIZED))
def test_with_batch_norm_one_vmapped_iteration_has_the_same_statistics_and_gradients(norm):
    """Per-member statistics, D's gradients and its running statistics after one D step, within (1 + REORDERED)
    times the sequential steps' own rounding error (against their float64 twins)."""
    cfgs = configs(NORMALIZED[norm], **{"train.group_forward": "vmap"})
    data = random_data(96)
    real, labels = data.sample(16, torch.Generator().manual_seed(5))
    sequential_steps = [one_d_step(cfg, data, real, labels) for cfg in cfgs]
    twins = [one_d_step(cfg, data, real, labels, float64=True) for cfg in cfgs]
    step = build_grouped_step(cfgs, [data] * 3)
    assert step.tags["train.group_forward"] == "vmap"
    stats = step.d_step(real.expand(3, *real.shape).contiguous(), labels.expand(3, 16).contiguous())

    def bound(pick) -> float:  # over the members, as in `assert_within_rounding_logs`
        return (1 + REORDERED) * max(rounding_error(pick(a), pick(x)) for a, x in zip(sequential_steps, twins))

    grads = bound(lambda run: run[1])
    buffers = bound(lambda run: [b for b in run[2].values() if b.is_floating_point()] or [torch.zeros(())])
    statistics = bound(lambda run: [run[0][:3]])  # loss, mean D(real), mean D(fake)
    logits = bound(lambda run: run[3])
    for k, ((s_stats, s_grads, s_buffers, _), (_, _, _, x_logits)) in enumerate(zip(sequential_steps, twins)):
        for n, g in s_grads.items():
            assert (step.d_params[n].grad[k] - g).abs().max() <= grads, (k, n, grads)
        for n, b in s_buffers.items():  # batch norm's running statistics (VBN's reference batch), per member
            assert (dict(step.steps[k].D.named_buffers())[n] - b).abs().max() <= buffers, (k, n, buffers)
        assert (stats[k][:3] - s_stats[:3]).abs().max() <= statistics, (k, stats[k], s_stats, statistics)
        for i, exact in enumerate(x_logits):  # an accuracy may differ by the logits within rounding of 0
            near_zero = int((exact.abs() <= logits).sum())
            assert abs(stats[k][3 + i] - s_stats[3 + i]) <= near_zero / len(exact), (k, i, stats[k], s_stats)


@pytest.mark.parametrize("form", ["member_by_member", "vmap"])
@pytest.mark.parametrize("norm", sorted(NORMALIZED))
def test_with_batch_norm_whole_runs_agree(norm, form):
    cfgs = configs(NORMALIZED[norm], **{"train.group_forward": form})
    data = random_data(96)
    seq, (grp, step) = sequential(cfgs, data), grouped(cfgs, data)
    assert step.tags["train.group_forward"] == form
    if form == "member_by_member":
        for (a_log, _, a_state), (b_log, _, b_state) in zip(seq, grp):
            assert_equal_logs(a_log, b_log)
            assert_close_states(a_state, b_state, atol=0)
    else:
        twins = sequential(cfgs, data, float64=True)
        assert_within_rounding_logs(*([log for log, _, _ in runs] for runs in (seq, twins, grp)),
                                    batch=cfgs[0].optim.batch_size)
        assert_within_rounding_states(*([state for _, _, state in runs] for runs in (seq, twins, grp)))


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
        # the same kernels in the same order, from the same state and RNG: bit for bit
        assert_equal_logs(uninterrupted[k][0], m.tracker)
        assert_close_states(uninterrupted[k][2], step.state_dict(k), atol=0)
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
