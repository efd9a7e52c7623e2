"""What a network part is made of: affine stacks and piecewise-linear stacks with a smooth end.

Exact integrated gradients need the part of the network above the attributed layer to be
piecewise linear in its input (affine layers separated by ReLU / LeakyReLU) up to one final
elementwise nonlinearity. The stimulus path coincides with the activation path when the part
below the layer is affine. This module decides both from the module tree, refusing, with the
offending module named, anything whose forward it cannot see through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast, overload

import numpy as np
import torch
from torch import nn

from mechlens.torchutil import TrainingOnly
from mechlens_attribution.base import UnsupportedModelError

#: affine in eval mode (value = linear(x) + constant)
AFFINE: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    TrainingOnly,
)
#: piecewise linear with one kink at 0
PIECEWISE: tuple[type[nn.Module], ...] = (nn.ReLU, nn.LeakyReLU)
#: elementwise, continuous: allowed as the last nonlinearity
FINAL: tuple[type[nn.Module], ...] = (
    nn.Softplus,
    nn.Sigmoid,
    nn.Tanh,
    nn.ELU,
    nn.SiLU,
    nn.GELU,
    nn.Softsign,
    nn.LogSigmoid,
)
#: modules whose behaviour depends on train/eval mode
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, TrainingOnly)
__all__ = ["UnsupportedModelError", "is_affine", "piecewise_plan", "run_with_tangents", "tangent_stages"]

#: identity in eval mode (allowed after the final nonlinearity)
_IDENTITY_IN_EVAL = (nn.Identity, nn.Dropout, TrainingOnly)


def leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """The leaf modules of nested ``nn.Sequential`` containers, in execution order.

    Parameters
    ----------
    module : torch.nn.Module
        A Sequential (possibly nested) or a single leaf module.
    prefix : str
        Name used for ``module`` in the returned paths (``"above"``).

    Returns
    -------
    list of (str, Module)
        ``("above[3]", ReLU())``-style path and module for each leaf.

    Raises
    ------
    UnsupportedModelError
        For a container that is not a Sequential: its forward may do anything.
    """
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out += leaves(child, f"{prefix}[{name}]")
        return out
    if any(True for _ in module.children()):
        raise UnsupportedModelError(
            f"{prefix} is a {type(module).__name__}, a container with its own forward(); only nn.Sequential "
            "containers can be inspected layer by layer"
        )
    return [(prefix, module)]


def _mode_problem(name: str, mod: nn.Module) -> str | None:
    if isinstance(mod, nn.modules.batchnorm._BatchNorm) and (not mod.track_running_stats or mod.running_mean is None):
        return (
            f"{name} ({type(mod).__name__}) has no running statistics, so it normalises with batch statistics "
            "even in eval mode, which couples time points"
        )
    if isinstance(mod, _MODE_DEPENDENT) and mod.training:
        kind = "normalises with batch statistics" if isinstance(mod, nn.modules.batchnorm._BatchNorm) else "is random"
        return f"{name} ({type(mod).__name__}) is in training mode, where it {kind}; put the model in eval mode"
    return None


def is_affine(module: nn.Module) -> bool:
    """Whether ``module`` is affine in its input (in its current mode), judged from its leaves."""
    try:
        parts = leaves(module, "below")
    except UnsupportedModelError:
        return False
    return all(isinstance(m, AFFINE) and _mode_problem(n, m) is None for n, m in parts)


@dataclass
class PiecewisePlan:
    """``above`` seen as affine maps and kinks, then one elementwise nonlinearity.

    Attributes
    ----------
    stages : list of Module
        Leaves from the layer up to (not including) the final nonlinearity; each is in
        :data:`AFFINE` or :data:`PIECEWISE`.
    final : Module or None
        The final elementwise nonlinearity (None: the output is the last stage's).
    n_kinks : int
        Number of ReLU / LeakyReLU stages.
    """

    stages: list[nn.Module]
    final: nn.Module | None

    @property
    def n_kinks(self) -> int:
        return sum(isinstance(m, PIECEWISE) for m in self.stages)


def piecewise_plan(above: nn.Module, where: str = "above") -> PiecewisePlan:
    """Check that ``above`` is piecewise linear up to a final elementwise nonlinearity.

    Parameters
    ----------
    above : torch.nn.Module
        The part of the network above the attributed layer (``model.split(layer)[1]``).
    where : str
        Its name in messages.

    Returns
    -------
    PiecewisePlan

    Raises
    ------
    UnsupportedModelError
        Naming the first module that breaks the condition, and why.
    """
    parts = leaves(above, where)
    # the final nonlinearity: the last non-identity leaf, if it is a FINAL type
    last = len(parts) - 1
    while last >= 0 and isinstance(parts[last][1], _IDENTITY_IN_EVAL):
        last -= 1
    final_idx = last if last >= 0 and isinstance(parts[last][1], FINAL) else None
    stages: list[nn.Module] = []
    for i, (name, mod) in enumerate(parts):
        problem = _mode_problem(name, mod)
        if problem:
            raise UnsupportedModelError(problem)
        if i == final_idx:
            continue
        if final_idx is not None and i > final_idx:
            continue  # identity in eval (checked above)
        if isinstance(mod, AFFINE) or isinstance(mod, PIECEWISE):
            stages.append(mod)
        elif isinstance(mod, FINAL):
            raise UnsupportedModelError(
                f"{name} ({type(mod).__name__}) is a smooth nonlinearity before the last layer; exact integration "
                "needs only affine layers and ReLU/LeakyReLU kinks until one final elementwise nonlinearity"
            )
        else:
            allowed = ", ".join(t.__name__ for t in (*AFFINE, *PIECEWISE))
            raise UnsupportedModelError(
                f"{name} ({type(mod).__name__}) is not known to be affine or piecewise linear; allowed before the "
                f"final nonlinearity: {allowed}; allowed last: {', '.join(t.__name__ for t in FINAL)}"
            )
    return PiecewisePlan(stages=stages, final=parts[final_idx][1] if final_idx is not None else None)


def tangent_stages(above: nn.Module) -> list[nn.Module] | None:
    """The leaves of ``above`` if tangents can be pushed through them by :func:`push_tangent`, else None.

    That is: nested Sequentials of :data:`AFFINE`, :data:`PIECEWISE` and :data:`FINAL` (elementwise)
    modules, none in a training-mode state.
    """
    try:
        parts = leaves(above, "above")
    except UnsupportedModelError:
        return None
    for name, mod in parts:
        if _mode_problem(name, mod) is not None or not isinstance(mod, (*AFFINE, *PIECEWISE, *FINAL)):
            return None
    return [m for _, m in parts]


def slope(module: nn.Module, value: torch.Tensor) -> torch.Tensor:
    """Derivative of an elementwise module at ``value`` (same shape; torch's convention at kinks)."""
    if isinstance(module, nn.ReLU):
        return (value > 0).to(value.dtype)
    if isinstance(module, nn.LeakyReLU):
        return torch.where(value > 0, 1.0, module.negative_slope).to(value.dtype)
    v = value.detach().requires_grad_(True)
    with torch.enable_grad():
        (d,) = torch.autograd.grad(module(v).sum(), v)
    return d


def push_tangent(module: nn.Module, value: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """Push tangents through one stage: its derivative at ``value`` applied to each tangent.

    Parameters
    ----------
    module : Module
        An :data:`AFFINE`, :data:`PIECEWISE` or :data:`FINAL` module.
    value : Tensor
        (batch, ...) the stage's input.
    tangent : Tensor
        (k * batch, ...) ``k`` stacked directions per input row (direction-major).

    Returns
    -------
    Tensor
        (k * batch, ...) the output tangents (affine stages: their linear part, without bias).
    """
    import torch.nn.functional as F

    if isinstance(module, (*PIECEWISE, *FINAL)):
        k = tangent.shape[0] // value.shape[0]
        return (tangent.view(k, *value.shape) * slope(module, value)).view(tangent.shape)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module._conv_forward(tangent, module.weight, None)
    if isinstance(module, nn.Linear):
        return F.linear(tangent, module.weight)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        # cast: running_var is Optional, but tangent_stages refuses a batch norm without running stats
        scale = torch.rsqrt(cast(torch.Tensor, module.running_var) + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shape = [1, -1] + [1] * (tangent.dim() - 2)
        return tangent * scale.view(shape).to(tangent.dtype)
    if isinstance(module, (*_IDENTITY_IN_EVAL, nn.modules.dropout._DropoutNd)):
        return tangent
    # Flatten, Unflatten, average pools, zero padding: linear and bias-free
    return module(tangent)


#: stages that act on each channel separately (a compact per-channel tangent passes through them as is)
_CHANNELWISE = (
    *PIECEWISE,
    *FINAL,
    nn.modules.batchnorm._BatchNorm,
    nn.Flatten,
    nn.Unflatten,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    *_IDENTITY_IN_EVAL,
    nn.modules.dropout._DropoutNd,
)


def _owner(shape: tuple[int, ...], n_channels: int, device: torch.device) -> torch.Tensor:
    """Channel (of the attributed layer) owning each element of a per-row tensor of ``shape``.

    Channel-wise stages and reshapes keep the row-major order, so element ``i`` of a row still
    belongs to channel ``i // (numel / n_channels)``.
    """
    numel = int(np.prod(shape))
    return (torch.arange(numel, device=device) // (numel // n_channels)).view(shape)


def expand_compact(t: torch.Tensor, n_channels: int) -> torch.Tensor:
    """(rows, ...) compact channel tangents -> (n_channels * rows, ...) one dense tangent per channel."""
    owner = _owner(tuple(t.shape[1:]), n_channels, t.device)
    masks = owner.unsqueeze(0) == torch.arange(n_channels, device=t.device).view(-1, *([1] * owner.dim()))
    return (t.unsqueeze(0) * masks.unsqueeze(1).to(t.dtype)).flatten(0, 1)


def _expand_through(module: nn.Module, t: torch.Tensor, n_channels: int) -> torch.Tensor | None:
    """Apply a mixing stage to compact channel tangents, giving dense ones, at the cost of ~one pass.

    A convolution sees each tangent in one input channel only: one single-input-channel convolution
    per channel computes them. A linear layer sees each in one block of its inputs.
    Returns None when the shortcut does not apply.
    """
    import torch.nn.functional as F

    rows = t.shape[0]
    convs = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
    if (
        isinstance(module, nn.modules.conv._ConvNd)  # for the type checker: type(module) in convs is stricter
        and type(module) in convs
        and module.groups == 1
        and module.padding_mode == "zeros"
        and t.shape[1] == n_channels == module.in_channels
    ):
        w = module.weight  # (out, in, *k)
        conv = convs[type(module)]
        # one convolution per channel (in 1 -> out): 2-3x faster on the CPU than the equivalent grouped
        # convolution with groups=C, which takes a slow path there
        out = torch.stack(
            [
                conv(t[:, c : c + 1], w[:, c : c + 1], None, module.stride, module.padding, module.dilation)
                for c in range(n_channels)
            ]
        )  # (C, rows, out, ...)
        return out.flatten(0, 1)
    if isinstance(module, nn.Linear) and t.dim() == 2 and t.shape[1] % n_channels == 0:
        block = t.shape[1] // n_channels
        w = module.weight.view(module.out_features, n_channels, block)
        return torch.einsum("rcp,ocp->cro", t.view(rows, n_channels, block), w).flatten(0, 1)
    return None


@overload
def run_with_tangents(
    stages: list[nn.Module],
    value: torch.Tensor,
    tangent: torch.Tensor,
    record_kinks: bool = False,
    compact_channels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]: ...
@overload
def run_with_tangents(
    stages: list[nn.Module],
    value: torch.Tensor,
    tangent: None = None,
    record_kinks: bool = False,
    compact_channels: int | None = None,
) -> tuple[torch.Tensor, None, list[tuple[torch.Tensor, None]]]: ...
def run_with_tangents(
    stages: list[nn.Module],
    value: torch.Tensor,
    tangent: torch.Tensor | None = None,
    record_kinks: bool = False,
    compact_channels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, Sequence[tuple[torch.Tensor, torch.Tensor | None]]]:
    """Run ``stages`` on ``value``, pushing ``tangent`` (k stacked directions per row) along.

    Parameters
    ----------
    stages : list of Module
        From :func:`tangent_stages` or a :class:`PiecewisePlan`.
    value : Tensor
        (batch, ...) input.
    tangent : Tensor, optional
        (k * batch, ...) directions, direction-major; or, with ``compact_channels=C``, (batch, C, ...)
        standing for the C directions "the tangent restricted to channel c" (channel tangents).
    record_kinks : bool
        Record each ReLU / LeakyReLU input (value and tangent flattened per row; needs k = 1).
    compact_channels : int, optional
        Number of channels of a compact channel tangent. Channel-wise stages (elementwise, batch norm,
        pools, reshapes) act on it as on one tangent; the first convolution or linear layer expands
        it into C dense tangents at the cost of about one pass (see :func:`_expand_through`).

    Returns
    -------
    out : Tensor
        (batch, ...) output.
    out_tangent : Tensor or None
        (k * batch, ...) its directional derivatives (k = C for compact channel tangents).
    kinks : list of (Tensor, Tensor or None)
        The recorded kink inputs, (batch, units) each.
    """
    kinks: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    v, t = value, tangent
    # the number of channels while the tangent is still compact, else None
    compact = compact_channels if t is not None else None
    for mod in stages:
        if record_kinks and isinstance(mod, PIECEWISE):
            kinks.append((v.flatten(1), t.flatten(1) if t is not None else None))
        if t is not None:
            if compact is not None and not isinstance(mod, _CHANNELWISE):
                dense = _expand_through(mod, t, compact)
                t = dense if dense is not None else push_tangent(mod, v, expand_compact(t, compact))
                compact = None
            else:
                t = push_tangent(mod, v, t)
        v = mod(v)
    if compact is not None and t is not None:  # t is not None whenever compact is not
        t = expand_compact(t, compact)
    return v, t, kinks


def final_integral(
    final: torch.nn.Module | None, p_a: torch.Tensor, p_b: torch.Tensor, length: torch.Tensor
) -> torch.Tensor:
    """Exact ``integral_a^b g'(p(alpha)) dalpha`` for ``p`` affine from ``p_a`` to ``p_b`` over ``length``.

    Parameters
    ----------
    final : Module or None
        The elementwise nonlinearity ``g`` (None: the identity, whose integral is ``length``).
    p_a, p_b : Tensor
        (segments, cells) ``p`` at the segment ends, float64.
    length : Tensor
        (segments, 1) segment lengths ``b - a``, float64.

    Returns
    -------
    Tensor
        (segments, cells) float64.
    """
    import torch

    if final is None:
        return length.expand_as(p_a).clone()
    dp = p_b - p_a
    small = dp.abs() < 1e-6
    with torch.no_grad():
        out = (final(p_b) - final(p_a)) / torch.where(small, torch.ones_like(dp), dp) * length
    if bool(small.any()):
        # where p barely moves the difference quotient cancels badly: use the midpoint rule, whose error
        # |g'''| dp^2 / 24 is far below float64 resolution there
        rows, cols = torch.nonzero(small, as_tuple=True)
        mid = ((p_a[rows, cols] + p_b[rows, cols]) / 2).detach().requires_grad_(True)
        with torch.enable_grad():
            (slope,) = torch.autograd.grad(final(mid).sum(), mid)
        out[rows, cols] = slope * length[rows, 0]
    return out
