"""A third-party-like model with a skip connection and functional ops, and no ``split`` of its own.

``SkipNet``: ``stem`` (a convolution) -> relu -> a residual block ``h + tanh(inner(h))`` (the skip
connection goes around ``inner``) -> ``readout`` (a linear map of the flattened block) -> softplus.
Layers are reached through forward hooks on submodules named as the layers: ``stem`` and ``block``
(every path passes through them, so they can be split), ``inner`` (the skip goes around it: it can be
patched, as a lesion does, but not split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mechlens.interfaces import Model
from mechlens.parameters import param


class Residual(nn.Module):
    """``h + tanh(inner(h))``: a skip connection with a functional op, as third-party networks write them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.inner = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.tanh(self.inner(h))


class SkipNet(nn.Module):
    """Windows (batch, history, y, x) -> rates (batch, cell); ``signed`` skips the final softplus."""

    def __init__(self, history: int, size: int, channels: int, n_cells: int, signed: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(history, channels, 3)
        self.block = Residual(channels)
        self.readout = nn.Linear(channels * (size - 2) ** 2, n_cells)
        self.signed = signed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block(torch.relu(self.stem(x)))
        out = self.readout(b.flatten(1))
        return out if self.signed else nn.functional.softplus(out) * 5.0


class SkipModel(Model):
    """A residual toy network reached through forward hooks (no split of its own)."""

    name = "skip-toy"
    history = 4
    frame_period_s = 0.02
    input_shape = (8, 8)

    @dataclass(frozen=True)
    class Parameters:
        channels: int = param(3, "channels of every layer", min=1)
        n_cells: int = param(2, "output cells", min=1)
        seed: int = param(0, "weight seed")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            self.net = SkipNet(self.history, self.input_shape[0], p.channels, p.n_cells, self.signed).eval()
        s = self.input_shape[0] - 2
        self._layers = {"stem": (p.channels, s, s), "block": (p.channels, s, s), "block.inner": (p.channels, s, s)}

    @property
    def cells(self) -> list[str]:
        return [f"c{i}" for i in range(self.params.n_cells)]

    def layers(self) -> dict[str, tuple[int, ...]]:
        return dict(self._layers)

    def torch_module(self) -> nn.Module:
        return self.net


class SplittableSkipModel(SkipModel):
    """Only the layers every path passes through (what the conformance kit accepts)."""

    name = "splittable-skip-toy"

    def layers(self) -> dict[str, tuple[int, ...]]:
        return {k: v for k, v in super().layers().items() if k != "block.inner"}


class SignedSkipModel(SplittableSkipModel):
    """The same network without the output nonlinearity: a signed output (like dF/F)."""

    name = "signed-skip-toy"
    signed = True


class UndeclaredSignedModel(SignedSkipModel):
    """Negative outputs, but not declared signed."""

    name = "undeclared-signed-toy"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.signed = False
