"""What ``mechlens run --dry-run`` prints: the resolved configuration of a run, as TOML; nothing runs.

Every stage is shown with its plugin name, the distribution (and version) that registered it, and
every parameter with the value it would run with, defaults filled in and units as comments. For one
pipeline the text is a run file: ``mechlens run --dry-run ... > run.toml`` then ``mechlens run
run.toml`` runs the same. For experiments, each experiment is an ``[experiment.NAME]`` table with
its stages under it (valid TOML, for reading and diffing; not a run file).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mechlens import parameters as _params
from mechlens import registry as _registry

__all__ = ["resolved_run", "toml_value"]


def toml_value(value: Any) -> str | None:
    """``value`` as a TOML value (``0.1``, ``[0.06, 0.1]``, ``"x"``, ``true``), or None if TOML cannot hold it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        items = [toml_value(v) for v in value]
        return None if any(i is None for i in items) else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    if hasattr(value, "tolist"):
        return toml_value(value.tolist())
    return None


def _key(name: str) -> str:
    bare = name.replace("-", "").replace("_", "").isalnum() and name.isascii()
    return name if bare else json.dumps(name)


def _who(cls: type, reg: _registry.Registry) -> str:
    dist, version = reg.provenance(cls)
    return f"distribution {dist} {version}".rstrip() if dist else "not registered by any distribution"


def _table(
    table: str,
    kind: str,
    plugin: Any,
    given: dict[str, Any],
    reg: _registry.Registry,
    model: Any = None,
    fixed: bool = False,
) -> list[str]:
    """One stage's table: name, distribution and every parameter with the value it runs with.

    A stimulus shows its parameters fitted to ``model``'s grid. A model loaded from a checkpoint
    (``fixed``) shows the parameters the checkpoint fixes (those not ``given``) as comments, so that
    the text stays a run file.
    """
    if plugin is None:
        return [f"# [{table}]: no {kind}"]
    cls = type(plugin)
    entry = reg.find(cls)
    name = entry.name if entry is not None else plugin.name
    lines = [f"[{table}]", f"name = {toml_value(name)}  # {kind} plugin, {_who(cls, reg)}"]
    values = plugin.params
    if kind == "stimulus" and hasattr(plugin, "parameters_on"):
        values = plugin.parameters_on(getattr(model, "grid", None))
    for spec in _params.specs(cls.Parameters):
        text = toml_value(getattr(values, spec.name))
        notes = [n for n in (f"[{spec.units}]" if spec.units else "", "given" if spec.name in given else "") if n]
        if text is None:
            lines.append(f"# {_key(spec.name)}: unset ({spec.doc})")
        elif fixed and spec.name not in given:
            lines.append(f"# {_key(spec.name)} = {text}  # from the checkpoint" + "".join(f", {n}" for n in notes))
        else:
            lines.append(f"{_key(spec.name)} = {text}" + (f"  # {', '.join(notes)}" if notes else ""))
    return lines


def _stages(
    prefix: str,
    model: Any,
    model_given: dict[str, Any],
    stages: dict[str, tuple[str | None, dict[str, Any]]],
    reg: _registry.Registry,
    checkpoint: str,
) -> list[str]:
    """The model's table, then the stimulus, attributor and reducer tables (each plugin made, nothing run)."""
    from mechlens.pipeline import instantiate

    lines = _table(f"{prefix}model", "model", model, model_given, reg, fixed=bool(checkpoint))
    for kind, (name, params) in stages.items():
        plugin = instantiate(kind, name, params, reg) if name else None
        lines += ["", *_table(f"{prefix}{kind}", kind, plugin, params, reg, model)]
    return lines


def _load_model(name: str | None, params: dict[str, Any], checkpoint: str, reg: _registry.Registry) -> Any:
    from mechlens.pipeline import load_model

    return load_model(name, params, checkpoint or None, reg) if name else None


