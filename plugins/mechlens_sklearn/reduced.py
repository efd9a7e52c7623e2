"""The reduced model, shared by every reducer: rerun the model with only the kept units active.

Definition
----------
Let ``below, above = model.split(layer)``. For each history window ``x_t`` of the stimulus,
``z_t = below(x_t)`` are the layer's activations and ``z_0 = below(x_0)`` those under the baseline
stimulus ``x_0`` (the ``baseline_window`` the attributor used, or the zero = mean-grey window). With a
boolean mask ``m`` over the layer's units (True = kept),

    z_reduced_t = where(m, z_t, z_0),        r_reduced_t = above(z_reduced_t),

i.e. every unit not kept is clamped to its value under the baseline stimulus. Keeping every unit
gives the full model; keeping none gives the baseline response at every time.

Fidelity
--------
- ``reduced_r`` (cell): Pearson r between the reduced and the full response over the window of
  interest (pooled over conditions).
- ``peak_time_error`` ([condition,] cell), s: time of the largest |r_reduced - r_0| minus time of the
  largest |r_full - r_0| in the window (signed: negative = the reduced model peaks early).
- ``additive_response`` ([condition,] time, cell): ``baseline_response + sum of the kept units'
  attributions``; the linear prediction of the same reduction (it needs no model).

The complement (a check that can fail)
--------------------------------------
The complement clamps the *kept* units to baseline and leaves the others active. A reduction names a
mechanism when the kept units reproduce the response and the others do not:

- ``reduced_model_explained`` / ``complement_model_explained`` (cell), with a model:
  ``1 - ||r_x - r|| / ||r - r_0||`` over the window (conditions pooled), ``r_x`` the reduced or the
  complement response; without a model the additive ``explained_fraction`` and
  ``complement_explained_fraction`` (``1 - ||dr - sum of the other units' A|| / ||dr||``) stand in.
- ``complement_r`` (cell): Pearson r of the complement with the full response.
- attr ``reduction_check`` (pooled over cells): ``"pass"`` when the kept units reproduce at least
  ``check`` of the deviation and the complement less; ``"all kept"`` when every unit is kept (no
  reduction, not a mechanism: the check would pass trivially); ``"kept insufficient"`` or
  ``"complement sufficient"`` otherwise. ``all_kept`` is 1 for a reduction that keeps every unit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from mechlens.errors import SchemaError, UsageError
from mechlens_sklearn.prepare import UNIT_DIMS, Prepared, check_layer_sizes, explained_fraction, stimulus_of

if TYPE_CHECKING:  # pragma: no cover
    from mechlens.interfaces import Model

#: time points per forward pass of the reduced model
BATCH = 256


def resolve_layer(prep: Prepared, model: Model) -> str:
    """The attributed layer: ``attribution.attrs['layer']``, the Dataset's ``layer`` attr, or the model's only layer.

    Raises
    ------
    UsageError
        The Dataset does not name its layer and the model has several.
    """
    if prep.layer:
        return model.check_layer(prep.layer)
    layers = list(model.layers())
    if len(layers) == 1:
        return layers[0]
    raise UsageError(
        f"the attribution Dataset does not name its layer (attrs['layer']) and model {model.name!r} has several "
        f"({', '.join(layers)}); set attribution.attrs['layer']"
    )


def layer_mask(mask: xr.DataArray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a mask over some unit dims to the layer's full unit shape.

    Parameters
    ----------
    mask : xarray.DataArray
        Boolean over a subset of (unit_channel, unit_y, unit_x), ``unit_channel`` included; a dim that
        is absent applies to every position along it (a kept type keeps all its units).
    shape : tuple of int
        ``model.layers()[layer]``: (channels[, y, x]).

    Returns
    -------
    numpy.ndarray
        Boolean of ``shape``.
    """
    if len(shape) > len(UNIT_DIMS):
        raise UsageError(f"layer shape {shape}: reduced models support layers of at most (channel, y, x) units")
    names = UNIT_DIMS[: len(shape)]
    extra = [d for d in mask.dims if d not in names]
    if extra:
        raise UsageError(f"the unit mask has dims {mask.dims} but the layer has only {names}")
    m = mask.astype(bool).transpose(*[d for d in names if d in mask.dims]).values
    index = tuple(slice(None) if d in mask.dims else np.newaxis for d in names)
    return np.broadcast_to(m[index], shape).copy()


