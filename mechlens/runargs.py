"""From the ``run`` command's arguments to a checked run configuration, before any work starts.

:func:`config_from_args` merges the TOML file, the stage flags, ``--set`` and the run options into a
:class:`mechlens.config.RunConfig`, refuses every flag that would be silently ignored (experiments
choose their own stimulus, attributor, reducer and layer), and checks model parameters against the
model(s) they will reach and against a checkpoint. Errors name the flag as the user typed it
(``--set model.seed=3``, ``[model] seed in run.toml``), not the TOML table it became.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mechlens.errors import UsageError


def config_from_args(args: argparse.Namespace) -> Any:
    from mechlens import config

    lists = args.cells or args.experiment or getattr(args, "model_checkpoint", None)
    # `--cells a b` (or `--model-checkpoint a.pt b.pt`) reads b as the config file: say how to list
    if args.config and args.config.suffix != ".toml" and lists:
        if not args.config.exists() or getattr(args, "model_checkpoint", None):
            what = "no such config file" if not args.config.exists() else "not a TOML config file"
            raise UsageError(
                f"{args.config}: {what}; to give several cells, experiments or checkpoints separate them with "
                "commas (--cells gc00,gc01) or repeat the flag (--cells gc00 --cells gc01, "
                "--model-checkpoint a.pt --model-checkpoint b.pt)"
            )
    cfg = config.load(args.config) if args.config else config.RunConfig()
    for stage in config.SECTIONS:
        name = getattr(args, stage)
        if name:
            cfg.stage(stage).name = name
    config.apply_overrides(cfg, args.overrides)
    for key in ("layer", "seed", "chunk_time", "cell_groups"):
        if getattr(args, key, None) is not None:
            cfg.run[key] = getattr(args, key)
    if args.cells:
        cfg.run["cells"] = [c for group in args.cells for c in group]
    if getattr(args, "model_checkpoint", None):
        paths = [str(c) for group in args.model_checkpoint for c in group]
        cfg.run["model_checkpoint"] = paths[0] if len(paths) == 1 else paths  # one: exactly as before
    if args.experiment:
        cfg.run["experiment"] = [e for group in args.experiment for e in group]
    _refuse_unused(cfg, args)
    # model parameters without a model name are the experiments' default models' (checked below)
    unnamed_ok = ("model",) if cfg.stimulus.name is None else ()
    config.check(cfg, source=_source(args), unnamed_ok=unnamed_ok)
    _check_model_params(cfg, args)
    _check_checkpoints(cfg, args)
    return cfg


def _check_checkpoints(cfg: Any, args: argparse.Namespace) -> None:
    """Refuse a missing or repeated checkpoint before any work: with several models, a run may take hours."""
    paths = cfg.checkpoints()
    where = _checkpoint_flag(args)
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise UsageError(
            f"{where}: no such checkpoint file: {', '.join(missing)}; give the path of a saved model "
            "(`mechlens info FILE` summarises one)"
        )
    seen: set[Path] = set()
    for p in paths:
        real = Path(p).resolve()
        if real in seen:
            raise UsageError(f"{where}: checkpoint {p} is given twice; give each model once")
        seen.add(real)


def _source(args: argparse.Namespace) -> str:
    return str(args.config) if args.config else "command line"


def _given(args: argparse.Namespace, stage: str, key: str | None = None) -> str:
    """How the user gave ``stage`` (its name when ``key`` is None, else the parameter ``key``), in CLI words."""
    if key is None and stage != "run" and getattr(args, stage, None):
        return f"--{stage}"
    if key is not None and stage == "run" and getattr(args, key, None):
        return f"--{key}"
    for item in args.overrides:
        k = item.partition("=")[0].strip()
        if k == f"{stage}.{key or 'name'}" or (key is None and k.startswith(f"{stage}.")):
            return f"--set {item}"
    return f"[{stage}] {key or 'name'} in {args.config}" if args.config else f"--{key or stage}"


def _checkpoint_flag(args: argparse.Namespace) -> str:
    """How the user gave the checkpoints: ``--model-checkpoint``, ``--set run.model_checkpoint=...`` or the file."""
    return "--model-checkpoint" if getattr(args, "model_checkpoint", None) else _given(args, "run", "model_checkpoint")


def _refuse_unused(cfg: Any, args: argparse.Namespace) -> None:
    """Refuse what would be silently ignored: every flag of ``run`` takes effect or is an error (issue 18)."""
    opts = cfg.run
    pipeline = "give --stimulus NAME to run a single pipeline"
    if cfg.stimulus.name is None:  # the experiments run: they choose their own stages and layer
        if cfg.stimulus.params:
            first = next(iter(cfg.stimulus.params))
            raise UsageError(
                f"{_given(args, 'stimulus', first)}: no stimulus named, so the experiments run, and they choose "
                f"their own stimulus; {pipeline}, or drop it"
            )
        for stage in ("attributor", "reducer"):
            sc = cfg.stage(stage)
            if sc.name is not None or sc.params:
                where = _given(args, stage, None if sc.name is not None else next(iter(sc.params)))
                raise UsageError(
                    f"{where} is ignored by experiments, which choose their own {stage}; {pipeline}, or drop it"
                )
        if opts.get("chunk_time") is not None:
            raise UsageError(
                "--chunk-time / [run] chunk_time streams a single pipeline's movie; the experiments' movies are "
                f"short and run whole; {pipeline}, or drop it"
            )
        if int(opts.get("cell_groups") or 1) > 1:
            raise UsageError(
                "--cell-groups / [run] cell_groups splits a single pipeline's attribution by cells; experiments "
                f"run whole, one task per experiment; {pipeline}, or drop it"
            )
        if opts.get("layer"):
            raise UsageError(
                f"{_given(args, 'run', 'layer')} is ignored by experiments, which attribute their own layer; "
                f"{pipeline}, or drop it"
            )
        return
    several = cfg.run.get("model_checkpoint")
    if isinstance(several, list) and len(several) > 1:
        raise UsageError(
            f"{_checkpoint_flag(args)}: {len(several)} checkpoints, but a pipeline "
            f"(given {_given(args, 'stimulus')}) runs one model; give one checkpoint per run, or drop the "
            "stimulus to run every experiment on every model"
        )
    if opts.get("experiment"):
        raise UsageError(
            f"{_given(args, 'run', 'experiment')} runs experiments, which choose their own stimulus; "
            f"drop {_given(args, 'stimulus')} to run them, or drop the experiments to run one pipeline"
        )
    for stage in ("model", "attributor", "reducer"):
        sc = cfg.stage(stage)
        if sc.name is None and sc.params:
            raise UsageError(
                f"{_given(args, stage, next(iter(sc.params)))}: no {stage} named; give --{stage} NAME "
                f"(or --set {stage}.name=NAME)"
            )


def _check_model_params(cfg: Any, args: argparse.Namespace) -> None:
    """Check model parameters against the model(s) they will reach, and against a checkpoint, before any work."""
    from mechlens import parameters, registry
    from mechlens.errors import ParameterError, PluginNotFoundError
    from mechlens.pipeline import checkpoint_conflicts, checkpoint_parameters

    checkpoint = cfg.run.get("model_checkpoint")
    if not cfg.model.params and not checkpoint:
        return
    targets: list[tuple[str, dict[str, Any]]]  # (model name, the parameters its experiment gives it)
    if cfg.model.name is not None:
        targets = [(cfg.model.name, {})]
    else:  # the experiments' default models (experiment mode; the pipeline mode asks for a name later)
        from mechlens import experiments

        chosen = experiments.resolve(cfg.options().experiment or None)
        targets = [(c.model, {} if checkpoint else dict(c.model_params)) for c in chosen if c.model]
    for name, own in targets:
        try:
            cls = registry.get("model", name)
        except PluginNotFoundError:
            continue  # the experiment that needs it fails alone, saying so
        refused = checkpoint_conflicts(cls, cfg.model.params) if checkpoint else []
        if refused:
            allowed = sorted(checkpoint_parameters(cls) or ())
            takes = ", ".join(f"model.{a}" for a in allowed)
            raise UsageError(
                f"{_given(args, 'model', refused[0])}: --model-checkpoint fixes {', '.join(refused)} of model "
                f"{name!r}; drop the parameter or the checkpoint"
                + (f" (with a checkpoint only {takes} can be set)" if allowed else "")
            )
        try:
            parameters.build(cls.Parameters, {**own, **cfg.model.params}, where="model")
        except ParameterError as err:
            raise UsageError(f"{_source(args)}: {err} (model {name!r})") from None
