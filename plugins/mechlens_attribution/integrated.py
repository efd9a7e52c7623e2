"""Integrated gradients to hidden units, by quadrature, for every cell and time point.

For cell ``n``, time ``t`` and unit ``u`` of the layer ``z = below(s)``::

    A[t, n, u] = integral_0^1  dr_n/dz_u (z(alpha)) * dz_u/dalpha  dalpha

along one of two paths from the baseline to the stimulus window ``s_t``:

- ``path="activation"``: the straight line in the layer, ``z(alpha) = z0 + alpha (z_t - z0)``
  (Captum ``LayerIntegratedGradients``; ``IntegratedGradients`` applied to ``above``);
- ``path="stimulus"``: the image in the layer of the straight line in the stimulus,
  ``z(alpha) = below(x0 + alpha (s_t - x0))`` (Captum ``LayerConductance``; what Tanaka et al.'s code
  computes). When ``below`` is affine (a first convolution) the two paths are the same line.

The native backend evaluates the layer activations once per window and puts all integration steps
of a chunk of windows in one batch. It gets every selected cell at once, either from one batched
backward pass (``grad_outputs`` stacked over cells: reverse mode, needed for ``keep_space``) or,
when only channel sums are wanted and the layer has few channels, by pushing one tangent per
channel forward (forward mode: every cell from each tangent). The quadrature nodes and weights are
Captum's, computed here (:func:`quadrature`). ``backend="captum"`` calls Captum's own classes instead
(one cell per call; slower; for cross-checks).

With ReLUs above the layer the integrand jumps wherever a unit switches along the path, so every
rule converges only like 1/n_steps. The default (``n_steps=0``) is therefore adaptive: each time
point starts at 32 nodes and doubles until its completeness error is at most ``tolerance`` times
the response range (or ``max_steps`` is reached); the steps used are stored per time point.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mechlens.errors import ParameterError, UsageError
from mechlens.parameters import param
from mechlens_attribution.base import METHODS, CommonParameters, LayerAttributor, LayerContext

if TYPE_CHECKING:  # torch, captum and the structure helpers are imported where used (cheap discovery)
    import torch

#: nodes of the first try of the adaptive rule
START_STEPS = 32


@functools.lru_cache(maxsize=32)
def _nodes(method: str, n_steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights of ``method`` on [0, 1] (see :func:`quadrature`), computed here in float64.

    Captum's rules, computed here rather than taken from Captum's private
    ``captum.attr._utils.approximation_methods``: a Riemann sum weights ``n`` nodes ``1/n`` each, at
    the left ends, midpoints or right ends of ``n`` equal steps (Captum rounds the same nodes to
    float32); Gauss-Legendre takes the nodes and weights of ``numpy.polynomial.legendre.leggauss``
    (which Captum calls), mapped from [-1, 1] to [0, 1].
    """
    n = n_steps
    if method == "gausslegendre":
        # leggauss's rule computed by scipy: leggauss finds the nodes as eigenvalues of an n x n matrix,
        # O(n^3) (13 s for the adaptive rule's 4096 nodes), scipy's roots_legendre by Newton's method,
        # O(n); they agree to ~1e-15 (a test checks)
        from scipy.special import roots_legendre

        x, w = roots_legendre(n)
        return tuple(0.5 * (1 + x)), tuple(0.5 * w)
    if method == "riemann_trapezoid":
        # Captum spaces these nodes 1/(n-1) apart but weights them 1/n, so its weights sum to 1 - 1/n;
        # the trapezoid rule proper weights them 1/(n-1), halved at the ends
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] /= 2
        return tuple(np.linspace(0.0, 1.0, n)), tuple(w)
    # the left end, midpoint or right end of each of n equal steps
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return tuple((np.arange(n) + offset) / n), tuple(np.full(n, 1.0 / n))


