"""End to end: every built-in experiment through ``mechlens run`` on a small CNN, then ``mechlens report``."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from mechlens_retina.experiments import EXPERIMENTS, engaged_types, fit_to_model

from mechlens import io, registry, schema
from mechlens.cli import main

#: a small randomly initialised retina CNN: 20x20 px, 10 frames of history, 4 first-layer types
SMALL = {
    "checkpoint": '"random"',
    "image_size": 20,
    "history": 10,
    "kernel1": 7,
    "kernel2": 5,
    "channels1": 4,
    "channels2": 4,
    "n_cells": 4,
}
NAMES = sorted(cls.name for cls in EXPERIMENTS)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.sections: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        elif tag == "h2":
            self.sections.append(a["id"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    argv = ["run", "--model", "retina-cnn", "-o", str(out)]
    for key, value in SMALL.items():
        argv += ["--set", f"model.{key}={value}"]
    start = time.perf_counter()
    code = main(argv)
    print(f"mechlens run (6 experiments, small CNN): {time.perf_counter() - start:.1f} s")
    assert code == 0
    return out


def test_the_experiments_are_registered():
    assert set(registry.default().names("experiment")) >= set(NAMES)


@pytest.mark.slow
def test_every_experiment_writes_a_valid_result(run_dir):
    for name in NAMES:
        ds = io.load(run_dir / f"{name}.nc")  # validates every stage's schema
        for stage in ("attribution", "reduction"):
            part = ds.dropna("time", how="all", subset=["response"]) if stage == "attribution" else ds
            assert not schema.problems(part, stage), (name, stage)
        assert ds.attrs["experiment"] == name and ds.attrs["model"] == "retina-cnn"
        assert ds.attrs["model_checkpoint_sha256"] == ""  # random weights: no file
        assert ds.attrs["layer"] == "conv1"
        assert "reduced_response" in ds and "in_window" in ds
        assert ds["in_window"].dims[-1] == "time" and ds["in_window"].values.any()
        cells = json.loads(ds.attrs["analysed_cells"])
        assert len(cells) == 3 and ds.attrs["focus_cell"] in cells
        assert ds.attrs["measure_pass"] in (0, 1) and ds.attrs["measure_name"] and ds.attrs["measure_target"]
        plotted = json.loads(ds.attrs["measure_plot"])
        assert plotted and all(v in ds.data_vars for v in plotted)
        assert ds.attrs["completeness_error_rel"] < 0.1, name
        # the sentence is built from this run's reduction: its kept types and explained fraction
        sentence = ds.attrs["mechanism"]
        focus = ds.attrs["focus_cell"]
        assert sentence.startswith(f"{focus}: ")
        explained = float(ds["explained_fraction"].sel(cell=focus))
        assert f"{explained:.0%}" in sentence
        kept = [str(t) for t, k in zip(ds["unit_type"].values, ds["kept"].values) if k]
        assert all(t in sentence for t in kept)


@pytest.mark.slow
def test_recipes_reach_the_files(run_dir):
    lat = io.load(run_dir / "latency-coding.nc")
    assert lat["condition"].attrs["swept"] == "intensity" and lat.sizes["condition"] == 5
    assert lat["measure_latency"].dims == ("condition", "cell")
    assert lat.attrs["attributor"] == "exact-integrated-gradients"  # the retina CNN is piecewise linear above conv1
    assert lat["completeness_error"].attrs["max_abs_relative_to_response_range"] < 1e-5
    osr = io.load(run_dir / "omitted-stimulus.nc")
    # the window starts at each period's omitted flash
    for i in range(osr.sizes["condition"]):
        on = osr["time"].values[osr["in_window"].isel(condition=i).values.astype(bool)]
        assert on.min() == pytest.approx(float(osr["omitted_time"].isel(condition=i)), abs=0.006)
        assert on.max() - on.min() == pytest.approx(0.25, abs=0.011)
    ant = io.load(run_dir / "motion-anticipation.nc")
    assert ant["measure_lead"].dims == ("speed", "cell") and ant.sizes["speed"] == 3
    # flashed bars only where they fit on the 20 px x 55 um grid
    assert np.abs(ant["bar_position"].values).max() < 10 * 55.0 and ant.sizes["bar_position"] == 9
    assert ant.attrs["attributor"] == "exact-integrated-gradients"
    rev = io.load(run_dir / "motion-reversal.nc")
    assert rev["measure_aligned"].dims == ("rel_time", "cell")
    nat = io.load(run_dir / "natural-scenes.nc")
    assert list(nat["stimulus_kind"].values) == ["natural scenes", "white noise"]
    np.testing.assert_allclose(
        nat["measure_engaged_over_time"].values, engaged_types(nat["attribution"]).values, rtol=1e-5
    )


@pytest.mark.slow
def test_the_report_shows_every_experiment_and_rebuilds_from_the_files(run_dir, tmp_path):
    html = (run_dir / "report.html").read_text()
    page = _Page()
    page.feed(html)
    assert sorted(page.sections) == NAMES
    for name in NAMES:
        for fig in ("stimulus", "response", "attribution", "contributions", "reduced", "measure"):
            src = f"figures/{name}/{fig}.png"
            assert src in page.images, src
    assert "figures/natural-scenes/type_shares.png" in page.images
    for src in page.images:
        assert (run_dir / src).stat().st_size > 5000, src
    assert main(["report", str(run_dir), "-o", str(tmp_path)]) == 0
    again = (tmp_path / "report.html").read_text()

    def strip(text):
        return re.sub(r"built \S+ from", "built X from", text)

    assert strip(again) == strip(html)
    for src in page.images:
        assert (tmp_path / src).stat().st_size > 5000, src


def test_stimuli_follow_the_model_grid():
    from mechlens_retina.models.cnn import RetinaCNN

    small = RetinaCNN(checkpoint="random", image_size=20, history=10, kernel1=7, kernel2=5)
    # the grid reaches the stimulus from the pipeline; the recipe's durations are put on the model's frames
    assert fit_to_model({"intensity": -1.0, "duration": 0.3}, small, "flash") == {"intensity": -1.0, "duration": 0.3}
    slow = RetinaCNN(checkpoint="random", image_size=20, history=10, kernel1=7, kernel2=5, frame_period_s=0.02)
    periods = fit_to_model({"period": [0.06, 0.1, 0.15], "duration": 0.01}, slow, "osr")
    assert periods == {"period": [0.06, 0.1, 0.16], "duration": 0.02}
    for cls in EXPERIMENTS:
        stim = registry.get("stimulus", cls.stimulus)(**cls().stimulus_parameters(small)).generate(0, small.grid)
        assert stim.sizes["y"] == stim.sizes["x"] == 20
        assert stim["time"].values[small.history - 1] == pytest.approx(-0.01)


def test_exact_integration_is_chosen_where_the_model_allows_it_unless_turned_off():
    from mechlens_retina.experiments import EXACT_ATTRIBUTOR, LatencyCoding
    from mechlens_retina.models.cnn import RetinaCNN
    from mechlens_retina.models.synthetic import SyntheticRetina

    class QuadratureLatency(LatencyCoding):
        exact = False

    from mechlens.config import parse_value

    cnn = RetinaCNN(**{k: parse_value(str(v)) for k, v in SMALL.items()})
    assert LatencyCoding().attribution_plan(cnn)[0] == EXACT_ATTRIBUTOR
    assert QuadratureLatency().attribution_plan(cnn)[0] == "integrated-gradients"
    # divisive gain control is not piecewise linear: the plan falls back to quadrature
    assert LatencyCoding().attribution_plan(SyntheticRetina())[0] == "integrated-gradients"
