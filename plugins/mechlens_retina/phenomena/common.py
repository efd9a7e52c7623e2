"""Shared pieces of the phenomenon measures: response access, peak timing, summaries."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy import interpolate

from mechlens.errors import SchemaError


def _response(ds: xr.Dataset | xr.DataArray) -> xr.DataArray:
    resp = ds["response"] if isinstance(ds, xr.Dataset) else ds
    if "time" not in resp.dims or "cell" not in resp.dims:
        raise SchemaError(f"expected a response with dims (time, cell) [+ condition], got {resp.dims}")
    order = [d for d in ("condition", "time", "cell") if d in resp.dims]
    return resp.transpose(*order)


def _event(stimulus: xr.Dataset | None, name: str, default: Any = None) -> Any:
    if stimulus is not None and name in stimulus.variables:
        return stimulus[name]
    if default is not None:
        return default
    raise SchemaError(
        f"the stimulus Dataset has no event variable {name!r}; pass the stimulus the responses came from "
        f"(a mechlens_stimuli Dataset), or give {name} explicitly"
    )


def _conditions(resp: xr.DataArray) -> list[xr.DataArray]:
    if "condition" in resp.dims:
        return [resp.isel(condition=i) for i in range(resp.sizes["condition"])]
    return [resp]


def _per_condition(value: Any, n: int) -> np.ndarray:
    arr = np.asarray(value.values if isinstance(value, xr.DataArray) else value, dtype=float)
    return np.broadcast_to(arr, (n,)).astype(float) if arr.ndim == 0 else arr.reshape(n)


def _baseline(t: np.ndarray, r: np.ndarray, before: float, span: float = 0.1) -> np.ndarray:
    """Mean rate (per cell) over ``span`` s before ``before`` (the grey screen); the first sample if none."""
    sel = (t < before - 1e-9) & (t >= before - span - 1e-9)
    return r[sel].mean(axis=0) if sel.any() else r[0]


def peak_time(t: np.ndarray, r: np.ndarray, upsample: int = 10, near: int | None = None) -> tuple[float, float]:
    """Time and height of the maximum of a sampled response, refined by a cubic spline.

    Parameters
    ----------
    t : numpy.ndarray
        (n,) sample times, s.
    r : numpy.ndarray
        (n,) response.
    upsample : int
        Spline samples per original sample.
    near : int, optional
        Refine the local maximum at this sample index instead of the global one: the spline's
        maximum between the neighbouring samples ``near - 1`` and ``near + 1``.

    Returns
    -------
    (float, float)
        Peak time (s) and peak value.
    """
    if len(t) < 4:
        i = int(np.argmax(r)) if near is None else int(near)
        return float(t[i]), float(r[i])
    fine = np.linspace(t[0], t[-1], (len(t) - 1) * upsample + 1)
    rf = interpolate.CubicSpline(t, r)(fine)
    if near is not None:
        lo, hi = t[max(near - 1, 0)], t[min(near + 1, len(t) - 1)]
        rf = np.where((fine >= lo - 1e-12) & (fine <= hi + 1e-12), rf, -np.inf)
    i = int(np.argmax(rf))
    return float(fine[i]), float(rf[i])


def half_max_lobe(r: np.ndarray, i: int, floor: float) -> tuple[int, int, float]:
    """The contiguous run of samples around index ``i`` that stay at or above half its height over ``floor``.

    Returns
    -------
    (int, int, float)
        First and last index of the run (inclusive) and the half-height level.
    """
    half = floor + 0.5 * (float(r[i]) - floor)
    lo, hi = i, i
    while lo > 0 and r[lo - 1] >= half:
        lo -= 1
    while hi < len(r) - 1 and r[hi + 1] >= half:
        hi += 1
    return lo, hi, half


def centroid_time(t: np.ndarray, r: np.ndarray, index: int | None = None) -> tuple[float, float]:
    """Centre of mass of the half-maximum lobe around a response's largest value.

    The lobe is the contiguous run of samples around the maximum that stay above half of it (the
    response is taken relative to its minimum in ``r``); its excess over half-maximum weights the
    times. Unlike the argmax this is stable on broad, flat-topped peaks.

    Parameters
    ----------
    t : numpy.ndarray
        (n,) sample times, s.
    r : numpy.ndarray
        (n,) response.
    index : int, optional
        Sample index of the (local) maximum whose lobe is used (default: the global maximum).

    Returns
    -------
    (float, float)
        Centroid time (s) and the maximum value.
    """
    i = int(np.argmax(r)) if index is None else int(index)
    lo, hi, half = half_max_lobe(r, i, float(np.min(r)))
    w = r[lo : hi + 1] - half
    if w.sum() <= 0:
        return float(t[i]), float(r[i])
    return float((w * t[lo : hi + 1]).sum() / w.sum()), float(r[i])


def _timing(method: str) -> Callable[..., tuple[float, float]]:
    if method == "peak":
        return peak_time
    if method == "centroid":
        return centroid_time
    raise ValueError(f"method must be 'peak' or 'centroid', got {method!r}")


def _summary(ds: xr.Dataset, target: str) -> xr.Dataset:
    passed = ds["passed"].values.astype(int)
    ds.attrs.update(
        {
            "target": target,
            "n_passed": int(passed.sum()),
            "passed": int(passed.any()),
            "passed_cells": json.dumps([str(c) for c, p in zip(ds["cell"].values, passed) if p]),
        }
    )
    return ds


def _reason_var(reasons: Sequence[str]) -> tuple[str, np.ndarray, dict[str, str]]:
    """A ``reason`` (cell) variable: why a cell failed or a number is NaN; "" where it passed."""
    return "cell", np.asarray(list(reasons), dtype=object).astype(str), {"long_name": "why the cell fails (or '')"}


def _fmt(x: float, scale: float = 1.0, digits: int = 0) -> str:
    return "nan" if not np.isfinite(x) else f"{x * scale:.{digits}f}"
