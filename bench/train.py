"""Training throughput and peak memory of the retina CNN on an hour-long recording streamed from HDF5.

Run: ``.venv/bin/python bench/train.py [--minutes 60] [--max-steps 60] [--compare-steps 4]``.

1. Writes a recording in the published deep-retina layout to a temporary directory, in chunks
   (never holding the movie): ``--minutes`` of 50x50 Gaussian white noise at 10 ms per frame
   (60 min = 360000 frames = 3.6 GB of float32) and the responses of ``--cells`` linear-nonlinear
   cells, plus a 30 s test split with 5 repeats.
2. Trains the paper-size CNN (40 x 50 x 50 input, 8@15, 8@11) on it with :func:`train` for
   ``--max-steps`` steps (default path ``conv1="fft"``) and prints the training throughput (samples
   per second over the optimisation steps) and the time of the whole call (statistics pass, file
   fingerprint, validation and test evaluation included).
3. Side by side, on the same buffered frames and batches: ``--compare-steps`` optimisation steps
   (gather, forward, backward, Adam) with ``conv1="fft"`` and with the plain ``Conv2d``
   (``conv1="direct"``), and their ratio.
4. Prints the peak resident memory of the process (``resource.getrusage`` ru_maxrss, which covers
   the file writing, the statistics pass and training). The target is < 3 GB for the hour: the
   reader streams blocks of ``block_frames`` (default 10000) frames, ``buffer_blocks`` (4) at a time.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from mechlens_retina.models.cnn import RetinaCNN
from mechlens_retina.training.fit import WindowBuffer, train
from mechlens_retina.training.recordings import open_split

FRAME_S = 0.01
SIZE = 50
HISTORY = 40


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, GB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_recording(path: Path, minutes: float, n_cells: int, chunk: int = 6000, seed: int = 0) -> int:
    """Write the benchmark recording in chunks; returns the number of training frames."""
    rng = np.random.default_rng(seed)
    n_train = round(minutes * 60 / FRAME_S)
    n_test = round(30 / FRAME_S)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    centres = rng.uniform(15, 35, (n_cells, 2))
    space = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2)).ravel() for cy, cx in centres])
    space *= np.where(np.arange(n_cells) % 2, -1.0, 1.0)[:, None] / space.sum(1, keepdims=True)
    lags = np.arange(HISTORY)[::-1] * FRAME_S  # oldest first
    temporal = np.exp(-lags / 0.05) - 0.6 * np.exp(-lags / 0.1)

    def rates(frames: np.ndarray, lead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        drive = np.concatenate([lead, frames.reshape(frames.shape[0], -1) @ space.T])
        lin = np.stack([np.convolve(drive[:, c], temporal[::-1], mode="valid") for c in range(n_cells)], 1)
        return 20.0 * np.log1p(np.exp(4.0 * lin - 1.0)), drive[-(HISTORY - 1) :]

    with h5py.File(path, "w") as f:
        for split, n in (("train", n_train), ("test", n_test)):
            g = f.create_group(split)
            stim = g.create_dataset("stimulus", (n, SIZE, SIZE), dtype="f4")
            resp = g.create_group("response").create_dataset("firing_rate_10ms", (n_cells, n), dtype="f4")
            g["time"] = np.arange(n) * FRAME_S
            lead = np.zeros((HISTORY - 1, n_cells))
            all_rates = []
            for lo in range(0, n, chunk):
                frames = rng.standard_normal((min(chunk, n - lo), SIZE, SIZE), dtype=np.float32)
                stim[lo : lo + frames.shape[0]] = frames
                r, lead = rates(frames, lead)
                if split == "test":
                    all_rates.append(r)
                resp[:, lo : lo + frames.shape[0]] = (rng.poisson(r * 0.05) / 0.05).T
            if split == "test":
                r = np.concatenate(all_rates)
                trials = rng.poisson(r * FRAME_S * 5, size=(5, *r.shape)) / (FRAME_S * 5)
                resp[:] = trials.mean(0).T
                for c in range(n_cells):
                    g[f"repeats/cell{c + 1:02d}"] = trials[:, :, c].astype(np.float32)
    return n_train


def step_throughput(path: Path, mode: str, steps: int, batch: int, n_cells: int, seed: int = 0) -> float:
    """Samples per second of ``steps`` optimisation steps on 4000 buffered frames of the file."""
    model = RetinaCNN(checkpoint="random", device="cpu", n_cells=n_cells, seed=seed)
    module = model.torch_module().train()
    ds = open_split(path, "train")
    frames = np.asarray(ds["stimulus"][:4000].values, dtype=np.float32)
    targets = torch.from_numpy(np.asarray(ds["response"][:4000].values, dtype=np.float32))
    ds.close()
    buffer = WindowBuffer(module.conv1, (SIZE, SIZE), frames.shape[0], mode, "cpu")
    buffer.fill([frames])
    rest = module[1:]
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    loss_fn = torch.nn.PoissonNLLLoss(log_input=False)
    rng = np.random.default_rng(seed)
    elapsed = 0.0
    for step in range(steps + 1):  # the first step warms up and is not timed
        idx = torch.from_numpy(rng.integers(0, frames.shape[0] - HISTORY + 1, batch))
        start = time.perf_counter()
        loss = loss_fn(rest(buffer.first_layer(buffer.gather(idx))), targets[idx + HISTORY - 1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:
            elapsed += time.perf_counter() - start
    return steps * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the training movie (default 60)")
    parser.add_argument("--max-steps", type=int, default=60, help="optimisation steps of train()")
    parser.add_argument("--compare-steps", type=int, default=3, help="timed steps of each first-layer path (0: skip)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the HDF5 file")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mechlens-bench-", dir=args.dir))
    path = tmp / "naturalscene.h5"
    try:
        start = time.perf_counter()
        n_frames = write_recording(path, args.minutes, args.cells)
        wrote = time.perf_counter() - start
        size_gb = path.stat().st_size / 2**30
        print(f"recording: {args.minutes:g} min, {n_frames} frames of {SIZE}x{SIZE}, {size_gb:.2f} GB on disk")
        print(f"  written in {wrote:.1f} s; peak RSS after writing {peak_rss_gb():.2f} GB")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        params = {"max_steps": args.max_steps, "epochs": 1, "batch_size": args.batch_size, "threads": args.threads}
        start = time.perf_counter()
        _, metrics = train(path, params, {"device": "cpu"})
        total = time.perf_counter() - start
        print(
            f"train(): {metrics['steps']} steps x {args.batch_size} windows, {metrics['samples_per_s']:.1f} samples/s "
            f"over the steps, {metrics['samples_per_s_with_io']:.1f} including reading the blocks;\n"
            f"  whole call {total:.0f} s (statistics and sha256 over the file, "
            f"{metrics['n_val_samples']} validation and {metrics['evaluation']['n_time']} test windows)"
        )
        print(f"  peak RSS after training {peak_rss_gb():.2f} GB")
        if args.compare_steps > 0:
            if args.threads:
                torch.set_num_threads(args.threads)
            rates = {
                m: step_throughput(path, m, args.compare_steps, args.batch_size, args.cells) for m in ("fft", "direct")
            }
            print(
                f"first layer, {args.compare_steps} steps x {args.batch_size} each: fft {rates['fft']:.1f} samples/s, "
                f"direct Conv2d {rates['direct']:.1f} samples/s, ratio {rates['fft'] / rates['direct']:.1f}x"
            )
        peak = peak_rss_gb()
        print(f"peak RSS {peak:.2f} GB ({'under' if peak < 3 else 'OVER'} the 3 GB target)")
    finally:
        if args.keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
