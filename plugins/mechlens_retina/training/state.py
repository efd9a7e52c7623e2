"""The resumable state of a training run and the run-time settings training needs.

:func:`save_state` / :func:`load_state` write and read ``workdir/train_state.pt`` (weights-only
torch serialisation, replaced atomically), :class:`_deterministic` asks torch for repeatable GPU
kernels for the duration of a run, and the batch-norm helpers set running statistics from data.
Kept apart from the loop in :mod:`mechlens_retina.training.fit` so that the loop reads as the recipe.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mechlens.errors import UsageError

#: file name of the resumable training state inside ``workdir``
STATE_FILE = "train_state.pt"
#: version of the training-state layout; a state of another version is refused
STATE_VERSION = 1
#: training parameters that may change between a run and its resumption (none of them changes what
#: an epoch computes; a larger ``patience`` lets a run that stopped on a plateau go on)
RESUMABLE_CHANGES = ("epochs", "max_steps", "max_seconds", "threads", "eval_batch_size", "patience")


def _state_identity(params: Any, model_params: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
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
    from mechlens_retina.models.checkpoint import atomic_write

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


def _cuda_devices(model_params: Mapping[str, Any]) -> list[int]:
    # fork the GPU's random state too, so training leaves the caller's noise stream untouched there
    from mechlens_retina.models.cnn import resolve_device

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


def _prime_batch_norm(module: torch.nn.Module, forward: Any) -> None:
    """Set the batch-norm running statistics to those of one batch (instead of mean 0, variance 1).

    With the paper's momentum of 0.01 the running statistics forget their start only after a few
    hundred steps; starting them from real data makes eval-mode predictions meaningful from the
    first validation on, which matters for short runs.
    """
    norms = [m for m in module.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    momenta = [m.momentum for m in norms]
    modes = [m.training for m in norms]
    try:
        for m in norms:
            m.momentum = 1.0
            m.train()  # a frozen batch norm (freeze_bn_epoch=1) is primed too
        with torch.no_grad():
            forward()
    finally:
        for m, momentum, mode in zip(norms, momenta, modes):
            m.momentum = momentum
            m.train(mode)


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
