"""A CNN's first layer written in the circuit's filters: how much of each channel they carry (issue 17).

Kernel matching (:func:`mechlens_retina.experiments.matching.match_kernels`) asks each learned
``conv1`` kernel to *be* one circuit filter. Issue 17 also proposed a mapping fitted on natural
scenes and tested on the probes. :func:`fit_circuit_basis` fits it: each CNN channel's activation is
regressed on the circuit's filter outputs at the same position (least squares over a movie), giving
the mixing ``M`` (n_cnn, n_circuit), exactly the residual kernels ``R_c = W_c - sum_f M[c, f] K_f``,
and ``explained[c]``, the fraction of channel ``c``'s variance on the movie that the circuit's
filters carry.

It is kept as a diagnosis, not as test B's matching, for what it measured (docs/retina-walkthrough.md,
"Test B's matching"): on natural scenes the circuit's eight filters also carry much of the variance
of a white-noise kernel (a median 0.23 over eight on the bundled model's 50 x 50 grid, 0.6 in the
unit test's 20 x 20 one: natural scenes' power sits at low spatial and temporal frequencies, where
every smooth filter responds), and the fitted mixtures of the trained CNNs' channels cancel filters
of opposite polarity (coefficients up to 2 x 10^4; with non-negative weights, OFF-fast plus ON-fast,
whose filters have cosine -0.95), so the map names no type. Under white noise ``explained`` is the
share of the kernel in the filters' span (a random kernel: ~8 / 9000), a similarity that does not
depend on the movie's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mechlens.errors import SchemaError
from mechlens.interfaces import Model

if TYPE_CHECKING:
    import torch
    import xarray as xr


@dataclass(frozen=True)
class CircuitBasis:
    """A first layer written as a mixture of the circuit's filters plus a residual.

    Attributes
    ----------
    mixing : numpy.ndarray
        (n_cnn, n_circuit) ``M``: CNN channel ``c`` ~ ``sum_f M[c, f]`` x circuit filter ``f`` (same units
        as the CNN's ``conv1`` per unit of the circuit filter's output).
    residual : numpy.ndarray
        (n_cnn, history, k, k) ``W_c - sum_f M[c, f] K_f``, float64: what the circuit's filters leave.
    explained : numpy.ndarray
        (n_cnn,) fraction of each channel's activation variance on the fitting movie carried by the
        circuit's filters (1 - residual variance / variance); NaN for a channel that never varies.
    """

    mixing: np.ndarray
    residual: np.ndarray
    explained: np.ndarray


def _first_conv(cnn: Model, layer: str) -> torch.nn.Conv2d:
    """The single convolution that computes ``layer`` from the input windows, or a SchemaError."""
    from torch import nn

    below, _ = cnn.split(layer)
    parts = (
        [m for m in below.modules() if not isinstance(m, nn.Sequential)]
        if isinstance(below, nn.Sequential)
        else [below]
    )
    if len(parts) != 1 or not isinstance(parts[0], nn.Conv2d) or parts[0].groups != 1:
        raise SchemaError(
            f"layer {layer!r} of model {cnn.name!r} is not one convolution of the input windows "
            f"({', '.join(type(m).__name__ for m in parts)}); the circuit basis is fitted to a first layer that is "
            "linear in the stimulus: pass the first convolution (retina-cnn: 'conv1')"
        )
    return parts[0]


def fit_circuit_basis(
    cnn: Model, circuit_weight: np.ndarray, movie: xr.DataArray, layer: str = "conv1", stride: int = 5
) -> CircuitBasis:
    """Fit each CNN channel as a mixture of the circuit's filters, on a movie (natural scenes).

    Parameters
    ----------
    cnn : Model
        The CNN; ``layer`` must be one convolution of its input windows (``retina-cnn``'s ``conv1``).
    circuit_weight : numpy.ndarray
        (n_circuit, history, k, k) the circuit's filters (``SyntheticRetina().conv.weight``), applied to
        the same windows as the CNN's kernels (both see ``cnn.windows(movie)``, the CNN's input units).
    movie : xarray.DataArray
        ``stimulus`` (time, y, x) to fit on, on the CNN's grid.
    layer : str
        The CNN's first layer.
    stride : int
        Every ``stride``-th window is used (neighbouring windows share 39 of 40 frames).

    Returns
    -------
    CircuitBasis
    """
    weight = _first_conv(cnn, layer).weight.detach().cpu().numpy()
    return fit_kernels(weight, circuit_weight, cnn.windows(movie), stride=stride, name=f"the CNN's {layer}")


def fit_kernels(
    weight: np.ndarray, circuit_weight: np.ndarray, windows: torch.Tensor, stride: int = 5, name: str = "the kernels"
) -> CircuitBasis:
    """:func:`fit_circuit_basis` for any kernels (e.g. random ones, as a reference), on given windows.

    Parameters
    ----------
    weight : numpy.ndarray
        (n_cnn, history, k, k) the kernels to fit.
    circuit_weight : numpy.ndarray
        (n_circuit, history, k, k) the circuit's filters.
    windows : torch.Tensor
        (n_windows, history, y, x) input windows (``Model.windows``: the model's input units).
    stride : int
        Every ``stride``-th window is used.
    name : str
        What ``weight`` is, for the error message.

    Returns
    -------
    CircuitBasis
        The mixing, exact residual kernels and explained variance fractions of ``weight``.
    """
    import torch
    import torch.nn.functional as F

    w = torch.as_tensor(np.asarray(weight), dtype=torch.float64)
    k = torch.as_tensor(np.asarray(circuit_weight), dtype=torch.float64)
    if k.shape[1:] != w.shape[1:]:
        raise SchemaError(
            f"fit_circuit_basis: {name} {tuple(w.shape[1:])} and the circuit's filters "
            f"{tuple(k.shape[1:])} differ in (history, y, x); fit a CNN with the circuit's history and kernel size"
        )
    if stride < 1:
        raise SchemaError(f"fit_circuit_basis: stride must be >= 1, got {stride}")
    windows = windows[::stride]
    a_parts, b_parts = [], []
    with torch.no_grad():
        for start in range(0, windows.shape[0], 64):
            x = windows[start : start + 64].double()
            a_parts.append(F.conv2d(x, w).transpose(0, 1).reshape(w.shape[0], -1))
            b_parts.append(F.conv2d(x, k).transpose(0, 1).reshape(k.shape[0], -1))
    a = torch.cat(a_parts, 1).numpy().T  # (samples, n_cnn)
    b = torch.cat(b_parts, 1).numpy().T  # (samples, n_circuit)
    # an intercept per channel: the CNN's bias and the movie's mean luminance are not the mechanism
    a = a - a.mean(0)
    b = b - b.mean(0)
    coef, *_ = np.linalg.lstsq(b, a, rcond=None)  # (n_circuit, n_cnn)
    mixing = coef.T
    var = (a**2).sum(0)
    left = ((a - b @ coef) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        explained = np.where(var > 0, 1.0 - left / var, np.nan)
    residual = w.numpy() - np.einsum("cf,fhyx->chyx", mixing, k.numpy())
    return CircuitBasis(mixing=mixing, residual=residual, explained=explained)
