"""Attribution to hidden units: naive Captum vs the mechlens_attribution attributors, side by side.

Run: ``.venv/bin/python bench/attribution.py [--times 256] [--rows-naive 4] [--rows-adaptive 8]
[--rows-exact 0] [--rows-kept 0] [--threads 1] [--repeats 3]``.

One process, one model, one stimulus. The model is the retina CNN architecture with random
weights (40x50x50 input, conv 8@15 -> BN -> ReLU -> conv 8@11 -> BN -> ReLU -> dense 8 cells -> BN
-> softplus; ``RetinaCNN(checkpoint="random", n_cells=8)``, or the same architecture built here if
the retina plugin is missing). Attributions go to the first conv layer (``conv1``, the paper's
layer) for all 8 cells. Two stimuli: 40x50x50 Gaussian white noise (the required case) and a
spatially uniform (full-field) flicker, where every unit of a channel switches at the same point of
the integration path. For each stimulus it times:

- forward: a plain forward pass of the model (all cells);
- (a) naive: Captum ``LayerIntegratedGradients`` on the full model, one cell per call, 50 steps
  (Captum's default rule, Gauss-Legendre) -- on the first ``--rows-naive`` time points;
- (b) ``integrated-gradients`` with 50 Gauss-Legendre steps (the same discretisation as (a)), and
  (b*) with its default adaptive rule (completeness error <= 1e-4 of the response range);
- (c) ``exact-integrated-gradients``, and (c+) the same with ``keep_space=true`` (per unit: channel
  and position of the layer).

Each line gives seconds per time point, as CPU time of this process (``time.process_time``) and as
wall-clock time, and the largest completeness error relative to the response range of the whole
stimulus. The machine this runs on may be shared, so the ratios are computed from CPU time, by
default with one torch thread (no spinning worker threads inflate it); (a), the forward pass, (c)
and (c+) are timed in turn ``--repeats`` times and their medians used (the forward pass just before
and just after each of (c) and (c+), averaged, so that a drift of the machine's speed during a repeat
cancels to first order), and the ratios of each repeat are printed too; the load average is printed.
The last lines split (c)'s and (c+)'s CPU time in their last repeat into the sweep's loop, the
per-unit terms (c+), the sweep's other bookkeeping and the rest (the layer's activations and the
response, i.e. a forward pass, and the output), each also as a multiple of that repeat's forward
pass.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import xarray as xr

from mechlens.interfaces import Model
from mechlens.testing import noise_stimulus

LAYER = "conv1"


def retina_model() -> Model:
    """The retina CNN architecture with random weights and 8 cells."""
    try:
        from mechlens_retina.models.cnn import RetinaCNN

        return RetinaCNN(checkpoint="random", n_cells=8, device="cpu")
    except ImportError:
        return _SameArchitecture()


class _SameArchitecture(Model):
    """The retina CNN's layers with PyTorch's default initialisation (used when RetinaCNN is absent)."""

    name = "bench-retina-architecture"
    history, frame_period_s, input_shape = 40, 0.01, (50, 50)

    def __init__(self) -> None:
        from torch import nn

        from mechlens.torchutil import TrainingOnly

        class GaussianNoise(TrainingOnly):  # the identity in eval mode, as the retina CNN's
            def __init__(self, std: float) -> None:
                super().__init__()

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x

        super().__init__()
        torch.manual_seed(0)
        self.module = nn.Sequential(
            nn.Conv2d(40, 8, 15),
            nn.Flatten(),
            nn.BatchNorm1d(8 * 36 * 36),
            GaussianNoise(0.05),
            nn.ReLU(),
            nn.Unflatten(1, (8, 36, 36)),
            nn.Conv2d(8, 8, 11),
            nn.Flatten(),
            nn.BatchNorm1d(8 * 26 * 26),
            GaussianNoise(0.05),
            nn.ReLU(),
            nn.Linear(8 * 26 * 26, 8, bias=False),
            nn.BatchNorm1d(8),
            nn.Softplus(),
        ).eval()

    @property
    def cells(self) -> list[str]:
        return [f"gc{i:02d}" for i in range(8)]

    def layers(self) -> dict[str, tuple[int, ...]]:
        return {LAYER: (8, 36, 36)}

    def torch_module(self) -> torch.nn.Module:
        return self.module

    def split(self, layer: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        self.check_layer(layer)
        return self.module[:1], self.module[1:]


def full_field(model: Model, n_times: int, seed: int = 1) -> xr.Dataset:
    """Full-field Gaussian flicker: each frame one contrast value over the whole grid."""
    ds = noise_stimulus(model, n_times=n_times, seed=seed)
    values = np.random.default_rng(seed).standard_normal(ds.sizes["time"]).astype(np.float32)
    ds["stimulus"].values[:] = values[:, None, None]
    return ds


def first_rows(model: Model, stim: xr.Dataset, rows: int) -> xr.Dataset:
    """The stimulus cut so that the model answers at its first ``rows`` time points."""
    return stim.isel(time=slice(0, model.history - 1 + rows))


def timed(fn: Callable[[], Any]) -> tuple[Any, tuple[float, float]]:
    """``fn()`` and the (CPU, wall) seconds it took."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, (time.process_time() - cpu, time.perf_counter() - wall)


