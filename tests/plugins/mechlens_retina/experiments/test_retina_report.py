"""The retina plugin's report sections (mechlens_report_sections hook): model and data, paper, failure, ground truth."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from mechlens_retina.experiments import report as reporting
from mechlens_retina.models.checkpoint import read_header

from mechlens import registry
from mechlens.report import ReportResult, Section, render_section

BUNDLED = Path(reporting.__file__).resolve().parents[1] / "data" / "default.safetensors"


@pytest.fixture(scope="module")
def meta():
    if not BUNDLED.is_file():
        pytest.skip("no bundled checkpoint")
    return read_header(BUNDLED)[0]


def _result(meta, experiment="omitted-stimulus", passed=0, record=False, model="retina-cnn"):
    t = np.round(np.arange(-0.05, 0.3, 0.01), 3)
    gt = np.zeros((4, t.size, 2), np.float32)
    gt[3, 10:20, 0] = 5.0  # ON-slow carries the focus cell's response
    gt[0, 5:8, 0] = -1.0
    ds = xr.Dataset(
        {
            "gt_attribution": (("gt_unit", "time", "cell"), gt),
            "in_window": (("time",), (t >= 0).astype(np.int8)),
        },
        coords={"time": t, "cell": ["gc05", "gc06"], "gt_unit": ["OFF-fast", "OFF-slow", "ON-fast", "ON-slow"]},
    )
    ds.attrs.update(
        model=model,
        model_checkpoint_sha256=meta["weights_sha256"],
        model_parameters=json.dumps({"checkpoint": "bundled"}),
        experiment=experiment,
        experiment_reference="Schwartz et al. 2007",
        measure_name="OSR latency spread over periods, best cell",
        measure_value=29.0,
        measure_units="ms",
        measure_target="latency within +-15 ms",
        measure_pass=passed,
        measure_value_reduced=38.0,
        measure_pass_reduced=0,
        measure_value_complement=54.0,
        measure_pass_complement=0,
        focus_cell="gc05",
    )
    if record:
        ds.attrs.update(reporting.model_record(types.SimpleNamespace(metadata=meta)))
    return ReportResult(Path("omitted-stimulus.nc"), experiment, ds)


def test_the_training_record_keeps_data_fit_and_gate(meta):
    rec = json.loads(reporting.model_record(types.SimpleNamespace(metadata=meta))[reporting.ATTR])
    assert rec["simulate"]["model"] == "synthetic-retina" and rec["weights_sha256"] == meta["weights_sha256"]
    assert 0.9 < rec["cc_median"] <= 1.0 and rec["n_cells"] == 8
    assert set(rec["probe_agreement"]["stimuli"]) == set(meta["probe_agreement"]["stimuli"])
    assert reporting.model_record(types.SimpleNamespace(metadata={})) == {}  # random weights: nothing to say


@pytest.mark.parametrize("record", [True, False])
def test_a_failed_result_gets_model_data_paper_failure_and_ground_truth(meta, record):
    r = _result(meta, record=record)
    sections = reporting.report_sections([r])
    assert all(isinstance(s, Section) for s in sections)
    model = [s for s in sections if s.topic == "model"]
    assert len(model) == 1 and not model[0].result
    text = " ".join(model[0].paragraphs)
    sim = meta["recipe"]["simulate"]
    assert f"{sim['minutes']:g} minutes of the synthetic-retina's responses to natural-scenes" in text
    if "first_stage" in meta["recipe"]:  # a two-stage recipe names both recordings
        assert "Trained in two stages: first on" in text and "then fine-tuned on" in text
    assert "NOT passed" in text and model[0].tone == "fail"
    assert ("model_training attr" in text) is record and ("default.safetensors" in text) is (not record)
    assert [row[0] for row in model[0].table][1:] == list(meta["probe_agreement"]["stimuli"])
    mine = {s.title: s for s in sections if s.result == r.key}
    assert set(mine) == {
        "The paper and this model",
        "Why the measure fails",
        "Ground truth: the synthetic retina's own mechanism",
    }
    paper = mine["The paper and this model"].table
    assert "Schwartz et al. 2007" in paper[0][1] and paper[1][2].startswith("not shown (29 ms")
    fail = " ".join(mine["Why the measure fails"].paragraphs)
    assert "= 29 ms; the target is latency within +-15 ms" in fail and "does not predict when the missing flash" in fail
    truth = " ".join(mine["Ground truth: the synthetic retina's own mechanism"].paragraphs)
    assert "OFF-fast, ON-fast, ON-slow" in truth and "ON-slow 94%" in truth
    assert "python -m mechlens_retina.phenomena.ground_truth" in truth
    html = "".join(render_section(s) for s in sections)
    assert "<script" not in html and "tone-fail" in html


def test_a_passing_result_has_no_failure_section_and_other_models_get_nothing(meta):
    titles = [s.title for s in reporting.report_sections([_result(meta, passed=1)])]
    assert "Why the measure fails" not in titles and "The paper and this model" in titles
    assert reporting.report_sections([_result(meta, model="toy-cnn")]) == []
    other = _result(meta)
    other.dataset.attrs["model_checkpoint_sha256"] = "0" * 64  # not the bundled weights: not claimed as trained so
    found = reporting.report_sections([other])
    assert "not what it was trained on" in " ".join(next(s for s in found if s.topic == "model").paragraphs)
    assert "Ground truth: the synthetic retina's own mechanism" not in [s.title for s in found]


def test_the_retina_plugin_implements_the_report_hook():
    reg = registry.default()
    reg.load()
    names = [impl.plugin_name for impl in reg.pm.hook.mechlens_report_sections.get_hookimpls()]
    assert any("retina" in n for n in names), names
