"""Fast paths prove themselves: before a run trains on a step that differs from the plain one (a CUDA
graph, a vmapped group, `torch.compile`), that step is checked once against the plain step on this device.

Both steps are built from the same global RNG state, so they start from the same weights, and take the
same batches. They run in lockstep: before each iteration the plain step is given the fast one's state
(nets, optimizers, techniques' state) and RNG states, so each iteration is compared from the same start
and rounding cannot compound (Adam moves a parameter by about its learning rate whatever the size of
its gradient, so a gradient that cancels to rounding is a whole step apart in the two). Per member and
iteration, three gaps:

  statistics  loss_d, loss_g, mean D(real), mean D(fake):  max |fast - plain| / max(1, |plain|)
  gradients   Adam's first moments (the averaged gradient): ||fast - plain|| / ||plain||
  weights     what the iteration moved G's and D's state:   ||fast - plain|| / ||plain||

A correct fast path differs from the plain step only in rounding, and how far rounding takes an
iteration depends on the model: merely reordering a batch of 32 moves G's gradient by 8e-4 in float32
for report 002's conditional DCGAN (batch norm in G and D), by 2e-6 for report 000's DCGAN. So each iteration also runs the plain step a second
time with every weight scaled by 1 +- eps (a rounding of the weights, eps of the step's precision); each
gap's tolerance is the larger of a floor, c * eps ** 0.75 (the constants below), and NOISE_FACTOR times
that spread. Gaps are the median over the compared iterations (a ReLU rounded to the other side of its
kink moves one iteration's gradient), the worst member's.

Measured on the CPU (float32, and bf16 autocast) over the technique cases of `tests/step/test_grouped.py`
and the groups of `gan-bench perf gpu-check` on MNIST, a correct vmapped group's gradient and weight gaps
were at most 7 times that spread, or below the floor. A wrong fast path is far above: skipping the
instance-noise hook moves the gradients 0.3 to 0.7 and dropping a WGAN-GP penalty 1, in either
precision; dropping R1 (gamma 1) 5e-5 to 4e-4 in float32, while in bf16 that penalty is smaller than
rounding at initialisation and a few iterations cannot tell it apart.

The outcome is cached per (device name, torch version, fast path, the step's shape signature), one JSON
file each under `$GANBENCH_CACHE/fast-paths/` (default ~/.cache/gan-bench), so each is checked once per
machine; delete the folder to check again. The check restores the global RNG state it started from and
never touches the run's own step (built after it), so a run draws and trains as it would without it.
"""

from __future__ import annotations

import copy
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
# Tolerance floors, c * eps ** 0.75 of the step's precision: float32 6.4e-6 * c, fp16 5.5e-3 * c, bf16 2.6e-2 * c.
LOSS_TOL = 2.0     # float32 1.3e-5, bf16 5.3e-2
GRAD_TOL = 4.0     # float32 2.6e-5, bf16 0.11
WEIGHT_TOL = 16.0  # float32 1.0e-4, bf16 0.42
NOISE_FACTOR = 16.0  # times the plain step's own spread under a rounding of its weights, where that is larger
VERSION = 1  # bump when the check changes, so outcomes cached before are checked again

Batch = tuple[torch.Tensor, torch.Tensor]


def tolerances(precision: torch.dtype | None) -> tuple[float, float, float]:
    """(statistics, gradients, weights) tolerance floors of a step computing in `precision` (None: float32)."""
    unit = torch.finfo(precision or torch.float32).eps ** 0.75
    return LOSS_TOL * unit, GRAD_TOL * unit, WEIGHT_TOL * unit


