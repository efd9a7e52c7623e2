"""Natural scenes: natural images, a new random crop every second, jittered by fixational eye movements.

The images are the natural photographs that ship with packages mechlens already depends on, read
from their package folders without any download (and without importing scikit-learn, which is slow):

- ``china`` and ``flower``: scikit-learn's sample images (``sklearn.datasets.load_sample_images``),
  427 x 640 px;
- ``grace_hopper``: matplotlib's sample image (``matplotlib.cbook.get_sample_data``), 512 x 600 px.

Each is converted to grey (ITU-R 601 luma) and z-scored with the mean and standard deviation of the
three pooled, so brighter images stay brighter. A grid pixel covers ``zoom`` x ``zoom`` image pixels
(box-filtered), and is sampled at its centre with bilinear interpolation, so the sub-pixel jitter is
rendered smoothly. Image ``k`` is shown over ``[k * image_s, (k + 1) * image_s)`` (negative ``k`` in
the history); its choice, crop and jitter path come from a generator seeded by ``(seed, k)``, so the
movie can be made piecewise like white noise. The jitter is a Gaussian random walk of the image on
the retina, starting at 0 at each image onset (a new fixation), with independent steps of standard
deviation ``jitter_um`` per frame along y and x. With ``drift_um_s`` > 0 each image also drifts at a
constant velocity, in a random direction at a speed drawn uniformly from ``[0, drift_um_s]``: smooth
motion at the speeds of the moving-bar probes, which a fixational random walk alone never shows
(drawn after the jitter steps, so a movie with ``drift_um_s = 0`` is the same as before it existed).
With ``blank_p`` > 0 each image's slot is, with that probability, the flicker-free grey screen instead
(``image_blank`` marks those slots), so images also appear abruptly from grey, as the probes do.
With ``checker_p`` > 0 each slot shows, with that probability, a random binary checkerboard (checks of
``checker_px`` grid pixels, +-1: the z-scored images' standard deviation) instead of an image, moved by
the slot's jitter and drift and rendered like an image (``image_checker`` marks those slots). The
photographs, box-filtered to the grid, hold little contrast at the scale of one pixel; a model fitted
to them alone is free to pool its first-layer subunits over several pixels, which the checkerboard's
pixel-scale edges, moving across the grid, do not allow.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from scipy import ndimage

from mechlens.errors import FileFormatError, ParameterError
from mechlens.parameters import param
from mechlens_stimuli._chunked import ChunkedStimulus
from mechlens_stimuli._render import (
    assemble,
    chunk_rng,
    event,
    grid_shape,
    known_shape,
    n_frames,
    pixel_centres,
    stimulus_parameters,
)

#: the image library: name -> (package, path inside the package folder)
IMAGES: dict[str, tuple[str, str]] = {
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}
_STREAM = 2
#: the full-field flicker's random stream (independent of the image plan's, so flicker=0 changes nothing)
_FLICKER_STREAM = 11
#: the per-image contrast's random stream (own stream, so image_contrast_min=1 changes nothing)
_CONTRAST_STREAM = 12
#: the blank slots' random stream (own stream, so blank_p=0 changes nothing)
_BLANK_STREAM = 13
#: the checkerboard slots' random stream (own stream, so checker_p=0 changes nothing)
_CHECKER_STREAM = 14
_LUMA = np.array([0.299, 0.587, 0.114])


def image_path(name: str) -> Path:
    """Where an image of the library lies (found without importing its package)."""
    package, rel = IMAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileFormatError(f"natural-scenes: image {name!r} ships with {package}, which is not installed")
    path = Path(spec.origin).parent / rel
    if not path.is_file():
        raise FileFormatError(f"natural-scenes: image {name!r} not found at {path} (is {package} complete?)")
    return path


@functools.cache
def image_shape(name: str) -> tuple[int, int]:
    """(height, width) of a library image, px (reads only the file header)."""
    from PIL import Image

    with Image.open(image_path(name)) as im:
        return im.size[1], im.size[0]


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an (h, w, 3) RGB array, float64."""
    return np.asarray(rgb, dtype=float) @ _LUMA


@functools.lru_cache(maxsize=1)
def library() -> dict[str, np.ndarray]:
    """Every library image in grey, z-scored with the pooled mean and std: name -> (h, w) float32."""
    from PIL import Image

    grey = {}
    for name in IMAGES:
        with Image.open(image_path(name)) as im:
            grey[name] = to_grey(np.asarray(im.convert("RGB")))
    pooled = np.concatenate([g.ravel() for g in grey.values()])
    mean, std = pooled.mean(), pooled.std()
    return {k: ((g - mean) / std).astype(np.float32) for k, g in grey.items()}


