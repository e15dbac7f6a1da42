"""The training step: the protocol the loop drives, the one-member `GANStep`, and the factory that builds it.

  protocol.py  what the loop asks of a step (K members, per-member statistics, states and GANs), and what a
               wrapper (the CUDA graph) asks of the step it wraps
  update.py    `UpdateBody`: the D and G updates and the iteration, written once for K members
  single.py    `GANStep`: one member (K = 1) and its nets, optimizers and state
  hooks.py     the active techniques behind one call per hook
  losses.py    the plain GAN's losses, where no technique replaces them
  device.py    device and precision
  factory.py   `build_gan`, `build_step`: nets on the device, references, Adams, the step
  grouped.py   `GroupedStep`: K members with the same shapes in one model (vmapped, or member by member on a
               CPU), per-member RNG and hooks
  graphed.py   `GraphedStep`: a step's iterations (one run's or a group's) replayed from a CUDA graph (on CUDA)
  member_adam.py  Adam over K members' stacked parameters with per-member rates and betas (torch's kernel per member)
"""

from bench.step.device import autocast_dtype, has_batch_stats, resolve_device
from bench.step.factory import (build_gan, build_grouped_step, build_step, iterations_per_epoch, learning_rates,
                                set_references)
from bench.step.graphed import GraphedStep, graph_refusal
from bench.step.grouped import GroupedStep, grouping_refusal
from bench.step.hooks import Hooks
from bench.step.protocol import STEP_METRICS, Feed, Step
from bench.step.single import GANStep

__all__ = ["STEP_METRICS", "Feed", "GANStep", "GraphedStep", "GroupedStep", "Hooks", "Step", "autocast_dtype",
           "build_gan", "build_grouped_step", "build_step", "graph_refusal", "grouping_refusal", "has_batch_stats",
           "iterations_per_epoch", "learning_rates", "resolve_device", "set_references"]
