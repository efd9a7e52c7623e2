"""The bundled checkpoint loads and reproduces the metrics stored in it (issue 7)."""

from __future__ import annotations

import numpy as np
import pytest

from mechlens import registry
from mechlens.torchutil import run_batched


@pytest.mark.slow
def test_bundled_checkpoint_reproduces_its_stored_test_metrics(tmp_path):
    from mechlens_retina.cnn import RetinaCNN
    from mechlens_retina.data import open_recording
    from mechlens_retina.metrics import pearson
    from mechlens_retina.simulate import simulate
    from mechlens_retina.synthetic import SyntheticRetina

    model = RetinaCNN()  # checkpoint="bundled"
    stored = model.metadata["metrics"]["evaluation"]
    assert np.median(stored["cc"]) >= 0.8
    sim = model.metadata["recipe"]["simulate"]
    # the test split is seeded independently of the training movie's length, so a short training
    # part regenerates exactly the test movie the checkpoint was evaluated on
    path = simulate(
        SyntheticRetina(),
        registry.get("stimulus", sim["stimulus"]),
        tmp_path / "recording.h5",
        minutes=0.05,
        test_minutes=sim["test_minutes"],
        repeats=sim["repeats"],
        seed=sim["seed"],
        progress=False,
    )
    rec = open_recording(path)
    test = rec.test
    h = model.history
    movie = model.standardise(np.asarray(test["stimulus"].transpose("time", "y", "x").values))
    import torch

    windows = torch.from_numpy(movie).unfold(0, h, 1).permute(0, 3, 1, 2)
    pred = run_batched(model.torch_module(), windows, 512)
    target = np.asarray(test["response"].transpose("time", "cell").values)[h - 1 :]
    rec.close()
    assert pred.shape == target.shape == (stored["n_time"], len(model.cells))
    cc = pearson(pred, target)
    assert np.median(cc) >= 0.8
    # Measured 2026-11-29: OFF and ON cells reproduce to < 0.002; the three ON-OFF cells differ by up to
    # 0.019 (training evaluates conv1 through FFTs on a block-streamed movie; the cause of the larger
    # gap for these strongly gain-controlled cells is not yet pinned down)
    np.testing.assert_allclose(cc[:5], stored["cc"][:5], atol=2e-3)
    np.testing.assert_allclose(cc, stored["cc"], atol=0.025)
