"""``mechlens simulate``: record a model "retina" like an experiment, into the published HDF5 layout.

The file has the layout of the Baccus-lab salamander recordings (Maheswaranathan et al. 2023; Stanford
Digital Repository 10.25740/rk663dm5577), so training reads real and synthetic data with one reader::

    train/stimulus                     (T, 50, 50)  float32, z-scored contrast
    train/time                         (T,)         s
    train/response/firing_rate_10ms    (n_cells, T) Hz
    train/response/binned              (n_cells, T) spike counts (with --poisson)
    train/response/model_rate          (n_cells, T) Hz, the noiseless rate (with --poisson)
    test/stimulus, test/time, test/response/firing_rate_10ms   (a different movie)
    test/repeats/cellNN                (n_repeats, T_test) Hz, one Poisson trial per row

Time convention: ``firing_rate_10ms[:, t]`` is the model's output for the window of ``history``
frames *ending with* stimulus frame ``t`` (mechlens' convention; attr ``response_alignment``). The
movie starts with ``history - 1`` unsaved frames so that every stored bin is a full-window output.

The movie is made and written in chunks (``--chunk-s``, default 60 s), so an hour never sits in
memory; each chunk is run with the last ``history - 1`` frames of the one before, so the model sees
one continuous movie. Stimuli that render any range of frames (``natural-scenes``, ``white-noise``)
give exactly the movie ``generate`` would; others are rendered per chunk, each from its own seed.
The train and test movies have different seeds derived from ``--seed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mechlens import __version__
from mechlens.errors import UsageError
from mechlens.interfaces import Command, Model, Stimulus
from mechlens.parameters import check_seed, specs

#: stimulus parameters that set a movie's length, and the unit each is in ("duration" alone often means
#: a flash's duration, so it counts only where the class names it as its ``length_parameter``)
_LENGTH_PARAMS = {"duration_s": "s", "seconds": "s", "minutes": "min", "frames": "frames", "n_frames": "frames"}
_UNIT_OF = {"s": "s", "min": "min"}
#: stimulus parameters that set the history before time 0 (set to 0: simulate supplies its own)
_PRE_PARAMS = ("pre_s", "pre_frames", "pre")


def _length_param(cls: type[Stimulus]) -> tuple[str, str]:
    declared = {s.name: s for s in specs(cls.Parameters)}
    named = getattr(cls, "length_parameter", None)
    if isinstance(named, str) and named in declared:
        units = declared[named].units
        return named, _UNIT_OF.get(units or "", "frames")
    for name, unit in _LENGTH_PARAMS.items():
        if name in declared:
            return name, unit
    raise UsageError(
        f"stimulus {cls.name!r} has no length parameter (a class attribute length_parameter, or one of "
        f"{', '.join(_LENGTH_PARAMS)}), so simulate cannot ask it for a long movie; choose a stimulus with a "
        "movie length, e.g. natural-scenes or white-noise"
    )


def render_frames(
    cls: type[Stimulus], n_frames: int, seed: int, frame_s: float, params: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Render ``n_frames`` frames (from time 0 on) of a stimulus.

    Parameters
    ----------
    cls : type
        A Stimulus class with a length parameter (``duration_s``, ``frames``, ...).
    n_frames : int
        Frames wanted.
    seed : int
        Stimulus seed.
    frame_s : float
        Seconds per frame.
    params : mapping, optional
        Other stimulus parameters.

    Returns
    -------
    numpy.ndarray
        (n_frames, y, x) float32.
    """
    name, unit = _length_param(cls)
    values = dict(params or {})
    length = {"s": n_frames * frame_s, "min": n_frames * frame_s / 60.0, "frames": n_frames}[unit]
    values[name] = length
    declared = {s.name for s in specs(cls.Parameters)}
    for pre in _PRE_PARAMS:
        if pre in declared and pre not in (params or {}):
            values[pre] = 0
    ds = cls(**values).generate(seed)
    stim = ds["stimulus"]
    if "condition" in stim.dims:
        raise UsageError(f"stimulus {cls.name!r}: simulate needs one movie, not a sweep; give scalar parameters")
    movie = stim.sel(time=stim["time"] >= -1e-9).transpose("time", "y", "x").values
    if movie.shape[0] < n_frames:
        raise UsageError(
            f"stimulus {cls.name!r} gave {movie.shape[0]} frames after time 0 for {name}={length}; "
            f"{n_frames} were needed"
        )
    return np.ascontiguousarray(movie[:n_frames], dtype=np.float32)


