"""Mechanistic modes by matrix factorisation of the attribution: NMF and PCA (scikit-learn).

The attribution matrix ``X`` has one row per (condition, time, cell) and one column per unit:
cell types (``keep_axis="none"``) or cell types x the kept spatial axes. A factorisation
``X ~ W L`` gives a few modes: ``weights`` (time, cell, component) = W, their time courses, and
``components`` (component, unit...) = L, their unit loadings.

NMF and sign
------------
Attributions are signed (excitation and inhibition). NMF factorises the non-negative matrix
``[X+, X-]`` (``X+ = max(X, 0)``, ``X- = max(-X, 0)``, columns doubled) as ``W [H+, H-]``; the
loading reported is ``L = H+ - H-``, so ``W L`` approximates ``X+ - X- = X`` and each mode can
excite some units and inhibit others while its time course stays non-negative. Loadings are scaled
to a maximum |value| of 1 (the scale moves into W) and modes are ordered by ``||W_k|| ||L_k||``.

PCA
---
Centred PCA (``sklearn.decomposition.PCA``, full SVD): ``weights`` are the scores ``(X - mean) L^T``,
``attribution_mean`` the column mean, and ``explained_variance_ratio`` the variance each mode
explains. Each component's sign makes its largest-|value| loading positive.

Number of components
--------------------
``n_components = 0`` picks the smallest k reaching ``explained``: for PCA the cumulative explained
variance ratio, for NMF the signed reconstruction ``1 - ||X - W L||^2 / ||X||^2``.

Kept units
----------
The reduced model keeps the units whose |loading| reaches ``loading_threshold`` times the largest
|loading| of at least one kept component (a union over components); every other unit is clamped to
baseline.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.interfaces import Model, Reducer
from mechlens.parameters import param
from mechlens_reduction import prepare as P
from mechlens_reduction.common import component_coord, finish


def attribution_matrix(prep: P.Prepared, keep_axis: str) -> tuple[np.ndarray, xr.DataArray]:
    """The (rows, units) matrix and the spatially reduced attribution it came from.

    Returns
    -------
    X : numpy.ndarray
        (n_condition * n_time * n_cell, n_units), float64, rows in ([condition,] time, cell) order.
    spatial : xarray.DataArray
        ([condition,] time, cell, unit_channel[, kept axes]).
    """
    spatial = P.reduce_space(prep.attribution, keep_axis)
    lead = prep.lead_dims
    unit = [d for d in spatial.dims if d in P.UNIT_DIMS]
    spatial = spatial.transpose(*lead, *unit)
    n_rows = int(np.prod([spatial.sizes[d] for d in lead]))
    return spatial.values.reshape(n_rows, -1), spatial


def _r2(x: np.ndarray, recon: np.ndarray) -> float:
    total = float(np.sum(x**2))
    return 1.0 - float(np.sum((x - recon) ** 2)) / total if total > 0 else 1.0


def signed_nmf(x: np.ndarray, k: int, seed: int, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, int]:
    """NMF of ``[X+, X-]``: returns W (rows, k) >= 0, L = H+ - H- (k, units), and the iterations run."""
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    m = x.shape[1]
    doubled = np.hstack([np.maximum(x, 0.0), np.maximum(-x, 0.0)])
    nmf = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=max_iter, tol=tol)
    with warnings.catch_warnings():
        # the iteration count is reported in attrs; a warning per auto-k trial would only be noise
        warnings.simplefilter("ignore", ConvergenceWarning)
        w = nmf.fit_transform(doubled)
    h = nmf.components_
    return w, h[:, :m] - h[:, m:], int(nmf.n_iter_)


def _normalise(w: np.ndarray, loadings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale each loading to max |value| 1 (W takes the scale) and order modes by ||W_k|| ||L_k||."""
    scale = np.abs(loadings).max(axis=1)
    scale[scale == 0] = 1.0
    loadings = loadings / scale[:, None]
    w = w * scale[None, :]
    energy = np.linalg.norm(w, axis=0) * np.linalg.norm(loadings, axis=1)
    order = np.argsort(-energy, kind="stable")
    return w[:, order], loadings[order]


