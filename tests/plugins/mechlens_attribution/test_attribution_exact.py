"""exact-integrated-gradients: closed forms, completeness, agreement with quadrature, refusals."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from attribution_test_models import (
    SeqModel,
    full_field_stimulus,
    linear_model,
    seeded,
    single_relu_model,
    stimulus_for,
    windows_and_layer,
)
from mechlens_attribution.exact import ExactIntegratedGradients
from mechlens_attribution.integrated import IntegratedGradients
from mechlens_attribution.structure import UnsupportedModelError
from torch import nn

from mechlens.errors import UsageError
from mechlens.testing import parametrize_with_checks
from mechlens.toymodels import ToyCNN


@functools.cache
def _toy() -> ToyCNN:
    return ToyCNN(seed=0)


@parametrize_with_checks(
    [ExactIntegratedGradients],
    model=_toy,
    stimulus=lambda: stimulus_for(_toy(), n_times=6),
    completeness_rtol=1e-5,
)
def test_conforms_to_the_attributor_contract(check: Callable[[], None]) -> None:
    check()


def test_records_what_it_integrated():
    ds = ExactIntegratedGradients().attribute(_toy(), stimulus_for(_toy(), n_times=6))
    assert ds["attribution"].attrs["method"] == "exact"
    assert ds["attribution"].attrs["kinks_above_layer"] == 2
    assert ds["attribution"].attrs["final_nonlinearity"] == "Softplus"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_complete_on_random_toy_cnns(seed):
    model = ToyCNN(seed=seed, channels=4)
    ds = ExactIntegratedGradients().attribute(model, stimulus_for(model, n_times=6, seed=seed))
    assert float(np.abs(ds["completeness_error"]).max()) < 1e-5 * float(np.ptp(ds["response"].values))


def _single_relu_closed_form(model: SeqModel, stim, softplus: bool) -> tuple[np.ndarray, np.ndarray]:
    """IG of r = relu(w.z + c) [-> softplus(v . + d)] along z0 -> z, by hand; also which rows switch."""
    _, z, z0 = windows_and_layer(model, stim)
    above = model.split("hidden")[1]
    lin = above[1]
    w = lin.weight.detach().double().view(-1).numpy()
    c = float(lin.bias)
    dz = (z - z0).flatten(1).numpy()
    h0 = float((z0.flatten(1).numpy() @ w)[0]) + c
    slope = dz @ w  # h(alpha) = h0 + alpha * slope
    out = np.zeros((dz.shape[0], 1, *model.layers()["hidden"]))
    switches = np.zeros(dz.shape[0], dtype=bool)
    for t in range(dz.shape[0]):
        # active interval [lo, hi] of the unit on [0, 1]
        cross = -h0 / slope[t] if slope[t] != 0 else np.inf
        switches[t] = 0 < cross < 1
        if slope[t] > 0:
            lo, hi = min(max(cross, 0.0), 1.0), 1.0
        else:
            lo, hi = 0.0, min(max(cross, 0.0), 1.0)
        if h0 + slope[t] * (lo + hi) / 2 <= 0:
            continue  # never active
        if softplus:
            v, d = float(above[3].weight), float(above[3].bias)
            sp = np.logaddexp(0, v * (h0 + slope[t] * np.array([lo, hi])) + d)
            factor = v * (sp[1] - sp[0]) / (v * slope[t])
        else:
            factor = hi - lo
        out[t, 0] = (dz[t] * w * factor).reshape(model.layers()["hidden"])
    return out, switches


@pytest.mark.parametrize("softplus", [False, True])
def test_single_relu_unit_matches_closed_form(softplus):
    model = single_relu_model(seed=3, softplus=softplus)
    stim = stimulus_for(model, n_times=24, seed=1)
    expected, switches = _single_relu_closed_form(model, stim, softplus)
    assert switches.any() and not switches.all(), "the test needs rows with and without a switch"
    ds = ExactIntegratedGradients(keep_space=True).attribute(model, stim)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(ds["attribution"].values, expected, atol=2e-6 * scale)
    assert float(np.abs(ds["completeness_error"]).max()) < 1e-5


def test_linear_network_gives_activation_times_gradient():
    model = linear_model(seed=1)
    stim = stimulus_for(model, n_times=5)
    exact = ExactIntegratedGradients().attribute(model, stim)
    assert exact["attribution"].attrs["final_nonlinearity"] == "none"
    quad = IntegratedGradients(n_steps=2, method="riemann_left").attribute(model, stim)  # exact for affine nets
    np.testing.assert_allclose(exact["attribution"].values, quad["attribution"].values, rtol=1e-5, atol=1e-6)
    assert float(np.abs(exact["completeness_error"]).max()) < 1e-5


def test_kink_free_network_matches_2000_step_riemann():
    # affine layers then softplus: the integrand is smooth, so 2000 midpoint steps are accurate to ~1e-7
    model = linear_model(seed=4, final=nn.Softplus())
    stim = stimulus_for(model, n_times=6)
    exact = ExactIntegratedGradients().attribute(model, stim)
    quad = IntegratedGradients(n_steps=2000, method="riemann_middle").attribute(model, stim)
    scale = float(np.abs(exact["attribution"]).max())
    np.testing.assert_allclose(exact["attribution"].values, quad["attribution"].values, atol=1e-5 * scale)


def test_riemann_sums_converge_to_exact_like_one_over_n():
    model = ToyCNN(seed=0)
    stim = stimulus_for(model, n_times=4)
    exact = ExactIntegratedGradients().attribute(model, stim)["attribution"]
    scale = float(np.abs(exact).max())
    errs = {}
    for n in (250, 2000):
        quad = IntegratedGradients(n_steps=n, method="riemann_middle").attribute(model, stim)["attribution"]
        errs[n] = float(np.abs(quad - exact).max()) / scale
    # a ReLU switch inside a step leaves an error of up to half a step times the jump: O(1/n)
    assert errs[2000] < 3e-4
    assert errs[2000] < errs[250] / 3


def test_matches_a_fine_float64_riemann_reference():
    model = single_relu_model(seed=5, softplus=True)
    stim = stimulus_for(model, n_times=6, seed=2)
    _, z, z0 = windows_and_layer(model, stim)
    above = model.split("hidden")[1].double()
    n = 100_000
    alphas = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    ref = torch.zeros_like(z)
    for t in range(z.shape[0]):
        path = (z0 + alphas.view(-1, 1, 1, 1) * (z[t] - z0)).requires_grad_(True)
        (g,) = torch.autograd.grad(above(path).sum(), path)
        ref[t] = g.mean(0) * (z[t] - z0[0])
    above.float()
    ds = ExactIntegratedGradients(keep_space=True, precision="float64").attribute(model, stim)
    scale = float(ref.abs().max())
    np.testing.assert_allclose(ds["attribution"].values[:, 0], ref.numpy(), atol=1e-5 * scale)


def test_modes_precision_and_keep_space_agree():
    model = ToyCNN(seed=2)
    stim = stimulus_for(model, n_times=4)
    fwd = ExactIntegratedGradients(ad_mode="forward").attribute(model, stim)
    rev = ExactIntegratedGradients(ad_mode="reverse").attribute(model, stim)
    f64 = ExactIntegratedGradients(precision="float64").attribute(model, stim)
    kept = ExactIntegratedGradients(keep_space=True).attribute(model, stim)
    scale = float(np.abs(f64["attribution"]).max())
    for other in (fwd, rev, kept["attribution"].sum(["unit_y", "unit_x"])):
        values = other["attribution"].values if hasattr(other, "data_vars") else other.values
        np.testing.assert_allclose(values, f64["attribution"].values, atol=2e-6 * scale)
    assert kept["attribution"].dims[-2:] == ("unit_y", "unit_x")


def test_agrees_with_quadrature_integrated_gradients_and_baselines():
    model = ToyCNN(seed=1)
    stim = stimulus_for(model, n_times=4)
    params = {"baseline": "value", "baseline_value": 0.3}
    exact = ExactIntegratedGradients(**params).attribute(model, stim, cells=["gc01"])
    quad = IntegratedGradients(**params, n_steps=512).attribute(model, stim, cells=["gc01"])
    scale = float(np.abs(exact["attribution"]).max())
    np.testing.assert_allclose(exact["attribution"].values, quad["attribution"].values, atol=5e-3 * scale)
    np.testing.assert_allclose(exact["baseline_response"].values, quad["baseline_response"].values)
    assert np.allclose(exact["baseline_window"].values, 0.3)
    assert float(np.abs(exact["completeness_error"]).max()) < 1e-5 * float(np.ptp(exact["response"].values))


def test_full_field_stimulus_crosses_few_linear_regions():
    # spatially uniform input: every unit of a channel switches at the same alpha
    model = ToyCNN(seed=0)
    stim = full_field_stimulus(model, n_times=10)
    attributor = ExactIntegratedGradients()
    ds = attributor.attribute(model, stim)
    rows = ds.sizes["time"]
    kinks = model.params.channels + model.params.channels2
    assert attributor.stats["segments"] <= rows * (kinks + 1)
    assert float(np.abs(ds["completeness_error"]).max()) < 1e-5 * float(np.ptp(ds["response"].values))


class Wrapper(nn.Module):
    """A container with its own forward: its order of operations cannot be inspected."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(18, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(z.flatten(1)))


