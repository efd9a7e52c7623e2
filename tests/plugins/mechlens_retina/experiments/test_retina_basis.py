"""The first layer rewritten in the circuit's filters (mechlens_retina.experiments.basis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mechlens_retina.experiments import basis as B
from mechlens_retina.models.cnn import RetinaCNN
from mechlens_retina.models.synthetic import SyntheticRetina

from mechlens import registry
from mechlens.errors import SchemaError
from mechlens.testing import noise_stimulus


def _planted(seed: int = 0) -> tuple[RetinaCNN, np.ndarray, np.ndarray]:
    """A small CNN whose conv1 is a known mixture of the circuit's filters, channel 5 a noise kernel."""
    circuit = SyntheticRetina().conv.weight.detach().numpy()  # (8, 40, 15, 15)
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((8, 8)) * (rng.uniform(size=(8, 8)) < 0.4) + np.diag(rng.choice([-2.0, 2.0], 8))
    weight = np.einsum("cf,fhyx->chyx", mixing, circuit)
    weight[5] = rng.standard_normal(weight[5].shape) * np.linalg.norm(weight[5]) / np.sqrt(weight[5].size)
    cnn = RetinaCNN(checkpoint="random", image_size=20, channels2=2, kernel2=3, n_cells=2, seed=seed, device="cpu")
    with torch.no_grad():
        cnn.module.conv1.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    return cnn, circuit, mixing


def _movie(cnn: RetinaCNN, seconds: float = 4.0):
    return registry.get("stimulus", "natural-scenes")(duration=seconds).generate(seed=5, grid=cnn.grid)["stimulus"]


def test_the_fit_recovers_a_planted_mixture_exactly():
    cnn, circuit, mixing = _planted()
    basis = B.fit_circuit_basis(cnn, circuit, _movie(cnn), stride=2)
    pure = [c for c in range(8) if c != 5]
    np.testing.assert_allclose(basis.explained[pure], 1.0, atol=1e-3)
    # the circuit's filters are nearly collinear (cosine down to -0.99) and still told apart: a mixture
    # of them is recovered to float precision where it explains everything
    np.testing.assert_allclose(basis.mixing[pure], mixing[pure], rtol=0, atol=2e-3 * np.abs(mixing).max())
    # the residual is exact: W = M K + R for every channel, the foreign one included
    rebuilt = np.einsum("cf,fhyx->chyx", basis.mixing, circuit) + basis.residual
    np.testing.assert_allclose(rebuilt, cnn.module.conv1.weight.detach().double().numpy(), atol=1e-6)


def test_natural_scenes_explain_a_random_kernel_by_the_circuits_filters_and_white_noise_does_not():
    """Why a map fitted on natural scenes cannot name a channel's type: their power sits where every
    smooth filter responds, so the circuit's eight filters carry most of the variance of a white-noise
    kernel; under white noise the explained fraction is the kernel's share in their span (~8 / 9000)."""
    cnn, circuit, _ = _planted()
    natural = B.fit_circuit_basis(cnn, circuit, _movie(cnn, 8.0), stride=2)
    noise = B.fit_circuit_basis(cnn, circuit, noise_stimulus(cnn, n_times=800, seed=0)["stimulus"], stride=2)
    assert natural.explained[5] > 0.4
    assert noise.explained[5] < 0.01
    assert np.all(noise.explained[[0, 1, 2, 3, 4, 6, 7]] > 0.999)


def test_a_cnn_with_the_circuits_own_filters_gets_the_identity():
    cnn, circuit, _ = _planted()
    with torch.no_grad():
        cnn.module.conv1.weight.copy_(torch.as_tensor(circuit))
    basis = B.fit_circuit_basis(cnn, circuit, _movie(cnn), stride=2)
    np.testing.assert_allclose(basis.mixing, np.eye(8), atol=1e-4)
    assert float(np.abs(basis.residual).max()) < 1e-4 * float(np.abs(circuit).max())


def test_bad_inputs_are_refused_with_the_fix():
    cnn, circuit, _ = _planted()
    movie = _movie(cnn, 1.0)
    with pytest.raises(SchemaError, match="not one convolution"):
        B.fit_circuit_basis(cnn, circuit, movie, layer="conv2")
    with pytest.raises(SchemaError, match="differ in"):
        B.fit_circuit_basis(cnn, circuit[:, :20], movie)
    with pytest.raises(SchemaError, match="stride"):
        B.fit_circuit_basis(cnn, circuit, movie, stride=0)
