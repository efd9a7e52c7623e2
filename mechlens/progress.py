"""Progress reporting: bars on a terminal or in a notebook, silence in pipes; log lines kept off the bars.

Library code never prints: it logs to the ``mechlens`` logger and iterates long loops through
:func:`bar`. While a bar is shown, the console handlers of the root and ``mechlens`` loggers (the
CLI's, or a program's ``logging.basicConfig``) and Python warnings are routed through
``tqdm.write``, which clears the bar, writes the line and redraws the bar, so a log line never lands
inside a bar. :func:`reporting` shows the ``mechlens`` logger's progress lines during a long library
call (``mechlens.run``) when someone is watching and the program configured no logging of its own.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

log = logging.getLogger("mechlens")

#: the format of the lines :func:`reporting` shows (the CLI's format)
FORMAT = "mechlens: %(message)s"


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (whose stderr is no terminal but shows a bar)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an odd IPython must not break a run; no notebook then
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def interactive(stream: TextIO | None = None) -> bool:
    """Whether a person watches ``stream`` (default: stderr): a terminal, or a Jupyter notebook."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        pass
    return _in_notebook()


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr)


class BarSafeHandler(logging.Handler):
    """Stands in for a console handler while bars are shown: same level, filters and format, via ``tqdm.write``."""

    def __init__(self, inner: logging.StreamHandler[Any]) -> None:
        super().__init__(inner.level)
        self.inner = inner
        self.filters = list(inner.filters)

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.inner.format(record), file=self.inner.stream)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


@contextlib.contextmanager
def redirect_logging() -> Iterator[None]:
    """Route console log handlers (root and ``mechlens`` loggers) and warnings through ``tqdm.write``.

    Only handlers writing to stdout or stderr are swapped (a log file is left alone), and nothing is
    added where none is configured. Nested uses find the stand-ins already in place and change nothing.
    """
    swapped: list[tuple[logging.Logger, list[logging.Handler]]] = []
    for logger in (logging.getLogger(), logging.getLogger("mechlens")):
        handlers = list(logger.handlers)
        if any(_is_console(h) for h in handlers):
            swapped.append((logger, handlers))
            logger.handlers = [BarSafeHandler(h) if _is_console(h) else h for h in handlers]  # type: ignore[arg-type]
    show = warnings.showwarning

    def show_around_bars(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        from tqdm.auto import tqdm

        text = warnings.formatwarning(message, category, filename, lineno, line)
        tqdm.write(text.rstrip("\n"), file=file or sys.stderr)

    warnings.showwarning = show_around_bars
    try:
        yield
    finally:
        if warnings.showwarning is show_around_bars:
            warnings.showwarning = show
        for logger, handlers in swapped:
            logger.handlers = handlers


def bar(iterable: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar shown only when a terminal or a notebook watches stderr.

    While the bar is shown, log records and warnings are written above it (:func:`redirect_logging`).

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

    shown = interactive()
    progress = tqdm(iterable, desc=desc, total=total, unit=unit, disable=not shown, leave=False, dynamic_ncols=True)
    try:
        if not shown:
            yield from progress
            return
        with redirect_logging():
            yield from progress
    finally:
        progress.close()


@contextlib.contextmanager
def reporting(what: str) -> Iterator[None]:
    """Show the ``mechlens`` logger's progress lines (INFO) while a long library call runs.

    Only when a terminal or a notebook watches stderr and neither the ``mechlens`` logger nor the
    root logger has a handler (a program that configured logging decides itself what it sees);
    otherwise nothing changes. The lines are written with ``tqdm.write``, so they stay off the bars,
    and a last line says how long ``what`` took.

    Parameters
    ----------
    what : str
        The call, for the last line (``"mechlens.run"``).
    """
    logger = logging.getLogger("mechlens")
    if not interactive() or logger.hasHandlers():
        yield
        return
    from tqdm.auto import tqdm

    class _Write(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                tqdm.write(self.format(record), file=sys.stderr)
            except Exception:  # noqa: BLE001 - logging must never raise into the caller
                self.handleError(record)

    handler = _Write(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    t0 = time.perf_counter()
    try:
        yield
        log.info("%s finished in %.1f s", what, time.perf_counter() - t0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
