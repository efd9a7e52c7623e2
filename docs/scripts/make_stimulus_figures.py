"""Draw the pictures of docs/stimuli.md: one PNG per stimulus in docs/img/stimuli/.

Run: ``.venv/bin/python docs/scripts/make_stimulus_figures.py [--out docs/img/stimuli]``. Every
picture is made from the stimulus's own ``generate(0)`` output (defaults, or the sweep named in the
panel title), so it shows what the code makes. Images are small (80 dpi) to keep the repository light.
``--tables`` prints the parameter tables of docs/stimuli.md instead (from the declared parameters).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from mechlens_stimuli._render import COMMON_PARAMETERS
from mechlens_stimuli.bars import FlashedBar, MotionReversal, MovingBar
from mechlens_stimuli.fullfield import Flash, OmittedStimulus, PairedFlash
from mechlens_stimuli.gratings import ObjectMotion, ReversingGrating
from mechlens_stimuli.mei import MostExcitingInput
from mechlens_stimuli.movie import Movie
from mechlens_stimuli.natural import NaturalScenes
from mechlens_stimuli.noise import ContrastSteps, WhiteNoise

from mechlens.parameters import specs

DPI = 80
GREY = {"cmap": "gray", "vmin": -2.0, "vmax": 2.0}
OUT = Path(__file__).resolve().parents[1] / "img" / "stimuli"


def _frame(ax: Axes, ds: xr.Dataset, t: float, title: str, **kw: float) -> None:
    """One frame, in um on the retina."""
    da = ds["stimulus"].sel(time=t, method="nearest")
    x, y = ds["x"].values, ds["y"].values
    half = (x[1] - x[0]) / 2
    ax.imshow(da.values, extent=(x[0] - half, x[-1] + half, y[-1] + half, y[0] - half), **{**GREY, **kw})
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _space_time(ax: Axes, ds: xr.Dataset, title: str, row: int | None = None) -> None:
    """x (horizontal, um) against time (vertical, s, downward) for one row of the grid."""
    r = ds.sizes["y"] // 2 if row is None else row
    da = ds["stimulus"].isel(y=r)
    t, x = ds["time"].values, ds["x"].values
    ax.imshow(da.values, aspect="auto", extent=(x[0], x[-1], t[-1], t[0]), interpolation="nearest", **GREY)
    ax.set_xlabel("x (um)", fontsize=8)
    ax.set_ylabel("time (s)", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)


def _trace(ax: Axes, ds: xr.Dataset, title: str, label: Callable[[object], str] | None = None) -> None:
    """The full-field value over time, one line per condition."""
    centre = {"y": ds.sizes["y"] // 2, "x": ds.sizes["x"] // 2}
    if "condition" in ds.dims:
        for i, c in enumerate(ds["condition"].values):
            v = ds["stimulus"].isel(condition=i, **centre)
            ax.step(ds["time"], v - 3.0 * i, where="post", lw=1, label=label(c) if label else str(c))
        ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_yticks([])
    else:
        ax.step(ds["time"], ds["stimulus"].isel(**centre), where="post", lw=1, color="k")
        ax.set_ylabel("contrast", fontsize=8)
    ax.axvline(0, color="0.6", lw=0.6, ls=":")
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)


def _figure(n: int, width: float = 6.4, height: float = 2.2, ratios: list[float] | None = None) -> tuple[Figure, list]:
    fig, axes = plt.subplots(1, n, figsize=(width, height), gridspec_kw={"width_ratios": ratios} if ratios else None)
    return fig, list(np.atleast_1d(axes))


def white_noise() -> Figure:
    ds = WhiteNoise(duration=1.0).generate(0)
    coarse = WhiteNoise(duration=1.0, checker_px=5, distribution="gaussian").generate(0)
    fig, ax = _figure(4, ratios=[1, 1, 1, 2])
    _frame(ax[0], ds, 0.0, "binary, 1 px, t = 0")
    _frame(ax[1], ds, 0.01, "t = 10 ms")
    _frame(ax[2], coarse, 0.0, "gaussian, 5 px")
    v = ds["stimulus"].isel(y=25, x=25)
    ax[3].step(ds["time"], v, where="post", lw=0.8, color="k")
    ax[3].set_xlim(-0.1, 0.3)
    ax[3].set_title("one pixel over time", fontsize=8)
    ax[3].set_xlabel("time (s)", fontsize=8)
    ax[3].tick_params(labelsize=7)
    return fig


def natural_scenes() -> Figure:
    ds = NaturalScenes().generate(0)
    fig, ax = _figure(4, ratios=[1, 1, 1, 1.3])
    for i, t in enumerate((0.0, 1.0, 2.0)):
        name = str(ds["image_name"].sel(image=int(ds["image_index"].sel(time=t))).values)
        _frame(ax[i], ds, t, f"t = {t:g} s ({name})", vmin=-2.5, vmax=2.5)
    sel = ds["time"] >= 0
    for k in (0, 1, 2):
        one = ds.where(sel & (ds["image_index"] == k), drop=True)
        ax[3].plot(one["jitter_x"], one["jitter_y"], lw=0.8, label=f"image {k}")
    ax[3].set_aspect("equal")
    ax[3].set_title("jitter path per image (um)", fontsize=8)
    ax[3].legend(fontsize=6, frameon=False)
    ax[3].tick_params(labelsize=7)
    return fig


def flash() -> Figure:
    fig, ax = _figure(2)
    _trace(ax[0], Flash().generate(0), "default: dark step (latency IG)")
    sweep = Flash(intensity=[-0.5, -1.0, -2.0, -3.0], duration=0.02, post_s=0.3).generate(0)
    _trace(ax[1], sweep, "intensity sweep, 20 ms flashes", lambda c: f"{c:g}")
    return fig


def osr() -> Figure:
    ds = OmittedStimulus(period=[0.06, 0.1, 0.15], n_flashes=5).generate(0)
    fig, ax = _figure(1, width=6.4, height=2.4)
    _trace(ax[0], ds, "5 flashes of -2, 20 ms, then one omitted (x); period sweep", lambda c: f"{c:g} s")
    for i, t in enumerate(ds["omitted_time"].values):
        ax[0].plot(t, -3.0 * i - 1.0, "x", color=f"C{i}")
    return fig


def paired_flash() -> Figure:
    ds = PairedFlash(interval=[0.02, 0.05, 0.1]).generate(0)
    fig, ax = _figure(1, width=6.4, height=2.2)
    _trace(ax[0], ds, "two 10 ms flashes of -2; gap sweep", lambda c: f"gap {c:g} s")
    ax[0].set_xlim(-0.1, 0.4)
    return fig


def moving_bar() -> Figure:
    ds = MovingBar().generate(0)
    fast = MovingBar(speed=2200.0, direction="left").generate(0)
    fig, ax = _figure(3, ratios=[1, 1.4, 1.4])
    _frame(ax[0], ds, 3.75, "t = 3.75 s")
    _space_time(ax[1], ds, "440 um/s rightward (space-time)")
    ax[1].plot(ds["bar_center"], ds["time"], "r", lw=0.6, ls="--")
    ax[1].set_xlim(ds["x"].values[0], ds["x"].values[-1])
    _space_time(ax[2], fast, "2200 um/s leftward")
    return fig


def flashed_bar() -> Figure:
    ds = FlashedBar().generate(0)
    fig, ax = _figure(2, ratios=[1, 1.6])
    _frame(ax[0], ds.isel(condition=15), 0.0, f"x = {float(ds['condition'][15]):g} um, t = 0")
    prof = ds["stimulus"].sel(time=0.0).isel(y=25)
    x = ds["x"].values
    pos = ds["condition"].values
    ax[1].imshow(prof.values, aspect="auto", extent=(x[0], x[-1], pos[-1], pos[0]), **GREY)
    ax[1].set_xlabel("x (um)", fontsize=8)
    ax[1].set_ylabel("bar position (um)", fontsize=8)
    ax[1].set_title("one condition per position (frame at onset)", fontsize=8)
    ax[1].tick_params(labelsize=7)
    return fig


def motion_reversal() -> Figure:
    ds = MotionReversal(reversal_um=[-220.0, 220.0]).generate(0)
    fig, ax = _figure(2)
    for i in range(2):
        one = ds.isel(condition=i)
        _space_time(ax[i], one, f"reversal at {float(one['condition']):g} um")
        ax[i].axhline(float(one["reversal_time"]), color="r", lw=0.6, ls="--")
    return fig


def contrast_steps() -> Figure:
    ds = ContrastSteps(cycles=2).generate(0)
    fig, ax = _figure(1, width=6.4, height=2.2)
    _trace(ax[0], ds, "full-field noise, contrast 0.223 <-> 1.561 (envelope in red)")
    ax[0].plot(ds["time"], ds["contrast"], "r", lw=0.8)
    ax[0].plot(ds["time"], -ds["contrast"], "r", lw=0.8)
    for t in ds["step_time"].values:
        ax[0].axvline(t, color="r", lw=0.6, ls=":")
    return fig


def reversing_grating() -> Figure:
    ds = ReversingGrating().generate(0)
    fig, ax = _figure(3, ratios=[1, 1, 1.6])
    _frame(ax[0], ds, 0.2, "t = 0.2 s")
    _frame(ax[1], ds, 0.7, "t = 0.7 s (reversed)")
    _space_time(ax[2], ds, "space-time: reversal every 0.5 s")
    return fig


def object_motion() -> Figure:
    ds = ObjectMotion(mode=["differential", "global"]).generate(0)
    diff = ds.isel(condition=0)
    fig, axes = plt.subplots(2, 2, figsize=(6.4, 4.4))
    ax = axes.ravel()
    _frame(ax[0], diff, 0.7, "differential, t = 0.7 s: the background has moved")
    _space_time(ax[1], diff, "differential: row through the object")
    _space_time(ax[2], diff, "differential: row through the background", row=2)
    _space_time(ax[3], ds.isel(condition=1), "global: row through the object")
    for a in ax[1:]:
        a.set_ylim(2.2, 0.0)
    return fig


def movie() -> Figure:
    """A lab's movie: here natural-scene frames saved as .npy, played on a 20x20 px grid from 0.5 s."""
    import tempfile

    frames = NaturalScenes(duration=2.0, size_px=20).generate(0)["stimulus"].values
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "lab_movie.npy", frames * 40 + 128)  # raw intensities, z-scored by the stimulus
        ds = Movie(path=str(Path(tmp) / "lab_movie.npy"), start_s=0.5, duration=1.0).generate(0)
    fig, ax = _figure(3, ratios=[1, 1, 1.6])
    _frame(ax[0], ds, -0.3, "t = -0.3 s (the file's own history)", vmin=-2.5, vmax=2.5)
    _frame(ax[1], ds, 0.5, "t = 0.5 s", vmin=-2.5, vmax=2.5)
    ax[2].plot(ds["time"], ds["file_frame"], color="k", lw=1)
    ax[2].set_xlabel("time (s)", fontsize=8)
    ax[2].set_title("file_frame: the file's frame shown", fontsize=8)
    ax[2].tick_params(labelsize=7)
    return fig


