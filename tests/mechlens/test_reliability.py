"""Reliability of writing results (issue 22): containment, atomic writes, signals, up-front checks.

What each test guards is listed in docs/reliability.md. The signal and broken-pipe tests run the
real command line in a subprocess, since only a process can be interrupted or lose its reader.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from experiment_toys import toy_registry

from mechlens import experiments, io, pipeline, report
from mechlens.cli import main

POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


class _Page(HTMLParser):
    """The images and section ids of a report, in order, with the section each image is in."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "h2":
            self.sections.append(str(a["id"]))
            self.images[str(a["id"])] = []
        if tag == "img" and self.sections:
            self.images[self.sections[-1]].append(str(a["src"]))


def _page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One result file of a toy experiment (with every standard figure's variables)."""
    out = tmp_path_factory.mktemp("run")
    written = experiments.run_all(names=["toy-flash-sweep"], outdir=out, registry=toy_registry())
    return written[0]


def _copy(src: Path, dst: Path, **attrs: object) -> Path:
    ds = io.load(src)
    ds.attrs.update(attrs)
    return io.save(ds, dst)


# -- 1. names read from files never become paths unsanitised ----------------------------------------
@pytest.mark.parametrize("name", ["../../escaped", "ABSOLUTE", "..", "a/../../b", "x\\..\\..\\y"])
def test_report_writes_figures_only_inside_the_output_folder(result, tmp_path, name):
    if name == "ABSOLUTE":
        name = str(tmp_path / "abs" / "target")
    src = _copy(result, tmp_path / "in" / "r.nc", experiment=name)
    out = tmp_path / "deep" / "er" / "out"  # ../.. from a figures folder lands in deep/
    out.parent.mkdir(parents=True)
    before = _tree(tmp_path)
    assert main(["report", str(src), "-o", str(out)]) == 0
    new = _tree(tmp_path) - before
    outside = [p for p in new if not p.resolve().is_relative_to(out.resolve()) and p.resolve() != out.resolve()]
    assert not outside, f"written outside -o: {outside}"
    page = _page(out / "report.html")
    srcs = [s for images in page.images.values() for s in images]
    assert srcs
    for s in srcs:
        parts = s.split("/")
        assert parts[0] == "figures" and len(parts) == 3 and parts[1] not in ("", ".", "..")
        assert (out / s).resolve().is_relative_to((out / "figures").resolve()) and (out / s).is_file()


def test_slug_is_one_safe_path_component():
    assert report.slug("../../etc") == "etc"
    assert report.slug("/tmp/x y") == "tmp-x-y"
    assert report.slug("..") == "result" and report.slug("") == "result"
    assert report.slug(".hidden") == "hidden" and report.slug("-rf") == "rf"
    assert report.slug("osr") == "osr" and report.slug("latency-coding_2.v1") == "latency-coding_2.v1"
    assert report.slug("NUL") == "_NUL"
    assert len(report.slug("a" * 500)) <= 64


# -- 2. one figures folder per result file ---------------------------------------------------------
def test_two_results_of_one_experiment_get_their_own_figures(result, tmp_path):
    a = _copy(result, tmp_path / "a.nc")
    ds = io.load(result)
    ds["stimulus"] = -ds["stimulus"]  # so that the two stimulus figures differ
    b = io.save(ds, tmp_path / "b.nc")
    c = _copy(result, tmp_path / "other" / "a.nc")  # the same file name in another folder
    out = tmp_path / "out"
    assert main(["report", str(a), str(b), str(c), "-o", str(out)]) == 0
    page = _page(out / "report.html")
    assert len(set(page.sections)) == 3, page.sections
    folders = [{s.split("/")[1] for s in page.images[sec]} for sec in page.sections]
    assert all(len(f) == 1 for f in folders) and len(set.union(*folders)) == 3, folders
    fa, fb = (out / "figures" / next(iter(f)) for f in folders[:2])
    assert (fa / "stimulus.png").read_bytes() != (fb / "stimulus.png").read_bytes()


# -- 3. Ctrl-C and SIGTERM during a save ------------------------------------------------------------
def _run_and_signal(tmp_path: Path, sig: int, grace_s: float = 15.0) -> tuple[int | None, float, str, list[str]]:
    """Run a pipeline whose result is ~45 MB, send ``sig`` once its temporary file appears.

    Returns the exit status (None when it hung), the seconds from the signal to the exit, stderr
    and what is left in the output folder.
    """
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    argv = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--set", "model.size=64"]
    argv += ["--set", "stimulus.size=64", "--set", "stimulus.frames=3200", "-o", str(out / "r.nc")]
    err = (tmp_path / "stderr.txt").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mechlens.cli", *argv], stdout=subprocess.DEVNULL, stderr=err, env=env
    )
    try:
        deadline = time.monotonic() + 180
        while not (out.is_dir() and any(out.glob(".r.nc.*.tmp"))):
            assert proc.poll() is None, f"exited before saving: {(tmp_path / 'stderr.txt').read_text()}"
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.002)
        # signal once data are being written (the file grows), not while xarray is still checking names:
        # that is where a KeyboardInterrupt used to leave the HDF5 lock held
        appeared = time.monotonic()
        while time.monotonic() - appeared < 0.5 and sum(p.stat().st_size for p in out.glob(".r.nc.*.tmp")) < 2**21:
            time.sleep(0.002)
        assert proc.poll() is None and any(out.glob(".r.nc.*.tmp")), "the save ended before it could be interrupted"
        start = time.monotonic()
        proc.send_signal(sig)
        try:
            code: int | None = proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
    return code, elapsed, (tmp_path / "stderr.txt").read_text(), sorted(p.name for p in out.iterdir())


