"""`gan-bench perf bench` with tiny sizes (every figure present and positive), the parity command, and the
fast-path claims that can be checked exactly: a joint D pass is the same computation as two passes,
freezing D in the G step changes no G gradient, and switches that are off stay off."""

import json
import math

import pytest
import torch

from bench.cli import main
from bench.run_config import build_config
from bench.step import autocast_dtype, build_gan, build_step, has_batch_stats
from tests.conftest import random_data

TINY_PERF = ["--device", "cpu", "--steps", "3", "--warmup", "1", "--eval-n", "100", "--track-subset", "64",
             "--track-epochs", "1", "--track-eval-n", "40", "--track-repeats", "1", "--textbook-workers", "0",
             "--concurrency", "1,2", "--groups", "1,2", "--group-steps", "2", "--rounds", "1", "--threads", "1",
             "--quiet",
             "--set", "data.download=false"]
# One torch thread: on a shared 2-core machine two threads per process mostly wait for each other.

FIGURES = [
    ("throughput", "textbook", "images_per_s"), ("throughput", "harness_plain", "images_per_s"),
    ("throughput", "harness", "images_per_s"), ("throughput", "speedup"),
    ("eval", "seconds"), ("eval", "seconds_cached_real"), ("eval", "n_generated"), ("eval", "n_real"),
    ("tracking", "trial_s_off"), ("tracking", "trial_s_on"), ("tracking", "tracking_s"), ("tracking", "overhead_pct"),
    ("memory", "host_peak_rss_mb"), ("memory", "workers_peak_rss_mb"),
    ("compute", "peak_gflops", "fp32"), ("compute", "speedup_at_peak"),
    *(("compute", loop, key) for loop in ("textbook", "harness_plain", "harness")
      for key in ("gflop_per_image", "gflops", "pct_of_peak", "images_per_s_at_peak")),
]


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


@pytest.fixture
def small_group_models(monkeypatch):
    """The group section's two kinds of model at width 16 (a fraction of the time)."""
    from bench.perf import groups
    from bench.perf.gpu_check import TINY_GROUP_MODELS

    monkeypatch.setattr(groups, "MODELS", TINY_GROUP_MODELS)
    return TINY_GROUP_MODELS


