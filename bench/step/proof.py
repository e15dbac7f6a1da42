"""Fast paths prove themselves: before a run trains on a step that differs from the plain one (a CUDA
graph, a vmapped group, `torch.compile`), that step is checked once against the plain step on this device.

Both steps are built from the same global RNG state, so they start from the same weights, and take the
same batches. They run in lockstep: before each iteration the plain step is given the fast one's state
(nets, optimizers, techniques' state) and RNG states, so each iteration is compared from the same start
and rounding cannot compound (Adam moves a parameter by about its learning rate whatever the size of
its gradient, so a gradient that cancels to rounding is a whole step apart in the two). A correct fast
path differs from the plain step only in rounding. Per member and iteration, three gaps:

  statistics  loss_d, loss_g, mean D(real), mean D(fake):  max |fast - plain| / max(1, |plain|)
  gradients   Adam's first moments (the averaged gradient): ||fast - plain|| / ||plain||
  weights     G's and D's state, relative to what the iteration moved: ||fast - plain|| / ||plain - start||

Each gap is the median over the compared iterations (a ReLU that one step rounds to the other side of
its kink changes one iteration's gradient by about 1e-3), the largest over the members; it must be at
most its tolerance, c * eps ** 0.75 for the precision the step computes in (float32, or autocast's bf16 /
fp16). Measured on the CPU over the technique cases of `tests/step/test_grouped.py`, a vmapped group's
gaps grow from float32 to bf16 about as eps ** 0.8 does; the largest were statistics 1e-7 / 1e-3,
gradients 5e-6 / 7e-2 and weights 2e-2 / 0.2 (float32 / bf16). A wrong fast path is far above: one that
skips the instance-noise hook is 0.4 apart in gradients, one that drops a WGAN-GP penalty 1, in either
precision; in float32 one that drops R1 (gamma 1) is 2e-4 apart. A change smaller than rounding in
bf16 (that R1 penalty, at initialisation) cannot be told from it by a few iterations.

The outcome is cached per (device name, torch version, fast path, the step's shape signature), one JSON
file each under `$GANBENCH_CACHE/fast-paths/` (default ~/.cache/gan-bench), so each is checked once per
machine; delete the folder to check again. The check restores the global RNG state it started from and
never touches the run's own step (built after it), so a run draws and trains as it would without it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from bench.step.device import rng_state, set_rng_state
from bench.step.protocol import STEP_METRICS, Step

ITERATIONS = 3  # compared per check (a CUDA graph's after its warm-up: three replays)
COMPARED = ("loss_d", "loss_g", "d_real", "d_fake")  # D's accuracies move in whole examples: not compared
# Tolerances, c * eps ** 0.75 of the step's precision: float32 6.4e-6 * c, fp16 5.5e-3 * c, bf16 2.6e-2 * c.
LOSS_TOL = 2.0     # float32 1.3e-5, bf16 5.3e-2
GRAD_TOL = 8.0     # float32 5.1e-5, bf16 0.21
WEIGHT_TOL = 16.0  # on top of WEIGHT_FLOOR: float32 0.10, bf16 0.52
WEIGHT_FLOOR = 0.1  # Adam's whole steps where a gradient cancels to rounding (a bias before batch norm)
VERSION = 1  # bump when the check changes, so outcomes cached before are checked again

Batch = tuple[torch.Tensor, torch.Tensor]


def tolerances(precision: torch.dtype | None) -> tuple[float, float, float]:
    """(statistics, gradients, weights) tolerances of a step computing in `precision` (None: float32)."""
    unit = torch.finfo(precision or torch.float32).eps ** 0.75
    return LOSS_TOL * unit, GRAD_TOL * unit, WEIGHT_FLOOR + WEIGHT_TOL * unit


@dataclass
class Proof:
    """One fast path's check against the plain step."""

    path: str               # "graph", "vmap", "compile"
    passed: bool
    loss_gap: float         # the statistics' gap (nan: the fast step raised)
    grad_gap: float         # the gradients' gap
    weight_gap: float       # the weights' gap
    tolerances: tuple[float, float, float]
    why: str | None = None  # why it failed
    key: dict = field(default_factory=dict)
    cached: bool = False    # read from the cache, not run now

    @property
    def outcome(self) -> str:
        return ("passed" if self.passed else "failed") + (" (cached)" if self.cached else "")


