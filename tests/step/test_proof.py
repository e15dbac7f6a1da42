"""Fast paths prove themselves (`bench.step.proof`), checked on the CPU.

A vmapped group is a fast path a CPU runs (`train.group_forward = "vmap"`). The CUDA graph is dry-run
here with `tests/step/test_graphed.py`'s stand-in capture, whose replay runs the recorded iteration. A
wrong fast path is one that skips a technique hook or drops a penalty: its proof must fail, the run must
train on the plain path exactly as a plain run does, and it must say why once and record it in its tag.
"""

from __future__ import annotations

import json

import pytest
import torch

from bench.run_config import build_config
from bench.step import build_grouped_step, build_step, factory, proof
from bench.step.graphed import GraphedStep
from bench.train import train
from tests.conftest import random_data
from tests.step.test_graphed import _Recorded, _refused
from tests.step.test_grouped import MEMBERS, TINY, assert_close_states, assert_equal_logs, configs, members

NOISE = {"model.name": "cgan-mlp", "techniques.instance_noise_std": 0.5}  # a d_input hook
R1 = {"model.name": "cgan-mlp", "techniques.r1_gamma": 1.0}               # a penalty that calls D itself
VMAP = {"train.group_forward": "vmap"}
SINGLE = {**TINY, **NOISE, "seed": 3, "optim.epochs": 1}
DATA = random_data(64)  # 4 batches of 16: an epoch


def group(case: dict, **extra):
    """Two members, differing in seed and learning rate, for one epoch."""
    return configs(case, MEMBERS[:2], **{"optim.epochs": 1, **extra})


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    """Each test starts with an empty cache folder, no outcomes and nothing said yet."""
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(proof, "OUTCOMES", {})
    monkeypatch.setattr(proof, "_SAID", set())


def _checks(monkeypatch) -> list[str]:
    """The fast paths actually checked (not read from the cache) from now on."""
    done, real = [], proof.check
    monkeypatch.setattr(proof, "check", lambda path, *a, **kw: done.append(path) or real(path, *a, **kw))
    return done


def _skip(step, what: str):
    """Break a member's step the way a wrong fast path would: skip the d_input hook, or drop R1."""
    if what == "d_input":
        step.hooks.d_input = lambda x, real: x
    else:
        step.hooks.items = [t for t in step.hooks.items if type(t).name != "r1"]
    return step


def _wrong_vmap(monkeypatch, what: str) -> None:
    """The vmapped group built on members that skip a hook; member by member stays right."""
    real = factory.GroupedStep

    def build(steps, *args, forward, **kw):
        if forward == "vmap":
            steps = [_skip(s, what) for s in steps]
        return real(steps, *args, forward=forward, **kw)
    monkeypatch.setattr(factory, "GroupedStep", build)


def _graph_on_cpu(monkeypatch, *captures) -> None:
    """CUDA graphs allowed on the CPU, each GraphedStep built with the next stand-in capture."""
    captures = iter(captures)
    monkeypatch.setattr(factory, "graph_refusal", lambda cfg, device: None)
    monkeypatch.setattr(factory, "GraphedStep", lambda step: next(captures)(step))


def _group_run(cfgs):
    step = build_grouped_step(cfgs, [DATA] * len(cfgs))
    ms = members(cfgs, DATA)
    train(step, ms, progress=False)
    return ms, step


def _single_run(overrides=SINGLE):
    cfg = build_config(overrides=overrides)
    torch.manual_seed(cfg.seed)
    step = build_step(cfg, DATA)
    (m,) = members([cfg], DATA)
    train(step, [m], progress=False)
    return m, step


# -- the tolerances -------------------------------------------------------------------------------


def test_tolerances_follow_the_precision_and_are_looser_under_autocast():
    fp32, bf16, fp16 = (proof.tolerances(p) for p in (None, torch.bfloat16, torch.float16))
    unit = torch.finfo(torch.float32).eps ** 0.75
    assert fp32 == (proof.LOSS_TOL * unit, proof.GRAD_TOL * unit, proof.WEIGHT_TOL * unit)
    assert all(a < b < c for a, b, c in zip(fp32, fp16, bf16))
    assert fp32[1] < 1e-4 and bf16[1] < 0.4  # below a skipped instance-noise hook's 0.5 in either precision


