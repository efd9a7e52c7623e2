"""Which circuit type each CNN channel is (mechlens_retina.experiments.matching)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mechlens_retina.experiments import matching as M
from mechlens_retina.models.cnn import RetinaCNN
from mechlens_retina.models.synthetic import SyntheticRetina

from mechlens.errors import ParameterError, SchemaError


def test_hungarian_kernel_matching_recovers_a_permuted_sign_flipped_copy_and_leaves_noise_unmatched():
    circuit = SyntheticRetina().conv.weight.detach().numpy()  # (8, 40, 15, 15)
    groups, names = M.type_groups(SyntheticRetina())
    assert names == ["OFF-fast", "OFF-slow", "ON-fast", "ON-slow"]
    rng = np.random.default_rng(0)
    order = rng.permutation(8)
    signs = np.array([1, -1, -1, 1, -1, 1, 1, -1], dtype=float)
    cnn = circuit[order] * signs[:, None, None, None] * rng.uniform(0.1, 10, 8)[:, None, None, None]
    cnn[3] = rng.standard_normal(cnn[3].shape)  # a kernel like no circuit filter
    match = M.match_kernels(cnn, circuit, groups)
    for c in range(8):
        if c == 3:
            assert match.channel[c] == -1 and match.assignment[c] == -1
        else:
            assert match.channel[c] == order[c]
            assert match.assignment[c] == groups[order[c]]
            assert match.strength()[c] == pytest.approx(signs[c], abs=1e-6)  # signed cosine of the pair
    assert np.isnan(match.strength()[3])
    with pytest.raises(SchemaError, match="differ in"):
        M.kernel_cosines(cnn[:, :20], circuit)


def test_polarity_tells_a_filter_from_its_negative_of_another_type():
    # OFF-slow and ON-fast delayed are near negatives (cosine -0.99): a CNN channel with the ON-fast
    # delayed shape and a positive gain is an ON channel, which the sign-invariant match called OFF-slow
    circuit = SyntheticRetina().conv.weight.detach().numpy()
    groups, _ = M.type_groups(SyntheticRetina())
    channel_names = [t["name"] for t in SyntheticRetina().ground_truth_types()]
    off_slow, on_fast_delayed = channel_names.index("OFF-slow"), channel_names.index("ON-fast delayed")
    assert M.kernel_cosines(circuit[[off_slow]], circuit[[on_fast_delayed]])[0, 0] < -0.95
    cnn = -circuit[[off_slow]]
    ignoring = M.match_kernels(cnn, circuit, groups)
    assert ignoring.channel[0] == off_slow  # |cos| 1.0 with its own negative
    assert M.match_kernels(cnn, circuit, groups, polarity=np.array([1.0])).channel[0] == on_fast_delayed
    assert M.match_kernels(cnn, circuit, groups, polarity=np.array([-1.0])).channel[0] == off_slow
    with pytest.raises(ParameterError, match="polarity"):
        M.match_kernels(cnn, circuit, groups, polarity=np.array([0.5]))


def test_a_pair_below_the_threshold_never_displaces_one_above_it():
    circuit = SyntheticRetina().conv.weight.detach().numpy()
    groups, _ = M.type_groups(SyntheticRetina())
    rng = np.random.default_rng(3)
    # channel 0 is filter 0 (cos 1); channel 1 is mostly noise with a little of filter 0 (cos < 0.5)
    noise = rng.standard_normal(circuit[0].shape) * np.linalg.norm(circuit[0]) / np.sqrt(circuit[0].size)
    cnn = np.stack([circuit[0], 0.3 * circuit[0] + noise])
    match = M.match_kernels(cnn, circuit, groups, polarity=np.array([1.0, 1.0]))
    assert match.channel[0] == 0 and match.channel[1] == -1


def test_channel_polarity_reads_the_gain_each_channel_reaches_its_relu_with():
    cnn = RetinaCNN(checkpoint="random", image_size=20, channels2=2, kernel2=3, n_cells=2, seed=0, device="cpu")
    with torch.no_grad():
        gain = cnn.module.bn1.weight.view(8, 6, 6)
        gain.fill_(1.0)
        gain[2] = -0.5
        gain[5, 0, :] = -1.0  # one row of channel 5's units the other way
    polarity, consistency = M.channel_polarity(cnn)
    np.testing.assert_array_equal(polarity, [1, 1, -1, 1, 1, 1, 1, 1])
    assert consistency[2] == 1.0 and consistency[5] == pytest.approx(30 / 36)
    mixing = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), torch.nn.ReLU())
    cnn.split = lambda layer: (cnn.module[:1], mixing)  # type: ignore[method-assign]
    with pytest.raises(SchemaError, match="mix units"):
        M.channel_polarity(cnn)
    cnn.split = lambda layer: (cnn.module[:1], torch.nn.Sequential(torch.nn.Flatten()))  # type: ignore[method-assign]
    with pytest.raises(SchemaError, match="no ReLU"):
        M.channel_polarity(cnn)


def test_the_match_is_invariant_to_the_networks_own_sign_symmetry():
    # flipping a channel's kernel *and* its gain (and the batch norm's mean) leaves the network's rates
    # unchanged; the polarity-signed match must not move either, while the kernel's sign alone does
    circuit = SyntheticRetina().conv.weight.detach()
    groups, _ = M.type_groups(SyntheticRetina())
    cnn = RetinaCNN(checkpoint="random", image_size=20, channels2=2, kernel2=3, n_cells=2, seed=0, device="cpu")
    order = [3, 0, 6, 1, 7, 2, 5, 4]
    with torch.no_grad():
        cnn.module.conv1.weight.copy_(circuit[order])
        cnn.module.conv1.bias.zero_()
    stim = torch.randn(4, 40, 20, 20)
    before = cnn.module(stim)

    def match() -> np.ndarray:
        polarity, _ = M.channel_polarity(cnn)
        return M.match_kernels(
            cnn.module.conv1.weight.detach().numpy(), circuit.numpy(), groups, polarity=polarity
        ).channel

    np.testing.assert_array_equal(match(), order)
    with torch.no_grad():
        cnn.module.conv1.weight[2].neg_()
        units = slice(2 * 36, 3 * 36)
        cnn.module.bn1.weight[units] *= -1
        cnn.module.bn1.running_mean[units] *= -1
    torch.testing.assert_close(cnn.module(stim), before, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(match(), order)
