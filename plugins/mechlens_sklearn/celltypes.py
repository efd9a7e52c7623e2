"""The paper's reduction: keep the few first-layer cell types whose attributions explain the response.

Definition
----------
1. Space: the attribution is summed over ``unit_y``/``unit_x`` (exact for spatially uniform
   stimuli, where every unit of a type is equivalent); ``keep_axis`` keeps the axis a bar moves along
   in ``type_attribution`` and in the ranking.
2. Rank: each type ``c`` scores ``S_c = sum over cells, conditions, window times t (and kept
   positions) of |A_c(t)|``; ties keep the lower channel first.
3. Keep: with ``dr = response - baseline_response`` and ``R_k = sum of the k top-ranked types'
   A_c``, the kept set is the smallest k with ``1 - ||dr - R_k|| / ||dr|| >= explained``, the norms
   taken over the window (pooled over cells and conditions). If no k reaches it, every type is kept
   and ``criterion_met`` is 0.
4. Sign: ``+1`` (net excitatory) or ``-1`` (net inhibitory) from the signed sum of each type's
   attribution over the window, conditions and space, per cell (the paper's ``ex_in``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from mechlens.interfaces import Model, Reducer
from mechlens.parameters import param
from mechlens_sklearn import prepare as P
from mechlens_sklearn.common import component_coord, describe_window, finish


class CellTypes(Reducer):
    """Keep the fewest first-layer cell types whose attributions explain the response (Tanaka et al. 2019)."""

    name = "cell-types"

    @dataclass(frozen=True)
    class Parameters:
        explained: float = param(
            0.9,
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
        characterise: bool = param(True, "label the types ON/OFF, fast/slow from the model's STA (with a model)")
        sta_windows: int = param(64, "white-noise windows averaged for the STA", min=1)
        seed: int = param(0, "seed of the STA's white noise")

        def __post_init__(self) -> None:
            P.check_window(self.window_start, self.window_stop)

    def reduce(self, attribution: xr.Dataset, model: Model | None = None) -> xr.Dataset:
        """Rank and keep cell types; see the module docstring for the definitions.

        Parameters
        ----------
        attribution : xarray.Dataset
            ``attribution`` ([condition,] time, cell, unit_channel[, unit_y, unit_x]) in Hz, with
            ``response`` and ``baseline_response``; merged with the stimulus for a reduced model.
        model : Model, optional
            The attributed model: adds ``reduced_response``, ``reduced_r``, ``peak_time_error`` and
            the ``unit_type`` coord.

        Returns
        -------
        xarray.Dataset
            ``components`` (component, unit_channel) one-hot of the kept types in rank order;
            ``weights`` ([condition,] time, cell, component) their attributions summed over space;
            ``kept``, ``rank`` (unit_channel); ``contribution``, ``net_contribution``, ``sign``
            (cell, unit_channel); ``explained_fraction`` (cell); ``explained_by_rank`` (n_types);
            ``additive_response``; ``type_attribution`` when the attribution has spatial dims.
        """
        p = self.params
        prep = P.prepare(attribution)
        window = P.window_mask(prep, p.window_start, p.window_stop, p.window_event)
        spatial = P.reduce_space(prep.attribution, p.keep_axis)
        types = P.per_type(prep.attribution)
        per_cell = P.contribution(spatial, window)
        score = per_cell.sum("cell").values
        order = np.argsort(-score, kind="stable")
        ordered = types.isel(unit_channel=order)
        n = len(order)
        curve = np.array(
            [
                float(
                    P.explained_fraction(
                        prep.deviation, ordered.isel(unit_channel=slice(0, k)).sum("unit_channel"), window, over=()
                    )
                )
                for k in range(1, n + 1)
            ]
        )
        reached = np.flatnonzero(curve >= p.explained)
        k = int(reached[0]) + 1 if reached.size else n
        kept_channels = order[:k]
        channels = P.unit_coords(prep, ("unit_channel",))["unit_channel"]
        comp = component_coord(k)
        onehot = np.zeros((k, n), dtype=np.float32)
        onehot[np.arange(k), kept_channels] = 1.0
        weights = types.isel(unit_channel=kept_channels).rename(unit_channel="component")
        weights = weights.drop_vars("component", errors="ignore").assign_coords(component=comp)
        out = xr.Dataset(
            {
                "weights": weights.transpose(*prep.lead_dims, "component").astype(np.float32),
                "components": xr.DataArray(
                    onehot, dims=("component", "unit_channel"), coords={"component": comp, "unit_channel": channels}
                ),
                "component_channel": xr.DataArray(channels.values[kept_channels], dims="component"),
                "rank": xr.DataArray(np.argsort(order).astype(np.int16), dims="unit_channel"),
                "explained_by_rank": xr.DataArray(curve, dims="n_types", coords={"n_types": np.arange(1, n + 1)}),
            }
        )
        out["weights"].attrs.update(units="Hz", long_name="kept types' attributions summed over space")
        out["components"].attrs.update(units="1", long_name="one-hot of the kept cell type")
        out["rank"].attrs.update(long_name="rank by contribution (0 = largest)")
        out["explained_by_rank"].attrs.update(
            units="1", long_name="pooled explained fraction keeping the n_types top-ranked types"
        )
        if any(d in prep.attribution.dims for d in ("unit_y", "unit_x")):
            out["type_attribution"] = spatial.astype(np.float32)
            out["type_attribution"].attrs.update(units="Hz", long_name="attribution summed over the non-kept axes")
        mask = xr.DataArray(
            np.isin(np.arange(n), kept_channels), dims="unit_channel", coords={"unit_channel": channels}
        )
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
            score=per_cell,
        )
        out.attrs.update(
            explained_threshold=float(p.explained),
            explained_pooled=float(curve[k - 1]),
            criterion_met=int(bool(reached.size)),
        )
        return out
