"""Fitting the retina CNN to recorded ganglion-cell responses.

The recipe follows the BN-CNN of Maheswaranathan et al. 2023 (paper notes 1.2-1.3): Poisson loss on
firing rates (``PoissonNLLLoss(log_input=False)``), Adam, L2 weight decay on the convolution and
dense weights, an L1 penalty on the predicted rates, Gaussian noise after each convolutional batch
norm, a learning-rate schedule, early stopping on the last ``val_fraction`` of the training split,
the first ``nskip`` samples of each recording block dropped, and the stimulus z-scored with the
training statistics (stored in the checkpoint metadata as ``stimulus_mean`` / ``stimulus_std``).

Memory and speed
----------------
The movie is never held whole. The training samples (a sample is the history window ending at a
frame, paired with the response at that frame) are cut into runs of ``block_frames``; each epoch
visits the runs in a random order, ``buffer_blocks`` at a time: their frames are read from the
file (one contiguous slice per run), z-scored, and the samples of the buffer are shuffled and
gathered into batches by indexing an ``unfold`` view of the buffer, so a window is copied only
when it enters a batch. Peak memory is about ``buffer_blocks * block_frames`` frames.

On a CPU, the first convolution (40 input channels, 15x15 kernels) dominates the cost, and its
weight gradient is slow in oneDNN. With ``conv1="fft"`` (default) training computes it as a
product of 2-D spectra: each buffered frame is Fourier transformed once, and a window's output is
``irfft2(sum_lag X_lag * conj(W_lag))`` cropped to the valid region. This is the same
convolution (a circular correlation of period ``image_size`` has no wrap-around in the valid
region), differs from ``Conv2d`` only by float rounding, and lets autograd produce the weight
gradient through the FFT. The model itself is always the standard ``Conv2d`` network.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from mechlens.errors import ParameterError, UsageError
from mechlens.parameters import build, param
from mechlens_retina import metrics as _metrics
from mechlens_retina.cnn import RetinaCNN
from mechlens_retina.data import Recording, from_datasets, open_recording
from mechlens_retina.units import PIXEL_UM

log = logging.getLogger("mechlens.retina.training")

#: model parameters that training derives from the data (or from the training parameters)
DERIVED = ("checkpoint", "n_cells", "image_size", "frame_period_s", "pixel_um", "noise", "seed")


@dataclass(frozen=True)
class TrainParameters:
    """Optimisation, regularisation and data-handling parameters of :func:`train`."""

    epochs: int = param(40, "maximum passes over the training samples", min=1)
    batch_size: int = param(512, "windows per optimisation step", min=2)
    lr: float = param(1e-2, "Adam learning rate", gt=0)
    l2: float = param(1e-3, "L2 weight decay on the convolution and dense weights", min=0)
    l1: float = param(
        1e-3, "weight of the L1 activity penalty: l1 * mean |predicted rate| (Hz) is added to the loss", min=0
    )
    noise: float = param(0.05, "std of the Gaussian noise after each conv batch norm during training", min=0)
    schedule: str = param(
        "plateau",
        "learning-rate schedule: plateau (ReduceLROnPlateau on the validation loss), multistep, or none",
        choices=("plateau", "multistep", "none"),
    )
    lr_factor: float = param(0.2, "factor applied to the learning rate at each decay", gt=0, max=1)
    lr_patience: int = param(3, "plateau: epochs without validation improvement before the rate decays", min=0)
    milestones: list[int] = param([5, 15, 25], "multistep: epochs after which the rate decays")
    patience: int = param(6, "early stopping: epochs without validation improvement before stopping", min=1)
    val_fraction: float = param(0.05, "last fraction of the training split held out for validation", gt=0, max=0.5)
    nskip: int = param(0, "samples dropped at the start of each recording block (6000 in the paper)", min=0)
    n_blocks: int = param(1, "recording blocks the training split consists of (6 for 15-10-07)", min=1)
    seed: int = param(0, "seed of the weights, the sample order and the noise", min=0)
    conv1: str = param(
        "fft",
        "how training computes the first convolution: fft (exact, fast on CPU) or direct",
        choices=("fft", "direct"),
    )
    block_frames: int = param(10000, "frames per contiguous read from the recording", min=1)
    buffer_blocks: int = param(4, "blocks held in memory and shuffled together", min=1)
    eval_batch_size: int = param(512, "windows per forward pass when evaluating", min=1)
    max_steps: int = param(0, "stop after this many optimisation steps (0: no limit)", min=0)
    max_seconds: float = param(
        0.0,
        "wall-clock budget of one train() call, s: the first step past it ends the epoch, which is then "
        "validated and checkpointed, and training stops with the best weights (0: no limit)",
        min=0,
    )
    deterministic: bool = param(
        True, "on a GPU, use deterministic cuDNN / torch kernels (bitwise repeatable, possibly slower)"
    )
    threads: int = param(0, "torch CPU threads (0: torch's default, one per core)", min=0)

    def __post_init__(self) -> None:
        if any(m < 1 for m in self.milestones):
            raise ParameterError("milestones", f"epochs must be >= 1, got {self.milestones}")


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
    """The first convolution of a :func:`~mechlens_retina.cnn.build_module` network."""
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


def _poisson(rate: np.ndarray, target: np.ndarray) -> float:
    """Mean Poisson negative log-likelihood (without the log y! term), as torch's PoissonNLLLoss."""
    return float(np.mean(rate - target * np.log(rate + 1e-8)))