def _kept_units(loadings: np.ndarray, threshold: float) -> np.ndarray:
    """Units whose |loading| reaches ``threshold`` x the largest |loading| of some component."""
    mag = np.abs(loadings)
    top = mag.max(axis=1, keepdims=True)
    return ((mag >= threshold * top) & (top > 0)).any(axis=0)


@dataclass(frozen=True)
class _FactorParams:
    n_components: int = param(0, "number of modes; 0 = the fewest reaching `explained`", min=0)
    explained: float = param(
        0.9, "with n_components=0: explained variance (PCA) or reconstruction R^2 (NMF) to reach", gt=0, max=1
    )
    keep_axis: str = param(
        "none", "spatial unit axes kept as columns (cell types x space)", choices=("none", "x", "y", "both")
    )
    loading_threshold: float = param(
        0.5, "kept units: |loading| >= this x the component's largest |loading|", gt=0, max=1
    )
    seed: int = param(0, "random seed (NMF initialisation, STA noise)")
    characterise: bool = param(True, "label the types ON/OFF, fast/slow from the model's STA (with a model)")
    sta_windows: int = param(64, "white-noise windows averaged for the STA", min=1)


class _Factoriser(Reducer):
    """Shared reduce(): build X, factorise, package the modes, run the reduced model."""

    #: how the loadings are scaled, for the components' long_name
    loading_norm = ""

    def _factorise(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        raise NotImplementedError

    def _max_components(self, x: np.ndarray) -> int:
        return min(x.shape)

    def reduce(self, attribution: xr.Dataset, model: Model | None = None) -> xr.Dataset:
        """Factorise the attribution into modes.

        Parameters
        ----------
        attribution : xarray.Dataset
            ``attribution`` ([condition,] time, cell, unit_channel[, unit_y, unit_x]) in Hz, with
            ``response`` and ``baseline_response``; merged with the stimulus for a reduced model.
        model : Model, optional
            The attributed model: adds the reduced model's outputs and the ``unit_type`` coord.

        Returns
        -------
        xarray.Dataset
            ``weights`` ([condition,] time, cell, component) in Hz, ``components`` (component,
            unit_channel[, kept axes]), ``kept`` (units), ``reconstruction_r2``, the shared measures
            (``contribution``, ``sign``, ``explained_fraction``, ``additive_response``) and the
            method's extras (``explained_variance_ratio`` for PCA).
        """
        p = self.params
        prep = P.prepare(attribution)
        x, spatial = attribution_matrix(prep, p.keep_axis)
        kmax = self._max_components(x)
        if p.n_components > kmax:
            raise ParameterError(
                "n_components",
                f"got {p.n_components}, but the attribution matrix ({x.shape[0]} rows x {x.shape[1]} units) allows "
                f"at most {kmax}",
            )
        from threadpoolctl import threadpool_limits

        # these matrices are small (rows x a few dozen units): a multi-threaded BLAS spends more time
        # synchronising than computing (measured ~10x slower NMF with 2 contended cores)
        with threadpool_limits(limits=1, user_api="blas"):
            w, loadings, extra = self._factorise(x)
        k = w.shape[1]
        lead = prep.lead_dims
        unit = tuple(d for d in spatial.dims if d in P.UNIT_DIMS)
        ucoords = P.unit_coords(prep, unit)
        comp = component_coord(k)
        shape_lead = tuple(spatial.sizes[d] for d in lead)
        shape_unit = tuple(spatial.sizes[d] for d in unit)
        lead_coords = {d: spatial[d] for d in lead if d in spatial.coords}
        out = xr.Dataset(
            {
                "weights": xr.DataArray(
                    w.reshape(*shape_lead, k).astype(np.float32),
                    dims=(*lead, "component"),
                    coords={**lead_coords, "component": comp},
                    attrs={"units": "Hz", "long_name": f"{self.name} mode time courses"},
                ),
                "components": xr.DataArray(
                    loadings.reshape(k, *shape_unit).astype(np.float32),
                    dims=("component", *unit),
                    coords={"component": comp, **ucoords},
                    attrs={"units": "1", "long_name": f"{self.name} mode unit loadings ({self.loading_norm})"},
                ),
            }
        )
        offset = extra.pop("offset", None)
        recon = w @ loadings + (offset if offset is not None else 0.0)
        if offset is not None:
            out["attribution_mean"] = xr.DataArray(offset.reshape(shape_unit), dims=unit, coords=ucoords)
            out["attribution_mean"].attrs.update(units="Hz", long_name="column mean removed before PCA")
        out["reconstruction_r2"] = xr.DataArray(_r2(x, recon))
        out["reconstruction_r2"].attrs.update(units="1", long_name="1 - ||X - reconstruction||^2 / ||X||^2")
        for name, value in extra.pop("variables", {}).items():
            out[name] = value
        kept = _kept_units(loadings, p.loading_threshold).reshape(shape_unit)
        mask = xr.DataArray(kept, dims=unit, coords=ucoords)
        window = P.window_mask(prep)
        out = finish(
            out,
            prep,
            mask,
            window,
            model,
            reducer=self.name,
            params_json=self.parameters_json(),
            characterise=p.characterise,
            sta_windows=p.sta_windows,
            seed=p.seed,
        )
        out.attrs.update(extra)
        out.attrs["n_components_auto"] = int(p.n_components == 0)
        return out


class NMFReducer(_Factoriser):
    """Factorise attributions into a few non-negative-time-course modes with signed loadings (NMF)."""

    name = "nmf"
    loading_norm = "H+ - H-, max |value| 1"

    @dataclass(frozen=True)
    class Parameters(_FactorParams):
        max_iter: int = param(400, "maximum NMF iterations (coordinate descent)", min=1)
        tol: float = param(1e-4, "NMF stopping tolerance", gt=0)

    def _max_components(self, x: np.ndarray) -> int:
        return min(x.shape[0], 2 * x.shape[1])

    def _factorise(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        p = self.params
        kmax = self._max_components(x)
        if p.n_components:
            candidates: Any = [p.n_components]
        else:
            # a rank-k NMF reconstruction is rank k, so it cannot beat the truncated SVD: start where SVD can reach
            sv2 = np.linalg.svd(x, compute_uv=False) ** 2
            svd_r2 = np.cumsum(sv2) / sv2.sum() if sv2.sum() > 0 else np.ones_like(sv2)
            first = int(min(np.searchsorted(svd_r2, p.explained - 1e-12) + 1, kmax))
            candidates = range(first, kmax + 1)
        if not np.any(x):
            # NMF of a zero matrix is degenerate: one empty mode
            return np.zeros((x.shape[0], 1)), np.zeros((1, x.shape[1])), {"nmf_iterations": 0}
        for k in candidates:
            w, loadings, iters = signed_nmf(x, k, p.seed, p.max_iter, p.tol)
            if p.n_components or _r2(x, w @ loadings) >= p.explained:
                break
        w, loadings = _normalise(w, loadings)
        return w, loadings, {"nmf_iterations": iters}


class PCAReducer(_Factoriser):
    """Factorise attributions into orthogonal modes ranked by explained variance (PCA)."""

    name = "pca"
    loading_norm = "orthonormal, largest |value| positive"

    @dataclass(frozen=True)
    class Parameters(_FactorParams):
        pass

    def _factorise(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        from sklearn.decomposition import PCA

        p = self.params
        kmax = self._max_components(x)
        mean = x.mean(axis=0)
        if not np.any(x - mean):
            ratio = np.zeros(1)
            loadings = np.zeros((1, x.shape[1]))
            k = 1
        else:
            pca = PCA(n_components=kmax, svd_solver="full", random_state=p.seed).fit(x)
            ratio = pca.explained_variance_ratio_
            if p.n_components:
                k = p.n_components
            else:
                k = int(min(np.searchsorted(np.cumsum(ratio), p.explained - 1e-12) + 1, kmax))
            loadings = pca.components_[:k].copy()
            flip = np.sign(loadings[np.arange(k), np.abs(loadings).argmax(axis=1)])
            loadings *= flip[:, None]
        w = (x - mean) @ loadings.T
        comp = component_coord(k)
        evr = xr.DataArray(ratio[:k], dims="component", coords={"component": comp})
        evr.attrs.update(units="1", long_name="fraction of the attribution variance explained")
        return (
            w,
            loadings,
            {
                "offset": mean,
                "variables": {"explained_variance_ratio": evr},
                "explained_variance_total": float(ratio[:k].sum()),
            },
        )
