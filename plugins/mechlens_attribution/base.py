"""Shared machinery of the layer attributors: cells, baselines, chunking, output Dataset.

Every attributor here attributes each selected cell's rate ``r_n`` at each time point to the units
of one hidden layer. The model is split at that layer (``below``, ``above``); ``below`` runs once
per stimulus window, and a subclass turns a chunk of windows and their layer activations into
attributions ``(rows, cells, *layer_shape)``. This class does the rest: baseline window, cell
selection, chunking to a memory budget, the ``condition`` loop, spatial summing, the completeness
error and the labeled output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError, UsageError
from mechlens.interfaces import Attributor, Model
from mechlens.parameters import param, suggest
from mechlens.progress import bar

if TYPE_CHECKING:  # torch is imported where it is used: plugin discovery must stay cheap
    import torch


class UnsupportedModelError(UsageError):
    """A model's structure does not allow the requested computation (e.g. exact integration)."""


#: quadrature rules, named as Captum's ``method`` (see :func:`mechlens_attribution.integrated.quadrature`)
METHODS = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


@dataclass(frozen=True)
class CommonParameters:
    """Parameters every layer attributor takes."""

    baseline: str = param(
        "zero",
        "baseline window: zero (mean grey), mean (the movie's mean frame), value (uniform contrast "
        "baseline_value) or file (baseline_file)",
        choices=("zero", "mean", "value", "file"),
    )
    baseline_value: float = param(0.0, "uniform contrast of the baseline when baseline=value", units="1")
    baseline_file: str = param(
        "", "baseline when baseline=file: a .npy array (history, y, x) or one frame (y, x), in contrast units"
    )
    keep_space: bool = param(False, "keep unit_y/unit_x in the output instead of summing over space")
    memory_gb: float = param(1.0, "memory budget for intermediate tensors", units="GB", gt=0)

    def __post_init__(self) -> None:
        if self.baseline == "file" and not self.baseline_file:
            raise ParameterError("baseline_file", "baseline=file needs baseline_file (a .npy path)")


@dataclass
class LayerContext:
    """Everything fixed for one attribute() call.

    Attributes
    ----------
    model : Model
    layer : str
    shape : tuple of int
        Unit shape of the layer per time point.
    below, above : Module
        The split network (eval mode during the call).
    cell_ids : list of str
        Selected cells, in output order.
    cell_index : Tensor
        (n_cells,) long, their output indices.
    device : torch.device
    x0 : Tensor
        (1, history, y, x) baseline window.
    z0 : Tensor
        (1, *shape) layer activations of the baseline.
    r0 : Tensor
        (n_selected,) baseline response (Hz).
    act_numel : int
        Numbers stored per row by one forward through ``above`` (input plus every leaf's output).
    baseline : str
        Description of the baseline window (for attrs).
    response_span : float
        Range (max - min) of the selected cells' responses over the whole stimulus, in Hz; filled
        only for attributors that set ``needs_response_span``.
    planned_cells : int
        Cells of the whole problem when this call computes only a group of them (a part of a split
        run, :mod:`mechlens.distributed`); 0: the selected cells are the whole problem. Choices that
        change how the numbers are summed (AD mode, batch sizes) are made for :attr:`planned`, so a
        group's numbers are those of the whole call.
    chunk_rows : int
        Window rows per chunk fixed by the whole problem (0: from ``memory_gb``), so that the time
        groups of a part with fewer cells cover the same rows as a whole call's.
    """

    model: Model
    layer: str
    shape: tuple[int, ...]
    below: torch.nn.Module
    above: torch.nn.Module
    cell_ids: list[str]
    cell_index: torch.Tensor
    device: torch.device
    x0: torch.Tensor
    z0: torch.Tensor
    r0: torch.Tensor
    act_numel: int
    baseline: str = ""
    response_span: float = 0.0
    planned_cells: int = 0
    chunk_rows: int = 0

    @property
    def n_cells(self) -> int:
        return len(self.cell_ids)

    @property
    def planned(self) -> int:
        """Cells of the whole problem (:attr:`planned_cells`, or the selected cells)."""
        return self.planned_cells or self.n_cells


