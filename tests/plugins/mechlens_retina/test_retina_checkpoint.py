"""Retina-CNN checkpoints: weights-only state_dict + JSON metadata, bit-identical round trip, clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from mechlens_retina import checkpoint as ckpt
from mechlens_retina.cnn import RetinaCNN
from retina_small import SMALL

from mechlens.errors import FileFormatError, ParameterError, UsageError
from mechlens.testing import noise_stimulus


def _trained_looking(seed: int = 1) -> RetinaCNN:
    """A small model whose batch-norm statistics are not the defaults (so the round trip covers buffers)."""
    model = RetinaCNN(**SMALL, seed=seed)
    m = model.torch_module()
    m.train()
    with torch.no_grad():
        m(torch.randn(16, 5, 12, 12, generator=torch.Generator().manual_seed(seed)))
    m.eval()
    model.annotate(["gc03", "gc07", "gc11"], stimulus_mean=0.25, stimulus_std=2.0, metrics={"cc": [0.5, 0.6, 0.7]})
    return model


def test_round_trip_is_bit_identical(tmp_path):
    model = _trained_looking()
    path = tmp_path / "model.pt"
    model.save(path)
    assert path.is_file() and (tmp_path / "model.json").is_file()
    back = RetinaCNN.load(path)
    a, b = model.torch_module().state_dict(), back.torch_module().state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert back.cells == ["gc03", "gc07", "gc11"]
    assert back.architecture() == model.architecture()
    assert back.metadata["stimulus_std"] == 2.0 and back.metadata["metrics"]["cc"] == [0.5, 0.6, 0.7]
    stim = noise_stimulus(model, 10)
    assert (back.predict(stim)["response"].values == model.predict(stim)["response"].values).all()
    # the weights file is a stable identity: the same sha256 after load, and again after re-saving
    assert back.checkpoint_sha256() == model.checkpoint_sha256() == ckpt.sha256_file(path)
    again = tmp_path / "other_name.pt"
    back.save(again)
    assert again.read_bytes() == path.read_bytes()
    assert json.loads((tmp_path / "other_name.json").read_text()) == json.loads((tmp_path / "model.json").read_text())


def test_metadata_describes_the_model(tmp_path):
    model = _trained_looking()
    model.save(tmp_path / "m.pt")
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == ckpt.FORMAT and meta["model"] == "retina-cnn"
    assert meta["architecture"]["channels1"] == 3 and meta["architecture"]["noise"] == 0.05
    assert meta["frame_period_s"] == 0.01 and meta["pixel_um"] == 55.0
    assert meta["cells"] == ["gc03", "gc07", "gc11"] and meta["seed"] == 1
    assert meta["mechlens_version"] and meta["weights_sha256"] == ckpt.sha256_file(tmp_path / "m.pt")


def test_checkpoint_parameter_gives_the_same_model(tmp_path):
    model = _trained_looking()
    model.save(tmp_path / "m.pt")
    other = RetinaCNN(checkpoint=str(tmp_path / "m.pt"), device="cpu", history=5)  # agreeing values are fine
    assert other.params.channels1 == 3 and other.params.checkpoint == str(tmp_path / "m.pt")


def test_incompatible_architecture_is_refused_naming_the_parameter(tmp_path):
    _trained_looking().save(tmp_path / "m.pt")
    with pytest.raises(ParameterError, match=r"channels1.*trained with channels1=3, not 8"):
        RetinaCNN(checkpoint=str(tmp_path / "m.pt"), channels1=8)
    with pytest.raises(ParameterError, match="n_cells"):
        RetinaCNN(checkpoint=str(tmp_path / "m.pt"), n_cells=5)


def test_weights_that_do_not_fit_their_metadata_are_refused_naming_the_tensor(tmp_path):
    _trained_looking().save(tmp_path / "a.pt")
    RetinaCNN(**{**SMALL, "channels2": 4}).save(tmp_path / "b.pt")
    # pair b's weights with a's metadata (and a matching sha256, so the shape check is what trips)
    meta = json.loads((tmp_path / "a.json").read_text())
    meta["weights_sha256"] = ckpt.sha256_file(tmp_path / "b.pt")
    (tmp_path / "b.json").write_text(json.dumps(meta))
    with pytest.raises(FileFormatError, match=r"tensor 'conv2.weight' has shape \(4, 3, 3, 3\)"):
        RetinaCNN.load(tmp_path / "b.pt")


def test_swapped_weights_are_caught_by_the_recorded_sha256(tmp_path):
    _trained_looking(1).save(tmp_path / "a.pt")
    _trained_looking(2).save(tmp_path / "b.pt")
    (tmp_path / "a.pt").write_bytes((tmp_path / "b.pt").read_bytes())
    with pytest.raises(FileFormatError, match="belong to different checkpoints"):
        RetinaCNN.load(tmp_path / "a.pt")


def test_pickled_modules_are_never_loaded(tmp_path):
    model = _trained_looking()
    model.save(tmp_path / "m.pt")
    torch.save(model.torch_module(), tmp_path / "m.pt")  # a whole pickled module, not a state_dict
    meta = json.loads((tmp_path / "m.json").read_text())
    meta.pop("weights_sha256")
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(FileFormatError, match="weights-only"):
        RetinaCNN.load(tmp_path / "m.pt")


def test_missing_or_foreign_files_are_explained(tmp_path):
    with pytest.raises(FileFormatError, match="not found"):
        RetinaCNN.load(tmp_path / "nothing.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "lonely.pt")
    with pytest.raises(FileFormatError, match="no metadata file"):
        RetinaCNN.load(tmp_path / "lonely.pt")
    (tmp_path / "lonely.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(FileFormatError, match="not retina-CNN checkpoint metadata"):
        RetinaCNN.load(tmp_path / "lonely.pt")
    with pytest.raises(UsageError, match=r"not its \.json"):
        RetinaCNN.load(tmp_path / "lonely.json")


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    _trained_looking().save(tmp_path / "sub" / "m.pt")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["m.json", "m.pt"]


GATE = {
    "passed": False,
    "stimuli": {
        "flash": {"r_median": 0.91, "r_min": 0.52, "peak_error_ms": 12.5, "passed": True, "cells": {}},
        "osr": {"r_median": 0.40, "r_min": 0.10, "peak_error_ms": 80.0, "passed": False, "cells": {}},
    },
}


def test_mechlens_info_prints_a_checkpoint_with_its_probe_agreement(tmp_path, capsys, monkeypatch):
    import sys
    import types

    from mechlens.cli import main

    model = RetinaCNN(**SMALL)
    model.annotate(model.cells, probe_agreement=GATE)
    path = tmp_path / "model.pt"
    model.save(path)
    # without the agreement module, a built-in table
    monkeypatch.setitem(sys.modules, "mechlens_retina.agreement", None)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "retina-cnn" in out and "probe agreement" in out and "not passed" in out
    flash = next(line for line in out.splitlines() if "flash" in line)
    assert "0.910" in flash and "0.520" in flash and "12.5" in flash and "yes" in flash
    # with it, its format_agreement renders the table
    fake = types.ModuleType("mechlens_retina.agreement")
    fake.format_agreement = lambda d: f"TABLE {sorted(d['stimuli'])}"
    monkeypatch.setitem(sys.modules, "mechlens_retina.agreement", fake)
    assert main(["info", str(path.with_suffix(".json"))]) == 0
    assert "TABLE ['flash', 'osr']" in capsys.readouterr().out
    # a checkpoint without the gate says so; a model name summarises its own checkpoint
    RetinaCNN(**SMALL).save(tmp_path / "plain.pt")
    assert main(["info", str(tmp_path / "plain.pt")]) == 0
    assert "not stored" in capsys.readouterr().out
    monkeypatch.setattr(RetinaCNN, "default_checkpoint", staticmethod(lambda: path))
    assert main(["info", "retina-cnn"]) == 0
    assert "TABLE" in capsys.readouterr().out
    (tmp_path / "lonely.pt").write_bytes(b"x")
    assert main(["info", str(tmp_path / "lonely.pt")]) == 2
    assert "without its metadata" in capsys.readouterr().err
