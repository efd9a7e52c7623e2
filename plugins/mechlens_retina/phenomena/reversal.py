"""Motion reversal: a synchronous burst after a moving bar reverses (Schwartz et al. 2007; Chen et al. 2014)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from mechlens.errors import SchemaError
from mechlens_retina.phenomena.common import (
    _conditions,
    _event,
    _per_condition,
    _reason_var,
    _response,
    _summary,
    peak_time,
)
from mechlens_retina.phenomena.targets import (
    REVERSAL_BEFORE_S,
    REVERSAL_RATIO_MIN,
    REVERSAL_SPREAD_MAX_S,
    REVERSAL_WINDOW_S,
)


def motion_reversal(
    response: xr.Dataset,
    stimulus: xr.Dataset | None = None,
    *,
    reversal_s: Sequence[float] | None = None,
    window_s: float = REVERSAL_WINDOW_S,
    before_s: float = REVERSAL_BEFORE_S,
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
            "ratio": ("cell", ratio, {"units": "1", "long_name": "burst / before"}),
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
