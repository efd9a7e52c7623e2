"""Reading an attribution Dataset for reduction: time alignment, windows, spatial sums, shared measures.

A reducer receives the attribution Dataset merged with its stimulus (``mechlens.pipeline.merge``):
the ``time`` coord is then the stimulus's, and every per-time model output is NaN over the
stimulus's history frames. :func:`prepare` cuts the Dataset back to the attributed time points and
puts the attribution in a canonical dim order, so the reducers never deal with the padding.

The measures every reducer reports (``contribution``, ``sign``, ``explained_fraction``) are defined
here once, so that the three reducers and the mechanism sentence use the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError, SchemaError, UsageError
from mechlens.reduced import explained_fraction  # noqa: F401 - defined once, in the core; re-exported
from mechlens.schema import UNIT_DIMS

#: the spatial unit dim kept for each ``keep_axis`` choice
KEEP_AXIS = {"none": (), "x": ("unit_x",), "y": ("unit_y",), "both": ("unit_y", "unit_x")}
#: tolerance when comparing times in s (coords are rounded to 1e-9 s by mechlens.schema.time_coord)
TIME_TOL = 1e-6


@dataclass
class Prepared:
    """An attribution Dataset cut to its attributed time points.

    Attributes
    ----------
    ds : xarray.Dataset
        The input with every ``time``-dim variable restricted to the attributed times (the
        stimulus keeps its full time axis: the reduced model needs the history frames).
    attribution : xarray.DataArray
        ([condition,] time, cell, unit_channel[, unit_y][, unit_x]) in float64 (Hz).
    deviation : xarray.DataArray
        ([condition,] time, cell): ``response - baseline_response`` (Hz), the quantity the
        attribution decomposes; the attribution's own sum when the Dataset has no response.
    baseline : xarray.DataArray
        (cell) ``baseline_response`` in Hz (zeros when absent).
    layer : str
        Name of the attributed layer ("" when the Dataset does not say).
    """

    ds: xr.Dataset
    attribution: xr.DataArray
    deviation: xr.DataArray
    baseline: xr.DataArray
    layer: str

    @property
    def unit_dims(self) -> tuple[str, ...]:
        """The attribution's unit dims present (``unit_channel`` first)."""
        return tuple(d for d in UNIT_DIMS if d in self.attribution.dims)

    @property
    def lead_dims(self) -> tuple[str, ...]:
        """The attribution's non-unit dims: ([condition,] time, cell)."""
        return tuple(str(d) for d in self.attribution.dims if d not in UNIT_DIMS)

    @property
    def times(self) -> xr.DataArray:
        """The attributed time points (s)."""
        return self.attribution["time"]


def prepare(ds: xr.Dataset) -> Prepared:
    """Cut an (optionally stimulus-merged) attribution Dataset to the attributed times.

    Parameters
    ----------
    ds : xarray.Dataset
        ``attribution`` ([condition,] time, cell, unit_channel[, unit_y, unit_x]) plus, usually,
        ``response`` ([condition,] time, cell) and ``baseline_response`` (cell).

    Returns
    -------
    Prepared

    Raises
    ------
    SchemaError
        No ``attribution`` variable, or it lacks the ``time``/``cell``/``unit_channel`` dims, or it
        holds no finite value.
    """
    if "attribution" not in ds.data_vars:
        raise SchemaError(
            "a reducer needs an attribution Dataset with an 'attribution' variable (time, cell, unit_channel); "
            f"got variables {sorted(map(str, ds.data_vars))}. Run an attributor first."
        )
    raw = ds["attribution"]
    for dim in ("time", "cell", "unit_channel"):
        if dim not in raw.dims:
            raise SchemaError(
                f"'attribution' has dims {raw.dims}; it needs a {dim!r} dim (see docs/contract.md, 'Datasets')"
            )
    others = [d for d in raw.dims if d != "time"]
    # merged Datasets pad the stimulus's history frames with NaN: keep the attributed rows only
    valid = raw.notnull().any(others).values
    if not valid.any():
        raise SchemaError("'attribution' holds no finite value")
    times = raw["time"].values[valid]
    # the movie keeps its full time axis (the reduced model needs the history frames) under another dim name
    cut = ds.drop_vars("stimulus") if "stimulus" in ds.data_vars else ds
    cut = cut.sel(time=times)
    if "stimulus" in ds.data_vars:
        cut["stimulus_full"] = ds["stimulus"].rename(time="stimulus_time")
    order = tuple(d for d in ("condition", "time", "cell") if d in raw.dims) + tuple(
        d for d in UNIT_DIMS if d in raw.dims
    )
    extra = [d for d in raw.dims if d not in order]
    if extra:
        raise SchemaError(f"'attribution' has unexpected dims {extra}; allowed: {order}")
    attribution = cut["attribution"].transpose(*order).astype(np.float64)
    if not np.isfinite(attribution.values).all():
        raise SchemaError("'attribution' has non-finite values inside the attributed time points")
    unit = [d for d in attribution.dims if d in UNIT_DIMS]
    if "baseline_response" in cut.data_vars:
        baseline = cut["baseline_response"].astype(np.float64)
    else:
        baseline = xr.zeros_like(attribution["cell"], dtype=np.float64)
    if "response" in cut.data_vars:
        lead = tuple(d for d in attribution.dims if d not in UNIT_DIMS)
        deviation = (cut["response"].astype(np.float64) - baseline).transpose(*lead)
    else:
        deviation = attribution.sum(unit)
    layer = str(raw.attrs.get("layer") or ds.attrs.get("layer") or "")
    return Prepared(ds=cut, attribution=attribution, deviation=deviation, baseline=baseline, layer=layer)


