"""Pieces every reducer of this plugin shares: parameters, the generic measures and the model-dependent outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from mechlens_reduction import prepare as P
from mechlens_reduction.characterise import label_types
from mechlens_reduction.reduced import evaluate, resolve_layer

if TYPE_CHECKING:  # pragma: no cover
    from mechlens.interfaces import Model


def describe_window(start: float | None, stop: float | None, event: str) -> str:
    """The window in words for attrs and the mechanism sentence (``""`` for the whole stimulus)."""
    if not event and start is None and stop is None:
        return ""
    lo = "start" if start is None and not event else f"{start if start is not None else 0.0:g}"
    hi = "end" if stop is None else f"{stop:g}"
    text = f"{lo}..{hi} s"
    return f"{text} after {event}" if event else text


def finish(
    out: xr.Dataset,
    prep: P.Prepared,
    mask: xr.DataArray,
    window: xr.DataArray,
    model: Model | None,
    *,
    reducer: str,
    params_json: str,
    characterise: bool,
    sta_windows: int,
    seed: int,
    window_text: str = "",
    score: xr.DataArray | None = None,
    check: float = 0.5,
) -> xr.Dataset:
    """Add what every reducer reports, then the reduced model and the type labels when a model is given.

    Adds ``kept`` (the unit mask, int8 0/1), ``contribution`` and ``sign`` (cell, unit_channel),
    ``additive_response``, ``explained_fraction`` and, with a model, ``reduced_response``,
    ``reduced_r``, ``peak_time_error`` and the ``unit_type`` coord. ``score`` (cell, unit_channel)
    replaces the default ``contribution`` (|attribution summed over space|, summed over the window)
    when a reducer ranks by another measure; ``check`` is the reduced-model check's fraction
    (:func:`mechlens_reduction.reduced.evaluate`).
    """
    types = P.per_type(prep.attribution)
    out["kept"] = mask.astype(np.int8)
    out["kept"].attrs.update(units="1", long_name="1 = unit kept active in the reduced model")
    out["contribution"] = P.contribution(types, window) if score is None else score
    out["contribution"].attrs.update(
        units="Hz", long_name="sum over the window, conditions (and kept axis) of |attribution summed over space|"
    )
    total = P.net(types, window)
    out["net_contribution"] = total
    out["net_contribution"].attrs.update(units="Hz", long_name="signed sum over the window, conditions and space")
    out["sign"] = P.sign_of(total)
    out["sign"].attrs.update(units="1", long_name="+1 net excitatory, -1 net inhibitory")
    out = evaluate(out, prep, mask, window, model, check)
    out["reduction_window"] = window.astype(np.int8)
    out["reduction_window"].attrs.update(units="1", long_name="1 = time point inside the window of interest")
    layer = prep.layer
    if model is not None:
        layer = resolve_layer(prep, model)
        if characterise:
            out = label_types(out, model, prep.ds, layer, sta_windows, seed)
    out.attrs.update(reducer=reducer, reducer_parameters=params_json, window=window_text, layer=layer)
    # arithmetic and xr.where drop coord attrs; the schema needs them (time units, condition's swept name)
    for name in list(out.coords):
        if name in prep.ds.coords:
            for key, value in prep.ds[name].attrs.items():
                out[name].attrs.setdefault(key, value)
    if "time" in out.coords:
        out["time"].attrs.update(units="s")
    return out


def component_coord(n: int) -> xr.DataArray:
    """``component`` coord 0..n-1."""
    return xr.DataArray(np.arange(n), dims="component", attrs={"long_name": "component"})
