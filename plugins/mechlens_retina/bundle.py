"""Reproduce the bundled retina-cnn checkpoint from scratch (``make train-default``).

1. ``mechlens simulate``: the synthetic retina's responses to jittered natural scenes, written in
   the published HDF5 layout (noise-free rates; test split with Poisson repeats).
2. ``mechlens train``: the batch-norm CNN of the paper fitted to them, seeded and deterministic.
3. The checkpoint and its JSON metadata go to ``mechlens_retina/data/default.{pt,json}``.

Run with ``python -m mechlens_retina.bundle [--minutes N] [--epochs N] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mechlens_retina.cnn import BUNDLED

#: the recipe of the bundled model; recorded in its metadata
RECIPE = {
    "simulate": {
        "model": "synthetic-retina",
        "stimulus": "natural-scenes",
        "minutes": 15.0,
        "test_minutes": 2.0,
        "repeats": 5,
        "seed": 0,
    },
    "train": {
        "epochs": 3,
        "batch_size": 256,
        "lr": 5e-3,
        "seed": 0,
        "schedule": "plateau",
        "lr_patience": 1,
        "patience": 2,
        "val_fraction": 0.05,
    },
}


def main(argv: list[str] | None = None) -> int:
    """Simulate, train and write the bundled checkpoint; prints the metrics and the time taken."""
    from mechlens import registry
    from mechlens_retina.simulate import simulate
    from mechlens_retina.training import describe, train

    parser = argparse.ArgumentParser(prog="python -m mechlens_retina.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=RECIPE["simulate"]["minutes"], help="training movie, min")
    parser.add_argument("--epochs", type=int, default=RECIPE["train"]["epochs"], help="training epochs")
    parser.add_argument("--workdir", type=Path, default=Path("build/bundle"), help="where the recording goes")
    parser.add_argument("--reuse", action="store_true", help="reuse a recording already in --workdir")
    parser.add_argument("-o", "--output", type=Path, default=BUNDLED, help="checkpoint to write")
    args = parser.parse_args(argv)

    sim = dict(RECIPE["simulate"], minutes=args.minutes)
    params = dict(RECIPE["train"], epochs=args.epochs)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / "synthetic_naturalscene.h5"
    t0 = time.perf_counter()
    if args.reuse and data.is_file():
        print(f"reusing the recording {data} (simulation is deterministic under its seed)")
    else:
        truth = registry.get("model", sim["model"])()
        simulate(
            truth,
            registry.get("stimulus", sim["stimulus"]),
            data,
            minutes=sim["minutes"],
            test_minutes=sim["test_minutes"],
            repeats=sim["repeats"],
            seed=sim["seed"],
        )
    t_sim = time.perf_counter() - t0
    model, metrics = train(data, params)
    t_train = time.perf_counter() - t0 - t_sim
    model.metadata["recipe"] = {"simulate": sim, "train": params}
    model.metadata["build_seconds"] = {"simulate": round(t_sim, 1), "train": round(t_train, 1)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)
    print(describe(metrics, model.cells))
    print(f"simulate {t_sim:.0f} s, train {t_train:.0f} s; wrote {args.output}")
    print(json.dumps(model.metadata.get("metrics", {}), default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
