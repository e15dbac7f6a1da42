"""`UpdateBody`: the D update, the G update and the iteration that runs them, written once for K members.

A step of one member (`GANStep`) and a group of K (`GroupedStep`) run this same body. What differs is
what a subclass says: whether tensors carry a leading member axis (a group's are (K, n, ...), one
member's (n, ...)), member k's own step (its hooks and its noise), the RNG stream member k draws from,
how G and D run on all members at once, and how D's statistics are reduced. The techniques' hooks are
called member by member on the member's slice, under its RNG stream, in the order its sequential run
calls them; the members' losses are summed for one backward pass (members share no parameters, so each
one's gradient is its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from bench import techniques
from bench.step.device import frozen
from bench.step.protocol import Feed

if TYPE_CHECKING:
    from bench.step.single import GANStep


@dataclasses.dataclass(frozen=True)
class UpdateSettings:
    """How an iteration updates the nets; every member of a group has the same."""

    d_steps: int = 1
    g_steps: int = 1
    joint_d: bool = False        # D sees real and fake in one pass (only when D has no batch statistics)
    freeze_d_in_g: bool = False  # skip D's parameter gradients in the G step (the next D step zeroes them)
    precision: torch.dtype | None = None  # autocast dtype, None: fp32

    def autocast(self, device: torch.device, cache: bool = True) -> contextlib.AbstractContextManager:
        if self.precision is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.precision, cache_enabled=cache)

    @property
    def tags(self) -> dict[str, str]:
        return {"train.precision": str(self.precision or torch.float32).removeprefix("torch."),
                "train.joint_d": str(self.joint_d).lower()}


@torch.no_grad()
def d_statistics(loss: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """[loss, mean D(real), mean D(fake), accuracy on real, accuracy on fake] over the last dimension
    (a batch of logits, or K members' batches)."""
    return torch.stack([loss.detach(), torch.sigmoid(real_logits).mean(-1), torch.sigmoid(fake_logits).mean(-1),
                        (real_logits > 0).float().mean(-1), (fake_logits <= 0).float().mean(-1)], dim=-1)


class UpdateBody:
    """The updates of K members. A subclass sets the attributes and defines the methods below them."""

    members: int
    member_axis: bool            # tensors carry the members on a leading axis: (K, n, ...); False: (n, ...)
    live: Sequence[bool]         # which members still train (a dropped one keeps its weights and averages)
    settings: UpdateSettings
    device: torch.device
    autocast: contextlib.AbstractContextManager
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    generators: Sequence[torch.Generator]  # see `bench.step.protocol.Capturable`
    g_fwd: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # G on every member's batch
    d_fwd: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # D on every member's batch

    def member(self, k: int) -> GANStep:
        """Member k's own step: its hooks, its noise, its training state."""
        raise NotImplementedError

    def rng(self, k: int) -> contextlib.AbstractContextManager:
        """Inside the block, the global RNG draws from member k's stream."""
        raise NotImplementedError

    def d_parameters(self) -> Iterable[torch.Tensor]:
        """Every parameter `opt_d` updates."""
        raise NotImplementedError

    def statistics(self, losses: list[torch.Tensor], real_logits: torch.Tensor,
                   fake_logits: torch.Tensor) -> torch.Tensor:
        """`d_statistics` of every member, (K, 5), or (5,) without a member axis."""
        raise NotImplementedError

    # -- written once ---------------------------------------------------------------------------

    @property
    def batches_per_iteration(self) -> int:
        return self.settings.d_steps

    @property
    def conditional(self) -> bool:
        return self.member(0).gan.conditional

    def d_step(self, real: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One D update of every member; returns [loss, mean D(real), mean D(fake), accuracy on real,
        accuracy on fake] per member (see `statistics`)."""
        dim = int(self.member_axis)
        n = real.shape[dim]
        real_y = labels if self.conditional else None
        z, fake_y = self._noise(n)
        with torch.no_grad(), self.autocast:
            fake = self.g_fwd(z, fake_y)
        targets = self._each(lambda k: self.member(k).hooks.d_targets(n, n, self.device))
        with self.autocast:
            real, fake = self._d_input(real, True), self._d_input(fake.to(real.dtype), False)
            if self.settings.joint_d:
                y = torch.cat([real_y, fake_y], dim) if self.conditional else None
                logits = self.d_fwd(torch.cat([real, fake], dim), y).float()
                real_logits, fake_logits = logits.narrow(dim, 0, n), logits.narrow(dim, n, n)
            else:
                real_logits, fake_logits = self.d_fwd(real, real_y).float(), self.d_fwd(fake, fake_y).float()
            losses = self._each(lambda k: self.member(k).hooks.d_loss(techniques.Batch(
                real=self._of(real, k), fake=self._of(fake, k), real_y=self._of(real_y, k),
                fake_y=self._of(fake_y, k), real_logits=self._of(real_logits, k),
                fake_logits=self._of(fake_logits, k), real_t=targets[k][0], fake_t=targets[k][1])))
        self._descend(self.opt_d, losses, "d")
        return self.statistics(losses, real_logits, fake_logits)

    def g_step(self, real: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One G update of every member on fresh noise; `real` is there for losses that compare with data.
        Returns G's loss per member."""
        z, y = self._noise(real.shape[int(self.member_axis)])
        real_y = labels if self.conditional else None
        d_frozen = frozen(self.d_parameters()) if self.settings.freeze_d_in_g else contextlib.nullcontext()
        with d_frozen, self.autocast:  # the graph is recorded without D's parameters
            fake = self._d_input(self.g_fwd(z, y), False)
            fake_logits = self.d_fwd(fake, y).float()
            losses = self._each(lambda k: self.member(k).hooks.g_loss(techniques.Batch(
                real=self._of(real, k), fake=self._of(fake, k), real_y=self._of(real_y, k),
                fake_y=self._of(y, k), fake_logits=self._of(fake_logits, k))))
        self._descend(self.opt_g, losses, "g")
        return self._joined(losses).detach()

    def iteration(self, feeds: Sequence[Feed]) -> torch.Tensor:
        """`bench.step.protocol.Step.iteration`: `d_steps` D updates (each on its own real batch), then
        `g_steps` G updates on D's last batch."""
        s = self.settings
        d_stats = 0
        for _ in range(s.d_steps):
            batches = [next(feed) for feed in feeds]
            real, labels = self._joined([b[0] for b in batches]), self._joined([b[1] for b in batches])
            d_stats = d_stats + self.d_step(real, labels) / s.d_steps
        g_loss = sum(self.g_step(real, labels) for _ in range(s.g_steps)) / s.g_steps
        for k, live in enumerate(self.live):
            if live:
                self.member(k).info.iteration.add_(1)
        stats = torch.cat([d_stats[..., :1], g_loss.unsqueeze(-1), d_stats[..., 1:]], dim=-1)
        return stats.view(self.members, -1)

    def zero_grad(self) -> None:
        for opt in (self.opt_g, self.opt_d):
            opt.zero_grad(set_to_none=True)

    def disable_autocast_cache(self) -> None:
        self.autocast = self.settings.autocast(self.device, cache=False)

    # -- per member -----------------------------------------------------------------------------

    def _each(self, fn: Callable[[int], Any]) -> list:
        """[fn(k) for every member k], each under member k's RNG stream."""
        out = []
        for k in range(self.members):
            with self.rng(k):
                out.append(fn(k))
        return out

    def _of(self, t: torch.Tensor | None, k: int) -> torch.Tensor | None:
        """Member k's slice of `t`."""
        return t[k] if t is not None and self.member_axis else t

    def _joined(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The members' tensors as one: stacked on the member axis, or the only member's."""
        if self.member_axis:
            return torch.stack(parts)
        (only,) = parts
        return only

    def _noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        draws = self._each(lambda k: self.member(k).noise(n))
        z = self._joined([z for z, _ in draws])
        return z, self._joined([y for _, y in draws]) if self.conditional else None

    def _d_input(self, x: torch.Tensor, real: bool) -> torch.Tensor:
        return self._joined(self._each(lambda k: self.member(k).hooks.d_input(self._of(x, k), real)))

    def _descend(self, opt: torch.optim.Optimizer, losses: list[torch.Tensor], net: str) -> None:
        """One optimizer step on the live members' summed losses, then the hooks' `after_step`."""
        live = [loss for loss, on in zip(losses, self.live) if on]
        opt.zero_grad(set_to_none=True)
        sum(live[1:], live[0]).backward()
        opt.step()
        for k, on in enumerate(self.live):
            if on:  # a dropped member's averages stay as it left them
                self.member(k).hooks.after_step(net)
