"""Mechanism-recovery scoring: a model scored against itself recovers its mechanism perfectly."""

from __future__ import annotations

import numpy as np
from mechlens_retina.recovery import TypeMatch, match_types, recovery_score, type_groups
from mechlens_retina.synthetic import SyntheticRetina

from mechlens import registry


def test_the_synthetic_retina_matches_and_recovers_itself():
    truth = SyntheticRetina()
    groups, names = type_groups(truth)
    assert names == ["OFF-fast", "OFF-slow", "ON-fast", "ON-slow"]
    assert groups.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    match = match_types(truth, "bipolar", truth, "bipolar", n_frames=300)
    np.testing.assert_array_equal(match.assignment, groups)  # each channel is its own best match
    stim = registry.get("stimulus", "flash")(post_s=0.2).generate(0)
    attr = registry.get("attributor", "integrated-gradients")(n_steps=8).attribute(truth, stim, "bipolar", ["gc05"])
    score = recovery_score(attr["attribution"], attr["attribution"], match, groups)
    assert float(score.sel(cell="gc05")) > 0.999
    # a wrong matching (types swapped) scores lower
    swapped = TypeMatch(assignment=(groups + 2) % 4, correlation=match.correlation)
    assert float(recovery_score(attr["attribution"], attr["attribution"], swapped, groups).sel(cell="gc05")) < 0.9
