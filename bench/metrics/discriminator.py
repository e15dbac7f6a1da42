"""The discriminator's accuracy on held-out real images and fresh fakes."""

from __future__ import annotations

import math

import torch

_F64 = torch.float64


class BinaryAccuracy:
    """Discriminator accuracy and mean D(x), D(G(z)); logit > 0 means "real"."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        # per side: [sample count (host int), correct (device f64), sum sigmoid (device f64)]
        self._n = {True: 0, False: 0}
        self._correct: dict[bool, torch.Tensor | float] = {True: 0.0, False: 0.0}
        self._prob: dict[bool, torch.Tensor | float] = {True: 0.0, False: 0.0}

    def update(self, logits: torch.Tensor, real: bool) -> None:
        x = logits.detach().to(_F64).reshape(-1)
        real = bool(real)
        correct = (x > 0) if real else (x <= 0)
        self._n[real] += x.numel()
        self._correct[real] = self._correct[real] + correct.to(_F64).sum()
        self._prob[real] = self._prob[real] + torch.sigmoid(x).sum()

    def compute(self) -> dict:
        out = {}
        for real, name in ((True, "real"), (False, "fake")):
            n = self._n[real]
            out[f"acc_{name}"] = float(self._correct[real]) / n if n else math.nan
            out[f"mean_{name}"] = float(self._prob[real]) / n if n else math.nan
        return out
