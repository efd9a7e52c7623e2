"""Entry point of the attribution plugin (registered in pyproject.toml, as a third party would)."""

from __future__ import annotations

from mechlens import hookimpl


@hookimpl
def mechlens_attributors() -> list[type]:
    # imported here so that plugin discovery never imports torch or captum
    from mechlens_attribution.captum_layer import DeepLift, GradientXActivation
    from mechlens_attribution.exact import ExactIntegratedGradients
    from mechlens_attribution.integrated import IntegratedGradients

    return [IntegratedGradients, ExactIntegratedGradients, GradientXActivation, DeepLift]
