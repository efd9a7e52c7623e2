"""The reduced model, offered to every reducer: rerun the model with only the kept units active.

Definition
----------
For each history window ``x_t`` of the stimulus let ``z_t`` be the layer's activations and ``z_0``
those under the baseline window ``x_0`` (the attributor's ``baseline_window``, else the zero =
mean-grey window). With a boolean mask ``m`` over the layer's units (True = kept),

    z_reduced_t = where(m, z_t, z_0),        r_reduced_t = rest_of_model(z_reduced_t),

i.e. every unit not kept is clamped to its value under the baseline window (the lesion of
:mod:`mechlens.lesion`, on the attributed stimulus). The complement clamps the kept units instead.
Keeping every unit gives the full model, keeping none the baseline response. A model that overrides
``Model.split`` runs through its split (one ``below`` pass, one ``above`` pass over the three variants);
any other model through a forward hook on the layer (:func:`mechlens.layers.patched`), so skip
connections around the layer keep seeing the window.

Use
---
A reducer chooses the kept units; :func:`reduced_model` does the rest from the Dataset it was given
(the attribution merged with its stimulus) and returns the variables of docs/contract.md ('Reducer
variables'): ``kept``, ``reduced_response``, ``complement_response``, ``reduced_baseline_response``,
``reduced_r``, ``complement_r``, ``peak_time_error``, ``reduced_model_explained``,
``complement_model_explained`` and the attrs of the check (``all_kept``, ``reduction_check``,
``check_fraction``, ``check_kept``, ``check_complement``)::

    from mechlens.reduced import reduced_model

    def reduce(self, attribution, model=None):
        kept = ...  # boolean DataArray over unit_channel (and unit_y, unit_x where per unit)
        out = xr.Dataset({"weights": ..., "components": ...})
        if model is not None:
            red = reduced_model(model, attribution, kept)
            out = out.merge(red).assign_attrs(red.attrs)  # merge keeps the first Dataset's attrs
        return out

The pieces (:func:`run_reduced`, :func:`pearson`, :func:`peak_time_error`, :func:`explained_fraction`,
:func:`check_verdict`) are public for a reducer that measures fidelity its own way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import xarray as xr

import mechlens.schema as _schema
from mechlens.errors import SchemaError, UsageError
from mechlens.interfaces import Model

__all__ = [
    "BATCH",
    "attributed_times",
    "baseline_windows",
    "check_verdict",
    "compare",
    "deferred",
    "explained_fraction",
    "layer_mask",
    "model_explained",
    "peak_time_error",
    "pearson",
    "reduced_model",
    "run_reduced",
]

#: time points per forward pass of the reduced model
BATCH = 256
#: tolerance when comparing times in s (coords are rounded to 1e-9 s by mechlens.schema.time_coord)
TIME_TOL = 1e-6
#: attr the pipeline sets on the Dataset it hands a reducer when it runs the reduced model itself, chunk by
#: chunk (a streamed run, :mod:`mechlens.streaming`): the Dataset then has no stimulus (see :func:`deferred`)
DEFERRED_ATTR = "reduced_model_deferred"


def deferred(ds: xr.Dataset) -> bool:
    """Whether the pipeline runs the reduced model itself after the reducer (a streamed run).

    True when ``ds`` (what a reducer was given) has no ``stimulus`` and carries attr
    :data:`DEFERRED_ATTR`: the reducer then chooses its kept units without the model check, and the
    pipeline adds ``reduced_response`` .. ``complement_model_explained`` and the check attrs from its
    ``kept`` variable, its ``reduction_window`` (when present) and its ``check_fraction`` attr.
    :func:`reduced_model` does this on its own; a reducer that reruns the model its own way tests it.
    """
    return "stimulus" not in ds.data_vars and bool(ds.attrs.get(DEFERRED_ATTR))


def layer_mask(mask: xr.DataArray | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a mask over some unit dims to the layer's full unit shape.

    Parameters
    ----------
    mask : xarray.DataArray or numpy.ndarray
        Boolean. A DataArray over a subset of (unit_channel, unit_y, unit_x), ``unit_channel`` included:
        a dim that is absent applies to every position along it (a kept type keeps all its units). An
        array of the layer's shape, or of one flag per channel.
    shape : tuple of int
        ``model.layers()[layer]``: (channels[, y, x]).

    Returns
    -------
    numpy.ndarray
        Boolean of ``shape``.
    """
    if not isinstance(mask, xr.DataArray):
        arr = np.asarray(mask, dtype=bool)
        if arr.shape == shape[:1] and len(shape) > 1:
            arr = arr.reshape(-1, *([1] * (len(shape) - 1)))
        try:
            return np.broadcast_to(arr, shape).copy()
        except ValueError:
            raise UsageError(
                f"the unit mask has shape {arr.shape}; give the layer's unit shape {shape} or one flag per channel"
            ) from None
    if len(shape) > len(_schema.UNIT_DIMS):
        raise UsageError(f"layer shape {shape}: reduced models support layers of at most (channel, y, x) units")
    names = _schema.UNIT_DIMS[: len(shape)]
    extra = [d for d in mask.dims if d not in names]
    if extra:
        raise UsageError(f"the unit mask has dims {mask.dims} but the layer has only {names}")
    m = mask.astype(bool).transpose(*[d for d in names if d in mask.dims]).values
    index = tuple(slice(None) if d in mask.dims else np.newaxis for d in names)
    return np.broadcast_to(m[index], shape).copy()


