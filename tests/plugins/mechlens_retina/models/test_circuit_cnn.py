"""The version-3 synthetic retina is exactly a retina-cnn (mechlens_retina.models.circuit_cnn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mechlens_retina.models.circuit_cnn import as_cnn, at_data_statistics, max_difference
from mechlens_retina.models.synthetic import SyntheticRetina

from mechlens.errors import UsageError


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    # white noise at contrast 1 drives every path, rectifier and gain control of the circuit
    return np.random.default_rng(0).standard_normal((12, 40, 50, 50)).astype(np.float32)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"silence": ["ON-slow"]},
        {"gain_control": 0.5, "amacrine": 2.0},
        {"circuit": "v4"},
        {"circuit": "v5"},
        {"circuit": "v6"},
    ],
    ids=["intact", "silenced", "scaled", "version-4", "version-5", "version-6"],
)
def test_the_cnn_computes_the_circuit(windows: np.ndarray, params: dict) -> None:
    retina = SyntheticRetina(**{"circuit": "v3", **params})
    cnn = as_cnn(retina)
    rates = retina.torch_module()(torch.as_tensor(windows)).detach().numpy()
    assert rates.max() > 20.0  # the windows drive the cells: the comparison is not of zeros
    assert max_difference(retina, cnn, windows) < 1e-3
    assert cnn.architecture() == {
        "history": 40,
        "image_size": 50,
        "channels1": 8,
        "kernel1": 15,
        "channels2": 8,
        "kernel2": 11,
        "n_cells": 8,
    }


def test_at_data_statistics_keeps_the_function_and_makes_a_train_mode_pass_close(windows: np.ndarray) -> None:
    retina = SyntheticRetina(circuit="v3")
    x = torch.as_tensor(windows)
    plain = as_cnn(retina)
    with torch.no_grad():
        plain.module.train()
        before = (plain.module(x) - retina.torch_module()(x)).abs().max()  # batch statistics, identity norms
    cnn = at_data_statistics(as_cnn(retina), windows)
    assert max_difference(retina, cnn, windows) < 1e-3  # eval mode: still the circuit
    bn1 = cnn.torch_module().bn1
    assert float(bn1.running_var.mean()) != pytest.approx(1.0, abs=0.05)  # the data's statistics inside
    with torch.no_grad():
        cnn.module.train()
        after = (cnn.module(x) - retina.torch_module()(x)).abs().max()
    # a train-mode pass over the windows whose statistics it holds is the circuit again; with the
    # identity norms of as_cnn it is far off
    assert float(after) < 1e-2 < 1.0 < float(before)


def test_a_random_cnn_is_not_the_circuit(windows: np.ndarray) -> None:
    """Control: the exactness above is not a property of any CNN of this shape."""
    from mechlens_retina.models.cnn import RetinaCNN

    retina = SyntheticRetina(circuit="v3")
    assert max_difference(retina, RetinaCNN(checkpoint="random", n_cells=8, device="cpu"), windows) > 1.0


def test_the_divisive_circuit_is_refused() -> None:
    with pytest.raises(UsageError, match="circuit='v3'"):
        as_cnn(SyntheticRetina())
