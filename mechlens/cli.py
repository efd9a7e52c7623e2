"""The ``mechlens`` command line.

Exit status: 0 success, 2 bad usage or config, 1 failure while running. A user error prints one
clear message; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shlex
import signal
import sys
import textwrap
import threading
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechlens import __version__
from mechlens.errors import MechlensError, UsageError

log = logging.getLogger("mechlens")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")


def _add_list(sub: Any) -> None:
    p = sub.add_parser("list", help="list installed plugins by kind, with their distribution and version")
    p.add_argument("kind", nargs="?", help="only this kind (model, stimulus, attributor, reducer, experiment, command)")
    p.add_argument("-v", "--verbose", action="store_true", help="show each plugin's parameters, defaults and units")
    p.set_defaults(func=cmd_list)


def _names(text: str) -> list[str]:
    """A list option's value, comma-separated (``gc00,gc01``): one value per flag, so no positional is eaten."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item; separate names with single commas: a,b")
    return items


_RUN_EXAMPLES = """\
examples (`mechlens list` shows the plugin names):
  mechlens run                                  every experiment, each on its default model -> results/
  mechlens run --model MODEL --stimulus STIMULUS --attributor integrated-gradients -o out.nc
  mechlens run run.toml --set stimulus.PARAM=[1,2,3] -o sweep.nc     one condition per value
  mechlens run run.toml --dry-run               what would run, every stage and parameter, and exit
"""


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a pipeline (or, with no stimulus, every experiment on the default model)",
        description=textwrap.dedent(
            """\
            Run stimulus -> model -> attributor -> reducer and write one netCDF file, or run experiments.
            With a stimulus (from CONFIG or --stimulus) one pipeline runs and writes -o OUT.nc.
            Without one, the registered experiments run (all, or those named by --experiment) and write
            DIR/<experiment>.nc plus DIR/report.html (-o DIR, default results/)."""
        ),
        epilog=_RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", type=Path, help="TOML run file ([model], [stimulus], ..., [run])")
    for stage in ("model", "stimulus", "attributor", "reducer"):
        p.add_argument(f"--{stage}", metavar="NAME", help=f"{stage} plugin (overrides the config)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.PARAM=VALUE",
        help="set a parameter, e.g. stimulus.period=0.1 or stimulus.period=[0.06,0.1] (repeatable)",
    )
    p.add_argument(
        "--experiment",
        action="append",
        default=[],
        type=_names,
        metavar="NAME[,NAME...]",
        help="run these experiments (comma-separated or repeated; without --stimulus)",
    )
    p.add_argument("--model-checkpoint", type=Path, metavar="PATH", help="load the model from this checkpoint")
    p.add_argument("--layer", help="hidden layer to attribute (default: the model's first)")
    p.add_argument(
        "--cells",
        action="append",
        type=_names,
        metavar="ID[,ID...]",
        help="cells to attribute, comma-separated or repeated: --cells gc00,gc01 (default: all, or each experiment's)",
    )
    p.add_argument("--seed", type=int, help="stimulus seed (default 0)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output .nc file or .zarr store (pipeline; a .zarr run resumes) or directory (experiments)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse an attribution whose completeness error exceeds the tolerance (nothing is saved); "
        "pipeline runs only",
    )
    p.add_argument(
        "--completeness-tolerance",
        type=float,
        metavar="FRACTION",
        help="largest completeness error accepted without a warning, as a fraction of the response range "
        "(default 1e-3; pipeline runs only)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run in parts on a local dask cluster of N worker processes (docs/scale-out.md)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run in parts on a running dask cluster, e.g. tcp://host:8786 (default $MECHLENS_SCHEDULER)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved configuration of every stage (plugins, distributions, parameters) and exit",
    )
    p.set_defaults(func=cmd_run)