def baseline_windows(ds: xr.Dataset, model: Model) -> np.ndarray | None:
    """The ``baseline_window`` variable as windows oldest frame first: (history, y, x) or (condition, history, y, x).

    None when the Dataset has none (the reduced model then uses the zero = mean-grey window).
    """
    if "baseline_window" not in ds.data_vars:
        return None
    bw = ds["baseline_window"]
    core = {d for d in bw.dims if d != "condition"}
    if core != {"lag", "y", "x"}:
        raise SchemaError(f"'baseline_window' has dims {bw.dims}; expected ([condition,] lag, y, x)")
    # lag is seconds before the output time (0, -dt, ...): ascending lag = oldest frame first
    if "lag" in bw.coords:
        bw = bw.sortby("lag")
    arr = bw.transpose(*[d for d in ("condition", "lag", "y", "x") if d in bw.dims]).values.astype(np.float32)
    h, (ny, nx) = model.history, model.input_shape
    if arr.shape[-3:] != (h, ny, nx):
        raise SchemaError(f"'baseline_window' has shape {arr.shape}; model {model.name!r} needs {(h, ny, nx)}")
    return arr


def _rows(model: Model, movie: xr.DataArray, times: np.ndarray) -> np.ndarray:
    """Indices of the model's output rows (windows) that end at ``times``."""
    out_t = model.time_of_outputs(movie).values
    idx = np.clip(np.searchsorted(out_t, times - TIME_TOL), 0, len(out_t) - 1)
    if not np.allclose(out_t[idx], times, atol=TIME_TOL):
        raise SchemaError(
            "the attribution's time points are not output times of the model on this stimulus "
            f"(model outputs span {out_t[0]:g}..{out_t[-1]:g} s); was it attributed on this stimulus?"
        )
    return idx


def _clamp_to(mask: Any, z0: Any) -> Any:
    """The patch ``z -> where(mask, z, z0)`` (tensors; ``mask`` one row per window)."""
    import torch

    return lambda z: torch.where(mask, z, z0)