@dataclass
class Proof:
    """One fast path's check against the plain step."""

    path: str               # "graph", "vmap", "compile"
    passed: bool
    loss_gap: float         # the statistics' gap (nan: the fast step raised)
    grad_gap: float         # the gradients' gap
    weight_gap: float       # the weights' gap
    tolerances: tuple[float, float, float]  # each gap's, for the member reported
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
    floors = tolerances(precision)
    start = rng_state(device)
    try:
        reference = plain()
        set_rng_state(device, start)
        try:
            gaps, noise = _lockstep(_Guarded(fast), reference, batches, torch.finfo(precision or torch.float32).eps)
        except _FastFailed as e:  # what the plain step raises, the run would raise too: that propagates
            return Proof(path, False, math.nan, math.nan, math.nan, floors, why=_first_line(e.__cause__))
    finally:
        set_rng_state(device, start)
    # each member's median over the compared iterations; its tolerance: the floor, or the plain step's own
    # spread times NOISE_FACTOR; the member furthest out (relative to its tolerance) is the one reported
    gaps, noise = (g[:, warmup:].median(dim=1).values for g in (gaps, noise))  # (3, K)
    tols = torch.maximum(torch.tensor(floors, dtype=torch.float64)[:, None], NOISE_FACTOR * noise)
    worst = (gaps / tols).nan_to_num(nan=math.inf).argmax(dim=1)
    gap, tol = (t.gather(1, worst[:, None]).squeeze(1).tolist() for t in (gaps, tols))
    why = None
    for name, g, t in zip(("statistics", "gradients", "weights"), gap, tol):
        if not g <= t:  # a NaN gap fails
            why = f"{name} differ by {g:.2g} (tolerance {t:.2g})"
            break
    return Proof(path, why is None, *gap, tuple(tol), why=why)


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


def _lockstep(fast: Step, plain: Step, batches, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (statistics, gradients, weights) gaps of each iteration and member, (3, iterations, K): the fast
    step's from the plain one, and the plain step's from itself with its weights moved by a rounding
    (each scaled by 1 +- eps): how far rounding alone takes this iteration."""
    members, gen = range(fast.members), torch.Generator().manual_seed(0)
    gaps, noise = [], []
    for i in range(len(batches[0])):
        def feeds(i=i):
            return [iter(member[i]) for member in batches]
        states, rngs = [fast.state_dict(k) for k in members], [fast.rng_state(k) for k in members]
        rounded = [_rounded(state, eps, gen) for state in states]
        runs = []
        for start in (rounded, states):  # the plain step, last from the fast one's state
            for k in members:  # a copy: an optimizer keeps the tensors it loads and updates them in place
                plain.load_state_dict(k, copy.deepcopy(start[k]))
                plain.set_rng_state(k, rngs[k])
            runs.append((_stats(plain.iteration(feeds())), [plain.state_dict(k) for k in members]))
        for k in members:  # the streams the fast step draws from (a single step's is the global one)
            fast.set_rng_state(k, rngs[k])
        ours = (_stats(fast.iteration(feeds())), [fast.state_dict(k) for k in members])
        (r_stats, r_states), (p_stats, p_states) = runs
        gaps.append(_gaps(ours, (p_stats, p_states), states, states))
        noise.append(_gaps((r_stats, r_states), (p_stats, p_states), rounded, states))
    return (torch.tensor(g, dtype=torch.float64).permute(1, 0, 2) for g in (gaps, noise))


def _stats(rows: torch.Tensor) -> torch.Tensor:
    """The compared columns of a step's statistics (a graphed step's are its output buffer: read them now)."""
    return rows[:, [STEP_METRICS.index(name) for name in COMPARED]].float().clone()


def _gaps(a: tuple, b: tuple, a_start: list[dict], b_start: list[dict]) -> list[list[float]]:
    """[statistics, gradients, weights] gaps of a from b, one per member; the weights by what the iteration
    moved them (each from its own start)."""
    (a_stats, a_states), (b_stats, b_states) = a, b
    stats = ((a_stats - b_stats).abs() / b_stats.abs().clamp(min=1.0)).amax(dim=1).tolist()
    grads = [_gap(_moments(x), _moments(y)) for x, y in zip(a_states, b_states)]
    moved = [_gap(_update(x, s), _update(y, t)) for x, y, s, t in zip(a_states, b_states, a_start, b_start)]
    return [stats, grads, moved]


def _rounded(state: dict, eps: float, gen: torch.Generator) -> dict:
    """The state with every floating-point value of the nets scaled by 1 + eps or 1 - eps at random."""
    out = dict(state)
    for net in ("G", "D"):
        out[net] = {n: t * (1 + eps * (2 * torch.randint(2, t.shape, generator=gen) - 1)).to(t)
                    if t.is_floating_point() else t for n, t in state[net].items()}
    return out


def _update(state: dict, start: dict) -> dict[str, torch.Tensor]:
    now, before = _nets(state), _nets(start)
    return {n: now[n] - before[n] for n in now}


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


def _gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b|| over all the tensors."""
    if a.keys() != b.keys():
        return math.inf
    apart = sum((a[n] - b[n]).pow(2).sum() for n in b).sqrt().item() if b else 0.0
    if apart == 0:
        return 0.0
    scale = sum(b[n].pow(2).sum() for n in b).sqrt().item()
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
