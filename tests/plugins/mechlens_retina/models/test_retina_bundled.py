"""The bundled checkpoint loads and reproduces the metrics stored in it (issue 7)."""

from __future__ import annotations

import numpy as np
import pytest

from mechlens import registry
from mechlens.torchutil import run_batched


@pytest.mark.slow
def test_bundled_checkpoint_reproduces_its_stored_test_metrics(tmp_path):
    from mechlens_retina.metrics import pearson
    from mechlens_retina.models.cnn import RetinaCNN
    from mechlens_retina.models.synthetic import SyntheticRetina
    from mechlens_retina.training.recordings import open_recording
    from mechlens_retina.training.simulate import simulate

    model = RetinaCNN()  # checkpoint="bundled"
    stored = model.metadata["metrics"]["evaluation"]
    assert np.median(stored["cc"]) >= 0.8
    sim = model.metadata["recipe"]["simulate"]
    # the test split is seeded independently of the training movie's length, so a short training
    # part regenerates exactly the test movie the checkpoint was evaluated on
    from mechlens_retina.phenomena.agreement import trained_circuit

    path = simulate(
        SyntheticRetina(**(trained_circuit(model) or {})),  # the circuit it was trained on
        registry.get("stimulus", sim["stimulus"]),
        tmp_path / "recording.h5",
        minutes=0.05,
        test_minutes=sim["test_minutes"],
        repeats=sim["repeats"],
        seed=sim["seed"],
        stimulus_params=sim.get("stimulus_params") or None,
        progress=False,
    )
    rec = open_recording(path)
    test = rec.test
    h = model.history
    movie = model.standardise(np.asarray(test["stimulus"].transpose("time", "y", "x").values))
    import torch

    windows = torch.from_numpy(movie).unfold(0, h, 1).permute(0, 3, 1, 2)
    pred = run_batched(model.torch_module(), windows, 512)
    target = np.asarray(test["response"].transpose("time", "cell").values)[h - 1 :]
    rec.close()
    assert pred.shape == target.shape == (stored["n_time"], len(model.cells))
    cc = pearson(pred, target)
    assert np.median(cc) >= 0.8
    # Measured 2026-11-29: OFF and ON cells reproduce to < 0.002; the three ON-OFF cells differ by up to
    # 0.019 (training evaluates conv1 through FFTs on a block-streamed movie; the cause of the larger
    # gap for these strongly gain-controlled cells is not yet pinned down)
    np.testing.assert_allclose(cc[:5], stored["cc"][:5], atol=2e-3)
    np.testing.assert_allclose(cc, stored["cc"], atol=0.025)


@pytest.mark.slow
def test_bundled_checkpoint_stores_its_current_probe_agreement():
    """The gate stored by ``python -m mechlens_retina.training.bundle`` is what the checkpoint gives now.

    Whether the gate passed is the maintainers' call after training; this only keeps the stored
    numbers from going stale (weights or probes changed without rebuilding the bundle).
    """
    from mechlens_retina.models.cnn import RetinaCNN
    from mechlens_retina.models.synthetic import SyntheticRetina
    from mechlens_retina.phenomena.agreement import probe_agreement, trained_circuit

    model = RetinaCNN(device="cpu")  # checkpoint="bundled"
    stored = model.metadata.get("probe_agreement")
    assert stored is not None, "the bundled checkpoint has no probe_agreement; rebuild it with make train-default"
    fresh = probe_agreement(model, SyntheticRetina(**(trained_circuit(model) or {})))
    assert set(fresh["stimuli"]) == set(stored["stimuli"])
    for name, now in fresh["stimuli"].items():
        then = stored["stimuli"][name]
        assert now["r_median"] == pytest.approx(then["r_median"], abs=1e-3), name
        assert now["r_min"] == pytest.approx(then["r_min"], abs=1e-3), name
        assert now["peak_error_ms"] == pytest.approx(then["peak_error_ms"], abs=0.5), name


def test_recipes_by_device_take_command_line_overrides():
    from mechlens_retina.training import bundle

    parser = bundle._parser()
    gpu = bundle.recipe_for("cuda", parser.parse_args(["--minutes", "30", "--set", "train.lr=0.002"]))
    assert gpu["simulate"]["minutes"] == 30 and gpu["train"]["lr"] == 0.002
    assert gpu["train"]["batch_size"] > bundle.RECIPES["cpu"]["train"]["batch_size"]
    assert bundle.recipe_for("cuda:1")["simulate"]["minutes"] == bundle.RECIPES["cuda"]["simulate"]["minutes"]
    assert bundle.recipe_for("cpu", parser.parse_args([])) == bundle.RECIPE
    from mechlens.errors import UsageError

    with pytest.raises(UsageError, match="not a training parameter"):
        bundle.recipe_for("cpu", parser.parse_args(["--set", "train.lrr=1"]))
    with pytest.raises(UsageError, match=r"expected stage\.param=value, e\.g\. train\.lr=0\.005"):
        bundle.recipe_for("cpu", parser.parse_args(["--set", "lr=1"]))
    # the circuit's and the CNN's parameters (mechanism recovery: a fixed first layer, another circuit)
    args = ["--set", 'model.first_layer="synthetic-retina"', "--set", 'simulate.model_params={silence=["OFF-fast"]}']
    r = bundle.recipe_for("cpu", parser.parse_args(args))
    assert r["model"] == {"first_layer": "synthetic-retina"}
    assert r["simulate"]["model_params"] == {"silence": ["OFF-fast"]}
    with pytest.raises(UsageError, match="not a retina-cnn parameter"):
        bundle.recipe_for("cpu", parser.parse_args(["--set", "model.seed=3"]))