# -- a vmapped group --------------------------------------------------------------------------------


def test_a_vmapped_group_proves_itself_once_and_trains_vmapped(monkeypatch, tmp_path):
    checked = _checks(monkeypatch)
    step = build_grouped_step(group(NOISE, **VMAP), [DATA] * 2)
    assert step.tags["train.fast_path"] == "vmap" and step.tags["train.group_forward"] == "vmap"
    assert checked == ["vmap"]
    (outcome,) = proof.OUTCOMES.values()
    assert outcome.passed and not outcome.cached and outcome.outcome == "passed"
    assert outcome.loss_gap <= outcome.tolerances[0] and outcome.grad_gap <= outcome.tolerances[1]
    (file,) = (tmp_path / "cache" / "fast-paths").iterdir()
    saved = json.loads(file.read_text())
    assert saved["passed"] and saved["key"]["path"] == "vmap" and saved["key"]["members"] == 2
    assert saved["key"]["torch"] == torch.__version__ and saved["key"]["device"].startswith("cpu: ")

    monkeypatch.setattr(proof, "OUTCOMES", {})  # a second run (another trial) on this machine: read, not run
    assert build_grouped_step(group(NOISE, **VMAP), [DATA] * 2).tags["train.fast_path"] == "vmap"
    assert checked == ["vmap"]
    (outcome,) = proof.OUTCOMES.values()
    assert outcome.cached and outcome.outcome == "passed (cached)"


def test_the_cache_key_names_the_shapes_not_the_seed_or_rates():
    key = factory._signature(group(NOISE, **VMAP), DATA, True, [])
    assert key == factory._signature(group(NOISE, **VMAP, **{"optim.lr": 1e-2}), DATA, True, [])  # a study's trials
    for other in (factory._signature(group(NOISE, **VMAP, **{"model.hidden": 48}), DATA, True, []),
                  factory._signature(group(NOISE, **VMAP)[:1], DATA, True, []),
                  factory._signature(group(R1, **VMAP), DATA, True, []),
                  factory._signature(group(NOISE, **VMAP, **{"optim.batch_size": 8}), DATA, True, []),
                  factory._signature(group(NOISE, **VMAP), DATA, True, ["vmap"])):
        assert other != key


def test_the_cache_is_read_back_misses_for_another_torch_version_and_rewrites_a_damaged_entry(monkeypatch, tmp_path):
    checked = _checks(monkeypatch)
    cfg, cpu = build_config(overrides=SINGLE), torch.device("cpu")

    def prove():
        step = lambda: factory._assemble([cfg], [DATA], [None], False, [])  # noqa: E731
        batches = proof.draw_batches([DATA], 16, 1, proof.ITERATIONS)
        return proof.prove("test", {"shape": 1}, step, step, batches, None, cpu)

    assert not prove().cached and prove().cached and checked == ["test"]
    version = torch.__version__
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert not prove().cached and len(checked) == 2
    monkeypatch.setattr(torch, "__version__", version)
    assert prove().cached and len(checked) == 2  # this version's entry is still there
    files = sorted((tmp_path / "cache" / "fast-paths").iterdir())
    assert len(files) == 2
    for file in files:
        file.write_text("{not json")
    assert not prove().cached and len(checked) == 3
    assert sum(f.read_text().startswith("{not") for f in files) == 1  # rewritten: this version's entry
    assert prove().cached


