"""The seams around the one update body: `Batch` is built by keyword, and the CUDA-graph wrapper asks of
the step it wraps only what `bench.step.protocol.Capturable` declares."""

from __future__ import annotations

from typing import Generic, Protocol

import pytest
import torch

from bench.step.graphed import WARMUP, GraphedStep
from bench.step.protocol import Capturable
from bench.techniques import Batch
from tests.step.test_graphed import _Recorded


def test_batch_takes_keywords_only():
    with pytest.raises(TypeError):
        Batch(torch.zeros(2), torch.ones(2), None, None, torch.zeros(2), torch.ones(2))  # the old field order
    b = Batch(real=torch.zeros(2), fake=torch.ones(2), real_logits=torch.full((2,), 3.0), fake_logits=torch.zeros(2))
    assert b.real_logits.tolist() == [3.0, 3.0] and b.fake_logits.tolist() == [0.0, 0.0]
    assert b.real_y is None and b.real_t is None


def _declared(protocol) -> set[str]:
    """The attributes and methods a protocol declares, with those of the protocols it extends."""
    names = set()
    for cls in protocol.__mro__:
        if cls in (Protocol, Generic, object):
            continue
        names |= set(vars(cls).get("__annotations__", {}))
        names |= {k for k, v in vars(cls).items() if callable(v) and not k.startswith("_")}
    return names


class _Strict:
    """A step that has what `Capturable` declares and nothing else: the wrapper's reach past the protocol
    is an AttributeError."""

    def __init__(self):
        self.members, self.batches_per_iteration, self.device = 2, 1, torch.device("cpu")
        self.tags, self.generators = {"train.precision": "float32"}, []
        self.calls: list[str] = []
        self.count = torch.zeros(2, 6)

    def iteration(self, feeds):
        self.calls.append("iteration")
        for feed in feeds:
            next(feed)
        self.count += 1
        return self.count.clone()

    def zero_grad(self):
        self.calls.append("zero_grad")

    def disable_autocast_cache(self):
        self.calls.append("disable_autocast_cache")

    def drop(self, member):
        self.calls.append(f"drop {member}")

    def gan_of(self, member):
        return f"gan {member}"

    def evaluated(self, member):
        return f"evaluated {member}"

    def state_dict(self, member):
        return {"member": member}

    def load_state_dict(self, member, state):
        self.calls.append(f"load {member}")

    def rng_state(self, member):
        return {"member": member}

    def set_rng_state(self, member, state):
        self.calls.append(f"rng {member}")


def test_the_strict_step_has_exactly_the_protocol():
    mine = {n for n in dir(_Strict()) if not n.startswith("_")} - {"calls", "count"}
    assert mine == _declared(Capturable)


def test_the_graphed_wrapper_asks_only_what_the_protocol_declares():
    step, log = _Strict(), []
    graphed = GraphedStep(step, _Recorded(log))
    assert step.calls == ["disable_autocast_cache"]
    feeds = [iter([(torch.zeros(1), torch.zeros(1))] * 20) for _ in range(2)]
    outs = [graphed.iteration(feeds).clone() for _ in range(WARMUP + 2)]
    assert log == ["capture", "replay", "replay"] and "zero_grad" in step.calls
    assert [o[0, 0].item() for o in outs] == [1.0, 2.0, 3.0, 4.0, 5.0]  # capture records, a replay runs it
    assert graphed.members == 2 and graphed.tags["train.cuda_graph"] == "on"
    graphed.drop(1)
    graphed.load_state_dict(0, graphed.state_dict(0))
    graphed.set_rng_state(0, graphed.rng_state(0))
    assert (graphed.gan_of(1), graphed.evaluated(0), graphed.gan) == ("gan 1", "evaluated 0", "gan 0")
    assert step.calls[-3:] == ["drop 1", "load 0", "rng 0"] and graphed.graph is None  # dropped, recorded again
