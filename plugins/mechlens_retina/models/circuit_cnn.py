"""The synthetic retina written into the paper's CNN: proof that the circuit is in the model class.

Every stage of the synthetic retina (:mod:`mechlens_retina.models.synthetic`, version 3) is one the
batch-norm retina CNN (:mod:`mechlens_retina.models.cnn`) has, in the same order, so a ``retina-cnn`` with
the right weights computes the circuit exactly:

==================================  =========================================================
circuit                             retina-cnn
==================================  =========================================================
bipolar filters (40 -> 8, 15x15)    ``conv1`` weights
``- threshold`` / ``- delayed       ``conv1`` bias (``bn1`` the identity)
threshold``, ReLU
subunit ``- inhibition x`` local    ``conv2`` (11x11): channel c = ``delta`` on subunit c minus
pool of its delayed copy, ReLU      ``inhibition_c x`` Gaussian on delayed c; channel 4 + c
                                    passes delayed c through (a ReLU of a rectified input)
excitation - amacrine - own gain    ``dense``: pooled weights on the gain-controlled subunits,
control                             minus amacrine and own-gain weights on the delayed copies
``softplus(rate_hz x (drive +       ``bn3`` (scale ``rate_hz``, shift ``rate_hz x offset``)
offset))``                          and ``softplus``
==================================  =========================================================

:func:`as_cnn` builds that network and a test checks it against the circuit to float32 rounding.
It is a control, not a trained model: it shows that a CNN of the paper's architecture *can*
reproduce the circuit's responses (and so its four phenomena) with no lag, so a trained CNN that
fails the probe-agreement gate failed to learn, not to express. The earlier, divisive circuit
(version 2) was outside the model class: a CNN trained on it answered a frame late
(docs/synthetic-retina.md, "Version 3").
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from mechlens.errors import UsageError
from mechlens_retina.models.cnn import BN_EPS, RetinaCNN
from mechlens_retina.models.synthetic import CROP, SyntheticRetina


def as_cnn(retina: SyntheticRetina | None = None, device: str = "cpu") -> RetinaCNN:
    """A ``retina-cnn`` whose weights compute the synthetic retina exactly.

    Parameters
    ----------
    retina : SyntheticRetina, optional
        A version-3 circuit (default: ``SyntheticRetina(circuit="v3")``, all types active). Silenced types and
        scaled gain control or amacrine inhibition carry over, since they live in its weights.
    device : str
        Torch device of the returned model.

    Returns
    -------
    RetinaCNN
        Paper architecture (40 frames, 50x50, 8@15x15, 8@11x11, dense, softplus), ``noise=0``, in
        eval mode; its responses equal ``retina``'s to float32 rounding (about 1e-4 Hz).

    Raises
    ------
    UsageError
        When the circuit is version 2 (divisive), does not have four bipolar types (the CNN's 8
        first-layer channels hold 4 direct paths and their 4 delayed copies) or its gain pool
        reaches past conv2's kernel.
    """
    import torch

    retina = retina if retina is not None else SyntheticRetina(circuit="v3")
    if retina.spec.form != "subtractive":
        raise UsageError(
            f"as_cnn: this circuit's gain control is {retina.spec.form}; a CNN of ReLUs cannot compute a division "
            "exactly. Use SyntheticRetina(circuit='v3') (subtractive gain control; docs/synthetic-retina.md)"
        )
    above: Any = retina.above
    n_t = int(above.n_types)
    kernel2 = 2 * CROP + 1
    if 2 * n_t != 8:
        raise UsageError(
            f"as_cnn: the circuit has {n_t} bipolar types; the paper's CNN has 8 first-layer channels, "
            "room for exactly 4 types and their delayed copies"
        )
    if above.radius > CROP:
        raise UsageError(f"as_cnn: the gain pool reaches {above.radius} px, past conv2's {kernel2}x{kernel2} kernel")
    cnn = RetinaCNN(checkpoint="random", n_cells=len(retina.cells), noise=0.0, device="cpu")
    cnn.annotate(list(retina.cells), source="mechlens_retina.models.circuit_cnn.as_cnn", circuit=retina.params.circuit)
    module: Any = cnn.module
    with torch.no_grad():
        module.conv1.weight.copy_(retina.conv.weight)
        module.conv1.bias.copy_(torch.cat([-above.threshold.flatten(), -above.delayed_threshold.flatten()]))
        for bn in (module.bn1, module.bn2, module.bn3):
            # eval-mode batch norm as the identity: (x - 0) / sqrt((1 - eps) + eps) * 1 + 0
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - BN_EPS)
            bn.weight.fill_(1.0)
            bn.bias.zero_()
        w2 = torch.zeros_like(module.conv2.weight)  # (out, in, 11, 11)
        c, r = CROP, int(above.radius)
        for j in range(n_t):
            w2[j, j, c, c] = 1.0
            pool = above.gain_kernel[j, 0] * above.inhibition.flatten()[j]
            w2[j, n_t + j, c - r : c + r + 1, c - r : c + r + 1] = -pool
            w2[n_t + j, n_t + j, c, c] = 1.0
        module.conv2.weight.copy_(w2)
        module.conv2.bias.zero_()
        # dense input order is (channel, y, x) flattened: the gain-controlled subunits, then the delayed copies
        dense = torch.cat([above.pool.flatten(2), -above.delayed_pool.flatten(2)], 1).flatten(1)
        module.dense.weight.copy_(dense * above.rate_hz[:, None])
        module.bn3.bias.copy_(above.rate_hz * above.offset)
    cnn.module = module.to(device).eval()
    return cnn


def at_data_statistics(cnn: RetinaCNN, windows: np.ndarray) -> RetinaCNN:
    """Re-express every batch norm of ``cnn`` at the statistics of ``windows``, same function.

    :func:`as_cnn` writes its batch norms as the identity with running mean 0 and variance 1. Evaluated
    (eval mode) that is exact, but a training step normalises with the *batch's* statistics, so
    training would start from a different function. Here each batch norm gets the per-unit mean and
    variance of its input over ``windows`` as running statistics, and a scale and shift that undo
    them (for :func:`as_cnn`'s identity: ``weight = sqrt(var + eps)``, ``bias = mean + bias``), so the
    evaluated function is unchanged (to float32 rounding) and a train-mode pass over a batch like
    ``windows`` is close to it. This is the start of the check in ``bench/batch_norm_drift.py``.

    Parameters
    ----------
    cnn : RetinaCNN
        Usually ``as_cnn(...)``; modified in place and returned.
    windows : numpy.ndarray
        (batch, 40, 50, 50) stimulus windows in the model's input units (contrast for :func:`as_cnn`).

    Returns
    -------
    RetinaCNN
        ``cnn``, in eval mode.
    """
    import torch

    module: Any = cnn.module
    device = next(module.parameters()).device
    h = torch.as_tensor(np.asarray(windows, dtype=np.float32), device=device)
    with torch.no_grad():
        for layer in module.children():
            if isinstance(layer, torch.nn.BatchNorm1d):
                # running statistics are tensors here (track_running_stats is on in every retina-cnn)
                running_mean = cast(torch.Tensor, layer.running_mean)
                running_var = cast(torch.Tensor, layer.running_var)
                # eval mode is the affine map a x + c; keep it, with the data's statistics inside
                a = layer.weight / torch.sqrt(running_var + layer.eps)
                c = layer.bias - a * running_mean
                mean, var = h.mean(0), h.var(0, unbiased=False)
                running_mean.copy_(mean)
                running_var.copy_(var)
                layer.weight.copy_(a * torch.sqrt(var + layer.eps))
                layer.bias.copy_(c + a * mean)
                layer.eval()
            h = layer(h)
    module.eval()
    return cnn


def max_difference(retina: SyntheticRetina, cnn: RetinaCNN, windows: np.ndarray) -> float:
    """Largest |circuit - CNN| rate over some windows, Hz (what the exactness test reports).

    Parameters
    ----------
    retina : SyntheticRetina
        The circuit.
    cnn : RetinaCNN
        Usually ``as_cnn(retina)``.
    windows : numpy.ndarray
        (batch, 40, 50, 50) stimulus windows in contrast units.

    Returns
    -------
    float
        Hz.
    """
    import torch

    x = torch.as_tensor(np.asarray(windows, dtype=np.float32))
    with torch.no_grad():
        a = retina.torch_module()(x)
        b = cnn.torch_module()(x.to(next(cnn.torch_module().parameters()).device)).cpu()
    return float((a - b).abs().max())
