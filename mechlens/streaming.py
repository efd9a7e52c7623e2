"""A long movie streamed through the pipeline in time chunks: memory flat in the movie's length.

:func:`mechlens.pipeline.run` hands a run here when it is given a sink (``mechlens run`` gives one
for its ``-o`` file) and the stimulus is longer than ``chunk_time`` output time points
(:func:`plan`). Each chunk of the movie is rendered on its own (``Stimulus.render_range``, with the
``history - 1`` frames it shares with the previous chunk, so every window is complete), predicted or
attributed, and appended to the output file by the sink (:mod:`mechlens.streamwrite`); only one
chunk is in memory at a time.

What is the same as a run in memory, and what differs (docs/scale-out.md, "Streaming"):

- the stimulus, the response and the attribution (with ``baseline_response``,
  ``completeness_error`` and an attributor's extra per-time variables) are those of one run, chunk
  by chunk, as long as the attributor's numbers at a time point depend only on that time's window:
  then they agree within float32 rounding (batches differ) and are often bit-identical (tested).
  An attributor that looks at the whole movie sees one chunk instead: ``integrated-gradients`` with
  the adaptive rule (``n_steps=0``) measures its tolerance against the response range of the chunk
  (at most the whole movie's, so it refines at least as much), and ``baseline=mean`` would average
  the chunk's frames (refused here: it needs the whole movie);
- the completeness check (``completeness_error_rel``, ``completeness_ok``, ``--strict``) is taken
  over the whole movie at the end, as in memory;
- the reducer runs once the attribution is written, on the whole movie's attribution read back from
  the file without the movie (the ``stimulus`` variable; its other variables, such as event times,
  and its coords stay), so it sees the attribution as stored (float32) and its results agree with a
  run in memory within float32 rounding (tested: the same variables, coords and check attrs). It is
  given the model and attr :data:`mechlens.reduced.DEFERRED_ATTR`: it chooses its kept units without
  the reduced model (:func:`mechlens.reduced.deferred`; ``reduced_model`` does this on its own), and
  the reduced model and its complement then run here on each chunk of the movie rendered again,
  their time courses joined and compared as in memory (:func:`_model_check`). The attribution
  (time x cell x channel) and those time courses (time x cell) are held while reducing: memory
  grows with the movie at that rate, not the movie's (an hour at 100 Hz, 8 cells, 8 channels: 92 MB
  of float32 attribution). An attribution that keeps space (``unit_y``, ``unit_x``) would grow with
  the layer's area as well, so a reducer on one is refused (:func:`check_reduction`), as is
  a reducer that needs the movie itself (it fails for want of ``stimulus``): run those in memory.

A sweep (a ``condition`` dim), a stimulus without ``frame_span``/``render_range``, and a run on a
dask client are never streamed: they run in memory as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

import mechlens.completeness as completeness
import mechlens.memory as memory
import mechlens.parameters as _parameters
import mechlens.reduced as _reduced
import mechlens.schema as schema
from mechlens.errors import PluginError, UsageError

log = logging.getLogger("mechlens")

#: output time points per chunk by default (60 s at 10 ms; 60 MB of 50 x 50 float32 frames)
DEFAULT_CHUNK_TIME = 6000

#: the option that sets the chunk, as the user gives it (named in messages)
OPTION = "run.chunk_time"


@dataclass(frozen=True)
class Plan:
    """How a movie is cut into chunks.

    Attributes
    ----------
    first, stop : int
        The movie's frames ``first .. stop - 1``, counted from time 0 (``first`` < 0: history).
    history : int
        The model's frames per window; a chunk renders ``history - 1`` frames before its own.
    chunk_time : int
        Output time points per chunk.
    """

    first: int
    stop: int
    history: int
    chunk_time: int

    def chunks(self) -> list[tuple[int, int, int]]:
        """``(render_start, own_start, stop)`` per chunk, in frames from time 0.

        A chunk owns frames ``own_start .. stop - 1`` of the result and renders from ``render_start``
        (``own_start - (history - 1)``; the first chunk owns the movie's history frames too, where
        no output exists). Every chunk but the last has ``chunk_time`` output time points.
        """
        lead = self.history - 1
        out: list[tuple[int, int, int]] = []
        start = self.first
        own_stop = min(self.stop, self.first + lead + self.chunk_time)
        out.append((start, start, own_stop))
        while own_stop < self.stop:
            own = own_stop
            own_stop = min(self.stop, own + self.chunk_time)
            out.append((own - lead, own, own_stop))
        return out


def check_chunk_time(chunk_time: Any) -> int:
    """``chunk_time`` as an int >= 0 (0: never stream), or a UsageError naming the value."""
    try:
        value = int(chunk_time)
        ok = value == chunk_time and value >= 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise UsageError(
            f"{OPTION}={chunk_time!r}: give a whole number of output time points per chunk (>= 1), or 0 to never stream"
        )
    return value


def plan(stimulus: Any, params: Any, history: int, chunk_time: int | None) -> Plan | None:
    """The chunks of a streamed run, or None when it runs in memory.

    None when ``chunk_time`` is 0 or None, a parameter is swept, the stimulus cannot render frame
    ranges (``frame_span`` returns None), or the movie has no more than ``chunk_time`` output times.
    """
    if not chunk_time or _parameters.swept(params) is not None:
        return None
    span = stimulus.frame_span(params)
    if span is None:
        return None
    first, stop = int(span[0]), int(span[1])
    if stop - first - (history - 1) <= chunk_time:
        return None
    return Plan(first, stop, int(history), int(chunk_time))


def refuse_whole_movie_baseline(attributor: Any) -> None:
    """A baseline computed from the whole movie cannot be streamed: say so before any work."""
    params = getattr(attributor, "params", None)
    if getattr(params, "baseline", None) == "mean":
        raise UsageError(
            f"attributor {attributor.name!r}: baseline=mean averages the whole movie, which a streamed run "
            f"never holds; use another baseline, or give {OPTION}=0 (--chunk-time 0) to run it in memory"
        )


@dataclass
class _Extremes:
    """Running max |completeness_error| and response range over the chunks (for the whole-movie check)."""

    worst: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def add(self, ds: xr.Dataset) -> None:
        if "completeness_error" in ds and ds["completeness_error"].size:
            self.worst = max(self.worst, float(np.nanmax(np.abs(ds["completeness_error"].values))))
        if "response" in ds and ds["response"].size:
            resp = ds["response"].values
            self.lo, self.hi = min(self.lo, float(np.nanmin(resp))), max(self.hi, float(np.nanmax(resp)))

    def summary(self) -> xr.Dataset:
        """A two-point stand-in with the same max |error| and response range, for :func:`completeness.check`."""
        return xr.Dataset({"completeness_error": ("i", [self.worst, 0.0]), "response": ("i", [self.lo, self.hi])})


def stream(
    model: Any,
    stimulus: Any,
    attributor: Any,
    reducer: Any,
    *,
    params: Any,
    seed: int,
    layer: str | None,
    cells: Sequence[str] | None,
    chunks: Plan,
    sink: Any,
    attrs: Mapping[str, Any],
    call: Callable[..., Any],
    describe: Callable[[Any], str],
    merge: Callable[[Sequence[xr.Dataset]], xr.Dataset],
    completeness_tolerance: float = completeness.DEFAULT_TOLERANCE,
    strict: bool = False,
) -> xr.Dataset:
    """Run the pipeline chunk by chunk into ``sink``; the written result, opened lazily.

    Parameters
    ----------
    model, stimulus, attributor, reducer : Plugin
        Instances (``attributor`` and ``reducer`` may be None).
    params : Parameters
        The stimulus's parameters fitted to the model's grid (``Stimulus.parameters_on``).
    seed : int
        Stimulus seed.
    layer, cells
        As for ``Attributor.attribute``.
    chunks : Plan
        From :func:`plan`.
    sink : mechlens.streamwrite.Sink
        Where pieces go (``write(piece)``, ``finish(attrs, variable_attrs)``, ``abort()``, ``open()``).
    attrs : mapping
        The result's Dataset attrs (provenance), set on the file.
    call : callable
        ``call(plugin, what, fn, *args)``: a plugin's failure as a PluginError naming it.
    describe : callable
        ``describe(plugin)``: the plugin in words, for messages.
    merge : callable
        :func:`mechlens.pipeline.merge`.
    completeness_tolerance, strict
        As for :func:`mechlens.pipeline.run`; checked over the whole movie at the end.

    Returns
    -------
    xarray.Dataset
        The result as written (lazily opened by the sink).
    """
    if attributor is not None:
        refuse_whole_movie_baseline(attributor)
    memory.check_chunk(stimulus.name, chunks.chunk_time, tuple(model.input_shape), model.history, OPTION)
    extremes = _Extremes()
    plan_ = chunks.chunks()
    stimulus_json = _parameters.to_json(params)
    first_attrs: dict[str, Any] = {"streamed_chunk_time": int(chunks.chunk_time)}
    try:
        for k, (render_start, own_start, stop) in enumerate(plan_):
            stim = call(stimulus, "render_range", stimulus.render_range, params, seed, render_start, stop)
            stim.attrs.setdefault("stimulus", stimulus.name)
            stim.attrs.setdefault("stimulus_parameters", stimulus_json)
            stim.attrs.setdefault("seed", int(seed))
            schema.validate(stim, "stimulus", describe(stimulus))
            if stim.sizes.get("time") != stop - render_start:
                raise PluginError(
                    f"{describe(stimulus)}: render_range({render_start}, {stop}) returned "
                    f"{stim.sizes.get('time')} frames, not {stop - render_start}; the plugin is broken"
                )
            own = stim if k == 0 else stim.isel(time=slice(own_start - render_start, None))
            if attributor is None:
                out = call(model, "predict", model.predict, stim)
                schema.validate(out, "response", describe(model))
            else:
                out = call(attributor, "attribute", attributor.attribute, model, stim, layer, cells)
                schema.validate(out, "attribution", describe(attributor))
                extremes.add(out)
            if k == 0 and reducer is not None:
                check_reduction(out, describe(reducer), chunks.stop - chunks.first)
            parts = [own, out]
            piece = merge(parts)
            if k == 0:
                # as in memory: a title the stimulus gave is kept, the provenance is the pipeline's
                piece.attrs.update({key: v for key, v in attrs.items() if key != "title"})
                piece.attrs.update(first_attrs)
                if attrs.get("title"):
                    piece.attrs.setdefault("title", attrs["title"])
            sink.write(piece)
            log.info("chunk %d/%d: frames %d .. %d written", k + 1, len(plan_), own_start, stop - 1)
            del stim, own, out, parts, piece
        final: dict[str, Any] = {}
        variable_attrs: dict[str, dict[str, Any]] = {}
        if attributor is not None:  # before the reducer, as in memory: --strict refuses before reducing
            checked = completeness.check(extremes.summary(), describe(attributor), completeness_tolerance, strict)
            final.update(checked.attrs)
            span = extremes.hi - extremes.lo
            rel = extremes.worst / span if span > 0 and math.isfinite(span) else 0.0
            variable_attrs["completeness_error"] = {"max_abs_relative_to_response_range": float(rel)}
        if reducer is not None:
            final.update(
                _reduce(model, stimulus, reducer, params=params, seed=seed, chunks=chunks, sink=sink, call=call,
                        describe=describe, merge=merge)
            )  # fmt: skip
        sink.finish(final, variable_attrs)
    except BaseException:
        sink.abort()
        raise
    return sink.open()


#: copies of the whole attribution alive while a streamed run reduces it (read back as float32; the
#: reducer's float64 copy and its per-type sums)
REDUCE_COPIES = 4.0


def check_reduction(attribution: xr.Dataset, reducer: str, n_time: int) -> None:
    """Refuse a reducer a streamed run cannot give the whole attribution, from the first chunk's attribution.

    The streamed reducer reads the whole attribution back into memory (:func:`_reduce`). Per channel
    that is small (time x cell x channel: an hour at 100 Hz, 8 cells, 8 channels is 92 MB float32)
    and is checked against the memory budget here, before the movie is attributed, counted
    :data:`REDUCE_COPIES` times in float64. Per position of a kept space (``unit_y``, ``unit_x``) it
    grows with the layer's area too and would bring back the memory streaming saves: refused
    (pooling space instead would change what the reducer reports).

    Parameters
    ----------
    attribution : xarray.Dataset
        The first chunk's attribution.
    reducer : str
        The reducer in words, for messages.
    n_time : int
        Time points of the whole movie (history frames included).

    Raises
    ------
    UsageError
        The attribution keeps space.
    MemoryBudgetError
        The whole attribution would not fit the budget.
    """
    attr = attribution.get("attribution", xr.DataArray())
    spatial = [d for d in ("unit_y", "unit_x") if d in attr.dims]
    if spatial:
        raise UsageError(
            f"{reducer}: a streamed run reduces the whole attribution in memory, and this one keeps space "
            f"({', '.join(spatial)}), which grows with the layer's area; attribute per channel (keep_space=false), "
            f"or give {OPTION}=0 (--chunk-time 0) to run in memory"
        )
    per_time = int(np.prod([n for d, n in attr.sizes.items() if d != "time"]))
    memory.check(
        REDUCE_COPIES * 8.0 * per_time * n_time,
        "stimulus.duration",
        f"{reducer}: the whole movie's attribution ({n_time} time points x {per_time} values), which a streamed "
        "run reduces in memory,",
        "shorten the movie",
        "or run without a reducer",
    )


def _reduce(
    model: Any,
    stimulus: Any,
    reducer: Any,
    *,
    params: Any,
    seed: int,
    chunks: Plan,
    sink: Any,
    call: Callable[..., Any],
    describe: Callable[[Any], str],
    merge: Callable[[Sequence[xr.Dataset]], xr.Dataset],
) -> dict[str, Any]:
    """Reduce the whole streamed attribution and add the reduced model's check, chunk by chunk; the attrs to set.

    The reducer gets the attribution Dataset as written (every variable but the movie, read back into
    memory: per channel it is small) with the model and attr :data:`mechlens.reduced.DEFERRED_ATTR`,
    so it chooses its kept units without rerunning the model (:func:`mechlens.reduced.deferred`). The
    reduced model and its complement then run here on each chunk of the movie, rendered again, at
    that chunk's attributed times; their time courses (time x cell, as small as the attribution) are
    joined and compared as :func:`mechlens.reduced.compare` compares those of a run in memory.
    """
    ds = sink.read_back(drop=("stimulus",))
    ds.attrs[_reduced.DEFERRED_ATTR] = 1
    red = call(reducer, "reduce", reducer.reduce, ds, model)
    red.attrs.pop(_reduced.DEFERRED_ATTR, None)
    if "kept" in red.data_vars and "reduced_response" not in red.data_vars:
        red = _model_check(model, stimulus, red, ds, params=params, seed=seed, chunks=chunks, call=call)
    schema.validate(red, "reduction", describe(reducer))
    attrs = dict(red.attrs)
    # per-time variables on the file's whole time axis (NaN over the history frames), as a merged run has them
    bare = red.copy()
    bare.attrs = {}  # the attrs go in at the end, with the run's (Sink.finish)
    sink.add(merge([xr.Dataset(coords={"time": ds["time"]}), bare]))
    return attrs


def _model_check(
    model: Any,
    stimulus: Any,
    red: xr.Dataset,
    ds: xr.Dataset,
    *,
    params: Any,
    seed: int,
    chunks: Plan,
    call: Callable[..., Any],
) -> xr.Dataset:
    """``red`` with the reduced model's variables and check attrs, the model rerun on the movie chunk by chunk."""
    kept = red["kept"].astype(bool)
    layer = str(red.attrs.get("layer") or ds["attribution"].attrs.get("layer") or ds.attrs.get("layer") or "")
    if not layer:
        names = list(model.layers())
        layer = names[0] if len(names) == 1 else ""
    layer = model.check_layer(layer)
    times = _reduced.attributed_times(ds)
    cells = [str(c) for c in ds["attribution"]["cell"].values]
    baseline = _reduced.baseline_windows(ds, model)
    runs: list[dict[str, xr.DataArray]] = []
    for render_start, _own, stop in chunks.chunks():
        movie = call(stimulus, "render_range", stimulus.render_range, params, seed, render_start, stop)["stimulus"]
        out_t = model.time_of_outputs(movie).values
        these = times[(times >= out_t[0] - _reduced.TIME_TOL) & (times <= out_t[-1] + _reduced.TIME_TOL)]
        if len(these):
            runs.append(_reduced.run_reduced(model, layer, movie, kept, times=these, cells=cells, baseline=baseline))
        del movie
    res = {key: xr.concat([r[key] for r in runs], "time") for key in ("reduced", "complement", "full")}
    res["baseline"] = runs[0]["baseline"]
    res = {k: v.assign_coords(time=times) if "time" in v.dims else v for k, v in res.items()}
    window = None
    if "reduction_window" in red.data_vars:
        window = red["reduction_window"].astype(bool).sel(time=times, method="nearest", tolerance=_reduced.TIME_TOL)
    check = float(red.attrs.get("check_fraction", 0.5))
    core = _reduced.compare(res, kept, window, check)
    for name in core.data_vars:
        if name != "kept":
            red[name] = core[name].assign_coords(
                {d: ds["attribution"][d] for d in core[name].dims if d in ds.coords and d != "time"}
            )
    return red.assign_attrs({k: core.attrs[k] for k in _CHECK_ATTRS})


#: the reduced-model check's attrs (:func:`mechlens.reduced.check_attrs`)
_CHECK_ATTRS = ("all_kept", "reduction_check", "check_fraction", "check_kept", "check_complement")
