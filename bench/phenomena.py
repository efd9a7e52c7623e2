"""The four phenomena on the circuit and on the CNN trained on it, and how closely the CNN's responses agree.

For each phenomenon: the synthetic retina's measure (the circuit, i.e. the ground truth) and its
verdict, the retina CNN's measure and verdict (``mechlens_retina.phenomena.measure_all``: the
targets are in that module's docstring), and the CNN-vs-circuit agreement on that phenomenon's probe
stimulus (``mechlens_retina.phenomena.agreement.probe_agreement``: median Pearson r over responding cells and
median peak-time error), and a timing diagnosis (``timing_offset``: by how many frames the
CNN's responses to held-out natural scenes lag the circuit's). A measure's numbers are those of its
best cell (a passing cell if any); motion reversal is judged on the population. Prints one markdown
table, paste-able into docs, and the run time; works whatever the CNN fails.

Usage: python bench/phenomena.py [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import xarray as xr
from mechlens_retina.phenomena import measure_all
from mechlens_retina.phenomena.agreement import (
    PEAK_ERROR_MS_MAX,
    R_TARGET,
    format_agreement_cells,
    probe_agreement,
    timing_offset,
    trained_circuit,
)

from mechlens import registry

#: phenomenon -> its agreement probe
PROBE = {
    "latency_coding": "flash",
    "omitted_stimulus_response": "osr",
    "motion_anticipation": "moving-bar",
    "motion_reversal": "motion-reversal",
}


def _best(ds: xr.Dataset, score: np.ndarray, lowest: bool) -> int | None:
    """The best cell: a passing one if any, by ``score`` (NaN last); None when every score is NaN."""
    passed = ds["passed"].values.astype(bool)
    order = np.where(np.isfinite(score), score if lowest else -score, np.inf)
    order = np.where(passed, order - 1e12, order)  # passing cells first
    i = int(np.argmin(order))
    return i if np.isfinite(score[i]) else None


def summary(name: str, ds: xr.Dataset) -> tuple[str, str]:
    """(the measure's numbers, the verdict) of one phenomenon, as short table cells."""
    n = f"{ds.attrs.get('n_passed', 0)}/{ds.sizes['cell']} cells"
    verdict = f"{'pass' if ds.attrs.get('passed') else 'FAIL'} ({n})"
    if name == "latency_coding":
        i = _best(ds, ds["rho"].values, lowest=True)
        if i is None:
            return "no cell responds to >= 3 intensities", verdict
        return (
            f"{ds['cell'].values[i]}: rho {ds['rho'].values[i]:+.2f}, shift {ds['shift'].values[i] * 1e3:.0f} ms",
            verdict,
        )
    if name == "omitted_stimulus_response":
        # only a cell with an OSR at every period has a meaningful spread
        every = np.isfinite(ds["latency"].values).all(axis=0)
        i = _best(ds, np.where(every, ds["latency_spread"].values, np.nan), lowest=True)
        if i is None:
            most = int(np.isfinite(ds["latency"].values).sum(axis=0).max())
            return f"no cell has an OSR peak at every period (at most {most}/{ds.sizes['condition']})", verdict
        ratio, steady = np.min(ds["ratio"].values[:, i]), np.min(ds["steady"].values[:, i])
        return (
            f"{ds['cell'].values[i]}: spread {ds['latency_spread'].values[i] * 1e3:.0f} ms, slope "
            f"{ds['slope'].values[i]:.2f}, ratio >= {ratio:.1f}, steady >= {steady:.1f} Hz",
            verdict,
        )
    if name == "motion_anticipation":
        i = _best(ds, ds["lead"].values, lowest=False)
        if i is None:
            return "no cell with a flashed-bar RF", verdict
        lead = ds["lead_by_speed"].values[:, :, i].min(axis=1)
        leads = ", ".join(f"{s:g}: {x:.0f}" for s, x in zip(ds["speed"].values, lead))
        return f"{ds['cell'].values[i]}: lead um at um/s {leads}", verdict
    if name == "motion_reversal":
        pop = "pass" if ds.attrs.get("population_passed") else "FAIL"
        return (
            f"population ratio {ds.attrs['population_ratio']:.2f}, burst-time spread "
            f"{ds.attrs['burst_time_spread'] * 1e3:.0f} ms",
            f"{pop} (population; {n} by ratio)",
        )
    return "", verdict


def _agreement_cells(s: dict[str, Any]) -> tuple[str, str]:
    r = "-" if s["r_median"] is None else f"{s['r_median']:.2f} (min {s['r_min']:.2f})"
    err = "-" if s["peak_error_ms"] is None else f"{s['peak_error_ms']:.0f}"
    return f"{r}, {len(s['cells'])} cells", f"{err} {'pass' if s['passed'] else 'FAIL'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="bundled", help="retina-cnn checkpoint (default: bundled)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    cnn = registry.get("model", "retina-cnn")(checkpoint=args.checkpoint)
    # the circuit the CNN was trained on (its recipe), e.g. {"circuit": "v3"}; the default one otherwise
    circuit_params = trained_circuit(cnn) or {}
    truth = registry.get("model", "synthetic-retina")(**circuit_params)
    seconds = {}
    t = time.perf_counter()
    circuit = measure_all(truth)
    seconds["circuit"] = time.perf_counter() - t
    t = time.perf_counter()
    model = measure_all(cnn)
    seconds["CNN"] = time.perf_counter() - t
    t = time.perf_counter()
    agree = probe_agreement(cnn, truth)
    seconds["agreement"] = time.perf_counter() - t
    t = time.perf_counter()
    offset = timing_offset(cnn, truth)
    seconds["timing"] = time.perf_counter() - t

    print(
        f"| phenomenon | circuit (synthetic-retina {circuit_params or 'default'}) | circuit | "
        f"CNN ({args.checkpoint}) | CNN | "
        f"CNN vs circuit r (median over cells) | peak-time error ms (<= {PEAK_ERROR_MS_MAX:g}) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, probe in PROBE.items():
        c_value, c_verdict = summary(name, circuit[name])
        m_value, m_verdict = summary(name, model[name])
        r, err = _agreement_cells(agree["stimuli"][probe])
        print(f"| {name.replace('_', ' ')} | {c_value} | {c_verdict} | {m_value} | {m_verdict} | {r} | {err} |")
    print(
        f"\nagreement gate (median r >= {R_TARGET:g} and peak-time error <= {PEAK_ERROR_MS_MAX:g} ms on every probe): "
        f"{'PASS' if agree['passed'] else 'FAIL'}"
    )
    # per cell: which cells a failing median rests on
    print(f"\n{format_agreement_cells(agree)}\n")
    lags = ", ".join(
        f"{c} {offset['lag_frames'][c]:+d} (r {offset['r_lag0'][c]:.2f} -> {offset['r_best'][c]:.2f})"
        for c in offset["lag_frames"]
    )
    print(
        f"timing diagnosis (held-out {offset['stimulus']}, not a gate): CNN lag behind the circuit, frames of "
        f"{offset['frame_period_s'] * 1e3:g} ms, median {offset['median_lag_frames']:+g}; per cell {lags}"
    )
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    print(f"total run time {time.perf_counter() - t0:.1f} s ({parts})")


if __name__ == "__main__":
    main()
