"""Exact integrated gradients by one sweep along the path, for two ReLU layers above the attributed layer.

The general algorithm in :mod:`mechlens_attribution.exact` evaluates the network once per linear region
that the straight path ``z(alpha) = z0 + alpha dz`` crosses. White noise through the retina CNN
crosses thousands of regions per time point (every first-layer unit that changes sign, and every
second-layer unit that does), so a pass per region costs thousands of forward passes. This module
computes the same integral in one sweep over the switch events instead, for networks of the shape

    layer -> elementwise affine -> ReLU -> affine (one Conv or Linear, elementwise affine around it)
          -> ReLU -> affine -> final elementwise nonlinearity g

(the paper's CNN attributed at ``conv1``). Along the path:

* first-layer inputs ``h1_u = a_u + alpha b_u`` are affine, so unit ``u`` switches at most once, at
  ``alpha_u = -a_u / b_u``: these events are known at the start and sorted;
* second-layer inputs ``h2_j`` are piecewise linear, their slope changing only at the events of the
  units ``u`` in their receptive field. Keeping each ``h2_j`` as its current linear piece
  ``q_j + s_j alpha``, an event of ``u`` visits the units it feeds (its fan-out in the convolution),
  which finds any zero crossing of theirs since their last change exactly (the path was linear
  there), then bends their pieces;
* the attribution to channel ``c`` is ``A[n, c] = integral g'(p_n) R[n, c] dalpha`` with
  ``R[n, c] = sum_j w3[n, j] [h2_j > 0] dh2_j^(c)/dalpha`` (``h2_j^(c)``: the part of ``h2_j``
  coming from channel ``c``; ``w3``: the last affine map). ``R`` is piecewise constant, changing
  at each event by ``dR``; with ``G_n(alpha) = integral_0^alpha g'(p_n)`` (closed form per linear
  piece of ``p``), ``A = R(0) G(1) + sum_events dR (G(1) - G(alpha_event))``.

The sweep costs one visit per (switching unit, unit it feeds) pair -- for the retina CNN on white
noise about 5 000 switches x 968 = 5 million visits per time point, 2-3 forward passes' worth of CPU
time (``bench/attribution.py`` prints the split) -- in loops compiled with numba
(:mod:`mechlens_attribution.sweep_kernels`, which keeps the second-layer state position-major and applies
the events one output row at a time, in contiguous vector blocks); the rest is a few batched tensor
passes. That replaces ~7 600 network passes per time point of the refinement algorithm.

Per-unit attributions (``keep_space``) follow from the same breakpoints: unit ``u`` of the layer gets
``b_u * integral over its active interval of g'(p_n) V_n(u, alpha)`` with
``V_n(u, alpha) = sum_j K[j, u] w3[n, j] [h2_j > 0]``. Written with ``H_j(alpha)``, the integral of
``[h2_j > 0] g'(p_n)`` from 0, that is ``sum_j K[j, u] w3[n, j] H_j(.)`` at the ends of ``u``'s active
interval. At ``u``'s own switch, ``H_j = [h2_j > 0] G`` less one term per crossing of ``j`` found by
then, and ``sum_j K[j, u] w3[n, j] [h2_j > 0]`` there is that switch's ``dR`` (the sweep has it);
``H_j(1)`` gives the baseline's map ``V0`` (once per call) times ``G(1)`` plus one term per crossing.
So the per-unit pass (:func:`mechlens_attribution.sweep_kernels.per_unit`)
visits each (crossing, unit of its receptive field) pair once -- ~2 500 crossings x 968 per
white-noise time point of the retina CNN, fewer than the sweep's visits -- eight cells per vector
operation; about one forward pass's worth of CPU time (docs/attribution.md).
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mechlens_attribution.structure import PiecewisePlan

__all__ = [
    "Sweep", "SweepPlan", "crossing_order", "mixing_geometry", "softplus_terms", "sweep_available", "sweep_plan",
    "switch_order",
]  # fmt: skip


def sweep_available() -> bool:
    """Whether numba (which compiles the sweep) can be imported."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _elementwise() -> tuple[type, ...]:
    """Affine stages that act on each unit separately (and reshapes, which keep the units' order)."""
    from torch import nn

    from mechlens_attribution.structure import _IDENTITY_IN_EVAL

    return (
        nn.modules.batchnorm._BatchNorm,
        nn.Flatten,
        nn.Unflatten,
        nn.modules.dropout._DropoutNd,
        *_IDENTITY_IN_EVAL,
    )


