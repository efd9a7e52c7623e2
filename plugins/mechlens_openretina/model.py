"""openretina's core-readout model, built from its own building blocks, as a mechlens Model.

openretina (Hoefling et al. 2024, eLife; ``pip install openretina``) trains retina models made of a
shared convolutional core (``openretina.modules.core.base_core.SimpleCoreWrapper``: space-time
separable 3D convolutions, batch norm, bias, ELU) and a per-session readout
(``openretina.modules.readout.multi_readout.MultiGaussianMaskReadout``: a Gaussian spatial mask and
feature weights per neuron, then a softplus). This plugin builds exactly those modules (it imports
nothing else of openretina: no Lightning, Hydra or downloads) and maps mechlens windows onto them:

- a window ``(batch, history, y, x)`` becomes openretina's video ``(batch, colour, history, y, x)``
  (the grey movie repeated over ``colour_channels``);
- the first layer is unpadded, the hidden layers are padded in space only, so the core is causal:
  with ``history`` equal to its temporal reach (the default) the core answers with one time step,
  the response at the window's last frame. (openretina pads hidden layers in time as well, so its
  own prediction at a frame also sees a few later frames; the weights are the same either way.)
- the attributable layer is ``core``: the core's output at the window's last frame,
  ``(channels, y', x')``; ``split("core")`` gives the core and the readout.

Weights: random (seeded) by default, or a local file (``weights``): a ``.safetensors`` file or a
torch ``state_dict`` (``.pt``/``.pth``/``.ckpt``, loaded with ``weights_only=True``: never
unpickled), with openretina's key names (``core.features.layer0...``, ``readout.<session>...``); a
Lightning checkpoint's ``state_dict`` entry is taken when present. Nothing is downloaded.

The core's ELUs and the separable convolutions are smooth, not piecewise linear: exact integrated
gradients refuses the model (naming the module), quadrature ``integrated-gradients`` works.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechlens.errors import ParameterError, UsageError
from mechlens.interfaces import Model
from mechlens.parameters import param

INSTALL = "pip install 'mechlens[openretina]'"


def _openretina() -> tuple[type, type]:
    """openretina's core and readout classes, or a UsageError saying how to install them."""
    try:
        from openretina.modules.core.base_core import SimpleCoreWrapper
        from openretina.modules.readout.multi_readout import MultiGaussianMaskReadout
    except ImportError as err:
        raise UsageError(f"model 'openretina-core-readout' needs openretina ({err}); install it: {INSTALL}") from None
    return SimpleCoreWrapper, MultiGaussianMaskReadout