@POSIX
@pytest.mark.parametrize(
    ("sig", "status", "line", "exact"),
    [(signal.SIGINT, 130, "mechlens: interrupted", True), (signal.SIGTERM, 143, "terminated", False)],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_during_a_save_exits_promptly_with_one_line_and_removes_the_temporary_file(
    toys, tmp_path, sig, status, line, exact
):
    code, elapsed, stderr, left = _run_and_signal(tmp_path, sig)
    assert code == status, f"hung or wrong status ({code}) after {sig.name}; stderr: {stderr}"
    assert elapsed < 2.0, f"took {elapsed:.2f} s from {sig.name} to exit"
    assert left == [], f"left behind: {left}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and (lines[0] == line if exact else line in lines[0]), stderr


def _big(n: int = 3_000_000) -> xr.Dataset:
    rng = np.random.default_rng(0)
    return xr.Dataset({"response": (("time",), rng.standard_normal(n).astype(np.float32))})


@POSIX
def test_a_signal_during_the_netcdf_write_is_held_until_the_file_is_closed(tmp_path, monkeypatch):
    """In-process: Ctrl-C while xarray writes acts only after it returned, then the temporary file goes."""
    real = xr.Dataset.to_netcdf
    finished = []

    def signal_then_write(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as the library starts writing
        real(self, *args, **kwargs)
        finished.append(True)

    target = io.save(_big(1000), tmp_path / "r.nc")
    before = target.read_bytes()
    monkeypatch.setattr(xr.Dataset, "to_netcdf", signal_then_write)
    with pytest.raises(KeyboardInterrupt):
        io.save(_big(), target)
    assert finished, "the KeyboardInterrupt fired inside the netCDF library (where it can deadlock)"
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.nc"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_big_variables_are_written_in_blocks_of_whole_chunks(tmp_path):
    ds = _big().assign(movie=(("t", "y", "x"), np.random.default_rng(1).random((300, 64, 64))))
    back = io.load(io.save(ds, tmp_path / "r.nc"), validate=False)
    np.testing.assert_array_equal(back["response"].values, ds["response"].values)
    np.testing.assert_allclose(back["movie"].values, ds["movie"].values.astype(np.float32))
    # 150 x 128 x 128 float64 (20 MB) is over budget, 150 x 32 x 128 (5 MB) fits: 2 x 4 blocks
    blocks = list(io._blocks((300, 128, 128), [150, 32, 32], 8))
    assert len(blocks) == 2 * 4 and blocks[1] == (slice(0, 150), slice(32, 64), slice(None))
    assert list(io._blocks((10,), [10], 4)) == [(slice(0, 10),)]


# -- 4. output checked before any work; a full disk is named ----------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any pipeline or experiment starts."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(pipeline, "run", forbidden)
    monkeypatch.setattr(experiments, "run_experiment", forbidden)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mechlens: error: "), err
    return err[0]


def test_run_refuses_a_directory_as_output_file_before_any_work(toys, no_work, tmp_path, capsys):
    argv = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "-o", str(tmp_path)]
    assert main(argv) == 2
    assert "is a directory; give a file name" in _one_line_error(capsys)


def test_run_refuses_an_output_below_a_file_before_any_work(toys, no_work, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "-o", str(tmp_path / "file" / "r.nc")]
    assert main(argv) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)


