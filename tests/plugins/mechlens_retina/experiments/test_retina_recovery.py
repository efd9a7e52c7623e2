"""Mechanism-recovery scoring: the score recovers a planted mechanism, its controls score low, the
kernel matching is order- and sign-invariant and can say "no match", and test A's first layer stays
the circuit's through training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from mechlens_retina.experiments import matching as M
from mechlens_retina.experiments import recovery as R
from mechlens_retina.models.cnn import RetinaCNN
from mechlens_retina.models.synthetic import SyntheticRetina
from mechlens_retina.training.fit import train
from mechlens_retina.training.recordings import from_datasets

from mechlens import registry
from mechlens.errors import ParameterError
from mechlens.schema import grid_coords, time_coord

GROUPS = np.array([0, 1, 2, 3, 0, 1, 2, 3])  # the circuit's layout: direct channels, then delayed copies


def _bump(t: np.ndarray, at: float, width: float) -> np.ndarray:
    return np.exp(-((t - at) ** 2) / (2 * width**2))


def planted(seed: int = 0) -> tuple[xr.Dataset, xr.DataArray]:
    """A planted circuit attribution (condition, time, cell, unit_channel) of 8 channels and its CNN copy.

    Two excitatory types and two inhibitory ones with their own timing, scaled differently per
    condition and cell; cell gc03 does not respond (flat). The 'CNN' is the truth with the channels
    of each type mixed differently (same type sums) plus 5 % noise: a recovered mechanism.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(-0.1, 0.5, 0.01)
    n_cond, cells = 3, ["gc00", "gc01", "gc02", "gc03"]
    shapes = [
        _bump(t, 0.08, 0.02),
        -0.7 * _bump(t, 0.15, 0.03),
        0.5 * _bump(t, 0.25, 0.04),
        -0.4 * _bump(t, 0.35, 0.02),
    ]
    truth = np.zeros((n_cond, t.size, len(cells), 8))
    for c in range(n_cond):
        for i in range(3):  # gc03 stays flat
            for k, s in enumerate(shapes):
                w = 10.0 * (1 + c) * rng.uniform(0.5, 1.5)
                truth[c, :, i, k] = 0.6 * w * s
                truth[c, :, i, 4 + k] = 0.4 * w * s
    coords = {"condition": np.arange(n_cond), "time": t, "cell": cells, "unit_channel": np.arange(8)}
    dims = ("condition", "time", "cell", "unit_channel")
    attr = xr.DataArray(truth, dims=dims, coords=coords)
    base = 5.0
    ds = xr.Dataset(
        {
            "attribution": attr,
            "response": base + attr.sum("unit_channel"),
            "baseline_response": xr.full_like(attr.isel(unit_channel=0, drop=True), base),
        }
    )
    mix = truth.copy()
    mix[..., :4], mix[..., 4:] = 0.2 * truth[..., :4] + truth[..., 4:], 0.8 * truth[..., :4]  # same type sums
    mix += 0.05 * np.abs(truth).max() * rng.standard_normal(mix.shape)
    return ds, xr.DataArray(mix, dims=dims, coords=coords)


def test_a_planted_mechanism_is_recovered_and_every_control_scores_low():
    truth_ds, cnn = planted()
    cells = R.responding_cells(truth_ds)
    assert cells == ["gc00", "gc01", "gc02"]  # the flat cell is not scored
    n_types = 4
    truth_pooled = R.pooled_attribution(truth_ds["attribution"], M.TypeMatch(GROUPS, np.zeros(0)), n_types)
    real = R.recovery_score(cnn, truth_ds["attribution"], M.identity_match(GROUPS), GROUPS, cells)
    assert list(real["cell"].values) == cells
    assert float(real.median()) > 0.95

    rng = np.random.default_rng(1)
    random_cnn = xr.DataArray(rng.standard_normal(cnn.shape), dims=cnn.dims, coords=cnn.coords)
    random_score = R.recovery_score(random_cnn, truth_ds["attribution"], M.identity_match(GROUPS), GROUPS, cells)
    trivial = [
        float(R.score_pooled(R.trivial_attribution(truth_ds, n_types, k), truth_pooled, cells).median())
        for k in range(n_types)
    ]
    shuffled = [
        float(R.score_pooled(R.shuffled_types(truth_pooled, p), truth_pooled, cells).median())
        for p in R.derangements(n_types)
    ]
    # another circuit: the same time courses carried by other types (ON and OFF swapped)
    other = cnn.isel(unit_channel=[2, 3, 0, 1, 6, 7, 4, 5]).assign_coords(unit_channel=np.arange(8))
    other_score = R.recovery_score(other, truth_ds["attribution"], M.identity_match(GROUPS), GROUPS, cells)
    controls = {
        "random": float(random_score.median()),
        "trivial": float(np.mean(trivial)),
        "shuffled": float(np.mean(shuffled)),
        "other circuit": float(other_score.median()),
    }
    assert len(R.derangements(n_types)) == 9
    for name, value in controls.items():
        assert value <= 0.3, name
        assert float(real.median()) - value >= 0.4, name
    # the trivial attribution is complete: its types sum to the response change
    triv = R.trivial_attribution(truth_ds, n_types, 2)
    np.testing.assert_allclose(
        triv.sum("unit_channel"), truth_ds["response"] - truth_ds["baseline_response"], rtol=1e-12
    )


