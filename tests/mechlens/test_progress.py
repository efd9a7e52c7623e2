"""Progress and log output (issue 20): log lines stay off the bars, bars only where someone watches, no print."""

from __future__ import annotations

import ast
import contextlib
import io as _io
import logging
import sys
from pathlib import Path

from mechlens import progress

ROOT = Path(__file__).resolve().parents[2]

#: where ``print`` is the program's output, not library chatter: (file, enclosing function or "*")
PRINT_ALLOWED = {
    ("mechlens/cli.py", "*"),  # the command line's own output
    ("plugins/mechlens_retina/commands.py", "TrainCommand.run"),  # the `mechlens train` command
    ("plugins/mechlens_retina/training/bundle.py", "main"),  # python -m mechlens_retina.training.bundle
    ("plugins/mechlens_retina/training/bundle.py", "_stage"),  # the same command, one stage of a recipe
    ("plugins/mechlens_retina/models/checkpoint.py", "main"),  # python -m mechlens_retina.models.checkpoint
}


class FakeTerminal(_io.StringIO):
    """stderr as a terminal would be, recorded."""

    def isatty(self) -> bool:
        return True


def _prints(path: Path) -> list[tuple[str, int]]:
    """``(enclosing function, line)`` of every ``print(...)`` call in a module."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, where: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = [*where, child.name]
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print":
                found.append((".".join(where), child.lineno))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), [])
    return found


def test_library_code_does_not_print():
    files = sorted([*(ROOT / "mechlens").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])
    assert len(files) > 20
    bad = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for where, line in _prints(path):
            if (rel, "*") not in PRINT_ALLOWED and (rel, where) not in PRINT_ALLOWED:
                bad.append(f"{rel}:{line} ({where or 'module level'})")
    assert not bad, "library code logs (logging.getLogger('mechlens')) instead of printing: " + ", ".join(bad)


def test_the_print_scan_sees_a_print(tmp_path):
    # the scan itself: a print inside a method is found and placed
    module = tmp_path / "m.py"
    module.write_text("class C:\n    def run(self):\n        print('x')\n\nprint('y')\n", encoding="utf-8")
    assert _prints(module) == [("C.run", 3), ("", 5)]


@contextlib.contextmanager
def terminal():
    """stderr a fake terminal with the CLI's logging set-up on the root logger.

    Entered inside the test body: pytest puts its own capture on sys.stderr between set-up and call.
    """
    fake, saved = FakeTerminal(), sys.stderr
    root = logging.getLogger()
    handler = logging.StreamHandler(fake)
    handler.setFormatter(logging.Formatter("mechlens: %(message)s"))
    handlers, level = root.handlers[:], root.level
    sys.stderr, root.handlers = fake, [handler]
    root.setLevel(logging.INFO)
    try:
        yield fake, handler
    finally:
        sys.stderr, root.handlers = saved, handlers
        root.setLevel(level)


def test_a_log_line_during_a_bar_gets_a_line_of_its_own():
    log = logging.getLogger("mechlens.test")
    redirected = []
    with terminal() as (fake, handler):
        for i in progress.bar(range(3), desc="work"):
            redirected.append(handler not in logging.getLogger().handlers)  # while the bar is shown
            log.info("step %d done", i)
        assert handler in logging.getLogger().handlers  # and given back after
    assert redirected == [True, True, True]
    text = fake.getvalue()
    assert "work" in text  # the bar was drawn
    lines = text.split("\n")
    for i in range(3):
        (line,) = [ln for ln in lines if f"step {i} done" in ln]
        # on a terminal "\r" returns to the line's start: what is left visible is the log line alone
        assert line.split("\r")[-1] == f"mechlens: step {i} done"


def test_without_redirection_the_line_would_land_in_the_bar(monkeypatch):
    # the failure the redirection prevents (issue 20: "log lines written through the progress bars")
    monkeypatch.setattr(progress, "redirect_logging", lambda: _nothing())
    with terminal() as (fake, _):
        for _ in progress.bar(range(2), desc="work"):
            logging.getLogger("mechlens.test").info("hello")
    line = next(ln for ln in fake.getvalue().split("\n") if "hello" in ln)
    assert line.split("\r")[-1] != "mechlens: hello"


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_no_bar_and_no_change_when_nobody_watches(monkeypatch):
    pipe = _io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", pipe)
    handlers = logging.getLogger().handlers[:]
    assert list(progress.bar(range(3), desc="work")) == [0, 1, 2]
    assert pipe.getvalue() == "" and logging.getLogger().handlers == handlers
    with progress.reporting("job"):
        logging.getLogger("mechlens").info("stage one")
    assert pipe.getvalue() == ""


def test_reporting_shows_progress_lines_on_a_terminal_when_logging_is_not_configured(monkeypatch):
    fake = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", fake)
    root, logger = logging.getLogger(), logging.getLogger("mechlens")
    monkeypatch.setattr(root, "handlers", [])  # a plain script: nobody configured logging
    level = logger.level
    with progress.reporting("mechlens.run"):
        logger.info("stage one")
    assert logger.handlers == [] and logger.level == level
    lines = fake.getvalue().splitlines()
    assert lines[0] == "mechlens: stage one"
    assert lines[1].startswith("mechlens: mechlens.run finished in ")


def test_reporting_leaves_a_configured_program_alone():
    with terminal() as (fake, _):
        logging.getLogger().setLevel(logging.WARNING)  # the program chose to see warnings only
        with progress.reporting("mechlens.run"):
            logging.getLogger("mechlens").info("stage one")
    assert "stage one" not in fake.getvalue()
