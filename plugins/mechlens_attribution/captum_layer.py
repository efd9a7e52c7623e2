"""One-pass Captum layer methods: gradient x activation and DeepLift (Rescale).

Both run Captum on ``above`` with the layer activations (computed once per window by ``below``)
as inputs, so they attribute to exactly the same units as the integrated-gradients attributors.
All selected cells go through one Captum call: the chunk is repeated once per cell and each copy
gets its own target.

Completeness: DeepLift-Rescale satisfies summation-to-delta, ``sum(A) = r(s) - r(baseline)``, up to
rounding on networks made of affine layers and the nonlinearities Captum's DeepLift knows (ReLU,
Softplus, Sigmoid, Tanh, ELU, LeakyReLU); gradient x activation does not (it is a first-order
Taylor term), and its ``completeness_error`` says by how much.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mechlens.parameters import param
from mechlens_attribution.base import CommonParameters, LayerAttributor, LayerContext

if TYPE_CHECKING:  # torch and captum are imported where used (cheap plugin discovery)
    import torch


def _head(above: torch.nn.Module) -> torch.nn.Module:
    """``above`` behind an identity module (attribute ``layer``), so Captum layer methods can name its input."""
    from torch import nn

    head = nn.Sequential()
    head.add_module("layer", nn.Identity())
    head.add_module("above", above)
    return head


def _stack_cells(ctx: LayerContext, z: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The chunk repeated once per selected cell (cell-major), and the matching Captum targets."""
    rows = z.shape[0]
    targets = ctx.cell_index.repeat_interleave(rows).tolist()
    return z.repeat(ctx.n_cells, *([1] * (z.dim() - 1))), targets


def _unstack(a: torch.Tensor, ctx: LayerContext, rows: int) -> torch.Tensor:
    """(cells*rows, *shape) -> (rows, cells, *shape)."""
    return a.reshape(ctx.n_cells, rows, *a.shape[1:]).transpose(0, 1)


class GradientXActivation(LayerAttributor):
    """Gradient of each cell's rate times the layer activation (Captum LayerGradientXActivation); one pass."""

    name = "gradient-x-activation"

    @dataclass(frozen=True)
    class Parameters(CommonParameters):
        multiply_by: str = param(
            "difference",
            "difference: gradient x (activation - baseline activation), a one-step integrated gradient; "
            "activation: gradient x activation (Captum's definition, ignores the baseline)",
            choices=("difference", "activation"),
        )

    def describe_method(self, ctx: LayerContext) -> dict[str, Any]:
        return {"path": "none", "method": f"gradient-x-{self.params.multiply_by}", "n_steps": 1}

    def bytes_per_row(self, ctx: LayerContext) -> float:
        return 4.0 * ctx.act_numel * 3 * ctx.planned

    def attribute_chunk(self, ctx: LayerContext, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        import torch
        from captum.attr import LayerGradientXActivation

        head = _head(ctx.above)
        method = LayerGradientXActivation(head, head.layer, multiply_by_inputs=False)
        inputs, targets = _stack_cells(ctx, z)
        with torch.enable_grad():
            grad = method.attribute(inputs, target=targets).detach()
        factor = z - ctx.z0 if self.params.multiply_by == "difference" else z
        return _unstack(grad, ctx, z.shape[0]) * factor.unsqueeze(1)


class DeepLift(LayerAttributor):
    """DeepLift (Rescale rule) of each cell's rate to the units of a hidden layer (Captum DeepLift); one pass."""

    name = "deeplift"

    @dataclass(frozen=True)
    class Parameters(CommonParameters):
        pass

    def describe_method(self, ctx: LayerContext) -> dict[str, Any]:
        return {"path": "none", "method": "deeplift-rescale", "n_steps": 1}

    def bytes_per_row(self, ctx: LayerContext) -> float:
        return 4.0 * ctx.act_numel * 6 * ctx.planned

    def attribute_chunk(self, ctx: LayerContext, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        import torch
        from captum.attr import DeepLift as CaptumDeepLift

        method = CaptumDeepLift(_head(ctx.above))
        inputs, targets = _stack_cells(ctx, z)
        with warnings.catch_warnings():
            # Captum warns that it sets hooks on the activation modules; they are removed afterwards
            warnings.simplefilter("ignore", UserWarning)
            with torch.enable_grad():
                a = method.attribute(inputs, baselines=ctx.z0.expand_as(inputs), target=targets)
        return _unstack(a.detach(), ctx, z.shape[0])