def run_reduced(
    model: Model,
    layer: str,
    movie: xr.DataArray,
    keep: xr.DataArray | np.ndarray,
    *,
    times: np.ndarray | Sequence[float] | None = None,
    cells: Sequence[str] | None = None,
    baseline: np.ndarray | None = None,
) -> dict[str, xr.DataArray]:
    """Rerun the model with only the ``keep`` units of ``layer`` active, and with only the others (the complement).

    Parameters
    ----------
    model : Model
        The intact model.
    layer : str
        One of ``model.layers()``.
    movie : xarray.DataArray
        The stimulus ([condition,] time, y, x), its full time axis (history frames included).
    keep : xarray.DataArray or numpy.ndarray
        Boolean, True = kept (see :func:`layer_mask`).
    times : array of float, optional
        Output times (s) to compute; default every output time of the model on the movie.
    cells : sequence of str, optional
        Cell ids; default all.
    baseline : numpy.ndarray, optional
        Baseline window (history, y, x), oldest frame first, or one per condition; default zeros.

    Returns
    -------
    dict of str to xarray.DataArray
        ``reduced``, ``complement`` and ``full`` ([condition,] time, cell), and ``baseline``
        ([condition,] cell), the response to the baseline window; all float64, in the model's units (Hz).
    """
    import torch

    import mechlens.layers as _layers  # torch: imported when a model runs, not with this module

    layer = model.check_layer(layer)
    shape = tuple(int(s) for s in model.layers()[layer])
    mask = torch.from_numpy(layer_mask(keep, shape))
    cells = list(model.cells) if cells is None else [str(c) for c in cells]
    unknown = [c for c in cells if c not in model.cells]
    if unknown:
        raise UsageError(f"model {model.name!r} has no cells {unknown}; reduce with the model that was attributed")
    col = torch.as_tensor([list(model.cells).index(c) for c in cells])
    has_cond = "condition" in movie.dims
    n_cond = movie.sizes["condition"] if has_cond else 1
    device = torch.device(model.device)
    mask = mask.to(device)
    h, (ny, nx) = model.history, model.input_shape
    base = np.zeros((h, ny, nx), np.float32) if baseline is None else np.asarray(baseline, np.float32)
    if base.shape[-3:] != (h, ny, nx) or base.ndim not in (3, 4):
        raise UsageError(f"reduced model: baseline window of shape {base.shape}; the model takes {(h, ny, nx)} windows")
    where = f"layer {layer!r} of model {model.name!r}"
    hooks = model.split_by_hooks()
    if hooks:
        module, target = model.torch_module(), model.layer_module(layer)
    else:
        below, above = model.split(layer)
    reduced, comp, full, r0s = [], [], [], []
    out_times: np.ndarray | None = None
    for ci in range(n_cond):
        m = movie.isel(condition=ci) if has_cond else movie
        t = model.time_of_outputs(m).values if times is None else np.asarray(times, float)
        out_times = t
        rows = _rows(model, m, t)
        windows = model.windows(m)
        b = base[ci] if base.ndim == 4 else base
        x0 = torch.from_numpy(np.ascontiguousarray(model.input_frames(b)))[None].to(device)
        parts: list[list[np.ndarray]] = [[], [], []]
        with torch.no_grad():
            if hooks:
                z0 = _layers.capture(module, target, x0, where)
                r0 = module(x0)[:, col]
            else:
                z0 = below(x0)
                r0 = above(z0)[:, col]
            for s in range(0, len(rows), BATCH):
                x = windows[rows[s : s + BATCH]].to(device=device, dtype=torch.float32).contiguous()
                n = len(x)
                if hooks:
                    # one patched pass over (full, reduced, complement): per-row masks on the layer's output
                    rows_mask = torch.cat([k.expand(n, *shape) for k in (torch.ones_like(mask), mask, ~mask)])
                    three = _layers.patched(module, target, torch.cat([x, x, x]), _clamp_to(rows_mask, z0), where)
                else:
                    z = below(x)
                    three = above(torch.cat([z, torch.where(mask, z, z0), torch.where(mask, z0, z)]))
                got = three[:, col].double().cpu().numpy()
                for k in range(3):
                    parts[k].append(got[k * n : (k + 1) * n])
        full.append(np.concatenate(parts[0]))
        reduced.append(np.concatenate(parts[1]))
        comp.append(np.concatenate(parts[2]))
        r0s.append(r0[0].double().cpu().numpy())
    coords: dict[str, Any] = {
        "time": xr.DataArray(np.asarray(out_times), dims="time", attrs={"units": "s", "long_name": "time"}),
        "cell": ("cell", cells),
    }
    if has_cond:
        coords["condition"] = movie["condition"]
    lead = ("condition", "time", "cell") if has_cond else ("time", "cell")

    def arr(parts: list[np.ndarray], dims: tuple[str, ...]) -> xr.DataArray:
        data = np.stack(parts) if has_cond else parts[0]
        return xr.DataArray(data, dims=dims, coords={k: v for k, v in coords.items() if k in dims})

    return {
        "reduced": arr(reduced, lead),
        "complement": arr(comp, lead),
        "full": arr(full, lead),
        "baseline": arr(r0s, ("condition", "cell") if has_cond else ("cell",)),
    }


