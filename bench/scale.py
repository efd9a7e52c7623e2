"""Scale-out: one process vs a LocalCluster of ``--workers`` processes on the same attribution.

Run: ``.venv/bin/python bench/scale.py [--seconds 20] [--workers 2] [--attributor integrated-gradients]
[--steps 64] [--parts 0]``.

The model is the bundled retina CNN (``retina-cnn``), the stimulus ``white-noise`` of ``--seconds``
seconds (100 time points per second: 20 s = 2,000 time points), attributed to the first layer for
every cell. The serial run is ``mechlens.run`` in this process (torch with its default threads);
the parallel one is ``mechlens.run(..., client=...)`` on a LocalCluster of ``--workers``
single-threaded worker processes, timed from a started, warm cluster (workers have imported torch
and loaded the model once, as a cluster that has run before; the start-up is printed apart).
The two results are compared (largest absolute difference of the attribution) and the speed-up
printed. The machine may be shared: the load average is printed with the times.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _warm(model: str) -> None:
    import mechlens_attribution.integrated  # noqa: F401

    from mechlens.distributed import recipe_of, worker_model
    from mechlens.pipeline import load_model

    worker_model(recipe_of(model, {}, None), load_model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="white noise after time 0 (s); 20 s = 2,000 points")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="retina-cnn")
    ap.add_argument("--attributor", default="integrated-gradients")
    ap.add_argument("--steps", type=int, default=64, help="integrated-gradients n_steps (0: adaptive, far slower)")
    ap.add_argument("--parts", type=int, default=0, help="parts (0: the default, 2 per worker)")
    args = ap.parse_args()

    import mechlens
    from mechlens.distributed import engine

    attr_params = {"n_steps": args.steps} if "integrated" in args.attributor and args.steps else {}
    kw = {
        "stimulus_params": {"duration": args.seconds, "distribution": "gaussian"},
        "attributor_params": attr_params,
        "seed": 1,
    }
    import torch

    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, torch threads here {torch.get_num_threads()}")
    t0 = time.perf_counter()
    serial = mechlens.run(args.model, "white-noise", args.attributor, **kw)
    t_serial = time.perf_counter() - t0
    n_points = int(serial["response"].notnull().all("cell").sum())
    print(
        f"one process: {t_serial:.1f} s for {n_points} attributed time points of {serial.sizes['cell']} cells, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    t0 = time.perf_counter()
    with engine(workers=args.workers) as client:
        # warm workers, as a cluster that has run before: imports and the model loaded once per worker
        client.run(_warm, args.model)
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        parts = args.parts or None
        spread = mechlens.run(args.model, "white-noise", args.attributor, client=client, n_parts=parts, **kw)
        t_spread = time.perf_counter() - t0
    diff = float(np.nanmax(np.abs(spread["attribution"].values - serial["attribution"].values)))
    scale = float(np.nanmax(np.abs(serial["attribution"].values)))
    print(
        f"--workers {args.workers}: {t_spread:.1f} s (cluster start {t_start:.1f} s, not counted), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"max |difference| of the attribution: {diff:.3g} Hz (largest |attribution| {scale:.3g} Hz)")
    print(f"speed-up: {t_serial / t_spread:.2f}x  (with the cluster start: {t_serial / (t_spread + t_start):.2f}x)")


if __name__ == "__main__":
    main()
