"""The conformance kit passes good plugins and catches broken ones."""

from __future__ import annotations

import pytest

from mechlens.testing import check_model, check_stimulus
from mechlens.toymodels import ToyCNN, ToyNoise


def test_kit_passes_the_toys():
    check_stimulus(ToyNoise)
    check_stimulus(ToyNoise, {"contrast": [0.5, 1.0]})
    out = check_model(ToyCNN())
    assert out.sizes["cell"] == 3


class Unseeded(ToyNoise):
    """Ignores its seed."""

    name = "unseeded"
    calls = 0

    def render(self, params, seed):
        Unseeded.calls += 1
        return super().render(params, seed + Unseeded.calls)


class BadSplit(ToyCNN):
    """Splits wrongly."""

    name = "bad-split"

    def split(self, layer):
        below, above = super().split(layer)
        return below, above[1:]


def test_kit_catches_nondeterminism():
    with pytest.raises(AssertionError, match="differs between two identical calls"):
        check_stimulus(Unseeded)


def test_kit_catches_a_split_that_does_not_recompose():
    with pytest.raises(AssertionError, match=r"above\(below\(x\)\) != module\(x\)"):
        check_model(BadSplit())