def resolved_run(cfg: Any, output: Path | None = None, registry: _registry.Registry | None = None) -> str:
    """The resolved configuration of ``mechlens run`` for a checked :class:`mechlens.config.RunConfig`.

    The model is loaded (what its checkpoint fixes is part of the configuration) and the other
    plugins are made, so that every value shown is the one the run would use; nothing runs.

    Parameters
    ----------
    cfg : RunConfig
        The run's configuration, already checked (:func:`mechlens.config.check`).
    output : Path, optional
        The ``-o`` path, when given on the command line (it overrides ``[run] output``).
    registry : Registry, optional
        Where plugin names are looked up (default: the process-wide registry).

    Returns
    -------
    str
        TOML text, ending with a newline.
    """
    reg = registry or _registry.default()
    opts = cfg.options()
    checkpoint = (cfg.checkpoints() or [""])[0]
    run_table = {"seed": opts.seed, "layer": opts.layer, "cells": list(opts.cells), "model_checkpoint": checkpoint}
    if cfg.stimulus.name is not None:  # one pipeline
        out = output or Path(opts.output or f"results/{cfg.model.name}_{cfg.stimulus.name}.nc")
        model = _load_model(cfg.model.name, cfg.model.params, checkpoint, reg)
        stages = {k: (cfg.stage(k).name, cfg.stage(k).params) for k in ("stimulus", "attributor", "reducer")}
        lines = ["# mechlens run --dry-run: the resolved configuration; nothing was run (run this file to run it)"]
        lines += _stages("", model, cfg.model.params, stages, reg, checkpoint)
        lines += ["", "[run]", *(f"{k} = {toml_value(v)}" for k, v in {**run_table, "output": str(out)}.items())]
        if not opts.layer:
            lines.append("# layer: the model's first hidden layer")
        return "\n".join(lines) + "\n"
    outdir = output or Path(opts.output or "results")
    checkpoints = cfg.checkpoints()
    several = len(checkpoints) > 1
    if several:
        run_table["model_checkpoint"] = checkpoints
    lines = [
        "# mechlens run --dry-run: the experiments that would run, each with its resolved stages; nothing was run",
        "[run]",
        f"output = {toml_value(str(outdir))}  # "
        + (
            "one folder per model, each experiment's NAME.nc in it, then report.html"
            if several
            else "each experiment's NAME.nc, then report.html"
        ),
        *(f"{k} = {toml_value(v)}" for k, v in run_table.items() if k != "layer"),
    ]
    if not several:
        return "\n".join(lines + _experiments(cfg, outdir, checkpoint, "", reg)) + "\n"
    from mechlens.experiments import model_labels

    for ckpt, label in zip(checkpoints, model_labels(checkpoints)):
        table = f"models.{_key(label)}"
        lines += ["", f"[{table}]", f"checkpoint = {toml_value(ckpt)}", f"output = {toml_value(str(outdir / label))}"]
        lines += _experiments(cfg, outdir / label, ckpt, f"{table}.", reg)
    return "\n".join(lines) + "\n"


def _experiments(cfg: Any, outdir: Path, checkpoint: str, prefix: str, reg: _registry.Registry) -> list[str]:
    """One ``[PREFIXexperiment.NAME]`` table per experiment that would run on the model of ``checkpoint``."""
    from mechlens import experiments
    from mechlens.interfaces import Experiment

    opts = cfg.options()
    lines: list[str] = []
    models: dict[str, Any] = {}
    for cls in experiments.resolve(opts.experiment or None, reg):
        exp = cls()
        mname = cfg.model.name or cls.model
        mparams = {**({} if (cfg.model.name or checkpoint) else dict(cls.model_params)), **cfg.model.params}
        key = json.dumps([mname, mparams], sort_keys=True, default=str)
        if key not in models:
            models[key] = _load_model(mname, mparams, checkpoint, reg)
        model = models[key]
        cells = list(opts.cells) or cls.cells
        table = f"{prefix}experiment.{_key(cls.name)}"
        lines += [
            "",
            f"[{table}]",
            f"# {cls.title or cls.name}; experiment plugin, {_who(cls, reg)}",
            f"output = {toml_value(str(outdir / f'{cls.name}.nc'))}",
            f"layer = {toml_value(cls.layer or '')}" + ("" if cls.layer else "  # the model's first"),
            f"cells = {toml_value('all') if cells is None else toml_value(cells)}"
            + ("  # the n most responsive cells" if isinstance(cells, int) else ""),
        ]
        if cls.run is not Experiment.run:
            lines.append("# the experiment adds runs of its own (controls) to these stages")
        stim = exp.stimulus_parameters(model) if model is not None else dict(cls.stimulus_params)
        stages = {
            "stimulus": (cls.stimulus or None, stim),
            "attributor": (cls.attributor or None, dict(cls.attributor_params)),
            "reducer": (cls.reducer or None, dict(cls.reducer_params)),
        }
        lines += ["", *_stages(f"{table}.", model, mparams, stages, reg, checkpoint)]
    return lines
