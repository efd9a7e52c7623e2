"""Mechanism recovery on the synthetic retina: one score per phenomenon.

The bundled retina-cnn was trained on the synthetic retina's responses to natural scenes. For each
phenomenon, both models are attributed (integrated gradients, the CNN at ``conv1``, the synthetic
retina at ``bipolar``) on the same stimulus; CNN channels are matched to the synthetic retina's
bipolar types by activation correlation under white noise, the CNN's attributions are pooled per
matched type, and the (time x type) attribution of each cell is correlated with the ground truth's.
The score is the median over cells of that Pearson r (1 = the same mechanism, 0 = unrelated).

Also printed: a control score for a randomly initialised CNN of the same architecture, which says how
much of the agreement comes from the stimulus alone.

Usage: python bench/recovery.py [--checkpoint PATH] [--steps N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mechlens_retina.phenomena import STIMULI
from mechlens_retina.recovery import compare, match_by_labels, match_types, recovery_score, type_groups

from mechlens import registry

#: one stimulus per phenomenon (the first condition of a sweep is scored)
PHENOMENA = {
    "latency coding": ("flash", {**STIMULI["latency_coding"]["flash"], "intensity": -2.0}),
    "omitted stimulus response": ("osr", {**STIMULI["omitted_stimulus_response"]["osr"], "period": 0.1}),
    "motion anticipation": ("moving-bar", STIMULI["motion_anticipation"]["moving-bar"]),
    "motion reversal": ("motion-reversal", {**STIMULI["motion_reversal"]["motion-reversal"], "reversal_um": 0.0}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="bundled", help="retina-cnn checkpoint (default: bundled)")
    parser.add_argument("--steps", type=int, default=64, help="Gauss-Legendre nodes per time point")
    args = parser.parse_args()

    truth = registry.get("model", "synthetic-retina")()
    cnn_cls = registry.get("model", "retina-cnn")
    cnn = cnn_cls(checkpoint=args.checkpoint)
    control = cnn_cls(checkpoint="random", n_cells=len(cnn.cells), seed=1)
    attributor = registry.get("attributor", "integrated-gradients")(n_steps=args.steps)
    _, names = type_groups(truth)

    probe = registry.get("stimulus", "natural-scenes")(duration=30.0).generate(1)
    match = match_types(cnn, "conv1", truth, "bipolar", probe=probe)
    control_match = match_types(control, "conv1", truth, "bipolar", probe=probe)
    print("matching: activation correlation under 30 s of natural scenes (seed 1, not the training movie):")
    print("  the truth's centre unit against the best CNN unit within 6 px of the centre")
    labels = match_by_labels(cnn, "conv1", truth)
    control_labels = match_by_labels(control, "conv1", truth)
    groups, _ = type_groups(truth)
    for c, (k, r, lab) in enumerate(zip(match.assignment, match.strength(), labels.assignment)):
        by_label = names[lab] if lab >= 0 else "(no such type)"
        print(f"  conv1 channel {c} -> {names[k]:<9} r = {r:.2f}   by STA label: {by_label}")

    print(
        f"\n{'phenomenon':<28}{'by corr':>8}{'control':>9}{'by label':>9}{'control':>9}{'seconds':>9}"
        "   (median Pearson r over cells)"
    )
    for name, (stim_name, params) in PHENOMENA.items():
        t0 = time.perf_counter()
        stim = registry.get("stimulus", stim_name)(**params).generate(0)
        score, cnn_ds, truth_ds = compare(cnn, truth, stim, attributor, match)
        ctrl, ctrl_ds, _ = compare(control, truth, stim, attributor, control_match)
        a, b, a0 = cnn_ds["attribution"], truth_ds["attribution"], ctrl_ds["attribution"]
        if "condition" in a.dims:
            a, b, a0 = a.isel(condition=0), b.isel(condition=0), a0.isel(condition=0)
        lab = recovery_score(a, b, labels, groups)
        lab0 = recovery_score(a0, b, control_labels, groups)
        medians = [np.nanmedian(x.values) for x in (score, ctrl, lab, lab0)]
        cols = "".join(f"{m:{w}.2f}" for m, w in zip(medians, (8, 9, 9, 9)))
        print(f"{name:<28}{cols}{time.perf_counter() - t0:9.1f}")
        per_cell = " ".join(f"{c}={v:.2f}" for c, v in zip(lab["cell"].values, lab.values))
        print(f"    by label, per cell: {per_cell}")


if __name__ == "__main__":
    main()