def _add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="summarise a netCDF file written by mechlens, a model checkpoint (.safetensors), or a model's checkpoint",
    )
    p.add_argument(
        "file",
        type=Path,
        help="a .nc result, a checkpoint MODEL.safetensors (or a legacy MODEL.pt with its MODEL.json), or a model name",
    )
    p.set_defaults(func=cmd_info)


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="rebuild the HTML report from saved netCDF results (no model needed)")
    p.add_argument("results", nargs="+", type=Path, help="result .nc files or directories holding them")
    p.add_argument("-o", "--output", type=Path, default=Path("results"), help="report directory (default results/)")
    p.add_argument(
        "--self-contained",
        action="store_true",
        help="embed the figures in report.html (one file to mail or attach to a notebook)",
    )
    p.set_defaults(func=cmd_report)


def _add_completion(sub: Any) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for SHELL, covering every command, plugin commands included.",
        epilog=textwrap.dedent(
            """\
            examples:
              mechlens completion bash > ~/.local/share/bash-completion/completions/mechlens
              mechlens completion zsh > ~/.zfunc/_mechlens     # with fpath+=(~/.zfunc) in ~/.zshrc"""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete for")
    p.set_defaults(func=cmd_completion)


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    """The argument parser, with subcommands contributed by plugins when ``with_plugins``."""
    parser = _Parser(prog="mechlens", description="Mechanistic accounts of neural-circuit models.")
    parser.add_argument(
        "-V",
        "--version",
        action="count",
        default=0,
        help="show the version and exit; twice (-VV) also every plugin distribution and its version",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_list(sub)
    _add_run(sub)
    _add_info(sub)
    _add_report(sub)
    _add_completion(sub)
    if with_plugins:
        from mechlens import registry

        builtin = {"list", "run", "info", "report", "completion"}
        for entry in registry.entries("command"):
            who = f"distribution {entry.distribution} {entry.version}".rstrip()
            if entry.name in builtin:
                warnings.warn(
                    f"command {entry.name!r} of {who} clashes with a built-in command and is skipped; "
                    "rename it in that distribution",
                    registry.PluginWarning,
                    stacklevel=2,
                )
                continue
            _add_plugin_command(sub, entry, who)
    return parser


def _add_plugin_command(sub: Any, entry: Any, who: str) -> None:
    """Add a plugin's subcommand; one whose constructor or ``add_arguments`` fails is skipped with a warning.

    A broken third-party command must not take ``--help``, ``list`` or ``run`` down with it.
    """
    from mechlens.registry import PluginWarning

    try:
        command = entry.cls()
        p = sub.add_parser(entry.name, help=f"{command.help} [{entry.distribution}]")
        command.add_arguments(p)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - a third party's code may do anything
        # undo a half-added subcommand (argparse has no public removal): its name and its --help line
        sub.choices.pop(entry.name, None)
        sub._choices_actions[:] = [a for a in sub._choices_actions if a.dest != entry.name]
        did = f"called sys.exit({err.code!r})" if isinstance(err, SystemExit) else f"raised {type(err).__name__}"
        detail = " ".join(str(err).split()) if not isinstance(err, SystemExit) else ""
        warnings.warn(
            f"command {entry.name!r} of {who} is skipped: setting it up {did}" + (f": {detail}" if detail else ""),
            PluginWarning,
            stacklevel=3,
        )
        return
    p.set_defaults(func=lambda args, c=command: c.run(args))


# -- list ------------------------------------------------------------------------------------------
def _format_default(value: Any) -> str:
    import dataclasses

    if value is dataclasses.MISSING:
        return "(required)"
    return repr(value)


def cmd_list(args: argparse.Namespace) -> int:
    """``mechlens list [KIND] [--verbose]``."""
    from mechlens import registry
    from mechlens.hookspecs import HOOK_KINDS
    from mechlens.parameters import type_name

    kinds = list(HOOK_KINDS.values())
    if args.kind and args.kind not in kinds:
        from mechlens.parameters import suggest

        raise UsageError(f"unknown kind {args.kind!r}{suggest(args.kind, kinds) or '.'} Kinds: {', '.join(kinds)}")
    out = sys.stdout
    for kind in [args.kind] if args.kind else kinds:
        entries = registry.entries(kind)
        out.write(f"{kind} plugins:\n")
        if not entries:
            out.write("  (none installed)\n")
        for e in entries:
            doc = e.cls.describe() if hasattr(e.cls, "describe") else (e.cls.help or "")
            out.write(f"  {e.name:<28} {e.distribution} {e.version}  {doc}\n")
            if args.verbose and hasattr(e.cls, "parameter_specs"):
                for s in e.cls.parameter_specs():
                    units = f" [{s.units}]" if s.units else ""
                    rng = f" ({s.range_text()})" if s.range_text() else ""
                    sweep = " sweepable" if s.sweepable else ""
                    out.write(
                        f"      {s.name} = {_format_default(s.default)}{units}  {type_name(s.type)}{rng}{sweep}\n"
                    )
                    if s.doc:
                        out.write(f"          {s.doc}\n")
        out.write("\n")
    return 0


# -- run -------------------------------------------------------------------------------------------
def _config_from_args(args: argparse.Namespace) -> Any:
    from mechlens import config

    if args.config and not args.config.exists() and args.config.suffix != ".toml" and (args.cells or args.experiment):
        raise UsageError(
            f"{args.config}: no such config file; to give several cells or experiments separate them with "
            "commas (--cells gc00,gc01) or repeat the flag (--cells gc00 --cells gc01)"
        )
    cfg = config.load(args.config) if args.config else config.RunConfig()
    for stage in config.SECTIONS:
        name = getattr(args, stage)
        if name:
            cfg.stage(stage).name = name
    config.apply_overrides(cfg, args.overrides)
    for key in ("layer", "seed"):
        if getattr(args, key) is not None:
            cfg.run[key] = getattr(args, key)
    if args.cells:
        cfg.run["cells"] = [c for group in args.cells for c in group]
    if args.model_checkpoint:
        cfg.run["model_checkpoint"] = str(args.model_checkpoint)
    if args.experiment:
        cfg.run["experiment"] = [e for group in args.experiment for e in group]
    _refuse_unused(cfg, args)
    # model parameters without a model name are the experiments' default models' (checked below)
    unnamed_ok = ("model",) if cfg.stimulus.name is None else ()
    config.check(cfg, source=_source(args), unnamed_ok=unnamed_ok)
    _check_model_params(cfg, args)
    return cfg


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
        if opts.get("layer"):
            raise UsageError(
                f"{_given(args, 'run', 'layer')} is ignored by experiments, which attribute their own layer; "
                f"{pipeline}, or drop it"
            )
        return
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


def cmd_run(args: argparse.Namespace) -> int:
    """``mechlens run``: one pipeline, or the experiments."""
    from mechlens import completeness, io, pipeline

    cfg = _config_from_args(args)
    opts = cfg.options()
    history = "mechlens " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))
    if cfg.stimulus.name is None:
        from mechlens import experiments

        for flag, given in (
            ("--strict", getattr(args, "strict", False)),
            ("--completeness-tolerance", getattr(args, "completeness_tolerance", None)),
        ):
            if given not in (None, False):
                raise UsageError(
                    f"{flag} applies to a single pipeline (give --stimulus NAME); the experiments warn on an "
                    "incomplete attribution and record completeness_ok in each result"
                )
        outdir = args.output or Path(opts.output or "results")
        io.check_output(outdir, folder=True)  # before any work: a bad -o must not cost the whole run
        if args.dry_run:
            return _dry_run(cfg, outdir)
        with _engine(args) as client:
            experiments.run_all(
                names=opts.experiment or None,
                outdir=outdir,
                model=cfg.model.name,
                model_params=cfg.model.params,
                model_checkpoint=opts.model_checkpoint or None,
                seed=opts.seed,
                history=history,
                cells=opts.cells or None,
                client=client,
            )
        return 0
    if cfg.model.name is None:
        raise UsageError("name a model: --model NAME or [model] name = ... (see `mechlens list model`)")
    out = args.output or Path(opts.output or f"results/{cfg.model.name}_{cfg.stimulus.name}.nc")
    io.check_output(out, folder=False)  # before any work: a bad -o must not cost the whole run
    if args.dry_run:
        return _dry_run(cfg, out)
    with _engine(args) as client:
        ds = pipeline.run(
            cfg.model.name,
            cfg.stimulus.name,
            cfg.attributor.name,
            cfg.reducer.name,
            model_params=cfg.model.params,
            stimulus_params=cfg.stimulus.params,
            attributor_params=cfg.attributor.params,
            reducer_params=cfg.reducer.params,
            model_checkpoint=opts.model_checkpoint or None,
            layer=opts.layer or None,
            cells=opts.cells or None,
            seed=opts.seed,
            client=client,
            store=out if out.suffix == ".zarr" else None,  # parts written as they finish; resumable
            completeness_tolerance=_tolerance(args, completeness.DEFAULT_TOLERANCE),
            strict=getattr(args, "strict", False),
        )
    ds.attrs["history"] = history
    io.save(ds, out)
    print(f"wrote {out}")
    return 0


