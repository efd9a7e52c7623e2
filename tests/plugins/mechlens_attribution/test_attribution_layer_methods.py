"""gradient-x-activation and deeplift: the same output contract; what each guarantees."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from attribution_test_models import linear_model, stimulus_for, windows_and_layer
from mechlens_attribution.captum_layer import DeepLift, GradientXActivation

from mechlens.testing import parametrize_with_checks
from mechlens.toymodels import ToyCNN


@pytest.fixture(scope="module")
def toy() -> ToyCNN:
    return ToyCNN(seed=0)


@functools.cache
def _toy() -> ToyCNN:
    """The toy of the ``toy`` fixture, for the conformance checks (made when the first one runs)."""
    return ToyCNN(seed=0)


def _toy_stimulus():
    return stimulus_for(_toy(), n_times=6)


@parametrize_with_checks([DeepLift], model=_toy, stimulus=_toy_stimulus, completeness_rtol=1e-5)
def test_deeplift_conforms(check: Callable[[], None]) -> None:
    check()


def test_deeplift_sums_to_delta(toy):
    stim = stimulus_for(toy, n_times=6)
    ds = DeepLift().attribute(toy, stim)
    assert ds["attribution"].attrs["method"] == "deeplift-rescale"
    kept = DeepLift(keep_space=True, baseline="value", baseline_value=0.2).attribute(toy, stim)
    assert kept["attribution"].dims[-2:] == ("unit_y", "unit_x")
    assert float(np.abs(kept["completeness_error"]).max()) < 1e-5 * float(np.ptp(kept["response"].values))


@parametrize_with_checks(
    [GradientXActivation],
    model=_toy,
    stimulus=_toy_stimulus,
    expected_failures={"check_attributor_completeness": "a first-order Taylor term is not complete on a ReLU network"},
)
def test_gradient_x_activation_conforms(check: Callable[[], None]) -> None:
    check()


def test_gradient_x_activation_reports_its_completeness_error(toy):
    # the error of the first-order Taylor term is stored, not hidden
    ds = GradientXActivation().attribute(toy, stimulus_for(toy, n_times=6))
    rel = ds["completeness_error"].attrs["max_abs_relative_to_response_range"]
    assert rel > 1e-3


def test_gradient_x_activation_by_hand(toy):
    stim = stimulus_for(toy, n_times=4)
    _, z, z0 = windows_and_layer(toy, stim)
    above = toy.split("conv1")[1]
    zz = z.float().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(above(zz)[:, 1].sum(), zz)
    for mode, factor in (("difference", z - z0), ("activation", z)):
        ds = GradientXActivation(multiply_by=mode, keep_space=True).attribute(toy, stim, cells=["gc01"])
        expected = (g.double() * factor).numpy()
        np.testing.assert_allclose(ds["attribution"].values[:, 0], expected, rtol=1e-4, atol=1e-5)


def test_both_are_exact_on_an_affine_network():
    model = linear_model(seed=3)
    stim = stimulus_for(model, n_times=4)
    gxa = GradientXActivation().attribute(model, stim)
    dl = DeepLift().attribute(model, stim)
    np.testing.assert_allclose(gxa["attribution"].values, dl["attribution"].values, rtol=1e-4, atol=1e-5)
    for ds in (gxa, dl):
        assert float(np.abs(ds["completeness_error"]).max()) < 1e-4
