"""Results of an experiment: the generic numbers every result gets, computed from its names alone.

Both :mod:`mechlens.experiments` (which writes them into each result) and :mod:`mechlens.report`
(which recomputes them from the saved files) use these functions, so the numbers have one owner and
neither module imports the other. The names read are those of docs/contract.md, 'Experiment results'.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import xarray as xr

from mechlens.schema import UNIT_DIMS


# -- numbers every result gets ---------------------------------------------------------------------
def _window(ds: xr.Dataset) -> xr.DataArray:
    """The ``in_window`` mask as booleans (every time where the model answered when absent)."""
    if "in_window" in ds:
        return ds["in_window"].astype(bool)
    mask = xr.ones_like(ds["time"], dtype=bool)
    if "response" in ds:
        mask = mask & ds["response"].notnull().any("cell")
    return mask


def _in_window(da: xr.DataArray, mask: xr.DataArray) -> np.ndarray:
    """Values of ``da`` at window times, as (n_points, cell); conditions are stacked under time."""
    other = [d for d in da.dims if d != "cell"]
    da = da.transpose(*other, "cell")
    keep = mask.broadcast_like(da.isel(cell=0, drop=True)).transpose(*other).values.reshape(-1)
    return da.values.reshape(-1, da.sizes["cell"])[keep]


def kept_contribution(ds: xr.Dataset) -> xr.DataArray | None:
    """The response change the reducer's kept components account for, ([condition,] time, cell) in Hz.

    ``sum_k weights[..., k] * sum_units(components[k])``: for one-hot components (kept cell types)
    this is the summed attribution of the kept types; for a factorisation (NMF, PCA) it is the
    per-time sum of the reconstructed attribution. None when there is no reduction.
    """
    if "weights" not in ds or "components" not in ds:
        return None
    comp = ds["components"]
    loading = comp.sum([d for d in comp.dims if d in UNIT_DIMS])
    return (ds["weights"] * loading).sum("component")


def summary(ds: xr.Dataset) -> dict[str, float]:
    """Generic numbers of a result, over its window (``in_window``) and analysed cells; NaN where undefined.

    The definitions match those of the built-in reducers, so a reducer run over the same window
    reports the same values.

    Returns
    -------
    dict
        ``completeness_error_rel``: max |completeness_error| / (max - min of the response);
        ``explained_fraction_mean``: per cell ``1 - ||dr - kept|| / ||dr||`` (2-norms over the
        window of every condition) with ``dr = response - baseline_response`` and ``kept`` from
        :func:`kept_contribution`, averaged over cells; ``reduced_r_mean``: Pearson r between
        ``reduced_response`` and ``response`` per cell (window samples of every condition pooled),
        averaged over cells; ``reduced_peak_shift_s``: the largest |difference| in the time of the
        largest |r - baseline_response| between the reduced and the full response, over conditions
        and cells, s; ``complement_r_mean``: the same r for ``complement_response`` (the model with the
        kept units clamped to baseline), which a mechanism keeps low.
    """
    nan = float("nan")
    out = {
        "completeness_error_rel": nan,
        "explained_fraction_mean": nan,
        "reduced_r_mean": nan,
        "reduced_peak_shift_s": nan,
        "complement_r_mean": nan,
    }
    if "response" not in ds:
        return out
    mask = _window(ds)
    resp = ds["response"]
    r = _in_window(resp, mask)
    if r.size == 0:
        return out
    span = float(np.nanmax(r) - np.nanmin(r)) or 1.0
    if "completeness_error" in ds:
        err = _in_window(ds["completeness_error"], mask)
        out["completeness_error_rel"] = float(np.nanmax(np.abs(err)) / span)
    base = ds["baseline_response"] if "baseline_response" in ds else xr.zeros_like(resp.isel(time=0, drop=True))
    kept = kept_contribution(ds)
    if kept is not None:
        dr = _in_window(resp - base, mask)
        k = _in_window(kept, mask)
        num = np.sqrt(np.nansum((dr - k) ** 2, axis=0))
        den = np.sqrt(np.nansum(dr**2, axis=0))
        if (den > 0).any():
            out["explained_fraction_mean"] = float(np.mean(1.0 - num[den > 0] / den[den > 0]))
    for name, key in (("reduced_response", "reduced_r_mean"), ("complement_response", "complement_r_mean")):
        if name not in ds:
            continue
        rr = _in_window(ds[name], mask)
        rs = []
        for c in range(r.shape[1]):
            ok = np.isfinite(r[:, c]) & np.isfinite(rr[:, c])
            if ok.sum() > 2 and np.std(r[ok, c]) > 0 and np.std(rr[ok, c]) > 0:
                rs.append(np.corrcoef(r[ok, c], rr[ok, c])[0, 1])
        if rs:
            out[key] = float(np.mean(rs))
    if "reduced_response" in ds:
        red = ds["reduced_response"]

        def peak(x: xr.DataArray) -> np.ndarray:
            # numpy's stubs type a ufunc of a DataArray as an ndarray; xarray's __array_ufunc__ returns one
            dev = cast(xr.DataArray, np.abs(x - base)).where(mask & x.notnull(), -1.0)
            return np.asarray(x["time"].values[dev.argmax("time").values], dtype=float)

        out["reduced_peak_shift_s"] = float(np.max(np.abs(peak(red) - peak(resp))))
    return out
