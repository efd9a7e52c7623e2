"""The retina plugin: the paper's CNN, the synthetic retina it is trained on, and the paper's analyses.

One distribution entry point (``retina``, :mod:`mechlens_retina.hooks`), four packages by the role they
fill in the pipeline (stimulus -> **model** -> attributor -> reducer -> **experiment** -> report):

=================================  ===============================================================
:mod:`mechlens_retina.models`      the ``retina-cnn`` and ``synthetic-retina`` models, checkpoints,
                                   the circuit written into a CNN (``circuit_cnn``)
:mod:`mechlens_retina.training`    recording a model's responses (``simulate``), reading recordings
                                   (``recordings``), the training loop (``fit``) and its state, and
                                   the bundled checkpoint's recipe (``bundle``)
:mod:`mechlens_retina.phenomena`   the four phenomenon measures, the probe-agreement gate and the
                                   circuit's ablation table (the ground truth)
:mod:`mechlens_retina.experiments` the six experiments ``mechlens run`` runs, mechanism recovery,
                                   and the report sections they add
=================================  ===============================================================

``commands`` (``mechlens train`` / ``mechlens simulate``), ``metrics`` (correlations shared by
training, the gate and recovery) and ``units`` stay at the top. They are subpackages of one plugin,
not plugins of their own, because they share private code (the CNN's layers, the circuit's cell
layout) that the structure rule "no plugin imports another" would otherwise force into the core.

The modules' paths before this layout (``mechlens_retina.cnn``, ``mechlens_retina.phenomena``'s
``measure_*`` siblings, ...) still import, with a DeprecationWarning (:mod:`mechlens_retina.moved`).
"""

from mechlens_retina import moved as _moved

_moved.install()
