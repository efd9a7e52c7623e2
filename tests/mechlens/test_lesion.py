"""The lesioned model: keeping every unit is the model, keeping none is the baseline, and a kept
channel's own contribution is what the lesion leaves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechlens.errors import UsageError
from mechlens.lesion import Lesioned, lesion_channels
from mechlens.testing import noise_stimulus
from mechlens.toymodels import ToyCNN


@pytest.fixture(scope="module")
def model() -> ToyCNN:
    torch.manual_seed(0)
    return ToyCNN()


def test_keeping_every_unit_is_the_model_and_keeping_none_is_the_baseline(model: ToyCNN) -> None:
    layer = model.default_layer()
    n = model.layers()[layer][0]
    stim = noise_stimulus(model, seed=3)
    full = model.predict(stim)["response"].values
    kept = lesion_channels(model, layer, range(n)).predict(stim)["response"].values
    np.testing.assert_allclose(kept, full, rtol=1e-6, atol=1e-6)
    none = lesion_channels(model, layer, []).predict(stim)["response"].values
    grey = model.predict(stim.assign(stimulus=stim["stimulus"] * 0))["response"].values
    np.testing.assert_allclose(none, np.broadcast_to(grey[:1], none.shape), rtol=1e-6, atol=1e-6)
    assert np.std(full, axis=0).min() > 0  # the check above is not trivially true


def test_a_lesion_changes_the_response_and_names_bad_input(model: ToyCNN) -> None:
    layer = model.default_layer()
    shape = model.layers()[layer]
    stim = noise_stimulus(model, seed=4)
    full = model.predict(stim)["response"].values
    one = lesion_channels(model, layer, [0]).predict(stim)["response"].values
    assert np.abs(one - full).max() > 1e-3
    # a per-unit mask equals the per-channel one it broadcasts to
    mask = np.zeros(shape, dtype=bool)
    mask[0] = True
    np.testing.assert_array_equal(Lesioned(model, layer, mask).predict(stim)["response"].values, one)
    with pytest.raises(UsageError, match="no channel 99"):
        lesion_channels(model, layer, [99])
    with pytest.raises(UsageError, match="keep has shape"):
        Lesioned(model, layer, np.ones(shape[0] + 1, bool))
    with pytest.raises(UsageError, match="no layer"):
        lesion_channels(model, "nope", [0])
