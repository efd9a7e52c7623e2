"""CLI subcommands of the retina plugin: ``mechlens train`` (here) and ``mechlens simulate``.

``mechlens train --data PATH [--stimulus-type naturalscene] [--cells 0 1 2]
[--set train.NAME=VALUE | model.NAME=VALUE ...]
-o MODEL.safetensors`` fits the retina CNN to a recording and writes a checkpoint (one file: the
weights with their metadata). ``--set`` takes training parameters (``lr``, ``epochs``, ``nskip``, ...; see
docs/training.md) and model parameters (``history``, ``channels1``, ``kernel1``, ...), bare or
prefixed with ``train.`` / ``model.``; values are TOML (``0.01``, ``[5, 15]``, ``"fft"``).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mechlens.errors import ParameterError
from mechlens.interfaces import Command
from mechlens_retina.units import PIXEL_UM


def split_overrides(items: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sort ``--set`` items into training and model parameters.

    Parameters
    ----------
    items : iterable of str
        ``name=value``, ``train.name=value`` or ``model.name=value``; values are TOML.

    Returns
    -------
    (dict, dict)
        Training parameters and model parameters (values not yet validated).

    Raises
    ------
    ConfigError
        A malformed item.
    ParameterError
        A name that is neither a training nor a model parameter (with the closest match).
    """
    from mechlens.config import parse_set
    from mechlens.parameters import specs, suggest
    from mechlens_retina.models.cnn import RetinaCNN
    from mechlens_retina.training.fit import DERIVED, TrainParameters

    train_names = [s.name for s in specs(TrainParameters)]
    model_names = [s.name for s in specs(RetinaCNN.Parameters) if s.name not in DERIVED]
    train: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for item in items:
        key = item.partition("=")[0].strip()
        if "=" in item and "." not in key and key:
            # the bare form (lr=0.005) of earlier releases: still read, with its stage named
            scope = "train" if key in train_names else "model" if key in model_names else ""
            if scope:
                warnings.warn(
                    f"--set {item}: give the stage, --set {scope}.{item.strip()} (the bare form is deprecated)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                item = f"{scope}.{item.strip()}"
        scope, name, value = parse_set(item, ["train", "model"], example="train.lr=0.005 or model.history=30")
        if scope == "train" and name in train_names:
            train[name] = value
        elif scope == "model" and name in model_names:
            model[name] = value
        else:
            known = train_names if scope == "train" else model_names
            raise ParameterError(
                f"{scope}.{name}",
                f"not a {'training' if scope == 'train' else 'model'} parameter of mechlens train"
                + suggest(name, known)
                + _derived_note(name),
            )
    return train, model


def _derived_note(name: str) -> str:
    from mechlens_retina.training.fit import DERIVED

    if name in DERIVED:
        return f" ({name} is set from the data or from the training parameters)"
    return ""


class TrainCommand(Command):
    """``mechlens train``: fit the retina CNN to a recording and write a checkpoint."""

    name = "train"
    help = "fit the retina CNN to a recording (deep-retina HDF5 or mechlens netCDF) and write MODEL.safetensors"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from mechlens_retina.training.recordings import RESPONSE_KEYS, STIMULUS_TYPES

        parser.add_argument(
            "--data",
            required=True,
            type=Path,
            metavar="PATH",
            help="recording: a deep-retina .h5 file, an experiment directory holding <stimulus-type>.h5, or a .nc file",
        )
        parser.add_argument(
            "--stimulus-type",
            default="naturalscene",
            choices=STIMULUS_TYPES,
            help="which file of an experiment directory (default naturalscene)",
        )
        parser.add_argument(
            "--response",
            default="firing_rate_10ms",
            choices=list(RESPONSE_KEYS),
            help="response of an HDF5 recording (default firing_rate_10ms)",
        )
        parser.add_argument("--cells", type=int, nargs="+", metavar="N", help="rows of the recorded cells to fit")
        parser.add_argument(
            "--pixel-um",
            type=float,
            default=PIXEL_UM,
            help=f"micrometres per pixel of an HDF5 recording (default {PIXEL_UM:g})",
        )
        parser.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="PARAM=VALUE",
            help="a training or model parameter (train.lr=0.005, train.epochs=10, model.history=30); repeatable",
        )
        parser.add_argument("-o", "--output", required=True, type=Path, help="checkpoint to write (MODEL.safetensors)")

    def run(self, args: argparse.Namespace) -> int:
        from mechlens_retina.training.fit import describe, save_path, train

        output = save_path(args.output)
        train_params, model_params = split_overrides(args.overrides)
        model, metrics = train(
            args.data,
            train_params,
            model_params,
            cells=args.cells,
            stimulus_type=args.stimulus_type,
            response=args.response,
            pixel_um=args.pixel_um,
        )
        model.save(output)
        print(describe(metrics, model.cells))
        print(f"wrote {output} (weights sha256 {model.checkpoint_sha256()[:12]}...)")
        return 0


# the synthetic-retina module contributes the other command of this plugin
from mechlens_retina.training.simulate import SimulateCommand as SimulateCommand  # noqa: E402
