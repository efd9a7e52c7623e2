"""Scale-out: one process vs a LocalCluster of ``--workers`` processes on the same attribution.

Run: ``.venv/bin/python bench/scale.py [--seconds 20] [--workers 2] [--attributor integrated-gradients]
[--steps 64] [--parts 0] [--keep-space] [--keep-space-points 256]``; the cost of splitting cells into groups,
alone: ``.venv/bin/python bench/scale.py --cell-groups 2 8 [--seconds 1]``.

The model is the bundled retina CNN (``retina-cnn``), the stimulus ``white-noise`` of ``--seconds``
seconds (100 time points per second: 20 s = 2,000 time points), attributed to the first layer for
every cell. Two serial runs of ``mechlens.run`` in this process, one with torch's default threads
(one per core: what a user gets without scale-out) and one with a single thread (what each worker
runs with: the baseline of the workers' parallel efficiency); the parallel one is
``mechlens.run(..., client=...)`` on a LocalCluster of ``--workers`` single-threaded worker
processes, timed from a started, warm cluster (workers have imported torch and loaded the model
once, as a cluster that has run before; the start-up is printed apart). The results are compared
(largest absolute difference of the attribution) and the speed-up over each serial run printed.

Against the default-threads run the speed-up is bounded by how well torch's own threads scale: with
N cores and a thread speed-up of s, N workers can gain at most N / s (on the 2-core CI machines s is
about 1.8, so about 1.1x); against the one-thread run, N workers can gain up to N. Last, the per-unit
(``keep_space``) exact attribution's cost per time point in forward passes (:func:`keep_space_ratio`;
``bench/attribution.py`` measures it with repeats and CPU time). The machine may be shared: the
load average is printed with the times.

``--cell-groups N ...`` measures instead what splitting the cells into groups costs in one process
(:func:`cell_group_cost`): the wall time of ``mechlens.run(..., cell_groups=N)`` over that of one
call, for integrated gradients (``--steps``) and the exact method, with and without ``keep_space``.
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


def keep_space_ratio(model_name: str, points: int) -> tuple[float, float, float]:
    """(per-unit exact IG s, forward pass s, ratio) per time point on ``points`` white-noise points.

    ``exact-integrated-gradients`` with ``keep_space=true`` (an attribution per unit of the first
    layer: channel x y x x) against a plain forward pass over the same windows, both in this process
    with torch's default threads; each timed twice, the faster kept (the first run compiles).
    """
    from attribution import forward_pass  # bench/attribution.py, beside this script
    from mechlens_attribution.exact import ExactIntegratedGradients

    from mechlens import registry

    model = registry.get("model", model_name)()
    dt = model.frame_period_s
    stim = registry.get("stimulus", "white-noise")(
        duration=points * dt, pre_s=(model.history - 1) * dt, distribution="gaussian"
    ).generate(2)

    def kept() -> None:
        ExactIntegratedGradients(keep_space=True).attribute(model, stim, model.default_layer())

    times = []
    for fn in (lambda: forward_pass(model, stim), kept):
        best = np.inf
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        times.append(best / points)
    return times[1], times[0], times[1] / times[0]


def cell_group_cost(model: str, seconds: float, steps: int, groups: list[int]) -> None:
    """Print the wall time of runs split into cell groups, relative to one call, per attributor."""
    import mechlens

    kw = {"stimulus_params": {"duration": seconds, "distribution": "gaussian"}, "seed": 1}
    _warm(model)
    for name, params in (
        ("integrated-gradients", {"n_steps": steps}),
        ("integrated-gradients", {"n_steps": steps, "keep_space": True}),
        ("exact-integrated-gradients", {}),
        ("exact-integrated-gradients", {"keep_space": True}),
    ):
        times = {}
        for g in [1, *groups]:
            t0 = time.perf_counter()
            mechlens.run(model, "white-noise", name, attributor_params=params, cell_groups=g, **kw)
            times[g] = time.perf_counter() - t0
        ratios = ", ".join(f"{g} groups {times[g] / times[1]:.2f}x" for g in groups)
        print(
            f"{name} {params}: one call {times[1]:.1f} s; {ratios} (load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="white noise after time 0 (s); 20 s = 2,000 points")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="retina-cnn")
    ap.add_argument("--attributor", default="integrated-gradients")
    ap.add_argument("--steps", type=int, default=64, help="integrated-gradients n_steps (0: adaptive, far slower)")
    ap.add_argument("--parts", type=int, default=0, help="parts (0: the default, 2 per worker)")
    ap.add_argument("--keep-space", action="store_true", help="attribute per unit (keep_space=true)")
    ap.add_argument(
        "--keep-space-points", type=int, default=256, help="time points of the keep_space ratio (0: skip it)"
    )
    ap.add_argument("--cell-groups", type=int, nargs="+", default=[], help="measure only the cost of these cell groups")
    args = ap.parse_args()
    if args.cell_groups:
        cell_group_cost(args.model, args.seconds, args.steps, args.cell_groups)
        return

    import mechlens
    from mechlens.distributed import engine

    # n_steps belongs to the sampled method only (the exact method has no steps)
    attr_params: dict = {"n_steps": args.steps} if args.attributor == "integrated-gradients" and args.steps else {}
    if args.keep_space:
        attr_params["keep_space"] = True
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
    threads = torch.get_num_threads()
    print(
        f"one process, {threads} torch threads: {t_serial:.1f} s for {n_points} attributed time points of "
        f"{serial.sizes['cell']} cells, load average {os.getloadavg()[0]:.2f}"
    )
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    one = mechlens.run(args.model, "white-noise", args.attributor, **kw)
    t_one = time.perf_counter() - t0
    torch.set_num_threads(threads)
    print(
        f"one process, 1 torch thread (as each worker): {t_one:.1f} s (torch's {threads} threads gain "
        f"{t_one / t_serial:.2f}x), load average {os.getloadavg()[0]:.2f}"
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
    diff_one = float(np.nanmax(np.abs(spread["attribution"].values - one["attribution"].values)))
    scale = float(np.nanmax(np.abs(serial["attribution"].values)))
    print(
        f"--workers {args.workers}: {t_spread:.1f} s (cluster start {t_start:.1f} s, not counted), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"max |difference| of the attribution: {diff:.3g} Hz from the {threads}-thread run, {diff_one:.3g} Hz from "
        f"the 1-thread run (largest |attribution| {scale:.3g} Hz)"
    )
    print(
        f"speed-up over one process with 1 thread: {t_one / t_spread:.2f}x (parallel efficiency "
        f"{t_one / t_spread / args.workers:.0%}; with the cluster start: {t_one / (t_spread + t_start):.2f}x)"
    )
    print(
        f"speed-up over one process with {threads} threads: {t_serial / t_spread:.2f}x (at most "
        f"{args.workers * t_serial / t_one:.2f}x with these thread gains; with the cluster start: "
        f"{t_serial / (t_spread + t_start):.2f}x)"
    )
    if args.keep_space_points > 0:
        kept, fwd, ratio = keep_space_ratio(args.model, args.keep_space_points)
        print(
            f"keep_space (exact-integrated-gradients, per unit) on {args.keep_space_points} points: "
            f"{kept * 1e3:.1f} ms per time point = {ratio:.1f} forward passes ({fwd * 1e3:.2f} ms; target <= 10)"
        )


if __name__ == "__main__":
    main()
