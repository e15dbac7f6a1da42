"""Virtual batch normalization (Salimans et al. 2016, "Improved Techniques for Training GANs").

Batch norm makes an example's output depend on the other examples in its batch. VBN instead
normalises each example with statistics that mix its own with those of a *reference batch*
fixed once at the start of training. Following TF-GAN's `virtual_batchnorm.py`:

* the reference rows are normalised with the reference batch's own statistics (per channel,
  over batch and spatial dims);
* every other example i uses `new_coeff * stats(i) + (1 - new_coeff) * stats(reference)`, with
  `new_coeff = 1 / (n_ref + 1)` (as if i were appended to the reference batch), for both the
  mean and the mean of squares; `var = mean_sq - mean**2`.

So an example's output never depends on the other non-reference examples of its batch.

The reference must go through the *current* weights at every step (its activations at layer k
depend on all layers before k), so its statistics are never cached: `WithReference` owns the
fixed reference inputs and prepends them to every batch, and each `VirtualBatchNorm` layer
treats the first `n_ref` rows it sees as the reference. Gradients flow through the reference
statistics, as in TF-GAN.
"""

from __future__ import annotations

import torch
from torch import nn


class VirtualBatchNorm(nn.Module):
    """VBN over (B, C) or (B, C, H, W); the first `n_ref` rows of the input are the reference.

    Has the affine `weight` (gamma) and `bias` (beta) of BatchNorm and no running buffers:
    it behaves the same in train and eval mode. `n_ref` is set by `WithReference`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.n_ref: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.n_ref
        if n is None:
            raise RuntimeError("VirtualBatchNorm has no reference batch: wrap the network in "
                               "WithReference and call set_reference(...) before the first forward")
        if x.dim() not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"VirtualBatchNorm({self.num_features}) expects (B, {self.num_features}) "
                             f"or (B, {self.num_features}, H, W), got {tuple(x.shape)}")
        if x.shape[0] < n:
            raise ValueError(f"input has {x.shape[0]} rows but the reference batch alone has {n}")

        # Statistics in float32: mean_sq - mean**2 cancels badly in bf16/fp16 under autocast.
        xf = x.float()
        spatial = tuple(range(2, x.dim()))
        # Per-example, per-channel statistics over the spatial dims (for (B, C): the values themselves).
        mean = xf.mean(spatial) if spatial else xf
        mean_sq = xf.square().mean(spatial) if spatial else xf.square()

        # Reference statistics over batch and spatial dims (all examples have the same H*W,
        # so the mean of per-example means is the mean over batch and space).
        ref_mean, ref_mean_sq = mean[:n].mean(0), mean_sq[:n].mean(0)

        # Each other example is normalised as if it were appended to the reference batch.
        new_coeff = 1.0 / (n + 1)
        mix_mean = new_coeff * mean[n:] + (1.0 - new_coeff) * ref_mean
        mix_mean_sq = new_coeff * mean_sq[n:] + (1.0 - new_coeff) * ref_mean_sq

        mean = torch.cat([ref_mean.expand(n, -1), mix_mean])
        mean_sq = torch.cat([ref_mean_sq.expand(n, -1), mix_mean_sq])
        var = (mean_sq - mean.square()).clamp_min(0.0)  # clamp: rounding can make it slightly negative

        scale = self.weight * torch.rsqrt(var + self.eps)  # (B, C)
        shift = self.bias - mean * scale
        broadcast = (*scale.shape, *(1,) * len(spatial))  # (B, C, 1, 1) for images
        return (xf * scale.view(broadcast) + shift.view(broadcast)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, n_ref={self.n_ref}"


class WithReference(nn.Module):
    """Runs `net` on [reference batch; inputs] and returns only the inputs' rows.

    `set_reference(x, y=None)` fixes the reference inputs once (fixed noise (+ labels) for G,
    a fixed real batch (+ labels) for D); they are buffers, so they move with `.to(device)`
    and are saved in the state dict. `conditional` nets need labels in both calls.
    """

    def __init__(self, net: nn.Module, *, conditional: bool):
        super().__init__()
        self.net = net
        self.conditional = conditional
        self.register_buffer("ref_input", None)
        self.register_buffer("ref_labels", None)

    @property
    def n_ref(self) -> int | None:
        return None if self.ref_input is None else self.ref_input.shape[0]

    def set_reference(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        if self.conditional and y is None:
            raise ValueError("a conditional network needs reference labels: set_reference(x, y)")
        device = next(self.net.parameters()).device
        self.ref_input = x.detach().clone().to(device)
        self.ref_labels = y.detach().clone().to(device) if self.conditional else None
        self._tell_layers()

    def _tell_layers(self) -> None:
        for m in self.net.modules():
            if isinstance(m, VirtualBatchNorm):
                m.n_ref = self.n_ref

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.ref_input is None:
            raise RuntimeError("this network uses virtual batch norm: call set_reference(...) "
                               "with a fixed reference batch before the first forward")
        x_all = torch.cat([self.ref_input.to(x.dtype), x])
        y_all = None
        if self.conditional:
            if y is None:
                raise ValueError("this conditional network needs labels y (int64, shape (B,))")
            y_all = torch.cat([self.ref_labels, y])
        return self.net(x_all, y_all)[self.n_ref:]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A saved reference may arrive before set_reference was ever called (or with another
        # size): allocate matching buffers so the load can copy into them.
        device = next(self.net.parameters()).device
        for name in ("ref_input", "ref_labels"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._tell_layers()


def uses_reference(net: nn.Module) -> bool:
    """True when the training loop must call `net.set_reference(...)` before training."""
    return isinstance(net, WithReference)


def with_reference_if_needed(net: nn.Module, *, conditional: bool) -> nn.Module:
    """Wrap `net` in `WithReference` when it contains virtual batch norm layers."""
    if any(isinstance(m, VirtualBatchNorm) for m in net.modules()):
        return WithReference(net, conditional=conditional)
    return net