def load_weights(path: str) -> dict[str, Any]:
    """A state dict from a local ``.safetensors`` or torch file, without unpickling.

    Raises
    ------
    ParameterError
        ``weights``: the file is missing, unreadable, or holds no tensors.
    """
    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise ParameterError("weights", f"{file} does not exist or is not a file")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader error is the file's problem, said once
        raise ParameterError(
            "weights",
            f"{file} cannot be read as tensors without unpickling ({type(err).__name__}: {str(err)[:200]}); save "
            "the weights alone: torch.save(model.state_dict(), 'weights.pt') or safetensors",
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a Lightning checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ParameterError("weights", f"{file} holds no state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _sessions(state: dict[str, Any]) -> list[str]:
    return sorted({k.split(".")[1] for k in state if k.startswith("readout.") and k.count(".") >= 2})


class OpenRetinaCoreReadout(Model):
    """openretina's core-readout retina model (3D conv core, Gaussian-mask readout); random or local weights."""

    name = "openretina-core-readout"

    @dataclass(frozen=True)
    class Parameters:
        height_px: int = param(18, "grid height (y) in pixels", min=1, max=512)
        width_px: int = param(16, "grid width (x) in pixels", min=1, max=512)
        frame_period_s: float = param(1 / 30, "seconds per frame", units="s", gt=0)
        pixel_um: float | None = param(None, "pixel size on the retina; None: the model states none", units="um", gt=0)
        colour_channels: int = param(1, "input channels of the core (the grey movie is repeated over them)", min=1)
        hidden_channels: list[int] = param([8, 8], "output channels of each core layer", min=1)
        temporal_kernel_sizes: list[int] = param([11, 5], "temporal kernel of each core layer, frames", min=1)
        spatial_kernel_sizes: list[int] = param(
            [7, 3], "spatial kernel of each core layer (odd after the first)", min=1
        )
        convolution_type: str = param(
            "custom_separable", "openretina's convolution", choices=("custom_separable", "separable", "full")
        )
        history: int | None = param(None, "frames per window; default: the core's temporal reach", min=1, max=1000)
        n_cells: int = param(10, "readout neurons (with weights: read from the file)", min=1, max=100000)
        session: str = param("", "readout session (openretina's data key); default: the file's only one, or 'session'")
        weights: str = param("", "local weights file (.safetensors or a torch state dict); empty: random weights")
        seed: int = param(0, "seed of the random weights")

    def __init__(self, **params: Any) -> None:
        import torch

        super().__init__(**params)
        p = self.params
        core_cls, readout_cls = _openretina()
        n_layers = len(p.hidden_channels)
        for name in ("temporal_kernel_sizes", "spatial_kernel_sizes"):
            if len(getattr(p, name)) != n_layers:
                raise ParameterError(name, f"got {len(getattr(p, name))} values for {n_layers} core layers")
        hidden = set(p.spatial_kernel_sizes[1:])
        if len(hidden) > 1 or any(s % 2 == 0 for s in hidden):
            raise ParameterError(
                "spatial_kernel_sizes",
                f"got {p.spatial_kernel_sizes}: the layers after the first share one 'same' spatial padding, so "
                "their kernels must be one odd size",
            )
        reach = sum(k - 1 for k in p.temporal_kernel_sizes) + 1
        history = p.history if p.history is not None else reach
        if history < reach:
            raise ParameterError("history", f"got {history}; the core's temporal kernels reach {reach} frames")
        state = load_weights(p.weights) if p.weights else None
        session = p.session or "session"
        n_cells = p.n_cells
        if state is not None:
            found = _sessions(state)
            if not p.session and len(found) == 1:
                session = found[0]
            if session not in found:
                raise ParameterError("session", f"got {session!r}; {p.weights} has readout sessions {found}")
            n_cells = int(state[f"readout.{session}.bias"].shape[0]) if f"readout.{session}.bias" in state else n_cells
        self.history = history
        self.frame_period_s = float(p.frame_period_s)
        self.input_shape = (p.height_px, p.width_px)
        self.pixel_um = p.pixel_um
        hidden_pad = p.spatial_kernel_sizes[-1] // 2 if n_layers > 1 else 0
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(p.seed)
            # openretina warns about its own defaults (no mean activity, unpadded input with frames cut)
            warnings.simplefilter("ignore", UserWarning)
            core = core_cls(
                channels=(p.colour_channels, *p.hidden_channels),
                temporal_kernel_sizes=tuple(p.temporal_kernel_sizes),
                spatial_kernel_sizes=tuple(p.spatial_kernel_sizes),
                gamma_input=0.0, gamma_temporal=0.0, gamma_in_sparse=0.0, gamma_hidden=0.0,
                cut_first_n_frames=0,
                input_padding=False,
                hidden_padding=(0, hidden_pad, hidden_pad),  # space only: the core stays causal
                convolution_type=p.convolution_type,
            )  # fmt: skip
            if state is None:
                _calibrate(core, (p.colour_channels, history, *self.input_shape))
            core.eval()
            with torch.no_grad():
                out = core(torch.zeros(1, p.colour_channels, history, *self.input_shape))
            if min(out.shape[3:]) < 1:
                raise ParameterError(
                    "spatial_kernel_sizes", f"the core's kernels are larger than the {self.input_shape} grid"
                )
            self._core_shape = (int(out.shape[1]), int(out.shape[3]), int(out.shape[4]))
            readout = readout_cls(
                (int(out.shape[1]), 1, *self._core_shape[1:]), {session: n_cells}, True, True, 6.0, 4.0, True
            )
        self.module = _core_readout(core, readout, session, p.colour_channels)
        if state is not None:
            # openretina's keys (core..., readout.<session>...) onto the module's (below.core..., above.readout...)
            wanted = {f"below.{k}": v for k, v in state.items() if k.startswith("core.")}
            wanted.update({f"above.{k}": v for k, v in state.items() if k.startswith(f"readout.{session}.")})
            fix = "set hidden_channels, temporal_kernel_sizes, spatial_kernel_sizes and colour_channels as trained"
            try:
                missing, unexpected = self.module.load_state_dict(wanted, strict=False)
            except RuntimeError as err:  # shapes that differ
                first = next((ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln), str(err)[:200])
                raise ParameterError(
                    "weights", f"{p.weights} does not fit this architecture ({first}); {fix}"
                ) from None
            # openretina's regulariser buffers (Laplace filters) are constants it rebuilds; weights must all match
            missing = [k for k in missing if "regularizer" not in k]
            if missing or unexpected:
                raise ParameterError(
                    "weights",
                    f"{p.weights} does not fit this architecture: missing {missing[:4]}, "
                    f"unexpected {unexpected[:4]}; {fix}",
                )
        self.module.eval()
        for t in self.module.parameters():
            t.requires_grad_(False)
        self._cells = [f"gc{i:02d}" for i in range(n_cells)]
        self._sha = hashlib.sha256(Path(p.weights).expanduser().read_bytes()).hexdigest() if p.weights else ""

    @property
    def cells(self) -> list[str]:
        return self._cells

    def layers(self) -> dict[str, tuple[int, ...]]:
        """``core``: the core's output at the window's last frame, (channels, y', x')."""
        return {"core": self._core_shape}

    def torch_module(self) -> Any:
        return self.module

    def split(self, layer: str) -> tuple[Any, Any]:
        self.check_layer(layer)
        return self.module.below, self.module.above

    def checkpoint_sha256(self) -> str:
        """sha256 of the weights file, or ``""`` for random weights."""
        return self._sha


def _calibrate(core: Any, shape: tuple[int, ...], n: int = 16) -> None:
    """Set the batch norms' running statistics from seeded white noise, as training would from its movies.

    openretina initialises the convolutions with small weights and the running statistics at (0, 1),
    so an untrained core in eval mode answers with activations near 0 (~1e-6) and every cell with its
    resting rate. One pass of ``n`` white-noise videos in training mode, with a cumulative average
    (``momentum=None``), gives each layer unit-variance activations: a random model with a response.
    Uses the caller's torch random state (seeded by the model's ``seed``).
    """
    import torch
    from torch import nn

    norms = [m for m in core.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    core.train()
    with torch.no_grad():
        core(torch.randn(n, *shape))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def _core_readout(core: Any, readout: Any, session: str, colour: int) -> Any:
    """The module: windows (batch, history, y, x) -> rates (batch, cell), as ``below`` then ``above``.

    Built here rather than at import so that discovering the plugin imports no torch.
    """
    from torch import nn

    class Below(nn.Module):
        """Windows -> the core's output at the last frame, (batch, channels, y', x')."""

        def __init__(self) -> None:
            super().__init__()
            self.core = core

        def forward(self, windows: Any) -> Any:
            video = windows.unsqueeze(1).expand(-1, colour, -1, -1, -1)
            return self.core(video)[:, :, -1]

    class Above(nn.Module):
        """The core's output at the last frame -> rates (batch, cell), through the session's readout."""

        def __init__(self) -> None:
            super().__init__()
            self.readout = readout

        def forward(self, features: Any) -> Any:
            return self.readout(features.unsqueeze(2), data_key=session)[:, -1]

    return nn.Sequential(OrderedDict([("below", Below()), ("above", Above())]))