def _tolerance(args: argparse.Namespace, default: float) -> float:
    """``--completeness-tolerance`` if given (0 included), else ``default``."""
    given = getattr(args, "completeness_tolerance", None)
    return default if given is None else float(given)


def _engine(args: argparse.Namespace) -> Any:
    """Where the run computes: a dask cluster for ``--workers`` / ``--scheduler`` (mechlens.distributed), else here."""
    from mechlens.distributed import engine

    return engine(getattr(args, "workers", None), getattr(args, "scheduler", None))


def _dry_run(cfg: Any, output: Path) -> int:
    """``mechlens run --dry-run``: print the resolved configuration (:mod:`mechlens.dryrun`), run nothing."""
    from mechlens.dryrun import resolved_run

    sys.stdout.write(resolved_run(cfg, output))
    return 0


# -- info ------------------------------------------------------------------------------------------
def summarise(path: Path) -> str:
    """A readable summary of a mechlens netCDF file: stages, dims, variables with units, provenance."""
    import numpy as np

    from mechlens import io

    ds = io.load(path)
    lines = [
        f"{path}",
        f"  written by mechlens {ds.attrs.get('mechlens_version', '?')} on {ds.attrs.get('created', '?')}",
    ]
    for stage in ("model", "stimulus", "attributor", "reducer", "experiment"):
        if ds.attrs.get(stage):
            dist = ds.attrs.get(f"{stage}_distribution", "")
            params = ds.attrs.get(f"{stage}_parameters", "")
            lines.append(
                f"  {stage:<11} {ds.attrs[stage]}" + (f" ({dist})" if dist else "") + (f"  {params}" if params else "")
            )
    if ds.attrs.get("model_checkpoint_sha256"):
        lines.append(f"  checkpoint  sha256 {ds.attrs['model_checkpoint_sha256']}")
    if "layer" in ds.attrs:
        lines.append(f"  layer       {ds.attrs['layer']}")
    lines.append("  dims        " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
    if "time" in ds.coords:
        t = ds["time"].values
        extent = f"{t[0]:.3f} .. {t[-1]:.3f} s" if t.size else "empty (no frame)"
        lines.append(f"  time        {extent}, frame period {ds.attrs.get('frame_period_s', '?')} s")
    if "condition" in ds.coords:
        vals = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in ds["condition"].values.tolist())
        lines.append(f"  condition   {ds['condition'].attrs.get('swept', '?')} = {vals}")
    lines.append("  variables")
    for name, var in ds.data_vars.items():
        units = var.attrs.get("units", "")
        data = var.values
        rng = ""
        if data.dtype.kind == "f" and np.isfinite(data).any():
            rng = f"  range [{np.nanmin(data):.4g}, {np.nanmax(data):.4g}]"
        lines.append(f"    {name:<22} ({', '.join(map(str, var.dims))})" + (f" [{units}]" if units else "") + rng)
    finite = "completeness_error" in ds and "response" in ds and np.isfinite(ds["completeness_error"].values).any()
    if finite and np.isfinite(ds["response"].values).any():  # nanmax of nothing finite would fail or warn
        span = float(np.nanmax(ds["response"].values) - np.nanmin(ds["response"].values)) or 1.0
        worst = float(np.nanmax(np.abs(ds["completeness_error"].values)))
        lines.append(f"  completeness error: max {worst:.3g} Hz = {worst / span:.2e} of the response range")
    if "mechanism" in ds.attrs:
        lines.append(f"  mechanism: {ds.attrs['mechanism']}")
    return "\n".join(lines)


