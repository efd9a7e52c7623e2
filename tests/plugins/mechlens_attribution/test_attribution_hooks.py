"""The plugin registers its attributors through its entry point, under the names users type."""

from __future__ import annotations

import warnings

from mechlens.registry import Registry


def test_attributors_are_registered_under_their_names_and_the_entry_points_qualifier() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other built-in plugins may still be half-written
        reg = Registry()
    for name in ("integrated-gradients", "exact-integrated-gradients", "gradient-x-activation", "deeplift"):
        cls = reg.get("attributor", name)
        assert cls.__module__.startswith("mechlens_attribution.") and cls.name == name
        # the package was renamed (mechlens_captum -> mechlens_attribution), the entry point's name was not:
        # a qualified name written before the rename still finds the same class
        assert reg.get("attributor", f"captum:{name}") is cls
