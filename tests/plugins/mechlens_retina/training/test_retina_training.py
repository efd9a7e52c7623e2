"""Training the retina CNN: sample bookkeeping, the FFT first layer, a tiny fit, determinism, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from mechlens_retina.commands import split_overrides
from mechlens_retina.models.checkpoint import sha256_file
from mechlens_retina.models.cnn import RetinaCNN
from mechlens_retina.training import fit as training
from mechlens_retina.training import recordings as rdata
from mechlens_retina.training.fit import WindowBuffer, predict_frames, runs, sample_frames, train
from mechlens_retina.training.recordings import from_datasets, write_h5

from mechlens.cli import main
from mechlens.errors import ConfigError, ParameterError, UsageError
from mechlens.schema import grid_coords, time_coord

ARCH = dict(history=5, channels1=4, kernel1=5, channels2=4, kernel2=3, bn_momentum=0.1, device="cpu")
FAST = dict(epochs=4, batch_size=128, val_fraction=0.1, threads=1)


def ln_split(n: int, seed: int, size: int = 12, history: int = 5, n_rep: int = 0, offset: float = 0.0) -> xr.Dataset:
    """Responses of two linear-nonlinear cells (ON and OFF centre, biphasic in time) to white noise.

    The single-trial response is a Poisson count over 50 ms, in Hz; with ``n_rep`` the response is the
    mean of ``n_rep`` such trials, which are kept as ``repeats``.
    """
    rng = np.random.default_rng(seed)
    stim = (rng.standard_normal((n, size, size)) + offset).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    temporal = np.array([0.0, -0.3, 0.2, 1.0, 0.4])[-history:]  # oldest lag first
    rates = []
    for sign, cy in ((1.0, 4.0), (-1.0, 7.0)):
        space = sign * np.exp(-((yy - cy) ** 2 + (xx - 6.0) ** 2) / (2 * 1.5**2))
        drive = np.einsum("tyx,yx->t", stim - offset, space)
        lin = np.zeros(n)
        for k, w in enumerate(temporal):
            lin[history - 1 :] += w * drive[k : n - history + 1 + k]
        rates.append(10.0 * np.log1p(np.exp(lin - 1.0)))
    rate = np.stack(rates, axis=1)
    coords = {"time": time_coord(n, 0.01), "cell": ["gc00", "gc01"]}
    coords.update(grid_coords(size, size, 55.0))
    trials = rng.poisson(rate * 0.05, size=(max(n_rep, 1), *rate.shape)) / 0.05
    ds = xr.Dataset(
        {
            "stimulus": (("time", "y", "x"), stim),
            "response": (("time", "cell"), trials.mean(axis=0).astype(np.float32), {"units": "Hz"}),
        },
        coords=coords,
        attrs={"frame_period_s": 0.01},
    )
    if n_rep:
        ds["repeats"] = (("repeat", "time", "cell"), trials.astype(np.float32))
    return ds


@pytest.fixture(scope="module")
def recording() -> rdata.Recording:
    return from_datasets(ln_split(4000, 0, offset=3.0), ln_split(600, 1, n_rep=6, offset=3.0))


@pytest.fixture(scope="module")
def fitted(recording) -> tuple[RetinaCNN, dict]:
    return train(recording, FAST, ARCH, progress=False)


def test_sample_frames_respect_blocks_nskip_and_history():
    np.testing.assert_array_equal(sample_frames(20, 3, n_blocks=2, nskip=4), [*range(4, 10), *range(14, 20)])
    np.testing.assert_array_equal(sample_frames(20, 3, n_blocks=2), [*range(2, 10), *range(12, 20)])
    assert sample_frames(5, 10).size == 0
    assert runs(np.array([2, 3, 4, 5, 9, 10]), 3) == [(2, 5), (5, 6), (9, 11)]


@pytest.mark.parametrize(("history", "size", "kernel"), [(7, 20, 9), (40, 50, 15)])
def test_fft_first_layer_equals_conv2d_in_values_and_gradients(history, size, kernel):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(history, 3, kernel)
    frames = np.random.default_rng(0).standard_normal((history + 5, size, size)).astype(np.float32)
    outs, grads = {}, {}
    for mode in ("direct", "fft"):
        buf = WindowBuffer(conv, (size, size), frames.shape[0], mode, "cpu")
        assert buf.fill([frames]) == [0]
        idx = torch.tensor([0, 3, 5])
        conv.zero_grad()
        y = buf.first_layer(buf.gather(idx))
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        outs[mode] = y.detach()
        grads[mode] = (conv.weight.grad.clone(), conv.bias.grad.clone())
    explicit = conv(torch.from_numpy(np.stack([frames[i : i + history] for i in (0, 3, 5)])))
    torch.testing.assert_close(outs["direct"], explicit.detach())
    scale = outs["direct"].abs().max().item()
    torch.testing.assert_close(outs["fft"], outs["direct"], atol=1e-5 * scale, rtol=1e-4)
    for g_fft, g_dir in zip(grads["fft"], grads["direct"]):
        torch.testing.assert_close(g_fft, g_dir, atol=1e-5 * g_dir.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("mode", ["fft", "direct"])
def test_training_data_path_predicts_like_the_model(recording, mode):
    model = RetinaCNN(checkpoint="random", image_size=12, n_cells=2, seed=2, **ARCH)
    split = training._Split(recording.test, mean=3.0, std=2.0)
    frames = np.arange(4, 600)
    got = predict_frames(model, split, frames, mode, block_frames=150, batch=64)
    stim = recording.test.copy()
    stim["stimulus"] = (stim["stimulus"] - 3.0) / 2.0
    want = model.predict(stim)["response"].values
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_tiny_training_lowers_held_out_loss_and_beats_the_mean_rate(fitted):
    model, metrics = fitted
    history = metrics["history"]
    assert metrics["val_loss"] < history[0]["val_loss"]
    assert metrics["val_loss"] < metrics["val_loss_mean_rate"] - 1.0
    assert metrics["evaluated_on"] == "test"
    ev = metrics["evaluation"]
    assert ev["cc_mean"] > 0.6 and ev["fev_mean"] > 0.2
    assert ev["test_loss"] < metrics["val_loss_mean_rate"]
    assert 0 < ev["reliability_mean"] <= 1 and ev["cc_norm_mean"] > ev["cc_mean"]
    # z-scoring with the training statistics (the movie has mean 3)
    assert abs(model.metadata["stimulus_mean"] - 3.0) < 0.05 and abs(model.metadata["stimulus_std"] - 1.0) < 0.05
    assert model.metadata["metrics"] is metrics and model.cells == ["gc00", "gc01"]
    assert not model.torch_module().training


def test_training_is_deterministic_under_a_seed(recording, fitted):
    quick = {**FAST, "epochs": 1}
    a, _ = train(recording, quick, ARCH, progress=False)
    b, _ = train(recording, quick, ARCH, progress=False)
    c, _ = train(recording, {**quick, "seed": 1}, ARCH, progress=False)
    sa, sb, sc = (m.torch_module().state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    # the caller's data is untouched (it is z-scored in copies)
    assert abs(float(recording.train["stimulus"].mean()) - 3.0) < 0.05


def test_max_steps_and_schedules(recording):
    _, m = train(recording, {**FAST, "max_steps": 5, "schedule": "multistep", "milestones": [1]}, ARCH, progress=False)
    assert m["steps"] == 5 and m["epochs_run"] == 1


def _states_equal(a: RetinaCNN, b: RetinaCNN) -> bool:
    sa, sb = a.torch_module().state_dict(), b.torch_module().state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resumed_training_ends_identical_to_an_uninterrupted_run(recording, tmp_path):
    # patience and epochs large enough that neither stops the runs early; a plateau decay happens
    params = {**FAST, "epochs": 3, "patience": 10, "lr_patience": 0, "block_frames": 1000, "buffer_blocks": 2}
    whole, m_whole = train(recording, params, ARCH, progress=False, workdir=tmp_path / "whole")
    first, m_first = train(recording, {**params, "epochs": 1}, ARCH, progress=False, workdir=tmp_path / "split")
    assert m_first["epochs_run"] == 1 and not m_first["resumed"]
    # the state file is plain tensors and JSON: it loads with weights_only=True
    state = torch.load(tmp_path / "split" / training.STATE_FILE, weights_only=True)
    assert state["epoch"] == 1 and state["stopped"] == "epochs" and not state["partial_epoch"]
    assert not list((tmp_path / "split").glob("*.tmp"))  # written atomically, nothing left behind
    resumed, m_resumed = train(recording, params, ARCH, progress=False, workdir=tmp_path / "split", resume=True)
    assert m_resumed["resumed"] and m_resumed["epochs_run"] == 3 and m_resumed["steps"] == m_whole["steps"]
    assert _states_equal(resumed, whole)
    assert [e["val_loss"] for e in m_resumed["history"]] == [e["val_loss"] for e in m_whole["history"]]
    assert m_resumed["best_epoch"] == m_whole["best_epoch"]
    assert not _states_equal(first, whole)
    # resuming a finished run does no more epochs and gives the same model
    again, m_again = train(recording, params, ARCH, progress=False, workdir=tmp_path / "split", resume=True)
    assert m_again["epochs_run"] == 3 and _states_equal(again, whole)


def test_resume_refuses_a_state_from_other_parameters(recording, tmp_path):
    quick = {**FAST, "epochs": 1, "max_steps": 2}
    train(recording, quick, ARCH, progress=False, workdir=tmp_path)
    with pytest.raises(UsageError, match=r"cannot resume .*train\.lr"):
        train(recording, {**quick, "lr": 0.5}, ARCH, progress=False, workdir=tmp_path, resume=True)
    # the stopping patience may change: a run that stopped on a plateau can be given longer
    _, m = train(recording, {**quick, "patience": 9}, ARCH, progress=False, workdir=tmp_path, resume=True)
    assert m["resumed"]
    with pytest.raises(UsageError, match="needs workdir"):
        train(recording, quick, ARCH, progress=False, resume=True)
    (tmp_path / training.STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(UsageError, match="could not be read"):
        train(recording, quick, ARCH, progress=False, workdir=tmp_path, resume=True)
    # no state yet: resume starts from the beginning
    _, m = train(recording, quick, ARCH, progress=False, workdir=tmp_path / "empty", resume=True)
    assert not m["resumed"] and m["steps"] == 2


def test_init_from_fine_tunes_a_trained_checkpoint(recording, fitted, tmp_path):
    model, m = fitted
    path = tmp_path / "start.safetensors"
    model.save(path)
    # a fine-tune starts where the checkpoint ended: its first validation loss is near the trained
    # model's best, far below a random start's
    _, tuned = train(recording, {**FAST, "epochs": 1, "lr": 1e-4, "init_from": str(path)}, ARCH, progress=False)
    _, fresh = train(recording, {**FAST, "epochs": 1}, ARCH, progress=False)
    assert tuned["history"][0]["val_loss"] < fresh["history"][0]["val_loss"]
    assert abs(tuned["history"][0]["val_loss"] - m["val_loss"]) < 0.1 * abs(m["val_loss"])
    # zero steps of training leave the weights and the input normalisation as they were
    same, _ = train(recording, {**FAST, "epochs": 1, "max_steps": 1, "lr": 1e-12, "init_from": str(path)}, ARCH,
                    progress=False)  # fmt: skip
    assert same.metadata["stimulus_mean"] == model.metadata["stimulus_mean"]
    w0, w1 = model.torch_module().conv1.weight, same.torch_module().conv1.weight
    assert torch.allclose(w0, w1, atol=1e-8)
    # and the running statistics carry over: one train-mode step moves them by the momentum (0.1 here)
    # times the batch's deviation, where priming them from one batch, as a fresh start does, replaces them
    v0, v1 = model.torch_module().bn1.running_var, same.torch_module().bn1.running_var
    assert float(((v1 - v0).abs() / v0).median()) < 0.03  # primed from one batch: about 0.09
    # another architecture is refused, naming what differs
    with pytest.raises(ParameterError, match=r"init_from.*channels2 4 \(training: 3\)"):
        train(recording, {**FAST, "epochs": 1, "init_from": str(path)}, {**ARCH, "channels2": 3}, progress=False)


def test_weighted_poisson_multiplies_each_cells_term():
    rate = torch.tensor([[2.0, 30.0], [5.0, 10.0]])
    target = torch.tensor([[1.0, 40.0], [6.0, 0.0]])
    plain = torch.nn.PoissonNLLLoss(log_input=False, full=False)(rate, target)
    assert torch.allclose(training._weighted_poisson(rate, target, torch.ones(2)), plain)
    terms = rate - target * torch.log(rate + 1e-8)
    assert torch.allclose(training._weighted_poisson(rate, target, torch.tensor([2.0, 0.0])), terms[:, 0].mean())


def test_cell_weights_rate_evens_out_cells_of_different_rates(recording):
    # gc01 fires 20x faster: unweighted, its Poisson terms dominate the loss
    train_ds = recording.train.copy()
    train_ds["response"] = train_ds["response"] * xr.DataArray([1.0, 20.0], dims="cell")
    rec = from_datasets(train_ds)
    quick = {**FAST, "epochs": 1, "max_steps": 2}
    _, plain = train(rec, quick, ARCH, progress=False)
    _, even = train(rec, {**quick, "cell_weights": "rate"}, ARCH, progress=False)
    y = train_ds["response"].transpose("time", "cell").values.astype(np.float64)
    h, n = ARCH["history"], y.shape[0]
    frames = sample_frames(n, h, 1, 0)
    val_start = n - round(FAST["val_fraction"] * n)
    train_frames, val_frames = frames[frames < val_start], frames[frames >= val_start + h - 1]
    mean_rate = y[train_frames].mean(axis=0)
    terms = (mean_rate - y[val_frames] * np.log(mean_rate + 1e-8)).mean(axis=0)  # per cell
    weights = (1 / mean_rate) / (1 / mean_rate).mean()
    assert plain["val_loss_mean_rate"] == pytest.approx(terms.mean(), rel=1e-4)
    assert even["val_loss_mean_rate"] == pytest.approx((terms * weights).mean(), rel=1e-4)
    assert weights[0] > 10 * weights[1]
    with pytest.raises(ParameterError, match="cell_weights"):
        train(rec, {**quick, "cell_weights": "spikes"}, ARCH, progress=False)


def test_freeze_bn_epoch_holds_the_running_statistics_while_the_rest_learns(recording, fitted, tmp_path):
    model, _ = fitted
    path = tmp_path / "start.safetensors"
    model.save(path)
    quick = {**FAST, "epochs": 2, "lr": 1e-3, "init_from": str(path)}
    frozen, _ = train(recording, {**quick, "freeze_bn_epoch": 1}, ARCH, progress=False)
    moving, _ = train(recording, quick, ARCH, progress=False)
    s0, sf, sm = (m.torch_module().state_dict() for m in (model, frozen, moving))
    for bn in ("bn1", "bn2", "bn3"):
        for stat in ("running_mean", "running_var"):
            assert torch.equal(sf[f"{bn}.{stat}"], s0[f"{bn}.{stat}"])
    assert not torch.equal(sm["bn1.running_var"], s0["bn1.running_var"])  # batch statistics: they move
    assert not torch.equal(sf["conv1.weight"], s0["conv1.weight"])  # the weights still learn
    assert not torch.equal(sf["bn1.weight"], s0["bn1.weight"])  # and so do the norms' scales
    # a fresh start frozen from epoch 1 holds the statistics of its first batch, not the defaults (0, 1)
    a, _ = train(recording, {**FAST, "epochs": 1, "freeze_bn_epoch": 1}, ARCH, progress=False)
    b, _ = train(recording, {**FAST, "epochs": 2, "freeze_bn_epoch": 1}, ARCH, progress=False)
    va, vb = a.torch_module().bn1.running_var, b.torch_module().bn1.running_var
    assert torch.equal(va, vb) and float((va - 1.0).abs().max()) > 0.1


def test_wall_clock_budget_stops_after_the_step_past_it_and_keeps_the_best(recording, tmp_path, caplog):
    params = {**FAST, "epochs": 5, "patience": 10, "max_seconds": 1e-6}
    with caplog.at_level("INFO", logger="mechlens.retina.training"):
        _, m = train(recording, params, ARCH, progress=False, workdir=tmp_path)
    assert m["stopped"] == "max_seconds" and m["steps"] == 1 and m["epochs_run"] == 1 and m["best_epoch"] == 1
    assert torch.load(tmp_path / training.STATE_FILE, weights_only=True)["partial_epoch"]
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/5"))
    assert "train loss" in line and "validation loss" in line and "lr" in line and "s elapsed" in line
    assert "stopping (max_seconds)" in line
    # without a budget the same call runs on
    _, m2 = train(recording, {**params, "max_seconds": 0, "epochs": 2}, ARCH, progress=False)
    assert m2["stopped"] == "epochs" and m2["epochs_run"] == 2


def test_training_streams_an_hdf5_file_in_blocks(tmp_path, monkeypatch):
    train_ds, test_ds = ln_split(3000, 3), ln_split(400, 4, n_rep=4)
    path = write_h5(tmp_path / "naturalscene.h5", train_ds, test_ds)
    reads: list[int] = []
    original = rdata._H5Array._read

    def spy(self, key):
        if len(self.shape) == 3:
            reads.append(len(range(*key[0].indices(self.shape[0]))))
        return original(self, key)

    monkeypatch.setattr(rdata._H5Array, "_read", spy)
    params = {**FAST, "epochs": 1, "block_frames": 500, "buffer_blocks": 2}
    model, _ = train(path, params, ARCH, cells=[1], progress=False)
    assert reads and max(reads) <= 500 + ARCH["history"] - 1
    assert model.cells == ["gc01"] and model.metadata["training"]["cell_index"] == [1]
    assert model.metadata["training"]["data_sha256"] == sha256_file(path)


def test_train_command_writes_a_loadable_checkpoint(tmp_path, capsys):
    path = write_h5(tmp_path / "naturalscene.h5", ln_split(2500, 5), ln_split(300, 6, n_rep=3))
    out = tmp_path / "model.safetensors"
    args = ["train", "--data", str(tmp_path), "--cells", "0", "1", "-o", str(out)]
    for key, value in {**FAST, "epochs": 2}.items():
        args += ["--set", f"train.{key}={value}"]
    for key, value in ARCH.items():
        args += ["--set", f"model.{key}={json.dumps(value)}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "evaluated on the test set" in printed and "gc01" in printed and str(out) in printed
    model = RetinaCNN.load(out)
    meta = model.metadata  # read from the one file, its header
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("model")) == ["model.safetensors"]
    assert model.cells == ["gc00", "gc01"] and model.history == 5 and model.input_shape == (12, 12)
    assert meta["training"]["data"] == str(path) and meta["metrics"]["evaluation"]["cc"][0] is not None
    assert meta["training"]["parameters"]["epochs"] == 2


def test_set_overrides_are_routed_and_checked():
    # the one --set grammar of every command: stage.param=value
    train_p, model_p = split_overrides(["train.lr=0.005", "model.history=30", "model.channels1=4", "train.nskip=100"])
    assert train_p == {"lr": 0.005, "nskip": 100} and model_p == {"history": 30, "channels1": 4}
    # the bare form of earlier releases is still read, with a deprecation naming the prefixed form
    with pytest.warns(DeprecationWarning, match=r"--set train\.lr=0\.005"):
        assert split_overrides(["lr=0.005"]) == ({"lr": 0.005}, {})
    with pytest.raises(ParameterError, match="did you mean lr"):
        split_overrides(["train.lrr=0.1"])
    with pytest.raises(ParameterError, match="set from the data"):
        split_overrides(["model.n_cells=3"])
    with pytest.raises(ConfigError, match=r"expected stage\.param=value"):
        split_overrides(["lr"])
    with pytest.raises(ConfigError, match="unknown stage 'trian'; stages: train, model; did you mean train"):
        split_overrides(["trian.lr=1"])


def test_bad_inputs_are_explained(recording):
    with pytest.raises(ParameterError, match=r"model\.n_cells"):
        train(recording, FAST, {**ARCH, "n_cells": 3})
    with pytest.raises(ParameterError, match=r"train\.lr"):
        train(recording, {"lr": -1.0}, ARCH)
    with pytest.raises(UsageError, match="too few samples"):
        train(recording, {**FAST, "nskip": 5000}, ARCH)
    # a stop no later than the first plateau decay would never try the lower rate
    with pytest.raises(ParameterError, match=r"train\.patience.*never tried; set patience >= 3"):
        train(recording, {**FAST, "lr_patience": 1, "patience": 2}, ARCH)
    # without a decay there is nothing to wait for
    training.TrainParameters(**{**FAST, "lr_patience": 1, "patience": 2, "schedule": "none"})
    with pytest.raises(UsageError, match=r"\.safetensors file name, e\.g\. model\.safetensors"):
        training.save_path(Path("model.bin"))
    with pytest.raises(UsageError, match=r"\.pt \+ \.json checkpoints are still read, no longer written"):
        training.save_path(Path("model.pt"))


def test_spatial_spread_is_the_mean_squared_rms_distance_from_the_kernel_centre():
    w = torch.zeros(2, 3, 5, 5)
    w[0, 1, 2, 2] = 4.0  # all energy at the centre
    w[1, 0, 2, 3] = w[1, 2, 1, 2] = 1.0  # one pixel from the centre, twice
    assert float(training.spatial_spread(w)) == pytest.approx((0.0 + 1.0) / 2)
    w[1, 1, 0, 0] = 1.0  # a third unit of energy at distance^2 8: channel 1 -> (1 + 1 + 8) / 3
    assert float(training.spatial_spread(w)) == pytest.approx((0.0 + 10.0 / 3) / 2)
    # scale-free: a batch norm follows conv1, so shrinking a kernel must not lower the penalty
    assert float(training.spatial_spread(3.0 * w)) == pytest.approx(float(training.spatial_spread(w)))
    # and its gradient moves energy towards the centre: one descent step lowers it
    v = torch.randn(4, 3, 7, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    before = training.spatial_spread(v)
    before.backward()
    with torch.no_grad():
        after = training.spatial_spread(v - 0.05 * v.grad)
    assert float(after) < float(before.detach())


def test_spread_penalty_pulls_the_first_layer_to_the_kernel_centre(recording, fitted):
    free, _ = fitted
    pulled, _ = train(recording, {**FAST, "spread": 5.0}, ARCH, progress=False)
    s_free, s_pulled = (float(training.spatial_spread(m.torch_module().conv1.weight.detach())) for m in (free, pulled))
    assert s_pulled < 0.5 * s_free, (s_pulled, s_free)


def test_spread_penalty_refuses_a_fixed_first_layer():
    rec = from_datasets(ln_split(700, 0, size=20, history=40), ln_split(100, 1, size=20, history=40, n_rep=2))
    arch = {**ARCH, "history": 40, "channels1": 8, "kernel1": 15, "first_layer": "synthetic-retina"}
    with pytest.raises(ParameterError, match="conv1 is fixed"):
        train(rec, {**FAST, "epochs": 1, "spread": 1.0}, arch, progress=False)
