"""Safe checkpoints: one ``.safetensors`` file holding a model's weights and its JSON metadata.

A checkpoint ``MODEL.safetensors`` is one file in the safetensors format
(https://huggingface.co/docs/safetensors):

- its tensors are the module's ``state_dict`` (on the CPU, contiguous), stored by name;
- its header's ``__metadata__`` (a table of strings) has one entry, ``"mechlens"``, holding the
  JSON metadata: architecture, cell ids, frame period, pixel size, stimulus normalisation, the
  training-data fingerprint, metrics, mechlens version and seed (docs/training.md lists every key).

Writing is one rename: the bytes go to a temporary file in the target's directory, are flushed to
the disk (``fsync``), and ``os.replace`` puts them in place. A reader therefore sees the previous
checkpoint or the new one, whole, never a mix of the two, and a failed save (disk full, killed
job) leaves the previous checkpoint as it was. (The former layout, a ``.pt`` and a ``.json``
renamed one after the other, could leave new weights beside old metadata.)

Reading never unpickles code, and checks before it allocates: safetensors checks the header (at
most 100 MB, every tensor's byte range inside the file), :func:`validate_metadata` checks every
field against :data:`LIMITS`, the tensor names and shapes listed in the header are compared with
those the architecture needs, and only then are the tensors read. Last, their
:func:`tensor_sha256` must equal the ``weights_sha256`` recorded in the metadata.

``weights_sha256`` (metadata format version 2) is :func:`tensor_sha256`: the sha256 of the tensors
themselves (each tensor's name, dtype and shape, then its little-endian bytes, in name order). It
depends neither on the file name, nor on the metadata, nor on how the file is laid out, so the same
weights have the same identity whatever they are stored in; it is the provenance hash mechlens
writes into its results.

Checkpoints of mechlens 0.1 (``MODEL.pt``, a ``torch.save``'d state_dict read only with
``torch.load(..., weights_only=True)``, plus ``MODEL.json`` beside it, whose ``weights_sha256`` is
the sha256 of the ``.pt`` file) are still read, never written. ``python -m
mechlens_retina.models.checkpoint MODEL.pt`` converts one into ``MODEL.safetensors``.

Why one file (680 lines): writing, reading, validating and migrating (old ``.pt`` + ``.json``)
checkpoints share one metadata schema; kept together, this file is the one place that says what a
valid checkpoint is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mechlens.errors import FileFormatError, MechlensError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: value of the ``format`` key every metadata table carries
FORMAT = "mechlens-retina-cnn"
#: version of the metadata layout; bump when keys change meaning (2: ``weights_sha256`` is
#: :func:`tensor_sha256`, the metadata inside the ``.safetensors`` file)
FORMAT_VERSION = 2
#: metadata version of the read-only ``.pt`` + ``.json`` pairs (``weights_sha256``: of the ``.pt`` file)
LEGACY_VERSION = 1
#: file name ending of a checkpoint, and of the weights of a legacy pair
SUFFIX, LEGACY_SUFFIX = ".safetensors", ".pt"
#: the entry of the safetensors header's ``__metadata__`` that holds the JSON metadata
METADATA_KEY = "mechlens"
#: how many shape problems one error message lists (a hostile header may list thousands of tensors)
_MAX_PROBLEMS = 5

#: what a shape mismatch means, appended to its message
SHAPE_HINT = ". The metadata and the tensors disagree: the file was altered or not written by RetinaCNN.save"
#: the type of ``expected_shapes``: metadata (already validated) -> tensor name -> shape
ShapesOf = Callable[[Mapping[str, Any]], Mapping[str, tuple[int, ...]]]


class CheckpointError(FileFormatError):
    """A checkpoint file is refused: missing, unreadable, foreign, altered, or its metadata lies.

    Exit status 2, like any other unusable input named on the command line (a ``FileFormatError``,
    so ``except FileFormatError`` still catches it).
    """

    exit_code = 2


class Range(NamedTuple):
    """The values a numeric metadata field may take.

    Attributes
    ----------
    kind : str
        ``"int"`` (a JSON integer) or ``"float"`` (a finite JSON number; integers count).
    low, high : float
        Bounds; ``high`` is always inclusive.
    low_open : bool
        ``low`` itself is excluded (``frame_period_s`` > 0).
    units : str
        Units, for the message.
    required : bool
        The field must be present.
    """

    kind: str
    low: float
    high: float
    low_open: bool = False
    units: str = ""
    required: bool = True

    def text(self, high: float | None = None) -> str:
        """The allowed values in words, e.g. ``an integer in 1..1024 px``."""
        high = self.high if high is None else high
        units = f" {self.units}" if self.units else ""
        if self.kind == "int":
            return f"an integer in {self.low:g}..{high:g}{units}"
        return f"a finite number in {'(' if self.low_open else '['}{self.low:g}, {high:g}]{units}"


#: allowed values of the numeric metadata fields (dotted: ``architecture.image_size``). Generous for
#: any retina recording, yet small enough that a header cannot make mechlens build an absurd network;
#: kernel1 must also fit the image and kernel2 the first layer's output (:func:`validate_metadata`).
LIMITS: dict[str, Range] = {
    "architecture.history": Range("int", 1, 1000, units="frames"),
    "architecture.image_size": Range("int", 1, 1024, units="px"),
    "architecture.channels1": Range("int", 1, 1024),
    "architecture.kernel1": Range("int", 1, 1024, units="px"),
    "architecture.channels2": Range("int", 1, 1024),
    "architecture.kernel2": Range("int", 1, 1024, units="px"),
    "architecture.n_cells": Range("int", 1, 10000),
    "architecture.noise": Range("float", 0, 100, required=False),
    "architecture.bn_momentum": Range("float", 0, 1, low_open=True, required=False),
    "frame_period_s": Range("float", 0, 10, low_open=True, units="s"),
    "pixel_um": Range("float", 0, 1e4, low_open=True, units="um"),
    "stimulus_mean": Range("float", -1e30, 1e30, required=False),
    "stimulus_std": Range("float", 0, 1e30, low_open=True, required=False),
    "seed": Range("int", 0, 2**63 - 1, required=False),
}
#: values of ``architecture.first_layer`` (``mechlens_retina.models.cnn.FIRST_LAYERS``)
FIRST_LAYER_CHOICES = ("learned", "synthetic-retina")


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (works for multi-GB recordings)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def tensor_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """The identity of a set of tensors: what ``weights_sha256`` records.

    Parameters
    ----------
    state : mapping of str to Tensor
        A state_dict (any device; read on the CPU).

    Returns
    -------
    str
        Hex sha256 over the tensors in name order; for each, the UTF-8 JSON line
        ``["name", "float32", [d0, d1, ...]]`` and a newline, then its elements' bytes, row-major and
        little-endian (the byte order safetensors stores). The byte count follows from dtype and
        shape, so the stream is unambiguous.
    """
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        head = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
        digest.update(head.encode() + b"\n")
        # a byte view, not numpy's tobytes of the tensor itself: that has no bfloat16
        data = tensor.reshape(-1).view(torch.uint8).numpy()
        if sys.byteorder == "big" and tensor.element_size() > 1:  # pragma: no cover - no such machine to test on
            data = data.view(f"u{tensor.element_size()}").byteswap()
        digest.update(data.tobytes())
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The bytes go to a temporary file in ``path``'s directory (so the rename stays on one file
    system), are flushed to the disk with ``fsync``, and ``os.replace`` renames them over ``path``.
    On any failure the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : Path
        The file to write; its directory is created if missing.
    data : bytes
        The whole content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            # on the disk before the rename: after a power cut the name must not point at missing bytes
            os.fsync(fh.fileno())
        # mkstemp made the file private (0600); give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # the rename itself is durable only once the directory is synced; not every system allows it
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike[str], state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> str:
    """Write weights and metadata as one ``.safetensors`` file, atomically (:func:`atomic_write`).

    Parameters
    ----------
    path : path
        The checkpoint, ``*.safetensors``.
    state : mapping of str to Tensor
        The module's ``state_dict`` (copied to the CPU before writing).
    metadata : mapping
        JSON-serialisable metadata; ``format``, ``format_version`` and ``weights_sha256`` are set.
        It must pass :func:`validate_metadata`, so that every file written can be read back.

    Returns
    -------
    str
        ``weights_sha256``: :func:`tensor_sha256` of the tensors.

    Raises
    ------
    UsageError
        ``path`` does not end in ``.safetensors``.
    CheckpointError
        The metadata would be refused on loading.
    OSError
        The file could not be written (e.g. the disk is full); the previous file at ``path``, if
        any, is unchanged and no temporary file is left.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != SUFFIX:
        raise UsageError(
            f"{path}: a checkpoint is written as one {SUFFIX} file (weights and metadata together); "
            f"name it {path.with_suffix(SUFFIX).name}"
        )
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    digest = tensor_sha256(tensors)
    # format keys last: metadata read from a legacy pair carries format_version 1
    meta = {**dict(metadata), "format": FORMAT, "format_version": FORMAT_VERSION, "weights_sha256": digest}
    validate_metadata(meta, path)
    text = json.dumps(meta, sort_keys=True, allow_nan=True)
    data = save(tensors, metadata={METADATA_KEY: text})
    try:
        atomic_write(path, data)
    except OSError as err:
        raise OSError(
            err.errno,
            f"could not write the checkpoint {path} ({err.strerror or err}); the previous file there, if any, "
            "is unchanged. Free space or choose another directory, and save again",
        ) from err
    return digest


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The metadata and the tensor shapes of a ``.safetensors`` checkpoint, reading no tensor data.

    Parameters
    ----------
    path : path
        A ``*.safetensors`` file.

    Returns
    -------
    metadata : dict
        The parsed JSON of the header's ``"mechlens"`` entry (not yet validated).
    shapes : dict of str to tuple of int
        Every tensor's shape, by name.

    Raises
    ------
    CheckpointError
        The file is missing, is not safetensors, or holds no mechlens metadata.
    """
    from mechlens.io import read_safetensors_metadata

    return read_safetensors_metadata(path, METADATA_KEY, error=CheckpointError, writer="RetinaCNN.save")


class _Missing:
    """Shown for an absent field: ``metadata field 'pixel_um' is missing``."""

    def __repr__(self) -> str:
        return "missing"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _refuse(source: Any, field: str, value: Any, allowed: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {source}: metadata field {field!r} is {_show(value)}; allowed: {allowed}. The metadata "
        "does not describe a usable model (damaged, edited or not written by RetinaCNN.save)"
    )


def _check_number(source: Any, field: str, value: Any, limit: Range) -> None:
    # bool is an int subclass in Python, and JSON true/false must not pass as a size
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if limit.kind == "int":
        ok = number and isinstance(value, int) and limit.low <= value <= limit.high
    else:
        ok = number and math.isfinite(value) and value <= limit.high
        ok = ok and (value > limit.low if limit.low_open else value >= limit.low)
    if not ok:
        raise _refuse(source, field, value, limit.text())


def validate_metadata(meta: Any, source: Any, version: int = FORMAT_VERSION) -> None:
    """Refuse metadata that is foreign, of another version, or lies about the model, before anything is built.

    Parameters
    ----------
    meta : object
        The parsed metadata.
    source : path or str
        The file it came from, for the messages.
    version : int
        The ``format_version`` the container implies: :data:`FORMAT_VERSION` for ``.safetensors``,
        :data:`LEGACY_VERSION` for a ``.pt`` + ``.json`` pair.

    Raises
    ------
    CheckpointError
        One line naming the file, the field, its value and the allowed values: ``format`` is not
        :data:`FORMAT`; ``format_version`` is newer than this mechlens reads or does not match the
        container; an architecture size, a unit or the normalisation is missing, not a number or out
        of :data:`LIMITS` (strings, booleans, negatives, NaN and infinities are refused); a kernel is
        larger than its input; ``cells`` is not a list of ``n_cells`` ids; ``first_layer`` is unknown;
        ``weights_sha256`` is not 64 hex digits (required from version 2).
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{source} is not retina-CNN checkpoint metadata (its 'format' is {_show(found)}, expected {FORMAT!r})"
        )
    found = meta.get("format_version")
    if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {source} has format_version {found}; this mechlens reads up to {FORMAT_VERSION}. "
            "Upgrade mechlens"
        )
    if found != version:
        kind = f"a {SUFFIX} checkpoint" if version == FORMAT_VERSION else f"a {LEGACY_SUFFIX} + .json checkpoint"
        raise _refuse(source, "format_version", found, f"{version} in {kind}")
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise _refuse(source, "architecture", arch, "a table of history, image_size, channels1, kernel1, ...")
    for field, limit in LIMITS.items():
        table, key = (arch, field.split(".", 1)[1]) if field.startswith("architecture.") else (meta, field)
        if key not in table:
            if limit.required:
                raise _refuse(source, field, _Missing(), limit.text())
            continue
        _check_number(source, field, table[key], limit)
    # the kernels must fit their inputs (valid convolutions), else the layer sizes are <= 0
    s1 = arch["image_size"] - arch["kernel1"] + 1
    if s1 < 1:
        allowed = LIMITS["architecture.kernel1"].text(arch["image_size"]) + " (at most image_size)"
        raise _refuse(source, "architecture.kernel1", arch["kernel1"], allowed)
    if s1 - arch["kernel2"] + 1 < 1:
        allowed = (
            LIMITS["architecture.kernel2"].text(s1) + " (at most image_size - kernel1 + 1, the first layer's output)"
        )
        raise _refuse(source, "architecture.kernel2", arch["kernel2"], allowed)
    if "first_layer" in arch and arch["first_layer"] not in FIRST_LAYER_CHOICES:
        raise _refuse(source, "architecture.first_layer", arch["first_layer"], " or ".join(FIRST_LAYER_CHOICES))
    cells = meta.get("cells")
    n_cells = arch["n_cells"]
    if cells is not None and (
        not isinstance(cells, list)
        or len(cells) != n_cells
        or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in cells)
    ):
        raise _refuse(source, "cells", cells, f"a list of n_cells ({n_cells}) cell ids (strings)")
    digest = meta.get("weights_sha256")
    if digest is not None or version >= 2:
        hexdigits = set("0123456789abcdef")
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= hexdigits):
            raise _refuse(source, "weights_sha256", digest, "64 lowercase hex digits (the tensors' sha256)")


