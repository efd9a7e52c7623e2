"""Safe checkpoints: a torch ``state_dict`` file plus a JSON metadata file beside it.

A checkpoint ``model.pt`` is two files:

- ``model.pt``: the module's ``state_dict`` written by :func:`torch.save` into memory first, so the
  bytes do not depend on the file name (torch names the archive after the file otherwise). It is
  read back **only** with ``torch.load(..., weights_only=True)``, which refuses pickled code.
- ``model.json``: architecture parameters, cell ids, frame period, pixel size, stimulus
  normalisation, the training-data fingerprint, metrics, mechlens version and seed (see
  docs/training.md for every key).

Saving the same weights twice gives byte-identical ``.pt`` files, so :func:`sha256_file` of the
weights is a stable identity for provenance.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechlens.errors import FileFormatError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: value of the ``format`` key every metadata file carries
FORMAT = "mechlens-retina-cnn"
#: version of the metadata layout; bump when keys change meaning
FORMAT_VERSION = 1


def metadata_path(path: str | os.PathLike[str]) -> Path:
    """The JSON metadata file that belongs to a weights file (``model.pt`` -> ``model.json``)."""
    path = Path(path)
    if path.suffix == ".json":
        raise UsageError(f"{path}: give the weights file (.pt) of a checkpoint, not its .json metadata")
    return path.with_suffix(".json")


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (works for multi-GB recordings)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def state_dict_bytes(state: Mapping[str, torch.Tensor]) -> bytes:
    """Serialise a state_dict to bytes, deterministically (no file name inside the archive)."""
    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    return buffer.getvalue()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and ``os.replace``."""
    # write beside the target and rename, so an interrupted save never leaves half a checkpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp made the file private (0600); give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | os.PathLike[str], state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> str:
    """Write weights and metadata.

    Parameters
    ----------
    path : path
        The weights file, conventionally ``*.pt``; the metadata goes to the same name with ``.json``.
    state : mapping of str to Tensor
        The module's ``state_dict`` (moved to the CPU before writing).
    metadata : mapping
        JSON-serialisable metadata; ``format``, ``format_version`` and ``weights_sha256`` are added.

    Returns
    -------
    str
        sha256 of the weights file.
    """
    path = Path(path)
    meta_path = metadata_path(path)
    data = state_dict_bytes(state)
    digest = hashlib.sha256(data).hexdigest()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **dict(metadata), "weights_sha256": digest}
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=True) + "\n"
    atomic_write(path, data)
    atomic_write(meta_path, text.encode())
    return digest


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Read a checkpoint written by :func:`save_checkpoint`, never unpickling code.

    Parameters
    ----------
    path : path
        The weights file (``*.pt``); its ``.json`` must lie beside it.

    Returns
    -------
    state : dict of str to Tensor
        The state_dict, on the CPU.
    metadata : dict
        The parsed metadata.
    sha256 : str
        sha256 of the weights file.

    Raises
    ------
    FileFormatError
        A file is missing, the weights are not a plain tensor state_dict (e.g. a pickled module,
        which ``weights_only=True`` refuses), the metadata is not mechlens retina-CNN JSON, or the
        weights do not match the sha256 recorded in the metadata.
    """
    import torch

    path = Path(path)
    meta_path = metadata_path(path)
    if not path.is_file():
        raise FileFormatError(f"checkpoint weights {path} not found; give the .pt file written by RetinaCNN.save")
    if not meta_path.is_file():
        raise FileFormatError(
            f"checkpoint {path} has no metadata file {meta_path}; a checkpoint is the .pt weights plus the .json "
            "written beside them by RetinaCNN.save (architecture, cells, frame period)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileFormatError(f"checkpoint metadata {meta_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FileFormatError(
            f"{meta_path} is not retina-CNN checkpoint metadata (its 'format' is "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})"
        )
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise FileFormatError(
            f"{meta_path} has format_version {meta['format_version']}; this mechlens reads up to {FORMAT_VERSION}. "
            "Upgrade mechlens."
        )
    digest = sha256_file(path)
    recorded = meta.get("weights_sha256")
    if recorded and recorded != digest:
        raise FileFormatError(
            f"checkpoint {path}: its sha256 {digest[:12]}... differs from the one recorded in {meta_path.name} "
            f"({str(recorded)[:12]}...); the weights and metadata belong to different checkpoints"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
        raise FileFormatError(
            f"checkpoint {path} could not be read as a plain tensor state_dict ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); only weights-only checkpoints are loaded"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FileFormatError(f"checkpoint {path} does not hold a state_dict (a mapping of names to tensors)")
    return dict(state), meta, digest


def check_state_dict(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str, hint: str = ""
) -> None:
    """Raise a FileFormatError naming every missing, unexpected or mis-shaped tensor.

    Parameters
    ----------
    expected : mapping
        The state_dict of the module being loaded into.
    found : mapping
        The state_dict read from the checkpoint.
    source : str
        The checkpoint path, for the message.
    hint : str
        What to do about it (appended to the message).
    """
    problems = []
    for name, tensor in expected.items():
        if name not in found:
            problems.append(f"tensor {name!r} is missing")
        elif tuple(found[name].shape) != tuple(tensor.shape):
            problems.append(
                f"tensor {name!r} has shape {tuple(found[name].shape)} in the checkpoint, "
                f"the architecture needs {tuple(tensor.shape)}"
            )
    problems += [f"unexpected tensor {name!r}" for name in found if name not in expected]
    if problems:
        raise FileFormatError(f"checkpoint {source} does not fit the architecture: " + "; ".join(problems) + hint)


def describe(path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> str:
    """A readable summary of a checkpoint's metadata, for ``mechlens info MODEL.pt``.

    Parameters
    ----------
    path : path
        The weights file (only named in the first line).
    metadata : mapping
        Its parsed ``.json`` metadata.

    Returns
    -------
    str
        Model, architecture, cells, training data and recipe, the headline metrics and, when the
        checkpoint stores one, the ``probe_agreement`` gate as a table.
    """
    meta = dict(metadata)
    lines = [f"{path}", f"  model       {meta.get('model', '?')} (mechlens {meta.get('mechlens_version', '?')})"]
    arch = meta.get("architecture") or {}
    if arch:
        lines.append("  architecture " + ", ".join(f"{k}={v}" for k, v in arch.items()))
    cells = meta.get("cells") or []
    lines.append(f"  cells       {len(cells)}: {' '.join(map(str, cells))}")
    if "frame_period_s" in meta:
        lines.append(f"  units       frame period {meta['frame_period_s']} s, pixel {meta.get('pixel_um', '?')} um")
    training = meta.get("training") or {}
    if training:
        sha = str(training.get("data_sha256", ""))[:12]
        lines.append(f"  trained on  {training.get('data', '?')} (sha256 {sha}...) on {training.get('created', '?')}")
    recipe = meta.get("recipe")
    if recipe:
        lines.append(f"  recipe      {json.dumps(recipe, sort_keys=True)}")
    if meta.get("build_seconds"):
        lines.append("  build       " + ", ".join(f"{k} {v} s" for k, v in meta["build_seconds"].items()))
    metrics = meta.get("metrics") or {}
    if metrics:
        ev = metrics.get("evaluation") or {}
        cc = ev.get("cc_mean")
        lines.append(
            f"  training    best epoch {metrics.get('best_epoch', '?')} of {metrics.get('epochs_run', '?')}"
            f" ({metrics.get('stopped', '?')}), validation loss {metrics.get('val_loss', float('nan')):.4f}"
            + (f", {metrics.get('evaluated_on', '?')} cc mean {cc:.3f}" if isinstance(cc, (int, float)) else "")
        )
    gate = meta.get("probe_agreement")
    if gate is None:
        lines.append("  probe agreement: not stored (rebuild with python -m mechlens_retina.bundle)")
    else:
        lines.append("  probe agreement:")
        lines += ["    " + line for line in _format_agreement(gate).splitlines()]
    lines.append(f"  weights     sha256 {meta.get('weights_sha256', '?')}")
    return "\n".join(lines)


def _format_agreement(gate: Mapping[str, Any]) -> str:
    try:
        from mechlens_retina.agreement import format_agreement
    except ImportError:
        format_agreement = None
    if format_agreement is not None:
        return str(format_agreement(dict(gate)))
    # the same table, for a mechlens without the agreement module
    rows = [f"{'stimulus':<24}{'r median':>10}{'r min':>10}{'peak err ms':>13}  passed"]
    for name, s in (gate.get("stimuli") or {}).items():
        rows.append(
            f"{name:<24}{s.get('r_median', float('nan')):>10.3f}{s.get('r_min', float('nan')):>10.3f}"
            f"{s.get('peak_error_ms', float('nan')):>13.1f}  {'yes' if s.get('passed') else 'no'}"
        )
    rows.append(f"gate {'passed' if gate.get('passed') else 'not passed'}")
    return "\n".join(rows)
