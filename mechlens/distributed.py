"""Scale-out: a run split into independent, seeded parts, on a dask cluster or in this process.

What is split (docs/scale-out.md):

- **experiments** (``mechlens run`` without a stimulus, :func:`mechlens.experiments.run_all`): one
  task per (model, experiment); each loads its model in the worker (cached per worker process) and
  runs the whole experiment, so the results are those of a serial run;
- **a pipeline's attribution** (:func:`mechlens.pipeline.run`): one task per :class:`Part`, a
  condition of a sweep, a group of cells (when asked for: ``cell_groups``) and a group of whole
  chunks of output times. The attributor computes a part with the context of the whole problem
  (baseline, response span, chunking, AD mode) through its
  ``attribute_part(model, stimulus, layer, cells, part)`` and declares the dims it can be split
  along in ``shard_dims`` (the built-in ``mechlens_attribution`` attributors: ``("condition", "time",
  "cell")``, without ``"cell"`` where a number depends on the set of cells: the adaptive rule of
  integrated gradients refines a time point until every cell meets the tolerance); an attributor
  without them runs as one part. The stimulus is generated once and the reducer runs once, on the
  merged attribution, in the calling process.

:func:`merge_parts` is the one merge: pieces are concatenated along ``time`` within a condition and
cell group, then along ``cell``, then along ``condition``; variables without those dims and every
attr are taken from the first piece, and the completeness error's
``max_abs_relative_to_response_range`` attr is recomputed over the whole. The result equals one
call bit for bit (each part computes the same chunks as one call; workers run torch with one
thread, so a serial run with several torch threads agrees within float32 rounding).

Engines: none by default (everything in this process, exactly as before); :func:`engine` starts a
``dask.distributed.LocalCluster`` of N single-threaded worker processes (torch, numba and BLAS
limited to one thread each) or connects to a running scheduler (``--scheduler`` /
``MECHLENS_SCHEDULER``). dask.distributed and zarr are the optional extra ``mechlens[scale]``, imported
only here and in :mod:`mechlens.zarrstore`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import MechlensError, PluginError, UsageError

log = logging.getLogger("mechlens")

#: how to get the optional dependencies, for messages
INSTALL_HINT = "pip install 'mechlens[scale]'"

#: environment variable naming a running dask scheduler (``tcp://host:8786``), like ``--scheduler``
SCHEDULER_ENV = "MECHLENS_SCHEDULER"

#: environment of LocalCluster workers: one thread each for torch (OpenMP), BLAS and numba, so that N
#: single-threaded workers use N cores and do not oversubscribe them
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}

#: dask configuration while a LocalCluster starts: variables set before a worker process starts
#: (None unsets one of dask's defaults); see start_client
WORKER_PRE_SPAWN_ENV = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

#: time groups per worker thread when the number of parts is not given (load balance vs overhead)
PARTS_PER_WORKER = 2


def require(module: str) -> Any:
    """Import an optional dependency of scale-out, or raise a UsageError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UsageError(f"scale-out needs {module.split('.')[0]} ({err}); install it with {INSTALL_HINT}") from None