def model_rates(model: Model, movie: np.ndarray) -> np.ndarray:
    """Rates (T - history + 1, n_cells) in Hz for every full window of a (T, y, x) movie."""
    fast: Callable[[np.ndarray], np.ndarray] | None = getattr(model, "rates", None)
    if fast is not None:
        return fast(movie)
    import torch

    from mechlens.torchutil import run_batched

    frames = torch.from_numpy(np.ascontiguousarray(movie, dtype=np.float32))
    windows = frames.unfold(0, model.history, 1).permute(0, 3, 1, 2)
    return run_batched(model.torch_module(), windows, model.batch_size)


def _seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


class _FrameSource:
    """Frames ``start .. stop - 1`` of one long movie, made piecewise.

    A stimulus that can render any range of its frames deterministically (``frames(start, stop,
    seed)``, e.g. ``natural-scenes`` and ``white-noise``) gives one continuous movie. Any other
    stimulus with a length parameter is rendered chunk by chunk, each chunk from its own seed.
    """

    def __init__(
        self, cls: type[Stimulus], n: int, n_lead: int, seed: int, dt: float, params: Mapping[str, Any] | None
    ) -> None:
        self.cls, self.n, self.n_lead, self.seed, self.dt = cls, n, n_lead, seed, dt
        self.params = dict(params or {})
        self.instance: Any = None
        declared = {s.name for s in specs(cls.Parameters)}
        if callable(getattr(cls, "frames", None)) and "pre_s" in declared:
            name, unit = _length_param(cls)
            values = dict(self.params)
            values[name] = {"s": n * dt, "min": n * dt / 60.0, "frames": n}[unit]
            values["pre_s"] = round(n_lead * dt, 9)
            self.instance = cls(**values)
        self._count = 0

    def lead_in(self) -> np.ndarray | None:
        if self.n_lead < 1:
            return None
        if self.instance is not None:
            return self._movie(self.instance.frames(-self.n_lead, 0, self.seed))
        return render_frames(self.cls, self.n_lead, _seed(self.seed, 0), self.dt, self.params)

    def frames(self, start: int, stop: int) -> np.ndarray:
        if self.instance is not None:
            return self._movie(self.instance.frames(start, stop, self.seed))
        self._count += 1
        return render_frames(self.cls, stop - start, _seed(self.seed, self._count), self.dt, self.params)

    @staticmethod
    def _movie(ds: Any) -> np.ndarray:
        return np.ascontiguousarray(ds["stimulus"].transpose("time", "y", "x").values, dtype=np.float32)


@dataclasses.dataclass
class _Part:
    name: str
    n_frames: int
    key: int