def _model(*above: nn.Module) -> SeqModel:
    return SeqModel(seeded(nn.Sequential(nn.Conv2d(2, 2, 2)), 0), seeded(nn.Sequential(*above), 1))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (lambda: _model(nn.Flatten(), nn.Linear(18, 4), nn.Tanh(), nn.Linear(4, 2), nn.Softplus()), r"\[2\] \(Tanh\)"),
        (
            lambda: _model(nn.Flatten(), nn.Linear(18, 4), nn.Sigmoid(), nn.Linear(4, 2)),
            r"\[2\] \(Sigmoid\) is a smooth",
        ),
        (lambda: _model(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2)), r"\[0\] \(MaxPool2d\) is not known"),
        (lambda: _model(Wrapper()), "Wrapper, a container"),
        (
            lambda: _model(nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(), nn.Linear(18, 2)),
            "batch statistics",
        ),
    ],
)
def test_refuses_models_it_cannot_integrate_exactly(model, match):
    m = model()
    stim = stimulus_for(m, n_times=2)
    with pytest.raises(UnsupportedModelError, match=match) as err:
        ExactIntegratedGradients().attribute(m, stim)
    assert isinstance(err.value, UsageError)
    assert "integrated-gradients" in str(err.value)


def test_refuses_batch_norm_in_training_mode():
    model = ToyCNN()
    model.above[0].train()
    try:
        with pytest.raises(UnsupportedModelError, match=r"above\[0\] \(BatchNorm2d\) is in training mode"):
            ExactIntegratedGradients().attribute(model, stimulus_for(model, n_times=2))
    finally:
        model.above[0].eval()


