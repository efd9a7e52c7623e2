"""Layers reached through forward hooks (issue 18.6): a model with a skip connection and functional ops,
and no split of its own, is split, attributed, checked by the kit and lesioned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hooked_toys import SignedSkipModel, SkipModel, SplittableSkipModel, UndeclaredSignedModel

from mechlens.errors import MechlensError, UsageError
from mechlens.interfaces import Model
from mechlens.layers import capture, find_module, patched
from mechlens.lesion import Lesioned, lesion_channels
from mechlens.registry import get
from mechlens.testing import check_model, noise_stimulus, parametrize_with_checks
from mechlens.toymodels import ToyCNN


@pytest.fixture(scope="module")
def model() -> SkipModel:
    return SkipModel()


def test_the_default_split_recomposes_the_module_and_stops_at_the_layer(model: SkipModel) -> None:
    assert model.split_by_hooks() and not ToyCNN.split_by_hooks()
    x = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model.torch_module()(x)
        for layer in ("stem", "block"):
            below, above = model.split(layer)
            z = below(x)
            assert tuple(z.shape[1:]) == model.layers()[layer]
            np.testing.assert_allclose(above(z).numpy(), full.numpy(), rtol=1e-5, atol=1e-6)
        # above is a function of the activations alone: a different batch size, no below call first
        below, above = model.split("block")
        z = below(x)
        np.testing.assert_allclose(above(z[2:4]).numpy(), full[2:4].numpy(), rtol=1e-5, atol=1e-6)
    # the block's output is after the stem: capturing it runs the stem, capturing the stem stops before the block
    seen: list[str] = []
    handle = model.torch_module().block.register_forward_hook(lambda *_: seen.append("block"))
    try:
        capture(model.torch_module(), model.layer_module("stem"), x)
    finally:
        handle.remove()
    assert seen == []


def test_a_layer_a_skip_connection_goes_around_is_refused_by_name(model: SkipModel) -> None:
    with pytest.raises(UsageError, match=r"layer 'block.inner' .* a skip connection .* goes around it"):
        model.split("block.inner")
    with pytest.raises(UsageError, match=r"no layer 'nope'"):
        model.layer_module("nope")
    with pytest.raises(UsageError, match=r"no submodule named 'nope' .* block\.inner"):
        find_module(model.torch_module(), "nope")


def test_patching_replaces_the_layer_output_and_refuses_a_module_run_twice(model: SkipModel) -> None:
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        zero = patched(model.torch_module(), model.layer_module("block.inner"), x, torch.zeros_like)
        # inner's output zeroed: the block is h + tanh(0) = h
        h = torch.relu(model.net.stem(x))
        expected = torch.nn.functional.softplus(model.net.readout(h.flatten(1))) * 5.0
    np.testing.assert_allclose(zero.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)

    class Twice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = torch.nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.relu(x)).flatten(1)

    net = Twice()
    with pytest.raises(UsageError, match="called 2 times in one forward"):
        patched(net, net.relu, x, lambda z: z)


def test_integrated_gradients_attributes_a_hooked_layer_completely() -> None:
    model = SplittableSkipModel()
    stim = noise_stimulus(model, n_times=8, seed=3)
    ds = get("attributor", "integrated-gradients")(tolerance=1e-5).attribute(model, stim, layer="block")
    dr = ds["response"] - ds["baseline_response"]
    assert float(abs(dr).max()) > 0.05  # the completeness below is not trivially true
    assert float(abs(ds["completeness_error"]).max()) < 1e-3 * float(np.ptp(ds["response"].values))
    np.testing.assert_allclose(ds["response"].values, model.predict(stim)["response"].values, rtol=1e-5)


def test_exact_integrated_gradients_refuses_a_hooked_above_with_the_alternative() -> None:
    model = SplittableSkipModel()
    with pytest.raises(MechlensError, match=r"exact-integrated-gradients cannot integrate .* 'integrated-gradients'"):
        get("attributor", "exact-integrated-gradients")().attribute(model, noise_stimulus(model, n_times=4), "stem")


@pytest.mark.parametrize("layer", ["stem", "block.inner"])
def test_a_lesion_of_a_hooked_layer_keeps_all_none_or_some(model: SkipModel, layer: str) -> None:
    stim = noise_stimulus(model, n_times=10, seed=4)
    full = model.predict(stim)["response"].values
    np.testing.assert_allclose(lesion_channels(model, layer, [0, 1, 2]).predict(stim)["response"].values, full)
    none = lesion_channels(model, layer, []).predict(stim)["response"].values
    one = lesion_channels(model, layer, [1]).predict(stim)["response"].values
    assert np.abs(one - full).max() > 1e-3 and np.abs(one - none).max() > 1e-3
    if layer == "stem":  # every path goes through the stem: clamping all of it gives the grey screen's response
        grey = model.predict(stim.assign(stimulus=stim["stimulus"] * 0))["response"].values
        np.testing.assert_allclose(none, np.broadcast_to(grey[:1], none.shape), rtol=1e-5, atol=1e-6)
    else:  # the skip path still carries the stimulus around the clamped layer
        assert np.ptp(none, axis=0).max() > 1e-3
    # the hooks are gone after each call: the intact model is untouched
    np.testing.assert_array_equal(model.predict(stim)["response"].values, full)


def test_a_hooked_lesion_equals_the_split_lesion_of_the_same_network() -> None:
    class Hooked(ToyCNN):
        """ToyCNN without its split: the same module, reached by a hook on its first convolution."""

        name = "hooked-toy-cnn"
        split = ToyCNN.__mro__[1].split  # Model.split, the hook-based default

        def layer_module(self, layer: str) -> torch.nn.Module:
            return self.below[0]

    fast, hooked = ToyCNN(), Hooked()
    assert hooked.split_by_hooks()
    stim = noise_stimulus(fast, n_times=10, seed=5)
    keep = np.zeros(fast.layers()["conv1"], bool)
    keep[1, 2:, :] = True
    a = Lesioned(fast, "conv1", keep).predict(stim)["response"].values
    b = Lesioned(hooked, "conv1", keep).predict(stim)["response"].values
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


@parametrize_with_checks([SplittableSkipModel, SignedSkipModel(channels=2)])
def test_the_kit_checks_a_hooked_model(check) -> None:
    check()


def test_the_kit_names_what_the_attributors_and_the_rates_need() -> None:
    with pytest.raises(AssertionError) as err:
        check_model(SkipModel())
    text = str(err.value)
    assert "check_model_layers_reachable: UsageError: layer 'block.inner'" in text
    assert "check_model_rates" not in text and "check_model_layers_attributable" in text
    with pytest.raises(AssertionError, match=r"negative rates .* sets signed = True"):
        check_model(UndeclaredSignedModel())
    assert float(check_model(SignedSkipModel())["response"].min()) < 0  # a signed model may go negative


def test_the_kit_catches_an_above_that_is_not_differentiable() -> None:
    class Rounded(ToyCNN):
        """Its above rounds the rates: gradients vanish, attributions would miss the response."""

        name = "rounded-toy"

        def split(self, layer: str) -> tuple[torch.nn.Module, torch.nn.Module]:
            below, above = super().split(layer)

            class Round(torch.nn.Module):
                def forward(self, r: torch.Tensor) -> torch.Tensor:
                    return torch.round(r * 2) / 2

            return below, torch.nn.Sequential(above, Round())

        def torch_module(self) -> torch.nn.Module:
            return torch.nn.Sequential(*self.split("conv1"))

    with pytest.raises(AssertionError, match=r"check_model_layers_attributable: .* misses above"):
        check_model(Rounded())


def test_list_verbose_shows_what_a_model_states() -> None:
    from mechlens.cli import _model_contract

    lines = _model_contract(SignedSkipModel)
    assert lines[0] == "grid: 8x8 px (y x x), 0.02 s frames, 4 frames of history"
    assert lines[1] == "layers (split by forward hooks): stem (3, 6, 6), block (3, 6, 6)"
    assert lines[2] == "cells: 2; outputs: signed"
    assert "its own split" in _model_contract(ToyCNN)[1]


def test_a_sequential_model_without_a_split_gets_its_slices_and_exact_ig() -> None:
    """A model whose module is an nn.Sequential declares no split: the default split is the two
    slices at the layer (exact, no hook), so exact integrated gradients can inspect ``above``."""

    class FlatSequential(ToyCNN):
        name = "flat-sequential-toy"
        split = Model.split  # the default, from hooks

        def __init__(self, **params: object) -> None:
            super().__init__(**params)
            self.flat = torch.nn.Sequential(*self.below, *self.above).eval()

        def torch_module(self) -> torch.nn.Module:
            return self.flat

        def layers(self) -> dict[str, tuple[int, ...]]:
            return {"0": next(iter(ToyCNN.layers(self).values()))}

    model = FlatSequential()
    below, above = model.split("0")
    assert isinstance(above, torch.nn.Sequential) and above[0] is model.flat[1]
    x = torch.randn(3, model.history, *model.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(above(below(x)), model.flat(x))
    stim = noise_stimulus(model, n_times=5, seed=0)
    ds = get("attributor", "exact-integrated-gradients")().attribute(model, stim, "0")
    span = float(ds["response"].max() - ds["response"].min())
    assert float(np.nanmax(np.abs(ds["completeness_error"].values))) <= 1e-4 * span + 1e-6
