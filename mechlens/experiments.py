"""Running experiments: named recipes of stimulus, model, attributor and reducer, with their measure.

``mechlens run`` with no stimulus calls :func:`run_all`: every registered experiment (or those
named) runs on its default model (or the one given), each result is saved as
``DIR/<experiment>.nc`` as soon as it is done, a failing experiment is reported while the others
still run, and ``DIR/report.html`` is built from the saved files (:func:`mechlens.report.build`).
With several model checkpoints :func:`run_models` runs every experiment on every model into
``DIR/<label>/<experiment>.nc`` (:func:`model_labels`) and one report compares the models.

The core knows nothing of any phenomenon: an :class:`~mechlens.interfaces.Experiment` plugin
supplies the recipe and the measure. What the core adds to every result is generic and computed
from the names of docs/contract.md, 'Experiment results' (see :func:`summary`):

- ``in_window`` ([condition,] time), int8: 1 inside the experiment's time window of interest;
- attrs ``experiment``, ``experiment_distribution``, ``experiment_version``,
  ``experiment_parameters``, ``experiment_title``, ``experiment_reference``, ``window_doc``,
  ``analysed_cells`` (JSON list), ``experiment_wall_s``;
- attrs ``completeness_error_rel``, ``explained_fraction_mean``, ``reduced_r_mean``,
  ``reduced_peak_shift_s``, ``complement_r_mean`` (NaN when the stage that defines them did not run);
- attr ``mechanism``: the experiment's sentence, or a generic one built from the numbers;
- attrs ``model_checkpoint`` (the checkpoint's path, when one was given) and ``model_label`` (its
  label, when several models ran).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from mechlens import registry as _registry
from mechlens.errors import MechlensError, PluginError, UsageError
from mechlens.interfaces import Experiment, Model
from mechlens.parameters import check_seed
from mechlens.pipeline import load_model  # also public here; the rule has its one owner there
from mechlens.results import UNIT_DIMS, kept_contribution, summary  # noqa: F401 - re-exported (public API)

log = logging.getLogger("mechlens")


def focus_cell(ds: xr.Dataset) -> str:
    """The cell the headline is about: the ``focus_cell`` attr when it names an analysed cell, else the first."""
    cells = [str(c) for c in ds["weights"]["cell"].values]
    focus = str(ds.attrs.get("focus_cell", ""))
    return focus if focus in cells else cells[0]


def generic_mechanism(ds: xr.Dataset) -> str:
    """The focus cell's mechanism sentence (:func:`mechlens.mechanism.mechanism_sentence`); ``""`` without a reduction.

    Also writes the ``mechanism_per_cell`` attr (every analysed cell's sentence, one per line) and the
    ``mechanism_details`` attr (every kept component of every cell with its sign, net contribution and
    timing, and the reduced-model check), which the report folds away.
    """
    from mechlens.mechanism import mechanism_details, mechanism_sentence

    if "weights" not in ds or "components" not in ds:
        return ""
    cells = [str(c) for c in ds["weights"]["cell"].values]
    ds.attrs["mechanism_per_cell"] = mechanism_sentence(ds)
    ds.attrs["mechanism_details"] = "\n".join(mechanism_details(ds, c) for c in cells)
    return mechanism_sentence(ds, focus_cell(ds))


# -- running ---------------------------------------------------------------------------------------
def resolve(names: Sequence[str] | None = None, registry: _registry.Registry | None = None) -> list[type[Experiment]]:
    """The experiment classes to run: those named (in order), or every registered one.

    Raises
    ------
    UsageError
        When a name is unknown (with the closest match) or none is registered.
    """
    reg = registry or _registry.default()
    if names:
        return [reg.get("experiment", n) for n in names]
    classes = [e.cls for e in reg.entries("experiment")]
    if not classes:
        raise UsageError(
            "no experiments are registered; install a plugin that provides some, or run a pipeline with --stimulus"
        )
    return classes


def select_cells(
    exp: Experiment, model: Model, seed: int = 0, registry: _registry.Registry | None = None
) -> list[str] | None:
    """Resolve :attr:`Experiment.cells` for ``model``.

    An int ``n`` picks the ``n`` cells whose response varies most (max - min over the window of
    every condition) to the experiment's stimulus; a list is checked against the model's cells.

    Returns
    -------
    list of str or None
        None means every cell.
    """
    want = exp.cells
    if want is None:
        return None
    if not isinstance(want, int):
        return list(want)
    if want >= len(model.cells):
        return None
    from mechlens.pipeline import instantiate, merge

    stim_plugin = instantiate("stimulus", exp.stimulus, exp.stimulus_parameters(model), registry)
    stim = stim_plugin.generate(seed, model.grid)  # type: ignore[union-attr]
    ds = merge([stim, model.predict(stim)])
    resp = ds["response"].where(exp.window_mask(ds))
    spread = resp.max([d for d in resp.dims if d != "cell"]) - resp.min([d for d in resp.dims if d != "cell"])
    order = np.argsort(-np.nan_to_num(spread.values, nan=-np.inf), kind="stable")[:want]
    return [str(c) for c in resp["cell"].values[np.sort(order)]]


def run_experiment(
    exp: Experiment | type[Experiment] | str,
    model: Model,
    seed: int = 0,
    registry: _registry.Registry | None = None,
    cells: Sequence[str] | None = None,
) -> xr.Dataset:
    """Run one experiment on a model: pipeline, window, measure, generic numbers, provenance.

    Parameters
    ----------
    exp : Experiment, Experiment class or registry name
        The experiment.
    model : Model
        The model instance to run it on.
    seed : int
        Stimulus seed.
    registry : Registry, optional
        Where names are looked up.
    cells : sequence of str, optional
        The cells to attribute, instead of the experiment's own choice (:func:`select_cells`).

    Returns
    -------
    xarray.Dataset
        The merged pipeline Dataset plus ``in_window``, the experiment's measure and the attrs
        listed in the module docstring.
    """
    reg = registry or _registry.default()
    seed = check_seed(seed)
    if isinstance(exp, str):
        exp = reg.get("experiment", exp)
    if isinstance(exp, type):
        exp = exp()
    start = time.perf_counter()
    cells = list(cells) if cells else select_cells(exp, model, seed, reg)
    from mechlens.pipeline import run_recipe

    ds = run_recipe(exp, model, seed, cells, reg)  # the experiment's run() override, else its declared stages
    mask = exp.window_mask(ds)
    mask = mask.transpose(*[d for d in ("condition", "time") if d in mask.dims])
    ds["in_window"] = mask.astype(np.int8)
    ds["in_window"].attrs.update({"long_name": "time window of interest", "units": "1", "description": exp.window_doc})
    dist, version = reg.provenance(type(exp))
    ds.attrs.update(
        {
            "experiment": exp.name,
            "experiment_distribution": dist,
            "experiment_version": version,
            "experiment_parameters": exp.parameters_json(),
            "experiment_title": exp.title or exp.name,
            "experiment_reference": exp.reference,
            "window_doc": exp.window_doc,
            "analysed_cells": json.dumps(
                [str(c) for c in (ds["attribution"]["cell"].values if "attribution" in ds else ds["cell"].values)]
            ),
        }
    )
    ds = exp.measure(ds)
    ds.attrs.update(summary(ds))
    if not ds.attrs.get("mechanism"):
        ds.attrs["mechanism"] = generic_mechanism(ds)
    ds.attrs["title"] = f"mechlens experiment {exp.name}: {ds.attrs['experiment_title']}"
    ds.attrs["experiment_wall_s"] = round(time.perf_counter() - start, 3)
    return ds


def _submit(
    client: Any,
    classes: Sequence[type[Experiment]],
    model: str | None,
    model_params: Mapping[str, Any] | None,
    model_checkpoint: str | Path | None,
    seed: int,
    cells: Sequence[str] | None,
    registry: _registry.Registry,
) -> dict[str, Any]:
    """Submit every experiment whose model resolves as a task on ``client``; name -> future (the rest run here)."""
    from mechlens import distributed

    jobs = []
    for cls in classes:
        mname = model or cls.model
        own = {} if (model or model_checkpoint) else dict(cls.model_params)
        try:
            recipe = distributed.recipe_of(mname, {**own, **dict(model_params or {})}, model_checkpoint, registry)
        except Exception:  # noqa: BLE001 - no model, or an unknown one: it fails in the loop, as in a serial run
            continue
        if mname:
            jobs.append((cls.name, cls, recipe))
    return distributed.gather_experiments(client, experiment_task, jobs, seed, cells)


def experiment_task(
    experiment: Any, recipe: tuple[Any, Any, Any], seed: int, cells: Sequence[str] | None
) -> xr.Dataset:
    """One experiment on its model, in a dask worker (the model loaded once per worker): :func:`run_experiment`."""
    from mechlens.distributed import worker_model

    model = worker_model(recipe, load_model)
    unknown = [c for c in cells or () if c not in model.cells]
    if unknown:
        raise _UnknownCells(
            f"cells {', '.join(unknown)}: model {model.name!r} (of experiment {experiment.name!r}) has no such cell; "
            f"its cells are {', '.join(model.cells)}"
        )
    return run_experiment(experiment, model, seed, cells=cells)


class _UnknownCells(UsageError):
    """Cells asked for that the model lacks: a user error that stops :func:`run_all` (exit status 2)."""


def _provenance(ds: xr.Dataset, history: str, checkpoint: str | Path | None, label: str) -> xr.Dataset:
    """Record the command line, the checkpoint's path and the model's label (several models) in a result."""
    if history:
        ds.attrs["history"] = history
    if checkpoint:
        ds.attrs["model_checkpoint"] = str(checkpoint)  # beside model_checkpoint_sha256: which file it was
    if label:
        ds.attrs["model_label"] = label
    return ds


def _run_model(
    classes: Sequence[type[Experiment]],
    outdir: Path,
    model: str | None,
    model_params: Mapping[str, Any] | None,
    model_checkpoint: str | Path | None,
    label: str,
    seed: int,
    history: str,
    reg: _registry.Registry,
    cells: Sequence[str] | None,
    client: Any,
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Run ``classes`` on one model into ``outdir``: the files written and the (experiment, why) that failed."""
    from mechlens import io
    from mechlens.progress import bar

    outdir.mkdir(parents=True, exist_ok=True)
    # one instance per (name, parameters, checkpoint); a model that failed to load is not retried
    models: dict[str, Model | Exception] = {}
    written: list[Path] = []
    failed: list[tuple[str, str]] = []
    log.info("running %d experiment(s) into %s", len(classes), outdir)
    futures = _submit(client, classes, model, model_params, model_checkpoint, seed, cells, reg) if client else {}
    for cls in bar(classes, desc="experiments", unit="experiment"):
        name = cls.name
        t0 = time.perf_counter()
        try:
            if name in futures:  # computed on the cluster (mechlens.distributed.experiment_task)
                from mechlens.distributed import result

                ds = _provenance(result(futures.pop(name)), history, model_checkpoint, label)
                path = io.save(ds, outdir / f"{name}.nc")
                written.append(path)
                log.info("experiment %s done in %.1f s: wrote %s", name, time.perf_counter() - t0, path)
                continue
            mname = model or cls.model
            if not mname:
                raise UsageError(f"experiment {name!r} names no default model; choose one with --model")
            own = {} if (model or model_checkpoint) else dict(cls.model_params)
            mparams = {**own, **dict(model_params or {})}
            key = json.dumps([mname, mparams, str(model_checkpoint or "")], sort_keys=True, default=str)
            if key not in models:
                try:
                    models[key] = load_model(mname, mparams, model_checkpoint, reg)
                except Exception as err:
                    models[key] = err
                    raise
            instance = models[key]
            if isinstance(instance, Exception):
                raise instance
            unknown = [c for c in cells or () if c not in instance.cells]
            if unknown:
                raise _UnknownCells(
                    f"cells {', '.join(unknown)}: model {mname!r} (of experiment {name!r}) has no such cell; "
                    f"its cells are {', '.join(instance.cells)}"
                )
            log.info("experiment %s on model %s ...", name, mname)
            ds = _provenance(run_experiment(cls, instance, seed, reg, cells=cells), history, model_checkpoint, label)
            path = io.save(ds, outdir / f"{name}.nc")
            written.append(path)
            log.info("experiment %s done in %.1f s: wrote %s", name, time.perf_counter() - t0, path)
        except (KeyboardInterrupt, _UnknownCells):
            raise
        except Exception as err:  # one failing experiment must not stop the others
            msg = str(err) if isinstance(err, MechlensError) else f"{type(err).__name__}: {err}"
            if any(m == msg for _, m in failed) and any(err is e for e in models.values()):
                log.error("experiment %s failed: its model failed to load (above)", name)
            else:
                log.error("experiment %s failed after %.1f s: %s", name, time.perf_counter() - t0, msg)
            failed.append((name, msg))
            log.debug("traceback of experiment %s", name, exc_info=True)
    return written, failed


def run_all(
    names: Sequence[str] | None = None,
    outdir: str | Path = "results",
    model: str | None = None,
    model_params: Mapping[str, Any] | None = None,
    model_checkpoint: str | Path | None = None,
    seed: int = 0,
    history: str = "",
    registry: _registry.Registry | None = None,
    cells: Sequence[str] | None = None,
    client: Any = None,
) -> list[Path]:
    """Run experiments, save each result as soon as it is done, and build the report.

    Parameters
    ----------
    names : sequence of str, optional
        Experiments to run (default: every registered one).
    outdir : path
        Where ``<experiment>.nc``, ``report.html`` and the figures go.
    model : str, optional
        Run every experiment on this model instead of each experiment's default.
    model_params : mapping, optional
        Parameters of the model; when ``model`` is not given, they update each experiment's
        default model parameters (``Experiment.model_params``, dropped with a checkpoint).
    model_checkpoint : path, optional
        Load the model from this checkpoint (``Model.load``); ``model_params`` may then hold only
        what the model's ``load`` takes (:func:`mechlens.pipeline.checkpoint_parameters`).
    seed : int
        Stimulus seed.
    history : str
        The command line, stored in each file's ``history`` attr.
    registry : Registry, optional
        Where names are looked up.
    cells : sequence of str, optional
        Attribute these cells in every experiment instead of each experiment's own choice; a cell
        the model lacks stops the run (UsageError) before that experiment does any work.
    client : dask.distributed.Client, optional
        Run the experiments as tasks on this cluster, one per (model, experiment), all at once
        (:mod:`mechlens.distributed`); results are saved here as before, in the same order.

    Returns
    -------
    list of Path
        The result files written.

    Raises
    ------
    UsageError
        Before anything runs, when ``outdir`` cannot be written or names a ``.nc`` file.
    PluginError
        After every experiment has run and the report is written, when any experiment failed
        (the message names each and why); the others' results are saved.
    """
    from mechlens import io

    reg = registry or _registry.default()
    seed = check_seed(seed)
    classes = resolve(names, reg)
    outdir = io.check_output(outdir, folder=True)  # before any work: a bad folder must not cost the run
    written, failed = _run_model(
        classes, outdir, model, model_params, model_checkpoint, "", seed, history, reg, cells, client
    )
    return _finish(written, failed, f"{len(classes)} experiment(s)", outdir)


def _finish(written: list[Path], failed: list[tuple[str, str]], of: str, outdir: Path) -> list[Path]:
    """The report of what was written, then the failures, if any, raised together."""
    from mechlens import report  # at call time, as the rest of this module: report reads experiment results

    if written:
        html = report.build(written, outdir)
        log.info("wrote %s", html)
    if failed:
        raise _failure(failed, of, outdir, bool(written))
    return written


def _failure(failed: Sequence[tuple[str, str]], of: str, outdir: Path, saved: bool) -> PluginError:
    """The error of a run in which some experiments failed: each named with why (one reason said once)."""
    messages = {m for _, m in failed}
    if len(failed) > 1 and len(messages) == 1:
        lines = f"{', '.join(n for n, _ in failed)}: {messages.pop()}"
    else:
        lines = "; ".join(f"{n}: {m}" for n, m in failed)
    return PluginError(
        f"{len(failed)} of {of} failed ({lines}); "
        + (f"the others are saved in {outdir}" if saved else "nothing was saved")
    )


def model_labels(checkpoints: Sequence[str | Path]) -> list[str]:
    """One folder name per checkpoint: its file's stem, path-safe and unique (``a``, ``a-2``; case ignored).

    Examples
    --------
    >>> model_labels(["runs/a.safetensors", "other/a.safetensors", "b.pt", "../figures.pt"])
    ['a', 'a-2', 'b', 'figures-model']
    """
    from mechlens.report import slug

    # `figures` is the report's own folder in DIR; a model's results must not land in it
    taken: set[str] = {"figures"}
    out = []
    for ckpt in checkpoints:
        base = slug(Path(ckpt).stem, default="model")
        if base.lower() == "figures":
            base = "figures-model"
        name, n = base, 1
        while name.lower() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.lower())
        out.append(name)
    return out


