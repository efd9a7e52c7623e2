"""Entry point of the built-in stimuli (registered in pyproject.toml, as a third party would).

Classes are imported inside the hook so that plugin discovery stays cheap.
"""

from __future__ import annotations

from mechlens import hookimpl


@hookimpl
def mechlens_stimuli() -> list[type]:
    from mechlens_stimuli.bars import FlashedBar, MotionReversal, MovingBar
    from mechlens_stimuli.fullfield import Flash, OmittedStimulus, PairedFlash
    from mechlens_stimuli.gratings import ObjectMotion, ReversingGrating
    from mechlens_stimuli.mei import MostExcitingInput
    from mechlens_stimuli.movie import Movie
    from mechlens_stimuli.natural import NaturalScenes
    from mechlens_stimuli.noise import ContrastSteps, WhiteNoise

    return [
        WhiteNoise,
        NaturalScenes,
        Flash,
        OmittedStimulus,
        PairedFlash,
        MovingBar,
        FlashedBar,
        MotionReversal,
        ContrastSteps,
        ReversingGrating,
        ObjectMotion,
        Movie,
        MostExcitingInput,
    ]
