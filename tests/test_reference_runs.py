"""A fixed-seed run logs what the pinned commit's code logs on the same kind of CPU.

Each case is a tiny CPU run in fp32 that switches on a different set of techniques, so together they exercise
every technique's arithmetic. A refactor that changes the order of random draws, a target, a penalty or an
optimizer setting changes these curves.

Float32 kernels round differently on different CPU kinds (ATen picks AVX-512, AVX2 or plain kernels, oneDNN its
own instruction set), and a few training steps amplify a last-bit difference to 1e-4..1e-3, so a stored curve
holds only on the kind that made it. `references/reference_runs.<KIND>.json` keeps one per kind: KIND is
`torch.backends.cpu.get_cpu_capability()`, then `-$ONEDNN_MAX_CPU_ISA` when that is set (AVX512, AVX2,
DEFAULT-SSE41, ...). Each file records the commit whose code made it and the torch version it ran on; runs
use THREADS intra-op threads whatever the machine's core count, as the thread count also orders sums.
To add the running kind (it runs the cases with PINNED_COMMIT's code, taken from git, not the working tree):

    python tests/test_reference_runs.py DATA_ROOT
    ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 python tests/test_reference_runs.py DATA_ROOT

Where no stored file fits (another CPU kind or torch version), the test runs PINNED_COMMIT's code itself, once,
on this machine (cached in .pytest_cache) and warns that it did: two code paths on the same machine. Without
that commit in git history it skips saying how to generate the file, and fails under CI.
The AVX512 file holds the numbers recorded at aab8c40, before the loop and the step were split.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

import pytest

REFERENCES = Path(__file__).parent / "references"
REPO = Path(__file__).resolve().parents[1]
PINNED_COMMIT = "268395860174e07c11054d024dce8db1e067da4d"  # the code new references are made from
REL_TOL = 1e-5
THREADS = 2  # intra-op threads split sums (oneDNN's, ATen's), so the count is part of a run's arithmetic
COMMAND = "python tests/test_reference_runs.py DATA_ROOT"

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


# -- which reference: per CPU kind, made by the pinned commit --------------------------------------------------

def cpu_kind() -> str:
    """What picks the float32 kernels: ATen's CPU capability, and oneDNN's cap when one is set."""
    import torch

    kind = torch.backends.cpu.get_cpu_capability()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{kind}-{isa.upper()}" if isa else kind


def cpu_model() -> str:
    """The processor's name, recorded beside a reference (for a user comparing machines)."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or platform.machine())


def torch_release() -> str:
    """torch's version without the build tag (2.14.1+cpu and 2.14.1+cu130 run the same CPU kernels)."""
    import torch

    return torch.__version__.split("+")[0]


def reference_file(kind: str, folder: Path = REFERENCES) -> Path:
    return folder / f"reference_runs.{kind}.json"


def has_commit(commit: str) -> bool:
    try:
        return subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
                              capture_output=True).returncode == 0
    except FileNotFoundError:  # no git
        return False


# Runs in the pinned tree: its bench package and its copy of this file's cases, never the working tree's.
GENERATE = """
import json, sys
from pathlib import Path
import bench
assert Path(bench.__file__).resolve().is_relative_to(Path.cwd().resolve()), bench.__file__
from tests.test_reference_runs import CASES, logged
import torch
torch.set_num_threads(int(sys.argv[3]))
Path(sys.argv[2]).write_text(json.dumps({c: logged(c, Path(sys.argv[1])) for c in sorted(CASES)}))
"""


def generate(data_root: Path, commit: str = PINNED_COMMIT) -> dict:
    """Every case as `commit`'s code logs it on this machine, with what made it."""
    with tempfile.TemporaryDirectory() as tmp:
        tree, archive, out = Path(tmp) / "tree", Path(tmp) / "tree.tar", Path(tmp) / "runs.json"
        subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), commit], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tree, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]),
               "GANBENCH_CACHE": str(Path(tmp) / "cache")}
        subprocess.run([sys.executable, "-c", GENERATE, str(Path(data_root).resolve()), str(out), str(THREADS)],
                       cwd=tree, env=env, check=True)
        cases = json.loads(out.read_text())
    return {"commit": commit, "cpu_kind": cpu_kind(), "torch": torch_release(), "threads": THREADS,
            "cpu": cpu_model(), "cases": cases}


