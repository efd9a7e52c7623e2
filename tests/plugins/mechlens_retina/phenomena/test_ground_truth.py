"""The synthetic retina's ground-truth table: each phenomenon comes from its named types, by ablation."""

from __future__ import annotations

import pytest
from mechlens_retina import phenomena
from mechlens_retina.models.synthetic import SyntheticRetina
from mechlens_retina.phenomena import ground_truth


def test_every_phenomenon_has_a_few_named_types_of_the_circuit() -> None:
    names = [bt.name for bt in SyntheticRetina().spec.types]
    assert tuple(names) == ground_truth.TYPES
    assert set(ground_truth.MECHANISMS) == set(phenomena.MEASURES)
    for name, mech in ground_truth.MECHANISMS.items():
        assert 1 <= len(mech.types) <= 3, name
        assert set(mech.types) <= set(names), name
        assert set(mech.roles) == set(mech.types), name
        assert mech.account and mech.source, name


@pytest.mark.parametrize("circuit", ["v2", "v3", "v4", "v5", "v6"])
@pytest.mark.parametrize("phenomenon", phenomena.MEASURES)
def test_ablation_table_holds_on_the_circuit(phenomenon: str, circuit: str) -> None:
    # the intact circuit shows the phenomenon; silencing the named types abolishes it; silencing all
    # the other types keeps it (docs/synthetic-retina.md, "Ground truth" and "Version 3")
    mech = {phenomenon: ground_truth.MECHANISMS[phenomenon]}
    (row,) = ground_truth.ablation_table(mech, model_params={"circuit": circuit})
    assert row["intact"], f"{phenomenon}: the intact circuit does not show it"
    assert not row["named_silenced"], f"{phenomenon}: still shown with {row['types']} silenced"
    assert row["others_silenced"], f"{phenomenon}: lost when only {row['types']} are left"


def test_silencing_a_type_zeroes_its_channels_on_both_paths() -> None:
    import numpy as np
    import torch

    model = SyntheticRetina(silence=["ON-fast"])
    movie = np.random.default_rng(0).normal(size=(45, 50, 50)).astype(np.float32)
    z = model.bipolar_movie(movie)
    c = ground_truth.TYPES.index("ON-fast")
    assert float(z[:, c].abs().max()) == 0.0 and float(z[:, c + 4].abs().max()) == 0.0
    assert float(z[:, 0].abs().max()) > 0
    # the module (what attributors run) agrees with the fast path
    windows = torch.from_numpy(movie).unfold(0, 40, 1).permute(0, 3, 1, 2)
    with torch.no_grad():
        np.testing.assert_allclose(model.module(windows).numpy(), model.rates(movie), rtol=1e-4, atol=1e-3)


def test_unknown_silenced_type_is_refused_with_the_known_names() -> None:
    from mechlens.errors import ParameterError

    with pytest.raises(ParameterError, match="OFF-fast"):
        SyntheticRetina(silence=["OFF-medium"])


def test_smallest_sets_are_searched_by_size_and_every_set_of_the_first_size_is_returned(monkeypatch) -> None:
    # a planted measure: shown while A and B are both active, or while C is
    def shown(silence) -> bool:
        active = {"A", "B", "C", "D"} - set(silence)
        return {"A", "B"} <= active or "C" in active

    monkeypatch.setattr(ground_truth, "ablate", lambda phen, silence, registry, params: shown(silence))
    monkeypatch.setattr(phenomena, "verdict", lambda result: result)
    # no single type abolishes it; of the pairs, {A, C} silenced leaves B and D (lost) and {A, C} alone
    # shows it (through C), and the same for {B, C}; every other pair leaves A and B or C active
    assert ground_truth.smallest_sets("x", types=("A", "B", "C", "D")) == [("A", "C"), ("B", "C")]
    monkeypatch.setattr(ground_truth, "ablate", lambda phen, silence, registry, params: False)
    assert ground_truth.smallest_sets("x", types=("A", "B")) == []  # the intact circuit does not show it


def test_the_osr_needs_only_off_fast_and_on_slow_on_version_3() -> None:
    # the default circuit's table names ON-fast too; on version 3 it is not needed
    assert ground_truth.smallest_sets("omitted_stimulus_response", model_params={"circuit": "v3"}) == [
        ("OFF-fast", "ON-slow")
    ]