def _safetensors_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata in a ``.safetensors`` checkpoint's header (no tensor is read)."""
    from mechlens.io import read_safetensors_metadata

    meta, _ = read_safetensors_metadata(path, error=UsageError)
    if not isinstance(meta, dict) or "model" not in meta:
        raise UsageError(f"the mechlens metadata in {path} names no 'model'; it is not checkpoint metadata")
    return meta


def summarise_checkpoint(path: Path) -> str | None:
    """Summary of a model checkpoint, or None if ``path`` is not one.

    A checkpoint is ``MODEL.safetensors`` whose header metadata holds the model's JSON metadata
    under the key ``"mechlens"``, or (written by mechlens 0.1, still read) the pair ``MODEL.pt`` +
    ``MODEL.json``. The metadata names the model; its plugin class formats the summary when it has
    a ``describe_checkpoint(path, metadata)``, which may refuse metadata it cannot use (the core
    imports no plugin), else the keys are listed.
    """
    import json

    from mechlens import registry

    if path.suffix == ".safetensors":
        meta, weights = _safetensors_metadata(path), path
    elif path.suffix in (".pt", ".json"):
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            if path.suffix == ".pt" and path.is_file():
                raise UsageError(
                    f"{path} is a legacy checkpoint without its metadata {meta_path.name}; it lies beside the .pt"
                )
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UsageError(f"checkpoint metadata {meta_path} is not valid JSON: {err}") from None
        if not isinstance(meta, dict) or "model" not in meta:
            raise UsageError(f"{meta_path} is not checkpoint metadata (it names no 'model')")
        weights = path.with_suffix(".pt")
    else:
        return None
    if meta["model"] in registry.default().names("model"):
        describe = getattr(registry.get("model", meta["model"]), "describe_checkpoint", None)
        if describe is not None:
            return str(describe(weights, meta))
    return "\n".join([f"{weights}", f"  model {meta['model']}"] + [f"  {k}" for k in sorted(meta) if k != "model"])


