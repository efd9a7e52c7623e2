"""The retina CNN model plugin: shapes, split, train/eval behaviour, windows, conformance."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from mechlens_retina.models.cnn import BUNDLED, RetinaCNN
from mechlens_retina.models.layers import GaussianNoise
from retina_small import SMALL

from mechlens.errors import FileFormatError, ParameterError, UsageError
from mechlens.testing import noise_stimulus, parametrize_with_checks

STANDARD = (
    torch.nn.Conv2d,
    torch.nn.Flatten,
    torch.nn.BatchNorm1d,
    GaussianNoise,
    torch.nn.ReLU,
    torch.nn.Unflatten,
    torch.nn.Linear,
    torch.nn.Softplus,
)


@pytest.fixture(scope="module")
def small() -> RetinaCNN:
    return RetinaCNN(**SMALL)


@parametrize_with_checks([RetinaCNN], params=SMALL)
def test_small_random_variant_passes_the_conformance_kit(check: Callable[[], None]) -> None:
    check()


def test_small_random_variant_has_its_cells(small):
    assert small.predict(noise_stimulus(small)).sizes["cell"] == 3


def test_paper_architecture_shapes_match_design():
    model = RetinaCNN(checkpoint="random", device="cpu", n_cells=4)
    assert model.history == 40 and model.input_shape == (50, 50) and model.frame_period_s == 0.01
    assert model.layers() == {"conv1": (8, 36, 36), "conv2": (8, 26, 26)}
    assert model.cells == ["gc00", "gc01", "gc02", "gc03"]
    m = model.torch_module()
    assert m.conv1.weight.shape == (8, 40, 15, 15) and m.conv2.weight.shape == (8, 8, 11, 11)
    assert m.bn1.num_features == 8 * 36 * 36 and m.bn1.eps == 1e-3 and m.bn1.momentum == 0.01
    assert m.dense.bias is None and m.dense.in_features == 8 * 26 * 26
    x = torch.zeros(2, 40, 50, 50)
    with torch.no_grad():
        assert m(x).shape == (2, 4)
        below, _ = model.split("conv1")
        assert below(x).shape == (2, 8, 36, 36)
        below2, _ = model.split("conv2")
        assert below2(x).shape == (2, 8, 26, 26)


def test_nips_2016_variant_from_the_same_class():
    model = RetinaCNN(checkpoint="random", channels1=16, kernel2=9, device="cpu")
    assert model.layers() == {"conv1": (16, 36, 36), "conv2": (8, 28, 28)}


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_split_shares_the_modules_and_recomposes_exactly(small, layer):
    below, above = small.split(layer)
    modules = list(small.torch_module().children())
    assert [id(m) for m in [*below, *above]] == [id(m) for m in modules]
    assert all(isinstance(m, STANDARD) for m in modules)
    x = small.windows(noise_stimulus(small, 6)["stimulus"])[:6].contiguous()
    with torch.no_grad():
        assert torch.equal(above(below(x)), small.torch_module()(x))
    assert isinstance(above[0], torch.nn.Flatten)  # conv1/conv2 are the raw conv outputs, before batch norm


def test_unknown_layer_is_refused_with_the_known_ones(small):
    with pytest.raises(UsageError, match="conv1, conv2"):
        small.split("conv3")


def test_batch_norm_and_noise_differ_between_train_and_eval():
    model = RetinaCNN(**SMALL)
    m = model.torch_module()
    x = model.windows(noise_stimulus(model, 16)["stimulus"]).contiguous()
    with torch.no_grad():
        m.eval()
        e1, e2 = m(x), m(x)
        assert torch.equal(e1, e2)  # eval: deterministic, running statistics
        # eval output of one window does not depend on the rest of the batch
        assert torch.allclose(m(x[:1]), e1[:1], atol=1e-6)
        m.train()
        torch.manual_seed(0)
        t1 = m(x)
        torch.manual_seed(1)
        t2 = m(x)
        assert not torch.allclose(t1, t2)  # training: the Gaussian noise is on
        for noise in (m.noise1, m.noise2):
            noise.std = 0.0
        n1, n2 = m(x), m(x)
        assert torch.allclose(n1, n2)  # without noise, training mode is deterministic ...
        assert not torch.allclose(n1, e1, atol=1e-3)  # ... but batch statistics differ from running ones
    m.eval()
    assert not m.training and not m.bn1.training


def test_strided_window_equals_the_explicit_window(small):
    stim = noise_stimulus(small, 20)
    movie = stim["stimulus"].values
    w = small.windows(stim["stimulus"])
    assert w.shape == (20, 5, 12, 12)
    for i in (0, 7, 19):
        np.testing.assert_array_equal(w[i].numpy(), movie[i : i + 5])
    # a view, not a copy: one float per frame pixel, not per window pixel
    assert w.untyped_storage().nbytes() == movie.size * 4


def test_random_weights_depend_on_seed_only():
    a = RetinaCNN(**SMALL, seed=3).torch_module().state_dict()
    b = RetinaCNN(**SMALL, seed=3).torch_module().state_dict()
    c = RetinaCNN(**SMALL, seed=4).torch_module().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_kernels_larger_than_the_image_are_refused():
    with pytest.raises(ParameterError, match="kernel2"):
        RetinaCNN(**{**SMALL, "kernel2": 9})
    with pytest.raises(ParameterError, match="kernel1"):
        RetinaCNN(**{**SMALL, "kernel1": 13})


def test_bundled_checkpoint_loads_or_explains_how_to_make_it():
    if BUNDLED.is_file():
        model = RetinaCNN(device="cpu")
        assert model.checkpoint_sha256() and model.cells
    else:
        with pytest.raises(FileFormatError, match=r"make train-default.*checkpoint='random'"):
            RetinaCNN(device="cpu")


def test_windows_are_z_scored_with_the_training_statistics_as_training_saw_its_movie(small):
    """A probe reaches the network in the units of the training movie (predictions and attributions alike)."""
    ds = noise_stimulus(small, n_times=4, seed=0)
    movie = ds["stimulus"]
    raw = small.windows(movie)  # no statistics: the movie as it comes
    np.testing.assert_array_equal(raw[0].numpy(), movie.transpose("time", "y", "x").values[: small.history])
    model = RetinaCNN(**SMALL)
    model.module.load_state_dict(small.module.state_dict())
    model.annotate(list(small.cells), stimulus_mean=0.5, stimulus_std=2.0)
    np.testing.assert_allclose(model.windows(movie).numpy(), (raw.numpy() - 0.5) / 2.0, rtol=1e-6, atol=1e-6)
    # predict goes through them: the same network with the statistics answers the z-scored movie
    scaled = ds.copy()
    scaled["stimulus"] = (movie - 0.5) / 2.0
    a = model.predict(ds)["response"].values
    b = small.predict(scaled)["response"].values
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # a lesioned copy runs the same network in the same units: keeping every channel changes nothing,
    # and its clamped baseline is the grey screen in those units too
    from mechlens.lesion import lesion_channels

    kept_all = lesion_channels(model, "conv1", list(range(model.layers()["conv1"][0])))
    np.testing.assert_allclose(kept_all.predict(ds)["response"].values, a, rtol=1e-5, atol=1e-5)
    none = lesion_channels(model, "conv1", [])
    grey = ds.copy()
    grey["stimulus"] = movie * 0.0
    np.testing.assert_allclose(none.predict(ds)["response"].values, model.predict(grey)["response"].values,
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_standardise_needs_training_statistics(small):
    with pytest.raises(UsageError, match="normalisation"):
        small.standardise(np.zeros((3, 12, 12)))
    model = RetinaCNN(**SMALL)
    model.annotate(["a", "b", "c"], stimulus_mean=2.0, stimulus_std=4.0)
    np.testing.assert_allclose(model.standardise(np.full((1, 12, 12), 6.0)), 1.0)
    assert model.cells == ["a", "b", "c"]
