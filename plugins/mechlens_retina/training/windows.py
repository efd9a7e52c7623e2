"""Training samples and the windows they are gathered from: the data path of :mod:`mechlens_retina.training.fit`.

A training sample is the history window ending at a frame, paired with the response at that frame.
:func:`sample_frames` says which frames end a sample, :func:`runs` cuts them into contiguous runs,
and :class:`WindowBuffer` holds the frames of a few runs at once (as pixels, or as 2-D spectra for
the FFT form of the first convolution) and gathers windows by indexing an ``unfold`` view, so a
window is copied only when it enters a batch. :func:`predict_frames` runs a model through exactly
this path, so validation and evaluation see what training saw.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
import xarray as xr

from mechlens.errors import UsageError
from mechlens_retina.models.cnn import RetinaCNN


# -- sample bookkeeping --------------------------------------------------------------------------
def sample_frames(n_time: int, history: int, n_blocks: int = 1, nskip: int = 0) -> np.ndarray:
    """Frames at which a training sample ends (its window is the ``history`` frames up to it).

    The recording is ``n_blocks`` equal blocks; a sample must have its whole window inside one
    block and lie at least ``nskip`` frames after the block's start.

    Returns
    -------
    numpy.ndarray
        Increasing int64 frame indices.
    """
    bounds = np.linspace(0, n_time, n_blocks + 1).round().astype(np.int64)
    first = max(nskip, history - 1)
    parts = [np.arange(lo + first, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo + first]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def runs(frames: np.ndarray, max_len: int) -> list[tuple[int, int]]:
    """Cut increasing sample frames into contiguous runs ``[start, stop)`` of at most ``max_len``."""
    if frames.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    out = []
    for seg in np.split(frames, breaks):
        for lo in range(0, seg.size, max_len):
            piece = seg[lo : lo + max_len]
            out.append((int(piece[0]), int(piece[-1]) + 1))
    return out


def stimulus_stats(stimulus: xr.DataArray, stop: int, block: int = 10000) -> tuple[float, float]:
    """Mean and standard deviation of the movie's frames ``[0, stop)``, read in blocks (float64 sums)."""
    total, total_sq, count = 0.0, 0.0, 0
    for lo in range(0, stop, block):
        x = np.asarray(stimulus[lo : min(stop, lo + block)].values)
        # float64 sums over sub-blocks: exact enough for an hour of frames, small temporaries
        for sub in np.array_split(x, max(1, x.shape[0] // 1000)):
            s64 = sub.astype(np.float64)
            total += float(s64.sum())
            total_sq += float(np.square(s64).sum())
            count += s64.size
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    if not std > 0:
        raise UsageError("the training stimulus is constant; it cannot be z-scored or fitted")
    return mean, std


# -- the first layer, fed from a buffer of frames ------------------------------------------------
class WindowBuffer:
    """Frames held in memory, from which history windows are gathered by index.

    Parameters
    ----------
    conv1 : torch.nn.Conv2d
        The model's first convolution (its weights are used, never copied).
    shape : (int, int)
        Frame size (y, x).
    capacity : int
        Frames the buffer can hold.
    mode : str
        ``"fft"``: frames are stored as 2-D spectra and the convolution is computed in the Fourier
        domain; ``"direct"``: frames are stored as pixels and ``conv1`` is called.
    device : torch.device or str
        Where the buffer lives (the model's device).
    """

    def __init__(self, conv1: torch.nn.Conv2d, shape: tuple[int, int], capacity: int, mode: str, device: Any) -> None:
        self.conv1 = conv1
        self.history = int(conv1.in_channels)
        self.ny, self.nx = shape
        self.mode = mode
        self.device = torch.device(device)
        self.n = 0
        self.out_size = (self.ny - conv1.kernel_size[0] + 1, self.nx - conv1.kernel_size[1] + 1)
        if mode == "fft":
            self.n_freq = self.ny * (self.nx // 2 + 1)
            # (frequency, frame, re/im): a window is then contiguous for each frequency
            self.data = torch.empty((self.n_freq, capacity, 2), dtype=torch.float32, device=self.device)
        elif mode == "direct":
            self.data = torch.empty((capacity, self.ny, self.nx), dtype=torch.float32, device=self.device)
        else:
            raise ValueError(f"mode must be 'fft' or 'direct', got {mode!r}")

    @property
    def capacity(self) -> int:
        """Frames the buffer can hold."""
        return int(self.data.shape[1] if self.mode == "fft" else self.data.shape[0])

    def fill(self, segments: Iterable[np.ndarray], fft_chunk: int = 2048) -> list[int]:
        """Replace the contents with consecutive segments of z-scored frames.

        Parameters
        ----------
        segments : iterable of numpy.ndarray
            Each (frames, y, x) float32; a generator keeps only one segment in memory at a time.
        fft_chunk : int
            Frames transformed at once (bounds temporary memory).

        Returns
        -------
        list of int
            Buffer offset of each segment's first frame.
        """
        offsets, pos = [], 0
        for seg in segments:
            offsets.append(pos)
            n = seg.shape[0]
            if pos + n > self.capacity:
                raise ValueError(f"buffer overflow: {pos + n} frames for a capacity of {self.capacity}")
            for lo in range(0, n, fft_chunk):
                frames = torch.from_numpy(np.ascontiguousarray(seg[lo : lo + fft_chunk])).to(self.device)
                if self.mode == "fft":
                    spec = torch.fft.rfft2(frames).reshape(frames.shape[0], self.n_freq)
                    self.data[:, pos + lo : pos + lo + frames.shape[0]] = torch.view_as_real(spec.transpose(0, 1))
                else:
                    self.data[pos + lo : pos + lo + frames.shape[0]] = frames
            pos += n
        self.n = pos
        return offsets

    def gather(self, windows: torch.Tensor) -> torch.Tensor:
        """The inputs of the windows starting at buffer frames ``windows`` (int64, on the buffer's device).

        Returns
        -------
        torch.Tensor
            ``"direct"``: (batch, history, y, x) pixels; ``"fft"``: (frequency, batch, 2 * history)
            spectra with real and imaginary parts interleaved.
        """
        h = self.history
        if self.mode == "fft":
            view = self.data[:, : self.n].unfold(1, h, 1).transpose(2, 3)  # (freq, window, lag, 2), no copy
            return view[:, windows].reshape(self.n_freq, windows.shape[0], 2 * h)
        view = self.data[: self.n].unfold(0, h, 1).permute(0, 3, 1, 2)  # (window, lag, y, x), no copy
        return view[windows]

    def first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """``conv1`` applied to gathered inputs: (batch, channels1, s1, s1)."""
        if self.mode == "direct":
            return self.conv1(x)
        conv = self.conv1
        c, h = conv.out_channels, self.history
        # spectra of the kernels zero-padded to the frame size; cross-correlation is X * conj(W)
        wf = torch.fft.rfft2(conv.weight, s=(self.ny, self.nx)).reshape(c, h, self.n_freq)
        wr, wi = wf.real.permute(2, 1, 0), wf.imag.permute(2, 1, 0)  # (freq, lag, channel)
        # [xr, xi] @ [[wr, -wi], [wi, wr]] = [re, im] of x * conj(w), as one real batched matmul
        rows_re = torch.stack([wr, -wi], dim=-1)
        rows_im = torch.stack([wi, wr], dim=-1)
        w = torch.stack([rows_re, rows_im], dim=2).reshape(self.n_freq, 2 * h, 2 * c)
        y = torch.bmm(x, w)  # (freq, batch, 2 * channel)
        batch = x.shape[1]
        y = torch.view_as_complex(y.reshape(self.n_freq, batch, c, 2)).permute(1, 2, 0)
        y = y.reshape(batch, c, self.ny, self.nx // 2 + 1)
        out = torch.fft.irfft2(y, s=(self.ny, self.nx))[..., : self.out_size[0], : self.out_size[1]]
        bias = cast(torch.Tensor, conv.bias)  # cast: build_module's convolutions have a bias
        return out + bias.view(1, c, 1, 1)


def _conv1(module: torch.nn.Module) -> torch.nn.Conv2d:
    """The first convolution of a :func:`~mechlens_retina.models.cnn.build_module` network."""
    # cast: nn.Module.__getattr__ types a submodule as Tensor | Module
    return cast(torch.nn.Conv2d, module.conv1)


class _Split:
    """One split of a recording as seen by training: z-scored frame reads and in-memory responses."""

    def __init__(self, ds: xr.Dataset, mean: float, std: float) -> None:
        self.ds = ds
        self.stimulus = ds["stimulus"].transpose("time", "y", "x")
        self.mean, self.std = mean, std
        self.response = np.ascontiguousarray(ds["response"].transpose("time", "cell").values, dtype=np.float32)
        if not np.isfinite(self.response).all():
            raise UsageError(f"the {ds.attrs.get('split', '')} responses hold NaN or infinite values")

    def frames(self, start: int, stop: int) -> np.ndarray:
        # a new array: in-memory Datasets hand out their own, which must not be z-scored in place
        x = np.subtract(self.stimulus[start:stop].values, np.float32(self.mean), dtype=np.float32)
        x /= np.float32(self.std)
        return x


def _batches(
    buffer: WindowBuffer, split: _Split, pieces: Sequence[tuple[int, int]], batch: int
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Yield (gathered windows, sample frames) over ``pieces`` in order, ``batch`` samples at a time."""
    h = buffer.history
    for group in _groups(pieces, buffer.capacity, h, max(len(pieces), 1)):
        offsets = buffer.fill(split.frames(a - h + 1, b) for a, b in group)
        starts = np.concatenate([off + np.arange(b - a) for off, (a, b) in zip(offsets, group)])
        frames = np.concatenate([np.arange(a, b) for a, b in group])
        for lo in range(0, starts.size, batch):
            idx = torch.from_numpy(starts[lo : lo + batch]).to(buffer.device)
            yield buffer.gather(idx), frames[lo : lo + batch]


def predict_frames(
    model: RetinaCNN, split: _Split, frames: np.ndarray, mode: str, block_frames: int, batch: int
) -> np.ndarray:
    """Eval-mode rates at the given sample frames of a split, through the training data path.

    Returns
    -------
    numpy.ndarray
        (len(frames), cell) float32 rates in Hz, in the order of ``frames`` (which must increase).
    """
    module = model.torch_module()
    pieces = runs(frames, block_frames)
    cap = max(b - a for a, b in pieces) + model.history - 1 if pieces else 1
    buffer = WindowBuffer(_conv1(module), model.input_shape, cap, mode, model.device)
    rest = module[1:]
    was = module.training
    module.eval()
    outs = []
    try:
        with torch.no_grad():
            for x, _ in _batches(buffer, split, pieces, batch):
                outs.append(rest(buffer.first_layer(x)).cpu())
    finally:
        module.train(was)
    if not outs:
        return np.zeros((0, len(model.cells)), dtype=np.float32)
    return torch.cat(outs).numpy()


def _poisson(rate: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean Poisson negative log-likelihood (without the log y! term), as torch's PoissonNLLLoss.

    ``weights`` (cell,), when given, multiplies each cell's term (the training objective of
    ``cell_weights="rate"``).
    """
    nll = rate - target * np.log(rate + 1e-8)
    return float(np.mean(nll if weights is None else nll * weights))


def _groups(
    pieces: Sequence[tuple[int, int]], capacity: int, history: int, max_blocks: int
) -> list[list[tuple[int, int]]]:
    """Pack runs, in order, into buffer fills of at most ``max_blocks`` runs and ``capacity`` frames."""
    out: list[list[tuple[int, int]]] = []
    group: list[tuple[int, int]] = []
    used = 0
    for a, b in pieces:
        need = b - a + history - 1
        if group and (used + need > capacity or len(group) >= max_blocks):
            out.append(group)
            group, used = [], 0
        group.append((a, b))
        used += need
    if group:
        out.append(group)
    return out


def _group_sizes(pieces: Sequence[tuple[int, int]], capacity: int, history: int, max_blocks: int) -> list[int]:
    return [sum(b - a for a, b in g) for g in _groups(pieces, capacity, history, max_blocks)]
