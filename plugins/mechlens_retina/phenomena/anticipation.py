"""Motion anticipation: a moving bar's response peaks ahead of the latency lag (Berry et al. 1999)."""

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
    half_max_lobe,
    peak_time,
)
from mechlens_retina.phenomena.targets import ANTICIPATION_DIRECTIONS, ANTICIPATION_LAG_FRACTION


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