@pytest.mark.parametrize("case,what", [(NOISE, "d_input"), pytest.param(R1, "r1", marks=pytest.mark.slow)])
def test_a_wrong_vmapped_group_is_refused_and_trains_as_the_plain_group(monkeypatch, capsys, case, what):
    plain_ms, plain_step = _group_run(group(case, **{"train.group_forward": "member_by_member"}))
    _wrong_vmap(monkeypatch, what)
    ms, step = _group_run(group(case, **VMAP))
    tag = step.tags["train.fast_path"]
    assert tag.startswith("eager (check failed: vmap: ") and "differ by" in tag, tag
    assert step.tags["train.group_forward"] == "member_by_member"
    for m, p in zip(ms, plain_ms):
        assert m.tracker.tags["train.fast_path"] == tag  # the run records it
        assert_equal_logs(m.tracker, p.tracker)
    for k in range(2):
        assert_close_states(step.state_dict(k), plain_step.state_dict(k), atol=0)
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "fast path" in line] == [f"fast path vmap refused, training without it: "
                                                            f"{tag.removeprefix('eager (check failed: vmap: ')[:-1]}"]
    _group_run(group(case, **VMAP))  # refused again, from the cache: said once per process
    assert "fast path" not in capsys.readouterr().err


# -- a CUDA graph, dry-run on the CPU ----------------------------------------------------------------


def test_a_graph_proves_itself_on_its_replays_and_leaves_the_runs_rng_and_weights_alone(monkeypatch):
    log: list[str] = []
    plain, _ = _single_run()
    _graph_on_cpu(monkeypatch, lambda s: GraphedStep(s, _Recorded(log)), lambda s: GraphedStep(s, _Recorded([])))
    cfg = build_config(overrides=SINGLE)
    torch.manual_seed(cfg.seed)
    step = build_step(cfg, DATA)
    after_build = torch.get_rng_state()
    assert log == ["capture"] + ["replay"] * proof.ITERATIONS  # after WARMUP eager iterations: the compared ones
    assert isinstance(step, GraphedStep) and step.tags["train.fast_path"] == "graph"
    (outcome,) = proof.OUTCOMES.values()
    assert outcome.passed and outcome.key["path"] == "graph"

    torch.manual_seed(cfg.seed)
    unproven = factory._assemble([cfg], [DATA], [None], False, [])
    assert torch.equal(after_build, torch.get_rng_state())  # the proof drew nothing from the run's stream
    for a, b in zip(step.state_dict(0)["G"].values(), unproven.state_dict(0)["G"].values()):
        assert torch.equal(a, b)
    (m,) = members([cfg], DATA)
    train(step, [m], progress=False)
    assert_equal_logs(m.tracker, plain.tracker)  # replayed from the stand-in: the plain run's arithmetic


def test_a_graph_that_skips_a_hook_is_refused_and_the_run_trains_as_a_plain_run(monkeypatch, capsys):
    plain, plain_step = _single_run()
    _graph_on_cpu(monkeypatch, lambda s: GraphedStep(_skip(s, "d_input"), _Recorded([])))
    graphed_wrong, step = _single_run()
    assert not isinstance(step, GraphedStep)
    tag = step.tags["train.fast_path"]
    assert tag.startswith("eager (check failed: graph: ") and " differ by " in tag, tag
    assert graphed_wrong.tracker.tags["train.fast_path"] == step.tags["train.fast_path"]
    assert_equal_logs(graphed_wrong.tracker, plain.tracker)
    assert_close_states(step.state_dict(0), plain_step.state_dict(0), atol=0)
    assert capsys.readouterr().err.count("fast path graph refused, training without it: ") == 1


def test_a_capture_that_raises_is_refused_by_the_proof(monkeypatch, capsys):
    plain, _ = _single_run()
    _graph_on_cpu(monkeypatch, lambda s: GraphedStep(s, _refused))
    run, step = _single_run()
    assert step.tags["train.fast_path"] == ("eager (check failed: graph: RuntimeError: CUDA graph capture failed "
                                            "(CUDA error: operation not permitted when stream is capturing))")
    assert "train.cuda_graph" not in step.tags  # the run's step is the plain one
    assert_equal_logs(run.tracker, plain.tracker)
    err = capsys.readouterr().err
    assert err.count("fast path graph refused") == 1 and "CUDA graph capture failed, training eagerly" not in err


