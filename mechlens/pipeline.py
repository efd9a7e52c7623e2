"""The pipeline: stimulus -> model -> attributor -> reducer, one labeled Dataset out.

Library use::

    import mechlens
    ds = mechlens.run(model="my-cnn", stimulus="osr", attributor="integrated-gradients",
                      reducer="cell-types", stimulus_params={"period": [0.06, 0.1]})

Every stage's output is validated against :mod:`mechlens.schema` with the producing plugin named in
the error, and the merged Dataset carries provenance attrs (plugins, distributions, parameters as
JSON, checkpoint sha256, seed, mechlens version, creation time).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

import mechlens.completeness as completeness

# ``import mechlens.x as y``, not ``from mechlens import x``: the same modules, but read without the
# package facade (mechlens/__init__.py imports this module for mechlens.run), which keeps the layering
# interfaces <- registry <- pipeline visible to the structure checks (tests/test_structure.py).
import mechlens.interfaces as _interfaces
import mechlens.parameters as _parameters
import mechlens.registry as _registry
import mechlens.schema as schema
from mechlens.errors import MechlensError, PluginError, UsageError
from mechlens.interfaces import Attributor, Experiment, Model, Plugin, Reducer, Stimulus

log = logging.getLogger("mechlens")

PluginSpec = str | type[Any] | Plugin | None


def instantiate(
    kind: str,
    spec: PluginSpec,
    params: Mapping[str, Any] | None = None,
    registry: _registry.Registry | None = None,
) -> Plugin | None:
    """Turn a plugin spec (registry name, class or instance) into an instance.

    Parameters
    ----------
    kind : str
        Plugin kind (``"model"``, ...).
    spec : str, type, Plugin or None
        A registry name, a plugin class, or a ready instance (then ``params`` must be empty).
    params : mapping, optional
        Parameter values for the class.
    registry : Registry, optional
        Where names are looked up (default: the process-wide registry).
    """
    if spec is None:
        return None
    params = dict(params or {})
    if isinstance(spec, Plugin):
        if params:
            raise UsageError(f"{kind} {spec.name!r} is already an instance; pass its parameters when creating it")
        return spec
    cls = spec if isinstance(spec, type) else (registry or _registry.default()).get(kind, spec)
    try:
        return cls(**params)
    except MechlensError:
        raise  # parameter errors already name the plugin and the parameter
    except Exception as err:
        # a third party's constructor may raise anything: name the plugin and where it comes from
        entry = (registry or _registry.default()).find(cls)
        name = entry.name if entry is not None else getattr(cls, "name", cls.__name__)
        origin = ""
        if entry is not None and entry.distribution:
            origin = f" (distribution {entry.distribution}{' ' + entry.version if entry.version else ''})"
        raise PluginError(
            f"{kind} plugin {name!r}{origin} failed to start: {type(err).__name__}: {err}. Check its parameters; "
            "if they are right, the plugin itself is broken: report it to its authors"
        ) from err


def checkpoint_parameters(cls: type[Model]) -> frozenset[str] | None:
    """The parameters ``cls.load`` takes beside the checkpoint path (runtime ones, e.g. ``device``); None: any.

    Read from the signature of ``cls.load``: a model that can run a checkpoint with some
    parameters of its own (never its architecture, which the checkpoint fixes) declares them as
    keyword arguments of ``load``, e.g. ``load(cls, path, *, device=None)``.
    """
    names: list[str] = []
    for i, p in enumerate(inspect.signature(cls.load).parameters.values()):
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if i > 0 and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.append(p.name)
    return frozenset(names)


def checkpoint_conflicts(cls: type[Model], params: Mapping[str, Any] | None) -> list[str]:
    """The names in ``params`` that cannot be given with a checkpoint of ``cls`` (see :func:`checkpoint_parameters`)."""
    allowed = checkpoint_parameters(cls)
    return [k for k in (params or {}) if allowed is not None and k not in allowed]


def load_model(
    model: PluginSpec,
    params: Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    registry: _registry.Registry | None = None,
) -> Model:
    """A model instance: constructed from ``params``, or loaded from ``checkpoint`` with ``Model.load``.

    The one owner of the rule on checkpoints and parameters: with a checkpoint only the parameters
    that the model's ``load`` takes (:func:`checkpoint_parameters`) may be given.

    Raises
    ------
    UsageError
        A parameter the checkpoint fixes was given with it.
    """
    if checkpoint is None or checkpoint == "":
        m = instantiate("model", model, params, registry)
        assert isinstance(m, Model)
        return m
    cls = model if isinstance(model, type) else (registry or _registry.default()).get("model", str(model))
    refused = checkpoint_conflicts(cls, params)
    if refused:
        allowed = sorted(checkpoint_parameters(cls) or ())
        raise UsageError(
            f"give either a model checkpoint or model parameters, not both: model {cls.name!r} loaded from a "
            f"checkpoint takes {'only ' + ', '.join(allowed) if allowed else 'no parameter'} "
            f"(given: {', '.join(refused)})"
        )
    return cls.load(checkpoint, **dict(params or {}))


def _registry_name(plugin: Plugin, registry: _registry.Registry | None) -> tuple[str, str, str]:
    """(name to look the plugin up by, distribution, version); the name is qualified after a name clash."""
    entry = (registry or _registry.default()).find(type(plugin))
    if entry is None:
        return plugin.name, "", ""
    return entry.name, entry.distribution, entry.version


def describe(plugin: Plugin, registry: _registry.Registry | None = None) -> str:
    """``"stimulus plugin 'osr' (distribution mechlens)"``, for messages."""
    name, dist, _ = _registry_name(plugin, registry)
    return f"{plugin.kind} plugin {name!r}" + (f" (distribution {dist})" if dist else "")


def provenance(plugin: Plugin, stage: str, registry: _registry.Registry | None = None) -> dict[str, Any]:
    """Provenance attrs of one stage: name (as the registry knows it), distribution, version, parameters (JSON)."""
    name, dist, version = _registry_name(plugin, registry)
    return {
        stage: name,
        f"{stage}_distribution": dist,
        f"{stage}_version": version,
        f"{stage}_parameters": plugin.parameters_json(),
    }


def _call(plugin: Plugin, what: str, fn: Any, *args: Any, registry: _registry.Registry | None = None) -> Any:
    try:
        return fn(*args)
    except MechlensError:
        raise
    except Exception as err:
        raise PluginError(f"{describe(plugin, registry)} failed in {what}: {type(err).__name__}: {err}") from err


def run(
    model: PluginSpec,
    stimulus: PluginSpec,
    attributor: PluginSpec = None,
    reducer: PluginSpec = None,
    *,
    model_params: Mapping[str, Any] | None = None,
    stimulus_params: Mapping[str, Any] | None = None,
    attributor_params: Mapping[str, Any] | None = None,
    reducer_params: Mapping[str, Any] | None = None,
    model_checkpoint: str | Path | None = None,
    layer: str | None = None,
    cells: Sequence[str] | None = None,
    seed: int = 0,
    registry: _registry.Registry | None = None,
    client: Any = None,
    store: str | Path | None = None,
    n_parts: int | None = None,
    cell_groups: int | None = None,
    completeness_tolerance: float = completeness.DEFAULT_TOLERANCE,
    strict: bool = False,
    sink: Any = None,
    chunk_time: int | None = None,
) -> xr.Dataset:
    """Run stimulus -> model [-> attributor [-> reducer]] and return the merged Dataset.

    Parameters
    ----------
    model, stimulus, attributor, reducer : str, type or Plugin
        Registry names, classes or instances. ``attributor`` and ``reducer`` are optional; without an
        attributor the model's prediction is returned.
    model_params, stimulus_params, attributor_params, reducer_params : mapping, optional
        Parameters of each stage (checked against the plugin's declared Parameters).
    model_checkpoint : path, optional
        Load the model from this checkpoint with ``Model.load`` instead of constructing it.
    layer : str, optional
        Hidden layer to attribute (default: the model's first layer).
    cells : sequence of str, optional
        Cells to attribute (default: all).
    seed : int
        Stimulus seed.
    registry : Registry, optional
        Where names are looked up.
    client : dask.distributed.Client, optional
        Compute the attribution in parts on this cluster (:mod:`mechlens.distributed`; the same result).
    store : path, optional
        A ``*.zarr`` store the attribution's parts are written into as they finish; a run started
        again resumes from it (:mod:`mechlens.zarrstore`). Save the result there with ``io.save``.
    n_parts : int, optional
        About how many parts to split the attribution into (default: 2 per worker; 8 without a client).
    cell_groups : int, optional
        Split the attribution's cells into this many groups, each part holding one group (default 1:
        cells not split). Needs an attributor that computes each cell independently of the others
        (``"cell"`` in its ``shard_dims``; integrated gradients with a fixed ``n_steps``); a run with
        cell groups runs in parts and is not streamed.
    completeness_tolerance : float
        Largest completeness error of the attribution accepted without a warning, as a fraction of
        the response range (:mod:`mechlens.completeness`; recorded as ``completeness_ok``).
    strict : bool
        Refuse an attribution above the tolerance (:class:`~mechlens.completeness.IncompleteAttributionError`)
        instead of warning.
    sink : mechlens.streamwrite.Sink, optional
        Where a streamed run writes its result (``mechlens.streamwrite.open_sink(path)``). With a sink
        and no ``client``, a movie longer than ``chunk_time`` output time points is streamed through
        the stages in chunks, written as it goes, and the written result is returned, opened lazily
        (:mod:`mechlens.streaming`: memory flat in the movie's length; what differs from a run in
        memory is listed there). A shorter movie runs in memory as without a sink (save it yourself).
    chunk_time : int, optional
        Output time points per chunk of a streamed run (default
        :data:`mechlens.streaming.DEFAULT_CHUNK_TIME`; 0: never stream).

    Returns
    -------
    xarray.Dataset
        ``stimulus`` and the stage outputs (``response``; ``attribution``, ``baseline_response``,
        ``completeness_error``; ``weights``, ``components``, ``reduced_response``), with provenance attrs.
        Per-time model outputs are NaN over the stimulus's history frames, where no full window exists.
    """
    if reducer is not None and attributor is None:
        raise UsageError("a reducer needs an attributor: name one (e.g. --attributor integrated-gradients)")
    seed = _parameters.check_seed(seed)  # before any work: a seed that cannot be stored fails only at the save
    completeness_tolerance = completeness.check_tolerance(completeness_tolerance)
    m = load_model(model, model_params, model_checkpoint, registry)
    if cells is not None:
        unknown = [c for c in cells if c not in m.cells]
        if unknown:
            raise UsageError(f"model {m.name!r} has no cells {unknown}; its cells are {', '.join(m.cells)}")
    s = instantiate("stimulus", stimulus, stimulus_params, registry)
    a = instantiate("attributor", attributor, attributor_params, registry)
    r = instantiate("reducer", reducer, reducer_params, registry)
    assert isinstance(m, Model) and isinstance(s, Stimulus)
    layer = m.check_layer(layer) if a is not None else layer
    split_cells = int(cell_groups or 1) > 1
    if sink is not None and client is None and not split_cells:
        streamed = _stream(m, s, a, r, layer, cells, seed, registry, sink, chunk_time, completeness_tolerance, strict)
        if streamed is not None:
            return streamed

    log.info("stimulus %s", s.name)
    if getattr(s, "needs_model", False):  # a model-dependent stimulus (an MEI) is computed on the model itself
        s.model = m  # type: ignore[attr-defined]
    # on the model's grid: a stimulus that can fit it renders on it (Stimulus.on_grid)
    stim = _call(s, "generate", s.generate, seed, m.grid, registry=registry)
    schema.validate(stim, "stimulus", describe(s, registry))
    parts = [stim]
    attrs: dict[str, Any] = {}
    attrs.update(provenance(m, "model", registry))
    attrs.update(provenance(s, "stimulus", registry))
    # the parameters it was rendered with (those left to the model's grid filled in)
    attrs["stimulus_parameters"] = str(stim.attrs.get("stimulus_parameters", attrs["stimulus_parameters"]))
    attrs["model_checkpoint_sha256"] = m.checkpoint_sha256()
    attrs["seed"] = int(seed)

    if a is None:
        log.info("model %s: predict", m.name)
        out = _call(m, "predict", m.predict, stim, registry=registry)
        schema.validate(out, "response", describe(m, registry))
        parts.append(out)
    else:
        assert isinstance(a, Attributor)
        log.info("attributor %s on layer %s", a.name, layer)
        if (
            client is not None or store is not None or n_parts is not None or split_cells
        ):  # in parts (mechlens.distributed)
            import mechlens.distributed as _distributed

            out = _distributed.attribute(
                a, m, stim, layer, cells,
                stages=_distributed.Stages(load_model, instantiate, _call),
                recipe=_distributed.recipe_of(model, model_params, model_checkpoint, registry),
                attributor_spec=_distributed.plugin_of("attributor", attributor, attributor_params, registry),
                identity={**attrs, **provenance(a, "attributor", registry), "layer": layer, "cells": cells},
                client=client, store=store, parts=n_parts, cell_groups=cell_groups,
            )  # fmt: skip
        else:
            out = _call(a, "attribute", a.attribute, m, stim, layer, cells, registry=registry)
        schema.validate(out, "attribution", describe(a, registry))
        out = completeness.check(out, describe(a, registry), completeness_tolerance, strict)
        parts.append(out)
        attrs.update(provenance(a, "attributor", registry))
        attrs["layer"] = layer
        if r is not None:
            assert isinstance(r, Reducer)
            log.info("reducer %s", r.name)
            merged = merge([stim, out])
            red = _call(r, "reduce", r.reduce, merged, m, registry=registry)
            schema.validate(red, "reduction", describe(r, registry))
            parts.append(red)
            attrs.update(provenance(r, "reducer", registry))

    ds = merge(parts)
    ds.attrs.update(attrs)
    ds.attrs["mechlens_version"] = mechlens_version()
    ds.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    ds.attrs.setdefault("title", f"mechlens: {m.name} on {s.name}")
    return ds


def _stream(
    m: Model,
    s: Stimulus,
    a: Plugin | None,
    r: Plugin | None,
    layer: str | None,
    cells: Sequence[str] | None,
    seed: int,
    registry: _registry.Registry | None,
    sink: Any,
    chunk_time: int | None,
    tolerance: float,
    strict: bool,
) -> xr.Dataset | None:
    """The run streamed in time chunks into ``sink`` (:mod:`mechlens.streaming`), or None when it runs in memory."""
    import mechlens.streaming as _streaming

    chunk = _streaming.DEFAULT_CHUNK_TIME if chunk_time is None else _streaming.check_chunk_time(chunk_time)
    params = s.parameters_on(m.grid)
    chunks = _streaming.plan(s, params, m.history, chunk)
    if chunks is None:
        return None
    log.info("stimulus %s streamed in chunks of %d time points", s.name, chunk)
    attrs: dict[str, Any] = {**provenance(m, "model", registry), **provenance(s, "stimulus", registry)}
    attrs["stimulus_parameters"] = _parameters.to_json(params)
    attrs["model_checkpoint_sha256"] = m.checkpoint_sha256()
    attrs["seed"] = int(seed)
    if a is not None:
        attrs.update(provenance(a, "attributor", registry))
        attrs["layer"] = layer
    if r is not None:
        attrs.update(provenance(r, "reducer", registry))
    attrs["mechlens_version"] = mechlens_version()
    attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    attrs["title"] = f"mechlens: {m.name} on {s.name}"
    return _streaming.stream(
        m, s, a, r,
        params=params, seed=seed, layer=layer, cells=cells, chunks=chunks, sink=sink, attrs=attrs,
        call=lambda plugin, what, fn, *args: _call(plugin, what, fn, *args, registry=registry),
        describe=lambda plugin: describe(plugin, registry),
        merge=merge, completeness_tolerance=tolerance, strict=strict,
    )  # fmt: skip


def merge(parts: Sequence[xr.Dataset]) -> xr.Dataset:
    """Merge stage outputs on their shared coords; per-time outputs are NaN where the stimulus has history only."""
    attrs: dict[str, Any] = {}
    for p in parts:
        attrs.update(p.attrs)
    ds = xr.merge(parts, join="outer", compat="override", combine_attrs="drop")
    ds.attrs.update(attrs)
    # merge drops variable attrs (units, layer, ...) with combine_attrs="drop"; restore them
    for p in parts:
        for name, var in p.variables.items():
            if name in ds.variables:
                for k, v in var.attrs.items():
                    ds[name].attrs.setdefault(k, v)
    return ds


def mechlens_version() -> str:
    """The installed mechlens version, for provenance (``mechlens.__version__`` of an installed copy).

    Read from the distribution's metadata rather than ``mechlens.__version__``: importing the package
    facade from here would close the circle mechlens -> mechlens.pipeline -> mechlens (issue 19).
    """
    try:
        return importlib.metadata.version("mechlens")
    except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
        return "0+unknown"


# -- experiments -----------------------------------------------------------------------------------
def run_stages(
    experiment: Experiment,
    model: Model,
    seed: int = 0,
    cells: Sequence[str] | None = None,
    registry: _registry.Registry | None = None,
) -> xr.Dataset:
    """Run the stages an experiment declares (its stimulus, attributor and reducer) on ``model``.

    What the default ``Experiment.run`` did; an override that adds control runs calls this for the
    declared stages.

    Parameters
    ----------
    experiment : Experiment
        The recipe.
    model : Model
        The model instance.
    seed : int
        Stimulus seed.
    cells : sequence of str, optional
        The cells to attribute (resolved from ``experiment.cells`` by the caller).
    registry : Registry, optional
        Where the stage names are looked up (default: the process-wide registry).

    Returns
    -------
    xarray.Dataset
        The merged pipeline Dataset (see :func:`run`).
    """
    return run(
        model,
        experiment.stimulus,
        experiment.attributor or None,
        experiment.reducer or None,
        stimulus_params=experiment.stimulus_parameters(model),
        attributor_params=experiment.attributor_params,
        reducer_params=experiment.reducer_params,
        layer=experiment.layer,
        cells=cells,
        seed=seed,
        registry=registry,
    )


def run_recipe(
    experiment: Experiment,
    model: Model,
    seed: int = 0,
    cells: Sequence[str] | None = None,
    registry: _registry.Registry | None = None,
) -> xr.Dataset:
    """Run an experiment's pipeline: its own ``run`` when it overrides it (control runs), else :func:`run_stages`.

    Parameters are those of :func:`run_stages`. :func:`mechlens.experiments.run_experiment` calls
    this, then adds the window, the measure and the generic numbers.
    """
    if type(experiment).run is not Experiment.run:
        return experiment.run(model, seed, cells, registry)
    return run_stages(experiment, model, seed, cells, registry)


# The deprecated default Experiment.run reaches the pipeline through this slot, so that
# mechlens.interfaces imports nothing above it (see mechlens.interfaces._stage_runner).
_interfaces._stage_runner = run_stages