# -- the training loop -----------------------------------------------------------------------------
def _as_recording(
    data: Any, stimulus_type: str, response: str, cells: Sequence[int] | None, pixel_um: float
) -> tuple[Recording, bool]:
    if isinstance(data, Recording):
        rec = data
        owned = False
    elif isinstance(data, xr.Dataset):
        rec, owned = from_datasets(data), False
    elif isinstance(data, (tuple, list)) and data and isinstance(data[0], xr.Dataset):
        rec, owned = from_datasets(data[0], data[1] if len(data) > 1 else None), False
    elif isinstance(data, (str, os.PathLike)):
        rec = open_recording(data, stimulus_type=stimulus_type, response=response, cells=cells, pixel_um=pixel_um)
        return rec, True
    else:
        raise UsageError(f"train: data must be a path, a Recording or xarray Datasets, got {type(data).__name__}")
    if cells is not None:
        test = rec.test.isel(cell=list(cells)) if rec.test is not None else None
        rec = Recording(rec.train.isel(cell=list(cells)), test, rec.source, rec.format)
    return rec, owned


def _model_parameters(model_params: Mapping[str, Any], params: TrainParameters, rec: Recording) -> dict[str, Any]:
    bad = [k for k in model_params if k in DERIVED]
    if bad:
        raise ParameterError(
            f"model.{bad[0]}",
            "is set by training (from the data, or the training parameters noise and seed); leave it out",
        )
    ny, nx = rec.train.sizes["y"], rec.train.sizes["x"]
    if ny != nx:
        raise UsageError(f"the retina CNN takes square movies; the recording is {ny}x{nx} pixels")
    return {
        **dict(model_params),
        "checkpoint": "random",
        "n_cells": rec.train.sizes["cell"],
        "image_size": int(ny),
        "frame_period_s": rec.frame_period_s,
        "pixel_um": rec.pixel_um,
        "noise": params.noise,
        "seed": params.seed,
    }


