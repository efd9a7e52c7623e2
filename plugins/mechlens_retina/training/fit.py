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

Why one file (610 lines): the loop (``_train``) is one function on purpose: its order of operations
is the recipe (paper notes 1.2-1.3) and its resumable state is saved at one point; the data path is
in :mod:`mechlens_retina.training.windows` and the state in :mod:`mechlens_retina.training.state`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from mechlens.errors import ParameterError, UsageError
from mechlens.parameters import build, param
from mechlens_retina import metrics as _metrics
from mechlens_retina.models.cnn import RetinaCNN
from mechlens_retina.training.recordings import Recording, from_datasets, open_recording
from mechlens_retina.training.state import (
    RESUMABLE_CHANGES,
    STATE_FILE,
    STATE_VERSION,
    _copy_state,
    _cuda_devices,
    _deterministic,
    _flatten,
    _prime_batch_norm,
    _state_identity,
    load_state,
    save_state,
)
from mechlens_retina.training.windows import (
    WindowBuffer,
    _conv1,
    _group_sizes,
    _groups,
    _poisson,
    _Split,
    predict_frames,
    runs,
    sample_frames,
    stimulus_stats,
)
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
    spread: float = param(
        0.0,
        "weight of a penalty on the first layer's spatial spread: spread * the mean over conv1 channels of "
        "the squared RMS distance (pixels^2) of the channel's weight energy from the kernel centre is added "
        "to the loss; scale-free (a batch norm follows conv1), it pulls each subunit towards a small "
        "receptive field such as a bipolar cell's (docs/training.md, 'A penalty on the subunits' spread'); "
        "0: none",
        min=0,
    )
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
    freeze_bn_epoch: int = param(
        0,
        "from this epoch on (1-based) the batch norms normalise with their running statistics, held fixed, "
        "in training too (their scale and shift still learn), so training optimises the function that is "
        "evaluated; 0: never (batch statistics throughout, the published recipe)",
        min=0,
    )
    cell_weights: str = param(
        "none",
        "how cells weigh in the Poisson loss: none (summed as they come, so a cell weighs with its rate) or "
        "rate (each cell's term divided by its mean training rate, normalised to mean weight 1, so a "
        "low-rate cell's timing counts as much as a bursting cell's); validation and early stopping use "
        "the same weighting",
        choices=("none", "rate"),
    )
    init_from: str = param(
        "",
        "retina-cnn checkpoint (.safetensors) whose weights and stimulus normalisation start training, "
        "instead of random weights (fine-tuning on more data; same architecture and cell count); empty: random",
    )

    def __post_init__(self) -> None:
        if any(m < 1 for m in self.milestones):
            raise ParameterError("milestones", f"epochs must be >= 1, got {self.milestones}")
        # ReduceLROnPlateau decays after lr_patience + 1 epochs without improvement; a stop at or
        # before that epoch ends the run before the lower rate is tried (a v3 run stopped so at
        # epoch 15 with the rate never decayed, build log of 2026-12-06)
        if self.schedule == "plateau" and self.patience <= self.lr_patience + 1:
            raise ParameterError(
                "patience",
                f"{self.patience} stops training no later than the first learning-rate decay (after "
                f"lr_patience + 1 = {self.lr_patience + 1} epochs without improvement), so the lower rate is "
                f"never tried; set patience >= {self.lr_patience + 2} or lower lr_patience",
            )


# -- the training loop -----------------------------------------------------------------------------
def spatial_spread(weight: torch.Tensor) -> torch.Tensor:
    """Mean over channels of each kernel's squared RMS distance from the kernel centre, pixels^2.

    Parameters
    ----------
    weight : torch.Tensor
        (channels, history, k, k) first-layer weights.

    Returns
    -------
    torch.Tensor
        Scalar: ``mean_c sum_{t,y,x} w[c,t,y,x]^2 d(y,x)^2 / sum_{t,y,x} w[c,t,y,x]^2``, with ``d`` the
        distance of pixel (y, x) from the kernel centre. Invariant to each channel's scale, so it moves
        energy towards the centre rather than shrinking the kernel (``bn1`` would undo a shrink).
    """
    k_y, k_x = weight.shape[-2:]
    y = torch.arange(k_y, dtype=weight.dtype, device=weight.device) - (k_y - 1) / 2
    x = torch.arange(k_x, dtype=weight.dtype, device=weight.device) - (k_x - 1) / 2
    d2 = y[:, None] ** 2 + x[None, :] ** 2
    energy = (weight**2).sum(1)  # (channels, k, k)
    return ((energy * d2).sum((1, 2)) / energy.sum((1, 2)).clamp_min(1e-12)).mean()


