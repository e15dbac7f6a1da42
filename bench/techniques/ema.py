"""An exponential moving average of G's weights, evaluated instead of G (Yazici et al. 2019)."""

from __future__ import annotations

import copy

import torch
from pydantic import Field

from bench.techniques import Technique, register


@register
class Ema(Technique):
    """EMA of G's weights (Yazici et al. 2019): after every G step, theta_ema <- d * theta_ema +
    (1 - d) * theta; evaluation, sample grids and the saved model use the averaged G, which
    smooths out the oscillation of the raw weights. Training itself is unchanged.

    The arithmetic of PyTorch's `AveragedModel` with `get_ema_multi_avg_fn` and `use_buffers=True`
    (batch-norm statistics are averaged too), and its checkpoint format, without its host sync: the
    count of updates is a device tensor, so an update is device work only and a CUDA graph replaying it
    keeps the count.
    """

    name = "ema"
    paper = "Yazici et al. 2019"
    study = "ema"
    fields = {"ema_decay": (float, Field(0.0, ge=0.0, lt=1.0,
                                         description="EMA of G's weights used for evaluation: decay d (0: off)"))}

    def __init__(self, values, info):
        super().__init__(values, info)
        self.module = copy.deepcopy(info.G)  # the averaged G
        self.n_averaged = torch.zeros((), dtype=torch.long, device=info.device)  # updates so far
        self.started = False  # on the host, so no update reads the count: the first one copies G

    def after_step(self, net):
        if net == "g":
            ema_update(_tensors(self.module), _tensors(self.info.G), self.values.ema_decay, not self.started)
            self.n_averaged.add_(1)
            self.started = True

    def eval_generator(self):
        return self.module

    def state_dict(self):
        """As `AveragedModel.state_dict()` writes it: "module.<name>" and "n_averaged" (an int64 tensor)."""
        state = {"n_averaged": self.n_averaged.clone()}  # on G's device, as AveragedModel keeps its buffer
        state.update({f"module.{k}": v for k, v in self.module.state_dict().items()})
        return state

    def load_state_dict(self, state):
        if state:
            self.module.load_state_dict({k.removeprefix("module."): v for k, v in state.items()
                                         if k.startswith("module.")})
            self.n_averaged.copy_(state["n_averaged"])  # in place: a captured graph holds this tensor
            self.started = bool(self.n_averaged > 0)


def _tensors(net: torch.nn.Module) -> list[torch.Tensor]:
    """A net's parameters then its buffers (what `AveragedModel(use_buffers=True)` averages)."""
    return [*net.parameters(), *net.buffers()]


@torch.no_grad()
def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], decay: float, first: bool) -> None:
    """averaged <- decay * averaged + (1 - decay) * current, in place (`first`: copy current instead).

    Floating tensors in one `_foreach_lerp_` per dtype and device; others (batch norm's step count) as
    `AveragedModel` does them. No host sync.
    """
    if first:
        torch._foreach_copy_(averaged, [c.detach() for c in current])
        return
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for a, c in zip(averaged, current, strict=True):
        mine, theirs = groups.setdefault((a.device, a.dtype), ([], []))
        mine.append(a.detach())
        theirs.append(c.detach().to(a.device))
    for (_, dtype), (mine, theirs) in groups.items():
        if dtype.is_floating_point or dtype.is_complex:
            torch._foreach_lerp_(mine, theirs, 1 - decay)
        else:
            for a, c in zip(mine, theirs):
                a.copy_(a * decay + c * (1 - decay))