def pearson(a: xr.DataArray, b: xr.DataArray, window: xr.DataArray) -> xr.DataArray:
    """Pearson r per cell between ``a`` and ``b`` over the window samples (pooled over conditions); NaN if constant."""
    out = []
    w = window.transpose(*[d for d in a.dims if d != "cell"]).values.ravel()
    for cell in a["cell"].values:
        av = a.sel(cell=cell).values.ravel()[w]
        bv = b.sel(cell=cell).values.ravel()[w]
        if len(av) < 2 or av.std() == 0 or bv.std() == 0:
            out.append(np.nan)
        else:
            out.append(float(np.corrcoef(av, bv)[0, 1]))
    return xr.DataArray(np.asarray(out), dims="cell", coords={"cell": a["cell"]})


def peak_time_error(
    reduced: xr.DataArray, full: xr.DataArray, baseline: xr.DataArray, window: xr.DataArray
) -> xr.DataArray:
    """Time of max |reduced - baseline| minus time of max |full - baseline| within the window, in s."""
    t = reduced["time"]

    def peak_time(r: xr.DataArray) -> xr.DataArray:
        dev = abs(r - baseline).where(window, -1.0)
        return t.isel(time=dev.argmax("time")).drop_vars("time", errors="ignore")

    err = peak_time(reduced) - peak_time(full)
    return err.transpose(*[d for d in ("condition", "cell") if d in err.dims]).astype(np.float64)


def explained_fraction(
    deviation: xr.DataArray, reconstruction: xr.DataArray, window: xr.DataArray, over: tuple[str, ...] = ("cell",)
) -> xr.DataArray:
    """``1 - ||dr - recon|| / ||dr||`` over the window (and conditions), per ``over`` dims.

    Parameters
    ----------
    deviation : xarray.DataArray
        ([condition,] time, cell): response minus baseline response (Hz).
    reconstruction : xarray.DataArray
        Same dims: what approximates it (the kept attributions' sum, or a reduced model's deviation).
    window : xarray.DataArray
        Boolean ([condition,] time).
    over : tuple of str
        Dims kept in the result: ``("cell",)`` per cell, ``()`` pooled over cells.

    Returns
    -------
    xarray.DataArray
        1 for a perfect reconstruction, 0 for none (the baseline alone), negative when worse than
        none; NaN where the deviation is zero over the window.
    """
    res = (deviation - reconstruction).where(window, 0.0)
    dev = deviation.where(window, 0.0)
    sum_dims = [d for d in dev.dims if d not in over]
    # numpy's stubs type a ufunc of a DataArray as an ndarray; xarray's __array_ufunc__ returns a DataArray
    num = cast(xr.DataArray, np.sqrt((res**2).sum(sum_dims)))
    den = cast(xr.DataArray, np.sqrt((dev**2).sum(sum_dims)))
    return (1.0 - num / den.where(den > 0)).astype(np.float64)


def model_explained(
    approx: xr.DataArray,
    full: xr.DataArray,
    baseline: xr.DataArray,
    window: xr.DataArray,
    over: tuple[str, ...] = ("cell",),
) -> xr.DataArray:
    """``1 - ||approx - full|| / ||full - baseline||`` over the window (conditions pooled), per ``over`` dims.

    1 = ``approx`` reproduces the full response's deviation, 0 = no better than the baseline; NaN where
    the full response does not deviate. ``baseline`` is ([condition,] cell).
    """
    return explained_fraction(full - baseline, approx - baseline, window, over=over)


