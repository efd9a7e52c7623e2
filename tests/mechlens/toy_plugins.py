"""Source of toy third-party plugin modules written by tests into fake distributions."""

GOOD = '''
from dataclasses import dataclass
import numpy as np
import xarray as xr
from mechlens import hookimpl
from mechlens.interfaces import Stimulus
from mechlens.parameters import param
from mechlens.schema import grid_coords, time_coord


class Grey(Stimulus):
    """A grey screen (a third party's stimulus)."""

    name = "toy-grey"

    @dataclass(frozen=True)
    class Parameters:
        frames: int = param(10, "frames", min=1)

    def render(self, params, seed):
        coords = {"time": time_coord(params.frames, 0.01)}
        coords.update(grid_coords(4, 4, 55.0))
        movie = xr.DataArray(np.zeros((params.frames, 4, 4), np.float32), dims=("time", "y", "x"), coords=coords)
        return xr.Dataset({"stimulus": movie}, attrs={"frame_period_s": 0.01, "pre_s": 0.0})


@hookimpl
def mechlens_stimuli():
    return [Grey]
'''

BROKEN = """
import this_module_does_not_exist  # noqa: F401
"""

RAISING_HOOK = """
from mechlens import hookimpl


@hookimpl
def mechlens_stimuli():
    raise RuntimeError("boom inside the hook")
"""

CLASH = GOOD.replace("a third party's stimulus", "another grey")

MISSPELT = """
from mechlens import hookimpl


@hookimpl
def mechlens_stimulus():
    return []
"""

TOYS = """
from mechlens import hookimpl


@hookimpl
def mechlens_models():
    from mechlens.toymodels import ToyCNN
    return [ToyCNN]


@hookimpl
def mechlens_stimuli():
    from mechlens.toymodels import ToyNoise
    return [ToyNoise]
"""