def stimulus_of(prep: Prepared) -> xr.DataArray | None:
    """The full stimulus movie ([condition,] time, y, x) with its own time axis, or None."""
    if "stimulus_full" not in prep.ds.data_vars:
        return None
    return prep.ds["stimulus_full"].rename(stimulus_time="time")


def check_window(start: float | None, stop: float | None) -> None:
    """Cross-field check shared by the reducers' Parameters: ``window_stop`` after ``window_start``."""
    if start is not None and stop is not None and stop <= start:
        raise ParameterError(
            "window_stop", f"got {stop} s, which is not after window_start = {start} s; give a later window_stop"
        )


def window_mask(prep: Prepared, start: float | None = None, stop: float | None = None, event: str = "") -> xr.DataArray:
    """The time window of interest as a boolean mask over ([condition,] time).

    Parameters
    ----------
    prep : Prepared
        The cut attribution Dataset.
    start, stop : float or None
        Window bounds in s, inclusive. None means unbounded on that side (with ``event`` given, a
        missing ``start`` means the event itself).
    event : str
        Name of an event variable of the stimulus (a time in s, scalar or per ``condition``, e.g.
        ``"omitted_time"``); ``start``/``stop`` are then relative to it. ``""`` for none.

    Raises
    ------
    ParameterError
        The event variable is missing, has a ``time`` dim, or is NaN; or the window holds no
        attributed time point.
    """
    t = prep.times
    lead = prep.lead_dims
    has_cond = "condition" in lead
    if event:
        if event not in prep.ds.variables:
            candidates = sorted(
                str(n) for n, v in prep.ds.data_vars.items() if "time" not in v.dims and v.dtype.kind == "f"
            )
            raise ParameterError(
                "window_event",
                f"the Dataset has no event variable {event!r}; its time-free numeric variables are "
                f"{candidates or 'none'} (the stimulus must be merged into the attribution Dataset)",
            )
        ev = prep.ds[event]
        if "time" in ev.dims or any(d not in ("condition",) for d in ev.dims):
            raise ParameterError(
                "window_event", f"{event!r} has dims {ev.dims}; an event must be a time in s, scalar or per condition"
            )
        if not np.isfinite(ev.values).all():
            raise ParameterError("window_event", f"{event!r} is NaN (for some condition); choose another event")
        origin: xr.DataArray | float = ev.astype(np.float64)
        if "condition" in ev.dims and not has_cond:
            raise ParameterError("window_event", f"{event!r} varies over condition but the attribution has none")
        lo = origin + (start if start is not None else 0.0)
        hi = origin + stop if stop is not None else np.inf
    else:
        lo = start if start is not None else -np.inf
        hi = stop if stop is not None else np.inf
    mask = (t >= lo - TIME_TOL) & (t <= hi + TIME_TOL)
    if has_cond and "condition" not in mask.dims:
        mask = mask.expand_dims(condition=prep.attribution["condition"])
    mask = mask.transpose(*[d for d in ("condition", "time") if d in mask.dims])
    empty = ~mask.any("time")
    if bool(np.any(empty.values)):
        span = f"{float(t[0]):g}..{float(t[-1]):g} s"
        where = f" relative to {event!r}" if event else ""
        raise ParameterError(
            "window_start",
            f"the window [{start}, {stop}] s{where} contains no attributed time point (attribution spans {span})",
        )
    return mask