def test_perf_tiny_every_figure_present_and_positive(data_root, tmp_path, capsys, small_group_models):
    out = tmp_path / "out" / "perf.json"
    threads = torch.get_num_threads()
    assert main(["perf", "bench", "--data-root", str(data_root), *TINY_PERF, "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # --threads does not leak into the caller
    r = json.loads(out.read_text())
    for path in FIGURES:
        value = _get(r, path)
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (path, value)
    assert math.isfinite(r["tracking"]["ab_overhead_pct"])  # a difference of two timings: may be negative
    assert r["throughput"]["textbook"]["steps"] == r["throughput"]["harness"]["steps"] == 3
    assert r["throughput"]["textbook"]["batch_size"] == r["throughput"]["harness"]["batch_size"] == 32
    assert r["model"] == "dcgan-report000"
    levels = r["concurrency"]["levels"]
    assert [lv["trials"] for lv in levels] == [1, 2]
    assert [lv["threads_each"] for lv in levels] == [max(1, min(r["threads"], r["cpu_count"] // k)) for k in (1, 2)]
    for lv in levels:
        assert lv["images_per_s"] > 0 and lv["seconds"] > 0
    for model, rows in r["groups"]["models"].items():  # the report-000 DCGAN and report 002's CGAN
        assert [(row["members"], row["form"]) for row in rows] == [(1, "single run"), (2, "member_by_member")], model
        for row in rows:
            for key in ("grouped_images_per_s", "grouped_images_per_s_per_member", "sequential_images_per_s", "speedup"):
                assert math.isfinite(row[key]) and row[key] > 0, (model, row)
    assert len(r["groups"]["models"]) == 2
    printed = capsys.readouterr().out
    for label in ("textbook loop", "harness loop", "evaluation", "tracking overhead", "2 concurrent trial(s)",
                  "peak host RSS", "conv peak", "compute, harness loop", "group cgan-conv (report 002), width 16, K=2, member by member",
                  "group dcgan, width 16, K=1", str(out)):
        assert label in printed, label


def test_perf_parity_tiny_prints_both_rows(data_root, tmp_path, capsys):
    out = tmp_path / "parity.json"
    args = ["perf", "parity", "--data-root", str(data_root), "--device", "cpu", "--seeds", "2", "--epochs", "1",
            "--train-subset", "160", "--threads", "1", "--quiet", "--out", str(out)]
    for kv in ("data.download=false", "model.width=16", "eval.n_per_class=10", "eval.n_samples=100",
               "eval.n_real=100", "eval.splits=2", "eval.evaluator_epochs=1", "eval.evaluator_subset=1000"):
        args += ["--set", kv]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["model"] == "cgan-conv" and r["seeds"] == [0, 1]
    for path in ("plain", "fast"):
        assert len(r["runs"][path]) == 2
        for metric in ("tarr", "is", "fid", "train_s"):
            s = r["summary"][path][metric]
            assert math.isfinite(s["mean"]) and s["std"] >= 0, (path, metric, s)
    assert r["summary"]["plain"]["fast_path"]["fast"] is False
    assert r["summary"]["fast"]["fast_path"]["fast"] is True
    for metric in ("tarr", "is", "fid"):
        assert isinstance(r["comparison"][metric]["within_spread"], bool)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.strip().startswith("plain ") for line in lines)
    assert any(line.strip().startswith("fast ") for line in lines)
    assert any("within spread?" in line for line in lines)


# ---------------------------------------------------------------------------
# The fast path computes what the plain path computes


def _steps(overrides: dict, fast_overrides: dict):
    """Two GANSteps over identical copies of one GAN: plain, and with fast_overrides (fp32, NCHW unless asked)."""
    overrides = {"train.amp": False, "train.channels_last": False, **overrides}
    steps = []
    for extra in ({"train.fast": False}, fast_overrides):
        torch.manual_seed(0)  # the same initial nets
        steps.append(build_step(build_config(overrides={"device": "cpu", **overrides, **extra}), random_data()))
    return tuple(steps)


@pytest.mark.parametrize("model", ["dcgan-report000", "cgan-conv"])
def test_joint_d_pass_is_the_same_computation(model):
    # No dropout: otherwise the two paths draw different masks (same distribution, different numbers).
    plain, fast = _steps({"model.name": model, "model.d_dropout": 0.0, "model.width": 16}, {"train.fast": True})
    assert fast.settings.joint_d and not plain.settings.joint_d
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    labels = torch.randint(10, (8,))
    stats = []
    for step in (plain, fast):
        torch.manual_seed(1)  # same noise for the fakes
        stats.append(step.d_step(real, labels))
    torch.testing.assert_close(stats[0], stats[1], rtol=1e-4, atol=1e-5)
    for p_plain, p_fast in zip(plain.D.parameters(), fast.D.parameters()):
        torch.testing.assert_close(p_plain, p_fast, rtol=1e-4, atol=1e-6)  # same update (Adam's first step)


def test_joint_d_off_with_batch_norm_in_d():
    plain, fast = _steps({"model.name": "dcgan-report000", "model.d_norm": "batch"}, {"train.fast": True})
    assert has_batch_stats(fast.D) and not fast.settings.joint_d


def test_frozen_d_in_g_step_same_g_gradients_and_d_untouched():
    plain, fast = _steps({"model.name": "dcgan-report000", "model.d_dropout": 0.0}, {"train.fast": True})
    for step in (plain, fast):
        torch.manual_seed(2)
        step.g_step(torch.rand(8, 1, 28, 28) * 2 - 1, torch.randint(10, (8,)))
    for p_plain, p_fast in zip(plain.G.parameters(), fast.G.parameters()):
        torch.testing.assert_close(p_plain, p_fast, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in fast.D.parameters())  # no wasted D gradients
    assert all(p.grad is not None for p in plain.D.parameters())  # the textbook step computes them
    assert all(p.requires_grad for p in fast.D.parameters())  # and D trains again in the next D step


def test_flop_accounting_matches_the_loops(data_root):
    """The textbook step and the plain harness step differ by exactly one G forward (the harness draws
    fresh noise for its G step, the textbook reuses the D step's fakes); freezing D in the G step only
    removes work."""
    from bench.data import load_dataset
    from bench.perf import PLAIN, count_flops, harness_flops_per_image, textbook_flops_per_image

    cfg = build_config(overrides={"device": "cpu", "data.root": str(data_root), "data.download": False,
                                  "optim.batch_size": 8})
    cpu = torch.device("cpu")
    data = load_dataset(data_root, "mnist", "test", device=cpu)
    textbook = textbook_flops_per_image(cfg, cpu)
    plain = harness_flops_per_image(build_config(cfg.model_dump(), PLAIN), data)
    fast = harness_flops_per_image(cfg, data)
    generator = build_gan(cfg).generator
    g_forward = count_flops(lambda: generator(torch.randn(8, cfg.model.latent_dim))) / 8
    assert g_forward > 0
    assert plain - textbook == pytest.approx(g_forward)
    assert 0 < fast < plain


def test_eval_timing_with_virtual_batch_norm(data_root):
    """Nets with VBN refuse to run without reference batches: the evaluation timing must set them."""
    from bench.data import load_dataset
    from bench.perf.evaluation import eval_timing, timing_evaluator

    cfg = build_config(overrides={"device": "cpu", "data.root": str(data_root), "model.name": "cgan-conv",
                                  "model.width": 16, "model.g_norm": "virtual", "model.d_norm": "virtual"})
    test = load_dataset(data_root, "mnist", "test", device=torch.device("cpu"))
    r = eval_timing(cfg, timing_evaluator(cfg, test, test), test, 100)
    assert r["n_generated"] == 100 and r["seconds"] > 0


def test_switches():
    cpu = torch.device("cpu")
    assert autocast_dtype(build_config(overrides={"train.amp": False}).train, cpu) is None
    amp = autocast_dtype(build_config(overrides={"train.amp": True}).train, cpu)
    assert amp in (None, torch.bfloat16)  # bf16 only where the CPU runs it natively
    plain, fast = _steps({"model.name": "dcgan-report000", "train.amp": False, "train.channels_last": False},
                         {"train.channels_last": True})
    conv = lambda net: [p for p in net.parameters() if p.ndim == 4][-1]  # noqa: E731 (>1 channel)
    assert conv(fast.D).is_contiguous(memory_format=torch.channels_last)
    assert not conv(plain.D).is_contiguous(memory_format=torch.channels_last)
    assert fast.g_fwd is fast.G  # compile is CUDA-only: never on a CPU run
    compiled = build_step(build_config(overrides={"device": "cpu", "train.compile": "default"}), random_data())
    assert compiled.g_fwd is compiled.G and compiled.d_fwd is compiled.D


def test_the_group_rows_name_the_cuda_graph_only_where_there_is_one():
    from bench.perf.groups import format_groups

    def rows(tag):
        row = {"members": 3, "form": "vmap", "grouped_s": 1.0, "grouped_images_per_s": 96.0, "grouped_images_per_s_per_member": 32.0,
               "sequential_images_per_s": 48.0, "speedup": 2.0, "cuda_graph": tag}
        return format_groups({"models": {"dcgan": [row]}})[0][2]

    assert rows("off").endswith("grouped is 2.00x")  # the CPU: nothing to say
    assert rows("on").endswith("grouped is 2.00x; CUDA graph on")
    assert rows("off: capture failed (x)").endswith("; CUDA graph off: capture failed (x)")


def test_the_group_section_times_each_form_against_the_same_sequential_runs():
    from bench.perf.gpu_check import TINY_GROUP_MODELS
    from bench.perf.groups import GROUP_FORMS, group_throughput

    cfg = build_config(overrides={"device": "cpu", "model.width": 8})
    g = group_throughput(cfg, random_data(256), [1, 2], steps=2, warmup=0, progress=False, forms=GROUP_FORMS,
                         rounds=2, models=TINY_GROUP_MODELS)
    assert g["rounds"] == 2
    for rows in g["models"].values():
        assert [(r["members"], r["form"]) for r in rows] == [(1, "single run"), (2, "member_by_member"), (2, "vmap")]
        assert rows[1]["sequential_s"] == rows[2]["sequential_s"]  # one baseline per K, shared by the forms
        for r in rows:
            assert r["speedup"] == pytest.approx(r["sequential_s"] / r["grouped_s"])
