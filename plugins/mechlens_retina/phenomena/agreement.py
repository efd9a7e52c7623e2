"""Agreement gate: does a model respond to the four phenomenon probes like the circuit it imitates?

A model (e.g. the retina CNN) and a ground truth (e.g. the synthetic retina it was trained on) are
shown the probe stimuli of :data:`mechlens_retina.phenomena.STIMULI` (full-field flashes of six
intensities, the omitted-flash trains, the moving bar at the slowest anticipation speed in both
directions, a third of the motion-reversal sweep), generated from the stimulus registry. Per probe stimulus:

- **responding cells**: cells present in both models whose truth response varies by >= 2 Hz
  (``RESPONDING_MIN_HZ``; max - min over time, t >= 0) in at least one condition. A phenomenon can
  only be compared where the truth has a response to compare with;
- **r**: per responding cell, Pearson r between the model's and the truth's responses over all
  conditions concatenated (t >= 0); 0 where the model's response is constant;
- **peak-time error**: per responding cell, the median over the conditions where the truth responds
  (>= 2 Hz) of |spline-refined peak time of the model - that of the truth|, ms.

A probe passes when the median r over responding cells is >= 0.8 (``R_TARGET``) and the median
peak-time error is <= 10 ms (``PEAK_ERROR_MS_MAX``, one frame); the model passes when every probe
does. Numbers from a model that agrees this well are worth comparing phenomenon by phenomenon;
below it, a phenomenon the model fails may simply be a response it never learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import SchemaError
from mechlens_retina import phenomena as ph
from mechlens_retina.metrics import pearson_1d
from mechlens_retina.phenomena.common import _conditions, _response

#: the gate: median Pearson r over responding cells, and median peak-time error, per probe
R_TARGET = 0.8
PEAK_ERROR_MS_MAX = 10.0
#: a cell responds to a probe when its truth response varies by this much (max - min over time), Hz
RESPONDING_MIN_HZ = 2.0


def probe_stimuli() -> dict[str, dict[str, Any]]:
    """The probe stimuli: name -> ``{"phenomenon": ..., "runs": [(stimulus name, parameters), ...]}``.

    The moving bar runs at the slowest anticipation speed only, both directions, and the motion
    reversal at every third reversal position of the measure (4 of 12): the rest add time, not
    information on whether the model learned the response.
    """
    reversal = ph.STIMULI["motion_reversal"]["motion-reversal"]
    return {
        "flash": {"phenomenon": "latency_coding", "runs": [("flash", ph.STIMULI["latency_coding"]["flash"])]},
        "osr": {
            "phenomenon": "omitted_stimulus_response",
            "runs": [("osr", ph.STIMULI["omitted_stimulus_response"]["osr"])],
        },
        "moving-bar": {
            "phenomenon": "motion_anticipation",
            "runs": [("moving-bar", p) for p in ph.anticipation_stimuli(ph.ANTICIPATION_SPEEDS_UM_S[:1])],
        },
        "motion-reversal": {
            "phenomenon": "motion_reversal",
            "runs": [("motion-reversal", {**reversal, "reversal_um": list(reversal["reversal_um"][::3])})],
        },
    }  # fmt: skip


def _by_condition(ds: xr.Dataset, cells: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(time (n,) s, response (n, cell) Hz) per condition, times t >= 0 only, the given cells."""
    resp = _response(ds).sel(cell=list(cells))
    t = resp["time"].values
    keep = t >= -1e-9
    return [(t[keep], r.values[keep]) for r in _conditions(resp)]


def _compare(
    model: list[tuple[np.ndarray, np.ndarray]], truth: list[tuple[np.ndarray, np.ndarray]], cells: Sequence[str]
) -> dict[str, Any]:
    """The probe's numbers from per-condition (time, response) pairs of both models."""
    responds = np.array([np.ptp(r, axis=0) >= RESPONDING_MIN_HZ for _, r in truth])  # (condition, cell)
    r_cell: dict[str, float] = {}
    err_cell: dict[str, float] = {}
    for c, cell in enumerate(cells):
        if not responds[:, c].any():
            continue
        m = np.concatenate([r[:, c] for _, r in model])
        g = np.concatenate([r[:, c] for _, r in truth])
        r_cell[str(cell)] = pearson_1d(m, g)
        errors = []
        for k, ((t, rm), (t_g, rg)) in enumerate(zip(model, truth)):
            if responds[k, c]:
                ok = np.isfinite(rm[:, c]) & np.isfinite(rg[:, c])
                tm = ph.peak_time(t[ok], rm[ok, c])[0] if ok.sum() > 0 else np.nan
                tg = ph.peak_time(t_g[ok], rg[ok, c])[0] if ok.sum() > 0 else np.nan
                errors.append(abs(tm - tg))
        err_cell[str(cell)] = 1e3 * float(np.median(errors))
    rs, errs = list(r_cell.values()), list(err_cell.values())
    r_median = float(np.median(rs)) if rs else None
    error = float(np.median(errs)) if errs and np.all(np.isfinite(errs)) else None
    passed = r_median is not None and error is not None and r_median >= R_TARGET and error <= PEAK_ERROR_MS_MAX
    return {
        "r_median": r_median,
        "r_min": float(np.min(rs)) if rs else None,
        "peak_error_ms": error,
        "cells": list(r_cell),
        "r": r_cell,
        "peak_error_ms_by_cell": err_cell,
        "passed": bool(passed),
    }