def test_experiments_refuse_a_nc_name_as_output_folder_before_any_work(toys, no_work, tmp_path, capsys):
    assert main(["run", "-o", str(tmp_path / "results.nc")]) == 2
    assert "names a .nc file" in _one_line_error(capsys)
    assert not (tmp_path / "results.nc").exists()


def test_report_refuses_a_file_as_output_folder(result, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["report", str(result), "-o", str(tmp_path / "taken")]) == 2
    assert "is not a directory" in _one_line_error(capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_run_refuses_a_read_only_folder_before_any_work(toys, no_work, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        argv = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "-o", str(ro / "r.nc")]
        assert main(argv) == 2
        assert "cannot write there" in _one_line_error(capsys)
    finally:
        ro.chmod(0o700)


def test_check_output_accepts_missing_folders_and_creates_nothing(tmp_path):
    assert io.check_output(tmp_path / "a" / "b" / "r.nc", folder=False) == tmp_path / "a" / "b" / "r.nc"
    assert io.check_output(tmp_path / "new", folder=True) == tmp_path / "new"
    assert list(tmp_path.iterdir()) == []


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """netCDF on a full disk: a partial temporary file, then 'NetCDF: HDF error'; nothing free."""

    def fail(self, target, *args, **kwargs):
        Path(target).write_bytes(b"\x89HDF partial")
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", fail)
    monkeypatch.setattr(io, "_free_bytes", lambda folder: 512)


def test_a_full_disk_is_reported_as_no_space_left(tmp_path, monkeypatch):
    target = io.save(_big(1000), tmp_path / "r.nc")
    _disk_full(monkeypatch)
    with pytest.raises(io.WriteError, match="no space left on device") as info:
        io.save(_big(1000), target)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nc"]


def test_a_failed_write_with_space_left_keeps_its_own_error(tmp_path, monkeypatch):
    _disk_full(monkeypatch)
    monkeypatch.setattr(io, "_free_bytes", lambda folder: 10 * 2**30)
    with pytest.raises(RuntimeError, match="HDF error"):
        io.save(_big(1000), tmp_path / "r.nc")
    assert list(tmp_path.iterdir()) == []


def test_cli_says_no_space_left_in_one_line_and_exits_1(toys, tmp_path, monkeypatch, capsys):
    _disk_full(monkeypatch)
    assert main(["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "-o", str(tmp_path / "r.nc")]) == 1
    assert "no space left on device" in _one_line_error(capsys)


# -- 5. smaller findings ---------------------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_files_get_the_umasks_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = io.save(_big(100), tmp_path / "r.nc")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_report_degrades_on_invalid_json_attrs_and_an_all_nan_response(result, tmp_path, capsys):
    ds = io.load(result)
    ds.attrs.update(
        analysed_cells="[not json",
        measure_plot="{oops",
        measure_pass="maybe",
        measure_pass_reduced="?",
        focus_condition="first",
        model_parameters="{bad",
    )
    ds["response"] = ds["response"] * np.nan
    odd = io.save(ds, tmp_path / "odd.nc")
    out = tmp_path / "out"
    assert main(["report", str(odd), str(result), "-o", str(out)]) == 0
    text = (out / "report.html").read_text()
    assert "Could not be drawn from odd.nc" in text
    assert "[not json" in text  # the raw attr is shown, not lost
    page = _page(out / "report.html")
    assert len(page.sections) == 2 and all(page.images[s] for s in page.sections)


def test_info_on_an_empty_time_axis(tmp_path, capsys):
    from mechlens.toymodels import ToyCNN, ToyNoise

    ds = pipeline.run(ToyCNN(), ToyNoise).isel(time=slice(0, 0))
    ds["completeness_error"] = ds["response"].copy()
    path = io.save(ds, tmp_path / "empty.nc")
    assert main(["info", str(path)]) == 0
    assert "time        empty (no frame)" in capsys.readouterr().out


def test_list_into_a_closed_pipe_is_quiet(tmp_path):
    """``mechlens list --verbose | head -0``: the reader is gone before anything is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mechlens.cli", "list", "--verbose"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # type: ignore[union-attr]
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    code = proc.wait(timeout=120)
    assert code in (0, 141), stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr


def test_run_refuses_an_unwritable_folder_before_any_work(toys, no_work, tmp_path, monkeypatch, capsys):
    """As root (where chmod does not stop writes), a refused file creation stands for a read-only folder."""

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    argv = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "-o", str(tmp_path / "r.nc")]
    assert main(argv) == 2
    assert "cannot write there (Permission denied)" in _one_line_error(capsys)
