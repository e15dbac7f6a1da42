"""`GANStep`: the one-member step, as readable as pytorch/examples' dcgan.

One iteration is `d_steps` D updates (each on its own real batch) then `g_steps` G updates (on D's
last batch, for losses that compare with data), as `bench.step.update.UpdateBody` writes them for K
members; here K = 1 and tensors have no member axis. The techniques act through `hooks`; this class
names no technique. Everything it returns stays on the device: no host sync inside a step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterable

import torch

from bench.models import GAN, sample_latent
from bench.step.device import rng_state, set_rng_state
from bench.step.hooks import Hooks
from bench.step.update import UpdateBody, UpdateSettings, d_statistics


@dataclasses.dataclass(eq=False)
class GANStep(UpdateBody):
    """Both nets, both optimizers and the two update steps of one member. Built by `bench.step.build_step`."""

    gan: GAN
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    hooks: Hooks
    latent_dim: int
    settings: UpdateSettings = UpdateSettings()
    g_fwd: Callable | None = None  # the forward passes the steps call: the modules or compiled wrappers
    d_fwd: Callable | None = None

    members = 1
    member_axis = False
    live = (True,)  # the only member: dropping it stops the loop
    generators = ()  # it draws from the default generators (a group has one per member)

    def __post_init__(self) -> None:
        self.G, self.D = self.gan.generator, self.gan.discriminator
        self.g_fwd, self.d_fwd = self.g_fwd or self.G, self.d_fwd or self.D
        self.info = self.hooks.info
        self.device = self.info.device
        self.autocast = self.settings.autocast(self.device)
        self.tags = self.settings.tags

    def noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = sample_latent(n, self.latent_dim, self.gan.latent_prior, device=self.device)
        y = torch.randint(self.gan.num_classes, (n,), device=self.device) if self.gan.conditional else None
        return z, y

    # -- what `UpdateBody` asks of one member ---------------------------------------------------

    def member(self, k: int) -> GANStep:
        return self

    def rng(self, k: int) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # the global RNG is the member's

    def d_parameters(self) -> Iterable[torch.Tensor]:
        return self.D.parameters()

    def statistics(self, losses: list[torch.Tensor], real_logits: torch.Tensor,
                   fake_logits: torch.Tensor) -> torch.Tensor:
        (loss,) = losses
        return d_statistics(loss, real_logits, fake_logits)

    # -- the rest of the loop's protocol (`bench.step.protocol.Step`), for K = 1 ----------------

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
