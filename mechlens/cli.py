"""The ``mechlens`` command line.

Exit status: 0 success, 2 bad usage or config, 1 failure while running. A user error prints one
clear message; ``--debug`` shows the traceback.

Why one file (about 600 lines): the parser of every built-in command and the process-level handling
(exit codes, signals, warnings) belong together; turning ``run``'s arguments into a configuration is
:mod:`mechlens.runargs`, and what ``info`` prints is :mod:`mechlens.info`.
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
  mechlens run --model-checkpoint a.safetensors,b.safetensors -o cmp/   every experiment on both models
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
            DIR/<experiment>.nc plus DIR/report.html (-o DIR, default results/); with several
            --model-checkpoint, every experiment runs on every model into DIR/<label>/<experiment>.nc
            and the report compares the models."""
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
    p.add_argument(
        "--model-checkpoint",
        action="append",
        type=_names,
        metavar="PATH[,PATH...]",
        help="load the model from this checkpoint; several (comma-separated or repeated) run every experiment on "
        "every model into DIR/<label>/ and compare them in the report (without --stimulus)",
    )
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
        "--cell-groups",
        type=int,
        metavar="N",
        help="split the attribution's cells into N groups, one per part (less memory per task; needs an "
        "attributor that computes cells independently, e.g. integrated gradients with a fixed n_steps); "
        "pipeline runs only (docs/scale-out.md)",
    )
    p.add_argument(
        "--chunk-time",
        type=int,
        metavar="N",
        help="stream a movie longer than N output time points through the stages in chunks of N, written as "
        "they go (default 6000; 0: never); pipeline runs only (docs/scale-out.md)",
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


def _model_contract(cls: Any) -> list[str]:
    """What a model states (docs/contract.md, 'Kinds'), read from an instance made with its defaults."""
    try:
        model = cls()
        grid, layers = model.grid.describe(), model.layers()
    except Exception as err:  # noqa: BLE001 - a listing shows every model, whatever one fails to build
        return [f"(not described: building it with its defaults failed: {type(err).__name__}: {err})"]
    how = "split by forward hooks" if model.split_by_hooks() else "its own split"
    shapes = ", ".join(f"{name} {tuple(shape)}" for name, shape in layers.items()) or "none"
    outputs = "signed" if model.signed else "non-negative rates (Hz)"
    return [f"grid: {grid}", f"layers ({how}): {shapes}", f"cells: {len(model.cells)}; outputs: {outputs}"]


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
            if args.verbose and kind == "model":
                out.writelines(f"      {line}\n" for line in _model_contract(e.cls))
        out.write("\n")
    return 0


# -- run -------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """``mechlens run``: one pipeline, or the experiments."""
    from mechlens import completeness, io, pipeline
    from mechlens.runargs import config_from_args

    cfg = config_from_args(args)
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
        checkpoints = cfg.checkpoints()
        with _engine(args) as client:
            common = {
                "names": opts.experiment or None,
                "outdir": outdir,
                "model": cfg.model.name,
                "model_params": cfg.model.params,
                "seed": opts.seed,
                "history": history,
                "cells": opts.cells or None,
                "client": client,
            }
            if len(checkpoints) > 1:  # every experiment on every model: DIR/<label>/<experiment>.nc
                written = experiments.run_models(checkpoints, **common)
            else:
                written = experiments.run_all(model_checkpoint=checkpoints[0] if checkpoints else None, **common)
        if not log.isEnabledFor(logging.INFO):  # else the log announced each file as it was written
            for path in [*written, *([outdir / "report.html"] if written else [])]:
                print(f"wrote {path}")
        return 0
    if cfg.model.name is None:
        raise UsageError("name a model: --model NAME or [model] name = ... (see `mechlens list model`)")
    out = args.output or Path(opts.output or f"results/{cfg.model.name}_{cfg.stimulus.name}.nc")
    io.check_output(out, folder=False)  # before any work: a bad -o must not cost the whole run
    if args.dry_run:
        return _dry_run(cfg, out)
    if cfg.run.get("chunk_time") is not None and (getattr(args, "workers", None) or getattr(args, "scheduler", None)):
        raise UsageError("--chunk-time streams a run in this process; drop it, or drop --workers / --scheduler")
    with _engine(args) as client:
        from mechlens import streamwrite  # a long movie is streamed into -o chunk by chunk (mechlens.streaming)

        # a run split by cells runs in parts, not streamed
        streamed = client is None and int(opts.cell_groups or 1) <= 1
        sink = streamwrite.open_sink(out, {"history": history}) if streamed else None
        ds = pipeline.run(
            cfg.model.name,
            cfg.stimulus.name,
            cfg.attributor.name,
            cfg.reducer.name,
            model_params=cfg.model.params,
            stimulus_params=cfg.stimulus.params,
            attributor_params=cfg.attributor.params,
            reducer_params=cfg.reducer.params,
            model_checkpoint=(cfg.checkpoints() or [None])[0],
            layer=opts.layer or None,
            cells=opts.cells or None,
            seed=opts.seed,
            client=client,
            store=out if out.suffix == ".zarr" else None,  # parts written as they finish; resumable
            completeness_tolerance=_tolerance(args, completeness.DEFAULT_TOLERANCE),
            strict=getattr(args, "strict", False),
            sink=sink,
            chunk_time=opts.chunk_time,
            cell_groups=opts.cell_groups,
        )
    if sink is None or not sink.written:
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
    from mechlens.info import summarise, summarise_checkpoint

    text = summarise_checkpoint(path)
    print(text if text is not None else summarise(path))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``mechlens report RESULTS... -o DIR``."""
    from mechlens import report

    files: list[Path] = []
    for p in args.results:
        if p.is_dir() and p.suffix != ".zarr":  # a .zarr store is one result
            # per-model subfolders (`mechlens run --model-checkpoint a,b`) too: ordered by model, then experiment
            files += sorted(p.rglob("*.nc"))
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

    from mechlens import registry

    parser = build_parser(with_plugins=True)
    # plugin options complete to the installed plugins' names; the choices are set on this parser only,
    # which never parses, so a real run keeps mechlens's own did-you-mean message for a wrong name
    reg = registry.default()
    names = {kind: sorted(reg.names(kind)) for kind in ("model", "stimulus", "attributor", "reducer", "experiment")}
    stack = [parser]
    while stack:  # paths complete as files, in every subcommand
        for action in stack.pop()._actions:
            if action.type is Path or action.dest == "model_checkpoint":  # a list of paths is read by _names
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            if action.option_strings and action.dest in names and names[action.dest]:
                action.choices = names[action.dest]
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
