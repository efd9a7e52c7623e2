"""The import structure of the core and the built-in plugins (issue 19).

The import graph is built from the source with :mod:`ast`, counting every import statement wherever it
stands (module level, inside functions, under ``TYPE_CHECKING``): an import deferred into a function
is still a dependency, and deferring it only hides a circle until run time. The layering it guards:
``mechlens.interfaces`` (pure ABCs) <- ``mechlens.registry`` <- ``mechlens.pipeline`` <- ``mechlens.cli``;
the core imports no plugin package, and a plugin package imports no other plugin package (plugins talk
to each other through the registry).
"""

from __future__ import annotations

import ast
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "mechlens"


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: ``source`` imports ``target`` at ``where`` (file:line)."""

    source: str
    target: str  # a module of the graph, or the raw dotted name when it is not one
    where: str


def _packages() -> dict[str, Path]:
    """Top-level package name -> directory: the core and every plugin package under plugins/."""
    found = {CORE: ROOT / CORE}
    for init in sorted((ROOT / "plugins").glob("*/__init__.py")):
        found[init.parent.name] = init.parent
    return found


def _module_name(package: str, directory: Path, path: Path) -> str:
    parts = [package, *path.relative_to(directory).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> tuple[set[str], list[Import]]:
    """Every module of the graph, and every import of every module (with its file and line)."""
    files: dict[str, Path] = {}
    for package, directory in _packages().items():
        for path in sorted(directory.rglob("*.py")):
            files[_module_name(package, directory, path)] = path
    modules = set(files)

    def resolve(dotted: str) -> str:
        # the longest prefix that is a module of the graph ("mechlens.x.y" -> "mechlens.x"), else as written
        name = dotted
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or dotted

    found: list[Import] = []
    for module, path in files.items():
        package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [Import(module, resolve(alias.name), where) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package_parts[: len(package_parts) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                for alias in node.names:
                    # "from pkg import sub" depends on the submodule; "from pkg import name" on pkg itself
                    sub = f"{origin}.{alias.name}"
                    found.append(Import(module, sub if sub in modules else resolve(origin), where))
    return modules, [i for i in found if i.target != i.source]


MODULES, IMPORTS = _imports()


def _top(name: str) -> str:
    return name.split(".")[0]


def _is_plugin_package(name: str) -> bool:
    return _top(name) != CORE and (_top(name).startswith(f"{CORE}_") or _top(name) in _packages())


def _circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if i.target in MODULES:
            edges[i.source].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(MODULES):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _explain(component: list[str]) -> str:
    inside = set(component)
    lines = [f"  {i.source} -> {i.target} ({i.where})" for i in IMPORTS if i.source in inside and i.target in inside]
    return "circle among " + ", ".join(component) + ":\n" + "\n".join(sorted(set(lines)))


def test_the_graph_sees_function_level_imports():
    # a guard on the test itself: mechlens/__init__.py imports the pipeline inside mechlens.run()
    assert any(i.source == "mechlens" and i.target == "mechlens.pipeline" for i in IMPORTS)
    assert {"mechlens.interfaces", "mechlens.registry", "mechlens.pipeline"} <= MODULES
    assert any(_is_plugin_package(m) for m in MODULES), "no plugin package found under plugins/"


@pytest.mark.parametrize("package", sorted(_packages()))
def test_no_import_circles(package):
    # one test per top-level package, so a circle inside one plugin does not hide the state of the core
    circles = [c for c in _circles() if any(_top(m) == package for m in c)]
    assert not circles, (
        "import circles (function-level imports included); make the lower module stop importing the higher "
        "one (move the code that needs both up a layer):\n" + "\n".join(_explain(c) for c in circles)
    )


def test_layering_of_the_core():
    # interfaces <- registry <- pipeline <- cli: no import may point up this chain
    order = ["mechlens.interfaces", "mechlens.registry", "mechlens.pipeline", "mechlens.cli"]
    upward = [
        f"{i.source} -> {i.target} ({i.where})"
        for i in IMPORTS
        if i.source in order and i.target in order and order.index(i.target) > order.index(i.source)
    ]
    assert not upward, "imports against the layering interfaces <- registry <- pipeline <- cli:\n" + "\n".join(upward)


def test_the_core_imports_no_plugin_package():
    bad = [
        f"{i.source} -> {i.target} ({i.where})"
        for i in IMPORTS
        if _top(i.source) == CORE and _is_plugin_package(i.target)
    ]
    assert not bad, (
        "the core must reach plugins only through the registry (entry points); these imports name a plugin "
        "package:\n" + "\n".join(bad)
    )


def test_no_plugin_package_imports_another():
    bad = [
        f"{i.source} -> {i.target} ({i.where})"
        for i in IMPORTS
        if _is_plugin_package(i.source) and _is_plugin_package(i.target) and _top(i.source) != _top(i.target)
    ]
    assert not bad, (
        "a plugin package may import the core but not another plugin package (look the other plugin's classes "
        "up with mechlens.registry.get, or move the shared code into the core):\n" + "\n".join(bad)
    )


# -- deprecated alias packages (issue 19: packages named by role) ------------------------------------
#: old package name -> its successor, kept importable for one release (removed in mechlens 0.2). An
#: alias is not a plugin: it registers no entry point, holds nothing but the alias code (the same code
#: for every alias, up to the two names) and imports nothing of mechlens's but its successor, which it
#: reaches by name at import time (its static imports are the standard library's). For every other
#: rule an alias still counts as a plugin package: the core and the plugins may not import it, so no
#: plugin can reach another through an old name.
DEPRECATED_ALIASES = {
    "mechlens_captum": "mechlens_attribution",
    "mechlens_sklearn": "mechlens_reduction",
}
#: the module-level names an alias defines (the rest of its body: imports, the warning, the finder set-up)
ALIAS_NAMES = {"_OLD", "_NEW", "_AliasLoader", "_AliasFinder", "_finder", "__getattr__"}
#: a light submodule of each successor, imported through the alias by the behaviour test
ALIAS_PROBE = {"mechlens_captum": ("base", "LayerAttributor"), "mechlens_sklearn": ("prepare", "Prepared")}


def _alias_source(alias: str) -> str:
    return (ROOT / "plugins" / alias / "__init__.py").read_text()


def test_the_alias_list_is_complete_and_points_at_plugins():
    # every alias is a package under plugins/, its successor too, and no successor is itself an alias
    assert set(DEPRECATED_ALIASES) <= set(_packages()) and set(DEPRECATED_ALIASES.values()) <= set(_packages())
    assert not set(DEPRECATED_ALIASES) & set(DEPRECATED_ALIASES.values())
    assert set(ALIAS_PROBE) == set(DEPRECATED_ALIASES)


@pytest.mark.parametrize("alias", sorted(DEPRECATED_ALIASES))
def test_a_deprecated_alias_registers_no_entry_point(alias):
    import importlib.metadata

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("entry-points", {})
    declared = [f"[{g}] {n} = {v}" for g, eps in groups.items() for n, v in eps.items() if _top(v) == alias]
    installed = [
        f"[{ep.group}] {ep.name} = {ep.value}"
        for ep in importlib.metadata.distribution("mechlens").entry_points
        if _top(ep.value.split(":")[0]) == alias
    ]
    assert not declared and not installed, f"{alias} is a deprecated alias, not a plugin: {declared + installed}"


@pytest.mark.parametrize("alias", sorted(DEPRECATED_ALIASES))
def test_a_deprecated_alias_holds_only_the_alias_code(alias):
    import re

    files = sorted(
        str(p.relative_to(ROOT / "plugins" / alias))
        for p in (ROOT / "plugins" / alias).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert files == ["__init__.py"], f"{alias} is a deprecated alias: move {files} to {DEPRECATED_ALIASES[alias]}"
    tree = ast.parse(_alias_source(alias))
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            # names bound here (``sys.meta_path[:] = ...`` or ``_finder.alias_of = ...`` binds none)
            bound = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            defined |= {e.id for e in bound if isinstance(e, ast.Name)}
    assert defined == ALIAS_NAMES, f"{alias} defines {sorted(defined - ALIAS_NAMES)} besides the alias code"
    names = next(n for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "(_OLD, _NEW)")
    assert ast.literal_eval(names.value) == (alias, DEPRECATED_ALIASES[alias])

    def template(name: str) -> str:
        # the alias code with its two names blanked: one template for every alias
        text = _alias_source(name).replace(DEPRECATED_ALIASES[name], "<NEW>").replace(name, "<OLD>")
        return re.sub(r"\s+", " ", text)

    differ = [other for other in sorted(DEPRECATED_ALIASES) if template(other) != template(alias)]
    assert not differ, f"{alias}/__init__.py differs from the alias code of {differ} (one template for all)"


@pytest.mark.parametrize("alias", sorted(DEPRECATED_ALIASES))
def test_a_deprecated_alias_imports_only_its_successor(alias):
    import re

    path = ROOT / "plugins" / alias / "__init__.py"
    static = {
        _top(name)
        for node in ast.walk(ast.parse(path.read_text()))
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or "."]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert static <= set(sys.stdlib_module_names) | {"__future__"}, f"{alias} imports {static}"
    # the successor is imported by name at run time: the only mechlens packages it names are its own two
    named = set(re.findall(r"\bmechlens_\w+", path.read_text()))
    assert named == {alias, DEPRECATED_ALIASES[alias]}, f"{alias} names {sorted(named)}"
    assert not re.search(r"[\"']mechlens\.", path.read_text()), f"{alias} imports the core"


@pytest.mark.parametrize("alias", sorted(DEPRECATED_ALIASES))
def test_a_deprecated_alias_warns_and_gives_the_successors_own_objects(alias):
    import importlib

    new = DEPRECATED_ALIASES[alias]
    sub, attr = ALIAS_PROBE[alias]
    successor = importlib.import_module(f"{new}.{sub}")
    for name in [m for m in sys.modules if _top(m) == alias]:
        del sys.modules[name]  # import the alias afresh, so that it warns again
    with pytest.warns(DeprecationWarning, match=f"{alias} was renamed {new}.*removed in mechlens 0.2") as record:
        exec(compile(f"import {alias}.{sub}", "importer.py", "exec"), namespace := {})
    assert record[0].filename == "importer.py"  # the warning points at the import statement, not at importlib
    old = sys.modules[f"{alias}.{sub}"]
    assert getattr(namespace[alias], sub) is successor
    assert old is successor and getattr(old, attr) is getattr(successor, attr)
    assert successor.__name__ == f"{new}.{sub}" and successor.__spec__.name == f"{new}.{sub}"  # left untouched

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # one warning per import of the alias, not per name
        package = importlib.import_module(alias)
        assert getattr(package, sub) is successor
        exec(f"from {alias} import {sub} as via_from", namespace := {})
        assert namespace["via_from"] is successor
        with pytest.raises(ModuleNotFoundError, match=f"{alias}.no_such_module"):
            importlib.import_module(f"{alias}.no_such_module")
        with pytest.raises(AttributeError, match=f"now '{new}'"):
            _ = package.no_such_name


# -- the default Experiment.run moved out of the interfaces (issue 19) ------------------------------
def test_experiments_run_through_the_pipeline_and_the_old_default_still_works_with_a_deprecation():
    sys.path.insert(0, str(ROOT / "tests" / "mechlens"))
    try:
        from experiment_toys import ToyNoiseExperiment, toy_registry
    finally:
        sys.path.remove(str(ROOT / "tests" / "mechlens"))

    from mechlens import pipeline
    from mechlens.toymodels import ToyCNN

    reg = toy_registry(ToyNoiseExperiment)
    exp, model = ToyNoiseExperiment(), ToyCNN()
    new = pipeline.run_recipe(exp, model, seed=1, registry=reg)
    assert "attribution" in new and new.attrs["stimulus"] == "toy-noise"
    with pytest.warns(DeprecationWarning, match="mechlens.pipeline.run_stages"):
        old = exp.run(model, 1, None, reg)
    assert set(old.data_vars) == set(new.data_vars)

    class WithControls(ToyNoiseExperiment):
        def run(self, model, seed=0, cells=None, registry=None):
            ds = pipeline.run_stages(self, model, seed, cells, registry)
            ds.attrs["control"] = "ran"
            return ds

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # an override calling run_stages is not deprecated
        assert pipeline.run_recipe(WithControls(), model, registry=reg).attrs["control"] == "ran"


def test_the_core_is_domain_neutral():
    """The core names no retina, ganglion cell, species or paper: those live in the retina plugin
    (issue 19). Identifiers and prose alike; a core example uses a made-up model name."""
    import re

    words = re.compile(r"\b(retina|retinal|ganglion|tanaka|salamander|1912\.06207)\b", re.IGNORECASE)
    hits = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in sorted((ROOT / CORE).rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if words.search(line)
    ]
    assert not hits, "the core mentions the retina or the paper:\n" + "\n".join(hits)


#: a module longer than this states at its top why it is one file (issue 19)
MAX_LINES = 600


def test_every_long_module_says_why_it_is_one_file():
    """A source file over ~600 lines is either split by responsibility or says, in its module
    docstring, why it is one file ("Why one file"): length must be a decision, not drift."""
    unexplained = []
    for path in sorted([*(ROOT / CORE).rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]):
        text = path.read_text()
        n = len(text.splitlines())
        if n <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "Why one file" not in doc:
            unexplained.append(f"{path.relative_to(ROOT)} ({n} lines)")
    assert not unexplained, (
        "split these by responsibility, or say at the top of each, in a 'Why one file' paragraph of "
        "its module docstring, why it stays one file:\n" + "\n".join(unexplained)
    )