def check_verdict(kept: float, complement: float, all_kept: bool, check: float) -> str:
    """The reduced-model check in words: "pass", "all kept", "kept insufficient" or "complement sufficient".

    Parameters
    ----------
    kept, complement : float
        Fractions of the response deviation reproduced by the kept units and by the others.
    all_kept : bool
        Every unit is kept (no reduction: the check cannot fail, so it is not called a pass).
    check : float
        The fraction the kept units must reach and the others must stay below.
    """
    if all_kept:
        return "all kept"
    if not kept >= check:
        return "kept insufficient"
    if complement >= check:
        return "complement sufficient"
    return "pass"


def check_attrs(kept: float, complement: float, all_kept: bool, check: float) -> dict[str, Any]:
    """The check's attrs on a reduction: ``all_kept``, ``reduction_check`` (:func:`check_verdict`),
    ``check_fraction``, ``check_kept`` and ``check_complement`` (pooled explained fractions, 1)."""
    return {
        "all_kept": int(all_kept),
        "reduction_check": check_verdict(kept, complement, all_kept, check),
        "check_fraction": float(check),
        "check_kept": float(kept),
        "check_complement": float(complement),
    }


def attributed_times(ds: xr.Dataset) -> np.ndarray:
    """The time points (s) an attribution Dataset was attributed at (a merged Dataset is NaN over the history)."""
    if "attribution" not in ds.data_vars or "time" not in ds["attribution"].dims:
        raise SchemaError(
            "a reduced model needs an attribution Dataset with an 'attribution' variable over time; "
            f"got variables {sorted(map(str, ds.data_vars))}"
        )
    raw = ds["attribution"]
    valid = raw.notnull().any([d for d in raw.dims if d != "time"]).values
    if not valid.any():
        raise SchemaError("'attribution' holds no finite value")
    return np.asarray(raw["time"].values[valid], dtype=float)


def reduced_model(
    model: Model,
    ds: xr.Dataset,
    kept: xr.DataArray,
    window: xr.DataArray | None = None,
    check: float = 0.5,
    layer: str | None = None,
) -> xr.Dataset:
    """The reduced model and its complement on the attributed stimulus, compared with the full model.

    Parameters
    ----------
    model : Model
        The attributed model.
    ds : xarray.Dataset
        What the reducer was given: the attribution Dataset merged with its stimulus
        (``mechlens.testing.merged``); ``baseline_window`` is used when present.
    kept : xarray.DataArray
        Boolean over (unit_channel[, unit_y][, unit_x]), True = kept active.
    window : xarray.DataArray, optional
        Boolean ([condition,] time) over the attributed times: where fidelity is measured (default all).
    check : float
        The fraction of the response deviation the kept units must reproduce, and the others must not.
    layer : str, optional
        Default: ``attribution.attrs['layer']`` (or the Dataset's ``layer`` attr), else the model's only layer.

    Returns
    -------
    xarray.Dataset
        ``kept`` (int8), ``reduced_response``, ``complement_response`` ([condition,] time, cell) and
        ``reduced_baseline_response`` ([condition,] cell) in Hz; ``reduced_r``, ``complement_r``,
        ``reduced_model_explained``, ``complement_model_explained`` (cell); ``peak_time_error``
        ([condition,] cell) in s; attrs ``all_kept``, ``reduction_check``, ``check_fraction``,
        ``check_kept``, ``check_complement``. When :func:`deferred` (a streamed run): only ``kept`` and
        the attrs (fractions NaN); the pipeline adds the rest, chunk by chunk, and replaces the attrs.
    """
    if deferred(ds):  # a streamed run: the pipeline adds the rest chunk by chunk
        out = xr.Dataset({"kept": kept.astype(np.int8)})
        out["kept"].attrs.update(units="1", long_name="1 = unit kept active in the reduced model")
        return out.assign_attrs(check_attrs(np.nan, np.nan, bool(kept.astype(bool).all()), check))
    if "stimulus" not in ds.data_vars:
        raise UsageError(
            "a reduced model needs the stimulus: merge the stimulus Dataset into the attribution Dataset "
            "(mechlens.testing.merged(stimulus, attribution)) before reducing with a model"
        )
    if layer is None:
        layer = str(ds["attribution"].attrs.get("layer") or ds.attrs.get("layer") or "") if "attribution" in ds else ""
        if not layer:
            names = list(model.layers())
            if len(names) != 1:
                raise UsageError(
                    f"the attribution Dataset does not name its layer (attrs['layer']) and model {model.name!r} has "
                    f"several ({', '.join(names)}); set attribution.attrs['layer']"
                )
            layer = names[0]
    times = attributed_times(ds)
    cells = [str(c) for c in ds["attribution"]["cell"].values]
    res = run_reduced(
        model, layer, ds["stimulus"], kept, times=times, cells=cells, baseline=baseline_windows(ds, model)
    )
    return compare(res, kept, window, check)