def simulate(
    model: Model,
    stimulus: type[Stimulus],
    output: str | os.PathLike[str],
    *,
    minutes: float,
    test_minutes: float = 1.0,
    repeats: int = 5,
    seed: int = 0,
    poisson: bool = False,
    chunk_s: float = 60.0,
    stimulus_params: Mapping[str, Any] | None = None,
    progress: bool = True,
    compression: str | None = "gzip",
) -> Path:
    """Record a model's responses to a long stimulus into the published HDF5 layout (see module doc).

    Parameters
    ----------
    model : Model
        The model (e.g. ``synthetic-retina``).
    stimulus : type
        A Stimulus class with a length parameter (e.g. ``natural-scenes``).
    output : path
        The ``.h5`` file to write (atomically: a partial run leaves no file behind).
    minutes : float
        Length of the training movie, min.
    test_minutes : float
        Length of the (different) test movie, min; 0 writes no test group.
    repeats : int
        Poisson trials per test cell (``test/repeats/cellNN``).
    seed : int
        Seed of every stimulus chunk and of the Poisson spikes.
    poisson : bool
        Store Poisson spike counts (as Hz) in ``firing_rate_10ms`` instead of the noiseless rate.
    chunk_s : float
        Seconds of movie made and written at a time.
    stimulus_params : mapping, optional
        Other stimulus parameters.
    progress : bool
        Show a progress bar over chunks (on a terminal).
    compression : {"gzip", None}
        HDF5 compression of the datasets. ``"gzip"`` (level 1, byte shuffle) makes the file smaller;
        None (or ``"none"``) writes it raw, several times faster to write and read (about 0.8 s
        instead of 0.01 s per simulated minute of 50x50 frames on one CPU core), for a file of
        about 60 MB per minute.

    Returns
    -------
    Path
        The file written.
    """
    import h5py

    from mechlens.progress import bar

    for flag, value, positive in (("--minutes", minutes, True), ("--test-minutes", test_minutes, False)):
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise UsageError(f"{flag} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    if not (math.isfinite(chunk_s) and chunk_s > 0):
        raise UsageError(f"--chunk-s must be a finite number > 0, got {chunk_s}")
    if repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {repeats}")
    seed = check_seed(seed, "--seed")
    if compression == "none":
        compression = None
    if compression not in ("gzip", None):
        raise UsageError(f"--compression must be 'gzip' or 'none', got {compression!r}")
    dt = float(model.frame_period_s)
    h = int(model.history)
    ny, nx = model.input_shape
    cells = list(model.cells)
    chunk = max(1, round(min(chunk_s / dt, 1e15)))
    parts = [_Part("train", max(1, round(min(minutes * 60 / dt, 1e18))), 0)]
    if test_minutes > 0:
        parts.append(_Part("test", max(1, round(min(test_minutes * 60 / dt, 1e18))), 1))
    _check_size(parts, chunk, (ny, nx), h, len(cells), repeats, poisson, compression, Path(output))
    rng = np.random.default_rng(_seed(seed, 2))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            _write_attrs(f, model, stimulus, stimulus_params, seed, poisson, repeats, dt)
            total = sum(-(-p.n_frames // chunk) for p in parts)
            steps = iter(bar(range(total), desc="simulate", unit="chunk")) if progress else iter(range(total))
            for part in parts:
                _simulate_part(
                    f,
                    part,
                    model,
                    stimulus,
                    stimulus_params,
                    seed,
                    chunk,
                    rng,
                    poisson,
                    repeats,
                    (ny, nx),
                    h,
                    dt,
                    cells,
                    steps,
                    compression,
                )
        # mkstemp made the file private (0600); give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output


def _check_size(
    parts: list[_Part],
    chunk: int,
    shape: tuple[int, int],
    history: int,
    n_cells: int,
    repeats: int,
    poisson: bool,
    compression: str | None,
    output: Path,
) -> None:
    """Refuse, before writing anything, a chunk too big for memory or a file that cannot fit on the disk."""
    from mechlens import memory

    frame = 4 * shape[0] * shape[1]
    chunk = min(chunk, max(p.n_frames for p in parts))
    # one chunk of movie with its lead-in, its windows' first layer and rates, the repeats drawn for it
    per_chunk = (chunk + history) * frame * 3 + chunk * n_cells * 4 * (3 + repeats)
    memory.check(
        per_chunk, "--chunk-s", f"one chunk of {chunk} frames of {shape[0]}x{shape[1]} px", "give a smaller --chunk-s"
    )
    n = sum(p.n_frames for p in parts)
    raw = n * (frame + 8 + n_cells * 4 * (3 if poisson else 1)) + parts[-1].n_frames * n_cells * repeats * 4
    # gzip shrinks a movie at most ~10x in practice: refuse only what cannot fit even so
    least = raw / 10 if compression == "gzip" else raw
    folder = next((p for p in (output.parent, *output.parent.parents) if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if least > free:
        raise UsageError(
            f"--minutes: the recording ({n} frames of {shape[0]}x{shape[1]} px) would take at least "
            f"{memory.size_text(least)} on disk{' (compressed)' if compression == 'gzip' else ''}, more than the "
            f"{memory.size_text(free)} free in {folder}; give fewer --minutes or another -o"
        )


def _write_attrs(
    f: Any,
    model: Model,
    stimulus: type[Stimulus],
    stimulus_params: Mapping[str, Any] | None,
    seed: int,
    poisson: bool,
    repeats: int,
    dt: float,
) -> None:
    f.attrs["mechlens_version"] = __version__
    f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    f.attrs["model"] = model.name
    f.attrs["model_parameters"] = model.parameters_json()
    f.attrs["stimulus"] = stimulus.name
    f.attrs["stimulus_parameters"] = json.dumps(dict(stimulus_params or {}), sort_keys=True, default=str)
    f.attrs["seed"] = int(seed)
    f.attrs["poisson"] = int(poisson)
    f.attrs["n_repeats"] = int(repeats)
    f.attrs["frame_period_s"] = dt
    f.attrs["history"] = int(model.history)
    f.attrs["cells"] = json.dumps(list(model.cells))
    f.attrs["repeat_names"] = json.dumps({c: f"cell{i:02d}" for i, c in enumerate(model.cells)})
    f.attrs["response_alignment"] = (
        "firing_rate_10ms[:, t] is the output for the history window ending with stimulus frame t"
    )
    kinds = getattr(model, "cell_kind", None)
    if kinds is not None:
        f.attrs["cell_kind"] = json.dumps(list(kinds))
    pos = getattr(model, "cell_position_um", None)
    if pos is not None:
        f.attrs["cell_position_um"] = np.asarray(pos, dtype=float)


def _simulate_part(
    f: Any,
    part: _Part,
    model: Model,
    stimulus: type[Stimulus],
    stimulus_params: Mapping[str, Any] | None,
    seed: int,
    chunk: int,
    rng: np.random.Generator,
    poisson: bool,
    repeats: int,
    shape: tuple[int, int],
    h: int,
    dt: float,
    cells: list[str],
    steps: Any,
    compression: str | None = "gzip",
) -> None:
    n, n_cells = part.n_frames, len(cells)
    # the movie at gzip level 1 (it dominates the file and the write time), the rates at gzip's default
    gz: dict[str, Any] = {"compression": compression}
    gz_movie = dict(gz, compression_opts=1) if compression == "gzip" else gz
    g = f.create_group(part.name)
    stim = g.create_dataset(
        "stimulus",
        (n, *shape),
        dtype="f4",
        chunks=(min(n, 100), *shape),
        shuffle=compression is not None,
        **gz_movie,
    )
    stim.attrs["units"] = "1"
    stim.attrs["long_name"] = "z-scored contrast"
    # written chunk by chunk below: a whole time axis of a long recording would not fit in memory
    t = g.create_dataset("time", (n,), dtype="f8", chunks=(min(n, 6000),))
    t.attrs["units"] = "s"
    resp = g.create_group("response")
    rate_chunks = (n_cells, min(n, 6000))
    fr = resp.create_dataset("firing_rate_10ms", (n_cells, n), dtype="f4", chunks=rate_chunks, **gz)
    fr.attrs["units"] = "Hz"
    binned = true_rate = None
    if poisson:
        binned = resp.create_dataset("binned", (n_cells, n), dtype="i4", chunks=rate_chunks, **gz)
        binned.attrs["units"] = "spikes per bin"
        true_rate = resp.create_dataset("model_rate", (n_cells, n), dtype="f4", chunks=rate_chunks, **gz)
        true_rate.attrs["units"] = "Hz"
    reps = []
    if part.name == "test":
        rg = g.create_group("repeats")
        for i in range(n_cells):
            d = rg.create_dataset(f"cell{i:02d}", (repeats, n), dtype="f4", chunks=(repeats, min(n, 6000)), **gz)
            d.attrs["units"] = "Hz"
            d.attrs["cell"] = cells[i]
            reps.append(d)
    source = _FrameSource(stimulus, n, h - 1, _seed(seed, part.key), dt, stimulus_params)
    # history - 1 frames of lead-in so every stored bin has a full window
    tail = source.lead_in()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        frames = source.frames(start, stop)
        movie = frames if tail is None else np.concatenate([tail, frames])
        rates = np.clip(model_rates(model, movie), 0.0, None).T  # (cells, stop - start)
        stim[start:stop] = frames
        t[start:stop] = np.round(np.arange(start, stop) * dt, 9)
        if poisson:
            assert binned is not None and true_rate is not None  # created above when poisson
            counts = rng.poisson(rates * dt)
            binned[:, start:stop] = counts
            true_rate[:, start:stop] = rates
            fr[:, start:stop] = counts / dt
        else:
            fr[:, start:stop] = rates
        for i, d in enumerate(reps):
            d[:, start:stop] = rng.poisson(np.broadcast_to(rates[i] * dt, (repeats, stop - start))) / dt
        if part.name == "test" and poisson:
            fr[:, start:stop] = np.stack([d[:, start:stop].mean(axis=0) for d in reps])
        tail = movie[-(h - 1) :] if h > 1 else None
        next(steps, None)


class SimulateCommand(Command):
    """``mechlens simulate``: a model's responses to a long stimulus, in the published HDF5 layout."""

    name = "simulate"
    help = "record a model retina's responses to a stimulus into the published HDF5 layout (for training)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", default="synthetic-retina", help="model plugin (default synthetic-retina)")
        parser.add_argument("--stimulus", default="natural-scenes", help="stimulus plugin (default natural-scenes)")
        parser.add_argument("--minutes", type=float, required=True, help="length of the training movie, min")
        parser.add_argument("--test-minutes", type=float, default=1.0, help="length of the test movie, min (0: none)")
        parser.add_argument("--repeats", type=int, default=5, help="Poisson trials per test cell (default 5)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the movies and spikes (default 0)")
        parser.add_argument(
            "--poisson", action="store_true", help="store Poisson spike counts (as Hz) instead of the noiseless rate"
        )
        parser.add_argument("--chunk-s", type=float, default=60.0, help="seconds simulated per chunk (default 60)")
        parser.add_argument(
            "--compression",
            choices=("gzip", "none"),
            default="gzip",
            help="HDF5 compression (default gzip; none writes and reads several times faster)",
        )
        parser.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="STAGE.PARAM=VALUE",
            help="a model or stimulus parameter, e.g. model.gain_control=0.5 (repeatable)",
        )
        parser.add_argument("-o", "--output", type=Path, required=True, help="the .h5 file to write")

    def run(self, args: argparse.Namespace) -> int:
        from mechlens import registry
        from mechlens.config import parse_set
        from mechlens.errors import ConfigError
        from mechlens.progress import log

        params: dict[str, dict[str, Any]] = {"model": {}, "stimulus": {}}
        for item in args.overrides:
            try:
                stage, pname, value = parse_set(item, list(params), example="model.gain_control=0")
            except ConfigError as err:
                raise UsageError(str(err)) from None
            params[stage][pname] = value
        model = registry.get("model", args.model)(**params["model"])
        stim_cls = registry.get("stimulus", args.stimulus)
        path = simulate(
            model,
            stim_cls,
            args.output,
            minutes=args.minutes,
            test_minutes=args.test_minutes,
            repeats=args.repeats,
            seed=args.seed,
            poisson=args.poisson,
            chunk_s=args.chunk_s,
            stimulus_params=params["stimulus"],
            compression=args.compression,
        )
        log.info("wrote %s", path)
        return 0