def test_retina_cnn_both_layers():
    cnn = pytest.importorskip("mechlens_retina.models.cnn")
    model = cnn.RetinaCNN(
        checkpoint="random",
        history=4,
        image_size=10,
        kernel1=3,
        kernel2=3,
        channels1=3,
        channels2=2,
        n_cells=2,
        device="cpu",
    )
    stim = stimulus_for(model, n_times=4)
    for layer in ("conv1", "conv2"):
        exact = ExactIntegratedGradients().attribute(model, stim, layer=layer)
        assert float(np.abs(exact["completeness_error"]).max()) < 1e-5 * float(np.ptp(exact["response"].values))
        quad = IntegratedGradients(tolerance=1e-4).attribute(model, stim, layer=layer)
        scale = float(np.abs(exact["attribution"]).max())
        np.testing.assert_allclose(exact["attribution"].values, quad["attribution"].values, atol=3e-3 * scale)


def test_the_plugin_modules_import_no_circle():
    """No module of the plugin imports, at any level (a function's body included), one that imports it back."""
    import ast
    from pathlib import Path

    import mechlens_attribution

    root = Path(mechlens_attribution.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        deps = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "mechlens_attribution":
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mechlens_attribution."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mechlens_attribution."))
    assert graph["exact"] >= {"sweep", "integrated"}  # the walk sees function-level imports

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for dep in graph.get(start, ()):
            if dep == target or (dep not in seen and reaches(dep, target, seen | {dep})):
                return True
        return False

    circles = sorted(name for name in graph if reaches(name, name, {name}))
    assert not circles, f"modules on an import circle: {circles}"
