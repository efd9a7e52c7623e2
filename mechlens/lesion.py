"""A lesioned model: the same model with some units of one hidden layer clamped to baseline.

This is the reduced model of ``docs/contract.md`` ("Reduction") as a :class:`~mechlens.interfaces.Model`
of its own, so that *any* measure (a phenomenon's, with all its control stimuli) can be taken on it,
not only the response to the attributed stimulus. With ``below, above = model.split(layer)`` and a
boolean mask ``m`` over the layer's units (True = kept),

    z_t = below(x_t),   z_0 = below(x_0),   r_t = above(where(m, z_t, z_0)),

where ``x_0`` is the baseline window (default: all zeros, the mean-grey screen of a z-scored stimulus).
A model that overrides ``split`` runs that way (its fast path); any other model is patched through a
forward hook on the layer's submodule (:func:`mechlens.layers.patched`, activation patching): the module
runs on the window as it is and the layer's output is replaced by ``where(m, z_t, z_0)``, so skip
connections and functional ops around the layer keep seeing the window.
Keeping every unit gives the model back; keeping the complement of a reduction's units gives the
"complement" check (the mechanism's units silenced). It is the experimentalist's pharmacological or
optogenetic silencing of a cell type, done on the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

import mechlens.layers as _layers
from mechlens.errors import UsageError
from mechlens.interfaces import Model


class _Clamp(torch.nn.Module):
    """``where(mask, z, z0)`` on a batch of layer activations (batch, *unit_shape)."""

    # the buffers registered in __init__ (declared, or nn.Module.__getattr__ types them Tensor | Module)
    mask: torch.Tensor
    z0: torch.Tensor

    def __init__(self, mask: torch.Tensor, z0: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.register_buffer("z0", z0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, z, self.z0.to(z.dtype))


class _Patched(torch.nn.Module):
    """The intact module with the layer's output passed through ``clamp`` (a forward hook, only during a call)."""

    _layer: torch.nn.Module

    def __init__(self, module: torch.nn.Module, layer: torch.nn.Module, clamp: _Clamp, where: str) -> None:
        super().__init__()
        self.module, self.clamp, self.where = module, clamp, where
        object.__setattr__(self, "_layer", layer)  # registered inside ``module`` already

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _layers.patched(self.module, self._layer, x, self.clamp, self.where)


class Lesioned(Model):
    """``model`` with the units of ``layer`` where ``keep`` is False clamped to their baseline value.

    Parameters
    ----------
    model : Model
        The intact model.
    layer : str
        One of ``model.layers()``.
    keep : numpy.ndarray
        Boolean, the layer's unit shape (``model.layers()[layer]``, e.g. (channel, y, x)) or just
        (channel,) to keep or clamp whole channels (a cell type at every position).
    baseline : numpy.ndarray, optional
        (history, y, x) window whose activations the clamped units keep (default: zeros).

    Notes
    -----
    Only :meth:`predict` (and what builds on it) is meant to be used: the lesioned model has no
    attributable layers of its own (:meth:`layers` is empty).
    """

    name = "lesioned"

    def __init__(
        self, model: Model, layer: str, keep: np.ndarray | Sequence[bool], baseline: np.ndarray | None = None
    ) -> None:
        layer = model.check_layer(layer)
        shape = tuple(model.layers()[layer])
        mask = np.asarray(keep, dtype=bool)
        if mask.shape == shape[:1] and len(shape) > 1:
            mask = np.broadcast_to(mask.reshape(-1, *([1] * (len(shape) - 1))), shape)
        if mask.shape != shape:
            raise UsageError(
                f"lesion of {model.name!r} at {layer!r}: keep has shape {mask.shape}; give the layer's unit "
                f"shape {shape} or one flag per channel ({shape[0]},)"
            )
        self.model, self.layer, self.keep = model, layer, mask
        # the intact model's parameters (grid, pixel size), so stimuli are made for both alike
        self.params = getattr(model, "params", None)
        self.history, self.frame_period_s = model.history, model.frame_period_s
        self.pixel_um = model.pixel_um
        # a copy (a plugin may have set a list); cast: tuple() of a tuple[int, int] is typed tuple[int, ...]
        self.input_shape = cast(tuple[int, int], tuple(model.input_shape))
        self.batch_size = model.batch_size
        x0 = np.zeros((model.history, *model.input_shape), np.float32) if baseline is None else baseline
        if tuple(np.shape(x0)) != (model.history, *model.input_shape):
            raise UsageError(
                f"lesion baseline has shape {np.shape(x0)}; the model takes ({model.history}, "
                f"{model.input_shape[0]}, {model.input_shape[1]}) windows"
            )
        device = model.device
        window = torch.as_tensor(model.input_frames(np.asarray(x0, np.float32)), device=device)[None]
        keep_t = torch.as_tensor(np.ascontiguousarray(mask), device=device)
        self._module: torch.nn.Module
        if model.split_by_hooks():
            # activation patching: no split needed, so a layer a skip connection goes around works too
            module, target = model.torch_module(), model.layer_module(layer)
            where = f"layer {layer!r} of model {model.name!r}"
            with torch.no_grad():
                z0 = _layers.capture(module, target, window, where)[0]
            self._module = _Patched(module, target, _Clamp(keep_t, z0.detach()), where).eval()
        else:
            below, above = model.split(layer)
            with torch.no_grad():
                z0 = below(window)[0]
            self._module = torch.nn.Sequential(below, _Clamp(keep_t, z0.detach()), above).eval()
        self.signed = model.signed

    @property
    def cells(self) -> list[str]:
        return list(self.model.cells)

    def layers(self) -> dict[str, tuple[int, ...]]:
        return {}

    def input_frames(self, frames: np.ndarray) -> np.ndarray:
        """The intact model's input units (its module is the one that runs)."""
        return self.model.input_frames(frames)

    def torch_module(self) -> torch.nn.Module:
        return self._module

    def split(self, layer: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        raise UsageError(f"a lesioned model has no attributable layers; attribute {self.model.name!r} itself")


def lesion_channels(model: Model, layer: str, keep: Sequence[int], baseline: np.ndarray | None = None) -> Lesioned:
    """``model`` with only the channels ``keep`` of ``layer`` active (every other channel clamped).

    Parameters
    ----------
    model : Model
        The intact model.
    layer : str
        The layer, e.g. ``"conv1"``.
    keep : sequence of int
        Indices of the channels left active.
    baseline : numpy.ndarray, optional
        (history, y, x) baseline window (default: zeros).
    """
    n = model.layers()[model.check_layer(layer)][0]
    bad = [k for k in keep if not 0 <= int(k) < n]
    if bad:
        raise UsageError(f"lesion of {model.name!r} at {layer!r}: no channel {bad[0]}; it has channels 0..{n - 1}")
    mask = np.zeros(n, dtype=bool)
    mask[list(map(int, keep))] = True
    return Lesioned(model, layer, mask, baseline)