def cmd_info(args: argparse.Namespace) -> int:
    """``mechlens info FILE.nc``, ``mechlens info MODEL.safetensors`` or ``mechlens info MODEL`` (its checkpoint)."""
    from mechlens import registry

    path = args.file
    if not path.exists() and str(path) in registry.default().names("model"):
        default = getattr(registry.get("model", str(path)), "default_checkpoint", None)
        found = default() if default is not None else None
        if found is None:
            raise UsageError(f"model {str(path)!r} has no checkpoint of its own to summarise; give a file")
        path = Path(found)
    text = summarise_checkpoint(path)
    print(text if text is not None else summarise(path))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``mechlens report RESULTS... -o DIR``."""
    from mechlens import report

    files: list[Path] = []
    for p in args.results:
        if p.is_dir() and p.suffix != ".zarr":  # a .zarr store is one result
            files += sorted(p.glob("*.nc"))
        else:
            files.append(p)
    if not files:
        raise UsageError(f"no .nc files found in {', '.join(map(str, args.results))}")
    html = report.build(files, args.output, self_contained=args.self_contained)
    print(f"wrote {html}")
    return 0


#: where mechlens's own code lives: a warning raised elsewhere is a third party's and says where from
_OWN_CODE = (str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "plugins"))


def format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """One ``mechlens: warning: ...`` line; a warning from outside mechlens names its source file and category."""
    text = " ".join(str(message).split())
    where = str(Path(filename).resolve()) if filename else ""
    if where and not where.startswith(_OWN_CODE):
        return f"mechlens: warning: {text} ({category.__name__} from {filename}:{lineno})\n"
    return f"mechlens: warning: {text}\n"


def version_text(verbose: bool = False) -> str:
    """``mechlens --version``; ``verbose`` (``-VV``) adds Python and every plugin distribution with its version."""
    text = f"mechlens {__version__}"
    if not verbose:
        return text
    import platform

    from mechlens import registry

    found: dict[tuple[str, str], list[str]] = {}
    for e in registry.entries():
        found.setdefault((e.distribution or "(registered by hand)", e.version), []).append(e.kind)
    lines = [text, f"Python {platform.python_version()} ({sys.executable})", "plugin distributions:"]
    for (dist, version), kinds in sorted(found.items()):
        counts = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
        lines.append(f"  {dist} {version}".rstrip() + f"  ({counts})")
    if not found:
        lines.append("  (none installed)")
    return "\n".join(lines)


def cmd_completion(args: argparse.Namespace) -> int:
    """``mechlens completion SHELL``: a completion script made by shtab from the parser (plugin commands included)."""
    import shtab

    parser = build_parser(with_plugins=True)
    stack = [parser]
    while stack:  # paths complete as files, in every subcommand
        for action in stack.pop()._actions:
            if action.type is Path:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            if isinstance(action, argparse._SubParsersAction):
                stack += list(action.choices.values())
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so that a file being written is removed on the way out."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated


def _leave(code: int, own_process: bool) -> int:
    """Return ``code``; when mechlens is the program, exit at once, after the exit handlers.

    By the time an interrupt reaches :func:`main`, the ``finally`` blocks it went through have removed
    every file mechlens was writing; what is left is tearing down torch, HDF5 and matplotlib, which
    takes a second or more on a busy machine, so it is skipped (issue 22: Ctrl-C must act at once).
    """
    if not own_process:
        return code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", logging.shutdown)
    run_exit_handlers()  # logging.shutdown and weakref finalizers: the cleanup that matters
    os._exit(code)


def _quiet_stdout() -> None:
    """Point stdout at the null device: its reader left, and the flush at exit must not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file behind sys.stdout (captured, in tests): nothing to do
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mechlens`` console script; returns the exit status.

    Exit status 130 after Ctrl-C, 143 after SIGTERM, 141 when the reader of stdout went away
    (``mechlens list | head -1``). Called without ``argv`` (as the program), it exits at once after
    an interrupt instead of returning.
    """
    own_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet = "-q" in argv or "--quiet" in argv
    level = logging.DEBUG if debug else logging.WARNING if quiet or not sys.stderr.isatty() else logging.INFO
    logging.basicConfig(level=level, format="mechlens: %(message)s", stream=sys.stderr)
    warnings.formatwarning = format_warning
    # SIGTERM unwinds like Ctrl-C (temporary files removed) unless someone else handles it already
    catch_term = threading.current_thread() is threading.main_thread()  # handlers live in the main thread
    previous_term = signal.getsignal(signal.SIGTERM) if catch_term else None
    if catch_term and previous_term == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        parser = build_parser(with_plugins=True)
        args = parser.parse_args(argv)
        args.argv = argv
        if args.version:
            print(version_text(verbose=args.version > 1))
            return 0
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that left shows here, where it is handled, not at exit
        return code
    except MechlensError as err:
        if debug:
            traceback.print_exc()
        print(f"mechlens: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("mechlens: interrupted", file=sys.stderr)
        return _leave(130, own_process)
    except _Terminated:
        print("mechlens: terminated (SIGTERM)", file=sys.stderr)
        return _leave(143, own_process)
    except BrokenPipeError:
        # the reader of stdout left (`mechlens list | head -1`): nothing more can be shown, and that is no error
        _quiet_stdout()
        return 141
    except Exception as err:  # noqa: BLE001 - last line of defence: one message, traceback on --debug
        if debug:
            traceback.print_exc()
        print(f"mechlens: error: {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        if catch_term and previous_term == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