@dataclass
class SweepPlan:
    """A :class:`~mechlens_attribution.structure.PiecewisePlan` cut into the pieces the sweep needs (float64 copies).

    Attributes
    ----------
    pre : list of Module
        Elementwise affine stages from the layer to the first ReLU.
    mid : list of Module
        Affine stages between the ReLUs: one Conv1d/Conv2d/Linear, elementwise stages around it.
    post : list of Module
        Affine stages from the second ReLU to the final nonlinearity.
    final : Module or None
        The final elementwise nonlinearity.
    mid_model : list of Module
        The model's own (float32) middle stages: the slope pass runs in them, where the convolution is
        several times faster than in float64.
    """

    pre: list[nn.Module]
    mid: list[nn.Module]
    post: list[nn.Module]
    final: nn.Module | None
    mid_model: list[nn.Module]


def sweep_plan(plan: PiecewisePlan) -> tuple[SweepPlan | None, str]:
    """Cut ``plan`` for the sweep, or say why it does not fit.

    Returns
    -------
    (SweepPlan, "") or (None, reason)
    """
    from torch import nn

    elementwise = _elementwise()
    kinks = [i for i, m in enumerate(plan.stages) if isinstance(m, nn.LeakyReLU | nn.ReLU)]
    if len(kinks) != 2 or not all(type(plan.stages[i]) is nn.ReLU for i in kinks):
        return None, f"the sweep needs exactly two ReLU stages above the layer (found {len(kinks)} kinks)"
    pre, mid, post = plan.stages[: kinks[0]], plan.stages[kinks[0] + 1 : kinks[1]], plan.stages[kinks[1] + 1 :]
    if not all(isinstance(m, elementwise) for m in pre):
        return None, "the stages between the layer and the first ReLU are not all elementwise"
    mixing = [m for m in mid if not isinstance(m, elementwise)]
    if len(mixing) != 1 or not _supported_mixing(mixing[0]):
        return None, "the stages between the ReLUs must be one Conv1d/Conv2d (groups=1, zero padding) or Linear"
    double = [copy.deepcopy(m).double().eval() for m in (*pre, *mid, *post)]
    k, m_ = len(pre), len(mid)
    final = plan.final
    return (
        SweepPlan(pre=double[:k], mid=double[k : k + m_], post=double[k + m_ :], final=final, mid_model=list(mid)),
        "",
    )


def _supported_mixing(mod: nn.Module) -> bool:
    from torch import nn

    if isinstance(mod, nn.Linear):
        return True
    return (
        isinstance(mod, nn.Conv1d | nn.Conv2d)
        and mod.groups == 1
        and mod.padding_mode == "zeros"
        and isinstance(mod.padding, tuple)
    )


def switch_order(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the first-layer units switch along each row's path, sorted.

    Unit ``u`` of row ``r`` switches at ``-a[u] / b[r, u]`` when that lies inside (0, 1).

    Returns
    -------
    switch : ndarray
        (rows, N1) the switch points, ``inf`` where a unit does not switch inside the path.
    order : ndarray of int64
        (rows, N1) each row's switching units by switch point, first (NumPy's vectorised sort of just
        those: about half the units on white noise); the rest of the row is unspecified.
    n_switch : ndarray of int64
        (rows,) how many switch inside the path: the first ``n_switch[r]`` of ``order[r]``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        switch = -a / b
    inside = (switch > 0.0) & (switch < 1.0)
    switch = np.where(inside, switch, np.inf)
    order = np.empty(b.shape, np.int64)
    for r in range(b.shape[0]):
        units = np.flatnonzero(inside[r])
        order[r, : units.size] = units[np.argsort(switch[r, units])]
    return switch, order, inside.sum(1)


def crossing_order(ptr2: np.ndarray, cr_alpha: np.ndarray) -> np.ndarray:
    """The crossings of each row (``ptr2[r]:ptr2[r+1]`` of ``cr_alpha``) sorted by alpha (NumPy's vectorised sort).

    Returns
    -------
    ndarray of int64
        (X,) crossing numbers; each row's stay in that row's range.
    """
    order = np.empty(cr_alpha.shape[0], np.int64)
    for r in range(ptr2.shape[0] - 1):
        lo, hi = int(ptr2[r]), int(ptr2[r + 1])
        order[lo:hi] = np.argsort(cr_alpha[lo:hi]) + lo
    return order


