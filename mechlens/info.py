"""What ``mechlens info`` prints: a readable summary of a result file or of a model checkpoint.

:func:`summarise` reads a netCDF file or zarr store written by mechlens (stages, dims, variables with
units and ranges, completeness, the mechanism sentence); :func:`summarise_checkpoint` reads a
checkpoint's metadata without reading its tensors and lets the model's plugin format it
(``describe_checkpoint``), since the core imports no plugin. Both only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechlens.errors import UsageError


def summarise(path: Path) -> str:
    """A readable summary of a mechlens netCDF file: stages, dims, variables with units, provenance."""
    import numpy as np

    from mechlens import io

    ds = io.load(path)
    lines = [
        f"{path}",
        f"  written by mechlens {ds.attrs.get('mechlens_version', '?')} on {ds.attrs.get('created', '?')}",
    ]
    for stage in ("model", "stimulus", "attributor", "reducer", "experiment"):
        if ds.attrs.get(stage):
            dist = ds.attrs.get(f"{stage}_distribution", "")
            params = ds.attrs.get(f"{stage}_parameters", "")
            lines.append(
                f"  {stage:<11} {ds.attrs[stage]}" + (f" ({dist})" if dist else "") + (f"  {params}" if params else "")
            )
    if ds.attrs.get("model_checkpoint_sha256"):
        lines.append(f"  checkpoint  sha256 {ds.attrs['model_checkpoint_sha256']}")
    if "layer" in ds.attrs:
        lines.append(f"  layer       {ds.attrs['layer']}")
    lines.append("  dims        " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
    if "time" in ds.coords:
        t = ds["time"].values
        extent = f"{t[0]:.3f} .. {t[-1]:.3f} s" if t.size else "empty (no frame)"
        lines.append(f"  time        {extent}, frame period {ds.attrs.get('frame_period_s', '?')} s")
    if "condition" in ds.coords:
        vals = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in ds["condition"].values.tolist())
        lines.append(f"  condition   {ds['condition'].attrs.get('swept', '?')} = {vals}")
    lines.append("  variables")
    for name, var in ds.data_vars.items():
        units = var.attrs.get("units", "")
        data = var.values
        rng = ""
        if data.dtype.kind == "f" and np.isfinite(data).any():
            rng = f"  range [{np.nanmin(data):.4g}, {np.nanmax(data):.4g}]"
        lines.append(f"    {name:<22} ({', '.join(map(str, var.dims))})" + (f" [{units}]" if units else "") + rng)
    finite = "completeness_error" in ds and "response" in ds and np.isfinite(ds["completeness_error"].values).any()
    if finite and np.isfinite(ds["response"].values).any():  # nanmax of nothing finite would fail or warn
        span = float(np.nanmax(ds["response"].values) - np.nanmin(ds["response"].values)) or 1.0
        worst = float(np.nanmax(np.abs(ds["completeness_error"].values)))
        lines.append(f"  completeness error: max {worst:.3g} Hz = {worst / span:.2e} of the response range")
    if "mechanism" in ds.attrs:
        lines.append(f"  mechanism: {ds.attrs['mechanism']}")
    return "\n".join(lines)


def _safetensors_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata in a ``.safetensors`` checkpoint's header (no tensor is read)."""
    from mechlens.io import read_safetensors_metadata

    meta, _ = read_safetensors_metadata(path, error=UsageError)
    if not isinstance(meta, dict) or "model" not in meta:
        raise UsageError(f"the mechlens metadata in {path} names no 'model'; it is not checkpoint metadata")
    return meta


def summarise_checkpoint(path: Path) -> str | None:
    """Summary of a model checkpoint, or None if ``path`` is not one.

    A checkpoint is ``MODEL.safetensors`` whose header metadata holds the model's JSON metadata
    under the key ``"mechlens"``, or (written by mechlens 0.1, still read) the pair ``MODEL.pt`` +
    ``MODEL.json``. The metadata names the model; its plugin class formats the summary when it has
    a ``describe_checkpoint(path, metadata)``, which may refuse metadata it cannot use (the core
    imports no plugin), else the keys are listed.
    """
    import json

    from mechlens import registry

    if path.suffix == ".safetensors":
        meta, weights = _safetensors_metadata(path), path
    elif path.suffix in (".pt", ".json"):
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            if path.suffix == ".pt" and path.is_file():
                raise UsageError(
                    f"{path} is a legacy checkpoint without its metadata {meta_path.name}; it lies beside the .pt"
                )
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UsageError(f"checkpoint metadata {meta_path} is not valid JSON: {err}") from None
        if not isinstance(meta, dict) or "model" not in meta:
            raise UsageError(f"{meta_path} is not checkpoint metadata (it names no 'model')")
        weights = path.with_suffix(".pt")
    else:
        return None
    if meta["model"] in registry.default().names("model"):
        describe = getattr(registry.get("model", meta["model"]), "describe_checkpoint", None)
        if describe is not None:
            return str(describe(weights, meta))
    return "\n".join([f"{weights}", f"  model {meta['model']}"] + [f"  {k}" for k in sorted(meta) if k != "model"])
