"""The batch-norm retina CNN (McIntosh et al. 2016; Maheswaranathan et al. 2023; Tanaka et al. 2019).

Architecture (paper notes 1.2, torch layout of ``torchdeepretina.models.BNCNN``), as one
``torch.nn.Sequential`` of standard modules whose names are the state_dict prefixes::

    conv1       Conv2d(history -> channels1, kernel1)       # "conv1" layer: (channels1, s1, s1)
    flatten1    Flatten
    bn1         BatchNorm1d(channels1 * s1 * s1, eps=1e-3, momentum=bn_momentum)   # per unit
    noise1      GaussianNoise(noise)                         # training only
    relu1       ReLU
    unflatten1  Unflatten(1, (channels1, s1, s1))
    conv2       Conv2d(channels1 -> channels2, kernel2)     # "conv2" layer: (channels2, s2, s2)
    flatten2    Flatten
    bn2         BatchNorm1d(channels2 * s2 * s2)
    noise2      GaussianNoise(noise)
    relu2       ReLU
    dense       Linear(channels2 * s2 * s2 -> n_cells, bias=False)
    bn3         BatchNorm1d(n_cells)
    softplus    Softplus                                     # rates in Hz

with ``s1 = image_size - kernel1 + 1`` and ``s2 = s1 - kernel2 + 1`` (valid convolutions). The
time axis of the history window is the input-channel axis of ``conv1``, so its temporal filtering
is fully general over the lags. Defaults are the paper's model (40 x 50 x 50 input, 8@15x15,
8@11x11); the NIPS-2016 variant is ``channels1=16, kernel2=9``.

A model trained on a recording stores the mean and standard deviation used to z-score that
recording's movie in its metadata, and z-scores every movie it is shown the same way
(:meth:`RetinaCNN.input_frames`, :meth:`RetinaCNN.standardise`): a recording simulated from mechlens
stimuli holds them in the stimulus library's contrast units, so probes and training movie reach the
network in the same units. A model without the two numbers takes its input as it comes.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mechlens.errors import FileFormatError, ParameterError, UsageError
from mechlens.interfaces import Model
from mechlens.parameters import param
from mechlens_retina.models import checkpoint as ckpt

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: the package's bundled checkpoint (trained by ``make train-default``)
BUNDLED = Path(__file__).resolve().parents[1] / "data" / "default.safetensors"
#: batch-norm epsilon of the reference implementation (Keras default 1e-3)
BN_EPS = 1e-3
#: parameters that fix tensor shapes or the model's time and space units: a checkpoint must match them
ARCHITECTURE = ("history", "image_size", "channels1", "kernel1", "channels2", "kernel2", "n_cells")
UNITS = ("frame_period_s", "pixel_um")
#: training-time behaviour stored with a checkpoint but free to change when loading it
BEHAVIOUR = ("noise", "bn_momentum", "first_layer")
#: first-layer options: learned from the data, or fixed to a circuit's filters (mechanism-recovery test A)
FIRST_LAYERS = ("learned", "synthetic-retina")
#: layer name -> index in the Sequential where ``above`` starts
_SPLIT_AT = {"conv1": 1, "conv2": 7}


def _sizes(image_size: int, kernel1: int, kernel2: int) -> tuple[int, int]:
    s1 = image_size - kernel1 + 1
    return s1, s1 - kernel2 + 1


def build_module(
    history: int,
    image_size: int,
    channels1: int,
    kernel1: int,
    channels2: int,
    kernel2: int,
    n_cells: int,
    noise: float,
    bn_momentum: float,
) -> torch.nn.Sequential:
    """The CNN as a ``Sequential`` of standard modules (layout in the module docstring).

    Parameters
    ----------
    history : int
        Frames per input window (input channels of ``conv1``).
    image_size : int
        Pixels per side of the input.
    channels1, kernel1, channels2, kernel2 : int
        Channels and square kernel sizes of the two convolutions.
    n_cells : int
        Output units.
    noise : float
        Standard deviation of the training-time Gaussian noise after each convolutional batch norm.
    bn_momentum : float
        Momentum of the batch-norm running statistics (torch convention: weight of the new batch).

    Returns
    -------
    torch.nn.Sequential
        Windows (batch, history, image_size, image_size) -> rates (batch, n_cells) in Hz.
    """
    from torch import nn

    from mechlens_retina.models.layers import GaussianNoise

    s1, s2 = _sizes(image_size, kernel1, kernel2)
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(history, channels1, kernel1)),
                ("flatten1", nn.Flatten()),
                ("bn1", nn.BatchNorm1d(channels1 * s1 * s1, eps=BN_EPS, momentum=bn_momentum)),
                ("noise1", GaussianNoise(noise)),
                ("relu1", nn.ReLU()),
                ("unflatten1", nn.Unflatten(1, (channels1, s1, s1))),
                ("conv2", nn.Conv2d(channels1, channels2, kernel2)),
                ("flatten2", nn.Flatten()),
                ("bn2", nn.BatchNorm1d(channels2 * s2 * s2, eps=BN_EPS, momentum=bn_momentum)),
                ("noise2", GaussianNoise(noise)),
                ("relu2", nn.ReLU()),
                ("dense", nn.Linear(channels2 * s2 * s2, n_cells, bias=False)),
                ("bn3", nn.BatchNorm1d(n_cells, eps=BN_EPS, momentum=bn_momentum)),
                ("softplus", nn.Softplus()),
            ]
        )
    )


def state_shapes(metadata: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of the state_dict a checkpoint's architecture needs, allocating nothing.

    The module is built on torch's ``meta`` device (shapes without storage), so a checkpoint's
    tensors can be checked against its metadata before any of them is read.

    Parameters
    ----------
    metadata : mapping
        Checkpoint metadata whose ``architecture`` holds the :data:`ARCHITECTURE` sizes (already
        validated by :func:`checkpoint.validate_metadata`).

    Returns
    -------
    dict of str to tuple of int
        ``{"conv1.weight": (channels1, history, kernel1, kernel1), ...}``, in state_dict order.
    """
    import torch

    arch = metadata["architecture"]
    with torch.device("meta"):
        module = build_module(**{k: int(arch[k]) for k in ARCHITECTURE}, noise=0.0, bn_momentum=0.1)
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def check_memory(arch: Mapping[str, Any], parameter: str, what: str = "") -> dict[str, tuple[int, ...]]:
    """Refuse an architecture whose weights would not fit the memory budget, before building it.

    The weights are counted twice (the module, and the state it is loaded from or trained with);
    the shapes come from :func:`state_shapes` (the meta device: nothing is allocated).

    Returns
    -------
    dict
        The state_dict shapes.

    Raises
    ------
    mechlens.memory.MemoryBudgetError
        Naming ``parameter`` and the weights' size.
    """
    from mechlens import memory

    shapes = state_shapes({"architecture": arch})
    n = sum(float(np.prod(shape, dtype=float)) for shape in shapes.values())
    sizes = ", ".join(f"{k} {arch[k]}" for k in ("image_size", "channels1", "channels2", "n_cells") if k in arch)
    memory.check(
        2 * 4 * n,
        parameter,
        what or f"the retina CNN's weights ({n:.3g} parameters: {sizes})",
        "use a smaller image_size or fewer channels or cells",
    )
    return shapes


