"""The mechanism sentence of a reduction: the core's builder (:mod:`mechlens.mechanism`), re-exported.

There is one sentence builder, in the core, so that an experiment result and a bare reduction read
the same; it needs only the reduction's ``weights`` and ``components`` (every reducer of this plugin
also writes the ``explained_fraction``, ``all_kept`` and ``n_types`` it quotes).
"""

from __future__ import annotations

from mechlens.mechanism import TEMPLATE, mechanism_details, mechanism_sentence

__all__ = ["TEMPLATE", "mechanism_details", "mechanism_sentence"]
