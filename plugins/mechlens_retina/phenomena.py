"""Measures of four retinal phenomena, computed from any model's responses, with pass/fail against a target.

Each measure takes the response Dataset of ``model.predict`` (``response`` (time, cell) or
(condition, time, cell), Hz) and the stimulus Dataset it was computed from (for the event times:
``flash_onset``, ``omitted_time``, ``bar_center``, ``reversal_time``), and returns a small
``xarray.Dataset`` of numbers per cell plus a ``passed`` flag per cell (0/1), a ``reason`` string per
cell saying why it failed or why a number is NaN ("" when it passed), and overall attrs (``passed``:
1 when at least one cell meets the target; ``n_passed`` counts them). Each target pairs a trend
with an effect size, so that a trend too small to matter (a 3 ms latency shift, an "OSR" that is the
decaying tail of the last flash's response) cannot pass by accident. The targets (module constants):

========================  ==========================================================================
latency coding            Spearman rho(|flash intensity|, latency) <= -0.9 (``LATENCY_RHO_MAX``) over
                          >= 5 kept intensities (``LATENCY_MIN_INTENSITIES``) AND a latency shift,
                          weakest minus strongest kept intensity, >= 10 ms (``LATENCY_SHIFT_MIN_S``);
                          latency to the spline-refined peak (Gollisch & Meister 2008)
omitted stimulus resp.    over periods spanning 60-150 ms (``OSR_PERIOD_SPAN_S``), the OSR is an
                          interior local maximum of the evoked rate after the omitted flash that
                          clears the rate at the omitted time (the tail of the last flash's
                          response) by >= 1 Hz and >= 25 % of its height (``OSR_MARGIN_HZ``,
                          ``OSR_MARGIN_FRACTION``); and (a) its latency from the expected flash stays
                          within +-15 ms of its median (``OSR_LATENCY_TOL_S``), (b) the least-squares
                          slope of its time after the LAST flash against the period is >= 0.8
                          (``OSR_SLOPE_MIN``; 1 = timed to the expected flash, 0 = to the last one),
                          (c) it is >= 1.5x the steady per-flash response (``OSR_RATIO_MIN``) and
                          (d) that steady response is >= 2 Hz (``OSR_STEADY_MIN_HZ``), at every period
                          (Schwartz et al. 2007)
motion anticipation       at 440, 1100 and 2200 um/s (``ANTICIPATION_SPEEDS_UM_S``), both directions:
                          lead >= -0.5 x flashed latency x speed at every speed
                          (``ANTICIPATION_LAG_FRACTION``), lead > 0 at the slowest speed; flagged
                          (fails) when |lead| exceeds the receptive-field extent (the full width at
                          half maximum of the flashed-bar profile) or the two directions differ by
                          more than one bar width (110 um) (Berry et al. 1999)
motion reversal           per cell: the burst within 300 ms after a reversal is >= 1.5x the response
                          peak before it, responses averaged over reversal positions; population
                          (mean over all cells; attr ``population_passed``): that ratio >= 1.5 AND
                          the burst time after the reversal varies by <= 30 ms over the reversal
                          positions (``REVERSAL_SPREAD_MAX_S``) (Schwartz et al. 2007; Chen et al. 2014)
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

#: targets of the four measures (see the module docstring)
LATENCY_RHO_MAX = -0.9
LATENCY_MIN_INTENSITIES = 5
#: smallest latency shift, weakest minus strongest kept intensity, s (one frame is 10 ms)
LATENCY_SHIFT_MIN_S = 0.010
OSR_LATENCY_TOL_S = 0.015
OSR_RATIO_MIN = 1.5
OSR_PERIOD_SPAN_S = (0.06, 0.15)
#: least-squares slope of the OSR time after the last flash against the period (1: expected flash)
OSR_SLOPE_MIN = 0.8
#: smallest steady per-flash evoked peak, Hz: without a per-flash response there is no rhythm to omit
OSR_STEADY_MIN_HZ = 2.0
#: how far the OSR peak must rise above the rate at the omitted time: both, in Hz and as a fraction
OSR_MARGIN_HZ = 1.0
OSR_MARGIN_FRACTION = 0.25
#: bar speeds (um/s) and directions of the anticipation measure; 440 um/s = 0.08 px/frame (Berry et al.)
ANTICIPATION_SPEEDS_UM_S = (440.0, 1100.0, 2200.0)
ANTICIPATION_DIRECTIONS = ("right", "left")
#: the lead may not fall below -this x flashed latency x speed (0 lead = the lag fully compensated)
ANTICIPATION_LAG_FRACTION = 0.5
REVERSAL_WINDOW_S = 0.3
REVERSAL_RATIO_MIN = 1.5
#: largest spread (max - min over reversal positions) of the population burst time, s
REVERSAL_SPREAD_MAX_S = 0.030


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
    <= -0.9 over at least 5 kept intensities AND the latency shift (latency at the weakest kept
    intensity minus that at the strongest) is >= :data:`LATENCY_SHIFT_MIN_S` (10 ms): a monotone
    but tiny shift (a few ms, below the 10 ms frame) is not latency coding.

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
        ``rho`` (cell), ``shift`` (cell) s, ``n_intensities`` (cell), ``passed`` (cell), ``reason``
        (cell); attrs ``target``, ``passed``, ``n_passed``, ``passed_cells``.
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
    for i, cond in enumerate(_conditions(resp)):
        r = cond.values
        base = _baseline(t, r, onset[i])
        sel = (t >= onset[i] - 1e-9) & (t <= onset[i] + window_s + 1e-9)
        for c in range(n_cell):
            tp, pk = when(t[sel], r[sel, c] - base[c])
            lat[i, c], peak[i, c] = tp - onset[i], pk
    keep = (peak >= min_peak_hz) & (peak >= 0.1 * peak.max(axis=0, keepdims=True))
    lat = np.where(keep, lat, np.nan)
    strength = np.abs(values)
    rho = np.full(n_cell, np.nan)
    shift = np.full(n_cell, np.nan)
    n_kept = keep.sum(axis=0)
    for c in range(n_cell):
        k = keep[:, c]
        if k.sum() >= 2 and np.ptp(strength[k]) > 0:
            kept = np.flatnonzero(k)
            weak, strong = kept[np.argmin(strength[kept])], kept[np.argmax(strength[kept])]
            shift[c] = lat[weak, c] - lat[strong, c]
        if k.sum() >= 3 and np.ptp(strength[k]) > 0:
            # latencies that do not change at all carry no intensity code (Spearman is undefined there)
            rho[c] = stats.spearmanr(strength[k], lat[k, c]).statistic if np.ptp(lat[k, c]) > 0 else 0.0
    # 1e-9: the spline grid puts latencies on 1 ms steps, so a 10 ms shift may land a hair below
    passed = (n_kept >= LATENCY_MIN_INTENSITIES) & (rho <= LATENCY_RHO_MAX) & (shift >= LATENCY_SHIFT_MIN_S - 1e-9)
    reasons = []
    for c in range(n_cell):
        why = []
        if n_kept[c] < LATENCY_MIN_INTENSITIES:
            why.append(
                f"{n_kept[c]} intensities evoke >= {min_peak_hz:g} Hz and >= 10% of the largest peak "
                f"(need {LATENCY_MIN_INTENSITIES})"
            )
        # too few intensities leave rho or the shift undefined: the first reason says it all
        if np.isfinite(rho[c]) and rho[c] > LATENCY_RHO_MAX:
            why.append(f"rho {rho[c]:+.2f} > {LATENCY_RHO_MAX}")
        if np.isfinite(shift[c]) and shift[c] < LATENCY_SHIFT_MIN_S - 1e-9:
            why.append(f"latency shift {_fmt(shift[c], 1e3, 1)} ms < {LATENCY_SHIFT_MIN_S * 1e3:g} ms")
        if not passed[c] and not why:
            why.append("rho or the shift undefined (the kept intensities have one magnitude)")
        reasons.append("; ".join(why) if not passed[c] else "")
    cond = xr.DataArray(values, dims="condition", attrs={"long_name": "flash contrast", "swept": "intensity"})
    ds = xr.Dataset(
        {
            "latency": (("condition", "cell"), lat, {"units": "s", "long_name": "time from flash onset to peak"}),
            "peak": (("condition", "cell"), peak, {"units": "Hz", "long_name": "evoked peak rate"}),
            "rho": ("cell", rho, {"long_name": "Spearman rho(|intensity|, latency)"}),
            "shift": (
                "cell",
                shift,
                {"units": "s", "long_name": "latency at the weakest minus at the strongest kept intensity"},
            ),
            "n_intensities": ("cell", n_kept.astype(int), {"long_name": "intensities kept (responsive)"}),
            "passed": ("cell", passed.astype(int)),
            "reason": _reason_var(reasons),
        },
        coords={"condition": cond, "cell": resp["cell"].values},
        attrs={"measure": "latency_coding"},
    )
    return _summary(
        ds,
        f"Spearman rho <= {LATENCY_RHO_MAX} over >= {LATENCY_MIN_INTENSITIES} intensities and a latency shift "
        f">= {LATENCY_SHIFT_MIN_S * 1e3:g} ms (weakest minus strongest)",
    )


# -- omitted stimulus response -------------------------------------------------------------------
def _osr_peak(t: np.ndarray, e: np.ndarray, tail: float, method: str) -> tuple[float, float, str]:
    """The OSR in one search window: an interior local maximum that clears the last flash's tail.

    Parameters
    ----------
    t : numpy.ndarray
        (n,) sample times of the window, s (it starts at the omitted flash's expected time).
    e : numpy.ndarray
        (n,) evoked rate (minus the pre-train baseline), Hz.
    tail : float
        Evoked rate at the omitted time, Hz: what is left of the last flash's response there.
    method : {"peak", "centroid"}
        How the time of the peak is read.

    Returns
    -------
    (float, float, str)
        Peak time (s; NaN when there is no OSR), its evoked height (Hz; NaN when there is no
        interior peak) and the reason there is no OSR ("" when there is one).
    """
    # a sample higher than its left neighbour and not lower than its right one, never a window edge:
    # a response that only decays from the last flash has its maximum at the window's start
    interior = [i for i in range(1, len(e) - 1) if e[i] > e[i - 1] and e[i] >= e[i + 1]]
    if not interior:
        return np.nan, np.nan, "no interior peak after the omitted flash (largest rate at a window edge)"
    i = max(interior, key=lambda j: e[j])
    tp, height = peak_time(t, e, near=i) if method == "peak" else centroid_time(t, e, index=i)
    margin = max(OSR_MARGIN_HZ, OSR_MARGIN_FRACTION * height)
    if height - tail < margin:
        return (
            np.nan,
            height,
            f"the peak ({height:.1f} Hz) rises < {margin:.1f} Hz above the last flash's tail ({tail:.1f} Hz)",
        )
    return tp, height, ""


def omitted_stimulus_response(
    response: xr.Dataset,
    stimulus: xr.Dataset | None = None,
    *,
    periods_s: Sequence[float] | None = None,
    omitted_s: Sequence[float] | None = None,
    window_s: float = 0.25,
    steady_periods: int = 3,
    min_response_hz: float = 1.0,
    method: str = "peak",
) -> xr.Dataset:
    """The omitted stimulus response: its latency from the expected flash, and its size (Schwartz et al. 2007).

    For each period (condition) and cell, with the evoked rate = rate minus the pre-train baseline:

    - the OSR is the largest *interior* local maximum of the evoked rate in
      ``[omitted, omitted + window_s]`` (never a window edge), and only if it rises above the
      evoked rate at the omitted time by >= :data:`OSR_MARGIN_HZ` (1 Hz) and >=
      :data:`OSR_MARGIN_FRACTION` (25 %) of its own height. The rate at the omitted time is the
      tail of the last flash's response, and it bounds that tail's every later value as long as
      the tail decays monotonically, so a decaying tail (however wiggly) is never read as an OSR.
      Otherwise the latency is NaN and ``reason`` says why;
    - its time is read at the spline-refined maximum (``method="peak"``) or the centroid of its
      half-maximum lobe (``"centroid"``); the latency is measured from the omitted (expected) flash;
    - the steady per-flash response is the largest evoked rate over the ``steady_periods`` full
      periods before the last flash.

    A cell passes when the periods span 60-150 ms and, at every period, there is an OSR, and
    (a) its latencies stay within +-15 ms of their median, (b) the least-squares slope of its time
    after the *last* flash (latency + period) against the period is >= 0.8 (1 when timed to the
    expected flash, 0 when locked to the last one), (c) it is >= 1.5x the steady per-flash response
    and (d) that response is >= 2 Hz.

    Parameters
    ----------
    response : xarray.Dataset
        ``response`` (condition, time, cell) Hz; one condition per flash period.
    stimulus : xarray.Dataset, optional
        The OSR stimulus (``omitted_time`` per condition; the ``condition`` coord or a ``period``
        variable gives the periods).
    periods_s, omitted_s : sequence of float, optional
        Period and omitted-flash time per condition (override the stimulus); the last flash is
        one period before the omitted one.
    window_s : float
        Search window after the omitted flash, s.
    steady_periods : int
        Periods before the last flash that define the steady-state response.
    min_response_hz : float
        Floor of the steady-state response in the ratio, Hz.
    method : {"peak", "centroid"}
        How the OSR time is read: the spline-refined maximum (default) or the centre of mass of its
        half-maximum lobe.

    Returns
    -------
    xarray.Dataset
        ``latency`` (condition, cell) s from the expected flash (NaN: no OSR), ``osr`` (condition,
        cell) evoked Hz (NaN: no interior peak), ``steady`` (condition, cell) evoked Hz, ``ratio``
        (condition, cell), ``latency_spread`` (cell) s (largest deviation from the median),
        ``slope`` (cell), ``passed`` (cell), ``reason`` (cell).
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
    _timing(method)  # validate early: a typo should not surface as a NaN per cell
    t = resp["time"].values
    n_cell = resp.sizes["cell"]
    lat = np.full((n_c, n_cell), np.nan)
    osr = np.full((n_c, n_cell), np.nan)
    steady = np.full((n_c, n_cell), np.nan)
    why_peak = [["" for _ in range(n_cell)] for _ in range(n_c)]
    for i, cond in enumerate(conds):
        r = cond.values
        base = _baseline(t, r, 0.0)
        p, om = periods[i], omitted[i]
        after = (t >= om - 1e-9) & (t <= om + window_s + 1e-9)
        before = (t >= om - (steady_periods + 1) * p - 1e-9) & (t < om - p - 1e-9)
        for c in range(n_cell):
            e = r[:, c] - base[c]
            tail = float(np.interp(om, t, e))
            tp, osr[i, c], why_peak[i][c] = _osr_peak(t[after], e[after], tail, method)
            lat[i, c] = tp - om
            if before.any():
                steady[i, c] = float(e[before].max())
    # a cell that ignores the flashes would otherwise divide by ~0
    ratio = osr / np.maximum(steady, min_response_hz)
    spans = periods.min() <= OSR_PERIOD_SPAN_S[0] + 1e-9 and periods.max() >= OSR_PERIOD_SPAN_S[1] - 1e-9
    spread = np.full(n_cell, np.nan)
    slope = np.full(n_cell, np.nan)
    passed = np.zeros(n_cell, bool)
    reasons = []
    for c in range(n_cell):
        ok = np.isfinite(lat[:, c])
        if ok.any():
            spread[c] = float(np.max(np.abs(lat[ok, c] - np.median(lat[ok, c]))))
        if ok.sum() >= 2 and np.ptp(periods[ok]) > 0:
            # time after the last flash = latency from the expected flash + one period
            slope[c] = float(np.polyfit(periods[ok], lat[ok, c] + periods[ok], 1)[0])
        why = [f"{p * 1e3:g} ms: {w}" for p, w in zip(periods, (why_peak[i][c] for i in range(n_c))) if w]
        if not spans:
            why.append(
                f"periods {periods.min():g}-{periods.max():g} s do not span "
                f"{OSR_PERIOD_SPAN_S[0]:g}-{OSR_PERIOD_SPAN_S[1]:g} s"
            )
        # a NaN spread or slope comes from periods without an OSR, whose reasons are listed above
        if spread[c] > OSR_LATENCY_TOL_S + 1e-9:
            why.append(f"latency spread {spread[c] * 1e3:.0f} ms > {OSR_LATENCY_TOL_S * 1e3:g} ms")
        if slope[c] < OSR_SLOPE_MIN:
            why.append(f"slope {slope[c]:.2f} < {OSR_SLOPE_MIN:g}")
        low = [f"{p * 1e3:g}" for p, x in zip(periods, ratio[:, c]) if not x >= OSR_RATIO_MIN]
        if low:
            why.append(f"OSR < {OSR_RATIO_MIN:g}x steady at {', '.join(low)} ms")
        weak = [f"{p * 1e3:g}" for p, x in zip(periods, steady[:, c]) if not x >= OSR_STEADY_MIN_HZ]
        if weak:
            why.append(f"steady per-flash response < {OSR_STEADY_MIN_HZ:g} Hz at {', '.join(weak)} ms")
        passed[c] = not why
        reasons.append("; ".join(why))
    ds = xr.Dataset(
        {
            "latency": (("condition", "cell"), lat, {"units": "s", "long_name": "OSR peak after the expected flash"}),
            "osr": (("condition", "cell"), osr, {"units": "Hz", "long_name": "evoked OSR peak"}),
            "steady": (("condition", "cell"), steady, {"units": "Hz", "long_name": "steady per-flash evoked peak"}),
            "ratio": (("condition", "cell"), ratio, {"long_name": "OSR / steady-state per-flash response"}),
            "latency_spread": ("cell", spread, {"units": "s", "long_name": "max |latency - median latency|"}),
            "slope": (
                "cell",
                slope,
                {"long_name": "least-squares slope of the OSR time after the last flash vs the period"},
            ),
            "passed": ("cell", passed.astype(int)),
            "reason": _reason_var(reasons),
        },
        coords={
            "condition": xr.DataArray(periods, dims="condition", attrs={"units": "s", "swept": "period"}),
            "cell": resp["cell"].values,
        },
        attrs={"measure": "omitted_stimulus_response", "method": method},
    )
    return _summary(
        ds,
        f"an interior OSR peak clearing the last flash's tail; over periods {OSR_PERIOD_SPAN_S[0]}-"
        f"{OSR_PERIOD_SPAN_S[1]} s: latency within +-{OSR_LATENCY_TOL_S * 1e3:.0f} ms, slope of the time after "
        f"the last flash vs period >= {OSR_SLOPE_MIN:g}, OSR >= {OSR_RATIO_MIN}x a steady per-flash "
        f"response >= {OSR_STEADY_MIN_HZ:g} Hz",
    )


# -- motion anticipation -------------------------------------------------------------------------
def _half_max_width(pos: np.ndarray, profile: np.ndarray) -> float:
    """Full width at half maximum of a (positions,) profile, um, crossings linearly interpolated.

    Where the profile stays above half its maximum up to the outermost position, that position is
    taken as the edge (the width is then a lower bound).
    """
    order = np.argsort(pos)
    x, y = pos[order], profile[order]
    b = int(np.argmax(y))
    half = 0.5 * float(y[b])
    lo, hi = b, b
    while lo > 0 and y[lo - 1] >= half:
        lo -= 1
    while hi < len(y) - 1 and y[hi + 1] >= half:
        hi += 1
    left = x[lo] if lo == 0 else x[lo - 1] + (half - y[lo - 1]) / (y[lo] - y[lo - 1]) * (x[lo] - x[lo - 1])
    right = x[hi] if hi == len(y) - 1 else x[hi] + (y[hi] - half) / (y[hi] - y[hi + 1]) * (x[hi + 1] - x[hi])
    return float(right - left)


def receptive_fields(
    flashed: xr.Dataset, stimulus: xr.Dataset | None = None, *, window_s: float = 0.3, min_peak_hz: float = 2.0
) -> xr.Dataset:
    """Receptive-field centre, extent and latency of each cell from its responses to flashed bars.

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
        centroid of the profile above half its maximum; ``rf_width`` (cell) um, the full width at
        half maximum of the profile (the bar's width included); ``latency`` (cell) s, time to peak
        at the best position.
    """
    resp = _response(flashed)
    n_c = resp.sizes.get("condition", 1)
    if stimulus is not None and "bar_center" in stimulus.variables:
        bar_centre = stimulus["bar_center"]
        if "time" in bar_centre.dims:  # per-frame position: take each condition's value while the bar is shown
            bar_centre = bar_centre.max("time")
        pos = _per_condition(bar_centre, n_c)
    else:
        pos = np.asarray(resp["condition"].values, dtype=float)
    onset = _per_condition(_event(stimulus, "flash_onset", 0.0), n_c)
    t = resp["time"].values
    n_cell = resp.sizes["cell"]
    profile = np.zeros((n_c, n_cell))
    tpk = np.zeros((n_c, n_cell))
    for i, cond in enumerate(_conditions(resp)):
        r = cond.values
        base = _baseline(t, r, onset[i])
        sel = (t >= onset[i] - 1e-9) & (t <= onset[i] + window_s + 1e-9)
        for c in range(n_cell):
            tp, pk = peak_time(t[sel], r[sel, c] - base[c])
            profile[i, c], tpk[i, c] = pk, tp - onset[i]
    best = profile.argmax(axis=0)
    above = np.clip(profile - 0.5 * profile.max(axis=0, keepdims=True), 0, None)
    centre = (above * pos[:, None]).sum(axis=0) / np.maximum(above.sum(axis=0), 1e-12)
    latency = tpk[best, np.arange(n_cell)]
    width = np.array([_half_max_width(pos, profile[:, c]) for c in range(n_cell)])
    silent = profile.max(axis=0) < min_peak_hz
    for a in (centre, latency, width):
        a[silent] = np.nan
    return xr.Dataset(
        {
            "profile": (("condition", "cell"), profile, {"units": "Hz", "long_name": "flashed-bar evoked peak"}),
            "rf_center": ("cell", centre, {"units": "um", "long_name": "flashed-bar receptive-field centre"}),
            "rf_width": ("cell", width, {"units": "um", "long_name": "flashed-bar profile full width at half max"}),
            "latency": ("cell", latency, {"units": "s", "long_name": "flashed-bar response latency"}),
        },
        coords={"condition": pos, "cell": resp["cell"].values},
    )


def _lead(t: np.ndarray, pos: np.ndarray, rate: np.ndarray, centre: float, sign: float, min_peak_hz: float):
    """Lead (um), peak time (s) and reason ("" if measured) of one cell in one moving-bar run.

    The bar position "at the peak" is the response-weighted mean bar position over the contiguous
    top-half lobe around the response maximum: robust to the flat tops and pixel ripples of slowly
    moving bars (unlike the argmax alone), and blind to other, distant bumps (e.g. the bar entering
    the screen).
    """
    tp, _ = peak_time(t, rate)
    base = float(np.quantile(rate, 0.1))
    if rate.max() - base < min_peak_hz:
        return np.nan, tp, f"moving-bar response < {min_peak_hz:g} Hz above its 10th percentile"
    lo, hi, half = half_max_lobe(rate, int(np.argmax(rate)), base)
    w = rate[lo : hi + 1] - half
    x = float((w * pos[lo : hi + 1]).sum() / w.sum()) if w.sum() > 0 else float(np.interp(tp, t, pos))
    return (centre - x) * sign, tp, ""


def motion_anticipation(
    moving: xr.Dataset | Sequence[xr.Dataset],
    moving_stimulus: xr.Dataset | Sequence[xr.Dataset],
    flashed: xr.Dataset,
    flashed_stimulus: xr.Dataset | None = None,
    *,
    bar_width_um: float | None = None,
    min_peak_hz: float = 2.0,
) -> xr.Dataset:
    """Where the moving bar is when each cell's response peaks, relative to its flashed-bar RF centre.

    Without anticipation a cell's response peaks once the bar has passed its receptive-field centre
    by (latency x speed). Berry et al. (1999) found the moving-bar response peaks ahead of that, at
    or before the bar's arrival, over a range of speeds. The bar position "at the peak" is the
    response-weighted mean bar position over the top-half lobe of the response. ``lead`` = RF
    centre minus that position, signed along the motion (positive: the response leads the bar),
    per (speed, direction).

    A lead is flagged, and the cell fails, when |lead| exceeds the receptive-field extent (the full
    width at half maximum of the flashed-bar profile: a response peaking with the bar a whole RF
    width away is not a response to the bar at the RF) or when the two directions' leads differ by
    more than one bar width (an RF-centre error or an asymmetric circuit, not anticipation). A cell
    passes when nothing is flagged, both directions are measured at every speed, lead >= -0.5 x
    flashed latency x speed at every speed (at least half the lag compensated) and lead > 0 in both
    directions at the slowest speed.

    Parameters
    ----------
    moving : xarray.Dataset or sequence of them
        ``response`` (time, cell) or (condition, time, cell) to drifting bars: one run or several
        (e.g. one per speed, each sweeping the direction); every condition is one (speed,
        direction).
    moving_stimulus : xarray.Dataset or sequence of them
        The stimulus of each run, with ``bar_center`` (time) or (condition, time) in um, and
        ``velocity`` (um/s, signed; default: the median slope of ``bar_center``).
    flashed : xarray.Dataset
        ``response`` (condition, time, cell) to bars flashed at several positions.
    flashed_stimulus : xarray.Dataset, optional
        Its stimulus (``bar_center`` per condition, um).
    bar_width_um : float, optional
        Bar width, um, the direction-consistency tolerance (default: the moving stimulus's
        ``width_um`` attr, else 110).
    min_peak_hz : float
        Smallest flashed-bar evoked peak (and moving-bar response) that counts, Hz.

    Returns
    -------
    xarray.Dataset
        ``lead`` (cell) um (the slowest speed, the smaller of the two directions),
        ``lead_by_speed`` (speed, direction, cell) um (NaN: not measured, or see ``reason``),
        ``expected_lag`` (cell) um = flashed latency x slowest speed, ``rf_center``, ``rf_width``
        (cell) um, ``latency`` (cell) s, ``peak_time`` (cell) s, ``passed`` (cell), ``reason``
        (cell); attrs ``speed_um_s`` (slowest speed) and the usual summary.
    """
    runs = [moving] if isinstance(moving, (xr.Dataset, xr.DataArray)) else list(moving)
    stims = [moving_stimulus] if isinstance(moving_stimulus, xr.Dataset) else list(moving_stimulus)
    if len(runs) != len(stims):
        raise SchemaError(
            f"motion_anticipation: {len(runs)} moving-bar responses but {len(stims)} stimuli; pass one "
            "stimulus Dataset per response Dataset, in the same order"
        )
    rf = receptive_fields(flashed, flashed_stimulus, min_peak_hz=min_peak_hz)
    cells = _response(runs[0])["cell"].values
    n_cell = len(cells)
    rf_centre, rf_width, latency = (rf[k].values for k in ("rf_center", "rf_width", "latency"))
    if bar_width_um is None:
        bar_width_um = float(stims[0].attrs.get("width_um", 110.0))
    found: dict[tuple[float, str], tuple[np.ndarray, np.ndarray, list[str]]] = {}
    for run_i, (resp_ds, stim) in enumerate(zip(runs, stims)):
        resp = _response(resp_ds)
        if list(resp["cell"].values) != list(cells):
            raise SchemaError(f"motion_anticipation: moving-bar run {run_i} has other cells than run 0")
        centre_all = _event(stim, "bar_center")
        t = resp["time"].values
        conds = _conditions(resp)
        velocity = _per_condition(stim["velocity"], len(conds)) if "velocity" in stim.variables else None
        for i, r in enumerate(conds):
            pos = centre_all.isel(condition=i) if "condition" in centre_all.dims else centre_all
            pos = pos.sel(time=resp["time"]).values.astype(float)
            with np.errstate(invalid="ignore"):
                v = np.gradient(pos, t)
            # the frames where the bar moves (NaN: a shorter condition of a sweep, padded)
            mask = np.isfinite(pos) & np.isfinite(v) & (np.abs(v) > 0)
            vel = float(velocity[i]) if velocity is not None else float(np.median(v[mask]))
            key = (round(abs(vel), 6), "right" if vel > 0 else "left")
            if key in found:
                raise SchemaError(
                    f"motion_anticipation: {key[0]:g} um/s {key[1]} is measured twice (run {run_i}, condition "
                    f"{i}); give each (speed, direction) once"
                )
            lead, tpk, why = np.full(n_cell, np.nan), np.full(n_cell, np.nan), [""] * n_cell
            for c in range(n_cell):
                if np.isfinite(rf_centre[c]):
                    lead[c], tpk[c], why[c] = _lead(
                        t[mask], pos[mask], r.values[mask, c], float(rf_centre[c]), np.sign(vel), min_peak_hz
                    )
            found[key] = (lead, tpk, why)
    speeds = sorted({s for s, _ in found})
    directions = list(ANTICIPATION_DIRECTIONS)
    by_speed = np.full((len(speeds), len(directions), n_cell), np.nan)
    for (s, d), (lead, _, _) in found.items():
        by_speed[speeds.index(s), directions.index(d)] = lead
    slow = speeds[0]
    passed = np.zeros(n_cell, bool)
    reasons = []
    for c in range(n_cell):
        if not np.isfinite(rf_centre[c]):
            reasons.append(f"no flashed-bar response >= {min_peak_hz:g} Hz")
            continue
        why = []
        for k, s in enumerate(speeds):
            leads = by_speed[k, :, c]
            for d, x in zip(directions, leads):
                if (s, d) not in found:
                    why.append(f"{d} not measured at {s:g} um/s")
                elif not np.isfinite(x):
                    why.append(f"{s:g} um/s {d}: {found[(s, d)][2][c]}")
                elif abs(x) > rf_width[c]:
                    why.append(f"{s:g} um/s {d}: |lead| {abs(x):.0f} um > RF extent {rf_width[c]:.0f} um")
            if np.isfinite(leads).all():
                if abs(leads[0] - leads[1]) > bar_width_um:
                    why.append(
                        f"{s:g} um/s: directions differ by {abs(leads[0] - leads[1]):.0f} um > {bar_width_um:g} um"
                    )
                floor = -ANTICIPATION_LAG_FRACTION * latency[c] * s
                if leads.min() < floor:
                    why.append(
                        f"{s:g} um/s: lead {leads.min():.0f} um < -{ANTICIPATION_LAG_FRACTION:g} x latency x speed "
                        f"= {floor:.0f} um"
                    )
        slow_leads = by_speed[0, :, c]
        if np.isfinite(slow_leads).all() and not (slow_leads > 0).all():
            why.append(f"lead {slow_leads.min():.0f} um <= 0 at the slowest speed {slow:g} um/s")
        passed[c] = not why
        reasons.append("; ".join(why))
    slow_leads = by_speed[0]
    lead = np.array([np.min(x[np.isfinite(x)]) if np.isfinite(x).any() else np.nan for x in slow_leads.T])
    first = found.get((slow, "right")) or found[next(k for k in found if k[0] == slow)]
    speed_coord = xr.DataArray(np.asarray(speeds), dims="speed", attrs={"units": "um/s", "long_name": "bar speed"})
    ds = xr.Dataset(
        {
            "lead": (
                "cell",
                lead,
                {"units": "um", "long_name": "distance of the bar before the RF centre at the peak (slowest speed)"},
            ),
            "lead_by_speed": (
                ("speed", "direction", "cell"),
                by_speed,
                {"units": "um", "long_name": "distance of the bar before the RF centre at the peak"},
            ),
            "expected_lag": (
                "cell",
                latency * slow,
                {"units": "um", "long_name": "flashed latency x slowest speed"},
            ),
            "rf_center": rf["rf_center"],
            "rf_width": rf["rf_width"],
            "latency": rf["latency"],
            "peak_time": ("cell", first[1], {"units": "s", "long_name": "moving-bar peak time (slowest speed)"}),
            "passed": ("cell", passed.astype(int)),
            "reason": _reason_var(reasons),
        },
        coords={"speed": speed_coord, "direction": ("direction", directions), "cell": cells},
        attrs={"measure": "motion_anticipation", "speed_um_s": float(slow), "bar_width_um": float(bar_width_um)},
    )
    return _summary(
        ds,
        f"at every speed, both directions: lead >= -{ANTICIPATION_LAG_FRACTION:g} x latency x speed, within the RF "
        f"extent, directions within {bar_width_um:g} um; lead > 0 at the slowest speed",
    )


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
    largest in ``[reversal - before_s, reversal]``. A cell passes when burst >= 1.5x before. The
    population response is the mean over all cells (as in the published figure, which averaged
    cells): its ratio (attr ``population_ratio``) must be >= 1.5 and, the reversal response being a
    synchronous burst at a fixed delay after the reversal wherever it happens, the time of its
    burst after the reversal (spline-refined maximum in the window, per reversal position) may vary
    by at most :data:`REVERSAL_SPREAD_MAX_S` (30 ms) over the positions (attr
    ``population_passed``).

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
        ``ratio``, ``passed``, ``reason`` (cell); ``burst_time`` (condition, cell) s after the
        reversal; ``population_burst_time`` (condition) s; ``burst_time_spread`` () s; attrs
        ``population_ratio``, ``burst_time_spread``, ``population_passed`` and the usual summary.
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
    n_cell = resp.sizes["cell"]
    burst_time = np.array([[peak_time(rel[after], s[after, c])[0] for c in range(n_cell)] for s in stack])
    pop_time = np.array([peak_time(rel[after], s[after].mean(axis=1))[0] for s in stack])
    spread = float(np.ptp(pop_time))
    pop_passed = pop_ratio >= REVERSAL_RATIO_MIN and spread <= REVERSAL_SPREAD_MAX_S + 1e-9
    passed = ratio >= REVERSAL_RATIO_MIN
    reasons = ["" if ok else f"burst / before {x:.2f} < {REVERSAL_RATIO_MIN:g}" for ok, x in zip(passed, ratio)]
    n_rev = len(conds)
    cond = resp["condition"].values if "condition" in resp.dims else np.asarray([0.0])
    cond_attrs = resp["condition"].attrs if "condition" in resp.dims else {}
    ds = xr.Dataset(
        {
            "aligned": (("rel_time", "cell"), aligned, {"units": "Hz", "long_name": "response around the reversal"}),
            "burst": ("cell", burst, {"units": "Hz", "long_name": "largest rate after the reversal"}),
            "before": ("cell", pre, {"units": "Hz", "long_name": "largest rate before the reversal"}),
            "ratio": ("cell", ratio, {"long_name": "burst / before"}),
            "burst_time": (
                ("condition", "cell"),
                burst_time,
                {"units": "s", "long_name": "time of the burst after the reversal"},
            ),
            "population_burst_time": (
                "condition",
                pop_time,
                {"units": "s", "long_name": "time of the population (mean over cells) burst after the reversal"},
            ),
            "burst_time_spread": (
                (),
                spread,
                {"units": "s", "long_name": "max - min of the population burst time over reversal positions"},
            ),
            "passed": ("cell", passed.astype(int)),
            "reason": _reason_var(reasons),
        },
        coords={
            "rel_time": ("rel_time", rel, {"units": "s"}),
            "condition": ("condition", cond[:n_rev], cond_attrs),
            "cell": resp["cell"].values,
        },
        attrs={"measure": "motion_reversal"},
    )
    _summary(ds, f"burst within {window_s} s after the reversal >= {REVERSAL_RATIO_MIN}x the peak before")
    ds.attrs.update(
        {
            "population_ratio": pop_ratio,
            "burst_time_spread": spread,
            "population_passed": int(pop_passed),
            "population_target": (
                f"population (mean over cells) burst / before >= {REVERSAL_RATIO_MIN:g} and burst time after the "
                f"reversal within {REVERSAL_SPREAD_MAX_S * 1e3:g} ms over reversal positions"
            ),
        }
    )
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
        # 110 um dark bar at 440 um/s (0.08 px/frame, Berry et al. 1999) and its flashed control; the
        # measure also runs ANTICIPATION_SPEEDS_UM_S in both directions (anticipation_stimuli)
        "moving-bar": {"speed": 440.0, "width_um": 110.0, "intensity": -1.0},
        "flashed-bar": {"width_um": 110.0, "intensity": -1.0, "duration": 0.02},
    },
    "motion_reversal": {
        # reversal positions -9 .. 2 px at 0.19 px/frame (the published figure's settings)
        "motion-reversal": {"reversal_um": [55.0 * k for k in range(-9, 3)], "speed": 1045.0, "width_um": 110.0},
    },
}