def select_cells(model: Model, cells: Sequence[str] | None) -> tuple[list[str], list[int]]:
    """Resolve ``cells`` (None = all) to ids and output indices, with a clear error for unknown ids."""
    known = list(model.cells)
    if cells is None:
        return known, list(range(len(known)))
    if isinstance(cells, str):
        cells = [cells]
    cells = list(cells)
    if not cells:
        raise UsageError("cells is empty; give at least one cell id, or None for all cells")
    index = {c: i for i, c in enumerate(known)}
    for c in cells:
        if c not in index:
            raise UsageError(
                f"model {model.name!r} has no cell {c!r}{suggest(str(c), known) or '.'} "
                f"Its cells are {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}"
            )
    if len(set(cells)) != len(cells):
        raise UsageError(f"cells lists a cell twice: {cells}")
    return cells, [index[c] for c in cells]


def activation_numel(above: torch.nn.Module, z: torch.Tensor) -> int:
    """Numbers held per row by a forward through ``above``: its input plus every leaf module's output."""
    import torch

    total = [int(z[0].numel())]

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += int(out[0].numel()) if out.dim() else 1

    handles = [m.register_forward_hook(hook) for m in above.modules() if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            above(z[:1])
    finally:
        for h in handles:
            h.remove()
    return total[0]


def unit_dims(shape: tuple[int, ...]) -> tuple[str, ...]:
    """Dims naming a layer's unit axes: (unit_channel[, unit_y, unit_x])."""
    if len(shape) == 1:
        return ("unit_channel",)
    if len(shape) == 2:
        return ("unit_channel", "unit_x")
    if len(shape) == 3:
        return ("unit_channel", "unit_y", "unit_x")
    raise UsageError(f"cannot label a layer of unit shape {shape}; layers must be (channel[, y], x) or (channel,)")


def _per_condition(movie: xr.DataArray) -> list[xr.DataArray]:
    """The movie of each condition (one movie when there is no ``condition`` dim)."""
    if "condition" not in movie.dims:
        return [movie]
    return [movie.isel(condition=i) for i in range(movie.sizes["condition"])]


class LayerAttributor(Attributor):
    """Base of the attributors of this package (see the module docstring).

    Subclasses implement :meth:`attribute_chunk`, :meth:`bytes_per_row` and :meth:`describe_method`,
    and may override :meth:`prepare` to check the model.
    """

    #: Dataset attr ``path`` (a subclass may decide per call in describe_method)
    path = "activation"
    #: whether :meth:`attribute_chunk` needs ``ctx.response_span`` (costs one forward pass over the stimulus)
    needs_response_span = False

    @property
    def shard_dims(self) -> tuple[str, ...]:
        """Dims a run may be split along with results equal to one call (:mod:`mechlens.distributed`).

        :meth:`attribute_part` computes one condition, one group of whole chunks of time points and
        one group of cells with the context of the whole problem (baseline, response span, chunk
        size, AD mode). Cells only when no number depends on the set of cells: an attributor that
        needs the response range of all selected cells (:attr:`needs_response_span`, e.g. the
        adaptive rule of integrated gradients) cannot be split by cells.
        """
        return ("condition", "time") if self.needs_response_span else ("condition", "time", "cell")

    # -- subclass API -----------------------------------------------------------------------------
    def check_split(self, model: Model, layer: str, below: torch.nn.Module, above: torch.nn.Module) -> None:
        """Refuse a model this method cannot handle, before anything runs (default: accept all)."""

    def prepare(self, ctx: LayerContext) -> None:
        """Precompute per-call state once the context exists (default: nothing)."""

    def attribute_chunk(
        self, ctx: LayerContext, x: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Attributions of the selected cells for a chunk of windows.

        Parameters
        ----------
        ctx : LayerContext
        x : Tensor
            (rows, history, y, x) stimulus windows.
        z : Tensor
            (rows, *shape) their layer activations, ``below(x)``.

        Returns
        -------
        Tensor or (Tensor, dict)
            (rows, n_cells, *shape), Hz, any float dtype; or (rows, n_cells, n_channels) already
            summed over space (allowed when ``keep_space`` is false). Optionally with a dict of
            per-row numpy arrays (rows,), stored as extra variables over ``time``.
        """
        raise NotImplementedError

    def bytes_per_row(self, ctx: LayerContext) -> float:
        """Estimated peak bytes of :meth:`attribute_chunk` per window row."""
        return 4.0 * ctx.act_numel * (2 + 2 * ctx.planned)

    def describe_method(self, ctx: LayerContext) -> dict[str, Any]:
        """Attrs naming the method (``method``, ``n_steps``, ``path``...)."""
        return {"path": self.path}

    # -- the common part --------------------------------------------------------------------------
    def baseline_window(self, model: Model, stimulus: xr.Dataset) -> tuple[np.ndarray, str]:
        """The baseline window (history, y, x) in contrast units, and a description of it."""
        p = self.params
        shape = (model.history, *model.input_shape)
        if p.baseline == "zero":
            return np.zeros(shape, np.float32), "zero stimulus (mean grey)"
        if p.baseline == "value":
            return np.full(shape, p.baseline_value, np.float32), f"uniform contrast {p.baseline_value:g}"
        if p.baseline == "mean":
            movie = stimulus["stimulus"]
            frame = movie.mean([d for d in movie.dims if d not in ("y", "x")]).transpose("y", "x").values
            return np.broadcast_to(frame.astype(np.float32), shape).copy(), "mean frame of the stimulus movie"
        path = Path(p.baseline_file)
        if not path.is_file():
            raise UsageError(f"baseline_file {str(path)!r} does not exist; give a .npy array (history, y, x) or (y, x)")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise UsageError(f"baseline_file {str(path)!r} is not a readable .npy array: {err}") from None
        if arr.shape == shape[1:]:
            arr = np.broadcast_to(arr, shape)
        if arr.shape != shape:
            raise UsageError(
                f"baseline_file {str(path)!r} has shape {arr.shape}; model {model.name!r} needs (history, y, x) = "
                f"{shape} or one frame {shape[1:]}"
            )
        if not np.isfinite(arr).all():
            raise UsageError(f"baseline_file {str(path)!r} holds non-finite values")
        return np.ascontiguousarray(arr, dtype=np.float32), f"file {path.name}"

    def context(
        self, model: Model, stimulus: xr.Dataset, layer: str | None, cells: Sequence[str] | None
    ) -> LayerContext:
        """Split the model, pick cells, check the model, and compute the baseline's activations and response.

        The split parts are put in eval mode (as ``Model.predict`` does) after :meth:`check_split`
        has seen them as they were given.
        """
        import torch

        layer = model.check_layer(layer)
        shape = tuple(int(s) for s in model.layers()[layer])
        unit_dims(shape)
        cell_ids, idx = select_cells(model, cells)
        below, above = model.split(layer)
        self.check_split(model, layer, below, above)
        below.eval()
        above.eval()
        device = torch.device(model.device)
        x0_np, description = self.baseline_window(model, stimulus)
        # in the module's input units, as the stimulus windows are (Model.input_frames)
        x0 = torch.from_numpy(model.input_frames(x0_np)).to(device)[None]
        with torch.no_grad():
            z0 = below(x0)
            index = torch.tensor(idx, dtype=torch.long, device=device)
            r0 = above(z0)[0, index]
        return LayerContext(
            model=model,
            layer=layer,
            shape=shape,
            below=below,
            above=above,
            cell_ids=cell_ids,
            cell_index=index,
            device=device,
            x0=x0,
            z0=z0,
            r0=r0,
            act_numel=activation_numel(above, z0),
            baseline=description,
        )

    def rows_per_chunk(self, ctx: LayerContext) -> int:
        """Window rows per chunk under ``memory_gb`` (or those of the whole problem: ``ctx.chunk_rows``)."""
        if ctx.chunk_rows:
            return int(ctx.chunk_rows)
        return max(1, int(self.params.memory_gb * 1e9 // max(self.bytes_per_row(ctx), 1.0)))

    def attribute(
        self,
        model: Model,
        stimulus: xr.Dataset,
        layer: str | None = None,
        cells: Sequence[str] | None = None,
    ) -> xr.Dataset:
        """Attribute each selected cell's response at each time to the units of ``layer`` (:meth:`attribute_part`)."""
        return self.attribute_part(model, stimulus, layer, cells)

    def attribute_part(
        self,
        model: Model,
        stimulus: xr.Dataset,
        layer: str | None = None,
        cells: Sequence[str] | None = None,
        part: Mapping[str, Any] | None = None,
    ) -> xr.Dataset:
        """Attribute each selected cell's response at each time to the units of ``layer``.

        With ``part`` (:mod:`mechlens.distributed`), only a piece of the result is computed, equal to
        that piece of the whole: ``part["condition"]`` (an index, or None) keeps one condition (the
        dim stays, length 1), ``part["time"] = (k, n)`` the ``k``-th of ``n`` groups of whole chunks
        of output times (possibly empty) and ``part["cells"] = (k, n)`` the ``k``-th of ``n`` groups of
        the selected cells (:func:`mechlens.distributed.group_bounds`; only when ``"cell"`` is in
        :attr:`shard_dims`); the baseline, the response span, the chunk size and the AD mode are those
        of the whole problem. The completeness error then carries attr ``max_abs`` (Hz) for the merge.

        Parameters
        ----------
        model : Model
            The model; split at ``layer``.
        stimulus : xarray.Dataset
            ``stimulus`` (time, y, x) or (condition, time, y, x).
        layer : str, optional
            Layer name (default ``model.default_layer()``).
        cells : sequence of str, optional
            Cell ids (default all).

        Returns
        -------
        xarray.Dataset
            ``attribution`` (time, cell, unit_channel[, unit_y, unit_x]) [+ leading condition], Hz;
            ``response`` (time, cell); ``baseline_response`` (cell); ``completeness_error``
            (time, cell); ``baseline_window`` (lag, y, x) when the baseline is not zero.
        """
        from mechlens.schema import set_units

        movie = stimulus["stimulus"]
        if "frame_period_s" not in movie.attrs and "frame_period_s" in stimulus.attrs:
            movie = movie.copy()
            movie.attrs["frame_period_s"] = stimulus.attrs["frame_period_s"]
        module = model.torch_module()
        modes = [(m, m.training) for m in module.modules()]
        try:
            ctx = self.context(model, stimulus, layer, cells)
            module.eval()
            if part is not None and part.get("cells") is not None:
                ctx = self._cell_group(ctx, part["cells"])
            self.prepare(ctx)
            movies = _per_condition(movie)
            shared = (part or {}).get("context") or {}
            if self.needs_response_span:
                # a split run computes the span once for all its parts (part_context)
                span = shared.get("response_span")
                ctx.response_span = float(span) if span is not None else self._response_span(ctx, movies)
            chosen = list(range(len(movies)))
            if part is not None and part.get("condition") is not None:
                chosen = [int(part["condition"])]
            group = tuple(part["time"]) if part is not None and part.get("time") is not None else None
            parts = [self._one_movie(ctx, movies[i], group) for i in chosen]
            lead: tuple[str, ...] = ("condition",) if "condition" in movie.dims else ()
            stack = np.stack if lead else (lambda xs: xs[0])
            attr = stack([p[0] for p in parts])
            resp = stack([p[1] for p in parts])
            err = stack([p[2] for p in parts])
            extras = {k: stack([p[3][k] for p in parts]) for k in parts[0][3]}
        finally:
            for m, mode in modes:
                m.training = mode
        udims = unit_dims(ctx.shape)
        if not self.params.keep_space:
            udims = udims[:1]
        times = model.time_of_outputs(movie)
        if group is not None:
            lo, hi = self._row_range(ctx, times.sizes["time"], group)
            times = times.isel(time=slice(lo, hi))
        coords: dict[str, Any] = {"time": times, "cell": ("cell", list(ctx.cell_ids))}
        for d, n in zip(unit_dims(ctx.shape), ctx.shape):
            if d in udims:
                coords[d] = (d, np.arange(n))
        if lead:
            coords["condition"] = movie["condition"].isel(condition=chosen)
        info = {"layer": ctx.layer, **self.describe_method(ctx)}
        description = ctx.baseline
        x0_np, _ = self.baseline_window(model, stimulus)  # contrast units, as the Dataset holds stimuli
        info["baseline"] = description
        attribution = xr.DataArray(attr.astype(np.float32), dims=(*lead, "time", "cell", *udims), coords=coords)
        set_units(attribution, "Hz", "contribution of each hidden unit to the cell's rate")
        attribution.attrs.update(info)
        tcoords = {k: v for k, v in coords.items() if not k.startswith("unit_")}
        response = xr.DataArray(resp.astype(np.float32), dims=(*lead, "time", "cell"), coords=tcoords)
        set_units(response, "Hz", "model firing rate")
        baseline_response = xr.DataArray(
            ctx.r0.detach().cpu().numpy().astype(np.float32), dims=("cell",), coords={"cell": coords["cell"]}
        )
        set_units(baseline_response, "Hz", "model firing rate for the baseline window")
        baseline_response.attrs["baseline"] = description
        completeness = xr.DataArray(err.astype(np.float32), dims=(*lead, "time", "cell"), coords=tcoords)
        set_units(completeness, "Hz", "sum of attributions minus (response - baseline_response)")
        span = float(np.ptp(resp)) if resp.size else 0.0
        completeness.attrs["max_abs_relative_to_response_range"] = float(np.abs(err).max() / span) if span else 0.0
        if part is not None:
            completeness.attrs["max_abs"] = float(np.abs(err).max()) if err.size else 0.0
        out = xr.Dataset(
            {
                "attribution": attribution,
                "response": response,
                "baseline_response": baseline_response,
                "completeness_error": completeness,
            },
            attrs={
                "attributor": self.name,
                "attributor_parameters": self.parameters_json(),
                "attribution_info": json.dumps(info, sort_keys=True),
                "frame_period_s": float(model.frame_period_s),
            },
        )
        for k, v in extras.items():
            # integer extras are counts (integration_steps): dimensionless, and kept so when NaN-padded to float
            attrs = {"units": "1"} if np.asarray(v).dtype.kind in "iub" else {}
            out[k] = xr.DataArray(
                v, dims=(*lead, "time"), coords={d: c for d, c in tcoords.items() if d != "cell"}, attrs=attrs
            )
        if self.params.baseline != "zero" and np.any(x0_np != 0):
            out["baseline_window"] = self._baseline_da(model, stimulus, x0_np, description)
        return out

    def _baseline_da(self, model: Model, stimulus: xr.Dataset, x0: np.ndarray, description: str) -> xr.DataArray:
        from mechlens.schema import set_units

        h = model.history
        lag = xr.DataArray(
            np.round(np.arange(-(h - 1), 1) * model.frame_period_s, 9),
            dims="lag",
            attrs={"units": "s", "long_name": "time of the frame relative to the output time"},
        )
        coords: dict[str, Any] = {"lag": lag}
        for d in ("y", "x"):
            if d in stimulus.coords:
                coords[d] = stimulus[d]
        da = xr.DataArray(x0, dims=("lag", "y", "x"), coords=coords)
        set_units(da, "1", "baseline stimulus window (oldest frame first)")
        da.attrs["baseline"] = description
        return da

    def part_context(
        self, model: Model, stimulus: xr.Dataset, layer: str | None = None, cells: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """What the parts of a split run share (:mod:`mechlens.distributed`), computed once for all of them.

        Returns
        -------
        dict
            ``{"response_span": float}`` (Hz; the selected cells' response range over the whole
            stimulus, one forward pass) when :attr:`needs_response_span`, else empty. Passed back to
            :meth:`attribute_part` as ``part["context"]``, so no part repeats the forward pass.
        """
        if not self.needs_response_span:
            return {}
        movie = stimulus["stimulus"]
        module = model.torch_module()
        modes = [(m, m.training) for m in module.modules()]
        try:
            ctx = self.context(model, stimulus, layer, cells)
            module.eval()
            movies = _per_condition(movie)
            return {"response_span": self._response_span(ctx, movies)}
        finally:
            for m, mode in modes:
                m.training = mode

    def _response_span(self, ctx: LayerContext, movies: list[xr.DataArray]) -> float:
        """Range of the selected cells' responses over all movies (one forward pass), in Hz."""
        import torch

        lo, hi = np.inf, -np.inf
        for movie in movies:
            windows = ctx.model.windows(movie)
            step = max(1, ctx.model.batch_size)
            for start in range(0, windows.shape[0], step):
                x = windows[start : start + step].to(device=ctx.device, dtype=torch.float32).contiguous()
                with torch.no_grad():
                    r = ctx.above(ctx.below(x))[:, ctx.cell_index]
                lo, hi = min(lo, float(r.min())), max(hi, float(r.max()))
        return hi - lo

    def _cell_group(self, ctx: LayerContext, group: Sequence[int]) -> LayerContext:
        """``ctx`` narrowed to the ``k``-th of ``n`` groups of its cells (``group = (k, n)``), planned as the whole."""
        from mechlens.distributed import group_bounds

        if "cell" not in self.shard_dims:
            raise UsageError(
                f"{self.name}: its numbers depend on the set of cells (the adaptive rule refines a time point "
                "until every cell meets the tolerance), so a run cannot be split by cells; set n_steps, or do "
                "not split cells (docs/scale-out.md)"
            )
        k, n = int(group[0]), int(group[1])
        # the chunk size of the whole problem (some attributors size chunks in prepare): the time groups
        # of this part then cover the rows a whole call's do
        self.prepare(ctx)
        rows = self.rows_per_chunk(ctx)
        lo, hi = group_bounds(ctx.n_cells, k, n)
        return replace(
            ctx,
            cell_ids=ctx.cell_ids[lo:hi],
            cell_index=ctx.cell_index[lo:hi],
            r0=ctx.r0[lo:hi],
            planned_cells=ctx.n_cells,
            chunk_rows=rows,
        )

    def _row_range(self, ctx: LayerContext, n_rows: int, group: tuple[int, int]) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of the ``k``-th of ``n`` groups (``group = (k, n)``) of whole chunks of one call."""
        k, n = int(group[0]), int(group[1])
        step = self.rows_per_chunk(ctx)
        n_chunks = -(-n_rows // step)
        first, last = (n_chunks * k) // n, (n_chunks * (k + 1)) // n
        return min(first * step, n_rows), min(last * step, n_rows)

    def _one_movie(
        self, ctx: LayerContext, movie: xr.DataArray, group: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Attributions (T, N, units), responses (T, N), completeness errors (T, N) and extras for one movie.

        With ``group`` only the rows of :meth:`_row_range` (whole chunks, so the numbers are those of a whole run).
        """
        import torch

        windows = ctx.model.windows(movie)
        if group is not None:
            lo, hi = self._row_range(ctx, windows.shape[0], group)
            windows = windows[lo:hi]
        n_rows = windows.shape[0]
        keep = self.params.keep_space
        out_shape = (n_rows, ctx.n_cells, *(ctx.shape if keep else ctx.shape[:1]))
        attr = np.empty(out_shape, np.float32)
        resp = np.empty((n_rows, ctx.n_cells), np.float32)
        err = np.empty((n_rows, ctx.n_cells), np.float64)
        extras: dict[str, np.ndarray] = {}
        step = self.rows_per_chunk(ctx)
        starts = range(0, n_rows, step)
        for start in bar(starts, desc=f"{self.name} {ctx.layer}", total=len(starts), unit="chunk"):
            x = windows[start : start + step].to(device=ctx.device, dtype=torch.float32).contiguous()
            with torch.no_grad():
                z = ctx.below(x)
                r = ctx.above(z)[:, ctx.cell_index]
            got = self.attribute_chunk(ctx, x, z)
            info: dict[str, np.ndarray]
            a, info = got if isinstance(got, tuple) else (got, {})
            a = a.detach()
            total = a.flatten(2).sum(2, dtype=torch.float64)
            err[start : start + step] = (total - (r.double() - ctx.r0.double())).cpu().numpy()
            if tuple(a.shape[2:]) == ctx.shape and not keep and len(ctx.shape) > 1:
                a = a.sum(tuple(range(3, a.dim())), dtype=torch.float64)
            elif keep and tuple(a.shape[2:]) != ctx.shape:
                raise RuntimeError(f"{self.name}: keep_space needs per-unit attributions, got shape {tuple(a.shape)}")
            attr[start : start + step] = a.float().cpu().numpy()
            resp[start : start + step] = r.cpu().numpy()
            for k, v in info.items():
                extras.setdefault(k, np.zeros(n_rows, dtype=np.asarray(v).dtype))[start : start + step] = v
        return attr, resp, err, extras
