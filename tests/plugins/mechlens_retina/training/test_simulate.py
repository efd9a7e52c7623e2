"""``mechlens simulate``: a tiny run writes a valid file in the published HDF5 layout."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from mechlens_retina.models.synthetic import SyntheticRetina
from mechlens_retina.training.simulate import SimulateCommand, model_rates, simulate

from mechlens import registry
from mechlens.errors import UsageError
from mechlens.toymodels import ToyNoise


@pytest.fixture(scope="module")
def model() -> SyntheticRetina:
    return SyntheticRetina()


@pytest.fixture(scope="module")
def written(model: SyntheticRetina, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "data.h5"
    noise = registry.get("stimulus", "white-noise")
    # 1.2 s of training movie in 0.5 s chunks (so chunk edges are crossed), 0.6 s of test movie
    simulate(
        model,
        noise,
        path,
        minutes=0.02,
        test_minutes=0.01,
        repeats=3,
        seed=4,
        poisson=True,
        chunk_s=0.5,
        stimulus_params={"checker_px": 5},
    )
    return path


def test_layout_shapes_and_units(written: Path, model: SyntheticRetina) -> None:
    with h5py.File(written) as f:
        assert f["train/stimulus"].shape == (120, 50, 50) and f["train/stimulus"].dtype == np.float32
        assert f["train/response/firing_rate_10ms"].shape == (8, 120)
        assert f["train/response/binned"].shape == (8, 120)
        np.testing.assert_allclose(f["train/time"][:], np.arange(120) * 0.01, atol=1e-9)
        assert f["test/stimulus"].shape == (60, 50, 50)
        assert f["test/response/firing_rate_10ms"].shape == (8, 60)
        assert sorted(f["test/repeats"]) == [f"cell{i:02d}" for i in range(8)]
        assert f["test/repeats/cell05"].shape == (3, 60)
        assert f["train/response/firing_rate_10ms"].attrs["units"] == "Hz"
        assert json.loads(f.attrs["cells"]) == model.cells
        assert json.loads(f.attrs["cell_kind"]) == model.cell_kind
        assert f.attrs["model"] == "synthetic-retina" and f.attrs["stimulus"] == "white-noise"
        assert f.attrs["poisson"] == 1 and f.attrs["frame_period_s"] == 0.01
        # the train and test movies differ
        assert not np.allclose(f["train/stimulus"][:60], f["test/stimulus"][:])


def test_rates_are_the_model_on_one_continuous_movie(written: Path, model: SyntheticRetina) -> None:
    """Chunking changes nothing: the stored rates equal the model run on the whole movie at once."""
    noise = registry.get("stimulus", "white-noise")
    with h5py.File(written) as f:
        stored = f["train/response/model_rate"][:]
        movie = f["train/stimulus"][:]
        counts = f["train/response/binned"][:]
        fr = f["train/response/firing_rate_10ms"][:]
    seed = int(np.random.SeedSequence([4, 0]).generate_state(1)[0])
    whole = noise(duration=1.2, pre_s=0.39, checker_px=5).generate(seed)["stimulus"].values
    np.testing.assert_array_equal(whole[39:], movie)
    np.testing.assert_allclose(stored, model_rates(model, whole).T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fr, counts / 0.01)
    assert counts.sum() > 0 and np.all(counts >= 0)


def test_repeats_are_poisson_trials_around_the_rate(written: Path) -> None:
    with h5py.File(written) as f:
        reps = np.stack([f[f"test/repeats/cell{i:02d}"][:] for i in range(8)])  # (cell, repeat, time)
        rate = f["test/response/model_rate"][:]
        mean = f["test/response/firing_rate_10ms"][:]
    np.testing.assert_allclose(mean, reps.mean(axis=1), rtol=1e-6)
    counts = reps * 0.01
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)  # whole spikes per bin
    assert not np.array_equal(reps[:, 0], reps[:, 1])
    # over all bins the spike count matches the rate's expectation (Poisson: sd = sqrt(mean))
    expected = rate.sum() * 0.01 * 3
    assert abs(counts.sum() - expected) < 5 * np.sqrt(expected)


def test_noiseless_and_reproducible(model: SyntheticRetina, tmp_path: Path) -> None:
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for path in (a, b):
        simulate(
            model,
            ToyNoise,
            path,
            minutes=0.01,
            test_minutes=0.0,
            seed=1,
            chunk_s=0.3,
            stimulus_params={"size": 50},
            progress=False,
        )
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert "test" not in fa and "binned" not in fa["train/response"]
        np.testing.assert_array_equal(
            fa["train/response/firing_rate_10ms"][:], fb["train/response/firing_rate_10ms"][:]
        )
        np.testing.assert_array_equal(fa["train/stimulus"][:], fb["train/stimulus"][:])
        assert fa["train/response/firing_rate_10ms"][:].min() >= 0


def test_uncompressed_file_holds_the_same_data(model: SyntheticRetina, tmp_path: Path) -> None:
    kw = dict(minutes=0.005, test_minutes=0.003, repeats=2, seed=2, chunk_s=0.2, progress=False)
    gz = simulate(model, ToyNoise, tmp_path / "gz.h5", stimulus_params={"size": 50}, **kw)
    raw = simulate(model, ToyNoise, tmp_path / "raw.h5", stimulus_params={"size": 50}, compression="none", **kw)
    with h5py.File(gz) as fg, h5py.File(raw) as fr:
        assert fg["train/stimulus"].compression == "gzip" and fr["train/stimulus"].compression is None
        assert fr["test/repeats/cell00"].compression is None
        for key in ("train/stimulus", "train/response/firing_rate_10ms", "test/stimulus", "test/repeats/cell00"):
            np.testing.assert_array_equal(fg[key][:], fr[key][:])
    with pytest.raises(UsageError, match="compression"):
        simulate(model, ToyNoise, tmp_path / "x.h5", compression="lzf", **kw)


def test_errors_are_clear_and_leave_no_file(model: SyntheticRetina, tmp_path: Path) -> None:
    out = tmp_path / "x.h5"
    with pytest.raises(UsageError, match="minutes"):
        simulate(model, ToyNoise, out, minutes=0)
    with pytest.raises(UsageError, match="length parameter"):
        simulate(model, registry.get("stimulus", "osr"), out, minutes=0.01)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    command = SimulateCommand()
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    out = tmp_path / "cli.h5"
    args = parser.parse_args(
        [
            "--stimulus",
            "white-noise",
            "--minutes",
            "0.01",
            "--test-minutes",
            "0.005",
            "--repeats",
            "2",
            "--seed",
            "3",
            "--set",
            "model.gain_control=0.5",
            "--set",
            "stimulus.checker_px=2",
            "-o",
            str(out),
        ]
    )
    assert args.model == "synthetic-retina"
    assert command.run(args) == 0
    with h5py.File(out) as f:
        assert json.loads(f.attrs["model_parameters"])["gain_control"] == 0.5
        assert json.loads(f.attrs["stimulus_parameters"]) == {"checker_px": 2}
        assert f["test/repeats/cell00"].shape == (2, 30)
    with pytest.raises(UsageError, match="--set"):
        command.run(parser.parse_args(["--minutes", "1", "--set", "bogus", "-o", str(out)]))


@pytest.mark.skipif(
    importlib.util.find_spec("mechlens_retina.commands") is None,
    reason="mechlens_retina.commands (which exposes the command) is not written yet",
)
def test_mechlens_simulate_is_a_subcommand(tmp_path: Path) -> None:
    from mechlens.cli import main

    out = tmp_path / "main.h5"
    assert (
        main(["simulate", "--stimulus", "white-noise", "--minutes", "0.005", "--test-minutes", "0", "-o", str(out)])
        == 0
    )
    assert out.exists()