def check(path: str, fast: Callable[[], Step], plain: Callable[[], Step], batches: Sequence[Sequence[Sequence[Batch]]],
          precision: torch.dtype | None, device: torch.device, warmup: int = 0) -> Proof:
    """Build `plain()` and `fast()`, each from the global RNG state found on entry (restored on exit), and run
    them in lockstep on `batches[member][iteration]` (each iteration's list of batches), comparing every
    iteration after the first `warmup`. A fast step that raises is refused with what it raised."""
    tols = tolerances(precision)
    start = rng_state(device)
    try:
        reference = plain()
        set_rng_state(device, start)
        try:
            gaps = _lockstep(_Guarded(fast), reference, batches)[:, warmup:]
        except _FastFailed as e:  # what the plain step raises, the run would raise too: that propagates
            return Proof(path, False, math.nan, math.nan, math.nan, tols, why=_first_line(e.__cause__))
    finally:
        set_rng_state(device, start)
    gaps = gaps.median(dim=1).values.amax(dim=1).tolist()  # over the iterations, then the worst member (NaN stays)
    why = None
    for name, gap, tol in zip(("statistics", "gradients", "weights"), gaps, tols):
        if not gap <= tol:
            why = f"{name} differ by {gap:.2g} (tolerance {tol:.2g})"
            break
    return Proof(path, why is None, *gaps, tols, why=why)


def prove(path: str, key: dict, fast: Callable[[], Step], plain: Callable[[], Step],
          batches: Sequence[Sequence[Sequence[Batch]]], precision: torch.dtype | None,
          device: torch.device, warmup: int = 0) -> Proof:
    """`check`'s outcome for this key, from the cache when it was checked before on this machine."""
    key = {"version": VERSION, "path": path, "device": device_name(device), "torch": torch.__version__, **key}
    file = _cache_file(key)
    proof = _read(file, key)
    if proof is None:
        proof = check(path, fast, plain, batches, precision, device, warmup)
        proof.key = key
        _write(file, proof)
    OUTCOMES.setdefault(file.stem, proof)
    if not proof.passed:
        say(f"fast path {path} refused, training without it: {proof.why}")
    return proof


OUTCOMES: dict[str, Proof] = {}  # every proof this process used, by cache entry (shown by `bench.perf.gpu_check`)


def tag(used: Sequence[str], refused: dict[str, str]) -> str:
    """The run's `train.fast_path` tag: the fast paths it trains on ("graph+vmap"; "eager": none), then
    why the others were refused ("eager (check failed: graph: statistics differ by ...)")."""
    text = "+".join(used) or "eager"
    if refused:
        text += " (" + "; ".join(refused.values()) + ")"
    return text[:500]  # MLflow's tag length limit is far above; a reason is a line, not a page


def refusal(proof: Proof) -> str:
    """How a failed proof is named in the run's tag."""
    return f"check failed: {proof.path}: {proof.why}"


@functools.cache
def device_name(device: torch.device) -> str:
    """The device the outcome holds for: the GPU's name, or the CPU's model and the kernels ATen picks."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{device.type}: {model} ({torch.backends.cpu.get_cpu_capability()})"


def draw_batches(datasets: Sequence, batch_size: int, per_iteration: int,
                 iterations: int) -> list[list[list[Batch]]]:
    """Each member's batches for a check, from its own data and a generator of its own (not the global RNG)."""
    out = []
    for k, data in enumerate(datasets):
        gen = torch.Generator().manual_seed(k)
        out.append([[data.sample(batch_size, gen) for _ in range(per_iteration)] for _ in range(iterations)])
    return out


# -- running and comparing ------------------------------------------------------------------------