# -- engine ----------------------------------------------------------------------------------------
def start_client(workers: int | None = None, scheduler: str | None = None) -> Any:
    """A ``dask.distributed.Client``: on a new LocalCluster of ``workers`` processes, or on ``scheduler``.

    Parameters
    ----------
    workers : int, optional
        Start an embedded LocalCluster of this many worker processes (one thread each).
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); default ``$MECHLENS_SCHEDULER``.

    Returns
    -------
    Client or None
        None when neither is given: the run stays in this process.
    """
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if workers is not None and scheduler:
        raise UsageError(
            f"give either --workers (a cluster on this machine) or --scheduler / ${SCHEDULER_ENV} (a running one)"
        )
    if workers is None and not scheduler:
        return None
    dd = require("dask.distributed")
    if scheduler:
        try:
            return dd.Client(scheduler, timeout="30s")
        except OSError as err:
            raise UsageError(f"cannot reach the dask scheduler at {scheduler}: {err}") from None
    if int(workers or 0) < 1:
        raise UsageError(f"--workers {workers}: give at least 1 worker process")
    import dask

    # dask starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory back to the OS);
    # a fixed threshold also turns off glibc's adaptive mmap threshold, so every large tensor of an
    # attribution is mmap-ed, page-faulted and unmapped again (500 white-noise points of integrated
    # gradients on one thread: 37.3 s in a plain process, 45.4 s with it). None leaves glibc's default.
    with dask.config.set(WORKER_PRE_SPAWN_ENV):
        cluster = dd.LocalCluster(
            n_workers=int(workers or 1),
            threads_per_worker=1,
            processes=True,
            env=dict(WORKER_ENV),
            dashboard_address=":0",  # any free port: never clash with another cluster
            silence_logs=logging.ERROR,
        )
    return dd.Client(cluster)


