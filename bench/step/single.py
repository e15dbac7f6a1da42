"""`GANStep`: the one-member step, as readable as pytorch/examples' dcgan.

One iteration is `d_steps` D updates (each on its own real batch) then `g_steps` G updates (on D's
last batch, for losses that compare with data). The techniques act through `hooks`; this class
names no technique. Everything it returns stays on the device: no host sync inside a step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Sequence

import torch

from bench import techniques
from bench.models import GAN, sample_latent
from bench.step.device import frozen, rng_state, set_rng_state
from bench.step.hooks import Hooks
from bench.step.protocol import Feed


@torch.no_grad()
def d_statistics(loss: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """[loss, mean D(real), mean D(fake), accuracy on real, accuracy on fake] over the last dimension
    (a batch of logits, or K members' batches)."""
    return torch.stack([loss.detach(), torch.sigmoid(real_logits).mean(-1), torch.sigmoid(fake_logits).mean(-1),
                        (real_logits > 0).float().mean(-1), (fake_logits <= 0).float().mean(-1)], dim=-1)


@dataclasses.dataclass(eq=False)
class GANStep:
    """Both nets, both optimizers and the two update steps of one member. Built by `bench.step.build_step`."""

    gan: GAN
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    hooks: Hooks
    latent_dim: int
    d_steps: int = 1
    g_steps: int = 1
    joint_d: bool = False        # D sees real and fake in one pass (only when D has no batch statistics)
    freeze_d_in_g: bool = False  # skip D's parameter gradients in the G step (the next D step zeroes them)
    precision: torch.dtype | None = None  # autocast dtype, None: fp32
    g_fwd: Callable | None = None  # the forward passes the steps call: the modules or compiled wrappers
    d_fwd: Callable | None = None

    members = 1
    generators: tuple = ()  # it draws from the default generators (a group has one per member)

    def __post_init__(self) -> None:
        self.G, self.D = self.gan.generator, self.gan.discriminator
        self.g_fwd, self.d_fwd = self.g_fwd or self.G, self.d_fwd or self.D
        self.info = self.hooks.info
        self.device = self.info.device
        self.batches_per_iteration = self.d_steps
        self.autocast = (torch.autocast(self.device.type, dtype=self.precision) if self.precision is not None
                         else contextlib.nullcontext())
        self.tags = {"train.precision": str(self.precision or torch.float32).removeprefix("torch."),
                     "train.joint_d": str(self.joint_d).lower()}

    def noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = sample_latent(n, self.latent_dim, self.gan.latent_prior, device=self.device)
        y = torch.randint(self.gan.num_classes, (n,), device=self.device) if self.gan.conditional else None
        return z, y

    def d_step(self, real: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One D update; returns [loss, mean D(real), mean D(fake), accuracy on real, accuracy on fake]."""
        n = real.shape[0]
        real_y = labels if self.gan.conditional else None
        z, fake_y = self.noise(n)
        with torch.no_grad(), self.autocast:
            fake = self.g_fwd(z, fake_y)
        real_t, fake_t = self.hooks.d_targets(n, n, self.device)
        with self.autocast:
            real, fake = self.hooks.d_input(real, True), self.hooks.d_input(fake.to(real.dtype), False)
            if self.joint_d:
                y = torch.cat([real_y, fake_y]) if self.gan.conditional else None
                logits = self.d_fwd(torch.cat([real, fake]), y).float()
                real_logits, fake_logits = logits[:n], logits[n:]
            else:
                real_logits = self.d_fwd(real, real_y).float()
                fake_logits = self.d_fwd(fake, fake_y).float()
            loss = self.hooks.d_loss(techniques.Batch(real, fake, real_y, fake_y, fake_logits, real_logits,
                                                      real_t, fake_t))
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        self.hooks.after_step("d")
        return d_statistics(loss, real_logits, fake_logits)

    def g_step(self, real: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One G update on a fresh batch of noise; `real` is there for losses that compare with data."""
        z, y = self.noise(real.shape[0])
        d_frozen = frozen(self.D.parameters()) if self.freeze_d_in_g else contextlib.nullcontext()
        with d_frozen, self.autocast:  # the graph is recorded without D's parameters
            fake = self.hooks.d_input(self.g_fwd(z, y), False)
            b = techniques.Batch(real, fake, labels if self.gan.conditional else None, y, self.d_fwd(fake, y).float())
            loss = self.hooks.g_loss(b)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.hooks.after_step("g")
        return loss.detach()

    # -- the loop's protocol (`bench.step.protocol.Step`), for K = 1 --------------------------

    def iteration(self, feeds: Sequence[Feed]) -> torch.Tensor:
        (batches,) = feeds
        d_stats = 0
        for _ in range(self.d_steps):
            real, labels = next(batches)
            d_stats = d_stats + self.d_step(real, labels) / self.d_steps
        g_loss = sum(self.g_step(real, labels) for _ in range(self.g_steps)) / self.g_steps  # on D's last batch
        self.info.iteration.add_(1)
        return torch.cat([d_stats[:1], g_loss.view(1), d_stats[1:]]).unsqueeze(0)

    def drop(self, member: int) -> None:
        pass  # the only member: the loop stops

    def gan_of(self, member: int) -> GAN:
        return self.gan

    def evaluated(self, member: int) -> GAN:
        return dataclasses.replace(self.gan, generator=self.hooks.eval_generator() or self.G)

    def state_dict(self, member: int = 0) -> dict:
        """Both nets, both optimizers, the techniques' state and the iteration count, copied."""
        return copy.deepcopy({"G": self.G.state_dict(), "D": self.D.state_dict(),
                              "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                              "techniques": self.hooks.state_dict(), "iteration": self.info.iteration})

    def load_state_dict(self, member: int, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.hooks.load_state_dict(state.get("techniques", {}))
        if "iteration" in state:
            self.info.iteration.copy_(state["iteration"])

    def rng_state(self, member: int) -> dict:
        return rng_state(self.device)  # one member: it draws from the global RNG

    def set_rng_state(self, member: int, state: dict) -> None:
        set_rng_state(self.device, state)