def load_reference(kind: str, data_root: Path, cache=None, folder: Path = REFERENCES,
                   commit: str = PINNED_COMMIT) -> dict:
    """The stored reference for `kind` and this torch; else `commit` run here (cached in pytest's cache)."""
    stored = reference_file(kind, folder)
    if stored.exists():
        reference = json.loads(stored.read_text())
        if reference["torch"] == torch_release():
            return reference
        why = f"{stored.name} was made on torch {reference['torch']}, this is torch {torch_release()}"
    else:
        why = f"no stored reference for this CPU kind ({kind}: {stored.name})"
    key = f"reference_runs/{kind}/torch-{torch_release()}/{commit}"
    reference = cache.get(key, None) if cache is not None else None
    if reference is None:
        if not has_commit(commit):
            message = (f"{why}, and commit {commit[:10]} that makes one is not in this checkout's git history: "
                       f"in a full clone, run `{COMMAND}`")
            if os.environ.get("CI"):  # CI must compare, never skip past it
                pytest.fail(message)
            pytest.skip(message)
        reference = generate(data_root, commit)
        if cache is not None:
            cache.set(key, reference)
    warnings.warn(f"{why}: compared with commit {commit[:10]} run on this machine; "
                  f"to store it for this CPU kind, run `{COMMAND}`", stacklevel=1)
    return reference


@pytest.fixture(scope="module")
def reference(data_root, request) -> dict:
    return load_reference(cpu_kind(), data_root, getattr(request.config, "cache", None))


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_fixed_seed_run_logs_what_the_pinned_commit_logged(case, data_root, reference):
    made = f"reference {reference['cpu_kind']} from commit {reference['commit'][:10]} on torch {reference['torch']}"
    assert case in reference["cases"], f"{case} is not in the {made}: move PINNED_COMMIT on and run `{COMMAND}`"
    expected = reference["cases"][case]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        now = logged(case, data_root)
    finally:
        torch.set_num_threads(threads)
    for key in expected:
        assert close(now[key], expected[key]), f"{case}: {key} differs from the {made}\nnow: {now[key]}\n" \
                                               f"ref: {expected[key]}"


def test_the_comparison_can_fail():
    assert close({"a": [1.0, 2.0]}, {"a": [1.0, 2.0 * (1 + 1e-6)]})
    assert not close({"a": [1.0, 2.0]}, {"a": [1.0, 2.0 * (1 + 1e-4)]})
    assert not close({"a": [1.0]}, {"a": [1.0, 2.0]})


def test_the_cpu_kind_names_the_onednn_cap_when_one_is_set(monkeypatch):
    import torch

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert cpu_kind() == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "sse41")
    assert cpu_kind() == f"{torch.backends.cpu.get_cpu_capability()}-SSE41"


def test_a_stored_reference_is_found_by_kind_and_torch_version(tmp_path):
    stored = {"commit": "c", "cpu_kind": "K", "torch": torch_release(), "cpu": "x", "cases": {"a": {}}}
    reference_file("K", tmp_path).write_text(json.dumps(stored))
    assert load_reference("K", tmp_path, folder=tmp_path) == stored


@pytest.mark.parametrize("ci", [False, True])
@pytest.mark.parametrize("stored_torch", [None, "0.1"])
def test_without_a_fitting_reference_or_the_commit_it_says_how_to_make_one(tmp_path, monkeypatch, ci, stored_torch):
    if stored_torch:  # a file for this kind from another torch: its numbers do not hold here
        reference_file("K", tmp_path).write_text(json.dumps({"torch": stored_torch, "cases": {}}))
    monkeypatch.setenv("CI", "true") if ci else monkeypatch.delenv("CI", raising=False)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match=r"not in this checkout's git history: in a full clone, run `python tests/"
                                      r"test_reference_runs.py DATA_ROOT`") as raised:
        load_reference("K", tmp_path, folder=tmp_path, commit="0" * 40)
    assert ("torch 0.1" if stored_torch else "no stored reference for this CPU kind (K") in str(raised.value)


if __name__ == "__main__":  # python tests/test_reference_runs.py DATA_ROOT: the reference for this CPU kind
    made = generate(Path(sys.argv[1]))
    path = reference_file(made["cpu_kind"])
    path.write_text(json.dumps(made, indent=1) + "\n")
    print(f"wrote {path} (commit {made['commit'][:10]}, torch {made['torch']})")