def _lockstep(fast: Step, plain: Step, batches) -> torch.Tensor:
    """The (statistics, gradients, weights) gaps of each iteration and member: (3, iterations, K)."""
    columns = [STEP_METRICS.index(name) for name in COMPARED]
    members = range(fast.members)
    gaps = []
    for i in range(len(batches[0])):
        states, rngs = [fast.state_dict(k) for k in members], [fast.rng_state(k) for k in members]
        for k in members:
            plain.load_state_dict(k, states[k])
            plain.set_rng_state(k, rngs[k])
        rows = plain.iteration([iter(member[i]) for member in batches])[:, columns].float()
        theirs = [plain.state_dict(k) for k in members]
        for k in members:  # the streams the fast step drew from (a single step's is the global one)
            fast.set_rng_state(k, rngs[k])
        ours = fast.iteration([iter(member[i]) for member in batches])[:, columns].float()  # a graph's buffer: now
        loss = ((ours - rows).abs() / rows.abs().clamp(min=1.0)).amax(dim=1).tolist()
        mine = [fast.state_dict(k) for k in members]
        gaps.append([loss, [_gap(_moments(mine[k]), _moments(theirs[k])) for k in members],
                     [_gap(_nets(mine[k]), _nets(theirs[k]), _nets(states[k])) for k in members]])
    return torch.tensor(gaps, dtype=torch.float64).permute(1, 0, 2)


class _FastFailed(Exception):
    """The fast step raised (its cause): the fast path is refused."""


class _Guarded:
    """The fast step, built and called so that whatever it raises comes wrapped in `_FastFailed`."""

    def __init__(self, build: Callable[[], Step]):
        self._step = _fast(build)

    def __getattr__(self, name: str):
        value = getattr(self._step, name)
        return (lambda *args, **kw: _fast(value, *args, **kw)) if callable(value) else value


def _fast(fn: Callable, *args, **kw):
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: BLE001  a fast path that raises (a capture refused) is refused
        raise _FastFailed() from e


def _nets(state: dict) -> dict[str, torch.Tensor]:
    return {f"{net}.{name}": t.detach().double() for net in ("G", "D") for name, t in state[net].items()
            if t.is_floating_point()}


def _moments(state: dict) -> dict[str, torch.Tensor]:
    return {f"{opt}.{i}": s["exp_avg"].detach().double() for opt in ("opt_g", "opt_d")
            for i, s in state[opt]["state"].items() if "exp_avg" in s}


def _gap(fast: dict, plain: dict, start: dict | None = None) -> float:
    """||fast - plain|| / ||plain - start|| over all the tensors (start None: / ||plain||)."""
    if fast.keys() != plain.keys() or not plain:
        return 0.0 if fast.keys() == plain.keys() else math.inf
    apart = sum((fast[n] - plain[n]).pow(2).sum() for n in plain).sqrt().item()
    scale = sum((plain[n] - (0 if start is None else start[n])).pow(2).sum() for n in plain).sqrt().item()
    if apart == 0:
        return 0.0
    return apart / scale if scale > 0 else math.inf


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


# -- the cache ------------------------------------------------------------------------------------


def _cache_file(key: dict):
    from bench.evaluator.shipped import cache_dir  # the project's one cache folder

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir() / "fast-paths" / f"{key['path']}-{digest}.json"


def _read(file, key: dict) -> Proof | None:
    try:
        saved = json.loads(file.read_text())
        proof = Proof(**{**saved, "tolerances": tuple(saved["tolerances"])})
    except (OSError, ValueError, TypeError):  # absent, or unreadable: check again and rewrite it
        return None
    if proof.key != json.loads(json.dumps(key, default=str)):
        return None
    proof.cached = True
    return proof


def _write(file, proof: Proof) -> None:
    saved = {**asdict(proof), "cached": False}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(saved, indent=1, default=str) + "\n")
        tmp.replace(file)  # atomic: a reader sees the old entry or the new one
    except OSError:  # a read-only cache: the check runs again next time, training goes on
        pass


_SAID: set[str] = set()


def say(line: str) -> None:
    """Once per process: a study's every trial would repeat it."""
    if line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr, flush=True)