@pytest.mark.slow
def test_bundle_writes_the_gate_into_the_checkpoint_and_resumes(tmp_path, monkeypatch, capsys):
    import sys
    import types

    from mechlens_retina.models.cnn import RetinaCNN
    from mechlens_retina.training import bundle
    from mechlens_retina.training.fit import STATE_FILE

    calls = []
    fake = types.ModuleType("mechlens_retina.phenomena.agreement")

    def probe_agreement(model, truth, registry=None):
        calls.append((model.device, truth.name))
        return {"passed": False, "stimuli": {"flash": {"r_median": 0.5, "r_min": 0.1, "peak_error_ms": 3.0}}}

    fake.probe_agreement = probe_agreement
    fake.format_agreement = lambda d, per_cell=False: "GATE TABLE" + (" PER CELL" if per_cell else "")
    monkeypatch.setitem(sys.modules, "mechlens_retina.phenomena.agreement", fake)
    out = tmp_path / "m.safetensors"
    small = [
        "--minutes",
        "0.1",
        "--test-minutes",
        "0.05",
        "--set",
        "train.threads=1",
        "--set",
        "train.val_fraction=0.2",
        "--workdir",
        str(tmp_path),
    ]
    assert bundle.main([*small, "--epochs", "1", "-o", str(out)]) == 0
    assert "GATE TABLE PER CELL" in capsys.readouterr().out and calls == [("cpu", "synthetic-retina")]
    model = RetinaCNN(checkpoint=str(out), device="cpu")
    assert model.metadata["probe_agreement"]["passed"] is False
    assert model.metadata["recipe"]["device"] == "cpu" and model.metadata["recipe"]["train"]["epochs"] == 1
    assert (tmp_path / STATE_FILE).is_file() and out.stat().st_size < 5e6
    # resume: the recording is reused and training continues from epoch 1
    assert bundle.main([*small, "--epochs", "2", "--resume", "--skip-agreement", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reusing the recording" in text
    resumed = RetinaCNN(checkpoint=str(out), device="cpu")
    assert resumed.metadata["metrics"]["resumed"] and resumed.metadata["metrics"]["epochs_run"] == 2


@pytest.mark.slow
def test_a_two_stage_recipe_fine_tunes_the_first_stage_checkpoint(tmp_path, monkeypatch, capsys):
    import copy

    from mechlens_retina.models.cnn import RetinaCNN
    from mechlens_retina.training import bundle

    recipe = copy.deepcopy(bundle.RECIPES["cpu"])
    # a learning rate so small that the second stage's weights stay where the first stage left them
    recipe["fine_tune"] = {
        "simulate": {"seed": 1, "stimulus_params": {"image_contrast_min": 0.0}},
        "train": {"lr": 1e-9, "freeze_bn_epoch": 1},
    }
    monkeypatch.setitem(bundle.RECIPES, "two-stage", recipe)
    out, work = tmp_path / "m.safetensors", tmp_path / "work"
    small = ["--recipe", "two-stage", "--minutes", "0.1", "--test-minutes", "0.05", "--epochs", "1"]
    small += ["--set", "train.threads=1", "--set", "train.val_fraction=0.2", "--skip-agreement"]
    assert bundle.main([*small, "--workdir", str(work), "-o", str(out)]) == 0
    assert "second stage: fine-tuning" in capsys.readouterr().out
    first = work / "stage1.safetensors"
    assert (work / "fine-tune" / "synthetic_naturalscene.h5").is_file()
    one, two = RetinaCNN(checkpoint=str(first), device="cpu"), RetinaCNN(checkpoint=str(out), device="cpu")
    r = two.metadata["recipe"]
    assert r["train"]["init_from"] == str(first) and r["train"]["lr"] == 1e-9 and r["train"]["epochs"] == 1
    assert r["simulate"]["seed"] == 1 and r["simulate"]["stimulus_params"] == {"image_contrast_min": 0.0}
    assert r["first_stage"]["simulate"]["seed"] == 0 and r["first_stage"]["train"]["lr"] == 5e-3
    # started from the first stage (its weights and its input normalisation), not from a fresh init
    w1, w2 = one.module.conv1.weight.detach(), two.module.conv1.weight.detach()
    fresh = RetinaCNN(checkpoint="random", device="cpu", n_cells=len(one.cells)).module.conv1.weight.detach()
    assert float((w2 - w1).abs().max()) < 1e-5 < float((fresh - w1).abs().max())
    assert two.metadata["stimulus_mean"] == one.metadata["stimulus_mean"]


def test_the_gate_compares_a_cnn_with_the_circuit_it_was_trained_on(monkeypatch):
    """A CNN trained on a changed circuit (the recovery control: OFF-fast silenced) is gated
    against that circuit, not the default one."""
    import sys
    import types
    from pathlib import Path

    from mechlens_retina.training import bundle

    seen = []
    fake = types.ModuleType("mechlens_retina.phenomena.agreement")
    fake.probe_agreement = lambda model, truth, registry=None: seen.append(truth.params.silence) or {"passed": False}
    monkeypatch.setitem(sys.modules, "mechlens_retina.phenomena.agreement", fake)
    default = Path(bundle.__file__).parents[1] / "data" / "default.safetensors"
    bundle.agreement_gate(default, {"silence": ["OFF-fast"]})
    bundle.agreement_gate(default)
    assert seen == [["OFF-fast"], []]
