"""Evaluation of a fitted retina model against recorded responses, per cell.

- ``cc``: Pearson correlation between the predicted rate and the recorded (trial-averaged) rate,
  the headline metric of McIntosh et al. 2016 and ``deepretina.metrics.cc``.
- ``pearson_1d``: one series against a truth (probe agreement, mechanism recovery), 0 for a flat
  prediction.
- ``fev``: fraction of variance explained, ``1 - MSE / Var(recorded)`` (``deepretina.metrics.fev``).
- With single-trial repeats (``repeats`` (repeat, time, cell)), the trial-to-trial reliability:
  ``reliability`` is the split-half correlation of trial means, Spearman-Brown corrected to the
  full number of trials and averaged over random splits. It estimates the fraction of the
  trial-averaged response's variance that is stimulus-driven (explainable), so
  ``cc_ceiling = sqrt(reliability)`` is the best correlation any model can reach against that
  average, ``cc_norm = cc / cc_ceiling``, and ``feve = fev / reliability`` is the fraction of
  the explainable variance explained. All are scale-free, so the repeats may be stored in other
  units than the averaged rate (spike counts, say) without changing them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats


def pearson(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-cell Pearson correlation.

    Parameters
    ----------
    pred, target : numpy.ndarray
        (time, cell) arrays.

    Returns
    -------
    numpy.ndarray
        (cell,) correlations; NaN for a constant prediction or target.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    ok = (np.ptp(pred, axis=0) > 0) & (np.ptp(target, axis=0) > 0)
    out = np.full(pred.shape[1], np.nan)
    if ok.any():
        out[ok] = stats.pearsonr(pred[:, ok], target[:, ok], axis=0).statistic
    return out


def pearson_1d(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson r of two series over their finite samples, for scoring a model against a truth.

    Returns
    -------
    float
        NaN when fewer than 3 samples are finite or the truth is constant (nothing to compare
        with); 0 when the prediction is constant (it explains none of the truth's variation).
    """
    pred, truth = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(truth, dtype=np.float64).ravel()
    ok = np.isfinite(pred) & np.isfinite(truth)
    pred, truth = pred[ok], truth[ok]
    if pred.size < 3 or np.ptp(truth) == 0:
        return float("nan")
    if np.ptp(pred) == 0:
        return 0.0
    return float(np.corrcoef(pred, truth)[0, 1])


def fev(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-cell fraction of variance explained, ``1 - mean((pred - target)^2) / var(target)``.

    Parameters
    ----------
    pred, target : numpy.ndarray
        (time, cell) arrays in the same units.

    Returns
    -------
    numpy.ndarray
        (cell,); 1 is perfect, 0 is as good as the target's mean, negative is worse.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    var = target.var(axis=0)
    mse = ((pred - target) ** 2).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 0, 1.0 - mse / var, np.nan)


def reliability(repeats: np.ndarray, n_splits: int = 20, seed: int = 0) -> np.ndarray:
    """Split-half reliability of the trial average, Spearman-Brown corrected, per cell.

    Parameters
    ----------
    repeats : numpy.ndarray
        (repeat, time, cell) single-trial responses; NaN marks a missing trial of a cell.
    n_splits : int
        Random half splits averaged over.
    seed : int
        Seed of the splits.

    Returns
    -------
    numpy.ndarray
        (cell,) estimated fraction of the n-trial average's variance that is explainable, in
        [0, 1] for a reliable cell (can fall below 0 for pure noise); NaN with fewer than 2 trials.
    """
    repeats = np.asarray(repeats, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.full(repeats.shape[2], np.nan)
    for c in range(repeats.shape[2]):
        trials = repeats[:, :, c]
        trials = trials[np.isfinite(trials).all(axis=1)]
        n = trials.shape[0]
        if n < 2:
            continue
        rs = []
        for _ in range(n_splits):
            order = rng.permutation(n)
            a, b = trials[order[: n // 2]].mean(0), trials[order[n // 2 :]].mean(0)
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                rs.append(stats.pearsonr(a, b).statistic)
        if rs:
            r = float(np.mean(rs))
            # Spearman-Brown: from the reliability of half the trials to that of all of them
            out[c] = 2 * r / (1 + r) if r > -1 else np.nan
    return out


def evaluate(pred: np.ndarray, target: np.ndarray, repeats: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """All metrics for one split, per cell and as the mean over cells.

    Parameters
    ----------
    pred, target : numpy.ndarray
        (time, cell) predicted and recorded rates, Hz.
    repeats : numpy.ndarray, optional
        (repeat, time, cell) single trials aligned with ``target``.
    seed : int
        Seed of the reliability splits.

    Returns
    -------
    dict
        ``cc``, ``fev`` (lists per cell) and their means ``cc_mean``, ``fev_mean``; with repeats
        also ``reliability``, ``cc_ceiling``, ``cc_norm``, ``feve`` and their means. NaN values
        become None so the dict is valid JSON.
    """
    out: dict[str, Any] = {"cc": pearson(pred, target), "fev": fev(pred, target)}
    if repeats is not None and repeats.shape[0] >= 2:
        rel = reliability(repeats, seed=seed)
        with np.errstate(divide="ignore", invalid="ignore"):
            ceiling = np.sqrt(np.where(rel > 0, rel, np.nan))
            out.update(
                {
                    "reliability": rel,
                    "cc_ceiling": ceiling,
                    "cc_norm": out["cc"] / ceiling,
                    "feve": np.where(rel > 0, out["fev"] / rel, np.nan),
                }
            )
    result: dict[str, Any] = {"n_time": int(np.asarray(target).shape[0])}
    for key, values in out.items():
        result[key] = _json_list(values)
        finite = values[np.isfinite(values)]
        result[f"{key}_mean"] = float(finite.mean()) if finite.size else None
    return result


def _json_list(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]
