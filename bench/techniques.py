"""GAN training techniques: small, composable, registered by name.

The training loop asks this module three things: the discriminator's targets for a batch
(`d_targets`), the generator's loss (`g_loss`), and the D:G schedule (`schedule`).
Architectural techniques (VBN, dropout, depth, width) live in the model config and are
built by `bench.models`; they still get a label here so runs are named and tagged by them.

Adding a technique: write one function and register it, e.g. a new target transform::

    @target_transform("noisy")
    def noisy(real_t, fake_t, cfg, gen): ...

or a new G loss with `@g_loss_fn("name")` (and allow the name in `TechniquesConfig.g_loss`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.config import RunConfig, TechniquesConfig

# ---------------------------------------------------------------------------
# Discriminator targets: a chain of transforms over (real targets, fake targets)

TargetTransform = Callable[[torch.Tensor, torch.Tensor, TechniquesConfig, torch.Generator | None],
                           tuple[torch.Tensor, torch.Tensor]]
TARGET_TRANSFORMS: dict[str, TargetTransform] = {}


def target_transform(name: str):
    def register(fn: TargetTransform) -> TargetTransform:
        TARGET_TRANSFORMS[name] = fn
        return fn
    return register


# Registration order is application order. Flip first, on the hard 0/1 labels, then smooth:
# a flipped real example is then trained on the *fake* target (0, or fake_target), smoothed as
# every fake target is. Smoothing first would turn a flipped real target 0.9 into 0.1 and make
# one-sided smoothing partly two-sided.


@target_transform("flip")
def flip(real_t, fake_t, cfg, gen):
    """Swap each example's real/fake label with probability flip_prob (noisy labels)."""
    if cfg.flip_prob == 0:
        return real_t, fake_t
    flip_r = torch.rand(real_t.shape, generator=gen, device=real_t.device) < cfg.flip_prob
    flip_f = torch.rand(fake_t.shape, generator=gen, device=fake_t.device) < cfg.flip_prob
    return (torch.where(flip_r, 1.0 - real_t, real_t), torch.where(flip_f, 1.0 - fake_t, fake_t))


@target_transform("smoothing")
def smoothing(real_t, fake_t, cfg, gen):
    """Label smoothing on 0/1 labels: 1 -> real_target (one-sided, e.g. 0.9), 0 -> fake_target
    (two-sided, e.g. 0.1), whichever side of the batch the example sits on."""
    def smooth(t: torch.Tensor) -> torch.Tensor:
        return t * cfg.real_target + (1.0 - t) * cfg.fake_target
    return smooth(real_t), smooth(fake_t)


def d_targets(n_real: int, n_fake: int, cfg: TechniquesConfig, device: torch.device,
              gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for D's BCE on real and fake examples after every registered transform."""
    real_t = torch.ones(n_real, device=device)
    fake_t = torch.zeros(n_fake, device=device)
    for transform in TARGET_TRANSFORMS.values():
        real_t, fake_t = transform(real_t, fake_t, cfg, gen)
    return real_t, fake_t


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_t: torch.Tensor,
           fake_t: torch.Tensor) -> torch.Tensor:
    return (F.binary_cross_entropy_with_logits(real_logits, real_t)
            + F.binary_cross_entropy_with_logits(fake_logits, fake_t))


# ---------------------------------------------------------------------------
# Generator losses

G_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}


def g_loss_fn(name: str):
    def register(fn):
        G_LOSSES[name] = fn
        return fn
    return register


@g_loss_fn("non-saturating")
def non_saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): strong gradients early, when D easily rejects fakes."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


@g_loss_fn("saturating")
def saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """log(1 - D(G(z))), the original minimax loss (vanishing gradients early)."""
    return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def g_loss(fake_logits: torch.Tensor, cfg: TechniquesConfig) -> torch.Tensor:
    return G_LOSSES[cfg.g_loss](fake_logits)


def schedule(cfg: TechniquesConfig) -> tuple[int, int]:
    """D and G optimizer steps per iteration (e.g. 5:1, 1:2)."""
    return cfg.d_steps, cfg.g_steps


# ---------------------------------------------------------------------------
# Labels: short names for runs and tags, one labeller per technique

LABELLERS: dict[str, Callable[[RunConfig], str | None]] = {
    "ls": lambda c: f"{c.techniques.real_target:g}" if c.techniques.real_target != 1.0 else None,
    "fake_t": lambda c: f"{c.techniques.fake_target:g}" if c.techniques.fake_target != 0.0 else None,
    "flip": lambda c: f"{c.techniques.flip_prob:g}" if c.techniques.flip_prob else None,
    "vbn": lambda c: {(True, True): "GD", (True, False): "G", (False, True): "D"}.get(
        (c.model.g_norm == "virtual", c.model.d_norm == "virtual")),
    "sched": lambda c: (f"{c.techniques.d_steps}:{c.techniques.g_steps}"
                        if (c.techniques.d_steps, c.techniques.g_steps) != (1, 1) else None),
    "g_loss": lambda c: "sat" if c.techniques.g_loss == "saturating" else None,
    "init": lambda c: None if c.model.weight_init else "off",
}


def technique_labels(cfg: RunConfig) -> dict[str, str]:
    """Techniques that differ from the plain GAN, e.g. {"ls": "0.9", "vbn": "G"}."""
    labels = {name: fn(cfg) for name, fn in LABELLERS.items()}
    return {k: v for k, v in labels.items() if v is not None}