def _initial_weights(path: str, model: RetinaCNN) -> tuple[float, float]:
    """Load ``init_from``'s weights into ``model`` (in place); its stimulus mean and std.

    Raises
    ------
    ParameterError
        When the checkpoint's architecture or cell count differs from the model training builds, or
        it stores no stimulus normalisation.
    """
    start = RetinaCNN(checkpoint=path, device="cpu")
    if start.architecture() != model.architecture() or start.params.first_layer != model.params.first_layer:
        theirs = {**start.architecture(), "first_layer": start.params.first_layer}
        ours = {**model.architecture(), "first_layer": model.params.first_layer}
        diff = ", ".join(f"{k} {theirs[k]} (training: {ours[k]})" for k in ours if theirs[k] != ours[k])
        raise ParameterError(
            "train.init_from",
            f"{path} has another architecture than the model this recording and recipe build: {diff}; "
            "fine-tune only on a recording with the same cells and grid, with the same model parameters",
        )
    mean, std = start.metadata.get("stimulus_mean"), start.metadata.get("stimulus_std")
    if not isinstance(mean, (int, float)) or not isinstance(std, (int, float)):
        raise ParameterError(
            "train.init_from", f"{path} stores no stimulus_mean / stimulus_std; it was not written by training"
        )
    with torch.no_grad():
        model.torch_module().load_state_dict(start.torch_module().state_dict())
    log.info("starting from the weights of %s", path)
    return float(mean), float(std)


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
    """Fit a :class:`~mechlens_retina.models.cnn.RetinaCNN` to a recording.

    Parameters
    ----------
    data : path, Recording, xarray.Dataset or (train, test) Datasets
        A deep-retina ``.h5`` file or experiment directory, a mechlens netCDF recording, or
        in-memory splits (see :mod:`mechlens_retina.training.recordings`).
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


def _weighted_poisson(rate: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """PoissonNLLLoss (rates, no log y! term) with each cell's term (last axis) multiplied by ``weights``."""
    return ((rate - target * torch.log(rate + 1e-8)) * weights).mean()


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
        # a state written before a parameter became resumable still carries it
        stored["train"] = {k: v for k, v in stored.get("train", {}).items() if k not in RESUMABLE_CHANGES}
        if stored != identity:
            flat_new, flat_old = _flatten(identity), _flatten(stored)
            diff = sorted(k for k in flat_new.keys() | flat_old.keys() if flat_new.get(k) != flat_old.get(k))
            raise UsageError(
                f"cannot resume from {state_path}: it was written for other data or parameters (differing: "
                f"{', '.join(diff) or 'layout'}); rerun with the same ones, or without resume to start afresh"
            )
    elif resume:
        log.info("no training state in %s; starting from the beginning", workdir)
    start = _initial_weights(params.init_from, model) if params.init_from else None
    if start is not None:
        # the starting model's normalisation, so its weights see the inputs they were trained on
        mean, std = start
    else:
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
        if start is None:  # a fine-tune keeps the output scale its starting model learnt
            bn3_bias.copy_(torch.as_tensor(np.log(np.expm1(np.maximum(mean_rate, 1e-3))), dtype=torch.float32))
            bn3_weight.copy_(torch.as_tensor(0.5 * np.maximum(train_rates.std(axis=0), 1e-3), dtype=torch.float32))
    del train_rates

    # a frozen layer (first_layer="synthetic-retina": conv1 is the circuit's) stays out of the optimiser,
    # so neither a gradient step nor weight decay can move it
    decay = [module.get_parameter(f"{name}.weight") for name in ("conv1", "conv2", "dense")]
    decay = [t for t in decay if t.requires_grad]
    conv1_weight = module.get_parameter("conv1.weight")
    if params.spread and not conv1_weight.requires_grad:
        raise ParameterError(
            "spread",
            f"{params.spread} penalises the first layer's spread, but conv1 is fixed here (first_layer="
            f"{model.params.first_layer!r}); leave spread at 0 or train a free first layer",
        )
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
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.nn.PoissonNLLLoss(log_input=False, full=False)

    pieces = runs(train_frames, params.block_frames)
    capacity = min(params.buffer_blocks * (params.block_frames + h - 1), sum(b - a + h - 1 for a, b in pieces))
    buffer = WindowBuffer(_conv1(module), model.input_shape, capacity, params.conv1, device)
    rest = module[1:]
    rng = np.random.default_rng(params.seed)
    weights = None
    if params.cell_weights == "rate":
        # Poisson deviance grows with a cell's rate, so bursting cells (200+ Hz) dominate the plain sum
        # and a low-rate cell's timing barely moves the loss; dividing by the mean rate evens that out
        inverse = 1.0 / np.maximum(mean_rate, 1e-3)
        weights = (inverse / inverse.mean()).astype(np.float32)
        loss_fn = functools.partial(_weighted_poisson, weights=torch.from_numpy(weights).to(device))
    val_target = train_split.response[val_frames]
    val_loss_mean_rate = _poisson(np.broadcast_to(mean_rate, val_target.shape), val_target, weights)
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
        if params.freeze_bn_epoch and epoch >= params.freeze_bn_epoch:
            # batch statistics make the trained function differ from the evaluated one: each unit's
            # threshold moves with the batch mean, so gradient steps leave even the exact circuit
            # (docs/training.md); with fixed running statistics the two are the same function
            for m in module.modules():
                if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                    m.eval()
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
                if step == 0 and start is None:
                    # a fine-tune keeps the running statistics it accumulated: one batch's would
                    # replace them, and eval-mode predictions would move before any step was taken
                    _prime_batch_norm(module, lambda x=x: rest(buffer.first_layer(x)))
                rate = rest(buffer.first_layer(x))
                loss = loss_fn(rate, y)
                objective = loss + params.l1 * rate.abs().mean() if params.l1 else loss
                if params.spread:
                    objective = objective + params.spread * spatial_spread(conv1_weight)
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
        val_loss = _poisson(val_pred, val_target, weights)
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
            (f"; conv1 spread {float(spatial_spread(conv1_weight.detach())):.2f} px^2" if params.spread else "")
            + (f"; stopping ({stop})" if stop else ""),
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
    "runs",
    "sample_frames",
    "save_state",
    "train",
]