def reduce_space(attribution: xr.DataArray, keep_axis: str) -> xr.DataArray:
    """Sum the attribution over the spatial unit dims not kept.

    Summing over space is exact for spatially uniform stimuli (every unit of a type is equivalent)
    and, for bars, along their long axis; ``keep_axis`` keeps the axis of motion.

    Parameters
    ----------
    attribution : xarray.DataArray
        (..., unit_channel[, unit_y][, unit_x]).
    keep_axis : {"none", "x", "y", "both"}
        The spatial axes to keep.

    Raises
    ------
    ParameterError
        A kept axis that the attribution does not have (it was summed by the attributor).
    """
    keep = KEEP_AXIS[keep_axis]
    missing = [d for d in keep if d not in attribution.dims]
    if missing:
        raise ParameterError(
            "keep_axis",
            f"{keep_axis!r} keeps {missing}, but the attribution has dims {attribution.dims} (space was "
            "summed by the attributor); attribute with space kept, or use keep_axis='none'",
        )
    drop = [d for d in ("unit_y", "unit_x") if d in attribution.dims and d not in keep]
    return attribution.sum(drop) if drop else attribution


def per_type(attribution: xr.DataArray) -> xr.DataArray:
    """The attribution summed over every spatial unit dim: ([condition,] time, cell, unit_channel)."""
    drop = [d for d in ("unit_y", "unit_x") if d in attribution.dims]
    return attribution.sum(drop) if drop else attribution


def windowed(da: xr.DataArray, window: xr.DataArray) -> xr.DataArray:
    """``da`` with the samples outside ``window`` set to 0 (for sums over the window)."""
    return da.where(window, 0.0)


def contribution(attribution: xr.DataArray, window: xr.DataArray) -> xr.DataArray:
    """Each type's contribution per cell: sum over window, conditions and kept space of |A| (Hz·samples).

    Parameters
    ----------
    attribution : xarray.DataArray
        ([condition,] time, cell, unit_channel[, kept spatial dims]).
    window : xarray.DataArray
        Boolean ([condition,] time).

    Returns
    -------
    xarray.DataArray
        (cell, unit_channel).
    """
    keep = ("cell", "unit_channel")
    mag = abs(windowed(attribution, window))
    return mag.sum([d for d in mag.dims if d not in keep]).transpose(*keep)


def net(attribution: xr.DataArray, window: xr.DataArray) -> xr.DataArray:
    """Each type's net contribution per cell: the signed sum over window, conditions and space (the paper's ex_in).

    Returns
    -------
    xarray.DataArray
        (cell, unit_channel), Hz·samples; positive = net excitatory.
    """
    keep = ("cell", "unit_channel")
    a = windowed(attribution, window)
    return a.sum([d for d in a.dims if d not in keep]).transpose(*keep)


def sign_of(net_total: xr.DataArray) -> xr.DataArray:
    """+1 (net excitatory, including a zero total) or -1 (net inhibitory), int8."""
    return xr.where(net_total >= 0, 1, -1).astype(np.int8)


def unit_coords(prep: Prepared, dims: tuple[str, ...]) -> dict[str, xr.DataArray]:
    """The attribution's coords for the given unit dims (ints when it has none)."""
    out = {}
    for d in dims:
        if d in prep.attribution.coords:
            out[d] = prep.attribution[d]
        else:
            out[d] = xr.DataArray(np.arange(prep.attribution.sizes[d]), dims=d)
    return out


def check_layer_sizes(prep: Prepared, shape: tuple[int, ...], layer: str) -> None:
    """Raise a UsageError when the attribution's unit dims do not fit the model layer's shape."""
    for dim, size in zip(UNIT_DIMS, shape):
        if dim in prep.attribution.dims and prep.attribution.sizes[dim] != size:
            raise UsageError(
                f"the attribution has {prep.attribution.sizes[dim]} {dim} units but layer {layer!r} of the model "
                f"has {size}; reduce with the model the attribution was computed on"
            )
