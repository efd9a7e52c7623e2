"""Issue 21: `mechlens run --model-checkpoint a,b` runs every experiment on every model and the report compares them.

The models are the toy CNN loaded from tiny JSON "checkpoints" (its weight seed), so every run takes
seconds; the experiments are the toy ones of experiment_toys.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import types
from pathlib import Path

import pytest
from experiment_toys import ToyAttributor, ToyFlash, ToyFlashExperiment, ToyKeep, ToyNoiseExperiment

from mechlens import hookimpl, io, registry
from mechlens.cli import main
from mechlens.experiments import model_labels
from mechlens.interfaces import Model
from mechlens.registry import Registry
from mechlens.toymodels import ToyCNN, ToyNoise

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class SavedToyCNN(ToyCNN):
    """The toy CNN, loadable from a JSON checkpoint holding its parameters (never unpickled)."""

    _sha = ""

    @classmethod
    def load(cls, path: str | Path) -> Model:
        raw = Path(path).read_bytes()
        model = cls(**json.loads(raw))
        model._sha = hashlib.sha256(raw).hexdigest()
        return model

    def checkpoint_sha256(self) -> str:
        return self._sha


@pytest.fixture
def many(monkeypatch, tmp_path):
    """The toy plugins and experiments as the process-wide registry, and two checkpoints a.json, b.json."""
    plugin = types.SimpleNamespace(
        mechlens_models=hookimpl(lambda: [SavedToyCNN]),
        mechlens_stimuli=hookimpl(lambda: [ToyNoise, ToyFlash]),
        mechlens_attributors=hookimpl(lambda: [ToyAttributor]),
        mechlens_reducers=hookimpl(lambda: [ToyKeep]),
        mechlens_experiments=hookimpl(lambda: [ToyFlashExperiment, ToyNoiseExperiment]),
    )
    reg = Registry(autoload=False)
    reg.register(plugin, name="toys", distribution="toy-dist", version="0.1")
    monkeypatch.setattr(registry, "_default", reg)
    paths = []
    for name, seed in (("a", 0), ("b", 1)):
        path = tmp_path / "ckpt" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"seed": seed}))
        paths.append(str(path))
    yield paths
    registry.reset()


def _compare_cells(page: str) -> dict[str, str]:
    """The comparison table's cells: the result section each links to -> its verdict (pass/fail/-)."""
    table = re.search(r"id='models-compared'>(.*?)</section>", page, re.S)
    assert table, "no comparison table"
    found = re.findall(r"<a href='#([^']+)'><span class=\"(pass|fail|na)\">", table.group(1))
    return dict(found)


