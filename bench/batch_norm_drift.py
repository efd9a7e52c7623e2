"""Does training keep a CNN that *is* the circuit? With batch statistics it does not; frozen, it does.

The version-3 synthetic retina is exactly a ``retina-cnn`` (:func:`mechlens_retina.models.circuit_cnn.as_cnn`),
so on its own responses that CNN is the global optimum of the Poisson loss: any training step from it
can only make the evaluated model worse. This script starts training there (batch norms re-expressed
at the data's statistics, :func:`~mechlens_retina.models.circuit_cnn.at_data_statistics`, so a
train-mode pass starts close to the circuit) and trains it on the circuit's responses to natural
scenes, the bundled recipe's movie, twice with the same seed and learning rate:

- **batch statistics** (``freeze_bn_epoch=0``, the published recipe): each training step normalises
  every unit by the batch's mean and spread, so the function the gradient improves is not the one
  that is evaluated;
- **frozen** (``freeze_bn_epoch=1``): the running statistics are held and used in training too, so
  training optimises the evaluated function (the batch norms' scale and shift still learn).

Per run it prints the validation loss (the start's, then each epoch's), the probe-agreement gate of
the weights training hands back (median r and peak-time error per probe) and the OFF cells' peak-time
error on the flashes. The frozen run is the control: it must stay at the start (gate errors near
0 ms, loss within Adam's noise of the start's); the batch-statistics run is the finding.

Usage: python bench/batch_norm_drift.py [--minutes 10] [--epochs 2] [--lr 1e-4] [--threads 2]
(about 5 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from mechlens_retina.models.circuit_cnn import as_cnn, at_data_statistics
from mechlens_retina.models.cnn import RetinaCNN
from mechlens_retina.models.synthetic import SyntheticRetina
from mechlens_retina.phenomena.agreement import probe_agreement
from mechlens_retina.training.fit import train
from mechlens_retina.training.simulate import simulate

from mechlens import registry

#: the movie of the version-3 runs in docs/retina-walkthrough.md
STIMULUS = {"image_s": 0.15, "drift_um_s": 1000.0, "flicker": 0.7}
OFF_CELLS = ("gc00", "gc01", "gc02")


def start_model(path: Path, n_windows: int = 1024, seed: int = 9) -> None:
    """The circuit as a CNN, batch norms at the statistics of natural-scene windows, written to ``path``."""
    movie = registry.get("stimulus", "natural-scenes")(duration=30.0, **STIMULUS).generate(seed)
    frames = movie["stimulus"].transpose("time", "y", "x").values.astype(np.float32)
    ends = np.random.default_rng(seed).choice(np.arange(39, len(frames)), n_windows, replace=False)
    windows = np.stack([frames[e - 39 : e + 1] for e in ends])
    cnn = at_data_statistics(as_cnn(), windows)
    # the circuit takes contrast as it comes: training's z-scoring must be the identity
    cnn.metadata.update(stimulus_mean=0.0, stimulus_std=1.0)
    cnn.save(path)


def gate_summary(gate: dict[str, Any]) -> tuple[str, str]:
    """(per probe 'r, ms' cells, the OFF cells' flash peak-time errors)."""
    probes = gate["stimuli"]
    cells = " | ".join(f"{v['r_median']:.2f}, {v['peak_error_ms']:.1f}" for v in probes.values())
    off = probes["flash"]["peak_error_ms_by_cell"]
    return cells, ", ".join(f"{off[c]:.1f}" for c in OFF_CELLS if c in off)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of training movie (default 10)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    truth = SyntheticRetina(circuit="v3")
    with tempfile.TemporaryDirectory() as tmp:
        start, data = Path(tmp) / "circuit.safetensors", Path(tmp) / "scenes.h5"
        start_model(start)
        simulate(
            truth,
            registry.get("stimulus", "natural-scenes"),
            data,
            minutes=args.minutes,
            test_minutes=0.5,
            repeats=2,
            seed=5,
            compression="none",
            stimulus_params=STIMULUS,
            progress=False,
        )
        # the CPU recipe of the version-3 runs (batch 256, regularisation off), seed 0
        base = {"lr": args.lr, "epochs": args.epochs, "batch_size": 256, "l2": 0.0, "l1": 0.0, "noise": 0.0}
        base.update(threads=args.threads, init_from=str(start))
        # the start's validation loss: one step at a vanishing rate with the statistics held
        _, m0 = train(data, {**base, "lr": 1e-12, "epochs": 1, "max_steps": 1, "freeze_bn_epoch": 1}, progress=False)
        rows = [("start: the circuit itself", [m0["history"][0]["val_loss"]], RetinaCNN(checkpoint=str(start)))]
        for label, freeze in (("batch statistics (published recipe)", 0), ("frozen statistics (control)", 1)):
            model, metrics = train(data, {**base, "freeze_bn_epoch": freeze}, progress=False)
            losses = [h["val_loss"] for h in metrics["history"]]
            rows.append((f"{label}, best epoch {metrics['best_epoch']}", losses, model))
        print(
            f"Training from the circuit written into the CNN: {args.minutes:g} min of scenes, lr {args.lr:g}, "
            f"{args.epochs} epochs, batch 256\n"
        )
        print(
            "| run | validation loss (per epoch) | flash | osr | moving-bar | motion-reversal "
            "| OFF cells' flash error (ms) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for label, losses, model in rows:
            probes, off = gate_summary(probe_agreement(model, truth))
            print(f"| {label} | {', '.join(f'{v:.2f}' for v in losses)} | {probes} | {off} |")
    print(f"\n(gate cells: median r, peak-time error in ms; {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
