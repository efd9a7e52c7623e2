"""How precise must a model be to pass the agreement gate? The circuit against itself, one constant changed.

The agreement gate (``mechlens_retina.phenomena.agreement``) asks a model to reproduce each probe
with median r >= 0.8 and peak times within 10 ms. This script scores copies of a circuit version
with one constant scaled by a few per cent against the unchanged circuit, with the same gate, and
prints each probe's median r and peak-time error and the OFF cells' moving-bar numbers. A probe whose
peak moves by a whole comb period (one pixel of the bar's path, 125 ms at 440 um/s) when a constant
moves by 3 % asks a trained model for that precision: the OFF cells' moving-bar response is what is
left of their pooled excitation after their own delayed inhibition (``self_inhibition``) takes away
nearly all of it (docs/training.md, "How precise the moving-bar gate is").

Usage: python bench/gate_conditioning.py [--circuit v5] [--factors 0.97 1.03 ...]  (10-20 s per factor)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from mechlens_retina.models import synthetic as sy
from mechlens_retina.phenomena.agreement import probe_agreement

#: the circuit versions with their spec functions
SPECS: dict[str, Callable[[], sy.CircuitSpec]] = {
    "v3": sy.expressible_spec,
    "v4": sy.bar_spec,
    "v5": sy.burst_spec,
}


def _cells(spec: sy.CircuitSpec, kind: str, change: Callable[[Any], Any]) -> sy.CircuitSpec:
    return replace(spec, cells=tuple(change(c) if c.kind == kind else c for c in spec.cells))


def _type(spec: sy.CircuitSpec, name: str, change: Callable[[Any], Any]) -> sy.CircuitSpec:
    return replace(spec, types=tuple(change(t) if t.name == name else t for t in spec.types))


#: constant -> how a factor changes it: the OFF cells' balance (their delayed inhibition against their
#: excitation), then their overall gain (excitation and inhibition together: the balance kept), then the
#: time constant of the OFF-fast delayed copy
CONSTANTS: dict[str, Callable[[sy.CircuitSpec, float], sy.CircuitSpec]] = {
    "OFF cells' self_inhibition": lambda s, f: _cells(
        s, "OFF", lambda c: replace(c, self_inhibition=c.self_inhibition * f)
    ),
    "OFF cells' OFF-fast weight": lambda s, f: _cells(
        s, "OFF", lambda c: replace(c, weights={**c.weights, "OFF-fast": c.weights["OFF-fast"] * f})
    ),
    "OFF-fast delayed copy's tau_s": lambda s, f: _type(s, "OFF-fast", lambda t: replace(t, tau_s=t.tau_s * f)),
}  # fmt: skip


def conditioning(circuit: str, factors: Sequence[float]) -> list[dict[str, Any]]:
    """One row per (constant, factor): the gate of the changed circuit against ``circuit``.

    Returns
    -------
    list of dict
        ``constant``, ``factor``, ``probes`` (probe -> (median r, peak-time error in ms, passed)) and
        ``off_bar`` (OFF cell -> (r, peak-time error in ms) on the moving bar).
    """
    if circuit not in SPECS:
        raise SystemExit(f"--circuit {circuit}: choose one of {sorted(SPECS)}")
    truth = sy.SyntheticRetina(circuit=circuit)
    off = [c for c, kind in zip(truth.cells, truth.cell_kind, strict=True) if kind == "OFF"]
    rows = []
    for name, change in CONSTANTS.items():
        for f in factors:
            model = sy.SyntheticRetina(spec=change(SPECS[circuit](), float(f)), circuit=circuit)
            gate = probe_agreement(model, truth)
            probes = {p: (d["r_median"], d["peak_error_ms"], bool(d["passed"])) for p, d in gate["stimuli"].items()}
            bar = gate["stimuli"]["moving-bar"]
            rows.append(
                {
                    "constant": name,
                    "factor": float(f),
                    "probes": probes,
                    "off_bar": {c: (bar["r"].get(c), bar["peak_error_ms_by_cell"].get(c)) for c in off},
                }
            )
    return rows


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--circuit", default="v5", help="circuit version (v3, v4, v5)")
    ap.add_argument("--factors", type=float, nargs="+", default=[0.97, 0.98, 1.02, 1.03, 1.05])
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = conditioning(args.circuit, args.factors)
    probes = list(rows[0]["probes"])
    off = list(rows[0]["off_bar"])
    print(f"circuit {args.circuit} against itself with one constant scaled (gate: median r, peak error ms)\n")
    print("| constant | factor | " + " | ".join(probes) + " | OFF cells on the moving bar: " + ", ".join(off) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in probes) + " | --- |")
    for row in rows:
        cells = "; ".join(f"{_fmt(r, '.2f')}, {_fmt(e, '.1f')}" for r, e in row["off_bar"].values())
        gate = " | ".join(
            f"{_fmt(r, '.2f')}, {_fmt(e, '.1f')}{'' if ok else ' FAIL'}" for r, e, ok in row["probes"].values()
        )
        print(f"| {row['constant']} | x{row['factor']:g} | {gate} | {cells} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