def softplus_terms(p: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``exp(-|beta p|)`` and its ``log1p`` for :func:`mechlens_attribution.sweep_kernels.softplus_pieces`.

    NumPy's vectorised ``exp`` and ``log1p`` (several times faster than the same functions called per
    value in a compiled loop), in place, on slices of 16 384 values so that each slice stays in the
    cache through the passes (the whole arrays of a group of rows do not).
    """
    flat = p.reshape(-1)
    e = np.empty_like(p)
    lg = np.empty_like(p)
    e_flat, lg_flat = e.reshape(-1), lg.reshape(-1)
    step = 16384
    for lo in range(0, flat.size, step):
        part = e_flat[lo : lo + step]
        np.abs(flat[lo : lo + step], out=part)
        part *= -abs(beta)
        np.exp(part, out=part)
        np.log1p(part, out=lg_flat[lo : lo + step])
    return e, lg


def _run(stages: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for m in stages:
        x = m(x)
    return x


def _push(stages: list[nn.Module], t: torch.Tensor) -> torch.Tensor:
    from mechlens_attribution.structure import push_tangent

    for m in stages:
        t = push_tangent(m, t, t)
    return t


def mixing_geometry(
    mid: list[nn.Module], in_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The linear part of ``mid`` as a convolution: kernel, geometry and elementwise scales (float64).

    Parameters
    ----------
    mid : list of Module
        Elementwise affine stages around one Conv1d/Conv2d/Linear.
    in_shape : tuple of int
        Shape of one row entering ``mid``.

    Returns
    -------
    wt : ndarray
        (Cm, O, kh, kw) kernel, input channel first (a Linear layer: (N1, N2, 1, 1)).
    geom : ndarray of int64
        (12,) as :func:`mechlens_attribution.sweep_kernels.sweep` reads it.
    din, dout : ndarray
        (N1,), (N2,) scales of the elementwise stages before and after the mixing module.
    n_out : int
        Number of output units N2.
    """
    import torch
    from torch import nn

    elementwise = _elementwise()
    i_mix = next(i for i, m in enumerate(mid) if not isinstance(m, elementwise))
    # cast: sweep_plan admits one Conv1d, Conv2d or Linear as the mixing stage
    mix = cast("nn.Conv1d | nn.Conv2d | nn.Linear", mid[i_mix])
    before, after = mid[:i_mix], mid[i_mix + 1 :]
    with torch.no_grad():
        d_in = _push(before, torch.ones((1, *in_shape), dtype=torch.float64))  # the mixing layer's input shape
        mix_in = tuple(d_in.shape[1:])
        mix_out = tuple(mix(torch.zeros((1, *mix_in), dtype=torch.float64)).shape[1:])
        d_out = _push(after, torch.ones((1, *mix_out), dtype=torch.float64)).flatten()
        weight = mix.weight.detach().double()
    if isinstance(mix, nn.Linear):
        wt = weight.T.reshape(weight.shape[1], weight.shape[0], 1, 1)
        geom = [weight.shape[1], 1, 1, weight.shape[0], 1, 1, 1, 1, 0, 0, 1, 1]
    elif isinstance(mix, nn.Conv1d):  # as a 2-d convolution of height 1
        wt = weight.unsqueeze(2).transpose(0, 1)
        c_in, length = mix_in
        pad = cast(tuple[int, ...], mix.padding)  # cast: _supported_mixing admits tuple padding only (no "same")
        geom = [c_in, 1, length, mix_out[0], 1, mix_out[1], 1, mix.stride[0], 0, pad[0], 1, mix.dilation[0]]
    else:
        wt = weight.transpose(0, 1)
        c_in, hh, ww = mix_in
        geom = [c_in, hh, ww, *mix_out, *mix.stride, *mix.padding, *mix.dilation]
    return (
        np.ascontiguousarray(wt.numpy()),
        np.asarray(geom, dtype=np.int64),
        np.ascontiguousarray(d_in.flatten().numpy()),
        np.ascontiguousarray(d_out.numpy()),
        int(d_out.numel()),
    )


