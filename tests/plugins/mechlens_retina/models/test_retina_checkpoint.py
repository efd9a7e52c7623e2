"""Retina-CNN checkpoints: one .safetensors file (weights + JSON metadata), written in one rename,
bit-identical round trip, legacy .pt + .json pairs still read, lying metadata refused before anything is built."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os

import pytest
import torch
from mechlens_retina.models import checkpoint as ckpt
from mechlens_retina.models import cnn
from mechlens_retina.models.cnn import ARCHITECTURE, RetinaCNN
from retina_small import SMALL
from safetensors.torch import load_file, save_file

from mechlens.cli import main
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


def _same_weights(a: RetinaCNN, b: RetinaCNN) -> bool:
    sa, sb = a.torch_module().state_dict(), b.torch_module().state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)


def _rewrite_metadata(path, change) -> None:
    """Rewrite a checkpoint's header metadata with ``change(meta)`` (tensors, and so weights_sha256, kept)."""
    meta, _ = ckpt.read_header(path)
    change(meta)
    save_file(load_file(path), path, metadata={ckpt.METADATA_KEY: json.dumps(meta)})


def _save_legacy(model: RetinaCNN, path) -> None:
    """Write ``model`` the way mechlens 0.1 did: MODEL.pt (torch.save'd state_dict) + MODEL.json."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.torch_module().state_dict().items()}, buffer)
    data = buffer.getvalue()
    p = model.params
    meta = {
        **model.metadata,
        "format": ckpt.FORMAT,
        "format_version": ckpt.LEGACY_VERSION,
        "model": "retina-cnn",
        "architecture": {**model.architecture(), "noise": p.noise, "bn_momentum": p.bn_momentum},
        "cells": model.cells,
        "frame_period_s": p.frame_period_s,
        "pixel_um": p.pixel_um,
        "seed": p.seed,
        "mechlens_version": "0.1.0",
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    path.write_bytes(data)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))


# -- the format ----------------------------------------------------------------------------------


def test_round_trip_is_bit_identical_and_one_file(tmp_path):
    model = _trained_looking()
    path = tmp_path / "model.safetensors"
    model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # one file, no temporary left
    back = RetinaCNN.load(path)
    assert _same_weights(model, back)
    assert back.cells == ["gc03", "gc07", "gc11"]
    assert back.architecture() == model.architecture()
    assert back.metadata["stimulus_std"] == 2.0 and back.metadata["metrics"]["cc"] == [0.5, 0.6, 0.7]
    stim = noise_stimulus(model, 10)
    assert (back.predict(stim)["response"].values == model.predict(stim)["response"].values).all()
    # weights_sha256 is the tensors' identity: the same after loading, and the same file after re-saving
    digest = ckpt.tensor_sha256(model.torch_module().state_dict())
    assert back.checkpoint_sha256() == model.checkpoint_sha256() == digest
    again = tmp_path / "other_name.safetensors"
    back.save(again)
    assert again.read_bytes() == path.read_bytes()


def test_metadata_lives_in_the_safetensors_header(tmp_path):
    model = _trained_looking()
    path = tmp_path / "m.safetensors"
    model.save(path)
    meta, shapes = ckpt.read_header(path)
    assert meta["format"] == ckpt.FORMAT and meta["format_version"] == 2 and meta["model"] == "retina-cnn"
    assert meta["architecture"]["channels1"] == 3 and meta["architecture"]["noise"] == 0.05
    assert meta["frame_period_s"] == 0.01 and meta["pixel_um"] == 55.0
    assert meta["cells"] == ["gc03", "gc07", "gc11"] and meta["seed"] == 1
    assert meta["mechlens_version"] and meta["weights_sha256"] == model.checkpoint_sha256()
    assert shapes == cnn.state_shapes(meta) and shapes["conv1.weight"] == (3, 5, 5, 5)


def test_tensor_sha256_depends_on_the_tensors_only():
    state = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.tensor(3)}
    digest = ckpt.tensor_sha256(state)
    assert digest == ckpt.tensor_sha256(dict(reversed(list(state.items()))))  # order of the mapping: no matter
    assert digest != ckpt.tensor_sha256({**state, "b": state["b"].reshape(3, 2)})  # shape is part of it
    assert digest != ckpt.tensor_sha256({**state, "b": state["b"].double()})  # dtype too
    # the documented definition, spelled out
    ref = hashlib.sha256()
    for name, t in sorted(state.items()):
        ref.update(json.dumps([name, str(t.dtype)[6:], list(t.shape)]).encode() + b"\n" + t.numpy().tobytes())
    assert digest == ref.hexdigest()


def test_limits_cover_the_architecture():
    assert {k.split(".", 1)[1] for k in ckpt.LIMITS if k.startswith("architecture.")} >= set(ARCHITECTURE)
    assert ckpt.FIRST_LAYER_CHOICES == cnn.FIRST_LAYERS


def test_checkpoint_parameter_gives_the_same_model(tmp_path):
    model = _trained_looking()
    model.save(tmp_path / "m.safetensors")
    other = RetinaCNN(checkpoint=str(tmp_path / "m.safetensors"), device="cpu", history=5)  # agreeing values are fine
    assert other.params.channels1 == 3 and other.params.checkpoint == str(tmp_path / "m.safetensors")


def test_incompatible_architecture_is_refused_naming_the_parameter(tmp_path):
    _trained_looking().save(tmp_path / "m.safetensors")
    with pytest.raises(ParameterError, match=r"channels1.*trained with channels1=3, not 8"):
        RetinaCNN(checkpoint=str(tmp_path / "m.safetensors"), channels1=8)
    with pytest.raises(ParameterError, match="n_cells"):
        RetinaCNN(checkpoint=str(tmp_path / "m.safetensors"), n_cells=5)


def test_other_file_names_are_refused_with_the_right_name(tmp_path):
    model = _trained_looking()
    with pytest.raises(UsageError, match=r"one \.safetensors file.*name it m\.safetensors"):
        model.save(tmp_path / "m.pt")
    with pytest.raises(UsageError, match=r"\.safetensors file.*ends in '\.ckpt'"):
        RetinaCNN.load(tmp_path / "m.ckpt")
    assert list(tmp_path.iterdir()) == []


# -- atomic replacement ---------------------------------------------------------------------------


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "m.safetensors"
    old = _trained_looking(1)
    old.save(path)
    before = path.read_bytes()
    full = OSError(errno.ENOSPC, "No space left on device")
    if fail_at == "write":
        # the disk fills half-way through the bytes
        real_fdopen = os.fdopen

        class HalfFull:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                raise full

        monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: HalfFull(real_fdopen(fd, mode)))
    else:

        def fail(*args, **kwargs):
            raise full

        monkeypatch.setattr(ckpt.os, fail_at, fail)
    with pytest.raises(OSError, match=r"could not write the checkpoint .*m\.safetensors.*No space left.*unchanged"):
        _trained_looking(2).save(path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left
    assert path.read_bytes() == before
    assert _same_weights(RetinaCNN.load(path), old)


# -- refusals -------------------------------------------------------------------------------------


def test_tensors_that_do_not_fit_their_metadata_are_refused_naming_the_tensor(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _trained_looking().save(a)
    RetinaCNN(**{**SMALL, "channels2": 4}).save(b)
    # b's tensors under a's metadata, with b's weights_sha256 so the shape check is what trips
    meta = ckpt.read_header(a)[0]
    meta["weights_sha256"] = ckpt.read_header(b)[0]["weights_sha256"]
    save_file(load_file(b), b, metadata={ckpt.METADATA_KEY: json.dumps(meta)})
    with pytest.raises(ckpt.CheckpointError, match=r"tensor 'conv2.weight' has shape \(4, 3, 3, 3\)"):
        RetinaCNN.load(b)


def test_altered_tensors_are_caught_by_the_recorded_sha256(tmp_path):
    path = tmp_path / "m.safetensors"
    _trained_looking().save(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one byte of the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="altered after it was written"):
        RetinaCNN.load(path)


def _set(field: str, value):
    def change(meta):
        table, key = (meta["architecture"], field[13:]) if field.startswith("architecture.") else (meta, field)
        if value is KeyError:
            del table[key]
        else:
            table[key] = value

    return change


HOSTILE = [
    ("architecture.image_size", 6000, r"an integer in 1\.\.1024 px"),
    ("architecture.image_size", "12", r"an integer in 1\.\.1024 px"),
    ("architecture.image_size", -12, r"an integer in 1\.\.1024 px"),
    ("architecture.history", True, r"an integer in 1\.\.1000 frames"),
    ("architecture.n_cells", 3.0, r"an integer in 1\.\.10000"),
    ("architecture.kernel1", 13, r"an integer in 1\.\.12 px"),
    ("architecture.kernel2", 9, r"an integer in 1\.\.8 px \(at most image_size - kernel1 \+ 1"),
    ("architecture.bn_momentum", 0, r"a finite number in \(0, 1\]"),
    ("architecture.first_layer", "pickle", "learned or synthetic-retina"),
    ("architecture.channels1", KeyError, r"an integer in 1\.\.1024"),
    ("frame_period_s", 0, r"a finite number in \(0, 10\] s"),
    ("frame_period_s", math.nan, r"a finite number in \(0, 10\] s"),
    ("frame_period_s", math.inf, r"a finite number in \(0, 10\] s"),
    ("pixel_um", KeyError, r"a finite number in \(0, 10000\] um"),
    ("pixel_um", "55", r"a finite number in \(0, 10000\] um"),
    ("stimulus_std", -2.0, r"a finite number in \(0, 1e\+30\]"),
    ("cells", ["gc0"], r"a list of n_cells \(3\) cell ids"),
    ("format_version", 1, r"2 in a \.safetensors checkpoint"),
]


@pytest.mark.parametrize(("field", "value", "allowed"), HOSTILE, ids=[f"{f}={v!r}" for f, v, _ in HOSTILE])
def test_lying_metadata_is_refused_before_anything_is_built(tmp_path, monkeypatch, capsys, field, value, allowed):
    path = tmp_path / "m.safetensors"
    RetinaCNN(**SMALL).save(path)
    _rewrite_metadata(path, _set(field, value))
    # nothing may be built from lying metadata, not even shapes on the meta device
    monkeypatch.setattr(cnn, "build_module", lambda *a, **k: pytest.fail("a module was built"))
    with pytest.raises(ckpt.CheckpointError, match=rf"{path}: metadata field '{field}' is .*allowed: {allowed}"):
        RetinaCNN.load(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{field}'" in err and str(path) in err and "allowed:" in err
    if value is KeyError:
        assert f"'{field}' is missing;" in err


def test_a_newer_format_asks_for_a_newer_mechlens(tmp_path):
    path = tmp_path / "m.safetensors"
    RetinaCNN(**SMALL).save(path)
    _rewrite_metadata(path, _set("format_version", 3))
    with pytest.raises(ckpt.CheckpointError, match=r"reads up to 2\. Upgrade mechlens"):
        RetinaCNN.load(path)


def test_hostile_or_foreign_files_are_refused_with_exit_code_2(tmp_path, capsys):
    # a header that claims a 4.8 GB tensor in a file of a few bytes
    header = json.dumps({"w": {"dtype": "F32", "shape": [30000, 40000], "data_offsets": [0, 4_800_000_000]}})
    header += " " * (-len(header) % 8)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(len(header).to_bytes(8, "little") + header.encode() + b"\0" * 16)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)  # safetensors, but not written by mechlens
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    for path, says in [(huge, "not a readable safetensors"), (foreign, "mechlens metadata"), (garbage, "readable")]:
        with pytest.raises(ckpt.CheckpointError, match=says):
            RetinaCNN.load(path)
        assert main(["info", str(path)]) == 2
        assert says in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nothing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_lying_shapes_are_refused_by_info_too(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    RetinaCNN(**SMALL).save(path)
    _rewrite_metadata(path, _set("architecture.image_size", 13))  # in range, but not these tensors
    assert main(["info", str(path)]) == 2
    assert "does not fit the architecture" in capsys.readouterr().err


# -- legacy .pt + .json pairs ---------------------------------------------------------------------


def test_a_legacy_pair_still_loads_and_converts(tmp_path):
    model = _trained_looking()
    legacy = tmp_path / "old.pt"
    _save_legacy(model, legacy)
    back = RetinaCNN.load(legacy)
    assert _same_weights(model, back) and back.cells == model.cells
    assert back.metadata["weights_sha256"] == ckpt.sha256_file(legacy)  # as recorded
    assert back.checkpoint_sha256() == ckpt.tensor_sha256(model.torch_module().state_dict())
    # conversion: the same tensors and metadata, a single file, the same identity
    assert ckpt.main([str(legacy)]) == 0
    new = tmp_path / "old.safetensors"
    converted = RetinaCNN.load(new)
    assert _same_weights(model, converted) and converted.checkpoint_sha256() == back.checkpoint_sha256()
    meta = ckpt.read_header(new)[0]
    old_meta = json.loads(legacy.with_suffix(".json").read_text())
    assert {k for k in meta if meta[k] != old_meta.get(k)} == {"format_version", "weights_sha256"}
    assert legacy.is_file()  # the legacy files are left alone
    # the library call can check the shapes too; the same file comes out
    again = ckpt.convert_legacy(legacy, tmp_path / "again.safetensors", expected_shapes=cnn.state_shapes)
    assert again.read_bytes() == new.read_bytes()


def test_legacy_pairs_are_checked_as_before(tmp_path, capsys):
    _save_legacy(_trained_looking(1), tmp_path / "a.pt")
    _save_legacy(_trained_looking(2), tmp_path / "b.pt")
    (tmp_path / "a.pt").write_bytes((tmp_path / "b.pt").read_bytes())  # new weights beside old metadata
    with pytest.raises(FileFormatError, match="belong to different checkpoints"):
        RetinaCNN.load(tmp_path / "a.pt")
    # a pickled module is never loaded
    torch.save(_trained_looking().torch_module(), tmp_path / "b.pt")
    meta = json.loads((tmp_path / "b.json").read_text())
    meta.pop("weights_sha256")
    (tmp_path / "b.json").write_text(json.dumps(meta))
    with pytest.raises(FileFormatError, match="weights-only"):
        RetinaCNN.load(tmp_path / "b.pt")
    # lying legacy metadata is refused like a lying header
    meta["architecture"]["image_size"] = 6000
    (tmp_path / "b.json").write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match=r"b\.json: metadata field 'architecture\.image_size' is 6000"):
        RetinaCNN.load(tmp_path / "b.pt")
    assert main(["info", str(tmp_path / "b.pt")]) == 2
    assert "'architecture.image_size'" in capsys.readouterr().err


def test_missing_or_foreign_legacy_files_are_explained(tmp_path):
    with pytest.raises(FileFormatError, match="not found"):
        RetinaCNN.load(tmp_path / "nothing.pt")
    with pytest.raises(FileFormatError, match="not found"):
        RetinaCNN.load(tmp_path / "nothing.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "lonely.pt")
    with pytest.raises(FileFormatError, match="no metadata file"):
        RetinaCNN.load(tmp_path / "lonely.pt")
    (tmp_path / "lonely.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(FileFormatError, match="not retina-CNN checkpoint metadata"):
        RetinaCNN.load(tmp_path / "lonely.pt")
    with pytest.raises(UsageError, match=r"not its \.json"):
        RetinaCNN.load(tmp_path / "lonely.json")


# -- mechlens info --------------------------------------------------------------------------------

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

    model = RetinaCNN(**SMALL)
    model.annotate(model.cells, probe_agreement=GATE)
    path = tmp_path / "model.safetensors"
    model.save(path)
    # without the agreement module, a built-in table
    monkeypatch.setitem(sys.modules, "mechlens_retina.phenomena.agreement", None)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "retina-cnn" in out and "probe agreement" in out and "not passed" in out
    assert model.checkpoint_sha256() in out
    flash = next(line for line in out.splitlines() if "flash" in line)
    assert "0.910" in flash and "0.520" in flash and "12.5" in flash and "yes" in flash
    # with it, its format_agreement renders the table; a legacy pair is summarised by either file
    fake = types.ModuleType("mechlens_retina.phenomena.agreement")
    fake.format_agreement = lambda d: f"TABLE {sorted(d['stimuli'])}"
    monkeypatch.setitem(sys.modules, "mechlens_retina.phenomena.agreement", fake)
    _save_legacy(model, tmp_path / "legacy.pt")
    for name in ("legacy.pt", "legacy.json"):
        assert main(["info", str(tmp_path / name)]) == 0
        assert "TABLE ['flash', 'osr']" in capsys.readouterr().out
    # a checkpoint without the gate says so; a model name summarises its own checkpoint
    RetinaCNN(**SMALL).save(tmp_path / "plain.safetensors")
    assert main(["info", str(tmp_path / "plain.safetensors")]) == 0
    assert "not stored" in capsys.readouterr().out
    monkeypatch.setattr(RetinaCNN, "default_checkpoint", staticmethod(lambda: path))
    assert main(["info", "retina-cnn"]) == 0
    assert "TABLE" in capsys.readouterr().out
    (tmp_path / "lonely.pt").write_bytes(b"x")
    assert main(["info", str(tmp_path / "lonely.pt")]) == 2
    assert "without its metadata" in capsys.readouterr().err
