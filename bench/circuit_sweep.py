"""Circuit version 3: how the OFF cells' own gain control trades the moving-bar response against anticipation.

In version 3 the OFF cells (gc00-gc02) anticipate the slow moving bar by subtracting their own
delayed input (``self_inhibition`` 1.29 times the pooled delayed copy), which also cancels most of
their response to it. This varies that strength and the OFF cells' OFF-fast weight and prints, per
variant: the OFF cells' largest response swing (max - min, Hz) to the moving bar at each
anticipation speed, their lead at each speed (rightward bar, um; the measure allows down to
-0.5 x latency x speed), and the verdict of each of the four fixed measures on the circuit.
It shows why a CNN trained on version 3 is judged on OFF-cell bar responses of a few Hz
(docs/synthetic-retina.md, "Limits of version 3"). Last, the ablation table (which bipolar types
generate each phenomenon: :mod:`mechlens_retina.phenomena.ground_truth`) re-measured on the
candidate :data:`CANDIDATE`, whose OFF cells answer the slow bar about 4x more strongly: adopted as
circuit version 4 (``SyntheticRetina(circuit="v4")``, ``synthetic.V4_OFF``).

Usage: python bench/circuit_sweep.py  (about 2 minutes)
"""

from __future__ import annotations

import time

import numpy as np
from mechlens_retina import phenomena as ph
from mechlens_retina.models import synthetic as sy

from mechlens import registry

#: (OFF cells' self_inhibition, OFF cells' OFF-fast weight); the first row is version 3 itself
VARIANTS = ((1.29, 7.65), (1.1, 7.65), (0.9, 7.65), (0.7, 7.65), (0.0, 7.65), (1.29, 15.3), (1.2, 15.3))
#: the variant whose ablation table is re-measured: circuit version 4
CANDIDATE = (sy.V4_OFF["self_inhibition"], sy.V4_OFF["OFF-fast"])


def variant(self_inhibition: float, weight: float) -> sy.CircuitSpec:
    """Version 3 with the OFF ganglion cells' own gain control and OFF-fast weight replaced."""
    return sy.with_off_cells(sy.expressible_spec(), self_inhibition, weight)


def main() -> None:
    reg = registry.default()
    t0 = time.perf_counter()
    speeds = ph.ANTICIPATION_SPEEDS_UM_S
    print(
        "| OFF self_inhibition | OFF-fast weight | OFF bar swing (Hz) at "
        + ", ".join(f"{s:g}" for s in speeds)
        + " um/s | lead (um) | latency, OSR, anticipation, reversal |"
    )
    print("| --- | --- | --- | --- | --- |")
    for k, w in VARIANTS:
        model = sy.SyntheticRetina(spec=variant(k, w), circuit="v3")
        off = [i for i, kind in enumerate(model.cell_kind) if kind == "OFF"]
        swing = []
        for params in ph.anticipation_stimuli(speeds):
            r = model.predict(reg.get("stimulus", "moving-bar")(**params).generate(0))["response"]
            swing.append(float((r.max("time") - r.min("time")).isel(cell=off).max()))
        res = ph.measure_all(model)
        lead = res["motion_anticipation"]["lead_by_speed"].isel(direction=0, cell=off[0]).values
        verdicts = ", ".join("pass" if ph.verdict(res[m]) else "FAIL" for m in ph.MEASURES)
        print(
            f"| {k:g} | {w:g} | {' / '.join(f'{s:.1f}' for s in swing)} | "
            f"{' / '.join(f'{x:+.0f}' for x in np.asarray(lead))} | {verdicts} |",
            flush=True,
        )
    from mechlens_retina.phenomena.ground_truth import MECHANISMS, TYPES

    spec = variant(*CANDIDATE)
    print(f"\nablation table on the candidate (self_inhibition {CANDIDATE[0]:g}, OFF-fast weight {CANDIDATE[1]:g}):")
    print("| phenomenon | generating types | intact | named types silenced | all others silenced | holds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, mech in MECHANISMS.items():
        others = [t for t in TYPES if t not in mech.types]

        def shown(silence: list[str], name: str = name) -> bool:
            model = sy.SyntheticRetina(spec=spec, circuit="v3", silence=silence)
            return ph.verdict(ph.measure_all(model, only=[name])[name])

        intact, named, rest = shown([]), shown(list(mech.types)), shown(others)
        word = {True: "shown", False: "abolished"}
        print(
            f"| {name.replace('_', ' ')} | {', '.join(mech.types)} | {word[intact]} | {word[named]} | {word[rest]} | "
            f"{'yes' if intact and not named and rest else 'NO'} |",
            flush=True,
        )
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
