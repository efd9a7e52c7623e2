"""The reduced model as this plugin's reducers report it: the core's (:mod:`mechlens.reduced`) plus the additive check.

The reduced model itself lives in the core, :mod:`mechlens.reduced`, so that a third-party reducer gets
it without writing one; this module reads it from a :class:`~mechlens_reduction.prepare.Prepared`
Dataset and adds what needs the attributions (the additive reduced model, the explained fractions).
``layer_mask``, ``pearson``, ``peak_time_error``, ``model_explained`` and ``check_verdict`` are the
core's, re-exported here.

Definition
----------
For each history window ``x_t`` of the stimulus, ``z_t`` are the layer's activations (through
``model.split(layer)`` or a forward hook) and ``z_0`` those under the baseline
stimulus ``x_0`` (the ``baseline_window`` the attributor used, or the zero = mean-grey window). With a
boolean mask ``m`` over the layer's units (True = kept),

    z_reduced_t = where(m, z_t, z_0),        r_reduced_t = above(z_reduced_t),

i.e. every unit not kept is clamped to its value under the baseline stimulus. Keeping every unit
gives the full model; keeping none gives the baseline response at every time.

Fidelity
--------
- ``reduced_r`` (cell): Pearson r between the reduced and the full response over the window of
  interest (pooled over conditions).
- ``peak_time_error`` ([condition,] cell), s: time of the largest |r_reduced - r_0| minus time of the
  largest |r_full - r_0| in the window (signed: negative = the reduced model peaks early).
- ``additive_response`` ([condition,] time, cell): ``baseline_response + sum of the kept units'
  attributions``; the linear prediction of the same reduction (it needs no model).

The complement (a check that can fail)
--------------------------------------
The complement clamps the *kept* units to baseline and leaves the others active. A reduction names a
mechanism when the kept units reproduce the response and the others do not:

- ``reduced_model_explained`` / ``complement_model_explained`` (cell), with a model:
  ``1 - ||r_x - r|| / ||r - r_0||`` over the window (conditions pooled), ``r_x`` the reduced or the
  complement response; without a model the additive ``explained_fraction`` and
  ``complement_explained_fraction`` (``1 - ||dr - sum of the other units' A|| / ||dr||``) stand in.
- ``complement_r`` (cell): Pearson r of the complement with the full response.
- attr ``reduction_check`` (pooled over cells): ``"pass"`` when the kept units reproduce at least
  ``check`` of the deviation and the complement less; ``"all kept"`` when every unit is kept (no
  reduction, not a mechanism: the check would pass trivially); ``"kept insufficient"`` or
  ``"complement sufficient"`` otherwise. ``all_kept`` is 1 for a reduction that keeps every unit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

import mechlens.reduced as _core
from mechlens.errors import UsageError
from mechlens.reduced import check_verdict, layer_mask, model_explained, peak_time_error, pearson
from mechlens_reduction.prepare import Prepared, check_layer_sizes, explained_fraction, stimulus_of

if TYPE_CHECKING:  # pragma: no cover
    from mechlens.interfaces import Model

__all__ = [
    "BATCH",
    "additive_response",
    "baseline_window",
    "check_verdict",
    "evaluate",
    "layer_mask",
    "model_explained",
    "peak_time_error",
    "pearson",
    "resolve_layer",
    "run_reduced",
]

#: time points per forward pass of the reduced model (the core's)
BATCH = _core.BATCH


def resolve_layer(prep: Prepared, model: Model) -> str:
    """The attributed layer: ``attribution.attrs['layer']``, the Dataset's ``layer`` attr, or the model's only layer.

    Raises
    ------
    UsageError
        The Dataset does not name its layer and the model has several.
    """
    if prep.layer:
        return model.check_layer(prep.layer)
    layers = list(model.layers())
    if len(layers) == 1:
        return layers[0]
    raise UsageError(
        f"the attribution Dataset does not name its layer (attrs['layer']) and model {model.name!r} has several "
        f"({', '.join(layers)}); set attribution.attrs['layer']"
    )


def baseline_window(prep: Prepared, model: Model, condition: int | None) -> np.ndarray:
    """The baseline window (1, history, y, x), oldest frame first: ``baseline_window`` or zeros."""
    h, (ny, nx) = model.history, model.input_shape
    arr = _core.baseline_windows(prep.ds, model)
    if arr is None:
        return np.zeros((1, h, ny, nx), dtype=np.float32)
    if arr.ndim == 4:
        arr = arr[condition or 0]
    return arr[None]


def run_reduced(model: Model, prep: Prepared, mask: xr.DataArray) -> dict[str, xr.DataArray]:
    """Rerun the model with only the units in ``mask`` active, and with only those not in it (the complement).

    :func:`mechlens.reduced.run_reduced` on a prepared Dataset: in the reduced model the units outside
    ``mask`` are clamped to baseline; in the complement the units in ``mask`` are.

    Parameters
    ----------
    model : Model
        The model the attribution was computed on.
    prep : Prepared
        The attribution Dataset, merged with its stimulus.
    mask : xarray.DataArray
        Boolean over (unit_channel[, unit_y][, unit_x]); True = kept.

    Returns
    -------
    dict of str to xarray.DataArray
        ``reduced``, ``complement`` and ``full`` ([condition,] time, cell) in Hz, and ``baseline``
        ([condition,] cell), the model's response to the baseline window.

    Raises
    ------
    UsageError
        No stimulus in the Dataset, unknown cells, or unit counts that do not fit the layer.
    """
    movie = stimulus_of(prep)
    if movie is None:
        raise UsageError(
            "a reduced model needs the stimulus: merge the stimulus Dataset into the attribution Dataset "
            "(mechlens.testing.merged(stimulus, attribution)) before reducing with a model"
        )
    layer = resolve_layer(prep, model)
    check_layer_sizes(prep, tuple(model.layers()[layer]), layer)
    if "condition" in movie.dims and "condition" in prep.attribution.dims:
        movie = movie.assign_coords(condition=prep.attribution["condition"])
    res = _core.run_reduced(
        model,
        layer,
        movie,
        mask,
        times=prep.times.values,
        cells=[str(c) for c in prep.attribution["cell"].values],
        baseline=_core.baseline_windows(prep.ds, model),
    )
    # the attribution's own coords (with their attrs: time units, the swept parameter's name)
    return {k: v.assign_coords({d: prep.attribution[d] for d in v.dims}) for k, v in res.items()}


def additive_response(prep: Prepared, mask: xr.DataArray) -> xr.DataArray:
    """``baseline_response + sum of the kept units' attributions``: ([condition,] time, cell), Hz."""
    kept = prep.attribution.where(mask.astype(bool), 0.0)
    s = kept.sum(list(prep.unit_dims))
    return (prep.baseline + s).transpose(*prep.lead_dims)