@functools.lru_cache(maxsize=16)
def smoothed(name: str, zoom: int) -> np.ndarray:
    """A library image box-filtered over ``zoom`` x ``zoom`` image pixels (one grid pixel's footprint)."""
    img = library()[name]
    return img if zoom == 1 else ndimage.uniform_filter(img, size=zoom, mode="reflect")


def sample_image(image: np.ndarray, centre_px: tuple[float, float], jitter_um: np.ndarray, params: Any) -> np.ndarray:
    """The grid's view of an (already box-filtered) image, one frame per jitter offset.

    A grid pixel at ``(y, x)`` um shows the image at ``centre + (pos - jitter) * zoom / pixel_um``
    image pixels, i.e. the jitter is the displacement of the image on the retina (positive x:
    the image moves right).

    Parameters
    ----------
    image : numpy.ndarray
        (h, w) image.
    centre_px : (float, float)
        Image coordinates (row, column) shown at the grid centre when the jitter is 0.
    jitter_um : numpy.ndarray
        (n_frames, 2) image displacement (y, x), um.
    params
        Parameters with the grid (``height_px`` / ``width_px`` or ``size_px``), ``pixel_um``, ``zoom``.

    Returns
    -------
    numpy.ndarray
        (n_frames, height, width) float32.
    """
    scale = params.zoom / params.pixel_um
    # uniform_filter with an even size centres its window half a pixel before the index
    half = 0.5 if params.zoom % 2 == 0 else 0.0
    rows = centre_px[0] + half + (pixel_centres(params, "y")[None, :] - jitter_um[:, :1]) * scale  # (T, ny)
    cols = centre_px[1] + half + (pixel_centres(params, "x")[None, :] - jitter_um[:, 1:]) * scale  # (T, nx)
    n_t, ny = rows.shape
    nx = cols.shape[1]
    coords = np.stack(np.broadcast_arrays(rows[:, :, None], cols[:, None, :]))
    out = ndimage.map_coordinates(image, coords.reshape(2, -1), order=1, mode="mirror")
    return out.reshape(n_t, ny, nx).astype(np.float32)


