"""The comparison of models in the report (mechlens.report_compare), from hand-made result Datasets."""

from __future__ import annotations

import re

import xarray as xr

from mechlens.report_compare import comparison, measure_text, model_label, verdict


def _result(label: str, experiment: str, passed: int, sha: str = "") -> xr.Dataset:
    attrs = {"experiment": experiment, "model": "m", "model_label": label, "model_checkpoint_sha256": sha}
    attrs.update(measure_name="slope", measure_value=1.5, measure_units="Hz", measure_pass=passed)
    return xr.Dataset(attrs=attrs)


def test_the_comparison_shows_only_when_models_are_compared():
    one = [("a-x", "x", _result("a", "x", 1)), ("a-y", "y", _result("a", "y", 0))]
    assert comparison(one) == ""
    disjoint = [("a-x", "x", _result("a", "x", 1)), ("b-y", "y", _result("b", "y", 0))]
    assert comparison(disjoint) == ""  # nothing ran on both: nothing to compare
    both = [*one, ("b-x", "x", _result("b", "x", 0, "ab" * 32))]
    page = comparison(both)
    assert "<td class='na'>not run</td>" in page and "abababababab" in page
    assert re.findall(r"href='#([^']+)'><span class=\"(\w+)\"", page) == [
        ("a-x", "pass"),
        ("b-x", "fail"),
        ("a-y", "fail"),
    ]
    assert "<b>1</b> of 2" in page and "<b>0</b> of 1" in page


def test_verdict_measure_and_label_read_odd_files_without_failing():
    odd = xr.Dataset(attrs={"measure_pass": "maybe", "measure_name": "<b>", "measure_value": "x", "model": "m"})
    assert verdict(odd) == '<span class="na">&ndash;</span>'
    assert measure_text(odd) == "&lt;b&gt;"  # escaped, no value
    assert model_label(odd) == "m"
    assert model_label(xr.Dataset(attrs={"model_checkpoint": "/runs/b7.safetensors", "model": "m"})) == "b7"