def test_the_mechanism_score_recovers_the_planted_mechanism_and_keeps_every_control_low():
    """The same planted case and controls, read with the mechanism score (types 0 and 1 as the
    mechanism): the copy stays high, every control low and at least 0.4 below it."""
    truth_ds, cnn = planted()
    cells = R.responding_cells(truth_ds)
    n_types, mech = 4, [0, 1]
    ident = M.TypeMatch(GROUPS, np.zeros(0))
    truth_pooled = R.pooled_attribution(truth_ds["attribution"], ident, n_types)

    def score(pooled: xr.DataArray) -> float:
        return float(R.mechanism_score(pooled, truth_pooled, mech, cells).median())

    real = score(R.pooled_attribution(cnn, ident, n_types))
    rng = np.random.default_rng(1)
    random_cnn = xr.DataArray(rng.standard_normal(cnn.shape), dims=cnn.dims, coords=cnn.coords)
    other = cnn.isel(unit_channel=[2, 3, 0, 1, 6, 7, 4, 5]).assign_coords(unit_channel=np.arange(8))
    controls = {
        "random": score(R.pooled_attribution(random_cnn, ident, n_types)),
        "trivial": float(np.mean([score(R.trivial_attribution(truth_ds, n_types, k)) for k in range(n_types)])),
        "shuffled": float(np.mean([score(R.shuffled_types(truth_pooled, p)) for p in R.derangements(n_types)])),
        "other circuit": score(R.pooled_attribution(other, ident, n_types)),
    }
    assert real > 0.9
    for name, value in controls.items():
        assert value <= 0.3, name
        assert real - value >= 0.4, name


def test_the_type_split_rejects_a_model_with_the_response_but_not_the_types():
    """A model that reproduces the response but spreads it over the types as the wrong circuit would
    (here: every type carries the same share plus 5 % noise) scores high on the raw pooled
    attribution, whose variance is mostly the shared time course, and about 0 on the type split."""
    truth_ds, _ = planted()
    cells = R.responding_cells(truth_ds)
    change = truth_ds["response"] - truth_ds["baseline_response"]
    rng = np.random.default_rng(2)
    same = xr.concat([change / 8] * 8, dim="unit_channel").transpose(*truth_ds["attribution"].dims)
    same = same + 0.05 * float(np.abs(change).max()) / 8 * rng.standard_normal(same.shape)
    same = same.assign_coords(unit_channel=np.arange(8))
    args = (same, truth_ds["attribution"], M.identity_match(GROUPS), GROUPS, cells)
    assert float(R.recovery_score(*args, split=False).median()) > 0.4
    assert abs(float(R.recovery_score(*args).median())) < 0.3
    split = R.type_split(R.pooled_attribution(truth_ds["attribution"], M.TypeMatch(GROUPS, np.zeros(0)), 4))
    np.testing.assert_allclose(split.sum("unit_channel"), 0.0, atol=1e-9)