def checkerboard_image(
    rng: np.random.Generator, params: Any, path_um: np.ndarray
) -> tuple[np.ndarray, tuple[float, float]]:
    """A random binary checkerboard in image pixels, large enough for the grid along ``path_um``.

    Checks are ``checker_px`` grid pixels (``checker_px * zoom`` image pixels), values +-1, then
    box-filtered over one grid pixel's footprint like the photographs (:func:`smoothed`).

    Returns
    -------
    (numpy.ndarray, (float, float))
        The (h, w) float32 image and the image coordinates (row, column) shown at the grid centre
        when the jitter is 0.
    """
    ny, nx = grid_shape(params)
    reach = int(np.ceil(np.abs(path_um).max(initial=0.0) / params.pixel_um)) + 2  # grid px the path moves
    check = params.checker_px * params.zoom
    cy, cx = -(-(ny + 2 * reach) * params.zoom // check), -(-(nx + 2 * reach) * params.zoom // check)
    cells = np.where(rng.uniform(size=(cy, cx)) < 0.5, -1.0, 1.0).astype(np.float32)
    img = np.kron(cells, np.ones((check, check), dtype=np.float32))
    if params.zoom > 1:
        img = ndimage.uniform_filter(img, size=params.zoom, mode="reflect")
    return img, ((img.shape[0] - 1) / 2, (img.shape[1] - 1) / 2)


class NaturalScenes(ChunkedStimulus):
    """Natural images, a new random crop every second, jittered by fixational eye movements; seeded.

    ``flicker`` adds full-field white noise (a luminance offset per frame) on top of the images: the
    "white noise added" of a training movie whose images alone hold no brief full-field pulses.
    """

    name = "natural-scenes"

    @stimulus_parameters
    class Parameters:
        duration: float = param(5.0, "movie length after time 0", units="s", gt=0)
        image_s: float = param(1.0, "time each image is shown", units="s", gt=0)
        jitter_um: float | list[float] = param(
            5.0, "std of the image's random-walk step per frame, along y and along x", units="um", min=0,
            sweepable=True,
        )  # fmt: skip
        drift_um_s: float = param(
            0.0, "largest speed of an image's constant drift (random direction, speed uniform from 0)",
            units="um/s", min=0, max=1e5,
        )  # fmt: skip
        zoom: int = param(4, "image pixels per grid pixel (box-filtered)", min=1)
        contrast: float = param(1.0, "scale applied to the z-scored images", min=0, max=10)
        flicker: float = param(
            0.0, "std of a full-field luminance offset drawn anew every frame (white-noise flicker added to the "
            "images, in the units of the z-scored images; 0: none)", min=0, max=10,
        )  # fmt: skip
        image_contrast_min: float = param(
            1.0, "each image's contrast is drawn uniformly from [image_contrast_min, 1] (times contrast); "
            "1: every image at full contrast", min=0, max=1,
        )  # fmt: skip
        flicker_scale: str = param(
            "fixed", "fixed: every image's flicker has std flicker; image: each image's flicker is scaled by that "
            "image's contrast draw (image_contrast_min), so a low-contrast image comes with weak flicker: a stretch "
            "near the blank screen the probe stimuli start from", choices=("fixed", "image"),
        )  # fmt: skip
        blank_p: float = param(
            0.0, "probability that an image's slot shows the flicker-free grey screen instead (mean 0, the screen "
            "every probe starts from), so the next image appears abruptly from grey as in flashed-image "
            "experiments; 0: no blanks", min=0, max=1,
        )  # fmt: skip
        checker_p: float = param(
            0.0, "probability that an image's slot shows a random binary checkerboard (+-1, checks of checker_px "
            "grid pixels) instead, moved like an image: pixel-scale edges, which the box-filtered photographs "
            "hardly hold; 0: none", min=0, max=1,
        )  # fmt: skip
        checker_px: int = param(1, "check size of the checker_p slots", units="px", min=1)
        images: str = param("all", "which library images to draw from", choices=("all", *IMAGES))

        if TYPE_CHECKING:  # appended by @stimulus_parameters (declaring it here would reorder the fields)
            size_px: int | None

        def __post_init__(self) -> None:
            shape = known_shape(self)
            if shape is None:
                return
            n = max(shape)
            names = list(IMAGES) if self.images == "all" else [self.images]
            side = min(min(image_shape(name)) for name in names)
            if n * self.zoom > side:
                raise ParameterError(
                    "zoom",
                    f"got {self.zoom}: a {shape[0]}x{shape[1]} px grid would need {n * self.zoom} image px, "
                    f"more than the smallest image side ({side} px); allowed range [1, {side // n}]",
                )

    def span(self, params: Any) -> tuple[int, int]:
        dt = params.frame_period_s
        return n_frames(params.pre_s, dt), n_frames(params.duration, dt)

    def image_plan(self, params: Any, seed: int, k: int) -> tuple[str, tuple[float, float], np.ndarray]:
        """Image ``k``'s name, crop centre (image px) and jitter path ((frames per image, 2) um)."""
        names = list(IMAGES) if params.images == "all" else [params.images]
        rng = chunk_rng(seed, _STREAM, k)
        name = names[int(rng.integers(len(names)))]
        h, w = image_shape(name)
        ny, nx = grid_shape(params)
        half_y, half_x = ny * params.zoom / 2, nx * params.zoom / 2
        centre = (
            float(rng.uniform(half_y - 0.5, h - 0.5 - half_y)),
            float(rng.uniform(half_x - 0.5, w - 0.5 - half_x)),
        )
        n_img = n_frames(params.image_s, params.frame_period_s)
        steps = rng.standard_normal((n_img - 1, 2)) * params.jitter_um
        path = np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
        if params.drift_um_s > 0:
            angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0, params.drift_um_s)
            velocity = speed * np.array([np.sin(angle), np.cos(angle)])  # um/s along (y, x)
            path += np.arange(n_img)[:, None] * params.frame_period_s * velocity
        return name, centre, path

    def chunk(self, params: Any, seed: int, start: int, stop: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre, _ = self.span(params)
        n_img = n_frames(params.image_s, dt)
        frames = np.arange(start, stop)
        k_of = frames // n_img
        movie = np.empty((len(frames), *grid_shape(params)), dtype=np.float32)
        jitter = np.empty((len(frames), 2))
        ks = np.unique(k_of)
        names, centres, blanks, checkers = [], [], [], []
        for k in ks:  # one pass per image (a few per second of movie), vectorised inside
            name, centre, path = self.image_plan(params, seed, int(k))
            sel = k_of == k
            local = frames[sel] - k * n_img
            checker = params.checker_p > 0 and chunk_rng(seed, _CHECKER_STREAM, int(k)).uniform() < params.checker_p
            if checker:
                # the slot's own stream draws the pattern after the choice, so any chunking gives the same
                rng = chunk_rng(seed, _CHECKER_STREAM, int(k))
                rng.uniform()
                image, centre = checkerboard_image(rng, params, path)
                name = "checkerboard"
                movie[sel] = sample_image(image, centre, path[local], params)
            else:
                movie[sel] = sample_image(smoothed(name, params.zoom), centre, path[local], params)
            checkers.append(bool(checker))
            scale = 1.0
            if params.image_contrast_min < 1:
                # images towards grey (the z-scored images' mean 0) show a model the regime between
                # scenes and a blank screen, where the probe stimuli start; own stream, chunk-invariant
                rng = chunk_rng(seed, _CONTRAST_STREAM, int(k))
                scale = float(rng.uniform(params.image_contrast_min, 1.0))
                movie[sel] *= np.float32(scale)
            if params.flicker > 0:
                # drawn per image from its own stream, so any chunking of the movie gives the same frames
                std = params.flicker * (scale if params.flicker_scale == "image" else 1.0)
                offsets = chunk_rng(seed, _FLICKER_STREAM, int(k)).standard_normal(n_img) * std
                movie[sel] += offsets[local, None, None].astype(np.float32)
            blank = params.blank_p > 0 and chunk_rng(seed, _BLANK_STREAM, int(k)).uniform() < params.blank_p
            if blank:
                # a whole slot of exact grey: a model's window then holds the state every probe starts
                # from, which scenes with flicker never show (own stream, chunk-invariant)
                movie[sel] = 0.0
            blanks.append(bool(blank))
            jitter[sel] = path[local]
            names.append(name)
            centres.append(centre)
        movie *= np.float32(params.contrast)
        crop = np.asarray(centres)
        return assemble(
            params,
            movie,
            n_pre,
            first_frame=start,
            events={
                "jitter_y": event(jitter[:, 0], "um", "image displacement on the retina, y", dims=("time",)),
                "jitter_x": event(jitter[:, 1], "um", "image displacement on the retina, x", dims=("time",)),
                "image_index": (("time",), k_of.astype(np.int32), {"long_name": "image shown (index on dim image)"}),
                "image_onset": event(ks * n_img * dt, "s", "image onset", dims=("image",)),
                "image_name": (
                    ("image",),
                    np.asarray(names, dtype=str),
                    {"long_name": "library image (or checkerboard: checker_p)"},
                ),
                "image_blank": (
                    ("image",),
                    np.asarray(blanks, dtype=np.int8),
                    {"long_name": "1: the slot shows the grey screen instead of the image (blank_p)"},
                ),
                "image_checker": (
                    ("image",),
                    np.asarray(checkers, dtype=np.int8),
                    {"long_name": "1: the slot shows a random checkerboard instead of the image (checker_p)"},
                ),
                "crop_row": event(crop[:, 0], "px", "image row at the grid centre (no jitter)", dims=("image",)),
                "crop_col": event(crop[:, 1], "px", "image column at the grid centre (no jitter)", dims=("image",)),
            },
            coords={"image": ("image", ks.astype(np.int32), {"long_name": "image index"})},
            description=(
                f"natural images ({params.images}), a new crop every {params.image_s:g} s, jittered by a "
                f"random walk of {params.jitter_um:g} um per frame"
                + (
                    f", each at a contrast drawn from [{params.image_contrast_min:g}, 1]"
                    if params.image_contrast_min < 1
                    else ""
                )
                + (f", each slot blank (grey) with probability {params.blank_p:g}" if params.blank_p > 0 else "")
                + (
                    f", each slot a random {params.checker_px} px checkerboard with probability {params.checker_p:g}"
                    if params.checker_p > 0
                    else ""
                )
                + (
                    f", plus full-field white-noise flicker of std {params.flicker:g}"
                    + (" times the image's contrast" if params.flicker_scale == "image" else "")
                    if params.flicker > 0
                    else ""
                )
            ),
            reference="McIntosh et al. 2016 (NIPS); Maheswaranathan et al. 2023, Neuron 111:2742",
            image_sources="china, flower: scikit-learn sample images; grace_hopper: matplotlib sample data",
            zoom=int(params.zoom),
        )
