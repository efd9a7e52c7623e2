"""The `mei` stimulus: the most exciting input of a cell or a hidden unit, by projected gradient ascent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from mechlens_stimuli.mei import DEFAULT_RMS, MostExcitingInput
from torch import nn

import mechlens
from mechlens.errors import ParameterError, UsageError
from mechlens.interfaces import Model
from mechlens.testing import CHECK_GRID, parametrize_with_checks


class Toy(Model):
    """conv (7 frames -> 4 channels, 5x5) -> ReLU -> linear -> softplus, on the conformance kit's grid."""

    name = "toy-mei-model"
    history = CHECK_GRID.history
    frame_period_s = CHECK_GRID.frame_period_s
    input_shape = CHECK_GRID.shape
    pixel_um = CHECK_GRID.pixel_um

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        g = torch.Generator().manual_seed(0)
        self.below = nn.Sequential(nn.Conv2d(self.history, 4, 5))
        self.above = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 8, 3), nn.Softplus())
        with torch.no_grad():
            for t in self.parameters_():
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
        self.module = nn.Sequential(self.below, self.above).eval()

    def parameters_(self) -> list[torch.Tensor]:
        return [*self.below.parameters(), *self.above.parameters()]

    @property
    def cells(self) -> list[str]:
        return ["gc00", "gc01", "gc02"]

    def layers(self) -> dict[str, tuple[int, ...]]:
        return {"conv": (4, 10, 8)}

    def torch_module(self) -> nn.Module:
        return self.module

    def split(self, layer: str) -> tuple[nn.Module, nn.Module]:
        self.check_layer(layer)
        return self.below, self.above


TOY = Toy()


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny windows: one thread is ~100x faster than two on a loaded 2-core machine (thread hand-offs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class BoundMei(MostExcitingInput):
    """The MEI bound to the toy model, as the pipeline binds it (the conformance kit has no model)."""

    model = TOY


def _window(ds: Any) -> np.ndarray:
    """The MEI window: ``history`` frames from time 0."""
    t = ds["time"].values
    start = int(np.argmin(np.abs(t)))
    return ds["stimulus"].values[start : start + TOY.history]


def _mei(seed: int = 0, **params: Any) -> Any:
    stim = MostExcitingInput(steps=40, **params)
    stim.model = TOY
    return stim.generate(seed)


@parametrize_with_checks([BoundMei(steps=10), BoundMei(steps=10, layer="conv", channel=2)])
def test_conforms(check: Any) -> None:
    check()


@pytest.mark.parametrize("target", [{"cell": "gc01"}, {"layer": "conv", "channel": 1, "unit_y": 3}])
def test_the_mei_excites_its_target_more_than_random_inputs_of_the_same_norm(target: dict[str, Any]) -> None:
    ds = _mei(**target)
    stim = MostExcitingInput(**target)
    stim.model = TOY
    _, module, index = stim.target(stim.parameters_on(None))
    window = _window(ds)
    norm = float(np.linalg.norm(window))
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((50, *window.shape))
    noise *= norm / np.linalg.norm(noise.reshape(50, -1), axis=1)[:, None, None, None]
    with torch.no_grad():
        best = float(module(torch.from_numpy(window[None]))[(0, *index)])
        random = module(torch.from_numpy(noise.astype(np.float32)))[(slice(None), *index)].numpy()
    assert best == pytest.approx(ds.attrs["mei_value"], rel=1e-4)
    assert best > random.max() and best > ds.attrs["mei_value_initial"]


def test_the_model_answers_the_mei_at_mei_response_time() -> None:
    ds = _mei(cell="gc02")
    response = TOY.predict(ds)["response"].sel(time=float(ds["mei_response_time"]), method="nearest")
    assert float(response.sel(cell="gc02")) == pytest.approx(ds.attrs["mei_value"], rel=1e-4)
    assert not ds["stimulus"].sel(time=slice(None, -1e-9)).values.any()  # grey before the window


def test_same_seed_same_movie_and_another_seed_another_start() -> None:
    a, b, c = _mei(3), _mei(3), _mei(4)
    np.testing.assert_array_equal(a["stimulus"].values, b["stimulus"].values)
    assert a.attrs["mei_value_initial"] != c.attrs["mei_value_initial"]


@pytest.mark.parametrize("norm", [None, 2.0])
def test_the_window_stays_in_the_norm_ball(norm: float | None) -> None:
    ds = _mei(norm=norm, lr=0.5)
    bound = DEFAULT_RMS * np.sqrt(TOY.history * 14 * 12) if norm is None else norm
    assert ds.attrs["mei_norm"] == pytest.approx(bound)
    assert np.linalg.norm(_window(ds)) <= bound * (1 + 1e-5)
    assert np.linalg.norm(ds["stimulus"].values) == pytest.approx(np.linalg.norm(_window(ds)))


def test_the_pipeline_hands_the_model_to_the_stimulus() -> None:
    ds = mechlens.run(TOY, "mei", "integrated-gradients", stimulus_params={"steps": 10, "post_s": 0.0})
    assert ds.attrs["stimulus"] == "mei" and "mei_value" in ds.attrs
    at = float(ds["mei_response_time"])
    assert np.isfinite(ds["attribution"].sel(time=at, method="nearest").values).all()


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"cell": "gc09"}, ParameterError, r"^cell: got 'gc09'; model 'toy-mei-model' has cells gc00, gc01, gc02"),
        ({"layer": "conv2"}, ParameterError, r"^layer: got 'conv2'; .* has layers conv"),
        ({"layer": "conv", "channel": 4}, ParameterError, r"^channel: got 4; layer 'conv' has 4 channels"),
        ({"layer": "conv", "unit_x": 8}, ParameterError, r"^unit_x: got 8; layer 'conv' is 8 units"),
        ({"channel": 1}, ParameterError, r"^layer: channel, unit_y and unit_x pick a hidden unit"),
    ],
)
def test_a_target_the_model_lacks_is_refused(params: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _mei(**params)


def test_without_a_model_it_says_how_to_give_one() -> None:
    with pytest.raises(UsageError, match=r"computed on a model and none was given.*stimulus\.model = model") as err:
        MostExcitingInput().generate(0)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    stim = MostExcitingInput()
    stim.model = TOY
    with pytest.raises(UsageError, match="asked for another grid"):
        stim.generate(0, CHECK_GRID.__class__((8, 8), 0.01, 3))