def test_a_capture_that_fails_in_the_run_after_its_proof_retags_the_run(monkeypatch, capsys):
    _graph_on_cpu(monkeypatch, lambda s: GraphedStep(s, _Recorded([])), lambda s: GraphedStep(s, _refused))
    run, step = _single_run()
    assert isinstance(step, GraphedStep)
    why = "capture failed (CUDA error: operation not permitted when stream is capturing)"
    assert run.tracker.tags["train.fast_path"] == f"eager (graph: {why})"
    assert run.tracker.tags["train.cuda_graph"] == f"off: {why}"
    assert capsys.readouterr().err.count("fast path graph refused, training without it: capture failed") == 1


# -- plain runs: nothing to prove --------------------------------------------------------------------


def test_plain_cpu_runs_prove_nothing_and_are_tagged_eager(monkeypatch):
    def never(*a, **kw):
        raise AssertionError("a plain step was checked")
    monkeypatch.setattr(proof, "prove", never)
    cpu = torch.device("cpu")
    cfg = build_config(overrides={"device": "cpu", "model.name": "dcgan"})  # the defaults, as reference runs use
    assert factory.fast_paths([cfg], cpu, grouped=False) == []
    assert factory.fast_paths([cfg, cfg], cpu, grouped=True) == []  # a CPU group runs member by member
    assert factory.fast_paths([build_config(overrides={"device": "cpu", "train.compile": "default"})], cpu,
                              grouped=False) == []  # compile is for CUDA
    assert build_step(build_config(overrides=SINGLE), DATA).tags["train.fast_path"] == "eager"
    assert build_grouped_step(group(NOISE), [DATA] * 2).tags["train.fast_path"] == "eager"
    cuda = torch.device("cuda")
    assert factory.fast_paths([cfg], cuda, grouped=False) == ["graph"]
    assert factory.fast_paths([cfg, cfg], cuda, grouped=True) == ["vmap", "graph"]
    compiled = build_config(overrides={"train.compile": "default"})
    assert factory.fast_paths([compiled], cuda, grouped=False) == ["compile"]  # compile makes its own graphs


# -- what the GPU check shows (`bench.perf.gpu_check`) ------------------------------------------------


def test_gpu_check_lists_every_fast_path_outcome(monkeypatch):
    from bench.perf.gpu_check import fast_path_rows, format_fast_paths

    real = factory.GroupedStep
    _wrong_vmap(monkeypatch, "d_input")
    build_grouped_step(group(NOISE, **VMAP), [DATA] * 2)
    monkeypatch.setattr(factory, "GroupedStep", real)
    build_grouped_step(group(R1, **VMAP), [DATA] * 2)
    rows = fast_path_rows()
    assert [(r["path"], r["members"], r["outcome"]) for r in rows] == [("vmap", 2, "failed"), ("vmap", 2, "passed")]
    text = format_fast_paths(rows)
    lines = text.splitlines()
    assert lines[0].strip().startswith("fast path") and len(lines) == 3
    assert "cgan-mlp x2" in lines[1] and "failed: statistics differ by" in lines[1]
    assert "passed" in lines[2] and "gradients" in lines[2]
    assert format_fast_paths([]).strip() == "fast paths: none asked for a check in this run"


@pytest.mark.slow
def test_a_tracked_group_records_its_refused_fast_path_in_mlflow(tiny, store, monkeypatch):
    from mlflow import MlflowClient

    from bench.experiment import MemberRun, run_group

    _wrong_vmap(monkeypatch, "d_input")
    cfgs = [build_config(overrides={**tiny, **NOISE, **VMAP, "seed": seed}) for seed in (1, 2)]
    results = run_group([MemberRun(c) for c in cfgs], tracking_uri=store, experiment="proof", progress=False)
    tags = [MlflowClient(store).get_run(r.run_id).data.tags for r in results]
    for t in tags:
        assert t["train.fast_path"].startswith("eager (check failed: vmap: "), t["train.fast_path"]
        assert t["train.group_forward"] == "member_by_member" and t["train.group_size"] == "2"
