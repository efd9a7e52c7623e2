"""Measures of four retinal phenomena, computed from any model's responses, with pass/fail against a target.

Each measure takes the response Dataset of ``model.predict`` (``response`` (time, cell) or
(condition, time, cell), Hz) and the stimulus Dataset it was computed from (for the event times:
``flash_onset``, ``omitted_time``, ``bar_center``, ``reversal_time``), and returns a small
``xarray.Dataset`` of numbers per cell plus a ``passed`` flag per cell (0/1) and overall (attr
``passed``: 1 when at least one cell meets the target; ``n_passed`` counts them). The targets:

========================  ==========================================================================
latency coding            Spearman rho(|flash intensity|, response latency) <= -0.9 over >= 5 intensities
                          (Gollisch & Meister 2008)
omitted stimulus resp.    a peak after the omitted flash whose latency from the expected flash time
                          stays within +-20 ms over periods spanning 60-150 ms, and whose evoked size is
                          >= 1.5x the steady-state per-flash response (Schwartz et al. 2007)
motion anticipation       the moving-bar response peaks while the bar is still before the cell's
                          flashed-bar receptive-field centre (lead > 0), rather than lagging it by the
                          cell's latency times the speed (Berry et al. 1999)
motion reversal           the burst within 300 ms after a reversal is >= 1.5x the response peak
                          before it, responses averaged over reversal positions (Schwartz et al.
                          2007; Chen et al. 2014)
========================  ==========================================================================

``python -m mechlens_retina.phenomena [--model NAME]`` prints the four measures for a model
(:func:`report`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy import interpolate, stats

from mechlens.errors import SchemaError

#: targets of the four measures
LATENCY_RHO_MAX = -0.9
LATENCY_MIN_INTENSITIES = 5
OSR_LATENCY_TOL_S = 0.02
OSR_RATIO_MIN = 1.5
OSR_PERIOD_SPAN_S = (0.06, 0.15)
REVERSAL_WINDOW_S = 0.3
REVERSAL_RATIO_MIN = 1.5


# -- helpers -------------------------------------------------------------------------------------
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


def peak_time(t: np.ndarray, r: np.ndarray, upsample: int = 10) -> tuple[float, float]:
    """Time and height of the maximum of a sampled response, refined by a cubic spline.

    Parameters
    ----------
    t : numpy.ndarray
        (n,) sample times, s.
    r : numpy.ndarray
        (n,) response.
    upsample : int
        Spline samples per original sample.

    Returns
    -------
    (float, float)
        Peak time (s) and peak value.
    """
    if len(t) < 4:
        i = int(np.argmax(r))
        return float(t[i]), float(r[i])
    fine = np.linspace(t[0], t[-1], (len(t) - 1) * upsample + 1)
    rf = interpolate.CubicSpline(t, r)(fine)
    i = int(np.argmax(rf))
    return float(fine[i]), float(rf[i])


def centroid_time(t: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """Centre of mass of the half-maximum lobe around a response's largest value.

    The lobe is the contiguous run of samples around the maximum that stay above half of it (the
    response is taken relative to its minimum in ``r``); its excess over half-maximum weights the
    times. Unlike the argmax this is stable on broad, flat-topped peaks.

    Returns
    -------
    (float, float)
        Centroid time (s) and the maximum value.
    """
    i = int(np.argmax(r))
    floor = float(np.min(r))
    half = floor + 0.5 * (float(r[i]) - floor)
    lo, hi = i, i
    while lo > 0 and r[lo - 1] >= half:
        lo -= 1
    while hi < len(r) - 1 and r[hi + 1] >= half:
        hi += 1
    w = r[lo : hi + 1] - half
    if w.sum() <= 0:
        return float(t[i]), float(r[i])
    return float((w * t[lo : hi + 1]).sum() / w.sum()), float(r[i])


def _timing(method: str) -> Callable[[np.ndarray, np.ndarray], tuple[float, float]]:
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


# -- latency coding ------------------------------------------------------------------------------
def latency_coding(
    response: xr.Dataset,
    stimulus: xr.Dataset | None = None,
    *,
    intensities: Sequence[float] | None = None,
    onset_s: float | None = None,
    window_s: float = 0.3,
    min_peak_hz: float = 2.0,
    method: str = "peak",
) -> xr.Dataset:
    """Response latency versus flash intensity (Gollisch & Meister 2008).

    The latency of each (intensity, cell) is the time from flash onset to the peak of the evoked
    response (rate minus the pre-flash baseline), refined by a cubic spline, within ``window_s``.
    Intensities whose evoked peak is below ``min_peak_hz`` (or below 10% of the cell's largest
    evoked peak) are left out. A cell passes when Spearman's rho between |intensity| and latency is
    <= -0.9 over at least 5 kept intensities.

    Parameters
    ----------
    response : xarray.Dataset
        ``response`` (condition, time, cell) in Hz; one condition per flash intensity.
    stimulus : xarray.Dataset, optional
        The flash stimulus (its ``condition`` coord gives intensities, ``flash_onset`` the onset).
    intensities : sequence of float, optional
        Flash contrast per condition (default: the ``condition`` coord).
    onset_s : float, optional
        Flash onset time, s (default: the stimulus ``flash_onset``, else 0).
    window_s : float
        Search window after onset, s.
    min_peak_hz : float
        Smallest evoked peak that counts as a response, Hz.
    method : {"peak", "centroid"}
        Latency to the spline-refined maximum (default) or to the centre of mass of the
        half-maximum lobe (close to the Neuron-figure code's centre of mass).

    Returns
    -------
    xarray.Dataset
        ``latency`` (condition, cell) s (NaN where no response), ``peak`` (condition, cell) Hz evoked,
        ``rho`` (cell), ``n_intensities`` (cell), ``passed`` (cell); attrs ``target``, ``passed``,
        ``n_passed``, ``passed_cells``.
    """
    resp = _response(response)
    if "condition" not in resp.dims:
        raise SchemaError("latency_coding needs responses to several flash intensities (a 'condition' dim)")
    values = np.asarray(intensities if intensities is not None else resp["condition"].values, dtype=float)
    if onset_s is None:
        ev = stimulus["flash_onset"] if stimulus is not None and "flash_onset" in stimulus else 0.0
        onset = _per_condition(ev, resp.sizes["condition"])
    else:
        onset = np.full(resp.sizes["condition"], float(onset_s))
    n_c, n_cell = resp.sizes["condition"], resp.sizes["cell"]
    lat = np.full((n_c, n_cell), np.nan)
    peak = np.zeros((n_c, n_cell))
    t = resp["time"].values
    when = _timing(method)
    for i, r in enumerate(_conditions(resp)):
        r = r.values
        base = _baseline(t, r, onset[i])
        sel = (t >= onset[i] - 1e-9) & (t <= onset[i] + window_s + 1e-9)
        for c in range(n_cell):
            tp, pk = when(t[sel], r[sel, c] - base[c])
            lat[i, c], peak[i, c] = tp - onset[i], pk
    keep = (peak >= min_peak_hz) & (peak >= 0.1 * peak.max(axis=0, keepdims=True))
    lat = np.where(keep, lat, np.nan)
    rho = np.full(n_cell, np.nan)
    n_kept = keep.sum(axis=0)
    for c in range(n_cell):
        k = keep[:, c]
        if k.sum() >= 3 and np.ptp(np.abs(values[k])) > 0:
            # latencies that do not change at all carry no intensity code (Spearman is undefined there)
            rho[c] = stats.spearmanr(np.abs(values[k]), lat[k, c]).statistic if np.ptp(lat[k, c]) > 0 else 0.0
    passed = (n_kept >= LATENCY_MIN_INTENSITIES) & (rho <= LATENCY_RHO_MAX)
    cond = xr.DataArray(values, dims="condition", attrs={"long_name": "flash contrast", "swept": "intensity"})
    ds = xr.Dataset(
        {
            "latency": (("condition", "cell"), lat, {"units": "s", "long_name": "time from flash onset to peak"}),
            "peak": (("condition", "cell"), peak, {"units": "Hz", "long_name": "evoked peak rate"}),
            "rho": ("cell", rho, {"long_name": "Spearman rho(|intensity|, latency)"}),
            "n_intensities": ("cell", n_kept.astype(int)),
            "passed": ("cell", passed.astype(int)),
        },
        coords={"condition": cond, "cell": resp["cell"].values},
        attrs={"measure": "latency_coding"},
    )
    return _summary(ds, f"Spearman rho <= {LATENCY_RHO_MAX} over >= {LATENCY_MIN_INTENSITIES} intensities")


# -- omitted stimulus response -------------------------------------------------------------------
def omitted_stimulus_response(
    response: xr.Dataset,
    stimulus: xr.Dataset | None = None,
    *,
    periods_s: Sequence[float] | None = None,
    omitted_s: Sequence[float] | None = None,
    window_s: float = 0.25,
    steady_periods: int = 3,
    min_response_hz: float = 1.0,
    method: str = "centroid",
) -> xr.Dataset:
    """The omitted stimulus response: its latency from the expected flash, and its size (Schwartz et al. 2007).

    For each period (condition) and cell: the OSR peak is the largest evoked rate (rate minus the
    pre-train baseline) in ``[omitted, omitted + window_s]``; its latency is measured from the
    omitted (expected) flash time. The steady-state per-flash response is the largest evoked rate
    over the ``steady_periods`` full periods before the last flash. A cell passes when the OSR is
    >= 1.5x that for every period, its latencies stay within +-20 ms of their median, and the
    periods span 60-150 ms.

    Parameters
    ----------
    response : xarray.Dataset
        ``response`` (condition, time, cell) Hz; one condition per flash period.
    stimulus : xarray.Dataset, optional
        The OSR stimulus (``omitted_time`` per condition; the ``condition`` coord or a ``period``
        variable gives the periods).
    periods_s, omitted_s : sequence of float, optional
        Period and omitted-flash time per condition (override the stimulus).
    window_s : float
        Search window after the omitted flash, s.
    steady_periods : int
        Periods before the last flash that define the steady-state response.
    min_response_hz : float
        Floor of the steady-state response in the ratio, Hz.
    method : {"centroid", "peak"}
        How the OSR time is read: the centre of mass of its half-maximum lobe (default; stable on
        the broad OSR of long periods) or the spline-refined maximum.

    Returns
    -------
    xarray.Dataset
        ``latency`` (condition, cell) s from the expected flash, ``osr`` (condition, cell) evoked Hz,
        ``steady`` (condition, cell) evoked Hz, ``ratio`` (condition, cell), ``latency_spread``
        (cell) s (largest deviation from the median), ``passed`` (cell).
    """
    resp = _response(response)
    conds = _conditions(resp)
    n_c = len(conds)
    if periods_s is not None:
        periods = np.asarray(periods_s, dtype=float)
    elif stimulus is not None and "period" in stimulus.variables and stimulus["period"].size == n_c:
        periods = _per_condition(stimulus["period"], n_c)
    elif "condition" in resp.dims:
        periods = np.asarray(resp["condition"].values, dtype=float)
    else:
        raise SchemaError("omitted_stimulus_response: give periods_s or a stimulus with a 'period' variable")
    omitted = (
        np.asarray(omitted_s, dtype=float)
        if omitted_s is not None
        else _per_condition(_event(stimulus, "omitted_time"), n_c)
    )
    t = resp["time"].values
    n_cell = resp.sizes["cell"]
    lat = np.full((n_c, n_cell), np.nan)
    osr = np.zeros((n_c, n_cell))
    steady = np.zeros((n_c, n_cell))
    when = _timing(method)
    for i, r in enumerate(conds):
        r = r.values
        base = _baseline(t, r, 0.0)
        p, om = periods[i], omitted[i]
        after = (t >= om - 1e-9) & (t <= om + window_s + 1e-9)
        before = (t >= om - (steady_periods + 1) * p - 1e-9) & (t < om - p - 1e-9)
        for c in range(n_cell):
            tp, pk = when(t[after], r[after, c] - base[c])
            lat[i, c], osr[i, c] = tp - om, pk
            steady[i, c] = float((r[before, c] - base[c]).max()) if before.any() else np.nan
    # a cell that ignores the flashes would otherwise divide by ~0
    ratio = osr / np.maximum(steady, min_response_hz)
    spread = np.nanmax(np.abs(lat - np.nanmedian(lat, axis=0, keepdims=True)), axis=0)
    spans = periods.min() <= OSR_PERIOD_SPAN_S[0] + 1e-9 and periods.max() >= OSR_PERIOD_SPAN_S[1] - 1e-9
    passed = spans & (spread <= OSR_LATENCY_TOL_S + 1e-9) & np.all(ratio >= OSR_RATIO_MIN, axis=0)
    ds = xr.Dataset(
        {
            "latency": (("condition", "cell"), lat, {"units": "s", "long_name": "OSR peak after the expected flash"}),
            "osr": (("condition", "cell"), osr, {"units": "Hz", "long_name": "evoked OSR peak"}),
            "steady": (("condition", "cell"), steady, {"units": "Hz", "long_name": "steady per-flash peak"}),
            "ratio": (("condition", "cell"), ratio, {"long_name": "OSR / steady-state per-flash response"}),
            "latency_spread": ("cell", spread, {"units": "s", "long_name": "max |latency - median latency|"}),
            "passed": ("cell", passed.astype(int)),
        },
        coords={
            "condition": xr.DataArray(periods, dims="condition", attrs={"units": "s", "swept": "period"}),
            "cell": resp["cell"].values,
        },
        attrs={"measure": "omitted_stimulus_response"},
    )
    return _summary(
        ds,
        f"OSR latency within +-{OSR_LATENCY_TOL_S * 1e3:.0f} ms over periods {OSR_PERIOD_SPAN_S[0]}-"
        f"{OSR_PERIOD_SPAN_S[1]} s and OSR >= {OSR_RATIO_MIN}x the steady-state per-flash response",
    )


# -- motion anticipation -------------------------------------------------------------------------
def receptive_fields(
    flashed: xr.Dataset, stimulus: xr.Dataset | None = None, *, window_s: float = 0.3, min_peak_hz: float = 2.0
) -> xr.Dataset:
    """Receptive-field centre and latency of each cell from its responses to flashed bars.

    Parameters
    ----------
    flashed : xarray.Dataset
        ``response`` (condition, time, cell), one condition per bar position.
    stimulus : xarray.Dataset, optional
        The flashed-bar stimulus: ``bar_center`` (condition) in um (default: the condition coord)
        and ``flash_onset`` (default 0).
    window_s : float
        Response window after the flash, s.
    min_peak_hz : float
        A cell whose largest evoked peak is below this has no receptive field here (NaN).

    Returns
    -------
    xarray.Dataset
        ``profile`` (condition, cell) evoked peak Hz per position; ``rf_center`` (cell) um, the
        centroid of the profile above half its maximum; ``latency`` (cell) s, time to peak at the
        best position.
    """
    resp = _response(flashed)
    n_c = resp.sizes.get("condition", 1)
    if stimulus is not None and "bar_center" in stimulus.variables:
        pos = stimulus["bar_center"]
        if "time" in pos.dims:  # per-frame position: take each condition's value while the bar is shown
            pos = pos.max("time")
        pos = _per_condition(pos, n_c)
    else:
        pos = np.asarray(resp["condition"].values, dtype=float)
    onset = _per_condition(_event(stimulus, "flash_onset", 0.0), n_c)
    t = resp["time"].values
    n_cell = resp.sizes["cell"]
    profile = np.zeros((n_c, n_cell))
    tpk = np.zeros((n_c, n_cell))
    for i, r in enumerate(_conditions(resp)):
        r = r.values
        base = _baseline(t, r, onset[i])
        sel = (t >= onset[i] - 1e-9) & (t <= onset[i] + window_s + 1e-9)
        for c in range(n_cell):
            tp, pk = peak_time(t[sel], r[sel, c] - base[c])
            profile[i, c], tpk[i, c] = pk, tp - onset[i]
    best = profile.argmax(axis=0)
    above = np.clip(profile - 0.5 * profile.max(axis=0, keepdims=True), 0, None)
    centre = (above * pos[:, None]).sum(axis=0) / np.maximum(above.sum(axis=0), 1e-12)
    latency = tpk[best, np.arange(n_cell)]
    silent = profile.max(axis=0) < min_peak_hz
    centre[silent] = np.nan
    latency[silent] = np.nan
    return xr.Dataset(
        {
            "profile": (("condition", "cell"), profile, {"units": "Hz"}),
            "rf_center": ("cell", centre, {"units": "um", "long_name": "flashed-bar receptive-field centre"}),
            "latency": ("cell", latency, {"units": "s", "long_name": "flashed-bar response latency"}),
        },
        coords={"condition": pos, "cell": resp["cell"].values},
    )


def motion_anticipation(
    moving: xr.Dataset,
    moving_stimulus: xr.Dataset,
    flashed: xr.Dataset,
    flashed_stimulus: xr.Dataset | None = None,
) -> xr.Dataset:
    """Where the moving bar is when each cell's response peaks, relative to its flashed-bar RF centre.

    Without anticipation a cell's response peaks once the bar has passed its receptive-field centre
    by (latency x speed). Berry et al. (1999) found the moving-bar response peaks ahead of that, at
    or before the bar's arrival. The bar position "at the peak" is the response-weighted mean bar
    position over the top half of the response (the argmax alone is at the mercy of flat tops and
    of the ripple that pixelated slow motion causes). ``lead`` = RF centre minus that position,
    signed along the motion (positive: the response leads the bar); a cell passes when lead > 0 in
    every direction (condition).

    Parameters
    ----------
    moving : xarray.Dataset
        ``response`` (time, cell) or (condition, time, cell) to a drifting bar.
    moving_stimulus : xarray.Dataset
        Its stimulus, with ``bar_center`` (time) or (condition, time) in um.
    flashed : xarray.Dataset
        ``response`` (condition, time, cell) to bars flashed at several positions.
    flashed_stimulus : xarray.Dataset, optional
        Its stimulus (``bar_center`` per condition, um).

    Returns
    -------
    xarray.Dataset
        ``lead`` (cell) um (the smallest over directions), ``expected_lag`` (cell) um = flashed
        latency x speed, ``rf_center`` (cell) um, ``latency`` (cell) s, ``peak_time`` (cell) s,
        ``passed`` (cell).
    """
    rf = receptive_fields(flashed, flashed_stimulus)
    resp = _response(moving)
    centre_all = _event(moving_stimulus, "bar_center")
    t = resp["time"].values
    n_cell = resp.sizes["cell"]
    leads, tpeaks, speeds = [], [], []
    for i, r in enumerate(_conditions(resp)):
        pos = centre_all.isel(condition=i) if "condition" in centre_all.dims else centre_all
        pos = pos.sel(time=resp["time"]).values.astype(float)
        v = np.gradient(pos, t)
        moving_mask = np.isfinite(pos) & (np.abs(v) > 0)
        speed = float(np.nanmedian(v[moving_mask]))
        lead = np.zeros(n_cell)
        tp_cell = np.zeros(n_cell)
        tm, pm = t[moving_mask], pos[moving_mask]
        for c in range(n_cell):
            rc = r.values[moving_mask, c]
            tp, _ = peak_time(tm, rc)
            # the response-weighted bar position over the top half of the response: robust to the
            # flat tops and pixel ripples of slowly moving bars, unlike the argmax alone
            base = float(np.quantile(rc, 0.1))
            top = np.clip(rc - base - 0.5 * (rc.max() - base), 0.0, None)
            x_at_peak = float((top * pm).sum() / top.sum()) if top.sum() > 0 else float(np.interp(tp, tm, pm))
            lead[c] = (float(rf["rf_center"].values[c]) - x_at_peak) * np.sign(speed)
            tp_cell[c] = tp
        leads.append(lead)
        tpeaks.append(tp_cell)
        speeds.append(abs(speed))
    lead = np.min(leads, axis=0)
    expected = rf["latency"].values * float(np.mean(speeds))
    ds = xr.Dataset(
        {
            "lead": (
                "cell",
                lead,
                {"units": "um", "long_name": "distance of the bar before the RF centre at the peak"},
            ),
            "expected_lag": ("cell", expected, {"units": "um", "long_name": "flashed latency x speed"}),
            "rf_center": rf["rf_center"],
            "latency": rf["latency"],
            "peak_time": ("cell", tpeaks[0], {"units": "s", "long_name": "moving-bar peak time (first direction)"}),
            "passed": ("cell", np.nan_to_num(lead > 0).astype(int)),
        },
        coords={"cell": resp["cell"].values},
        attrs={"measure": "motion_anticipation", "speed_um_s": float(np.mean(speeds))},
    )
    return _summary(ds, "moving-bar response peak leads the bar (lead > 0 um) instead of lagging by latency x speed")


# -- motion reversal ------------------------------------------------------------------------------
def motion_reversal(
    response: xr.Dataset,
    stimulus: xr.Dataset | None = None,
    *,
    reversal_s: Sequence[float] | None = None,
    window_s: float = REVERSAL_WINDOW_S,
    before_s: float = 0.7,
) -> xr.Dataset:
    """The burst after a moving bar reverses, relative to the response before (Schwartz et al. 2007).

    Responses are aligned on each condition's reversal and averaged over conditions (reversal
    positions). ``burst`` is the largest rate in ``(reversal, reversal + window_s]``, ``before`` the
    largest in ``[reversal - before_s, reversal]``. A cell passes when burst >= 1.5x before; the
    ratio of the mean over all cells (as in the published figure, which averaged cells) is reported
    too, in attr ``population_ratio``.

    Parameters
    ----------
    response : xarray.Dataset
        ``response`` (time, cell) or (condition, time, cell).
    stimulus : xarray.Dataset, optional
        The stimulus, with ``reversal_time`` (per condition), s.
    reversal_s : sequence of float, optional
        Reversal time per condition (overrides the stimulus).
    window_s : float
        Burst window after the reversal, s.
    before_s : float
        Window before the reversal, s.

    Returns
    -------
    xarray.Dataset
        ``aligned`` (rel_time, cell) mean response around the reversal, Hz; ``burst``, ``before``,
        ``ratio``, ``passed`` (cell); attrs ``population_ratio`` and the usual summary.
    """
    resp = _response(response)
    conds = _conditions(resp)
    rev = (
        np.asarray(reversal_s, dtype=float)
        if reversal_s is not None
        else _per_condition(_event(stimulus, "reversal_time"), len(conds))
    )
    t = resp["time"].values
    dt = float(np.median(np.diff(t)))
    rel = np.arange(-round(before_s / dt), round(window_s / dt) + 1) * dt
    stack = []
    for i, r in enumerate(conds):
        idx = np.searchsorted(t, rev[i] + rel - dt / 2)
        if rev[i] + rel[0] < t[0] - dt / 2 or rev[i] + rel[-1] > t[-1] + dt / 2:
            raise SchemaError(
                f"motion_reversal: condition {i} does not cover {before_s} s before to {window_s} s after its "
                f"reversal at {rev[i]:.3f} s; lengthen the stimulus"
            )
        stack.append(r.values[idx])
    aligned = np.mean(stack, axis=0)  # (rel, cell)
    after = rel > 1e-9
    before = rel <= 1e-9
    burst = aligned[after].max(axis=0)
    pre = aligned[before].max(axis=0)
    ratio = burst / np.maximum(pre, 1e-6)
    pop = aligned.mean(axis=1)
    pop_ratio = float(pop[after].max() / max(pop[before].max(), 1e-6))
    ds = xr.Dataset(
        {
            "aligned": (("rel_time", "cell"), aligned, {"units": "Hz"}),
            "burst": ("cell", burst, {"units": "Hz"}),
            "before": ("cell", pre, {"units": "Hz"}),
            "ratio": ("cell", ratio),
            "passed": ("cell", (ratio >= REVERSAL_RATIO_MIN).astype(int)),
        },
        coords={"rel_time": ("rel_time", rel, {"units": "s"}), "cell": resp["cell"].values},
        attrs={"measure": "motion_reversal"},
    )
    _summary(ds, f"burst within {window_s} s after the reversal >= {REVERSAL_RATIO_MIN}x the peak before")
    ds.attrs["population_ratio"] = pop_ratio
    return ds


# -- the four measures on a model, with the paper's stimuli ---------------------------------------
#: stimulus parameters of each measure (paper notes, section 3); positions in um, 55 um pixels
STIMULI: dict[str, dict[str, dict[str, Any]]] = {
    "latency_coding": {
        # a 2-frame full-field dark flash of increasing strength (Neuron-figure code: linspace(0, -3))
        "flash": {"intensity": [-0.5, -1.0, -1.5, -2.0, -2.5, -3.0], "duration": 0.02, "post_s": 0.4},
    },
    "omitted_stimulus_response": {
        "osr": {"period": [0.06, 0.08, 0.1, 0.12, 0.15], "duration": 0.02, "intensity": -2.0, "post_s": 0.4},
    },
    "motion_anticipation": {
        # 110 um dark bar at 440 um/s (0.08 px/frame, Berry et al. 1999) and its flashed control
        "moving-bar": {"speed": 440.0, "width_um": 110.0, "intensity": -1.0},
        "flashed-bar": {"width_um": 110.0, "intensity": -1.0, "duration": 0.02},
    },
    "motion_reversal": {
        # reversal positions -9 .. 2 px at 0.19 px/frame (the published figure's settings)
        "motion-reversal": {"reversal_um": [55.0 * k for k in range(-9, 3)], "speed": 1045.0, "width_um": 110.0},
    },
}


def measure_all(model: Any, registry: Any = None) -> dict[str, xr.Dataset]:
    """Run the four measures on a model with the stimuli of :data:`STIMULI` (from the stimulus registry).

    Parameters
    ----------
    model : mechlens.interfaces.Model
        Any model on the 50x50, 10 ms grid (the synthetic retina, the retina CNN).
    registry : mechlens.registry.Registry, optional
        Where the stimuli are looked up (default: the process-wide registry).

    Returns
    -------
    dict
        Measure name -> its Dataset.
    """
    from mechlens import registry as _registry

    reg = registry or _registry.default()

    def run(name: str, params: Mapping[str, Any]) -> tuple[xr.Dataset, xr.Dataset]:
        stim = reg.get("stimulus", name)(**params).generate(0)
        return model.predict(stim), stim

    out = {}
    r, s = run("flash", STIMULI["latency_coding"]["flash"])
    out["latency_coding"] = latency_coding(r, s)
    r, s = run("osr", STIMULI["omitted_stimulus_response"]["osr"])
    out["omitted_stimulus_response"] = omitted_stimulus_response(r, s)
    rm, sm = run("moving-bar", STIMULI["motion_anticipation"]["moving-bar"])
    rf, sf = run("flashed-bar", STIMULI["motion_anticipation"]["flashed-bar"])
    out["motion_anticipation"] = motion_anticipation(rm, sm, rf, sf)
    r, s = run("motion-reversal", STIMULI["motion_reversal"]["motion-reversal"])
    out["motion_reversal"] = motion_reversal(r, s)
    return out


def format_report(results: Mapping[str, xr.Dataset], cell_kind: Sequence[str] | None = None) -> str:
    """The measures as a plain-text table: one line per cell per measure, then the verdicts."""
    lines = []
    for name, ds in results.items():
        lines.append(
            f"== {name}: {'PASS' if ds.attrs.get('passed') else 'FAIL'} "
            f"({ds.attrs.get('n_passed', 0)}/{ds.sizes['cell']} cells; target: {ds.attrs.get('target')})"
        )
        for i, cell in enumerate(ds["cell"].values):
            kind = f" {cell_kind[i]:<6}" if cell_kind is not None else ""
            lines.append(f"  {cell}{kind} {_cell_line(name, ds, i)}  {'pass' if ds['passed'].values[i] else '-'}")
        if name == "motion_reversal":
            lines.append(f"  population (mean over cells) ratio {ds.attrs['population_ratio']:.2f}")
    return "\n".join(lines)


def _ms(values: np.ndarray) -> str:
    return "[" + " ".join("  nan" if not np.isfinite(v) else f"{v * 1e3:5.0f}" for v in values) + "]"


def _cell_line(name: str, ds: xr.Dataset, i: int) -> str:
    if name == "latency_coding":
        return f"latency ms {_ms(ds['latency'].values[:, i])}  rho {float(ds['rho'][i]):+.2f}"
    if name == "omitted_stimulus_response":
        ratio = " ".join(f"{v:5.1f}" for v in ds["ratio"].values[:, i])
        return (
            f"latency ms {_ms(ds['latency'].values[:, i])}  spread {float(ds['latency_spread'][i]) * 1e3:4.0f} ms"
            f"  ratio [{ratio}]"
        )
    if name == "motion_anticipation":
        return (
            f"lead {float(ds['lead'][i]):7.1f} um  (latency x speed {float(ds['expected_lag'][i]):5.1f} um, "
            f"RF centre {float(ds['rf_center'][i]):7.1f} um)"
        )
    if name == "motion_reversal":
        burst, before = float(ds["burst"][i]), float(ds["before"][i])
        return f"burst {burst:6.1f} Hz  before {before:6.1f} Hz  ratio {float(ds['ratio'][i]):.2f}"
    return ""


def report(model: Any = None, registry: Any = None) -> str:
    """Measure the four phenomena on a model (default: the synthetic retina) and return the table."""
    if model is None:
        from mechlens_retina.synthetic import SyntheticRetina

        model = SyntheticRetina()
    text = format_report(measure_all(model, registry), getattr(model, "cell_kind", None))
    return f"model {model.name} {model.parameters_json()}\n{text}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mechlens_retina.phenomena [--model NAME] [--set PARAM=VALUE ...]``: print the measures."""
    from mechlens import registry
    from mechlens.config import parse_value

    parser = argparse.ArgumentParser(prog="python -m mechlens_retina.phenomena", description=main.__doc__)
    parser.add_argument("--model", default="synthetic-retina", help="model plugin (default synthetic-retina)")
    parser.add_argument(
        "--set",
        dest="params",
        action="append",
        default=[],
        metavar="PARAM=VALUE",
        help="a model parameter, e.g. gain_control=0 (repeatable)",
    )
    args = parser.parse_args(argv)
    params = {}
    for item in args.params:
        key, _, value = item.partition("=")
        params[key.strip()] = parse_value(value.strip())
    model = registry.get("model", args.model)(**params)
    sys.stdout.write(report(model) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