def mei() -> Figure:
    """The MEI of a cell of the toy CNN: its window, frame by frame, then the response it drives."""
    from mechlens.toymodels import ToyCNN

    model = ToyCNN(size=16, history=8)
    stim = MostExcitingInput(cell="gc00", post_s=0.1)
    stim.model = model
    ds = stim.generate(0)
    fig, ax = _figure(5, ratios=[1, 1, 1, 1, 1.8])
    lim = float(np.abs(ds["stimulus"].values).max())
    for i, k in enumerate((0, 3, 7)):
        t = round(k * model.frame_period_s, 9)
        _frame(ax[i], ds, t, f"MEI frame {k}", vmin=-lim, vmax=lim)
    _frame(ax[3], ds, -0.02, "grey, t < 0", vmin=-lim, vmax=lim)
    resp = model.predict(ds)["response"].sel(cell="gc00")
    ax[4].plot(resp["time"], resp, color="k", lw=1)
    ax[4].axvline(float(ds["mei_response_time"]), color="r", lw=0.6, ls="--")
    ax[4].set_xlabel("time (s)", fontsize=8)
    ax[4].set_title("gc00 (Hz); red: mei_response_time", fontsize=8)
    ax[4].tick_params(labelsize=7)
    return fig


FIGURES: dict[str, Callable[[], Figure]] = {
    "white-noise": white_noise,
    "natural-scenes": natural_scenes,
    "flash": flash,
    "osr": osr,
    "paired-flash": paired_flash,
    "moving-bar": moving_bar,
    "flashed-bar": flashed_bar,
    "motion-reversal": motion_reversal,
    "contrast-steps": contrast_steps,
    "reversing-grating": reversing_grating,
    "object-motion": object_motion,
    "movie": movie,
    "mei": mei,
}