def check_shapes(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    source: Any,
    hint: str = SHAPE_HINT,
) -> None:
    """Raise a CheckpointError naming the missing, unexpected or mis-shaped tensors (the first few).

    Parameters
    ----------
    expected : mapping of str to tuple of int
        Tensor shapes the architecture needs, by name.
    found : mapping of str to tuple of int
        Tensor shapes in the checkpoint.
    source : path or str
        The checkpoint, for the message.
    hint : str
        What it means (appended to the message).
    """
    problems = []
    for name, shape in expected.items():
        if name not in found:
            problems.append(f"tensor {name!r} is missing")
        elif tuple(found[name]) != tuple(shape):
            problems.append(
                f"tensor {name!r} has shape {tuple(found[name])} in the checkpoint, "
                f"the architecture needs {tuple(shape)}"
            )
    problems += [f"unexpected tensor {name!r}" for name in found if name not in expected]
    if problems:
        more = f"; and {len(problems) - _MAX_PROBLEMS} more" if len(problems) > _MAX_PROBLEMS else ""
        raise CheckpointError(
            f"checkpoint {source} does not fit the architecture in its metadata: "
            + "; ".join(problems[:_MAX_PROBLEMS])
            + more
            + hint
        )


def load_checkpoint(
    path: str | os.PathLike[str], expected_shapes: ShapesOf | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Read a checkpoint, never unpickling code and checking everything before reading the tensors.

    Parameters
    ----------
    path : path
        ``*.safetensors`` (written by :func:`save_checkpoint`), or the ``*.pt`` weights of a legacy
        pair (its ``.json`` beside it).
    expected_shapes : callable, optional
        ``expected_shapes(metadata)`` -> tensor name -> shape the architecture in the (validated)
        metadata needs; with it, a ``.safetensors`` file's tensors are compared with it before any
        is read (a legacy ``.pt`` can only be compared after ``torch.load``).

    Returns
    -------
    state : dict of str to Tensor
        The state_dict, on the CPU.
    metadata : dict
        The validated metadata (as recorded; a legacy pair's ``weights_sha256`` is its file's).
    sha256 : str
        :func:`tensor_sha256` of the tensors (the same for a legacy pair and its conversion).

    Raises
    ------
    UsageError
        ``path`` is a ``.json`` or ends in neither ``.safetensors`` nor ``.pt``.
    CheckpointError
        The file (or a legacy pair's half) is missing or unreadable, its metadata is refused by
        :func:`validate_metadata`, its tensors do not fit the architecture, or they are not the
        tensors the recorded ``weights_sha256`` names.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise UsageError(f"{path}: give the weights file (.pt) of a legacy checkpoint, not its .json metadata")
    if path.suffix == LEGACY_SUFFIX:
        return _load_legacy(path, expected_shapes)
    if path.suffix != SUFFIX:
        raise UsageError(
            f"{path}: a retina-cnn checkpoint is a {SUFFIX} file (or the {LEGACY_SUFFIX} of a legacy pair); "
            f"this name ends in {path.suffix or 'nothing'!r}"
        )
    from safetensors import SafetensorError, safe_open

    meta, shapes = read_header(path)
    validate_metadata(meta, path)
    if expected_shapes is not None:
        check_shapes(expected_shapes(meta), shapes, path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {name: fh.get_tensor(name) for name in fh.keys()}
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"checkpoint {path}: its tensors could not be read ({err})") from None
    digest = tensor_sha256(state)
    if digest != meta["weights_sha256"]:
        raise CheckpointError(
            f"checkpoint {path}: the tensors' sha256 {digest[:12]}... differs from the weights_sha256 recorded in "
            f"its metadata ({meta['weights_sha256'][:12]}...); the file was altered after it was written"
        )
    return state, meta, digest


def _load_legacy(path: Path, expected_shapes: ShapesOf | None) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Read a mechlens-0.1 pair ``MODEL.pt`` + ``MODEL.json`` (``torch.load(..., weights_only=True)``)."""
    import torch

    meta_path = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights {path} not found; give a {SUFFIX} file written by RetinaCNN.save")
    if not meta_path.is_file():
        raise CheckpointError(
            f"checkpoint {path} has no metadata file {meta_path}; a legacy checkpoint is the .pt weights plus the "
            ".json beside them (architecture, cells, frame period)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint metadata {meta_path} is not valid JSON: {err}") from None
    validate_metadata(meta, meta_path, version=LEGACY_VERSION)
    recorded = meta.get("weights_sha256")
    if recorded and recorded != sha256_file(path):
        raise CheckpointError(
            f"checkpoint {path}: its sha256 differs from the one recorded in {meta_path.name} "
            f"({str(recorded)[:12]}...); the weights and metadata belong to different checkpoints"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
        raise CheckpointError(
            f"checkpoint {path} could not be read as a plain tensor state_dict ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); only weights-only checkpoints are loaded"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state_dict (a mapping of names to tensors)")
    if expected_shapes is not None:
        found = {name: tuple(tensor.shape) for name, tensor in state.items()}
        check_shapes(expected_shapes(meta), found, path)
    return dict(state), meta, tensor_sha256(state)


def convert_legacy(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str] | None = None,
    expected_shapes: ShapesOf | None = None,
) -> Path:
    """Convert a legacy ``MODEL.pt`` + ``MODEL.json`` into one ``MODEL.safetensors``.

    The tensors are copied unchanged and the metadata keeps every key; only ``format_version`` (2)
    and ``weights_sha256`` (now :func:`tensor_sha256`) change. The legacy files are left in place.

    Parameters
    ----------
    source : path
        The ``.pt`` weights (checked against their ``.json`` as when loading).
    target : path, optional
        The ``.safetensors`` to write (default: ``source`` with that suffix).
    expected_shapes : callable, optional
        As for :func:`load_checkpoint` (``mechlens_retina.models.cnn.state_shapes``): refuse a pair whose
        tensors do not fit its metadata instead of converting it. Without it, that is found when
        the converted file is loaded.

    Returns
    -------
    Path
        The written checkpoint.
    """
    source = Path(source)
    if source.suffix != LEGACY_SUFFIX:
        raise UsageError(f"{source}: give the {LEGACY_SUFFIX} weights of a legacy checkpoint to convert")
    target = source.with_suffix(SUFFIX) if target is None else Path(target)
    state, meta, _ = load_checkpoint(source, expected_shapes=expected_shapes)
    save_checkpoint(target, state, meta)
    return target


def describe(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    format_gate: Callable[[dict[str, Any]], str] | None = None,
) -> str:
    """A readable summary of a checkpoint's metadata, for ``mechlens info MODEL.safetensors``.

    Parameters
    ----------
    path : path
        The checkpoint (only named in the first line).
    metadata : mapping
        Its parsed metadata.
    format_gate : callable, optional
        Renders the ``probe_agreement`` table (``mechlens_retina.phenomena.agreement.format_agreement``;
        passed in, so this file-format module imports no science module); default: a plain table.

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
        lines.append("  probe agreement: not stored (rebuild with python -m mechlens_retina.training.bundle)")
    else:
        lines.append("  probe agreement:")
        table = format_gate(dict(gate)) if format_gate is not None else _format_agreement(gate)
        lines += ["    " + line for line in str(table).splitlines()]
    lines.append(f"  weights     sha256 {meta.get('weights_sha256', '?')}")
    return "\n".join(lines)


def _format_agreement(gate: Mapping[str, Any]) -> str:
    # the table of mechlens_retina.phenomena.agreement.format_agreement, for callers without it
    rows = [f"{'stimulus':<24}{'r median':>10}{'r min':>10}{'peak err ms':>13}  passed"]
    for name, s in (gate.get("stimuli") or {}).items():
        rows.append(
            f"{name:<24}{s.get('r_median', float('nan')):>10.3f}{s.get('r_min', float('nan')):>10.3f}"
            f"{s.get('peak_error_ms', float('nan')):>13.1f}  {'yes' if s.get('passed') else 'no'}"
        )
    rows.append(f"gate {'passed' if gate.get('passed') else 'not passed'}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """``python -m mechlens_retina.models.checkpoint OLD.pt ...``: convert old checkpoints (:func:`convert_legacy`)."""
    parser = argparse.ArgumentParser(
        prog="python -m mechlens_retina.models.checkpoint",
        description="Convert legacy retina-cnn checkpoints (MODEL.pt + MODEL.json) into MODEL.safetensors. "
        "Metadata and sha256 are checked here; tensor shapes when the converted file is loaded.",
    )
    parser.add_argument("legacy", type=Path, nargs="+", help="the .pt weights of each checkpoint (its .json beside)")
    args = parser.parse_args(argv)
    try:
        for source in args.legacy:
            target = convert_legacy(source)
            print(f"wrote {target}; {source} and {source.with_suffix('.json')} are unchanged (delete them when done)")
    except MechlensError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