def test_the_mechanism_score_sees_a_small_type_the_type_split_misses():
    """A model without the smallest type (type 3, 0.4 of type 0's size) keeps a high type split, led
    by the larger types it shares with the truth; the mechanism score, with type 3 as the mechanism,
    drops to 0 for it and stays high for the recovered copy (5 % noise). It is never above the type split."""
    truth_ds, cnn = planted()
    cells = R.responding_cells(truth_ds)
    ident = M.TypeMatch(GROUPS, np.zeros(0))
    truth_pooled = R.pooled_attribution(truth_ds["attribution"], ident, 4)
    copy = R.pooled_attribution(cnn, ident, 4)
    without = copy.where(copy["unit_channel"] != 3, 0.0)
    split_without = float(R.score_pooled(without, truth_pooled, cells).median())
    mech_without = float(R.mechanism_score(without, truth_pooled, [3], cells).median())
    mech_copy = R.mechanism_score(copy, truth_pooled, [3], cells)
    assert split_without > 0.6
    assert mech_without <= 0.0 + 1e-12
    assert float(mech_copy.median()) > 0.75  # the copy's 5 % noise is relative to the largest type
    assert float(mech_copy.median()) - mech_without >= 0.4
    assert np.all(mech_copy.values <= R.score_pooled(copy, truth_pooled, cells).values + 1e-12)
    with pytest.raises(ParameterError, match="mechanism"):
        R.mechanism_score(copy, truth_pooled, [4], cells)
    with pytest.raises(ParameterError, match="mechanism"):
        R.mechanism_score(copy, truth_pooled, [], cells)


def test_unmatched_channels_score_zero_not_nan():
    truth_ds, cnn = planted()
    none = M.TypeMatch(np.full(8, -1), np.zeros((8, 8)), np.full(8, -1))
    score = R.recovery_score(cnn, truth_ds["attribution"], none, GROUPS, ["gc00"])
    assert float(score.sel(cell="gc00")) == 0.0


def test_the_synthetic_retina_recovers_itself_with_its_own_filters():
    truth = SyntheticRetina()
    groups, _ = M.type_groups(truth)
    w = truth.conv.weight.detach().numpy()
    match = M.match_kernels(w, w, groups)
    np.testing.assert_array_equal(match.channel, np.arange(8))
    stim = registry.get("stimulus", "flash")(post_s=0.2).generate(0)
    attr = registry.get("attributor", "integrated-gradients")(n_steps=8).attribute(truth, stim, "bipolar", ["gc05"])
    score = R.recovery_score(attr["attribution"], attr["attribution"], match, groups)
    assert float(score.sel(cell="gc05")) > 0.999


def _recording(n: int, seed: int, size: int = 20) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    stim = rng.standard_normal((n, size, size)).astype(np.float32)
    rate = 5.0 + np.abs(np.convolve(stim[:, size // 2, size // 2], np.ones(5) / 5, mode="same"))[:, None] * [1.0, 2.0]
    coords = {"time": time_coord(n, 0.01), "cell": ["gc00", "gc01"], **grid_coords(size, size, 55.0)}
    return xr.Dataset(
        {"stimulus": (("time", "y", "x"), stim), "response": (("time", "cell"), rate.astype(np.float32))},
        coords=coords,
        attrs={"frame_period_s": 0.01},
    )


@pytest.mark.parametrize("mode", ["fft", "direct"])
def test_a_fixed_first_layer_stays_the_circuits_through_training(mode):
    circuit = SyntheticRetina().conv.weight.detach()
    rec = from_datasets(_recording(400, 0), _recording(120, 1))
    model, metrics = train(
        rec,
        {"epochs": 1, "batch_size": 64, "max_steps": 2, "val_fraction": 0.2, "threads": 1, "conv1": mode},
        {"first_layer": "synthetic-retina", "channels2": 2, "kernel2": 3, "device": "cpu"},
        progress=False,
    )
    assert metrics["steps"] == 2
    conv1 = model.module.conv1
    assert torch.equal(conv1.weight, circuit) and torch.equal(conv1.bias, torch.zeros(8))
    assert not conv1.weight.requires_grad
    assert not torch.equal(model.module.conv2.weight, RetinaCNN(**{**_arch(), "seed": 0}).module.conv2.weight)


def _arch() -> dict:
    return dict(checkpoint="random", image_size=20, channels2=2, kernel2=3, n_cells=2, device="cpu")


def test_the_fixed_first_layer_survives_saving_and_is_refused_for_another_shape(tmp_path):
    model = RetinaCNN(**_arch(), first_layer="synthetic-retina")
    model.save(tmp_path / "m.safetensors")
    back = RetinaCNN(checkpoint=str(tmp_path / "m.safetensors"), device="cpu")
    assert back.params.first_layer == "synthetic-retina"
    assert not back.module.conv1.weight.requires_grad
    with pytest.raises(ParameterError, match="first_layer"):
        RetinaCNN(**{**_arch(), "channels1": 4}, first_layer="synthetic-retina")