def test_two_checkpoints_run_every_experiment_on_every_model_and_the_report_compares_them(many, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--model-checkpoint", many[0], "--model-checkpoint", many[1], "-o", str(out)]) == 0
    files = sorted(out.rglob("*.nc"))
    assert [str(f.relative_to(out)) for f in files] == [
        "a/toy-flash-sweep.nc",
        "a/toy-noise-run.nc",
        "b/toy-flash-sweep.nc",
        "b/toy-noise-run.nc",
    ]
    results = {f: io.load(f) for f in files}
    for f, ds in results.items():
        label = f.parent.name
        assert ds.attrs["model_label"] == label and ds.attrs["model_checkpoint"] == many["ab".index(label)]
    shas = {ds.attrs["model_checkpoint_sha256"] for ds in results.values()}
    assert len(shas) == 2
    page = (out / "report.html").read_text()
    assert page.index("Models compared") < page.index("<th>experiment</th><th>measure</th>")  # near the top
    cells = _compare_cells(page)
    # one cell per file that has a measure, linking to its section, with that file's verdict
    expected = {}
    for f, ds in results.items():
        if f.stem == "toy-flash-sweep":
            key = f"{f.parent.name}-{f.stem}"
            assert f"<h2 id='{key}'>" in page
            expected[key] = "pass" if int(ds.attrs["measure_pass"]) else "fail"
    assert {k: v for k, v in cells.items() if k.endswith("toy-flash-sweep")} == expected
    for sha in shas:
        assert sha[:12] in page
    # `mechlens report DIR` finds the per-model folders, ordered by model then experiment
    capsys.readouterr()
    assert main(["report", str(out), "-o", str(tmp_path / "again")]) == 0
    again = (tmp_path / "again" / "report.html").read_text()
    assert _compare_cells(again) == cells
    order = [again.index(f"<h2 id='{f.parent.name}-{f.stem}'>") for f in files]
    assert order == sorted(order)


def test_one_checkpoint_keeps_the_layout_and_the_report(many, tmp_path):
    out = tmp_path / "one"
    assert main(["run", "--model-checkpoint", many[0], "--experiment", "toy-noise-run", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "toy-noise-run.nc"]
    ds = io.load(out / "toy-noise-run.nc")
    assert ds.attrs["model_checkpoint"] == many[0] and "model_label" not in ds.attrs
    page = (out / "report.html").read_text()
    assert "models-compared" not in page and "<h2 id='toy-noise-run'>" in page


def test_list_option_does_not_swallow_the_config_and_toml_takes_a_list(many, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[run]\noutput = "{tmp_path / "cmp"}"\n')
    assert main(["run", "--model-checkpoint", f"{many[0]},{many[1]}", str(cfg), "--dry-run"]) == 0
    resolved = tomllib.loads(capsys.readouterr().out)
    assert resolved["run"]["model_checkpoint"] == many
    assert set(resolved["models"]) == {"a", "b"}
    b = resolved["models"]["b"]
    assert b["checkpoint"] == many[1] and b["output"] == str(tmp_path / "cmp" / "b")
    assert b["experiment"]["toy-noise-run"]["output"] == str(tmp_path / "cmp" / "b" / "toy-noise-run.nc")
    assert not (tmp_path / "cmp").exists()
    # the old form `--model-checkpoint a b` would read b as the config: say how to list checkpoints
    assert main(["run", "--model-checkpoint", many[0], many[1], "--dry-run"]) == 2
    assert "separate them with commas" in capsys.readouterr().err
    # [run] model_checkpoint = [...] in the file
    cfg.write_text(f"[run]\nmodel_checkpoint = {json.dumps(many)}\n")
    assert main(["run", str(cfg), "--dry-run", "-o", str(tmp_path / "cmp")]) == 0
    assert set(tomllib.loads(capsys.readouterr().out)["models"]) == {"a", "b"}


def test_a_pipeline_refuses_several_checkpoints(many, tmp_path, capsys):
    argv = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--model-checkpoint", ",".join(many)]
    assert main([*argv, "-o", str(tmp_path / "x.nc")]) == 2
    err = capsys.readouterr().err
    assert "--model-checkpoint: 2 checkpoints, but a pipeline (given --stimulus) runs one model" in err
    assert not (tmp_path / "x.nc").exists()


def test_a_missing_checkpoint_is_refused_before_any_work(many, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--model-checkpoint", f"{many[0]},{tmp_path / 'nope.json'}", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--model-checkpoint: no such checkpoint file: {tmp_path / 'nope.json'}" in err
    assert not out.exists()
    assert main(["run", "--model-checkpoint", f"{many[0]},{many[0]}", "-o", str(out)]) == 2
    assert "is given twice" in capsys.readouterr().err


def test_a_failing_model_does_not_stop_the_others(many, tmp_path, capsys):
    bad = tmp_path / "ckpt" / "bad.json"
    bad.write_text('{"kernel": 99}')  # larger than the image: the model fails to build
    out = tmp_path / "out"
    argv = ["run", "--model-checkpoint", f"{bad},{many[0]}", "--experiment", "toy-noise-run", "-o", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 of 2 (model, experiment) run(s) failed (bad/toy-noise-run:" in err
    assert (out / "a" / "toy-noise-run.nc").exists() and (out / "report.html").exists()
    assert not (out / "bad" / "toy-noise-run.nc").exists()


def test_labels_are_unique_and_path_safe():
    assert model_labels(["x/a.pt", "y/a.pt", "y/A.pt", "../figures.pt", "/tmp/..pt"]) == [
        "a",
        "a-2",
        "A-3",
        "figures-model",
        "model",  # `..pt` has the stem `.`: no name left
    ]