def anticipation_stimuli(speeds: Sequence[float] = ANTICIPATION_SPEEDS_UM_S) -> list[dict[str, Any]]:
    """Parameters of the ``moving-bar`` runs of the anticipation measure: one per speed, sweeping the direction.

    One run per speed (rather than one sweep over speeds) because a sweep pads every condition to
    the slowest one's length, which would more than double the frames computed.

    Parameters
    ----------
    speeds : sequence of float
        Bar speeds, um/s.

    Returns
    -------
    list of dict
        ``moving-bar`` parameters, one dict per speed, each with ``direction`` = both directions.
    """
    base = STIMULI["motion_anticipation"]["moving-bar"]
    return [{**base, "speed": float(s), "direction": list(ANTICIPATION_DIRECTIONS)} for s in speeds]


#: the four measures, in report order
MEASURES = ("latency_coding", "omitted_stimulus_response", "motion_anticipation", "motion_reversal")


def verdict(ds: xr.Dataset) -> bool:
    """Whether a measure's result shows the phenomenon: the population rule for motion reversal
    (``population_passed``: the published figure averaged cells), at least one cell for the others."""
    if ds.attrs.get("measure") == "motion_reversal":
        return bool(ds.attrs.get("population_passed", 0))
    return bool(ds.attrs.get("passed", 0))


