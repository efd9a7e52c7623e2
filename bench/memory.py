"""Peak memory of a streamed ``mechlens run``: 60 s vs 600 s of white noise on the bundled retina CNN.

Run: ``.venv/bin/python bench/memory.py [--seconds 60 600] [--attributor NAME] [--steps N] [--cells gc00]
[--chunk-time 6000]``.

Each run is the CLI's pipeline mode (``mechlens run --model retina-cnn --stimulus white-noise
--set stimulus.duration=S -o OUT.nc``) in a fresh process, streamed in chunks of ``--chunk-time``
output time points (``mechlens.streaming``); the process reports its own peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``). Printed: the peak RSS and wall time of each run and the
ratio of the peak RSS of the longest to the shortest (target < 1.3: memory flat in the movie's
length; before streaming, prediction alone grew by ~1.5x the movie and was refused above ~1070 s).

By default only the prediction stage runs (no attributor): the default adaptive
``integrated-gradients`` attributes ~30 s of movie in 5 minutes on 2 shared cores, so 600 s would take
well over an hour. ``--attributor integrated-gradients --steps 2 --cells gc00`` streams the attribution
too (fixed 2-node quadrature, one cell), at the cost of about a forward and a backward pass per node
and time point; ``--attributor exact-integrated-gradients --reducer cell-types`` streams the exact
attribution of every cell (~3 forward passes per time point) and a reduction of the whole movie's
attribution (read back without the movie; its reduced-model check reruns the model chunk by chunk:
``mechlens.streaming``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

_CHILD = """
import resource, sys, warnings
warnings.simplefilter("ignore")
from mechlens.cli import main
code = main(sys.argv[1:])
print("peak_rss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def run_once(seconds: float, args: argparse.Namespace, folder: str) -> tuple[float, float]:
    """Peak RSS (MiB) and wall time (s) of one streamed run in a fresh process."""
    argv = [
        "run", "--model", "retina-cnn", "--stimulus", "white-noise",
        "--set", f"stimulus.duration={seconds:g}", "--chunk-time", str(args.chunk_time),
        "-o", os.path.join(folder, f"noise_{seconds:g}s.nc"),
    ]  # fmt: skip
    if args.attributor:
        argv += ["--attributor", args.attributor]
        if args.steps is not None:
            argv += ["--set", f"attributor.n_steps={args.steps}"]
        if args.cells:
            argv += ["--cells", args.cells]
    if args.reducer:
        argv += ["--reducer", args.reducer]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mechlens {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("peak_rss_kib"))
    return peak / 1024, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[60.0, 600.0], help="movie lengths after time 0 (s)")
    ap.add_argument("--chunk-time", type=int, default=6000, help="output time points per chunk")
    ap.add_argument("--attributor", default="", help="stream an attribution too (default: prediction only)")
    ap.add_argument("--steps", type=int, help="the attributor's n_steps (integrated-gradients; default: its own)")
    ap.add_argument("--reducer", default="", help="reduce the whole attribution too (model check chunk by chunk)")
    ap.add_argument("--cells", default="", help="cells to attribute with --attributor (default: all)")
    args = ap.parse_args()
    what = "predict"
    if args.attributor:
        steps = "" if args.steps is None else f"n_steps={args.steps}, "
        what += f" -> {args.attributor} ({steps}cells {args.cells or 'all'})"
    if args.reducer:
        what += f" -> {args.reducer}"
    print(f"retina-cnn on white noise, streamed in chunks of {args.chunk_time} time points; stages: {what}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    peaks = []
    with tempfile.TemporaryDirectory() as folder:
        for seconds in args.seconds:
            peak, wall = run_once(seconds, args, folder)
            peaks.append(peak)
            print(f"{seconds:7g} s of movie: peak RSS {peak:7.0f} MiB, wall {wall:6.1f} s")
    ratio = peaks[-1] / peaks[0]
    verdict = "flat" if ratio < 1.3 else "NOT flat"
    print(f"peak RSS ratio {args.seconds[-1]:g} s / {args.seconds[0]:g} s: {ratio:.2f}x (target < 1.3x: {verdict})")


if __name__ == "__main__":
    main()
