"""Mechanism recovery: does attribution on a CNN trained on the synthetic retina find the synthetic
retina's own mechanism? A score that can fail (issue 17).

Two tests, one score. Which circuit type each CNN channel is comes from
:mod:`mechlens_retina.experiments.matching`:

* **Test A, known channels.** A ``retina-cnn`` with ``first_layer="synthetic-retina"`` has the
  circuit's bipolar filters as its ``conv1``, frozen in training, so channel ``c`` *is* the
  circuit's channel ``c`` (``matching.identity_match``).
* **Test B, free first layer.** A CNN that learned its own ``conv1`` is matched to the circuit by
  kernel shape and polarity (``matching.match_kernels``, ``matching.channel_polarity``); a learned
  filter need not be any circuit filter, and then stays unmatched.

The score (:func:`recovery_score`): per cell, the Pearson r between the CNN's attribution pooled per
matched bipolar type and the circuit's own attribution pooled the same way, over every condition of
the stimulus sweep and every time point ``t >= 0`` (the (condition x time x type) arrays flattened),
on the cells that respond in the circuit (:func:`responding_cells`, >= 2 Hz as in the agreement
gate). The recovery of a phenomenon is the median over those cells. Where the mechanism is known
(the synthetic retina's ablation table), :func:`mechanism_score` also asks the mechanism's own types
to carry the circuit's contribution: a single correlation over all types is led by the largest one
and can miss a smaller type that generates the phenomenon.

Controls scored by the same code (:func:`trivial_attribution`, :func:`shuffled_types`; a random
CNN and a CNN trained on a different circuit are models, scored like the real one) say how high a
score comes without the mechanism.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.interfaces import Attributor, Model
from mechlens_retina.experiments.matching import TypeMatch, type_groups
from mechlens_retina.metrics import pearson_1d

#: a cell responds to a stimulus when its circuit response varies this much (max - min, t >= 0), Hz;
#: the agreement gate's threshold (``mechlens_retina.phenomena.agreement.RESPONDING_MIN_HZ``)
RESPONDING_MIN_HZ = 2.0


def pooled_attribution(attribution: xr.DataArray, match: TypeMatch, n_types: int) -> xr.DataArray:
    """Sum an attribution (..., unit_channel) over the channels matched to each ground-truth type.

    Channels with assignment -1 are left out; a type with no channel sums to 0.

    Returns
    -------
    xarray.DataArray
        (..., unit_channel) with ``unit_channel`` = 0 .. n_types - 1, Hz.
    """
    summed = attribution.sum([d for d in ("unit_y", "unit_x") if d in attribution.dims])
    parts = [
        summed.isel(unit_channel=np.flatnonzero(match.assignment == k)).sum("unit_channel") for k in range(n_types)
    ]
    return xr.concat(parts, dim="unit_channel").assign_coords(unit_channel=np.arange(n_types))


def _after_onset(x: xr.DataArray) -> xr.DataArray:
    return x.sel(time=x["time"] >= -1e-9) if "time" in x.coords else x


def responding_cells(truth_ds: xr.Dataset, min_hz: float = RESPONDING_MIN_HZ) -> list[str]:
    """Cells whose circuit response varies by >= ``min_hz`` (max - min over t >= 0) in some condition.

    Parameters
    ----------
    truth_ds : xarray.Dataset
        The circuit's attribution Dataset (``response`` ([condition,] time, cell), Hz).
    """
    resp = _after_onset(truth_ds["response"])
    ptp = resp.max("time") - resp.min("time")
    if "condition" in ptp.dims:
        ptp = ptp.max("condition")
    return [str(c) for c, v in zip(ptp["cell"].values, ptp.values) if v >= min_hz]


def type_split(pooled: xr.DataArray) -> xr.DataArray:
    """Each type's attribution minus the mean over types at the same (condition, time, cell).

    What is left is how the response change is *split* among the types: the part every type shares
    (the response's own time course, which any model that predicts the response gets right) is
    removed, so a correlation of type splits rewards naming the right types and nothing else.

    Parameters
    ----------
    pooled : xarray.DataArray
        ([condition,] time, cell, unit_channel = type), Hz.

    Returns
    -------
    xarray.DataArray
        The same dims, Hz; sums to 0 over ``unit_channel``.
    """
    return pooled - pooled.mean("unit_channel")


def score_pooled(
    pooled: xr.DataArray, truth_pooled: xr.DataArray, cells: Sequence[str] | None = None, split: bool = True
) -> xr.DataArray:
    """Per-cell Pearson r of two type-pooled attributions over (condition x time x type), t >= 0.

    Parameters
    ----------
    pooled, truth_pooled : xarray.DataArray
        ([condition,] time, cell, unit_channel) on the same conditions, times and cells, Hz.
    cells : sequence of str, optional
        Cells to score (default: all of the truth's).
    split : bool
        Score the type splits (:func:`type_split`, the default): the shared time course is removed
        first, so a model that reproduces the response with the wrong types scores about 0. With
        ``False`` the raw pooled attributions are correlated; that score is dominated by the time
        course and stays high for a CNN trained on a different circuit (kept for comparison).

    Returns
    -------
    xarray.DataArray
        (cell,) r; 0 where ``pooled`` is constant, NaN where the truth is.
    """
    pooled, truth_pooled = _after_onset(pooled), _after_onset(truth_pooled)
    if split:
        pooled, truth_pooled = type_split(pooled), type_split(truth_pooled)
    cells = [str(c) for c in truth_pooled["cell"].values] if cells is None else list(cells)
    order = [d for d in ("condition", "time", "unit_channel") if d in truth_pooled.dims]
    scores = []
    for cell in cells:
        x = pooled.sel(cell=cell).transpose(*order).values.ravel()
        y = truth_pooled.sel(cell=cell).transpose(*order).values.ravel()
        scores.append(pearson_1d(x, y))
    return xr.DataArray(np.asarray(scores), dims="cell", coords={"cell": cells})


def recovery_score(
    cnn_attr: xr.DataArray,
    truth_attr: xr.DataArray,
    match: TypeMatch,
    groups: np.ndarray | None = None,
    cells: Sequence[str] | None = None,
    split: bool = True,
) -> xr.DataArray:
    """Pearson r, per cell, between the CNN's type-pooled attribution and the ground truth's.

    Both arrays are ([condition,] time, cell, unit_channel[, unit_y, unit_x]) on the same
    conditions, times and cells; the (condition x time x type) arrays at t >= 0 are flattened and
    correlated, so the time courses, their change over the sweep and the split of the response among
    types must all agree for a high score.

    Parameters
    ----------
    cnn_attr : xarray.DataArray
        The CNN's attribution at ``conv1``, Hz.
    truth_attr : xarray.DataArray
        The circuit's attribution at ``bipolar``, Hz.
    match : TypeMatch
        CNN channel -> type (:func:`identity_match`, :func:`match_kernels`).
    groups : numpy.ndarray, optional
        (n_truth_channels,) type of each circuit channel (default: one type per channel).
    cells : sequence of str, optional
        Cells to score (default: all; see :func:`responding_cells`).
    split : bool
        Correlate the type splits (default; see :func:`score_pooled`).

    Returns
    -------
    xarray.DataArray
        (cell,) correlation.
    """
    if groups is None:
        groups = np.arange(truth_attr.sizes["unit_channel"])
    n_types = int(np.max(groups)) + 1
    pooled = pooled_attribution(cnn_attr, match, n_types)
    truth = pooled_attribution(truth_attr, TypeMatch(np.asarray(groups), np.zeros(0)), n_types)
    return score_pooled(pooled, truth, cells, split=split)


def mechanism_score(
    pooled: xr.DataArray,
    truth_pooled: xr.DataArray,
    mechanism: Sequence[int],
    cells: Sequence[str] | None = None,
) -> xr.DataArray:
    """Per cell, the lower of the type-split score and the mechanism types' own score.

    The type split (:func:`score_pooled`) is one correlation over every type, so the largest type
    leads it: a model without a smaller type that generates the phenomenon (the synthetic retina's
    motion reversal, where OFF-fast's attribution is 1.4-2.7 times ON-slow's) keeps most of the score. A
    known mechanism closes that gap: the types that generate it (the circuit's ablation table,
    ``mechlens_retina.phenomena.ground_truth.MECHANISMS``) must also carry the circuit's
    contribution, raw (``split=False``), over every condition and time. Taking the lower of the two
    per cell asks for both, so it can only be at or below either one.

    Parameters
    ----------
    pooled, truth_pooled : xarray.DataArray
        ([condition,] time, cell, unit_channel = type) type-pooled attributions, Hz.
    mechanism : sequence of int
        Indices (into ``unit_channel``) of the types that generate the phenomenon.
    cells : sequence of str, optional
        Cells to score (default: all of the truth's).

    Returns
    -------
    xarray.DataArray
        (cell,) score in [-1, 1]; NaN where either part is (the truth constant).

    Raises
    ------
    ParameterError
        If ``mechanism`` is empty or names a type that is not in ``truth_pooled``.
    """
    n_types = truth_pooled.sizes["unit_channel"]
    mech = [int(k) for k in mechanism]
    if not mech or any(k < 0 or k >= n_types for k in mech):
        raise ParameterError(
            "mechanism",
            f"mechanism_score: {list(mechanism)} must name at least one of the {n_types} types "
            f"(indices 0..{n_types - 1} of unit_channel); pass the ablation table's types as indices",
        )
    split = score_pooled(pooled, truth_pooled, cells)
    own = score_pooled(pooled.isel(unit_channel=mech), truth_pooled.isel(unit_channel=mech), cells, split=False)
    return xr.apply_ufunc(np.minimum, split, own)  # NaN where either is


def measure_contrast(
    pooled: xr.DataArray,
    response: xr.DataArray,
    event: xr.DataArray,
    cells: Sequence[str],
    after_s: float,
    before_s: float | None = None,
) -> xr.DataArray:
    """A phenomenon's rate difference attributed to each type, mean over conditions (Hz).

    Integrated gradients are linear in the output, so the attribution of a difference of two rates is
    the difference of their attributions: this reads which types make a response rise above what a
    measure compares it with, with sign. Per condition and cell, on the model's own ``response``:
    the peak is the largest rate in ``(event, event + after_s]``; the reference is the largest rate
    in ``[event - before_s, event]`` (the motion reversal's burst against the response before it) or,
    with ``before_s`` None, the rate at the event itself (the OSR against the last flash's tail).

    Parameters
    ----------
    pooled : xarray.DataArray
        (condition, time, cell, unit_channel = type), Hz.
    response : xarray.DataArray
        (condition, time, cell) the same model's response, Hz.
    event : xarray.DataArray
        The event time per condition (or one for all), s.
    cells : sequence of str
        Cells to read.
    after_s, before_s : float
        The windows after and before the event, s.

    Returns
    -------
    xarray.DataArray
        (cell, unit_channel), Hz.
    """
    t = pooled["time"].values
    out = np.zeros((len(cells), pooled.sizes["unit_channel"]))
    events = np.broadcast_to(event.values, (pooled.sizes["condition"],))
    for k, t0 in enumerate(events):
        after = np.flatnonzero((t > t0 + 1e-6) & (t <= t0 + after_s + 1e-6))
        ref = np.flatnonzero((t >= t0 - (before_s or 0.0) - 1e-6) & (t <= t0 + 1e-6))
        for c, cell in enumerate(cells):
            r = response.isel(condition=k).sel(cell=cell).values
            a = pooled.isel(condition=k).sel(cell=cell).transpose("time", "unit_channel").values
            peak = after[np.argmax(r[after])]
            at = ref[np.argmax(r[ref])] if before_s is not None else ref[-1]
            out[c] += (a[peak] - a[at]) / len(events)
    return xr.DataArray(out, dims=("cell", "unit_channel"), coords={"cell": list(cells)})


def driving_types(
    contrast: xr.DataArray, names: Sequence[str], explained: float, min_hz: float = RESPONDING_MIN_HZ
) -> list[str]:
    """The fewest types whose positive parts of ``contrast`` (mean over cells) reach ``explained`` of
    their sum: the types that raise the phenomenon's rate difference. A type with a negative part
    works against the phenomenon (silencing it would enlarge the difference), so it is not one. None
    where the positive sum is below ``min_hz`` (a responding cell's swing): no rise to explain."""
    pos = np.clip(contrast.mean("cell").values, 0.0, None)
    if pos.sum() < min_hz:
        return []
    order = np.argsort(-pos)
    n = int(np.searchsorted(np.cumsum(pos[order]) / pos.sum(), explained - 1e-12) + 1)
    return sorted((names[i] for i in order[:n]), key=list(names).index)


# -- controls -------------------------------------------------------------------------------------
def trivial_attribution(truth_ds: xr.Dataset, n_types: int, into: int) -> xr.DataArray:
    """The attribution that knows only the response: its whole change goes to one type.

    Parameters
    ----------
    truth_ds : xarray.Dataset
        The circuit's attribution Dataset (``response``, ``baseline_response``, Hz).
    n_types : int
        Number of types.
    into : int
        The type that gets ``response - baseline_response``; every other type gets 0.

    Returns
    -------
    xarray.DataArray
        ([condition,] time, cell, unit_channel = type), Hz: complete by construction.
    """
    change = truth_ds["response"] - truth_ds["baseline_response"]
    parts = [change if k == into else xr.zeros_like(change) for k in range(n_types)]
    return xr.concat(parts, dim="unit_channel").assign_coords(unit_channel=np.arange(n_types))


def derangements(n: int) -> list[tuple[int, ...]]:
    """Every permutation of ``range(n)`` that moves every element (9 for n = 4)."""
    return [p for p in itertools.permutations(range(n)) if all(i != j for i, j in enumerate(p))]


def shuffled_types(truth_pooled: xr.DataArray, permutation: Sequence[int]) -> xr.DataArray:
    """The ground truth with its types relabelled: type ``k`` gets the attribution of ``permutation[k]``.

    Parameters
    ----------
    truth_pooled : xarray.DataArray
        (..., unit_channel = type) the circuit's type-pooled attribution, Hz.
    permutation : sequence of int
        A permutation of the types (a derangement moves every one).
    """
    shuffled = truth_pooled.isel(unit_channel=list(permutation))
    return shuffled.assign_coords(unit_channel=truth_pooled["unit_channel"].values)


def compare(
    cnn: Model,
    truth: Model,
    stimulus: xr.Dataset,
    attributor: Attributor,
    match: TypeMatch,
    cells: Sequence[str] | None = None,
    cnn_layer: str = "conv1",
    truth_layer: str = "bipolar",
    truth_attributor: Attributor | None = None,
) -> tuple[xr.DataArray, xr.Dataset, xr.Dataset]:
    """Attribute both models on one stimulus (every condition) and score the CNN against the ground truth.

    Parameters
    ----------
    truth_attributor : Attributor, optional
        For the circuit (default: ``attributor``); the exact attributor does not apply to it (its
        gain control is not piecewise linear).

    Returns
    -------
    score : xarray.DataArray
        (cell,) Pearson r (see :func:`recovery_score`) on the cells that respond in the circuit.
    cnn_ds, truth_ds : xarray.Dataset
        The two attribution Datasets.
    """
    cnn_ds = attributor.attribute(cnn, stimulus, cnn_layer, cells)
    truth_ds = (truth_attributor or attributor).attribute(truth, stimulus, truth_layer, cells)
    score = recovery_score(
        cnn_ds["attribution"], truth_ds["attribution"], match, type_groups(truth)[0], responding_cells(truth_ds)
    )
    return score, cnn_ds, truth_ds
