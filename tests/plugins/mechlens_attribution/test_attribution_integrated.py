"""integrated-gradients: conformance, paths, backends, modes, baselines, cells, conditions."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from attribution_test_models import SeqModel, linear_model, seeded, stimulus_for, swept_stimulus, windows_and_layer
from mechlens_attribution.integrated import IntegratedGradients, quadrature
from torch import nn

from mechlens.errors import ParameterError, UsageError
from mechlens.testing import parametrize_with_checks
from mechlens.toymodels import ToyCNN


@functools.cache
def _toy() -> ToyCNN:
    return ToyCNN(seed=1)


@pytest.fixture(scope="module")
def toy() -> ToyCNN:
    return _toy()


@pytest.fixture(scope="module")
def toy_stim(toy):
    return stimulus_for(toy, n_times=10)


def test_hook_lists_the_attributors():
    from mechlens import registry

    names = registry.default().names("attributor")
    for name in ("integrated-gradients", "exact-integrated-gradients", "gradient-x-activation", "deeplift"):
        assert name in names


@parametrize_with_checks(
    [IntegratedGradients(n_steps=64)],
    model=_toy,
    stimulus=lambda: stimulus_for(_toy(), n_times=10),
    completeness_rtol=5e-3,
)
def test_conforms_with_fixed_steps(check: Callable[[], None]) -> None:
    check()


def test_fixed_steps_are_recorded(toy, toy_stim):
    ds = IntegratedGradients(n_steps=64).attribute(toy, toy_stim)
    a = ds["attribution"]
    assert a.dims == ("time", "cell", "unit_channel")
    assert a.attrs["units"] == "Hz"
    assert a.attrs["path"] == "activation" and a.attrs["method"] == "gausslegendre" and a.attrs["n_steps"] == 64
    assert "baseline_window" not in ds  # zero baseline
    assert (ds["integration_steps"].values == 64).all()


def test_adaptive_default_meets_its_tolerance(toy, toy_stim):
    ds = IntegratedGradients().attribute(toy, toy_stim)
    span = float(np.ptp(ds["response"].values))
    assert float(np.abs(ds["completeness_error"]).max()) <= 1e-4 * span
    steps = ds["integration_steps"].values
    assert steps.min() >= 32 and steps.max() <= 4096
    # a looser tolerance needs fewer nodes
    loose = IntegratedGradients(tolerance=1e-2).attribute(toy, toy_stim)
    assert loose["integration_steps"].values.sum() < steps.sum()


def test_linear_network_is_exact_for_any_rule():
    model = linear_model(seed=2)
    stim = stimulus_for(model, n_times=5)
    _, z, z0 = windows_and_layer(model, stim)
    # gradient of an affine network is constant: A = (z - z0) * J
    above = model.split("hidden")[1].double()
    zz = z.clone().requires_grad_(True)
    out = above(zz)
    expected = []
    for n in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, n].sum(), zz, retain_graph=True)
        expected.append((g * (z - z0)).sum((2, 3)).numpy())
    above.float()
    expected = np.stack(expected, 1)
    for method in ("riemann_left", "riemann_trapezoid", "gausslegendre"):
        ds = IntegratedGradients(n_steps=3, method=method).attribute(model, stim)
        np.testing.assert_allclose(ds["attribution"].values, expected, rtol=1e-4, atol=1e-5)


def test_forward_and_reverse_modes_and_captum_agree(toy, toy_stim):
    fwd = IntegratedGradients(n_steps=32, ad_mode="forward").attribute(toy, toy_stim)
    rev = IntegratedGradients(n_steps=32, ad_mode="reverse").attribute(toy, toy_stim)
    cap = IntegratedGradients(n_steps=32, backend="captum").attribute(toy, toy_stim, cells=["gc00"])
    assert fwd["attribution"].attrs["ad_mode"] == "forward" and rev["attribution"].attrs["ad_mode"] == "reverse"
    scale = float(np.abs(rev["attribution"]).max())
    np.testing.assert_allclose(fwd["attribution"].values, rev["attribution"].values, atol=1e-5 * scale)
    np.testing.assert_allclose(
        cap["attribution"].values, rev["attribution"].sel(cell=["gc00"]).values, atol=1e-5 * scale
    )


def test_keep_space_sums_back(toy, toy_stim):
    kept = IntegratedGradients(n_steps=32, keep_space=True).attribute(toy, toy_stim)
    summed = IntegratedGradients(n_steps=32).attribute(toy, toy_stim)
    assert kept["attribution"].dims == ("time", "cell", "unit_channel", "unit_y", "unit_x")
    assert kept.sizes["unit_y"] == 8 and kept.sizes["unit_x"] == 8
    back = kept["attribution"].sum(["unit_y", "unit_x"])
    np.testing.assert_allclose(back.values, summed["attribution"].values, rtol=1e-5, atol=1e-4)


def test_stimulus_path_is_the_activation_line_when_below_is_affine(toy, toy_stim):
    act = IntegratedGradients(n_steps=16).attribute(toy, toy_stim)
    stim = IntegratedGradients(n_steps=16, path="stimulus").attribute(toy, toy_stim)
    assert stim["attribution"].attrs["path"] == "stimulus" and "affine" in stim["attribution"].attrs["path_note"]
    np.testing.assert_array_equal(act["attribution"].values, stim["attribution"].values)


def nonaffine_below_model() -> SeqModel:
    """A Tanh inside ``below``: the stimulus path is curved in the layer."""
    below = nn.Sequential(nn.Conv2d(2, 3, 2), nn.Tanh(), nn.Conv2d(3, 3, 1))
    above = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(27, 2), nn.Softplus())
    return SeqModel(seeded(below, 4, 0.8), seeded(above, 5, 0.8))


def test_stimulus_path_matches_captum_layer_conductance():
    model = nonaffine_below_model()
    stim = stimulus_for(model, n_times=6)
    act = IntegratedGradients(n_steps=400, method="riemann_trapezoid").attribute(model, stim)
    native = IntegratedGradients(n_steps=400, method="riemann_trapezoid", path="stimulus").attribute(model, stim)
    captum = IntegratedGradients(n_steps=400, method="riemann_trapezoid", path="stimulus", backend="captum").attribute(
        model, stim
    )
    scale = float(np.abs(native["attribution"]).max())
    # same path, different discretisation (tangents vs finite differences): agree to O(1/n)
    np.testing.assert_allclose(native["attribution"].values, captum["attribution"].values, atol=1e-2 * scale)
    # a different path from the activation line, and both complete
    assert float(np.abs(native["attribution"] - act["attribution"]).max()) > 1e-2 * scale
    span = float(np.ptp(native["response"].values))
    assert float(np.abs(native["completeness_error"]).max()) < 1e-3 * span
    assert float(np.abs(act["completeness_error"]).max()) < 1e-3 * span


def test_conditions_loop(toy):
    stim = swept_stimulus(toy, [0.5, 1.0])
    ds = IntegratedGradients(n_steps=16).attribute(toy, stim)
    assert ds["attribution"].dims == ("condition", "time", "cell", "unit_channel")
    assert ds["completeness_error"].dims == ("condition", "time", "cell")
    assert ds["condition"].attrs["swept"] == "contrast"
    one = IntegratedGradients(n_steps=16).attribute(toy, stim.isel(condition=1))
    np.testing.assert_allclose(ds["attribution"].isel(condition=1).values, one["attribution"].values, rtol=1e-6)


def test_value_baseline(toy, toy_stim):
    ds = IntegratedGradients(baseline="value", baseline_value=-0.5, tolerance=1e-3).attribute(toy, toy_stim)
    window = ds["baseline_window"]
    assert window.dims == ("lag", "y", "x") and np.allclose(window.values, -0.5)
    assert window["lag"].attrs["units"] == "s" and float(window["lag"][-1]) == 0.0
    with torch.no_grad():
        r0 = toy.torch_module()(torch.full((1, toy.history, *toy.input_shape), -0.5))[0].numpy()
    np.testing.assert_allclose(ds["baseline_response"].values, r0, rtol=1e-5)
    span = float(np.ptp(ds["response"].values))
    assert float(np.abs(ds["completeness_error"]).max()) <= 1e-3 * span
    assert "uniform contrast -0.5" in ds["attribution"].attrs["baseline"]


def test_mean_and_file_baselines(toy, toy_stim, tmp_path):
    mean = IntegratedGradients(n_steps=16, baseline="mean").attribute(toy, toy_stim)
    frame = toy_stim["stimulus"].mean("time").values
    np.testing.assert_allclose(mean["baseline_window"].isel(lag=0).values, frame, rtol=1e-5)
    path = tmp_path / "base.npy"
    np.save(path, frame)
    from_file = IntegratedGradients(n_steps=16, baseline="file", baseline_file=str(path)).attribute(toy, toy_stim)
    np.testing.assert_allclose(from_file["attribution"].values, mean["attribution"].values, rtol=1e-5, atol=1e-5)
    np.save(path, np.zeros((3, 3)))
    with pytest.raises(UsageError, match="has shape"):
        IntegratedGradients(baseline="file", baseline_file=str(path)).attribute(toy, toy_stim)
    with pytest.raises(ParameterError, match="baseline_file"):
        IntegratedGradients(baseline="file")


def test_cell_selection(toy, toy_stim):
    ds = IntegratedGradients(n_steps=16).attribute(toy, toy_stim, cells=["gc02", "gc00"])
    assert list(ds["cell"].values) == ["gc02", "gc00"]
    full = IntegratedGradients(n_steps=16).attribute(toy, toy_stim)
    np.testing.assert_allclose(
        ds["attribution"].values, full["attribution"].sel(cell=["gc02", "gc00"]).values, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(UsageError, match="no cell 'gc9'"):
        IntegratedGradients().attribute(toy, toy_stim, cells=["gc9"])


def test_parameter_checks():
    with pytest.raises(ParameterError, match="n_steps"):
        IntegratedGradients(n_steps=1)
    with pytest.raises(ParameterError, match="ad_mode"):
        IntegratedGradients(ad_mode="forward", keep_space=True)
    with pytest.raises(ParameterError, match="method"):
        IntegratedGradients(method="simpson")


def test_quadrature_rules_integrate_constants():
    for method in ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre"):
        alphas, weights = quadrature(method, 17)
        assert float(weights.sum()) == pytest.approx(1.0)
        assert float(alphas.min()) >= 0.0 and float(alphas.max()) <= 1.0
    # Gauss-Legendre with n nodes integrates polynomials of degree 2n-1 exactly
    alphas, weights = quadrature("gausslegendre", 5)
    assert float((weights * alphas**9).sum()) == pytest.approx(0.1, rel=1e-12)


@pytest.mark.parametrize("n_steps", [2, 17, 64, 300])
def test_quadrature_nodes_are_captums_rules_in_float64(n_steps):
    """The rules Captum builds (its private approximation_methods), computed here: Riemann nodes at the left
    ends, midpoints or right ends of n equal steps, weighted 1/n; Gauss-Legendre as numpy's leggauss."""
    n = n_steps
    steps = np.arange(n)
    for method, nodes in (
        ("riemann_left", steps / n),
        ("riemann_middle", (steps + 0.5) / n),
        ("riemann_right", (steps + 1) / n),
    ):
        alphas, weights = quadrature(method, n)
        np.testing.assert_allclose(alphas.numpy(), nodes, rtol=0, atol=1e-15, err_msg=method)
        np.testing.assert_array_equal(weights.numpy(), np.full(n, 1 / n), err_msg=method)
    x, w = np.polynomial.legendre.leggauss(n)
    alphas, weights = quadrature("gausslegendre", n)
    np.testing.assert_allclose(alphas.numpy(), 0.5 * (1 + x), rtol=0, atol=1e-14)
    np.testing.assert_allclose(weights.numpy(), 0.5 * w, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "method", ["riemann_left", "riemann_middle", "riemann_right", "gausslegendre", "riemann_trapezoid"]
)
def test_each_rule_matches_captum_integrated_gradients(toy, toy_stim, method):
    """Captum's public IntegratedGradients with the same method and n_steps gives the same attributions
    (its Riemann nodes are float32: ~1e-8); its trapezoid weights sum to 1 - 1/n, ours to 1."""
    n = 12  # few nodes: the rules differ from each other by far more than the tolerance
    native = IntegratedGradients(n_steps=n, method=method).attribute(toy, toy_stim, cells=["gc01"])
    cap = IntegratedGradients(n_steps=n, method=method, backend="captum").attribute(toy, toy_stim, cells=["gc01"])
    want = native["attribution"].values * ((n - 1) / n if method == "riemann_trapezoid" else 1.0)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(cap["attribution"].values, want, rtol=0, atol=1e-5 * scale)
    if method == "riemann_left":  # the tolerance tells rules apart
        right = IntegratedGradients(n_steps=n, method="riemann_right").attribute(toy, toy_stim, cells=["gc01"])
        assert float(np.abs(right["attribution"].values - want).max()) > 1e-3 * scale
