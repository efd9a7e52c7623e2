"""Run specifications from TOML files and ``--set stage.param=value`` overrides.

A config file is data, never code::

    [model]
    name = "my-cnn"

    [stimulus]
    name = "osr"
    period = [0.06, 0.1, 0.15]     # a list sweeps the parameter

    [attributor]
    name = "integrated-gradients"

    [reducer]
    name = "cell-types"

    [run]
    seed = 0
    layer = "conv1"
    output = "results/osr.nc"

Unknown sections, keys and parameters are rejected with their path and the closest known name
(``stimulus.periood: unknown parameter; did you mean period?``); values are type-checked against
the plugin's declared Parameters.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechlens import parameters as _params
from mechlens import registry as _registry
from mechlens import streaming as _streaming
from mechlens.errors import ConfigError, ParameterError, PluginNotFoundError
from mechlens.interfaces import KINDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: the plugin kinds a config section may name, in pipeline order (the plugin kinds are owned by
#: :data:`mechlens.interfaces.KINDS`; experiments are chosen under ``[run]``, commands never)
SECTIONS = tuple(kind for kind in KINDS if kind not in ("experiment", "command"))


@dataclass(frozen=True)
class RunOptions:
    """The ``[run]`` section."""

    seed: int = _params.param(0, "stimulus seed", min=0, max=_params.MAX_SEED)
    layer: str = _params.param("", "hidden layer to attribute (empty: the model's first)")
    cells: list[str] = _params.param([], "cells to attribute (empty: all)")
    output: str = _params.param("", "netCDF file to write")
    model_checkpoint: str | list[str] = _params.param(
        "", "load the model from this checkpoint; a list runs every experiment on every model"
    )
    experiment: list[str] = _params.param([], "experiments to run (empty with no stimulus: all)")
    chunk_time: int = _params.param(
        _streaming.DEFAULT_CHUNK_TIME,
        "stream a longer movie through the stages in chunks of this many time points (0: never)",
        min=0,
    )
    cell_groups: int = _params.param(
        1,
        "split the attribution's cells into this many groups, one per part (1: not split; needs an attributor "
        "that computes cells independently, e.g. integrated gradients with a fixed n_steps)",
        min=1,
    )


@dataclass
class StageConfig:
    """One stage: plugin name and its parameter values (as given; checked by :func:`check`)."""

    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """A whole run: the four stages and the run options."""

    model: StageConfig = field(default_factory=StageConfig)
    stimulus: StageConfig = field(default_factory=StageConfig)
    attributor: StageConfig = field(default_factory=StageConfig)
    reducer: StageConfig = field(default_factory=StageConfig)
    run: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> StageConfig:
        """The config of stage ``name``."""
        return getattr(self, name)

    def options(self) -> RunOptions:
        """The validated ``[run]`` options."""
        return _params.build(RunOptions, self.run, where="run")

    def checkpoints(self) -> list[str]:
        """The model checkpoints of ``[run] model_checkpoint``, a string or a list, as a list (empty: none)."""
        given = self.options().model_checkpoint
        return [str(c) for c in ([given] if isinstance(given, str) else given) if str(c)]


def from_mapping(data: Mapping[str, Any], source: str = "config") -> RunConfig:
    """Build a RunConfig from parsed TOML, rejecting unknown sections and malformed stages."""
    cfg = RunConfig()
    known = [*SECTIONS, "run"]
    for section, body in data.items():
        if section not in known:
            shown = section if section.isprintable() else repr(section)
            raise ConfigError(f"{source}: [{shown}]: unknown section" + _params.suggest(section, known))
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: {section} must be a table ([{section}]), got {_params.show(body)}")
        if section == "run":
            cfg.run = dict(body)
            continue
        body = dict(body)
        name = body.pop("name", None)
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{source}: {section}.name must be a string, got {_params.show(name)}")
        cfg.stage(section).name = name
        cfg.stage(section).params = body
    return cfg


def load(path: str | Path) -> RunConfig:
    """Read a TOML run file.

    Raises
    ------
    ConfigError
        Missing file, TOML syntax error (with line), or unknown section.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give a TOML config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); a config file is TOML, "
            "saved as UTF-8"
        ) from None
    return from_mapping(_parse_toml(text, str(path)), str(path))


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text, refusing malformed or absurdly nested input with a ConfigError."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply (arrays or tables inside one another); flatten it") from None


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML value (``0.1``, ``[1, 2]``, ``true``, ``"x"``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(
            f"value {_params.show(text)} is nested too deeply; give a number, a string or a flat list"
        ) from None


def parse_set(item: str, stages: Sequence[str], example: str = "stimulus.period=0.1") -> tuple[str, str, Any]:
    """Split one ``--set STAGE.NAME=VALUE`` item: the one ``--set`` grammar of every command.

    Parameters
    ----------
    item : str
        The command-line item, e.g. ``"stimulus.period=[0.06, 0.1]"``.
    stages : sequence of str
        The stages this command accepts (``mechlens run``: the plugin sections and ``run``;
        ``mechlens train``: ``train`` and ``model``).
    example : str
        A valid item of this command, for the message.

    Returns
    -------
    (str, str, Any)
        Stage, parameter name and the value parsed as TOML (:func:`parse_value`).

    Raises
    ------
    ConfigError
        No ``=``, no ``STAGE.`` prefix, or an unknown stage (with the closest known one).
    """
    key, eq, raw = item.partition("=")
    stage, dot, name = key.strip().partition(".")
    if not eq or not dot or not stage or not name.strip():
        raise ConfigError(f"--set {item!r}: expected stage.param=value, e.g. {example}")
    if stage not in stages:
        raise ConfigError(
            f"--set {item!r}: unknown stage {stage!r}; stages: {', '.join(stages)}" + _params.suggest(stage, stages)
        )
    try:
        value = parse_value(raw.strip())
    except ConfigError as err:
        raise ConfigError(f"--set {stage}.{name.strip()}: {err}") from None
    return stage, name.strip(), value


def apply_overrides(cfg: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Apply ``stage.param=value`` overrides (``stimulus.period=[0.06,0.1]``, ``run.seed=3``)."""
    for item in overrides:
        stage, pname, value = parse_set(item, [*SECTIONS, "run"])
        if stage == "run":
            cfg.run[pname] = value
        elif pname == "name":
            cfg.stage(stage).name = str(value)
        else:
            cfg.stage(stage).params[pname] = value
    return cfg


def check(
    cfg: RunConfig,
    registry: _registry.Registry | None = None,
    source: str = "config",
    unnamed_ok: Collection[str] = (),
) -> None:
    """Check that named plugins exist and their parameters are valid, before anything runs.

    Stages in ``unnamed_ok`` may set parameters without a name (the caller knows the plugin they
    reach and checks them: ``mechlens run`` with no stimulus gives model parameters to the
    experiments' default models).

    Raises
    ------
    ConfigError
        Naming the offending path, e.g. ``stimulus.periood: unknown parameter; did you mean period?``.
    """
    reg = registry or _registry.default()
    try:
        cfg.options()
    except ParameterError as err:
        raise ConfigError(f"{source}: {err}") from None
    for stage in SECTIONS:
        sc = cfg.stage(stage)
        if sc.name is None:
            if sc.params and stage not in unnamed_ok:
                raise ConfigError(f'{source}: [{stage}] sets parameters but no name; add name = "..."')
            continue
        try:
            cls = reg.get(stage, sc.name)
        except PluginNotFoundError as err:
            raise ConfigError(f"{source}: {stage}.name: {err}") from None
        try:
            _params.build(cls.Parameters, sc.params, where=stage)
        except ParameterError as err:
            raise ConfigError(f"{source}: {err}") from None