def quadrature(method: str, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes in [0, 1] and weights (summing to 1) of the rule ``method`` with ``n_steps`` nodes.

    Captum's nodes and weights, except ``riemann_trapezoid``, whose weights Captum scales wrongly
    (they sum to 1 - 1/n); here they are the trapezoid rule's.

    Parameters
    ----------
    method : str
        One of :data:`~mechlens_attribution.base.METHODS`.
    n_steps : int
        Number of nodes (at least 2).

    Returns
    -------
    alphas, weights : Tensor
        (n_steps,) float64 each.
    """
    import torch

    alphas, weights = _nodes(method, int(n_steps))
    return torch.tensor(alphas, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64)


def batched_grad(out: torch.Tensor, inp: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Gradients of every output column, weighted per row, in one batched backward pass.

    Parameters
    ----------
    out : Tensor
        (rows, n_cells) outputs, in the graph of ``inp``.
    inp : Tensor
        Leaf tensor requiring grad.
    weights : Tensor
        (rows, n_cells) or (rows,) weight of each row's gradient.

    Returns
    -------
    Tensor
        (n_cells, *inp.shape): ``[n] = d(sum_rows weights[row, n] * out[row, n]) / d inp``.
    """
    import torch

    n = out.shape[1]
    w = weights.to(out.dtype)
    if w.dim() == 1:
        w = w[:, None].expand(-1, n)
    eye = torch.eye(n, dtype=out.dtype, device=out.device)
    cot = eye[:, None, :] * w[None]  # (n_cells, rows, n_cells)
    try:
        (g,) = torch.autograd.grad(out, inp, cot, is_grads_batched=True)
    except RuntimeError:
        # some ops have no batching rule for their backward: one backward pass per cell
        g = torch.stack([torch.autograd.grad(out, inp, cot[i], retain_graph=i < n - 1)[0] for i in range(n)])
    return g


def use_forward_mode(mode: str, keep_space: bool, n_channels: int, n_cells: int, stages: object) -> bool:
    """Whether to attribute by channel tangents (forward) rather than batched backward passes.

    A tangent costs about one forward pass; a cell's backward pass about two on CPU, so forward
    mode wins up to about two channels per cell. It gives channel sums only.
    """
    if mode == "reverse" or keep_space:
        return False
    if mode == "forward":
        if stages is None:
            raise UsageError(
                "ad_mode=forward needs the part above the layer to be a Sequential of known modules "
                "(affine layers and elementwise nonlinearities); use ad_mode=reverse or auto"
            )
        return True
    return stages is not None and n_channels <= 2 * n_cells


class IntegratedGradients(LayerAttributor):
    """Integrated gradients of each cell's rate to the units of a hidden layer (Captum; quadrature)."""

    name = "integrated-gradients"

    @property
    def needs_response_span(self) -> bool:  # type: ignore[override]
        """Only the adaptive rule (``n_steps=0``) refers to the response range."""
        return not self.params.n_steps

    @dataclass(frozen=True)
    class Parameters(CommonParameters):
        path: str = param(
            "activation",
            "activation: straight line in the layer; stimulus: the layer's image of the straight line in the "
            "stimulus (Captum LayerConductance, the authors' code)",
            choices=("activation", "stimulus"),
        )
        method: str = param("gausslegendre", "quadrature rule (Captum's names)", choices=METHODS)
        n_steps: int = param(
            0,
            "quadrature nodes per time point; 0: adaptive (32, doubled per time point until the completeness "
            "error is below tolerance x response range, at most max_steps)",
            min=0,
        )
        tolerance: float = param(
            1e-4, "adaptive rule: completeness error allowed, relative to the response range", gt=0
        )
        max_steps: int = param(4096, "adaptive rule: most nodes per time point", min=START_STEPS)
        backend: str = param(
            "native",
            "native: batched over steps and cells; captum: Captum's classes, one cell per call (cross-check)",
            choices=("native", "captum"),
        )
        ad_mode: str = param(
            "auto",
            "native backend: forward (one tangent per channel; channel sums only), reverse (batched backward "
            "over cells; needed for keep_space) or auto",
            choices=("auto", "forward", "reverse"),
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.n_steps == 1:
                raise ParameterError("n_steps", "got 1; give 0 (adaptive) or at least 2 nodes")
            if self.ad_mode == "forward" and self.keep_space:
                raise ParameterError(
                    "ad_mode", "forward mode gives channel sums only; use reverse or auto with keep_space"
                )

    def _same_line(self, ctx: LayerContext) -> bool:
        from mechlens_attribution.structure import is_affine

        return self.params.path == "activation" or is_affine(ctx.below)

    def prepare(self, ctx: LayerContext) -> None:
        from mechlens_attribution.structure import tangent_stages

        self._stages = tangent_stages(ctx.above)
        self._forward = self.params.backend == "native" and use_forward_mode(
            self.params.ad_mode, self.params.keep_space, ctx.shape[0], ctx.planned, self._stages
        )

    def describe_method(self, ctx: LayerContext) -> dict[str, Any]:
        p = self.params
        info: dict[str, Any] = {
            "path": p.path,
            "method": p.method,
            "n_steps": int(p.n_steps) if p.n_steps else f"adaptive (tolerance {p.tolerance:g}, max {p.max_steps})",
            "backend": p.backend,
        }
        if p.backend == "native":
            info["ad_mode"] = "forward" if self._forward else "reverse"
        if p.path == "stimulus" and self._same_line(ctx):
            info["path_note"] = "below is affine: the stimulus path is the straight line in the layer"
        return info

    def _bytes_per_sample(self, ctx: LayerContext) -> float:
        k = ctx.shape[0] if getattr(self, "_forward", False) else ctx.planned
        per = 4.0 * ctx.act_numel * (2 + 2 * k)
        if self.params.backend == "captum":
            per *= 2
        if not self._same_line(ctx):
            per += 4.0 * 3 * (ctx.x0.numel() + ctx.z0.numel() * (1 + k))
        return per

    def bytes_per_row(self, ctx: LayerContext) -> float:
        return self._bytes_per_sample(ctx) * (self.params.n_steps or START_STEPS * 4)

    def _steps_per_pass(self, ctx: LayerContext, rows: int, n_steps: int) -> int:
        per = self._bytes_per_sample(ctx) * rows
        return int(max(1, min(n_steps, self.params.memory_gb * 1e9 // max(per, 1.0))))

    def attribute_chunk(
        self, ctx: LayerContext, x: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        import torch

        p = self.params
        rows = z.shape[0]
        if p.n_steps:
            return self._integrate(ctx, x, z, p.n_steps), {"integration_steps": np.full(rows, p.n_steps, np.int32)}
        with torch.no_grad():
            delta = (ctx.above(z)[:, ctx.cell_index] - ctx.r0).double()
        allowed = p.tolerance * (ctx.response_span or 1.0)
        n = START_STEPS
        steps = np.full(rows, n, np.int32)
        attr = self._integrate(ctx, x, z, n).double()
        todo = torch.arange(rows, device=z.device)
        while n < p.max_steps:
            err = (attr[todo].flatten(2).sum(2) - delta[todo]).abs().amax(1)
            todo = todo[err > allowed]
            if len(todo) == 0:
                break
            n = min(2 * n, p.max_steps)
            attr[todo] = self._integrate(ctx, x[todo], z[todo], n).double()
            steps[todo.cpu().numpy()] = n
        return attr, {"integration_steps": steps}

    def _integrate(self, ctx: LayerContext, x: torch.Tensor, z: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Attributions with a fixed number of nodes: (rows, cells, *shape), or (rows, cells, C) in forward mode."""
        import torch

        from mechlens_attribution.structure import run_with_tangents

        if self.params.backend == "captum":
            return self._captum(ctx, x, z, n_steps)
        alphas, weights = quadrature(self.params.method, n_steps)
        rows = z.shape[0]
        line = self._same_line(ctx)
        per = self._steps_per_pass(ctx, rows, n_steps)
        if self._forward:
            total = torch.zeros((rows, ctx.n_cells, ctx.shape[0]), dtype=torch.float64, device=z.device)
        elif line:
            total = torch.zeros((ctx.n_cells, *z.shape), dtype=torch.float64, device=z.device)
        else:
            total = torch.zeros((ctx.n_cells, rows, *ctx.shape), dtype=torch.float64, device=z.device)
        dz = z - ctx.z0
        dx = x - ctx.x0
        for k0 in range(0, len(alphas), per):
            a = alphas[k0 : k0 + per].to(device=z.device, dtype=z.dtype)
            w = weights[k0 : k0 + per].to(device=z.device, dtype=z.dtype)
            k = len(a)
            if line:
                with torch.no_grad():
                    points = (ctx.z0 + a.view(k, *([1] * z.dim())) * dz.unsqueeze(0)).flatten(0, 1)
                tangent = dz.repeat(k, *([1] * (dz.dim() - 1)))
            else:
                xs = (ctx.x0 + a.view(k, *([1] * x.dim())) * dx.unsqueeze(0)).flatten(0, 1)
                with torch.no_grad():
                    # cast: without has_aux, jvp returns the pair (output, jvp_out)
                    points, tangent = cast(
                        "tuple[torch.Tensor, torch.Tensor]",
                        torch.func.jvp(ctx.below, (xs,), (dx.repeat(k, *([1] * (dx.dim() - 1))),)),
                    )
            wk = w.repeat_interleave(rows)  # (k * rows,) step-major like points
            if self._forward:
                with torch.no_grad():
                    # cast: self._forward implies stages (use_forward_mode)
                    stages = cast("list[torch.nn.Module]", self._stages)
                    _, out_t, _ = run_with_tangents(stages, points, tangent, compact_channels=ctx.shape[0])
                c = ctx.shape[0]
                out_t = out_t[:, ctx.cell_index].view(c, k, rows, ctx.n_cells) * w.view(1, k, 1, 1)
                total += out_t.sum(1, dtype=torch.float64).permute(1, 2, 0)
            elif line:
                # gradients w.r.t. a zero offset shared by all steps: autograd sums over the steps
                offset = torch.zeros_like(z, requires_grad=True)
                with torch.enable_grad():
                    out = ctx.above((points.view(k, *z.shape) + offset).flatten(0, 1))
                    total += batched_grad(out[:, ctx.cell_index], offset, wk).double()
            else:
                points = points.detach().requires_grad_(True)
                with torch.enable_grad():
                    g = batched_grad(ctx.above(points)[:, ctx.cell_index], points, wk)
                total += (g * tangent.unsqueeze(0)).view(ctx.n_cells, k, rows, *ctx.shape).sum(1, dtype=torch.float64)
        if self._forward:
            return total
        if line:
            return (total * dz.double().unsqueeze(0)).transpose(0, 1)
        return total.transpose(0, 1)

    # -- captum ------------------------------------------------------------------------------------
    def _captum(self, ctx: LayerContext, x: torch.Tensor, z: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Captum's IntegratedGradients on ``above`` (activation path) or LayerConductance (stimulus path)."""
        import torch
        from captum.attr import IntegratedGradients as CaptumIG
        from captum.attr import LayerConductance

        p = self.params
        rows = x.shape[0]
        internal = max(1, rows * self._steps_per_pass(ctx, rows, n_steps))
        out = []
        for i in ctx.cell_index.tolist():
            if self._same_line(ctx):
                a = CaptumIG(ctx.above).attribute(
                    z,
                    baselines=ctx.z0.expand_as(z),
                    target=i,
                    n_steps=n_steps,
                    method=p.method,
                    internal_batch_size=internal,
                )
            else:
                net = torch.nn.Sequential(ctx.below, ctx.above)
                a = LayerConductance(net, net[0]).attribute(
                    x,
                    baselines=ctx.x0.expand_as(x),
                    target=i,
                    n_steps=n_steps,
                    method=p.method,
                    internal_batch_size=internal,
                )
            out.append(a.detach())
        return torch.stack(out, 1)
