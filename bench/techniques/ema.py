"""An exponential moving average of G's weights, evaluated instead of G (Yazici et al. 2019)."""

from __future__ import annotations

from pydantic import Field
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bench.techniques import Technique, register


@register
class Ema(Technique):
    """EMA of G's weights (Yazici et al. 2019): after every G step, theta_ema <- d * theta_ema +
    (1 - d) * theta; evaluation, sample grids and the saved model use the averaged G, which
    smooths out the oscillation of the raw weights. Training itself is unchanged.

    Uses PyTorch's `torch.optim.swa_utils.AveragedModel`; batch-norm statistics are averaged too.
    """

    name = "ema"
    paper = "Yazici et al. 2019"
    study = "ema"
    fields = {"ema_decay": (float, Field(0.0, ge=0.0, lt=1.0,
                                         description="EMA of G's weights used for evaluation: decay d (0: off)"))}

    def __init__(self, values, info):
        super().__init__(values, info)
        self.ema = AveragedModel(info.G, multi_avg_fn=get_ema_multi_avg_fn(values.ema_decay), use_buffers=True)

    def after_step(self, net):
        if net == "g":
            self.ema.update_parameters(self.info.G)

    def eval_generator(self):
        return self.ema.module

    def state_dict(self):
        return self.ema.state_dict()

    def load_state_dict(self, state):
        if state:
            self.ema.load_state_dict(state)
