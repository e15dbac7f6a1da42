"""What the training loop asks of a step: the seam between the loop (`bench.train`) and the arithmetic.

A step trains K members (K = 1 for `GANStep`; a grouped step trains K models in the same kernels).
The loop hands it one batch feed per member and gets back statistics per member; everything it logs,
evaluates, checkpoints or stops is per member, so the same loop drives either kind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

from bench.models import GAN

# The per-iteration statistics a step returns, in this order (logged as train/<name>).
STEP_METRICS = ("loss_d", "loss_g", "d_real", "d_fake", "d_acc_real", "d_acc_fake")

Feed = Iterator[tuple[torch.Tensor, torch.Tensor]]  # a member's batches of (images, labels) in its data order


class Step(Protocol):
    members: int                # K: the models this step trains together
    batches_per_iteration: int  # batches one iteration takes from each member's feed (D's steps)
    device: torch.device
    tags: dict[str, str]        # how it trains (precision, joint D pass), as MLflow tags of each member's run

    def iteration(self, feeds: Sequence[Feed]) -> torch.Tensor:
        """One iteration of every live member: D steps then G steps. Returns a (K, len(STEP_METRICS)) device
        tensor, the mean over the iteration's steps; no host sync (a non-finite row is a diverged member)."""

    def drop(self, member: int) -> None:
        """Member `member` stops training (diverged, collapsed or pruned); the others go on unchanged."""

    def gan_of(self, member: int) -> GAN:
        """The member's nets as they train."""

    def evaluated(self, member: int) -> GAN:
        """The member's GAN as it is evaluated and kept (its generator may be an average of the trained one)."""

    def state_dict(self, member: int) -> dict:
        """A copy of the member's training state: nets, optimizers, techniques' state, iteration count."""

    def load_state_dict(self, member: int, state: dict) -> None: ...

    def rng_state(self, member: int) -> dict:
        """The RNG states the member's draws come from ("torch_rng", and "cuda_rng" on CUDA), for its checkpoint."""

    def set_rng_state(self, member: int, state: dict) -> None: ...


class Capturable(Step, Protocol):
    """What a wrapper that records a step's iteration into a CUDA graph (`bench.step.graphed.GraphedStep`)
    needs from the step it wraps, besides `Step`."""

    generators: Sequence[torch.Generator]  # the CUDA generators its draws advance besides the default one

    def zero_grad(self) -> None:
        """Every gradient to None (a graph allocates its gradients inside the capture)."""

    def disable_autocast_cache(self) -> None:
        """Autocast from now on without its weight cache, which cannot live across a graph's replays."""
