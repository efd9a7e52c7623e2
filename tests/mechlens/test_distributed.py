"""Scale-out (mechlens.distributed, mechlens.zarrstore): the same results on a cluster, in parts, resumed.

One LocalCluster of 2 worker processes is shared by the module. Workers are separate processes, so
the toy plugins are installed as a distribution (a ``*.dist-info`` on sys.path and PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import mechlens
from mechlens import distributed, experiments, io, registry
from mechlens.errors import UsageError

HERE = Path(__file__).parent

SCALE_TOYS = '''
import json
import os
from dataclasses import dataclass

from mechlens import hookimpl
from mechlens.parameters import param
from mechlens_attribution.integrated import IntegratedGradients


class CountingIG(IntegratedGradients):
    """Integrated gradients that log each part they compute (tests of scale-out)."""

    name = "counting-ig"

    @dataclass(frozen=True)
    class Parameters(IntegratedGradients.Parameters):
        kill_once: str = param("", "a file: the first call that finds it missing creates it and kills its process")

    def attribute_part(self, model, stimulus, layer=None, cells=None, part=None):
        log = os.environ.get("MECHLENS_TEST_PARTS_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(json.dumps(part) + "\\n")
            stop = int(os.environ.get("MECHLENS_TEST_INTERRUPT_AT", "0"))
            if stop and len(open(log).read().splitlines()) == stop:
                raise KeyboardInterrupt
        if self.params.kill_once and not os.path.exists(self.params.kill_once):
            open(self.params.kill_once, "w").close()
            os._exit(1)
        return super().attribute_part(model, stimulus, layer, cells, part)


@hookimpl
def mechlens_models():
    from mechlens.toymodels import ToyCNN
    return [ToyCNN]


@hookimpl
def mechlens_stimuli():
    from experiment_toys import ToyFlash
    from mechlens.toymodels import ToyNoise
    return [ToyNoise, ToyFlash]


@hookimpl
def mechlens_attributors():
    from experiment_toys import ToyAttributor
    return [ToyAttributor, CountingIG]


@hookimpl
def mechlens_reducers():
    from experiment_toys import ToyKeep
    return [ToyKeep]


@hookimpl
def mechlens_experiments():
    from experiment_toys import ToyFlashExperiment, ToyNoiseExperiment
    return [ToyFlashExperiment, ToyNoiseExperiment]
'''

#: a sweep of 2 conditions x 61 output times; memory_gb makes ~7 chunks of time points per condition
STIM = {"frames": 60, "contrast": [0.5, 1.0]}
ATTR = {"memory_gb": 0.02}


@pytest.fixture(scope="module")
def scale_toys(tmp_path_factory):
    """The toy plugins as an installed distribution, importable here and in worker processes."""
    root = tmp_path_factory.mktemp("dist")
    (root / "scale_toys.py").write_text(textwrap.dedent(SCALE_TOYS))
    info = root / "scale_toys-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scale-toys\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mechlens]\nscaletoys = scale_toys\n")
    paths = [str(root), str(HERE)]
    old_path, old_env = list(sys.path), os.environ.get("PYTHONPATH")
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([old_env] if old_env else []))
    registry.reset()
    yield root
    sys.path[:] = old_path
    if old_env is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_env
    sys.modules.pop("scale_toys", None)
    registry.reset()


@pytest.fixture(scope="module")
def client(scale_toys):
    """One LocalCluster of 2 worker processes (one thread each) for the module."""
    with distributed.engine(workers=2) as c:
        yield c


def _same(a: xr.Dataset, b: xr.Dataset, exact: bool) -> None:
    """Equal data (bit for bit, or within float32 rounding) and equal attrs but the creation time."""
    assert sorted(a.variables) == sorted(b.variables)
    for name in a.variables:
        x, y = a[name], b[name]
        assert x.dims == y.dims, name
        if x.dtype.kind == "f" and not exact:
            np.testing.assert_allclose(x.values, y.values, rtol=2e-6, atol=1e-6, err_msg=str(name))
        elif x.dtype.kind in "fiu":
            np.testing.assert_array_equal(x.values, y.values, err_msg=str(name))
        else:
            assert [str(v) for v in x.values.ravel()] == [str(v) for v in y.values.ravel()], name
        assert {k: str(v) for k, v in x.attrs.items()} == {k: str(v) for k, v in y.attrs.items()}, name
    skip = {"created", "experiment_wall_s", "history"}
    assert {k: str(v) for k, v in a.attrs.items() if k not in skip} == {
        k: str(v) for k, v in b.attrs.items() if k not in skip
    }


def test_parts_in_process_are_bit_identical_to_one_call(scale_toys):
    serial = mechlens.run("toy-cnn", "toy-noise", "integrated-gradients", stimulus_params=STIM, attributor_params=ATTR)
    for n in (1, 3, 5, 40):
        parted = mechlens.run(
            "toy-cnn", "toy-noise", "integrated-gradients", stimulus_params=STIM, attributor_params=ATTR, n_parts=n
        )
        _same(serial, parted, exact=True)


def test_a_split_run_works_out_the_shared_response_span_once_not_per_part(scale_toys, monkeypatch):
    from mechlens_attribution.base import LayerAttributor

    calls: list[int] = []
    real = LayerAttributor._response_span

    def counted(self, ctx, movies):
        calls.append(1)
        return real(self, ctx, movies)

    monkeypatch.setattr(LayerAttributor, "_response_span", counted)
    adaptive = {**ATTR, "n_steps": 0}  # the adaptive rule refers to the response range
    serial = mechlens.run(
        "toy-cnn", "toy-noise", "integrated-gradients", stimulus_params=STIM, attributor_params=adaptive
    )
    assert len(calls) == 1
    calls.clear()
    parted = mechlens.run(
        "toy-cnn", "toy-noise", "integrated-gradients", stimulus_params=STIM, attributor_params=adaptive, n_parts=5
    )
    assert len(calls) == 1  # once in the planning process, not once per part
    _same(serial, parted, exact=True)
    calls.clear()
    mechlens.run(
        "toy-cnn", "toy-noise", "integrated-gradients", stimulus_params=STIM,
        attributor_params={**ATTR, "n_steps": 16}, n_parts=5,
    )  # fmt: skip
    assert calls == []  # a fixed number of nodes never needs the span


def test_plan_splits_conditions_and_time_only_where_the_attributor_can():
    from experiment_toys import ToyAttributor
    from mechlens_attribution.integrated import IntegratedGradients

    from mechlens.toymodels import ToyNoise

    stim = ToyNoise(contrast=[0.5, 1.0]).generate(0)
    parts = distributed.plan(IntegratedGradients(), stim, 6)
    assert [(p.condition, p.time) for p in parts] == [(c, (k, 3)) for c in (0, 1) for k in range(3)]
    assert [p.index for p in parts] == list(range(6))
    assert distributed.plan(ToyAttributor(), stim, 6) == [distributed.Part(0)]


def test_cell_groups_in_process_are_bit_identical_to_one_call(scale_toys, tmp_path, monkeypatch):
    log = tmp_path / "parts.log"
    monkeypatch.setenv("MECHLENS_TEST_PARTS_LOG", str(log))
    fixed = {**ATTR, "n_steps": 16}
    kw = {"stimulus_params": STIM, "model_params": {"n_cells": 5}}
    serial = mechlens.run("toy-cnn", "toy-noise", "integrated-gradients", attributor_params=fixed, **kw)
    for groups, n in ((2, None), (3, 7), (5, 1)):
        log.write_text("")
        parted = mechlens.run(
            "toy-cnn", "toy-noise", "counting-ig", attributor_params=fixed, cell_groups=groups, n_parts=n, **kw
        )
        _same(serial.drop_attrs(), parted.drop_attrs(), exact=True)  # attrs name the attributor (counting-ig)
        assert parted["cell"].values.tolist() == serial["cell"].values.tolist()
        seen = {tuple(json.loads(line)["cells"]) for line in log.read_text().splitlines()}
        assert seen == {(k, groups) for k in range(groups)}
    # the exact method too, on the cells chosen by the user, in their order
    cells = ["gc03", "gc00", "gc04"]
    whole = mechlens.run("toy-cnn", "toy-noise", "exact-integrated-gradients", cells=cells, **kw)
    split = mechlens.run("toy-cnn", "toy-noise", "exact-integrated-gradients", cells=cells, cell_groups=2, **kw)
    _same(whole, split, exact=True)
    assert split["cell"].values.tolist() == cells


def test_cell_groups_are_refused_where_a_cells_numbers_depend_on_the_others(scale_toys, capsys):
    from mechlens.cli import main

    with pytest.raises(UsageError, match="n_steps"):
        mechlens.run(
            "toy-cnn", "toy-noise", "integrated-gradients", stimulus_params=STIM,
            attributor_params={**ATTR, "n_steps": 0}, cell_groups=2,
        )  # fmt: skip
    args = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--attributor", "integrated-gradients"]
    assert main([*args, "--cell-groups", "2", "-o", "x.nc"]) == 2
    assert "cannot be split by cells exactly" in capsys.readouterr().err
    assert main(["run", "--cell-groups", "2", "-o", "out"]) == 2  # experiments run whole
    assert "splits a single pipeline's attribution by cells" in capsys.readouterr().err


def test_plan_splits_cells_into_groups_and_time_makes_up_the_rest():
    from mechlens_attribution.integrated import IntegratedGradients

    from mechlens.toymodels import ToyNoise

    stim = ToyNoise(contrast=[0.5, 1.0]).generate(0)
    parts = distributed.plan(IntegratedGradients(n_steps=16), stim, 8, cell_groups=2, n_cells=5)
    assert [(p.condition, p.cells, p.time) for p in parts] == [
        (c, (g, 2), (k, 2)) for c in (0, 1) for g in (0, 1) for k in range(2)
    ]
    # never more groups than cells
    assert {p.cells for p in distributed.plan(IntegratedGradients(n_steps=16), stim, 2, 9, n_cells=3)} == {
        (0, 3),
        (1, 3),
        (2, 3),
    }
    assert [distributed.group_bounds(5, k, 3) for k in range(3)] == [(0, 1), (1, 3), (3, 5)]
    with pytest.raises(UsageError, match="at least 1"):
        distributed.plan(IntegratedGradients(n_steps=16), stim, 8, cell_groups=0, n_cells=5)


def test_an_interrupted_zarr_run_split_by_cells_resumes_and_equals_one_call(scale_toys, tmp_path, monkeypatch):
    log = tmp_path / "parts.log"
    monkeypatch.setenv("MECHLENS_TEST_PARTS_LOG", str(log))
    kw = {
        "stimulus_params": STIM, "attributor_params": {**ATTR, "n_steps": 16},
        "model_params": {"n_cells": 4}, "n_parts": 8, "cell_groups": 2,
    }  # fmt: skip
    store = tmp_path / "run.zarr"
    monkeypatch.setenv("MECHLENS_TEST_INTERRUPT_AT", "3")  # 2 parts (one of each cell group) written
    with pytest.raises(KeyboardInterrupt):
        mechlens.run("toy-cnn", "toy-noise", "counting-ig", store=store, **kw)
    first = [json.loads(line) for line in log.read_text().splitlines()]
    monkeypatch.delenv("MECHLENS_TEST_INTERRUPT_AT")
    log.write_text("")
    resumed = mechlens.run("toy-cnn", "toy-noise", "counting-ig", store=store, **kw)
    again = [json.loads(line) for line in log.read_text().splitlines()]
    assert not any(p in again for p in first[:2])  # nothing written is computed again
    assert len(first) - 1 + len(again) == 8  # 2 conditions x 2 cell groups x 2 time groups, each once
    io.save(resumed, store)
    one = mechlens.run(
        "toy-cnn", "toy-noise", "counting-ig", stimulus_params=STIM, attributor_params={**ATTR, "n_steps": 16},
        model_params={"n_cells": 4},
    )  # fmt: skip
    for name in ("attribution", "response", "baseline_response", "completeness_error"):
        np.testing.assert_array_equal(io.load(store)[name].values, one[name].values, err_msg=name)


def test_pipeline_on_two_worker_processes_equals_serial(client):
    kw = {"stimulus_params": STIM, "attributor_params": ATTR}
    serial = mechlens.run("toy-cnn", "toy-noise", "integrated-gradients", "pca", **kw)
    spread = mechlens.run("toy-cnn", "toy-noise", "integrated-gradients", "pca", client=client, **kw)
    # workers run torch with one thread: equal within float32 rounding (bit for bit where the BLAS agrees)
    _same(serial, spread, exact=False)
    fixed = {**kw, "attributor_params": {**ATTR, "n_steps": 16}}
    serial = mechlens.run("toy-cnn", "toy-noise", "integrated-gradients", "pca", **fixed)
    by_cells = mechlens.run(
        "toy-cnn", "toy-noise", "integrated-gradients", "pca", client=client, cell_groups=3, **fixed
    )
    _same(serial, by_cells, exact=False)


def test_workers_run_with_one_thread_and_without_dasks_malloc_trim_threshold(client):
    def env():
        import os

        import torch

        return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), os.environ.get("MALLOC_TRIM_THRESHOLD_")

    # dask's default threshold (65536) made each attributed time point 22 % slower in a worker
    assert set(client.run(env).values()) == {(1, "1", None)}


def test_experiments_on_two_worker_processes_equal_serial(client, tmp_path):
    names = ["toy-flash-sweep", "toy-noise-run"]
    serial = experiments.run_all(names=names, outdir=tmp_path / "serial", seed=2)
    spread = experiments.run_all(names=names, outdir=tmp_path / "spread", seed=2, client=client)
    assert [p.name for p in spread] == [p.name for p in serial] == ["toy-flash-sweep.nc", "toy-noise-run.nc"]
    for a, b in zip(serial, spread):
        _same(io.load(a), io.load(b), exact=False)
    assert (tmp_path / "spread" / "report.html").is_file()


def test_a_killed_worker_is_replaced_and_its_part_rerun(client, tmp_path):
    kw = {"stimulus_params": STIM, "attributor_params": ATTR}
    serial = mechlens.run("toy-cnn", "toy-noise", "integrated-gradients", **kw)
    marker = tmp_path / "killed-once"
    spread = mechlens.run(
        "toy-cnn",
        "toy-noise",
        "counting-ig",
        stimulus_params=STIM,
        attributor_params={**ATTR, "kill_once": str(marker)},
        client=client,
    )
    assert marker.exists()  # a worker process died in its part; dask ran the part again elsewhere
    for name in ("attribution", "response", "completeness_error", "integration_steps"):
        np.testing.assert_allclose(spread[name].values, serial[name].values, rtol=2e-6, atol=1e-6)


def test_an_interrupted_zarr_run_resumes_without_recomputing_and_equals_an_uninterrupted_one(
    scale_toys, tmp_path, monkeypatch
):
    log = tmp_path / "parts.log"
    monkeypatch.setenv("MECHLENS_TEST_PARTS_LOG", str(log))
    kw = {"stimulus_params": STIM, "attributor_params": ATTR, "n_parts": 6}
    store = tmp_path / "run.zarr"

    monkeypatch.setenv("MECHLENS_TEST_INTERRUPT_AT", "4")  # Ctrl-C in the 4th part: 3 are written
    with pytest.raises(KeyboardInterrupt):
        mechlens.run("toy-cnn", "toy-noise", "counting-ig", "pca", store=store, **kw)
    first = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(first) == 4
    with pytest.raises(mechlens.errors.FileFormatError, match="unfinished run"):
        io.load(store)

    monkeypatch.delenv("MECHLENS_TEST_INTERRUPT_AT")
    log.write_text("")
    resumed = mechlens.run("toy-cnn", "toy-noise", "counting-ig", "pca", store=store, **kw)
    again = [json.loads(line) for line in log.read_text().splitlines()]
    assert again == first[3:] + again[1:]  # the interrupted part first, then the rest
    assert len(again) == 3 and not any(p in again for p in first[:3])  # nothing written is computed again
    io.save(resumed, store)

    whole = tmp_path / "whole.zarr"
    io.save(mechlens.run("toy-cnn", "toy-noise", "counting-ig", "pca", store=whole, **kw), whole)
    _same(io.load(store), io.load(whole), exact=True)
    lazy = io.load(store, chunks={})
    assert lazy["attribution"].chunks is not None
    _same(lazy.load(), io.load(whole), exact=True)


def test_cli_writes_a_zarr_store_that_info_reads(scale_toys, tmp_path, capsys):
    from mechlens.cli import main

    out = tmp_path / "run.zarr"
    args = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--attributor", "integrated-gradients"]
    assert main([*args, "--set", "attributor.n_steps=8", "-o", str(out)]) == 0
    assert out.is_dir() and not (out / "mechlens-progress.json").exists()
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "attribution" in text and "integrated-gradients" in text


def test_workers_and_scheduler_together_are_refused():
    with pytest.raises(UsageError, match="either --workers"):
        distributed.start_client(workers=2, scheduler="tcp://localhost:1")


def test_no_cluster_without_workers_or_scheduler(monkeypatch):
    monkeypatch.delenv(distributed.SCHEDULER_ENV, raising=False)
    assert distributed.start_client() is None


def test_missing_extra_names_the_install_command(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name.startswith(("dask", "zarr")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(UsageError, match=r"pip install 'mechlens\[scale\]'"):
        distributed.start_client(workers=2)


def test_the_core_imports_neither_dask_nor_zarr():
    code = (
        "import sys, mechlens, mechlens.pipeline, mechlens.io, mechlens.distributed, mechlens.zarrstore, mechlens.cli;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'zarr'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cli_refuses_zero_workers(scale_toys, capsys):
    from mechlens.cli import main

    args = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--attributor", "integrated-gradients"]
    assert main([*args, "--workers", "0", "-o", "x.nc"]) == 2
    assert "at least 1 worker" in capsys.readouterr().err
