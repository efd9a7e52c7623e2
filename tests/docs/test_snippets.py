"""Every code block of README.md and docs/*.md that a user would paste is run, or checked, here.

Sybil (https://sybil.readthedocs.io) reads the blocks: it is maintained, parses Markdown itself,
takes directives from HTML comments (invisible in the rendered page and on the docs site), keeps
one namespace per page so that a page's blocks run in order as a reader pastes them, and lets a
project add parsers of its own (here: console sessions and TOML). Every fenced block with a
language is one test, named ``FILE:LINE``:

- ``python``: executed, in a fresh folder per page (the current directory while its blocks run).
  ``<!-- invisible-code-block: python ... -->`` holds set-up that a page does not show (imports of
  an excerpt, a small recording to open).
- ``console`` / ``bash``: each ``$ COMMAND`` runs; ``mechlens ...`` in this process (fast), and the
  lines after it are output that must appear, in order (``...`` at the end of a line: a prefix;
  ``> FILE`` writes its stdout to FILE). A command whose expected output says ``error:`` must fail.
- ``toml``: parsed.

Two directives say that a block is not run, and why:

- ``<!-- check-only: next "why" -->`` (slow: training, every experiment, an hour of data, a GPU):
  the commands are checked instead of run. ``mechlens run ...`` is resolved with ``--dry-run``
  (plugins, parameters, outputs are all checked), any other ``mechlens`` command is parsed by the
  CLI's own parser, ``make TARGET`` must be a Makefile target, ``python -m MODULE`` importable and
  ``python FILE`` / ``bash FILE`` an existing file. A Python block is compiled (an indented excerpt
  of a method, dedented first).
- ``<!-- skip: next "why" -->`` (Sybil's own): not run at all (it needs what no test has).

Blocks without a language (diagrams, file layouts, a synopsis) are text, not code.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any
from unittest import SkipTest

import pytest
from sybil import Document, Example, Region, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import ClearNamespaceParser, CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

from mechlens import registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHECK_ONLY = "_check_only"  # namespace key: the reason the next block is checked, not run


# -- check-only directive ---------------------------------------------------------------------------
class CheckOnlyParser:
    """``<!-- check-only: next "why" -->``: the next block is checked, not run."""

    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="check-only")

    def __call__(self, document: Document) -> Any:
        for lexed in self.lexer(document):
            action, _, reason = lexed.lexemes["arguments"].partition(" ")
            if action != "next" or not reason.strip():
                raise ValueError(f'{document.path}: write <!-- check-only: next "why" -->, not {action!r}')
            yield Region(lexed.start, lexed.end, reason.strip().strip('"'), self.evaluate)

    @staticmethod
    def evaluate(example: Example) -> None:
        example.namespace[CHECK_ONLY] = example.parsed


def _check_only(example: Example) -> str | None:
    return example.namespace.pop(CHECK_ONLY, None)


# -- python and toml --------------------------------------------------------------------------------
_python = PythonEvaluator()


def evaluate_python(example: Example) -> None:
    if _check_only(example) is not None:
        compile(textwrap.dedent(example.parsed), f"{example.path}:{example.line}", "exec")  # an excerpt may be indented
        return
    _python(example)


def evaluate_toml(example: Example) -> None:
    _check_only(example)
    tomllib.loads(example.parsed)


# -- console ----------------------------------------------------------------------------------------
def commands(text: str) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` of a console block: ``$ `` lines, ``\\`` continues one."""
    found: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            cmd = line[2:]
            while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd.rstrip()[:-1] + " " + lines[i].strip()
            found.append((cmd, []))
        elif found:
            found[-1][1].append(line)
        elif line.strip():
            raise AssertionError(f"console text before the first '$ ' command: {line!r}")
        i += 1
    if not found:
        raise AssertionError("a console block without a '$ ' command")
    return found


def _argv(cmd: str) -> tuple[list[str], str | None]:
    """The command's words, without ``VAR=value`` before it, and the file its stdout goes to (``> FILE``)."""
    argv = shlex.split(cmd, comments=True)
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
        argv.pop(0)
    if ">" in argv:
        at = argv.index(">")
        return argv[:at], argv[at + 1]
    return argv, None


def _mechlens(args: list[str], stdout_to: str | None = None) -> tuple[int, str]:
    """Run ``mechlens ARGS`` in this process: (exit status, what it printed); ``stdout_to``: ``> FILE``."""
    from mechlens.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exit_:  # --help
            code = int(exit_.code or 0)
    if stdout_to is not None:
        Path(stdout_to).write_text(out.getvalue())
        return code, err.getvalue()
    return code, out.getvalue() + err.getvalue()