def baseline_window(prep: Prepared, model: Model, condition: int | None) -> np.ndarray:
    """The baseline window (1, history, y, x), oldest frame first: ``baseline_window`` or zeros."""
    h, (ny, nx) = model.history, model.input_shape
    if "baseline_window" not in prep.ds.data_vars:
        return np.zeros((1, h, ny, nx), dtype=np.float32)
    bw = prep.ds["baseline_window"]
    if "condition" in bw.dims:
        bw = bw.isel(condition=condition or 0)
    if set(bw.dims) != {"lag", "y", "x"}:
        raise SchemaError(f"'baseline_window' has dims {bw.dims}; expected (lag, y, x)")
    # lag is seconds before the output time (0, -dt, ...): ascending lag = oldest frame first
    if "lag" in bw.coords:
        bw = bw.sortby("lag")
    arr = bw.transpose("lag", "y", "x").values.astype(np.float32)
    if arr.shape != (h, ny, nx):
        raise SchemaError(f"'baseline_window' has shape {arr.shape}; model {model.name!r} needs {(h, ny, nx)}")
    return arr[None]


def _rows(model: Model, movie: xr.DataArray, times: np.ndarray) -> np.ndarray:
    """Indices of the model's output rows (windows) that end at the attributed ``times``."""
    out_t = model.time_of_outputs(movie).values
    idx = np.searchsorted(out_t, times - 1e-6)
    idx = np.clip(idx, 0, len(out_t) - 1)
    if not np.allclose(out_t[idx], times, atol=1e-6):
        raise SchemaError(
            "the attribution's time points are not output times of the model on this stimulus "
            f"(model outputs span {out_t[0]:g}..{out_t[-1]:g} s); was it attributed on this stimulus?"
        )
    return idx