class Sweep:
    """Per-call state of the sweep: the plan's pieces at the baseline, and the middle map's geometry.

    Parameters
    ----------
    plan : SweepPlan
    z0 : Tensor
        (1, *shape) layer activations of the baseline.
    cell_index : Tensor
        (n,) output indices of the selected cells.
    n_channels : int
        Channels of the attributed layer.
    """

    #: rows swept together: small enough that a group's event tables stay in the cache between the loops
    #: writing and reading them (8 rows measured ~8 % faster per row than 196 on the retina CNN)
    rows_per_group = 8

    def __init__(self, plan: SweepPlan, z0: torch.Tensor, cell_index: torch.Tensor, n_channels: int) -> None:
        import torch

        self.plan = plan
        self.n_channels = n_channels
        with torch.no_grad():
            z0 = z0.detach().double().cpu()
            self.a_t = _run(plan.pre, z0)  # (1, ...) first-layer input at the baseline
            self.a = np.ascontiguousarray(self.a_t.flatten().numpy())
            self.n1 = self.a.size
            if self.n1 != z0.numel():
                raise ValueError("the stages below the first ReLU change the number of units")
            relu_a = torch.relu(self.a_t)
            h0 = _run(plan.mid, relu_a)
            self.h0 = np.ascontiguousarray(h0.flatten().numpy())
            self.wt, self.geom, self.din, self.dout, n2 = mixing_geometry(plan.mid, tuple(relu_a.shape[1:]))
            if n2 != self.h0.size:
                raise ValueError("the middle map's geometry does not match the middle stages")
            self.p0 = np.ascontiguousarray(_run(plan.post, torch.relu(h0))[0, cell_index].numpy())
            # the last linear map, restricted to the selected cells, as (N2, n): the stages are affine,
            # so their gradient (one backward pass per cell) is the map
            point = torch.zeros_like(h0).requires_grad_(True)
            with torch.enable_grad():
                p_sel = _run(plan.post, point)[0, cell_index]
                grads = [torch.autograd.grad(p_i, point, retain_graph=True)[0].flatten() for p_i in p_sel]
            self.w3 = np.ascontiguousarray(torch.stack(grads, 1).numpy())
        # cells zero-padded to a multiple of 8, for the kernels that handle eight cells at a time
        m8 = -(-self.w3.shape[1] // 8) * 8
        self.w3_8 = np.zeros((self.w3.shape[0], m8))
        self.w3_8[:, : self.w3.shape[1]] = self.w3
        self.p0_8 = np.zeros(m8)
        self.p0_8[: self.p0.size] = self.p0
        self.chan = (np.arange(self.n1) // (self.n1 // n_channels)).astype(np.int64)
        # per-unit attributions (keep_space): the second-layer units at zero at the baseline, and the map
        # V0 of those on there (made by the first per-unit call)
        self.zero_units = np.flatnonzero(self.h0 == 0.0).astype(np.int64)
        self.v0: np.ndarray | None = None
        self.crossings_per_row = n2 / 2  # grows when a chunk needs more
        # CPU seconds (of the threads doing the work): the sorts of switch points and crossings and the
        # compiled sweep loop; the rest (slopes at alpha = 0+, pieces of p, integrals of g', sums)
        self.stats: dict[str, float] = {
            "rows": 0, "breakpoints": 0, "crossings": 0, "regions": 0, "sweep_cpu_s": 0.0, "rest_cpu_s": 0.0,
            "per_unit_cpu_s": 0.0,
        }  # fmt: skip
        self._lock = threading.Lock()

    def bytes_per_row(self, per_unit: bool = False) -> float:
        """Bytes per row of :meth:`attribute`: slopes per channel, the event tables[, per-unit output].

        An upper bound: the event tables are held for one group of :attr:`rows_per_group` rows at a time,
        the slopes at alpha = 0+ for a few groups.
        """
        n2, n = self.w3.shape
        m8 = self.w3_8.shape[1]
        events = self.n1 + self.crossings_per_row
        # per event: dR, p, the two Softplus terms and the integrals (cells padded to m8), the slopes per
        # channel at a crossing, and six numbers (alpha, units, lengths, kinds, references)
        total = self.n1 * 5 + 2 * self.n_channels * n2 + events * (5 * m8 + self.n_channels + 6)
        # per unit: the output (and its copy when the groups are joined), G at every event
        return 8.0 * (total + (2 * n * self.n1 + events * m8 if per_unit else 0))

    def attribute(self, dz: torch.Tensor, per_unit: bool = False) -> torch.Tensor:
        """Channel attributions for path directions ``dz``.

        Parameters
        ----------
        dz : Tensor
            (rows, *shape) end points of the paths minus the baseline's activations (any device; the
            sweep runs on the CPU).
        per_unit : bool
            Attribute to every unit of the layer rather than to each channel.

        Returns
        -------
        Tensor
            (rows, n, C), or (rows, n, *shape) with ``per_unit``; float64 on ``dz``'s device, Hz.
        """
        import torch

        rows = dz.shape[0]
        if per_unit and self.v0 is None:
            self.v0 = self._baseline_map()
        # rows go through in small groups: each group's event tables (~1 MB per row) stay in the cache
        # between the loops that write and read them; the compiled loops release the GIL, so groups are
        # spread over torch's CPU threads (one thread: in turn). The slopes at alpha = 0+ are made for a
        # few groups at a time, so that their arrays stay small enough for the allocator to reuse
        # (large ones are mapped afresh each time: page faults)
        threads = max(1, min(torch.get_num_threads(), -(-rows // self.rows_per_group)))
        pool = None
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(threads)
        attrs: list[np.ndarray] = []
        try:
            step = self.rows_per_group * max(4, threads)
            for lo in range(0, rows, step):
                b, s0 = self._slopes(dz[lo : lo + step])
                starts = range(0, b.shape[0], self.rows_per_group)
                bs = [b[i : i + self.rows_per_group] for i in starts]
                s0s = [s0[i : i + self.rows_per_group] for i in starts]
                attrs.extend((pool.map if pool else map)(self._rows, bs, s0s, [per_unit] * len(bs)))
        finally:
            if pool is not None:
                pool.shutdown()
        out = torch.from_numpy(np.concatenate(attrs))
        if per_unit:
            out = out.view(rows, out.shape[1], *dz.shape[1:])
        return out.to(dz.device)

    def _slopes(self, dz: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """First-layer input changes ``b`` (rows, N1) and second-layer slopes at alpha = 0+ (rows, C, N2).

        The slopes come from the model's own middle stages (float32 where the model is: its convolution
        is several times faster than in float64); ``b`` is float64.
        """
        import torch

        from mechlens_attribution.structure import run_with_tangents

        plan = self.plan
        rows = dz.shape[0]
        start = time.thread_time()
        with torch.no_grad():
            b_t = _push(plan.pre, dz.detach().double().cpu())
            b = b_t.flatten(1).contiguous()
            a = torch.from_numpy(self.a)
            on = (a > 0) | ((a == 0) & (b > 0))  # first-layer units on just after alpha = 0
            dtype = next((p.dtype for m in plan.mid_model for p in m.parameters()), torch.float32)
            tangent = (b * on).view(b_t.shape).to(dtype)
            _, s0_t, _ = run_with_tangents(
                plan.mid_model, torch.relu(self.a_t).to(dtype), tangent, compact_channels=self.n_channels
            )
        s0 = np.ascontiguousarray(s0_t.reshape(self.n_channels, rows, -1).permute(1, 0, 2).numpy())
        with self._lock:
            self.stats["rest_cpu_s"] += time.thread_time() - start
        return b.numpy(), s0

    def _rows(self, b: np.ndarray, s0: np.ndarray, per_unit: bool) -> np.ndarray:
        """Sweep and bookkeeping for consecutive rows: ``b`` (rows, N1), ``s0`` (rows, C, N2) -> (rows, n, C)."""
        import torch
        from torch import nn

        from mechlens_attribution import sweep_kernels as kernels
        from mechlens_attribution.structure import final_integral

        plan = self.plan
        rows = b.shape[0]
        b = np.ascontiguousarray(b)
        s0 = np.ascontiguousarray(s0)
        start = time.thread_time()
        switch, order, n_switch = switch_order(self.a, b)
        while True:
            cap = int(self.crossings_per_row * rows) + 64
            out = kernels.sweep(
                self.a, b, switch, order, n_switch, self.chan, self.din, self.dout, self.wt, self.geom, self.h0, s0,
                self.w3, cap,
            )  # fmt: skip
            if out[-1] <= cap:
                break
            self.crossings_per_row *= 2  # the table overflowed: it is sized from what earlier chunks needed
        ptr1, ev_alpha, ev_unit, ev_dr, ptr2, cr_alpha, cr_unit, cr_sign, cr_sc, _, found = out
        cr_order = crossing_order(ptr2, cr_alpha)
        swept = time.thread_time()
        self.crossings_per_row = max(self.crossings_per_row, 1.25 * found / rows)
        act0 = (self.h0 > 0) | ((self.h0 == 0) & (s0.sum(1, dtype=np.float64) > 0))  # (rows, N2)
        # R at 0+: (rows, C, cells padded to m8)
        r0 = np.matmul(s0 * act0[:, None, :], self.w3_8)
        ptr, p, length, kind, unit, ref = kernels.pieces(
            ptr1, ev_alpha, ev_unit, ev_dr, ptr2, cr_alpha, cr_order, cr_unit, cr_sign, cr_sc, self.chan, self.w3_8,
            r0.sum(1), self.p0_8,
        )  # fmt: skip
        with self._lock:
            self.stats["rows"] += rows
            self.stats["breakpoints"] += int(ptr[-1])
            self.stats["crossings"] += int(found)
            # switches that coincide up to rounding (all units of a channel under a full-field stimulus) share one
            self.stats["regions"] += int(np.count_nonzero(length > 1e-7))
        if type(plan.final) is nn.Softplus:  # the retina CNN's: closed form, exponentials vectorised
            beta = float(plan.final.beta)
            e, lg = softplus_terms(p, beta)
            w = kernels.softplus_pieces(ptr, p, e, lg, length, beta, float(plan.final.threshold))
        else:
            at = np.arange(length.shape[0]) + np.repeat(np.arange(rows), np.diff(ptr) + 1)  # each piece's start
            p_t = torch.from_numpy(p)
            w = final_integral(plan.final, p_t[at], p_t[at + 1], torch.from_numpy(length[:, None]))
            w = np.ascontiguousarray(w.numpy())
        per_unit_s = 0.0
        if not per_unit:
            acc = kernels.accumulate(ptr, kind, ref, ev_dr, cr_sign, cr_sc, unit, self.w3_8, w, r0)
            result = np.ascontiguousarray(acc[:, :, : self.w3.shape[1]].transpose(0, 2, 1))
        else:
            before = time.thread_time()
            result = self._per_unit(b, act0, ptr, kind, ref, w, out)
            per_unit_s = time.thread_time() - before
        with self._lock:
            self.stats["sweep_cpu_s"] += swept - start
            self.stats["per_unit_cpu_s"] += per_unit_s
            self.stats["rest_cpu_s"] += time.thread_time() - swept - per_unit_s
        return result

    def _per_unit(
        self,
        b: np.ndarray,
        act0: np.ndarray,
        ptr: np.ndarray,
        kind: np.ndarray,
        ref: np.ndarray,
        w: np.ndarray,
        swept: tuple[np.ndarray, ...],
    ) -> np.ndarray:
        """Per-unit attributions (rows, n, N1) of rows ``b`` from their sweep (``swept``) and pieces.

        ``G`` at every breakpoint (:func:`~mechlens_attribution.sweep_kernels.breakpoint_integrals`), then
        one visit per (crossing, unit of its receptive field) and each switching unit's ``dR`` at its
        event (:func:`~mechlens_attribution.sweep_kernels.per_unit`).
        """
        from mechlens_attribution import sweep_kernels as kernels

        ptr1, _, ev_unit, ev_dr, ptr2, _, cr_unit, cr_sign, _, cr_det, _ = swept
        g_ev, g_cr, g1 = kernels.breakpoint_integrals(ptr, kind, ref, w, ev_dr.shape[0], cr_unit.shape[0])
        return kernels.per_unit(
            ptr1, ev_unit, ev_dr, ptr2, cr_unit, cr_sign, cr_det, g_ev, g_cr, g1, act0.astype(np.float64),
            self.zero_units, self.v0, self.a, b, self.din, self.dout, self.w3_8, self.wt, self.geom,
            self.w3.shape[1],
        )  # fmt: skip

    def _baseline_map(self) -> np.ndarray:
        """``V0[u, n] = sum_j K[j, u] dout_j w3[j, n] [h0_j > 0]`` (N1, m8).

        ``V0`` is the transposed mixing map (torch, float64) of the second-layer units on at the
        baseline, the same for every row.
        """
        import torch
        from torch.nn.grad import conv2d_input

        geom = self.geom
        c_in, hh, ww, oo, ho, wo = (int(v) for v in geom[:6])
        m8 = self.w3_8.shape[1]
        y = (self.dout * (self.h0 > 0))[:, None] * self.w3_8  # (N2, m8)
        y_t = torch.from_numpy(np.ascontiguousarray(y.T)).view(m8, oo, ho, wo)
        kernel = torch.from_numpy(self.wt).transpose(0, 1)  # torch's (out, in, kh, kw)
        with torch.no_grad():
            v0 = conv2d_input(
                (m8, c_in, hh, ww), kernel, y_t, stride=(int(geom[6]), int(geom[7])),
                padding=(int(geom[8]), int(geom[9])), dilation=(int(geom[10]), int(geom[11])),
            )  # fmt: skip
        return np.ascontiguousarray(v0.reshape(m8, -1).T.numpy())
