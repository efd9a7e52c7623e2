"""Exact integrated gradients for networks that are piecewise linear above the attributed layer.

Along the straight path ``z(alpha) = z0 + alpha dz`` in the layer, every pre-activation above the
layer is piecewise affine in ``alpha``; between consecutive alphas where some ReLU switches, the
activation pattern is fixed, so the gradient of the pre-output ``p`` (the input of the final
nonlinearity ``g``) is constant and ``p`` itself is affine. The integral therefore splits exactly:

    IG_u(n) = dz_u * sum_segments [ integral_a^b g'(p_n(alpha)) dalpha ] * dp_n/dz_u |segment
            = dz_u * sum_segments  (g(p_n(b)) - g(p_n(a))) / (dp_n/dalpha) * dp_n/dz_u |segment

(the limit ``g'(p_n) (b - a)`` when ``dp_n/dalpha`` vanishes). No quadrature error is left.

Two algorithms (parameter ``algorithm``; ``auto`` takes the sweep wherever it applies):

* ``sweep`` (:mod:`mechlens_attribution.sweep`): for two ReLU layers with one convolution or linear layer
  between them (the paper's CNN at ``conv1``), one compiled pass over each path's switch events.
* ``refine`` (below): any piecewise-linear part above the layer.

Refinement, batched over time rows and segments:

1. *Segmentation* by iterative refinement. Each segment is evaluated at its midpoint: the value and
   the tangent ``dz`` are pushed through the stages (up to the last ReLU) together, giving every
   ReLU input as an affine function ``h(alpha) = h_mid + (alpha - mid) h_t`` that is exact on the
   segment as long as the shallower ReLUs do not switch inside it. For each segment, the shallowest
   ReLU layer with a sign change inside it is found, and the segment is cut at *all* of that layer's
   zero crossings (exact, because the layers below it do not switch there). Rows differ, so this is
   per segment, never on a union of alphas across rows. A piece cut at layer ``k`` only checks the
   layers deeper than ``k`` (layer ``k`` again would only show the same crossings shifted by
   rounding), so a piece cut at the last ReLU layer is final without another evaluation, and the
   refinement takes at most one round per ReLU layer.
2. *One final pass* over all segments, batched, all cells at once: at each segment's midpoint the
   pre-output ``p`` and its slope ``dp/dalpha`` give the weights (the closed-form integral of ``g'``
   above, float64), and either one tangent per channel (forward mode: channel sums) or one batched
   backward pass (reverse mode: per unit, for ``keep_space``) gives the Jacobian, weighted and
   summed over each row's segments, then multiplied by ``dz``.

The refinement's cost grows with the number of linear regions that the path crosses: a handful for
spatially structured stimuli (full-field flashes: all units of a channel switch together), thousands
for white noise through a wide random network, where the sweep is several hundred times faster
(docs/attribution.md gives measured numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mechlens.errors import ParameterError
from mechlens.interfaces import Model
from mechlens.parameters import param
from mechlens_attribution.base import CommonParameters, LayerAttributor, LayerContext, UnsupportedModelError
from mechlens_attribution.integrated import batched_grad, use_forward_mode

if TYPE_CHECKING:  # torch and the structure helpers are imported where used (cheap plugin discovery)
    import torch

    from mechlens_attribution.structure import PiecewisePlan
    from mechlens_attribution.sweep import Sweep


def run_stages(
    plan: PiecewisePlan, value: torch.Tensor, tangent: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, Sequence[tuple[torch.Tensor, torch.Tensor | None]]]:
    """Push a value (and one tangent per row) through the stages before the final nonlinearity.

    Returns the pre-output ``p`` (batch, n_outputs), its tangent, and every kink's input (value,
    tangent), flattened to (batch, units); see :func:`~mechlens_attribution.structure.run_with_tangents`.
    """
    from mechlens_attribution.structure import run_with_tangents

    return run_with_tangents(plan.stages, value, tangent, record_kinks=True)


class ExactIntegratedGradients(LayerAttributor):
    """Integrated gradients without discretisation error, for layers below a piecewise-linear network part."""

    name = "exact-integrated-gradients"
    path = "activation"

    @dataclass(frozen=True)
    class Parameters(CommonParameters):
        ad_mode: str = param(
            "auto",
            "final pass: forward (one tangent per channel; channel sums only), reverse (batched backward over "
            "cells; needed for keep_space) or auto",
            choices=("auto", "forward", "reverse"),
        )
        precision: str = param(
            "float32",
            "arithmetic of the passes above the layer (segment bookkeeping and the final integral are float64)",
            choices=("float32", "float64"),
        )
        max_segments: int = param(
            2_000_000,
            "refine: refuse to go on when the paths of one chunk cross more linear regions than this",
            min=1,
        )
        algorithm: str = param(
            "auto",
            "sweep (one compiled pass over the switch events; two ReLU layers above the layer), "
            "refine (one network pass per linear region; any piecewise-linear part) or auto (sweep where it applies)",
            choices=("auto", "sweep", "refine"),
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.ad_mode == "forward" and self.keep_space:
                raise ParameterError(
                    "ad_mode", "forward mode gives channel sums only; use reverse or auto with keep_space"
                )

    def check_split(self, model: Model, layer: str, below: torch.nn.Module, above: torch.nn.Module) -> None:
        from mechlens_attribution.structure import piecewise_plan

        try:
            self._plan = piecewise_plan(above, where="above")
        except UnsupportedModelError as err:
            raise UnsupportedModelError(
                f"exact-integrated-gradients cannot integrate model {model.name!r} at layer {layer!r} exactly "
                f"(above = the part of the network above the layer, model.split({layer!r})[1]): "
                f"{err}. Use the attributor 'integrated-gradients' (quadrature; any differentiable model) instead."
            ) from None

    def prepare(self, ctx: LayerContext) -> None:
        import torch

        from mechlens_attribution.structure import PiecewisePlan

        self._sweep = self._choose_sweep(ctx)

        self._dtype = torch.float64 if self.params.precision == "float64" else torch.float32
        if self._dtype == torch.float64:
            import copy

            self._stages_plan = PiecewisePlan(
                stages=[copy.deepcopy(m).double() for m in self._plan.stages], final=self._plan.final
            )
        else:
            self._stages_plan = self._plan
        # splits closer than this to a segment end are rounding echoes of the end itself
        self._forward = use_forward_mode(
            self.params.ad_mode, self.params.keep_space, ctx.shape[0], ctx.planned, self._stages_plan.stages
        )
        self._eps = 1e-10 if self._dtype == torch.float64 else 2e-6
        self.stats: dict[str, float] = {"rows": 0, "segments": 0, "evaluations": 0, "rounds": 0}

    def _choose_sweep(self, ctx: LayerContext) -> Sweep | None:
        """The sweep for this call, or None for the refinement algorithm (says why when sweep was asked for)."""
        from mechlens_attribution.sweep import Sweep, sweep_available, sweep_plan

        wanted = self.params.algorithm
        if wanted == "refine":
            return None
        plan, reason = sweep_plan(self._plan)
        if plan is not None and not sweep_available():
            plan, reason = None, "numba, which compiles the sweep, is not installed (pip install numba)"
        if plan is None:
            if wanted == "sweep":
                raise UnsupportedModelError(
                    f"exact-integrated-gradients: algorithm=sweep does not apply to model {ctx.model.name!r} at "
                    f"layer {ctx.layer!r}: {reason}. Use algorithm=refine (or auto)."
                )
            return None
        return Sweep(plan, ctx.z0, ctx.cell_index, ctx.shape[0])

    def describe_method(self, ctx: LayerContext) -> dict[str, Any]:
        info = {
            "path": "activation",
            "method": "exact",
            "n_steps": 0,
            "kinks_above_layer": int(self._plan.n_kinks),
            "final_nonlinearity": type(self._plan.final).__name__ if self._plan.final is not None else "none",
            "algorithm": "sweep" if self._sweep is not None else "refine",
        }
        if self._sweep is None:
            info["ad_mode"] = "forward" if self._forward else "reverse"
        return info

    def bytes_per_row(self, ctx: LayerContext) -> float:
        if self._sweep is not None:
            return self._sweep.bytes_per_row(self.params.keep_space)
        # the row chunk only sets the progress granularity; segments are batched separately below
        return 4.0 * ctx.act_numel * (4 + 2 * ctx.planned) * 16

    def _segment_batch(self, ctx: LayerContext, backward: bool) -> int:
        per = (8.0 if self.params.precision == "float64" else 4.0) * ctx.act_numel
        per *= (2 + 2 * ctx.planned) if backward else 6
        return max(1, int(self.params.memory_gb * 1e9 // per))

    # -- the algorithm ------------------------------------------------------------------------------
    def attribute_chunk(self, ctx: LayerContext, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        import torch

        from mechlens_attribution.structure import final_integral, run_with_tangents

        if self._sweep is not None:
            out = self._sweep.attribute(z - ctx.z0, per_unit=self.params.keep_space)
            self.stats["rows"] += z.shape[0]
            self.stats["segments"] = self._sweep.stats["regions"]
            for key in ("sweep_cpu_s", "rest_cpu_s", "per_unit_cpu_s"):
                self.stats[key] = self._sweep.stats[key]
            return out
        plan = self._stages_plan
        dtype = self._dtype
        z0 = ctx.z0.to(dtype)
        dz = z.to(dtype) - z0
        rows = z.shape[0]
        seg_row, seg_a, seg_b = self._segments(ctx, z0, dz)
        mid_np = (seg_a + seg_b) / 2
        rows_t = torch.from_numpy(seg_row).to(ctx.device)
        mids = torch.from_numpy(mid_np).to(ctx.device)
        to_a = torch.from_numpy(seg_a - mid_np).to(ctx.device)[:, None]
        to_b = torch.from_numpy(seg_b - mid_np).to(ctx.device)[:, None]
        length = torch.from_numpy(seg_b - seg_a).to(ctx.device)[:, None]
        step = self._segment_batch(ctx, backward=True)
        unit = (-1, *([1] * len(ctx.shape)))

        def weights(sl: slice, p: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
            # p is affine on the segment: the integral of g'(p) over it in closed form, per cell
            return final_integral(plan.final, p + to_a[sl] * p_t, p + to_b[sl] * p_t, length[sl])

        if self._forward:
            # one tangent per channel at each segment's midpoint: every cell's channel sums at once
            total = torch.zeros((rows, ctx.n_cells, ctx.shape[0]), dtype=torch.float64, device=ctx.device)
            for s0 in range(0, len(seg_row), step):
                sl = slice(s0, s0 + step)
                r = rows_t[sl]
                point = z0 + mids[sl].to(dtype).view(unit) * dz[r]
                with torch.no_grad():
                    out, out_t, _ = run_with_tangents(plan.stages, point, dz[r], compact_channels=ctx.shape[0])
                out_t = out_t[:, ctx.cell_index].view(ctx.shape[0], len(r), ctx.n_cells).double()
                w = weights(sl, out[:, ctx.cell_index].double(), out_t.sum(0))
                total.index_add_(0, r, (out_t * w).permute(1, 2, 0))
            return total
        # reverse: the Jacobian rows of all cells at the midpoints, weighted once p's slope is known
        grad = torch.zeros((ctx.n_cells, rows, *ctx.shape), dtype=torch.float64, device=ctx.device)
        for s0 in range(0, len(seg_row), step):
            sl = slice(s0, s0 + step)
            r = rows_t[sl]
            point = (z0 + mids[sl].to(dtype).view(unit) * dz[r]).detach().requires_grad_(True)
            with torch.enable_grad():
                out = run_stages(plan, point)[0][:, ctx.cell_index]
                jac = batched_grad(out, point, torch.ones_like(out)).double()  # (cells, segments, *shape)
            p_t = (jac * dz[r].double()).flatten(2).sum(2).T  # (segments, cells) = dp/dalpha
            w = weights(sl, out.detach().double(), p_t)
            grad.index_add_(1, r, jac * w.T.reshape(ctx.n_cells, -1, *([1] * len(ctx.shape))))
        return (grad * dz.double().unsqueeze(0)).transpose(0, 1)

    def _segments(self, ctx: LayerContext, z0: torch.Tensor, dz: torch.Tensor) -> tuple[np.ndarray, ...]:
        """Split each row's [0, 1] where any ReLU above the layer switches.

        Returns
        -------
        row : ndarray of int
            (segments,) row index, sorted by row then start.
        a, b : ndarray of float64
            (segments,) segment ends.
        """
        import torch

        from mechlens_attribution.structure import PIECEWISE, run_with_tangents

        plan = self._stages_plan
        n_kinks = plan.n_kinks
        # the checks need every kink's input: the stages after the last kink are skipped
        last = max((i for i, m in enumerate(plan.stages) if isinstance(m, PIECEWISE)), default=-1)
        probe = plan.stages[: last + 1]
        eps = self._eps
        rows = dz.shape[0]
        pend_row = np.arange(rows)
        pend_a = np.zeros(rows)
        pend_b = np.ones(rows)
        pend_depth = np.zeros(rows, dtype=np.int64)  # first kink layer a piece must still check
        done: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        n_done = 0
        step = self._segment_batch(ctx, backward=False)
        shape = (-1, *([1] * len(ctx.shape)))
        for _round in range(n_kinks + 1):
            # a piece cut at the last kink layer's crossings has nothing left to check
            final = pend_depth >= n_kinks
            done.append((pend_row[final], pend_a[final], pend_b[final]))
            n_done += int(final.sum())
            left = ~final  # the pieces still to check
            pend_row, pend_a, pend_b, pend_depth = pend_row[left], pend_a[left], pend_b[left], pend_depth[left]
            if len(pend_row) == 0:
                break
            self.stats["rounds"] = max(self.stats["rounds"], _round + 1)
            self.stats["evaluations"] += len(pend_row)
            split_seg: list[np.ndarray] = []
            split_at: list[np.ndarray] = []
            split_depth: list[np.ndarray] = []
            for s0 in range(0, len(pend_row), step):
                r = pend_row[s0 : s0 + step]
                a = pend_a[s0 : s0 + step]
                b = pend_b[s0 : s0 + step]
                mid = (a + b) / 2
                r_t = torch.from_numpy(r).to(ctx.device)
                mid_t = torch.from_numpy(mid).to(ctx.device)
                with torch.no_grad():
                    point = z0 + mid_t.to(dz.dtype).view(shape) * dz[r_t]
                    _, _, kinks = run_with_tangents(probe, point, dz[r_t], record_kinks=True)
                a_t = torch.from_numpy(a - mid).to(ctx.device)[:, None]
                b_t = torch.from_numpy(b - mid).to(ctx.device)[:, None]
                undecided = torch.ones(len(r), dtype=torch.bool, device=ctx.device)
                depth = torch.from_numpy(pend_depth[s0 : s0 + step]).to(ctx.device)
                for k, (v, t) in enumerate(kinks):
                    # a piece cut at layer k's crossings has no unknown switches in layers <= k: checking
                    # them again would only find the same crossings, shifted by rounding
                    todo = undecided & (depth <= k)
                    if not bool(todo.any()):
                        continue
                    sel = torch.nonzero(todo, as_tuple=True)[0]
                    v64, t64 = v[sel].double(), t[sel].double()
                    h_a = v64 + a_t[sel] * t64
                    h_b = v64 + b_t[sel] * t64
                    cross = -v64 / torch.where(t64 == 0, torch.ones_like(t64), t64)  # offset from mid
                    inside = (h_a * h_b < 0) & (cross > a_t[sel] + eps) & (cross < b_t[sel] - eps)
                    seg_i, unit_i = torch.nonzero(inside, as_tuple=True)
                    if len(seg_i):
                        split_seg.append((sel[seg_i] + s0).cpu().numpy())
                        split_at.append((cross[seg_i, unit_i] + mid_t[sel[seg_i]]).cpu().numpy())
                        split_depth.append(np.full(len(seg_i), k + 1))
                        undecided[sel[inside.any(1)]] = False
                fin = undecided.cpu().numpy()
                done.append((r[fin], a[fin], b[fin]))
                n_done += int(fin.sum())
            if not split_seg:
                break
            pend_row, pend_a, pend_b, pend_depth = self._split(
                pend_row,
                pend_a,
                pend_b,
                np.concatenate(split_seg),
                np.concatenate(split_at),
                np.concatenate(split_depth),
                eps,
            )
            if n_done + len(pend_row) > self.params.max_segments:
                raise UnsupportedModelError(
                    f"exact-integrated-gradients: the paths of {rows} time points cross more than "
                    f"{self.params.max_segments} linear regions of the network above layer {ctx.layer!r}; "
                    "lower memory_gb to attribute fewer rows per chunk, raise max_segments, or use "
                    "'integrated-gradients'"
                )
        row, a, b = (np.concatenate([d[i] for d in done]) for i in range(3))
        order = np.lexsort((a, row))
        self.stats["rows"] += rows
        self.stats["segments"] += len(row)
        return row[order], a[order], b[order]

    @staticmethod
    def _split(
        row: np.ndarray, a: np.ndarray, b: np.ndarray, seg: np.ndarray, at: np.ndarray, depth: np.ndarray, eps: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Split segments ``seg`` at points ``at`` (merging points closer than ``eps``).

        Returns the pieces (row, a, b, depth); ``depth`` is the first kink layer a piece must still check.
        """
        order = np.lexsort((at, seg))
        seg, at, depth = seg[order], at[order], depth[order]
        keep = np.ones(len(seg), dtype=bool)
        keep[1:] = (seg[1:] != seg[:-1]) | (np.diff(at) > eps)
        seg, at, depth = seg[keep], at[keep], depth[keep]
        # each split segment becomes pieces [a, p1], [p1, p2], ..., [pk, b]
        first = np.ones(len(seg), dtype=bool)
        first[1:] = seg[1:] != seg[:-1]
        last = np.ones(len(seg), dtype=bool)
        last[:-1] = seg[1:] != seg[:-1]
        starts = np.where(first, a[seg], np.concatenate([[0.0], at[:-1]]))
        return (
            np.concatenate([row[seg], row[seg[last]]]),
            np.concatenate([starts, at[last]]),
            np.concatenate([at, b[seg[last]]]),
            np.concatenate([depth, depth[last]]),
        )