def evaluate(
    out: xr.Dataset,
    prep: Prepared,
    mask: xr.DataArray,
    window: xr.DataArray,
    model: Model | None,
    check: float = 0.5,
) -> xr.Dataset:
    """Add the additive check, the complement and, with a model, the reduced models and their fidelity.

    Parameters
    ----------
    out : xarray.Dataset
        The reducer's output so far.
    prep : Prepared
        The cut attribution Dataset.
    mask : xarray.DataArray
        Boolean over (unit_channel[, unit_y][, unit_x]), the kept units.
    window : xarray.DataArray
        Boolean ([condition,] time), the window the fidelity is measured over.
    model : Model or None
        When given, ``reduced_response``, ``reduced_r``, ``peak_time_error``, ``complement_response``,
        ``complement_r``, ``reduced_model_explained`` and ``complement_model_explained`` are added.
    check : float
        Fraction of the response deviation the kept units must reproduce and the others must not
        (see the module docstring).

    Returns
    -------
    xarray.Dataset
        ``out`` with ``additive_response``, ``explained_fraction`` and ``complement_explained_fraction``
        (cell), the model outputs above, and attrs ``all_kept``, ``reduction_check``,
        ``check_fraction``, ``check_kept``, ``check_complement`` (pooled fractions the verdict used).
    """
    add = additive_response(prep, mask)
    out["additive_response"] = add.astype(np.float32)
    out["additive_response"].attrs.update(
        units="Hz", long_name="baseline response plus the kept units' attributions (linear reduced model)"
    )
    frac = explained_fraction(prep.deviation, add - prep.baseline, window)
    out["explained_fraction"] = frac
    out["explained_fraction"].attrs.update(
        units="1", long_name="1 - ||dr - sum of kept attributions|| / ||dr|| over the window, dr = response - baseline"
    )
    others = additive_response(prep, ~mask.astype(bool)) - prep.baseline
    out["complement_explained_fraction"] = explained_fraction(prep.deviation, others, window)
    out["complement_explained_fraction"].attrs.update(
        units="1", long_name="1 - ||dr - sum of the other units' attributions|| / ||dr|| over the window"
    )
    all_kept = bool(mask.astype(bool).all())
    kept_pooled = float(explained_fraction(prep.deviation, add - prep.baseline, window, over=()))
    comp_pooled = float(explained_fraction(prep.deviation, others, window, over=()))
    if model is not None and _core.deferred(prep.ds):
        # a streamed run: the pipeline reruns the model on the movie chunk by chunk and adds the check
        out.attrs.update(_core.check_attrs(kept_pooled, comp_pooled, all_kept, check))
        return out
    if model is not None:
        core = _core.compare(run_reduced(model, prep, mask), mask, window, check)
        for name in core.data_vars:
            if name != "kept":
                var = core[name]
                out[name] = var.assign_coords({d: prep.attribution[d] for d in var.dims if d in prep.attribution.dims})
        return out.assign_attrs({k: core.attrs[k] for k in _CHECK_ATTRS})
    out.attrs.update(_core.check_attrs(kept_pooled, comp_pooled, all_kept, check))
    return out


#: the reduced-model check's attrs (docs/contract.md, 'Reducer variables')
_CHECK_ATTRS = ("all_kept", "reduction_check", "check_fraction", "check_kept", "check_complement")
