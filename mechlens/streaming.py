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
- the reducer runs once, on the first chunk (its stimulus and attribution): its per-unit results
  (components, kept units, types, explained fractions) are those of that sample, and its per-time
  variables cover the first chunk and are NaN (or 0 for integer flags) after it. Attr
  ``reduction_sample_s`` records the sample's time span.

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
    lead = chunks.history - 1
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
            parts = [own, out]
            if k == 0 and reducer is not None:
                red = call(reducer, "reduce", reducer.reduce, merge([stim, out]), model)
                schema.validate(red, "reduction", describe(reducer))
                parts.append(red)
                times = stim["time"].values
                first_attrs["reduction_sample_s"] = [float(times[lead]), float(times[-1])]
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
        if attributor is not None:
            checked = completeness.check(extremes.summary(), describe(attributor), completeness_tolerance, strict)
            final.update(checked.attrs)
            span = extremes.hi - extremes.lo
            rel = extremes.worst / span if span > 0 and math.isfinite(span) else 0.0
            variable_attrs["completeness_error"] = {"max_abs_relative_to_response_range": float(rel)}
        sink.finish(final, variable_attrs)
    except BaseException:
        sink.abort()
        raise
    return sink.open()
