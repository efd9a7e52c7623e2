"""The paper's reduction: keep the few first-layer cell types whose attributions explain the response.

Definition
----------
0. Types: a cell type is a group of channels (``unit_channel``). The grouping comes from the
   ``groups`` parameter (one label per channel, comma-separated), else from a ``unit_group`` coord on
   ``unit_channel`` of the attribution Dataset (e.g. the synthetic retina's direct channel and its
   delayed copy share their type's name), else each channel is its own type. A type's attribution
   ``A_g`` is the sum of its channels' attributions, so its channels' contributions add (and cancel)
   before it is ranked: a type is kept or dropped whole.
1. Space: the attribution is summed over ``unit_y``/``unit_x`` (exact for spatially uniform
   stimuli, where every unit of a type is equivalent); ``keep_axis`` keeps the axis a bar moves along
   in ``type_attribution`` (and in the ``magnitude`` ranking).
2. Choose (``ranking="explained"``, the default): for each k, the set of k types whose summed
   attribution ``R`` explains most of the response deviation, ``1 - ||dr - R|| / ||dr||``
   (``dr = response - baseline_response``, norms over the window pooled over cells and conditions);
   every subset is scored (up to :data:`EXHAUSTIVE_MAX` types, else types are added greedily), so
   two large types that cancel are found together. ``ranking="magnitude"`` takes the k types of
   largest ``S_g = sum |A_g|`` over cells, conditions, window times (and kept positions) instead.
3. Keep: the smallest k whose set reaches ``explained``; ``explained_by_rank`` holds the curve over
   k. If no k reaches it, every type is kept and ``criterion_met`` is 0. Keeping every type is no
   reduction: ``all_kept`` is then 1. Kept types are ordered by ``S_g`` (``rank`` 0 = largest;
   ties keep the lower type), the others after them.
4. Sign: ``+1`` (net excitatory) or ``-1`` (net inhibitory) from the signed sum of each channel's
   attribution over the window, conditions and space, per cell (the paper's ``ex_in``); a kept
   type's sign is that of its ``A_g`` (``component_sign``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.interfaces import Model, Reducer
from mechlens.parameters import param
from mechlens_reduction import prepare as P
from mechlens_reduction.common import component_coord, describe_window, finish


class CellTypes(Reducer):
    """Keep the fewest first-layer cell types whose attributions explain the response (Tanaka et al. 2019)."""

    name = "cell-types"

    @dataclass(frozen=True)
    class Parameters:
        explained: float = param(
            0.8,
            "fraction of the response deviation the kept types must explain, 1 - ||dr - sum_kept A|| / ||dr|| "
            "over the window",
            gt=0,
            max=1,
        )
        window_start: float | None = param(
            None, "start of the window of interest (relative to window_event if set); default: the start", units="s"
        )
        window_stop: float | None = param(
            None, "end of the window of interest (relative to window_event if set); default: the end", units="s"
        )
        window_event: str = param(
            "", "stimulus event variable the window is relative to, e.g. omitted_time or reversal_time"
        )
        keep_axis: str = param(
            "none",
            "spatial unit axis kept in the ranking and type_attribution (axis of a bar's motion)",
            choices=("none", "x", "y"),
        )
        groups: str = param(
            "",
            "cell type of each channel, comma-separated in channel order (channels sharing a label are one type); "
            "default: the attribution's unit_group coord, else one type per channel",
        )
        ranking: str = param(
            "explained",
            "how the kept set is chosen: 'explained' (for each k the k types whose summed attribution explains "
            "most) or 'magnitude' (the k types of largest sum |A_type|)",
            choices=("explained", "magnitude"),
        )
        check: float = param(
            0.5,
            "reduced-model check: the kept types must reproduce at least this fraction of the response deviation "
            "and the other types less than it",
            gt=0,
            max=1,
        )
        characterise: bool = param(True, "label the types ON/OFF, fast/slow from the model's STA (with a model)")
        sta_windows: int = param(64, "white-noise windows averaged for the STA", min=1)
        seed: int = param(0, "seed of the STA's white noise")

        def __post_init__(self) -> None:
            P.check_window(self.window_start, self.window_stop)

    def reduce(self, attribution: xr.Dataset, model: Model | None = None) -> xr.Dataset:
        """Rank and keep whole cell types; see the module docstring for the definitions.

        Parameters
        ----------
        attribution : xarray.Dataset
            ``attribution`` ([condition,] time, cell, unit_channel[, unit_y, unit_x]) in Hz, with
            ``response`` and ``baseline_response``; merged with the stimulus for a reduced model. An
            optional ``unit_group`` coord (unit_channel) names each channel's cell type.
        model : Model, optional
            The attributed model: adds ``reduced_response``, ``reduced_r``, ``peak_time_error``, the
            complement (``complement_response``, ``complement_r``) and the ``unit_type`` coord.

        Returns
        -------
        xarray.Dataset
            ``components`` (component, unit_channel) multi-hot of the kept types' channels in rank
            order; ``weights`` ([condition,] time, cell, component) the kept types' attributions
            summed over their channels and space, Hz; ``component_sign`` (cell, component);
            ``kept``, ``rank`` (unit_channel, the rank of the channel's type); ``contribution``,
            ``net_contribution``, ``sign`` (cell, unit_channel); ``explained_fraction`` and
            ``complement_explained_fraction`` (cell); ``explained_by_rank`` (n_types);
            ``additive_response``; ``type_attribution`` when the attribution has spatial dims; a
            ``unit_group`` coord (unit_channel) and ``component_label`` coord (component) when types
            group channels; attrs ``n_types``, ``n_kept_types``, ``all_kept``, ``criterion_met``,
            ``explained_pooled``, ``reduction_check``.
        """
        p = self.params
        prep = P.prepare(attribution)
        window = P.window_mask(prep, p.window_start, p.window_stop, p.window_event)
        spatial = P.reduce_space(prep.attribution, p.keep_axis)
        types = P.per_type(prep.attribution)
        channels = P.unit_coords(prep, ("unit_channel",))["unit_channel"]
        group_of, names, grouped = type_groups(prep, p.groups)
        n_types, n_ch = len(names), len(group_of)
        onehot_g = np.zeros((n_ch, n_types))
        onehot_g[np.arange(n_ch), group_of] = 1.0
        # per-type attribution: the type's channels summed, so opposite contributions cancel here
        per_group = xr.DataArray(
            types.values @ onehot_g, dims=(*prep.lead_dims, "type"), coords={d: types[d] for d in prep.lead_dims}
        )
        # magnitude of each type's summed attribution over the window: orders the kept types and the rest
        sp = xr.dot(spatial.rename(unit_channel="type"), xr.DataArray(onehot_g, dims=("type", "g")), dim="type")
        mag = abs(P.windowed(sp, window))
        magnitude = mag.sum([d for d in mag.dims if d != "g"]).values
        by_size = np.argsort(-magnitude, kind="stable")
        if p.ranking == "explained":
            sets, curve = best_sets(prep.deviation, per_group, window)
        else:
            sets = [by_size[:k] for k in range(1, n_types + 1)]
            curve = np.array(
                [float(P.explained_fraction(prep.deviation, per_group.isel(type=s_).sum("type"), window, over=()))
                 for s_ in sets]
            )  # fmt: skip
        reached = np.flatnonzero(curve >= p.explained)
        k = int(reached[0]) + 1 if reached.size else n_types
        in_set = np.isin(by_size, sets[k - 1])
        # the kept types first (largest summed attribution first), then the others by the same size
        order = np.concatenate([by_size[in_set], by_size[~in_set]])
        kept_types = order[:k]
        comp = component_coord(k)
        multihot = onehot_g[:, kept_types].T.astype(np.float32)  # (component, unit_channel)
        first_channel = np.array([int(np.flatnonzero(group_of == g)[0]) for g in kept_types])
        weights = per_group.isel(type=kept_types).rename(type="component").assign_coords(component=comp)
        out = xr.Dataset(
            {
                "weights": weights.transpose(*prep.lead_dims, "component").astype(np.float32),
                "components": xr.DataArray(
                    multihot, dims=("component", "unit_channel"), coords={"component": comp, "unit_channel": channels}
                ),
                "component_channel": xr.DataArray(channels.values[first_channel], dims="component"),
                "rank": xr.DataArray(np.argsort(order)[group_of].astype(np.int16), dims="unit_channel"),
                "explained_by_rank": xr.DataArray(curve, dims="n_types", coords={"n_types": np.arange(1, n_types + 1)}),
            }
        )
        out["weights"].attrs.update(
            units="Hz", long_name="kept types' attributions summed over their channels and space"
        )
        out["components"].attrs.update(units="1", long_name="1 = channel of the kept cell type")
        out["component_channel"].attrs.update(long_name="first channel of the kept cell type")
        out["rank"].attrs.update(long_name="rank of the channel's cell type (0 = first kept)")
        out["explained_by_rank"].attrs.update(
            units="1", long_name="pooled explained fraction of the best set of n_types types"
        )
        sign = P.sign_of(P.net(weights.rename(component="unit_channel"), window)).rename(unit_channel="component")
        out["component_sign"] = sign.assign_coords(component=comp)
        out["component_sign"].attrs.update(units="1", long_name="+1 the kept type is net excitatory, -1 inhibitory")
        if grouped:
            out = out.assign_coords(
                unit_group=("unit_channel", np.asarray(names)[group_of].astype(str)),
                component_label=("component", np.asarray(names)[kept_types].astype(str)),
            )
        if any(d in prep.attribution.dims for d in ("unit_y", "unit_x")):
            out["type_attribution"] = spatial.astype(np.float32)
            out["type_attribution"].attrs.update(units="Hz", long_name="attribution summed over the non-kept axes")
        mask = xr.DataArray(np.isin(group_of, kept_types), dims="unit_channel", coords={"unit_channel": channels})
        out = finish(
            out,
            prep,
            mask,
            window,
            model,
            reducer=self.name,
            params_json=self.parameters_json(),
            characterise=p.characterise,
            sta_windows=p.sta_windows,
            seed=p.seed,
            window_text=describe_window(p.window_start, p.window_stop, p.window_event),
            check=p.check,
        )
        out.attrs.update(
            explained_threshold=float(p.explained),
            explained_pooled=float(curve[k - 1]),
            criterion_met=int(bool(reached.size)),
            ranking=p.ranking,
            n_types=int(n_types),
            n_kept_types=int(k),
        )
        return out


def type_groups(prep: P.Prepared, groups: str = "") -> tuple[np.ndarray, list[str], bool]:
    """The cell type of each channel.

    Parameters
    ----------
    prep : Prepared
        The cut attribution Dataset; its ``unit_group`` coord (unit_channel), when present, names
        each channel's type.
    groups : str
        Comma-separated type labels, one per channel in channel order (overrides the coord); ``""``
        for none.

    Returns
    -------
    group_of : numpy.ndarray
        (unit_channel,) int, index of each channel's type; types are numbered in order of their
        first channel.
    names : list of str
        The types' names (``"channel c"`` when each channel is its own type).
    grouped : bool
        Whether a grouping was given (False: one type per channel).

    Raises
    ------
    ParameterError
        ``groups`` does not give one label per channel.
    """
    channels = P.unit_coords(prep, ("unit_channel",))["unit_channel"].values
    labels: list[str] | None = None
    if groups.strip():
        labels = [g.strip() for g in groups.split(",")]
        if len(labels) != len(channels) or not all(labels):
            raise ParameterError(
                "groups",
                f"got {len(labels)} label(s) ({groups!r}) for {len(channels)} channels; give one non-empty type "
                "label per channel, comma-separated in channel order (e.g. 'A,B,A,B')",
            )
    else:
        for src in (prep.attribution, prep.ds):
            if "unit_group" in src.coords and src["unit_group"].dims == ("unit_channel",):
                labels = [str(v) for v in src["unit_group"].values]
                break
    if labels is None:
        return np.arange(len(channels)), [f"channel {int(c)}" for c in channels], False
    names = list(dict.fromkeys(labels))
    return np.array([names.index(v) for v in labels]), names, True


#: up to this many types every subset is tried; beyond, types are added greedily
EXHAUSTIVE_MAX = 16


def best_sets(
    deviation: xr.DataArray, per_group: xr.DataArray, window: xr.DataArray
) -> tuple[list[np.ndarray], np.ndarray]:
    """For each k, the set of k types whose summed attribution best explains the response deviation.

    With ``a_g`` the types' attributions and ``dr`` the deviation inside the window (pooled over
    cells and conditions), ``||dr - sum_S a_g||^2 = dr.dr - 2 sum_S a_g.dr + sum_{g,h in S} a_g.a_h``:
    every subset is scored from the Gram matrix, so up to :data:`EXHAUSTIVE_MAX` types the search is
    exact. Types whose contributions cancel (large and of opposite sign) are found together, which a
    greedy search adding one type at a time misses. Beyond, types are added greedily (each step the
    one that explains most with those already chosen).

    Parameters
    ----------
    deviation : xarray.DataArray
        ([condition,] time, cell): ``response - baseline_response``, Hz.
    per_group : xarray.DataArray
        ([condition,] time, cell, type): each type's attribution, Hz.
    window : xarray.DataArray
        Boolean ([condition,] time).

    Returns
    -------
    sets : list of numpy.ndarray
        ``sets[k - 1]``: the indices of the best k types (ascending).
    curve : numpy.ndarray
        (type,) pooled explained fraction ``1 - ||dr - sum_S a_g|| / ||dr||`` of each best set (NaN when
        dr is 0 over the window).
    """
    lead = list(deviation.dims)
    w = window.broadcast_like(deviation).transpose(*lead).values.astype(float).ravel()
    dev = deviation.values.ravel() * w
    a = per_group.transpose(*lead, "type").values.reshape(-1, per_group.sizes["type"]) * w[:, None]
    n = a.shape[1]
    dd = float(dev @ dev)
    den = np.sqrt(dd) if dd > 0 else np.nan
    gram = a.T @ a
    b = a.T @ dev
    if n <= EXHAUSTIVE_MAX:
        masks = ((np.arange(1, 2**n)[:, None] >> np.arange(n)) & 1).astype(float)  # (subset, type)
        sq = dd - 2.0 * masks @ b + np.einsum("sg,gh,sh->s", masks, gram, masks)
        err = np.sqrt(np.maximum(sq, 0.0))
        size = masks.sum(axis=1).astype(int)
        sets, curve = [], []
        for k in range(1, n + 1):
            idx = np.flatnonzero(size == k)
            best = idx[int(np.argmin(err[idx]))]  # first = lowest bitmask on ties: lower types win
            sets.append(np.flatnonzero(masks[best]))
            curve.append(1.0 - err[best] / den)
        return sets, np.asarray(curve)
    chosen: list[int] = []
    sets, curve = [], []
    for _ in range(n):
        rest = [g for g in range(n) if g not in chosen]
        scores = []
        for g in rest:
            s_ = np.asarray([*chosen, g])
            scores.append(dd - 2.0 * b[s_].sum() + gram[np.ix_(s_, s_)].sum())
        chosen.append(rest[int(np.argmin(scores))])
        sets.append(np.sort(np.asarray(chosen)))
        curve.append(1.0 - np.sqrt(max(min(scores), 0.0)) / den)
    return sets, np.asarray(curve)