def probe_agreement(
    model: Any,
    truth: Any,
    registry: Any = None,
    *,
    probes: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Compare a model's responses to the phenomenon probes with a ground truth's.

    Parameters
    ----------
    model, truth : mechlens.interfaces.Model
        Anything with ``predict(stimulus Dataset) -> Dataset`` whose ``response`` is (time, cell) or
        (condition, time, cell) in Hz, on the stimulus's grid; cells are matched by name.
    registry : mechlens.registry.Registry, optional
        Where the stimuli are looked up (default: the process-wide registry).
    probes : mapping, optional
        Probe name -> ``{"phenomenon": str, "runs": [(stimulus name, parameters), ...]}`` (default:
        :func:`probe_stimuli`).

    Returns
    -------
    dict
        JSON-serialisable: ``{"stimuli": {probe: {"phenomenon", "r_median", "r_min",
        "peak_error_ms", "cells", "r" (cell -> r), "peak_error_ms_by_cell", "passed"}},
        "r_min_target": 0.8, "peak_error_ms_max": 10.0, "responding_min_hz": 2.0, "passed": bool,
        "model": str, "truth": str}``. Numbers that cannot be computed (no responding cell) are
        None, and that probe fails.

    Raises
    ------
    SchemaError
        If the two models have no cell name in common.
    """
    from mechlens import registry as _registry

    reg = registry or _registry.default()
    out: dict[str, Any] = {}
    for name, probe in (probes if probes is not None else probe_stimuli()).items():
        model_parts: list[tuple[np.ndarray, np.ndarray]] = []
        truth_parts: list[tuple[np.ndarray, np.ndarray]] = []
        cells: list[str] = []
        for stim_name, params in probe["runs"]:
            stim = reg.get("stimulus", stim_name)(**params).generate(0)
            m, g = model.predict(stim), truth.predict(stim)
            g_cells = [str(c) for c in g["cell"].values]
            cells = [c for c in g_cells if c in {str(x) for x in m["cell"].values}]
            if not cells:
                raise SchemaError(
                    f"probe_agreement: the model's cells {list(map(str, m['cell'].values))} and the truth's "
                    f"{g_cells} share no name; compare a model trained on the truth's cells (same cell ids)"
                )
            model_parts += _by_condition(m, cells)
            truth_parts += _by_condition(g, cells)
        out[name] = {"phenomenon": probe.get("phenomenon", name), **_compare(model_parts, truth_parts, cells)}
    return {
        "stimuli": out,
        "r_min_target": R_TARGET,
        "peak_error_ms_max": PEAK_ERROR_MS_MAX,
        "responding_min_hz": RESPONDING_MIN_HZ,
        "passed": bool(out) and all(v["passed"] for v in out.values()),
        "model": str(getattr(model, "name", type(model).__name__)),
        "truth": str(getattr(truth, "name", type(truth).__name__)),
    }


def trained_circuit(model: Any) -> dict[str, Any] | None:
    """The ``synthetic-retina`` parameters a model was trained on, read from its checkpoint's recipe.

    Parameters
    ----------
    model : mechlens.interfaces.Model
        Typically a ``retina-cnn`` made by ``mechlens_retina.training.bundle`` (its ``metadata["recipe"]``
        records ``simulate.model`` and ``simulate.model_params``).

    Returns
    -------
    dict or None
        Keyword arguments of ``SyntheticRetina`` (e.g. ``{"circuit": "v3"}``; ``{}`` for the default
        circuit), or None when the model records no recipe or was trained on another model's data, so
        that a comparison is always with the circuit the model learned from, never a default one.
    """
    recipe = getattr(model, "metadata", {}).get("recipe")
    simulate = recipe.get("simulate") if isinstance(recipe, dict) else None
    if not isinstance(simulate, dict) or simulate.get("model") != "synthetic-retina":
        return None
    params = simulate.get("model_params") or {}
    return dict(params) if isinstance(params, Mapping) else {}


#: the stimulus of :func:`timing_offset`: held-out natural scenes (seed 1; the training movies use
#: seeds derived from 0), images held 150 ms like the bundled model's training movie
TIMING_STIMULUS: tuple[str, dict[str, Any]] = ("natural-scenes", {"duration": 20.0, "image_s": 0.15})


def timing_offset(
    model: Any,
    truth: Any,
    registry: Any = None,
    *,
    stimulus: tuple[str, Mapping[str, Any]] = TIMING_STIMULUS,
    max_lag_frames: int = 5,
    seed: int = 1,
) -> dict[str, Any]:
    """How many frames a model's responses lag (or lead) the truth's, per cell: a diagnosis of the gate.

    A model whose responses are the truth's delayed by a frame or two fails the gate's peak-time
    error on every probe, however well it predicts; this tells that case apart from one that has
    learned a different response. Per cell, Pearson r between the model's response shifted by
    ``lag`` frames and the truth's, for ``|lag| <= max_lag_frames``; ``lag > 0``: the model lags.
    A diagnosis only: a model shifted back in time would see the future, so no gate or measure
    uses the shift.

    Parameters
    ----------
    model, truth : mechlens.interfaces.Model
        As in :func:`probe_agreement`.
    registry : mechlens.registry.Registry, optional
        Where the stimulus is looked up (default: the process-wide registry).
    stimulus : (str, mapping)
        Stimulus name and parameters (default :data:`TIMING_STIMULUS`).
    max_lag_frames : int
        Largest shift tried, frames.
    seed : int
        Stimulus seed.

    Returns
    -------
    dict
        JSON-serialisable: ``{"lag_frames": {cell: int}, "r_lag0": {cell: r}, "r_best": {cell: r},
        "median_lag_frames": float, "frame_period_s": float, "stimulus": str}``. Cells whose
        truth response is flat (< ``RESPONDING_MIN_HZ``) are left out.
    """
    from mechlens import registry as _registry

    reg = registry or _registry.default()
    name, params = stimulus
    stim = reg.get("stimulus", name)(**dict(params)).generate(seed)
    m, g = model.predict(stim), truth.predict(stim)
    cells = [str(c) for c in g["cell"].values if str(c) in {str(x) for x in m["cell"].values}]
    if not cells:
        raise SchemaError(
            f"timing_offset: the model's cells {list(map(str, m['cell'].values))} and the truth's "
            f"{list(map(str, g['cell'].values))} share no name; compare a model trained on the truth's cells"
        )
    (_, rm), (_, rg) = _by_condition(m, cells)[0], _by_condition(g, cells)[0]
    k = int(max_lag_frames)
    if rm.shape[0] <= 2 * k + 2:
        raise SchemaError(f"timing_offset: {rm.shape[0]} time points is too short for lags of +-{k} frames")
    lags, r0, best = {}, {}, {}
    for c, cell in enumerate(cells):
        if np.ptp(rg[:, c]) < RESPONDING_MIN_HZ:
            continue
        # model[i + lag] against truth[i]: a positive lag undoes a model that answers late
        rs = {
            lag: pearson_1d(rm[k + lag : rm.shape[0] - k + lag, c], rg[k : rg.shape[0] - k, c])
            for lag in range(-k, k + 1)
        }
        lag = max(rs, key=lambda x: (rs[x], -abs(x)))
        lags[cell], r0[cell], best[cell] = int(lag), float(rs[0]), float(rs[lag])
    return {
        "lag_frames": lags,
        "r_lag0": r0,
        "r_best": best,
        "median_lag_frames": float(np.median(list(lags.values()))) if lags else float("nan"),
        "frame_period_s": float(stim.attrs.get("frame_period_s", np.nan)),
        "stimulus": name,
    }


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def format_agreement(d: Mapping[str, Any], per_cell: bool = False) -> str:
    """A :func:`probe_agreement` result as a markdown table, one row per probe stimulus.

    Parameters
    ----------
    d : mapping
        The result of :func:`probe_agreement` (as stored in a checkpoint's ``probe_agreement``).
    per_cell : bool
        Add the table of :func:`format_agreement_cells` (one row per responding cell).
    """
    lines = [
        f"{d.get('model', 'model')} vs {d.get('truth', 'truth')}: median r >= {d['r_min_target']:g} and peak-time "
        f"error <= {d['peak_error_ms_max']:g} ms per probe: {'PASS' if d['passed'] else 'FAIL'}",
        "",
        "| probe | responding cells | r median | r min | peak error (ms) | pass |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in d["stimuli"].items():
        lines.append(
            f"| {name} | {len(s['cells'])} | {_num(s['r_median'], '.2f')} | {_num(s['r_min'], '.2f')} | "
            f"{_num(s['peak_error_ms'], '.1f')} | {'pass' if s['passed'] else 'FAIL'} |"
        )
    if per_cell:
        lines += ["", format_agreement_cells(d)]
    return "\n".join(lines)


def format_agreement_cells(d: Mapping[str, Any]) -> str:
    """One row per responding cell of a :func:`probe_agreement` result: r and peak-time error per probe.

    The error is in ms, the median over the probe's conditions; it says which cells a failing
    median rests on. A probe stored without per-cell numbers, or where the cell does not respond,
    shows ``-``.
    """
    probes = list(d["stimuli"])
    cells = sorted({c for s in d["stimuli"].values() for c in s.get("cells", [])})
    lines = [
        "| cell | " + " | ".join(f"{p}: r, peak error (ms)" for p in probes) + " |",
        "| --- |" + " --- |" * len(probes),
    ]
    for cell in cells:
        row = []
        for p in probes:
            s = d["stimuli"][p]
            r, err = s.get("r", {}).get(cell), s.get("peak_error_ms_by_cell", {}).get(cell)
            row.append("-" if r is None else f"{_num(r, '.2f')}, {_num(err, '.1f')}")
        lines.append(f"| {cell} | " + " | ".join(row) + " |")
    return "\n".join(lines)
