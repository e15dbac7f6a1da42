"""G's noise prior: the one function that draws latent vectors z.

Training, evaluation, sample grids, VBN references, analyses and the perf loops all draw z
here, so a run's `model.latent_prior` holds everywhere G is fed noise.

* "normal": z ~ N(0, I), ||z|| ~ sqrt(dim) (10 at dim 100).
* "uniform": z ~ U(-1, 1) per coordinate, ||z|| ~ sqrt(dim / 3) (5.77 at dim 100): report 000,
  whose latent vectors have norms 5.4-5.8 at dim 100.
"""

from __future__ import annotations

import torch

LATENT_PRIORS = ("normal", "uniform")


def sample_latent(n: int, dim: int, prior: str = "normal", *, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """(n, dim) latent vectors from `prior`.

    Drawn on `generator`'s device when one is given (a CPU generator gives the same numbers on
    any device), then moved to `device`; without a generator, drawn on `device` directly.
    """
    where = generator.device if generator is not None else device
    if prior == "normal":
        z = torch.randn(n, dim, generator=generator, device=where)
    elif prior == "uniform":
        z = torch.rand(n, dim, generator=generator, device=where).mul_(2).sub_(1)
    else:
        raise ValueError(f"unknown latent prior {prior!r}; choose one of {LATENT_PRIORS}")
    return z if device is None else z.to(device)
