"""The conformance kit passes good plugins and catches broken ones, check by named check."""

from __future__ import annotations

import pytest
from experiment_toys import ToyAttributor, ToyKeep

from mechlens.testing import (
    check_model,
    check_stimulus,
    checks_for,
    merged,
    noise_stimulus,
    parametrize_with_checks,
)
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


class Misnamed(Unseeded):
    """Breaks two checks at once: its name, and determinism."""

    name = "Misnamed_Noise"


class Broken(ToyNoise):
    """Cannot render."""

    name = "broken"

    def render(self, params, seed):
        raise RuntimeError("no movie today")


def test_kit_catches_nondeterminism():
    with pytest.raises(AssertionError, match="differs between two identical calls"):
        check_stimulus(Unseeded)


def test_kit_catches_a_split_that_does_not_recompose():
    with pytest.raises(AssertionError, match=r"above\(below\(x\)\) != module\(x\)"):
        check_model(BadSplit())


def test_kit_catches_parts_that_do_not_merge_into_one_call():
    from mechlens_attribution.integrated import IntegratedGradients

    from mechlens.testing import check_attributor

    class ShareOfCells(IntegratedGradients):
        """Claims cells can be split, but scales each cell by the share of cells in its call."""

        name = "share-of-cells"

        def attribute_part(self, model, stimulus, layer=None, cells=None, part=None):
            out = super().attribute_part(model, stimulus, layer, cells, part)
            if part is not None and part.get("cells") is not None:
                out["attribution"] = out["attribution"] * 0.5
            return out

    check_attributor(IntegratedGradients, ToyCNN(), params={"n_steps": 8}, completeness_rtol=1e-1)
    with pytest.raises(AssertionError, match=r"one call and its 6 parts along \['condition', 'time', 'cell'\] merged"):
        check_attributor(ShareOfCells, ToyCNN(), params={"n_steps": 8}, completeness_rtol=1e-1)


# -- named checks -----------------------------------------------------------------------------------------


@parametrize_with_checks([ToyNoise, ToyNoise(contrast=[0.5, 1.0]), ToyCNN])
def test_toys_conform(check):
    check()


@parametrize_with_checks([ToyAttributor], model=ToyCNN, completeness_rtol=1e-5)
def test_toy_attributor_conforms(check):
    check()


def _toy_attribution():
    model = ToyCNN()
    stim = noise_stimulus(model, n_times=12)
    return merged(stim, ToyAttributor().attribute(model, stim))


@parametrize_with_checks([ToyKeep, ToyKeep(k=1)], attribution=_toy_attribution, model=ToyCNN)
def test_toy_reducer_conforms(check):
    check()


@parametrize_with_checks([Unseeded], expected_failures={"check_stimulus_deterministic": "ignores its seed, on purpose"})
def test_an_expected_failure_is_an_xfail(check):
    check()


def test_each_kind_has_its_named_checks():
    model = ToyCNN()
    kinds = {
        "stimulus": checks_for(ToyNoise),
        "model": checks_for(model),
        "attributor": checks_for(ToyAttributor, model=model),
        "reducer": checks_for(ToyKeep, attribution=_toy_attribution),
    }
    for kind, checks in kinds.items():
        names = [name for name, _ in checks]
        assert len(set(names)) == len(names), kind
        assert all(name.startswith("check_") for name in names), kind
        assert names[:4] == [
            "check_name",
            "check_docstring",
            "check_parameters_dataclass",
            "check_parameters_documented",
        ]
        assert any(name.startswith(f"check_{kind}_") for name in names), kind
    # reduced_response is owed only when a model is given
    assert "check_reducer_reduced_response" not in [n for n, _ in kinds["reducer"]]
    with_model = checks_for(ToyKeep, attribution=_toy_attribution, model=model)
    assert "check_reducer_reduced_response" in [n for n, _ in with_model]


def test_checks_share_one_output_made_on_first_use():
    before = Unseeded.calls
    checks = dict(checks_for(Unseeded))
    assert Unseeded.calls == before  # making the checks runs nothing
    checks["check_name"]()
    assert Unseeded.calls == before
    checks["check_stimulus_schema"]()
    checks["check_stimulus_movie"]()
    assert Unseeded.calls == before + 1  # one generate for both
    with pytest.raises(AssertionError, match="differs between two identical calls"):
        checks["check_stimulus_deterministic"]()


def test_a_failing_check_hides_none_of_the_others():
    checks = dict(checks_for(Misnamed))
    with pytest.raises(AssertionError, match="kebab-case"):
        checks["check_name"]()
    checks["check_stimulus_schema"]()  # still runs, and passes
    with pytest.raises(AssertionError) as info:
        check_stimulus(Misnamed)
    message = str(info.value)
    assert "failed 2 of 11 conformance checks" in message
    assert "- check_name: " in message and "- check_stimulus_deterministic: " in message
    assert "check_stimulus_schema" not in message


def test_an_output_that_cannot_be_made_fails_each_check_needing_it_reported_once():
    with pytest.raises(AssertionError) as info:
        check_stimulus(Broken)
    message = str(info.value)
    # once for the movie on its own grid, once for the movie on a model's grid (another output)
    assert message.count("RuntimeError: no movie today") == 2
    assert "- check_stimulus_on_grid: RuntimeError: no movie today" in message
    assert "- check_stimulus_round_trip: the same error as check_stimulus_schema" in message
    assert "check_name" not in message  # the declaration checks need no movie
    assert isinstance(info.value.__cause__, RuntimeError)


def test_parametrize_makes_one_test_id_per_plugin_and_check():
    def test(check):
        check()

    decorated = parametrize_with_checks(
        [ToyNoise, ToyNoise(contrast=[0.5, 1.0])], expected_failures={"check_stimulus_round_trip": "why"}
    )(test)
    (mark,) = decorated.pytestmark
    assert mark.args[0] == "check"
    cases = mark.args[1]
    ids = [case.id for case in cases]
    names = [name for name, _ in checks_for(ToyNoise)]
    assert ids == [f"ToyNoise-{n}" for n in names] + [f"ToyNoise(contrast=[0.5, 1.0])-{n}" for n in names]
    xfails = [case.id for case in cases if case.marks]
    assert xfails == ["ToyNoise-check_stimulus_round_trip", "ToyNoise(contrast=[0.5, 1.0])-check_stimulus_round_trip"]
    assert all(mark.kwargs == {"reason": "why", "strict": True} for case in cases for mark in case.marks)


def test_wrong_arguments_are_named():
    with pytest.raises(ValueError, match="check_stimulus_determinism"):
        parametrize_with_checks([ToyNoise], expected_failures={"check_stimulus_determinism": "typo"})
    with pytest.raises(TypeError, match="take no attribution"):
        checks_for(ToyNoise, attribution=_toy_attribution)
    with pytest.raises(TypeError, match="need model="):
        checks_for(ToyAttributor)
    with pytest.raises(TypeError, match="need attribution="):
        checks_for(ToyKeep)
    with pytest.raises(TypeError, match="not both"):
        checks_for(ToyNoise(contrast=[0.5, 1.0]), params={"contrast": 2.0})
    with pytest.raises(TypeError, match="plugin class or instance"):
        checks_for(object)