def naive_captum(model: Model, stim: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Captum LayerIntegratedGradients on the full model, one cell per call, 50 steps (Captum defaults).

    Returns the attributions summed over space (rows, cells, channels) and the completeness errors
    (rows, cells).
    """
    from captum.attr import LayerIntegratedGradients

    module = model.torch_module().eval()
    layer = model.split(LAYER)[0][-1]  # the conv whose output is the layer
    x = model.windows(stim["stimulus"]).contiguous()
    baseline = torch.zeros_like(x)
    lig = LayerIntegratedGradients(module, layer)
    attrs, errs = [], []
    with torch.no_grad():
        delta = (module(x) - module(baseline[:1])).double()
    for n in range(len(model.cells)):
        a = lig.attribute(x, baselines=baseline, target=n, n_steps=50).detach()
        attrs.append(a.sum((2, 3)))
        errs.append(a.flatten(1).sum(1).double() - delta[:, n])
    return torch.stack(attrs, 1).numpy(), torch.stack(errs, 1).numpy()


def forward_pass(model: Model, stim: xr.Dataset) -> None:
    """A plain forward pass over the stimulus (batches of 64), all cells."""
    module = model.torch_module().eval()
    x = model.windows(stim["stimulus"])
    with torch.no_grad():
        for i in range(0, x.shape[0], 64):
            module(x[i : i + 64].contiguous())


def _median(times: list[tuple[float, float]]) -> tuple[float, float]:
    """Median (CPU, wall) seconds of repeated timings."""
    return float(np.median([t[0] for t in times])), float(np.median([t[1] for t in times]))


def bench(model: Model, stim: xr.Dataset, label: str, args: argparse.Namespace) -> dict[str, float]:
    from mechlens_attribution.exact import ExactIntegratedGradients
    from mechlens_attribution.integrated import IntegratedGradients

    n_times = stim.sizes["time"] - model.history + 1
    response = model.predict(stim)["response"].values
    span = float(np.ptp(response))
    results: dict[str, tuple[float, float, float, int, str]] = {}

    def record(key: str, rows: int, seconds: tuple[float, float], err: np.ndarray, note: str = "") -> None:
        results[key] = (seconds[0] / rows, seconds[1] / rows, float(np.abs(err).max()) / span, rows, note)

    forward_pass(model, first_rows(model, stim, 8))  # warm-up
    # (a), the forward pass and (c) are timed in turn, --repeats times each, and the medians kept: the
    # machine's speed drifts (shared), and a ratio of two runs minutes apart would measure the drift
    rows_a = min(args.rows_naive, n_times)
    rows_c = n_times if args.rows_exact <= 0 else min(args.rows_exact, n_times)
    rows_k = n_times if args.rows_kept <= 0 else min(args.rows_kept, n_times)
    # the first call in a fresh environment compiles the sweep (numba, cached on disk): not timed
    _, warm = timed(lambda: ExactIntegratedGradients().attribute(model, first_rows(model, stim, 1), LAYER))
    _, warm_k = timed(
        lambda: ExactIntegratedGradients(keep_space=True).attribute(model, first_rows(model, stim, 1), LAYER)
    )
    fwd_times, naive_times, exact_times, kept_times, fwd_k_times = [], [], [], [], []
    for _ in range(args.repeats):
        (_, err_a), sec = timed(lambda: naive_captum(model, first_rows(model, stim, rows_a)))
        naive_times.append(sec)
        # the forward pass just before and just after (c), and after (c+): the mean of the two around
        # each is its baseline, so that a drift of the machine's speed during the repeat cancels to first order
        _, before = timed(lambda: forward_pass(model, stim))
        exact = ExactIntegratedGradients()
        ds_c, sec = timed(partial(exact.attribute, model, first_rows(model, stim, rows_c), LAYER))
        exact_times.append(sec)
        _, between = timed(lambda: forward_pass(model, stim))
        kept = ExactIntegratedGradients(keep_space=True)
        ds_k, sec = timed(partial(kept.attribute, model, first_rows(model, stim, rows_k), LAYER))
        kept_times.append(sec)
        del ds_k["attribution"]  # (time, cell, channel, y, x): 85 MB of float32 for 256 time points
        _, after = timed(lambda: forward_pass(model, stim))
        fwd_times.append(((before[0] + between[0]) / 2, (before[1] + between[1]) / 2))
        fwd_k_times.append(((between[0] + after[0]) / 2, (between[1] + after[1]) / 2))
    pairs = {
        "(a)/(c)": [(a[0] / rows_a) / (c[0] / rows_c) for a, c in zip(naive_times, exact_times)],
        "(c)/forward": [(c[0] / rows_c) / (f[0] / n_times) for f, c in zip(fwd_times, exact_times)],
        "(c+)/forward": [(k[0] / rows_k) / (f[0] / n_times) for f, k in zip(fwd_k_times, kept_times)],
    }
    record("forward", n_times, _median(fwd_times), np.array(np.nan), f"all cells; median of {args.repeats}")
    record(
        "(a) naive Captum LIG, 1 cell/call, 50 GL steps",
        rows_a,
        _median(naive_times),
        err_a,
        f"median of {args.repeats}",
    )

    ds, sec = timed(lambda: IntegratedGradients(n_steps=50).attribute(model, stim, LAYER))
    record("(b) integrated-gradients, 50 GL steps", n_times, sec, ds["completeness_error"].values)

    rows = min(args.rows_adaptive, n_times)
    ds, sec = timed(lambda: IntegratedGradients().attribute(model, first_rows(model, stim, rows), LAYER))
    steps = ds["integration_steps"].values
    record(
        "(b*) integrated-gradients, default (adaptive)",
        rows,
        sec,
        ds["completeness_error"].values,
        f"steps {steps.min()}-{steps.max()}, mean {steps.mean():.0f}",
    )

    record(
        "(c) exact-integrated-gradients",
        rows_c,
        _median(exact_times),
        ds_c["completeness_error"].values,
        f"{exact.stats['segments'] / rows_c:.0f} linear regions per time point; "
        f"algorithm {ds_c['attribution'].attrs['algorithm']}; median of {args.repeats}; warm-up call {warm[1]:.1f} s",
    )
    record(
        "(c+) exact-integrated-gradients, keep_space",
        rows_k,
        _median(kept_times),
        ds_k["completeness_error"].values,
        f"per unit; forward pass {_median(fwd_k_times)[0] / n_times:.4g} s around it; median of {args.repeats}; "
        f"warm-up call {warm_k[1]:.1f} s",
    )

    print(f"\n== {label}: {n_times} time points, response range {span:.4g} Hz ==")
    print(f"{'':48s} {'rows':>5s} {'CPU s/tp':>10s} {'wall s/tp':>10s} {'max|err|/range':>15s}  notes")
    for key, (cpu, wall, rel, n, note) in results.items():
        rel_s = "" if np.isnan(rel) else f"{rel:.2e}"
        print(f"{key:48s} {n:5d} {cpu:10.4g} {wall:10.4g} {rel_s:>15s}  {note}")
    t = {k.split(" ")[0]: v[0] for k, v in results.items()}
    fwd_k = _median(fwd_k_times)[0] / n_times
    print(
        f"ratios of CPU s per time point: (a)/(b) = {t['(a)'] / t['(b)']:.1f}, (a)/(b*) = {t['(a)'] / t['(b*)']:.2f}, "
        f"(a)/(c) = {t['(a)'] / t['(c)']:.2f}, (c)/forward = {t['(c)'] / t['forward']:.1f}, "
        f"(c+)/forward = {t['(c+)'] / fwd_k:.1f}"
    )
    for name, values in pairs.items():
        print(f"{name} in each repeat (timed in turn): {', '.join(f'{v:.2f}' for v in values)}")
    runs = (("(c)", exact, exact_times, fwd_times, rows_c), ("(c+)", kept, kept_times, fwd_k_times, rows_k))
    for name, attributor, times, fwds, rows in runs:
        if "sweep_cpu_s" not in attributor.stats:
            continue
        # where the time went in the last repeat, against that repeat's forward pass
        fwd = fwds[-1][0] / n_times
        parts = {"sweep loop": attributor.stats["sweep_cpu_s"] / rows}
        if name == "(c+)" and "per_unit_cpu_s" in attributor.stats:
            parts["per-unit terms"] = attributor.stats["per_unit_cpu_s"] / rows
        parts["slopes, pieces, integrals, sums"] = attributor.stats["rest_cpu_s"] / rows
        parts["layer activations, response, rest"] = times[-1][0] / rows - sum(parts.values())
        print(f"{name} in its last repeat, CPU ms per time point (x that repeat's forward pass): " + ", ".join(
            f"{k} {v * 1e3:.2f} ({v / fwd:.2f})" for k, v in parts.items()
        ))  # fmt: skip
    print(f"load average (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=256, help="time points of each stimulus")
    parser.add_argument("--rows-naive", type=int, default=4, help="time points attributed by (a)")
    parser.add_argument("--rows-adaptive", type=int, default=8, help="time points attributed by (b*)")
    parser.add_argument("--rows-exact", type=int, default=0, help="white-noise time points for (c); 0 = all")
    parser.add_argument("--rows-kept", type=int, default=0, help="white-noise time points for (c+); 0 = all")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timings in turn of (a), forward and (c)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    torch.set_num_threads(args.threads)
    model = retina_model()
    print(
        f"model: {type(model).__name__} ({model.name}), random weights, layer {LAYER} {model.layers()[LAYER]}, "
        f"{len(model.cells)} cells; torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    bench(model, noise_stimulus(model, n_times=args.times, seed=0), "white noise", args)
    full_args = argparse.Namespace(**{**vars(args), "rows_exact": 0, "rows_kept": 0})
    bench(model, full_field(model, args.times), "full-field flicker", full_args)


if __name__ == "__main__":
    main()
