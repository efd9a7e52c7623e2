"""Progress reporting: bars on a terminal, silence in pipes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("mechlens")


def bar(iterable: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar shown only when stderr is a terminal.

    Parameters
    ----------
    iterable : iterable
        What to iterate.
    desc : str
        Label of the bar.
    total : int, optional
        Number of items when ``iterable`` has no ``len``.
    unit : str
        Unit of one item.
    """
    from tqdm.auto import tqdm

    # disable=None: tqdm turns itself off when the output is not a terminal
    yield from tqdm(iterable, desc=desc, total=total, unit=unit, disable=None, leave=False, dynamic_ncols=True)