def run_reduced(model: Model, prep: Prepared, mask: xr.DataArray) -> dict[str, xr.DataArray]:
    """Rerun the model with only the units in ``mask`` active, and with only those not in it (the complement).

    In the reduced model the units outside ``mask`` are clamped to baseline; in the complement the
    units in ``mask`` are.

    Parameters
    ----------
    model : Model
        The model the attribution was computed on.
    prep : Prepared
        The attribution Dataset, merged with its stimulus.
    mask : xarray.DataArray
        Boolean over (unit_channel[, unit_y][, unit_x]); True = kept.

    Returns
    -------
    dict of str to xarray.DataArray
        ``reduced``, ``complement`` and ``full`` ([condition,] time, cell) in Hz, and ``baseline``
        ([condition,] cell), the model's response to the baseline window.

    Raises
    ------
    UsageError
        No stimulus in the Dataset, unknown cells, or unit counts that do not fit the layer.
    """
    import torch

    movie_all = stimulus_of(prep)
    if movie_all is None:
        raise UsageError(
            "a reduced model needs the stimulus: merge the stimulus Dataset into the attribution Dataset "
            "(mechlens.testing.merged(stimulus, attribution)) before reducing with a model"
        )
    layer = resolve_layer(prep, model)
    shape = tuple(model.layers()[layer])
    check_layer_sizes(prep, shape, layer)
    keep = torch.from_numpy(layer_mask(mask, shape))
    cells = [str(c) for c in prep.attribution["cell"].values]
    unknown = [c for c in cells if c not in model.cells]
    if unknown:
        raise UsageError(f"model {model.name!r} has no cells {unknown}; reduce with the model that was attributed")
    col = torch.as_tensor([list(model.cells).index(c) for c in cells])
    below, above = model.split(layer)
    times = prep.times.values
    has_cond = "condition" in prep.attribution.dims
    n_cond = prep.attribution.sizes["condition"] if has_cond else 1
    reduced, comp, full, base = [], [], [], []
    try:
        device = next(model.torch_module().parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    keep = keep.to(device)
    for ci in range(n_cond):
        movie = movie_all.isel(condition=ci) if "condition" in movie_all.dims else movie_all
        rows = _rows(model, movie, times)
        windows = model.windows(movie)
        with torch.no_grad():
            z0 = below(torch.from_numpy(baseline_window(prep, model, ci if has_cond else None)).to(device))
            r0 = above(z0)[:, col]
            red_c, comp_c, full_c = [], [], []
            for s in range(0, len(rows), BATCH):
                x = windows[rows[s : s + BATCH]].to(device=device, dtype=torch.float32).contiguous()
                z = below(x)
                z_red = torch.where(keep, z, z0)
                z_comp = torch.where(keep, z0, z)
                n = len(x)
                three = above(torch.cat([z, z_red, z_comp]))[:, col].cpu()
                full_c.append(three[:n])
                red_c.append(three[n : 2 * n])
                comp_c.append(three[2 * n :])
        reduced.append(torch.cat(red_c).numpy())
        comp.append(torch.cat(comp_c).numpy())
        full.append(torch.cat(full_c).numpy())
        base.append(r0[0].cpu().numpy())
    lead = ("condition", "time", "cell") if has_cond else ("time", "cell")
    coords: dict[str, Any] = {"time": prep.attribution["time"], "cell": prep.attribution["cell"]}
    if has_cond:
        coords["condition"] = prep.attribution["condition"]

    def arr(parts: list[np.ndarray], dims: tuple[str, ...]) -> xr.DataArray:
        data = np.stack(parts) if has_cond else parts[0]
        c = {k: v for k, v in coords.items() if k in dims}
        return xr.DataArray(data.astype(np.float64), dims=dims, coords=c)

    return {
        "reduced": arr(reduced, lead),
        "complement": arr(comp, lead),
        "full": arr(full, lead),
        "baseline": arr(base, ("condition", "cell") if has_cond else ("cell",)),
    }


def pearson(a: xr.DataArray, b: xr.DataArray, window: xr.DataArray) -> xr.DataArray:
    """Pearson r per cell between ``a`` and ``b`` over the window samples (pooled over conditions); NaN if constant."""
    out = []
    for cell in a["cell"].values:
        w = window.transpose(*[d for d in a.dims if d != "cell"]).values.ravel()
        av = a.sel(cell=cell).values.ravel()[w]
        bv = b.sel(cell=cell).values.ravel()[w]
        sa, sb = av.std(), bv.std()
        if sa == 0 or sb == 0 or len(av) < 2:
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


def additive_response(prep: Prepared, mask: xr.DataArray) -> xr.DataArray:
    """``baseline_response + sum of the kept units' attributions``: ([condition,] time, cell), Hz."""
    kept = prep.attribution.where(mask.astype(bool), 0.0)
    s = kept.sum(list(prep.unit_dims))
    return (prep.baseline + s).transpose(*prep.lead_dims)


def model_explained(
    approx: xr.DataArray,
    full: xr.DataArray,
    baseline: xr.DataArray,
    window: xr.DataArray,
    over: tuple[str, ...] = ("cell",),
) -> xr.DataArray:
    """``1 - ||approx - full|| / ||full - baseline||`` over the window (conditions pooled), per ``over`` dims.

    Parameters
    ----------
    approx, full : xarray.DataArray
        ([condition,] time, cell) responses, Hz.
    baseline : xarray.DataArray
        ([condition,] cell) the response to the baseline window, Hz.
    window : xarray.DataArray
        Boolean ([condition,] time).

    Returns
    -------
    xarray.DataArray
        1 = ``approx`` reproduces the full response's deviation, 0 = no better than the baseline; NaN
        where the full response does not deviate.
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


def evaluate(
    out: xr.Dataset,
    prep: Prepared,
    mask: xr.DataArray,
    window: xr.DataArray,
    model: Model | None,
    check: float = 0.5,
) -> xr.Dataset:
    """Add the additive check, the complement and, with a model, the reduced models and their fidelity.

    Parameters
    ----------
    out : xarray.Dataset
        The reducer's output so far.
    prep : Prepared
        The cut attribution Dataset.
    mask : xarray.DataArray
        Boolean over (unit_channel[, unit_y][, unit_x]), the kept units.
    window : xarray.DataArray
        Boolean ([condition,] time), the window the fidelity is measured over.
    model : Model or None
        When given, ``reduced_response``, ``reduced_r``, ``peak_time_error``, ``complement_response``,
        ``complement_r``, ``reduced_model_explained`` and ``complement_model_explained`` are added.
    check : float
        Fraction of the response deviation the kept units must reproduce and the others must not
        (see the module docstring).

    Returns
    -------
    xarray.Dataset
        ``out`` with ``additive_response``, ``explained_fraction`` and ``complement_explained_fraction``
        (cell), the model outputs above, and attrs ``all_kept``, ``reduction_check``,
        ``check_fraction``, ``check_kept``, ``check_complement`` (pooled fractions the verdict used).
    """
    add = additive_response(prep, mask)
    out["additive_response"] = add.astype(np.float32)
    out["additive_response"].attrs.update(
        units="Hz", long_name="baseline response plus the kept units' attributions (linear reduced model)"
    )
    frac = explained_fraction(prep.deviation, add - prep.baseline, window)
    out["explained_fraction"] = frac
    out["explained_fraction"].attrs.update(
        units="1", long_name="1 - ||dr - sum of kept attributions|| / ||dr|| over the window, dr = response - baseline"
    )
    others = additive_response(prep, ~mask.astype(bool)) - prep.baseline
    out["complement_explained_fraction"] = explained_fraction(prep.deviation, others, window)
    out["complement_explained_fraction"].attrs.update(
        units="1", long_name="1 - ||dr - sum of the other units' attributions|| / ||dr|| over the window"
    )
    all_kept = bool(mask.astype(bool).all())
    kept_pooled = float(explained_fraction(prep.deviation, add - prep.baseline, window, over=()))
    comp_pooled = float(explained_fraction(prep.deviation, others, window, over=()))
    if model is not None:
        res = run_reduced(model, prep, mask)
        out["reduced_response"] = res["reduced"].astype(np.float32)
        out["reduced_response"].attrs.update(
            units="Hz", long_name="model response with only the kept units active, the others clamped to baseline"
        )
        out["reduced_r"] = pearson(res["reduced"], res["full"], window)
        out["reduced_r"].attrs.update(units="1", long_name="Pearson r of reduced vs full response over the window")
        out["peak_time_error"] = peak_time_error(res["reduced"], res["full"], res["baseline"], window)
        out["peak_time_error"].attrs.update(
            units="s", long_name="peak time (max |r - r0|) of the reduced minus the full response, within the window"
        )
        out["reduced_baseline_response"] = res["baseline"].astype(np.float32)
        out["reduced_baseline_response"].attrs.update(units="Hz", long_name="model response to the baseline window")
        out["complement_response"] = res["complement"].astype(np.float32)
        out["complement_response"].attrs.update(
            units="Hz", long_name="model response with the kept units clamped to baseline, the others active"
        )
        out["complement_r"] = pearson(res["complement"], res["full"], window)
        out["complement_r"].attrs.update(
            units="1", long_name="Pearson r of complement vs full response over the window"
        )
        for name, key in (("reduced_model_explained", "reduced"), ("complement_model_explained", "complement")):
            out[name] = model_explained(res[key], res["full"], res["baseline"], window)
            out[name].attrs.update(units="1", long_name=f"1 - ||{key} - full|| / ||full - baseline|| over the window")
        kept_pooled = float(model_explained(res["reduced"], res["full"], res["baseline"], window, over=()))
        comp_pooled = float(model_explained(res["complement"], res["full"], res["baseline"], window, over=()))
    out.attrs.update(
        all_kept=int(all_kept),
        reduction_check=check_verdict(kept_pooled, comp_pooled, all_kept, check),
        check_fraction=float(check),
        check_kept=kept_pooled,
        check_complement=comp_pooled,
    )
    return out
