"""NMF recovers planted non-negative factors (and signed loadings); PCA's variance matches numpy's SVD."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from mechlens_reduction.factorise import NMFReducer, PCAReducer
from reduction_test_helpers import exact_attribution, synthetic_attribution
from scipy.optimize import linear_sum_assignment

from mechlens.errors import ParameterError
from mechlens.testing import check_reducer, parametrize_with_checks
from mechlens.toymodels import ToyCNN


def planted_factors(n_t: int = 300, n_cell: int = 4, n_ch: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative time courses (time, cell, 3) (bumps at distinct times, cell-specific gains) and loadings (3, ch)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_t) * 0.01
    courses = np.stack([np.exp(-0.5 * ((t - c) / 0.12) ** 2) for c in (0.6, 1.4, 2.2)], axis=1)  # (time, 3)
    gains = rng.uniform(0.5, 2.0, (n_cell, 3))
    w = courses[:, None, :] * gains[None]  # (time, cell, 3)
    h = np.zeros((3, n_ch))
    h[0, [0, 1, 4]] = [1.0, 0.6, 0.3]
    h[1, [2, 3]] = [0.8, 1.0]
    h[2, [5, 6, 7, 1]] = [1.0, 0.7, 0.5, 0.2]
    return w, h


def match(true: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Correlations of the best one-to-one matching of rows (Hungarian on -corr)."""
    k = true.shape[0]
    corr = np.corrcoef(true, found)[:k, k:]
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols]


@pytest.mark.parametrize("n_components", [3, 0])
def test_nmf_recovers_planted_non_negative_factors(n_components: int) -> None:
    w, h = planted_factors()
    a = np.einsum("tck,kj->tcj", w, h)
    out = NMFReducer(n_components=n_components).reduce(synthetic_attribution(a))
    assert out.sizes["component"] == 3
    assert (match(h, out["components"].values) > 0.95).all()
    found_w = out["weights"].values.reshape(-1, 3).T
    assert (match(w.reshape(-1, 3).T, found_w) > 0.95).all()
    assert float(out["reconstruction_r2"]) > 0.99
    assert (out["weights"].values >= 0).all()
    assert np.isclose(np.abs(out["components"].values).max(axis=1), 1.0).all()


def test_nmf_keeps_the_sign_of_inhibitory_loadings() -> None:
    w, h = planted_factors()
    h[1] *= -1.0  # mode 1 inhibits through types 2 and 3 (disjoint supports: [A+, A-] = W [H+, H-] exactly)
    h[0, 4] = -0.5
    h[2, 1] = 0.0
    a = np.einsum("tck,kj->tcj", w, h)
    out = NMFReducer(n_components=3).reduce(synthetic_attribution(a))
    corr = match(h, out["components"].values)
    assert (corr > 0.95).all()  # correlation, not |correlation|: the signs are recovered
    assert float(out["reconstruction_r2"]) > 0.99


def test_nmf_auto_picks_the_fewest_modes_reaching_the_threshold() -> None:
    w, h = planted_factors()
    a = np.einsum("tck,kj->tcj", w[:, :, :2], h[:2])
    out = NMFReducer(explained=0.99).reduce(synthetic_attribution(a))
    assert out.sizes["component"] == 2
    assert out.attrs["n_components_auto"] == 1


def test_pca_explained_variance_matches_numpy_svd() -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal((120, 3, 6)) @ rng.standard_normal((6, 6))
    ds = synthetic_attribution(a)
    x = a.reshape(-1, 6)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    ratio = s**2 / np.sum(s**2)
    out = PCAReducer(n_components=4).reduce(ds)
    np.testing.assert_allclose(out["explained_variance_ratio"].values, ratio[:4], rtol=1e-5)
    auto = PCAReducer(explained=0.95).reduce(ds)
    k = int(np.searchsorted(np.cumsum(ratio), 0.95) + 1)
    assert auto.sizes["component"] == k
    full = PCAReducer(n_components=6).reduce(ds)
    np.testing.assert_allclose(float(full["reconstruction_r2"]), 1.0, atol=1e-6)
    # scores and loadings reconstruct the attribution around its mean
    recon = full["weights"].values.reshape(-1, 6) @ full["components"].values + full["attribution_mean"].values
    np.testing.assert_allclose(recon, x, rtol=1e-4, atol=1e-4)


def test_kept_units_follow_the_loading_threshold() -> None:
    w, h = planted_factors()
    a = np.einsum("tck,kj->tcj", w, h)
    ds = synthetic_attribution(a)
    strict = NMFReducer(n_components=3, loading_threshold=0.9).reduce(ds)
    loose = NMFReducer(n_components=3, loading_threshold=0.1).reduce(ds)
    assert list(np.flatnonzero(strict["kept"].values)) == [0, 3, 5]
    assert list(np.flatnonzero(loose["kept"].values)) == list(range(8))


def _planted_attribution():
    w, h = planted_factors(n_t=60)
    return synthetic_attribution(np.einsum("tck,kj->tcj", w, h))


@parametrize_with_checks([NMFReducer(seed=3), PCAReducer(seed=3)], attribution=_planted_attribution)
def test_factorisers_conform(check: Callable[[], None]) -> None:
    check()


@pytest.mark.parametrize("cls", [NMFReducer, PCAReducer])
def test_factorisers_conform_with_a_model_and_space_kept(cls: type) -> None:
    model = ToyCNN(channels=3, n_cells=2, size=8, kernel=3, kernel2=3)
    ds = exact_attribution(model, n_times=12, steps=4, keep_space=True)
    out = check_reducer(cls, ds, model, {"keep_axis": "both", "n_components": 2, "sta_windows": 2})
    assert out["components"].dims == ("component", "unit_channel", "unit_y", "unit_x")
    assert out["kept"].dims == ("unit_channel", "unit_y", "unit_x")
    assert "unit_type" in out.coords


def test_too_many_components_are_refused() -> None:
    w, h = planted_factors(n_t=20)
    ds = synthetic_attribution(np.einsum("tck,kj->tcj", w, h))
    with pytest.raises(ParameterError, match="n_components"):
        PCAReducer(n_components=9).reduce(ds)
