"""Entry point of the retina plugin (registered in pyproject.toml, as a third party would).

Classes are imported inside the hooks so that discovery never imports torch.
"""

from __future__ import annotations

from typing import Any

from mechlens import hookimpl


@hookimpl
def mechlens_models() -> list[type]:
    from mechlens_retina.models.cnn import RetinaCNN
    from mechlens_retina.models.synthetic import SyntheticRetina

    return [RetinaCNN, SyntheticRetina]


@hookimpl
def mechlens_commands() -> list[type]:
    from mechlens_retina.commands import SimulateCommand, TrainCommand

    return [TrainCommand, SimulateCommand]


@hookimpl
def mechlens_experiments() -> list[type]:
    from mechlens_retina.experiments import EXPERIMENTS

    return list(EXPERIMENTS)


@hookimpl
def mechlens_report_sections(results: list[Any]) -> list[Any]:
    from mechlens_retina.experiments.report import report_sections

    return report_sections(results)
