"""`GroupedStep`: K members with the same shapes trained in the same kernels (HFTA's idea, by `torch.func`).

Each member is first built as an ordinary `GANStep` (`bench.step.build_grouped_step`), so it has its
own nets, techniques' hooks, learning rates and RNG state, exactly as a sequential run would. Then
the members' parameters and buffers are stacked, shape (K, ...), and each member's modules are
re-pointed at its slice: the nets a member's evaluation, sample grids, hooks and checkpoint see are
ordinary modules whose weights are views of the stacked ones. The members' forward passes take one
of two forms (`train.group_forward`): one `vmap(functional_call)` over all members (convolutions
become grouped convolutions, batch norm keeps per-member statistics), the form for a GPU, where K
members' kernels cost about what one member's do; or member by member, each member's ordinary
kernels on its slices, the form for a CPU, where grouped convolutions run slower than K separate ones
and where a group then equals its sequential runs bit for bit. One `MemberAdam` updates all members
with per-member rates and betas.

The D and G updates are `bench.step.update.UpdateBody`'s, the ones a single run's `GANStep` runs. What
stays per member, in a Python loop over K: drawing noise, dropout masks and everything random the
techniques do (under the member's own RNG state, in the order a sequential run draws it) and the loss
hooks on the member's slice, so every technique's arithmetic is the one a sequential run does.
On CUDA a member's stream is a `torch.Generator` that the default generator is pointed at while the
member draws (`graphsafe_set_state`: no copy of the state, and allowed while a CUDA graph records).
Dropout inside the batched forward pass multiplies by masks drawn that way before the pass (vmap
itself would draw one stream for all members). A hook that calls D itself (the gradient penalties,
feature matching) calls the member's own module on its slice of the stacked parameters, so its
gradient reaches the group's optimizer. Members share no parameters, so the gradient of the sum of
their losses is each member's own gradient.

Not grouped (`grouping_refusal` says why, and the caller trains sequentially): techniques that change
the nets' structure or keep their own copies of the weights (`Technique.groupable`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from bench import techniques
from bench.models import GAN
from bench.step.member_adam import MemberAdam
from bench.step.single import GANStep
from bench.step.update import UpdateBody, d_statistics


def grouping_refusal(cfgs: Sequence) -> str | None:
    """Why these configs cannot train as one group (None: they can)."""
    first = cfgs[0]
    for cfg in cfgs:
        off = [t.name for t in techniques.TECHNIQUES.values() if t.active(cfg) and not t.groupable]
        if off:
            return f"technique {off[0]} re-parametrizes or copies the weights"
    for section in ("model", "data", "train"):
        if any(getattr(c, section) != getattr(first, section) for c in cfgs[1:]):
            return f"the members' {section} sections differ (shapes, data or training mode)"
    for key in ("batch_size", "epochs"):
        if any(getattr(c.optim, key) != getattr(first.optim, key) for c in cfgs[1:]):
            return f"the members' optim.{key} differ"
    for t in techniques.TECHNIQUES.values():
        if not t.varies_per_member and any(t.read_values(c) != t.read_values(first) for c in cfgs[1:]):
            return f"the members' {t.name} values differ (they set the shape of the step)"
    return None


def default_forward(device: torch.device) -> str:
    """`train.group_forward` "auto": the form measured faster on this kind of device (docs/performance.md)."""
    return "vmap" if device.type == "cuda" else "member_by_member"


class GroupedStep(UpdateBody):
    """The `bench.step.Step` protocol for K members in one batched model. Build it with `build_grouped_step`.

    Its updates are `UpdateBody`'s, on tensors with a leading member axis; what is its own is below."""

    member_axis = True

    def __init__(self, steps: Sequence[GANStep], rng_states: Sequence[dict], forward: str = "auto"):
        self.steps = list(steps)
        self.members = len(self.steps)
        first = self.steps[0]
        self.settings, self.device = first.settings, first.device  # the same in every member
        self.autocast = self.settings.autocast(self.device)
        forward = default_forward(self.device) if forward == "auto" else forward
        self.forward, self._forward = forward, FORWARDS[forward]
        self.tags = {**first.tags, "train.group_size": str(self.members), "train.group_forward": forward}
        self.rng_streams = [s["torch_rng"].clone() for s in rng_states]  # each member's CPU stream
        self.generators: list[torch.Generator] = []  # and its CUDA stream, on CUDA
        if self.device.type == "cuda":
            for s in rng_states:
                self.generators.append(torch.Generator(self.device))
                self.generators[-1].set_state(s["cuda_rng"])
        self.live = [True] * self.members
        self.G, self.g_params, self.g_buffers = _stack([s.G for s in self.steps])
        self.D, self.d_params, self.d_buffers = _stack([s.D for s in self.steps])
        for k, s in enumerate(self.steps):  # the hooks' D: gradients through it reach the group's parameters
            s.info.D = _MemberNet(s.D, self.d_params, k)
        self.g_dropout, self.d_dropout = _MemberDropout(self.G), _MemberDropout(self.D)
        self.opt_g = _member_adam(self.g_params, [s.opt_g for s in self.steps])
        self.opt_d = _member_adam(self.d_params, [s.opt_d for s in self.steps])

    # -- what `UpdateBody` asks of K members ----------------------------------------------------

    def member(self, k: int) -> GANStep:
        return self.steps[k]

    @contextlib.contextmanager
    def rng(self, k: int) -> Iterator[None]:
        """Member k's RNG state as the global one inside the block, as its sequential run would have it."""
        saved = torch.get_rng_state()
        torch.set_rng_state(self.rng_streams[k])
        if self.generators:
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            default = torch.cuda.default_generators[index]
            saved_cuda = default.graphsafe_get_state()
            default.graphsafe_set_state(self.generators[k])  # draws advance the member's own state
        try:
            yield
        finally:
            self.rng_streams[k] = torch.get_rng_state()
            torch.set_rng_state(saved)
            if self.generators:
                default.graphsafe_set_state(saved_cuda)

    def g_fwd(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self._forward(self.G, self.g_params, self.g_buffers, z, y, self._masks(self.g_dropout, z, y))

    def d_fwd(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self._forward(self.D, self.d_params, self.d_buffers, x, y, self._masks(self.d_dropout, x, y))

    def d_parameters(self) -> Iterable[torch.Tensor]:
        return self.d_params.values()

    def statistics(self, losses: list[torch.Tensor], real_logits: torch.Tensor,
                   fake_logits: torch.Tensor) -> torch.Tensor:
        if self.forward == "vmap":
            return d_statistics(torch.stack(losses), real_logits, fake_logits)
        # member by member, as its sequential run reduces them (a row of a (K, n) tensor may round differently)
        return torch.stack([d_statistics(loss, r, f) for loss, r, f in zip(losses, real_logits, fake_logits)])

    def _masks(self, dropout: _MemberDropout, x: torch.Tensor, y: torch.Tensor | None) -> dict | None:
        """Each member's dropout masks for one forward pass, drawn from its own RNG stream."""
        if not dropout.layers:
            return None
        draws = self._each(lambda k: dropout.draw(x[k], _at(y, k)))
        return {name: torch.stack([d[name] for d in draws]) for name in draws[0]}

    # -- the rest of the loop's protocol ----------------------------------------------------------

    def drop(self, member: int) -> None:
        """The member's modules get their own copies of its weights (later group updates no longer reach
        them) and its slice stops learning; the others' arithmetic is untouched (members share nothing)."""
        if not self.live[member]:
            return
        self.live[member] = False
        for net in (self.steps[member].G, self.steps[member].D):
            _own_copies(net)
        for opt in (self.opt_g, self.opt_d):
            opt.stop(member)

    def gan_of(self, member: int) -> GAN:
        return self.steps[member].gan

    def evaluated(self, member: int) -> GAN:
        return self.steps[member].evaluated(0)

    def state_dict(self, member: int) -> dict:
        """As the member's sequential `GANStep.state_dict()` writes it (torch Adam's optimizer format)."""
        s = self.steps[member]
        if self.live[member]:
            _to_member_adam(self.opt_g, s.opt_g, member, load=False)
            _to_member_adam(self.opt_d, s.opt_d, member, load=False)
        state = s.state_dict()
        for net in ("G", "D"):  # a member's tensors are views of the group's: keep its slice only
            state[net] = {k: v.clone() for k, v in state[net].items()}
        return state

    def load_state_dict(self, member: int, state: dict) -> None:
        s = self.steps[member]
        s.load_state_dict(0, state)  # into the member's modules: views of the group's tensors while it is live
        if self.live[member]:
            _to_member_adam(self.opt_g, s.opt_g, member, load=True)
            _to_member_adam(self.opt_d, s.opt_d, member, load=True)

    def rng_state(self, member: int) -> dict:
        state = {"torch_rng": self.rng_streams[member].clone()}
        if self.generators:
            state["cuda_rng"] = self.generators[member].get_state()
        return state

    def set_rng_state(self, member: int, state: dict) -> None:
        self.rng_streams[member] = state["torch_rng"].clone()
        if self.generators:
            self.generators[member].set_state(state["cuda_rng"])  # in place: a graph holds the generator


# -- helpers -------------------------------------------------------------------------------------


def _vmapped(template: nn.Module, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor | None,
             masks: dict | None = None):
    """Every member's forward pass at once: member k's weights on x[k] (and labels y[k], dropout masks[k])."""
    def call(p, b, x, y, masks):
        _MaskedDropout.masks = masks
        try:
            return functional_call(template, (p, b), (x, y))
        finally:
            _MaskedDropout.masks = None
    return vmap(call, in_dims=(0, 0, 0, None if y is None else 0, None if masks is None else 0))(
        params, buffers, x, y, masks)


def _member_by_member(template: nn.Module, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor | None,
                      masks: dict | None = None):
    """`_vmapped`'s result from K ordinary forward passes, one per member, on its slices of the stacked
    weights: the kernels a sequential run calls (the backward pass stacks the members' gradients once)."""
    p_slices = {name: p.unbind(0) for name, p in params.items()}
    b_slices = {name: b.unbind(0) for name, b in buffers.items()}
    out = []
    for k in range(x.shape[0]):
        _MaskedDropout.masks = None if masks is None else {name: m[k] for name, m in masks.items()}
        try:
            out.append(functional_call(template, ({n: v[k] for n, v in p_slices.items()},
                                                  {n: v[k] for n, v in b_slices.items()}), (x[k], _at(y, k))))
        finally:
            _MaskedDropout.masks = None
    return torch.stack(out)


FORWARDS = {"vmap": _vmapped, "member_by_member": _member_by_member}


class _MaskedDropout(nn.Module):
    """A dropout layer of the batched template: it multiplies by the member's mask that the step drew
    beforehand (already scaled by 1 / (1 - p), as dropout scales it)."""

    masks: dict | None = None  # set around one batched forward pass (vmap runs it in this thread)

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _MaskedDropout.masks[self.name].to(x.dtype)


class _MemberDropout:
    """The dropout layers of a net, and how to draw one member's masks for one forward pass exactly as
    the member's own net would (same function, shapes and order, so the same RNG draws)."""

    def __init__(self, template: nn.Module):
        self.layers = {name: m for name, m in template.named_modules()
                       if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0}
        self._calls: dict[tuple, list[tuple[str, torch.Size]]] = {}
        if self.layers:
            self.probe = copy.deepcopy(template)  # keeps the real dropout layers, on the meta device
            for name in self.layers:
                owner, _, leaf = name.rpartition(".")
                setattr(template.get_submodule(owner), leaf, _MaskedDropout(name))

    def _order(self, x: torch.Tensor, y: torch.Tensor | None) -> list[tuple[str, torch.Size]]:
        """The dropout layers a forward pass on inputs of these shapes calls, in order, with their input shapes."""
        key = (tuple(x.shape), None if y is None else tuple(y.shape))
        if key not in self._calls:
            calls: list[tuple[str, torch.Size]] = []
            handles = [self.probe.get_submodule(name).register_forward_pre_hook(
                lambda _m, args, name=name: calls.append((name, args[0].shape))) for name in self.layers]
            try:
                with torch.no_grad():
                    self.probe(x.to("meta"), None if y is None else y.to("meta"))
            finally:
                for h in handles:
                    h.remove()
            if len({name for name, _ in calls}) != len(calls):
                raise ValueError("a dropout layer runs twice in one forward pass: its masks cannot be drawn ahead")
            self._calls[key] = calls
        return self._calls[key]

    def draw(self, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """{layer: mask} for one member's forward pass on x, from the global RNG (the caller's member stream)."""
        masks = {}
        for name, shape in self._order(x, y):
            layer = self.layers[name]
            masks[name] = type(layer)(layer.p)(torch.ones(shape, device=x.device))  # draws as the layer would
        return masks


class _MemberNet(nn.Module):
    """Member k's own net run on its slice of the group's parameters (its buffers are already views of the
    group's): for hooks that call a net themselves, so their gradients reach the group's optimizer."""

    def __init__(self, net: nn.Module, params: dict, k: int):
        super().__init__()
        self.net, self.k = net, k
        self._stacked = params

    def forward(self, *args):
        return functional_call(self.net, {n: p[self.k] for n, p in self._stacked.items()}, args, strict=False)


def _at(t: torch.Tensor | None, k: int) -> torch.Tensor | None:
    return None if t is None else t[k]


def _stack(nets: list[nn.Module]) -> tuple[nn.Module, dict, dict]:
    """A shapes-only template of the nets, their stacked parameters and buffers, and each net re-pointed
    at its slice (so evaluating, saving or averaging a member's net reads the group's current weights)."""
    named_params = [dict(n.named_parameters()) for n in nets]
    named_buffers = [dict(n.named_buffers()) for n in nets]
    params = {name: _stacked([d[name] for d in named_params]).requires_grad_(p.requires_grad)
              for name, p in named_params[0].items()}
    buffers = {name: _stacked([d[name] for d in named_buffers]) for name in named_buffers[0]}
    template = copy.deepcopy(nets[0]).to("meta")  # before re-pointing: a copy of a view would copy the group
    for k, net in enumerate(nets):
        for name, p in net.named_parameters():
            p.data = params[name].detach()[k]
        for name, b in list(net.named_buffers()):
            owner, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(owner), leaf, buffers[name][k])
    return template, params, buffers


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors stacked, shape (K, ...), each slice with its tensor's strides. `torch.stack` keeps the
    memory format only where it is unambiguous: a (32, 1, 3, 3) channels-last weight would come back
    contiguous, and a convolution picks its kernel (and its rounding) by its weight's strides."""
    t = tensors[0]
    out = torch.empty_strided((len(tensors), *t.shape), (t.numel(), *t.stride()), dtype=t.dtype, device=t.device)
    with torch.no_grad():
        for k, x in enumerate(tensors):
            out[k].copy_(x)
    return out


def _own_copies(net: nn.Module) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.data = p.data.clone()
        for name, b in list(net.named_buffers()):
            owner, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(owner), leaf, b.clone())


def _member_adam(params: dict, opts: list[torch.optim.Optimizer]) -> MemberAdam:
    """The group's Adam: each member's rates and betas, and the kernels its own Adam would use."""
    groups = [o.param_groups[0] for o in opts]
    device = next(iter(params.values())).device
    return MemberAdam(params.values(), lr=[g["lr"] for g in groups], betas=[g["betas"] for g in groups],
                      eps=groups[0]["eps"], fused=groups[0]["fused"], foreach=groups[0]["foreach"],
                      capturable=device.type == "cuda")


def _to_member_adam(group: MemberAdam, own: torch.optim.Optimizer, member: int, *, load: bool) -> None:
    """Copy member `member`'s Adam state between the group's stacked optimizer and its own torch Adam
    (the one its sequential run would have, kept so its state dict has torch's format)."""
    for stacked, p in zip(group.param_groups[0]["params"], own.param_groups[0]["params"], strict=True):
        mine, theirs = group.state[stacked], own.state.get(p)
        if load:
            if theirs:  # a fresh member has no state yet: the group's zeros are right
                mine["exp_avg"][member].copy_(theirs["exp_avg"])
                mine["exp_avg_sq"][member].copy_(theirs["exp_avg_sq"])
                mine["step"][member].copy_(theirs["step"])
        elif mine["step"][member] > 0:
            own.state[p] = {"step": mine["step"][member].clone(), "exp_avg": mine["exp_avg"][member].clone(),
                            "exp_avg_sq": mine["exp_avg_sq"][member].clone()}