def measure_all(model: Any, registry: Any = None, only: Sequence[str] | None = None) -> dict[str, xr.Dataset]:
    """Run the four measures on a model with the stimuli of :data:`STIMULI` (from the stimulus registry).

    Motion anticipation runs every speed of :data:`ANTICIPATION_SPEEDS_UM_S` in both directions.

    Parameters
    ----------
    model : mechlens.interfaces.Model
        Any model on the 50x50, 10 ms grid (the synthetic retina, the retina CNN).
    registry : mechlens.registry.Registry, optional
        Where the stimuli are looked up (default: the process-wide registry).
    only : sequence of str, optional
        Run only these measures (names of :data:`MEASURES`); default all four.

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

    wanted = list(MEASURES) if only is None else list(only)
    unknown = sorted(set(wanted) - set(MEASURES))
    if unknown:
        raise ValueError(f"measure_all: unknown measures {unknown}; choose from {list(MEASURES)}")
    out = {}
    if "latency_coding" in wanted:
        r, s = run("flash", STIMULI["latency_coding"]["flash"])
        out["latency_coding"] = latency_coding(r, s)
    if "omitted_stimulus_response" in wanted:
        r, s = run("osr", STIMULI["omitted_stimulus_response"]["osr"])
        out["omitted_stimulus_response"] = omitted_stimulus_response(r, s)
    if "motion_anticipation" in wanted:
        moving = [run("moving-bar", p) for p in anticipation_stimuli()]
        rf, sf = run("flashed-bar", STIMULI["motion_anticipation"]["flashed-bar"])
        out["motion_anticipation"] = motion_anticipation([m[0] for m in moving], [m[1] for m in moving], rf, sf)
    if "motion_reversal" in wanted:
        r, s = run("motion-reversal", STIMULI["motion_reversal"]["motion-reversal"])
        out["motion_reversal"] = motion_reversal(r, s)
    return out


def format_report(results: Mapping[str, xr.Dataset], cell_kind: Sequence[str] | None = None) -> str:
    """The measures as a plain-text table: one line per cell per measure (with why it fails), then the verdicts."""
    lines = []
    for name, ds in results.items():
        lines.append(
            f"== {name}: {'PASS' if ds.attrs.get('passed') else 'FAIL'} "
            f"({ds.attrs.get('n_passed', 0)}/{ds.sizes['cell']} cells; target: {ds.attrs.get('target')})"
        )
        for i, cell in enumerate(ds["cell"].values):
            kind = f" {cell_kind[i]:<6}" if cell_kind is not None else ""
            lines.append(f"  {cell}{kind} {_cell_line(name, ds, i)}  {'pass' if ds['passed'].values[i] else '-'}")
            if "reason" in ds and str(ds["reason"].values[i]):
                lines.append(f"      why: {ds['reason'].values[i]}")
        if name == "motion_reversal":
            times = _ms(ds["population_burst_time"].values) if "population_burst_time" in ds else ""
            lines.append(
                f"  population (mean over cells) ratio {ds.attrs['population_ratio']:.2f}, burst ms {times}, "
                f"spread {ds.attrs.get('burst_time_spread', np.nan) * 1e3:.0f} ms: "
                f"{'PASS' if ds.attrs.get('population_passed') else 'FAIL'} ({ds.attrs.get('population_target')})"
            )
    return "\n".join(lines)


def _ms(values: np.ndarray) -> str:
    return "[" + " ".join("  nan" if not np.isfinite(v) else f"{v * 1e3:5.0f}" for v in values) + "]"


def _cell_line(name: str, ds: xr.Dataset, i: int) -> str:
    if name == "latency_coding":
        return (
            f"latency ms {_ms(ds['latency'].values[:, i])}  rho {float(ds['rho'][i]):+.2f}"
            f"  shift {_fmt(float(ds['shift'][i]), 1e3, 1)} ms"
        )
    if name == "omitted_stimulus_response":
        ratio = " ".join(f"{v:5.1f}" for v in ds["ratio"].values[:, i])
        steady = " ".join(f"{v:5.1f}" for v in ds["steady"].values[:, i])
        return (
            f"latency ms {_ms(ds['latency'].values[:, i])}  spread {_fmt(float(ds['latency_spread'][i]), 1e3)} ms"
            f"  slope {_fmt(float(ds['slope'][i]), digits=2)}  ratio [{ratio}]  steady Hz [{steady}]"
        )
    if name == "motion_anticipation":
        leads = "  ".join(
            f"{float(s):g}: " + "/".join(_fmt(float(x)) for x in ds["lead_by_speed"].values[k, :, i])
            for k, s in enumerate(ds["speed"].values)
        )
        return (
            f"lead um (right/left) {leads}  (latency x slowest speed {_fmt(float(ds['expected_lag'][i]), digits=1)}"
            f" um, RF centre {_fmt(float(ds['rf_center'][i]), digits=1)} um, "
            f"width {_fmt(float(ds['rf_width'][i]))} um)"
        )
    if name == "motion_reversal":
        burst, before = float(ds["burst"][i]), float(ds["before"][i])
        times = f"  burst ms {_ms(ds['burst_time'].values[:, i])}" if "burst_time" in ds else ""
        return f"burst {burst:6.1f} Hz  before {before:6.1f} Hz  ratio {float(ds['ratio'][i]):.2f}{times}"
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
