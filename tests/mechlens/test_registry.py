from __future__ import annotations

import subprocess
import sys

import pytest
from toy_plugins import BROKEN, CLASH, GOOD, MISSPELT, RAISING_HOOK

from mechlens.errors import PluginError, PluginNotFoundError
from mechlens.registry import PluginWarning, Registry


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


def test_two_distributions_registering_one_name_is_an_error_naming_both(make_dist):
    make_dist("toy-dist", {"toy_good": GOOD}, {"toy": "toy_good"})
    make_dist("clash-dist", {"toy_clash": CLASH}, {"clash": "toy_clash"})
    reg = Registry()
    with pytest.raises(PluginError) as err:
        reg.load()
    assert "toy-dist" in str(err.value) and "clash-dist" in str(err.value)
    assert "'toy-grey'" in str(err.value)


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
