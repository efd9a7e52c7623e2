"""The plugin registers its reducers through its entry point."""

from __future__ import annotations

import warnings

from mechlens.registry import Registry


def test_reducers_are_registered_by_the_reduction_plugin() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other built-in plugins may still be half-written
        reg = Registry()
        names = reg.names("reducer")
    for name in ("cell-types", "nmf", "pca"):
        assert name in names
        cls = reg.get("reducer", name)
        assert cls.__module__.startswith("mechlens_reduction.")
        assert cls.name == name
        # the package was renamed (mechlens_sklearn -> mechlens_reduction), the entry point's name was not
        assert reg.get("reducer", f"sklearn:{name}") is cls
