"""Completeness of an attribution: do the units' contributions add up to the response change?

Integrated gradients and its relatives promise completeness: for each cell and time, the
attributions summed over the units of the layer equal the response minus the baseline response.
An attributor reports what is left over as ``completeness_error`` (time, cell), Hz. An attribution
that misses it by a large part of the response is not an account of the response (a functional
nonlinearity DeepLift does not know, too few quadrature steps), however plausible its figures look,
so the pipeline measures it on every result (:func:`check`):

- ``completeness_error_rel`` = max |completeness_error| / (max - min of the response), over every
  time, condition and cell of the result (the definition of :func:`mechlens.results.summary`);
- above ``tolerance`` (default :data:`DEFAULT_TOLERANCE`, 1e-3 of the response range) it warns
  (:class:`CompletenessWarning`, printed by the CLI as ``mechlens: warning: ...``) and records
  ``completeness_ok = 0`` in the result's attrs, which the report flags; with ``strict`` it raises
  :class:`IncompleteAttributionError` instead (``mechlens run --strict``), so nothing is saved.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import xarray as xr

from mechlens.errors import MechlensError, UsageError

log = logging.getLogger("mechlens")

#: largest completeness error accepted without a warning, as a fraction of the response range
DEFAULT_TOLERANCE = 1e-3


class CompletenessWarning(UserWarning):
    """An attribution whose contributions do not add up to the response change (within the tolerance)."""


class IncompleteAttributionError(MechlensError):
    """``strict``: an attribution's completeness error exceeds the tolerance (exit 1: a result, not a typo)."""

    exit_code = 1


def check_tolerance(tolerance: float) -> float:
    """The tolerance as a float in [0, 1], or a :class:`~mechlens.errors.UsageError` naming the value."""
    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        raise UsageError(
            f"completeness tolerance {tolerance!r} is not a number; give a fraction of the response range, e.g. 1e-3"
        ) from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise UsageError(
            f"completeness tolerance {tolerance!r} must be a fraction of the response range in [0, 1], e.g. 1e-3"
        )
    return value


def relative_error(ds: xr.Dataset) -> float:
    """max |completeness_error| / (max - min of ``response``); NaN when either is missing or all NaN.

    Parameters
    ----------
    ds : xarray.Dataset
        A result with ``response`` and ``completeness_error`` (same units, Hz).
    """
    if "completeness_error" not in ds or "response" not in ds:
        return float("nan")
    err = np.abs(np.asarray(ds["completeness_error"].values, dtype=np.float64))
    resp = np.asarray(ds["response"].values, dtype=np.float64)
    if not np.isfinite(err).any() or not np.isfinite(resp).any():
        return float("nan")
    span = float(np.nanmax(resp) - np.nanmin(resp)) or 1.0  # a flat response: the error in Hz
    return float(np.nanmax(err) / span)


def check(ds: xr.Dataset, where: str, tolerance: float = DEFAULT_TOLERANCE, strict: bool = False) -> xr.Dataset:
    """Measure an attribution's completeness, record it in the attrs, and warn or refuse above ``tolerance``.

    Parameters
    ----------
    ds : xarray.Dataset
        A pipeline result (or an attributor's output merged with the model's ``response``).
    where : str
        What made the attribution, for the message (e.g. ``"attributor 'deeplift' (labplug 0.1)"``).
    tolerance : float
        Largest accepted ``completeness_error_rel``, a fraction of the response range in [0, 1].
    strict : bool
        Raise instead of warning.

    Returns
    -------
    xarray.Dataset
        ``ds`` with attrs ``completeness_error_rel`` (float), ``completeness_tolerance`` and
        ``completeness_ok`` (1 or 0); unchanged when it has no ``completeness_error``.

    Raises
    ------
    IncompleteAttributionError
        With ``strict``, when the error exceeds the tolerance.
    """
    tol = check_tolerance(tolerance)
    rel = relative_error(ds)
    if math.isnan(rel):
        return ds
    ok = rel <= tol
    ds.attrs.update({"completeness_error_rel": rel, "completeness_tolerance": tol, "completeness_ok": int(ok)})
    if ok:
        return ds
    msg = (
        f"{where}: the attributions miss the response change by up to {rel:.2e} of the response range "
        f"(completeness tolerance {tol:g}), so they do not account for the response; use an exact or "
        "finer attribution (e.g. integrated-gradients with more n_steps), or accept it with a larger "
        "--completeness-tolerance"
    )
    if strict:
        raise IncompleteAttributionError(msg + " (refused: --strict)")
    warnings.warn(msg, CompletenessWarning, stacklevel=2)
    return ds
