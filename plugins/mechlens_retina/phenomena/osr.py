"""The omitted stimulus response: a response timed to a flash that did not come (Schwartz et al. 2007)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from mechlens.errors import SchemaError
from mechlens_retina.phenomena.common import (
    _baseline,
    _conditions,
    _event,
    _per_condition,
    _reason_var,
    _response,
    _summary,
    _timing,
    centroid_time,
    peak_time,
)
from mechlens_retina.phenomena.targets import (
    OSR_LATENCY_TOL_S,
    OSR_MARGIN_FRACTION,
    OSR_MARGIN_HZ,
    OSR_PERIOD_SPAN_S,
    OSR_RATIO_MIN,
    OSR_SLOPE_MIN,
    OSR_STEADY_MIN_HZ,
)


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
            "ratio": (
                ("condition", "cell"),
                ratio,
                {"units": "1", "long_name": "OSR / steady-state per-flash response"},
            ),
            "latency_spread": ("cell", spread, {"units": "s", "long_name": "max |latency - median latency|"}),
            "slope": (
                "cell",
                slope,
                {"units": "1", "long_name": "least-squares slope of the OSR time after the last flash vs the period"},
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
