"""Mechanism recovery: does attribution on a CNN trained on the synthetic retina find the synthetic
retina's own mechanism?

Two matchings of CNN first-layer channels to ground-truth bipolar types are offered:
:func:`match_types`, by **activation correlation** under a probe stimulus (each CNN channel goes to the
type whose centre unit it correlates with most positively, at the best nearby position), and
:func:`match_by_labels`, by the **characterised polarity and kinetics** of each channel's STA. The
CNN's cell-type attributions are then summed per matched type and compared, time course against time
course, with the ground truth's attributions to its own types (:func:`recovery_score`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from mechlens.interfaces import Attributor, Model
from mechlens.testing import noise_stimulus


@dataclass(frozen=True)
class TypeMatch:
    """How CNN channels map onto ground-truth types.

    Attributes
    ----------
    assignment : numpy.ndarray
        (n_cnn_channels,) index of the matched ground-truth type per CNN channel.
    correlation : numpy.ndarray
        (n_cnn_channels, n_truth_channels) Pearson r under white noise between the truth's centre unit
        and the best-matching CNN unit near the centre.
    """

    assignment: np.ndarray
    correlation: np.ndarray

    def strength(self) -> np.ndarray:
        """Largest r of each CNN channel with any truth channel."""
        return self.correlation.max(axis=1)


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
    """Match CNN channels to ground-truth types by activation correlation under Gaussian white noise.

    Parameters
    ----------
    cnn, truth : Model
        The trained CNN and the synthetic retina (same grid and history).
    cnn_layer, truth_layer : str
        Their attributed layers (``"conv1"``, ``"bipolar"``).
    n_frames : int
        Length of the white-noise probe, in frames.
    shift : int
        CNN units up to this many positions from the centre are compared (best |r| kept).
    probe : xarray.Dataset, optional
        The stimulus to compare activations under (default: Gaussian white noise of ``n_frames``). A
        CNN trained on natural scenes is constrained only where natural scenes have power, so its
        filters are best compared under natural scenes.
    seed : int
        Noise seed.
    """
    if probe is None:
        movie = noise_stimulus(cnn, n_times=n_frames, seed=seed)["stimulus"]
    else:
        movie = probe["stimulus"]
    # a CNN is free to place its filters anywhere in its kernel (the next layer absorbs the shift), so
    # each CNN channel is compared at every position within `shift` px of the centre, and the best kept
    a = _activity(cnn, cnn_layer, movie, shift)  # (time, channel, position)
    b = _activity(truth, truth_layer, movie, 0)[:, :, 0]  # (time, channel)
    a = (a - a.mean(0)) / (a.std(0) + 1e-12)
    b = (b - b.mean(0)) / (b.std(0) + 1e-12)
    full = np.einsum("tcp,tk->cpk", a, b) / a.shape[0]  # (cnn channel, position, truth channel)
    best = full.argmax(axis=1)  # best position per (cnn channel, truth channel)
    corr = np.take_along_axis(full, best[:, None, :], axis=1)[:, 0, :]
    groups, _ = type_groups(truth)
    # a CNN channel is matched to the type of the truth channel it tracks best (direct or delayed path);
    # signed, not |r|: an ON filter anti-correlates with an OFF type but does not play its part
    return TypeMatch(assignment=groups[corr.argmax(axis=1)], correlation=corr)


def pooled_attribution(attribution: xr.DataArray, match: TypeMatch, n_types: int) -> xr.DataArray:
    """Sum a CNN attribution (..., unit_channel) over the channels matched to each ground-truth type."""
    summed = attribution.sum([d for d in ("unit_y", "unit_x") if d in attribution.dims])
    parts = [
        summed.isel(unit_channel=np.flatnonzero(match.assignment == k)).sum("unit_channel") for k in range(n_types)
    ]
    return xr.concat(parts, dim="unit_channel").assign_coords(unit_channel=np.arange(n_types))


def recovery_score(
    cnn_attr: xr.DataArray, truth_attr: xr.DataArray, match: TypeMatch, groups: np.ndarray | None = None
) -> xr.DataArray:
    """Pearson r, per cell, between the CNN's type-pooled attribution and the ground truth's.

    Both arrays are (time, cell, unit_channel[, ...]) on the same times and cells; the
    (time x type) matrices are flattened and correlated, so both the time courses and the split of the
    response among types must agree for a high score.

    Returns
    -------
    xarray.DataArray
        (cell,) correlation.
    """
    if groups is None:
        groups = np.arange(truth_attr.sizes["unit_channel"])
    n_types = int(groups.max()) + 1
    pooled = pooled_attribution(cnn_attr, match, n_types)
    truth = pooled_attribution(truth_attr, TypeMatch(assignment=groups, correlation=np.zeros(0)), n_types)
    scores = []
    for cell in truth["cell"].values:
        x = pooled.sel(cell=cell).transpose("time", "unit_channel").values.ravel()
        y = truth.sel(cell=cell).transpose("time", "unit_channel").values.ravel()
        ok = np.isfinite(x) & np.isfinite(y)
        scores.append(float(np.corrcoef(x[ok], y[ok])[0, 1]) if ok.sum() > 2 and np.std(y[ok]) > 0 else np.nan)
    return xr.DataArray(np.asarray(scores), dims="cell", coords={"cell": truth["cell"].values})


def compare(
    cnn: Model,
    truth: Model,
    stimulus: xr.Dataset,
    attributor: Attributor,
    match: TypeMatch,
    cells: Sequence[str] | None = None,
    cnn_layer: str = "conv1",
    truth_layer: str = "bipolar",
) -> tuple[xr.DataArray, xr.Dataset, xr.Dataset]:
    """Attribute both models on one stimulus and score the CNN against the ground truth.

    Returns
    -------
    score : xarray.DataArray
        (cell,) Pearson r (see :func:`recovery_score`); with a ``condition`` dim, scored on condition 0.
    cnn_ds, truth_ds : xarray.Dataset
        The two attribution Datasets.
    """
    cnn_ds = attributor.attribute(cnn, stimulus, cnn_layer, cells)
    truth_ds = attributor.attribute(truth, stimulus, truth_layer, cells)
    a, b = cnn_ds["attribution"], truth_ds["attribution"]
    if "condition" in a.dims:
        a, b = a.isel(condition=0), b.isel(condition=0)
    return recovery_score(a, b, match, type_groups(truth)[0]), cnn_ds, truth_ds


def match_by_labels(cnn: Model, cnn_layer: str, truth: Model) -> TypeMatch:
    """Match CNN channels to ground-truth types by their characterised polarity and kinetics.

    Each CNN channel is labelled from its STA (``mechlens_sklearn.characterise``, e.g. ``"ON-fast"``)
    and assigned to the ground-truth type of the same name; a channel whose label names no
    ground-truth type is left out of the pooling (assignment -1).
    """
    from mechlens_sklearn.characterise import characterise

    _, names = type_groups(truth)
    labels = [str(v) for v in characterise(cnn, cnn_layer)["unit_type"].values]
    assignment = np.array([names.index(lab) if lab in names else -1 for lab in labels])
    return TypeMatch(assignment=assignment, correlation=np.zeros((len(labels), 0)))
