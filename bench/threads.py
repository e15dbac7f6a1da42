"""How many threads a command trains with, and how OpenMP's idle threads wait, on a machine others share.

torch's OpenMP threads spin while they wait for each other. On a machine whose cores other processes keep
busy, a spinning thread takes a core from the thread it waits for, and two threads on two busy cores run
many times slower than one. So a `gan-bench` command, once, at its start: counts the cores this process
may use and the load the other processes put on them (the 1-minute load average, or the cores busy
over a quarter second where that average says busy, spread over the machine's cores), trains with one thread per core left free (at least one), and, when the machine is busy,
sets OpenMP's passive wait. OpenMP reads its wait policy once, when torch loads, so that part is decided
before torch is imported (`prepare_environment`, called first thing by `bench.cli`). A user's
`OMP_NUM_THREADS` or `OMP_WAIT_POLICY` is kept as it is. No torch import at module level.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    threads: int | None  # None: torch's own count stands (the user set OMP_NUM_THREADS)
    wait_policy: str | None  # "PASSIVE", or None: OpenMP's own (or the user's)
    cores: int
    others_load: float  # the other processes' load on this process's cores

    def note(self, threads: int, default_threads: int) -> str:
        """One line saying the choice (`threads` the count applied), or "" when torch's default stands."""
        load = f"load {self.others_load:.1f} from other processes"
        parts = [f"threads: {threads} of {self.cores} core{'s' * (self.cores != 1)} ({load})"] \
            if threads != default_threads else []
        if self.wait_policy:
            parts.append("OpenMP passive wait" + ("" if parts else f" ({load})"))
        return "; ".join(parts)


def choose(cores: int, load: float, machine_cores: int | None = None, user_threads: str | None = None,
           user_wait: str | None = None) -> Choice:
    """Threads and wait policy for a process that may use `cores` of the machine's `machine_cores` (default:
    the same) under a 1-minute load average `load` from the other processes: one thread per core they
    leave free, at least one; passive wait once they keep a core busy. `user_threads` / `user_wait` (the
    user's OMP_NUM_THREADS / OMP_WAIT_POLICY, None when unset) win."""
    cores = max(1, cores)
    others = max(0.0, load) * cores / max(cores, machine_cores or cores)  # their load spreads over all cores
    busy_cores = int(others + 0.5)
    threads = None if user_threads else max(1, cores - busy_cores)
    wait = "PASSIVE" if busy_cores >= 1 and not user_wait else None
    return Choice(threads, wait, cores, others)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform: every core
        return os.cpu_count() or 1


def machine_load(window_s: float = 0.25) -> float:
    """The other processes' load now: the 1-minute load average, checked against the CPU time the machine spent
    busy over `window_s` where it says the machine is busy (it lags a minute behind: just after a job ended it
    still reads busy, just after one started it reads less than it is)."""
    try:
        average = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform: count it idle
        return 0.0
    if average < 0.5:
        return average
    now = busy_cores(window_s)
    return average if now is None else now


def _cpu_times(path: str = "/proc/stat") -> tuple[int, int] | None:
    """(busy, total) jiffies of all the machine's cores since boot, None where /proc/stat is not readable."""
    try:
        with open(path) as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    total = sum(fields[:8])  # guest time is counted inside user time already
    return total - idle, total


def busy_cores(window_s: float, read=_cpu_times) -> float | None:
    """How many cores the machine kept busy over the next `window_s` seconds (this process sleeps meanwhile)."""
    import time

    before = read()
    time.sleep(window_s)
    after = read()
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


_CHOICE: Choice | None = None
_NOTE: str = ""  # said once, when training or measuring starts (`announce`)


def prepare_environment() -> Choice:
    """Decide this command's threads from the cores and load now, and set OMP_WAIT_POLICY=PASSIVE on a busy
    machine (unless the user set it). Must run before torch is imported to affect this process; spawned
    workers inherit it either way. Decided once per process."""
    global _CHOICE
    if _CHOICE is None:
        _CHOICE = choose(usable_cores(), machine_load(), os.cpu_count(), os.environ.get("OMP_NUM_THREADS"),
                         os.environ.get("OMP_WAIT_POLICY"))
        if _CHOICE.wait_policy:
            os.environ["OMP_WAIT_POLICY"] = _CHOICE.wait_policy
    return _CHOICE


@contextlib.contextmanager
def for_command():
    """Train this command with the chosen thread count (never more than torch's own; exported as
    OMP_NUM_THREADS for spawned workers), and restore torch's count and the environment afterwards, for
    callers in the same process."""
    import torch

    global _NOTE
    choice = prepare_environment()
    before = torch.get_num_threads()
    threads = before if choice.threads is None else min(choice.threads, before)
    _NOTE = choice.note(threads, before)
    if threads != before:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        _NOTE = ""
        if threads != before:
            torch.set_num_threads(before)
            os.environ.pop("OMP_NUM_THREADS", None)


def announce() -> None:
    """Say the command's thread choice, once, when it differs from torch's default."""
    global _NOTE
    if _NOTE:
        print(_NOTE, file=sys.stderr, flush=True)
        _NOTE = ""


def per_worker(workers: int) -> int:
    """Each of `workers` processes' share of the command's threads (OMP_NUM_THREADS, inherited, else the
    cores)."""
    import torch

    return max(1, torch.get_num_threads() // max(1, workers))