def parameter_table(cls: type, common: bool = False) -> str:
    """The markdown table (name, default, units, meaning) of a stimulus's own (or the common) parameters."""
    lines = ["| parameter | default | units | meaning |", "| --- | --- | --- | --- |"]
    for spec in specs(cls.Parameters):
        if (spec.name in COMMON_PARAMETERS) != common:
            continue
        default = spec.default
        if isinstance(default, list):
            default = f"{len(default)} values, {default[0]:g} .. {default[-1]:g}"
        extra = []
        if spec.range_text():
            extra.append(f"allowed {spec.range_text()}")
        if spec.sweepable:
            extra.append("sweepable")
        meaning = spec.doc + (f" ({'; '.join(extra)})" if extra else "")
        lines.append(f"| `{spec.name}` | {default} | {spec.units or ''} | {meaning} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default docs/img/stimuli)")
    parser.add_argument("--tables", action="store_true", help="print the parameter tables and exit")
    parser.add_argument("--only", nargs="*", default=[], help="draw only these stimuli (default: all)")
    args = parser.parse_args()
    if args.tables:
        from mechlens_stimuli.hooks import mechlens_stimuli

        classes = mechlens_stimuli()
        print("common\n" + parameter_table(classes[0], common=True) + "\n")
        for cls in classes:
            print(f"{cls.name}\n{parameter_table(cls)}\n")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in FIGURES.items():
        if args.only and name not in args.only:
            continue
        fig = make()
        fig.tight_layout()
        path = args.out / f"{name}.png"
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        print(f"{path}  {path.stat().st_size / 1000:.0f} kB")


if __name__ == "__main__":
    main()
