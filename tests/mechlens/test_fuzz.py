"""Property-based fuzzing of user input (issue 22): every user error exits 2 with one line, never 1 or a traceback.

Parameter values, config files, ``--set`` strings and lying checkpoint metadata are generated with
hypothesis (derandomized: the same examples on every run). Runs that would not fit in memory must
be refused before anything large is allocated: they run in a subprocess under ``RLIMIT_AS``
(2 GiB of address space), where an allocation of the refused size would fail with a MemoryError
(exit 1) instead of the refusal (exit 2).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechlens import config, memory, parameters, registry
from mechlens.cli import main
from mechlens.errors import MechlensError

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: an output that is refused before any work (a component of the path is a file)
NOWHERE = "/dev/null/x.nc"

_scalars = (
    st.sampled_from([0.01, 0.02, 0.1, 0.5, 1.0, 2.0, 3, 10, 0, -1.0])
    | st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-1e4, max_value=1e4)
    | st.text(max_size=6)
    | st.sampled_from([np.float64(0.1), np.float32(2.0), np.int64(3), np.int8(-1), np.bool_(True), np.array([0.1])])
)
VALUES = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=8,
)


def _one_line_user_error(err: BaseException) -> None:
    assert isinstance(err, MechlensError) and err.exit_code == 2, f"{type(err).__name__}: {err}"
    assert "\n" not in str(err) and str(err).strip()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("mechlens: warning:")]
    return rc, "\n".join(errors)


def _assert_refused(rc: int, err: str) -> None:
    assert rc == 2, err
    assert err.startswith("mechlens: error: ") and "\n" not in err and "Traceback" not in err, err


# -- parameter values ---------------------------------------------------------------------------------
STIMULI = sorted(e.name for e in registry.entries("stimulus"))


def _spec_names(cls: type) -> list[str]:
    return [s.name for s in parameters.specs(cls)]


@FUZZ
@given(name=st.sampled_from(STIMULI), data=st.data())
def test_any_stimulus_parameter_value_renders_or_is_refused_in_one_line(
    name: str, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(memory.ENV, "16MiB")  # anything bigger is refused, never rendered
    cls = registry.get("stimulus", name)
    keys = data.draw(st.lists(st.sampled_from(_spec_names(cls.Parameters)), min_size=1, max_size=2, unique=True))
    values = {k: data.draw(VALUES, label=k) for k in keys}
    try:
        ds = cls(**values).generate(0)
    except Exception as err:  # noqa: BLE001 - the property: only one-line user errors
        _one_line_user_error(err)
    else:
        assert np.isfinite(ds["stimulus"].values).all()


PARAMETER_CLASSES = {
    **{
        f"{kind}:{e.name}": e.cls.Parameters
        for kind in ("model", "attributor", "reducer")
        for e in registry.entries(kind)
    },
    "run": config.RunOptions,
}


@FUZZ
@given(where=st.sampled_from(sorted(PARAMETER_CLASSES)), data=st.data())
def test_any_parameter_value_is_accepted_or_refused_in_one_line(where: str, data: st.DataObject) -> None:
    cls = PARAMETER_CLASSES[where]
    names = [*_spec_names(cls), "no_such_parameter"]
    keys = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    try:
        parameters.build(cls, {k: data.draw(VALUES, label=k) for k in keys}, where=where)
    except Exception as err:  # noqa: BLE001
        _one_line_user_error(err)


@pytest.mark.parametrize("value", [np.float64(0.1), np.float32(0.25), [np.float64(0.1), np.float64(0.2)]])
def test_numpy_values_are_taken_by_the_library(value: Any) -> None:
    flash = registry.get("stimulus", "flash")(intensity=value, duration=np.float64(0.05), size_px=np.int64(4))
    assert flash.generate(np.int64(1)).sizes["y"] == 4  # type: ignore[arg-type]  # numpy on purpose
    assert parameters.check_seed(np.uint32(7)) == 7


# -- --set strings and config files ---------------------------------------------------------------------
_TOML_VALUES = st.sampled_from(
    ["0.1", "-1", "inf", "-inf", "nan", "1e308", "1e-320", "[[0.1]]", "[]", "[0.1, 0.2]", "true", '"x"', "{a = 1}",
     "9" * 40, "[" * 400 + "]" * 400, "0x10", "'", '"\\u0000"', "2000-01-01", "[1, [2]]", "[0.1, inf]"]
)  # fmt: skip
_KEYS = st.sampled_from(
    ["stimulus.intensity", "stimulus.duration", "stimulus.post_s", "stimulus.size_px", "stimulus.frame_period_s",
     "stimulus.name", "stimulus.pre_s", "model.history", "model.image_size", "model.device", "run.seed",
     "run.layer", "run.cells", "run.experiment", "attributor.name", "reducer.steps", "stimulus.nope", "bogus.x",
     "stimulus", ".x", "stimulus.", "run.model_checkpoint"]
)  # fmt: skip
SET_ITEMS = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", _KEYS, _TOML_VALUES),
    st.builds(lambda k, v: f"{k}={v}", _KEYS, st.text(max_size=12)),
    st.text(max_size=20),
)


@FUZZ
@given(items=st.lists(SET_ITEMS, min_size=1, max_size=3))
def test_any_set_string_is_a_one_line_refusal(items: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--model", "retina-cnn", "--stimulus", "flash", *[f"--set={i}" for i in items], "-o", NOWHERE]
    _assert_refused(*_cli(argv, capsys))


def _toml(sections: dict[str, dict[str, str]]) -> str:
    return "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in body.items()) for s, body in sections.items())


CONFIG_TEXT = st.builds(
    _toml,
    st.dictionaries(
        st.sampled_from(["model", "stimulus", "attributor", "reducer", "run", "extra"]),
        st.dictionaries(
            st.sampled_from(["name", "intensity", "duration", "seed", "history", "layer", "cells", "bogus"]),
            st.one_of(_TOML_VALUES, st.sampled_from(['"flash"', '"retina-cnn"', '"osr"', '"nope"'])),
            max_size=3,
        ),
        max_size=3,
    ),
).map(str.encode)
CONFIG_BYTES = st.one_of(
    CONFIG_TEXT,
    st.binary(max_size=64),
    st.builds(lambda n: b"[run]\nseed = " + b"[" * n + b"]" * n, st.integers(min_value=1, max_value=5000)),
    st.builds(lambda b: b'[stimulus]\nname = "flash"\n# ' + b, st.binary(min_size=1, max_size=8)),
)


@FUZZ
@given(content=CONFIG_BYTES)
def test_any_config_file_is_a_one_line_refusal(
    content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(content)
    _assert_refused(*_cli(["run", str(path), "-o", NOWHERE], capsys))


# -- lying checkpoint metadata --------------------------------------------------------------------------
_LIE_FIELDS = ["architecture.image_size", "architecture.history", "architecture.channels1", "architecture.n_cells",
               "architecture.kernel1", "frame_period_s", "pixel_um", "stimulus_std"]  # fmt: skip
_LIE_VALUES = ["50", -1, 0, None, True, [], math.nan, math.inf, -math.inf, 1e308]


def _lies(field: str) -> st.SearchStrategy[tuple[str, Any]]:
    extra = [6000, 2.5] if field.startswith("architecture.") and field != "architecture.n_cells" else []
    return st.tuples(st.just(field), st.sampled_from(_LIE_VALUES + extra))


LIES = st.sampled_from(_LIE_FIELDS).flatmap(_lies)


@settings(FUZZ, max_examples=30)
@given(lie=LIES)
def test_lying_checkpoint_metadata_is_a_one_line_refusal(
    lie: tuple[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mechlens_retina.models import checkpoint as ckpt
    from mechlens_retina.models.cnn import BUNDLED
    from safetensors.numpy import load_file, save_file

    meta, _ = ckpt.read_header(BUNDLED)
    field, value = lie
    table = meta["architecture"] if field.startswith("architecture.") else meta
    table[field.rpartition(".")[2]] = value
    path = tmp_path / "lie.safetensors"
    save_file(load_file(BUNDLED), str(path), metadata={ckpt.METADATA_KEY: json.dumps(meta)})
    _assert_refused(*_cli(["info", str(path)], capsys))
    argv = ["run", "--model", "retina-cnn", "--stimulus", "flash", f"--set=model.checkpoint={json.dumps(str(path))}"]
    _assert_refused(*_cli([*argv, "-o", str(tmp_path / "out.nc")], capsys))


# -- runs too big for memory: refused before allocating ----------------------------------------------------
_UNDER_RLIMIT = textwrap.dedent(
    """
    import contextlib, io, json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    from mechlens.cli import main
    out = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(argv)
        out.append([rc, err.getvalue()])
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is only reliable on Linux")
def test_runs_too_big_for_memory_are_refused_before_allocating(tmp_path: Path) -> None:
    import h5py

    big = tmp_path / "big.h5"  # a header claiming 1e8 frames, no data written
    with h5py.File(big, "w") as f:
        g = f.create_group("train")
        g.create_dataset("stimulus", (10**8, 50, 50), dtype="f4", chunks=(100, 50, 50))
        g.create_group("response").create_dataset("firing_rate_10ms", (3, 10**8), dtype="f4", chunks=(3, 6000))
    run = ["run", "--model", "retina-cnn", "-o", str(tmp_path / "o.nc")]
    cases = {
        "stimulus.post_s": [*run, "--stimulus", "flash", "--set", "stimulus.post_s=3000"],
        "stimulus.speed": [*run, "--stimulus", "moving-bar", "--set", "stimulus.speed=0.01"],
        "stimulus.n_flashes": [*run, "--stimulus", "osr", "--set", "stimulus.n_flashes=10000",
                               "--set", "stimulus.period=[0.1, 0.2]"],
        "model.image_size": [*run, "--stimulus", "flash", "--set", "model.checkpoint=random",
                             "--set", "model.image_size=6000"],
        "--data": ["train", "--data", str(big), "-o", str(tmp_path / "m.safetensors")],
        "--chunk-s": ["simulate", "--minutes", "60", "--chunk-s", "3600", "-o", str(tmp_path / "s.h5")],
    }  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", memory.ENV: "1GiB", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _UNDER_RLIMIT, json.dumps(list(cases.values()))],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for (parameter, _), (rc, err) in zip(cases.items(), json.loads(proc.stdout.splitlines()[-1])):
        lines = [line for line in err.splitlines() if not line.startswith("mechlens: warning:")]
        assert rc == 2 and len(lines) == 1, (parameter, err)
        assert lines[0].startswith(f"mechlens: error: {parameter}: ") and "in memory, over the budget" in lines[0]


def test_simulate_refuses_nonfinite_lengths_and_a_recording_larger_than_the_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "s.h5")
    for flags in (["--minutes", "nan"], ["--minutes", "inf"], ["--minutes", "1", "--test-minutes", "nan"],
                  ["--minutes", "1", "--chunk-s", "inf"], ["--minutes", "1", "--seed", "-1"]):  # fmt: skip
        _assert_refused(*_cli(["simulate", *flags, "-o", out], capsys))
    rc, err = _cli(["simulate", "--minutes", "1e9", "-o", out], capsys)
    _assert_refused(rc, err)
    assert "on disk" in err and not Path(out).exists()


def test_the_budget_can_be_set_and_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for text, expected in (("4GiB", 4 << 30), ("512M", 512 << 20), ("2e9", 2_000_000_000), ("off", None)):
        monkeypatch.setenv(memory.ENV, text)
        assert memory.budget() == expected
    monkeypatch.setenv(memory.ENV, "lots")
    with pytest.raises(MechlensError, match=memory.ENV):
        memory.budget()
    monkeypatch.delenv(memory.ENV)
    assert 1 << 20 <= (memory.budget() or 0) <= memory.DEFAULT
