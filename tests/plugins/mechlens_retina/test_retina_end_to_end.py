"""simulate -> train -> load -> predict, through the CLI, on a short recording (issue 7)."""

from __future__ import annotations

import numpy as np
from mechlens_retina.models.cnn import RetinaCNN

from mechlens.cli import main


def test_simulate_then_train_then_use_the_checkpoint(tmp_path, capsys):
    data = tmp_path / "synthetic.h5"
    assert main(["simulate", "--minutes", "0.2", "--test-minutes", "0.05", "--repeats", "2", "-o", str(data)]) == 0
    ckpt = tmp_path / "model.safetensors"
    sets = ["train.epochs=1", "train.batch_size=64", "train.val_fraction=0.2", "model.channels1=4", "model.channels2=4"]
    argv = ["train", "--data", str(data), "-o", str(ckpt)]
    for item in sets:
        argv += ["--set", item]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    model = RetinaCNN(checkpoint=str(ckpt))
    assert len(model.cells) == 8 and model.params.channels1 == 4
    metrics = model.metadata["metrics"]
    assert np.isfinite(metrics["val_loss"])
    assert len(metrics["evaluation"]["cc"]) == 8
    # the checkpoint is a usable model: it answers the stimuli of the library on the same grid
    from mechlens import registry

    stim = registry.get("stimulus", "flash")(post_s=0.1).generate(0)
    rates = model.predict(stim)["response"].values
    assert rates.shape[1] == 8 and np.isfinite(rates).all() and (rates >= 0).all()
