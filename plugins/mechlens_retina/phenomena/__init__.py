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

This package module runs the four on a model with the paper's stimuli (:func:`measure_all`) and prints them;
each measure is a module of its own (``latency``, ``osr``, ``anticipation``,
``reversal``), with the targets in ``targets`` and what they share (response access,
peak timing, summaries) in ``common``; their public names are re-exported here. The package also holds
the probe-agreement gate (``agreement``) and the circuit's ablation table (``ground_truth``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from mechlens_retina.phenomena.anticipation import motion_anticipation, receptive_fields
from mechlens_retina.phenomena.common import _fmt, centroid_time, half_max_lobe, peak_time
from mechlens_retina.phenomena.latency import latency_coding
from mechlens_retina.phenomena.osr import omitted_stimulus_response
from mechlens_retina.phenomena.reversal import motion_reversal
from mechlens_retina.phenomena.targets import (
    ANTICIPATION_DIRECTIONS,
    ANTICIPATION_LAG_FRACTION,
    ANTICIPATION_SPEEDS_UM_S,
    LATENCY_MIN_INTENSITIES,
    LATENCY_RHO_MAX,
    LATENCY_SHIFT_MIN_S,
    OSR_LATENCY_TOL_S,
    OSR_MARGIN_FRACTION,
    OSR_MARGIN_HZ,
    OSR_PERIOD_SPAN_S,
    OSR_RATIO_MIN,
    OSR_SLOPE_MIN,
    OSR_STEADY_MIN_HZ,
    REVERSAL_RATIO_MIN,
    REVERSAL_SPREAD_MAX_S,
    REVERSAL_WINDOW_S,
)

__all__ = [
    "ANTICIPATION_DIRECTIONS",
    "ANTICIPATION_LAG_FRACTION",
    "ANTICIPATION_SPEEDS_UM_S",
    "LATENCY_MIN_INTENSITIES",
    "LATENCY_RHO_MAX",
    "LATENCY_SHIFT_MIN_S",
    "MEASURES",
    "OSR_LATENCY_TOL_S",
    "OSR_MARGIN_FRACTION",
    "OSR_MARGIN_HZ",
    "OSR_PERIOD_SPAN_S",
    "OSR_RATIO_MIN",
    "OSR_SLOPE_MIN",
    "OSR_STEADY_MIN_HZ",
    "REVERSAL_RATIO_MIN",
    "REVERSAL_SPREAD_MAX_S",
    "REVERSAL_WINDOW_S",
    "STIMULI",
    "anticipation_stimuli",
    "centroid_time",
    "format_report",
    "half_max_lobe",
    "latency_coding",
    "main",
    "measure_all",
    "motion_anticipation",
    "motion_reversal",
    "omitted_stimulus_response",
    "peak_time",
    "receptive_fields",
    "report",
    "verdict",
]

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
        from mechlens_retina.models.synthetic import SyntheticRetina

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
