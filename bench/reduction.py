"""Time the whole reduction: 1000 time points, 8 cells, 8 cell types, each reducer with and without a model.

Run: ``.venv/bin/python bench/reduction.py [--repeats 5]``. Prints seconds per ``reduce`` call
(median over repeats, after one warm-up call that pays the scikit-learn/torch import), measured side by
side in one run. The target is "well under a second" per reducer.

- "no model": a synthetic attribution (3 planted types, 5 weak ones) of shape (1000, 8, 8).
- "model": ToyCNN with 8 first-layer channels and 8 cells on 1000 frames of white noise; its
  attribution is the one-step linear-path estimate (values only need the right shape and scale here).
  This adds the reduced model (two forward passes of the upper layers over 1000 windows) and, with
  ``characterise``, the STA of the 8 types.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import xarray as xr
from mechlens_reduction.celltypes import CellTypes
from mechlens_reduction.factorise import NMFReducer, PCAReducer

from mechlens.schema import time_coord
from mechlens.testing import merged, noise_stimulus
from mechlens.toymodels import ToyCNN

N_T, N_CELL, N_TYPE = 1000, 8, 8


def synthetic() -> xr.Dataset:
    """(time, cell, unit_channel) attribution with planted structure and exact completeness."""
    rng = np.random.default_rng(0)
    t = np.arange(N_T) * 0.01
    a = rng.standard_normal((N_T, N_CELL, N_TYPE)) * 0.05
    for ch, (centre, amp) in zip((1, 4, 6), ((2.0, 3.0), (5.0, -2.0), (7.5, 1.5))):
        a[:, :, ch] += amp * np.exp(-0.5 * ((t - centre) / 0.3) ** 2)[:, None] * rng.uniform(0.5, 1.5, N_CELL)
    coords = {"time": time_coord(N_T, 0.01), "cell": [f"gc{i:02d}" for i in range(N_CELL)], "unit_channel": range(8)}
    attr = xr.DataArray(a.astype(np.float32), dims=("time", "cell", "unit_channel"), coords=coords)
    base = xr.DataArray(np.full(N_CELL, 2.0, np.float32), dims="cell")
    resp = base + attr.sum("unit_channel")
    return xr.Dataset(
        {"attribution": attr, "response": resp, "baseline_response": base, "completeness_error": resp * 0}
    )


def with_model() -> tuple[ToyCNN, xr.Dataset]:
    """ToyCNN (8 channels, 8 cells) on 1000 frames of noise, with a one-step linear-path attribution."""
    model = ToyCNN(history=10, size=16, channels=N_TYPE, kernel=5, channels2=4, kernel2=3, n_cells=N_CELL)
    stim = noise_stimulus(model, n_times=N_T)
    below, above = model.split("conv1")
    x = model.windows(stim["stimulus"]).contiguous()
    z0 = below(torch.zeros((1, *x.shape[1:]))).detach()
    z = below(x).detach()
    mid = (z0 + 0.5 * (z - z0)).requires_grad_(True)
    out = above(mid)
    grads = [torch.autograd.grad(out[:, j].sum(), mid, retain_graph=True)[0] for j in range(N_CELL)]
    a = (torch.stack(grads, 1) * (z - z0)[:, None]).sum((3, 4)).numpy()
    with torch.no_grad():
        resp, r0 = above(z).numpy(), above(z0).numpy()[0]
    t = model.time_of_outputs(stim["stimulus"])
    coords = {"time": t, "cell": model.cells, "unit_channel": range(N_TYPE)}
    attr = xr.DataArray(a, dims=("time", "cell", "unit_channel"), coords=coords, attrs={"layer": "conv1"})
    resp_da = xr.DataArray(resp, dims=("time", "cell"), coords={"time": t, "cell": model.cells})
    base = xr.DataArray(r0, dims="cell", coords={"cell": model.cells})
    ds = xr.Dataset(
        {
            "attribution": attr,
            "response": resp_da,
            "baseline_response": base,
            "completeness_error": attr.sum("unit_channel") - (resp_da - base),
        }
    )
    return model, merged(stim, ds)


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: imports and first-call caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    plain = synthetic()
    model, ds = with_model()
    print(f"reduction of a {N_T}-time-point, {N_CELL}-cell, {N_TYPE}-type attribution; median of {args.repeats} s")
    print(f"{'reducer':<12}{'no model':>10}{'model':>10}{'model+STA':>11}{'k':>4}{'k model':>9}")
    total = [0.0, 0.0, 0.0]
    for cls in (CellTypes, NMFReducer, PCAReducer):
        t0 = timed(lambda cls=cls: cls().reduce(plain), args.repeats)
        t1 = timed(lambda cls=cls: cls(characterise=False).reduce(ds, model), args.repeats)
        t2 = timed(lambda cls=cls: cls().reduce(ds, model), args.repeats)
        k = cls().reduce(plain).sizes["component"]
        k_model = cls(characterise=False).reduce(ds, model).sizes["component"]
        total = [total[0] + t0, total[1] + t1, total[2] + t2]
        print(f"{cls.name:<12}{t0:>10.3f}{t1:>10.3f}{t2:>11.3f}{k:>4}{k_model:>9}")
    print(f"{'all three':<12}{total[0]:>10.3f}{total[1]:>10.3f}{total[2]:>11.3f}")


if __name__ == "__main__":
    main()
