"""Which ground-truth type each CNN channel is: the channel-to-type matches of mechanism recovery (issue 17).

* :func:`identity_match`: test A, whose ``conv1`` is the circuit's filters (channel ``c`` *is* the
  circuit's channel ``c``).
* :func:`match_kernels`: test B, a CNN that learned its own ``conv1``. The cosine between every CNN
  kernel (40 x 15 x 15), signed by the polarity its channel reaches its rectifier with
  (:func:`channel_polarity`), and every circuit filter (direct and delayed); a Hungarian assignment
  (channel order is arbitrary) over the pairs above a threshold, so a learned filter that is no
  circuit filter stays unmatched.
* :func:`match_types`: by activation correlation under a probe, superseded (kept for models whose
  weights are not at hand).

A match is a :class:`TypeMatch`; :func:`mechlens_retina.experiments.recovery.pooled_attribution`
sums a CNN's attribution over the channels matched to each type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError, SchemaError
from mechlens.interfaces import Model
from mechlens.testing import noise_stimulus

#: default similarity (cosine signed by the channel's polarity, or |cosine| without one) below which a
#: CNN kernel matches no circuit filter. Two random 9000-dimensional
#: kernels have |cos| ~ 0.01; a circuit filter shifted by one pixel keeps |cos| ~ 0.8 (its DoG
#: centre is 1 px wide), so 0.5 separates "the same filter" from "another filter".
COSINE_THRESHOLD = 0.5


@dataclass(frozen=True)
class TypeMatch:
    """How CNN channels map onto ground-truth types.

    Attributes
    ----------
    assignment : numpy.ndarray
        (n_cnn_channels,) int: index of the matched ground-truth type per CNN channel; -1 unmatched.
    correlation : numpy.ndarray
        (n_cnn_channels, n_truth_channels) similarity the match was made on (signed cosine of the
        kernels for :func:`match_kernels`; activation r for :func:`match_types`).
    channel : numpy.ndarray, optional
        (n_cnn_channels,) int: the matched circuit channel (direct or delayed); -1 unmatched.
    """

    assignment: np.ndarray
    correlation: np.ndarray
    channel: np.ndarray | None = field(default=None)

    def strength(self) -> np.ndarray:
        """(n_cnn_channels,) similarity of each CNN channel with its matched circuit channel
        (without ``channel``: the largest similarity with any truth channel)."""
        if self.channel is None or self.correlation.size == 0:
            return self.correlation.max(axis=1)
        rows = np.arange(len(self.channel))
        ok = self.channel >= 0
        out = np.full(len(self.channel), np.nan)
        out[ok] = self.correlation[rows[ok], self.channel[ok]]
        return out


def type_groups(truth: Model) -> tuple[np.ndarray, list[str]]:
    """Ground-truth type index of each channel of the truth's layer, and the type names.

    The synthetic retina's ``bipolar`` layer holds each type twice (direct and delayed path); both
    channels belong to one type. A model without ``ground_truth_types`` has one type per channel.
    """
    describe = getattr(truth, "ground_truth_types", None)
    if describe is None:
        n = next(iter(truth.layers().values()))[0]
        return np.arange(n), [str(i) for i in range(n)]
    types = describe()
    names: list[str] = []
    for t in types:
        if t["type"] not in names:
            names.append(t["type"])
    return np.array([names.index(t["type"]) for t in types]), names


def identity_match(groups: np.ndarray) -> TypeMatch:
    """Channel ``c`` of the CNN is the circuit's channel ``c`` (test A: ``first_layer="synthetic-retina"``).

    Parameters
    ----------
    groups : numpy.ndarray
        (n_channels,) type index of each circuit channel (:func:`type_groups`).
    """
    n = len(groups)
    return TypeMatch(assignment=np.asarray(groups).copy(), correlation=np.eye(n), channel=np.arange(n))


def kernel_cosines(cnn_weight: np.ndarray, circuit_weight: np.ndarray) -> np.ndarray:
    """Signed cosine between every CNN kernel and every circuit filter.

    Parameters
    ----------
    cnn_weight : numpy.ndarray
        (n_cnn, history, k, k) first-layer weights of the CNN.
    circuit_weight : numpy.ndarray
        (n_circuit, history, k, k) the circuit's filters (same history and kernel size).

    Returns
    -------
    numpy.ndarray
        (n_cnn, n_circuit) cosines in [-1, 1]; 0 for an all-zero kernel.
    """
    a = np.asarray(cnn_weight, dtype=np.float64)
    b = np.asarray(circuit_weight, dtype=np.float64)
    if a.shape[1:] != b.shape[1:]:
        raise SchemaError(
            f"kernel_cosines: CNN kernels {a.shape[1:]} and circuit filters {b.shape[1:]} differ in (history, y, x); "
            "compare a CNN with the circuit's history and kernel size (40 frames, 15 x 15)"
        )
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na > 0, na, 1.0)) @ (b / np.where(nb > 0, nb, 1.0)).T


def channel_polarity(cnn: Model, layer: str = "conv1") -> tuple[np.ndarray, np.ndarray]:
    """The sign each channel of ``layer`` reaches its rectifier with: which half of its kernel the CNN keeps.

    A channel with kernel ``w`` followed by a per-unit gain ``g`` and a ReLU passes the part of the
    stimulus where ``g * w . x`` rises: an ON channel for ``g w`` like an ON filter, an OFF channel
    for its negative. The kernel's sign alone is therefore not free: with ``g > 0``, ``w`` and
    ``-w`` are two different cell types (the synthetic retina's OFF-slow filter and its ON-fast
    delayed copy have cosine -0.99, and the circuit rectifies each its own way). The gain is read from
    the network: the modules of ``cnn.split(layer)[1]`` before its first ReLU must act on each unit
    alone (a flatten, a batch norm in eval mode, an identity), and their slope per unit is measured.

    Parameters
    ----------
    cnn : Model
        A CNN whose layer above ``layer`` starts with per-unit stages and a ReLU (``retina-cnn``:
        flatten, ``bn1``, noise, ``relu1``).
    layer : str
        The attributed layer (shape (channels, y, x)).

    Returns
    -------
    polarity : numpy.ndarray
        (channels,) +1 or -1: the sign of the median slope over the channel's units.
    consistency : numpy.ndarray
        (channels,) fraction of the channel's units whose slope has that sign.

    Raises
    ------
    SchemaError
        If the part above the layer has no ReLU, or mixes units before it.
    """
    import torch
    from torch import nn

    _, above = cnn.split(layer)
    modules = list(above) if isinstance(above, nn.Sequential) else [above]
    relu = next((i for i, m in enumerate(modules) if isinstance(m, nn.ReLU)), None)
    if relu is None:
        raise SchemaError(
            f"channel_polarity: the network above {layer!r} of model {cnn.name!r} has no ReLU among its top-level "
            "modules, so its channels have no polarity; match kernels without one (polarity=None)"
        )
    prefix = nn.Sequential(*modules[:relu]).eval()
    shape = cnn.layers()[layer]
    rng = np.random.default_rng(0)
    with torch.no_grad():
        zero = torch.zeros((1, *shape), device=cnn.device)
        base = prefix(zero).reshape(1, -1)
        slope = (prefix(zero + 1.0).reshape(1, -1) - base)[0]
        d = torch.as_tensor(rng.standard_normal((1, *shape)), dtype=zero.dtype, device=zero.device)
        moved = prefix(zero + d).reshape(1, -1) - base
    if not torch.allclose(moved[0], slope * d.reshape(-1), rtol=1e-3, atol=1e-4 * float(slope.abs().max())):
        raise SchemaError(
            f"channel_polarity: the modules above {layer!r} of model {cnn.name!r} before its first ReLU mix units "
            f"({', '.join(type(m).__name__ for m in modules[:relu])}), so a channel's sign at the rectifier is not "
            "one number; match kernels without polarity (polarity=None)"
        )
    per_channel = slope.reshape(shape[0], -1).cpu().numpy()
    polarity = np.where(np.median(per_channel, axis=1) >= 0, 1.0, -1.0)
    consistency = (np.sign(per_channel) == polarity[:, None]).mean(axis=1)
    return polarity, consistency


def match_kernels(
    cnn_weight: np.ndarray,
    circuit_weight: np.ndarray,
    groups: np.ndarray,
    threshold: float = COSINE_THRESHOLD,
    polarity: np.ndarray | None = None,
) -> TypeMatch:
    """Match CNN channels to circuit channels by kernel shape, invariant to channel order.

    With ``polarity`` (:func:`channel_polarity`: the sign each CNN channel reaches its rectifier
    with) the similarity is the cosine of ``polarity * kernel`` with each circuit filter, so an OFF
    channel matches only OFF filters: the circuit rectifies each filter's own sign, and its filters
    of opposite polarity and different kinetics are near negatives of each other (cosine down to
    -0.99). Without it, |cosine| (for a layer whose sign the network above may undo). The Hungarian
    assignment (``scipy.optimize.linear_sum_assignment``) gives each circuit channel at most one CNN
    channel and maximises the summed similarity over the pairs at or above ``threshold`` (pairs below
    it count 0, so a pair that cannot match never displaces one that can); a channel left with no such
    pair stays unmatched.

    Parameters
    ----------
    cnn_weight : numpy.ndarray
        (n_cnn, history, k, k) the CNN's ``conv1`` weights.
    circuit_weight : numpy.ndarray
        (n_circuit, history, k, k) the circuit's filters (``SyntheticRetina().conv.weight``).
    groups : numpy.ndarray
        (n_circuit,) type index of each circuit channel (:func:`type_groups`).
    threshold : float
        Smallest similarity of a match.
    polarity : numpy.ndarray, optional
        (n_cnn,) +1 / -1 per CNN channel.

    Returns
    -------
    TypeMatch
        ``assignment`` (type or -1), ``channel`` (circuit channel or -1) and ``correlation`` the
        signed cosines (n_cnn, n_circuit), times ``polarity`` where given; ``strength()`` is the
        matched pair's entry.
    """
    from scipy.optimize import linear_sum_assignment

    cos = kernel_cosines(cnn_weight, circuit_weight)
    if polarity is not None:
        polarity = np.asarray(polarity, dtype=float)
        if polarity.shape != (cos.shape[0],) or not np.all(np.abs(polarity) == 1):
            raise ParameterError(
                "polarity",
                f"match_kernels: polarity must be +1 or -1 for each of the {cos.shape[0]} CNN channels, got "
                f"{polarity.tolist()}; take it from channel_polarity(cnn)",
            )
        cos = cos * polarity[:, None]
        similarity = cos
    else:
        similarity = np.abs(cos)
    eligible = np.where(similarity >= threshold, similarity, 0.0)
    rows, cols = linear_sum_assignment(-eligible)
    channel = np.full(cos.shape[0], -1)
    for r, c in zip(rows, cols):
        if eligible[r, c] > 0:
            channel[r] = c
    groups = np.asarray(groups)
    assignment = np.where(channel >= 0, groups[np.maximum(channel, 0)], -1)
    return TypeMatch(assignment=assignment, correlation=cos, channel=channel)


# -- the activation-correlation matching (kept for comparison: it cannot tell fast from slow) ------
def _activity(model: Model, layer: str, movie: xr.DataArray, radius: int) -> np.ndarray:
    """Activations of the units within ``radius`` of the layer's centre: (time, channel, position)."""
    import torch

    below, _ = model.split(layer)
    windows = model.windows(movie)
    outs = []
    with torch.no_grad():
        for start in range(0, windows.shape[0], 256):
            z = below(windows[start : start + 256].contiguous())
            cy, cx = z.shape[-2] // 2, z.shape[-1] // 2
            patch = z[:, :, cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
            outs.append(patch.reshape(z.shape[0], z.shape[1], -1).numpy())
    return np.concatenate(outs)


def match_types(
    cnn: Model,
    cnn_layer: str,
    truth: Model,
    truth_layer: str,
    n_frames: int = 3000,
    seed: int = 0,
    shift: int = 6,
    probe: xr.Dataset | None = None,
) -> TypeMatch:
    """Match CNN channels to ground-truth types by activation correlation under a probe stimulus.

    Superseded by :func:`match_kernels` (under natural scenes this criterion matched every CNN
    channel to a slow type); kept because it needs no access to the weights.

    Parameters
    ----------
    cnn, truth : Model
        The trained CNN and the synthetic retina (same grid and history).
    cnn_layer, truth_layer : str
        Their attributed layers (``"conv1"``, ``"bipolar"``).
    n_frames : int
        Length of the white-noise probe, in frames.
    seed : int
        Noise seed.
    shift : int
        CNN units up to this many positions from the centre are compared (best r kept).
    probe : xarray.Dataset, optional
        The stimulus to compare activations under (default: Gaussian white noise of ``n_frames``).
    """
    if probe is None:
        movie = noise_stimulus(cnn, n_times=n_frames, seed=seed)["stimulus"]
    else:
        movie = probe["stimulus"]
    # a CNN is free to place its filters anywhere in its kernel (the next layer absorbs the shift)
    a = _activity(cnn, cnn_layer, movie, shift)  # (time, channel, position)
    b = _activity(truth, truth_layer, movie, 0)[:, :, 0]  # (time, channel)
    a = (a - a.mean(0)) / (a.std(0) + 1e-12)
    b = (b - b.mean(0)) / (b.std(0) + 1e-12)
    full = np.einsum("tcp,tk->cpk", a, b) / a.shape[0]  # (cnn channel, position, truth channel)
    best = full.argmax(axis=1)
    corr = np.take_along_axis(full, best[:, None, :], axis=1)[:, 0, :]
    groups, _ = type_groups(truth)
    return TypeMatch(assignment=groups[corr.argmax(axis=1)], correlation=corr)
