"""openretina's core-readout model as a mechlens Model (runs where the `openretina` extra is installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "openretina.modules.core.base_core", reason="the optional extra: pip install 'mechlens[openretina]'"
)

import torch
from mechlens_openretina.model import OpenRetinaCoreReadout

import mechlens
from mechlens.errors import ParameterError
from mechlens.testing import parametrize_with_checks

SMALL = {"hidden_channels": [4, 4], "temporal_kernel_sizes": [5, 3], "spatial_kernel_sizes": [5, 3], "n_cells": 3}


@pytest.fixture(scope="module")
def model() -> OpenRetinaCoreReadout:
    return OpenRetinaCoreReadout(**SMALL)


@parametrize_with_checks([OpenRetinaCoreReadout(**SMALL)])
def test_conforms(check: object) -> None:
    check()  # type: ignore[operator]


def test_history_is_the_core_reach_and_the_layer_is_the_core_output(model: OpenRetinaCoreReadout) -> None:
    assert model.history == (5 - 1) + (3 - 1) + 1
    assert model.layers() == {"core": (4, 14, 12)}  # the unpadded 5x5 first layer; the hidden one keeps its size
    with pytest.raises(ParameterError, match=r"^history: got 3; the core's temporal kernels reach 7 frames"):
        OpenRetinaCoreReadout(**SMALL, history=3)


def test_the_same_seed_gives_the_same_weights_and_a_weights_file_restores_them(
    model: OpenRetinaCoreReadout, tmp_path: Path
) -> None:
    x = torch.randn(2, model.history, 18, 16)
    again, other = OpenRetinaCoreReadout(**SMALL), OpenRetinaCoreReadout(**SMALL, seed=1)
    assert torch.equal(model.module(x), again.module(x)) and not torch.equal(model.module(x), other.module(x))
    # openretina's key names: core..., readout.<session>... (as in its checkpoints' state_dict)
    state = {k.split(".", 1)[1]: v for k, v in model.module.state_dict().items()}
    assert any(k.startswith("core.features.layer0.") for k in state) and "readout.session.bias" in state
    torch.save({"state_dict": state}, tmp_path / "weights.ckpt")
    loaded = OpenRetinaCoreReadout(**{**SMALL, "n_cells": 1}, seed=7, weights=str(tmp_path / "weights.ckpt"))
    assert loaded.cells == model.cells  # read from the file
    torch.testing.assert_close(loaded.module(x), model.module(x))
    assert len(loaded.checkpoint_sha256()) == 64 and model.checkpoint_sha256() == ""
    with pytest.raises(ParameterError, match=r"^weights: .* does not fit this architecture"):
        OpenRetinaCoreReadout(**{**SMALL, "hidden_channels": [4, 6]}, weights=str(tmp_path / "weights.ckpt"))


def test_quadrature_ig_works_and_exact_ig_refuses_it_clearly(model: OpenRetinaCoreReadout) -> None:
    ds = mechlens.run(model, "flash", "integrated-gradients", attributor_params={"n_steps": 32})
    resp = ds["response"] - ds["baseline_response"]
    err = np.nanmax(np.abs(ds["completeness_error"].values)) / float(np.nanmax(np.abs(resp.values)))
    assert err < 0.05
    with pytest.raises(mechlens.errors.MechlensError, match=r"cannot integrate model 'openretina-core-readout'.*"
                       r"Use the attributor 'integrated-gradients'") as refused:  # fmt: skip
        mechlens.run(model, "flash", "exact-integrated-gradients")
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
