from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
from toy_plugins import BROKEN, CLASH, GOOD, MISSPELT, RAISING_HOOK, TOYS

import mechlens
from mechlens import hookimpl, pipeline, registry
from mechlens.cli import main
from mechlens.errors import PluginNotFoundError
from mechlens.hookspecs import HOOK_KINDS
from mechlens.registry import PluginWarning, Registry

# -- toy third-party plugins that misbehave, one way each ------------------------------------------
EXITS_AT_IMPORT = """
import sys

sys.exit(3)
"""

NOT_A_LIST = GOOD.replace('name = "toy-grey"', 'name = "toy-lone"').replace("return [Grey]", "return Grey")

WRONG_ITEMS = GOOD.replace('name = "toy-grey"', 'name = "toy-fine"').replace(
    "return [Grey]",
    """class Nameless(Grey):
        name = ""

    return [Grey, "toy-grey", int, Nameless]""",
)

EXITING_HOOK = """
import sys

from mechlens import hookimpl


@hookimpl
def mechlens_models():
    sys.exit("a hook must not exit the process")
"""

COMMANDS = """
from mechlens import hookimpl
from mechlens.interfaces import Command


class Hello(Command):
    \"\"\"A command that works.\"\"\"

    name = "toy-hello"
    help = "say hello"

    def add_arguments(self, parser):
        parser.add_argument("--who", default="world")

    def run(self, args):
        print(f"hello {args.who}")
        return 0


class FailsToConstruct(Hello):
    name = "toy-no-init"

    def __init__(self):
        raise RuntimeError("cannot construct")


class FailsInArguments(Hello):
    name = "toy-no-args"

    def add_arguments(self, parser):
        parser.add_argument("--ok")
        raise ValueError("bad arguments")


@hookimpl
def mechlens_commands():
    return [FailsToConstruct, FailsInArguments, Hello]
"""

# a stimulus and a command named like built-ins ("osr" of mechlens_stimuli, "train" of mechlens_retina)
LABPLUG = (
    GOOD.replace('name = "toy-grey"', 'name = "osr"')
    + """

from mechlens.interfaces import Command


class Train(Command):
    \"\"\"The lab's own training command.\"\"\"

    name = "train"
    help = "train the lab's model"

    def add_arguments(self, parser):
        pass

    def run(self, args):
        print("lab training")
        return 0


@hookimpl
def mechlens_commands():
    return [Train]
"""
)

# a stimulus named like the toy-models distribution's "toy-noise", usable with toy-cnn
LABNOISE = """
from mechlens import hookimpl
from mechlens.toymodels import ToyNoise


class LabNoise(ToyNoise):
    \"\"\"The lab's own noise, registered under a name another distribution uses.\"\"\"


@hookimpl
def mechlens_stimuli():
    return [LabNoise]
"""


def _messages(record: pytest.WarningsRecorder) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, PluginWarning)]


@pytest.fixture
def fresh_default_registry():
    """The process-wide registry rescans the entry points (planted by make_dist) on first use."""
    registry.reset()
    yield
    registry.reset()


