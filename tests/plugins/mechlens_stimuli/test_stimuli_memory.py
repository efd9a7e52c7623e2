"""The library's memory estimates match what render makes, and a too-big sweep is refused before rendering."""

from __future__ import annotations

import pytest
from mechlens_stimuli._memory import FRAMES, frames

from mechlens import memory, registry
from mechlens.memory import MemoryBudgetError

#: parameter sets that change each stimulus's length (besides its defaults)
VARIANTS: dict[str, list[dict[str, object]]] = {
    "flash": [{"post_s": 0.5}, {"duration": 0.01, "pre_s": 0.0}],
    "osr": [{"n_flashes": 3, "period": 0.07}, {"post_s": 0.0}],
    "paired-flash": [{"interval": 0.2, "post_s": 0.0}],
    "moving-bar": [{"speed": 3300.0}, {"speed": 1000.0, "post_s": 0.2}],
    "flashed-bar": [{"position": 0.0, "post_s": 0.05}],
    "motion-reversal": [{"speed": 2000.0, "reversal_um": 100.0}],
    "reversing-grating": [{"duration": 1.0}],
    "object-motion": [{"duration": 1.0}],
    "white-noise": [{"duration": 0.5}],
    "contrast-steps": [{"cycles": 1}],
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_estimate_counts_the_frames_render_makes(name: str) -> None:
    cls = registry.get("stimulus", name)
    for values in [{}, *VARIANTS[name]]:
        stim = cls(size_px=20, **values)
        params = stim.parameters_on(None)
        if isinstance(getattr(params, "position", None), list):
            continue
        est = stim.memory_estimate(params)
        ds = stim.render(params, 0)
        assert sum(frames(stim, params).values()) == ds.sizes["time"], (name, values)
        assert est is not None and est.nbytes >= ds["stimulus"].nbytes


def test_every_library_stimulus_has_an_estimate() -> None:
    chunked = {"white-noise", "contrast-steps", "natural-scenes"}
    own = {"movie", "mei"}  # their own memory_estimate: the file's header, the model's window
    library = {e.name for e in registry.entries("stimulus") if e.distribution == "mechlens"}
    assert library <= set(FRAMES) | chunked | own


def test_a_sweep_is_refused_as_a_whole_before_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(memory.ENV, "100MiB")
    osr = registry.get("stimulus", "osr")(n_flashes=2000, period=[0.1, 0.2])  # 2 x 48 MB: each alone fits
    rendered: list[object] = []
    monkeypatch.setattr(type(osr), "render", lambda self, p, seed: rendered.append(p))
    with pytest.raises(MemoryBudgetError, match=r"^stimulus\.n_flashes: the osr sweep over period .*MiB.*budget"):
        osr.generate(0)
    assert rendered == []