def _squash(line: str) -> str:
    return " ".join(line.split())


def _expect(output: str, expected: list[str], cmd: str) -> None:
    got = [_squash(line) for line in output.splitlines()]
    at = 0
    for want in filter(None, (_squash(w) for w in expected)):
        prefix = want.endswith("...")
        want = want.removesuffix("...").rstrip()
        while at < len(got) and not (got[at].startswith(want) if prefix else got[at] == want):
            at += 1
        assert at < len(got), f"$ {cmd}\nexpected the line\n  {want}\nin the output\n{output}"
        at += 1


def check_command(argv: list[str]) -> None:
    """Check, without running it, a command of a block that is not run."""
    prog, args = Path(argv[0]).name, argv[1:]
    if prog == "mechlens":
        if args[:1] == ["run"]:
            code, out = _mechlens([*args, "--dry-run"])
            assert code == 0, f"mechlens {shlex.join(args)} --dry-run: exit {code}\n{out}"
        else:
            from mechlens.cli import build_parser

            build_parser().parse_args(args)  # a usage error raises
    elif prog == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert all(a in targets or "=" in a for a in args), f"make {args}: targets are {targets}"
    elif prog in ("python", "python3", "bash"):
        if args[:1] == ["-m"]:
            assert importlib.util.find_spec(args[1]) is not None, f"no module {args[1]}"
        else:
            assert (ROOT / args[0]).is_file(), f"no file {args[0]}"
    elif prog != "open":  # `open FILE`: the desktop's viewer
        raise AssertionError(f"cannot check {shlex.join(argv)}; run it, or skip the block")


def evaluate_console(example: Example) -> None:
    reason = _check_only(example)
    for cmd, expected in commands(example.parsed):
        argv, stdout_to = _argv(cmd)
        if reason is not None:
            check_command(argv)
            continue
        assert argv[0] == "mechlens", f"$ {cmd}: only mechlens commands run here; check-only or skip it"
        code, out = _mechlens(argv[1:], stdout_to)
        if any("error:" in line for line in expected):
            assert code != 0, f"$ {cmd}\nexpected to fail, but it succeeded:\n{out}"
        else:
            assert code == 0, f"$ {cmd}\nexit status {code}:\n{out}"
        _expect(out, expected, cmd)


SYBIL = Sybil(
    parsers=[
        CodeBlockParser("python", evaluate_python),
        CodeBlockParser("console", evaluate_console),
        CodeBlockParser("bash", evaluate_console),
        CodeBlockParser("toml", evaluate_toml),
        CheckOnlyParser(),
        SkipParser(),
        ClearNamespaceParser(),
    ],
)
DOCUMENTS = {page: SYBIL.parse(page) for page in PAGES}
BLOCKS = [
    pytest.param(page, n, id=f"{page.relative_to(ROOT)}:{ex.line}")
    for page, doc in DOCUMENTS.items()
    for n, ex in enumerate(doc.examples())
    if ex.region.evaluator in (evaluate_python, evaluate_console, evaluate_toml)
    and not doc.text[ex.region.start :].startswith("<!--")
]
_done: dict[Path, int] = {}  # per page: how many of its examples have been evaluated
_failed: dict[Path, str] = {}  # per page: the block that failed (the later ones are skipped)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    return {page: tmp_path_factory.mktemp(page.stem) for page in PAGES}


@pytest.mark.parametrize(("page", "index"), BLOCKS)
def test_block(page: Path, index: int, workdirs: dict[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """One block of a page, after the page's earlier blocks (a page is read, and pasted, in order)."""
    monkeypatch.chdir(workdirs[page])
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "example-plugin"))  # the example package's modules
    examples = list(DOCUMENTS[page].examples())
    while _done.get(page, 0) <= index:
        n = _done[page] = _done.get(page, 0)
        _done[page] += 1
        if page in _failed:
            pytest.skip(f"an earlier block of the page failed ({_failed[page]})")
        try:
            examples[n].evaluate()
        except SkipTest as skip:
            if n == index:
                pytest.skip(f"not run: {skip}")
        except BaseException as err:
            _failed[page] = f"{page.name}:{examples[n].line}"
            raise AssertionError(f"{_failed[page]}: {type(err).__name__}: {err}") from err
    registry.reset()  # a block may have registered plugins; the next page starts from the installed ones