def test_third_party_stimulus_is_discovered_through_its_entry_point(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"}, version="2.5")
    reg = Registry()
    entry = reg.entry("stimulus", "toy-grey")
    assert entry.distribution == "toy-dist"
    assert entry.version == "2.5"
    assert entry.cls.__module__ == "toy_good"
    ds = entry.cls(frames=3).generate(0)
    assert ds.sizes["time"] == 3


def test_broken_plugin_warns_with_its_distribution_and_others_keep_working(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"})
    make_dist("broken-dist", {"toy_broken": BROKEN}, {"broken": "toy_broken"})
    reg = Registry()
    with pytest.warns(PluginWarning, match="broken-dist.*ModuleNotFoundError"):
        names = reg.names("stimulus")
    assert "toy-grey" in names


def test_raising_hook_warns_and_does_not_hide_other_plugins(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"})
    make_dist("raising-dist", {"toy_raising": RAISING_HOOK}, {"raising": "toy_raising"})
    reg = Registry()
    with pytest.warns(PluginWarning, match="raising-dist.*boom inside the hook"):
        assert "toy-grey" in reg.names("stimulus")


def test_misspelt_hook_is_reported_not_ignored(make_dist):
    make_dist("typo-dist", {"toy_typo": MISSPELT}, {"typo": "toy_typo"})
    reg = Registry()
    with pytest.warns(PluginWarning, match="typo-dist.*mechlens_stimulus"):
        reg.load()


def test_two_third_parties_with_one_name_keep_the_first_plain_and_qualify_the_other(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"})
    make_dist("clash-dist", {"toy_clash": CLASH}, {"clash": "toy_clash"})
    reg = Registry()
    with pytest.warns(PluginWarning) as record:
        names = reg.names("stimulus")
    clash = [m for m in _messages(record) if "'toy-grey'" in m]
    assert len(clash) == 1, clash
    assert "toy-dist 1.0" in clash[0] and "clash-dist 1.0" in clash[0]
    first = reg.entry("stimulus", "toy-grey")
    other = next(e for e in reg.entries("stimulus") if e.cls.name == "toy-grey" and e is not first)
    assert other.qualified and other.name == f"{other.distribution}:toy-grey" and other.name in names
    assert f"'{other.name}'" in clash[0]
    # both reachable by distribution and by entry-point name
    assert reg.get("stimulus", "toy-dist:toy-grey").__module__ == "toy_good"
    assert reg.get("stimulus", "toy:toy-grey").__module__ == "toy_good"
    assert reg.get("stimulus", "clash:toy-grey").__module__ == "toy_clash"
    assert reg.get("stimulus", "clash-dist:toy-grey").__module__ == "toy_clash"


def test_unknown_name_lists_known_ones_and_the_closest_match(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"})
    reg = Registry()
    with pytest.raises(PluginNotFoundError) as err:
        reg.get("stimulus", "toy-gray")
    msg = str(err.value)
    assert "did you mean toy-grey?" in msg
    assert "Known stimulus plugins:" in msg


def test_unknown_kind_is_an_error():
    with pytest.raises(PluginNotFoundError, match="unknown plugin kind"):
        Registry(autoload=False).get("widget", "x")


def test_manual_registration_without_entry_points():
    import types

    from mechlens import hookimpl
    from mechlens.toymodels import ToyCNN

    mod = types.ModuleType("notebook_plugin")
    mod.mechlens_models = hookimpl(lambda: [ToyCNN])  # type: ignore[attr-defined]
    reg = Registry(autoload=False)
    reg.register(mod, distribution="notebook")
    assert reg.get("model", "toy-cnn") is ToyCNN
    assert reg.provenance(ToyCNN) == ("notebook", "")


def test_importing_mechlens_and_listing_plugins_imports_no_heavy_library():
    code = (
        "import sys, mechlens, mechlens.registry as r, mechlens.cli as c;"
        "r.entries();"
        "heavy=[m for m in ('torch','captum','sklearn','numba') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"discovery imported {out.stdout.strip()}"


# -- containment: one broken plugin never disables the others ------------------------------------
def test_plugin_calling_sys_exit_at_import_is_skipped_with_its_distribution_named(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"})
    make_dist("exit-dist", {"toy_exits": EXITS_AT_IMPORT}, {"exits": "toy_exits"}, version="0.7")
    reg = Registry()
    with pytest.warns(PluginWarning) as record:
        assert "toy-grey" in reg.names("stimulus")
    (message,) = [m for m in _messages(record) if "exit-dist" in m]
    assert "exit-dist 0.7" in message and "sys.exit(3)" in message and "\n" not in message


def test_hook_returning_a_non_list_is_skipped_with_its_distribution_named(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"})
    make_dist("lone-dist", {"toy_lone": NOT_A_LIST}, {"lone": "toy_lone"}, version="2.0")
    reg = Registry()
    with pytest.warns(PluginWarning) as record:
        names = reg.names("stimulus")
    assert "toy-grey" in names and "toy-lone" not in names
    (message,) = [m for m in _messages(record) if "lone-dist" in m]
    assert "lone-dist 2.0" in message and "mechlens_stimuli" in message and "must return a list" in message


def test_wrong_items_are_skipped_in_one_warning_and_the_right_ones_kept(make_dist):
    make_dist("mixed-dist", {"toy_mixed": WRONG_ITEMS}, {"mixed": "toy_mixed"}, version="1.2")
    reg = Registry()
    with pytest.warns(PluginWarning) as record:
        names = reg.names("stimulus")
    assert "toy-fine" in names
    (message,) = [m for m in _messages(record) if "mixed-dist" in m]
    assert "mixed-dist 1.2" in message
    assert "'toy-grey' (not a Stimulus subclass)" in message and "<class 'int'>" in message
    assert "Nameless (no name" in message


def test_hook_calling_sys_exit_is_skipped_and_the_rest_of_the_plugin_kept(make_dist):
    make_dist("exiting-hook", {"toy_exiting_hook": EXITING_HOOK + GOOD}, {"eh": "toy_exiting_hook"})
    reg = Registry()
    with pytest.warns(PluginWarning) as record:
        assert "toy-grey" in reg.names("stimulus")
    (message,) = [m for m in _messages(record) if "exiting-hook" in m]
    assert "mechlens_models" in message and "sys.exit(" in message


def test_each_failure_warns_once(make_dist):
    make_dist("broken-dist", {"toy_broken": BROKEN}, {"broken": "toy_broken"})
    reg = Registry()
    with pytest.warns(PluginWarning) as record:
        reg.names("stimulus")
        reg.entries()
        with pytest.raises(PluginNotFoundError):
            reg.get("model", "nothing-like-this")
    assert len([m for m in _messages(record) if "broken-dist" in m]) == 1


# -- name clashes ----------------------------------------------------------------------------------
def test_third_party_named_like_a_builtin_gets_a_qualified_name_and_the_builtin_keeps_its_own(make_dist):
    make_dist("labplug", {"labplug_hooks": LABPLUG}, {"labplug": "labplug_hooks"}, version="0.9")
    reg = Registry()
    with pytest.warns(PluginWarning) as record:
        osr = reg.entry("stimulus", "osr")
    # the fake distribution is first on sys.path, yet the built-in keeps the plain name
    assert osr.distribution == "mechlens" and not osr.qualified
    lab = reg.entry("stimulus", "labplug:osr")
    assert lab.distribution == "labplug" and lab.version == "0.9" and lab.cls.__module__ == "labplug_hooks"
    assert "labplug:osr" in reg.names("stimulus")
    (message,) = [m for m in _messages(record) if "'osr'" in m]
    assert "distribution mechlens" in message and "labplug 0.9" in message and "'labplug:osr'" in message
    # the command clash is handled the same way
    assert reg.entry("command", "train").distribution == "mechlens"
    assert reg.get("command", "labplug:train").__module__ == "labplug_hooks"


def test_builtins_win_even_when_a_third_party_was_registered_first():
    from mechlens.toymodels import ToyNoise

    class Impostor(ToyNoise):
        """Someone else's toy noise."""

    reg = Registry(autoload=False)
    reg.register(types.SimpleNamespace(mechlens_stimuli=hookimpl(lambda: [Impostor])), distribution="labplug")
    with pytest.warns(PluginWarning, match="'toy-noise' stays with mechlens \\(the built-in\\)"):
        reg.register(types.SimpleNamespace(mechlens_stimuli=hookimpl(lambda: [ToyNoise])), distribution="mechlens")
    assert reg.get("stimulus", "toy-noise") is ToyNoise
    assert reg.get("stimulus", "labplug:toy-noise") is Impostor
    assert reg.names("stimulus") == ["labplug:toy-noise", "toy-noise"]


@pytest.mark.parametrize("kind", sorted(HOOK_KINDS.values()))
def test_every_builtin_is_reachable_by_qualified_name(kind):
    reg = Registry()
    builtins = [e for e in reg.entries(kind) if e.distribution == "mechlens"]
    assert builtins, f"no built-in {kind} plugin to look up"
    for e in builtins:
        assert reg.get(kind, f"{e.source}:{e.name}") is e.cls  # entry point: "stimuli:osr"
        assert reg.get(kind, f"mechlens:{e.name}") is e.cls


def test_pipeline_provenance_records_the_qualified_name(make_dist, fresh_default_registry):
    make_dist("toy-models", {"toy_models_plugin": TOYS}, {"toys": "toy_models_plugin"}, version="0.3")
    make_dist("labnoise", {"labnoise_hooks": LABNOISE}, {"labnoise": "labnoise_hooks"}, version="3.1")
    with pytest.warns(PluginWarning, match="'toy-noise'"):
        stimuli = registry.entries("stimulus")
    # which third party is found first depends on the file system; both must be reachable and recorded
    (second,) = [e for e in stimuli if e.qualified and e.cls.name == "toy-noise"]
    first = registry.default().entry("stimulus", "toy-noise")
    assert {first.distribution, second.distribution} == {"toy-models", "labnoise"}
    for entry in (first, second):
        ds = mechlens.run("toy-cnn", entry.name, stimulus_params={"frames": 8})
        assert ds.attrs["stimulus"] == entry.name
        assert (ds.attrs["stimulus_distribution"], ds.attrs["stimulus_version"]) == (entry.distribution, entry.version)
        assert ds.attrs["mechlens_version"] == mechlens.__version__ == pipeline.mechlens_version()


# -- the CLI with every kind of broken plugin installed at once ------------------------------------
@pytest.fixture
def broken_world(make_dist, fresh_default_registry):
    """Working toys plus one distribution per failure mode (import error, sys.exit, bad hooks, bad commands, clash)."""
    make_dist("toy-models", {"toy_models_plugin": TOYS}, {"toys": "toy_models_plugin"}, version="0.3")
    make_dist("broken-dist", {"toy_broken": BROKEN}, {"broken": "toy_broken"})
    make_dist("exit-dist", {"toy_exits": EXITS_AT_IMPORT}, {"exits": "toy_exits"})
    make_dist("lone-dist", {"toy_lone": NOT_A_LIST}, {"lone": "toy_lone"})
    make_dist("mixed-dist", {"toy_mixed": WRONG_ITEMS}, {"mixed": "toy_mixed"})
    make_dist("exiting-hook", {"toy_exiting_hook": EXITING_HOOK}, {"eh": "toy_exiting_hook"})
    make_dist("cmd-dist", {"toy_commands": COMMANDS}, {"commands": "toy_commands"}, version="4.2")
    make_dist("labplug", {"labplug_hooks": LABPLUG}, {"labplug": "labplug_hooks"})


def test_cli_list_help_and_version_work_despite_broken_plugins(broken_world, capsys):
    with pytest.warns(PluginWarning) as record:
        assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy-cnn" in out and "labplug:osr" in out and "toy-fine" in out
    messages = _messages(record)
    for dist in ("broken-dist", "exit-dist", "lone-dist", "mixed-dist", "exiting-hook"):
        assert sum(dist in m for m in messages) == 1, (dist, messages)
    for clash in ("'osr'", "'train'"):  # one line per clashing name, naming both distributions
        (message,) = [m for m in messages if clash in m]
        assert "distribution mechlens" in message and "labplug 1.0" in message
    (no_init,) = [m for m in messages if "'toy-no-init'" in m]
    assert "cmd-dist 4.2" in no_init and "RuntimeError: cannot construct" in no_init
    (no_args,) = [m for m in messages if "'toy-no-args'" in m]
    assert "cmd-dist 4.2" in no_args and "ValueError: bad arguments" in no_args

    registry.reset()
    with pytest.warns(PluginWarning), pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    for argv in (["--version"], ["-VV"]):  # -VV lists the distributions, the broken ones' warnings aside
        registry.reset()
        with pytest.warns(PluginWarning):
            assert main(argv) == 0
    help_text = capsys.readouterr().out
    assert "toy-hello" in help_text and "labplug:train" in help_text
    assert "toy-no-init" not in help_text and "toy-no-args" not in help_text

    with pytest.warns(PluginWarning, match="cmd-dist"):
        assert main(["toy-hello", "--who", "lab"]) == 0
        assert main(["labplug:train"]) == 0
    assert capsys.readouterr().out.splitlines() == ["hello lab", "lab training"]


def test_cli_run_and_info_and_library_run_work_despite_broken_plugins(broken_world, tmp_path, capsys):
    out = tmp_path / "r.nc"
    with pytest.warns(PluginWarning):
        code = main(
            ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--set", "stimulus.frames=8", "-o", str(out)]
        )
    assert code == 0
    with pytest.warns(PluginWarning, match="cmd-dist"):  # every parser build sets the commands up again
        assert main(["info", str(out)]) == 0
    assert "stimulus    toy-noise (toy-models)" in capsys.readouterr().out
    ds = mechlens.run("toy-cnn", "toy-noise", stimulus_params={"frames": 8})
    assert ds.attrs["model_distribution"] == "toy-models"


def test_cli_subprocess_with_a_plugin_that_exits_at_import(make_dist, tmp_path):
    make_dist("exit-dist", {"toy_exits": EXITS_AT_IMPORT}, {"exits": "toy_exits"}, version="0.7")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(
        [sys.executable, "-m", "mechlens.cli", "list", "stimulus"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "osr" in res.stdout
    warned = [line for line in res.stderr.splitlines() if "exit-dist" in line]
    assert len(warned) == 1 and "exit-dist 0.7" in warned[0] and "sys.exit(3)" in warned[0]


def test_a_name_not_found_after_a_package_failed_to_load_says_so_not_did_you_mean(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"})
    make_dist("broken-dist", {"toy_broken": BROKEN}, {"broken": "toy_broken"}, version="0.2")
    reg = Registry()
    with pytest.warns(PluginWarning):
        reg.load()
    with pytest.raises(PluginNotFoundError) as err:
        reg.get("stimulus", "toy-gry")  # spelled like toy-grey, but it may be the broken package's
    message = str(err.value)
    assert "failed to load" in message and "broken-dist 0.2" in message and "ModuleNotFoundError" in message
    assert "did you mean" not in message and "toy-grey" in message  # the known ones are still listed


def test_a_failed_hook_of_one_kind_leaves_did_you_mean_for_the_others(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"})
    make_dist("raising-dist", {"toy_raising": RAISING_HOOK}, {"raising": "toy_raising"})
    reg = Registry()
    with pytest.warns(PluginWarning):
        reg.load()
    with pytest.raises(PluginNotFoundError, match=r"raising-dist.*boom inside the hook"):
        reg.get("stimulus", "toy-gry")
    with pytest.raises(PluginNotFoundError, match="did you mean") as err:
        reg.get("model", "retina-cn")  # the failed hook was a stimulus hook: no reason to blame it
    assert "raising-dist" not in str(err.value)


RAISING_CONSTRUCTOR = GOOD.replace(
    "    def render(self, params, seed):",
    "    def __init__(self, **params):\n"
    "        super().__init__(**params)\n"
    '        raise OSError("calibration file lab.cal missing")\n\n'
    "    def render(self, params, seed):",
)


def test_a_raising_constructor_names_the_plugin_and_its_distribution(make_dist, fresh_default_registry):
    make_dist("lab-dist", {"toy_raising_init": RAISING_CONSTRUCTOR}, {"lab": "toy_raising_init"}, version="1.4")
    with pytest.raises(mechlens.errors.PluginError) as err:
        pipeline.instantiate("stimulus", "toy-grey")
    message = str(err.value)
    assert "stimulus plugin 'toy-grey' (distribution lab-dist 1.4) failed to start" in message
    assert "OSError: calibration file lab.cal missing" in message
    # a parameter error is the user's, and stays a usage error naming the parameter
    with pytest.raises(mechlens.errors.ParameterError, match="frames"):
        pipeline.instantiate("stimulus", "toy-grey", {"frames": 0})