def compare(
    res: dict[str, xr.DataArray], kept: xr.DataArray, window: xr.DataArray | None = None, check: float = 0.5
) -> xr.Dataset:
    """The variables and check attrs of :func:`reduced_model` from the runs of :func:`run_reduced`.

    Parameters
    ----------
    res : dict of str to xarray.DataArray
        :func:`run_reduced`'s ``reduced``, ``complement``, ``full`` and ``baseline``.
    kept : xarray.DataArray
        The kept units (boolean).
    window : xarray.DataArray, optional
        Boolean ([condition,] time) over the same times: where fidelity is measured (default all).
    check : float
        The fraction of the deviation the kept units must reproduce and the others must not.
    """
    if window is None:
        window = xr.ones_like(res["full"].isel(cell=0, drop=True), dtype=bool)
    else:
        window = window.astype(bool).assign_coords(time=res["full"]["time"].values)
    out = xr.Dataset()
    out["kept"] = kept.astype(np.int8)
    out["kept"].attrs.update(units="1", long_name="1 = unit kept active in the reduced model")
    described = {
        "reduced_response": (
            "reduced",
            "model response with only the kept units active, the others clamped to baseline",
        ),
        "complement_response": (
            "complement",
            "model response with the kept units clamped to baseline, the others active",
        ),
    }
    for name, (key, text) in described.items():
        out[name] = res[key].astype(np.float32)
        out[name].attrs.update(units="Hz", long_name=text)
    out["reduced_baseline_response"] = res["baseline"].astype(np.float32)
    out["reduced_baseline_response"].attrs.update(units="Hz", long_name="model response to the baseline window")
    for name, key in (("reduced_r", "reduced"), ("complement_r", "complement")):
        out[name] = pearson(res[key], res["full"], window)
        out[name].attrs.update(units="1", long_name=f"Pearson r of the {key} vs the full response over the window")
    out["peak_time_error"] = peak_time_error(res["reduced"], res["full"], res["baseline"], window)
    out["peak_time_error"].attrs.update(
        units="s", long_name="peak time (max |r - r0|) of the reduced minus the full response, within the window"
    )
    for name, key in (("reduced_model_explained", "reduced"), ("complement_model_explained", "complement")):
        out[name] = model_explained(res[key], res["full"], res["baseline"], window)
        out[name].attrs.update(units="1", long_name=f"1 - ||{key} - full|| / ||full - baseline|| over the window")
    kept_pooled = float(model_explained(res["reduced"], res["full"], res["baseline"], window, over=()))
    comp_pooled = float(model_explained(res["complement"], res["full"], res["baseline"], window, over=()))
    out.attrs.update(check_attrs(kept_pooled, comp_pooled, bool(kept.astype(bool).all()), check))
    out["time"].attrs.update(units="s")
    return out