@contextlib.contextmanager
def engine(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """:func:`start_client` as a context: the client (and a LocalCluster it started) is closed on exit."""
    client = start_client(workers, scheduler)
    try:
        yield client
    finally:
        if client is not None:
            cluster = client.cluster if workers is not None else None
            with contextlib.suppress(Exception):
                client.close()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close()


def worker_threads(client: Any) -> int:
    """Total worker threads of a client's cluster (at least 1)."""
    try:
        return max(1, sum(int(n) for n in client.nthreads().values()))
    except Exception:  # noqa: BLE001 - a cluster that cannot tell: plan for one
        return 1


# -- parts -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One independent piece of an attribution.

    Attributes
    ----------
    index : int
        Position in the plan (and in a zarr store's progress record).
    condition : int or None
        The condition's index (None: every condition).
    time : (k, n) or None
        The ``k``-th of ``n`` groups of whole chunks of output times (None: all times).
    cells : (k, n) or None
        The ``k``-th of ``n`` groups of the run's cells (:func:`group_bounds`; None: all cells).
    """

    index: int
    condition: int | None = None
    time: tuple[int, int] | None = None
    cells: tuple[int, int] | None = None

    @property
    def whole(self) -> bool:
        """Whether this part is the whole problem (computed by ``attribute``, not ``attribute_part``)."""
        return self.condition is None and self.time is None and self.cells is None

    def spec(self, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``part`` mapping passed to ``Attributor.attribute_part``.

        ``context`` (from the attributor's optional ``part_context``, computed once per run) travels
        with every part under the key ``"context"``, so that no part recomputes what the whole
        problem shares (e.g. the response range over the whole stimulus: a forward pass over all of it).
        """
        out: dict[str, Any] = {"condition": self.condition, "time": self.time}
        if self.cells is not None:  # only then: an attributor that cannot split cells never sees the key
            out["cells"] = self.cells
        if context:
            out["context"] = dict(context)
        return out


def split_dims(attributor: Any) -> tuple[str, ...]:
    """The dims ``attributor`` can be split along exactly (empty: it runs as one part)."""
    if not callable(getattr(attributor, "attribute_part", None)):
        return ()
    return tuple(d for d in getattr(attributor, "shard_dims", ()) if d in ("condition", "time", "cell"))


def group_bounds(n_items: int, k: int, n: int) -> tuple[int, int]:
    """Items ``[lo, hi)`` of the ``k``-th of ``n`` near-equal groups of ``n_items`` (in order; sizes differ by <= 1).

    >>> [group_bounds(5, k, 2) for k in range(2)]
    [(0, 2), (2, 5)]
    """
    if not 0 <= k < n:
        raise UsageError(f"group {k} of {n}: k must be in [0, {n})")
    return (n_items * k) // n, (n_items * (k + 1)) // n


def plan(attributor: Any, stimulus: xr.Dataset, parts: int, cell_groups: int = 1, n_cells: int = 1) -> list[Part]:
    """Split an attribution of ``stimulus`` into about ``parts`` parts (conditions x cell groups x time groups).

    Parameters
    ----------
    attributor : Attributor
        Its ``shard_dims`` say what may be split.
    stimulus : xarray.Dataset
        The generated stimulus (its conditions).
    parts : int
        About how many parts in all; time groups make up what conditions and cell groups do not.
    cell_groups : int
        Groups of cells (1: cells are not split); at most ``n_cells``.
    n_cells : int
        Cells of the run.

    Raises
    ------
    UsageError
        If cells are to be split and the attributor cannot split them exactly.
    """
    dims = split_dims(attributor)
    if int(cell_groups) < 1:
        raise UsageError(f"cell_groups={cell_groups}: give at least 1 (1: cells are not split)")
    if int(cell_groups) > 1 and "cell" not in dims:
        name = getattr(attributor, "name", type(attributor).__name__)
        raise UsageError(
            f"cell_groups={cell_groups}: attributor {name!r} cannot be split by cells exactly (its shard_dims are "
            f"{list(dims)}: its numbers depend on the set of cells, e.g. integrated gradients' adaptive rule; "
            "give it a fixed n_steps, e.g. --set attributor.n_steps=64), or leave cell_groups at 1 (docs/scale-out.md)"
        )
    n_cond = stimulus.sizes.get("condition", 0) if "condition" in stimulus["stimulus"].dims else 0
    conditions: list[int | None] = list(range(n_cond)) if ("condition" in dims and n_cond) else [None]
    n_groups = min(int(cell_groups), max(1, int(n_cells)))
    cell_parts: list[tuple[int, int] | None] = [(k, n_groups) for k in range(n_groups)] if n_groups > 1 else [None]
    groups = max(1, -(-int(parts) // (len(conditions) * len(cell_parts)))) if "time" in dims else 1
    out: list[Part] = []
    for c in conditions:
        for cells in cell_parts:
            for k in range(groups):
                out.append(Part(len(out), c, (k, groups) if "time" in dims else None, cells))
    return out


# -- tasks (run in the workers) --------------------------------------------------------------------
#: models loaded in this (worker) process, by recipe: each worker loads a model once per run
_MODELS: dict[str, Any] = {}


def _recipe_key(recipe: tuple[Any, Any, Any]) -> str:
    spec, params, checkpoint = recipe
    name = f"{spec.__module__}.{spec.__qualname__}" if isinstance(spec, type) else str(spec)
    return json.dumps([name, dict(params or {}), str(checkpoint or "")], sort_keys=True, default=str)


@dataclass(frozen=True)
class Stages:
    """How a task makes its plugins: the pipeline's own functions, handed down (the pipeline is a layer above).

    Attributes
    ----------
    load_model : callable
        ``load_model(spec, params, checkpoint)`` (:func:`mechlens.pipeline.load_model`).
    instantiate : callable
        ``instantiate(kind, spec, params)`` (:func:`mechlens.pipeline.instantiate`).
    call : callable
        ``call(plugin, what, fn, *args)``: a plugin's failure as a PluginError naming it.
    """

    load_model: Callable[..., Any]
    instantiate: Callable[..., Any]
    call: Callable[..., Any]


def worker_model(recipe: tuple[Any, Any, Any], load_model: Callable[..., Any]) -> Any:
    """The model of ``recipe`` = (model class, name or instance; parameters; checkpoint), cached per process."""
    from mechlens.interfaces import Model

    spec, params, checkpoint = recipe
    if isinstance(spec, Model):
        return spec
    key = _recipe_key(recipe)
    if key not in _MODELS:
        _MODELS.clear()  # one model at a time: a worker serves one run
        _MODELS[key] = load_model(spec, params, checkpoint)
    return _MODELS[key]


def attribute_task(
    stages: Stages,
    recipe: tuple[Any, Any, Any],
    attributor: tuple[Any, Mapping[str, Any]],
    stimulus: xr.Dataset,
    layer: str | None,
    cells: Sequence[str] | None,
    part: Part,
    context: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Compute one part (in a worker, or in this process); plugin failures become a PluginError."""
    from mechlens.interfaces import Attributor, Plugin

    model = worker_model(recipe, stages.load_model)
    spec, params = attributor
    a = spec if isinstance(spec, Plugin) else stages.instantiate("attributor", spec, params)
    assert isinstance(a, Attributor)
    if part.whole:
        return stages.call(a, "attribute", a.attribute, model, stimulus, layer, cells)
    return stages.call(a, "attribute_part", a.attribute_part, model, stimulus, layer, cells, part.spec(context))  # type: ignore[attr-defined]


# -- merge -----------------------------------------------------------------------------------------
def merge_parts(pieces: Sequence[xr.Dataset]) -> xr.Dataset:
    """Put the pieces of an attribution (in plan order) together into what one call returns.

    Within a condition and a group of cells pieces are concatenated along ``time``, then the cell
    groups along ``cell``, then conditions along ``condition``; variables without the dim joined and
    all attrs come from the first piece (equal in all); the completeness error's
    ``max_abs_relative_to_response_range`` is recomputed over the whole (from each piece's
    ``max_abs``, which is dropped).
    """
    if len(pieces) == 1 and "max_abs" not in pieces[0].get("completeness_error", xr.DataArray()).attrs:
        return pieces[0]
    every = [p["completeness_error"].attrs for p in pieces if "completeness_error" in p]
    # a time group with no chunk (more groups than chunks) carries no time point, and maybe not every variable
    pieces = [p for p in pieces if p.sizes.get("time", 1) > 0] or list(pieces[:1])
    first = pieces[0]
    # condition -> cell group -> pieces along time, in plan order
    by_condition: dict[str, dict[str, list[xr.Dataset]]] = {}
    for p in pieces:
        key = p["condition"].values.tolist()[0] if "condition" in p.dims else None
        group = p["cell"].values.tolist() if "cell" in p.dims else None
        by_cells = by_condition.setdefault(json.dumps(key, default=str), {})
        by_cells.setdefault(json.dumps(group, default=str), []).append(p)

    def cat(parts: list[xr.Dataset], dim: str) -> xr.Dataset:
        if len(parts) == 1:
            return parts[0]
        return xr.concat(parts, dim, data_vars="minimal", coords="minimal", compat="override", join="outer")

    rows = []
    for by_cells in by_condition.values():
        columns = [cat(group, "time") if "time" in first.dims else group[0] for group in by_cells.values()]
        rows.append(cat(columns, "cell") if "cell" in first.dims else columns[0])
    out = cat(rows, "condition") if "condition" in first.dims else rows[0]
    out.attrs = dict(first.attrs)
    for name in out.variables:
        out[name].attrs = dict(first[name].attrs) if name in first.variables else out[name].attrs
    if "completeness_error" in out:
        err = out["completeness_error"]
        worst = max((float(a["max_abs"]) for a in every if "max_abs" in a), default=0.0)
        resp = out["response"].values if "response" in out else np.zeros(0)
        span = float(np.ptp(resp)) if resp.size else 0.0
        err.attrs["max_abs_relative_to_response_range"] = float(worst / span) if span else 0.0
        err.attrs.pop("max_abs", None)
    return out


# -- the attribution of a pipeline -----------------------------------------------------------------
def attribute(
    attributor: Any,
    model: Any,
    stimulus: xr.Dataset,
    layer: str | None,
    cells: Sequence[str] | None,
    *,
    stages: Stages,
    recipe: tuple[Any, Any, Any],
    attributor_spec: tuple[Any, Mapping[str, Any]],
    identity: Mapping[str, Any],
    client: Any = None,
    store: str | os.PathLike[str] | None = None,
    parts: int | None = None,
    cell_groups: int | None = None,
) -> xr.Dataset:
    """The attribution of a pipeline, computed in parts on ``client`` (or here), merged (:func:`merge_parts`).

    Parameters
    ----------
    attributor, model : Plugin
        The instances of this process (to plan and to check the store's output times).
    stimulus : xarray.Dataset
        The generated stimulus (sent to the workers once).
    layer, cells
        As for ``Attributor.attribute``.
    stages : Stages
        The pipeline's functions that make the plugins in a task.
    recipe : (model, parameters, checkpoint)
        How a worker makes the model: a class or name (looked up in the worker's registry) or an instance.
    attributor_spec : (attributor, parameters)
        How a worker makes the attributor: a class, a name, or an instance (then no parameters).
    identity : mapping
        What makes the run (provenance, seed, layer, cells): a zarr store holding another run is
        started afresh, one holding this run is resumed.
    client : dask.distributed.Client, optional
        Where the parts run (default: one after the other in this process).
    store : path, optional
        A ``*.zarr`` directory: each part is written as it finishes, and parts already there are
        read back instead of computed (:mod:`mechlens.zarrstore`).
    parts : int, optional
        About how many parts (default: 2 per worker thread, 8 without a client); a resumed store
        keeps its own plan.
    cell_groups : int, optional
        Split the cells into this many groups (default 1: not split), for attributors whose
        ``shard_dims`` include ``"cell"``; each part then holds fewer cells (less memory per task).
    """
    if parts is not None and int(parts) < 1:
        raise UsageError(f"parts={parts}: give at least 1")
    n = int(parts) if parts else (PARTS_PER_WORKER * worker_threads(client) if client is not None else 8)
    all_cells = [str(c) for c in (cells if cells is not None else model.cells)]
    todo = plan(attributor, stimulus, n, cell_groups=int(cell_groups or 1), n_cells=len(all_cells))
    progress = None
    if store is not None:
        import mechlens.zarrstore as zarrstore

        fingerprint = json.dumps(dict(identity), sort_keys=True, default=str)
        progress = zarrstore.Progress.open(store, fingerprint, [asdict(p) for p in todo])
        todo = [
            Part(
                int(p["index"]),
                p["condition"],
                tuple(p["time"]) if p["time"] else None,
                tuple(p["cells"]) if p.get("cells") else None,  # a store from before cell groups has none
            )
            for p in progress.parts
        ]
        if progress.done:
            log.info("%s: resuming, %d of %d parts already written", store, len(progress.done), len(todo))
    pieces: dict[int, xr.Dataset] = {}
    pending = [p for p in todo if progress is None or p.index not in progress.done]
    if progress is not None:
        for p in todo:
            if p.index in progress.done:
                pieces[p.index] = progress.read(p.index)
    log.info("attribution in %d part(s), %d to compute%s", len(todo), len(pending), " on the cluster" * bool(client))
    context = shared_context(attributor, model, stimulus, layer, cells, pending)
    for part, piece in _compute(pending, stages, recipe, attributor_spec, stimulus, layer, cells, client, context):
        if progress is not None:
            progress.write(
                part.index,
                piece,
                full_times=model.time_of_outputs(stimulus["stimulus"]),
                stimulus=stimulus,
                full_cells=all_cells,
            )
        pieces[part.index] = piece
    return merge_parts([pieces[p.index] for p in todo])


def shared_context(
    attributor: Any,
    model: Any,
    stimulus: xr.Dataset,
    layer: str | None,
    cells: Sequence[str] | None,
    pending: Sequence[Part],
) -> dict[str, Any]:
    """What every part of a split run shares, computed once here: the attributor's ``part_context``.

    An attributor may define ``part_context(model, stimulus, layer, cells) -> dict`` (JSON-like
    values) for numbers that depend on the whole problem (the built-in integrated gradients' adaptive
    rule needs the response range over the whole stimulus); without it, or for a run of one part
    (which has the whole problem anyway), nothing is computed and each part works it out itself.
    """
    fn = getattr(attributor, "part_context", None)
    split = [p for p in pending if not p.whole]
    if not callable(fn) or len(split) < 2:
        return {}
    return dict(fn(model, stimulus, layer, list(cells) if cells is not None else None))


def _compute(
    pending: Sequence[Part],
    stages: Stages,
    recipe: tuple[Any, Any, Any],
    attributor_spec: tuple[Any, Mapping[str, Any]],
    stimulus: xr.Dataset,
    layer: str | None,
    cells: Sequence[str] | None,
    client: Any,
    context: Mapping[str, Any] | None = None,
) -> Iterator[tuple[Part, xr.Dataset]]:
    """(part, piece) as each part finishes: on the cluster in any order, in this process in plan order."""
    from mechlens.progress import bar

    cells = list(cells) if cells is not None else None
    if client is None or not pending:
        for part in bar(pending, desc="parts", unit="part"):
            yield part, attribute_task(stages, recipe, attributor_spec, stimulus, layer, cells, part, context)
        return
    dd = require("dask.distributed")
    # a task holding the stimulus, not scattered data: a worker that dies with it gets it computed again
    with warnings.catch_warnings():  # dask's hint about large graphs: here the stimulus is sent once, on purpose
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
        stim = client.submit(_identity, stimulus, pure=False)
    futures = {
        client.submit(
            attribute_task, stages, recipe, attributor_spec, stim, layer, cells, part, context, pure=False
        ): part
        for part in pending
    }
    try:
        for future in bar(dd.as_completed(futures), desc="parts", total=len(futures), unit="part"):
            yield futures[future], future.result()
    finally:
        client.cancel(list(futures))


def _identity(x: Any) -> Any:
    return x


def recipe_of(
    model: Any, params: Mapping[str, Any] | None, checkpoint: Any, registry: Any = None
) -> tuple[Any, Any, Any]:
    """A model recipe for the workers: names resolved to classes here (so a custom registry is honoured)."""
    import mechlens.registry as _registry

    if isinstance(model, str):
        model = (registry or _registry.default()).get("model", model)
    return (model, dict(params or {}), str(checkpoint) if checkpoint not in (None, "") else None)


def plugin_of(
    kind: str, spec: Any, params: Mapping[str, Any] | None, registry: Any = None
) -> tuple[Any, dict[str, Any]]:
    """A plugin spec for the workers: a name resolved to its class here, parameters as a plain dict."""
    import mechlens.registry as _registry

    if isinstance(spec, str):
        spec = (registry or _registry.default()).get(kind, spec)
    return (spec, dict(params or {}))


def gather_experiments(
    client: Any,
    task: Callable[..., xr.Dataset],
    jobs: Sequence[tuple[str, Any, tuple[Any, Any, Any]]],
    seed: int,
    cells: Sequence[str] | None,
) -> dict[str, Any]:
    """Submit ``task(experiment, recipe, seed, cells)`` once per (experiment, model); name -> future.

    ``jobs`` = (name, experiment class, model recipe); the task is
    :func:`mechlens.experiments.experiment_task`.
    """
    cells = list(cells) if cells else None
    return {
        name: client.submit(task, cls, recipe, seed, cells, pure=False, key=f"mechlens-{name}-{os.getpid()}")
        for name, cls, recipe in jobs
    }


def result(future: Any) -> xr.Dataset:
    """A task's result; an error raised in the worker is raised here as it was (MechlensError kept)."""
    try:
        return future.result()
    except MechlensError:
        raise
    except Exception as err:
        if type(err).__module__.startswith("distributed"):  # the worker died (KilledWorker), not a plugin
            raise PluginError(f"a dask worker failed: {type(err).__name__}: {err}") from err
        raise


def is_store(path: str | os.PathLike[str] | None) -> bool:
    """Whether an output path names a zarr store (``*.zarr``)."""
    return path is not None and Path(path).suffix == ".zarr"
