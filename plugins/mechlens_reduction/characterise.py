"""Characterise the cell types (channels) of a model layer by their spatiotemporal filters.

For each channel ``c`` of the attributed layer, the model's spike-triggered average (STA) is the
gradient of the unit of that channel at the layer's spatial centre with respect to the input
window, averaged over white-noise windows (as ``compute_sta`` in the authors' code). It needs only
``model.split``, so it works for any Model; for a linear first layer (a convolution) it is exact at
any number of windows.

From the STA (history, y, x), reordered so lag 0 is the present frame, a rank-1 SVD gives a temporal
filter and a spatial filter; the sign is fixed so that the spatial filter is positive at its
largest-magnitude pixel (the receptive-field centre), so the temporal filter carries the polarity.

- polarity: the sign of the *dominant lobe nearest the present*: the first lobe (run of one sign,
  going back from lag 0) whose peak is at least ``lobe_fraction`` of the filter's largest |value|.
  Positive = "ON" (the unit is driven by brightening), negative = "OFF".
- time_to_peak (s): lag of that lobe's peak.
- biphasic_index: peak |value| of the opposite sign over the dominant lobe's peak |value| (0 for a
  monophasic filter, 1 for a balanced biphasic one).
- kinetics: "fast" when time_to_peak < ``fast_threshold_s`` (default: the median over the layer's
  channels), else "slow".
- rf_diameter (um): diameter of the disc with the area of the pixels where the spatial filter is at
  least half its maximum.
- unit_type: ``"<polarity>-<kinetics>"``, e.g. ``"OFF-fast"``.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from mechlens import schema
from mechlens.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from mechlens.interfaces import Model


def model_sta(
    model: Model, layer: str | None = None, n_windows: int = 64, seed: int = 0, batch: int = 32
) -> np.ndarray:
    """Each channel's STA: the gradient of its centre unit with respect to the input, averaged over noise.

    Parameters
    ----------
    model : Model
        Any Model.
    layer : str, optional
        Layer name (default: the model's first layer).
    n_windows : int
        White-noise windows (unit-variance Gaussian contrast) averaged over.
    seed : int
        Seed of the noise.
    batch : int
        Windows per backward pass.

    Returns
    -------
    numpy.ndarray
        (channel, history, y, x), oldest frame first, in (layer units) per (contrast unit).
    """
    import torch

    layer = model.check_layer(layer)
    shape = tuple(model.layers()[layer])
    below, _ = model.split(layer)
    h, (ny, nx) = model.history, model.input_shape
    centre = tuple(s // 2 for s in shape[1:])
    gen = torch.Generator().manual_seed(int(seed))
    try:
        device = next(model.torch_module().parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    total = torch.zeros((shape[0], h, ny, nx), dtype=torch.float64)
    was_training = below.training
    below.eval()
    try:
        done = 0
        while done < n_windows:
            n = min(batch, n_windows - done)
            x = torch.randn((n, h, ny, nx), generator=gen).to(device).requires_grad_(True)
            with torch.enable_grad():
                z = below(x)
                units = z[(slice(None), slice(None), *centre)]  # (n, channel)
                for c in range(shape[0]):
                    (g,) = torch.autograd.grad(units[:, c].sum(), x, retain_graph=c < shape[0] - 1)
                    total[c] += g.detach().double().sum(0).cpu()
            done += n
    finally:
        below.train(was_training)
    return (total / n_windows).numpy()


def _lobes(f: np.ndarray) -> list[tuple[int, int]]:
    """Runs of one sign in ``f`` (lag 0 first), as [start, stop) index pairs; zeros end a run."""
    s = np.sign(f)
    runs = []
    start = None
    for i, v in enumerate(s):
        if start is not None and v != s[start]:
            runs.append((start, i))
            start = None
        if start is None and v != 0:
            start = i
    if start is not None:
        runs.append((start, len(f)))
    return runs


def filter_properties(temporal: np.ndarray, frame_period_s: float, lobe_fraction: float = 0.5) -> dict[str, Any]:
    """Polarity, time to peak and biphasic index of one temporal filter (lag 0 = present first).

    Parameters
    ----------
    temporal : numpy.ndarray
        (lag,) filter values, present first.
    frame_period_s : float
        Seconds per lag step.
    lobe_fraction : float
        A lobe counts as dominant when its peak reaches this fraction of the largest |value|.

    Returns
    -------
    dict
        ``polarity`` ("ON"/"OFF"), ``time_to_peak`` (s), ``biphasic_index``.
    """
    f = np.asarray(temporal, dtype=np.float64)
    top = np.abs(f).max()
    if top == 0:
        return {"polarity": "ON", "time_to_peak": np.nan, "biphasic_index": np.nan}
    for a, b in _lobes(f):
        seg = np.abs(f[a:b])
        if seg.max() >= lobe_fraction * top:
            peak = a + int(seg.argmax())
            break
    else:  # pragma: no cover - the largest lobe always qualifies
        peak = int(np.abs(f).argmax())
    sgn = np.sign(f[peak])
    main = abs(f[peak])
    opposite = np.max(np.clip(-sgn * f, 0, None))
    return {
        "polarity": "ON" if sgn > 0 else "OFF",
        "time_to_peak": peak * frame_period_s,
        "biphasic_index": float(opposite / main),
    }


def characterise(
    model: Model,
    layer: str | None = None,
    *,
    stimulus: xr.Dataset | xr.DataArray | None = None,
    pixel_um: float | None = None,
    n_windows: int = 64,
    seed: int = 0,
    fast_threshold_s: float | None = None,
    lobe_fraction: float = 0.5,
) -> xr.Dataset:
    """Label each channel of a layer by polarity, kinetics and receptive-field size.

    Parameters
    ----------
    model : Model
        Any Model.
    layer : str, optional
        Layer name (default: the model's first layer).
    stimulus : Dataset or DataArray, optional
        A stimulus on the model's grid; its ``y``/``x`` coords (um) give the pixel size and the
        spatial filter's coords.
    pixel_um : float, optional
        Pixel size in um (overrides ``stimulus``). Without either, sizes are in pixels.
    n_windows : int
        White-noise windows for the STA.
    seed : int
        Seed of the noise.
    fast_threshold_s : float, optional
        Time to peak (s) below which a type is "fast"; default the median over the channels.
    lobe_fraction : float
        See :func:`filter_properties`.

    Returns
    -------
    xarray.Dataset
        Over ``unit_channel``: ``unit_type`` ("OFF-fast"), ``polarity``, ``kinetics``,
        ``time_to_peak`` (s), ``biphasic_index``, ``rf_diameter`` (um or px),
        ``temporal_filter`` (unit_channel, lag) with lag in s (0, -dt, ...), ``spatial_filter``
        (unit_channel, y, x) normalised to a maximum of 1.
    """
    layer = model.check_layer(layer)
    if len(model.layers()[layer]) not in (1, 3):
        raise UsageError(f"characterise: layer {layer!r} must have (channel,) or (channel, y, x) units")
    sta = model_sta(model, layer, n_windows=n_windows, seed=seed)
    n_ch, h, ny, nx = sta.shape
    dt = float(model.frame_period_s)
    coords_yx: dict[str, Any]
    units = "px"
    if stimulus is not None and pixel_um is None and "x" in stimulus.coords and stimulus.sizes.get("x", 0) > 1:
        pixel_um = float(abs(np.diff(stimulus["x"].values[:2])[0]))
    if stimulus is not None and stimulus.sizes.get("y") == ny and stimulus.sizes.get("x") == nx:
        coords_yx = {"y": stimulus["y"], "x": stimulus["x"]}
        units = "um" if pixel_um is not None else units
    elif pixel_um is not None:
        coords_yx = schema.grid_coords(ny, nx, pixel_um)
        units = "um"
    else:
        coords_yx = schema.grid_coords(ny, nx, 1.0)
        for coord in coords_yx.values():
            coord.attrs["units"] = "px"
    px = pixel_um if pixel_um is not None else 1.0

    temporal = np.zeros((n_ch, h))
    spatial = np.zeros((n_ch, ny, nx))
    props = []
    diam = np.zeros(n_ch)
    for c in range(n_ch):
        m = sta[c][::-1].reshape(h, ny * nx)  # present first
        u, s, vt = np.linalg.svd(m, full_matrices=False)
        t_f, s_f = u[:, 0] * s[0], vt[0]
        if s_f[np.abs(s_f).argmax()] < 0:  # the RF centre is positive; the temporal filter carries the sign
            t_f, s_f = -t_f, -s_f
        temporal[c] = t_f
        peak = s_f.max()
        spatial[c] = (s_f / peak if peak > 0 else s_f).reshape(ny, nx)
        area = np.count_nonzero(spatial[c] >= 0.5) * px**2
        diam[c] = 2.0 * np.sqrt(area / np.pi)
        props.append(filter_properties(t_f, dt, lobe_fraction))
    ttp = np.array([p["time_to_peak"] for p in props])
    threshold = float(np.nanmedian(ttp)) if fast_threshold_s is None else float(fast_threshold_s)
    kinetics = ["fast" if t < threshold else "slow" for t in ttp]
    polarity = [p["polarity"] for p in props]
    labels = [f"{p}-{k}" for p, k in zip(polarity, kinetics)]
    ch = xr.DataArray(np.arange(n_ch), dims="unit_channel")
    lag = xr.DataArray(np.round(-np.arange(h) * dt, 9), dims="lag", attrs={"units": "s", "long_name": "lag"})

    def var(data: Any, dims: tuple[str, ...], u: str, long_name: str) -> xr.DataArray:
        return xr.DataArray(data, dims=dims, attrs={"units": u, "long_name": long_name})

    ds = xr.Dataset(
        {
            "unit_type": var(np.asarray(labels), ("unit_channel",), "", "polarity and kinetics"),
            "polarity": var(
                np.asarray(polarity), ("unit_channel",), "", "sign of the dominant lobe nearest the present"
            ),
            "kinetics": var(np.asarray(kinetics), ("unit_channel",), "", "fast or slow time to peak"),
            "time_to_peak": var(ttp, ("unit_channel",), "s", "lag of the dominant lobe's peak"),
            "biphasic_index": var(
                np.array([p["biphasic_index"] for p in props]), ("unit_channel",), "1", "|opposite peak| / |main peak|"
            ),
            "rf_diameter": var(diam, ("unit_channel",), units, "diameter of the area above half maximum"),
            "temporal_filter": var(temporal, ("unit_channel", "lag"), "1", "STA temporal filter (present first)"),
            "spatial_filter": var(spatial, ("unit_channel", "y", "x"), "1", "STA spatial filter, max 1"),
        },
        coords={"unit_channel": ch, "lag": lag, **coords_yx},
        attrs={
            "layer": layer,
            "sta_windows": int(n_windows),
            "fast_threshold_s": threshold,
            "lobe_fraction": float(lobe_fraction),
        },
    )
    for name in ("unit_type", "polarity", "kinetics"):
        ds[name].attrs.pop("units")
    return ds


_LABEL_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], np.ndarray]] = weakref.WeakKeyDictionary()


def label_types(
    out: xr.Dataset, model: Model, prep_ds: xr.Dataset, layer: str, n_windows: int, seed: int
) -> xr.Dataset:
    """Add the ``unit_type`` coord on ``unit_channel`` to a reduction Dataset.

    Parameters
    ----------
    out : xarray.Dataset
        The reducer's output (has a ``unit_channel`` dim).
    model : Model
        The attributed model.
    prep_ds : xarray.Dataset
        The (cut) attribution Dataset; its ``stimulus_full`` gives the pixel size.
    layer : str
        The attributed layer.
    n_windows, seed : int
        STA settings.
    """
    # without the movie (a streamed run) its x coord, which the Dataset keeps, gives the pixel size
    stim = prep_ds["stimulus_full"] if "stimulus_full" in prep_ds.data_vars else prep_ds
    pixel = float(np.diff(stim["x"].values[:2])[0]) if stim is not None and stim.sizes.get("x", 0) > 1 else None
    # the STA of every type costs seconds and depends only on the model and these settings, while an
    # experiment suite reduces many stimuli on one model: compute it once per model (weights are frozen
    # during analysis; a model trained further is a new instance after save/load)
    per_model = _LABEL_CACHE.setdefault(model, {})
    key = (layer, pixel, n_windows, seed)
    if key not in per_model:
        per_model[key] = characterise(model, layer, stimulus=stim, n_windows=n_windows, seed=seed)["unit_type"].values
    labels = per_model[key]
    if out.sizes["unit_channel"] != len(labels):
        raise UsageError(
            f"layer {layer!r} has {len(labels)} channels but the attribution has {out.sizes['unit_channel']}"
        )
    return out.assign_coords(unit_type=("unit_channel", labels.astype(str)))