def _checked_shapes(path: Path) -> Callable[[Mapping[str, Any]], dict[str, tuple[int, ...]]]:
    """:func:`state_shapes` for a checkpoint's metadata, refusing one too big for memory before any tensor is read."""

    def shapes(metadata: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        arch = metadata["architecture"]
        return check_memory(
            arch, "model.checkpoint", f"the weights of checkpoint {path} (image_size {arch['image_size']})"
        )

    return shapes


def fix_first_layer(module: torch.nn.Sequential) -> None:
    """Set ``conv1`` to the synthetic retina's bipolar filters (bias 0) and freeze it.

    Channel ``c`` of the CNN's ``conv1`` is then the circuit's ``bipolar`` channel ``c`` (0-3 the
    types' direct paths, 4-7 their delayed copies; ``SyntheticRetina().ground_truth_types()``). The
    per-unit batch norm after ``conv1`` scales and shifts each unit separately (it never mixes
    channels), so the identity survives training; attribution at ``conv1`` is taken before it.

    Parameters
    ----------
    module : torch.nn.Sequential
        A :func:`build_module` network with ``history=40, channels1=8, kernel1=15``.
    """
    import torch

    from mechlens_retina.models.synthetic import SyntheticRetina

    weight = SyntheticRetina().conv.weight.detach()
    # get_parameter: typed (module.conv1.weight is typed Tensor | Module by nn.Module.__getattr__)
    conv1_weight, conv1_bias = module.get_parameter("conv1.weight"), module.get_parameter("conv1.bias")
    if tuple(conv1_weight.shape) != tuple(weight.shape):
        raise ParameterError(
            "first_layer",
            f"conv1 weight {tuple(conv1_weight.shape)} cannot hold the circuit's {tuple(weight.shape)}; "
            "use history=40, channels1=8, kernel1=15",
        )
    with torch.no_grad():
        conv1_weight.copy_(weight)
        conv1_bias.zero_()
    module.conv1.requires_grad_(False)


def _gate_formatter() -> Callable[[dict[str, Any]], str] | None:
    """``mechlens_retina.phenomena.agreement.format_agreement``, or None where that module cannot be imported."""
    try:
        from mechlens_retina.phenomena.agreement import format_agreement
    except ImportError:  # checkpoint.describe then prints its own plain table
        return None
    return format_agreement


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``"cuda"`` without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device", "'cuda' was asked for but torch sees no GPU; use 'cpu' or 'auto'")
    return device


class RetinaCNN(Model):
    """The batch-norm retina CNN of McIntosh et al. 2016 / Maheswaranathan et al. 2023 (Tanaka et al. 2019).

    Parameters
    ----------
    **params
        Fields of :class:`RetinaCNN.Parameters`. With ``checkpoint`` a path (or ``"bundled"``) the
        architecture comes from the checkpoint's metadata; an architecture parameter given as well
        must agree with it.

    Attributes
    ----------
    metadata : dict
        The checkpoint metadata (empty for random weights): cells, units, stimulus normalisation,
        training parameters and metrics.
    module : torch.nn.Sequential
        The network (eval mode), on :attr:`device`.
    """

    name = "retina-cnn"

    @dataclass(frozen=True)
    class Parameters:
        checkpoint: str = param(
            "bundled",
            "'bundled' (the package's trained model), 'random' (fresh weights from seed) or a path to a "
            ".safetensors checkpoint (a legacy .pt with its .json is read too)",
        )
        history: int = param(40, "frames of stimulus history per window", min=1)
        image_size: int = param(50, "pixels per side of the input movie", units="px", min=1)
        channels1: int = param(8, "first-layer channels (model interneuron types)", min=1)
        kernel1: int = param(15, "first-layer square kernel size", units="px", min=1)
        channels2: int = param(8, "second-layer channels", min=1)
        kernel2: int = param(11, "second-layer square kernel size", units="px", min=1)
        n_cells: int = param(5, "output units (ganglion cells)", min=1)
        noise: float = param(0.05, "std of the Gaussian noise after each conv batch norm (training only)", min=0)
        bn_momentum: float = param(0.01, "batch-norm running-statistics momentum (torch convention)", gt=0, max=1)
        frame_period_s: float = param(0.01, "seconds per stimulus frame", units="s", gt=0)
        pixel_um: float = param(55.0, "micrometres per stimulus pixel on the retina", units="um", gt=0)
        seed: int = param(0, "weight seed (checkpoint='random')", min=0)
        first_layer: str = param(
            "learned",
            "conv1: 'learned', or 'synthetic-retina' (fixed to the synthetic retina's bipolar filters, bias 0, "
            "frozen in training; channel c is the circuit's channel c)",
            choices=FIRST_LAYERS,
        )
        device: str = param(
            "auto", "torch device: auto (cuda if available), cpu or cuda", choices=("auto", "cpu", "cuda")
        )

        def __post_init__(self) -> None:
            s1, s2 = _sizes(self.image_size, self.kernel1, self.kernel2)
            if s1 < 1:
                raise ParameterError(
                    "kernel1", f"{self.kernel1} px is larger than the {self.image_size} px image; use <= image_size"
                )
            if self.first_layer == "synthetic-retina" and (self.history, self.channels1, self.kernel1) != (40, 8, 15):
                raise ParameterError(
                    "first_layer",
                    f"'synthetic-retina' copies the circuit's Conv2d(40 -> 8, 15); this model has history "
                    f"{self.history}, channels1 {self.channels1}, kernel1 {self.kernel1}: use the defaults",
                )
            if s2 < 1:
                raise ParameterError(
                    "kernel2",
                    f"{self.kernel2} px is larger than the first layer's {s1} px output; use <= {s1} "
                    "(image_size - kernel1 + 1)",
                )

    def __init__(self, **params: Any) -> None:
        import torch

        given = dict(params)
        super().__init__(**params)
        p = self.params
        self.metadata: dict[str, Any] = {}
        self._sha256 = ""
        state: dict[str, torch.Tensor] | None = None
        source = p.checkpoint
        if p.checkpoint != "random":
            path = BUNDLED if p.checkpoint == "bundled" else Path(p.checkpoint).expanduser()
            if p.checkpoint == "bundled" and not BUNDLED.is_file():
                raise FileFormatError(
                    f"the bundled retina-cnn checkpoint {BUNDLED} is not there yet. Make it with `make train-default` "
                    "(or train one with `mechlens train --data RECORDING -o MODEL.safetensors` and pass "
                    "checkpoint=MODEL.safetensors), "
                    "or use checkpoint='random' for freshly initialised weights"
                )
            # metadata validated and tensor shapes checked against it before any tensor is read
            state, self.metadata, self._sha256 = ckpt.load_checkpoint(path, expected_shapes=_checked_shapes(path))
            source = str(path)
            p = self._merge_checkpoint_params(p, given, self.metadata, source)
            self.params = p
        self.history = p.history
        self.input_shape = (p.image_size, p.image_size)
        self.frame_period_s = p.frame_period_s
        s1, s2 = _sizes(p.image_size, p.kernel1, p.kernel2)
        self._layers = {"conv1": (p.channels1, s1, s1), "conv2": (p.channels2, s2, s2)}
        cells = self.metadata.get("cells") or [f"gc{i:02d}" for i in range(p.n_cells)]
        if len(cells) != p.n_cells:
            raise FileFormatError(f"checkpoint {source}: metadata lists {len(cells)} cells but n_cells is {p.n_cells}")
        self._cells = [str(c) for c in cells]
        # seed only the weight initialisation, leaving the caller's global RNG as it was
        if state is None:  # a checkpoint's size was checked before its tensors were read
            check_memory(self.architecture(), "model.image_size")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            module = build_module(**self.architecture(), noise=p.noise, bn_momentum=p.bn_momentum)
        if state is not None:
            module.load_state_dict(state)
        elif p.first_layer == "synthetic-retina":
            fix_first_layer(module)
        if p.first_layer == "synthetic-retina":
            # frozen even when loaded, so further training keeps channel c = circuit channel c
            module.conv1.requires_grad_(False)
        self.module = module.to(resolve_device(p.device)).eval()

    @staticmethod
    def _merge_checkpoint_params(p: Any, given: dict[str, Any], meta: dict[str, Any], source: str) -> Any:
        arch = meta.get("architecture")
        if not isinstance(arch, dict):
            raise FileFormatError(f"checkpoint {source}: metadata has no 'architecture' table")
        stored = {**arch, **{k: meta[k] for k in UNITS if k in meta}}
        missing = [k for k in (*ARCHITECTURE, *UNITS) if k not in stored]
        if missing:
            raise FileFormatError(f"checkpoint {source}: metadata lacks {', '.join(missing)}")
        for key in (*ARCHITECTURE, *UNITS):
            if key in given and not np.isclose(float(getattr(p, key)), float(stored[key])):
                raise ParameterError(
                    key,
                    f"the checkpoint {source} was trained with {key}={stored[key]!r}, not {getattr(p, key)!r}; "
                    f"leave {key} out to use the checkpoint's value, or use checkpoint='random' for a new model",
                )
        updates = {k: type(getattr(p, k))(stored[k]) for k in (*ARCHITECTURE, *UNITS)}
        for key in BEHAVIOUR:
            if key not in given and key in arch:
                updates[key] = type(getattr(p, key))(arch[key])
        if "seed" not in given and isinstance(meta.get("seed"), int):
            updates["seed"] = meta["seed"]
        try:
            return dataclasses.replace(p, **updates)
        except ParameterError as err:
            raise FileFormatError(f"checkpoint {source}: invalid architecture in metadata: {err}") from None

    # -- Model interface -------------------------------------------------------------------
    @property
    def cells(self) -> list[str]:
        return self._cells

    def layers(self) -> dict[str, tuple[int, ...]]:
        """``conv1`` (the first convolution's output, before batch norm: where the paper attributes) and ``conv2``."""
        return dict(self._layers)

    def torch_module(self) -> torch.nn.Sequential:
        return self.module

    def split(self, layer: str) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
        """``(below, above)`` sharing this model's module objects (slices of the Sequential, no copies)."""
        layer = self.check_layer(layer)
        at = _SPLIT_AT[layer]
        # cast: a slice of a Sequential is a Sequential (torch types Sequential.__getitem__ as Module)
        return cast("torch.nn.Sequential", self.module[:at]), cast("torch.nn.Sequential", self.module[at:])

    # -- description -----------------------------------------------------------------------
    def architecture(self) -> dict[str, int]:
        """The shape-defining parameters (``history``, ``image_size``, channels, kernels, ``n_cells``)."""
        return {k: int(getattr(self.params, k)) for k in ARCHITECTURE}

    @property
    def pixel_um(self) -> float:  # type: ignore[override]  # read-only: the checkpoint/parameters fix it
        """Micrometres per stimulus pixel."""
        return float(self.params.pixel_um)

    def input_frames(self, frames: np.ndarray) -> np.ndarray:
        """Contrast frames z-scored as training z-scored its movie (identity without the statistics).

        A model trained on a recording learnt from that recording's movie z-scored with its own mean
        and standard deviation (``stimulus_mean``, ``stimulus_std`` in the metadata), and a recording
        simulated from mechlens stimuli holds them in the stimulus library's contrast units. So every
        input (stimulus windows and baseline windows alike, :meth:`mechlens.interfaces.Model.input_frames`)
        is z-scored the same way before the network sees it.
        """
        if "stimulus_mean" not in self.metadata or "stimulus_std" not in self.metadata:
            return super().input_frames(frames)
        return self.standardise(frames)

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """Z-score a raw recording movie with the training statistics stored in the checkpoint.

        Parameters
        ----------
        raw : numpy.ndarray
            (time, y, x) stimulus in the recording's own units.

        Returns
        -------
        numpy.ndarray
            float32 ``(raw - stimulus_mean) / stimulus_std``: the units the model takes.
        """
        if "stimulus_mean" not in self.metadata or "stimulus_std" not in self.metadata:
            raise UsageError(
                f"model {self.name!r} has no stimulus normalisation in its metadata (it was not trained on a "
                "recording); its input is already z-scored contrast"
            )
        mean, std = float(self.metadata["stimulus_mean"]), float(self.metadata["stimulus_std"])
        return ((np.asarray(raw, dtype=np.float32) - mean) / std).astype(np.float32)

    def annotate(self, cells: Sequence[str], **metadata: Any) -> None:
        """Name the output cells and add metadata (training records the data, normalisation and metrics here)."""
        if len(cells) != self.params.n_cells:
            raise ValueError(f"{len(cells)} cell ids for a model with n_cells={self.params.n_cells}")
        self._cells = [str(c) for c in cells]
        self.metadata.update(metadata)
        self.metadata["cells"] = list(self._cells)

    # -- checkpoints -----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> RetinaCNN:
        """Load a checkpoint written by :meth:`save` (weights-only; the architecture comes from its metadata).

        ``device`` (runtime only: auto, cpu or cuda) is the one parameter a checkpoint does not fix.
        """
        return cls(checkpoint=str(path), **({} if device is None else {"device": device}))

    def save(self, path: str | Path) -> None:
        """Write the checkpoint ``path`` (``*.safetensors``: the state_dict with the metadata in its header).

        The metadata keeps everything this model was loaded or trained with (``metadata``) and
        refreshes the architecture, cells, units, mechlens version and seed. The file is replaced in
        one rename (:func:`checkpoint.save_checkpoint`): a failed save leaves the previous one intact.
        """
        from mechlens import __version__

        p = self.params
        meta = dict(self.metadata)
        meta.update(
            {
                "model": self.name,
                "architecture": {
                    **self.architecture(),
                    "noise": float(p.noise),
                    "bn_momentum": float(p.bn_momentum),
                    "first_layer": str(p.first_layer),
                },
                "cells": list(self.cells),
                "frame_period_s": float(p.frame_period_s),
                "pixel_um": float(p.pixel_um),
                "seed": int(p.seed),
                "mechlens_version": __version__,
            }
        )
        self._sha256 = ckpt.save_checkpoint(path, self.module.state_dict(), meta)
        self.metadata = {**meta, "weights_sha256": self._sha256}

    @staticmethod
    def describe_checkpoint(path: str | Path, metadata: dict[str, Any]) -> str:
        """Summary of a checkpoint's metadata for ``mechlens info`` (see :func:`checkpoint.describe`).

        The metadata is validated first, and a ``.safetensors`` file's tensor shapes are checked
        against it (reading no tensor data), so ``info`` refuses what loading would refuse.

        Raises
        ------
        CheckpointError
            The metadata or the tensor shapes are refused (exit status 2).
        """
        path = Path(path)
        if path.suffix == ckpt.SUFFIX:
            ckpt.validate_metadata(metadata, path)
            ckpt.check_shapes(state_shapes(metadata), ckpt.read_header(path)[1], path)
        else:
            ckpt.validate_metadata(metadata, path.with_suffix(".json"), version=ckpt.LEGACY_VERSION)
        return ckpt.describe(path, metadata, _gate_formatter())

    @staticmethod
    def default_checkpoint() -> Path | None:
        """The bundled checkpoint, which ``mechlens info retina-cnn`` summarises (None until it is built)."""
        return BUNDLED if BUNDLED.is_file() else None

    def checkpoint_sha256(self) -> str:
        """``weights_sha256`` of the checkpoint this model was loaded from or last saved to (``""``: random weights).

        The sha256 of the tensors themselves (:func:`checkpoint.tensor_sha256`), the same for a
        legacy ``.pt`` checkpoint and its ``.safetensors`` conversion.
        """
        return self._sha256