def train(
    data: Any,
    params: TrainParameters | Mapping[str, Any] | None = None,
    model_params: Mapping[str, Any] | None = None,
    *,
    cells: Sequence[int] | None = None,
    stimulus_type: str = "naturalscene",
    response: str = "firing_rate_10ms",
    pixel_um: float = PIXEL_UM,
    progress: bool | None = None,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> tuple[RetinaCNN, dict[str, Any]]:
    """Fit a :class:`~mechlens_retina.cnn.RetinaCNN` to a recording.

    Parameters
    ----------
    data : path, Recording, xarray.Dataset or (train, test) Datasets
        A deep-retina ``.h5`` file or experiment directory, a mechlens netCDF recording, or
        in-memory splits (see :mod:`mechlens_retina.data`).
    params : TrainParameters or mapping, optional
        Training parameters (a mapping is validated against :class:`TrainParameters`).
    model_params : mapping, optional
        Architecture parameters of the model (``history``, ``channels1``, ``kernel1``, ...,
        ``bn_momentum``, ``device``); the cell count, image size and units come from the data.
    cells : sequence of int, optional
        Rows of the recording's responses to fit (default: all).
    stimulus_type : str
        ``naturalscene`` or ``whitenoise``, for an experiment directory.
    response : str
        Response key of an HDF5 recording.
    pixel_um : float
        Micrometres per pixel of an HDF5 recording.
    progress : bool, optional
        Show a progress bar (None: only on a terminal).
    workdir : path, optional
        Directory for the resumable training state: after every epoch the whole state (weights,
        optimiser, schedule, epoch, best weights, history, random states) is written atomically to
        ``workdir/train_state.pt`` (see :data:`STATE_FILE`). None: no state is written.
    resume : bool
        Continue from ``workdir/train_state.pt`` if it exists (it must come from the same data,
        training parameters and architecture; ``epochs``, ``max_steps``, ``max_seconds``, ``threads``
        and ``eval_batch_size`` may differ). A run resumed at an epoch boundary ends with the same
        weights as an uninterrupted one.

    Returns
    -------
    model : RetinaCNN
        The model at its best validation loss, in eval mode, with the training record in
        ``model.metadata`` (save it with ``model.save(path)``).
    metrics : dict
        Training history, validation losses (the model's and a mean-rate predictor's), throughput,
        ``stopped`` (why training ended: ``patience``, ``epochs``, ``max_steps`` or ``max_seconds``)
        and the per-cell evaluation of :func:`mechlens_retina.metrics.evaluate` on the test split
        (or on the validation samples when the recording has no test split).
    """
    if params is None:
        params = TrainParameters()
    elif isinstance(params, Mapping):
        params = build(TrainParameters, params, where="train")
    if resume and workdir is None:
        raise UsageError("train(resume=True) needs workdir=, the directory holding train_state.pt")
    rec, owned = _as_recording(data, stimulus_type, response, cells, pixel_um)
    threads_before = torch.get_num_threads()
    try:
        if params.threads:
            torch.set_num_threads(params.threads)
        mp = _model_parameters(model_params or {}, params, rec)
        with torch.random.fork_rng(devices=_cuda_devices(mp)), _deterministic(params.deterministic):
            torch.manual_seed(params.seed)
            return _train(rec, params, mp, progress, Path(workdir) if workdir is not None else None, resume)
    finally:
        torch.set_num_threads(threads_before)
        if owned:
            rec.close()


def _cuda_devices(model_params: Mapping[str, Any]) -> list[int]:
    # fork the GPU's random state too, so training leaves the caller's noise stream untouched there
    from mechlens_retina.cnn import resolve_device

    device = torch.device(resolve_device(str(model_params.get("device", "auto"))))
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


class _deterministic:
    """Deterministic cuDNN and torch kernels for the duration of a ``with`` (restored afterwards).

    On the CPU training is deterministic anyway. On a GPU cuDNN picks convolution algorithms by
    timing and some backward kernels accumulate with atomics; this asks for repeatable ones. cuBLAS
    also needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment before CUDA starts
    (``scripts/device_train.sh`` sets it); ``warn_only`` keeps an op without a deterministic
    version running (with a warning) rather than failing a long job.
    """

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        self.saved = (
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        if self.on:
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc: object) -> None:
        cudnn_det, bench, algos, warn_only = self.saved
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = bench
        torch.use_deterministic_algorithms(algos, warn_only=warn_only)


#: file name of the resumable training state inside ``workdir``
STATE_FILE = "train_state.pt"
#: version of the training-state layout; a state of another version is refused
STATE_VERSION = 1
#: training parameters that may change between a run and its resumption
RESUMABLE_CHANGES = ("epochs", "max_steps", "max_seconds", "threads", "eval_batch_size")


def _state_identity(params: TrainParameters, model_params: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
    """What a saved training state must agree on to be resumed (plain JSON)."""
    kept = {k: v for k, v in dataclasses.asdict(params).items() if k not in RESUMABLE_CHANGES}
    arch = {k: v for k, v in model_params.items() if k != "device"}
    return json.loads(json.dumps({"data_sha256": fingerprint, "train": kept, "model": arch}, default=str))


def save_state(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """Write a training state atomically (temporary file beside it, then ``os.replace``).

    Parameters
    ----------
    path : path
        The state file (``workdir/train_state.pt``).
    state : mapping
        Tensors, state dicts of tensors and plain values (nothing that needs pickled code), as
        built by the training loop; it is read back by :func:`load_state`.
    """
    from mechlens_retina.checkpoint import atomic_write

    buffer = io.BytesIO()
    torch.save(_to_cpu(state), buffer)
    atomic_write(Path(path), buffer.getvalue())


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training state written by :func:`save_state` (``torch.load(weights_only=True)``, on the CPU).

    Raises
    ------
    UsageError
        The file cannot be read as a weights-only state, or it has another layout version.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
        first = str(err).splitlines()[0] if str(err) else ""
        raise UsageError(
            f"training state {path} could not be read ({type(err).__name__}: {first}); "
            "delete it to start afresh, or resume from an intact copy"
        ) from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise UsageError(
            f"training state {path} is not a version-{STATE_VERSION} mechlens training state; delete it to start afresh"
        )
    return state


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _train(
    rec: Recording,
    params: TrainParameters,
    model_params: dict[str, Any],
    progress: bool | None,
    workdir: Path | None,
    resume: bool,
) -> tuple[RetinaCNN, dict[str, Any]]:
    started = time.perf_counter()
    model = RetinaCNN(**model_params)
    h = model.history
    n_time = rec.train.sizes["time"]
    all_frames = sample_frames(n_time, h, params.n_blocks, params.nskip)
    val_start = n_time - round(params.val_fraction * n_time)
    train_frames = all_frames[all_frames < val_start]
    val_frames = all_frames[all_frames >= val_start + h - 1]
    if train_frames.size < 2 or val_frames.size < 1:
        raise UsageError(
            f"too few samples: {train_frames.size} for training and {val_frames.size} for validation from "
            f"{n_time} frames (history {h}, nskip {params.nskip}, {params.n_blocks} blocks, val_fraction "
            f"{params.val_fraction}); use more data or lower nskip / history"
        )
    fingerprint = rec.fingerprint()
    identity = _state_identity(params, model_params, fingerprint)
    state_path = workdir / STATE_FILE if workdir is not None else None
    saved: dict[str, Any] | None = None
    if resume and state_path is not None and state_path.is_file():
        saved = load_state(state_path)
        stored = json.loads(saved["identity"])
        if stored != identity:
            flat_new, flat_old = _flatten(identity), _flatten(stored)
            diff = sorted(k for k in flat_new.keys() | flat_old.keys() if flat_new.get(k) != flat_old.get(k))
            raise UsageError(
                f"cannot resume from {state_path}: it was written for other data or parameters (differing: "
                f"{', '.join(diff) or 'layout'}); rerun with the same ones, or without resume to start afresh"
            )
    elif resume:
        log.info("no training state in %s; starting from the beginning", workdir)
    log.info("computing the training stimulus statistics over %d frames", val_start)
    mean, std = stimulus_stats(rec.train["stimulus"].transpose("time", "y", "x"), val_start, params.block_frames)
    train_split = _Split(rec.train, mean, std)
    module = model.torch_module()
    device = torch.device(model.device)
    targets = torch.from_numpy(train_split.response).to(device)

    # data-dependent start of the output batch norm: mean rate as the offset and half the rate's
    # spread as the gain, instead of learning the Hz scale from (0, 1) over the first epochs
    train_rates = train_split.response[train_frames].astype(np.float64)
    mean_rate = train_rates.mean(axis=0)
    with torch.no_grad():
        # get_parameter: typed (module.bn3.bias is typed Tensor | Module by nn.Module.__getattr__)
        bn3_bias, bn3_weight = module.get_parameter("bn3.bias"), module.get_parameter("bn3.weight")
        bn3_bias.copy_(torch.as_tensor(np.log(np.expm1(np.maximum(mean_rate, 1e-3))), dtype=torch.float32))
        bn3_weight.copy_(torch.as_tensor(0.5 * np.maximum(train_rates.std(axis=0), 1e-3), dtype=torch.float32))
    del train_rates

    # a frozen layer (first_layer="synthetic-retina": conv1 is the circuit's) stays out of the optimiser,
    # so neither a gradient step nor weight decay can move it
    decay = [module.get_parameter(f"{name}.weight") for name in ("conv1", "conv2", "dense")]
    decay = [t for t in decay if t.requires_grad]
    decay_ids = {id(t) for t in decay}
    others = [t for t in module.parameters() if id(t) not in decay_ids and t.requires_grad]
    optimizer = torch.optim.Adam(
        [{"params": decay, "weight_decay": params.l2}, {"params": others, "weight_decay": 0.0}], lr=params.lr
    )
    scheduler: Any = None
    if params.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=params.lr_factor, patience=params.lr_patience
        )
    elif params.schedule == "multistep":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, params.milestones, gamma=params.lr_factor)
    loss_fn = torch.nn.PoissonNLLLoss(log_input=False, full=False)

    pieces = runs(train_frames, params.block_frames)
    capacity = min(params.buffer_blocks * (params.block_frames + h - 1), sum(b - a + h - 1 for a, b in pieces))
    buffer = WindowBuffer(_conv1(module), model.input_shape, capacity, params.conv1, device)
    rest = module[1:]
    rng = np.random.default_rng(params.seed)
    val_target = train_split.response[val_frames]
    val_loss_mean_rate = _poisson(np.broadcast_to(mean_rate, val_target.shape), val_target)
    steps_per_epoch = sum(
        max(1, round(n / params.batch_size)) for n in _group_sizes(pieces, capacity, h, params.buffer_blocks)
    )

    best: dict[str, Any] = {"loss": math.inf, "epoch": 0, "state": None}
    history: list[dict[str, Any]] = []
    step = 0
    train_seconds, train_samples, loop_seconds = 0.0, 0, 0.0
    stale = 0
    start_epoch = 1
    stopped = "epochs"
    if saved is not None:
        module.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        best = {
            "loss": float(saved["best_loss"]),
            "epoch": int(saved["best_epoch"]),
            "state": {k: v.to(device) for k, v in saved["best_state"].items()} if saved["best_state"] else None,
        }
        history = json.loads(saved["history"])
        step, stale = int(saved["step"]), int(saved["stale"])
        train_seconds, train_samples, loop_seconds = json.loads(saved["counters"])
        rng.bit_generator.state = json.loads(saved["numpy_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        start_epoch = int(saved["epoch"]) + 1
        stopped = str(saved["stopped"])
        log.info("resuming from %s after epoch %d (step %d)", state_path, start_epoch - 1, step)
    # a state that ended by patience (or by a step limit still in force) has nothing left to do
    done = saved is not None and (
        stale >= params.patience or (stopped == "max_steps" and params.max_steps and step >= params.max_steps)
    )
    if done and stale >= params.patience:
        stopped = "patience"

    show = None if progress is None else not progress
    # when the buffer holds every training run at once (a GPU with the whole movie in memory), the
    # frames are read and transformed once, not once per epoch: which runs sit where in the buffer
    resident: dict[tuple[int, int], int] = {}
    for epoch in range(start_epoch, params.epochs + 1):
        if done:
            break
        epoch_start = time.perf_counter()
        module.train()
        order = rng.permutation(len(pieces))
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{params.epochs}", disable=show, leave=False)
        stop = ""
        loop_start = time.perf_counter()
        for group in _groups([pieces[i] for i in order], capacity, h, params.buffer_blocks):
            if set(group) != set(resident):
                fill_order = sorted(group)
                offsets = buffer.fill(train_split.frames(a - h + 1, b) for a, b in fill_order)
                resident = dict(zip(fill_order, offsets))
            starts = np.concatenate([resident[(a, b)] + np.arange(b - a) for a, b in group])
            frames = np.concatenate([np.arange(a, b) for a, b in group])
            perm = rng.permutation(starts.size)
            n_batches = max(1, round(starts.size / params.batch_size))
            for chosen in np.array_split(perm, n_batches):
                if chosen.size < 2:
                    continue
                t0 = time.perf_counter()
                idx = torch.from_numpy(starts[chosen]).to(device)
                y = targets[torch.from_numpy(frames[chosen]).to(device)]
                x = buffer.gather(idx)
                if step == 0:
                    _prime_batch_norm(module, lambda x=x: rest(buffer.first_layer(x)))
                rate = rest(buffer.first_layer(x))
                loss = loss_fn(rate, y)
                objective = loss + params.l1 * rate.abs().mean() if params.l1 else loss
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                optimizer.step()
                # accumulated on the device: a float() per step would wait for the GPU every step
                total += loss.detach().double() * chosen.size
                train_seconds += time.perf_counter() - t0
                train_samples += int(chosen.size)
                count += int(chosen.size)
                step += 1
                bar.update(1)
                if params.max_steps and step >= params.max_steps:
                    stop = "max_steps"
                elif params.max_seconds and time.perf_counter() - started >= params.max_seconds:
                    stop = "max_seconds"
                if stop:
                    break
            if stop:
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        loop_seconds += time.perf_counter() - loop_start
        bar.close()
        val_pred = predict_frames(
            model, train_split, val_frames, params.conv1, params.block_frames, params.eval_batch_size
        )
        val_loss = _poisson(val_pred, val_target)
        lr = optimizer.param_groups[0]["lr"]
        train_loss = float(total) / max(count, 1)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "lr": lr,
                "seconds": round(time.perf_counter() - epoch_start, 3),
            }
        )
        if val_loss < best["loss"]:
            best = {"loss": val_loss, "epoch": epoch, "state": _copy_state(module)}
            stale = 0
        else:
            stale += 1
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        elif scheduler is not None:
            scheduler.step()
        if not stop and stale >= params.patience:
            stop = "patience"
        stopped = stop or "epochs"
        log.info(
            "epoch %d/%d: train loss %.4f, validation loss %.4f (mean-rate predictor %.4f), lr %.3g, %.1f s elapsed%s",
            epoch,
            params.epochs,
            train_loss,
            val_loss,
            val_loss_mean_rate,
            lr,
            time.perf_counter() - started,
            f"; stopping ({stop})" if stop else "",
        )
        if state_path is not None:
            save_state(
                state_path,
                {
                    "version": STATE_VERSION,
                    "identity": json.dumps(identity),
                    "epoch": epoch,
                    "step": step,
                    "stale": stale,
                    "stopped": stopped,
                    "partial_epoch": stop in ("max_steps", "max_seconds"),
                    "model": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "best_loss": best["loss"],
                    "best_epoch": best["epoch"],
                    "best_state": best["state"] or {},
                    "history": json.dumps(history),
                    "counters": json.dumps([train_seconds, train_samples, loop_seconds]),
                    "numpy_rng": json.dumps(rng.bit_generator.state),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                },
            )
        if stop:
            break

    if best["state"] is not None:
        module.load_state_dict(best["state"])
    module.eval()
    metrics: dict[str, Any] = {
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "steps": step,
        "stopped": stopped,
        "val_loss": best["loss"],
        "val_loss_mean_rate": val_loss_mean_rate,
        # optimisation steps only, and including reading, z-scoring and transforming the frames
        "samples_per_s": train_samples / train_seconds if train_seconds else None,
        "samples_per_s_with_io": train_samples / loop_seconds if loop_seconds else None,
        "n_train_samples": int(train_frames.size),
        "n_val_samples": int(val_frames.size),
        "device": str(device),
        "resumed": saved is not None,
        "seconds": time.perf_counter() - started,
        "history": history,
    }
    metrics.update(_evaluate(model, rec, train_split, val_frames, mean, std, params))
    cell_index = rec.train["cell_index"].values.tolist() if "cell_index" in rec.train.coords else None
    model.annotate(
        [str(c) for c in rec.train["cell"].values],
        stimulus_mean=mean,
        stimulus_std=std,
        training={
            "data": rec.source,
            "data_format": rec.format,
            "data_sha256": fingerprint,
            "stimulus_type": rec.train.attrs.get("stimulus_type", ""),
            "response_key": rec.train.attrs.get("response_key", ""),
            "cell_index": [int(i) for i in cell_index] if cell_index is not None else None,
            "parameters": dataclasses.asdict(params),
            "torch_version": torch.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        metrics=metrics,
    )
    return model, metrics


def _evaluate(
    model: RetinaCNN,
    rec: Recording,
    train_split: _Split,
    val_frames: np.ndarray,
    mean: float,
    std: float,
    params: TrainParameters,
) -> dict[str, Any]:
    h = model.history
    if rec.test is not None and rec.test.sizes["time"] >= h:
        split = _Split(rec.test, mean, std)
        frames = np.arange(h - 1, rec.test.sizes["time"])
        pred = predict_frames(model, split, frames, params.conv1, params.block_frames, params.eval_batch_size)
        repeats = None
        if "repeats" in rec.test:
            repeats = np.asarray(rec.test["repeats"].transpose("repeat", "time", "cell").values[:, h - 1 :])
        result = _metrics.evaluate(pred, split.response[frames], repeats, seed=params.seed)
        result["test_loss"] = _poisson(pred, split.response[frames])
        return {"evaluated_on": "test", "evaluation": result}
    pred = predict_frames(model, train_split, val_frames, params.conv1, params.block_frames, params.eval_batch_size)
    return {"evaluated_on": "validation", "evaluation": _metrics.evaluate(pred, train_split.response[val_frames])}


def _prime_batch_norm(module: torch.nn.Module, forward: Any) -> None:
    """Set the batch-norm running statistics to those of one batch (instead of mean 0, variance 1).

    With the paper's momentum of 0.01 the running statistics forget their start only after a few
    hundred steps; starting them from real data makes eval-mode predictions meaningful from the
    first validation on, which matters for short runs.
    """
    norms = [m for m in module.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.momentum = 1.0
        with torch.no_grad():
            forward()
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


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


def describe(metrics: Mapping[str, Any], cells: Sequence[str]) -> str:
    """A readable summary of :func:`train`'s metrics (per-cell table and means)."""
    ev = metrics.get("evaluation") or {}
    lines = [
        f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']} ({metrics['steps']} steps, "
        f"{metrics['samples_per_s'] or 0:.0f} samples/s, {metrics['seconds']:.0f} s)",
        f"validation Poisson loss {metrics['val_loss']:.4f} (mean-rate predictor {metrics['val_loss_mean_rate']:.4f})",
        f"evaluated on the {metrics.get('evaluated_on', '?')} set ({ev.get('n_time', 0)} frames):",
    ]
    keys = [k for k in ("cc", "fev", "reliability", "cc_norm", "feve") if k in ev]
    lines.append("  cell    " + "".join(f"{k:>12}" for k in keys))

    def fmt(v: Any) -> str:
        return f"{v:12.3f}" if isinstance(v, (int, float)) else f"{'-':>12}"

    for i, cell in enumerate(cells):
        lines.append(f"  {cell:<8}" + "".join(fmt(ev[k][i]) for k in keys))
    lines.append("  mean    " + "".join(fmt(ev.get(f"{k}_mean")) for k in keys))
    return "\n".join(lines)


def save_path(path: str | os.PathLike[str]) -> Path:
    """Check an output checkpoint path (``*.safetensors``: one file, weights and metadata together)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        legacy = " (.pt + .json checkpoints are still read, no longer written)" if path.suffix == ".pt" else ""
        raise UsageError(
            f"-o {path}: give a .safetensors file name, e.g. {path.with_suffix('.safetensors').name}; a checkpoint "
            f"is one file holding the weights and their metadata{legacy}"
        )
    return path


__all__ = [
    "STATE_FILE",
    "TrainParameters",
    "WindowBuffer",
    "describe",
    "load_state",
    "predict_frames",
    "sample_frames",
    "save_state",
    "train",
]
