"""The ``mechlens`` command line.

Exit status: 0 success, 2 bad usage or config, 1 failure while running. A user error prints one
clear message; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import textwrap
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
    p.add_argument("--experiment", action="append", default=[], metavar="NAME", help="run this experiment (repeatable)")
    p.add_argument("--model-checkpoint", type=Path, metavar="PATH", help="load the model from this checkpoint")
    p.add_argument("--layer", help="hidden layer to attribute (default: the model's first)")
    p.add_argument("--cells", nargs="+", metavar="ID", help="cells to attribute (default: all)")
    p.add_argument("--seed", type=int, help="stimulus seed (default 0)")
    p.add_argument("-o", "--output", type=Path, help="output .nc file (pipeline) or directory (experiments)")
    p.set_defaults(func=cmd_run)


def _add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info", help="summarise a netCDF file written by mechlens, a model checkpoint (.pt), or a model's checkpoint"
    )
    p.add_argument("file", type=Path, help="a .nc result, a checkpoint MODEL.pt (with MODEL.json), or a model name")
    p.set_defaults(func=cmd_info)


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="rebuild the HTML report from saved netCDF results (no model needed)")
    p.add_argument("results", nargs="+", type=Path, help="result .nc files or directories holding them")
    p.add_argument("-o", "--output", type=Path, default=Path("results"), help="report directory (default results/)")
    p.set_defaults(func=cmd_report)


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    """The argument parser, with subcommands contributed by plugins when ``with_plugins``."""
    parser = _Parser(prog="mechlens", description="Mechanistic accounts of neural-circuit models.")
    parser.add_argument("--version", action="version", version=f"mechlens {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_list(sub)
    _add_run(sub)
    _add_info(sub)
    _add_report(sub)
    if with_plugins:
        from mechlens import registry

        builtin = {"list", "run", "info", "report"}
        for entry in registry.entries("command"):
            if entry.name in builtin:
                log.warning(
                    "command %r of distribution %r clashes with a built-in command; skipped",
                    entry.name,
                    entry.distribution,
                )
                continue
            command = entry.cls()
            p = sub.add_parser(entry.name, help=f"{command.help} [{entry.distribution}]")
            command.add_arguments(p)
            p.set_defaults(func=lambda args, c=command: c.run(args))
    return parser


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

    cfg = config.load(args.config) if args.config else config.RunConfig()
    for stage in config.STAGES:
        name = getattr(args, stage)
        if name:
            cfg.stage(stage).name = name
    config.apply_overrides(cfg, args.overrides)
    for key in ("layer", "seed"):
        if getattr(args, key) is not None:
            cfg.run[key] = getattr(args, key)
    if args.cells:
        cfg.run["cells"] = list(args.cells)
    if args.model_checkpoint:
        cfg.run["model_checkpoint"] = str(args.model_checkpoint)
    if args.experiment:
        cfg.run["experiment"] = list(args.experiment)
    config.check(cfg, source=str(args.config) if args.config else "command line")
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    """``mechlens run``: one pipeline, or the experiments."""
    from mechlens import io, pipeline

    cfg = _config_from_args(args)
    opts = cfg.options()
    history = "mechlens " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))
    if cfg.stimulus.name is None:
        from mechlens import experiments

        outdir = args.output or Path(opts.output or "results")
        experiments.run_all(
            names=opts.experiment or None,
            outdir=outdir,
            model=cfg.model.name,
            model_params=cfg.model.params,
            model_checkpoint=opts.model_checkpoint or None,
            seed=opts.seed,
            history=history,
        )
        return 0
    if cfg.model.name is None:
        raise UsageError("name a model: --model NAME or [model] name = ... (see `mechlens list model`)")
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
    )
    ds.attrs["history"] = history
    out = args.output or Path(opts.output or f"results/{cfg.model.name}_{cfg.stimulus.name}.nc")
    io.save(ds, out)
    print(f"wrote {out}")
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
        lines.append(f"  time        {t[0]:.3f} .. {t[-1]:.3f} s, frame period {ds.attrs.get('frame_period_s', '?')} s")
    if "condition" in ds.coords:
        vals = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in ds["condition"].values.tolist())
        lines.append(f"  condition   {ds['condition'].attrs.get('swept', '?')} = {vals}")
    lines.append("  variables")
    for name, var in ds.data_vars.items():
        units = var.attrs.get("units", "")
        vals = var.values
        rng = ""
        if vals.dtype.kind == "f" and np.isfinite(vals).any():
            rng = f"  range [{np.nanmin(vals):.4g}, {np.nanmax(vals):.4g}]"
        lines.append(f"    {name:<22} ({', '.join(var.dims)})" + (f" [{units}]" if units else "") + rng)
    if "completeness_error" in ds and "response" in ds:
        span = float(np.nanmax(ds["response"].values) - np.nanmin(ds["response"].values)) or 1.0
        worst = float(np.nanmax(np.abs(ds["completeness_error"].values)))
        lines.append(f"  completeness error: max {worst:.3g} Hz = {worst / span:.2e} of the response range")
    if "mechanism" in ds.attrs:
        lines.append(f"  mechanism: {ds.attrs['mechanism']}")
    return "\n".join(lines)


def summarise_checkpoint(path: Path) -> str | None:
    """Summary of a model checkpoint (``MODEL.pt`` + ``MODEL.json``), or None if ``path`` is not one.

    The JSON metadata names the model; its plugin class formats the summary when it has a
    ``describe_checkpoint(path, metadata)`` (the core imports no plugin), else the keys are listed.
    """
    import json

    from mechlens import registry

    if path.suffix not in (".pt", ".json"):
        return None
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        if path.suffix == ".pt" and path.is_file():
            raise UsageError(f"{path} is a checkpoint without its metadata {meta_path.name}; it lies beside the .pt")
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"checkpoint metadata {meta_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or "model" not in meta:
        raise UsageError(f"{meta_path} is not checkpoint metadata (it names no 'model')")
    weights = path.with_suffix(".pt")
    if meta["model"] in registry.default().names("model"):
        describe = getattr(registry.get("model", meta["model"]), "describe_checkpoint", None)
        if describe is not None:
            return str(describe(weights, meta))
    return "\n".join([f"{weights}", f"  model {meta['model']}"] + [f"  {k}" for k in sorted(meta) if k != "model"])


def cmd_info(args: argparse.Namespace) -> int:
    """``mechlens info FILE.nc``, ``mechlens info MODEL.pt`` or ``mechlens info MODEL-NAME`` (its own checkpoint)."""
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
        if p.is_dir():
            files += sorted(p.glob("*.nc"))
        else:
            files.append(p)
    if not files:
        raise UsageError(f"no .nc files found in {', '.join(map(str, args.results))}")
    html = report.build(files, args.output)
    print(f"wrote {html}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mechlens`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet = "-q" in argv or "--quiet" in argv
    level = logging.DEBUG if debug else logging.WARNING if quiet or not sys.stderr.isatty() else logging.INFO
    logging.basicConfig(level=level, format="mechlens: %(message)s", stream=sys.stderr)
    warnings.formatwarning = lambda message, category, *a, **k: f"mechlens: warning: {message}\n"
    try:
        parser = build_parser(with_plugins=True)
        args = parser.parse_args(argv)
        args.argv = argv
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except MechlensError as err:
        if debug:
            traceback.print_exc()
        print(f"mechlens: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("mechlens: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - last line of defence: one message, traceback on --debug
        if debug:
            traceback.print_exc()
        print(f"mechlens: error: {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
