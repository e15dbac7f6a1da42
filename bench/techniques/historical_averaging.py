"""Historical averaging: each net is pulled towards the average of its past weights (Salimans et al. 2016)."""

from __future__ import annotations

import torch
from pydantic import Field

from bench.techniques import Technique, register


@register
class HistoricalAveraging(Technique):
    """Historical averaging (Salimans et al. 2016, section 3.3): each player's loss gets
    lambda * ||theta - mean of theta over past steps||^2, which damps the oscillations of
    gradient descent in a game (it finds equilibria of low-dimensional games where plain
    gradient descent cycles). The averages are running means, updated after each step.
    """

    name = "historical_averaging"
    groupable = False  # its penalty reads its own copy of D's weights, outside the group's
    label_key = "histavg"
    paper = "Salimans et al. 2016"
    study = "historical-averaging"
    fields = {"hist_avg_lambda": (float, Field(0.0, ge=0.0, le=100.0, description=(
        "historical averaging: weight of ||theta - mean of past theta||^2 in both losses (0: off)")))}

    def __init__(self, values, info):
        super().__init__(values, info)
        self.nets = {"d": info.D, "g": info.G}
        self.avg = {k: [p.detach().clone() for p in net.parameters()] for k, net in self.nets.items()}
        # The initial weights count as the first in the history. On the device: each step's weight 1 / count
        # is then device arithmetic, which a CUDA graph replays with the count of that replay.
        self.count = {k: torch.ones((), device=info.device) for k in self.nets}

    def d_penalty(self, b):
        return historical_penalty(self.nets["d"].parameters(), self.avg["d"], self.values.hist_avg_lambda)

    def g_penalty(self, b):
        return historical_penalty(self.nets["g"].parameters(), self.avg["g"], self.values.hist_avg_lambda)

    @torch.no_grad()
    def after_step(self, net):
        self.count[net].add_(1)
        weight = self.count[net].reciprocal()  # float32 1 / count, correctly rounded as the float scalar was
        for p, a in zip(self.nets[net].parameters(), self.avg[net]):
            a.lerp_(p, weight.to(p.dtype))  # running mean

    def state_dict(self):
        return {"avg": self.avg, "count": dict(self.count)}  # counts as device tensors: saving them never syncs

    def load_state_dict(self, state):
        if state:  # in place: a captured graph holds these tensors
            for k, averages in state["avg"].items():
                for a, saved in zip(self.avg[k], averages, strict=True):
                    a.copy_(saved)
            for k, c in state["count"].items():
                self.count[k].copy_(torch.as_tensor(c))  # an int (older checkpoints) or a tensor, any device


def historical_penalty(params, averages, weight) -> torch.Tensor:
    """weight * ||theta - average of past theta||^2 over a net's parameters."""
    return weight * sum((p.float() - a.float()).pow(2).sum() for p, a in zip(params, averages))