def run_models(
    checkpoints: Sequence[str | Path],
    names: Sequence[str] | None = None,
    outdir: str | Path = "results",
    model: str | None = None,
    model_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    history: str = "",
    registry: _registry.Registry | None = None,
    cells: Sequence[str] | None = None,
    client: Any = None,
) -> list[Path]:
    """Run every experiment on every model (one per checkpoint) and build one report comparing them.

    Each model's results go to ``outdir/<label>/<experiment>.nc`` (:func:`model_labels`), each file
    recording ``model_checkpoint`` (its path), ``model_label`` and ``model_checkpoint_sha256``;
    ``outdir/report.html`` opens with a table of every experiment's verdict on every model
    (:func:`mechlens.report.build`). The other parameters are those of :func:`run_all`, applied to
    every model.

    Returns
    -------
    list of Path
        The result files written, by model then experiment.

    Raises
    ------
    UsageError
        Before anything runs, when ``outdir`` cannot be written; a cell the models lack stops the run.
    PluginError
        After every model has run every experiment and the report is written, when any (model,
        experiment) failed (a model that fails to load fails its experiments alone); the message
        names each as ``label/experiment`` with why.
    """
    from mechlens import io

    reg = registry or _registry.default()
    seed = check_seed(seed)
    classes = resolve(names, reg)
    outdir = io.check_output(outdir, folder=True)  # before any work: a bad folder must not cost the run
    labels = model_labels(checkpoints)
    written: list[Path] = []
    failed: list[tuple[str, str]] = []
    for ckpt, label in zip(checkpoints, labels):
        log.info("model %s (checkpoint %s) into %s", label, ckpt, outdir / label)
        done, bad = _run_model(
            classes, outdir / label, model, model_params, ckpt, label, seed, history, reg, cells, client
        )
        written += done
        failed += [(f"{label}/{name}", why) for name, why in bad]
    return _finish(written, failed, f"{len(classes) * len(labels)} (model, experiment) run(s)", outdir)
