"""Latency coding: the response peaks earlier for stronger flashes (Gollisch & Meister 2008)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import stats

from mechlens.errors import SchemaError
from mechlens_retina.phenomena.common import (
    _baseline,
    _conditions,
    _fmt,
    _per_condition,
    _reason_var,
    _response,
    _summary,
    _timing,
)
from mechlens_retina.phenomena.targets import LATENCY_MIN_INTENSITIES, LATENCY_RHO_MAX, LATENCY_SHIFT_MIN_S


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
            "rho": ("cell", rho, {"units": "1", "long_name": "Spearman rho(|intensity|, latency)"}),
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
